/**
 * The gRPC transport under the Check service, driven byte by byte with a plain HTTP/2 client
 * (no gRPC library), as gRPC's PROTOCOL-HTTP2.md specifies it: what each malformed or unusual
 * call gets (HTTP status, or grpc-status and grpc-message), compressed messages, deadlines
 * from `grpc-timeout`, and a clean shutdown. Envoy-side clients (grpc-js) are covered in
 * extauthz-bad-input and extauthz-compat.
 */
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { gzipSync, deflateSync } from 'node:zlib';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { defaultBuildDirectory } from '../sidecar/src/bundles/index.ts';
import { CheckCodec, encodeGrpcMessage, parseGrpcTimeoutMs } from '../sidecar/src/extauthz/index.ts';
import { buildFixtureBundle } from './harness/fixtures.ts';
import { startPavilion, type RunningPavilion } from './harness/pavilion-harness.ts';

const LIMIT = 256 * 1024;
const CHECK = '/envoy.service.auth.v3.Authorization/Check';

interface Answer {
  readonly status: number;
  readonly headers: http2.IncomingHttpHeaders;
  readonly trailers: http2.IncomingHttpHeaders;
  readonly body: Buffer;
}

function framed(message: Buffer, compressed = false): Buffer {
  const prefix = Buffer.alloc(5);
  prefix[0] = compressed ? 1 : 0;
  prefix.writeUInt32BE(message.length, 1);
  return Buffer.concat([prefix, message]);
}

/** The grpc-status of an answer: trailers, or the headers of a trailers-only response. */
function grpcStatus(answer: Answer): number {
  return Number(answer.trailers['grpc-status'] ?? answer.headers['grpc-status']);
}

