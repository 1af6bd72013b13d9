/**
 * Driving a server under test with the HTTP load generator (bench/lib/loadgen.ts, always in
 * its own process) and turning one run into the metrics every HTTP benchmark reports.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../../sidecar/src/lib/tools.ts';
import { cpuSeconds, memoryMb } from './process-stats.ts';
import type { Metrics } from './results.ts';
import type { Server } from './servers.ts';

const exec = promisify(execFile);

export interface LoadRequest {
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body: string;
}

export interface LoadSpec {
  readonly url: string;
  readonly connections: number;
  readonly requests: readonly LoadRequest[];
  /** Give every request a distinct input.nonce (defeats caches). */
  readonly unique: boolean;
  /** Requests per second across all connections (open loop); absent: as fast as answered. */
  readonly rate?: number;
}

/** One run of the load generator: its raw figures (rps, percentiles, errors, totals). */
export async function runLoad(spec: LoadSpec, durationSeconds: number): Promise<Metrics> {
  const dir = await mkdtemp(join(tmpdir(), 'pavilion-loadgen-'));
  try {
    const file = join(dir, 'spec.json');
    await writeFile(file, JSON.stringify({ ...spec, durationSeconds }));
    const { stdout } = await exec(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'bench', 'lib', 'loadgen.ts'), file], {
      maxBuffer: 16 * 1024 * 1024,
    });
    return JSON.parse(stdout.trim().split('\n').at(-1) as string) as Metrics;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

let pacedNonce = 0;
let pacedBuilt: Promise<unknown> | undefined;

/**
 * The paced open-loop client's binary (bench/loadgen), built by scripts/install-loadgen.sh
 * on first use in this process (the script does nothing when it is up to date).
 */
export async function pacedBinary(): Promise<string> {
  pacedBuilt ??= exec('bash', [join(REPO_ROOT, 'scripts', 'install-loadgen.sh')]);
  await pacedBuilt;
  return join(REPO_ROOT, '.tools', 'bin', 'paced');
}

/**
 * One run of the paced open-loop client: requests due at evenly spaced instants at
 * `spec.rate` whatever happened to earlier ones, latency counted from the due instant
 * (p50_ms, p99_ms, ...) and from the instant the request was handed to its connection
 * (service_p50_ms, ...: without the client's own lateness). Unlike autocannon's rate mode,
 * which releases each second's requests in a burst, the percentiles hold no queueing the
 * client made. With `unique`, every request of every run carries a distinct `input.nonce`.
 */
export async function runPaced(spec: LoadSpec & { readonly rate: number }, durationSeconds: number): Promise<Metrics> {
  const dir = await mkdtemp(join(tmpdir(), 'pavilion-paced-'));
  try {
    const requests = spec.requests.map((r) => ({ ...r, input: spec.unique ? (JSON.parse(r.body) as { input: Record<string, unknown> }).input : undefined }));
    const lines: string[] = [];
    for (let i = 0; i < (spec.unique ? Math.ceil(spec.rate * durationSeconds) + 1 : requests.length); i++) {
      const request = requests[i % requests.length] as (typeof requests)[number];
      const body = request.input === undefined ? request.body : JSON.stringify({ input: { ...request.input, nonce: ++pacedNonce } });
      lines.push(JSON.stringify({ path: request.path, headers: request.headers, body }));
    }
    const file = join(dir, 'requests.jsonl');
    await writeFile(file, `${lines.join('\n')}\n`);
    const { stdout } = await exec(await pacedBinary(), [
      '-mode', 'http-requests', '-url', spec.url, '-bodies', file, '-rate', String(spec.rate),
      '-duration', `${durationSeconds}s`, '-warmup', '0s',
      '-conns', String(spec.connections), '-max-in-flight', String(Math.max(spec.connections, 1024)),
    ], { maxBuffer: 16 * 1024 * 1024 });
    return JSON.parse(stdout.trim()) as Metrics;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Warm up, then measure: throughput, latency, CPU-seconds per 1,000 requests, RSS, errors. */
export async function measureServer(server: Server, spec: LoadSpec, warmupSeconds: number, durationSeconds: number): Promise<Metrics> {
  await runLoad(spec, warmupSeconds);
  const cpuBefore = cpuSeconds(server.pid);
  const result = await runLoad(spec, durationSeconds);
  const cpu = cpuSeconds(server.pid) - cpuBefore;
  const total = result['requests_total'] ?? 0;
  return {
    rps: Math.round(result['rps'] ?? 0),
    p50_ms: result['p50_ms'] ?? 0,
    p99_ms: result['p99_ms'] ?? 0,
    cpu_s_per_1k: total > 0 ? Math.round((cpu / (total / 1000)) * 10000) / 10000 : 0,
    ...memoryMb(server.pid),
    errors: (result['errors'] ?? 0) + (result['non_2xx'] ?? 0),
  };
}
