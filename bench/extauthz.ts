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
 * BENCH_CONNECTIONS in flight). Per case and server: achieved requests/s, p50/p99/p99.9
 * latency, CPU-seconds per 1,000 checks, RSS. The load generator is this file run with
 * `--loadgen <spec.json>` in its own process, the same code for both servers.
 *
 * Env: BENCH_DURATION_S (default 8), BENCH_CONNECTIONS (default 32), BENCH_WARMUP_S (2).
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Agent, request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { buildTenantBundle, definitionPath } from '../sidecar/src/bundles/index.ts';
import { CheckCodec, checkRequestToInput } from '../sidecar/src/extauthz/index.ts';
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
    `http://127.0.0.1:${httpPort}`, '/health', { ...process.env, PAVILION_CONFIG: config });
  return { server, grpcTarget: `127.0.0.1:${grpcPort}` };
}

async function startOpa(regoBundle: string): Promise<Server> {
  const port = await freePort();
  return startServer(findOpa(), ['run', '--server', '--addr', `127.0.0.1:${port}`, '--log-level', 'error', regoBundle],
    `http://127.0.0.1:${port}`, '/health?bundles');
}

/**
 * Pavilion alone under ghz (a Go gRPC load generator, far lighter than a Node client) at
 * 1,000 checks/s, for Pavilion's own latency. There is no gRPC peer to drive the same way.
 * Skipped when ghz is not installed (`GOBIN=$PWD/.tools/bin go install github.com/bojand/ghz/cmd/ghz@v0.93.0`).
 */
async function ghzRun(target: string, message: Buffer, work: string): Promise<Record<string, number | string> | undefined> {
  const ghz = join(REPO_ROOT, '.tools', 'bin', 'ghz');
  try {
    readFileSync(ghz);
  } catch {
    process.stdout.write('- ghz not installed: skipping the ghz run\n');
    return undefined;
  }
  process.stdout.write('- ghz, 1,000 checks/s, one allowed RS256 request repeated\n');
  const file = join(work, 'check.bin');
  await writeFile(file, message);
  const proto = join(REPO_ROOT, 'sidecar', 'proto');
  // ghz reads call data from stdin when stdin is a pipe: close it.
  const stdout = await new Promise<string>((resolve, reject) => {
    const child = execFile(ghz, [
    '--insecure', '--proto', join(proto, 'envoy', 'service', 'auth', 'v3', 'external_auth.proto'), '--import-paths', proto,
    '--call', 'envoy.service.auth.v3.Authorization.Check', '--binary', '--binary-file', file,
    // a fixed count at a fixed rate: DURATION_S seconds of 1,000 checks/s
    '--rps', '1000', '--concurrency', '8', '--connections', '1', '--total', String(1000 * DURATION_S), '--format', 'json', target,
  ], { maxBuffer: 64 * 1024 * 1024 }, (error, out) => (error ? reject(error) : resolve(out)));
    child.stdin?.end();
  });
  const report = JSON.parse(stdout) as {
    rps: number;
    count: number;
    latencyDistribution: Array<{ percentage: number; latency: number }>;
    statusCodeDistribution: Record<string, number>;
  };
  const at = (p: number): number => Math.round(((report.latencyDistribution.find((d) => d.percentage === p)?.latency ?? 0) / 1e6) * 1000) / 1000;
  return {
    load_generator: 'ghz v0.93.0 (--rps 1000, 8 concurrent, 1 connection)',
    rps: Math.round(report.rps),
    requests_total: report.count,
    p50_ms: at(50),
    p90_ms: at(90),
    p99_ms: at(99),
    non_ok: report.count - (report.statusCodeDistribution['OK'] ?? 0),
  };
}

export async function run(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'pavilion-bench-extauthz-'));
  const servers: Server[] = [];
  try {
    const wasmDir = join(work, 'wasm');
    const regoDir = join(work, 'rego');
    await buildTenantBundle(definitionPath(TENANT), { outputDirectory: wasmDir });
    const rego = await buildTenantBundle(definitionPath(TENANT), { outputDirectory: regoDir, target: 'rego', skipTests: true });

    // the same requests for both: encoded CheckRequests for Pavilion, their input documents for OPA
    const codec = new CheckCodec();
    const grpcPayloads: string[] = [];
    const httpPayloads: string[] = [];
    for (const item of generateCorpus(7, 400)) {
      if (item.invalid || item.tenant !== TENANT) continue;
      const bytes = codec.encodeRequest(item.request);
      const decoded = codec.decodeRequest(bytes);
      if (!decoded.ok) continue;
      grpcPayloads.push(bytes.toString('base64'));
      httpPayloads.push(JSON.stringify({ input: checkRequestToInput(decoded.request, { skipRequestBodyParse: false, maxRequestBodyBytes: 1024 * 1024 }).input }));
    }
    process.stdout.write(`${grpcPayloads.length} CheckRequests, ${CONNECTIONS} in flight at saturation, ${DURATION_S}s per run (+${WARMUP_S}s warm-up)\n`);

    const pavilion = await startPavilion(wasmDir, work);
    servers.push(pavilion.server);
    const opa = await startOpa(rego.output);
    servers.push(opa);
    const opaUrl = `${opa.url}/v1/data/${DECISION_PATH}`;

    const cases: BenchCase[] = [];
    const scenarios: Array<{ name: string; rate?: number }> = [
      { name: '1,000 checks/s offered', rate: 1000 },
      { name: '5,000 checks/s offered', rate: 5000 },
      { name: `saturation (${CONNECTIONS} in flight)` },
    ];
    for (const scenario of scenarios) {
      process.stdout.write(`- ${scenario.name}\n`);
      const shape = { durationSeconds: DURATION_S, inFlight: CONNECTIONS, ...(scenario.rate === undefined ? {} : { rate: scenario.rate }) };
      const p = await measure(pavilion.server, { kind: 'grpc', target: pavilion.grpcTarget, payloads: grpcPayloads, ...shape }, work);
      const o = await measure(opa, { kind: 'http', target: opaUrl, payloads: httpPayloads, ...shape }, work);
      cases.push({
        name: `ext_authz Check, envoy_demo policy, ${scenario.name}`,
        pavilion: p,
        peer: o,
        peerName: 'opa run --server v1.22.3, HTTP Data API (opa-envoy-plugin not installable)',
        notes: 'Pavilion: gRPC Check (protobuf decode, input document, Wasm evaluation, CheckResponse). Peer: OPA Data API POST with the same input documents, no protobuf, no response mapping, HTTP/1.1 keep-alive.',
      });
    }
    const ghz = await ghzRun(pavilion.grpcTarget, Buffer.from(grpcPayloads[0] as string, 'base64'), work);
    await writeResults('extauthz', cases, {
      ...(ghz === undefined ? {} : { pavilion_ghz_1000_rps: ghz }),
      duration_s: DURATION_S,
      warmup_s: WARMUP_S,
      in_flight: CONNECTIONS,
      requests: grpcPayloads.length,
      load_generator: 'bench/extauthz.ts --loadgen (grpc-js client for Pavilion, node:http keep-alive for OPA), its own process',
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
