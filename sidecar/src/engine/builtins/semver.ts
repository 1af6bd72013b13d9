/**
 * semver.compare and semver.is_valid, following OPA's internal/semver (used by
 * v1/topdown/semver.go): an optional leading "v", MAJOR.MINOR.PATCH without leading zeros
 * (int64 each), an optional pre-release (no numeric identifier with a leading zero) and
 * optional build metadata, compared per SemVer 2.0 precedence (metadata ignored).
 *
 * Known limits: none beyond OPA's own (pre-release numeric identifiers beyond int64 compare as
 * equal, because Go's Atoi clamps them; we clamp the same way).
 */
import { type BuiltinFamily, isString } from './common.ts';

interface Version {
  readonly major: bigint;
  readonly minor: bigint;
  readonly patch: bigint;
  readonly preRelease: string;
  readonly metadata: string;
}

const META_IDENTIFIER = /^[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*$/;
const MAX_INT64 = 2n ** 63n - 1n;

function parseNumeric(s: string): bigint | undefined {
  if (!/^\d+$/.test(s) || (s.length > 1 && s[0] === '0')) return undefined;
  const value = BigInt(s);
  return value > MAX_INT64 ? undefined : value;
}

function isAllDecimals(s: string): boolean {
  return /^\d+$/.test(s);
}

function cut(s: string, sep: string): [string, string, boolean] {
  const i = s.indexOf(sep);
  return i < 0 ? [s, '', false] : [s.slice(0, i), s.slice(i + 1), true];
}

export function parseSemver(input: string): Version | undefined {
  let version = input.startsWith('v') ? input.slice(1) : input;
  const [beforeMeta, metadata, hasMeta] = cut(version, '+');
  version = beforeMeta;
  if (hasMeta && !META_IDENTIFIER.test(metadata)) return undefined;
  const [core, preRelease, hasPre] = cut(version, '-');
  version = core;
  if (hasPre) {
    if (!META_IDENTIFIER.test(preRelease)) return undefined;
    for (const id of preRelease.split('.')) {
      if (id.length > 1 && id[0] === '0' && isAllDecimals(id)) return undefined;
    }
  }
  const parts = version.split('.');
  if (parts.length !== 3) return undefined;
  const [major, minor, patch] = parts.map(parseNumeric);
  if (major === undefined || minor === undefined || patch === undefined) return undefined;
  return { major, minor, patch, preRelease, metadata };
}

function clampedAtoi(s: string): bigint {
  const value = BigInt(s);
  return value > MAX_INT64 ? MAX_INT64 : value;
}

function sign(a: bigint | string, b: bigint | string): number {
  return a > b ? 1 : a < b ? -1 : 0;
}

export function compareSemver(v: Version, other: Version): number {
  for (const key of ['major', 'minor', 'patch'] as const) {
    const c = sign(v[key], other[key]);
    if (c !== 0) return c;
  }
  if (v.preRelease === other.preRelease) return 0;
  if (v.preRelease === '') return 1;
  if (other.preRelease === '') return -1;
  const a = v.preRelease.split('.');
  const b = other.preRelease.split('.');
  for (let i = 0; ; i++) {
    const x = a[i];
    const y = b[i];
    if (x === undefined && y === undefined) return 0;
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    const xInt = isAllDecimals(x);
    const yInt = isAllDecimals(y);
    if (xInt && !yInt) return -1;
    if (!xInt && yInt) return 1;
    const c = xInt ? sign(clampedAtoi(x), clampedAtoi(y)) : sign(x, y);
    if (c !== 0) return c;
  }
}

export function semverBuiltins(): BuiltinFamily {
  return {
    'semver.is_valid': (value) => isString(value) && parseSemver(value) !== undefined,
    'semver.compare': (a, b) => {
      if (!isString(a) || !isString(b)) return undefined;
      const x = parseSemver(a);
      const y = parseSemver(b);
      if (x === undefined || y === undefined) return undefined;
      return compareSemver(x, y);
    },
  };
}
