/**
 * `npm run bench -- rollout`: how fast a new bundle revision reaches a fleet of sidecars,
 * and whether any request fails while it does.
 *
 * Pavilion: N sidecar processes on one nats-server (JetStream KV watch + Object Store),
 * 20 pushes of a new signed revision, then 5 rollbacks. Peer: N `opa run --server`
 * processes on OPA's fastest delivery, HTTP long polling against a bundle server that
 * answers as soon as a new bundle exists (OPA's default is polling every 60-120 s), with
 * the same policy built as a signed rego bundle and verified by OPA.
 *
 * Throughout, one probe loop per process asks for `bank/authz/rev` (the revision the
 * policy reports) every PROBE_INTERVAL_MS on a keep-alive connection (an open-loop load of
 * 1000/PROBE_INTERVAL_MS decisions/s per process, the same for both sides; the interval is
 * also the resolution of every latency below). The time from the push to the
 * first answer with the new revision is that process's rollout latency; the fleet latency
 * is the slowest process. Failed requests (anything but 200 with a revision) and
 * regressions (an old revision after the new one on the same process) are counted.
 *
 * CPU: after the probed pushes and rollbacks the probes stop, and QUIET_PUSHES more
 * revisions are pushed one at a time to the quiet fleet, each followed, once every process
 * has had time to activate it and write it to disk, by one decision per process on it (the
 * first decision on a new revision is part of what it costs). Every process's CPU time (all
 * its threads, Linux /proc) over those pushes, less its rate over an idle window just
 * before them, per process and per activation, is `cpu_ms_per_activation`; nats-server's,
 * per push, is `nats_server_cpu_ms_per_push`. (Subtracting the probes' cost from a probed
 * window instead moved this figure by half from one run to the next.) This process's own
 * CPU during the probed rollout (the probes, the publisher) is `bench_process_cpu_ms_per_s`:
 * it shares the two cores. What the probes alone cost the fleet, `probed_cpu_ms_per_s` per
 * process, is measured over IDLE_WINDOW_MS after the last rollback has settled, before the
 * probes stop: the share of the two cores a push's activations do not get.
 *
 * The clock starts when the new revision becomes available to the fleet, on both sides:
 * OPA's bundle server holds the bundle in memory before it publishes it, so Pavilion's
 * bundles are uploaded to the Object Store before the pushes, and the timed `bundle push`
 * finds its object there (content-addressed) and moves the pointer. `push_p50_ms` says
 * how long that push takes.
 *
 * Env: BENCH_ROLLOUT_SIZES (default "1,10,30"; 1 shows a sidecar without 29 neighbours on its cores), BENCH_ROLLOUT_PUSHES (default 20),
 * BENCH_ROLLOUT_PROBE_INTERVAL_MS (default 25), BENCH_ROLLOUT_PERSIST_DELAY_MS (the
 * sidecars' bundles.persistDelayMs; 0 for a control run with the write inside the
 * activation), BENCH_NODE_ARGS (extra node options for the sidecar processes,
 * space-separated: e.g. `--cpu-prof --cpu-prof-dir=DIR` to profile them). Quick mode
 * (`--quick` or BENCH_QUICK=1): sizes 10 and 30, Pavilion only (no OPA fleet).
 */
import { execFile } from 'node:child_process';
import { Agent, request } from 'node:http';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { developmentKey } from '../sidecar/src/bundles/index.ts';
import { DEFAULT_PERSIST_DELAY_MS, parseConfig, type NatsConfig } from '../sidecar/src/config/index.ts';
import { NatsBundleStore, connectNats } from '../sidecar/src/distribution/index.ts';
import { cpuSeconds } from './lib/process-stats.ts';
import { buildRevision, opaBundleConfig, startBundleServer } from './lib/revisions.ts';
import { findOpa, REPO_ROOT } from '../sidecar/src/lib/tools.ts';
import { startNats } from '../test/harness/nats-server.ts';
import { writeResults, type BenchCase, type Metrics } from './lib/results.ts';
import { buildSidecar, freePort, startServer, type Server } from './lib/servers.ts';

