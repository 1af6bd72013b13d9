/**
 * A minimal DER reader (ITU-T X.690 definite-length encoding) for the X.509 fields OPA's
 * crypto.x509.* builtins expose: TLV walking, INTEGER, OBJECT IDENTIFIER, strings, times and
 * bit strings. This is parsing only; no cryptographic primitive is implemented here (the
 * certificate itself is checked by node:crypto's X509Certificate).
 */

import { builtinFailure } from './common.ts';

/** A malformed DER encoding. */
export function derError(message: string): Error {
  return builtinFailure(`DER: ${message}`);
}

export interface Tlv {
  /** The identifier octet's class bits (0 universal, 2 context-specific, ...). */
  readonly cls: number;
  readonly constructed: boolean;
  readonly tag: number;
  /** Offset of the identifier octet. */
  readonly start: number;
  /** Offset of the first content octet. */
  readonly valueStart: number;
  /** Offset just past the element. */
  readonly end: number;
}

export const TAG = {
  BOOLEAN: 1,
  INTEGER: 2,
  BIT_STRING: 3,
  OCTET_STRING: 4,
  NULL: 5,
  OID: 6,
  UTF8_STRING: 12,
  SEQUENCE: 16,
  SET: 17,
  NUMERIC_STRING: 18,
  PRINTABLE_STRING: 19,
  T61_STRING: 20,
  IA5_STRING: 22,
  UTC_TIME: 23,
  GENERALIZED_TIME: 24,
  BMP_STRING: 30,
} as const;

export function readTlv(buf: Uint8Array, offset: number, limit = buf.length): Tlv {
  let pos = offset;
  if (pos >= limit) throw derError('truncated element');
  const first = buf[pos++] as number;
  const cls = first >> 6;
  const constructed = (first & 0x20) !== 0;
  let tag = first & 0x1f;
  if (tag === 0x1f) {
    tag = 0;
    for (;;) {
      if (pos >= limit) throw derError('truncated tag');
      const b = buf[pos++] as number;
      tag = tag * 128 + (b & 0x7f);
      if ((b & 0x80) === 0) break;
      if (tag > 2 ** 31) throw derError('tag too large');
    }
  }
  if (pos >= limit) throw derError('truncated length');
  let length = buf[pos++] as number;
  if (length & 0x80) {
    const count = length & 0x7f;
    if (count === 0 || count > 4) throw derError('unsupported length');
    length = 0;
    for (let i = 0; i < count; i++) {
      if (pos >= limit) throw derError('truncated length');
      length = length * 256 + (buf[pos++] as number);
    }
  }
  const end = pos + length;
  if (end > limit) throw derError('element exceeds its container');
  return { cls, constructed, tag, start: offset, valueStart: pos, end };
}

/** The elements inside a constructed element. */
export function children(buf: Uint8Array, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  let pos = parent.valueStart;
  while (pos < parent.end) {
    const child = readTlv(buf, pos, parent.end);
    out.push(child);
    pos = child.end;
  }
  return out;
}

export function contents(buf: Uint8Array, tlv: Tlv): Buffer {
  return Buffer.from(buf.subarray(tlv.valueStart, tlv.end));
}

export function whole(buf: Uint8Array, tlv: Tlv): Buffer {
  return Buffer.from(buf.subarray(tlv.start, tlv.end));
}

export function isUniversal(tlv: Tlv, tag: number): boolean {
  return tlv.cls === 0 && tlv.tag === tag;
}

export function isContext(tlv: Tlv, tag: number): boolean {
  return tlv.cls === 2 && tlv.tag === tag;
}

export function expect(tlv: Tlv | undefined, tag: number): Tlv {
  if (tlv === undefined || !isUniversal(tlv, tag)) throw derError(`expected universal tag ${tag}`);
  return tlv;
}

export function readInteger(buf: Uint8Array, tlv: Tlv): bigint {
  const bytes = contents(buf, tlv);
  if (bytes.length === 0) throw derError('empty integer');
  let value = 0n;
  for (const b of bytes) value = (value << 8n) | BigInt(b);
  if (((bytes[0] as number) & 0x80) !== 0) value -= 1n << BigInt(bytes.length * 8);
  return value;
}

