/**
 * Go's time machinery as OPA's time builtins use it: reference-layout parsing and formatting
 * (Go's time/format.go semantics: `2006-01-02T15:04:05Z07:00` style layouts), duration parsing
 * (time.ParseDuration plus OPA's d/w/y extension) and civil-calendar arithmetic (proleptic
 * Gregorian, as in Go). Instants are (unix seconds, nanoseconds); zones come from timezone.ts.
 *
 * Known limits: Go parses zone abbreviations (layout `MST`) against the process's local zone;
 * we behave as Go does when the local zone is UTC (an abbreviation other than UTC or GMT±h gives
 * offset 0).
 */
import { isPavilionError } from '../../lib/errors.ts';
import { builtinFailure } from './common.ts';
import { type Zone, UTC, daysFromCivil, zoneAbbreviation, zoneOffset } from './timezone.ts';

export const NS_PER_SECOND = 1_000_000_000n;
export const MIN_INT64 = -(2n ** 63n);
export const MAX_INT64 = 2n ** 63n - 1n;

// ---------------------------------------------------------------------------------------------
// Civil calendar

function floorDiv(a: number, b: number): number {
  return Math.floor(a / b);
}

export function isLeap(year: number): boolean {
  return year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
}

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

export function daysIn(month: number, year: number): number {
  if (month === 2 && isLeap(year)) return 29;
  return DAYS_IN_MONTH[month - 1] ?? 31;
}

export function civilFromDays(days: number): { year: number; month: number; day: number } {
  const z = days + 719468;
  const era = floorDiv(z, 146097);
  const doe = z - era * 146097;
  const yoe = floorDiv(doe - floorDiv(doe, 1460) + floorDiv(doe, 36524) - floorDiv(doe, 146096), 365);
  const doy = doe - (365 * yoe + floorDiv(yoe, 4) - floorDiv(yoe, 100));
  const mp = floorDiv(5 * doy + 2, 153);
  const day = doy - floorDiv(153 * mp + 2, 5) + 1;
  const month = mp < 10 ? mp + 3 : mp - 9;
  return { year: yoe + era * 400 + (month <= 2 ? 1 : 0), month, day };
}

// ---------------------------------------------------------------------------------------------
// Instants and wall clocks

/** An instant: seconds since the Unix epoch plus nanoseconds (0..999999999), in a zone. */
export interface Instant {
  readonly sec: number;
  readonly nsec: number;
  readonly zone: Zone;
}

export interface WallClock {
  readonly year: number;
  readonly month: number;
  readonly day: number;
  readonly hour: number;
  readonly minute: number;
  readonly second: number;
  readonly nsec: number;
  /** 0 = Sunday. */
  readonly weekday: number;
  /** 1..366 */
  readonly yday: number;
  readonly offset: number;
}

export function instantFromUnixNanos(ns: bigint, zone: Zone): Instant {
  let sec = ns / NS_PER_SECOND;
  let nsec = ns % NS_PER_SECOND;
  if (nsec < 0n) {
    nsec += NS_PER_SECOND;
    sec -= 1n;
  }
  return { sec: Number(sec), nsec: Number(nsec), zone };
}

export function unixNanos(instant: Instant): bigint {
  return BigInt(instant.sec) * NS_PER_SECOND + BigInt(instant.nsec);
}

export function wallClock(instant: Instant): WallClock {
  const offset = zoneOffset(instant.zone, instant.sec);
  const local = instant.sec + offset;
  const days = floorDiv(local, 86400);
  const secOfDay = local - days * 86400;
  const { year, month, day } = civilFromDays(days);
  return {
    year,
    month,
    day,
    hour: Math.floor(secOfDay / 3600),
    minute: Math.floor((secOfDay % 3600) / 60),
    second: secOfDay % 60,
    nsec: instant.nsec,
    weekday: (((days + 4) % 7) + 7) % 7,
    yday: days - daysFromCivil(year, 1, 1) + 1,
    offset,
  };
}

function norm(hi: number, lo: number, base: number): [number, number] {
  if (lo < 0) {
    const n = Math.floor((-lo - 1) / base) + 1;
    hi -= n;
    lo += n * base;
  }
  if (lo >= base) {
    const n = Math.floor(lo / base);
    hi += n;
    lo -= n * base;
  }
  return [hi, lo];
}