const exec = promisify(execFile);
const QUICK = process.env['BENCH_QUICK'] === '1' || process.argv.includes('--quick');
const SIZES = (process.env['BENCH_ROLLOUT_SIZES'] ?? (QUICK ? '10,30' : '1,10,30')).split(',').map(Number);
const PUSHES = Number(process.env['BENCH_ROLLOUT_PUSHES'] ?? 20);
const ROLLBACKS = 5;
const TIMEOUT_MS = 30_000;
const PROBE_INTERVAL_MS = Number(process.env['BENCH_ROLLOUT_PROBE_INTERVAL_MS'] ?? 25);
/**
 * Pause after every process serves a revision, before the next push: longer than a
 * sidecar waits to write an activated snapshot to its last known good store (at most twice
 * DEFAULT_PERSIST_DELAY_MS), so every activation's write happens, inside the measured CPU
 * window, and none is skipped as replaced by the next push.
 */
const SETTLE_MS = 2 * DEFAULT_PERSIST_DELAY_MS + 200;
/** `bundles.persistDelayMs` of the sidecars (default: theirs); 0 writes within the activation (a control run). */
const PERSIST_DELAY_MS = process.env['BENCH_ROLLOUT_PERSIST_DELAY_MS'] === undefined ? undefined : Number(process.env['BENCH_ROLLOUT_PERSIST_DELAY_MS']);
/** Revisions pushed to the quiet fleet for the CPU figures (see the header). */
const QUIET_PUSHES = 12;
/** The idle window (probes only) whose CPU rate is subtracted from the rollout's. */
const IDLE_WINDOW_MS = 2_000;

/** CPU milliseconds a process has used so far, all its threads; undefined when /proc cannot tell. */
function cpuMs(pid: number, mainThreadOnly = false): number | undefined {
  try {
    return cpuSeconds(pid, mainThreadOnly) * 1000;
  } catch {
    return undefined;
  }
}

async function totalCpuMs(pids: readonly number[], mainThreadOnly = false): Promise<number | undefined> {
  const each = pids.map((pid) => cpuMs(pid, mainThreadOnly));
  return each.some((v) => v === undefined) ? undefined : each.reduce((a: number, b) => a + (b as number), 0);
}

/** CPU used over `busy` beyond what `idle` spent per unit of work (ms of wall time). */
function cpuBeyondIdle(idle: { cpuMs: number | undefined; units: number }, busy: { cpuMs: number | undefined; units: number }): number | undefined {
  if (idle.cpuMs === undefined || busy.cpuMs === undefined || idle.units === 0) return undefined;
  return busy.cpuMs - (idle.cpuMs * busy.units) / idle.units;
}

interface Probe {
  readonly url: string;
  /** rev -> first time (ms, performance.now) this process answered with it. */
  readonly firstSeen: Map<string, number>;
  latest: string | undefined;
  requests: number;
  failures: number;
  regressions: number;
}

function probeOnce(url: string, agent: Agent, path: string, body: string, headers: Record<string, string>): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = request(`${url}${path}`, { method: 'POST', agent, headers: { 'content-type': 'application/json', ...headers } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => { text += chunk; });
      res.on('end', () => {
        try {
          const parsed = JSON.parse(text) as { result?: unknown };
          resolve(res.statusCode === 200 && typeof parsed.result === 'string' ? parsed.result : undefined);
        } catch {
          resolve(undefined);
        }
      });
      res.on('error', () => resolve(undefined));
    });
    req.on('error', () => resolve(undefined));
    req.end(body);
  });
}

