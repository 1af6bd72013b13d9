/**
 * units.parse and units.parse_bytes, following OPA's v1/topdown/parse_units.go and
 * parse_bytes.go: a decimal amount (with optional exponent of at most 6 digits) followed by a
 * unit; quotes are stripped and spaces rejected.
 *
 * units.parse multiplies exactly (Go's big.Rat, with "m" being the double 0.001 as Go sets it)
 * and returns an integer, or a decimal rounded to 10 places. units.parse_bytes rounds the
 * amount to a 64-bit-mantissa binary float (Go's big.Float default precision), multiplies,
 * rounds again and truncates, as Go does. Large results are returned exactly.
 *
 * Known limits: exponents beyond ±4096 are refused (undefined) rather than expanded into
 * numbers with thousands of digits.
 */
import { type BuiltinFamily, ExactNumber, exactInteger, isString } from './common.ts';

interface Rational {
  readonly num: bigint;
  readonly den: bigint;
}

const MAX_EXPONENT_DIGITS = 6;
const MAX_EXPONENT = 4096;

function abs(x: bigint): bigint {
  return x < 0n ? -x : x;
}

function gcd(a: bigint, b: bigint): bigint {
  let x = abs(a);
  let y = abs(b);
  while (y !== 0n) [x, y] = [y, x % y];
  return x;
}

function rational(num: bigint, den: bigint): Rational {
  if (den < 0n) return rational(-num, -den);
  const g = gcd(num, den);
  return g > 1n ? { num: num / g, den: den / g } : { num, den };
}

function multiply(a: Rational, b: Rational): Rational {
  return rational(a.num * b.num, a.den * b.den);
}

/** A decimal like Go's Rat.SetString / Float.SetString accept: [+-]digits[.digits][e[+-]digits]. */
function parseDecimal(text: string): Rational | undefined {
  const match = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(text);
  if (match === null) return undefined;
  const [, sign = '', intPart = '', frac = '', exp] = match;
  if (intPart === '' && frac === '') return undefined;
  const exponent = exp === undefined ? 0 : Number(exp);
  if (Math.abs(exponent) > MAX_EXPONENT) return undefined;
  let num = BigInt(intPart + frac || '0');
  let den = 10n ** BigInt(frac.length);
  if (exponent >= 0) num *= 10n ** BigInt(exponent);
  else den *= 10n ** BigInt(-exponent);
  if (sign === '-') num = -num;
  return rational(num, den);
}

/** The exact rational value of a double (Go's Rat.SetFloat64). */
function rationalOfDouble(x: number): Rational {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  const bits = view.getBigUint64(0);
  const negative = bits >> 63n === 1n;
  const exponentBits = Number((bits >> 52n) & 0x7ffn);
  let mantissa = bits & ((1n << 52n) - 1n);
  let exponent: number;
  if (exponentBits === 0) {
    exponent = -1074;
  } else {
    mantissa |= 1n << 52n;
    exponent = exponentBits - 1075;
  }
  const signed = negative ? -mantissa : mantissa;
  return exponent >= 0 ? rational(signed << BigInt(exponent), 1n) : rational(signed, 1n << BigInt(-exponent));
}

function bitLength(x: bigint): number {
  return x === 0n ? 0 : x.toString(2).length;
}

/** Round to `precision` significant bits, half to even (big.Float's default rounding). */
function roundToPrecision(value: Rational, precision: number): Rational {
  if (value.num === 0n) return value;
  const negative = value.num < 0n;
  const num = abs(value.num);
  const den = value.den;
  let shift = precision - (bitLength(num) - bitLength(den));
  const scaled = (s: number): [bigint, bigint] => {
    const n = s >= 0 ? num << BigInt(s) : num;
    const d = s >= 0 ? den : den << BigInt(-s);
    return [n / d, n % d];
  };
  let [q, r] = scaled(shift);
  while (q >= 1n << BigInt(precision)) [q, r] = scaled(--shift);
  while (q < 1n << BigInt(precision - 1)) [q, r] = scaled(++shift);
  const d = shift >= 0 ? den : den << BigInt(-shift);
  if (2n * r > d || (2n * r === d && (q & 1n) === 1n)) q += 1n;
  const signed = negative ? -q : q;
  return shift >= 0 ? rational(signed, 1n << BigInt(shift)) : rational(signed << BigInt(-shift), 1n);
}

/** big.Rat.FloatString(10): rounded to 10 decimals, halves away from zero. */
function floatString10(value: Rational): string {
  const scale = 10n ** 10n;
  const negative = value.num < 0n;
  const n = abs(value.num) * scale;
  let q = n / value.den;
  const r = n % value.den;
  if (2n * r >= value.den) q += 1n;
  const digits = q.toString().padStart(11, '0');
  return `${negative ? '-' : ''}${digits.slice(0, -10)}.${digits.slice(-10)}`;
}

