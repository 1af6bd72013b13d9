/**
 * The `multipart/form-data` BODY as opa-envoy-plugin reads it with Go's mime/multipart Reader
 * (envoyauth/request.go: NextPart until io.EOF, skip a part whose FormName() is "", io.ReadAll
 * of the others, util.UnmarshalJSON of an `application/json` part): boundaries, CRLF and LF
 * line breaks, preamble and epilogue, a missing final boundary, parts without headers, header
 * folding and limits, quoted-printable parts, and, where Go fails, Go's error text (upstream
 * answers with a 400 whose body is `request_parse_error: <text>`).
 *
 * How the expected outcomes were obtained: every body below was given, as bytes and with its
 * boundary, to a small Go 1.26.8 program that does what getParsedBody does once
 * mime.ParseMediaType has found the boundary (multipart.NewReader(strings.NewReader(payload),
 * boundary), the loop above), and that printed either the form values (encoding/json) or
 * err.Error(). The rows were generated from that program's output and not edited. The
 * LARGE_CASES (bodies of up to a few hundred KiB, of the shapes that once took superlinear time)
 * are written as expressions, body and outcome, each outcome checked equal to that program's
 * output for its body.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseBody } from '../sidecar/src/extauthz/index.ts';
import { parseMediaType, parseMultipartForm } from '../sidecar/src/extauthz/multipart.ts';
import { ErrorCodes, PavilionError } from '../sidecar/src/lib/errors.ts';

type Outcome = { readonly parsed: Record<string, unknown[]> } | { readonly error: string };

const json = (value: unknown): unknown => JSON.parse(JSON.stringify(value));
const none = Buffer.alloc(0);

/** What parse() gives, in the shape of the Go program's output. */
function outcome(parse: () => unknown): Outcome {
  try {
    return { parsed: json(parse()) as Record<string, unknown[]> };
  } catch (error) {
    assert.ok(error instanceof PavilionError, `not a PavilionError: ${String(error)}`);
    assert.equal(error.code, ErrorCodes.EXTAUTHZ_REQUEST_INVALID);
    return { error: error.message };
  }
}

