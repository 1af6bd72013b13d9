/**
 * `npm run bench -- http`: the HTTP layer alone, node:http (what Pavilion's decision path
 * uses) against Express 5 (on the card), same decision-shaped handler, same load. This is
 * the measurement behind serving the Data API on node:http.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../sidecar/src/lib/tools.ts';
import { cpuSeconds, memoryMb } from './lib/process-stats.ts';
import { writeResults, type Metrics } from './lib/results.ts';
import { freePort, startServer } from './lib/servers.ts';

const exec = promisify(execFile);
const DURATION_S = Number(process.env['BENCH_DURATION_S'] ?? 10);
const CONNECTIONS = Number(process.env['BENCH_CONNECTIONS'] ?? 32);

async function measure(kind: 'node' | 'express', work: string): Promise<Metrics> {
  const port = await freePort();
  const server = await startServer(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'bench', 'lib', 'http-echo-server.ts'), kind, String(port)],
    `http://127.0.0.1:${port}`, '/health');
  try {
    const spec = join(work, `${kind}.json`);
    const body = JSON.stringify({ input: { subject: { id: 'cust-1001', roles: ['customer'] }, action: 'accounts.read' } });
    const requests = [{ path: '/v1/data/bank/authz/allow', headers: {}, body }];
    const run = async (seconds: number): Promise<Metrics> => {
      await writeFile(spec, JSON.stringify({ url: server.url, connections: CONNECTIONS, durationSeconds: seconds, requests, unique: false }));
      const { stdout } = await exec(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'bench', 'lib', 'loadgen.ts'), spec]);
      return JSON.parse(stdout.trim()) as Metrics;
    };
    await run(2);
    const cpu = cpuSeconds(server.pid);
    const r = await run(DURATION_S);
    const used = cpuSeconds(server.pid) - cpu;
    return {
      rps: Math.round(r['rps'] ?? 0),
      p50_ms: r['p50_ms'] ?? 0,
      p99_ms: r['p99_ms'] ?? 0,
      cpu_s_per_1k: Math.round((used / ((r['requests_total'] ?? 1) / 1000)) * 10000) / 10000,
      ...memoryMb(server.pid),
    };
  } finally {
    await server.stop();
  }
}

export async function run(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'pavilion-bench-http-'));
  try {
    const node = await measure('node', work);
    const expressResult = await measure('express', work);
    await writeResults('http', [{
      name: 'decision-shaped JSON POST, HTTP layer only',
      pavilion: node,
      peer: expressResult,
      peerName: 'express 5',
      notes: 'pavilion column = node:http as the Data API uses it',
    }], { connections: CONNECTIONS, duration_s: DURATION_S });
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
