/**
 * time.* builtins, following OPA's v1/topdown/time.go: timestamps are int64 nanoseconds since
 * the Unix epoch, optionally paired with an IANA zone name (and, for time.format, a Go layout)
 * as `[ns, "tz", "layout"]`; results outside the int64 nanosecond range are errors, and an
 * error makes the call undefined (OPA's non-strict mode).
 *
 * time.now_ns returns the evaluation context's fixed `nowNs`, exactly (raw JSON text), so every
 * call in one evaluation agrees.
 *
 * Known limits: timestamps beyond 2^53 ns arrive through opa-wasm's JSON.parse as doubles; we
 * read them back as the shortest decimal that round-trips, which is exact whenever the
 * original has at most 15 significant digits, and for present-day timestamps also at
 * microsecond precision (16 digits); a full 19-digit nanosecond value can be off by up to a
 * few hundred nanoseconds. See timelayout.ts and timezone.ts for the
 * layout and zone limits.
 */
import { type BuiltinFamily, type ContextProvider, exactInteger, integerFromDouble, isString, intOperand, rawJson } from './common.ts';
import {
  LONG_DAY_NAMES,
  MAX_INT64,
  MIN_INT64,
  NAMED_LAYOUTS,
  type Instant,
  dateOf,
  daysIn,
  formatInstant,
  instantFromUnixNanos,
  parseExtendedDuration,
  parseTime,
  unixNanos,
  wallClock,
} from './timelayout.ts';
import { type Zone, UTC, loadZone } from './timezone.ts';

const TWO_POW_63 = 2 ** 63;

/** A nanosecond timestamp operand (an integral number within int64). */
function nanosOperand(value: unknown): bigint | undefined {
  if (typeof value !== 'number') return undefined;
  // 2^63 is the double that int64 max (9223372036854775807) rounds to.
  if (value === TWO_POW_63) return MAX_INT64;
  const ns = integerFromDouble(value);
  if (ns === undefined || ns < MIN_INT64 || ns > MAX_INT64) return undefined;
  return ns;
}

interface TimeOperand {
  readonly instant: Instant;
  readonly layout: string;
}

/** OPA's tzTime: `ns` or `[ns]`, `[ns, tz]`, `[ns, tz, layout]`. */
function timeOperand(value: unknown): TimeOperand | undefined {
  let nsValue: unknown = value;
  let zone: Zone = UTC;
  let layout = '';
  if (Array.isArray(value)) {
    if (value.length === 0) return undefined;
    nsValue = value[0];
    if (typeof nsValue !== 'number') return undefined;
    if (value.length > 1) {
      const tz: unknown = value[1];
      if (!isString(tz)) return undefined;
      const loaded = loadZone(tz);
      if (loaded === undefined) return undefined;
      zone = loaded;
    }
    if (value.length > 2) {
      const lay: unknown = value[2];
      if (!isString(lay)) return undefined;
      layout = lay;
    }
  }
  const ns = nanosOperand(nsValue);
  if (ns === undefined) return undefined;
  return { instant: instantFromUnixNanos(ns, zone), layout };
}

/** OPA's toSafeUnixNano: the instant's nanoseconds if they fit int64. */
function safeUnixNanos(instant: Instant): number | bigint | undefined {
  const ns = unixNanos(instant);
  if (ns < MIN_INT64 || ns > MAX_INT64) return undefined;
  return exactInteger(ns);
}

function sameZone(a: Zone, b: Zone): boolean {
  if (a.kind !== b.kind) return false;
  if (a.kind === 'iana' && b.kind === 'iana') return a.name === b.name;
  if (a.kind === 'fixed' && b.kind === 'fixed') return a.offset === b.offset && a.name === b.name;
  return true;
}

function diff(a: unknown, b: unknown): number[] | undefined {
  const first = timeOperand(a);
  const second = timeOperand(b);
  if (first === undefined || second === undefined) return undefined;
  let t1 = first.instant;
  let t2 = second.instant;
  if (!sameZone(t1.zone, t2.zone)) t2 = { ...t2, zone: t1.zone };
  if (t1.sec > t2.sec || (t1.sec === t2.sec && t1.nsec > t2.nsec)) [t1, t2] = [t2, t1];
  const w1 = wallClock(t1);
  const w2 = wallClock(t2);
  let year = w2.year - w1.year;
  let month = w2.month - w1.month;
  let day = w2.day - w1.day;
  let hour = w2.hour - w1.hour;
  let min = w2.minute - w1.minute;
  let sec = w2.second - w1.second;
  if (sec < 0) {
    sec += 60;
    min--;
  }
  if (min < 0) {
    min += 60;
    hour--;
  }
  if (hour < 0) {
    hour += 24;
    day--;
  }
  if (day < 0) {
    day += daysIn(w1.month, w1.year);
    month--;
  }
  if (month < 0) {
    month += 12;
    year--;
  }
  return [year, month, day, hour, min, sec];
}

const MAX_DATE_DELTA = 1e12;

export function timeBuiltins(context: ContextProvider): BuiltinFamily {
  return {
    'time.now_ns': () => rawJson(context().nowNs.toString()),

    'time.parse_rfc3339_ns': (value) => {
      if (!isString(value)) return undefined;
      const instant = parseTime(NAMED_LAYOUTS['RFC3339'] as string, value);
      return instant === undefined ? undefined : safeUnixNanos(instant);
    },

    'time.parse_ns': (layout, value) => {
      if (!isString(layout) || !isString(value)) return undefined;
      const instant = parseTime(NAMED_LAYOUTS[layout] ?? layout, value);
      return instant === undefined ? undefined : safeUnixNanos(instant);
    },

    'time.parse_duration_ns': (value) => {
      if (!isString(value)) return undefined;
      const ns = parseExtendedDuration(value);
      return ns === undefined ? undefined : exactInteger(ns);
    },

    'time.format': (value) => {
      const operand = timeOperand(value);
      if (operand === undefined) return undefined;
      const layout =
        operand.layout === '' ? (NAMED_LAYOUTS['RFC3339Nano'] as string) : (NAMED_LAYOUTS[operand.layout] ?? operand.layout);
      return formatInstant(operand.instant, layout);
    },

    'time.date': (value) => {
      const operand = timeOperand(value);
      if (operand === undefined) return undefined;
      const w = wallClock(operand.instant);
      return [w.year, w.month, w.day];
    },

    'time.clock': (value) => {
      const operand = timeOperand(value);
      if (operand === undefined) return undefined;
      const w = wallClock(operand.instant);
      return [w.hour, w.minute, w.second];
    },

    'time.weekday': (value) => {
      const operand = timeOperand(value);
      if (operand === undefined) return undefined;
      return LONG_DAY_NAMES[wallClock(operand.instant).weekday];
    },

    'time.add_date': (value, years, months, days) => {
      const operand = timeOperand(value);
      const y = intOperand(years);
      const m = intOperand(months);
      const d = intOperand(days);
      if (operand === undefined || y === undefined || m === undefined || d === undefined) return undefined;
      if (Math.abs(y) > MAX_DATE_DELTA || Math.abs(m) > MAX_DATE_DELTA || Math.abs(d) > MAX_DATE_DELTA) return undefined;
      const w = wallClock(operand.instant);
      const result = dateOf(w.year + y, w.month + m, w.day + d, w.hour, w.minute, w.second, w.nsec, operand.instant.zone);
      return safeUnixNanos(result);
    },

    'time.diff': (a, b) => diff(a, b),
  };
}
