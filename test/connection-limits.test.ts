/**
 * The listeners' bounds on open connections (`http.maxConnections`,
 * `extAuthz.grpc.maxConnections`): what a connection past the bound gets (reset at once, not
 * one byte answered), what the operator sees (a warning in the log and in /health?verbose,
 * pavilion_connections_* metrics), and that room given back is usable again.
 */
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { CheckCodec } from '../sidecar/src/extauthz/index.ts';
import { startPavilion, type RunningPavilion } from './harness/pavilion-harness.ts';

const CHECK = '/envoy.service.auth.v3.Authorization/Check';

type LogLine = { level: string; message: string; fields: Record<string, unknown> | undefined };

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

function open(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => resolve(socket));
    socket.once('error', reject);
  });
}

/**
 * Connect, send a request, and collect what comes back until the server closes the
 * connection (`closed`), or for two seconds.
 */
function refusedConnection(port: number, request: string): Promise<{ bytes: number; closed: boolean }> {
  return new Promise((resolve) => {
    let bytes = 0;
    const socket = connect(port, '127.0.0.1', () => socket.write(request));
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ bytes, closed: false });
    }, 2000);
    socket.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
    });
    socket.on('error', () => undefined); // ECONNRESET: the refusal itself
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ bytes, closed: true });
    });
  });
}