/** Probe every process back to back until `stop` is set; revisions ordered by `order`. */
function startProbes(urls: readonly string[], path: string, headers: Record<string, string>, order: Map<string, number>): { probes: Probe[]; stop(): Promise<void> } {
  let stopped = false;
  const probes = urls.map((url): Probe => ({ url, firstSeen: new Map(), latest: undefined, requests: 0, failures: 0, regressions: 0 }));
  const loops = probes.map(async (probe) => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const body = JSON.stringify({ input: { user: 'alice' } });
    let next = performance.now();
    while (!stopped) {
      next += PROBE_INTERVAL_MS;
      const rev = await probeOnce(probe.url, agent, path, body, headers);
      const at = performance.now();
      if (next > at) await sleep(next - at);
      else next = at;
      probe.requests++;
      if (rev === undefined) {
        probe.failures++;
        continue;
      }
      if (probe.latest !== undefined && (order.get(rev) ?? 0) < (order.get(probe.latest) ?? 0) && !probe.firstSeen.has(`rollback:${rev}`)) {
        probe.regressions++;
      }
      if (!probe.firstSeen.has(rev)) probe.firstSeen.set(rev, at);
      probe.latest = rev;
    }
    agent.destroy();
  });
  return {
    probes,
    async stop() {
      stopped = true;
      await Promise.all(loops);
    },
  };
}

function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] as number;
}

async function waitAll(probes: readonly Probe[], rev: string, since: number): Promise<number[]> {
  const deadline = Date.now() + TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (probes.every((p) => p.latest === rev)) break;
    await sleep(5);
  }
  return probes.map((p) => {
    const seen = p.latest === rev ? p.firstSeen.get(rev) : undefined;
    return seen === undefined ? TIMEOUT_MS : Math.max(0, seen - since);
  });
}

interface FleetRun {
  /** Per push: each process's latency. */
  readonly pushes: number[][];
  readonly rollbacks: number[][];
  readonly requests: number;
  readonly failures: number;
  readonly regressions: number;
  /** Mean milliseconds per activation phase over the fleet (Pavilion's own histogram). */
  readonly phases?: Record<string, number>;
  /** CPU per process per activation of the quiet pushes beyond the idle rate, all threads. */
  readonly cpuPerActivationMs?: number;
  /** The part of it on each process's main thread (its event loop). */
  readonly mainThreadCpuPerActivationMs?: number;
  /** CPU per process per second of the idle window (no probes, no pushes), all threads. */
  readonly idleCpuMsPerS?: number;
  /** CPU per process per second under the probes alone (after the rollbacks, no pushes), all threads. */
  readonly probedCpuMsPerS?: number;
  /** The delivery server's CPU per quiet push beyond its idle rate (nats-server). */
  readonly serverCpuPerDeliveryMs?: number;
  /** How long each delivery call took (Pavilion: upload + pointer move). */
  readonly deliveryMs?: number[];
  /** This process's CPU (the probes, the publisher, the timing) per second of the rollout. */
  readonly benchCpuMsPerS?: number;
}

async function scrapePhases(urls: readonly string[]): Promise<Record<string, number>> {
  const sums = new Map<string, number>();
  const counts = new Map<string, number>();
  for (const url of urls) {
    const text = await (await fetch(`${url}/metrics`)).text();
    for (const line of text.split('\n')) {
      const m = /^pavilion_bundle_activation_phase_seconds_(sum|count)\{phase="(\w+)"\} ([\d.e+-]+)/.exec(line);
      if (m === null) continue;
      const target = m[1] === 'sum' ? sums : counts;
      target.set(m[2] as string, (target.get(m[2] as string) ?? 0) + Number(m[3]));
    }
  }
  const out: Record<string, number> = {};
  for (const [phase, sum] of sums) {
    const count = counts.get(phase) ?? 0;
    if (count > 0) out[`phase_${phase}_mean_ms`] = Math.round((sum / count) * 10_000) / 10;
  }
  // every activation's last known good write happened (none coalesced away by the next push)
  const swaps = counts.get('swap') ?? 0;
  if (swaps > 0) out['persists_per_activation'] = Math.round(((counts.get('persist') ?? 0) / swaps) * 1000) / 1000;
  return out;
}

