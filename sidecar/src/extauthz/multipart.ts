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
 * The body is read as Go's `mime/multipart` Reader reads it: a port of multipart.go with the
 * parts of bufio, net/textproto (readMIMEHeader) and mime/quotedprintable it uses, compared with
 * Go 1.26 on random and hand-made malformed bodies. The first `--boundary` line (blanks may
 * follow it) decides between CRLF and bare-LF line breaks; preamble lines are skipped and
 * nothing after `--boundary--` is read; part headers may be folded and a part may have none;
 * `Content-Transfer-Encoding: quoted-printable` parts are decoded; a body that ends inside a
 * part's headers ends the form (Go's io.EOF), while one that ends inside a part's body is an
 * error; more than 10000 headers in a part, more than 10 MiB of them, or a preamble or
 * boundary line (or a quoted-printable line) of 4096 bytes or more is an error too. Errors carry
 * Go's text (`multipart: NextPart: EOF`, `unexpected EOF`, `malformed MIME header line:
 * "..."`, ...), which upstream puts in the 400's body.
 *
 * Cost: this runs on the event loop for every tenant's checks, so every step is linear in the
 * length of what it reads, whatever the body's shape (folded or long header lines, runs of
 * white space, many parts, parameters or boundary look-alikes, long error texts): no RegExp on
 * header values, no search past the 4096-byte window, no text built a character at a time.
 * bench/_multipart.ts times those shapes against an ordinary form.
 *
 * Limits: a JSON part is parsed by JSON.parse, so its errors have V8's wording, not that of
 * OPA's util.UnmarshalJSON; a string payload stands for its UTF-8 bytes, so bytes a caller
 * already decoded to U+FFFD are quoted as U+FFFD in error texts where Go writes `\xff` (pass
 * the raw bytes to avoid this).
 */
import { isUtf8 } from 'node:buffer';
import { ErrorCodes, PavilionError } from '../lib/errors.ts';
import { UTF8, hexValue, isHex } from './go-url.ts';

function invalid(message: string): PavilionError {
  return new PavilionError(ErrorCodes.EXTAUTHZ_REQUEST_INVALID, message);
}

export interface MediaType {
  readonly type: string;
  readonly params: Readonly<Record<string, string>>;
}

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const TAB = 0x09;

// The media type is read as Go reads it, but by index over the one string: no step slices off
// the rest of the value, copies it a character at a time or runs a RegExp anchored at its end
// (which backtracks over a run of white space at every position: quadratic in the run), so
// every step is linear in the value's length.

/** A 128-entry table of the given ASCII characters, by code. */
function asciiTable(chars: string): Uint8Array {
  const table = new Uint8Array(128);
  for (const c of chars) table[c.charCodeAt(0)] = 1;
  return table;
}

/**
 * RFC 2045 `token` characters (Go's isTokenChar): any US-ASCII CHAR except SPACE, CTLs and
 * tspecials, so `{` and `}` too (Go 1.25.0 briefly refused them, golang/go#76236).
 */
const TOKEN_CHAR = asciiTable("!#$%&'*+-.^_`{|}~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz");
/** RFC 2045 tspecials (Go's isTSpecial). */
const TSPECIAL = asciiTable('()<>@,;:\\"/[]?=');
const SEMICOLON = 0x3b;
const EQUALS = 0x3d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const SLASH = 0x2f;

/** Go's unicode.IsSpace, for a UTF-16 code unit (every white space rune is in the BMP). */
function isSpace(c: number): boolean {
  if (c < 0x80) return c === SP || (c >= TAB && c <= CR);
  return c === 0x85 || c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000;
}

/** strings.TrimLeftFunc(v[i:], unicode.IsSpace), as the index where the result starts. */
function skipWhiteSpace(v: string, i: number): number {
  while (i < v.length && isSpace(v.charCodeAt(i))) i++;
  return i;
}

/** strings.TrimSpace. */
function trimSpace(s: string): string {
  const start = skipWhiteSpace(s, 0);
  let end = s.length;
  while (end > start && isSpace(s.charCodeAt(end - 1))) end--;
  return s.slice(start, end);
}

/** Go's consumeToken at v[i]: where the token that starts there ends (i when none does). */
function tokenEnd(v: string, i: number): number {
  while (i < v.length && TOKEN_CHAR[v.charCodeAt(i)] === 1) i++;
  return i;
}

/** Go's consumeValue at v[i]: a token or a quoted-string and where it ends; ['', i] on failure. */
function consumeValue(v: string, i: number): [string, number] {
  if (i >= v.length) return ['', i];
  if (v.charCodeAt(i) !== QUOTE) {
    const end = tokenEnd(v, i);
    return [v.slice(i, end), end];
  }
  // the runs between escapes are sliced and joined once at the end
  const runs: string[] = [];
  let from = i + 1;
  for (let j = i + 1; j < v.length; j++) {
    const c = v.charCodeAt(j);
    if (c === QUOTE) {
      runs.push(v.slice(from, j));
      return [runs.join(''), j + 1];
    }
    // a backslash escapes a tspecial only; before anything else it is itself (MSIE's
    // "C:\dev\file.txt"), as in Go
    if (c === BACKSLASH && j + 1 < v.length && TSPECIAL[v.charCodeAt(j + 1)] === 1) {
      runs.push(v.slice(from, j));
      from = ++j; // the escaped character starts the next run
      continue;
    }
    if (c === CR || c === LF) return ['', i];
  }
  return ['', i]; // no closing quote
}

/** Go's consumeMediaParam at v[i]: [lower-cased name, value, where it ends], or undefined on failure. */
function consumeMediaParam(v: string, i: number): [string, string, number] | undefined {
  let at = skipWhiteSpace(v, i);
  if (v.charCodeAt(at) !== SEMICOLON) return undefined;
  at = skipWhiteSpace(v, at + 1);
  const nameEnd = tokenEnd(v, at);
  if (nameEnd === at) return undefined;
  const param = v.slice(at, nameEnd).toLowerCase();
  at = skipWhiteSpace(v, nameEnd);
  if (v.charCodeAt(at) !== EQUALS) return undefined;
  at = skipWhiteSpace(v, at + 1);
  const [value, end] = consumeValue(v, at);
  if (value === '' && end === at) return undefined;
  return [param, value, end];
}

