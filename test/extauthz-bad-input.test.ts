/**
 * Bad input never reaches Envoy as a gRPC error or a hang: malformed protobuf, an empty
 * CheckRequest, unknown tenants, oversized bodies, a policy that conflicts, one that runs
 * past the deadline, decisions of the wrong shape or undefined. Each gets a well-formed
 * CheckResponse with the configured failure status (default 403, PERMISSION_DENIED) within
 * the check's deadline, and each is logged with its code. Also: dry run, the HTTP service
 * mode's failures, health. Requests upstream cannot parse get its own 400 (also under dry
 * run), and a string field that is not UTF-8 makes the message malformed, as in grpc-go.
 * Only a message over the transport limit is refused by gRPC itself (RESOURCE_EXHAUSTED, as
 * grpc-go does for opa-envoy-plugin), and the server keeps serving.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { defaultBuildDirectory } from '../sidecar/src/bundles/index.ts';
import { CheckCodec } from '../sidecar/src/extauthz/index.ts';
import { createCheckClient, createRawClient, structToJson, type CheckClient, type Message, type RawClient } from './extauthz/grpc-client.ts';
import { claims, signHs256 } from './extauthz/tokens.ts';
import { buildFixtureBundle } from './harness/fixtures.ts';
import { get, startPavilion, type RunningPavilion } from './harness/pavilion-harness.ts';

const BODY_LIMIT = 64 * 1024;
const TRANSPORT_LIMIT = 4 * 1024 * 1024;
const SLOW_TIMEOUT_MS = 100;

function fixture(tenant: string, rego: string): Promise<Buffer> {
  return buildFixtureBundle({
    modules: { 'policy.rego': `package ${tenant}.envoy.authz\n\n${rego}\n` },
    entrypoints: [`${tenant}/envoy/authz/allow`],
    roots: [tenant],
  });
}

function checkRequest(tenant: string, http: Message = {}): Message {
  const headers = { 'x-pavilion-tenant': tenant, 'x-request-id': `bad-${tenant}-${Math.random()}`, ...((http['headers'] ?? {}) as Record<string, string>) };
  return { attributes: { request: { http: { method: 'GET', path: '/api/v1/products', ...http, headers } } } };
}

interface Seen {
  readonly code: number;
  readonly message: string;
  readonly httpStatus: number | undefined;
  readonly body: string | undefined;
  readonly errorCode: unknown;
  readonly decisionId: unknown;
}

/** A response as proto-loader decodes it, or (raw calls) as CheckCodec does (Struct already JSON). */
function seen(response: Message, structDecoded = false): Seen {
  const status = (response['status'] ?? {}) as { code?: number; message?: string };
  const denied = response['deniedResponse'] as { status?: { code?: number }; body?: string } | undefined;
  const metadata = structDecoded ? ((response['dynamicMetadata'] ?? {}) as Record<string, unknown>) : structToJson(response['dynamicMetadata']);
  return {
    code: status.code ?? 0,
    message: status.message ?? '',
    httpStatus: denied?.status?.code,
    body: denied?.body,
    errorCode: metadata['error_code'],
    decisionId: metadata['decision_id'],
  };
}

