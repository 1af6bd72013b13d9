/**
 * `npm run bench -- audit` (issue 6): the verifiable decision audit log against OPA's
 * decision logger (`decision_logs` uploading to an HTTP collector the benchmark runs), on
 * the same policy (the bank tenant, built as Wasm for Pavilion and as a Rego bundle for OPA)
 * and the same inputs.
 *
 * Cases (targets from the issue in brackets):
 * 1. sustained events/s in-process (the shipped build, not the sources through tsx):
 *    AuditLogSink.append behind masking (mask rules +
 *    pseudonymisation), WAL group commit with fsync 'always', Merkle tree, checkpoints every
 *    1,000 events, and the NATS decision forwarder [>= 20,000 events/s per sidecar]. No
 *    runnable in-process peer.
 * 2. sustained events/s through HTTP: the Data API with the audit log (and streaming to NATS)
 *    against OPA with decision logs to the collector, saturated; events answered/s, events
 *    delivered (NATS stream / collector) after the run.
 * 3. added latency per decision at a fixed rate: log on minus log off, p50 and p99, HTTP, for
 *    both [<= 0.2 ms added p99].
 * 3b. the same, in-process: a Pavilion built in this process takes one decision at a time at
 *    the fixed rate as the Data API does (its log rules evaluated beside it, its event written
 *    to the receipt), beside the same decisions unlogged and events whose rules go apart (the
 *    log's own share of a decision's latency, without the HTTP client and server's noise).
 * 4. inclusion proof produce + verify at 10^6 entries, tree built in-process [<= 1 ms]. No
 *    runnable peer.
 * 4b. restart with a full log (10^6 events; quick 10^5): how long the sink's start takes to
 *    read and check the log before the sidecar serves. No peer (OPA keeps no log).
 * 5. checkpoint signing rate through SoftHSM2 (PKCS#11). No runnable peer.
 * 6. gas per anchor and per day (one checkpoint a minute): slot for `bench/anchor-figures.ts`.
 * 7. events lost across an outage of the destination (Pavilion: nats-server SIGKILLed and
 *    restarted; OPA: its collector stopped and started) [0].
 * 8. events lost across a `kill -9` of the server: every decision answered 200 must be in the
 *    log (Pavilion: the WAL after recovery; OPA: what reached the collector) [0].
 *
 * Quick mode (`npm run bench -- audit --quick` or BENCH_QUICK=1): short runs and 10^5 leaves.
 * Env: BENCH_DURATION_S (default 10, quick 3), BENCH_CONNECTIONS (32), BENCH_RATE (fixed-rate
 * case, requests/s, default 1000), BENCH_LEAVES (default 10^6, quick 10^5), BENCH_AUDIT_CASES
 * (comma-separated subset of in-process, http, latency, latency-in-process, proofs, restart, signing, anchor, outage, kill;
 * default all - for profiling one case with `node --cpu-prof`).
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import {
  AuditLog,
  Keyring,
  MerkleTree,
  Pkcs11Module,
  Pkcs11ThreadSigner,
  SoftwareSigner,
  hashLeaf,
  verifyInclusion,
  type AuditLogSink,
  type CheckpointSigner,
  type DecisionEventV1,
  type DecisionForwarder,
  type DecisionSink,
  type FsyncPolicy,
  type MaskingDecisionSink,
  type SignedCheckpointV1,
} from '../sidecar/src/audit/index.ts';
import { checkpointMessage } from '../sidecar/src/audit/log/index.ts';
import { buildTenantBundle, definitionPath } from '../sidecar/src/bundles/index.ts';
import { parseConfig, type AuditLogConfig, type NatsConfig } from '../sidecar/src/config/index.ts';
import { REPO_ROOT } from '../sidecar/src/lib/tools.ts';
import { startNats, type RunningNats } from '../test/harness/nats-server.ts';
import { startPavilion } from '../test/harness/pavilion-harness.ts';
import { DecisionLogCollector } from './lib/decision-log-collector.ts';
import { DECISION_STREAM, streamDecisionIds } from './lib/decision-stream.ts';
import { measureServer, runPaced, type LoadRequest, type LoadSpec } from './lib/load.ts';
import { cpuSeconds } from './lib/process-stats.ts';
import { opaName, startOpa } from './lib/opa.ts';
import { writeResults, type BenchCase, type Metrics } from './lib/results.ts';
import { buildSidecar, freePort, startServer, type Server } from './lib/servers.ts';
import { measureAnchor } from './anchor-figures.ts';

const QUICK = process.env['BENCH_QUICK'] === '1' || process.argv.includes('--quick');
const DURATION_S = Number(process.env['BENCH_DURATION_S'] ?? (QUICK ? 3 : 10));
const WARMUP_S = QUICK ? 1 : 2;
const CONNECTIONS = Number(process.env['BENCH_CONNECTIONS'] ?? 32);
const RATE = Number(process.env['BENCH_RATE'] ?? 1000);
const LEAVES = Number(process.env['BENCH_LEAVES'] ?? (QUICK ? 100_000 : 1_000_000));
const ALL_CASES = ['in-process', 'http', 'latency', 'latency-in-process', 'proofs', 'restart', 'signing', 'anchor', 'outage', 'kill'];
const CASES = new Set((process.env['BENCH_AUDIT_CASES'] ?? ALL_CASES.join(',')).split(',').map((c) => c.trim()).filter((c) => c !== ''));
const UNKNOWN_CASES = [...CASES].filter((c) => !ALL_CASES.includes(c));
if (UNKNOWN_CASES.length > 0) throw new Error(`BENCH_AUDIT_CASES: unknown case(s) ${UNKNOWN_CASES.join(', ')}; the cases are ${ALL_CASES.join(', ')}`);
const TENANT = 'bank';
const NO_PEER = 'none (no runnable peer)';
const SOFTHSM_MODULE = ['/usr/lib/softhsm/libsofthsm2.so', '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so'].find((p) => existsSync(p));

const FSYNC_MEANING: Record<FsyncPolicy, string> = {
  always: "fsync 'always' (the default): acknowledged once written and fdatasync'ed, survives power loss",
  interval: "fsync 'interval' (100 ms): acknowledged once written, survives a process crash, not power loss",
  never: "fsync 'never': acknowledged once written to the OS",
};

const round = (value: number, digits = 3): number => Math.round(value * 10 ** digits) / 10 ** digits;

function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

interface Example {
  readonly path: string;
  readonly input: Record<string, unknown>;
}

/** The audit log's configured defaults (fsync 'always', group commit, checkpoints every 1,000), without an anchor (the anchor has its own case). */
function defaultAuditSettings(directory: string): Omit<AuditLogConfig, 'anchor'> {
  const audit = parseConfig({ decisionLog: { sink: 'audit', audit: { directory, anchor: { kind: 'none' } } } }).decisionLog.audit;
  if (audit === undefined) throw new Error('no audit defaults');
  const { anchor: _anchor, ...settings } = audit;
  return settings;
}

function natsConfig(url: string): NatsConfig {
  const nats = parseConfig({ nats: { servers: [url], reconnectWaitMs: 100, reconnectJitterMs: 0, connectTimeoutMs: 1000 } }).nats;
  if (nats === undefined) throw new Error('no nats config');
  return nats;
}

// ---------------------------------------------------------------------------------------------
// In-process pipeline: masking -> AuditLogSink (WAL, Merkle, checkpoints) -> forwarder -> NATS

