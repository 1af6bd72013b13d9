/**
 * Parity with opa-envoy-plugin where a review against its source (envoyauth/request.go,
 * internal/internal.go, internal/errors.go) and Go's standard library found Pavilion
 * different. Pure parts only; the server-level halves (the 400's body over gRPC and HTTP, dry
 * run, a raw message with invalid UTF-8) are in extauthz-bad-input.
 *
 * Expected values were produced by Go itself (Go 1.26: mime.ParseMediaType, mime/multipart,
 * net/url, strconv, unicode/utf8) and by protobuf-go's documented rule for proto3 strings.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import protobuf from 'protobufjs';
import {
  CHECK_PROTO,
  CheckCodec,
  ENVOY_HTTP_STATUS_CODES,
  PROTO_ROOT,
  checkRequestToInput,
  decisionToCheckResponse,
  failureCheckResponse,
  parseBody,
  parsePathAndQuery,
} from '../sidecar/src/extauthz/index.ts';
import { goQuote, parseQuery, pathUnescape } from '../sidecar/src/extauthz/go-url.ts';
import { formName, parseMediaType } from '../sidecar/src/extauthz/multipart.ts';
import { ErrorCodes, PavilionError } from '../sidecar/src/lib/errors.ts';

const json = (value: unknown): unknown => JSON.parse(JSON.stringify(value));
const OPTIONS = { skipRequestBodyParse: false, maxRequestBodyBytes: 1024 * 1024 };
const none = Buffer.alloc(0);

/** The PavilionError `fn` throws (or a failure). */
function thrown(fn: () => unknown): PavilionError {
  try {
    fn();
  } catch (error) {
    if (error instanceof PavilionError) return error;
    assert.fail(`not a PavilionError: ${String(error)}`);
  }
  assert.fail('did not throw');
}

