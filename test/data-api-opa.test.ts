/**
 * The Data API behaves as OPA's REST Data API does (v1/server/server.go) where Pavilion can:
 * GET ?input, bodies read whatever their Content-Type, gzip request bodies, OPA's boolean
 * parameters, {"input": null} as no input, the v0 API, cached-answer metrics and /health's
 * OPA meaning. Where Pavilion cannot do what was asked (exact big numbers, explain, strict
 * builtin errors, YAML) it refuses with a typed code instead of answering something else.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { request } from 'node:http';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import { parseConfig } from '../sidecar/src/config/index.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { REPO_ROOT } from '../sidecar/src/lib/tools.ts';
import { buildFixtureBundle } from './harness/fixtures.ts';
import { get, post, startPavilion, type JsonResponse, type RunningPavilion } from './harness/pavilion-harness.ts';
import { until } from './harness/wait.ts';

const ACME = { 'x-pavilion-tenant': 'acme' };
/** fetch labels a string body text/plain unless told otherwise; where the type is not under test, say JSON. */
const ACME_JSON = { ...ACME, 'content-type': 'application/json' };
/** Small, so the limit tests stay small; every other body here is far below it. */
const MAX_BODY_BYTES = 64 * 1024;
/** Above Node's own 16 KiB, which refused a GET's ?input of that size where OPA serves it. */
const MAX_HEADER_BYTES = 64 * 1024;

interface Example {
  readonly path: string;
  readonly input: unknown;
  readonly expect: unknown;
}

function errorCode(body: Record<string, unknown>): string | undefined {
  return (body['errors'] as Array<{ code: string }> | undefined)?.[0]?.code;
}

/** A typed refusal: the status, OPA's code on top and Pavilion's in errors[0]. */
function assertRefused(response: JsonResponse, status: number, opa: string, code: string): void {
  assert.equal(response.status, status, JSON.stringify(response.body));
  assert.equal(response.body['code'], opa);
  assert.equal(errorCode(response.body), code);
  assert.equal(typeof response.body['message'], 'string');
}

/** A POST with a raw body and raw headers (no default content type), answered as text. */
async function send(url: string, body: string | Buffer | undefined, headers: Record<string, string>, method = 'POST'): Promise<{ status: number; headers: Headers; text: string }> {
  const response = await fetch(url, { method, headers, ...(body === undefined ? {} : { body }) });
  return { status: response.status, headers: response.headers, text: await response.text() };
}

function json(response: { status: number; headers: Headers; text: string }): JsonResponse {
  return { status: response.status, headers: response.headers, body: response.text === '' ? {} : JSON.parse(response.text) };
}

/** A chunked POST (no content-length, so only the streamed byte counts can refuse it). */
function postChunked(url: string, chunks: readonly Buffer[], headers: Record<string, string>): Promise<JsonResponse> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', headers: { ...headers, 'transfer-encoding': 'chunked' } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: new Headers(), body: text === '' ? {} : JSON.parse(text) }));
    });
    req.on('error', reject);
    for (const chunk of chunks) req.write(chunk);
    req.end();
  });
}

/** The decision events `match` picks, once `count` of them are in the log (the sink keeps running: other tests share it). */
async function logged(app: RunningPavilion, match: (event: Record<string, unknown>) => boolean, count = 1): Promise<Array<Record<string, unknown>>> {
  let events: Array<Record<string, unknown>> = [];
  await until('the decision events in the log', async () => (events = (await app.decisions()).filter(match)).length >= count);
  return events;
}

function query(input: unknown): string {
  return `input=${encodeURIComponent(JSON.stringify(input))}`;
}

async function echoBundle(): Promise<Buffer> {
  return buildFixtureBundle({
    modules: {
      'a.rego': [
        'package acme',
        '',
        '# the input exactly as the policy sees it (undefined when there is none)',
        'echo := input',
        '',
        'allow if input.user == "alice"',
        '',
      ].join('\n'),
      // OPA's default decision, under the tenant's namespace: what POST / answers
      'system.rego': 'package acme.system\n\nmain := input.user\n',
    },
    entrypoints: ['acme/echo', 'acme/allow', 'acme/system/main'],
    roots: ['acme'],
  });
}