/** Go's time.Date: normalises out-of-range fields, then resolves the zone offset as Go does. */
export function dateOf(
  yearIn: number,
  monthIn: number,
  dayIn: number,
  hourIn: number,
  minIn: number,
  secIn: number,
  nsecIn: number,
  zone: Zone,
): Instant {
  const [year, monthIndex] = norm(yearIn, monthIn - 1, 12);
  const [secCarry, nsec] = norm(secIn, nsecIn, 1e9);
  const [minCarry, sec] = norm(minIn, secCarry, 60);
  const [hourCarry, min] = norm(hourIn, minCarry, 60);
  const [day, hour] = norm(dayIn, hourCarry, 24);
  const days = daysFromCivil(year, monthIndex + 1, 1) + day - 1;
  const wall = days * 86400 + hour * 3600 + min * 60 + sec;
  let offset = zoneOffset(zone, wall);
  if (offset !== 0) {
    // Go looks the offset up at the wall time taken as UTC, then re-checks at the corrected instant.
    const corrected = zoneOffset(zone, wall - offset);
    if (corrected !== offset) offset = corrected;
  }
  return { sec: wall - offset, nsec, zone };
}

// ---------------------------------------------------------------------------------------------
// Layout chunks (Go's nextStdChunk)

type Std =
  | 'LongMonth'
  | 'Month'
  | 'NumMonth'
  | 'ZeroMonth'
  | 'LongWeekDay'
  | 'WeekDay'
  | 'Day'
  | 'UnderDay'
  | 'ZeroDay'
  | 'UnderYearDay'
  | 'ZeroYearDay'
  | 'Hour'
  | 'Hour12'
  | 'ZeroHour12'
  | 'Minute'
  | 'ZeroMinute'
  | 'Second'
  | 'ZeroSecond'
  | 'LongYear'
  | 'Year'
  | 'PM'
  | 'pm'
  | 'TZ'
  | 'ISO8601TZ'
  | 'ISO8601SecondsTZ'
  | 'ISO8601ShortTZ'
  | 'ISO8601ColonTZ'
  | 'ISO8601ColonSecondsTZ'
  | 'NumTZ'
  | 'NumSecondsTz'
  | 'NumShortTZ'
  | 'NumColonTZ'
  | 'NumColonSecondsTZ'
  | 'FracSecond0'
  | 'FracSecond9';

interface Chunk {
  readonly prefix: string;
  readonly std: Std | null;
  /** Fraction digits for FracSecond0/9. */
  readonly digits: number;
  /** Fraction separator for FracSecond0/9. */
  readonly separator: string;
  readonly suffix: string;
}

const ZERO_STD: readonly Std[] = ['ZeroMonth', 'ZeroDay', 'ZeroHour12', 'ZeroMinute', 'ZeroSecond', 'Year'];

function isDigitAt(s: string, i: number): boolean {
  const c = s.charCodeAt(i);
  return c >= 48 && c <= 57;
}

function startsWithLowerCase(s: string): boolean {
  const c = s.charCodeAt(0);
  return c >= 97 && c <= 122;
}

function chunk(layout: string, i: number, std: Std, length: number, prefixExtra = 0): Chunk {
  return { prefix: layout.slice(0, i + prefixExtra), std, digits: 0, separator: '.', suffix: layout.slice(i + length) };
}

const TZ_FORMS: ReadonlyArray<readonly [string, Std]> = [
  ['-070000', 'NumSecondsTz'],
  ['-07:00:00', 'NumColonSecondsTZ'],
  ['-0700', 'NumTZ'],
  ['-07:00', 'NumColonTZ'],
  ['-07', 'NumShortTZ'],
  ['Z070000', 'ISO8601SecondsTZ'],
  ['Z07:00:00', 'ISO8601ColonSecondsTZ'],
  ['Z0700', 'ISO8601TZ'],
  ['Z07:00', 'ISO8601ColonTZ'],
  ['Z07', 'ISO8601ShortTZ'],
];