describe('proto3 string fields must be UTF-8 (grpc-go refuses the message)', () => {
  const codec = new CheckCodec();
  const MARK = 'ZZZZ';

  /** Encode `request` (with MARK somewhere in a string) and put `bytes` in MARK's place. */
  function withBytes(request: Record<string, unknown>, bytes: number[]): Buffer {
    const encoded = codec.encodeRequest(request);
    const at = encoded.indexOf(Buffer.from(MARK));
    assert.ok(at >= 0, 'marker not found');
    assert.equal(bytes.length, MARK.length, 'same length keeps the message well-formed');
    const out = Buffer.from(encoded);
    Buffer.from(bytes).copy(out, at);
    return out;
  }

  const http = (fields: Record<string, unknown>): Record<string, unknown> => ({ attributes: { request: { http: fields } } });
  // each a string field protobuf-go checks: a plain string, a map key, a map value, a Struct key and value
  const places: Array<[string, Record<string, unknown>]> = [
    ['path', http({ path: `/a${MARK}` })],
    ['header value', http({ headers: { 'x-a': MARK } })],
    ['header name (map key)', http({ headers: { [MARK]: 'v' } })],
    ['context extension', { attributes: { contextExtensions: { tenant: MARK } } }],
    ['Struct string value', { attributes: { metadataContext: { filterMetadata: { f: { fields: { k: { stringValue: MARK } } } } } } }],
    ['Struct key', { attributes: { metadataContext: { filterMetadata: { f: { fields: { [MARK]: { boolValue: true } } } } } } }],
    ['source principal', { attributes: { source: { principal: MARK } } }],
  ];
  // not UTF-8 (Go's utf8.Valid is false): a lone continuation byte, a cut sequence, an
  // overlong '/', a UTF-16 surrogate, a byte that never appears in UTF-8
  const invalid: number[][] = [
    [0x41, 0xff, 0x41, 0x41],
    [0x41, 0x41, 0x41, 0xc3],
    [0x41, 0xc0, 0xaf, 0x41],
    [0x41, 0xed, 0xa0, 0x80],
    [0xf5, 0x80, 0x80, 0x80],
  ];

  test('invalid UTF-8 in any string field: ERR_EXTAUTHZ_REQUEST_MALFORMED, with grpc-go\'s text', () => {
    for (const [place, request] of places) {
      for (const bytes of invalid) {
        const decoded = codec.decodeRequest(withBytes(request, bytes));
        assert.equal(decoded.ok, false, `${place} ${Buffer.from(bytes).toString('hex')}`);
        if (!decoded.ok) {
          assert.equal(decoded.error.code, ErrorCodes.EXTAUTHZ_REQUEST_MALFORMED);
          assert.match(decoded.error.message, /string field contains invalid UTF-8/);
        }
      }
    }
  });

  test('valid UTF-8 decodes as before, including a U+FFFD sent as such and 4-byte characters', () => {
    const valid: Array<[number[], string]> = [
      [[0x41, 0xef, 0xbf, 0xbd], 'A\uFFFD'],
      [[0xf0, 0x9f, 0x98, 0x80], '\u{1F600}'],
      [[0x41, 0xc3, 0xa9, 0x41], 'AéA'],
    ];
    for (const [bytes, text] of valid) {
      const decoded = codec.decodeRequest(withBytes(http({ path: MARK }), bytes));
      assert.ok(decoded.ok);
      if (decoded.ok) assert.equal(decoded.request.attributes?.request?.http?.path, text);
    }
  });

  test('bytes fields stay arbitrary: raw_body with invalid UTF-8 decodes', () => {
    const decoded = codec.decodeRequest(codec.encodeRequest(http({ rawBody: Buffer.from([0x7b, 0xff, 0xfe, 0xed, 0xa0, 0x80]) })));
    assert.ok(decoded.ok);
    if (decoded.ok) assert.equal(decoded.request.attributes?.request?.http?.rawBody, Buffer.from([0x7b, 0xff, 0xfe, 0xed, 0xa0, 0x80]).toString('base64'));
  });

  test('a string whose length runs past the message is malformed (protobufjs alone cut it short)', () => {
    // attributes(1) { request(4) { http(2) { path(4): length 16, one byte present } } }
    const decoded = codec.decodeRequest(Buffer.from('0a07220512032210' + '61', 'hex'));
    assert.equal(decoded.ok, false);
    if (!decoded.ok) assert.equal(decoded.error.code, ErrorCodes.EXTAUTHZ_REQUEST_MALFORMED);
  });
});

describe('truncated_body compares content-length with raw bytes (Go len())', () => {
  const rawJson = Buffer.from('7b2261223a22ff227d', 'hex'); // {"a":"<0xff>"}: 9 bytes, 11 once decoded

  const request = (contentLength: string): Parameters<typeof checkRequestToInput>[0] => ({
    attributes: { request: { http: { headers: { 'content-type': 'application/json', 'content-length': contentLength }, rawBody: rawJson.toString('base64') } } },
  });

  test('raw_body of 9 bytes, content-length 10: parsed_body null, truncated_body true', () => {
    const { input } = checkRequestToInput(request('10'), OPTIONS);
    assert.equal(input['parsed_body'], null);
    assert.equal(input['truncated_body'], true);
    assert.deepEqual(parseBody({ 'content-type': 'application/json', 'content-length': '10' }, '', rawJson), [null, true]);
  });

  test('content-length 9 (all of it): parsed, the bad byte a U+FFFD as Go\'s decoder makes it', () => {
    const { input } = checkRequestToInput(request('9'), OPTIONS);
    assert.deepEqual(input['parsed_body'], { a: '\uFFFD' });
    assert.equal(input['truncated_body'], false);
  });

  test('form and multipart raw bodies count bytes too; body (a string) counts its UTF-8 bytes', () => {
    assert.deepEqual(parseBody({ 'content-type': 'application/x-www-form-urlencoded', 'content-length': '4' }, '', Buffer.from([0x61, 0x3d, 0xff])), [null, true]);
    assert.deepEqual(parseBody({ 'content-type': 'multipart/form-data; boundary=b', 'content-length': '4' }, '', Buffer.from([0x2d, 0x2d, 0xff])), [null, true]);
    assert.deepEqual(parseBody({ 'content-type': 'application/json', 'content-length': '8' }, '{"a":"é"}', none), [{ a: 'é' }, false]);
    assert.deepEqual(parseBody({ 'content-type': 'application/json', 'content-length': '11' }, '{"a":"é"}', none), [null, true]);
  });
});

