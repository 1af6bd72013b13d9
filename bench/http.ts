/**
 * `npm run bench -- http`: the HTTP layer alone, node:http (what Pavilion's decision path
 * uses) against Express 5 (on the card), same decision-shaped handler, same load. This is
 * the measurement behind serving the Data API on node:http.
 */
import { join } from 'node:path';
import { REPO_ROOT } from '../sidecar/src/lib/tools.ts';
import { measureServer } from './lib/load.ts';
import { writeResults, type Metrics } from './lib/results.ts';
import { freePort, startServer } from './lib/servers.ts';

const DURATION_S = Number(process.env['BENCH_DURATION_S'] ?? 10);
const CONNECTIONS = Number(process.env['BENCH_CONNECTIONS'] ?? 32);

async function measure(kind: 'node' | 'express'): Promise<Metrics> {
  const port = await freePort();
  const server = await startServer(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'bench', 'lib', 'http-echo-server.ts'), kind, String(port)],
    `http://127.0.0.1:${port}`, '/health');
  try {
    const body = JSON.stringify({ input: { subject: { id: 'cust-1001', roles: ['customer'] }, action: 'accounts.read' } });
    const requests = [{ path: '/v1/data/bank/authz/allow', headers: {}, body }];
    return await measureServer(server, { url: server.url, connections: CONNECTIONS, requests, unique: false }, 2, DURATION_S);
  } finally {
    await server.stop();
  }
}

export async function run(): Promise<void> {
  const node = await measure('node');
  const expressResult = await measure('express');
  await writeResults('http', [{
    name: 'decision-shaped JSON POST, HTTP layer only',
    pavilion: node,
    peer: expressResult,
    peerName: 'express 5',
    notes: 'pavilion column = node:http as the Data API uses it',
  }], { connections: CONNECTIONS, duration_s: DURATION_S });
}