function summarise(run: FleetRun): Metrics {
  const perProcess = run.pushes.flat().sort((a, b) => a - b);
  const fleet = run.pushes.map((latencies) => Math.max(...latencies)).sort((a, b) => a - b);
  const rollbackFleet = run.rollbacks.map((latencies) => Math.max(...latencies)).sort((a, b) => a - b);
  const round = (v: number): number => Math.round(v * 10) / 10;
  return {
    rollout_p50_ms: round(quantile(perProcess, 0.5)),
    rollout_p99_ms: round(quantile(perProcess, 0.99)),
    all_serving_p50_ms: round(quantile(fleet, 0.5)),
    all_serving_p99_ms: round(quantile(fleet, 0.99)),
    all_serving_max_ms: round(fleet.at(-1) ?? Number.NaN),
    rollback_all_serving_p50_ms: round(quantile(rollbackFleet, 0.5)),
    rollback_all_serving_max_ms: round(rollbackFleet.at(-1) ?? Number.NaN),
    requests: run.requests,
    failed_requests: run.failures,
    revision_regressions: run.regressions,
    ...(run.cpuPerActivationMs === undefined ? {} : { cpu_ms_per_activation: round(run.cpuPerActivationMs) }),
    ...(run.mainThreadCpuPerActivationMs === undefined ? {} : { main_thread_cpu_ms_per_activation: round(run.mainThreadCpuPerActivationMs) }),
    ...(run.idleCpuMsPerS === undefined ? {} : { idle_cpu_ms_per_s: round(run.idleCpuMsPerS) }),
    ...(run.probedCpuMsPerS === undefined ? {} : { probed_cpu_ms_per_s: round(run.probedCpuMsPerS) }),
    ...(run.serverCpuPerDeliveryMs === undefined ? {} : { nats_server_cpu_ms_per_push: round(run.serverCpuPerDeliveryMs) }),
    ...(run.deliveryMs === undefined ? {} : { push_p50_ms: round(quantile([...run.deliveryMs].sort((a, b) => a - b), 0.5)) }),
    ...(run.benchCpuMsPerS === undefined ? {} : { bench_process_cpu_ms_per_s: round(run.benchCpuMsPerS) }),
    ...run.phases,
  };
}

/**
 * Probe every process while revisions 1..n are delivered one by one, then roll back
 * ROLLBACKS times, alternating between the last two revisions so each is a real change;
 * then stop probing and deliver the `quiet` revisions for the CPU figures (see the header).
 * A delivery's index is its revision's place in `revisions` followed by `quiet`.
 */
