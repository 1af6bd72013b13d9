/**
 * `npm run bench -- extauthz`: Envoy ext_authz Check throughput and latency.
 *
 * Pavilion: the real gRPC server (`envoy.service.auth.v3.Authorization/Check`) serving the
 * envoy_demo tenant, driven by a grpc-js client in its own process with the corpus's
 * CheckRequests (test/extauthz/corpus.ts: JWT verification, RBAC, JSON and form bodies).
 *
 * Peer: opa-envoy-plugin cannot be installed here (the Go module proxy refuses
 * github.com/open-policy-agent/opa-envoy-plugin), so the peer is OPA's HTTP Data API
 * (`opa run --server`, the same Rego built as a plain bundle) answering
 * `POST /v1/data/envoy_demo/envoy/authz/allow` with the SAME input documents Pavilion builds
 * from those CheckRequests. The peer therefore skips the protobuf decoding, input building
 * and response mapping Pavilion does, and speaks HTTP/1.1 instead of gRPC: it is a lower
 * bound for opa-envoy-plugin's cost, not a measurement of it.
 *
 * Cases: 1,000 and 5,000 requests/s offered (open loop), and saturation (closed loop,
 * BENCH_CONNECTIONS in flight), each with two kinds of load generator; and, with h2load, a
 * saturation sweep: each server's best throughput over 16, 32, 64 and 128 in flight (the two
 * reach their plateau at different depths, so one fixed depth favours one of them):
 * - Go (the primary figures): ghz for Pavilion's gRPC, vegeta for OPA's HTTP, both built with
 *   `go install` (scripts/install-loadgen.sh). They cost the machine far less CPU per request
 *   than a Node client, so on two cores the servers, not the client, set the pace.
 * - Node: this file run with `--loadgen <spec.json>` in its own process, the same code for both
 *   servers (grpc-js for Pavilion, node:http keep-alive for OPA).
 * - paced (bench/loadgen, Go, built by scripts/install-loadgen.sh): the latency figures at a
 *   fixed rate. Requests are due at evenly spaced instants whatever happened to earlier ones
 *   and latency counts from that instant (no coordinated omission); ghz and h2load release
 *   requests in bursts at a fixed rate, so their percentiles include queueing they created.
 * Per case and server: achieved requests/s, p50/p90/p99 (and p99.9 with the Node client)
 * latency, CPU-seconds per 1,000 checks, RSS.
 *
 * The latency floor: a gRPC server that answers without doing anything (node:http2, its own
 * process) under the same ghz load, and under the paced client, at 1,000/s shows what the
 * machine itself adds (thread wake-ups, loopback, the client) before any Pavilion code runs;
 * a no-op gRPC server in Go (bench/loadgen -serve-noop) under the paced client does the same
 * without a Node event loop. Its p99 is the lowest p99 this machine can show at 1,000/s.
 *
 * Env: BENCH_DURATION_S (default 8), BENCH_CONNECTIONS (default 32), BENCH_WARMUP_S (2).
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { Agent, request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { buildTenantBundle, definitionPath } from '../sidecar/src/bundles/index.ts';
import { CHECK_METHOD_PATH, CheckCodec, checkRequestToInput } from '../sidecar/src/extauthz/index.ts';
import { findOpa, REPO_ROOT } from '../sidecar/src/lib/tools.ts';
import { generateCorpus } from '../test/extauthz/corpus.ts';
import { cpuSeconds, memoryMb } from './lib/process-stats.ts';
import { writeResults, type BenchCase, type Metrics } from './lib/results.ts';
import { buildSidecar, freePort, startServer, type Server } from './lib/servers.ts';

const exec = promisify(execFile);
const DURATION_S = Number(process.env['BENCH_DURATION_S'] ?? 8);
const CONNECTIONS = Number(process.env['BENCH_CONNECTIONS'] ?? 32);
const WARMUP_S = Number(process.env['BENCH_WARMUP_S'] ?? 2);
const TENANT = 'envoy_demo';
const DECISION_PATH = 'envoy_demo/envoy/authz/allow';
const SELF = fileURLToPath(import.meta.url);

interface LoadSpec {
  readonly kind: 'grpc' | 'http';
  /** host:port for gRPC, a URL for HTTP. */
  readonly target: string;
  /** gRPC: encoded CheckRequests (base64); HTTP: JSON bodies `{"input": ...}`. */
  readonly payloads: readonly string[];
  readonly durationSeconds: number;
  /** Offered requests/s (open loop); undefined: closed loop at `inFlight`. */
  readonly rate?: number;
  readonly inFlight: number;
}

