/**
 * Encoding builtins, following OPA's v1/topdown/encoding.go: hex.encode/decode (Go's
 * encoding/hex), urlquery.* (Go's net/url QueryEscape, QueryUnescape, ParseQuery and
 * Values.Encode) and base64url.encode_no_pad (Go's RawURLEncoding).
 *
 * Known limits: decoded bytes that are not valid UTF-8 become U+FFFD (OPA keeps raw bytes);
 * urlquery.encode_object receives a set value as an array and encodes it in that order.
 */
import { type BuiltinFamily, bytesToString, isObject, isString, utf8Bytes } from './common.ts';

const HEX_DIGITS = '0123456789ABCDEF';

function isUnreserved(byte: number): boolean {
  return (
    (byte >= 0x41 && byte <= 0x5a) || // A-Z
    (byte >= 0x61 && byte <= 0x7a) || // a-z
    (byte >= 0x30 && byte <= 0x39) || // 0-9
    byte === 0x2d || // -
    byte === 0x5f || // _
    byte === 0x2e || // .
    byte === 0x7e // ~
  );
}

/** Go's url.QueryEscape. */
export function queryEscape(value: string): string {
  let out = '';
  for (const byte of utf8Bytes(value)) {
    if (isUnreserved(byte)) out += String.fromCharCode(byte);
    else if (byte === 0x20) out += '+';
    else out += `%${HEX_DIGITS[byte >> 4]}${HEX_DIGITS[byte & 15]}`;
  }
  return out;
}

function hexValue(code: number): number {
  if (code >= 0x30 && code <= 0x39) return code - 0x30;
  if (code >= 0x61 && code <= 0x66) return code - 0x61 + 10;
  if (code >= 0x41 && code <= 0x46) return code - 0x41 + 10;
  return -1;
}

/** Go's url.QueryUnescape ('+' is a space; a malformed %-escape is an error). */
export function queryUnescape(value: string): string | undefined {
  const input = utf8Bytes(value);
  const out: number[] = [];
  for (let i = 0; i < input.length; i++) {
    const byte = input[i] as number;
    if (byte === 0x25) {
      if (i + 2 >= input.length) return undefined;
      const hi = hexValue(input[i + 1] ?? -1);
      const lo = hexValue(input[i + 2] ?? -1);
      if (hi < 0 || lo < 0) return undefined;
      out.push(hi * 16 + lo);
      i += 2;
    } else if (byte === 0x2b) {
      out.push(0x20);
    } else {
      out.push(byte);
    }
  }
  return bytesToString(Uint8Array.from(out));
}

function compareBytewise(a: string, b: string): number {
  return Buffer.compare(utf8Bytes(a), utf8Bytes(b));
}

function encodeObject(value: unknown): string | undefined {
  if (!isObject(value)) return undefined;
  const pairs: string[] = [];
  for (const key of Object.keys(value).sort(compareBytewise)) {
    const item = value[key];
    const values: string[] = [];
    if (isString(item)) {
      values.push(item);
    } else if (Array.isArray(item)) {
      for (const element of item) {
        if (!isString(element)) return undefined;
        values.push(element);
      }
    } else {
      return undefined;
    }
    const escapedKey = queryEscape(key);
    for (const v of values) pairs.push(`${escapedKey}=${queryEscape(v)}`);
  }
  return pairs.join('&');
}

/** Go's url.ParseQuery; any malformed pair makes the whole call an error. */
function decodeObject(query: string): Record<string, string[]> | undefined {
  const out: Record<string, string[]> = {};
  let failed = false;
  for (const pair of query.split('&')) {
    if (pair.includes(';')) {
      failed = true;
      continue;
    }
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    const key = queryUnescape(eq < 0 ? pair : pair.slice(0, eq));
    const value = queryUnescape(eq < 0 ? '' : pair.slice(eq + 1));
    if (key === undefined || value === undefined) {
      failed = true;
      continue;
    }
    const list = Object.prototype.hasOwnProperty.call(out, key) ? out[key] : undefined;
    if (list === undefined) {
      Object.defineProperty(out, key, { value: [value], enumerable: true, writable: true, configurable: true });
    } else {
      list.push(value);
    }
  }
  return failed ? undefined : out;
}

export function encodingBuiltins(): BuiltinFamily {
  return {
    'hex.encode': (value) => (isString(value) ? utf8Bytes(value).toString('hex') : undefined),
    'hex.decode': (value) => {
      if (!isString(value) || value.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(value)) return undefined;
      return bytesToString(Buffer.from(value, 'hex'));
    },
    'urlquery.encode': (value) => (isString(value) ? queryEscape(value) : undefined),
    'urlquery.decode': (value) => (isString(value) ? queryUnescape(value) : undefined),
    'urlquery.encode_object': (value) => encodeObject(value),
    'urlquery.decode_object': (value) => (isString(value) ? decodeObject(value) : undefined),
    'base64url.encode_no_pad': (value) => (isString(value) ? utf8Bytes(value).toString('base64url') : undefined),
  };
}
