/**
 * net.cidr_* builtins provided by the host, following OPA's v1/topdown/cidr.go and
 * internal/cidr/merge with Go's net/netip address syntax (IPv4 fields without leading zeros,
 * IPv6 with one "::" and an optional trailing dotted quad, no zones) and Go's net.IP.String
 * (IPv4-mapped addresses print as IPv4; IPv6 in RFC 5952 form).
 *
 * - net.cidr_merge: the smallest set of CIDRs covering the union of the inputs; a bare IPv4
 *   address counts with its classful default mask, as in OPA; untouched inputs are returned as
 *   written (normalised), merged ranges as aligned blocks.
 * - net.cidr_expand, net.cidr_is_valid, net.cidr_contains_matches.
 *
 * net.cidr_contains and net.cidr_intersects are compiled into Wasm by OPA and need no host code.
 *
 * Known limits: results that are Rego sets come back as sorted arrays; a set operand of
 * net.cidr_contains_matches arrives as an array, so its matches carry array indices instead of
 * the set members; net.cidr_expand refuses networks of more than 65536 addresses (OPA expands
 * until the query is cancelled).
 */
import { type BuiltinFamily, isObject, isString, toSortedSet } from './common.ts';

type Bytes = Uint8Array;

const V4_IN_V6_PREFIX = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

function parseIPv4Fields(s: string): number[] | undefined {
  const fields = s.split('.');
  if (fields.length !== 4) return undefined;
  const out: number[] = [];
  for (const field of fields) {
    if (!/^\d{1,3}$/.test(field) || (field.length > 1 && field[0] === '0')) return undefined;
    const value = Number(field);
    if (value > 255) return undefined;
    out.push(value);
  }
  return out;
}

interface ParsedAddr {
  readonly bytes: Bytes;
  /** 32 for IPv4, 128 for IPv6 (including IPv4-mapped IPv6 written in IPv6 form). */
  readonly bitLen: number;
}

function parseIPv6(input: string): Bytes | undefined {
  let s = input;
  const ip = new Uint8Array(16);
  let ellipsis = -1;
  if (s.startsWith('::')) {
    ellipsis = 0;
    s = s.slice(2);
    if (s.length === 0) return ip;
  }
  let i = 0;
  while (i < 16) {
    let off = 0;
    let acc = 0;
    for (; off < s.length; off++) {
      const d = parseInt(s[off] as string, 16);
      if (Number.isNaN(d) || !/[0-9a-fA-F]/.test(s[off] as string)) break;
      if (off > 3) return undefined;
      acc = acc * 16 + d;
    }
    if (off === 0) return undefined;
    if (off < s.length && s[off] === '.') {
      if (ellipsis < 0 && i !== 12) return undefined;
      if (i + 4 > 16) return undefined;
      const v4 = parseIPv4Fields(s);
      if (v4 === undefined) return undefined;
      ip.set(v4, i);
      i += 4;
      s = '';
      break;
    }
    ip[i] = acc >> 8;
    ip[i + 1] = acc & 0xff;
    i += 2;
    s = s.slice(off);
    if (s.length === 0) break;
    if (s[0] !== ':' || s.length === 1) return undefined;
    s = s.slice(1);
    if (s[0] === ':') {
      if (ellipsis >= 0) return undefined;
      ellipsis = i;
      s = s.slice(1);
      if (s.length === 0) break;
    }
  }
  if (s.length !== 0) return undefined;
  if (i < 16) {
    if (ellipsis < 0) return undefined;
    const n = 16 - i;
    for (let j = i - 1; j >= ellipsis; j--) ip[j + n] = ip[j] as number;
    ip.fill(0, ellipsis, ellipsis + n);
  } else if (ellipsis >= 0) {
    return undefined;
  }
  return ip;
}

/** Go's netip.ParseAddr without zones. */
function parseAddr(s: string): ParsedAddr | undefined {
  if (s.includes('%')) return undefined;
  if (!s.includes(':')) {
    const v4 = parseIPv4Fields(s);
    return v4 === undefined ? undefined : { bytes: Uint8Array.from([...V4_IN_V6_PREFIX, ...v4]), bitLen: 32 };
  }
  const v6 = parseIPv6(s);
  return v6 === undefined ? undefined : { bytes: v6, bitLen: 128 };
}