describe("request parse errors carry upstream's error text (the 400 body is request_parse_error: <it>)", () => {
  test('path and query: url.PathUnescape / url.ParseQuery errors, unwrapped', () => {
    assert.equal(thrown(() => parsePathAndQuery('/a%zz')).message, 'invalid URL escape "%zz"');
    assert.equal(thrown(() => parsePathAndQuery('/a?x=%4')).message, 'invalid URL escape "%4"');
    assert.equal(thrown(() => parsePathAndQuery('/a?x=1;y=2')).message, 'invalid semicolon separator in query');
    assert.equal(thrown(() => checkRequestToInput({ attributes: { request: { http: { path: '/a%zz' } } } }, OPTIONS)).code, ErrorCodes.EXTAUTHZ_REQUEST_INVALID);
  });

  test("a bad escape is quoted as Go's strconv.Quote quotes it, and ParseQuery's error is the one Go returns (expected texts printed by Go 1.26's net/url)", () => {
    const escapes: Array<[string, string]> = [
      ['/a%\u00e9', '"%\u00e9"'], // printable: as it is
      ['/a%\u0001', '"%\\x01"'],
      ['/a%"\\', '"%\\"\\\\"'],
      ['/a%\n\u007f', '"%\\n\\x7f"'],
      ['/a%\u00a0', '"%\\u00a0"'], // a space other than ASCII's is not printable to Go
      ['/a%\u0300x', '"%\u0300"'], // a combining mark is
      ['/a%\u2028', '"%\\xe2\\x80"'], // three bytes cut a rune: its bytes
    ];
    for (const [path, quoted] of escapes) assert.equal(thrown(() => pathUnescape(path)).message, `invalid URL escape ${quoted}`, path);
    assert.equal(goQuote(Uint8Array.from([0x25, 0xc3])), '"%\\xc3"', 'a byte that is not UTF-8');
    assert.equal(goQuote(Uint8Array.from([0x25, 0xf0, 0x9f])), '"%\\xf0\\x9f"');
    // ParseQuery: a semicolon error replaces any before it; escape errors keep the first
    assert.equal(thrown(() => parseQuery('a=%zz&b;c')).message, 'invalid semicolon separator in query');
    assert.equal(thrown(() => parseQuery('b;c&a=%zz')).message, 'invalid semicolon separator in query');
    assert.equal(thrown(() => parseQuery('a=%zz&b=%yy')).message, 'invalid URL escape "%zz"');
  });

  test('bodies: form escapes, content-length, the multipart Content-Type, as Go words them', () => {
    assert.equal(thrown(() => parseBody({ 'content-type': 'application/x-www-form-urlencoded' }, 'a=%zz', none)).message, 'invalid URL escape "%zz"');
    assert.equal(thrown(() => parseBody({ 'content-type': 'application/json', 'content-length': 'abc' }, '{}', none)).message, 'strconv.ParseInt: parsing "abc": invalid syntax');
    assert.equal(thrown(() => parseBody({ 'content-type': 'multipart/form-data; boundary=a; boundary=b' }, 'x', none)).message, 'mime: duplicate parameter name');
  });

  test('JSON syntax errors keep V8\'s wording, without a prefix of ours', () => {
    const error = thrown(() => parseBody({ 'content-type': 'application/json' }, '["foo" : 42}', none));
    assert.equal(error.code, ErrorCodes.EXTAUTHZ_REQUEST_INVALID);
    assert.doesNotMatch(error.message, /^error parsing/);
  });

  test('failure response: statusMessage replaces "<code>: <message>"; the code stays in dynamic metadata', () => {
    const text = 'request_parse_error: invalid URL escape "%zz"';
    assert.deepEqual(failureCheckResponse({ decisionId: 'd', httpStatus: 400, code: ErrorCodes.EXTAUTHZ_REQUEST_INVALID, message: 'invalid URL escape "%zz"', body: text, statusMessage: text }), {
      status: { code: 7, message: text },
      deniedResponse: { status: { code: 400 }, headers: [], body: text },
      dynamicMetadata: { decision_id: 'd', error_code: 'ERR_EXTAUTHZ_REQUEST_INVALID' },
    });
  });
});