// ---------------------------------------------------------------------------------------
// load generator (runs in its own process)
// ---------------------------------------------------------------------------------------

type Send = (payload: string) => Promise<boolean>;

function grpcSender(target: string): { send: Send; close(): void } {
  const Client = grpc.makeGenericClientConstructor({
    Check: {
      path: '/envoy.service.auth.v3.Authorization/Check',
      requestStream: false,
      responseStream: false,
      requestSerialize: (b: Buffer) => b,
      requestDeserialize: (b: Buffer) => b,
      responseSerialize: (b: Buffer) => b,
      responseDeserialize: (b: Buffer) => b,
    },
  }, 'Authorization');
  const client = new Client(target, grpc.credentials.createInsecure());
  const check = (client as unknown as { Check: (b: Buffer, cb: (e: Error | null) => void) => void }).Check.bind(client);
  const buffers = new Map<string, Buffer>();
  return {
    send: (payload) => new Promise((resolve) => {
      let bytes = buffers.get(payload);
      if (bytes === undefined) {
        bytes = Buffer.from(payload, 'base64');
        buffers.set(payload, bytes);
      }
      check(bytes, (error) => resolve(error === null));
    }),
    close: () => client.close(),
  };
}

function httpSender(target: string, inFlight: number): { send: Send; close(): void } {
  const url = new URL(target);
  const agent = new Agent({ keepAlive: true, maxSockets: inFlight });
  return {
    send: (payload) => new Promise((resolve) => {
      const req = httpRequest({
        host: url.hostname, port: url.port, path: url.pathname, method: 'POST', agent,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode === 200));
      });
      req.on('error', () => resolve(false));
      req.end(payload);
    }),
    close: () => agent.destroy(),
  };
}

async function loadgen(spec: LoadSpec): Promise<Record<string, number>> {
  const sender = spec.kind === 'grpc' ? grpcSender(spec.target) : httpSender(spec.target, spec.inFlight);
  const latencies: number[] = [];
  let errors = 0;
  let next = 0;
  let inFlight = 0;
  const started = performance.now();
  const endAt = started + spec.durationSeconds * 1000;
  const fire = (): Promise<void> => {
    const payload = spec.payloads[next++ % spec.payloads.length] as string;
    const t0 = performance.now();
    inFlight++;
    return sender.send(payload).then((ok) => {
      inFlight--;
      if (ok) latencies.push(performance.now() - t0);
      else errors++;
    });
  };
  if (spec.rate === undefined) {
    await Promise.all(Array.from({ length: spec.inFlight }, async () => {
      while (performance.now() < endAt) await fire();
    }));
  } else {
    // open loop: send what is due every millisecond; a request that cannot start because
    // `inFlight` is exhausted is counted as an error (the server is not keeping up)
    let sent = 0;
    const pending = new Set<Promise<void>>();
    while (performance.now() < endAt) {
      const due = Math.floor(((performance.now() - started) / 1000) * spec.rate);
      while (sent < due) {
        sent++;
        if (inFlight >= spec.inFlight * 4) {
          errors++;
          continue;
        }
        const p = fire();
        pending.add(p);
        void p.then(() => pending.delete(p));
      }
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    await Promise.all(pending);
  }
  const elapsed = (performance.now() - started) / 1000;
  sender.close();
  latencies.sort((a, b) => a - b);
  const pct = (p: number): number => {
    if (latencies.length === 0) return 0;
    const v = latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] as number;
    return Math.round(v * 1000) / 1000;
  };
  return {
    rps: Math.round(latencies.length / elapsed),
    requests_total: latencies.length,
    p50_ms: pct(50),
    p99_ms: pct(99),
    p999_ms: pct(99.9),
    max_ms: pct(100),
    errors,
  };
}