/** OPA's extractNumAndUnit: the leading number (digits, '.', exponent) and the unit after it. */
function splitAmount(s: string): { num: string; unit: string } | undefined {
  let firstNonNum = -1;
  for (let i = 0; i < s.length; i++) {
    const c = s[i] as string;
    const isNum = (c >= '0' && c <= '9') || c === '.';
    if (!isNum && c !== 'e' && c !== 'E' && c !== '+' && c !== '-') {
      firstNonNum = i;
      break;
    }
    if (c === 'e' || c === 'E') {
      const next = s[i + 1];
      if (i === s.length - 1 || !(next !== undefined && ((next >= '0' && next <= '9') || next === '+' || next === '-'))) {
        firstNonNum = i;
        break;
      }
      if (next === '+' || next === '-') i++;
      let end = i + 1;
      while (end < s.length && (s[end] as string) >= '0' && (s[end] as string) <= '9') end++;
      if (end - (i + 1) > MAX_EXPONENT_DIGITS) return undefined;
    }
  }
  if (firstNonNum === -1) return { num: s, unit: '' };
  if (firstNonNum === 0) return { num: '', unit: s };
  return { num: s.slice(0, firstNonNum), unit: s.slice(firstNonNum) };
}

const KIB = 1024n;
const SI_UNITS: Readonly<Record<string, bigint>> = {
  '': 1n,
  k: 1000n,
  K: 1000n,
  ki: KIB,
  Ki: KIB,
  M: 1000n ** 2n,
  mi: KIB ** 2n,
  Mi: KIB ** 2n,
  g: 1000n ** 3n,
  G: 1000n ** 3n,
  gi: KIB ** 3n,
  Gi: KIB ** 3n,
  t: 1000n ** 4n,
  T: 1000n ** 4n,
  ti: KIB ** 4n,
  Ti: KIB ** 4n,
  p: 1000n ** 5n,
  P: 1000n ** 5n,
  pi: KIB ** 5n,
  Pi: KIB ** 5n,
  e: 1000n ** 6n,
  E: 1000n ** 6n,
  ei: KIB ** 6n,
  Ei: KIB ** 6n,
};

const BYTE_UNITS: Readonly<Record<string, bigint>> = {
  '': 1n,
  kb: 1000n,
  k: 1000n,
  kib: KIB,
  ki: KIB,
  mb: 1000n ** 2n,
  m: 1000n ** 2n,
  mib: KIB ** 2n,
  mi: KIB ** 2n,
  gb: 1000n ** 3n,
  g: 1000n ** 3n,
  gib: KIB ** 3n,
  gi: KIB ** 3n,
  tb: 1000n ** 4n,
  t: 1000n ** 4n,
  tib: KIB ** 4n,
  ti: KIB ** 4n,
  pb: 1000n ** 5n,
  p: 1000n ** 5n,
  pib: KIB ** 5n,
  pi: KIB ** 5n,
  eb: 1000n ** 6n,
  e: 1000n ** 6n,
  eib: KIB ** 6n,
  ei: KIB ** 6n,
};

const MILLI = rationalOfDouble(0.001);

function parseUnits(raw: string): number | bigint | ExactNumber | undefined {
  const s = raw.replaceAll('"', '');
  if (s.includes(' ')) return undefined;
  const split = splitAmount(s);
  if (split === undefined || split.num === '') return undefined;
  let unit = split.unit;
  if (unit.length > 1) unit = unit.slice(0, 1) + unit.slice(1).toLowerCase();
  let multiplier: Rational;
  if (unit === 'm') multiplier = MILLI;
  else if (Object.prototype.hasOwnProperty.call(SI_UNITS, unit)) multiplier = { num: SI_UNITS[unit] as bigint, den: 1n };
  else return undefined;
  const amount = parseDecimal(split.num);
  if (amount === undefined) return undefined;
  const value = multiply(amount, multiplier);
  if (value.den === 1n) return exactInteger(value.num);
  return new ExactNumber(floatString10(value));
}

function parseBytes(raw: string): number | bigint | undefined {
  const s = raw.toLowerCase().replaceAll('"', '');
  if (s.includes(' ')) return undefined;
  const split = splitAmount(s);
  if (split === undefined || split.num === '') return undefined;
  if (!Object.prototype.hasOwnProperty.call(BYTE_UNITS, split.unit)) return undefined;
  const multiplier = BYTE_UNITS[split.unit] as bigint;
  const amount = parseDecimal(split.num);
  if (amount === undefined) return undefined;
  const rounded = roundToPrecision(amount, 64);
  const product = roundToPrecision(multiply(rounded, { num: multiplier, den: 1n }), 64);
  return exactInteger(product.num / product.den);
}

export function unitsBuiltins(): BuiltinFamily {
  return {
    'units.parse': (value) => (isString(value) ? parseUnits(value) : undefined),
    'units.parse_bytes': (value) => (isString(value) ? parseBytes(value) : undefined),
  };
}