describe('Data API: OPA compatibility', () => {
  let acme: RunningPavilion;
  let bank: RunningPavilion;
  let bankExample: Example;

  before(async () => {
    acme = await startPavilion({ bundles: { acme: await echoBundle() }, config: { http: { maxBodyBytes: MAX_BODY_BYTES, maxHeaderBytes: MAX_HEADER_BYTES } } });
    bank = await startPavilion();
    const examples = JSON.parse(await readFile(join(REPO_ROOT, 'bundles', 'bank', 'examples.json'), 'utf8')) as Example[];
    bankExample = examples[0] as Example;
  });
  after(async () => {
    await acme?.stop();
    await bank?.stop();
  });

  describe('1. GET ?input', () => {
    test('GET ?input=<json> is the input document, the last one wins, and it is logged', async () => {
      const marker = randomUUID();
      const response = await get(`${acme.url}/v1/data/acme/echo?input=${encodeURIComponent('{"first":true}')}&${query({ marker })}`, ACME);
      assert.equal(response.status, 200, JSON.stringify(response.body));
      assert.deepEqual(response.body['result'], { marker });
      assert.equal('warning' in response.body, false, 'OPA warns only on a POST without input');

      const sample = await get(`${bank.url}/v1/data/${bankExample.path}?${query(bankExample.input)}`, { 'x-pavilion-tenant': 'bank' });
      assert.deepEqual(sample.body['result'], bankExample.expect, 'a sample tenant decides on the ?input document');

      const [event] = await logged(acme, (e) => e['decision_id'] === response.body['decision_id']);
      assert.deepEqual(event?.['input'], { marker });
    });

    test('a malformed ?input is 400 invalid_parameter (ERR_REQUEST_MALFORMED_JSON), for HEAD too', async () => {
      assertRefused(await get(`${acme.url}/v1/data/acme/echo?input=${encodeURIComponent('{"user":')}`, ACME), 400, 'invalid_parameter', 'ERR_REQUEST_MALFORMED_JSON');
      const head = await send(`${acme.url}/v1/data/acme/echo?input=%7B`, undefined, ACME, 'HEAD');
      assert.equal(head.status, 400);
      assert.equal(head.text, '', 'HEAD answers without a body');
    });

    test('HEAD with a good ?input answers as GET does, without a body', async () => {
      const head = await send(`${acme.url}/v1/data/acme/echo?${query({ user: 'alice' })}`, undefined, ACME, 'HEAD');
      assert.equal(head.status, 200);
      assert.equal(head.text, '');
      assert.equal(head.headers.get('x-pavilion-bundle-revision'), 'r1');
    });

    test('?input nested deeper than http.maxInputDepth is 400 ERR_REQUEST_TOO_DEEP, as a POST body is', async () => {
      const deep = `${'['.repeat(100)}${']'.repeat(100)}`;
      assertRefused(await get(`${acme.url}/v1/data/acme/echo?input=${encodeURIComponent(deep)}`, ACME), 400, 'invalid_parameter', 'ERR_REQUEST_TOO_DEEP');
    });

    test('a carried credential nested deeper than http.maxInputDepth is 400 ERR_REQUEST_TOO_DEEP too, before anything walks it', async () => {
      const deep = `${'{"a":'.repeat(100)}1${'}'.repeat(100)}`;
      assertRefused(json(await send(`${acme.url}/v1/data/acme/echo`, `{"input": {}, "credentials": [${deep}]}`, ACME_JSON)), 400, 'invalid_parameter', 'ERR_REQUEST_TOO_DEEP');
      const shallow = json(await send(`${acme.url}/v1/data/acme/echo`, '{"input": {}, "credentials": [{"a": 1}]}', ACME_JSON));
      assert.equal(shallow.status, 200, JSON.stringify(shallow.body));
    });

    test(`a ?input past Node's 16 KiB of headers is served, up to http.maxHeaderBytes (${MAX_HEADER_BYTES / 1024} KiB here; default 1 MiB, as OPA's Go server); past it 431`, async () => {
      const big = { blob: 'x'.repeat(40 * 1024) };
      const response = await get(`${acme.url}/v1/data/acme/echo?${query(big)}`, ACME);
      assert.equal(response.status, 200);
      assert.deepEqual(response.body['result'], big);
      // Node answers 431 and closes; when the client has not finished sending, the close can
      // reach it as a reset before the answer: either way the request is refused, never served
      const tooBig = await fetch(`${acme.url}/v1/data/acme/echo?${query({ blob: 'x'.repeat(MAX_HEADER_BYTES) })}`, { headers: ACME }).then(
        (response) => response.status,
        (error: unknown) => String((error as { cause?: { code?: string } }).cause?.code),
      );
      assert.ok(tooBig === 431 || tooBig === 'ECONNRESET' || tooBig === 'EPIPE', String(tooBig));
    });

    test('?input=null is a null input (OPA v1DataGet), not a missing one', async () => {
      const response = await get(`${acme.url}/v1/data/acme/echo?input=null`, ACME);
      assert.equal(response.status, 200);
      assert.equal(response.body['result'], null);
    });
  });

  describe('2. numbers a double would change', () => {
    for (const [name, text] of [
      ['an integer past 2^53', '12345678901234567890'],
      ['an exponent past the double range', '1e400'],
      ['an exponent under the double range', '1e-400'],
      ['a decimal with more digits than a double keeps', '0.12345678901234567890'],
    ] as const) {
      test(`${name} (${text}) is refused with 400 ERR_REQUEST_NUMBER_INEXACT, not altered`, async () => {
        const response = json(await send(`${acme.url}/v1/data/acme/echo`, `{"input": {"n": ${text}}}`, ACME_JSON));
        assertRefused(response, 400, 'invalid_parameter', 'ERR_REQUEST_NUMBER_INEXACT');
        assert.ok(String(response.body['message']).includes(text), String(response.body['message']));
      });
    }

    test('GET ?input and v0 bodies are checked the same way', async () => {
      assertRefused(await get(`${acme.url}/v1/data/acme/echo?input=${encodeURIComponent('[12345678901234567890]')}`, ACME), 400, 'invalid_parameter', 'ERR_REQUEST_NUMBER_INEXACT');
      assertRefused(json(await send(`${acme.url}/v0/data/acme/echo`, '{"n": 1e400}', ACME_JSON)), 400, 'invalid_parameter', 'ERR_REQUEST_NUMBER_INEXACT');
    });

    test('a string with an unpaired surrogate escape ("\\ud800") is 400 ERR_REQUEST_INVALID, in a body, a ?input or a key; paired ones and an escaped backslash before "ud800" pass', async () => {
      for (const body of ['{"input": "\\ud800"}', '{"input": {"a": ["x\\udfff"]}}', '{"input": {"\\udc00": 1}}', '{"input": "\\\\\\ud800"}']) {
        const response = json(await send(`${acme.url}/v1/data/acme/echo`, body, ACME_JSON));
        assertRefused(response, 400, 'invalid_parameter', 'ERR_REQUEST_INVALID');
        assert.match(String(response.body['message']), /^input holds a string with an unpaired UTF-16 surrogate \(\\ud[89a-f][0-9a-f]{2}\), which a policy cannot read$/);
      }
      assertRefused(await get(`${acme.url}/v1/data/acme/echo?input=${encodeURIComponent('"\\ud800"')}`, ACME), 400, 'invalid_parameter', 'ERR_REQUEST_INVALID');
      for (const [body, value] of [['{"input": "\\ud83d\\ude00"}', '\u{1F600}'], ['{"input": "\\\\ud800"}', '\\ud800']] as const) {
        const response = json(await send(`${acme.url}/v1/data/acme/echo`, body, ACME_JSON));
        assert.equal(response.status, 200, JSON.stringify(response.body));
        assert.equal(response.body['result'], value);
      }
    });

    test('numbers a double keeps pass in any spelling (1.0, 1e2, -0, 1e+23), and long digit runs in strings are not numbers', async () => {
      const text = '{"input": {"a": 1.0, "b": 1e2, "c": -0, "d": 100000000000000000000000, "e": 0.1, "s": "12345678901234567890 1e400", "t": "\\"1e400"}}';
      const response = json(await send(`${acme.url}/v1/data/acme/echo`, text, ACME_JSON));
      assert.equal(response.status, 200, JSON.stringify(response.body));
      assert.deepEqual(response.body['result'], { a: 1, b: 100, c: 0, d: 1e23, e: 0.1, s: '12345678901234567890 1e400', t: '"1e400' });
    });
  });

  describe('3. Content-Type', () => {
    test('a body is read as JSON whatever its Content-Type (curl -d sends form-urlencoded), as OPA reads it', async () => {
      for (const type of ['application/x-www-form-urlencoded', 'text/plain', undefined]) {
        const headers: Record<string, string> = { ...ACME, ...(type === undefined ? {} : { 'content-type': type }) };
        // a Buffer body: fetch adds no content type of its own, so `undefined` really sends none
        const response = json(await send(`${acme.url}/v1/data/acme/echo`, Buffer.from('{"input": {"user": "alice"}}'), headers));
        assert.equal(response.status, 200, `${type}: ${JSON.stringify(response.body)}`);
        assert.deepEqual(response.body['result'], { user: 'alice' }, String(type));
      }
    });

    test('a YAML content type is 415 ERR_REQUEST_UNSUPPORTED_MEDIA_TYPE and says YAML is not supported', async () => {
      for (const type of ['application/yaml', 'application/x-yaml; charset=utf-8', 'text/yaml']) {
        const response = json(await send(`${acme.url}/v1/data/acme/echo`, 'input:\n  user: alice\n', { ...ACME, 'content-type': type }));
        assertRefused(response, 415, 'invalid_parameter', 'ERR_REQUEST_UNSUPPORTED_MEDIA_TYPE');
        assert.match(String(response.body['message']), /YAML/);
      }
    });
  });

  describe('4. Content-Encoding: gzip', () => {
    test('a gzip-encoded body is decompressed (v1 and v0)', async () => {
      const headers = { ...ACME, 'content-type': 'application/json', 'content-encoding': 'gzip' };
      const v1 = json(await send(`${acme.url}/v1/data/acme/echo`, gzipSync('{"input": {"user": "alice"}}'), headers));
      assert.equal(v1.status, 200, JSON.stringify(v1.body));
      assert.deepEqual(v1.body['result'], { user: 'alice' });
      const v0 = json(await send(`${acme.url}/v0/data/acme/echo`, gzipSync('{"user": "bob"}'), headers));
      assert.deepEqual(v0.body, { user: 'bob' });
    });

    test('a gzip bomb is cut off at http.maxBodyBytes of decompressed bytes: 413 ERR_REQUEST_TOO_LARGE', async () => {
      const bomb = gzipSync(`{"input": "${'a'.repeat(50 * 1024 * 1024)}"}`);
      assert.ok(bomb.length < MAX_BODY_BYTES, `the compressed body (${bomb.length} bytes) is under the limit`);
      const response = json(await send(`${acme.url}/v1/data/acme/echo`, bomb, { ...ACME, 'content-encoding': 'gzip' }));
      assertRefused(response, 413, 'invalid_parameter', 'ERR_REQUEST_TOO_LARGE');
      assert.match(String(response.body['message']), /decompressed/);
      assert.equal((await get(`${acme.url}/health`)).status, 200, 'the server is fine afterwards');
    });

    test('a streamed gzip body over the limit before decompression is 413 too', async () => {
      const incompressible = gzipSync(randomBytes(MAX_BODY_BYTES * 2));
      const chunks = [];
      for (let i = 0; i < incompressible.length; i += 8192) chunks.push(incompressible.subarray(i, i + 8192));
      const response = await postChunked(`${acme.url}/v1/data/acme/echo`, chunks, { ...ACME, 'content-encoding': 'gzip' });
      assertRefused(response, 413, 'invalid_parameter', 'ERR_REQUEST_TOO_LARGE');
    });

    test('a corrupt or truncated gzip stream is 400 ERR_REQUEST_GZIP_INVALID', async () => {
      const good = gzipSync('{"input": {"user": "alice"}}');
      for (const body of [Buffer.from('not gzip at all'), good.subarray(0, good.length - 6)]) {
        const response = json(await send(`${acme.url}/v1/data/acme/echo`, body, { ...ACME, 'content-encoding': 'gzip' }));
        assertRefused(response, 400, 'invalid_parameter', 'ERR_REQUEST_GZIP_INVALID');
      }
    });

    test('other content encodings stay 415', async () => {
      const response = json(await send(`${acme.url}/v1/data/acme/echo`, '{"input": {}}', { ...ACME, 'content-encoding': 'br' }));
      assertRefused(response, 415, 'invalid_parameter', 'ERR_REQUEST_UNSUPPORTED_MEDIA_TYPE');
    });
  });

  describe('5. explain, strict-builtin-errors, instrument', () => {
    test('?explain (any mode but off) is refused with 400 ERR_REQUEST_PARAMETER_UNSUPPORTED; explain=off is not', async () => {
      for (const mode of ['full', 'notes', 'fails', 'debug']) {
        const response = await post(`${acme.url}/v1/data/acme/echo?explain=${mode}`, { input: {} }, ACME);
        assertRefused(response, 400, 'invalid_parameter', 'ERR_REQUEST_PARAMETER_UNSUPPORTED');
        assert.match(String(response.body['message']), /Wasm/);
      }
      assert.equal((await post(`${acme.url}/v1/data/acme/echo?explain=off`, { input: {} }, ACME)).status, 200);
    });

    test('?strict-builtin-errors=true is refused (GET too); =false is not', async () => {
      const refused = await post(`${acme.url}/v1/data/acme/echo?strict-builtin-errors=true`, { input: {} }, ACME);
      assertRefused(refused, 400, 'invalid_parameter', 'ERR_REQUEST_PARAMETER_UNSUPPORTED');
      assert.match(String(refused.body['message']), /strict/);
      assertRefused(await get(`${acme.url}/v1/data/acme/echo?strict-builtin-errors`, ACME), 400, 'invalid_parameter', 'ERR_REQUEST_PARAMETER_UNSUPPORTED');
      assert.equal((await post(`${acme.url}/v1/data/acme/echo?strict-builtin-errors=false`, { input: {} }, ACME)).status, 200);
    });

    test('?instrument answers with the metrics, as ?metrics does', async () => {
      const response = await post(`${acme.url}/v1/data/acme/echo?instrument`, { input: { id: randomUUID() } }, ACME);
      const metrics = response.body['metrics'] as Record<string, number> | undefined;
      assert.equal(typeof metrics?.['timer_server_handler_ns'], 'number', JSON.stringify(response.body));
    });
  });

  describe('6. boolean parameters (OPA getBoolParam)', () => {
    async function isPretty(search: string): Promise<boolean> {
      const response = await send(`${acme.url}/v1/data/acme/echo?${search}`, '{"input": {"a": 1}}', ACME_JSON);
      assert.equal(response.status, 200, response.text);
      return response.text.includes('\n');
    }

    test('?pretty=false, ?pretty=0 and ?pretty&pretty=false do not pretty-print', async () => {
      assert.equal(await isPretty('pretty=false'), false);
      assert.equal(await isPretty('pretty=0'), false);
      assert.equal(await isPretty('pretty=yes'), false);
      assert.equal(await isPretty('pretty&pretty=false'), false, 'two values, neither "true"');
    });

    test('?pretty, ?pretty=TRUE, a percent-encoded name and a later true do', async () => {
      assert.equal(await isPretty('pretty'), true);
      assert.equal(await isPretty('pretty='), true);
      assert.equal(await isPretty('pretty=TRUE'), true);
      assert.equal(await isPretty('%70retty=true'), true);
      assert.equal(await isPretty('pretty=false&pretty=true'), true, 'OPA: any value "true"');
    });

    test('?metrics=0 adds no metrics', async () => {
      const response = await post(`${acme.url}/v1/data/acme/echo?metrics=0`, { input: {} }, ACME);
      assert.equal('metrics' in response.body, false);
    });
  });

  describe('7. {"input": null}', () => {
    test('is no input: the policy sees undefined input, the answer has OPA\'s api_usage_warning, the log no input', async () => {
      const response = await post(`${acme.url}/v1/data/acme/echo`, { input: null }, ACME);
      assert.equal(response.status, 200);
      assert.equal('result' in response.body, false, `the policy saw an input: ${JSON.stringify(response.body)}`);
      assert.equal((response.body['warning'] as { code: string } | undefined)?.code, 'api_usage_warning');
      const [event] = await logged(acme, (e) => e['decision_id'] === response.body['decision_id']);
      assert.ok(event);
      assert.equal('input' in event, false);
    });
  });

  describe('8. v0 Data API', () => {
    test('POST /v0/data/{path}: the whole body is the input, the answer the bare value (200)', async () => {
      const sample = await post(`${bank.url}/v0/data/${bankExample.path}`, bankExample.input, { 'x-pavilion-tenant': 'bank' });
      assert.equal(sample.status, 200, JSON.stringify(sample.body));
      assert.deepEqual(sample.body, bankExample.expect);
      const list = json(await send(`${acme.url}/v0/data/acme/echo`, '[1, "two", {"three": 3}]', ACME_JSON));
      assert.deepEqual(list.body, [1, 'two', { three: 3 }]);
      const allowed = json(await send(`${acme.url}/v0/data/acme/allow`, '{"user": "alice"}', ACME_JSON));
      assert.equal(allowed.status, 200);
      assert.equal(allowed.body, true);
      assert.equal(allowed.headers.get('x-pavilion-bundle-revision'), 'r1');
    });

    test('the tenant can be in the path, as for v1: POST /v0/tenants/{tenant}/data/{path}', async () => {
      const response = await post(`${acme.url}/v0/tenants/acme/data/acme/echo`, { via: 'path' });
      assert.deepEqual(response.body, { via: 'path' });
      assertRefused(await post(`${acme.url}/v0/tenants/acme/data/acme/echo`, {}, { 'x-pavilion-tenant': 'bank' }), 400, 'invalid_parameter', 'ERR_REQUEST_INVALID');
    });

    test('an undefined decision is 404 undefined_document, as OPA answers it', async () => {
      const response = await post(`${acme.url}/v0/data/acme/allow`, { user: 'bob' }, ACME);
      assert.equal(response.status, 404, JSON.stringify(response.body));
      assert.equal(response.body['code'], 'undefined_document');
      assert.equal(response.body['message'], 'document undefined: data.acme.allow');
    });

    test('an empty body is a null input (OPA readInputV0)', async () => {
      const response = json(await send(`${acme.url}/v0/data/acme/echo`, '', ACME_JSON));
      assert.equal(response.status, 200);
      assert.equal(response.body, null);
    });

    test('v0 decisions are logged as v1 logs them, defined and undefined', async () => {
      const marker = randomUUID();
      await post(`${acme.url}/v0/data/acme/echo`, { marker }, ACME);
      await post(`${acme.url}/v0/data/acme/allow`, { user: 'bob', marker }, ACME);
      const events = await logged(acme, (e) => (e['input'] as { marker?: string } | undefined)?.marker === marker, 2);
      assert.equal(events.length, 2);
      const echo = events.find((e) => e['path'] === 'acme/echo');
      assert.deepEqual(echo?.['result'], { marker });
      assert.equal(echo?.['tenant'], 'acme');
      const undefinedOne = events.find((e) => e['path'] === 'acme/allow');
      assert.ok(undefinedOne);
      assert.equal('result' in undefinedOne, false);
      assert.equal('error' in undefinedOne, false);
    });

    test('v0 takes POST only (405) and needs a tenant (400)', async () => {
      assertRefused(await get(`${acme.url}/v0/data/acme/echo`, ACME), 405, 'invalid_operation', 'ERR_METHOD_NOT_ALLOWED');
      assertRefused(await post(`${acme.url}/v0/data/acme/echo`, {}), 400, 'invalid_parameter', 'ERR_TENANT_REQUIRED');
    });

    test('a path no rule defines is 404 undefined_document "document missing", as OPA\'s v0 answers it', async () => {
      const response = await post(`${acme.url}/v0/data/acme/nope`, {}, ACME);
      assertRefused(response, 404, 'undefined_document', 'ERR_DOCUMENT_UNDEFINED');
      assert.equal(response.body['message'], 'document missing: data.acme.nope');
    });
  });

  describe('8b. POST / (OPA\'s default decision)', () => {
    test('answers the tenant\'s defaultDecision (<namespace>/system/main) as v0 does: the body is the input, the answer the bare value', async () => {
      const response = json(await send(`${acme.url}/`, '{"user": "alice"}', ACME_JSON));
      assert.equal(response.status, 200, JSON.stringify(response.body));
      assert.equal(response.body, 'alice');
      assert.equal(response.headers.get('x-pavilion-bundle-revision') !== null, true);
    });

    test('undefined: 404 undefined_document; a bundle without the rule: "document missing"; no tenant: 400; GET: 405', async () => {
      const undefinedOne = await post(`${acme.url}/`, {}, ACME);
      assertRefused(undefinedOne, 404, 'undefined_document', 'ERR_DOCUMENT_UNDEFINED');
      assert.equal(undefinedOne.body['message'], 'document undefined: data.acme.system.main');
      const missing = await post(`${bank.url}/`, {}, { 'x-pavilion-tenant': 'bank' });
      assertRefused(missing, 404, 'undefined_document', 'ERR_DOCUMENT_UNDEFINED');
      assert.equal(missing.body['message'], 'document missing: data.bank.system.main');
      assertRefused(await post(`${acme.url}/`, { user: 'alice' }), 400, 'invalid_parameter', 'ERR_TENANT_REQUIRED');
      assertRefused(await get(`${acme.url}/`, ACME), 405, 'invalid_operation', 'ERR_METHOD_NOT_ALLOWED');
    });

    test('config: tenants[].defaultDecision takes OPA\'s form (a leading slash or none) and must stay under the namespace', () => {
      const tenant = (extra: Record<string, unknown>) => parseConfig({ tenants: [{ id: 'acme', ...extra }] }).tenants[0];
      assert.equal(tenant({})?.defaultDecision, 'acme/system/main');
      assert.equal(tenant({ namespace: 'acme_prod' })?.defaultDecision, 'acme_prod/system/main');
      assert.equal(tenant({ namespace: '/acme/' })?.defaultDecision, 'acme/system/main', 'a namespace written with slashes still starts');
      assert.equal(tenant({ defaultDecision: '/acme/authz/allow' })?.defaultDecision, 'acme/authz/allow');
      for (const defaultDecision of ['/system/main', 'bank/allow', 'acmecorp/allow', 'acme//allow', '/']) {
        assert.throws(() => tenant({ defaultDecision }), (e: unknown) => isPavilionError(e, ErrorCodes.CONFIG_INVALID), defaultDecision);
      }
    });
  });

  describe('9. ?metrics on a cached answer', () => {
    test('a cache hit reports no eval timer, but a cache-hit counter; a miss reports the timer', async () => {
      const input = { id: randomUUID() };
      const first = await post(`${acme.url}/v1/data/acme/echo?metrics`, { input }, ACME);
      const missed = first.body['metrics'] as Record<string, number>;
      assert.equal(typeof missed['timer_rego_query_eval_ns'], 'number', JSON.stringify(missed));
      assert.equal('counter_pavilion_decision_cache_hit' in missed, false);
      const second = await post(`${acme.url}/v1/data/acme/echo?metrics`, { input }, ACME);
      const hit = second.body['metrics'] as Record<string, number>;
      assert.equal('timer_rego_query_eval_ns' in hit, false, JSON.stringify(hit));
      assert.equal(hit['counter_pavilion_decision_cache_hit'], 1);
      assert.equal(typeof hit['timer_server_handler_ns'], 'number');
    });
  });

  describe('9b. what is not HTTP/1.1', () => {
    /** Raw bytes to the API port; the answer as status, headers and a JSON body (or the socket error). */
    function raw(url: string, bytes: string): Promise<JsonResponse | string> {
      return new Promise((resolve) => {
        const { port } = new URL(url);
        const socket = createConnection(Number(port), '127.0.0.1', () => socket.end(bytes));
        const chunks: Buffer[] = [];
        socket.on('data', (chunk: Buffer) => chunks.push(chunk));
        socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
        socket.on('close', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const [head = '', body = ''] = text.split('\r\n\r\n');
          const [statusLine = '', ...fields] = head.split('\r\n');
          const headers = new Headers(fields.map((f) => [f.slice(0, f.indexOf(':')), f.slice(f.indexOf(':') + 1).trim()] as [string, string]));
          try {
            resolve({ status: Number(statusLine.split(' ')[1]), headers, body: JSON.parse(body) as Record<string, unknown> });
          } catch {
            resolve(`not a JSON answer: ${JSON.stringify(text.slice(0, 300))}`);
          }
        });
      });
    }

    test('a bad request line, a raw non-ASCII path, a bad header or a bad chunk is 400 ERR_REQUEST_MALFORMED_HTTP with an OPA body, not a bare 400', async () => {
      for (const bytes of [
        'NOT HTTP AT ALL\r\n\r\n',
        'GET /v1/data/\u00e9 HTTP/1.1\r\nhost: x\r\n\r\n',
        'GET / HTTP/1.1\r\nbad header\r\n\r\n',
        // a body that breaks HTTP after its request was taken, before the route answered
        'POST /v1/data/acme/echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n',
      ]) {
        const answer = await raw(acme.url, bytes);
        assert.ok(typeof answer === 'object', `${JSON.stringify(bytes)}: ${String(answer)}`);
        assertRefused(answer, 400, 'invalid_parameter', 'ERR_REQUEST_MALFORMED_HTTP');
        assert.equal(answer.headers.get('content-type'), 'application/json');
        assert.equal(answer.headers.get('connection'), 'close');
        assert.match(String(answer.body['message']), /^the request is not valid HTTP\/1\.1 \(HPE_[A-Z_]+: /);
      }
    });

    test('a request not whole within http.requestTimeoutMs is 408 ERR_REQUEST_TIMEOUT with an OPA body', async () => {
      const slow = await startPavilion({ bundles: { acme: await echoBundle() }, config: { http: { requestTimeoutMs: 300 } } });
      try {
        const started = performance.now();
        const answer = await new Promise<JsonResponse | string>((resolve) => {
          // the headers never end
          const socket = createConnection(Number(new URL(slow.url).port), '127.0.0.1', () => socket.write('GET /health HTTP/1.1\r\nhost: x\r\n'));
          const chunks: Buffer[] = [];
          socket.on('data', (chunk: Buffer) => chunks.push(chunk));
          socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
          socket.on('close', () => {
            const [head = '', body = ''] = Buffer.concat(chunks).toString('utf8').split('\r\n\r\n');
            resolve({ status: Number(head.split(' ')[1]), headers: new Headers(), body: JSON.parse(body) as Record<string, unknown> });
          });
        });
        assert.ok(typeof answer === 'object', String(answer));
        assertRefused(answer, 408, 'invalid_parameter', 'ERR_REQUEST_TIMEOUT');
        assert.ok(performance.now() - started < 5000, 'Node looks for stalled requests every half timeout, not every 30 s');
      } finally {
        await slow.stop();
      }
    });

    test('a HEAD the parser refuses is answered without a body', async () => {
      const answer = await new Promise<string>((resolve) => {
        const socket = createConnection(Number(new URL(acme.url).port), '127.0.0.1', () => socket.end('HEAD /v1/data/\u00e9 HTTP/1.1\r\nhost: x\r\n\r\n'));
        const chunks: Buffer[] = [];
        socket.on('data', (chunk: Buffer) => chunks.push(chunk));
        socket.on('error', () => undefined);
        socket.on('close', () => resolve(Buffer.concat(chunks).toString('utf8')));
      });
      assert.match(answer, /^HTTP\/1\.1 400 Bad Request\r\n/);
      assert.ok(answer.endsWith('\r\n\r\n'), `no body: ${answer}`);
    });

    test('chunk extensions over the HTTP parser\'s limit are 413 ERR_REQUEST_TOO_LARGE with an OPA body, as Node answers 413', async () => {
      const answer = await raw(acme.url, `POST /v1/data/acme/echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n2;${'e'.repeat(20 * 1024)}\r\n{}\r\n0\r\n\r\n`);
      if (typeof answer === 'string') assert.ok(['ECONNRESET', 'EPIPE'].includes(answer), answer);
      else assertRefused(answer, 413, 'invalid_parameter', 'ERR_REQUEST_TOO_LARGE');
    });

    test('headers over http.maxHeaderBytes are 431 ERR_REQUEST_HEADERS_TOO_LARGE with an OPA body', async () => {
      const answer = await raw(acme.url, `GET /v1/data/acme/echo HTTP/1.1\r\nhost: x\r\nx-big: ${'x'.repeat(MAX_HEADER_BYTES)}\r\n\r\n`);
      // the server may close before it has read all that was sent: then the client sees a reset
      if (typeof answer === 'string') assert.ok(['ECONNRESET', 'EPIPE'].includes(answer), answer);
      else assertRefused(answer, 431, 'invalid_parameter', 'ERR_REQUEST_HEADERS_TOO_LARGE');
    });
  });

  describe('10. /health', () => {
    test('a healthy sidecar is 200 for /health, ?bundles, ?plugins and both', async () => {
      for (const search of ['', '?bundles', '?plugins', '?bundles&plugins', '?bundle']) {
        const health = await get(`${bank.url}/health${search}`);
        assert.equal(health.status, 200, `${search}: ${JSON.stringify(health.body)}`);
      }
    });
  });
});

