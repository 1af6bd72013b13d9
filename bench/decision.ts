/**
 * `npm run bench -- decision`: Pavilion against `opa run --server` on the same policies
 * and inputs, same load generator (autocannon in its own process), same connections.
 *
 * The peer evaluates the same staged sources built as a plain bundle (`opa build -t rego`):
 * OPA's release binary has no Wasm engine and refuses bundles with Wasm resolvers.
 *
 * Cases: cache off / cache on with a repeating (cache-friendly) mix / cache on with unique
 * inputs (cache-hostile) / decision logging on for both. Per case and server: requests/s,
 * p50/p99 latency, CPU-seconds per 1,000 decisions, RSS. Plus an in-process micro-benchmark
 * of one evaluation: opa-wasm (Pavilion's engine, no HTTP) against `opa bench`.
 *
 * Env: BENCH_DURATION_S (default 10), BENCH_CONNECTIONS (default 32).
 */
import { createRequire } from 'node:module';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { buildTenantBundle, definitionPath, listDefinitions, readBundle } from '../sidecar/src/bundles/index.ts';
import { createHostBuiltins } from '../sidecar/src/engine/builtins/index.ts';
import { findOpa, REPO_ROOT } from '../sidecar/src/lib/tools.ts';
import { measureServer, type LoadRequest } from './lib/load.ts';
import { startOpa } from './lib/opa.ts';
import { writeResults, type BenchCase } from './lib/results.ts';
import { buildSidecar, freePort, startServer, type Server } from './lib/servers.ts';

const exec = promisify(execFile);
const DURATION_S = Number(process.env['BENCH_DURATION_S'] ?? 10);
const CONNECTIONS = Number(process.env['BENCH_CONNECTIONS'] ?? 32);
const WARMUP_S = 3;

interface Example {
  readonly name: string;
  readonly path: string;
  readonly input: unknown;
  readonly expect: unknown;
}

async function startPavilion(main: string, bundleDir: string, cache: boolean, decisionLog: boolean, workDir: string): Promise<Server> {
  const port = await freePort();
  const config = join(workDir, `pavilion-${port}.json`);
  await writeFile(config, JSON.stringify({
    http: { host: '127.0.0.1', port },
    engine: { cache: { enabled: cache } },
    bundles: { directory: bundleDir, keysDirectory: join(bundleDir, 'keys'), persistDirectory: join(workDir, `persisted-${port}`) },
    decisionLog: decisionLog ? { sink: 'file', path: join(workDir, `decisions-${port}.ndjson`) } : { sink: 'none' },
    // The decision core against OPA: no credential verification (it has its own benchmark,
    // and the peer verifies none), so the sample tenants' credential policies are off.
    credentials: { tenants: {} },
  }));
  return startServer(process.execPath, [main], `http://127.0.0.1:${port}`, '/health/ready', { ...process.env, PAVILION_CONFIG: config });
}

function startOpaPeer(regoBundles: readonly string[], decisionLog: boolean): Promise<Server> {
  return startOpa(regoBundles, { args: decisionLog ? ['--set', 'decision_logs.console=true'] : [] });
}