async function driveFleet(
  urls: readonly string[],
  headers: Record<string, string>,
  revisions: readonly { rev: string }[],
  quiet: readonly { rev: string }[],
  warmupMs: number,
  delivery: { deliver(rev: string, index: number): Promise<void>; rollback(rev: string, index: number): Promise<void> },
  cpu: { readonly pids: readonly number[]; readonly serverPid?: number | undefined; /** Node processes: also report their main threads' share. */ readonly mainThreads?: boolean },
): Promise<FleetRun> {
  const order = new Map(revisions.map((r, i) => [r.rev, i]));
  const probing = startProbes(urls, '/v1/data/bank/authz/rev', headers, order);
  await sleep(warmupMs + IDLE_WINDOW_MS);
  const serverPids = cpu.serverPid === undefined ? [] : [cpu.serverPid];
  const mark = async (): Promise<{ at: number; fleet: number | undefined; fleetMain: number | undefined; server: number | undefined }> =>
    ({ at: performance.now(), fleet: await totalCpuMs(cpu.pids), fleetMain: cpu.mainThreads === true ? await totalCpuMs(cpu.pids, true) : undefined, server: await totalCpuMs(serverPids) });
  const busyStart = performance.now();
  const benchCpu = process.cpuUsage();
  const minus = (a: number | undefined, b: number | undefined): number | undefined => (a === undefined || b === undefined ? undefined : a - b);
  const pushes: number[][] = [];
  for (let i = 1; i < revisions.length; i++) {
    const { rev } = revisions[i] as { rev: string };
    const since = performance.now();
    await delivery.deliver(rev, i);
    pushes.push(await waitAll(probing.probes, rev, since));
    await sleep(SETTLE_MS);
  }
  const rollbacks: number[][] = [];
  for (let i = 0; i < ROLLBACKS; i++) {
    const target = revisions[revisions.length - 2 + (i % 2)] as { rev: string };
    for (const p of probing.probes) {
      p.firstSeen.set(`rollback:${target.rev}`, 0);
      p.firstSeen.delete(target.rev);
    }
    const since = performance.now();
    await delivery.rollback(target.rev, i);
    rollbacks.push(await waitAll(probing.probes, target.rev, since));
    await sleep(SETTLE_MS);
  }
  const busyEnd = performance.now();
  const benchUsed = process.cpuUsage(benchCpu);
  // the probes alone, warm, once the last rollback's write is done (it settled above)
  const probedStart = await mark();
  await sleep(IDLE_WINDOW_MS);
  const probedEnd = await mark();
  await probing.stop();
  const activations = quiet.length;
  await sleep(SETTLE_MS); // what the probed run left behind (GC, tiering) out of the idle rate
  const idleStart = await mark();
  await sleep(IDLE_WINDOW_MS);
  const quietStart = await mark();
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const body = JSON.stringify({ input: { user: 'alice' } });
  for (const [k, { rev }] of quiet.entries()) {
    const since = performance.now();
    await delivery.deliver(rev, revisions.length + k);
    // one decision per process once it serves the revision (asked every PROBE_INTERVAL_MS until
    // then), and the pause after it, as in the probed run
    await Promise.all(urls.map(async (url) => {
      while ((await probeOnce(url, agent, '/v1/data/bank/authz/rev', body, headers)) !== rev) {
        if (performance.now() - since > TIMEOUT_MS) throw new Error(`quiet push ${rev}: ${url} does not serve it after ${TIMEOUT_MS} ms`);
        await sleep(PROBE_INTERVAL_MS);
      }
    }));
    await sleep(SETTLE_MS);
  }
  const quietEnd = await mark();
  agent.destroy();
  const idleMs = quietStart.at - idleStart.at;
  const quietMs = quietEnd.at - quietStart.at;
  /** A window's CPU per process per second (undefined when it was not read). */
  const perProcessPerS = (cpuMs: number | undefined, windowMs: number): number | undefined =>
    (cpuMs === undefined ? undefined : (1000 * cpuMs) / (windowMs * cpu.pids.length));
  const idleCpuMsPerS = perProcessPerS(minus(quietStart.fleet, idleStart.fleet), idleMs);
  const probedCpuMsPerS = perProcessPerS(minus(probedEnd.fleet, probedStart.fleet), probedEnd.at - probedStart.at);
  /** One measure's CPU over the quiet pushes beyond its rate over the idle window. */
  const beyondIdle = (measure: 'fleet' | 'fleetMain' | 'server'): number | undefined => cpuBeyondIdle(
    { cpuMs: minus(quietStart[measure], idleStart[measure]), units: idleMs },
    { cpuMs: minus(quietEnd[measure], quietStart[measure]), units: quietMs },
  );
  const fleetCpu = beyondIdle('fleet');
  const mainCpu = beyondIdle('fleetMain');
  const serverCpu = cpu.serverPid === undefined ? undefined : beyondIdle('server');
  return {
    pushes,
    rollbacks,
    ...(idleCpuMsPerS === undefined ? {} : { idleCpuMsPerS }),
    ...(probedCpuMsPerS === undefined ? {} : { probedCpuMsPerS }),
    ...(fleetCpu === undefined ? {} : { cpuPerActivationMs: fleetCpu / (activations * cpu.pids.length) }),
    ...(mainCpu === undefined ? {} : { mainThreadCpuPerActivationMs: mainCpu / (activations * cpu.pids.length) }),
    ...(serverCpu === undefined ? {} : { serverCpuPerDeliveryMs: serverCpu / activations }),
    benchCpuMsPerS: (benchUsed.user + benchUsed.system) / (busyEnd - busyStart),
    requests: probing.probes.reduce((s, p) => s + p.requests, 0),
    failures: probing.probes.reduce((s, p) => s + p.failures, 0),
    regressions: probing.probes.reduce((s, p) => s + p.regressions, 0),
  };
}