function metric(text: string, name: string, listener: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{listener="${listener}"} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

describe('connection limits', () => {
  let app: RunningPavilion;
  const lines: LogLine[] = [];
  let httpPort: number;
  let grpcPort: number;

  before(async () => {
    app = await startPavilion({
      config: {
        http: { maxConnections: 2 },
        tenants: [{ id: 'envoy_demo' }],
        extAuthz: { grpc: { port: 0, maxConnections: 1, handshakeTimeoutMs: 300 }, tenantFrom: { header: 'x-pavilion-tenant' } },
      },
      log: (level, message, fields) => lines.push({ level, message, fields }),
    });
    httpPort = app.pavilion.api.address().port;
    grpcPort = app.pavilion.extAuthz?.grpcAddress().port ?? 0;
  });

  after(async () => {
    await app?.stop();
  });

  const httpDetails = (): Record<string, unknown> => app.pavilion.api.status().details ?? {};

  test('http: past maxConnections a connection is reset unanswered; the log, health and metrics say so; freed room serves again', async () => {
    assert.deepEqual(app.pavilion.api.status(), { state: 'OK', details: { connections: 0, maxConnections: 2, connectionsRefused: 0 } });
    const held = [await open(httpPort), await open(httpPort)];
    await until(() => httpDetails()['connections'] === 2, 'two connections held');

    const refused = await refusedConnection(httpPort, 'GET /health HTTP/1.1\r\nhost: x\r\n\r\n');
    assert.deepEqual(refused, { bytes: 0, closed: true }, 'closed, and not one byte answered, past the bound');
    assert.equal(httpDetails()['connectionsRefused'], 1);
    const status = app.pavilion.api.status();
    assert.equal(status.state, 'WARN');
    assert.match(status.message ?? '', /^http: connections refused in the last minute: 2 open connections is the bound \(1 refused since start\)$/);
    const warnings = lines.filter((l) => l.level === 'warn' && l.fields?.['listener'] === 'http');
    assert.equal(warnings.length, 1);
    assert.deepEqual(warnings[0]?.fields, { listener: 'http', maxConnections: 2, refusedSinceLastWarning: 1 });

    // a second refusal within the minute is counted, not logged again
    await refusedConnection(httpPort, 'GET /health HTTP/1.1\r\nhost: x\r\n\r\n');
    assert.equal(httpDetails()['connectionsRefused'], 2);
    assert.equal(lines.filter((l) => l.fields?.['listener'] === 'http').length, 1);

    held[0]?.destroy();
    await until(() => httpDetails()['connections'] === 1, 'a held connection closed');
    const response = await fetch(`${app.url}/metrics`);
    assert.equal(response.status, 200);
    const text = await response.text();
    assert.equal(metric(text, 'pavilion_connections_refused_total', 'http'), 2);
    assert.equal(metric(text, 'pavilion_connections_max', 'http'), 2);
    assert.equal(metric(text, 'pavilion_connections_open', 'http'), 2, 'the held one and the scrape\'s own');
    assert.equal(metric(text, 'pavilion_connections_max', 'grpc'), 1);
    held[1]?.destroy();
  });

  test('grpc: a connection that never speaks HTTP/2 is closed after handshakeTimeoutMs, so it cannot hold a slot', async () => {
    const started = performance.now();
    const silent = await new Promise<{ bytes: number; closed: boolean }>((resolve) => {
      let bytes = 0;
      const socket = connect(grpcPort, '127.0.0.1');
      const timer = setTimeout(() => {
        socket.destroy();
        resolve({ bytes, closed: false });
      }, 5000);
      socket.on('data', (chunk: Buffer) => {
        bytes += chunk.length; // the server's own SETTINGS come first
      });
      socket.on('error', () => undefined);
      socket.on('close', () => {
        clearTimeout(timer);
        resolve({ bytes, closed: true });
      });
    });
    assert.equal(silent.closed, true, 'the server closed the silent connection');
    assert.ok(performance.now() - started >= 250, 'not before the handshake timeout');
    assert.ok(silent.bytes >= 9, 'it was a live HTTP/2 server (its SETTINGS frame)');
    const grpcDetails = (): { connections: number } => (app.pavilion.extAuthz?.status().details as { grpcConnections: { connections: number } }).grpcConnections;
    await until(() => grpcDetails().connections === 0, 'the slot given back');
  });

  test('grpc: past maxConnections a session is reset before its settings; the ext_authz component warns; freed room checks again', async () => {
    const first = http2.connect(`http://127.0.0.1:${grpcPort}`);
    await new Promise<void>((resolve, reject) => {
      first.once('remoteSettings', () => resolve());
      first.once('error', reject);
    });
    const refused = await refusedConnection(grpcPort, 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
    assert.deepEqual(refused, { bytes: 0, closed: true }, 'closed, without a SETTINGS frame, past the bound');
    const component = app.pavilion.extAuthz?.status();
    assert.equal(component?.state, 'WARN');
    assert.match(component?.message ?? '', /^grpc: connections refused in the last minute: 1 open connections is the bound/);
    assert.deepEqual((component?.details as Record<string, unknown>)['grpcConnections'], { connections: 1, maxConnections: 1, connectionsRefused: 1 });
    assert.equal(lines.filter((l) => l.level === 'warn' && l.fields?.['listener'] === 'grpc').length, 1);

    first.close();
    await until(() => (app.pavilion.extAuthz?.status().details as { grpcConnections: { connections: number } }).grpcConnections.connections === 0, 'the first session closed');
    const second = http2.connect(`http://127.0.0.1:${grpcPort}`);
    try {
      const codec = new CheckCodec();
      const message = codec.encodeRequest({ attributes: { request: { http: { method: 'GET', path: '/', headers: { 'x-pavilion-tenant': 'envoy_demo' } } } } });
      const framed = Buffer.concat([Buffer.from([0, 0, 0, 0, 0]), message]);
      framed.writeUInt32BE(message.length, 1);
      const status = await new Promise<number>((resolve, reject) => {
        const stream = second.request({ ':method': 'POST', ':path': CHECK, 'content-type': 'application/grpc', te: 'trailers' });
        stream.on('response', (headers) => resolve(Number(headers[':status'])));
        stream.on('error', reject);
        stream.resume();
        stream.end(framed);
      });
      assert.equal(status, 200);
    } finally {
      second.close();
    }
    const text = await (await fetch(`${app.url}/metrics`)).text();
    assert.equal(metric(text, 'pavilion_connections_refused_total', 'grpc'), 1);
  });
});
