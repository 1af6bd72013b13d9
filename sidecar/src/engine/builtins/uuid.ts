/**
 * uuid.rfc4122 and uuid.parse, following OPA's v1/topdown/uuid.go and internal/uuid.
 *
 * uuid.rfc4122(k) returns a random version-4 UUID (node:crypto.randomUUID), the same one for
 * the same k throughout an evaluation, as OPA caches it per query. uuid.parse accepts the
 * forms github.com/google/uuid does (36 characters, 38 with any enclosing pair, a
 * case-insensitive "urn:uuid:" prefix, or 32 bare hex digits) and reports version and variant,
 * plus time, clock sequence and node for versions 1 and 2, and id and domain for version 2.
 *
 * Known limits: memoisation is per EvaluationContext object, so the engine must hand each
 * evaluation a fresh context object.
 */
import { randomUUID } from 'node:crypto';
import { type BuiltinFamily, type ContextProvider, encodeJson, exactInteger, isString, memoize } from './common.ts';

/** 100-ns intervals between the Gregorian epoch (1582-10-15) and the Unix epoch. */
const GREGORIAN_OFFSET = 122192928000000000n;

function hexByte(text: string, i: number): number | undefined {
  const pair = text.slice(i, i + 2);
  return /^[0-9a-fA-F]{2}$/.test(pair) ? parseInt(pair, 16) : undefined;
}

function parseUuidBytes(input: string): Uint8Array | undefined {
  let s = input;
  switch (s.length) {
    case 36:
      break;
    case 45:
      if (s.slice(0, 9).toLowerCase() !== 'urn:uuid:') return undefined;
      s = s.slice(9);
      break;
    case 38:
      s = s.slice(1);
      break;
    case 32: {
      const out = new Uint8Array(16);
      for (let i = 0; i < 16; i++) {
        const b = hexByte(s, i * 2);
        if (b === undefined) return undefined;
        out[i] = b;
      }
      return out;
    }
    default:
      return undefined;
  }
  if (s[8] !== '-' || s[13] !== '-' || s[18] !== '-' || s[23] !== '-') return undefined;
  const offsets = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) {
    const b = hexByte(s, offsets[i] as number);
    if (b === undefined) return undefined;
    out[i] = b;
  }
  return out;
}

function variantName(b8: number): string {
  if ((b8 & 0xc0) === 0x80) return 'RFC4122';
  if ((b8 & 0xe0) === 0xc0) return 'Microsoft';
  if ((b8 & 0xe0) === 0xe0) return 'Future';
  return 'Reserved';
}

function macVariables(first: number): string {
  if ((first & 0b11) === 0b11) return 'local:multicast';
  if ((first & 0b01) === 0b01) return 'global:multicast';
  if ((first & 0b10) === 0b10) return 'local:unicast';
  return 'global:unicast';
}

const DOMAINS = ['Person', 'Group', 'Org'];

function parseUuid(input: string): Record<string, unknown> | undefined {
  const u = parseUuidBytes(input);
  if (u === undefined) return undefined;
  const b = (i: number): number => u[i] ?? 0;
  const version = b(6) >> 4;
  const out: Record<string, unknown> = { version, variant: variantName(b(8)) };
  if (version === 1 || version === 2) {
    const timeLow = BigInt((b(0) << 24) | (b(1) << 16) | (b(2) << 8) | b(3)) & 0xffffffffn;
    const timeMid = BigInt((b(4) << 8) | b(5));
    const timeHigh = BigInt(((b(6) << 8) | b(7)) & 0xfff);
    const ticks = timeLow | (timeMid << 32n) | (timeHigh << 48n);
    const sinceUnix = ticks - GREGORIAN_OFFSET;
    // Go: sec = t/1e7 and nsec = (t%1e7)*100, both truncating toward zero, then
    // sec*1e9 + nsec in int64 arithmetic (which wraps for times before 1677).
    out['time'] = exactInteger(BigInt.asIntN(64, (sinceUnix / 10_000_000n) * 1_000_000_000n + (sinceUnix % 10_000_000n) * 100n));
    out['nodeid'] = Array.from(u.slice(10), (x) => x.toString(16).padStart(2, '0')).join('-');
    out['macvariables'] = macVariables(b(10));
    out['clocksequence'] = ((b(8) << 8) | b(9)) & 0x3fff;
    if (version === 2) {
      out['id'] = Number(timeLow);
      out['domain'] = DOMAINS[b(9)] ?? `Domain${b(9)}`;
    }
  }
  return out;
}

export function uuidBuiltins(context: ContextProvider): BuiltinFamily {
  return {
    'uuid.rfc4122': (key) => memoize(context(), `uuid.rfc4122:${encodeJson(key ?? null)}`, () => randomUUID()),
    'uuid.parse': (value) => (isString(value) ? parseUuid(value) : undefined),
  };
}