export function readOid(buf: Uint8Array, tlv: Tlv): number[] {
  const bytes = contents(buf, tlv);
  if (bytes.length === 0) throw derError('empty object identifier');
  const arcs: number[] = [];
  let value = 0;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i] as number;
    value = value * 128 + (b & 0x7f);
    if (value > Number.MAX_SAFE_INTEGER / 256) throw derError('object identifier arc too large');
    if ((b & 0x80) === 0) {
      if (arcs.length === 0) {
        const first = value < 80 ? Math.floor(value / 40) : 2;
        arcs.push(first, value - first * 40);
      } else {
        arcs.push(value);
      }
      value = 0;
    } else if (i === bytes.length - 1) {
      throw derError('truncated object identifier');
    }
  }
  return arcs;
}

export function oidString(arcs: readonly number[]): string {
  return arcs.join('.');
}

/** A BIT STRING's bytes (the unused-bits count is dropped) and its bit length. */
export function readBitString(buf: Uint8Array, tlv: Tlv): { bytes: Buffer; bitLength: number } {
  const raw = contents(buf, tlv);
  if (raw.length === 0) throw derError('empty bit string');
  const unused = raw[0] as number;
  const bytes = raw.subarray(1);
  return { bytes: Buffer.from(bytes), bitLength: bytes.length * 8 - unused };
}

/** A directory-string-like value as Go's encoding/asn1 decodes it into a string. */
export function readString(buf: Uint8Array, tlv: Tlv): string | undefined {
  const bytes = contents(buf, tlv);
  if (tlv.cls !== 0) return undefined;
  switch (tlv.tag) {
    case TAG.UTF8_STRING:
      return bytes.toString('utf8');
    case TAG.PRINTABLE_STRING:
    case TAG.IA5_STRING:
    case TAG.NUMERIC_STRING:
      return bytes.toString('latin1');
    case TAG.T61_STRING:
      return bytes.toString('latin1');
    case TAG.BMP_STRING: {
      if (bytes.length % 2 !== 0) return undefined;
      let out = '';
      for (let i = 0; i < bytes.length; i += 2) out += String.fromCharCode(((bytes[i] as number) << 8) | (bytes[i + 1] as number));
      return out;
    }
    default:
      return undefined;
  }
}

/** UTCTime / GeneralizedTime as an RFC 3339 string in UTC (Go's time.Time JSON form). */
export function readTime(buf: Uint8Array, tlv: Tlv): string {
  const text = contents(buf, tlv).toString('latin1');
  let match: RegExpExecArray | null;
  let year: number;
  if (isUniversal(tlv, TAG.UTC_TIME)) {
    match = /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})?(Z|[+-]\d{4})$/.exec(text);
    if (match === null) throw derError('bad UTCTime');
    const yy = Number(match[1]);
    year = yy >= 50 ? 1900 + yy : 2000 + yy;
  } else if (isUniversal(tlv, TAG.GENERALIZED_TIME)) {
    match = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:\.\d+)?(Z|[+-]\d{4})$/.exec(text);
    if (match === null) throw derError('bad GeneralizedTime');
    year = Number(match[1]);
  } else {
    throw derError('expected a time');
  }
  const [, , mo, d, h, mi, s = '00', zone = 'Z'] = match;
  const date = new Date(0);
  date.setUTCFullYear(year, Number(mo) - 1, Number(d));
  date.setUTCHours(Number(h), Number(mi), Number(s), 0);
  if (zone !== 'Z') {
    const sign = zone[0] === '-' ? -1 : 1;
    date.setTime(date.getTime() - sign * (Number(zone.slice(1, 3)) * 60 + Number(zone.slice(3, 5))) * 60_000);
  }
  if (Number.isNaN(date.getTime())) throw derError('bad time');
  const iso = date.toISOString();
  const yearText = date.getUTCFullYear();
  return yearText >= 0 && yearText <= 9999 ? iso.replace('.000Z', 'Z') : iso;
}