interface Pipeline {
  readonly sink: MaskingDecisionSink;
  readonly audit: AuditLogSink;
  readonly forwarder: DecisionForwarder | undefined;
  stop(): Promise<void>;
}

/** Mask rules as a tenant's `system.log.mask` would return them (applied as OPA applies them). */
const MASK_RULES = ['/input/context/ip', { op: 'upsert', path: '/input/subject/accounts', value: ['[redacted]'] }];

/** The sidecar compiled once per run (the in-process cases import it, the HTTP ones start it). */
let built: Promise<string> | undefined;
const sidecarBuild = (): Promise<string> => (built ??= buildSidecar(REPO_ROOT));
/**
 * The audit face as it ships: the build `npm start` runs (tsc's output), not these sources
 * through tsx, whose transform (esbuild's keepNames) wraps every function it creates in a
 * naming call: about 2% of the pipeline's CPU that no deployment pays.
 */
type AuditFace = typeof import('../sidecar/src/audit/index.ts');
type MaskingFace = typeof import('../sidecar/src/audit/masking/index.ts');
let shipped: Promise<{ audit: AuditFace; masking: MaskingFace }> | undefined;
function shippedAudit(): Promise<{ audit: AuditFace; masking: MaskingFace }> {
  shipped ??= (async () => {
    await sidecarBuild();
    const face = (path: string): string => pathToFileURL(join(REPO_ROOT, 'dist', 'sidecar', 'src', 'audit', path)).href;
    return { audit: (await import(face('index.js'))) as AuditFace, masking: (await import(face('masking/index.js'))) as MaskingFace };
  })();
  return shipped;
}

/** The shipped audit log sink on the configured defaults (`fsync` apart), as the sidecar builds it. */
async function auditSink(directory: string, fsync: FsyncPolicy, maxDiskBytes?: number): Promise<AuditLogSink> {
  const { audit: { AuditLogSink, SoftwareSigner } } = await shippedAudit();
  const { directory: _d, signer: _s, stream: _st, ...defaults } = defaultAuditSettings(directory);
  return new AuditLogSink({
    directory,
    originPrefix: 'pavilion-bench',
    settings: { ...defaults, fsync, ...(maxDiskBytes === undefined ? {} : { maxDiskBytes }) },
    createSigner: async () => SoftwareSigner.loadOrCreate(join(directory, 'checkpoint-key.pem')),
  });
}

async function startPipeline(directory: string, natsUrl: string | undefined, fsync: FsyncPolicy = 'always', maxDiskBytes?: number): Promise<Pipeline> {
  const { audit: { DecisionForwarder, DecisionMasker, MaskingDecisionSink }, masking: { parsePseudonymField } } = await shippedAudit();
  const audit = await auditSink(directory, fsync, maxDiskBytes);
  const key = new Uint8Array(32).fill(7);
  // parsed once, as the sidecar parses its configured fields (not once per event)
  const fields = [parsePseudonymField('/input/subject/id')];
  const masker = new DecisionMasker({
    // the rules come from a fixed list, not from Wasm evaluation of system.log.mask (the HTTP cases evaluate policy)
    policy: { evaluate: async () => ({ mask: { ok: true, result: MASK_RULES } }) },
    pseudonyms: { fields: () => fields, key: async () => key },
  });
  const sink = new MaskingDecisionSink(audit, masker);
  await sink.start();
  const forwarder = natsUrl === undefined
    ? undefined
    : new DecisionForwarder({ nats: natsConfig(natsUrl), logs: () => audit.openLogs(), maxInFlight: 256, retryWaitMs: 100 });
  await forwarder?.start();
  let stopping: Promise<void> | undefined;
  return {
    sink,
    audit,
    forwarder,
    stop() {
      stopping ??= (async () => {
        await forwarder?.stop(10_000);
        await sink.stop(10_000);
      })();
      return stopping;
    },
  };
}

let eventCounter = 0;
function benchEvent(example: Example): DecisionEventV1 {
  const n = eventCounter++;
  return {
    labels: { id: 'pavilion-bench', version: '0.1.0' },
    decision_id: `bench-${process.pid}-${n}`,
    tenant: TENANT,
    bundles: { [TENANT]: { revision: 'bench' } },
    path: example.path,
    input: { ...example.input, nonce: n },
    result: n % 3 !== 0,
    requested_by: '127.0.0.1:5000',
    timestamp: new Date().toISOString(),
    metrics: { timer_rego_query_eval_ns: 12_000, timer_server_handler_ns: 40_000 },
    req_id: n,
  };
}