/** [what the body shows, boundary, body, Go's outcome] */
const CASES: ReadonlyArray<readonly [string, string, string, Outcome]> = [
  ['a part without a form-data name, final boundary right after its headers (LF)', 'B', '--B\nX: y\n\n--B--\n', { parsed: {} }],
  ['final boundary without a line break at the end', 'B', '--B\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--B--', { parsed: { a: ['v'] } }],
  ['final boundary followed by blanks and an epilogue', 'B', '--B\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--B-- \t\r\nepilogue\r\n--B\r\n', { parsed: { a: ['v'] } }],
  ['no final boundary after a named part', 'B', '--B\r\nContent-Disposition: form-data; name=a\r\n\r\nv', { error: 'unexpected EOF' }],
  ['no final boundary after a skipped part', 'B', '--B\r\nX: y\r\n\r\nv', { error: 'multipart: NextPart: EOF' }],
  ['no final boundary, the body ends with a line break', 'B', '--B\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n', { error: 'unexpected EOF' }],
  ['the body ends inside the part headers (io.EOF ends the form)', 'B', '--B\r\nContent-Disposition: form-data; name=a', { parsed: {} }],
  ['the body ends after the first delimiter line', 'B', '--B\r\n', { parsed: {} }],
  ['the body ends in a header line without its line break', 'B', '--B\r\nX: y', { parsed: {} }],
  ['the body ends after the blank line that ends the headers', 'B', '--B\r\nContent-Disposition: form-data; name=a\r\n\r\n', { error: 'unexpected EOF' }],
  ['only a preamble', 'B', 'hello\r\nworld\r\n', { error: 'multipart: NextPart: EOF' }],
  ['only a final boundary', 'B', '--B--\r\n', { parsed: {} }],
  ['a preamble line that starts like the boundary is skipped', 'B', '--Bx\r\npre\r\n--B\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--B--\r\n', { parsed: { a: ['v'] } }],
  ['a blank delimiter suffix: "--B \\t" is a delimiter line', 'B', '--B \t\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--B--\r\n', { parsed: { a: ['v'] } }],
  ['a part without headers', 'B', '--B\r\n\r\nv\r\n--B\r\nContent-Disposition: form-data; name=a\r\n\r\nw\r\n--B--\r\n', { parsed: { a: ['w'] } }],
  ['an empty part body', 'B', '--B\r\nContent-Disposition: form-data; name=a\r\n\r\n--B--\r\n', { parsed: { a: [''] } }],
  ['an empty part body, then a part', 'B', '--B\r\nContent-Disposition: form-data; name=a\r\n\r\n\r\n--B\r\nContent-Disposition: form-data; name=b\r\n\r\nw\r\n--B--\r\n', { parsed: { a: [''], b: ['w'] } }],
  ['LF mode: a CR before the next boundary stays in the value', 'B', '--B\nContent-Disposition: form-data; name=a\n\nv\r\n--B--\n', { parsed: { a: ['v\r'] } }],
  ['CRLF mode: a boundary after a bare LF is part of the value', 'B', '--B\r\nContent-Disposition: form-data; name=a\r\n\r\nv\n--B\r\nw\r\n--B--\r\n', { parsed: { a: ['v\n--B\r\nw'] } }],
  ['CRLF mode: a delimiter line ending in a bare LF', 'b', '--b\r\nContent-Disposition: form-data; name="b"\r\n\r\nx\r\n--b\nContent-Disposition: form-data; name=c\r\n\r\nhello\r\n--b--\r\n', { error: 'multipart: expecting a new Part; got line "--b\\n"' }],
  ['a boundary followed by a space and text ends the part, then is not a delimiter', 'B', '--B\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--B x\r\n\r\n--B--\r\n', { error: 'multipart: expecting a new Part; got line "--B x\\r\\n"' }],
  ['a longer boundary-like line inside a value', 'B', '--B\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--Bar\r\nw\r\n--B--\r\n', { parsed: { a: ['v\r\n--Bar\r\nw'] } }],
  ['a value that starts like the boundary', 'B', '--B\r\nContent-Disposition: form-data; name=a\r\n\r\n--Bx\r\n--B--\r\n', { parsed: { a: ['--Bx'] } }],
  ['a value that is the boundary and one dash', 'B', '--B\r\nContent-Disposition: form-data; name=a\r\n\r\n--B-\r\n--B\r\n\r\n--B--', { parsed: { a: ['--B-'] } }],
  ['LF mode: a CRLF delimiter line right after the headers is an unexpected line', 'B', '--B\nContent-Disposition: form-data; name=a\n\n--B\r\n--B--\n', { error: 'multipart: unexpected line in Next(): "--B\\r\\n"' }],
  ['a part whose headers are only "x" (no colon)', 'B', '--B\r\n\r\n--B\r\nx\r\n--B--\r\n', { error: 'malformed MIME header: missing colon: "x"' }],
  ['a folded header', 'B', '--B\r\nContent-Disposition: form-data;\r\n \t name="a"\r\n\r\nv\r\n--B--\r\n', { parsed: { a: ['v'] } }],
  ['a first header line that starts with a space', 'B', '--B\r\n X: y\r\n\r\nv\r\n--B--\r\n', { error: 'malformed MIME header initial line: " X: y"' }],
  ['a first header line that starts with a space, over 80 bytes', 'B', '--B\r\n ' + 'x'.repeat(81) + '\r\n\r\nv\r\n--B--\r\n', { error: 'multipart: message too large' }],
  ['a header line without a colon', 'B', '--B\r\nContent-Disposition: form-data; name=a\r\nNoColon\r\n\r\nv\r\n--B--\r\n', { error: 'malformed MIME header: missing colon: "NoColon"' }],
  ['a header with an empty key', 'B', '--B\r\n: v\r\n\r\nv\r\n--B--\r\n', { error: 'malformed MIME header line: ": v"' }],
  ['a control byte in a header value (Go quotes the canonicalized key)', 'B', '--B\r\ncontent-disposition: form-data; name=a\u0001\r\n\r\nv\r\n--B--\r\n', { error: 'malformed MIME header line: "Content-Disposition: form-data; name=a\\x01"' }],
  ['a CR inside a header line', 'B', '--B\r\ncontent-disposition: form-data;\r name=a\r\n\r\nv\r\n--B--\r\n', { error: 'malformed MIME header line: "Content-Disposition: form-data;\\r name=a"' }],
  ['a space before the colon: the header is kept but not found', 'B', '--B\r\nContent-Disposition : form-data; name=a\r\n\r\nv\r\n--B--\r\n', { parsed: {} }],
  ['the first of two Content-Disposition headers counts', 'B', '--B\r\nContent-Disposition: form-data; name=a\r\nContent-Disposition: form-data; name=b\r\n\r\nv\r\n--B--\r\n', { parsed: { a: ['v'] } }],
  ['10000 headers in a part are allowed', 'B', '--B\r\n' + 'X: y\r\n'.repeat(9999) + 'Content-Disposition: form-data; name=a\r\n\r\nv\r\n--B--\r\n', { parsed: { a: ['v'] } }],
  ['10001 headers in a part are too many', 'B', '--B\r\n' + 'X: y\r\n'.repeat(10000) + 'Content-Disposition: form-data; name=a\r\n\r\nv\r\n--B--\r\n', { error: 'multipart: message too large' }],
  ['a header line longer than the 4096-byte buffer', 'B', '--B\r\nContent-Disposition: form-data; name=a\r\nX-Long: ' + 'L'.repeat(5000) + '\r\n\r\nv\r\n--B--\r\n', { parsed: { a: ['v'] } }],
  ['a preamble line of 4095 bytes and its LF', 'B', 'p'.repeat(4095) + '\n--B\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--B--\r\n', { parsed: { a: ['v'] } }],
  ['a preamble line of 4096 bytes and its LF fills the buffer', 'B', 'p'.repeat(4096) + '\n--B\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--B--\r\n', { error: 'multipart: NextPart: bufio: buffer full' }],
  ['an epilogue line longer than the buffer is never read', 'B', '--B\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--B--\r\n' + 'e'.repeat(5000), { parsed: { a: ['v'] } }],
  ['a value longer than the buffer', 'B', '--B\r\nContent-Disposition: form-data; name=a\r\n\r\n' + 'v'.repeat(10000) + '\r\n--B--\r\n', { parsed: { a: ['v'.repeat(10000)] } }],
  ['an empty boundary', '', '--\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n----\r\n', { error: 'multipart: boundary is empty' }],
  ['quoted-printable: escapes and soft line breaks are decoded', 'B', '--B\r\nContent-Disposition: form-data; name=a\r\nContent-Transfer-Encoding: Quoted-Printable\r\n\r\ncaf=C3=A9 soft=\r\nbreak=20 \r\nx\r\n--B--\r\n', { parsed: { a: ['café softbreak \r\nx'] } }],
  ['quoted-printable: "=" without hex digits is kept', 'B', '--B\r\nContent-Disposition: form-data; name=a\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\na=zz=4\r\n--B--\r\n', { parsed: { a: ['a=zz=4'] } }],
  ['quoted-printable: a bad escape before the line break', 'B', '--B\r\nContent-Disposition: form-data; name=a\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\na=4\r\nb\r\n--B--\r\n', { parsed: { a: ['a=4\r\nb'] } }],
  ['quoted-printable: text after a soft line break', 'B', '--B\r\nContent-Disposition: form-data; name=a\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\na= b\r\n--B--\r\n', { parsed: { a: ['a= b'] } }],
  ['quoted-printable: an unescaped control byte', 'B', '--B\r\nContent-Disposition: form-data; name=a\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\na\u0001b\r\n--B--\r\n', { error: 'quotedprintable: invalid unescaped byte 0x01 in body' }],
  ['quoted-printable: a line longer than the buffer', 'B', '--B\r\nContent-Disposition: form-data; name=a\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n' + 'q'.repeat(5000) + '\r\n--B--\r\n', { error: 'bufio: buffer full' }],
  ['quoted-printable: a skipped part stops where its decoding fails', 'B', '--B\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\na\u0001b\r\n--B\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--B--\r\n', { parsed: { a: ['v'] } }],
  ['quoted-printable: a skipped part read until its decoding error, between boundary look-alikes', 'B', '--B\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\na\r\n--Bx\u0001\r\n--By\r\n--Bz\r\n--B\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--B--\r\n', { error: 'multipart: unexpected line in Next(): "y\\r\\n"' }],
  ['quoted-printable: a JSON part', 'B', '--B\r\nContent-Disposition: form-data; name=j\r\nContent-Type: application/json\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{"k":=2212=22}\r\n--B--\r\n', { parsed: { j: [{ k: '12' }] } }],
  ['a JSON part and a text part', 'B', '--B\r\nContent-Disposition: form-data; name=j\r\nContent-Type: application/json; charset=utf-8\r\n\r\n{"n":[1,"x"]}\r\n--B\r\nContent-Disposition: form-data; name=j\r\n\r\n{"n":2}\r\n--B--\r\n', { parsed: { j: [{ n: [1, 'x'] }, '{"n":2}'] } }],
];

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/** 5000 parts: every seventh has no headers (skipped), the others are named f0..f99 and hold their number. */
function tinyParts(): [string, Outcome] {
  let body = '';
  const parsed: Record<string, string[]> = {};
  for (const i of range(5000)) {
    if (i % 7 === 0) {
      body += '--B\r\n\r\nskipped\r\n';
      continue;
    }
    body += `--B\r\nContent-Disposition: form-data; name=f${i % 100}\r\n\r\n${i}\r\n`;
    (parsed[`f${i % 100}`] ??= []).push(String(i));
  }
  return [`${body}--B--\r\n`, { parsed }];
}
const [tinyBody, tinyOutcome] = tinyParts();