/** Go's checkMediaTypeDisposition: undefined, or the error. */
function checkMediaTypeDisposition(s: string): string | undefined {
  const typeEnd = tokenEnd(s, 0);
  if (typeEnd === 0) return 'mime: no media type';
  if (typeEnd === s.length) return undefined;
  if (s.charCodeAt(typeEnd) !== SLASH) return 'mime: expected slash after first token';
  const subtypeEnd = tokenEnd(s, typeEnd + 1);
  if (subtypeEnd === typeEnd + 1) return 'mime: expected token after slash';
  if (subtypeEnd !== s.length) return 'mime: unexpected content after media subtype';
  return undefined;
}

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

type ParsedMediaType = { readonly ok: true; readonly type: string; readonly params: Map<string, string> } | { readonly ok: false; readonly error: string };

/** `mime.ParseMediaType` without throwing (see the file header). */
function goParseMediaType(v: string): ParsedMediaType {
  const semi = v.indexOf(';');
  const baseEnd = semi === -1 ? v.length : semi;
  const type = trimSpace(v.slice(0, baseEnd).toLowerCase());
  const typeError = checkMediaTypeDisposition(type);
  if (typeError !== undefined) return { ok: false, error: typeError };
  const params = new Map<string, string>();
  // base name -> parameter name -> value, for the names with a '*' (RFC 2231); made when the
  // first one comes, as in Go
  let continuation: Map<string, Map<string, string>> | undefined;
  // the parameters are v[at:], as Go's v is the rest of the value
  let at = baseEnd;
  while (at < v.length) {
    at = skipWhiteSpace(v, at);
    if (at === v.length) break;
    const param = consumeMediaParam(v, at);
    if (param === undefined) {
      // a trailing semicolon is not an error (Go: strings.TrimSpace(rest) == ";")
      if (v.charCodeAt(at) === SEMICOLON && skipWhiteSpace(v, at + 1) === v.length) break;
      return { ok: false, error: 'mime: invalid media parameter' };
    }
    const [key, value, end] = param;
    const star = key.indexOf('*');
    let pieces = params;
    if (star !== -1) {
      const baseName = key.slice(0, star);
      continuation ??= new Map();
      const existing = continuation.get(baseName);
      if (existing === undefined) continuation.set(baseName, (pieces = new Map()));
      else pieces = existing;
    }
    const existing = pieces.get(key);
    if (existing !== undefined && existing !== value) return { ok: false, error: 'mime: duplicate parameter name' };
    pieces.set(key, value);
    at = end;
  }
  if (continuation !== undefined) stitchContinuations(params, continuation);
  return { ok: true, type, params };
}

/**
 * The RFC 2231 values put together, into `params`: "name*" (encoded), or "name*0", "name*1*",
 * ... (a function of its own: V8 would drop goParseMediaType's optimized code whenever it reached
 * this loop with no type feedback, which it never has while no parameter has a '*').
 */
function stitchContinuations(params: Map<string, string>, continuation: Map<string, Map<string, string>>): void {
  for (const [key, pieces] of continuation) {
    const single = pieces.get(`${key}*`);
    if (single !== undefined) {
      const decoded = decode2231Enc(single);
      if (decoded !== undefined) params.set(key, UTF8.decode(decoded));
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
    if (valid) params.set(key, UTF8.decode(Buffer.concat(parts)));
  }
}

/** `mime.ParseMediaType`: the lower-cased type and lower-cased parameter names; throws Go's errors. */
export function parseMediaType(value: string): MediaType {
  const parsed = goParseMediaType(value);
  if (!parsed.ok) throw invalid(parsed.error);
  const params: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const [name, param] of parsed.params) params[name] = param;
  return { type: parsed.type, params };
}

/** `multipart.Part.FormName`: the `name` of a `form-data` disposition; "" when absent or unparsable. */
export function formName(disposition: string | undefined): string {
  const parsed = goParseMediaType(disposition ?? '');
  if (!parsed.ok || parsed.type !== 'form-data') return '';
  return parsed.params.get('name') ?? '';
}

// ---------------------------------------------------------------------------------------------
// The body: a port of Go's mime/multipart Reader (multipart.go), with the parts of bufio.Reader,
// net/textproto's readMIMEHeader and mime/quotedprintable it relies on, as opa-envoy-plugin
// drives it (NextPart until io.EOF; FormName; io.ReadAll of named parts; Close of the others).
// Go reads through a 4096-byte bufio.Reader, and some outcomes depend on that window (a line of
// 4096 bytes or more outside part bodies or inside a quoted-printable part is "bufio: buffer
// full"), so the buffer is modelled too: as a window [r, w) of absolute offsets into the body.

/** A Go error value; the sentinels are compared by identity, as Go compares io.EOF. */
class GoError {
  constructor(readonly message: string) {}
}
const EOF = new GoError('EOF');
const ERR_UNEXPECTED_EOF = new GoError('unexpected EOF');
const ERR_BUFFER_FULL = new GoError('bufio: buffer full');
/** net/textproto's errMessageTooLarge (multipart replaces it with ErrMessageTooLarge). */
const ERR_TEXTPROTO_TOO_LARGE = new GoError('message too large');
const ERR_MESSAGE_TOO_LARGE = new GoError('multipart: message too large');

/** multipart's peekBufferSize, and bufio's default size (the quoted-printable reader's buffer). */
const BUFFER_SIZE = 4096;
/** multipart's maxMIMEHeaderSize and its default multipartmaxheaders. */
const MAX_MIME_HEADER_SIZE = 10 << 20;
const MAX_MIME_HEADERS = 10000;

const EMPTY = Buffer.alloc(0);