function nextStdChunk(layout: string): Chunk {
  for (let i = 0; i < layout.length; i++) {
    const c = layout[i];
    const rest = layout.slice(i);
    switch (c) {
      case 'J':
        if (rest.startsWith('Jan')) {
          if (rest.startsWith('January')) return chunk(layout, i, 'LongMonth', 7);
          if (!startsWithLowerCase(rest.slice(3))) return chunk(layout, i, 'Month', 3);
        }
        break;
      case 'M':
        if (rest.startsWith('Mon')) {
          if (rest.startsWith('Monday')) return chunk(layout, i, 'LongWeekDay', 6);
          if (!startsWithLowerCase(rest.slice(3))) return chunk(layout, i, 'WeekDay', 3);
        }
        if (rest.startsWith('MST')) return chunk(layout, i, 'TZ', 3);
        break;
      case '0': {
        const d = layout.charCodeAt(i + 1);
        if (d >= 49 && d <= 54) return chunk(layout, i, ZERO_STD[d - 49] as Std, 2);
        if (rest.startsWith('002')) return chunk(layout, i, 'ZeroYearDay', 3);
        break;
      }
      case '1':
        if (layout[i + 1] === '5') return chunk(layout, i, 'Hour', 2);
        return chunk(layout, i, 'NumMonth', 1);
      case '2':
        if (rest.startsWith('2006')) return chunk(layout, i, 'LongYear', 4);
        return chunk(layout, i, 'Day', 1);
      case '_':
        if (layout[i + 1] === '2') {
          if (rest.startsWith('_2006')) return { ...chunk(layout, i, 'LongYear', 5, 1) };
          return chunk(layout, i, 'UnderDay', 2);
        }
        if (rest.startsWith('__2')) return chunk(layout, i, 'UnderYearDay', 3);
        break;
      case '3':
        return chunk(layout, i, 'Hour12', 1);
      case '4':
        return chunk(layout, i, 'Minute', 1);
      case '5':
        return chunk(layout, i, 'Second', 1);
      case 'P':
        if (layout[i + 1] === 'M') return chunk(layout, i, 'PM', 2);
        break;
      case 'p':
        if (layout[i + 1] === 'm') return chunk(layout, i, 'pm', 2);
        break;
      case '-':
      case 'Z':
        for (const [form, std] of TZ_FORMS) {
          if (rest.startsWith(form)) return chunk(layout, i, std, form.length);
        }
        break;
      case '.':
      case ',': {
        const ch = layout[i + 1];
        if (ch === '0' || ch === '9') {
          let j = i + 1;
          while (j < layout.length && layout[j] === ch) j++;
          if (!isDigitAt(layout, j)) {
            return {
              prefix: layout.slice(0, i),
              std: ch === '0' ? 'FracSecond0' : 'FracSecond9',
              digits: j - (i + 1),
              separator: c,
              suffix: layout.slice(j),
            };
          }
        }
        break;
      }
      default:
        break;
    }
  }
  return { prefix: layout, std: null, digits: 0, separator: '.', suffix: '' };
}

const LONG_DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
const SHORT_DAYS = LONG_DAYS.map((d) => d.slice(0, 3));
const LONG_MONTHS = [
  'January',
  'February',
  'March',
  'April',
  'May',
  'June',
  'July',
  'August',
  'September',
  'October',
  'November',
  'December',
];
const SHORT_MONTHS = LONG_MONTHS.map((m) => m.slice(0, 3));

export const LONG_DAY_NAMES: readonly string[] = LONG_DAYS;

/** Named layouts OPA accepts in place of a layout string (Go's time package constants). */
export const NAMED_LAYOUTS: Readonly<Record<string, string>> = {
  ANSIC: 'Mon Jan _2 15:04:05 2006',
  UnixDate: 'Mon Jan _2 15:04:05 MST 2006',
  RubyDate: 'Mon Jan 02 15:04:05 -0700 2006',
  RFC822: '02 Jan 06 15:04 MST',
  RFC822Z: '02 Jan 06 15:04 -0700',
  RFC850: 'Monday, 02-Jan-06 15:04:05 MST',
  RFC1123: 'Mon, 02 Jan 2006 15:04:05 MST',
  RFC1123Z: 'Mon, 02 Jan 2006 15:04:05 -0700',
  RFC3339: '2006-01-02T15:04:05Z07:00',
  RFC3339Nano: '2006-01-02T15:04:05.999999999Z07:00',
};

// ---------------------------------------------------------------------------------------------
// Formatting (Go's Time.Format)

function pad(value: number, width: number): string {
  const digits = String(Math.abs(value)).padStart(width, '0');
  return value < 0 ? `-${digits}` : digits;
}

function appendNano(nsec: number, digits: number, separator: string, trim: boolean): string {
  if (trim && (digits === 0 || nsec === 0)) return '';
  let text = separator + String(nsec).padStart(9, '0').slice(0, Math.min(digits, 9));
  if (trim) {
    text = text.replace(/0+$/, '');
    if (text === separator) return '';
  }
  return text;
}