// ---------------------------------------------------------------------------------------
// orchestration
// ---------------------------------------------------------------------------------------

async function runLoad(spec: LoadSpec, work: string): Promise<Record<string, number>> {
  const file = join(work, `load-${spec.kind}-${Date.now()}.json`);
  await writeFile(file, JSON.stringify(spec));
  const { stdout } = await exec(process.execPath, ['--import', 'tsx', SELF, '--loadgen', file], { maxBuffer: 16 * 1024 * 1024 });
  return JSON.parse(stdout.trim().split('\n').at(-1) as string) as Record<string, number>;
}

async function measure(server: Server, spec: LoadSpec, work: string): Promise<Metrics> {
  await runLoad({ ...spec, durationSeconds: WARMUP_S }, work);
  const cpuBefore = cpuSeconds(server.pid);
  const result = await runLoad(spec, work);
  const cpu = cpuSeconds(server.pid) - cpuBefore;
  const total = result['requests_total'] ?? 0;
  return {
    rps: result['rps'] ?? 0,
    p50_ms: result['p50_ms'] ?? 0,
    p99_ms: result['p99_ms'] ?? 0,
    p999_ms: result['p999_ms'] ?? 0,
    max_ms: result['max_ms'] ?? 0,
    cpu_s_per_1k: total > 0 ? Math.round((cpu / (total / 1000)) * 10000) / 10000 : 0,
    ...memoryMb(server.pid),
    errors: result['errors'] ?? 0,
  };
}

async function startPavilion(bundleDir: string, work: string): Promise<{ server: Server; grpcTarget: string }> {
  const httpPort = await freePort();
  const grpcPort = await freePort();
  const config = join(work, 'pavilion.json');
  await writeFile(config, JSON.stringify({
    http: { host: '127.0.0.1', port: httpPort },
    bundles: { directory: bundleDir, keysDirectory: join(bundleDir, 'keys'), persistDirectory: join(work, 'persisted') },
    decisionLog: { sink: 'none' },
    // The decision core against OPA: no credential verification (it has its own benchmark,
    // and the peer verifies none), so the sample tenants' credential policies are off.
    credentials: { tenants: {} },
    tenants: [{ id: TENANT }],
    extAuthz: { grpc: { host: '127.0.0.1', port: grpcPort }, tenantFrom: { fixed: TENANT }, timeoutMs: 1000 },
  }));
  const main = await buildSidecar(REPO_ROOT);
  const server = await startServer(process.execPath, [main],
    `http://127.0.0.1:${httpPort}`, '/health/ready', { ...process.env, PAVILION_CONFIG: config });
  return { server, grpcTarget: `127.0.0.1:${grpcPort}` };
}

async function startOpa(regoBundle: string): Promise<Server> {
  const port = await freePort();
  return startServer(findOpa(), ['run', '--server', '--addr', `127.0.0.1:${port}`, '--log-level', 'error', regoBundle],
    `http://127.0.0.1:${port}`, '/health?bundles');
}

// ---------------------------------------------------------------------------------------
// Go load generators
// ---------------------------------------------------------------------------------------

const TOOLS = join(REPO_ROOT, '.tools', 'bin');

interface Shape {
  readonly durationSeconds: number;
  readonly rate?: number;
  readonly inFlight: number;
}

function execTool(command: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(command, args, { maxBuffer: 256 * 1024 * 1024, encoding: 'utf8' }, (error, out, err) => (error ? reject(new Error(`${command}: ${error.message}\n${err}`)) : resolve(out)));
    child.stdin?.end(); // ghz reads call data from stdin when it is a pipe
  });
}

const ms3 = (ns: number): number => Math.round(ns / 1000) / 1000;

