/**
 * The parts of Go's `net/url` (and `strconv.ParseInt`) that opa-envoy-plugin's input
 * document depends on, reproduced so `parsed_path`, `parsed_query`, form bodies and the
 * truncation check give the same values and fail on the same inputs as upstream:
 *
 * - `pathUnescape` = `url.PathUnescape`: every `%` must start two hex digits, `+` stays `+`.
 * - `queryUnescape` = `url.QueryUnescape`: the same, and `+` becomes a space.
 * - `parseQuery` = `url.ParseQuery`: `&`-separated pairs, a pair containing `;` is an error
 *   (Go >= 1.17), empty pairs are skipped, a key without `=` gets the value "", values keep
 *   their order. Go returns the map together with the first error; the caller (upstream's
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

function unescape(s: string, plusIsSpace: boolean): string {
  if (!s.includes('%') && !(plusIsSpace && s.includes('+'))) return s;
  const bytes = Buffer.from(s, 'utf8');
  const out = Buffer.allocUnsafe(bytes.length);
  let n = 0;
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i] as number;
    if (b === 0x25) {
      if (i + 2 >= bytes.length || !isHex(bytes[i + 1] as number) || !isHex(bytes[i + 2] as number)) {
        const bad = bytes.subarray(i, Math.min(i + 3, bytes.length)).toString('latin1');
        throw goError(`invalid URL escape ${JSON.stringify(bad)}`);
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

/** `url.ParseQuery`, as a null-prototype object of value lists; throws on Go's first error. */
export function parseQuery(query: string): Record<string, string[]> {
  const values: Record<string, string[]> = Object.create(null) as Record<string, string[]>;
  let firstError: PavilionError | undefined;
  for (const pair of query === '' ? [] : query.split('&')) {
    if (pair.includes(';')) {
      firstError ??= goError('invalid semicolon separator in query');
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
      firstError ??= error instanceof PavilionError ? error : goError(String(error));
      continue;
    }
    (values[key] ??= []).push(value);
  }
  if (firstError !== undefined) throw firstError;
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
