/**
 * `multipart/form-data` bodies as opa-envoy-plugin parses them (Go's `mime.ParseMediaType`
 * and `mime/multipart`): `{name: [value, ...]}` where a part whose own Content-Type contains
 * `application/json` contributes its parsed JSON and any other part its text; parts that are
 * not `form-data`, have no name, or whose Content-Disposition Go cannot parse are skipped
 * (`Part.FormName` is then ""); a missing `boundary` parameter means no parsed body; a
 * Content-Type Go cannot parse, or a malformed body, is an error (upstream answers those with
 * a 400).
 *
 * `parseMediaType` follows Go's `mime.ParseMediaType` (mime/mediatype.go, checked against Go 1.26):
 * the type must be `token` or `token/token` (`multipart/form-data, boundary=b` is "mime:
 * unexpected content after media subtype"); white space is allowed around `;` and `=`; a
 * repeated parameter is accepted when its values are equal and "mime: duplicate parameter
 * name" when they differ; in a quoted value a backslash escapes only a tspecial
 * (`"a\"b"` is `a"b`, `"a\b"` stays `a\b`, as Go keeps MSIE's unescaped file paths); RFC 2231
 * `name*=UTF-8''caf%C3%A9` and continuations `name*0`, `name*1*` are decoded (charsets
 * UTF-8 and US-ASCII only; otherwise the parameter is dropped) and take the place of a plain
 * `name`. Errors carry Go's text.
 *
 * Limits: `Content-Transfer-Encoding: quoted-printable` parts (which Go decodes) are taken
 * as they are; only the structure Go's reader accepts for well-formed bodies is reproduced,
 * and messages for malformed multipart structure differ from Go's.
 */
import { ErrorCodes, PavilionError } from '../lib/errors.ts';

function invalid(message: string): PavilionError {
  return new PavilionError(ErrorCodes.EXTAUTHZ_REQUEST_INVALID, message);
}

export interface MediaType {
  readonly type: string;
  readonly params: Readonly<Record<string, string>>;
}

/**
 * RFC 2045 `token` characters (Go's isTokenChar): any US-ASCII CHAR except SPACE, CTLs and
 * tspecials, so `{` and `}` too (Go 1.25.0 briefly refused them, golang/go#76236).
 */