/** The index of the first `byte` in data[from, to), or -1 (bytes.IndexByte on that slice). */
function indexOfByte(data: Uint8Array, byte: number, from: number, to: number): number {
  for (let i = from; i < to; i++) if (data[i] === byte) return i;
  return -1;
}

/** Where a bufio.Reader gets its bytes: the next `n` bytes of the body (n <= max), and an error. */
interface ByteSource {
  read(max: number): [number, GoError | undefined];
}

/** strings.Reader behind multipart's stickyErrorReader: EOF once the bytes are used up. */
class BodySource implements ByteSource {
  constructor(
    private pos: number,
    private readonly end: number,
  ) {}
  read(max: number): [number, GoError | undefined] {
    if (this.pos >= this.end) return [0, EOF];
    const n = Math.min(max, this.end - this.pos);
    this.pos += n;
    return [n, undefined];
  }
}

/**
 * bufio.Reader (size 4096) over `data`, whose source yields `data`'s bytes in order from
 * `start`: the buffer is `data[r, w)`. `fill` slides and reads up to the free space, as Go does.
 */
class BufReader {
  r: number;
  w: number;
  private err: GoError | undefined;
  constructor(
    readonly data: Buffer,
    start: number,
    private readonly source: ByteSource,
  ) {
    this.r = start;
    this.w = start;
  }

  buffered(): number {
    return this.w - this.r;
  }

  private fill(): void {
    const [n, err] = this.source.read(BUFFER_SIZE - (this.w - this.r));
    this.w += n;
    if (err !== undefined) this.err = err;
  }

  private readErr(): GoError | undefined {
    const err = this.err;
    this.err = undefined;
    return err;
  }

  /** Peek(n): the end of the bytes peeked (from r) and the error. */
  peek(n: number): [number, GoError | undefined] {
    while (this.w - this.r < n && this.w - this.r < BUFFER_SIZE && this.err === undefined) this.fill();
    if (n > BUFFER_SIZE) return [this.w, ERR_BUFFER_FULL];
    const avail = this.w - this.r;
    if (avail < n) return [this.w, this.readErr() ?? ERR_BUFFER_FULL];
    return [this.r + n, undefined];
  }

  /**
   * ReadSlice('\n'): the line data[start, end) and the error. Each buffered byte is searched
   * once, and never past w: Buffer.indexOf would search on to the end of the body at every
   * call, quadratic in the length of a long line read 4096 bytes at a time.
   */
  readSlice(): [number, number, GoError | undefined] {
    let from = this.r;
    for (;;) {
      const i = indexOfByte(this.data, LF, from, this.w);
      if (i !== -1) {
        const start = this.r;
        this.r = i + 1;
        return [start, i + 1, undefined];
      }
      if (this.err !== undefined) {
        const start = this.r;
        this.r = this.w;
        return [start, this.w, this.readErr()];
      }
      if (this.w - this.r >= BUFFER_SIZE) {
        const start = this.r;
        this.r = this.w;
        return [start, this.w, ERR_BUFFER_FULL];
      }
      from = this.w;
      this.fill();
    }
  }

  /** ReadLine: the line without its "\n" or "\r\n", whether it continues, and the error. */
  readLine(): [number, number, boolean, GoError | undefined] {
    const [start, end, err] = this.readSlice();
    if (err === ERR_BUFFER_FULL) {
      // a "\r" at the end of the buffer may start the "\r\n": leave it for the next call
      if (end > start && this.data[end - 1] === CR) {
        this.r--;
        return [start, end - 1, true, undefined];
      }
      return [start, end, true, undefined];
    }
    if (end === start) return [start, end, false, err];
    let cut = end;
    if (this.data[end - 1] === LF) cut -= end - start > 1 && this.data[end - 2] === CR ? 2 : 1;
    return [start, cut, false, undefined];
  }

  /** ReadByte: the byte, or the error. */
  readByte(): number | GoError {
    while (this.r === this.w) {
      if (this.err !== undefined) return this.readErr() as GoError;
      this.fill();
    }
    return this.data[this.r++] as number;
  }

  /** UnreadByte, right after a ReadByte. */
  unreadByte(): void {
    this.r--;
  }

  /** Read into a slice of `n` bytes, when at least `n` are buffered: consume them. */
  consume(n: number): void {
    this.r += n;
  }
}

// --- Go's %q (strconv.Quote) of bytes, for the error texts ---

const PRINTABLE = /^[\p{L}\p{M}\p{N}\p{P}\p{S}]$/u;
const hex2 = (b: number): string => b.toString(16).padStart(2, '0');

/** The width of the rune decodeRune decoded last. */
let runeWidth = 1;

/** b[i] as a continuation byte in [lo, hi]: its 6 bits, or -1. */
function continuation(b: Uint8Array, i: number, lo: number, hi: number): number {
  const c = b[i];
  return c !== undefined && c >= lo && c <= hi ? c & 0x3f : -1;
}

/** utf8.DecodeRune at b[i]: the rune (its width in runeWidth); an invalid encoding is -1, width 1. */
function decodeRune(b: Uint8Array, i: number): number {
  const c0 = b[i] as number;
  runeWidth = 1;
  if (c0 < 0x80) return c0;
  let rune = -1;
  if (c0 >= 0xc2 && c0 <= 0xdf) {
    const c1 = continuation(b, i + 1, 0x80, 0xbf);
    if (c1 >= 0) {
      rune = ((c0 & 0x1f) << 6) | c1;
      runeWidth = 2;
    }
  } else if (c0 >= 0xe0 && c0 <= 0xef) {
    const c1 = continuation(b, i + 1, c0 === 0xe0 ? 0xa0 : 0x80, c0 === 0xed ? 0x9f : 0xbf);
    const c2 = c1 < 0 ? -1 : continuation(b, i + 2, 0x80, 0xbf);
    if (c2 >= 0) {
      rune = ((c0 & 0x0f) << 12) | (c1 << 6) | c2;
      runeWidth = 3;
    }
  } else if (c0 >= 0xf0 && c0 <= 0xf4) {
    const c1 = continuation(b, i + 1, c0 === 0xf0 ? 0x90 : 0x80, c0 === 0xf4 ? 0x8f : 0xbf);
    const c2 = c1 < 0 ? -1 : continuation(b, i + 2, 0x80, 0xbf);
    const c3 = c2 < 0 ? -1 : continuation(b, i + 3, 0x80, 0xbf);
    if (c3 >= 0) {
      rune = ((c0 & 0x07) << 18) | (c1 << 12) | (c2 << 6) | c3;
      runeWidth = 4;
    }
  }
  return rune;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * A Go string's bytes as text the way Go treats them (encoding/json, `for range`, Rego's
 * count): each byte of an invalid sequence is one U+FFFD (TextDecoder would give one per
 * maximal subpart).
 */