/**
 * [what the body shows, boundary, body, Go's outcome] for the shapes that once took superlinear
 * time (many folded lines, parts, parameters or boundary look-alikes, long lines, long runs of
 * blanks): big bodies, so they are written as expressions, and so are the outcomes, each
 * checked equal to the Go program's output for its body.
 */
const LARGE_CASES: ReadonlyArray<readonly [string, string, string, Outcome]> = [
  ['a header folded over 2000 lines: each line trimmed of blanks, the lines joined by one space', 'B', `--B\r\nContent-Disposition: form-data; name="n0\r\n${range(1999).map((i) => `${i % 2 === 0 ? ' ' : '\t'}  n${i + 1} \t\r\n`).join('')} end"\r\n\r\nv\r\n--B--\r\n`, { parsed: { [['n0', ...range(1999).map((i) => `n${i + 1}`), 'end'].join(' ')]: ['v'] } }],
  ['a header folded over 1000 blank lines: one space for each', 'B', `--B\r\nContent-Disposition: form-data; name="a\r\n${' \r\n'.repeat(1000)} b"\r\n\r\nv\r\n--B--\r\n`, { parsed: { [`a${' '.repeat(1001)}b`]: ['v'] } }],
  ['5000 tiny parts, named and skipped', 'B', tinyBody, tinyOutcome],
  ['3000 tiny parts with bare-LF line breaks', 'B', `${range(3000).map((i) => `--B\nContent-Disposition: form-data; name=p${i}\n\n${'x'.repeat(i % 3)}\n`).join('')}--B--\n`, { parsed: Object.fromEntries(range(3000).map((i) => [`p${i}`, ['x'.repeat(i % 3)]])) }],
  ['a value of 3000 boundary look-alikes', 'B', `--B\r\nContent-Disposition: form-data; name=a\r\n\r\nv${'\r\n--Bx'.repeat(3000)}\r\n--B-e\r\n--B--\r\n`, { parsed: { a: [`v${'\r\n--Bx'.repeat(3000)}\r\n--B-e`] } }],
  ['quoted-printable: 3000 escapes and soft line breaks', 'B', `--B\r\nContent-Disposition: form-data; name=q\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n${'ab=3D=\r\n'.repeat(3000)}end\r\n--B--\r\n`, { parsed: { q: [`${'ab='.repeat(3000)}end`] } }],
  ['a Content-Disposition with 50000 blanks inside or after its type', 'B', `--B\r\nContent-Disposition: form-data${' '.repeat(50000)}x; name=a\r\n\r\nv\r\n--B\r\nContent-Disposition: form-data${' '.repeat(50000)}; name=b\r\n\r\nw\r\n--B--\r\n`, { parsed: { b: ['w'] } }],
  ['a quoted name with 3000 escaped quotes', 'B', `--B\r\nContent-Disposition: form-data; name="${'a\\"'.repeat(3000)}"\r\n\r\nv\r\n--B--\r\n`, { parsed: { [`${'a"'.repeat(3000)}`]: ['v'] } }],
  ['a Content-Disposition with 3000 parameters', 'B', `--B\r\nContent-Disposition: form-data; ${range(3000).map((i) => `p${i}=v`).join('; ')}; name=last\r\n\r\nv\r\n--B--\r\n`, { parsed: { last: ['v'] } }],
  ['a header line of 100000 bytes', 'B', `--B\r\nContent-Disposition: form-data; name=a\r\nX-Long: ${'L'.repeat(100000)}\r\n\r\nv\r\n--B--\r\n`, { parsed: { a: ['v'] } }],
  ['a header line of 30000 bytes without a colon, quoted in the error', 'B', `--B\r\n${'é\u0001"\\L'.repeat(6000)}\r\n\r\nv\r\n--B--\r\n`, { error: `malformed MIME header: missing colon: "${'é\\x01\\"\\\\L'.repeat(6000)}"` }],
];