const TOKEN = /^[!#$%&'*+\-.^_`{|}~0-9A-Za-z]+/;
/** RFC 2045 tspecials (Go's isTSpecial). */
const TSPECIALS = new Set(['(', ')', '<', '>', '@', ',', ';', ':', '\\', '"', '/', '[', ']', '?', '=']);
/** Go's unicode.IsSpace. */
const LEADING_SPACE = /^[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/;
const TRAILING_SPACE = /[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$/;
const UTF8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

const trimLeft = (s: string): string => s.replace(LEADING_SPACE, '');
const trimSpace = (s: string): string => trimLeft(s).replace(TRAILING_SPACE, '');

/** Go's consumeToken: [token, rest], or ['', v] when v does not start with a token character. */
function consumeToken(v: string): [string, string] {
  const token = TOKEN.exec(v)?.[0];
  return token === undefined ? ['', v] : [token, v.slice(token.length)];
}

/** Go's consumeValue: a token or a quoted-string; ['', v] on failure. */
function consumeValue(v: string): [string, string] {
  if (v === '') return ['', ''];
  if (v[0] !== '"') return consumeToken(v);
  let value = '';
  for (let i = 1; i < v.length; i++) {
    const c = v[i] as string;
    if (c === '"') return [value, v.slice(i + 1)];
    // a backslash escapes a tspecial only; before anything else it is itself (MSIE's
    // "C:\dev\file.txt"), as in Go
    if (c === '\\' && i + 1 < v.length && TSPECIALS.has(v[i + 1] as string)) {
      value += v[i + 1] as string;
      i++;
      continue;
    }
    if (c === '\r' || c === '\n') return ['', v];
    value += c;
  }
  return ['', v]; // no closing quote
}

/** Go's consumeMediaParam: [lower-cased name, value, rest], or ['', '', v] on failure. */
function consumeMediaParam(v: string): [string, string, string] {
  let rest = trimLeft(v);
  if (!rest.startsWith(';')) return ['', '', v];
  rest = trimLeft(rest.slice(1));
  let param: string;
  [param, rest] = consumeToken(rest);
  param = param.toLowerCase();
  if (param === '') return ['', '', v];
  rest = trimLeft(rest);
  if (!rest.startsWith('=')) return ['', '', v];
  rest = trimLeft(rest.slice(1));
  const [value, after] = consumeValue(rest);
  if (value === '' && after === rest) return ['', '', v];
  return [param, value, after];
}

/** Go's checkMediaTypeDisposition: undefined, or the error. */
function checkMediaTypeDisposition(s: string): string | undefined {
  const [type, rest] = consumeToken(s);
  if (type === '') return 'mime: no media type';
  if (rest === '') return undefined;
  if (!rest.startsWith('/')) return 'mime: expected slash after first token';
  const [subtype, after] = consumeToken(rest.slice(1));
  if (subtype === '') return 'mime: expected token after slash';
  if (after !== '') return 'mime: unexpected content after media subtype';
  return undefined;
}

const isHex = (b: number): boolean => (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);
const hexValue = (b: number): number => (b <= 0x39 ? b - 0x30 : (b | 0x20) - 0x61 + 10);

/** Go's percentHexUnescape, on the value's UTF-8 bytes: the bytes, or undefined for a bad escape. */
function percentHexUnescape(s: string): Buffer | undefined {
  const bytes = Buffer.from(s, 'utf8');
  const out = Buffer.allocUnsafe(bytes.length);
  let n = 0;
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i] as number;
    if (b !== 0x25) {
      out[n++] = b;
      i++;
      continue;
    }
    if (i + 2 >= bytes.length || !isHex(bytes[i + 1] as number) || !isHex(bytes[i + 2] as number)) return undefined;
    out[n++] = hexValue(bytes[i + 1] as number) * 16 + hexValue(bytes[i + 2] as number);
    i += 3;
  }
  return out.subarray(0, n);
}

/** Go's decode2231Enc: `charset'language'percent-encoded`, charsets us-ascii and utf-8 only. */
function decode2231Enc(v: string): Buffer | undefined {
  const first = v.indexOf("'");
  if (first === -1) return undefined;
  const second = v.indexOf("'", first + 1);
  if (second === -1) return undefined;
  const charset = v.slice(0, first).toLowerCase();
  if (charset !== 'us-ascii' && charset !== 'utf-8') return undefined;
  return percentHexUnescape(v.slice(second + 1));
}

type ParsedMediaType = { readonly ok: true; readonly type: string; readonly params: Record<string, string> } | { readonly ok: false; readonly error: string };

/** `mime.ParseMediaType` without throwing (see the file header). */
function goParseMediaType(v: string): ParsedMediaType {
  const semi = v.indexOf(';');
  const base = semi === -1 ? v : v.slice(0, semi);
  const type = trimSpace(base.toLowerCase());
  const typeError = checkMediaTypeDisposition(type);
  if (typeError !== undefined) return { ok: false, error: typeError };
  const params: Record<string, string> = Object.create(null) as Record<string, string>;
  // base name -> parameter name -> value, for the names with a '*' (RFC 2231)
  const continuation = new Map<string, Map<string, string>>();
  let rest = v.slice(base.length);
  while (rest.length > 0) {
    rest = trimLeft(rest);
    if (rest.length === 0) break;
    const [key, value, after] = consumeMediaParam(rest);
    if (key === '') {
      if (trimSpace(after) === ';') break; // a trailing semicolon is not an error
      return { ok: false, error: 'mime: invalid media parameter' };
    }
    const star = key.indexOf('*');
    let existing: string | undefined;
    if (star === -1) {
      existing = Object.hasOwn(params, key) ? params[key] : undefined;
      if (existing !== undefined && existing !== value) return { ok: false, error: 'mime: duplicate parameter name' };
      params[key] = value;
    } else {
      const baseName = key.slice(0, star);
      let pieces = continuation.get(baseName);
      if (pieces === undefined) continuation.set(baseName, (pieces = new Map()));
      existing = pieces.get(key);
      if (existing !== undefined && existing !== value) return { ok: false, error: 'mime: duplicate parameter name' };
      pieces.set(key, value);
    }
    rest = after;
  }
  // stitch RFC 2231 values together: "name*" (encoded), or "name*0", "name*1*", ...
  for (const [key, pieces] of continuation) {
    const single = pieces.get(`${key}*`);
    if (single !== undefined) {
      const decoded = decode2231Enc(single);
      if (decoded !== undefined) params[key] = UTF8.decode(decoded);
      continue;
    }
    const parts: Buffer[] = [];
    let valid = false;
    for (let n = 0; ; n++) {
      const simple = pieces.get(`${key}*${n}`);
      if (simple !== undefined) {
        valid = true;
        parts.push(Buffer.from(simple, 'utf8'));
        continue;
      }
      const encoded = pieces.get(`${key}*${n}*`);
      if (encoded === undefined) break;
      valid = true;
      const decoded = n === 0 ? decode2231Enc(encoded) : percentHexUnescape(encoded);
      if (decoded !== undefined) parts.push(decoded);
    }
    if (valid) params[key] = UTF8.decode(Buffer.concat(parts));
  }
  return { ok: true, type, params };
}

/** `mime.ParseMediaType`: the lower-cased type and lower-cased parameter names; throws Go's errors. */
export function parseMediaType(value: string): MediaType {
  const parsed = goParseMediaType(value);
  if (!parsed.ok) throw invalid(parsed.error);
  return { type: parsed.type, params: parsed.params };
}

/** `multipart.Part.FormName`: the `name` of a `form-data` disposition; "" when absent or unparsable. */
export function formName(disposition: string | undefined): string {
  const parsed = goParseMediaType(disposition ?? '');
  if (!parsed.ok || parsed.type !== 'form-data') return '';
  return parsed.params['name'] ?? '';
}

function lineEnd(text: string, from: number): number {
  const nl = text.indexOf('\n', from);
  return nl === -1 ? text.length : nl;
}

/** After a `--boundary` at `at`: 'final', 'next' (with where the next line starts), or undefined. */
function delimiterAt(text: string, at: number, dash: string): { kind: 'final' | 'next'; next: number; crlf: boolean } | undefined {
  if (!text.startsWith(dash, at)) return undefined;
  const after = at + dash.length;
  if (text.startsWith('--', after)) return { kind: 'final', next: text.length, crlf: false };
  const end = lineEnd(text, after);
  if (end === text.length) return undefined;
  const rest = text.slice(after, end);
  const crlf = rest.endsWith('\r');
  if (!/^[ \t]*$/.test(crlf ? rest.slice(0, -1) : rest)) return undefined;
  return { kind: 'next', next: end + 1, crlf };
}

export function parseMultipartForm(payload: string, boundary: string): Record<string, unknown[]> {
  const dash = `--${boundary}`;
  const values: Record<string, unknown[]> = Object.create(null) as Record<string, unknown[]>;
  // preamble: skip lines until the first delimiter line
  let pos = 0;
  let delimiter: ReturnType<typeof delimiterAt>;
  for (;;) {
    delimiter = delimiterAt(payload, pos, dash);
    if (delimiter !== undefined) break;
    const end = lineEnd(payload, pos);
    if (end >= payload.length) throw invalid('multipart: NextPart: EOF');
    pos = end + 1;
  }
  const nl = delimiter.crlf ? '\r\n' : '\n';
  while (delimiter.kind === 'next') {
    // part headers, up to an empty line
    pos = delimiter.next;
    const headers: Record<string, string> = Object.create(null) as Record<string, string>;
    for (;;) {
      const end = lineEnd(payload, pos);
      if (end >= payload.length) throw invalid('multipart: NextPart: unexpected EOF in part headers');
      const line = payload.slice(pos, end).replace(/\r$/, '');
      pos = end + 1;
      if (line === '') break;
      const colon = line.indexOf(':');
      if (colon <= 0) throw invalid(`malformed MIME header line: ${line.slice(0, 64)}`);
      const name = line.slice(0, colon).trim().toLowerCase();
      headers[name] ??= line.slice(colon + 1).trim();
    }
    // part body, up to the next delimiter (which may open the body when it is empty)
    const bodyStart = pos;
    let bodyEnd: number;
    let next = delimiterAt(payload, bodyStart, dash);
    if (next !== undefined) {
      bodyEnd = bodyStart;
    } else {
      let search = bodyStart;
      for (;;) {
        const at = payload.indexOf(`${nl}${dash}`, search);
        if (at === -1) throw invalid('multipart: unexpected EOF in part body');
        next = delimiterAt(payload, at + nl.length, dash);
        if (next !== undefined) {
          bodyEnd = at;
          break;
        }
        search = at + 1;
      }
    }
    const name = formName(headers['content-disposition']);
    if (name !== '') {
      const text = payload.slice(bodyStart, bodyEnd);
      let value: unknown = text;
      if ((headers['content-type'] ?? '').includes('application/json')) {
        try {
          value = JSON.parse(text);
        } catch (error) {
          // upstream returns util.UnmarshalJSON's error as it is (Go's wording; V8's here)
          throw invalid((error as Error).message);
        }
      }
      (values[name] ??= []).push(value);
    }
    delimiter = next;
  }
  return values;
}