function goText(b: Buffer): string {
  if (isUtf8(b)) return b.toString('utf8');
  // at most one UTF-16 unit per byte
  const units = new Uint16Array(b.length);
  let n = 0;
  for (let i = 0; i < b.length; ) {
    const c = b[i] as number;
    if (c < 0x80) {
      units[n++] = c;
      i++;
      continue;
    }
    const r = decodeRune(b, i);
    if (r < 0) units[n++] = 0xfffd;
    else if (r < 0x10000) units[n++] = r;
    else {
      units[n++] = 0xd800 + ((r - 0x10000) >> 10);
      units[n++] = 0xdc00 + ((r - 0x10000) & 0x3ff);
    }
    i += runeWidth;
  }
  if (LITTLE_ENDIAN) return Buffer.from(units.buffer, 0, n * 2).toString('utf16le');
  let out = '';
  for (let i = 0; i < n; i += 4096) out += String.fromCharCode(...units.subarray(i, Math.min(n, i + 4096)));
  return out;
}

/**
 * Go's %q (strconv.Quote) of a byte string. The quoted text is written as UTF-8 bytes (a rune
 * written as it is keeps its own bytes, every escape is ASCII) and decoded once at the end.
 */
function goQuote(b: Buffer): string {
  let out = Buffer.allocUnsafe(b.length + 16);
  let n = 0;
  const reserve = (bytes: number): void => {
    if (n + bytes <= out.length) return;
    const grown = Buffer.allocUnsafe(2 * out.length + bytes);
    out.copy(grown, 0, 0, n);
    out = grown;
  };
  const writeAscii = (text: string): void => {
    reserve(text.length);
    for (let k = 0; k < text.length; k++) out[n++] = text.charCodeAt(k);
  };
  out[n++] = 0x22;
  for (let i = 0; i < b.length; ) {
    const r = decodeRune(b, i);
    if (r < 0) {
      writeAscii(`\\x${hex2(b[i] as number)}`);
      i++;
    } else if (r === SP || (r > SP && r !== 0x22 && r !== 0x5c && r !== 0x7f && (r < 0x7f || PRINTABLE.test(String.fromCodePoint(r))))) {
      reserve(runeWidth);
      for (let k = 0; k < runeWidth; k++) out[n++] = b[i + k] as number;
      i += runeWidth;
    } else {
      writeAscii(escapeRune(r));
      i += runeWidth;
    }
  }
  reserve(1);
  out[n++] = 0x22;
  return out.toString('utf8', 0, n);
}

/** How strconv.Quote escapes a valid rune that it does not write as it is. */
function escapeRune(r: number): string {
  if (r === 0x22 || r === 0x5c) return `\\${String.fromCharCode(r)}`;
  if (r === 0x07) return '\\a';
  if (r === 0x08) return '\\b';
  if (r === 0x0c) return '\\f';
  if (r === LF) return '\\n';
  if (r === CR) return '\\r';
  if (r === TAB) return '\\t';
  if (r === 0x0b) return '\\v';
  if (r < SP || r === 0x7f) return `\\x${hex2(r)}`;
  if (r < 0x10000) return `\\u${r.toString(16).padStart(4, '0')}`;
  return `\\U${r.toString(16).padStart(8, '0')}`;
}

// --- net/textproto's readMIMEHeader, with multipart's limits ---

const startsWith = (b: Uint8Array, prefix: Uint8Array): boolean => {
  if (prefix.length > b.length) return false;
  for (let i = 0; i < prefix.length; i++) if (b[i] !== prefix[i]) return false;
  return true;
};

/** Whether buf[at:] is a prefix of `of`. */
function isPrefixOf(buf: Uint8Array, at: number, of: Uint8Array): boolean {
  if (buf.length - at > of.length) return false;
  for (let i = at; i < buf.length; i++) if (buf[i] !== of[i - at]) return false;
  return true;
}

/** Where textproto's trim of data[start, end) starts: after the leading spaces and tabs. */
function blanksEnd(data: Buffer, start: number, end: number): number {
  while (start < end && (data[start] === SP || data[start] === TAB)) start++;
  return start;
}

/** Where textproto's trim of data[start, end) ends: before the trailing spaces and tabs. */
function trailingBlanksStart(data: Buffer, start: number, end: number): number {
  while (end > start && (data[end - 1] === SP || data[end - 1] === TAB)) end--;
  return end;
}

/** textproto's trim of data[start, end): without leading and trailing spaces and tabs. */
function trimBlanks(data: Buffer, start: number, end: number): Buffer {
  const from = blanksEnd(data, start, end);
  return data.subarray(from, trailingBlanksStart(data, from, end));
}

/** RFC 7230 tchar (textproto's validHeaderFieldByte). */
const FIELD_BYTE = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") FIELD_BYTE[c.charCodeAt(0)] = 1;
/** textproto's validHeaderValueByte: HTAB, SP, VCHAR and obs-text. */
const validValueByte = (c: number): boolean => c === TAB || (c >= SP && c !== 0x7f);

/** CanonicalMIMEHeaderKey of a token: upper case first and after each "-", lower case elsewhere. */
function canonicalKey(k: Uint8Array): Buffer {
  const out = Buffer.from(k);
  let upper = true;
  for (let i = 0; i < out.length; i++) {
    const c = out[i] as number;
    if (upper && c >= 0x61 && c <= 0x7a) out[i] = c - 0x20;
    else if (!upper && c >= 0x41 && c <= 0x5a) out[i] = c + 0x20;
    upper = c === 0x2d;
  }
  return out;
}