async function runPavilionFleet(n: number, work: string, revisions: readonly { rev: string; wasm: Buffer }[], quiet: readonly { rev: string; wasm: Buffer }[], keysDir: string, main: string): Promise<FleetRun> {
  const nats = await startNats();
  const natsConfig = parseConfig({ nats: { servers: [nats.url], name: 'bench-publisher' } }).nats as NatsConfig;
  const store = new NatsBundleStore(await connectNats(natsConfig), natsConfig);
  const servers: Server[] = [];
  try {
    const first = revisions[0] as { rev: string; wasm: Buffer };
    await store.push('bank', first.wasm, { revision: first.rev, pushedBy: 'bench' });
    // the bytes of every revision in the Object Store before the clock starts (see the header)
    for (const { rev, wasm } of [...revisions.slice(1), ...quiet]) await store.upload('bank', wasm, rev);
    for (let i = 0; i < n; i++) {
      const port = await freePort();
      const config = join(work, `pavilion-${n}-${i}.json`);
      await writeFile(config, JSON.stringify({
        labels: { id: `sidecar-${i}` },
        http: { host: '127.0.0.1', port },
        engine: { workers: 1 },
        tenants: [{ id: 'bank' }],
        bundles: { source: 'nats', keysDirectory: keysDir, persistDirectory: join(work, `lkg-${n}-${i}`), ...(PERSIST_DELAY_MS === undefined ? {} : { persistDelayMs: PERSIST_DELAY_MS }) },
        decisionLog: { sink: 'none' },
        nats: { servers: [nats.url], statusIntervalMs: 60_000 },
      }));
      servers.push(await startServer(process.execPath, [...(process.env['BENCH_NODE_ARGS'] ?? '').split(' ').filter((a) => a !== ''), '--max-semi-space-size=2', main], `http://127.0.0.1:${port}`, '/health/ready', { ...process.env, PAVILION_CONFIG: config }));
    }
    const deploys = new Map<string, number>();
    const deliveryMs: number[] = [];
    const all = [...revisions, ...quiet];
    const run = await driveFleet(servers.map((s) => s.url), { 'x-pavilion-tenant': 'bank' }, revisions, quiet, 500, {
      async deliver(rev, i) {
        const started = performance.now();
        const entry = await store.push('bank', (all[i] as { wasm: Buffer }).wasm, { revision: rev, pushedBy: 'bench' });
        if (i < revisions.length) deliveryMs.push(performance.now() - started); // the probed pushes
        deploys.set(rev, entry.sequence);
      },
      async rollback(rev) {
        await store.rollback('bank', { to: deploys.get(rev) as number, pushedBy: 'bench' });
      },
    }, { pids: servers.map((s) => s.pid), serverPid: nats.pid, mainThreads: true });
    return { ...run, deliveryMs, phases: await scrapePhases(servers.map((s) => s.url)) };
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
    await store.close();
    await nats.stop();
  }
}