/** Append from `concurrency` callers for `durationMs` (or until `stop()`); latencies in ms. */
async function appendLoad(
  sink: Pick<DecisionSink, 'write'>,
  examples: readonly Example[],
  options: { readonly concurrency: number; readonly durationMs: number; readonly ratePerS?: number; readonly onAck?: (id: string) => void },
): Promise<{ acked: number; refused: number; seconds: number; latenciesMs: Float64Array }> {
  const latencies: number[] = [];
  let acked = 0;
  let refused = 0;
  const started = performance.now();
  const end = started + options.durationMs;
  const interval = options.ratePerS === undefined ? 0 : (1000 * options.concurrency) / options.ratePerS;
  const worker = async (w: number): Promise<void> => {
    let next = started + (interval * w) / options.concurrency;
    for (let i = w; performance.now() < end; i += options.concurrency) {
      if (interval > 0) {
        const wait = next - performance.now();
        if (wait > 0) await sleep(wait);
        next += interval;
      }
      const event = benchEvent(examples[i % examples.length] as Example);
      const t0 = performance.now();
      try {
        await sink.write(event);
        latencies.push(performance.now() - t0);
        acked++;
        options.onAck?.(event.decision_id);
      } catch {
        refused++;
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, (_, w) => worker(w)));
  return { acked, refused, seconds: (performance.now() - started) / 1000, latenciesMs: Float64Array.from(latencies).sort() };
}

// ---------------------------------------------------------------------------------------------
// NATS JetStream: what reached the stream

async function streamMessages(natsUrl: string): Promise<number> {
  const nc = await connect({ servers: [natsUrl], reconnect: false, timeout: 2000 });
  try {
    return (await (await jetstreamManager(nc)).streams.info(DECISION_STREAM)).state.messages;
  } catch {
    return 0;
  } finally {
    await nc.close();
  }
}

/** Wait until the stream holds `expected` messages (or the timeout); seconds waited. */
async function waitForStream(natsUrl: string, expected: number, timeoutMs: number): Promise<{ messages: number; seconds: number }> {
  const started = performance.now();
  let messages = 0;
  while (performance.now() - started < timeoutMs) {
    messages = await streamMessages(natsUrl).catch(() => 0);
    if (messages >= expected) break;
    await sleep(100);
  }
  return { messages, seconds: (performance.now() - started) / 1000 };
}


// ---------------------------------------------------------------------------------------------
// HTTP servers under test

async function startPavilionServer(main: string, bundleDir: string, work: string, options: { readonly audit: boolean; readonly natsUrl?: string; readonly fsync?: FsyncPolicy }): Promise<Server & { auditDir: string }> {
  const port = await freePort();
  const auditDir = join(work, `audit-${port}`);
  const config = join(work, `pavilion-${port}.json`);
  await writeFile(config, JSON.stringify({
    http: { host: '127.0.0.1', port },
    engine: { cache: { enabled: false } },
    bundles: { directory: bundleDir, keysDirectory: join(bundleDir, 'keys'), persistDirectory: join(work, `persisted-${port}`) },
    decisionLog: options.audit
      ? {
          sink: 'audit',
          audit: { directory: auditDir, fsync: options.fsync ?? 'always', ...(options.natsUrl === undefined ? {} : { stream: { enabled: true } }) },
          privacy: { pseudonymiseFields: ['/input/subject/id'], pseudonymKeyDirectory: join(work, `pseudonym-keys-${port}`) },
        }
      : { sink: 'none' },
    ...(options.natsUrl === undefined ? {} : { nats: { servers: [options.natsUrl] } }),
    // the audit path against OPA's logger: no credential verification on either side
    credentials: { tenants: {} },
  }));
  const server = await startServer(process.execPath, [main], `http://127.0.0.1:${port}`, '/health/ready', { ...process.env, PAVILION_CONFIG: config });
  return { ...server, auditDir };
}

/** OPA with its decision logger uploading to `collector` (or no decision logs). */
function startOpaServer(regoBundle: string, work: string, collector: DecisionLogCollector | undefined): Promise<Server> {
  if (collector === undefined) return startOpa([regoBundle]);
  return startOpa([regoBundle], {
    workDir: work,
    config: {
      services: { collector: { url: collector.url } },
      // uploads every second: OPA's most eager setting (its defaults are 300-600 s)
      decision_logs: { service: 'collector', reporting: { min_delay_seconds: 1, max_delay_seconds: 1 } },
    },
  });
}

/** A client that records the decision id of every 200 answer (for loss accounting). */
async function driveHttp(
  url: string,
  requests: readonly LoadRequest[],
  options: { readonly concurrency: number; readonly durationMs: number; readonly ratePerS?: number; readonly stopped?: () => boolean },
  onAck: (id: string) => void,
): Promise<{ acked: number; failed: number }> {
  let acked = 0;
  let failed = 0;
  const started = performance.now();
  const end = started + options.durationMs;
  const interval = options.ratePerS === undefined ? 0 : (1000 * options.concurrency) / options.ratePerS;
  const worker = async (w: number): Promise<void> => {
    let next = started + (interval * w) / options.concurrency;
    for (let i = w; performance.now() < end && options.stopped?.() !== true; i += options.concurrency) {
      if (interval > 0) {
        const wait = next - performance.now();
        if (wait > 0) await sleep(wait);
        next += interval;
      }
      const request = requests[i % requests.length] as LoadRequest;
      try {
        const response = await fetch(`${url}${request.path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...request.headers }, body: request.body });
        const body = (await response.json()) as { decision_id?: string };
        if (response.status === 200 && typeof body.decision_id === 'string') {
          acked++;
          onAck(body.decision_id);
        } else {
          failed++;
        }
      } catch {
        failed++;
        if (options.stopped?.() === true) return;
        await sleep(5);
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, (_, w) => worker(w)));
  return { acked, failed };
}

async function waitFor(condition: () => boolean, timeoutMs: number): Promise<number> {
  const started = performance.now();
  while (!condition() && performance.now() - started < timeoutMs) await sleep(50);
  return (performance.now() - started) / 1000;
}

// ---------------------------------------------------------------------------------------------
// Cases

async function inProcessThroughput(work: string, nats: RunningNats, examples: readonly Example[], fsync: FsyncPolicy): Promise<BenchCase> {
  const dir = join(work, `in-process-${fsync}`);
  const pipeline = await startPipeline(dir, nats.url, fsync);
  const before = await streamMessages(nats.url);
  try {
    const warm = await appendLoad(pipeline.sink, examples, { concurrency: 256, durationMs: WARMUP_S * 1000 });
    const rssBefore = process.memoryUsage().rss;
    const cpuBefore = process.cpuUsage();
    const result = await appendLoad(pipeline.sink, examples, { concurrency: 256, durationMs: DURATION_S * 1000 });
    const cpu = process.cpuUsage(cpuBefore);
    const total = warm.acked + result.acked;
    const drain = await waitForStream(nats.url, before + total, 120_000);
    const log = pipeline.audit.openLogs().get(TENANT);
    const details = log?.status().details as Record<string, number> | undefined;
    return {
      name: `sustained events/s in-process: masking + WAL group commit (fsync ${fsync}) + Merkle + checkpoints + NATS forwarding`,
      pavilion: {
        events_per_s: Math.round(result.acked / result.seconds),
        p50_ms: round(percentile(result.latenciesMs, 50)),
        p99_ms: round(percentile(result.latenciesMs, 99)),
        cpu_ms_per_event: result.acked > 0 ? round((cpu.user + cpu.system) / 1000 / result.acked, 4) : 0,
        refused_events: result.refused,
        events_per_write_batch: details === undefined || details['write_batches'] === 0 ? 0 : round((details['leaves'] ?? 0) / (details['write_batches'] ?? 1), 1),
        forwarded_drain_s: round(drain.seconds, 2),
        forwarded_events: drain.messages - before,
        logged_events: total,
        rss_mb: Math.round(Math.max(rssBefore, process.memoryUsage().rss) / 2 ** 20),
      },
      peer: {},
      peerName: 'none (no in-process peer; OPA\'s decision logger is measured through HTTP below)',
      notes: `${FSYNC_MEANING[fsync]}; one tenant, 256 concurrent appenders, ${DURATION_S}s after ${WARMUP_S}s warm-up; mask rules from a fixed list (no Wasm evaluation of system.log.mask) and one pseudonymised field; forwarded_drain_s = time after the run until the stream held every logged event`,
    };
  } finally {
    await pipeline.stop();
  }
}

async function httpThroughput(main: string, bundleDir: string, regoBundle: string, work: string, nats: RunningNats, requests: readonly LoadRequest[], peerName: string): Promise<BenchCase> {
  const spec = (url: string): LoadSpec => ({ url, connections: CONNECTIONS, requests, unique: true });
  const before = await streamMessages(nats.url);
  const pavilion = await startPavilionServer(main, bundleDir, work, { audit: true, natsUrl: nats.url });
  let p: Metrics;
  let pavilionLag: { messages: number; seconds: number };
  try {
    p = await measureServer(pavilion, spec(pavilion.url), WARMUP_S, DURATION_S);
    // while it still runs: how long until the stream holds every logged event
    pavilionLag = await waitForStream(nats.url, before + (await loggedLeaves(pavilion.url)), 60_000);
  } finally {
    await pavilion.stop();
  }
  const pavilionLogged = await countLeaves(pavilion.auditDir);
  const streamed = await streamMessages(nats.url);
  const collector = new DecisionLogCollector(await freePort());
  await collector.start();
  const opa = await startOpaServer(regoBundle, work, collector);
  let o: Metrics;
  let opaLag: number;
  try {
    o = await measureServer(opa, spec(opa.url), WARMUP_S, DURATION_S);
    // OPA says nothing about what it holds: wait until the collector stops receiving (2.5 upload periods)
    const loadEnded = performance.now();
    let lastGrowth = loadEnded;
    let seen = collector.ids.size;
    while (performance.now() - lastGrowth < 2500 && performance.now() - loadEnded < 60_000) {
      await sleep(50);
      if (collector.ids.size !== seen) {
        seen = collector.ids.size;
        lastGrowth = performance.now();
      }
    }
    opaLag = (lastGrowth - loadEnded) / 1000;
  } finally {
    await opa.stop();
    await collector.stop();
  }
  return {
    name: 'sustained events/s through HTTP (Data API, unique inputs, logging on): Pavilion audit log + NATS stream vs OPA decision logs to an HTTP collector',
    pavilion: { events_per_s: p['rps'] ?? 0, p50_ms: p['p50_ms'] ?? 0, p99_ms: p['p99_ms'] ?? 0, cpu_s_per_1k: p['cpu_s_per_1k'] ?? 0, rss_mb: p['rss_mb'] ?? 0, errors: p['errors'] ?? 0, events_logged: pavilionLogged, events_delivered: streamed - before, delivery_lag_s: round(pavilionLag.seconds, 2) },
    peer: { events_per_s: o['rps'] ?? 0, p50_ms: o['p50_ms'] ?? 0, p99_ms: o['p99_ms'] ?? 0, cpu_s_per_1k: o['cpu_s_per_1k'] ?? 0, rss_mb: o['rss_mb'] ?? 0, errors: o['errors'] ?? 0, events_delivered: collector.ids.size, delivery_lag_s: round(opaLag, 2) },
    peerName,
    notes: `${CONNECTIONS} connections, ${DURATION_S}s after ${WARMUP_S}s warm-up (warm-up decisions are logged too); events_logged/events_delivered = in the WAL / in the NATS stream (Pavilion, fsync always, answered only once durable) and received by the collector (OPA, uploads every 1 s from memory; it keeps no log of its own); delivery_lag_s = after the load, until the stream holds every logged event / until the collector stopped receiving`,
  };
}

/** Leaves in the tenant's log of a running sidecar (its /health?verbose). */
async function loggedLeaves(url: string, tenant = TENANT): Promise<number> {
  const health = (await (await fetch(`${url}/health?verbose`)).json()) as {
    components?: Record<string, { details?: { tenants?: Record<string, { details?: { leaves?: number } }> } }>;
  };
  return health.components?.['decision_log']?.details?.tenants?.[tenant]?.details?.leaves ?? 0;
}

/** Leaves in a tenant's log file, counted by recovering it (after the server stopped). */
async function countLeaves(auditDir: string, tenant = TENANT, ids?: ReadonlySet<string>): Promise<number> {
  const log = new AuditLog({
    ...defaultAuditSettings(auditDir),
    directory: join(auditDir, 'tenants', tenant),
    origin: `${parseConfig({}).labels.id}/${tenant}`,
    signer: SoftwareSigner.loadOrCreate(join(auditDir, 'checkpoint-key.pem')),
    keyring: Keyring.load(join(auditDir, 'keys')),
  });
  await log.start();
  try {
    if (ids === undefined) return log.size;
    let missing = 0;
    for (const id of ids) if (log.leafIndexOf(id) === undefined) missing++;
    return missing;
  } finally {
    await log.stop(10_000);
  }
}

/**
 * Log on vs off at a fixed rate. On a shared machine the load drifts, so every server under
 * test runs at once and they take turns: ROUNDS slices each, in a rotating order; a server's
 * figure is the median over its slices. CPU per decision is the steadier signal.
 */
async function addedLatency(main: string, bundleDir: string, regoBundle: string, work: string, nats: RunningNats, requests: readonly LoadRequest[], peerName: string): Promise<BenchCase[]> {
  const rounds = QUICK ? 1 : 3;
  const slice = Math.max(1, Math.round(DURATION_S / rounds));
  const collector = new DecisionLogCollector(await freePort());
  await collector.start();
  const starters = {
    pOff: () => startPavilionServer(main, bundleDir, work, { audit: false }),
    pAlways: () => startPavilionServer(main, bundleDir, work, { audit: true, natsUrl: nats.url, fsync: 'always' }),
    pInterval: () => startPavilionServer(main, bundleDir, work, { audit: true, natsUrl: nats.url, fsync: 'interval' }),
    oOff: () => startOpaServer(regoBundle, work, undefined),
    oOn: () => startOpaServer(regoBundle, work, collector),
  };
  const names = Object.keys(starters) as Array<keyof typeof starters>;
  const servers: Partial<Record<keyof typeof starters, Server>> = {};
  const slices = new Map<string, Metrics[]>(names.map((n) => [n, []]));
  try {
    for (const name of names) servers[name] = await starters[name]();
    const spec = (url: string): LoadSpec & { rate: number } => ({ url, connections: CONNECTIONS, requests, unique: true, rate: RATE });
    for (const name of names) await runPaced(spec((servers[name] as Server).url), WARMUP_S);
    for (let round = 0; round < rounds; round++) {
      const order = names.map((_, i) => names[(i + round) % names.length] as keyof typeof starters);
      for (const name of order) {
        const server = servers[name] as Server;
        const cpuBefore = cpuSeconds(server.pid);
        const result = await runPaced(spec(server.url), slice);
        const cpu = cpuSeconds(server.pid) - cpuBefore;
        const total = result['requests_total'] ?? 0;
        slices.get(name)?.push({ ...result, cpu_ms_per_decision: total > 0 ? (cpu * 1000) / total : 0 });
      }
    }
  } finally {
    for (const server of Object.values(servers)) await server.stop();
    await collector.stop();
  }
  const median = (name: string, key: string): number => {
    const values = (slices.get(name) ?? []).map((m) => m[key] ?? 0).sort((a, b) => a - b);
    return values[Math.floor(values.length / 2)] ?? 0;
  };
  const summarize = (off: string, on: string): Metrics => ({
    added_p50_ms: round(median(on, 'p50_ms') - median(off, 'p50_ms')),
    added_p99_ms: round(median(on, 'p99_ms') - median(off, 'p99_ms')),
    added_cpu_ms_per_decision: round(median(on, 'cpu_ms_per_decision') - median(off, 'cpu_ms_per_decision'), 4),
    p50_off_ms: median(off, 'p50_ms'),
    p50_on_ms: median(on, 'p50_ms'),
    p99_off_ms: median(off, 'p99_ms'),
    p99_on_ms: median(on, 'p99_ms'),
    service_p99_off_ms: median(off, 'service_p99_ms'),
    service_p99_on_ms: median(on, 'service_p99_ms'),
    added_service_p99_ms: round(median(on, 'service_p99_ms') - median(off, 'service_p99_ms')),
    cpu_ms_per_decision_off: round(median(off, 'cpu_ms_per_decision'), 4),
    cpu_ms_per_decision_on: round(median(on, 'cpu_ms_per_decision'), 4),
    rps_on: Math.round(median(on, 'rps')),
    errors: [off, on].reduce((sum, name) => sum + (slices.get(name) ?? []).reduce((a, m) => a + (m['errors'] ?? 0) + (m['non_2xx'] ?? 0), 0), 0),
  });
  const common = `Pavilion: decisionLog sink none vs audit (answered only once durable as fsync says, streamed to NATS, one pseudonymised field); OPA: no decision_logs vs decision_logs to an HTTP collector (in memory, uploaded every 1 s; the same OPA figures in both rows). All five servers run at once and take turns: ${rounds} slice(s) of ${slice}s each at ${RATE} requests/s over ${CONNECTIONS} keep-alive connections from the paced open-loop client (bench/loadgen: evenly spaced, latency from the instant each request was due; service_* from the instant it was handed to its connection), medians over slices; differences of percentiles from separate slices, so noisy on a shared machine - CPU per decision is steadier`;
  return (['always', 'interval'] as const).map((fsync) => ({
    name: `added latency per decision, log on vs off, HTTP at a fixed ${RATE} requests/s (Pavilion fsync ${fsync})`,
    pavilion: summarize('pOff', fsync === 'always' ? 'pAlways' : 'pInterval'),
    peer: summarize('oOff', 'oOn'),
    peerName,
    notes: `${FSYNC_MEANING[fsync]}. ${common}`,
  }));
}

/**
 * What the log adds to one decision, without HTTP: a Pavilion built in this process (the bank
 * tenant's bundle, its system.log.mask evaluated by its engine, pseudonymisation, the audit
 * log, the NATS stream) takes decisions one at a time at a fixed rate, in three arms taking
 * turns on the same examples (each input made unique, so none is answered from the cache):
 * - logged, as the Data API takes one: the decision evaluated with the tenant's log rules
 *   beside it (one worker turn), its event written, timed to its receipt (durable as fsync
 *   says). Added latency = the write to the receipt + the worker time the rules took.
 * - bare: the same decision, not logged (the baseline `decision_*` figures).
 * - apart: the decision evaluated without its rules, whose event the sink then masks with
 *   the rules evaluated apart, one round trip to a worker more: what a decision answered
 *   from the cache pays (it has no worker turn to evaluate them beside), and what every
 *   logged decision paid before the rules went beside it.
 * This is the part of a decision's latency the log is responsible for; the HTTP difference
 * above also holds the machine's scheduling noise, tens of milliseconds at p99 here.
 */
async function inProcessAddedLatency(work: string, wasmDir: string, nats: RunningNats, examples: readonly Example[], fsync: FsyncPolicy): Promise<BenchCase> {
  const dir = join(work, `in-process-latency-${fsync}`);
  const running = await startPavilion({
    config: {
      tenants: [{ id: TENANT }],
      bundles: { directory: wasmDir, keysDirectory: join(wasmDir, 'keys') },
      nats: { servers: [nats.url] },
      decisionLog: {
        sink: 'audit',
        audit: { directory: join(dir, 'audit'), fsync, stream: { enabled: true } },
        privacy: { pseudonymiseFields: ['/input/subject/id'], pseudonymKeyDirectory: join(dir, 'pseudonym-keys') },
      },
      credentials: { tenants: {} },
    },
  });
  try {
    const { engine, sink, events } = running.pavilion;
    const paths = [`${TENANT}/system/log/drop`, `${TENANT}/system/log/mask`];
    const arms = { logged: [] as number[], added: [] as number[], bare: [] as number[], apart: [] as number[] };
    const one = async (k: number, record: boolean): Promise<void> => {
      const example = examples[Math.floor(k / 3) % examples.length] as Example;
      const input = { ...example.input, nonce: eventCounter++ };
      const arm = k % 3;
      if (arm === 1) {
        const t0 = performance.now();
        await engine.evaluate(TENANT, example.path, input);
        if (record) arms.bare.push(performance.now() - t0);
        return;
      }
      const decisionId = `bench-${process.pid}-${eventCounter}`;
      const timestamp = new Date().toISOString();
      const reqId = events.nextRequestId();
      const known = { decisionId, tenant: TENANT, path: example.path, requestedBy: '127.0.0.1:5000', timestamp, reqId };
      const t0 = performance.now();
      const decision = await engine.evaluate(TENANT, example.path, input, arm === 0
        ? { log: { paths, startedNs: process.hrtime.bigint(), event: (revision) => events.known({ ...known, revision }) } }
        : {});
      const event = events.create({ ...known, revision: decision.revision, input, result: decision.result, evalNs: decision.evalNs, handlerNs: decision.log?.handlerNs ?? decision.evalNs });
      const t1 = performance.now();
      const receipt = await sink.write(event, decision.log?.rules);
      const t2 = performance.now();
      if (receipt === undefined) throw new Error('the audit log did not log a decision');
      if (arm === 0 && decision.log === undefined) throw new Error('a logged decision had its log rules evaluated apart');
      if (!record) return;
      if (arm === 0) {
        arms.logged.push(t2 - t0);
        arms.added.push(t2 - t1 + (decision.log?.evalNs ?? 0) / 1e6);
      } else {
        arms.apart.push(t2 - t1);
      }
    };
    const interval = 1000 / RATE;
    const drive = async (durationMs: number, record: boolean): Promise<number> => {
      const started = performance.now();
      let next = started;
      let k = 0;
      while (performance.now() - started < durationMs) {
        const wait = next - performance.now();
        if (wait > 0) await sleep(wait);
        next += interval;
        await one(k++, record);
      }
      return k;
    };
    await drive(WARMUP_S * 1000, false);
    const cpuBefore = process.cpuUsage();
    const decisions = await drive(DURATION_S * 1000, true);
    const cpu = process.cpuUsage(cpuBefore);
    const sorted = (values: number[]): Float64Array => Float64Array.from(values).sort();
    const [logged, added, bare, apart] = [arms.logged, arms.added, arms.bare, arms.apart].map(sorted) as [Float64Array, Float64Array, Float64Array, Float64Array];
    const pct = (values: Float64Array, p: number): number => round(percentile(values, p), 3);
    return {
      name: `added latency per decision in-process: the log rules beside the decision, write to receipt, one at a time at ${RATE}/s (fsync ${fsync})`,
      pavilion: {
        added_p50_ms: pct(added, 50),
        added_p99_ms: pct(added, 99),
        added_p999_ms: pct(added, 99.9),
        added_max_ms: pct(added, 100),
        decision_p50_ms: pct(bare, 50),
        decision_p99_ms: pct(bare, 99),
        logged_decision_p50_ms: pct(logged, 50),
        logged_decision_p99_ms: pct(logged, 99),
        rules_apart_added_p50_ms: pct(apart, 50),
        rules_apart_added_p99_ms: pct(apart, 99),
        events: added.length,
        cpu_ms_per_decision: round((cpu.user + cpu.system) / 1000 / decisions, 4),
      },
      peer: {},
      peerName: 'none (OPA\'s logger takes an event into memory and returns: its added latency is measured through HTTP above)',
      notes: `${FSYNC_MEANING[fsync]}. The real composition (Pavilion's decision path: the bank bundle's system.log.mask evaluated in the decision's worker turn, pseudonymisation of /input/subject/id, WAL group commit, Merkle tree, checkpoints, NATS forwarding), one decision in flight, ${DURATION_S}s after ${WARMUP_S}s warm-up, three arms in turn: added_* = write to receipt + the log rules' worker time, for decisions the engine evaluated (every input unique); decision_* = the same decisions not logged; logged_decision_* = evaluation with the rules + write; rules_apart_added_* = the write of an event whose rules are evaluated apart, in a round trip of their own (a decision answered from the cache; every logged decision before the rules went beside it). cpu_ms_per_decision is this whole process (the generator included) over all three arms.`,
    };
  } finally {
    await running.stop();
  }
}

/**
 * What a restart costs with a full log: a sidecar reads its tenants' logs whole before it
 * serves (every frame's CRC, every leaf hashed into the tree again and checked against the
 * signed checkpoints, every decision id indexed), so its start grows with the log. LEAVES
 * masked events of the bank examples are logged (fsync 'never', to fill it fast; a budget
 * that holds them), then a new sink (the shipped build, the configured defaults) is started
 * on the directory three times with the file in the page cache, as the process that wrote it
 * left it, and once more after the page cache is dropped (where the machine lets it): a pod
 * started elsewhere, or on a network volume, reads the file from the disk.
 */
async function restartTime(work: string, examples: readonly Example[]): Promise<BenchCase> {
  const dir = join(work, 'restart');
  const budget = 8 * 2 ** 30;
  const pipeline = await startPipeline(dir, undefined, 'never', budget);
  const fillStarted = performance.now();
  try {
    for (let n = 0; n < LEAVES; n += 256) {
      await Promise.all(Array.from({ length: Math.min(256, LEAVES - n) }, (_, i) => pipeline.sink.write(benchEvent(examples[(n + i) % examples.length] as Example))));
    }
  } finally {
    await pipeline.stop();
  }
  const fillSeconds = (performance.now() - fillStarted) / 1000;
  const fileBytes = (await stat(join(dir, 'tenants', TENANT, 'audit.wal'))).size;
  const start = async (): Promise<{ ms: number; cpuMs: number }> => {
    const sink = await auditSink(dir, 'always', budget);
    const cpuBefore = process.cpuUsage();
    const t0 = performance.now();
    await sink.start();
    const ms = performance.now() - t0;
    const cpu = process.cpuUsage(cpuBefore);
    const leaves = (sink.openLogs().get(TENANT)?.status().details as Record<string, number> | undefined)?.['leaves'];
    await sink.stop(10_000);
    if (leaves !== LEAVES) throw new Error(`the restarted log holds ${leaves} leaves, not the ${LEAVES} logged`);
    return { ms, cpuMs: (cpu.user + cpu.system) / 1000 };
  };
  const warm = [await start(), await start(), await start()].sort((a, b) => a.ms - b.ms);
  const median = warm[1] as { ms: number; cpuMs: number };
  let cold: { ms: number; cpuMs: number } | undefined;
  try {
    execFileSync('sync');
    await writeFile('/proc/sys/vm/drop_caches', '3\n');
    cold = await start();
  } catch (error) {
    process.stdout.write(`  (no start with a cold page cache: ${(error as Error).message})\n`);
  }
  return {
    name: `restart with a full log: the sink's start on ${LEAVES} logged events (recovery before serving)`,
    pavilion: {
      start_ms: Math.round(median.ms),
      start_min_ms: Math.round(warm[0]?.ms ?? 0),
      start_max_ms: Math.round(warm[2]?.ms ?? 0),
      start_cpu_ms: Math.round(median.cpuMs),
      start_us_per_event: round((median.ms * 1000) / LEAVES, 2),
      ...(cold === undefined ? {} : { cold_cache_start_ms: Math.round(cold.ms), cold_cache_start_cpu_ms: Math.round(cold.cpuMs) }),
      leaves: LEAVES,
      log_mb: Math.round(fileBytes / 2 ** 20),
      fill_events_per_s: Math.round(LEAVES / fillSeconds),
    },
    peer: {},
    peerName: 'none (OPA keeps no decision log across a restart: its buffer is in memory)',
    notes: `${LEAVES} masked bank events logged (fsync never, checkpoints every 1,000), then three starts of a new sink on the directory with the file in the page cache: the median run's wall and CPU time, min and max beside it; then one start after the page cache was dropped (cold_cache_*, when the machine allows it). A start reads the file in 4 MiB chunks, checks each frame's CRC, hashes each leaf into the Merkle tree, compares each checkpoint's root and verifies its signature, and indexes each decision id (on a worker thread and the event loop together for a file of 32 MiB or more). The sidecar serves once every tenant's log has started`,
  };
}

async function inclusionProofs(): Promise<BenchCase> {
  const tree = new MerkleTree();
  const leafData = (i: number): Buffer => Buffer.from(`{"decision_id":"bench-${i}","tenant":"bank","result":true}`);
  const buildStarted = performance.now();
  for (let i = 0; i < LEAVES; i++) tree.appendLeafHash(hashLeaf(leafData(i)));
  const root = tree.root(LEAVES);
  const buildSeconds = (performance.now() - buildStarted) / 1000;
  // a signed checkpoint of that tree, as a verifier gets it with a proof
  const signer = SoftwareSigner.generate();
  const body = { origin: 'pavilion-bench/bank', tree_size: LEAVES, root_hash: root.toString('hex'), timestamp: new Date().toISOString(), key_id: signer.keyId };
  const checkpoint: SignedCheckpointV1 = { version: 1, algorithm: 'ecdsa-p256-sha256', ...body, signature: (await signer.sign(checkpointMessage(body))).toString('base64') };
  const keyring = new Keyring();
  keyring.add(signer.publicKeySpki);

  const samples = QUICK ? 2_000 : 10_000;
  const produce: number[] = [];
  const verify: number[] = [];
  const verifySigned: number[] = [];
  let seed = 12345;
  const random = (): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  for (let s = 0; s < samples; s++) {
    const index = Math.floor(random() * LEAVES);
    const t0 = performance.now();
    const path = tree.inclusionProof(index, LEAVES);
    const t1 = performance.now();
    verifyInclusion(index, LEAVES, hashLeaf(leafData(index)), path, root);
    const t2 = performance.now();
    keyring.verifyCheckpoint(checkpoint);
    verifyInclusion(index, LEAVES, hashLeaf(leafData(index)), path, Buffer.from(checkpoint.root_hash, 'hex'));
    const t3 = performance.now();
    produce.push((t1 - t0) * 1000);
    verify.push((t2 - t1) * 1000);
    verifySigned.push((t3 - t2) * 1000);
  }
  const sorted = (values: number[]): number[] => values.sort((a, b) => a - b);
  const [p, v, vs] = [sorted(produce), sorted(verify), sorted(verifySigned)];
  return {
    name: `inclusion proof at ${LEAVES.toLocaleString('en')} entries: produce + verify (RFC 9162, in-process)`,
    pavilion: {
      produce_p50_us: round(percentile(p, 50), 2),
      produce_p99_us: round(percentile(p, 99), 2),
      verify_p50_us: round(percentile(v, 50), 2),
      verify_p99_us: round(percentile(v, 99), 2),
      produce_plus_verify_p99_us: round(percentile(p, 99) + percentile(v, 99), 2),
      verify_with_checkpoint_signature_p99_us: round(percentile(vs, 99), 2),
      path_hashes: tree.inclusionProof(0, LEAVES).length,
      tree_build_s: round(buildSeconds, 2),
      rss_mb: Math.round(process.memoryUsage().rss / 2 ** 20),
    },
    peer: {},
    peerName: NO_PEER,
    notes: `${samples} random leaves; the tree is held in memory as the audit log holds it (leaf hashes + cached levels); verify = leaf hash + path to the root; with signature = also the ECDSA P-256 checkpoint check a verifier does. No runnable peer: OPA has no verifiable log, and Trillian/Tessera are services, not a library call.`,
  };
}

async function checkpointSigning(work: string): Promise<BenchCase> {
  const name = 'checkpoint signing rate through SoftHSM2 (PKCS#11, ECDSA P-256)';
  if (SOFTHSM_MODULE === undefined) {
    return { name, pavilion: {}, peer: {}, peerName: NO_PEER, skipped: 'SoftHSM2 is not installed (scripts/install-softhsm.sh)' };
  }
  const dir = join(work, 'softhsm');
  await mkdir(join(dir, 'tokens'), { recursive: true });
  const conf = join(dir, 'softhsm2.conf');
  await writeFile(conf, `directories.tokendir = ${join(dir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
  process.env['SOFTHSM2_CONF'] = conf;
  const pin = '246810';
  const key = { tokenLabel: 'pavilion-bench', pin, keyLabel: 'checkpoint-bench' };
  // the shipped signer: every token call on a thread of its own
  let hsm: Pkcs11ThreadSigner;
  try {
    execFileSync('softhsm2-util', ['--init-token', '--free', '--label', 'pavilion-bench', '--pin', pin, '--so-pin', '13579'], { env: process.env, stdio: 'pipe' });
    hsm = await Pkcs11ThreadSigner.open({ modulePath: SOFTHSM_MODULE, key: { ...key, generate: true }, operationTimeoutMs: 10_000 });
  } catch (error) {
    return { name, pavilion: {}, peer: {}, peerName: NO_PEER, skipped: `no SoftHSM2 token (softhsm2-util, or the optional pkcs11js): ${(error as Error).message}` };
  }
  // the same key driven on this thread, for what the thread costs (the library is the thread's)
  const module = Pkcs11Module.open(SOFTHSM_MODULE, { acceptInitialized: true });
  try {
    const inProcess = await module.signer(key);
    const software = SoftwareSigner.generate();
    const rate = async (signer: CheckpointSigner, seconds: number): Promise<number> => {
      const body = { origin: 'pavilion-bench/bank', tree_size: 1, root_hash: '00'.repeat(32), timestamp: new Date().toISOString(), key_id: signer.keyId };
      let count = 0;
      const started = performance.now();
      while (performance.now() - started < seconds * 1000) {
        await signer.sign(checkpointMessage({ ...body, tree_size: ++count }));
      }
      return count / ((performance.now() - started) / 1000);
    };
    const seconds = QUICK ? 1 : 3;
    await rate(hsm, 0.3);
    const hsmRate = await rate(hsm, seconds);
    await rate(inProcess, 0.3);
    const inProcessRate = await rate(inProcess, seconds);
    const softwareRate = await rate(software, seconds);
    // whole checkpoints through the log: sign + verify + append the frame durably (fsync always)
    const log = new AuditLog({ ...defaultAuditSettings(join(dir, 'log')), directory: join(dir, 'log'), origin: 'pavilion-bench/bank', signer: hsm });
    await log.start();
    let checkpoints = 0;
    const started = performance.now();
    try {
      while (performance.now() - started < seconds * 1000) {
        await log.append(benchEvent({ path: 'bank/authz/allow', input: {} }));
        await log.checkpoint();
        checkpoints++;
      }
    } finally {
      await log.stop(10_000);
    }
    const perDay = 24 * 60; // one checkpoint a minute
    return {
      name,
      pavilion: {
        signs_per_s: Math.round(hsmRate),
        in_process_signs_per_s: Math.round(inProcessRate),
        checkpoints_per_s: Math.round(checkpoints / ((performance.now() - started) / 1000)),
        software_signs_per_s: Math.round(softwareRate),
        checkpoints_per_day_at_1_per_min: perDay,
        hsm_busy_s_per_day_at_1_per_min: round(perDay / hsmRate, 3),
      },
      peer: {},
      peerName: NO_PEER,
      notes: 'signs_per_s: the shipped signer, every token call on a thread of its own: SHA-256 in JS + CKM_ECDSA on the token, one operation at a time (the signer serialises); in_process_signs_per_s: the same key driven from this thread, for what the thread hop costs; checkpoints_per_s: one leaf appended, then a checkpoint signed, verified and appended with fsync always; software_signs_per_s: the embedded software key, for reference',
    };
  } finally {
    module.close();
    await hsm.close();
  }
}

/**
 * Gas per anchor and per day (one checkpoint a minute): the `PavilionAnchor` contract on the
 * in-process local chain (bench/anchor-figures.ts). No peer: OPA does not anchor.
 */
async function anchorGas(): Promise<BenchCase> {
  const figures = await measureAnchor({ anchors: QUICK ? 10 : 50 });
  return {
    name: 'gas per anchor and per day at one checkpoint a minute (EVM anchor, local chain)',
    pavilion: { ...figures },
    peer: {},
    peerName: NO_PEER,
  };
}

async function outageLoss(work: string, nats: RunningNats, regoBundle: string, requests: readonly LoadRequest[], examples: readonly Example[], peerName: string): Promise<BenchCase> {
  const totalMs = (QUICK ? 4 : 9) * 1000;
  const downAtMs = totalMs / 3;
  const upAtMs = (2 * totalMs) / 3;
  const rate = 2000;

  // Pavilion: append at a steady rate; nats-server SIGKILLed at 1/3, back at 2/3.
  const before = await streamDecisionIds(nats.url);
  const pipeline = await startPipeline(join(work, 'outage'), nats.url);
  const appended = new Set<string>();
  let maxBacklog = 0;
  let catchUp = Number.NaN;
  const backlog = (): number => pipeline.forwarder?.backlog()[TENANT] ?? 0;
  const published = (): number => Number((pipeline.forwarder?.status().details as { published?: number } | undefined)?.published ?? 0);
  const outage = (async () => {
    await sleep(downAtMs);
    await nats.kill();
    const watch = setInterval(() => {
      maxBacklog = Math.max(maxBacklog, backlog());
    }, 20);
    await sleep(upAtMs - downAtMs);
    await nats.restart();
    // caught up: everything acknowledged to the appenders before the restart is published
    const waiting = appended.size;
    const restartedAt = performance.now();
    while (published() < waiting && performance.now() - restartedAt < 60_000) await sleep(10);
    catchUp = (performance.now() - restartedAt) / 1000;
    clearInterval(watch);
  })();
  let load: Awaited<ReturnType<typeof appendLoad>>;
  try {
    load = await appendLoad(pipeline.sink, examples, { concurrency: 32, durationMs: totalMs, ratePerS: rate, onAck: (id) => appended.add(id) });
    await outage;
    await waitForStream(nats.url, before.messages + appended.size, 60_000);
  } finally {
    await pipeline.stop();
  }
  const after = await streamDecisionIds(nats.url);
  let lost = 0;
  for (const id of appended) if (!after.ids.has(id)) lost++;

  // OPA: the same rate through HTTP; its collector stopped at 1/3, started at 2/3.
  const collector = new DecisionLogCollector(await freePort());
  await collector.start();
  const opa = await startOpaServer(regoBundle, work, collector);
  const answered = new Set<string>();
  let peer: Metrics;
  try {
    let catchUpOpa = Number.NaN;
    const collectorOutage = (async () => {
      await sleep(downAtMs);
      await collector.stop();
      await sleep(upAtMs - downAtMs);
      await collector.start();
      // caught up: everything answered before the restart reached the collector
      const waiting = [...answered];
      catchUpOpa = await waitFor(() => waiting.every((id) => collector.ids.has(id)), 30_000);
    })();
    await driveHttp(opa.url, requests, { concurrency: 32, durationMs: totalMs, ratePerS: rate }, (id) => answered.add(id));
    await collectorOutage;
    await waitFor(() => [...answered].every((id) => collector.ids.has(id)), 10_000);
    let missing = 0;
    for (const id of answered) if (!collector.ids.has(id)) missing++;
    peer = { events_appended: answered.size, events_delivered: answered.size - missing, events_lost: missing, catch_up_s: round(catchUpOpa, 2) };
  } finally {
    await opa.stop();
    await collector.stop();
  }
  return {
    name: 'events lost across an outage of the destination (NATS SIGKILLed and restarted / OPA\'s collector stopped and restarted)',
    pavilion: {
      events_appended: appended.size,
      events_delivered: [...appended].filter((id) => after.ids.has(id)).length,
      events_lost: lost,
      duplicates_in_stream: after.messages - before.messages - after.ids.size + before.ids.size,
      max_backlog_events: maxBacklog,
      catch_up_s: round(catchUp, 2),
      refused_events: load.refused,
    },
    peer,
    peerName,
    notes: `${rate} events/s for ${totalMs / 1000}s, destination down from ${downAtMs / 1000}s to ${upAtMs / 1000}s; Pavilion in-process (masking + audit log + forwarder), OPA through its Data API with decision_logs uploading every 1 s; lost = acknowledged but never delivered (target 0)`,
  };
}

async function killLoss(main: string, bundleDir: string, regoBundle: string, work: string, requests: readonly LoadRequest[], peerName: string): Promise<BenchCase> {
  const runMs = (QUICK ? 2 : 4) * 1000;
  const killAndCount = async (server: Server, record: Set<string>): Promise<number> => {
    let killed = false;
    const driving = driveHttp(server.url, requests, { concurrency: CONNECTIONS, durationMs: runMs + 10_000, stopped: () => killed }, (id) => record.add(id));
    await sleep(runMs);
    const exited = new Promise((resolve) => server.child.once('exit', resolve));
    server.child.kill('SIGKILL');
    await exited;
    killed = true;
    const { failed } = await driving;
    return failed;
  };

  const pavilion = await startPavilionServer(main, bundleDir, work, { audit: true });
  const answered = new Set<string>();
  const failedP = await killAndCount(pavilion, answered);
  const missing = await countLeaves(pavilion.auditDir, TENANT, answered);
  const logged = await countLeaves(pavilion.auditDir);

  const collector = new DecisionLogCollector(await freePort());
  await collector.start();
  const opa = await startOpaServer(regoBundle, work, collector);
  const answeredOpa = new Set<string>();
  let failedO = 0;
  try {
    failedO = await killAndCount(opa, answeredOpa);
    await sleep(2000);
  } finally {
    await collector.stop();
  }
  let missingOpa = 0;
  for (const id of answeredOpa) if (!collector.ids.has(id)) missingOpa++;
  return {
    name: 'events lost across kill -9 of the server: decisions answered 200 but not in the log',
    pavilion: { events_answered: answered.size, events_lost: missing, events_in_log_after_recovery: logged, requests_cut_by_kill: failedP },
    peer: { events_answered: answeredOpa.size, events_lost: missingOpa, events_in_log_after_recovery: collector.ids.size, requests_cut_by_kill: failedO },
    peerName,
    notes: `${CONNECTIONS} clients for ${runMs / 1000}s, then SIGKILL; Pavilion: the tenant's WAL recovered on restart (fsync always; in the log = a leaf with that decision id); OPA: events its collector received (uploads every 1 s from an in-memory buffer). Target 0 lost`,
  };
}

export async function run(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'pavilion-bench-audit-'));
  let nats: RunningNats | undefined;
  try {
    // the compiled server only for the cases that start one
    const main = ['http', 'latency', 'kill'].some((c) => CASES.has(c)) ? await sidecarBuild() : '';
    const wasmDir = join(work, 'wasm');
    await buildTenantBundle(definitionPath(TENANT), { outputDirectory: wasmDir });
    const rego = await buildTenantBundle(definitionPath(TENANT), { outputDirectory: join(work, 'rego'), target: 'rego', skipTests: true });
    const examples = (JSON.parse(await readFile(join(REPO_ROOT, 'bundles', TENANT, 'examples.json'), 'utf8')) as Example[]).map((e) => ({ path: e.path, input: e.input }));
    const requests: LoadRequest[] = examples.map((e) => ({ path: `/v1/data/${e.path}`, headers: { 'x-pavilion-tenant': TENANT }, body: JSON.stringify({ input: e.input }) }));
    const peerName = await opaName();
    nats = await startNats();
    process.stdout.write(`audit benchmark${QUICK ? ' (quick)' : ''}: ${requests.length} ${TENANT} example requests, ${CONNECTIONS} connections, ${DURATION_S}s runs, ${LEAVES} leaves\n`);

    const cases: BenchCase[] = [];
    const step = async (label: string, measure: () => Promise<BenchCase>): Promise<void> => {
      process.stdout.write(`- ${label}\n`);
      const started = performance.now();
      cases.push(await measure());
      process.stdout.write(`  (${round((performance.now() - started) / 1000, 1)} s)\n`);
    };
    const natsServer = nats;
    if (CASES.has('in-process')) {
      await step('in-process sustained events/s, fsync always', () => inProcessThroughput(work, natsServer, examples, 'always'));
      await step('in-process sustained events/s, fsync interval', () => inProcessThroughput(work, natsServer, examples, 'interval'));
    }
    if (CASES.has('http')) await step('HTTP sustained events/s', () => httpThroughput(main, wasmDir, rego.output, work, natsServer, requests, peerName));
    if (CASES.has('latency')) {
      process.stdout.write('- added latency at a fixed rate\n');
      cases.push(...(await addedLatency(main, wasmDir, rego.output, work, natsServer, requests, peerName)));
    }
    if (CASES.has('latency-in-process')) {
      await step('added latency in-process, fsync always', () => inProcessAddedLatency(work, wasmDir, natsServer, examples, 'always'));
      await step('added latency in-process, fsync interval', () => inProcessAddedLatency(work, wasmDir, natsServer, examples, 'interval'));
    }
    if (CASES.has('proofs')) await step(`inclusion proofs at ${LEAVES} entries`, () => inclusionProofs());
    if (CASES.has('restart')) await step(`restart with ${LEAVES} logged events`, () => restartTime(work, examples));
    if (CASES.has('signing')) await step('checkpoint signing through SoftHSM2', () => checkpointSigning(work));
    if (CASES.has('anchor')) await step('gas per anchor (slot)', () => anchorGas());
    if (CASES.has('outage')) await step('destination outage', () => outageLoss(work, natsServer, rego.output, requests, examples, peerName));
    if (CASES.has('kill')) await step('kill -9', () => killLoss(main, wasmDir, rego.output, work, requests, peerName));
    // a subset of the cases does not replace the full results
    const complete = ALL_CASES.every((c) => CASES.has(c));
    await writeResults(complete ? 'audit' : `audit-${[...CASES].join('+')}`, cases, {
      quick: QUICK,
      connections: CONNECTIONS,
      duration_s: DURATION_S,
      fixed_rate_rps: RATE,
      load_generator: 'autocannon (separate process); loss cases: fetch clients recording decision ids',
      targets: { events_per_s: 20_000, added_p99_ms: 0.2, inclusion_proof_ms_at_1e6: 1, events_lost: 0 },
    });
  } finally {
    await nats?.stop();
    await rm(work, { recursive: true, force: true });
  }
}