/** The header fields opa-envoy-plugin and NextPart read: each the first value Header.Get returns. */
interface PartHeader {
  contentDisposition?: string;
  contentType?: string;
  contentTransferEncoding?: string;
}

/** The result of a Go call that returns a value or an error. */
type Result<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: GoError };
const fail = (error: GoError): { ok: false; error: GoError } => ({ ok: false, error });

class TextprotoReader {
  /** The line readLineSlice read: data[start, end). */
  private start = 0;
  private end = 0;
  constructor(private readonly br: BufReader) {}

  /** readLineSlice(lim): the line in start and end (a long line's fragments are contiguous). */
  private readLineSlice(lim: number): GoError | undefined {
    let start = -1;
    let end = -1;
    for (;;) {
      const [s, e, more, err] = this.br.readLine();
      if (err !== undefined) return err;
      const length = start === -1 ? 0 : end - start;
      if (lim >= 0 && length + (e - s) > lim) return ERR_TEXTPROTO_TOO_LARGE;
      if (start === -1) start = s;
      end = e;
      if (!more) {
        this.start = start;
        this.end = end;
        return undefined;
      }
    }
  }

  private skipSpace(): number {
    let n = 0;
    for (;;) {
      const c = this.br.readByte();
      if (c instanceof GoError) break;
      if (c !== SP && c !== TAB) {
        this.br.unreadByte();
        break;
      }
      n++;
    }
    return n;
  }

  /** readContinuedLineSlice(lim, mustHaveFieldNameColon). */
  private readContinuedLineSlice(lim: number): Buffer | GoError {
    const br = this.br;
    const data = br.data;
    const err = this.readLineSlice(lim);
    if (err !== undefined) return err;
    const { start, end } = this;
    if (start === end) return EMPTY;
    if (indexOfByte(data, 0x3a, start, end) === -1) return new GoError(`malformed MIME header: missing colon: ${goQuote(data.subarray(start, end))}`);
    // Go's fast path (the next line starts a header or ends them): nothing is read here
    if (br.buffered() > 1) {
      const p0 = data[br.r] as number;
      const p1 = data[br.r + 1] as number;
      const lower = p0 | 0x20;
      if ((lower >= 0x61 && lower <= 0x7a) || p0 === LF || (p0 === CR && p1 === LF)) return trimBlanks(data, start, end);
    }
    // the trimmed lines, as [start, end) pairs in data (the bytes stay there once read), joined
    // by single spaces at the end: Go appends them to one buffer
    const from = blanksEnd(data, start, end);
    const bounds: number[] = [from, trailingBlanksStart(data, from, end)];
    let length = (bounds[1] as number) - from;
    lim -= length;
    while (this.skipSpace() > 0) {
      length++; // the space
      if (length >= lim) return ERR_TEXTPROTO_TOO_LARGE;
      // Go drops this error: the next read meets it again (the space stays, after no line)
      if (this.readLineSlice(lim - length) !== undefined) {
        bounds.push(0, 0);
        break;
      }
      const lineFrom = blanksEnd(data, this.start, this.end);
      const lineTo = trailingBlanksStart(data, lineFrom, this.end);
      bounds.push(lineFrom, lineTo);
      length += lineTo - lineFrom;
    }
    const joined = Buffer.allocUnsafe(length);
    let n = 0;
    for (let k = 0; k < bounds.length; k += 2) {
      if (k > 0) joined[n++] = SP;
      for (let i = bounds[k] as number, to = bounds[k + 1] as number; i < to; i++) joined[n++] = data[i] as number;
    }
    return joined;
  }

  /** readMIMEHeader(r, maxMIMEHeaderSize, maxMIMEHeaders); errors as multipart returns them. */
  readMIMEHeader(): Result<PartHeader> {
    const result = this.readHeader();
    return !result.ok && result.error === ERR_TEXTPROTO_TOO_LARGE ? fail(ERR_MESSAGE_TOO_LARGE) : result;
  }

  private readHeader(): Result<PartHeader> {
    const br = this.br;
    br.peek(1); // upcomingHeaderKeys: "force a buffer load if empty"
    let maxMemory = MAX_MIME_HEADER_SIZE - 400;
    let maxHeaders = MAX_MIME_HEADERS;
    const header: PartHeader = {};
    const [, peekErr] = br.peek(1);
    if (peekErr === undefined && (br.data[br.r] === SP || br.data[br.r] === TAB)) {
      const err = this.readLineSlice(80);
      if (err !== undefined) return fail(err);
      return fail(new GoError(`malformed MIME header initial line: ${goQuote(br.data.subarray(this.start, this.end))}`));
    }
    const seen = new Set<string>();
    for (;;) {
      const line = this.readContinuedLineSlice(maxMemory);
      if (line instanceof GoError) return fail(line);
      if (line.length === 0) return { ok: true, value: header };
      const colon = line.indexOf(0x3a);
      // canonicalMIMEHeaderKey: token bytes are canonicalized; with a space the key is kept as
      // it is (so Header.Get never finds it); anything else is malformed
      let spaced = false;
      let valid = colon > 0;
      for (let i = 0; i < colon && valid; i++) {
        const c = line[i] as number;
        if (c === SP) spaced = true;
        else if (FIELD_BYTE[c] !== 1) valid = false;
      }
      if (!valid) return fail(new GoError(`malformed MIME header line: ${goQuote(line)}`));
      for (let i = colon + 1; i < line.length && valid; i++) valid = validValueByte(line[i] as number);
      // Go canonicalizes the key in place before it checks the value, so the quoted line has it
      if (!valid) return fail(new GoError(`malformed MIME header line: ${goQuote(spaced ? line : Buffer.concat([canonicalKey(line.subarray(0, colon)), line.subarray(colon)]))}`));
      if (--maxHeaders < 0) return fail(ERR_TEXTPROTO_TOO_LARGE);
      let from = colon + 1;
      while (from < line.length && (line[from] === SP || line[from] === TAB)) from++;
      const keyText = line.toString('latin1', 0, colon);
      const key = spaced ? ` ${keyText}` : keyText.toLowerCase();
      if (!seen.has(key)) {
        seen.add(key);
        maxMemory -= colon + 200;
        if (key === 'content-disposition') header.contentDisposition = goText(line.subarray(from));
        else if (key === 'content-type') header.contentType = goText(line.subarray(from));
        else if (key === 'content-transfer-encoding') header.contentTransferEncoding = line.toString('latin1', from);
      }
      maxMemory -= line.length - from;
      if (maxMemory < 0) return fail(ERR_TEXTPROTO_TOO_LARGE);
    }
  }
}