/** The OPA fleet, polling the bundle server (bench/lib/revisions.ts), under the same deliveries. */
async function runOpaFleet(n: number, work: string, revisions: readonly { rev: string; rego: Buffer }[], quiet: readonly { rev: string; rego: Buffer }[], publicKeyFile: string): Promise<FleetRun> {
  const bundles = await startBundleServer();
  const servers: Server[] = [];
  try {
    const first = revisions[0] as { rev: string; rego: Buffer };
    bundles.publish(first.rego, `"${first.rev}"`);
    const opaConfig = join(work, 'opa.yaml');
    await writeFile(opaConfig, opaBundleConfig(bundles.url, await readFile(publicKeyFile, 'utf8')));
    for (let i = 0; i < n; i++) {
      const port = await freePort();
      servers.push(await startServer(findOpa(), ['run', '--server', '--addr', `127.0.0.1:${port}`, '--log-level', 'error', '-c', opaConfig], `http://127.0.0.1:${port}`, '/health?bundles'));
    }
    const all = [...revisions, ...quiet];
    return await driveFleet(servers.map((s) => s.url), {}, revisions, quiet, 1500, {
      async deliver(rev, i) {
        bundles.publish((all[i] as { rego: Buffer }).rego, `"${rev}"`);
      },
      async rollback(rev, i) {
        bundles.publish((revisions.find((r) => r.rev === rev) as { rego: Buffer }).rego, `"${rev}-rollback-${i}"`);
      },
    }, { pids: servers.map((s) => s.pid) });
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
    await bundles.close();
  }
}

export async function run(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'pavilion-bench-rollout-'));
  try {
    const main = await buildSidecar(REPO_ROOT);
    const key = await developmentKey('bank', work);
    const keyFile = join(work, 'keys', 'bank.key.pem');
    process.stdout.write(`building ${PUSHES + 1 + QUIET_PUSHES} revisions with opa...\n`);
    const built: Array<{ rev: string; wasm: Buffer; rego: Buffer }> = [];
    for (let i = 0; i <= PUSHES + QUIET_PUSHES; i++) {
      const rev = `rev-${String(i).padStart(2, '0')}`;
      built.push({ rev, ...(await buildRevision(work, rev, keyFile, key.keyPem)) });
    }
    const revisions = built.slice(0, PUSHES + 1);
    const quiet = built.slice(PUSHES + 1);
    const cases: BenchCase[] = [];
    for (const n of SIZES) {
      process.stdout.write(`pavilion: ${n} sidecars on one nats-server...\n`);
      const pavilion = summarise(await runPavilionFleet(n, work, revisions, quiet, join(work, 'keys'), main));
      if (!QUICK) process.stdout.write(`opa: ${n} servers long-polling one bundle server...\n`);
      const peer = QUICK ? {} : summarise(await runOpaFleet(n, work, revisions, quiet, join(work, 'keys', 'bank.pub.pem')));
      cases.push({
        name: `${n} processes, ${PUSHES} pushes + ${ROLLBACKS} rollbacks under continuous probing`,
        pavilion,
        peer,
        ...(QUICK ? { notes: 'quick run: the OPA fleet was not run' } : {}),
        peerName: `opa ${(await exec(findOpa(), ['version'])).stdout.split('\n')[0]?.replace('Version: ', 'v') ?? ''} run --server, HTTP long polling (its fastest delivery; default polling is 60-120 s), signed rego bundle`,
      });
    }
    await writeResults('rollout', cases, {
      method: `one probe per process on a keep-alive connection asks for the revision the policy reports every ${PROBE_INTERVAL_MS} ms (open loop, the same load for both sides; the interval is the resolution); rollout latency = push (the bundle already uploaded, as OPA's bundle server already holds it) -> first answer with the new revision; all_serving = the slowest process of a push; everything on one 2-core machine (the fleet, nats-server or the bundle server, and the probes); cpu_ms_per_activation: ${QUIET_PUSHES} pushes to the quiet fleet after the probed run, each followed by one decision per process, less the idle rate`,
    });
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