describe('ext_authz gRPC transport (HTTP/2 wire protocol)', () => {
  let app: RunningPavilion;
  let session: http2.ClientHttp2Session;
  const codec = new CheckCodec();
  const request = (headers: Record<string, string> = {}): Buffer => codec.encodeRequest({
    attributes: { request: { http: { method: 'GET', path: '/api/v1/products', headers: { 'x-pavilion-tenant': 'envoy_demo', ...headers } } } },
  });

  function call(body: Buffer | Buffer[], headers: http2.OutgoingHttpHeaders = {}): Promise<Answer> {
    return new Promise((resolve, reject) => {
      const stream = session.request({ ':method': 'POST', ':path': CHECK, 'content-type': 'application/grpc', te: 'trailers', ...headers });
      let responseHeaders: http2.IncomingHttpHeaders = {};
      let trailers: http2.IncomingHttpHeaders = {};
      const chunks: Buffer[] = [];
      stream.on('response', (h) => {
        responseHeaders = h;
      });
      stream.on('trailers', (t) => {
        trailers = t;
      });
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', () => resolve({ status: Number(responseHeaders[':status']), headers: responseHeaders, trailers, body: Buffer.concat(chunks) }));
      stream.on('error', reject);
      for (const part of Array.isArray(body) ? body : [body]) stream.write(part);
      stream.end();
    });
  }

  function decisionOf(answer: Answer): Record<string, unknown> {
    assert.equal(answer.body.readUInt32BE(1), answer.body.length - 5, 'one length-prefixed message');
    assert.equal(answer.body[0], 0, 'responses are not compressed');
    return codec.decodeResponse(answer.body.subarray(5));
  }

  before(async () => {
    const demo = await readFile(join(defaultBuildDirectory(), 'envoy_demo', 'bundle.tar.gz'));
    const slow = await buildFixtureBundle({
      modules: { 'policy.rego': 'package slow.envoy.authz\n\nallow := {"allowed": count([1 | some i in numbers.range(1, 4000); some j in numbers.range(1, 4000); i == j + 9000000]) == 0}\n' },
      entrypoints: ['slow/envoy/authz/allow'],
      roots: ['slow'],
    });
    app = await startPavilion({
      bundles: { envoy_demo: demo, slow },
      config: {
        tenants: [{ id: 'envoy_demo' }, { id: 'slow' }],
        extAuthz: { grpc: { port: 0, maxReceiveMessageBytes: LIMIT }, tenantFrom: { header: 'x-pavilion-tenant' }, timeoutMs: 5000 },
      },
    });
    const { port } = app.pavilion.extAuthz?.grpcAddress() ?? { port: 0 };
    session = http2.connect(`http://127.0.0.1:${port}`);
  });

  after(async () => {
    session?.close();
    await app?.stop();
  });

  test('a Check call: HTTP 200, application/grpc, one message, grpc-status 0 in the trailers', async () => {
    const answer = await call(framed(request()));
    assert.equal(answer.status, 200);
    assert.equal(answer.headers['content-type'], 'application/grpc');
    assert.equal(answer.trailers['grpc-status'], '0');
    const decision = decisionOf(answer);
    assert.equal((decision['status'] as { code?: number }).code ?? 0, 7, 'no bearer token: denied by the demo policy');
  });

  test('the message may arrive split across DATA frames, the prefix too', async () => {
    const whole = framed(request());
    const answer = await call([whole.subarray(0, 2), whole.subarray(2, 7), whole.subarray(7)]);
    assert.equal(grpcStatus(answer), 0);
    assert.ok(decisionOf(answer)['status']);
  });

  test('gzip and deflate messages (grpc-encoding) decide like identity ones', async () => {
    const plain = decisionOf(await call(framed(request())));
    for (const [encoding, compress] of [['gzip', gzipSync], ['deflate', deflateSync]] as const) {
      const answer = await call(framed(compress(request()), true), { 'grpc-encoding': encoding });
      assert.equal(grpcStatus(answer), 0, encoding);
      const decision = decisionOf(answer);
      assert.deepEqual(decision['status'], plain['status'], encoding);
      assert.deepEqual(decision['deniedResponse'], plain['deniedResponse'], encoding);
    }
  });

  test('refusals: each gets its gRPC status and a readable grpc-message, as a trailers-only response', async () => {
    const cases: Array<{ name: string; body: Buffer; headers?: http2.OutgoingHttpHeaders; code: number; message: RegExp }> = [
      { name: 'unknown method', body: framed(request()), headers: { ':path': '/envoy.service.auth.v2.Authorization/Check' }, code: 12, message: /unknown method/ },
      { name: 'unsupported encoding', body: framed(request()), headers: { 'grpc-encoding': 'snappy' }, code: 12, message: /snappy is not supported/ },
      { name: 'an encoding named like an inherited property', body: framed(gzipSync(request()), true), headers: { 'grpc-encoding': 'constructor' }, code: 12, message: /constructor is not supported/ },
      { name: 'an encoding named toString, uncompressed', body: framed(request()), headers: { 'grpc-encoding': 'toString' }, code: 12, message: /toString is not supported/ },
      { name: 'compressed flag without an encoding', body: framed(gzipSync(request()), true), code: 13, message: /compressed message without grpc-encoding/ },
      { name: 'no message at all', body: Buffer.alloc(0), code: 13, message: /no request message/ },
      { name: 'a truncated message', body: framed(request()).subarray(0, 20), code: 13, message: /truncated/ },
      { name: 'a Compressed-Flag other than 0 or 1 (grpc-go: unexpected payload format)', body: Buffer.concat([Buffer.from([2]), framed(request()).subarray(1)]), code: 13, message: /unexpected payload format 2/ },
      { name: 'two messages on a unary call', body: Buffer.concat([framed(request()), framed(request())]), code: 13, message: /more than one request message/ },
      { name: 'a malformed grpc-timeout (grpc-go: INTERNAL, before the method is looked at)', body: framed(request()), headers: { 'grpc-timeout': '1', ':path': '/no.Such/Method' }, code: 13, message: /malformed grpc-timeout "1"/ },
      { name: 'an empty grpc-encoding is identity', body: framed(request()), headers: { 'grpc-encoding': '' }, code: 0, message: /^$/ },
      { name: 'a corrupt gzip stream', body: framed(Buffer.from('not gzip at all')), headers: { 'grpc-encoding': 'gzip' }, code: 0, message: /^$/ },
      { name: 'a declared length over the limit', body: framed(Buffer.alloc(LIMIT + 1)), code: 8, message: /larger than max \(262145 vs\. 262144\)/ },
      { name: 'a gzip bomb inflating past the limit', body: framed(gzipSync(Buffer.alloc(LIMIT * 4)), true), headers: { 'grpc-encoding': 'gzip' }, code: 8, message: /larger than max/ },
    ];
    for (const c of cases) {
      const answer = await call(c.body, c.headers);
      assert.equal(answer.status, 200, c.name);
      assert.equal(grpcStatus(answer), c.code, c.name);
      const message = decodeURIComponent(String(answer.trailers['grpc-message'] ?? answer.headers['grpc-message'] ?? ''));
      assert.match(message, c.message, c.name);
    }
  });

  test('a corrupt gzip message with the compressed flag is INTERNAL, not a crash', async () => {
    const answer = await call(framed(Buffer.from('not gzip at all'), true), { 'grpc-encoding': 'gzip' });
    assert.equal(grpcStatus(answer), 13);
    assert.match(decodeURIComponent(String(answer.headers['grpc-message'])), /cannot be decompressed/);
  });

  test('not POST: HTTP 405; not application/grpc: HTTP 415', async () => {
    const get = await new Promise<number>((resolve, reject) => {
      const stream = session.request({ ':method': 'GET', ':path': CHECK });
      stream.on('response', (h) => resolve(Number(h[':status'])));
      stream.on('error', reject);
      stream.resume();
      stream.end();
    });
    assert.equal(get, 405);
    const json = await call(framed(request()), { 'content-type': 'application/json' });
    assert.equal(json.status, 415);
  });

  test('grpc-timeout bounds the check: a slow policy is answered before the caller gives up', async () => {
    const started = Date.now();
    const answer = await call(framed(codec.encodeRequest({
      attributes: { request: { http: { method: 'GET', path: '/', headers: { 'x-pavilion-tenant': 'slow' } } } },
    })), { 'grpc-timeout': '150m' });
    const elapsed = Date.now() - started;
    assert.equal(grpcStatus(answer), 0);
    const decision = decisionOf(answer);
    assert.equal((decision['deniedResponse'] as { status?: { code?: number } }).status?.code, 403);
    assert.equal((decision['dynamicMetadata'] as Record<string, unknown>)['error_code'], 'ERR_EXTAUTHZ_DEADLINE_EXCEEDED');
    assert.ok(elapsed < 1000, `answered in ${elapsed} ms`);
  });

  test('the connection keeps serving after every refusal', async () => {
    const answer = await call(framed(request()));
    assert.equal(grpcStatus(answer), 0);
  });

  test('grpc-timeout and grpc-message follow the spec', () => {
    assert.equal(parseGrpcTimeoutMs('150m'), 150);
    assert.equal(parseGrpcTimeoutMs('2S'), 2000);
    assert.equal(parseGrpcTimeoutMs('1H'), 3_600_000);
    assert.equal(parseGrpcTimeoutMs('500u'), 0.5);
    assert.equal(parseGrpcTimeoutMs('123456789m'), undefined, 'at most 8 digits');
    assert.equal(parseGrpcTimeoutMs('10x'), undefined);
    assert.equal(parseGrpcTimeoutMs(undefined), undefined);
    assert.equal(encodeGrpcMessage('50% of café'), '50%25 of caf%C3%A9');
  });
});