// --- mime/multipart ---

/**
 * matchAfterPrefix, for the boundary of `prefixLength` bytes at buf[at]: +1 when it is one
 * (followed by "--", space, tab, CR, LF or the end of input), -1 when it is not, 0 when more
 * input is needed.
 */
function matchAfterPrefix(buf: Uint8Array, at: number, prefixLength: number, readErr: GoError | undefined): number {
  const after = at + prefixLength;
  if (buf.length === after) return readErr !== undefined ? 1 : 0;
  const c = buf[after] as number;
  if (c === SP || c === TAB || c === CR || c === LF) return 1;
  if (c === 0x2d) {
    if (buf.length === after + 1) return readErr !== undefined ? -1 : 0;
    if (buf[after + 1] === 0x2d) return 1;
  }
  return -1;
}

/**
 * scanUntilBoundary: how many bytes of `buf` are part body, and the error once they are read.
 * With `wholeLookAlikes`, a run of boundary look-alikes is taken at once (see below).
 */
function scanUntilBoundary(buf: Buffer, dashBoundary: Buffer, nlDashBoundary: Buffer, total: number, readErr: GoError | undefined, wholeLookAlikes: boolean): [number, GoError | undefined] {
  if (total === 0) {
    // at the beginning of the body, "--boundary" may come without a line break before it
    if (startsWith(buf, dashBoundary)) {
      const match = matchAfterPrefix(buf, 0, dashBoundary.length, readErr);
      if (match === -1) return [dashBoundary.length, undefined];
      return [0, match === 0 ? undefined : EOF];
    }
    if (startsWith(dashBoundary, buf)) return [0, readErr];
  }
  let i = buf.indexOf(nlDashBoundary);
  if (i >= 0) {
    let match = matchAfterPrefix(buf, i, nlDashBoundary.length, readErr);
    if (match !== -1) return [i, match === 0 ? undefined : EOF];
    if (!wholeLookAlikes) return [i + nlDashBoundary.length, undefined];
    // Go returns the body up to the end of this look-alike ("\r\n--boundaryX") and scans the
    // rest of the buffer on the next Read, which finds the look-alikes that follow the same
    // way: they are all taken here, and the scan after the last one is left to the next call
    // (one call per buffer rather than per look-alike)
    let body: number;
    do {
      body = i + nlDashBoundary.length;
      i = buf.indexOf(nlDashBoundary, body);
      if (i < 0) break;
      match = matchAfterPrefix(buf, i, nlDashBoundary.length, readErr);
    } while (match === -1);
    return [body, undefined];
  }
  if (startsWith(nlDashBoundary, buf)) return [0, readErr];
  const last = buf.lastIndexOf(nlDashBoundary[0] as number);
  if (last >= 0 && isPrefixOf(buf, last, nlDashBoundary)) return [last, undefined];
  return [buf.length, readErr];
}

/** partReader: a part's raw bytes, read from the multipart reader's buffer up to the boundary. */
class PartReader implements ByteSource {
  private n = 0;
  private total = 0;
  private err: GoError | undefined;
  private readErr: GoError | undefined;
  /**
   * `wholeLookAlikes`: the reader is read to the end of the part whatever the size of its
   * reads, so several of Go's reads may be one (see scanUntilBoundary). Not so under a
   * quoted-printable decoder, which may stop at a decoding error: how far the part was read
   * then decides where NextPart goes on, and depends on the size of each read.
   */
  constructor(
    private readonly mr: MultipartReader,
    private readonly wholeLookAlikes: boolean,
  ) {}

  read(max: number): [number, GoError | undefined] {
    const br = this.mr.br;
    while (this.n === 0 && this.err === undefined) {
      const peek = br.data.subarray(br.r, br.w);
      [this.n, this.err] = scanUntilBoundary(peek, this.mr.dashBoundary, this.mr.nlDashBoundary, this.total, this.readErr, this.wholeLookAlikes);
      if (this.n === 0 && this.err === undefined) {
        // have the buffer read more
        this.readErr = br.peek(peek.length + 1)[1];
        if (this.readErr === EOF) this.readErr = ERR_UNEXPECTED_EOF;
      }
    }
    if (this.n === 0) return [0, this.err];
    const n = Math.min(max, this.n);
    br.consume(n);
    this.total += n;
    this.n -= n;
    return [n, this.n === 0 ? this.err : undefined];
  }
}

const QP_WHITESPACE = (b: number): boolean => b === LF || b === CR || b === SP || b === TAB;
const CRLF_BYTES = Buffer.from('\r\n');
const LF_BYTES = Buffer.from('\n');

/**
 * mime/quotedprintable's Reader, over a part (through its own 4096-byte bufio.Reader). The line
 * being decoded is data[lineStart, lineEnd) followed by the line break Go appends back to it
 * (none, "\n" or "\r\n"), read in place rather than copied; the decoded bytes go into one buffer
 * that doubles when it must.
 */
class QuotedPrintableReader {
  private readonly br: BufReader;
  private rerr: GoError | undefined;
  private lineStart = 0;
  private lineEnd = 0;
  private lineBreak: Uint8Array = EMPTY;
  /** How much of the line (with its line break) is decoded. */
  private at = 0;
  constructor(data: Buffer, start: number, part: PartReader) {
    this.br = new BufReader(data, start, part);
  }