describe('/health as OPA means it, with a tenant that has no active policy', () => {
  let app: RunningPavilion;

  before(async () => {
    const good = await buildFixtureBundle({ modules: { 'a.rego': 'package acme\n\nallow := true\n' }, entrypoints: ['acme/allow'], roots: ['acme'] });
    // globex's bundle claims acme's roots: refused. Both configured, so the sidecar must serve
    // both (a discovered tenant without a policy would only be WARN: tenants-readiness.test.ts)
    app = await startPavilion({ bundles: { acme: good, globex: good }, config: { tenants: [{ id: 'acme' }, { id: 'globex' }] } });
  });
  after(() => app?.stop());

  test('plain /health is 200: the server can evaluate', async () => {
    const health = await get(`${app.url}/health`);
    assert.equal(health.status, 200, JSON.stringify(health.body));
    assert.deepEqual(health.body, {});
    const verbose = await get(`${app.url}/health?verbose`);
    assert.equal(verbose.status, 200);
    assert.equal((verbose.body['components'] as Record<string, { state: string }>)['tenants']?.state, 'ERROR');
  });

  test('?bundles (and ?bundle) need every tenant active: 500 naming the tenant and its code', async () => {
    for (const search of ['?bundles', '?bundle', '?bundles=true']) {
      const health = await get(`${app.url}/health${search}`);
      assert.equal(health.status, 500, search);
      assert.match(String(health.body['error']), /bundles are not activated: globex \(ERR_BUNDLE_ROOTS_FOREIGN\)/);
    }
    assert.equal((await get(`${app.url}/health?bundles=false`)).status, 200);
  });

  test('?plugins needs every component OK or WARN, except those named by exclude-plugin', async () => {
    const health = await get(`${app.url}/health?plugins`);
    assert.equal(health.status, 500);
    assert.match(String(health.body['error']), /plugins are not up: tenants: /);
    assert.equal((await get(`${app.url}/health?plugins&exclude-plugin=tenants`)).status, 200);
    assert.equal((await get(`${app.url}/health?plugins&exclude-plugin=engine&exclude-plugin=tenants`)).status, 200);
    assert.equal((await get(`${app.url}/health?plugins&exclude-plugin=engine`)).status, 500);
  });

  test('/health/ready and /health/live are unchanged (the Helm chart probes them)', async () => {
    const ready = await get(`${app.url}/health/ready`);
    assert.equal(ready.status, 500);
    assert.match(String(ready.body['error']), /globex/);
    assert.equal((await get(`${app.url}/health/live`)).status, 200);
  });

  test('plain /health fails once no evaluation worker is ready', async () => {
    await app.pavilion.engine.stop();
    const health = await get(`${app.url}/health`);
    assert.equal(health.status, 500);
    assert.match(String(health.body['error']), /^unable to perform evaluation/);
  });
});