async function microBenchmark(tenant: string, wasmBundle: string, regoBundle: string, example: Example): Promise<BenchCase> {
  const bundle = await readBundle(await readFile(wasmBundle), { tenant, namespace: tenant });
  const require = createRequire(import.meta.url);
  const { loadPolicySync } = require('@open-policy-agent/opa-wasm') as {
    loadPolicySync: (m: Uint8Array, mem: object, b: object) => { setData(d: object): void; evaluate(i: unknown, e: string): unknown };
  };
  const policy = loadPolicySync(bundle.wasm, { initial: 5, maximum: 2048 }, createHostBuiltins(() => ({ nowNs: BigInt(Date.now()) * 1_000_000n })));
  policy.setData(bundle.data);
  const input = new TextEncoder().encode(JSON.stringify(example.input)).buffer;
  for (let i = 0; i < 20_000; i++) policy.evaluate(input, example.path);
  const iterations = 100_000;
  const started = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) policy.evaluate(input, example.path);
  const wasmUs = Number(process.hrtime.bigint() - started) / iterations / 1000;

  const dir = await mkdtemp(join(tmpdir(), 'pavilion-opa-bench-'));
  try {
    const inputFile = join(dir, 'input.json');
    await writeFile(inputFile, JSON.stringify(example.input));
    const { stdout } = await exec(findOpa(), [
      'bench', '-b', regoBundle, '-i', inputFile, '--format', 'json', '--count', '3', `data.${example.path.replaceAll('/', '.')}`,
    ], { maxBuffer: 16 * 1024 * 1024 });
    // --count 3 prints one JSON document per run
    const runs = stdout.trim().split(/\n(?=\{)/).map((text) => JSON.parse(text) as { N: number; T: number });
    const opaUs = Math.min(...runs.map((r) => r.T / r.N / 1000));
    return {
      name: `in-process evaluation of ${tenant} ${example.path} ("${example.name}")`,
      pavilion: { us_per_eval: Math.round(wasmUs * 100) / 100 },
      peer: { us_per_eval: Math.round(opaUs * 100) / 100 },
      peerName: 'opa bench (topdown)',
      notes: 'opa-wasm LoadedPolicy.evaluate on the main thread vs `opa bench` on the same input; no HTTP, no worker hop',
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export async function run(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'pavilion-bench-decision-'));
  const servers: Server[] = [];
  try {
    const main = await buildSidecar(REPO_ROOT);
    const tenants = await listDefinitions();
    const wasmDir = join(work, 'wasm');
    const regoDir = join(work, 'rego');
    const regoBundles: string[] = [];
    const examples: Array<Example & { tenant: string }> = [];
    for (const tenant of tenants) {
      await buildTenantBundle(definitionPath(tenant), { outputDirectory: wasmDir });
      const rego = await buildTenantBundle(definitionPath(tenant), { outputDirectory: regoDir, target: 'rego', skipTests: true });
      regoBundles.push(rego.output);
      for (const e of JSON.parse(await readFile(join(REPO_ROOT, 'bundles', tenant, 'examples.json'), 'utf8')) as Example[]) {
        examples.push({ ...e, tenant });
      }
    }
    const requests: LoadRequest[] = examples.map((e) => ({
      path: `/v1/data/${e.path}`,
      headers: { 'x-pavilion-tenant': e.tenant },
      body: JSON.stringify({ input: e.input }),
    }));
    process.stdout.write(`${tenants.length} tenants, ${requests.length} example requests, ${CONNECTIONS} connections, ${DURATION_S}s per run\n`);

    const cases: BenchCase[] = [];
    const scenarios = [
      { name: 'cache off, mixed allow/deny examples of all tenants', cache: false, unique: false, log: false },
      { name: 'cache on, cache-friendly (the examples repeat)', cache: true, unique: false, log: false },
      { name: 'cache on, cache-hostile (every input unique)', cache: true, unique: true, log: false },
      { name: 'decision logging on (Pavilion: NDJSON file; OPA: console sink), cache off', cache: false, unique: false, log: true },
    ];
    for (const scenario of scenarios) {
      process.stdout.write(`- ${scenario.name}\n`);
      const pavilion = await startPavilion(main, wasmDir, scenario.cache, scenario.log, work);
      servers.push(pavilion);
      const spec = (url: string) => ({ url, connections: CONNECTIONS, requests, unique: scenario.unique });
      const p = await measureServer(pavilion, spec(pavilion.url), WARMUP_S, DURATION_S);
      await pavilion.stop();
      const opa = await startOpaPeer(regoBundles, scenario.log);
      servers.push(opa);
      const o = await measureServer(opa, spec(opa.url), WARMUP_S, DURATION_S);
      await opa.stop();
      cases.push({ name: scenario.name, pavilion: p, peer: o, peerName: 'opa run --server v1.22.3' });
    }

    const bank = examples.find((e) => e.tenant === 'bank') ?? examples[0];
    if (bank !== undefined) {
      cases.push(await microBenchmark(bank.tenant, join(wasmDir, bank.tenant, 'bundle.tar.gz'), join(regoDir, bank.tenant, 'bundle.tar.gz'), bank));
    }
    await writeResults('decision', cases, { connections: CONNECTIONS, duration_s: DURATION_S, load_generator: 'autocannon (separate process)' });
  } finally {
    for (const server of servers) await server.stop();
    await rm(work, { recursive: true, force: true });
  }
}