describe("multipart/form-data as Go's mime.ParseMediaType and mime/multipart read it", () => {
  const CT = 'multipart/form-data; boundary=b';
  /** A body whose first part has `disposition` and whose second is a well-formed "ok" part. */
  const body = (disposition: string): string =>
    `--b\r\nContent-Disposition: ${disposition}\r\n\r\nv1\r\n--b\r\nContent-Disposition: form-data; name="ok"\r\n\r\nv2\r\n--b--\r\n`;
  const parse = (disposition: string, contentType = CT): unknown => json(parseBody({ 'content-type': contentType }, body(disposition), none)[0]);

  test('(a) a part whose Content-Disposition Go cannot parse is skipped, the request is not refused', () => {
    for (const disposition of ['form-data; name', 'form-data; name="unterminated', 'form-data; =x', '', 'form-data; name=a b', 'form-data; name="x"; name="y"']) {
      assert.deepEqual(parse(disposition), { ok: ['v2'] }, disposition);
    }
  });

  test('(b) a repeated parameter: accepted with equal values, an error with different ones', () => {
    assert.deepEqual(parse('form-data; name="x"; name="x"'), { x: ['v1'], ok: ['v2'] });
    assert.deepEqual(parse('form-data; name=x', 'multipart/form-data; boundary=b; boundary=b'), { x: ['v1'], ok: ['v2'] });
    assert.equal(thrown(() => parse('form-data; name=x', 'multipart/form-data; boundary=b; boundary=c')).message, 'mime: duplicate parameter name');
    assert.equal(thrown(() => parseMediaType('text/plain; a=1; A=2')).message, 'mime: duplicate parameter name');
  });

  test('(c) white space around "=" (and tabs) is allowed', () => {
    assert.deepEqual(parse('form-data; name = "sp"', 'multipart/form-data; boundary = b'), { sp: ['v1'], ok: ['v2'] });
    assert.deepEqual(json(parseMediaType('text/plain; a=\t1').params), { a: '1' });
  });

  test('(d) content after the subtype is a 400 (mime: unexpected content after media subtype)', () => {
    const error = thrown(() => parse('form-data; name=x', 'multipart/form-data, boundary=b'));
    assert.equal(error.code, ErrorCodes.EXTAUTHZ_REQUEST_INVALID);
    assert.equal(error.message, 'mime: unexpected content after media subtype');
    assert.equal(thrown(() => parseMediaType('x/')).message, 'mime: expected token after slash');
    assert.equal(thrown(() => parseMediaType('/x')).message, 'mime: no media type');
    assert.equal(thrown(() => parseMediaType('a b')).message, 'mime: expected slash after first token');
    assert.equal(parseMediaType('form-data').type, 'form-data');
  });

  test('(e) a backslash escapes only a tspecial in a quoted value', () => {
    assert.deepEqual(parse('form-data; name="a\\b"'), { 'a\\b': ['v1'], ok: ['v2'] });
    assert.deepEqual(parse('form-data; name="a\\"b"'), { 'a"b': ['v1'], ok: ['v2'] });
    assert.deepEqual(parse('form-data; name="a\\\\b"'), { 'a\\b': ['v1'], ok: ['v2'] });
    assert.equal(parseMediaType('form-data; filename="C:\\dev\\go\\foo.txt"').params['filename'], 'C:\\dev\\go\\foo.txt');
  });

  test('(f) RFC 2231: name*=charset\'lang\'value and continuations are decoded (UTF-8, US-ASCII)', () => {
    assert.deepEqual(parse("form-data; name*=UTF-8''caf%C3%A9"), { café: ['v1'], ok: ['v2'] });
    assert.deepEqual(parse("form-data; name*=utf-8'en'caf%C3%A9"), { café: ['v1'], ok: ['v2'] });
    assert.deepEqual(parse("form-data; name*=us-ascii''abc"), { abc: ['v1'], ok: ['v2'] });
    assert.deepEqual(parse('form-data; name*0=ab; name*1=cd'), { abcd: ['v1'], ok: ['v2'] });
    assert.deepEqual(parse("form-data; name*0*=UTF-8''caf%C3; name*1*=%A9x"), { caféx: ['v1'], ok: ['v2'] });
    assert.deepEqual(parse("form-data; name=\"plain\"; name*=UTF-8''star"), { star: ['v1'], ok: ['v2'] });
    // unsupported charset, bad escape, no delimiters: no name, the part is skipped
    for (const disposition of ["form-data; name*=iso-8859-1''caf%E9", "form-data; name*=UTF-8''bad%zz", 'form-data; name*=nodelims']) {
      assert.deepEqual(parse(disposition), { ok: ['v2'] }, disposition);
    }
    assert.equal(parseMediaType("attachment; filename*=UTF-8''%e2%82%ac%20rates").params['filename'], '€ rates');
  });

  test('tokens include "{" and "}"; trailing ";" is allowed, ";;" is not', () => {
    assert.equal(parseMediaType('multipart/form-data; boundary={x}').params['boundary'], '{x}');
    assert.deepEqual(json(parseMediaType('multipart/form-data;boundary=b;').params), { boundary: 'b' });
    assert.equal(thrown(() => parseMediaType('multipart/form-data; boundary=b;;')).message, 'mime: invalid media parameter');
  });

  test('formName: the name of a form-data disposition, "" otherwise', () => {
    assert.equal(formName('form-data; name="n"'), 'n');
    assert.equal(formName('Form-Data ; NAME=n'), 'n');
    assert.equal(formName('attachment; name="n"'), '');
    assert.equal(formName(undefined), '');
    assert.equal(formName('form-data; name'), '');
  });
});