function to4(ip: Bytes): Bytes | undefined {
  if (ip.length === 4) return ip;
  if (ip.length === 16 && V4_IN_V6_PREFIX.every((b, i) => ip[i] === b)) return ip.slice(12);
  return undefined;
}

/** Go's net.IP.String. */
export function ipString(ip: Bytes): string {
  const v4 = to4(ip);
  if (v4 !== undefined) return Array.from(v4).join('.');
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((ip[i] ?? 0) << 8) | (ip[i + 1] ?? 0));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestStart < 0) return groups.map((g) => g.toString(16)).join(':');
  const head = groups.slice(0, bestStart).map((g) => g.toString(16)).join(':');
  const tail = groups.slice(bestStart + bestLen).map((g) => g.toString(16)).join(':');
  return `${head}::${tail}`;
}

interface IPNet {
  /** 16 bytes from parsing (Go keeps As16), possibly not masked for bare IPv4 addresses. */
  readonly ip: Bytes;
  /** 4 bytes for IPv4 networks, 16 for IPv6. */
  readonly mask: Bytes;
}

function cidrMask(ones: number, bits: number): Bytes {
  const mask = new Uint8Array(bits / 8);
  for (let i = 0; i < ones; i++) mask[i >> 3] = (mask[i >> 3] as number) | (0x80 >> (i & 7));
  return mask;
}

function maskIP(ip: Bytes, maskIn: Bytes): Bytes | undefined {
  let mask = maskIn;
  let addr = ip;
  if (mask.length === 16 && addr.length === 4 && mask.slice(0, 12).every((b) => b === 0xff)) mask = mask.slice(12);
  if (mask.length === 4 && addr.length === 16 && V4_IN_V6_PREFIX.every((b, i) => addr[i] === b)) addr = addr.slice(12);
  if (mask.length !== addr.length) return undefined;
  return addr.map((b, i) => b & (mask[i] as number));
}

/** Go's net.ParseCIDR: the (masked) network. */
function parseCIDR(s: string): { ip: Bytes; net: IPNet } | undefined {
  const slash = s.indexOf('/');
  if (slash < 0) return undefined;
  const addr = parseAddr(s.slice(0, slash));
  const maskText = s.slice(slash + 1);
  if (addr === undefined || !/^\d+$/.test(maskText) || maskText.length > 8) return undefined;
  const ones = Number(maskText);
  if (ones > addr.bitLen) return undefined;
  const mask = cidrMask(ones, addr.bitLen);
  const masked = maskIP(addr.bytes, mask);
  if (masked === undefined) return undefined;
  const netIP = masked.length === 4 ? Uint8Array.from([...V4_IN_V6_PREFIX, ...masked]) : masked;
  return { ip: addr.bytes, net: { ip: netIP, mask } };
}

function networkNumberAndMask(n: IPNet): { ip: Bytes; mask: Bytes } | undefined {
  let ip = to4(n.ip);
  if (ip === undefined) {
    ip = n.ip;
    if (ip.length !== 16) return undefined;
  }
  let mask = n.mask;
  if (mask.length === 4) {
    if (ip.length !== 4) return undefined;
  } else if (mask.length === 16) {
    if (ip.length === 4) mask = mask.slice(12);
  } else {
    return undefined;
  }
  return { ip, mask };
}

function maskOnes(mask: Bytes): number {
  let ones = 0;
  let seenZero = false;
  for (const byte of mask) {
    for (let bit = 7; bit >= 0; bit--) {
      if ((byte >> bit) & 1) {
        if (seenZero) return -1;
        ones++;
      } else {
        seenZero = true;
      }
    }
  }
  return ones;
}

/** Go's net.IPNet.String. */
function netString(n: IPNet): string {
  const nm = networkNumberAndMask(n);
  if (nm === undefined) return '<nil>';
  const ones = maskOnes(nm.mask);
  return `${ipString(nm.ip)}/${ones}`;
}