export function formatInstant(instant: Instant, layoutIn: string): string {
  const w = wallClock(instant);
  let layout = layoutIn;
  let out = '';
  for (;;) {
    const c = nextStdChunk(layout);
    out += c.prefix;
    if (c.std === null) break;
    layout = c.suffix;
    switch (c.std) {
      case 'Year':
        out += pad(Math.abs(w.year) % 100, 2);
        break;
      case 'LongYear':
        out += pad(w.year, 4);
        break;
      case 'Month':
        out += SHORT_MONTHS[w.month - 1];
        break;
      case 'LongMonth':
        out += LONG_MONTHS[w.month - 1];
        break;
      case 'NumMonth':
        out += String(w.month);
        break;
      case 'ZeroMonth':
        out += pad(w.month, 2);
        break;
      case 'WeekDay':
        out += SHORT_DAYS[w.weekday];
        break;
      case 'LongWeekDay':
        out += LONG_DAYS[w.weekday];
        break;
      case 'Day':
        out += String(w.day);
        break;
      case 'UnderDay':
        out += (w.day < 10 ? ' ' : '') + String(w.day);
        break;
      case 'ZeroDay':
        out += pad(w.day, 2);
        break;
      case 'UnderYearDay':
        out += (w.yday < 100 ? (w.yday < 10 ? '  ' : ' ') : '') + String(w.yday);
        break;
      case 'ZeroYearDay':
        out += pad(w.yday, 3);
        break;
      case 'Hour':
        out += pad(w.hour, 2);
        break;
      case 'Hour12':
        out += String(w.hour % 12 === 0 ? 12 : w.hour % 12);
        break;
      case 'ZeroHour12':
        out += pad(w.hour % 12 === 0 ? 12 : w.hour % 12, 2);
        break;
      case 'Minute':
        out += String(w.minute);
        break;
      case 'ZeroMinute':
        out += pad(w.minute, 2);
        break;
      case 'Second':
        out += String(w.second);
        break;
      case 'ZeroSecond':
        out += pad(w.second, 2);
        break;
      case 'PM':
        out += w.hour >= 12 ? 'PM' : 'AM';
        break;
      case 'pm':
        out += w.hour >= 12 ? 'pm' : 'am';
        break;
      case 'TZ': {
        const name = zoneAbbreviation(instant.zone, instant.sec);
        if (name !== '') {
          out += name;
          break;
        }
        let zone = Math.trunc(w.offset / 60);
        out += zone < 0 ? '-' : '+';
        zone = Math.abs(zone);
        out += pad(Math.trunc(zone / 60), 2) + pad(zone % 60, 2);
        break;
      }
      case 'FracSecond0':
      case 'FracSecond9':
        out += appendNano(w.nsec, c.digits, c.separator, c.std === 'FracSecond9');
        break;
      default: {
        const iso = c.std.startsWith('ISO8601');
        if (w.offset === 0 && iso) {
          out += 'Z';
          break;
        }
        let zone = Math.trunc(w.offset / 60);
        let absOffset = w.offset;
        if (zone < 0) {
          out += '-';
          zone = -zone;
          absOffset = -absOffset;
        } else {
          out += '+';
        }
        out += pad(Math.trunc(zone / 60), 2);
        const colon = c.std === 'ISO8601ColonTZ' || c.std === 'NumColonTZ' || c.std.includes('ColonSeconds');
        if (colon) out += ':';
        if (c.std !== 'NumShortTZ' && c.std !== 'ISO8601ShortTZ') out += pad(zone % 60, 2);
        if (c.std.includes('Seconds') || c.std === 'NumSecondsTz') {
          if (c.std.includes('ColonSeconds')) out += ':';
          out += pad(absOffset % 60, 2);
        }
        break;
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Parsing (Go's time.Parse with the UTC default location)

function fail(): never {
  throw builtinFailure('time: bad value for field');
}

/** Go's leadingInt: digits at the start of s (uint64 overflow fails). */
function leadingInt(s: string): { x: bigint; rest: string } | undefined {
  let i = 0;
  let x = 0n;
  const limit = 2n ** 63n;
  for (; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) break;
    if (x > limit / 10n) return undefined;
    x = x * 10n + BigInt(c - 48);
    if (x > limit) return undefined;
  }
  return { x, rest: s.slice(i) };
}

function atoi(sIn: string): number {
  let s = sIn;
  let neg = false;
  if (s.length > 0 && (s[0] === '-' || s[0] === '+')) {
    neg = s[0] === '-';
    s = s.slice(1);
  }
  const lead = leadingInt(s);
  if (lead === undefined || lead.rest.length > 0) fail();
  const x = Number(lead.x);
  return neg ? -x : x;
}

function getnum(s: string, fixed: boolean): [number, string] {
  if (!isDigitAt(s, 0)) fail();
  if (!isDigitAt(s, 1)) {
    if (fixed) fail();
    return [s.charCodeAt(0) - 48, s.slice(1)];
  }
  return [(s.charCodeAt(0) - 48) * 10 + (s.charCodeAt(1) - 48), s.slice(2)];
}

function getnum3(s: string, fixed: boolean): [number, string] {
  let n = 0;
  let i = 0;
  for (; i < 3 && isDigitAt(s, i); i++) n = n * 10 + (s.charCodeAt(i) - 48);
  if (i === 0 || (fixed && i !== 3)) fail();
  return [n, s.slice(i)];
}

function skip(valueIn: string, prefixIn: string): string {
  let value = valueIn;
  let prefix = prefixIn;
  while (prefix.length > 0) {
    if (prefix[0] === ' ') {
      if (value.length > 0 && value[0] !== ' ') fail();
      prefix = prefix.replace(/^ +/, '');
      value = value.replace(/^ +/, '');
      continue;
    }
    if (value.length === 0 || value[0] !== prefix[0]) fail();
    prefix = prefix.slice(1);
    value = value.slice(1);
  }
  return value;
}

function matchFold(a: string, b: string): boolean {
  for (let i = 0; i < a.length; i++) {
    let c1 = a.charCodeAt(i);
    let c2 = b.charCodeAt(i);
    if (c1 !== c2) {
      c1 |= 0x20;
      c2 |= 0x20;
      if (c1 !== c2 || c1 < 97 || c1 > 122) return false;
    }
  }
  return true;
}

function lookup(table: readonly string[], value: string): [number, string] {
  for (let i = 0; i < table.length; i++) {
    const name = table[i] as string;
    if (value.length >= name.length && matchFold(value.slice(0, name.length), name)) {
      return [i, value.slice(name.length)];
    }
  }
  return fail();
}

function parseNanoseconds(value: string, nbytesIn: number): { ns: number; rangeError: boolean } {
  if (value[0] !== '.' && value[0] !== ',') fail();
  let nbytes = nbytesIn;
  let digits = value;
  if (nbytes > 10) {
    digits = value.slice(0, 10);
    nbytes = 10;
  }
  let ns = atoi(digits.slice(1, nbytes));
  if (ns < 0) return { ns: 0, rangeError: true };
  for (let i = 0; i < 10 - nbytes; i++) ns *= 10;
  return { ns, rangeError: false };
}

function parseSignedOffset(value: string): number {
  const sign = value[0];
  if (sign !== '-' && sign !== '+') return 0;
  const lead = leadingInt(value.slice(1));
  if (lead === undefined || lead.rest === value.slice(1)) return 0;
  if (lead.x > 23n) return 0;
  return value.length - lead.rest.length;
}

function parseTimeZone(value: string): number | undefined {
  if (value.length < 3) return undefined;
  if (value.startsWith('ChST') || value.startsWith('MeST')) return 4;
  if (value.startsWith('GMT')) {
    const rest = value.slice(3);
    return rest.length === 0 ? 3 : 3 + parseSignedOffset(rest);
  }
  if (value[0] === '+' || value[0] === '-') {
    const length = parseSignedOffset(value);
    return length > 0 ? length : undefined;
  }
  let upper = 0;
  for (; upper < 6 && upper < value.length; upper++) {
    const c = value.charCodeAt(upper);
    if (c < 65 || c > 90) break;
  }
  switch (upper) {
    case 5:
      return value[4] === 'T' ? 5 : undefined;
    case 4:
      return value[3] === 'T' || value.startsWith('WITA') ? 4 : undefined;
    case 3:
      return 3;
    default:
      return undefined;
  }
}

/** Go's time.Parse(layout, value) with UTC as the default (and local) location. */
export function parseTime(layoutIn: string, valueIn: string): Instant | undefined {
  try {
    return parseOrThrow(layoutIn, valueIn);
  } catch (error) {
    if (isPavilionError(error)) return undefined;
    throw error;
  }
}

function parseOrThrow(layoutIn: string, valueIn: string): Instant {
  let layout = layoutIn;
  let value = valueIn;
  let amSet = false;
  let pmSet = false;
  let year = 0;
  let month = -1;
  let day = -1;
  let yday = -1;
  let hour = 0;
  let min = 0;
  let sec = 0;
  let nsec = 0;
  let utc = false;
  let zoneOffsetSec = -1;
  let zoneName = '';

  for (;;) {
    const c = nextStdChunk(layout);
    value = skip(value, c.prefix);
    if (c.std === null) {
      if (value.length !== 0) fail();
      break;
    }
    layout = c.suffix;
    let rangeError = false;
    let p: string;
    switch (c.std) {
      case 'Year':
        if (value.length < 2) fail();
        p = value.slice(0, 2);
        value = value.slice(2);
        year = atoi(p);
        year += year >= 69 ? 1900 : 2000;
        break;
      case 'LongYear':
        if (value.length < 4 || !isDigitAt(value, 0)) fail();
        p = value.slice(0, 4);
        value = value.slice(4);
        year = atoi(p);
        break;
      case 'Month':
        [month, value] = lookup(SHORT_MONTHS, value);
        month++;
        break;
      case 'LongMonth':
        [month, value] = lookup(LONG_MONTHS, value);
        month++;
        break;
      case 'NumMonth':
      case 'ZeroMonth':
        [month, value] = getnum(value, c.std === 'ZeroMonth');
        if (month <= 0 || month > 12) rangeError = true;
        break;
      case 'WeekDay':
        [, value] = lookup(SHORT_DAYS, value);
        break;
      case 'LongWeekDay':
        [, value] = lookup(LONG_DAYS, value);
        break;
      case 'Day':
      case 'UnderDay':
      case 'ZeroDay':
        if (c.std === 'UnderDay' && value[0] === ' ') value = value.slice(1);
        [day, value] = getnum(value, c.std === 'ZeroDay');
        break;
      case 'UnderYearDay':
      case 'ZeroYearDay':
        for (let i = 0; i < 2; i++) {
          if (c.std === 'UnderYearDay' && value[0] === ' ') value = value.slice(1);
        }
        [yday, value] = getnum3(value, c.std === 'ZeroYearDay');
        break;
      case 'Hour':
        [hour, value] = getnum(value, false);
        if (hour < 0 || hour >= 24) rangeError = true;
        break;
      case 'Hour12':
      case 'ZeroHour12':
        [hour, value] = getnum(value, c.std === 'ZeroHour12');
        if (hour < 0 || hour > 12) rangeError = true;
        break;
      case 'Minute':
      case 'ZeroMinute':
        [min, value] = getnum(value, c.std === 'ZeroMinute');
        if (min < 0 || min >= 60) rangeError = true;
        break;
      case 'Second':
      case 'ZeroSecond': {
        [sec, value] = getnum(value, c.std === 'ZeroSecond');
        if (sec < 0 || sec >= 60) {
          rangeError = true;
          break;
        }
        if (value.length >= 2 && (value[0] === '.' || value[0] === ',') && isDigitAt(value, 1)) {
          const next = nextStdChunk(layout).std;
          if (next === 'FracSecond0' || next === 'FracSecond9') break;
          let n = 2;
          while (n < value.length && isDigitAt(value, n)) n++;
          const parsed = parseNanoseconds(value, n);
          nsec = parsed.ns;
          rangeError = parsed.rangeError;
          value = value.slice(n);
        }
        break;
      }
      case 'PM':
      case 'pm': {
        if (value.length < 2) fail();
        p = value.slice(0, 2);
        value = value.slice(2);
        const [pmText, amText] = c.std === 'PM' ? ['PM', 'AM'] : ['pm', 'am'];
        if (p === pmText) pmSet = true;
        else if (p === amText) amSet = true;
        else fail();
        break;
      }
      case 'TZ': {
        if (value.startsWith('UTC')) {
          utc = true;
          value = value.slice(3);
          break;
        }
        const n = parseTimeZone(value);
        if (n === undefined) fail();
        zoneName = value.slice(0, n);
        value = value.slice(n);
        break;
      }
      case 'FracSecond0': {
        const ndigit = 1 + c.digits;
        if (value.length < ndigit) fail();
        const parsed = parseNanoseconds(value, ndigit);
        nsec = parsed.ns;
        rangeError = parsed.rangeError;
        value = value.slice(ndigit);
        break;
      }
      case 'FracSecond9': {
        if (value.length < 2 || (value[0] !== '.' && value[0] !== ',') || !isDigitAt(value, 1)) break;
        let i = 0;
        while (i + 1 < value.length && isDigitAt(value, i + 1)) i++;
        const parsed = parseNanoseconds(value, 1 + i);
        nsec = parsed.ns;
        rangeError = parsed.rangeError;
        value = value.slice(1 + i);
        break;
      }
      default: {
        // numeric and ISO 8601 zone offsets
        if (c.std.startsWith('ISO8601') && value[0] === 'Z') {
          value = value.slice(1);
          utc = true;
          break;
        }
        let sign: string;
        let hh: string;
        let mm: string;
        let ss: string;
        if (c.std === 'ISO8601ColonTZ' || c.std === 'NumColonTZ') {
          if (value.length < 6 || value[3] !== ':') fail();
          [sign, hh, mm, ss] = [value.slice(0, 1), value.slice(1, 3), value.slice(4, 6), '00'];
          value = value.slice(6);
        } else if (c.std === 'NumShortTZ' || c.std === 'ISO8601ShortTZ') {
          if (value.length < 3) fail();
          [sign, hh, mm, ss] = [value.slice(0, 1), value.slice(1, 3), '00', '00'];
          value = value.slice(3);
        } else if (c.std === 'ISO8601ColonSecondsTZ' || c.std === 'NumColonSecondsTZ') {
          if (value.length < 9 || value[3] !== ':' || value[6] !== ':') fail();
          [sign, hh, mm, ss] = [value.slice(0, 1), value.slice(1, 3), value.slice(4, 6), value.slice(7, 9)];
          value = value.slice(9);
        } else if (c.std === 'ISO8601SecondsTZ' || c.std === 'NumSecondsTz') {
          if (value.length < 7) fail();
          [sign, hh, mm, ss] = [value.slice(0, 1), value.slice(1, 3), value.slice(3, 5), value.slice(5, 7)];
          value = value.slice(7);
        } else {
          if (value.length < 5) fail();
          [sign, hh, mm, ss] = [value.slice(0, 1), value.slice(1, 3), value.slice(3, 5), '00'];
          value = value.slice(5);
        }
        const [hr] = getnum(hh, true);
        const [mi] = getnum(mm, true);
        const [se] = getnum(ss, true);
        if (hr > 24 || mi > 60 || se > 60) rangeError = true;
        zoneOffsetSec = (hr * 60 + mi) * 60 + se;
        if (sign === '-') zoneOffsetSec = -zoneOffsetSec;
        else if (sign !== '+') fail();
        break;
      }
    }
    if (rangeError) fail();
  }

  if (pmSet && hour < 12) hour += 12;
  else if (amSet && hour === 12) hour = 0;

  if (yday >= 0) {
    let d = 0;
    let m = 0;
    if (isLeap(year)) {
      if (yday === 31 + 29) {
        m = 2;
        d = 29;
      } else if (yday > 31 + 29) {
        yday--;
      }
    }
    if (yday < 1 || yday > 365) fail();
    if (m === 0) {
      m = Math.floor((yday - 1) / 31) + 1;
      const before = (mm: number): number => daysFromCivil(2001, mm, 1) - daysFromCivil(2001, 1, 1);
      if (m < 12 && before(m + 1) < yday) m++;
      d = yday - before(m);
    }
    if (month >= 0 && month !== m) fail();
    month = m;
    if (day >= 0 && day !== d) fail();
    day = d;
  } else {
    if (month < 0) month = 1;
    if (day < 0) day = 1;
  }
  if (day < 1 || day > daysIn(month, year)) fail();

  const wall = daysFromCivil(year, month, day) * 86400 + hour * 3600 + min * 60 + sec;
  if (utc) return { sec: wall, nsec, zone: UTC };
  if (zoneOffsetSec !== -1) {
    return { sec: wall - zoneOffsetSec, nsec, zone: { kind: 'fixed', offset: zoneOffsetSec, name: '' } };
  }
  if (zoneName !== '') {
    // Go only records the abbreviation's offset in the location; the instant stays as parsed.
    let offset = 0;
    if (zoneName.length > 3 && zoneName.startsWith('GMT')) offset = atoi(zoneName.slice(3)) * 3600;
    return { sec: wall, nsec, zone: { kind: 'fixed', offset, name: zoneName } };
  }
  return { sec: wall, nsec, zone: UTC };
}

// ---------------------------------------------------------------------------------------------
// Durations (Go's time.ParseDuration, plus OPA's d/w/y units)

const UNIT_NS: Readonly<Record<string, bigint>> = {
  ns: 1n,
  us: 1000n,
  'µs': 1000n,
  'μs': 1000n,
  ms: 1_000_000n,
  s: NS_PER_SECOND,
  m: 60n * NS_PER_SECOND,
  h: 3600n * NS_PER_SECOND,
};

/** Go's time.ParseDuration, in nanoseconds. */
export function parseGoDuration(input: string): bigint | undefined {
  let s = input;
  let d = 0n;
  let neg = false;
  const limit = 2n ** 63n;
  if (s !== '' && (s[0] === '-' || s[0] === '+')) {
    neg = s[0] === '-';
    s = s.slice(1);
  }
  if (s === '0') return 0n;
  if (s === '') return undefined;
  while (s !== '') {
    if (!(s[0] === '.' || isDigitAt(s, 0))) return undefined;
    const before = s.length;
    const lead = leadingInt(s);
    if (lead === undefined) return undefined;
    let v = lead.x;
    s = lead.rest;
    const pre = before !== s.length;
    let post = false;
    let f = 0n;
    let scale = 1;
    if (s[0] === '.') {
      s = s.slice(1);
      const start = s.length;
      let overflow = false;
      let i = 0;
      for (; i < s.length; i++) {
        const c = s.charCodeAt(i);
        if (c < 48 || c > 57) break;
        if (overflow) continue;
        if (f > (limit - 1n) / 10n) {
          overflow = true;
          continue;
        }
        const y = f * 10n + BigInt(c - 48);
        if (y > limit) {
          overflow = true;
          continue;
        }
        f = y;
        scale *= 10;
      }
      s = s.slice(i);
      post = start !== s.length;
    }
    if (!pre && !post) return undefined;
    let i = 0;
    while (i < s.length && s[i] !== '.' && !isDigitAt(s, i)) i++;
    if (i === 0) return undefined;
    const unitName = s.slice(0, i);
    s = s.slice(i);
    const unit = UNIT_NS[unitName];
    if (unit === undefined) return undefined;
    if (v > limit / unit) return undefined;
    v *= unit;
    if (f > 0n) {
      v += BigInt(Math.trunc(Number(f) * (Number(unit) / scale)));
      if (v > limit) return undefined;
    }
    d += v;
    if (d > limit) return undefined;
  }
  if (neg) return -d;
  if (d > limit - 1n) return undefined;
  return d;
}

const EXTENDED_HOURS: Readonly<Record<string, number>> = { d: 24, w: 7 * 24, y: 365 * 24 };

/** Shortest decimal text of a double without exponent (Go's FormatFloat(x, 'f', -1, 64)). */
function formatFloatPlain(x: number): string {
  const text = String(x);
  const match = /^(-?)(\d+)(?:\.(\d+))?e([+-])(\d+)$/.exec(text);
  if (match === null) return text;
  const [, sign, intPart = '', frac = '', expSign, expDigits = '0'] = match;
  const exp = Number(expDigits);
  const digits = intPart + frac;
  if (expSign === '+') {
    const zeros = exp - frac.length;
    return sign + (zeros >= 0 ? digits + '0'.repeat(zeros) : `${digits.slice(0, digits.length + zeros)}.${digits.slice(digits.length + zeros)}`);
  }
  return `${sign}0.${'0'.repeat(exp - intPart.length)}${digits}`;
}

/** OPA's time.parse_duration_ns: Go durations, plus d (24h), w (7d) and y (365d) units. */
export function parseExtendedDuration(input: string): bigint | undefined {
  if (input === '') return undefined;
  if (!/[dwy]/.test(input)) return parseGoDuration(input);
  const match = /^([-+]?)((?:[0-9.]+(?:ms|us|µs|ns|[a-z]))+)$/.exec(input);
  if (match === null) return undefined;
  const sign = match[1] ?? '';
  let rewritten = sign;
  for (const segment of (match[2] ?? '').matchAll(/([0-9.]+)(ms|us|µs|ns|[a-z])/g)) {
    const digits = segment[1] ?? '';
    const unit = segment[2] ?? '';
    const hours = EXTENDED_HOURS[unit];
    if (hours === undefined) {
      rewritten += digits + unit;
      continue;
    }
    if (!/^(\d+\.?\d*|\.\d+)$/.test(digits)) return undefined;
    rewritten += `${formatFloatPlain(Number(digits) * hours)}h`;
  }
  return parseGoDuration(rewritten);
}