/** ghz against a gRPC Check server, round-robin over the count-delimited messages in `corpus`. */
async function ghzLoad(target: string, corpus: string, shape: Shape): Promise<Record<string, number>> {
  const proto = join(REPO_ROOT, 'sidecar', 'proto');
  const out = await execTool(join(TOOLS, 'ghz'), [
    '--insecure', '--proto', join(proto, 'envoy', 'service', 'auth', 'v3', 'external_auth.proto'), '--import-paths', proto,
    '--call', 'envoy.service.auth.v3.Authorization.Check', '--binary', '--binary-file', corpus,
    '--connections', '2', '--concurrency', String(shape.inFlight),
    '--duration', `${shape.durationSeconds}s`, '--duration-stop', 'wait', '--total', '100000000',
    ...(shape.rate === undefined ? [] : ['--rps', String(shape.rate)]),
    '--format', 'json', target,
  ]);
  const report = JSON.parse(out) as {
    rps: number; count: number; slowest: number;
    latencyDistribution: Array<{ percentage: number; latency: number }> | null;
    statusCodeDistribution: Record<string, number>;
  };
  const at = (p: number): number => ms3(report.latencyDistribution?.find((d) => d.percentage === p)?.latency ?? 0);
  const ok = report.statusCodeDistribution['OK'] ?? 0;
  return { rps: Math.round(ok / shape.durationSeconds), requests_total: ok, p50_ms: at(50), p90_ms: at(90), p99_ms: at(99), max_ms: ms3(report.slowest), errors: report.count - ok };
}

/** vegeta against an HTTP endpoint, round-robin over the JSON targets in `targets`. */
async function vegetaLoad(targets: string, work: string, shape: Shape): Promise<Record<string, number>> {
  const results = join(work, `vegeta-${Date.now()}.bin`);
  await execTool(join(TOOLS, 'vegeta'), [
    'attack', '-format=json', `-targets=${targets}`, `-duration=${shape.durationSeconds}s`, '-keepalive=true', `-output=${results}`,
    ...(shape.rate === undefined ? ['-rate=0', `-workers=${shape.inFlight}`, `-max-workers=${shape.inFlight}`] : [`-rate=${shape.rate}/1s`, `-workers=${shape.inFlight}`, `-max-workers=${shape.inFlight}`]),
  ]);
  const report = JSON.parse(await execTool(join(TOOLS, 'vegeta'), ['report', '-type=json', results])) as {
    requests: number; duration: number;
    latencies: Record<string, number>;
    status_codes: Record<string, number>;
  };
  const ok = report.status_codes['200'] ?? 0;
  const l = report.latencies;
  return { rps: Math.round(ok / shape.durationSeconds), requests_total: ok, p50_ms: ms3(l['50th'] ?? 0), p90_ms: ms3(l['90th'] ?? 0), p99_ms: ms3(l['99th'] ?? 0), max_ms: ms3(l['max'] ?? 0), errors: report.requests - ok };
}

async function measureWith(server: Server, load: (shape: Shape) => Promise<Record<string, number>>, shape: Shape): Promise<Metrics> {
  await load({ ...shape, durationSeconds: WARMUP_S });
  const cpuBefore = cpuSeconds(server.pid);
  const result = await load(shape);
  const cpu = cpuSeconds(server.pid) - cpuBefore;
  const total = result['requests_total'] ?? 0;
  return { ...result, cpu_s_per_1k: total > 0 ? Math.round((cpu / (total / 1000)) * 10000) / 10000 : 0, ...memoryMb(server.pid) };
}

/** In-flight levels of the saturation sweep. */
const SWEEP_IN_FLIGHT = [16, 32, 64, 128] as const;

/**
 * Closed-loop runs at every SWEEP_IN_FLIGHT level: the metrics of the level with the most
 * requests/s, which level that was, and the rps at each.
 */
async function bestOf(server: Server, load: (shape: Shape) => Promise<Record<string, number>>): Promise<Metrics> {
  let best: Metrics | undefined;
  const byLevel: Metrics = {};
  for (const inFlight of SWEEP_IN_FLIGHT) {
    const metrics = await measureWith(server, load, { durationSeconds: DURATION_S, inFlight });
    byLevel[`rps_at_${inFlight}_in_flight`] = metrics['rps'] ?? 0;
    if (best === undefined || (metrics['rps'] ?? 0) > (best['rps'] ?? 0)) best = { ...metrics, best_in_flight: inFlight };
  }
  return { ...best, ...byLevel };
}