/** [Content-Type, Go's mime.ParseMediaType outcome] with long runs of white space (checked with Go 1.26.8 too). */
const LARGE_MEDIA_TYPES: ReadonlyArray<readonly [string, { readonly type: string; readonly params: Record<string, string> } | { readonly error: string }]> = [
  [`multipart/form-data${' '.repeat(50000)}x; boundary=B`, { error: 'mime: unexpected content after media subtype' }],
  [`multipart/form-data${'\u00a0'.repeat(50000)}; boundary=B;${' \t'.repeat(25000)}`, { type: 'multipart/form-data', params: { boundary: 'B' } }],
  [`multipart/form-data; boundary=B;${' '.repeat(50000)}x`, { error: 'mime: invalid media parameter' }],
];

describe("multipart/form-data bodies as Go's mime/multipart Reader reads them", () => {
  for (const [label, boundary, body, expected] of CASES) {
    test(label, () => {
      assert.deepEqual(outcome(() => parseMultipartForm(body, boundary)), expected);
      // the same through getParsedBody's port, body as the `body` string
      const contentType = `multipart/form-data; boundary="${boundary}"`;
      assert.deepEqual(outcome(() => parseBody({ 'content-type': contentType }, body, none)[0]), expected);
    });
  }

  test('raw bytes: invalid UTF-8 is quoted as Go quotes it, and is one U+FFFD per byte in values', () => {
    const bytes = (...pieces: Array<string | number[]>): Uint8Array => Buffer.concat(pieces.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p))));
    assert.deepEqual(outcome(() => parseMultipartForm(bytes('--B\r\nX', [0xff], ': y\r\n\r\nv\r\n--B--\r\n'), 'B')), { error: 'malformed MIME header line: "X\\xff: y"' });
    assert.deepEqual(outcome(() => parseMultipartForm(bytes('--B\r\nContent-Disposition: form-data; name=a\r\n\r\nv', [0xff, 0xe2, 0x82], '\r\n--B--\r\n'), 'B')), { parsed: { a: ['v\ufffd\ufffd\ufffd'] } });
    assert.deepEqual(outcome(() => parseMultipartForm(bytes('--B\r\n', [0xff], '\r\n--B--\r\n'), 'B')), { error: 'malformed MIME header: missing colon: "\\xff"' });
    assert.deepEqual(outcome(() => parseMultipartForm(bytes('pre', [0xc3], '\r\n--B\r\n\r\nv\r\n--B\r\nx', [0xe2, 0x82, 0xac, 0xc3], '\r\n'), 'B')), { error: 'malformed MIME header: missing colon: "x€\\xc3"' });
  });
});

describe('multipart/form-data bodies of pathological shapes give the same results as Go', () => {
  for (const [label, boundary, body, expected] of LARGE_CASES) {
    test(label, () => {
      assert.deepEqual(outcome(() => parseMultipartForm(body, boundary)), expected);
      const contentType = `multipart/form-data; boundary="${boundary}"`;
      assert.deepEqual(outcome(() => parseBody({ 'content-type': contentType }, body, none)[0]), expected);
      // the same bytes given as raw bytes
      assert.deepEqual(outcome(() => parseMultipartForm(Buffer.from(body, 'utf8'), boundary)), expected);
    });
  }

  test('Content-Types with long runs of white space', () => {
    for (const [contentType, expected] of LARGE_MEDIA_TYPES) {
      assert.deepEqual(
        outcome(() => {
          const { type, params } = parseMediaType(contentType);
          return { type, params };
        }),
        'error' in expected ? expected : { parsed: expected },
      );
    }
  });
});
