/**
 * The parts of Go's `net/url` (and `strconv.ParseInt`) that opa-envoy-plugin's input
 * document depends on, reproduced so `parsed_path`, `parsed_query`, form bodies and the
 * truncation check give the same values and fail on the same inputs as upstream:
 *
 * - `pathUnescape` = `url.PathUnescape`: every `%` must start two hex digits, `+` stays `+`.
 * - `queryUnescape` = `url.QueryUnescape`: the same, and `+` becomes a space.
 * - `parseQuery` = `url.ParseQuery`: `&`-separated pairs, a pair containing `;` is an error
 *   (Go >= 1.17), empty pairs are skipped, a key without `=` gets the value "", values keep
 *   their order. Go returns the map together with an error; the caller (upstream's
 *   `getParsedPathAndQuery` / `getParsedBody`) then fails the whole request, so here any
 *   error throws.
 * - `parseInt64` = `strconv.ParseInt(s, 10, 64)`.
 *
 * Go strings are bytes; decoded bytes that are not UTF-8 become U+FFFD here, as they do when
 * OPA serialises the Go string to JSON.
 */
import { ErrorCodes, PavilionError } from '../lib/errors.ts';

/** Go's parse errors, as the request-invalid error upstream turns into a 400 denied response. */
function goError(message: string): PavilionError {
  return new PavilionError(ErrorCodes.EXTAUTHZ_REQUEST_INVALID, message);
}

export const UTF8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

export function isHex(code: number): boolean {
  return (code >= 0x30 && code <= 0x39) || (code >= 0x41 && code <= 0x46) || (code >= 0x61 && code <= 0x66);
}

export function hexValue(code: number): number {
  if (code <= 0x39) return code - 0x30;
  if (code <= 0x46) return code - 0x41 + 10;
  return code - 0x61 + 10;
}

const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const GO_PRINTABLE = /^[\p{L}\p{M}\p{N}\p{P}\p{S} ]$/u;
const GO_ESCAPES: Readonly<Record<number, string>> = { 7: '\\a', 8: '\\b', 9: '\\t', 10: '\\n', 11: '\\v', 12: '\\f', 13: '\\r', 0x22: '\\"', 0x5c: '\\\\' };

/** The first rune of `bytes`, as Go's utf8.DecodeRune reads it: undefined for an invalid byte (width 1). */
function decodeRune(bytes: Uint8Array): { rune: number; width: number } | undefined {
  const lead = bytes[0] as number;
  const width = lead < 0x80 ? 1 : lead >= 0xc2 && lead <= 0xdf ? 2 : lead >= 0xe0 && lead <= 0xef ? 3 : lead >= 0xf0 && lead <= 0xf4 ? 4 : 0;
  if (width === 0 || width > bytes.length) return undefined;
  try {
    return { rune: STRICT_UTF8.decode(bytes.subarray(0, width)).codePointAt(0) as number, width };
  } catch {
    return undefined; // bad continuation, overlong, or a surrogate
  }
}

/**
 * Go's `strconv.Quote` of a byte string (what `url.EscapeError` prints): printable runes as
 * they are, `"` and `\` escaped, control characters as `\n`-style escapes or `\xNN`, other
 * unprintable runes as `\uNNNN` / `\UNNNNNNNN`, and bytes that are not UTF-8 as `\xNN`.
 */
export function goQuote(bytes: Uint8Array): string {
  let out = '"';
  for (let i = 0; i < bytes.length; ) {
    const decoded = decodeRune(bytes.subarray(i));
    if (decoded === undefined) {
      out += `\\x${(bytes[i] as number).toString(16).padStart(2, '0')}`;
      i += 1;
      continue;
    }
    const { rune, width } = decoded;
    const char = String.fromCodePoint(rune);
    const escape = GO_ESCAPES[rune];
    if (escape !== undefined) out += escape;
    else if (GO_PRINTABLE.test(char)) out += char;
    else if (rune < 0x80) out += `\\x${rune.toString(16).padStart(2, '0')}`;
    else if (rune < 0x10000) out += `\\u${rune.toString(16).padStart(4, '0')}`;
    else out += `\\U${rune.toString(16).padStart(8, '0')}`;
    i += width;
  }
  return `${out}"`;
}

function unescape(s: string, plusIsSpace: boolean): string {
  if (!s.includes('%') && !(plusIsSpace && s.includes('+'))) return s;
  const bytes = Buffer.from(s, 'utf8');
  const out = Buffer.allocUnsafe(bytes.length);
  let n = 0;
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i] as number;
    if (b === 0x25) {
      if (i + 2 >= bytes.length || !isHex(bytes[i + 1] as number) || !isHex(bytes[i + 2] as number)) {
        throw goError(`invalid URL escape ${goQuote(bytes.subarray(i, Math.min(i + 3, bytes.length)))}`);
      }
      out[n++] = hexValue(bytes[i + 1] as number) * 16 + hexValue(bytes[i + 2] as number);
      i += 3;
    } else if (b === 0x2b && plusIsSpace) {
      out[n++] = 0x20;
      i++;
    } else {
      out[n++] = b;
      i++;
    }
  }
  return UTF8.decode(out.subarray(0, n));
}

export function pathUnescape(s: string): string {
  return unescape(s, false);
}

export function queryUnescape(s: string): string {
  return unescape(s, true);
}

/**
 * `url.ParseQuery`, as a null-prototype object of value lists; throws the error Go returns:
 * the last semicolon error, which overwrites any other, else the first unescape error.
 */
export function parseQuery(query: string): Record<string, string[]> {
  const values: Record<string, string[]> = Object.create(null) as Record<string, string[]>;
  let failure: PavilionError | undefined;
  for (const pair of query === '' ? [] : query.split('&')) {
    if (pair.includes(';')) {
      failure = goError('invalid semicolon separator in query'); // Go assigns it whatever came before
      continue;
    }
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    let key: string;
    let value: string;
    try {
      key = queryUnescape(eq === -1 ? pair : pair.slice(0, eq));
      value = queryUnescape(eq === -1 ? '' : pair.slice(eq + 1));
    } catch (error) {
      failure ??= error instanceof PavilionError ? error : goError(String(error));
      continue;
    }
    (values[key] ??= []).push(value);
  }
  if (failure !== undefined) throw failure;
  return values;
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/** `strconv.ParseInt(s, 10, 64)`: optional sign, decimal digits, int64 range. */
export function parseInt64(s: string): bigint {
  if (!/^[+-]?[0-9]+$/.test(s)) throw goError(`strconv.ParseInt: parsing ${JSON.stringify(s)}: invalid syntax`);
  const value = BigInt(s);
  if (value < INT64_MIN || value > INT64_MAX) {
    throw goError(`strconv.ParseInt: parsing ${JSON.stringify(s)}: value out of range`);
  }
  return value;
}