/**
 * h2load (nghttp2's load generator, C) for both servers: HTTP/2 with gRPC framing to Pavilion,
 * HTTP/1.1 to OPA, one request body repeated (h2load sends one body). The lightest client
 * here, and the same one on both sides. Latency percentiles come from its per-request log.
 */
async function h2load(url: string, body: string, headers: readonly string[], http1: boolean, work: string, shape: Shape): Promise<Record<string, number>> {
  const log = join(work, `h2load-${Date.now()}.tsv`);
  const clients = http1 ? shape.inFlight : 2;
  const streams = http1 ? 1 : Math.max(1, Math.floor(shape.inFlight / clients));
  const out = await execTool('h2load', [
    ...(http1 ? ['--h1'] : []), '-t', '1', '-c', String(clients), '-m', String(streams),
    '-D', String(shape.durationSeconds), '-d', body, ...headers.flatMap((h) => ['-H', h]),
    ...(shape.rate === undefined ? [] : [`--rps=${Math.max(1, Math.round(shape.rate / clients))}`]),
    `--log-file=${log}`, url,
  ]);
  const counts = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  const durations: number[] = [];
  let firstStart = Infinity;
  let lastEnd = 0;
  for (const line of (await readFile(log, 'utf8')).split('\n')) {
    const [start, status, micros] = line.split('\t').map(Number);
    if (status !== 200 || start === undefined || micros === undefined) continue;
    durations.push(micros / 1000);
    firstStart = Math.min(firstStart, start);
    lastEnd = Math.max(lastEnd, start + micros);
  }
  durations.sort((a, b) => a - b);
  const pct = (p: number): number => Math.round((durations[Math.min(durations.length - 1, Math.floor((p / 100) * durations.length))] ?? 0) * 1000) / 1000;
  const seconds = Math.max(1e-3, (lastEnd - firstStart) / 1e6);
  return {
    rps: Math.round(durations.length / seconds),
    requests_total: durations.length,
    p50_ms: pct(50), p90_ms: pct(90), p99_ms: pct(99), p999_ms: pct(99.9), max_ms: pct(100),
    errors: counts === null ? 0 : Number(counts[5]) + Number(counts[6]) + Number(counts[7]),
  };
}

/**
 * The paced open-loop client (bench/loadgen): gRPC over h2c to Pavilion with the corpus, HTTP/1.1
 * keep-alive to OPA with the same input documents, the same scheduler for both.
 */
async function paced(mode: 'grpc' | 'http', url: string, bodies: string, shape: Shape): Promise<Record<string, number>> {
  if (shape.rate === undefined) throw new Error('the paced client needs a rate');
  const out = await execTool(join(TOOLS, 'paced'), [
    '-mode', mode, '-url', url, '-bodies', bodies, '-rate', String(shape.rate),
    '-duration', `${shape.durationSeconds}s`, '-warmup', `${WARMUP_S}s`,
    '-conns', mode === 'grpc' ? '2' : String(shape.inFlight), '-max-in-flight', String(shape.inFlight),
  ]);
  const result = JSON.parse(out) as Record<string, number>;
  const round = (v: number | undefined): number => Math.round((v ?? 0) * 1000) / 1000;
  return {
    rps: Math.round(result['rps'] ?? 0), requests_total: result['requests_total'] ?? 0,
    p50_ms: round(result['p50_ms']), p90_ms: round(result['p90_ms']), p99_ms: round(result['p99_ms']),
    p999_ms: round(result['p999_ms']), max_ms: round(result['max_ms']),
    send_lag_p99_ms: round(result['send_lag_p99_ms']), service_p50_ms: round(result['service_p50_ms']), service_p99_ms: round(result['service_p99_ms']),
    errors: result['errors'] ?? 0,
  };
}

/** Protobuf's count-delimited stream (varint length, message), what ghz reads as many messages. */
function delimited(messages: readonly Buffer[]): Buffer {
  const parts: Buffer[] = [];
  for (const message of messages) {
    const prefix: number[] = [];
    let n = message.length;
    while (n > 0x7f) {
      prefix.push((n & 0x7f) | 0x80);
      n >>>= 7;
    }
    prefix.push(n);
    parts.push(Buffer.from(prefix), message);
  }
  return Buffer.concat(parts);
}

