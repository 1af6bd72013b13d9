/**
 * `npm run bench -- soak` (`--quick`: 2 minutes): Pavilion and OPA side by side for a long
 * while under the same steady load, with the same bundle swaps and the same outage, to see
 * what grows: resident memory, open file descriptors, latency, lost decision events.
 *
 * Both sides, at the same time on one machine:
 * - BENCH_SOAK_RATE decisions a second each (default 100; open loop, unique inputs, keep-alive);
 * - a new bundle revision every BENCH_SOAK_SWAP_S seconds (default 30), each one built for the
 *   run (Pavilion refuses a revision it replaced before, as a replay): Pavilion's over NATS
 *   JetStream (push), OPA's from a bundle server it long-polls; 10 s after each, both are asked
 *   which revision they serve (`swaps_served`);
 * - decision logging on: Pavilion's audit log (fsync interval) streaming to JetStream, OPA's
 *   decision logger uploading to a collector every second;
 * - at 40% of the run, between two swaps, the log destination goes away for 15 s
 *   (nats-server SIGKILLed and restarted, which takes Pavilion's bundle channel with it; OPA's
 *   collector stopped and started).
 * Sampled every BENCH_SOAK_SAMPLE_S seconds (default 10): RSS and open fds of each server;
 * for Pavilion also where its RSS lies: the event loop's V8 heap (committed and used) and
 * external memory (Buffers and ArrayBuffers) from its /metrics, anonymous against
 * file-backed pages from /proc, and the resident pages of every thread's WebAssembly memories
 * (from /proc's smaps: V8's 10 GiB reservations). The rest of its anonymous memory is the
 * worker threads' heaps, compiled code and native allocations (what no metric names apart).
 * At the end: every answered decision must be in the destination (lost = answered, never
 * delivered), and memory growth is the least-squares slope of RSS in MB per hour, before the
 * outage (after the first fifth, warm-up) and after it (from 30 s after the destination is
 * back). Latency is counted from when each request was due (open loop), answered ones only.
 *
 * Env: BENCH_SOAK_MINUTES (default 10, quick 2), BENCH_SOAK_RATE, BENCH_SOAK_SWAP_S, BENCH_SOAK_SAMPLE_S.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { developmentKey } from '../sidecar/src/bundles/index.ts';
import { parseConfig, type NatsConfig } from '../sidecar/src/config/index.ts';
import { NatsBundleStore, connectNats } from '../sidecar/src/distribution/index.ts';
import { REPO_ROOT, findOpa } from '../sidecar/src/lib/tools.ts';
import { startNats, type RunningNats } from '../test/harness/nats-server.ts';
import { DecisionLogCollector } from './lib/decision-log-collector.ts';
import { streamDecisionIds } from './lib/decision-stream.ts';
import { opaName } from './lib/opa.ts';
import { openFds, residentMb, wasmResidentMb } from './lib/process-stats.ts';
import { buildRevision, opaBundleConfig, startBundleServer, type BundleServer } from './lib/revisions.ts';
import { writeResults, type Metrics } from './lib/results.ts';
import { buildSidecar, freePort, startServer, type Server } from './lib/servers.ts';
import { percentile } from './lib/stats.ts';

const QUICK = process.env['BENCH_QUICK'] === '1' || process.argv.includes('--quick');
const MINUTES = Number(process.env['BENCH_SOAK_MINUTES'] ?? (QUICK ? 2 : 10));
const RATE = Number(process.env['BENCH_SOAK_RATE'] ?? 100);
const SWAP_S = Number(process.env['BENCH_SOAK_SWAP_S'] ?? (QUICK ? 15 : 30));
const SAMPLE_S = Number(process.env['BENCH_SOAK_SAMPLE_S'] ?? (QUICK ? 5 : 10));
const OUTAGE_S = 15;

interface Side {
  readonly name: 'pavilion' | 'opa';
  readonly server: Server;
  readonly headers: Record<string, string>;
  /** Decision ids answered 200. */
  readonly answered: Set<string>;
  errors: number;
  /** Latencies (ms, from when each request was due) of answered requests, by minute of the run. */
  readonly latencies: number[][];
  /** Swaps this side served within 10 s. */
  served: number;
  readonly samples: Sample[];
}

