/**
 * The pure parts of ext_authz, case by case against opa-envoy-plugin's behaviour
 * (envoyauth/request.go, protomap.go, response.go, internal/internal.go; the expected values
 * follow the plugin's own tests where they exist): the input document, Go's URL and
 * integer parsing, body parsing, the decision -> CheckResponse contract, tenant resolution,
 * and the wire codec's field numbers and protomap rendering.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseConfig, type ExtAuthzTenantSource } from '../sidecar/src/config/index.ts';
import {
  CheckCodec,
  checkRequestToInput,
  decisionToCheckResponse,
  failureCheckResponse,
  parseBody,
  parsePathAndQuery,
  resolveTenant,
  type CheckRequestJson,
} from '../sidecar/src/extauthz/index.ts';
import { parseInt64, parseQuery, pathUnescape } from '../sidecar/src/extauthz/go-url.ts';
import { parseMediaType } from '../sidecar/src/extauthz/multipart.ts';
import { ErrorCodes, PavilionError } from '../sidecar/src/lib/errors.ts';

const json = (value: unknown): unknown => JSON.parse(JSON.stringify(value));
const OPTIONS = { skipRequestBodyParse: false, maxRequestBodyBytes: 1024 * 1024 };

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    return error instanceof PavilionError ? error.code : `foreign: ${String(error)}`;
  }
  return undefined;
}

function http(fields: Record<string, unknown>): CheckRequestJson {
  return { attributes: { request: { http: fields } } };
}

describe('input document (envoyauth/request.go RequestToInput)', () => {
  test('shape: attributes as given, version, parsed_path, parsed_query, parsed_body, truncated_body', () => {
    const request = http({ id: '13359530607844510314', method: 'GET', path: '/my/test/path?a=1&a=2&x=y', headers: { ':authority': 'h' } });
    const { input } = checkRequestToInput(request, OPTIONS);
    assert.deepEqual(json(input), {
      attributes: request.attributes,
      version: { ext_authz: 'v3', encoding: 'protojson' },
      parsed_path: ['my', 'test', 'path'],
      parsed_query: { a: ['1', '2'], x: ['y'] },
      parsed_body: null,
      truncated_body: false,
    });
  });

  test('an empty CheckRequest still gives a document (no attributes key, parsed_path [""])', () => {
    assert.deepEqual(json(checkRequestToInput({}, OPTIONS).input), {
      version: { ext_authz: 'v3', encoding: 'protojson' },
      parsed_path: [''],
      parsed_query: {},
      parsed_body: null,
      truncated_body: false,
    });
  });

  test('skipRequestBodyParse leaves parsed_body and truncated_body out, even for an unparsable body', () => {
    const { input } = checkRequestToInput(http({ headers: { 'content-type': 'application/json' }, body: '["foo" : 42}' }), { ...OPTIONS, skipRequestBodyParse: true });
    assert.equal('parsed_body' in input, false);
    assert.equal('truncated_body' in input, false);
  });

  test('source_principal is lifted when the source has a principal', () => {
    const { input } = checkRequestToInput({ attributes: { source: { principal: 'spiffe://cluster.local/ns/a/sa/b' } } }, OPTIONS);
    assert.equal(input['source_principal'], 'spiffe://cluster.local/ns/a/sa/b');
  });

  test('parsed_path: cut at "?", percent-decoded before splitting, leading slashes trimmed, trailing kept', () => {
    assert.deepEqual(parsePathAndQuery('/a%20b/c%2Fd/?q').parsedPath, ['a b', 'c', 'd', '']);
    assert.deepEqual(parsePathAndQuery('//x//y').parsedPath, ['x', '', 'y']);
    assert.deepEqual(parsePathAndQuery('').parsedPath, ['']);
    assert.deepEqual(parsePathAndQuery('/p+q#frag').parsedPath, ['p+q#frag']);
  });

  test('parsed_query: lists in order, "+" is a space, a key without "=" is "", empty pairs skipped', () => {
    assert.deepEqual(json(parsePathAndQuery('/?b=2&a=1&b=3&c&&d=x+y%21').parsedQuery), { b: ['2', '3'], a: ['1'], c: [''], d: ['x y!'] });
  });

  test('bad escapes and ";" separators are request errors (upstream: 400)', () => {
    assert.equal(code(() => parsePathAndQuery('/a%zz')), ErrorCodes.EXTAUTHZ_REQUEST_INVALID);
    assert.equal(code(() => parsePathAndQuery('/a?x=%4')), ErrorCodes.EXTAUTHZ_REQUEST_INVALID);
    assert.equal(code(() => parsePathAndQuery('/a?x=1;y=2')), ErrorCodes.EXTAUTHZ_REQUEST_INVALID);
  });
});

describe("Go's net/url and strconv, reproduced", () => {
  test('PathUnescape keeps "+", decodes UTF-8, refuses short escapes', () => {
    assert.equal(pathUnescape('a+b%C3%A9'), 'a+bé');
    assert.throws(() => pathUnescape('%'));
    assert.throws(() => pathUnescape('x%4'));
    assert.equal(pathUnescape('x%41'), 'xA');
  });

  test('ParseQuery fails even when later pairs parse', () => {
    assert.throws(() => parseQuery('a=1&b=%&c=3'), /invalid URL escape/);
    assert.deepEqual(json(parseQuery('=x&y=')), { '': ['x'], y: [''] });
    assert.deepEqual(Object.keys(parseQuery('__proto__=1')), ['__proto__']);
  });

  test('ParseInt(s, 10, 64): sign, digits, int64 range', () => {
    assert.equal(parseInt64('+42'), 42n);
    assert.equal(parseInt64('-1'), -1n);
    assert.throws(() => parseInt64(' 1'));
    assert.throws(() => parseInt64('1e3'));
    assert.throws(() => parseInt64('9223372036854775808'));
  });
});

describe('request bodies (envoyauth/request.go getParsedBody)', () => {
  const none = Buffer.alloc(0);

  test('JSON by content-type substring; raw_body used when body is empty', () => {
    assert.deepEqual(parseBody({ 'content-type': 'application/json; charset=utf-8' }, '{"a":[1,2]}', none), [{ a: [1, 2] }, false]);
    assert.deepEqual(parseBody({ 'content-type': 'application/json' }, '', Buffer.from('{"raw":true}')), [{ raw: true }, false]);
    assert.deepEqual(parseBody({ 'content-type': 'application/json' }, '', none), [null, false]);
  });

  test('truncated when content-length is larger than the body received (then no parsed body)', () => {
    const body = '{"firstname": "foo", "lastname": "bar", "dept": {"it": "eng"}}';
    assert.deepEqual(parseBody({ 'content-type': 'application/json', 'content-length': '100000' }, body, none), [null, true]);
    assert.deepEqual(parseBody({ 'content-type': 'application/json', 'content-length': '62' }, body, none), [JSON.parse(body), false]);
    assert.deepEqual(parseBody({ 'content-type': 'application/json', 'content-length': '-1' }, '{}', none), [{}, false]);
    assert.equal(code(() => parseBody({ 'content-type': 'application/json', 'content-length': 'abc' }, '{}', none)), ErrorCodes.EXTAUTHZ_REQUEST_INVALID);
  });

  test('x-envoy-auth-partial-body: true means truncated, whatever the content type', () => {
    assert.deepEqual(parseBody({ 'x-envoy-auth-partial-body': 'true', 'content-type': 'text/plain' }, 'x', none), [null, true]);
  });

  test('form bodies become lists of values', () => {
    assert.deepEqual(json(parseBody({ 'content-type': 'application/x-www-form-urlencoded' }, 'item=tea&item=cake+pop&q=3', none)), [{ item: ['tea', 'cake pop'], q: ['3'] }, false]);
    assert.equal(code(() => parseBody({ 'content-type': 'application/x-www-form-urlencoded' }, 'a=%zz', none)), ErrorCodes.EXTAUTHZ_REQUEST_INVALID);
  });

  test('multipart/form-data: text and JSON parts by name; no boundary, no parsed body', () => {
    const body = [
      'preamble', '--XyZ', 'Content-Disposition: form-data; name="title"', '', 'hello', '--XyZ',
      'Content-Disposition: form-data; name="meta"', 'Content-Type: application/json', '', '{"n":1}', '--XyZ',
      'Content-Disposition: attachment; name="skipped"', '', 'x', '--XyZ--', '',
    ].join('\r\n');
    assert.deepEqual(json(parseBody({ 'content-type': 'multipart/form-data; boundary="XyZ"' }, body, none)), [{ title: ['hello'], meta: [{ n: 1 }] }, false]);
    assert.deepEqual(parseBody({ 'content-type': 'multipart/form-data' }, body, none), [null, false]);
    assert.equal(code(() => parseBody({ 'content-type': 'multipart/form-data; boundary=nope' }, body, none)), ErrorCodes.EXTAUTHZ_REQUEST_INVALID);
    assert.equal(parseMediaType('Multipart/Form-Data; Boundary=a').params['boundary'], 'a');
  });

  test('other content types, grpc (no descriptors) and no content type: parsed_body null', () => {
    assert.deepEqual(parseBody({ 'content-type': 'text/plain' }, 'x', none), [null, false]);
    assert.deepEqual(parseBody({ 'content-type': 'application/grpc' }, '', Buffer.from([0, 0, 0, 0, 1, 8])), [null, false]);
    assert.deepEqual(parseBody({}, '{"a":1}', none), [null, false]);
  });

  test('invalid JSON is a request error unless body parsing is skipped', () => {
    assert.equal(code(() => checkRequestToInput(http({ headers: { 'content-type': 'application/json' }, body: '["foo" : 42}' }), OPTIONS)), ErrorCodes.EXTAUTHZ_REQUEST_INVALID);
  });

  test('a body over maxRequestBodyBytes is cut (on a character boundary) and marked truncated', () => {
    const { input, bodyCut } = checkRequestToInput(
      http({ headers: { 'content-type': 'application/json' }, body: `{"x":"${'é'.repeat(20)}"}` }),
      { ...OPTIONS, maxRequestBodyBytes: 12 },
    );
    assert.equal(bodyCut, true);
    assert.equal(input['truncated_body'], true);
    assert.equal(input['parsed_body'], null);
    const body = ((input['attributes'] as { request: { http: { body: string } } }).request.http.body);
    assert.ok(Buffer.byteLength(body) <= 12);
    assert.equal(body, '{"x":"ééé');
  });
});

describe('decision -> CheckResponse (envoyauth/response.go, internal/internal.go)', () => {
  const options = { decisionId: 'd-1' };

  test('booleans: OK / PERMISSION_DENIED, no http_response, decision_id in dynamic metadata', () => {
    assert.deepEqual(decisionToCheckResponse(true, options).response, { status: { code: 0 }, dynamicMetadata: { decision_id: 'd-1' } });
    assert.deepEqual(decisionToCheckResponse(false, options).response, { status: { code: 7 }, dynamicMetadata: { decision_id: 'd-1' } });
  });

  test('object allow: headers (array values -> one option each), removals, query changes, metadata', () => {
    const { response } = decisionToCheckResponse({
      allowed: true,
      headers: [{ 'x-a': 'A' }, { 'x-b': ['1', '2'] }],
      response_headers_to_add: { 'x-c': 'C' },
      request_headers_to_remove: ['authorization'],
      query_parameters_to_set: { foo: 'value1', bar: ['value2', 'value3'] },
      query_parameters_to_remove: ['debug'],
      dynamic_metadata: { decision_id: 'policy-value', user: { id: 1 } },
      http_status: 'ignored on allow',
      body: 42,
    }, options);
    assert.deepEqual(response, {
      status: { code: 0 },
      okResponse: {
        headers: [{ header: { key: 'x-a', value: 'A' } }, { header: { key: 'x-b', value: '1' } }, { header: { key: 'x-b', value: '2' } }],
        headersToRemove: ['authorization'],
        responseHeadersToAdd: [{ header: { key: 'x-c', value: 'C' } }],
        queryParametersToSet: [{ key: 'foo', value: 'value1' }, { key: 'bar', value: 'value2' }, { key: 'bar', value: 'value3' }],
        queryParametersToRemove: ['debug'],
      },
      dynamicMetadata: { decision_id: 'd-1', user: { id: 1 } },
    });
  });

  test('object deny: status (default 403), headers, body; allow-only fields are not looked at', () => {
    assert.deepEqual(decisionToCheckResponse({ allowed: false, request_headers_to_remove: 'not a list' }, options).response, {
      status: { code: 7 },
      deniedResponse: { status: { code: 403 }, headers: [], body: '' },
      dynamicMetadata: { decision_id: 'd-1' },
    });
    const { response } = decisionToCheckResponse({ allowed: false, http_status: 401, body: 'no', headers: { 'www-authenticate': 'Bearer' } }, options);
    assert.deepEqual(response.deniedResponse, { status: { code: 401 }, headers: [{ header: { key: 'www-authenticate', value: 'Bearer' } }], body: 'no' });
  });

  test('errors: undefined, missing or non-boolean allowed, other types, wrong field types, unknown statuses', () => {
    assert.equal(code(() => decisionToCheckResponse(undefined, options)), ErrorCodes.EXTAUTHZ_DECISION_UNDEFINED);
    for (const bad of [
      {}, { allowed: 'true' }, 'allow', 1, [true], null,
      { allowed: true, headers: 'x' }, { allowed: true, headers: { a: 1 } }, { allowed: true, headers: { a: [1] } },
      { allowed: true, request_headers_to_remove: 'authorization' }, { allowed: true, request_headers_to_remove: [1] },
      { allowed: true, query_parameters_to_set: ['a'] }, { allowed: true, query_parameters_to_set: { a: 1 } },
      { allowed: true, dynamic_metadata: [] }, { allowed: false, body: 1 }, { allowed: false, http_status: '401' },
      { allowed: false, http_status: 401.5 }, { allowed: false, http_status: 418 }, { allowed: false, http_status: 0 },
    ]) {
      assert.equal(code(() => decisionToCheckResponse(bad, options)), ErrorCodes.EXTAUTHZ_DECISION_INVALID, JSON.stringify(bad));
    }
  });

  test('failure response: PERMISSION_DENIED, the configured status, the code in status.message and metadata', () => {
    assert.deepEqual(failureCheckResponse({ decisionId: 'd', httpStatus: 503, code: 'ERR_EVAL_TIMEOUT', message: 'slow' }), {
      status: { code: 7, message: 'ERR_EVAL_TIMEOUT: slow' },
      deniedResponse: { status: { code: 503 }, headers: [], body: '' },
      dynamicMetadata: { decision_id: 'd', error_code: 'ERR_EVAL_TIMEOUT' },
    });
  });
});

describe('tenant resolution (never guessed)', () => {
  const destination = (map: Record<string, string>): ExtAuthzTenantSource =>
    parseConfig({ extAuthz: { tenantFrom: { destination: map } } }).extAuthz?.tenantFrom as ExtAuthzTenantSource;
  const request: CheckRequestJson = {
    attributes: {
      destination: { address: { socketAddress: { address: '10.0.0.2', portValue: 8080 } } },
      request: { http: { host: 'Shop.Example', headers: { 'x-pavilion-tenant': 'bank' } } },
      contextExtensions: { tenant: 'hospital' },
    },
  };

  test('header, context extension, destination address then host, fixed', () => {
    assert.equal(resolveTenant({ kind: 'header', header: 'x-pavilion-tenant' }, request), 'bank');
    assert.equal(resolveTenant({ kind: 'contextExtension', key: 'tenant' }, request), 'hospital');
    assert.equal(resolveTenant(destination({ '10.0.0.2:8080': 'agency', 'Shop.Example': 'bank' }), request), 'agency');
    assert.equal(resolveTenant(destination({ 'shop.example': 'bank' }), request), 'bank');
    assert.equal(resolveTenant({ kind: 'fixed', tenant: 'bank' }, {}), 'bank');
  });

  test('absent in the configured place: ERR_EXTAUTHZ_TENANT_MISSING; prototype keys never match', () => {
    assert.equal(code(() => resolveTenant({ kind: 'header', header: 'x-other' }, request)), ErrorCodes.EXTAUTHZ_TENANT_MISSING);
    assert.equal(code(() => resolveTenant({ kind: 'contextExtension', key: 'constructor' }, request)), ErrorCodes.EXTAUTHZ_TENANT_MISSING);
    assert.equal(code(() => resolveTenant(destination({ 'other:1': 'bank' }), request)), ErrorCodes.EXTAUTHZ_TENANT_MISSING);
    assert.equal(code(() => resolveTenant({ kind: 'header', header: 'x-pavilion-tenant' }, {})), ErrorCodes.EXTAUTHZ_TENANT_MISSING);
  });

  test('destination: an address key is matched against the destination only, never against the Host the client sends', () => {
    const map = { '10.0.0.9:8080': 'agency', '[FD00::1]:9000': 'hospital', 'shop.example:8443': 'bank' };
    const sent = (host: string, socket?: { address: string; portValue: number }): CheckRequestJson => ({
      attributes: { ...(socket === undefined ? {} : { destination: { address: { socketAddress: socket } } }), request: { http: { host } } },
    });
    assert.equal(code(() => resolveTenant(destination(map), sent('10.0.0.9:8080', { address: '10.0.0.2', portValue: 8080 }))), ErrorCodes.EXTAUTHZ_TENANT_MISSING, 'another listener, the address as Host');
    assert.equal(code(() => resolveTenant(destination(map), sent('10.0.0.9:8080'))), ErrorCodes.EXTAUTHZ_TENANT_MISSING, 'HTTP mode: no destination, the address as Host');
    assert.equal(code(() => resolveTenant(destination(map), sent('[fd00::1]:9000'))), ErrorCodes.EXTAUTHZ_TENANT_MISSING, 'an IPv6 address as Host');
    assert.equal(resolveTenant(destination(map), sent('x', { address: '10.0.0.9', portValue: 8080 })), 'agency');
    assert.equal(resolveTenant(destination(map), sent('x', { address: 'fd00::1', portValue: 9000 })), 'hospital', 'IPv6 as Envoy reads it: unbracketed');
    assert.equal(resolveTenant(destination(map), sent('Shop.Example:8443')), 'bank', 'a host key with a port');
    assert.equal(resolveTenant(destination({ '10.0.0.9:HTTP': 'agency' }), sent('x', { address: '10.0.0.9', namedPort: 'http' } as never)), 'agency', 'a named port, in any case');
    // an address without its port could only ever be matched by a Host: refused; so are an
    // IPv6 address unbracketed with a port (fd00::1:8080 is itself an IPv6 address; :15001 is
    // not) and an IPv4 address with a bad port - never a host key
    for (const key of ['10.0.0.9', 'fd00::1', '[fd00::1]', '[shop.example]:80', 'fd00::1:15001', 'fd00::1:8080', '10.0.0.9:', '10.0.0.9:80:80', '[fd00::1]:', 'fd00::http', '010.0.0.9:8080', '10.0.0.9:08080', '10.0.0.9:99999']) {
      assert.equal(code(() => destination({ [key]: 'bank' })), ErrorCodes.CONFIG_INVALID, key);
    }
  });

  test('config: tenantFrom is required and exactly one kind; failureStatus and pathPrefix are checked', () => {
    const invalid = (extAuthz: unknown): string | undefined => code(() => parseConfig({ extAuthz }));
    assert.equal(invalid({}), ErrorCodes.CONFIG_INVALID);
    assert.equal(invalid({ tenantFrom: { header: 'x', fixed: 'bank' } }), ErrorCodes.CONFIG_INVALID);
    assert.equal(invalid({ tenantFrom: { fixed: 'Bank!' } }), ErrorCodes.CONFIG_INVALID);
    assert.equal(invalid({ tenantFrom: { fixed: 'bank' }, failureStatus: 200 }), ErrorCodes.CONFIG_INVALID);
    assert.equal(invalid({ tenantFrom: { fixed: 'bank' }, http: { pathPrefix: '/v1/ext' } }), ErrorCodes.CONFIG_INVALID);
    assert.equal(invalid({ tenantFrom: { fixed: 'bank' }, http: { pathPrefix: '/v0' } }), ErrorCodes.CONFIG_INVALID, 'the v0 Data API is the API\'s own route too');
    assert.equal(invalid({ tenantFrom: { fixed: 'bank' }, tenants: { bank: { pth: 'x' } } }), ErrorCodes.CONFIG_INVALID);
    const config = parseConfig({ extAuthz: { tenantFrom: { header: 'X-Tenant' }, tenants: { bank: { dryRun: true } } } }).extAuthz;
    assert.deepEqual(config?.tenantFrom, { kind: 'header', header: 'x-tenant' });
    assert.deepEqual(config?.tenants['bank'], { path: 'bank/envoy/authz/allow', dryRun: true, skipRequestBodyParse: false, maxRequestBodyBytes: 1048576, failureStatus: 403, timeoutMs: 200, receipts: 'on-request' });
    assert.deepEqual(config?.grpc, { enabled: true, host: '127.0.0.1', port: 9191, maxReceiveMessageBytes: 16777216, maxConnections: 4096, handshakeTimeoutMs: 10000 });
    assert.equal(parseConfig({}).extAuthz, undefined);
  });

  test("config: receipts is 'on-request' (default) or 'always', per tenant or for all", () => {
    const config = parseConfig({ decisionLog: { sink: 'audit' }, extAuthz: { tenantFrom: { fixed: 'bank' }, receipts: 'always', tenants: { bank: { receipts: 'on-request' }, hospital: {} } } }).extAuthz;
    assert.equal(config?.defaults.receipts, 'always');
    assert.equal(config?.tenants['bank']?.receipts, 'on-request');
    assert.equal(config?.tenants['hospital']?.receipts, 'always', 'a tenant entry inherits the section default');
    for (const receipts of ['yes', true, 'never']) {
      assert.equal(code(() => parseConfig({ decisionLog: { sink: 'audit' }, extAuthz: { tenantFrom: { fixed: 'bank' }, receipts } })), ErrorCodes.CONFIG_INVALID, String(receipts));
    }
    // receipts come from the audit log: 'always' with another sink is refused, 'on-request' is not
    assert.equal(code(() => parseConfig({ decisionLog: { sink: 'file' }, extAuthz: { tenantFrom: { fixed: 'bank' }, tenants: { bank: { receipts: 'always' } } } })), ErrorCodes.CONFIG_INVALID);
    assert.equal(parseConfig({ extAuthz: { tenantFrom: { fixed: 'bank' } } }).extAuthz?.defaults.receipts, 'on-request');
  });
});

describe('wire codec (sidecar/proto, Envoy field numbers)', () => {
  const codec = new CheckCodec();

  test('a map entry sent without its value decodes to the empty message, as Go decodes it (not a malformed request)', () => {
    // CheckRequest.attributes (1) -> AttributeContext.metadata_context (11) -> Metadata.filter_metadata (1): an entry with key "x" only
    const decoded = codec.decodeRequest(Buffer.from('0a075a050a030a0178', 'hex'));
    assert.ok(decoded.ok, decoded.ok ? '' : decoded.error.message);
    assert.deepEqual(decoded.request.attributes?.metadataContext, { filterMetadata: { x: {} } });
  });

  test('field numbers on the wire: attributes=1, request=4, http=2, path=4, size=9, raw_body=12, context_extensions=10', () => {
    const bytes = codec.encodeRequest({ attributes: { request: { http: { path: '/p', size: 5, rawBody: Buffer.from('x') } }, contextExtensions: { k: 'v' } } });
    // CheckRequest.attributes (1, LEN) -> AttributeContext.request (4, LEN) -> Request.http (2, LEN) -> path (4) ...
    assert.equal(bytes[0], (1 << 3) | 2);
    const hex = bytes.toString('hex');
    assert.ok(hex.includes(`22022f70`), 'path = field 4, "/p"');
    assert.ok(hex.includes('4805'), 'size = field 9, varint 5');
    assert.ok(hex.includes('620178'), 'raw_body = field 12, "x"');
    assert.ok(hex.includes('52'), 'context_extensions = field 10');
  });

  test('protomap rendering: JSON names, populated fields only, numbers for int64/enums, base64 bytes, Structs as JSON', () => {
    const decoded = codec.decodeRequest(codec.encodeRequest({
      attributes: {
        source: { address: { socketAddress: { address: '10.0.0.1', portValue: 0, protocol: 1 } } },
        request: { time: { seconds: 1700000000 }, http: { method: 'GET', size: 9007199254740991, rawBody: Buffer.from('hi'), body: '' } },
        metadataContext: {
          filterMetadata: { f: { fields: { n: { numberValue: 1.5 }, l: { listValue: { values: [{ boolValue: true }, { nullValue: 0 }] } } } } },
          typedFilterMetadata: { t: { type_url: 'type.googleapis.com/x', value: Buffer.from([1, 2]) } },
        },
        tlsSession: { sni: 'shop.example' },
      },
    }));
    assert.ok(decoded.ok);
    assert.deepEqual(json(decoded.request), {
      attributes: {
        source: { address: { socketAddress: { protocol: 1, address: '10.0.0.1', portValue: 0 } } },
        request: { time: { seconds: 1700000000 }, http: { method: 'GET', size: 9007199254740991, rawBody: 'aGk=' } },
        metadataContext: { filterMetadata: { f: { n: 1.5, l: [true, null] } }, typedFilterMetadata: { t: { typeUrl: 'type.googleapis.com/x', value: 'AQI=' } } },
        tlsSession: { sni: 'shop.example' },
      },
    });
  });

  test('malformed bytes decode to ERR_EXTAUTHZ_REQUEST_MALFORMED instead of throwing', () => {
    for (const bytes of [Buffer.from([0xff, 0xff, 0xff]), Buffer.from([0x0a, 0x05, 0x01]), Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f])]) {
      const decoded = codec.decodeRequest(bytes);
      assert.equal(decoded.ok, false);
      if (!decoded.ok) assert.equal(decoded.error.code, ErrorCodes.EXTAUTHZ_REQUEST_MALFORMED);
    }
  });

  test('responses round-trip: oneof, Struct dynamic metadata, header options', () => {
    const { response } = decisionToCheckResponse({ allowed: true, headers: { a: ['1', '2'] }, dynamic_metadata: { n: 2, o: { l: [1, 'x', null, false] } } }, { decisionId: 'd' });
    const back = codec.decodeResponse(codec.encodeResponse(response));
    assert.deepEqual(json(back), {
      status: {},
      okResponse: { headers: [{ header: { key: 'a', value: '1' } }, { header: { key: 'a', value: '2' } }] },
      dynamicMetadata: { n: 2, o: { l: [1, 'x', null, false] }, decision_id: 'd' },
    });
  });
});