/** A gRPC server that answers every call at once with an empty message (the latency floor). */
const NOOP_SERVER = `
const http2 = require('node:http2');
const server = http2.createServer();
server.on('stream', (stream) => {
  stream.on('data', () => {});
  stream.on('end', () => {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
    stream.end(Buffer.from([0, 0, 0, 0, 0]));
  });
});
server.listen(Number(process.argv[1]), '127.0.0.1');
const http = require('node:http');
http.createServer((req, res) => res.end('ok')).listen(Number(process.argv[2]), '127.0.0.1');
`;

export async function run(): Promise<void> {
  await exec('bash', [join(REPO_ROOT, 'scripts', 'install-loadgen.sh')]);
  const work = await mkdtemp(join(tmpdir(), 'pavilion-bench-extauthz-'));
  const servers: Server[] = [];
  try {
    const wasmDir = join(work, 'wasm');
    const regoDir = join(work, 'rego');
    await buildTenantBundle(definitionPath(TENANT), { outputDirectory: wasmDir });
    const rego = await buildTenantBundle(definitionPath(TENANT), { outputDirectory: regoDir, target: 'rego', skipTests: true });

    // the same requests for both: encoded CheckRequests for Pavilion, their input documents for OPA
    const codec = new CheckCodec();
    const messages: Buffer[] = [];
    const httpPayloads: string[] = [];
    for (const item of generateCorpus(7, 400)) {
      if (item.invalid || item.tenant !== TENANT) continue;
      const bytes = codec.encodeRequest(item.request);
      const decoded = codec.decodeRequest(bytes);
      if (!decoded.ok) continue;
      messages.push(bytes);
      httpPayloads.push(JSON.stringify({ input: checkRequestToInput(decoded.request, { skipRequestBodyParse: false, maxRequestBodyBytes: 1024 * 1024 }).input }));
    }
    const grpcPayloads = messages.map((m) => m.toString('base64'));
    const corpus = join(work, 'corpus.bin');
    await writeFile(corpus, delimited(messages));
    process.stdout.write(`${messages.length} CheckRequests, ${CONNECTIONS} in flight at saturation, ${DURATION_S}s per run (+${WARMUP_S}s warm-up)\n`);

    const pavilion = await startPavilion(wasmDir, work);
    servers.push(pavilion.server);
    const opa = await startOpa(rego.output);
    servers.push(opa);
    const opaUrl = `${opa.url}/v1/data/${DECISION_PATH}`;
    const targets = join(work, 'targets.jsonl');
    await writeFile(targets, httpPayloads.map((body) => JSON.stringify({
      method: 'POST', url: opaUrl, body: Buffer.from(body).toString('base64'), header: { 'Content-Type': ['application/json'] },
    })).join('\n') + '\n');

    const peerName = 'opa run --server v1.22.3, HTTP Data API (opa-envoy-plugin not installable)';
    const cases: BenchCase[] = [];
    const scenarios: Array<{ name: string; rate?: number }> = [
      { name: '1,000 checks/s offered', rate: 1000 },
      { name: '5,000 checks/s offered', rate: 5000 },
      { name: `saturation (${CONNECTIONS} in flight)` },
    ];
    for (const scenario of scenarios) {
      const shape: Shape = { durationSeconds: DURATION_S, inFlight: CONNECTIONS, ...(scenario.rate === undefined ? {} : { rate: scenario.rate }) };
      process.stdout.write(`- ${scenario.name}, Go load generators\n`);
      cases.push({
        name: `ext_authz Check, envoy_demo policy, ${scenario.name} (ghz / vegeta)`,
        pavilion: await measureWith(pavilion.server, (s) => ghzLoad(pavilion.grpcTarget, corpus, s), shape),
        peer: await measureWith(opa, (s) => vegetaLoad(targets, work, s), shape),
        peerName,
        notes: 'Pavilion: gRPC Check under ghz (2 connections). Peer: OPA Data API POST with the same input documents under vegeta (HTTP/1.1 keep-alive): no protobuf, no response mapping.',
      });
    }
    // h2load: one request (the corpus's first, an allowed RS256 bearer token) for both
    const grpcBody = join(work, 'check.grpc');
    const first = messages[0] as Buffer;
    const prefix = Buffer.alloc(5);
    prefix.writeUInt32BE(first.length, 1);
    await writeFile(grpcBody, Buffer.concat([prefix, first]));
    const jsonBody = join(work, 'input.json');
    await writeFile(jsonBody, httpPayloads[0] as string);
    const grpcUrl = `http://${pavilion.grpcTarget}${CHECK_METHOD_PATH}`;
    for (const scenario of scenarios) {
      process.stdout.write(`- ${scenario.name}, h2load\n`);
      const shape: Shape = { durationSeconds: DURATION_S, inFlight: CONNECTIONS, ...(scenario.rate === undefined ? {} : { rate: scenario.rate }) };
      cases.push({
        name: `ext_authz Check, envoy_demo policy, ${scenario.name} (h2load, one request)`,
        pavilion: await measureWith(pavilion.server, (s) => h2load(grpcUrl, grpcBody, ['content-type: application/grpc', 'te: trailers'], false, work, s), shape),
        peer: await measureWith(opa, (s) => h2load(opaUrl, jsonBody, ['content-type: application/json'], true, work, s), shape),
        peerName,
        notes: 'The same load generator for both (h2load, C, one thread): HTTP/2 with gRPC framing to Pavilion (2 connections), HTTP/1.1 keep-alive to OPA; the same request (an allowed RS256 bearer token) repeated. Neither server caches this decision (io.jwt.decode_verify reads the clock).',
      });
    }
    // saturation is where throughput stops growing with concurrency, and the two servers reach
    // it at different depths: each side's best over the same in-flight levels
    process.stdout.write(`- saturation sweep (${SWEEP_IN_FLIGHT.join(', ')} in flight), h2load\n`);
    cases.push({
      name: `ext_authz Check, envoy_demo policy, saturation: each side's best of ${SWEEP_IN_FLIGHT.join(', ')} in flight (h2load, one request)`,
      pavilion: await bestOf(pavilion.server, (s) => h2load(grpcUrl, grpcBody, ['content-type: application/grpc', 'te: trailers'], false, work, s)),
      peer: await bestOf(opa, (s) => h2load(opaUrl, jsonBody, ['content-type: application/json'], true, work, s)),
      peerName,
      notes: 'As the h2load cases above, closed loop at each in-flight level in turn (h2load: 2 HTTP/2 connections with in_flight/2 streams each to Pavilion, in_flight HTTP/1.1 keep-alive connections to OPA); each side reports its level with the most requests/s (best_in_flight) and the rps at every level.',
    });
    for (const scenario of scenarios) {
      process.stdout.write(`- ${scenario.name}, Node load generator\n`);
      const shape = { durationSeconds: DURATION_S, inFlight: CONNECTIONS, ...(scenario.rate === undefined ? {} : { rate: scenario.rate }) };
      cases.push({
        name: `ext_authz Check, envoy_demo policy, ${scenario.name} (Node client)`,
        pavilion: await measure(pavilion.server, { kind: 'grpc', target: pavilion.grpcTarget, payloads: grpcPayloads, ...shape }, work),
        peer: await measure(opa, { kind: 'http', target: opaUrl, payloads: httpPayloads, ...shape }, work),
        peerName,
        notes: 'The same client code for both, in its own process: grpc-js for Pavilion, node:http keep-alive for OPA. The client takes a large share of the two cores.',
      });
    }

    // paced: evenly spaced requests at a fixed rate, latency from the instant each was due
    const httpLines = join(work, 'inputs.jsonl');
    await writeFile(httpLines, httpPayloads.join('\n') + '\n');
    for (const scenario of scenarios) {
      if (scenario.rate === undefined) continue;
      process.stdout.write(`- ${scenario.name}, paced client\n`);
      const shape: Shape = { durationSeconds: DURATION_S, inFlight: CONNECTIONS, rate: scenario.rate };
      cases.push({
        name: `ext_authz Check, envoy_demo policy, ${scenario.name} (paced open-loop client)`,
        pavilion: await measureWith(pavilion.server, (s) => paced('grpc', grpcUrl, corpus, s), shape),
        peer: await measureWith(opa, (s) => paced('http', opaUrl, httpLines, s), shape),
        peerName,
        notes: 'bench/loadgen (Go): requests due at evenly spaced instants regardless of earlier answers, latency counted from the due instant (a late send, or a wait for one of the 32 in-flight slots, counts against the server); gRPC over h2c on 2 connections to Pavilion, HTTP/1.1 keep-alive on 32 connections to OPA, the same corpus and input documents. Offered more than a server answers, the achieved rate is its throughput under that load and the latencies are queueing. send_lag_p99_ms: how late the client itself sent.',
      });
    }

    // the floor: a gRPC server doing nothing, same ghz load at 1,000/s
    process.stdout.write('- latency floor: a no-op gRPC server under ghz at 1,000/s\n');
    const floorGrpc = await freePort();
    const floorHttp = await freePort();
    const floor = await startServer(process.execPath, ['-e', NOOP_SERVER, String(floorGrpc), String(floorHttp)], `http://127.0.0.1:${floorHttp}`, '/');
    servers.push(floor);
    const floorShape: Shape = { durationSeconds: DURATION_S, inFlight: CONNECTIONS, rate: 1000 };
    const noop = await measureWith(floor, (s) => ghzLoad(`127.0.0.1:${floorGrpc}`, corpus, s), floorShape);
    const noopPaced = await measureWith(floor, (s) => paced('grpc', `http://127.0.0.1:${floorGrpc}${CHECK_METHOD_PATH}`, corpus, s), floorShape);
    // and a no-op server in Go (bench/loadgen -serve-noop): no Node event loop either
    process.stdout.write('- latency floor: a no-op Go gRPC server under the paced client at 1,000/s\n');
    const goFloorPort = await freePort();
    const goFloor = await startServer(join(TOOLS, 'paced'), ['-serve-noop', `127.0.0.1:${goFloorPort}`], `http://127.0.0.1:${goFloorPort}`, '/');
    servers.push(goFloor);
    const noopGoPaced = await measureWith(goFloor, (s) => paced('grpc', `http://127.0.0.1:${goFloorPort}${CHECK_METHOD_PATH}`, corpus, s), floorShape);

    await writeResults('extauthz', cases, {
      floor_noop_grpc_1000_rps: { ...noop, server: 'node:http2 answering every call at once, no decoding, no policy', load_generator: 'ghz, the same corpus and settings as the 1,000/s case' },
      floor_noop_grpc_1000_rps_paced: { ...noopPaced, server: 'the same no-op server', load_generator: 'the paced open-loop client, as in the paced 1,000/s case' },
      floor_noop_grpc_go_1000_rps_paced: { ...noopGoPaced, server: 'a Go no-op gRPC server (bench/loadgen -serve-noop, h2c): every call answered OK at once, no decoding', load_generator: 'the paced open-loop client, as in the paced 1,000/s case' },
      duration_s: DURATION_S,
      warmup_s: WARMUP_S,
      in_flight: CONNECTIONS,
      requests: messages.length,
      load_generators: 'Go: ghz v0.93.0 (gRPC, Pavilion) and vegeta v12.13.0 (HTTP, OPA); h2load (C) for both; paced (bench/loadgen, Go, open loop) for both; Node: bench/extauthz.ts --loadgen (grpc-js / node:http), its own process',
      peer_note: 'opa-envoy-plugin cannot be installed here (the Go module proxy refuses it); the peer is OPA\'s HTTP Data API on the same policy and the same input documents',
    });
  } finally {
    for (const server of servers) await server.stop();
    await rm(work, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--loadgen' && process.argv[1] === SELF) {
  const spec = JSON.parse(readFileSync(process.argv[3] as string, 'utf8')) as LoadSpec;
  process.stdout.write(`${JSON.stringify(await loadgen(spec))}\n`);
}
