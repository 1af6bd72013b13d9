/**
 * Time zones for the time builtins, as Go's LoadLocation provides them to OPA: "" and "UTC"
 * are UTC, "Local" is the process's zone, anything else an IANA zone name. Offsets come from
 * the runtime's ICU data (Intl.DateTimeFormat); abbreviations (Go's `MST` layout element) from
 * the system's TZif zoneinfo files, which Go reads too, matched to that offset.
 *
 * Known limits: without zoneinfo files, abbreviations fall back to Intl's en-US short names,
 * which read e.g. `GMT+5:30` where tzdata says `IST`; Intl accepts zone names
 * case-insensitively where Go's LoadLocation does not.
 */
import { readFileSync } from 'node:fs';

/** Days since 1970-01-01 of a proleptic Gregorian date (month 1..12). */
export function daysFromCivil(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const mp = month > 2 ? month - 3 : month + 9;
  const doy = Math.floor((153 * mp + 2) / 5) + day - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

export type Zone =
  | { readonly kind: 'utc' }
  | { readonly kind: 'fixed'; readonly offset: number; readonly name: string }
  | { readonly kind: 'iana'; readonly name: string };

export const UTC: Zone = { kind: 'utc' };

const formatters = new Map<string, Intl.DateTimeFormat>();
const abbreviators = new Map<string, Intl.DateTimeFormat>();
const MAX_DATE_SECONDS = 8_640_000_000_000;

function formatterFor(name: string): Intl.DateTimeFormat {
  let formatter = formatters.get(name);
  if (formatter === undefined) {
    formatter = new Intl.DateTimeFormat('en-US', {
      timeZone: name,
      hourCycle: 'h23',
      era: 'short',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
    formatters.set(name, formatter);
  }
  return formatter;
}

/** Go's LoadLocation for OPA's tz operand: "" and "UTC" are UTC, "Local" the process zone. */
export function loadZone(name: string): Zone | undefined {
  if (name === '' || name === 'UTC') return UTC;
  if (name === 'Local') {
    const local = new Intl.DateTimeFormat().resolvedOptions().timeZone;
    return local === 'UTC' || local === 'Etc/UTC' ? UTC : { kind: 'iana', name: local };
  }
  if (name.includes('..') || name.startsWith('/')) return undefined;
  try {
    formatterFor(name);
  } catch {
    return undefined;
  }
  return { kind: 'iana', name };
}

/** Seconds east of UTC in effect at the given instant. */
export function zoneOffset(zone: Zone, unixSec: number): number {
  if (zone.kind === 'utc') return 0;
  if (zone.kind === 'fixed') return zone.offset;
  const clamped = Math.max(-MAX_DATE_SECONDS, Math.min(MAX_DATE_SECONDS, unixSec));
  const parts = formatterFor(zone.name).formatToParts(new Date(clamped * 1000));
  const field = (type: string): number => Number(parts.find((p) => p.type === type)?.value ?? '0');
  let year = field('year');
  if (parts.find((p) => p.type === 'era')?.value === 'BC') year = 1 - year;
  const wall =
    daysFromCivil(year, field('month'), field('day')) * 86400 + field('hour') * 3600 + field('minute') * 60 + field('second');
  return wall - clamped;
}

interface TzType {
  readonly offset: number;
  readonly abbr: string;
}

interface TzInfo {
  readonly transitions: readonly number[];
  readonly transitionTypes: readonly number[];
  readonly types: readonly TzType[];
  /** [name, offset] pairs from the POSIX TZ footer (standard, then daylight). */
  readonly footer: ReadonlyArray<readonly [string, number]>;
}

/** Where zoneinfo lives: $ZONEINFO when it names a directory, then the Unix locations Go searches. */
function zoneinfoDirs(): string[] {
  const explicit = process.env['ZONEINFO'];
  const standard = ['/usr/share/zoneinfo', '/usr/lib/zoneinfo', '/usr/share/lib/zoneinfo'];
  return explicit !== undefined && explicit !== '' && !explicit.endsWith('.zip') ? [explicit, ...standard] : standard;
}

const tzInfos = new Map<string, TzInfo | null>();

function parsePosixNames(footer: string): Array<[string, number]> {
  const out: Array<[string, number]> = [];
  const token = /^(<[^>]+>|[A-Za-z]{3,})([+-]?\d{1,2}(?::\d{2}){0,2})?/;
  let rest = footer;
  for (let i = 0; i < 2 && rest.length > 0; i++) {
    const match = token.exec(rest);
    if (match === null) break;
    const name = (match[1] ?? '').replace(/^<|>$/g, '');
    let offset: number;
    if (match[2] === undefined) {
      if (i === 0) break;
      offset = (out[0]?.[1] ?? 0) + 3600;
    } else {
      const [h = '0', m = '0', sec = '0'] = match[2].replace(/^[+-]/, '').split(':');
      offset = -(match[2].startsWith('-') ? -1 : 1) * (Number(h) * 3600 + Number(m) * 60 + Number(sec));
    }
    out.push([name, offset]);
    rest = rest.slice(match[0].length);
  }
  return out;
}

function parseTzif(data: Buffer): TzInfo | null {
  if (data.length < 44 || data.toString('latin1', 0, 4) !== 'TZif') return null;
  const counts = (at: number): number[] => [0, 1, 2, 3, 4, 5].map((i) => data.readUInt32BE(at + 20 + i * 4));
  let base = 0;
  let [isut = 0, isstd = 0, leap = 0, timecnt = 0, typecnt = 0, charcnt = 0] = counts(0);
  let timeSize = 4;
  if (data[4] !== 0) {
    base = 44 + timecnt * 5 + typecnt * 6 + charcnt + leap * 8 + isstd + isut;
    if (data.length < base + 44 || data.toString('latin1', base, base + 4) !== 'TZif') return null;
    [isut = 0, isstd = 0, leap = 0, timecnt = 0, typecnt = 0, charcnt = 0] = counts(base);
    timeSize = 8;
  }
  let pos = base + 44;
  const transitions: number[] = [];
  for (let i = 0; i < timecnt; i++, pos += timeSize) {
    transitions.push(timeSize === 8 ? Number(data.readBigInt64BE(pos)) : data.readInt32BE(pos));
  }
  const transitionTypes = Array.from(data.subarray(pos, pos + timecnt));
  pos += timecnt;
  const rawTypes: Array<[number, number]> = [];
  for (let i = 0; i < typecnt; i++, pos += 6) rawTypes.push([data.readInt32BE(pos), data[pos + 5] ?? 0]);
  const chars = data.subarray(pos, pos + charcnt);
  pos += charcnt + leap * (timeSize + 4) + isstd + isut;
  const types = rawTypes.map(([offset, index]) => {
    const end = chars.indexOf(0, index);
    return { offset, abbr: chars.toString('latin1', index, end < 0 ? chars.length : end) };
  });
  const footerText = timeSize === 8 ? data.toString('latin1', pos).replace(/^\n|\n$/g, '') : '';
  return { transitions, transitionTypes, types, footer: parsePosixNames(footerText) };
}

function tzInfo(name: string): TzInfo | null {
  const cached = tzInfos.get(name);
  if (cached !== undefined) return cached;
  let info: TzInfo | null = null;
  if (/^[A-Za-z0-9_+\-]+(\/[A-Za-z0-9_+\-]+)*$/.test(name)) {
    for (const dir of zoneinfoDirs()) {
      try {
        info = parseTzif(readFileSync(`${dir}/${name}`));
        break;
      } catch {
        // not in this directory
      }
    }
  }
  tzInfos.set(name, info);
  return info;
}

function tzifAbbreviation(info: TzInfo, unixSec: number, offset: number): string | undefined {
  let index = -1;
  for (let lo = 0, hi = info.transitions.length - 1; lo <= hi; ) {
    const mid = (lo + hi) >> 1;
    if ((info.transitions[mid] as number) <= unixSec) {
      index = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  const beyondLast = index === info.transitions.length - 1 && info.footer.length > 0;
  const type = index >= 0 ? info.types[info.transitionTypes[index] ?? 0] : info.types[0];
  if (!beyondLast && type !== undefined && type.offset === offset) return type.abbr;
  for (const [name, footerOffset] of info.footer) if (footerOffset === offset) return name;
  for (let i = info.types.length - 1; i >= 0; i--) if (info.types[i]?.offset === offset) return info.types[i]?.abbr;
  return undefined;
}

/** The zone's abbreviation at the instant (Go prints it for the `MST` layout element). */
export function zoneAbbreviation(zone: Zone, unixSec: number): string {
  if (zone.kind === 'utc') return 'UTC';
  if (zone.kind === 'fixed') return zone.name;
  const info = tzInfo(zone.name);
  if (info !== null) {
    const name = tzifAbbreviation(info, unixSec, zoneOffset(zone, unixSec));
    if (name !== undefined) return name;
  }
  let formatter = abbreviators.get(zone.name);
  if (formatter === undefined) {
    formatter = new Intl.DateTimeFormat('en-US', { timeZone: zone.name, timeZoneName: 'short' });
    abbreviators.set(zone.name, formatter);
  }
  const clamped = Math.max(-MAX_DATE_SECONDS, Math.min(MAX_DATE_SECONDS, unixSec));
  const part = formatter.formatToParts(new Date(clamped * 1000)).find((p) => p.type === 'timeZoneName');
  return part?.value ?? '';
}