describe('ext_authz: bad input always gets a well-formed CheckResponse', () => {
  let app: RunningPavilion;
  let client: CheckClient;
  let raw: RawClient;
  const codec = new CheckCodec();

  async function event(decisionId: unknown): Promise<Record<string, unknown>> {
    for (let i = 0; i < 100; i++) {
      const found = (await app.decisions()).find((e) => e['decision_id'] === decisionId);
      if (found !== undefined) return found;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.fail(`no decision event ${String(decisionId)}`);
  }

  async function expectFailure(response: Message, httpStatus: number, errorCode: string, structDecoded = false): Promise<Seen> {
    const s = seen(response, structDecoded);
    assert.equal(s.code, 7, JSON.stringify(response));
    assert.equal(s.httpStatus, httpStatus);
    assert.equal(s.errorCode, errorCode);
    assert.ok(s.message.startsWith(`${errorCode}: `), s.message);
    const logged = await event(s.decisionId);
    assert.equal((logged['error'] as { code?: string } | undefined)?.code, errorCode);
    return s;
  }

  before(async () => {
    const demo = await readFile(join(defaultBuildDirectory(), 'envoy_demo', 'bundle.tar.gz'));
    const [conflict, slow, shape, undef, informational] = await Promise.all([
      fixture('conflict', 'allow := true if input.version\n\nallow := false if input.version'),
      fixture('slow', 'allow := {"allowed": count([1 | some i in numbers.range(1, 4000); some j in numbers.range(1, 4000); i == j + 9000000]) == 0}'),
      fixture('shape', 'allow := {"allow": true, "headers": {"x": "y"}}'),
      fixture('undef', 'allow := true if input.nothing_here'),
      fixture('informational', 'allow := {"allowed": false, "http_status": 100}'),
    ]);
    app = await startPavilion({
      bundles: { envoy_demo: demo, envoy_demo_dry: demo, conflict, slow, shape, undef, undef_dry: undef, informational },
      config: {
        tenants: [{ id: 'envoy_demo' }, { id: 'envoy_demo_dry', namespace: 'envoy_demo' }, { id: 'conflict' }, { id: 'slow' }, { id: 'shape' }, { id: 'undef' }, { id: 'undef_dry', namespace: 'undef' }, { id: 'informational' }],
        extAuthz: {
          grpc: { port: 0, maxReceiveMessageBytes: TRANSPORT_LIMIT },
          tenantFrom: { header: 'x-pavilion-tenant' },
          maxRequestBodyBytes: BODY_LIMIT,
          tenants: {
            envoy_demo_dry: { path: 'envoy_demo/envoy/authz/allow', dryRun: true },
            undef_dry: { path: 'undef/envoy/authz/allow', dryRun: true },
            conflict: { failureStatus: 503 },
            slow: { timeoutMs: SLOW_TIMEOUT_MS },
          },
        },
      },
    });
    const { port } = app.pavilion.extAuthz?.grpcAddress() ?? { port: 0 };
    client = createCheckClient(`127.0.0.1:${port}`);
    raw = createRawClient(`127.0.0.1:${port}`);
  });

  after(async () => {
    client?.close();
    raw?.close();
    await app?.stop();
  });

  test('malformed protobuf (sent raw): 403 PERMISSION_DENIED, ERR_EXTAUTHZ_REQUEST_MALFORMED', async () => {
    for (const bytes of [Buffer.from([0xff, 0xff, 0xff, 0xff]), Buffer.from([0x0a, 0x7f, 0x01]), Buffer.from('definitely not protobuf')]) {
      const response = codec.decodeResponse(await raw.call(bytes));
      await expectFailure(response, 403, 'ERR_EXTAUTHZ_REQUEST_MALFORMED', true);
    }
  });

  test('an empty CheckRequest (no attributes): 403, ERR_EXTAUTHZ_TENANT_MISSING', async () => {
    await expectFailure(await client.check({}), 403, 'ERR_EXTAUTHZ_TENANT_MISSING');
    await expectFailure(codec.decodeResponse(await raw.call(Buffer.alloc(0))), 403, 'ERR_EXTAUTHZ_TENANT_MISSING', true);
  });

  test('unknown and malformed tenant names: 403, ERR_TENANT_UNKNOWN (no other tenant is consulted)', async () => {
    for (const tenant of ['globex', '../bank', 'ENVOY_DEMO', 'constructor']) {
      await expectFailure(await client.check(checkRequest(tenant)), 403, 'ERR_TENANT_UNKNOWN');
    }
  });

  test('a body over maxRequestBodyBytes is cut and marked truncated: the policy answers 413, nothing crashes', async () => {
    const big = JSON.stringify({ name: 'x'.repeat(2 * 1024 * 1024), price: 1 });
    const token = signHs256(claims('alice', 'admin'));
    const response = await client.check(checkRequest('envoy_demo', {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: big,
    }));
    const s = seen(response);
    assert.equal(s.code, 7);
    assert.equal(s.httpStatus, 413);
    const logged = await event(s.decisionId);
    const input = logged['input'] as { truncated_body: boolean; parsed_body: unknown; attributes: { request: { http: { body: string } } } };
    assert.equal(input.truncated_body, true);
    assert.equal(input.parsed_body, null);
    assert.ok(Buffer.byteLength(input.attributes.request.http.body) <= BODY_LIMIT);
  });

  test('a message over the transport limit is RESOURCE_EXHAUSTED from gRPC itself, and the server keeps serving', async () => {
    await assert.rejects(client.check(checkRequest('envoy_demo', { body: 'x'.repeat(TRANSPORT_LIMIT + 10) })), (error: { code?: number }) => error.code === 8);
    assert.equal(seen(await client.check(checkRequest('envoy_demo'))).httpStatus, 401);
  });

  test('a conflicting policy: the configured failure status (503), ERR_EVAL_CONFLICT', async () => {
    await expectFailure(await client.check(checkRequest('conflict')), 503, 'ERR_EVAL_CONFLICT');
  });

  test('a policy running past the deadline: answered within the deadline, 403, ERR_EXTAUTHZ_DEADLINE_EXCEEDED', async () => {
    const started = Date.now();
    const response = await client.check(checkRequest('slow'));
    const elapsed = Date.now() - started;
    const s = await expectFailure(response, 403, 'ERR_EXTAUTHZ_DEADLINE_EXCEEDED');
    assert.ok(elapsed < SLOW_TIMEOUT_MS + 400, `answered after ${elapsed} ms`);
    const logged = await event(s.decisionId);
    assert.equal((logged['input'] as { attributes?: { request?: { http?: { path?: string } } } } | undefined)?.attributes?.request?.http?.path, '/api/v1/products', 'the event keeps the input document');
    // the tenant's next check is answered too (the engine replaced the stuck worker)
    const again = seen(await client.check(checkRequest('envoy_demo')));
    assert.equal(again.httpStatus, 401);
  });

  test('decisions of the wrong shape or undefined: 403, ERR_EXTAUTHZ_DECISION_INVALID / _UNDEFINED', async () => {
    await expectFailure(await client.check(checkRequest('shape')), 403, 'ERR_EXTAUTHZ_DECISION_INVALID');
    await expectFailure(await client.check(checkRequest('undef')), 403, 'ERR_EXTAUTHZ_DECISION_UNDEFINED');
  });

  test('a path or body upstream cannot parse: its 400 denied response, body and status message request_parse_error: <error>', async () => {
    const response = await client.check(checkRequest('envoy_demo', { path: '/api/%zz' }));
    const s = seen(response);
    // byte for byte what opa-envoy-plugin sends (internal/errors.go: "<code>: <error>")
    assert.equal(s.code, 7);
    assert.equal(s.httpStatus, 400);
    assert.equal(s.body, 'request_parse_error: invalid URL escape "%zz"');
    assert.equal(s.message, 'request_parse_error: invalid URL escape "%zz"');
    // Pavilion's code stays where it was: dynamic metadata, the decision event
    assert.equal(s.errorCode, 'ERR_EXTAUTHZ_REQUEST_INVALID');
    const logged = await event(s.decisionId);
    assert.deepEqual(logged['error'], { code: 'ERR_EXTAUTHZ_REQUEST_INVALID', message: 'invalid URL escape "%zz"' });
    const query = seen(await client.check(checkRequest('envoy_demo', { path: '/api?a=1;b=2' })));
    assert.equal(query.body, 'request_parse_error: invalid semicolon separator in query');
    const form = seen(await client.check(checkRequest('envoy_demo', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'a=%zz' })));
    assert.equal(form.body, 'request_parse_error: invalid URL escape "%zz"');
    const length = seen(await client.check(checkRequest('envoy_demo', { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': 'abc' }, body: '{}' })));
    assert.equal(length.body, 'request_parse_error: strconv.ParseInt: parsing "abc": invalid syntax');
  });

  test('HTTP service mode: the same 400 and body for a path upstream cannot parse', async () => {
    const response = await fetch(`${app.url}/ext_authz/api/%zz`, { headers: { 'x-pavilion-tenant': 'envoy_demo' } });
    assert.equal(response.status, 400);
    assert.equal(await response.text(), 'request_parse_error: invalid URL escape "%zz"');
  });

  test('dry run: a request upstream cannot parse is still its 400 (given before the dry-run override)', async () => {
    const response = await client.check(checkRequest('envoy_demo_dry', { path: '/api/%zz' }));
    const s = seen(response);
    assert.equal(s.code, 7);
    assert.equal(s.httpStatus, 400);
    assert.equal(s.body, 'request_parse_error: invalid URL escape "%zz"');
    assert.equal(response['okResponse'], undefined);
    const logged = await event(s.decisionId);
    assert.equal((logged['error'] as { code?: string } | undefined)?.code, 'ERR_EXTAUTHZ_REQUEST_INVALID');
    assert.deepEqual(logged['ext_authz'], { transport: 'grpc', allowed: false, dry_run: true, http_status: 400 });
  });

  test('invalid UTF-8 in a string field (sent raw): malformed, as grpc-go refuses it; raw_body bytes are free', async () => {
    const marked = codec.encodeRequest(checkRequest('envoy_demo', { headers: { 'x-note': 'ZZ' } }));
    const at = marked.indexOf(Buffer.from('ZZ'));
    const bad = Buffer.from(marked);
    bad[at] = 0xc3;
    bad[at + 1] = 0x28;
    const s = await expectFailure(codec.decodeResponse(await raw.call(bad)), 403, 'ERR_EXTAUTHZ_REQUEST_MALFORMED', true);
    assert.match(s.message, /string field contains invalid UTF-8/);
    // the same byte in raw_body (bytes) is evaluated: the demo policy asks for a token
    const rawBody = codec.encodeRequest(checkRequest('envoy_demo', { method: 'POST', rawBody: Buffer.from([0xc3, 0x28]) }));
    assert.equal(seen(codec.decodeResponse(await raw.call(rawBody)), true).httpStatus, 401);
  });

  test('dry run: a denial is answered OK, the real decision is logged', async () => {
    const response = await client.check(checkRequest('envoy_demo_dry'));
    const s = seen(response);
    assert.equal(s.code, 0);
    assert.ok(response['okResponse'] !== undefined);
    assert.equal(structToJson(response['dynamicMetadata'])['status'], 401);
    const logged = await event(s.decisionId);
    assert.equal((logged['result'] as { allowed: boolean }).allowed, false);
    assert.deepEqual(logged['ext_authz'], { transport: 'grpc', allowed: true, dry_run: true });
  });

  test('dry run: a failure is answered OK too, and its code is logged', async () => {
    const response = await client.check(checkRequest('undef_dry'));
    const s = seen(response);
    assert.equal(s.code, 0);
    assert.ok(response['okResponse'] !== undefined);
    assert.equal(structToJson(response['dynamicMetadata'])['error_code'], 'ERR_EXTAUTHZ_DECISION_UNDEFINED');
    const logged = await event(s.decisionId);
    assert.equal((logged['error'] as { code?: string } | undefined)?.code, 'ERR_EXTAUTHZ_DECISION_UNDEFINED');
    assert.deepEqual(logged['ext_authz'], { transport: 'grpc', allowed: true, dry_run: true });
  });

  test('a burst of bad and good checks in parallel: every one answered, well-formed', async () => {
    const calls: Array<Promise<Seen>> = [];
    for (let i = 0; i < 60; i++) {
      if (i % 3 === 0) calls.push(raw.call(Buffer.from([0xff, i])).then((b) => seen(codec.decodeResponse(b), true)));
      else if (i % 3 === 1) calls.push(client.check(checkRequest('globex')).then(seen));
      else calls.push(client.check(checkRequest('envoy_demo')).then(seen));
    }
    const results = await Promise.all(calls);
    assert.equal(results.length, 60);
    for (const r of results) assert.ok(r.httpStatus === 403 || r.httpStatus === 401, JSON.stringify(r));
  });

  test('HTTP service mode: unknown tenant and conflicting policy get the failure statuses; oversized body is cut', async () => {
    const unknown = await fetch(`${app.url}/ext_authz/api/v1/products`, { headers: { 'x-pavilion-tenant': 'globex' } });
    assert.equal(unknown.status, 403);
    const conflict = await fetch(`${app.url}/ext_authz/x`, { headers: { 'x-pavilion-tenant': 'conflict' } });
    assert.equal(conflict.status, 503);
    const big = await fetch(`${app.url}/ext_authz/api/v1/products`, {
      method: 'POST',
      headers: { 'x-pavilion-tenant': 'envoy_demo', authorization: `Bearer ${signHs256(claims('alice', 'admin'))}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'y'.repeat(BODY_LIMIT * 3), price: 1 }),
    });
    assert.equal(big.status, 413);
    assert.deepEqual(await big.json(), { error: 'request body too large' });
    const ok = await fetch(`${app.url}/ext_authz/api/v1/products?debug=1`, {
      headers: { 'x-pavilion-tenant': 'envoy_demo', authorization: `Bearer ${signHs256(claims('alice', 'admin'))}` },
    });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get('x-current-user'), 'alice');
    assert.equal(ok.headers.get('x-auth-roles'), 'admin, authenticated');
    assert.equal(ok.headers.get('x-envoy-auth-headers-to-remove'), 'authorization');
  });

  test('HTTP service mode: a denial with a 1xx http_status (no final answer over HTTP) is the failure status, ERR_EXTAUTHZ_DECISION_INVALID', async () => {
    const response = await fetch(`${app.url}/ext_authz/x`, { headers: { 'x-pavilion-tenant': 'informational' } });
    assert.equal(response.status, 403);
    await response.arrayBuffer();
    const logged = (await app.decisions()).filter((e) => e['tenant'] === 'informational').at(-1);
    assert.equal((logged?.['error'] as { code?: string } | undefined)?.code, 'ERR_EXTAUTHZ_DECISION_INVALID');
    // over gRPC Envoy gets the policy's denial as written, as from opa-envoy-plugin
    assert.equal(seen(await client.check(checkRequest('informational'))).httpStatus, 100);
  });

  test('a body nested 5,000 deep: 403 ERR_REQUEST_TOO_DEEP, logged without its input, and the decision log stays healthy', async () => {
    const deep = `${'['.repeat(5000)}${']'.repeat(5000)}`;
    const token = signHs256(claims('alice', 'admin'));
    const response = await client.check(checkRequest('envoy_demo', {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: deep,
    }));
    const s = seen(response);
    assert.equal(s.code, 7);
    assert.equal(s.httpStatus, 403);
    assert.equal(s.errorCode, 'ERR_REQUEST_TOO_DEEP');
    const logged = await event(s.decisionId);
    assert.equal('input' in logged, false, 'the unserialisable input is left out');
    const error = logged['error'] as { code: string; cause?: { code: string } };
    assert.equal(error.code, 'ERR_DECISION_LOG_UNSERIALISABLE');
    assert.equal(error.cause?.code, 'ERR_REQUEST_TOO_DEEP');
    const health = await get(`${app.url}/health?verbose`);
    assert.equal(health.status, 200, JSON.stringify(health.body));
    assert.equal((health.body['components'] as Record<string, { state: string }>)['decision_log']?.state, 'OK');
  });

  test('health shows the ext_authz component', async () => {
    const health = await get(`${app.url}/health?verbose`);
    const components = health.body['components'] as Record<string, { state: string }>;
    assert.equal(components['ext_authz']?.state, 'OK');
  });
});