  /** The line's byte at `k` (undefined past its end). */
  private lineByte(k: number): number | undefined {
    const length = this.lineEnd - this.lineStart;
    return k < length ? this.br.data[this.lineStart + k] : this.lineBreak[k - length];
  }

  /** ReadSlice a new line and trim it as Go does (this.rerr is the read's error or a soft break's). */
  private nextLine(): void {
    const data = this.br.data;
    const [start, end, err] = this.br.readSlice();
    this.rerr = err;
    const hasLF = end > start && data[end - 1] === LF;
    const hasCR = hasLF && end - start > 1 && data[end - 2] === CR;
    let trimmed = end;
    while (trimmed > start && QP_WHITESPACE(data[trimmed - 1] as number)) trimmed--;
    this.lineStart = start;
    this.lineBreak = EMPTY;
    this.at = 0;
    if (trimmed > start && data[trimmed - 1] === 0x3d) {
      // a soft line break: "=" then only white space up to the line's end
      let rest = trimmed;
      while (rest < end && (data[rest] === SP || data[rest] === TAB)) rest++;
      this.lineEnd = trimmed - 1;
      const endsLine = data[rest] === LF || (data[rest] === CR && rest + 1 < end && data[rest + 1] === LF);
      if (rest < end ? !endsLine : !(this.lineEnd > start && this.rerr === EOF)) {
        this.rerr = new GoError(`quotedprintable: invalid bytes after =: ${goQuote(data.subarray(rest, end))}`);
      }
    } else {
      this.lineEnd = trimmed;
      if (hasLF) this.lineBreak = hasCR ? CRLF_BYTES : LF_BYTES;
    }
  }

  /** Read until an error: the decoded bytes, and the error (EOF at the end of the part). */
  readAll(): [Buffer, GoError] {
    let out = EMPTY;
    let n = 0;
    for (;;) {
      const length = this.lineEnd - this.lineStart + this.lineBreak.length;
      if (this.at >= length) {
        if (this.rerr !== undefined) return [out.subarray(0, n), this.rerr];
        this.nextLine();
        continue;
      }
      // the decoded line is never longer than the line
      if (out.length - n < length - this.at) {
        const grown = Buffer.allocUnsafe(Math.max(2 * out.length, n + length, 256));
        out.copy(grown, 0, 0, n);
        out = grown;
      }
      for (; this.at < length; this.at++) {
        let b = this.lineByte(this.at) as number;
        if (b === 0x3d) {
          const h = this.lineByte(this.at + 1);
          const l = this.lineByte(this.at + 2);
          let err: GoError | undefined;
          if (length - this.at - 1 < 2) err = ERR_UNEXPECTED_EOF;
          else if (!isHex(h as number)) err = new GoError(`quotedprintable: invalid hex byte 0x${hex2(h as number)}`);
          else if (!isHex(l as number)) err = new GoError(`quotedprintable: invalid hex byte 0x${hex2(l as number)}`);
          if (err === undefined) {
            b = hexValue(h as number) * 16 + hexValue(l as number);
            this.at += 2;
          } else if (!(length - this.at >= 2 && h !== CR && h !== LF)) {
            return [out.subarray(0, n), err];
          }
          // else Go keeps a "=" that no hex digits follow
        } else if (b !== TAB && b !== CR && b !== LF && b < 0x80 && (b < SP || b > 0x7e)) {
          return [out.subarray(0, n), new GoError(`quotedprintable: invalid unescaped byte 0x${hex2(b)} in body`)];
        }
        out[n++] = b;
      }
    }
  }
}
/** multipart.Part: its header fields and a reader of its body. */
class Part {
  private readonly qp: QuotedPrintableReader | undefined;
  private readonly raw: PartReader;
  private readonly start: number;
  constructor(
    private readonly mr: MultipartReader,
    readonly header: PartHeader,
  ) {
    this.start = mr.br.r;
    // NextPart (not NextRawPart) decodes quoted-printable parts (strings.EqualFold is ASCII
    // case folding for this word)
    const quotedPrintable = header.contentTransferEncoding?.toLowerCase() === 'quoted-printable';
    this.raw = new PartReader(mr, !quotedPrintable);
    if (quotedPrintable) this.qp = new QuotedPrintableReader(mr.br.data, this.start, this.raw);
  }

  /** Whether the body is decoded (quoted-printable) rather than a slice of the multipart body. */
  get decoded(): boolean {
    return this.qp !== undefined;
  }

  /** io.ReadAll(p): the body, or the error (io.ReadAll's success is the reader's EOF). */
  readAll(): Result<Buffer> {
    if (this.qp !== undefined) {
      const [bytes, err] = this.qp.readAll();
      return err === EOF ? { ok: true, value: bytes } : fail(err);
    }
    let total = 0;
    for (;;) {
      const [n, err] = this.raw.read(Number.POSITIVE_INFINITY);
      total += n;
      if (err !== undefined) return err === EOF ? { ok: true, value: this.mr.br.data.subarray(this.start, this.start + total) } : fail(err);
    }
  }

  /** Close: read the rest of the body, ignoring errors (where it stops is where NextPart goes on). */
  close(): void {
    if (this.qp !== undefined) {
      this.qp.readAll();
      return;
    }
    // the raw bytes up to the boundary or an error, without making them a value
    for (;;) if (this.raw.read(Number.POSITIVE_INFINITY)[1] !== undefined) return;
  }
}

/** multipart.Reader. */
class MultipartReader {
  readonly br: BufReader;
  dashBoundary: Buffer;
  nlDashBoundary: Buffer;
  private readonly dashBoundaryDash: Buffer;
  private nl: Buffer;
  private currentPart: Part | undefined;
  private partsRead = 0;

  constructor(data: Buffer, boundary: string) {
    const b = Buffer.from(`\r\n--${boundary}--`, 'utf8');
    this.br = new BufReader(data, 0, new BodySource(0, data.length));
    this.nl = b.subarray(0, 2);
    this.nlDashBoundary = b.subarray(0, b.length - 2);
    this.dashBoundaryDash = b.subarray(2);
    this.dashBoundary = b.subarray(2, b.length - 2);
  }

