/** CPU time and memory of a process, from /proc (Linux). */
import { readdirSync, readFileSync } from 'node:fs';

const CLOCK_TICKS_PER_SECOND = 100; // sysconf(_SC_CLK_TCK) on Linux x86-64

/**
 * User + system CPU seconds consumed so far by `pid` (all its threads), or only by its main
 * thread (the event loop of a Node process) when `mainThreadOnly`.
 */
export function cpuSeconds(pid: number, mainThreadOnly = false): number {
  const stat = readFileSync(mainThreadOnly ? `/proc/${pid}/task/${pid}/stat` : `/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return (utime + stime) / CLOCK_TICKS_PER_SECOND;
}

/** The kB fields of /proc/<pid>/status, read once (undefined for a field it does not have). */
function statusKb(pid: number): (key: string) => number | undefined {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return (key) => {
    const value = new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(status)?.[1];
    return value === undefined ? undefined : Number(value);
  };
}

const roundedMb = (kb: number): number => Math.round(kb / 102.4) / 10;

/** Current and peak resident set size in MB. */
export function memoryMb(pid: number): { rss_mb: number; rss_peak_mb: number } {
  const kb = statusKb(pid);
  return { rss_mb: roundedMb(kb('VmRSS') ?? 0), rss_peak_mb: roundedMb(kb('VmHWM') ?? 0) };
}

/** The resident set in MB (as memoryMb gives it), and its anonymous and file-backed pages (shared memory with the files; NaN where the kernel does not say). */
export function residentMb(pid: number): { rss: number; anon: number; file: number } {
  const kb = statusKb(pid);
  const mb = (key: string): number => (kb(key) ?? Number.NaN) / 1024;
  return { rss: roundedMb(kb('VmRSS') ?? 0), anon: mb('RssAnon'), file: mb('RssFile') + mb('RssShmem') };
}

/** File descriptors `pid` holds open now. */
export function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/**
 * A WebAssembly memory is a reservation of about 10 GiB of address space: an inaccessible
 * 2 GiB guard, its pages in use (a read-write mapping), and an inaccessible 8 GiB guard after
 * them, larger than anything else a Node process maps.
 */
const WASM_GUARD_BEFORE_MIN_BYTES = 2 ** 30;
const WASM_GUARD_AFTER_MIN_BYTES = 4 * 2 ** 30;

/** The resident MB of `pid`'s WebAssembly memories: its read-write mappings between two Wasm guard regions (/proc/<pid>/smaps). */
export function wasmResidentMb(pid: number): number {
  const smaps = readFileSync(`/proc/${pid}/smaps`, 'utf8');
  const mappings: Array<{ start: bigint; end: bigint; perms: string; rssKb: number }> = [];
  for (const line of smaps.split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) /.exec(line);
    if (head !== null) {
      mappings.push({ start: BigInt(`0x${head[1]}`), end: BigInt(`0x${head[2]}`), perms: head[3] as string, rssKb: 0 });
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    const last = mappings.at(-1);
    if (rss !== null && last !== undefined) last.rssKb = Number(rss[1]);
  }
  const guards = (minBytes: number): Array<{ start: bigint; end: bigint }> => mappings.filter((m) => m.perms.startsWith('---') && m.end - m.start >= BigInt(minBytes));
  const guardEnds = new Set(guards(WASM_GUARD_BEFORE_MIN_BYTES).map((m) => m.end));
  const guardStarts = new Set(guards(WASM_GUARD_AFTER_MIN_BYTES).map((m) => m.start));
  return mappings.filter((m) => m.perms.startsWith('rw') && guardEnds.has(m.start) && guardStarts.has(m.end)).reduce((kb, m) => kb + m.rssKb, 0) / 1024;
}