interface Sample {
  readonly atS: number;
  readonly rssMb: number;
  readonly fds: number;
  /** Pavilion only: where the RSS lies (MB). */
  readonly parts?: MemoryParts;
}

interface MemoryParts {
  readonly rssAnonMb: number;
  readonly rssFileMb: number;
  readonly mainHeapTotalMb: number;
  readonly mainHeapUsedMb: number;
  readonly externalMb: number;
  /** Resident pages of the WebAssembly memories of every thread (wasmResidentMb). */
  readonly wasmMb: number;
}

const MB = 2 ** 20;

/** A gauge of Pavilion's /metrics exposition (prom-client's process metrics carry the `pavilion_` prefix), in MB. */
function gaugeMb(exposition: string, name: string): number {
  const value = new RegExp(`^pavilion_${name} (\\S+)`, 'm').exec(exposition)?.[1];
  return value === undefined ? Number.NaN : Number(value) / MB;
}

/** Where Pavilion's resident memory lies now: `resident`'s anonymous and file pages, its /metrics' main heap and external memory, its Wasm pages. */
async function memoryParts(server: Server, resident: { readonly anon: number; readonly file: number }): Promise<MemoryParts | undefined> {
  try {
    const exposition = await (await fetch(`${server.url}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
    return {
      rssAnonMb: resident.anon,
      rssFileMb: resident.file,
      mainHeapTotalMb: gaugeMb(exposition, 'nodejs_heap_size_total_bytes'),
      mainHeapUsedMb: gaugeMb(exposition, 'nodejs_heap_size_used_bytes'),
      externalMb: gaugeMb(exposition, 'nodejs_external_memory_bytes'),
      wasmMb: wasmResidentMb(server.pid),
    };
  } catch {
    return undefined; // not answering now (a sample of RSS and fds is still taken)
  }
}

/** What `side`'s server holds now, `atS` into the run. */
async function sample(side: Side, atS: number): Promise<void> {
  const resident = residentMb(side.server.pid);
  const parts = side.name === 'pavilion' ? await memoryParts(side.server, resident) : undefined;
  side.samples.push({ atS, rssMb: resident.rss, fds: openFds(side.server.pid), ...(parts === undefined ? {} : { parts }) });
}

/**
 * Growth in MB/h of each part of Pavilion's RSS over `after` (the samples from 30 s after the
 * outage: least-squares slopes, as for RSS), and each part at the last sample of `all`.
 */
function growthByPart(after: readonly Sample[], all: readonly Sample[]): Metrics {
  const last = all.findLast((s) => s.parts !== undefined)?.parts;
  // a part with fewer than two readable samples is left out (not reported as no growth)
  const slopeOf = (name: string, part: (p: MemoryParts) => number): Metrics => {
    const points = after.flatMap((s) => (s.parts === undefined || !Number.isFinite(part(s.parts)) ? [] : [[s.atS / 3600, part(s.parts)] as const]));
    return points.length < 2 ? {} : { [name]: round(slope(points), 1) };
  };
  const endOf = (name: string, value: number | undefined): Metrics => (value === undefined || !Number.isFinite(value) ? {} : { [name]: round(value) });
  return {
    ...slopeOf('rss_anon_growth_mb_per_h_after_outage', (p) => p.rssAnonMb),
    ...slopeOf('rss_file_growth_mb_per_h_after_outage', (p) => p.rssFileMb),
    ...slopeOf('main_heap_total_growth_mb_per_h_after_outage', (p) => p.mainHeapTotalMb),
    ...slopeOf('main_heap_used_growth_mb_per_h_after_outage', (p) => p.mainHeapUsedMb),
    ...slopeOf('external_growth_mb_per_h_after_outage', (p) => p.externalMb),
    ...slopeOf('wasm_growth_mb_per_h_after_outage', (p) => p.wasmMb),
    // a residual, not a measurement: resident anonymous pages less the committed main heap, the
    // external memory V8 accounts (allocated, not necessarily resident) and the Wasm pages -
    // the workers' heaps, code and native allocations, and the error of those subtractions
    ...slopeOf('rest_anon_growth_mb_per_h_after_outage', (p) => p.rssAnonMb - p.mainHeapTotalMb - p.externalMb - p.wasmMb),
    ...endOf('rss_anon_mb_end', last?.rssAnonMb),
    ...endOf('main_heap_total_mb_end', last?.mainHeapTotalMb),
    ...endOf('external_mb_end', last?.externalMb),
    ...endOf('wasm_mb_end', last?.wasmMb),
  };
}

/** Least-squares slope of y over x. */
function slope(points: ReadonlyArray<readonly [number, number]>): number {
  const n = points.length;
  if (n < 2) return 0;
  const mx = points.reduce((s, [x]) => s + x, 0) / n;
  const my = points.reduce((s, [, y]) => s + y, 0) / n;
  const sxy = points.reduce((s, [x, y]) => s + (x - mx) * (y - my), 0);
  const sxx = points.reduce((s, [x]) => s + (x - mx) ** 2, 0);
  return sxx === 0 ? 0 : sxy / sxx;
}

const round = (value: number, digits = 1): number => Math.round(value * 10 ** digits) / 10 ** digits;

/** One decision: POST /v1/data/bank/authz/allow with a unique input; its latency and decision id. */
function decide(side: Side, agent: Agent, n: number, due: number): Promise<{ ms: number; id: string | undefined }> {
  const body = JSON.stringify({ input: { user: n % 2 === 0 ? 'alice' : 'bob', n } });
  const url = new URL(side.server.url);
  const started = due;
  return new Promise((resolve) => {
    const req = request({ host: url.hostname, port: url.port, method: 'POST', path: '/v1/data/bank/authz/allow', agent, headers: { 'content-type': 'application/json', ...side.headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        let id: string | undefined;
        try {
          const parsed = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { decision_id?: unknown };
          if (res.statusCode === 200 && typeof parsed.decision_id === 'string') id = parsed.decision_id;
        } catch {
          // counted as an error below
        }
        resolve({ ms: performance.now() - started, id });
      });
    });
    req.on('error', () => resolve({ ms: performance.now() - started, id: undefined }));
    req.setTimeout(10_000, () => req.destroy(new Error('no answer within 10 s')));
    req.end(body);
  });
}

/** Send RATE decisions a second to `side` until `endAt` (open loop: each due at its time, whatever the earlier ones did). */
async function drive(side: Side, startAt: number, endAt: number): Promise<void> {
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  const pending: Promise<void>[] = [];
  let n = 0;
  for (;;) {
    const due = startAt + (n * 1000) / RATE;
    if (due >= endAt) break;
    const wait = due - performance.now();
    if (wait > 1) await sleep(wait);
    const minute = Math.floor((due - startAt) / 60_000);
    pending.push(decide(side, agent, n, due).then(({ ms, id }) => {
      if (id === undefined) {
        side.errors++;
      } else {
        side.answered.add(id);
        (side.latencies[minute] ??= []).push(ms);
      }
    }));
    n++;
    if (pending.length > 10_000) await Promise.all(pending.splice(0, 5_000));
  }
  await Promise.all(pending);
  agent.destroy();
}

function summary(side: Side, delivered: (id: string) => boolean, swaps: number, durationS: number, outage: { fromS: number; backS: number }): Metrics {
  const warm = side.samples.filter((s) => s.atS >= durationS / 5);
  const before = warm.filter((s) => s.atS < outage.fromS);
  const after = side.samples.filter((s) => s.atS >= outage.backS + 30);
  const minutes = side.latencies.filter((l) => l !== undefined && l.length > 0);
  const lost = [...side.answered].filter((id) => !delivered(id)).length;
  return {
    requests: side.answered.size + side.errors,
    errors: side.errors,
    events_lost: lost,
    bundle_swaps: swaps,
    swaps_served: side.served,
    p99_ms_first_minute: round(percentile(minutes[0] ?? [], 99), 2),
    p99_ms_last_minute: round(percentile(minutes.at(-1) ?? [], 99), 2),
    p50_ms_last_minute: round(percentile(minutes.at(-1) ?? [], 50), 2),
    rss_mb_after_warmup: round(warm[0]?.rssMb ?? 0),
    rss_mb_end: round(side.samples.at(-1)?.rssMb ?? 0),
    rss_mb_max: round(Math.max(...side.samples.map((s) => s.rssMb))),
    rss_growth_mb_per_h_before_outage: round(slope(before.map((s) => [s.atS / 3600, s.rssMb] as const)), 1),
    rss_growth_mb_per_h_after_outage: round(slope(after.map((s) => [s.atS / 3600, s.rssMb] as const)), 1),
    fds_after_warmup: warm[0]?.fds ?? 0,
    fds_end: side.samples.at(-1)?.fds ?? 0,
    fds_max: Math.max(...side.samples.map((s) => s.fds)),
  };
}

/** The revision `side` serves now (`bank/authz/rev`), or undefined. */
async function servedRevision(side: Side): Promise<string | undefined> {
  try {
    const response = await fetch(`${side.server.url}/v1/data/bank/authz/rev`, { method: 'POST', headers: { 'content-type': 'application/json', ...side.headers }, body: '{"input":{}}', signal: AbortSignal.timeout(5000) });
    const result = ((await response.json()) as { result?: unknown }).result;
    return typeof result === 'string' ? result : undefined;
  } catch {
    return undefined;
  }
}

export async function run(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'pavilion-bench-soak-'));
  const servers: Server[] = [];
  let nats: RunningNats | undefined;
  let collector: DecisionLogCollector | undefined;
  let bundles: BundleServer | undefined;
  let store: NatsBundleStore | undefined;
  try {
    nats = await startNats();
    collector = new DecisionLogCollector(await freePort());
    await collector.start();
    bundles = await startBundleServer();
    const main = await buildSidecar(REPO_ROOT);
    const key = await developmentKey('bank', work);
    const durationS = MINUTES * 60;
    const swapsPlanned = Math.floor(durationS / SWAP_S);
    process.stdout.write(`soak: ${MINUTES} min, ${RATE} decisions/s to each side, a swap every ${SWAP_S} s, log destination away for ${OUTAGE_S} s at 40%; building ${swapsPlanned + 1} revisions with opa...\n`);
    const revisions: Array<{ rev: string; wasm: Buffer; rego: Buffer }> = [];
    for (let i = 0; i <= swapsPlanned; i++) {
      const rev = `soak-${String(i).padStart(3, '0')}`;
      revisions.push({ rev, ...(await buildRevision(work, rev, join(work, 'keys', 'bank.key.pem'), key.keyPem)) });
    }
    const first = revisions[0] as { rev: string; wasm: Buffer; rego: Buffer };
    const natsConfig = parseConfig({ nats: { servers: [nats.url], name: 'bench-publisher' } }).nats as NatsConfig;
    store = new NatsBundleStore(await connectNats(natsConfig), natsConfig);
    await store.push('bank', first.wasm, { revision: first.rev, pushedBy: 'bench' });
    // every revision's bytes in the Object Store before the clock starts, as the bundle server holds OPA's
    for (const { rev, wasm } of revisions.slice(1)) await store.upload('bank', wasm, rev);
    bundles.publish(first.rego, `"${first.rev}"`);

    const port = await freePort();
    const config = join(work, 'pavilion.json');
    await writeFile(config, JSON.stringify({
      http: { host: '127.0.0.1', port },
      tenants: [{ id: 'bank' }],
      bundles: { source: 'nats', keysDirectory: join(work, 'keys'), persistDirectory: join(work, 'lkg') },
      decisionLog: { sink: 'audit', audit: { directory: join(work, 'audit'), fsync: 'interval', stream: { enabled: true } } },
      nats: { servers: [nats.url] },
      credentials: { tenants: {} },
    }));
    const pavilionServer = await startServer(process.execPath, [main], `http://127.0.0.1:${port}`, '/health/ready', { ...process.env, PAVILION_CONFIG: config });
    servers.push(pavilionServer);
    const opaPort = await freePort();
    const opaConfig = join(work, 'opa.yaml');
    const logged = opaBundleConfig(bundles.url, await readFile(join(work, 'keys', 'bank.pub.pem'), 'utf8'))
      .replace('services:\n', `services:\n  collector:\n    url: ${collector.url}\n`);
    await writeFile(opaConfig, `${logged}decision_logs:\n  service: collector\n  reporting:\n    min_delay_seconds: 1\n    max_delay_seconds: 1\n`);
    const opaServer = await startServer(findOpa(), ['run', '--server', '--addr', `127.0.0.1:${opaPort}`, '--log-level', 'error', '-c', opaConfig], `http://127.0.0.1:${opaPort}`, '/health?bundles');
    servers.push(opaServer);

    const sides: Side[] = [
      { name: 'pavilion', server: pavilionServer, headers: { 'x-pavilion-tenant': 'bank' }, answered: new Set(), errors: 0, latencies: [], served: 0, samples: [] },
      { name: 'opa', server: opaServer, headers: {}, answered: new Set(), errors: 0, latencies: [], served: 0, samples: [] },
    ];
    const pavilion = sides[0] as Side;
    const opa = sides[1] as Side;
    const startAt = performance.now();
    const endAt = startAt + durationS * 1000;
    const elapsedS = (): number => (performance.now() - startAt) / 1000;
    const driving = sides.map((side) => drive(side, startAt, endAt));
    // between two swaps, so the outage never starts while a swap is being fetched
    const outage = { fromS: Math.floor((durationS * 0.4) / SWAP_S) * SWAP_S + SWAP_S / 2, backS: 0 };
    outage.backS = outage.fromS + OUTAGE_S;

    let swaps = 0;
    const checks: Promise<void>[] = [];
    let phase: 'before' | 'during' | 'after' = 'before';
    let nextSwapS = SWAP_S;
    let nextSampleS = 0;
    const samplings: Promise<void>[] = [];
    let sampleError: unknown;
    const liveStore = store;
    const liveBundles = bundles;
    const liveNats = nats;
    const liveCollector = collector;
    while (performance.now() < endAt) {
      if (sampleError !== undefined) throw sampleError;
      const now = elapsedS();
      if (now >= nextSampleS) {
        // not awaited: a slow /metrics must not hold up the swaps and the outage
        samplings.push(...sides.map((side) => sample(side, now).catch((error: unknown) => {
          sampleError ??= error; // a server gone: the loop stops at its next turn
        })));
        nextSampleS += SAMPLE_S;
      }
      if (now >= nextSwapS && swaps < swapsPlanned) {
        swaps++;
        const next = revisions[swaps] as { rev: string; wasm: Buffer; rego: Buffer };
        // not awaited here: the samples and the outage keep their times
        void liveStore.push('bank', next.wasm, { revision: next.rev, pushedBy: 'bench' }).catch(() => undefined);
        liveBundles.publish(next.rego, `"${next.rev}"`);
        checks.push(sleep(10_000).then(async () => {
          for (const side of sides) if ((await servedRevision(side)) === next.rev) side.served++;
        }));
        nextSwapS += SWAP_S;
      }
      if (phase === 'before' && now >= outage.fromS) {
        process.stdout.write(`soak: ${Math.round(now)} s: log destinations away (nats-server SIGKILL, OPA's collector stopped)\n`);
        await Promise.all([liveNats.kill(), liveCollector.stop()]);
        phase = 'during';
      } else if (phase === 'during' && now >= outage.backS) {
        await Promise.all([liveNats.restart(), liveCollector.start()]);
        process.stdout.write(`soak: ${Math.round(now)} s: log destinations back\n`);
        phase = 'after';
      }
      await sleep(200);
    }
    await Promise.all([...driving, ...checks, ...samplings]);
    if (sampleError !== undefined) throw sampleError;
    for (const side of sides) await sample(side, elapsedS());
    for (const side of sides) side.samples.sort((a, b) => a.atS - b.atS);

    // catch up: every answered decision in the destination, or the time runs out
    const deadline = performance.now() + 120_000;
    let streamed = new Set<string>();
    while (performance.now() < deadline) {
      streamed = (await streamDecisionIds(nats.url)).ids;
      if ([...pavilion.answered].every((id) => streamed.has(id)) && [...opa.answered].every((id) => liveCollector.ids.has(id))) break;
      await sleep(2000);
    }
    // the live audit epoch keeps every leaf's hash, offset and decision id in memory (about
    // 135 bytes a leaf, docs/audit-log.md): growth the log is designed to have, until rotation
    const exposition = await (await fetch(`${pavilion.server.url}/metrics`)).text();
    const leaves = Number(/^pavilion_audit_log_leaves\{[^}]*tenant="bank"[^}]*\} (\d+)/m.exec(exposition)?.[1] ?? Number.NaN);
    const peerName = `${await opaName()}: bundles long-polled from a bundle server, decision logs uploaded every 1 s to a collector`;
    await writeResults('soak', [{
      name: `${MINUTES} min at ${RATE} decisions/s each, a new bundle revision every ${SWAP_S} s, the log destination away for ${OUTAGE_S} s`,
      pavilion: {
        ...summary(pavilion, (id) => streamed.has(id), swaps, durationS, outage),
        audit_log_leaves: leaves,
        audit_log_memory_mb_per_h_by_design: round((leaves / (durationS / 3600)) * 135 / MB, 1),
        ...growthByPart(pavilion.samples.filter((s) => s.atS >= outage.backS + 30), pavilion.samples),
      },
      peer: summary(opa, (id) => liveCollector.ids.has(id), swaps, durationS, outage),
      peerName,
      notes: `both servers at once on one machine with their log destinations and the load generator; the outage from ${outage.fromS} to ${outage.backS} s (nats-server SIGKILLed, which also takes Pavilion's bundle channel; OPA's collector stopped); rss_growth_mb_per_h_*: least-squares slope of RSS after the first fifth of the run and before the outage, and from 30 s after it; *_growth_mb_per_h_after_outage by part (Pavilion): the same slope of its anonymous and file-backed pages (/proc), of its event loop's V8 heap, committed and used, and external memory (its /metrics), of the resident pages of the WebAssembly memories of every thread (smaps), and of the anonymous pages none of those accounts for (worker heaps, code, native allocations); audit_log_memory_mb_per_h_by_design: what the live audit epoch holds by design at this rate (about 135 bytes a leaf until rotation), part of Pavilion's growth; swaps_served: revisions a side answered with 10 s after their push; events_lost: answered 200 but never in the destination (Pavilion: the JetStream stream; OPA: the collector) once the run ended and the destination caught up (at most 120 s)`,
    }], { method: `open-loop load at ${RATE}/s per side (unique inputs, keep-alive; latency from when each request was due); samples every ${SAMPLE_S} s from /proc (and Pavilion's /metrics)` });
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
    await store?.close();
    await bundles?.close();
    await collector?.stop();
    await nats?.stop();
    await rm(work, { recursive: true, force: true });
  }
}