  /** NextPart: the next part, or an error (EOF when there are no more parts). */
  nextPart(): Result<Part> {
    this.currentPart?.close();
    if (this.dashBoundary.length === 2) return fail(new GoError('multipart: boundary is empty'));
    const data = this.br.data;
    let expectNewPart = false;
    for (;;) {
      const [start, end, err] = this.br.readSlice();
      // "--boundary--" without a line break at the end of the body is the end too
      if (err === EOF && this.isFinalBoundary(start, end)) return fail(EOF);
      if (err !== undefined) return fail(new GoError(`multipart: NextPart: ${err.message}`));
      if (this.isBoundaryDelimiterLine(start, end)) {
        this.partsRead++;
        const header = new TextprotoReader(this.br).readMIMEHeader();
        if (!header.ok) return header;
        this.currentPart = new Part(this, header.value);
        return { ok: true, value: this.currentPart };
      }
      if (this.isFinalBoundary(start, end)) return fail(EOF);
      if (expectNewPart) return fail(new GoError(`multipart: expecting a new Part; got line ${goQuote(data.subarray(start, end))}`));
      if (this.partsRead === 0) continue; // the preamble
      // the line break between a part's body and the next boundary line
      if (this.isLineBreak(start, end)) {
        expectNewPart = true;
        continue;
      }
      return fail(new GoError(`multipart: unexpected line in Next(): ${goQuote(data.subarray(start, end))}`));
    }
  }

  /** Whether the body has `prefix` at `at`, before `end`. */
  private has(prefix: Buffer, at: number, end: number): boolean {
    if (end - at < prefix.length) return false;
    const data = this.br.data;
    for (let i = 0; i < prefix.length; i++) if (data[at + i] !== prefix[i]) return false;
    return true;
  }

  /** Whether data[start, end) is the line break in use. */
  private isLineBreak(start: number, end: number): boolean {
    return end - start === this.nl.length && this.has(this.nl, start, end);
  }

  /** `^--boundary--[ \t]*(\r\n)?$` (with the line break in use), for the line data[start, end). */
  private isFinalBoundary(start: number, end: number): boolean {
    if (!this.has(this.dashBoundaryDash, start, end)) return false;
    const data = this.br.data;
    let i = start + this.dashBoundaryDash.length;
    while (i < end && (data[i] === SP || data[i] === TAB)) i++;
    return i === end || this.isLineBreak(i, end);
  }

  /** `--boundary[ \t]*` and the line break; a first one ending in a bare "\n" switches to "\n". */
  private isBoundaryDelimiterLine(start: number, end: number): boolean {
    if (!this.has(this.dashBoundary, start, end)) return false;
    const data = this.br.data;
    let i = start + this.dashBoundary.length;
    while (i < end && (data[i] === SP || data[i] === TAB)) i++;
    if (this.partsRead === 0 && end - i === 1 && data[i] === LF) {
      this.nl = this.nl.subarray(1);
      this.nlDashBoundary = this.nlDashBoundary.subarray(1);
    }
    return this.isLineBreak(i, end);
  }
}

/**
 * A string payload and its UTF-8 bytes: a value (whose ends are at ASCII bytes or the end) is
 * sliced from the string rather than decoded again, its byte offsets mapped to UTF-16 ones by
 * one forward scan (values come in order).
 */
class StringOffsets {
  private byte = 0;
  private unit = 0;
  constructor(
    private readonly text: string,
    private readonly data: Buffer,
  ) {}

  private unitAt(byte: number): number {
    if (this.data.length === this.text.length) return byte; // ASCII
    if (byte < this.byte) {
      this.byte = 0;
      this.unit = 0;
    }
    const data = this.data;
    let unit = this.unit;
    for (let i = this.byte; i < byte; i++) {
      const c = data[i] as number;
      // a lead byte starts one UTF-16 unit, a 4-byte one (a surrogate pair) two
      if ((c & 0xc0) !== 0x80) unit += c >= 0xf0 ? 2 : 1;
    }
    this.byte = byte;
    this.unit = unit;
    return unit;
  }

  slice(start: number, end: number): string {
    const from = this.unitAt(start);
    return this.text.slice(from, this.unitAt(end));
  }
}

/**
 * opa-envoy-plugin's multipart loop: `{name: [value, ...]}` from every part NextPart returns
 * until io.EOF; a part whose FormName is "" is skipped (and only read past); a part whose
 * Content-Type contains `application/json` contributes its parsed JSON. Any other error of
 * NextPart or of reading a named part is thrown with Go's text. `payload` is the body as Go
 * sees it: a string's UTF-8 bytes, or the raw bytes.
 */
export function parseMultipartForm(payload: string | Uint8Array, boundary: string): Record<string, unknown[]> {
  const data = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  const text = typeof payload === 'string' ? new StringOffsets(payload, data) : undefined;
  const reader = new MultipartReader(data, boundary);
  const values: Record<string, unknown[]> = Object.create(null) as Record<string, unknown[]>;
  for (;;) {
    const next = reader.nextPart();
    if (!next.ok) {
      if (next.error === EOF) return values;
      throw invalid(next.error.message);
    }
    const part = next.value;
    const name = formName(part.header.contentDisposition);
    if (name === '') continue;
    const body = part.readAll();
    if (!body.ok) throw invalid(body.error.message);
    const start = body.value.byteOffset - data.byteOffset;
    const string = text !== undefined && !part.decoded ? text.slice(start, start + body.value.length) : goText(body.value);
    let value: unknown = string;
    if ((part.header.contentType ?? '').includes('application/json')) {
      try {
        value = JSON.parse(string);
      } catch (error) {
        // upstream returns util.UnmarshalJSON's error as it is (Go's wording; V8's here)
        throw invalid((error as Error).message);
      }
    }
    (values[name] ??= []).push(value);
  }
}