describe("envoy.type.v3.StatusCode is Envoy's list (api/envoy/type/v3/http_status.proto)", () => {
  // sidecar/proto as protoc's -I would see it (google/protobuf/* from protobufjs' own copies)
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => (target.startsWith('google/protobuf/') ? target : join(PROTO_ROOT, target));
  root.loadSync(CHECK_PROTO, { keepCase: false });
  root.resolveAll();
  const statusCode = root.lookupEnum('envoy.type.v3.StatusCode');

  test('every code Envoy declares, InsufficientStorage = 507 included; the same set as the decision contract accepts', () => {
    assert.equal(statusCode.values['InsufficientStorage'], 507);
    assert.deepEqual(new Set(Object.values(statusCode.values).filter((v) => v !== 0)), ENVOY_HTTP_STATUS_CODES);
  });

  test('a 507 denial reads back by name, as a client using the protos sees it', () => {
    const codec = new CheckCodec();
    const { response } = decisionToCheckResponse({ allowed: false, http_status: 507 }, { decisionId: 'd' });
    const type = root.lookupType('envoy.service.auth.v3.CheckResponse');
    const back = type.toObject(type.decode(codec.encodeResponse(response)), { enums: String });
    assert.equal((back['deniedResponse'] as { status: { code: unknown } }).status.code, 'InsufficientStorage');
  });
});