/** Go's net.IPNet.Contains. */
function netContains(n: IPNet, ipIn: Bytes): boolean {
  const nm = networkNumberAndMask(n);
  if (nm === undefined) return false;
  const ip = to4(ipIn) ?? ipIn;
  if (ip.length !== nm.ip.length) return false;
  for (let i = 0; i < ip.length; i++) {
    const m = nm.mask[i] as number;
    if (((nm.ip[i] as number) & m) !== ((ip[i] as number) & m)) return false;
  }
  return true;
}

function bytesToBig(bytes: Bytes): bigint {
  let out = 0n;
  for (const b of bytes) out = (out << 8n) | BigInt(b);
  return out;
}

function bigToBytes(value: bigint, length: number): Bytes {
  const out = new Uint8Array(length);
  let v = value;
  for (let i = length - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

/** OPA's cidr contains (used by net.cidr_contains_matches). */
function cidrContains(a: string, b: string): boolean | undefined {
  const netA = parseCIDR(a)?.net;
  if (netA === undefined) return undefined;
  const ip = parseAddr(b);
  if (ip !== undefined) return netContains(netA, ip.bytes);
  const netB = parseCIDR(b)?.net;
  if (netB === undefined) return undefined;
  const plainV6 = (n: IPNet): boolean => n.mask.length === 16 && to4(n.ip) === undefined;
  if (plainV6(netA) && plainV6(netB)) {
    const onesA = maskOnes(netA.mask);
    const onesB = maskOnes(netB.mask);
    const masked = maskIP(netB.ip, netA.mask);
    return onesA <= onesB && masked !== undefined && masked.every((x, i) => x === netA.ip[i]);
  }
  if (!netContains(netA, netB.ip)) return false;
  const nm = networkNumberAndMask(netB);
  if (nm === undefined) return false;
  const hostBits = nm.mask.length * 8 - maskOnes(nm.mask);
  const last = bytesToBig(nm.ip) | ((1n << BigInt(hostBits)) - 1n);
  return netContains(netA, bigToBytes(last, nm.ip.length));
}

// ---------------------------------------------------------------------------------------------
// net.cidr_merge

interface Range {
  first: bigint;
  last: bigint;
  /** The original network, while the range has not been merged with another. */
  network: IPNet | undefined;
}

const V4_BASE = 0xffffn << 32n;
const V4_TOP = V4_BASE | 0xffffffffn;

/** OPA's GetAddressRange: first and last address in the 128-bit (v4-mapped) space. */
function addressRange(n: IPNet): Range | undefined {
  const masked = maskIP(n.ip, n.mask);
  if (masked === undefined) return undefined;
  const first16 = masked.length === 4 ? Uint8Array.from([...V4_IN_V6_PREFIX, ...masked]) : masked;
  const first = bytesToBig(first16);
  const hostBits = n.mask.length * 8 - maskOnes(n.mask);
  return { first, last: first | ((1n << BigInt(hostBits)) - 1n), network: n };
}

function isV4Mapped(value: bigint): boolean {
  return value >= V4_BASE && value <= V4_TOP;
}

/** The aligned blocks exactly covering [first, last]. */
function rangeToCIDRs(first: bigint, last: bigint): string[] {
  const v4 = isV4Mapped(first);
  const base = v4 ? V4_BASE : 0n;
  const bits = v4 ? 32 : 128;
  const out: string[] = [];
  let start = first - base;
  const end = last - base;
  while (start <= end) {
    let size = 0;
    while (size < bits) {
      const next = 1n << BigInt(size + 1);
      if (start % next !== 0n || start + next - 1n > end) break;
      size++;
    }
    const block = 1n << BigInt(size);
    out.push(`${ipString(bigToBytes(start + base, 16))}/${bits - size}`);
    start += block;
  }
  return out;
}

function generateIPNet(value: unknown): IPNet | undefined {
  if (!isString(value)) return undefined;
  const addr = parseAddr(value);
  if (addr === undefined) return parseCIDR(value)?.net;
  const v4 = to4(addr.bytes);
  if (v4 === undefined) return undefined;
  const first = v4[0] as number;
  const ones = first < 0x80 ? 8 : first < 0xc0 ? 16 : 24;
  return { ip: addr.bytes, mask: cidrMask(ones, 32) };
}

function cidrMerge(value: unknown): string[] | undefined {
  if (!Array.isArray(value)) return undefined;
  const ranges: Range[] = [];
  for (const item of value) {
    const network = generateIPNet(item);
    if (network === undefined) return undefined;
    const range = addressRange(network);
    if (range === undefined) return undefined;
    ranges.push(range);
  }
  ranges.sort((a, b) => (a.last !== b.last ? (a.last < b.last ? -1 : 1) : a.first < b.first ? -1 : a.first > b.first ? 1 : 0));
  for (let i = ranges.length - 1; i > 0; i--) {
    const current = ranges[i] as Range;
    const previous = ranges[i - 1] as Range;
    const atZero = current.first === 0n || current.first === V4_BASE;
    const before = atZero ? current.first : current.first - 1n;
    if (before <= previous.last) {
      ranges[i - 1] = {
        first: previous.first < current.first ? previous.first : current.first,
        last: current.last,
        network: undefined,
      };
      ranges.splice(i, 1);
    }
  }
  const out: string[] = [];
  for (const range of ranges) {
    if (range.network !== undefined) out.push(netString(range.network));
    else out.push(...rangeToCIDRs(range.first, range.last));
  }
  return toSortedSet(out) as string[];
}

// ---------------------------------------------------------------------------------------------
// net.cidr_expand, net.cidr_contains_matches

const MAX_EXPAND = 65536n;

function cidrExpand(value: unknown): string[] | undefined {
  if (!isString(value)) return undefined;
  const parsed = parseCIDR(value);
  if (parsed === undefined) return undefined;
  const range = addressRange(parsed.net);
  if (range === undefined || range.last - range.first + 1n > MAX_EXPAND) return undefined;
  const out: string[] = [];
  for (let ip = range.first; ip <= range.last; ip++) out.push(ipString(bigToBytes(ip, 16)));
  return toSortedSet(out) as string[];
}

interface Candidate {
  readonly cidr: unknown;
  readonly index: unknown;
}

function matchCandidates(operand: unknown): Candidate[] | undefined {
  const element = (x: unknown): unknown => {
    if (isString(x)) return x;
    if (Array.isArray(x) && x.length > 0) return x[0];
    return undefined;
  };
  if (isString(operand)) return [{ cidr: operand, index: operand }];
  const out: Candidate[] = [];
  if (Array.isArray(operand)) {
    for (let i = 0; i < operand.length; i++) {
      const cidr = element(operand[i]);
      if (cidr === undefined) return undefined;
      out.push({ cidr, index: i });
    }
    return out;
  }
  if (isObject(operand)) {
    for (const key of Object.keys(operand)) {
      const cidr = element(operand[key]);
      if (cidr === undefined) return undefined;
      out.push({ cidr, index: key });
    }
    return out;
  }
  return [];
}

function cidrContainsMatches(a: unknown, b: unknown): unknown[] | undefined {
  const left = matchCandidates(a);
  const right = matchCandidates(b);
  if (left === undefined || right === undefined) return undefined;
  const out: unknown[] = [];
  for (const x of left) {
    for (const y of right) {
      if (!isString(x.cidr) || !isString(y.cidr)) return undefined;
      const contained = cidrContains(x.cidr, y.cidr);
      if (contained === undefined) return undefined;
      if (contained) out.push([x.index, y.index]);
    }
  }
  return toSortedSet(out);
}

export function netBuiltins(): BuiltinFamily {
  return {
    'net.cidr_merge': (value) => cidrMerge(value),
    'net.cidr_expand': (value) => cidrExpand(value),
    'net.cidr_is_valid': (value) => isString(value) && parseCIDR(value) !== undefined,
    'net.cidr_contains_matches': (a, b) => cidrContainsMatches(a, b),
  };
}
