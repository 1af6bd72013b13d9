/**
 * Benchmark results: `bench/results/<name>.json` =
 * {"benchmark", "machine", "cases": [{"name", "pavilion": {...}, "peer": {"name", ...}, "ratio": {...}}]}
 * with units in metric names and ratios as Pavilion/peer, plus a readable table on stdout.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, totalmem, type as osType, release } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../../sidecar/src/lib/tools.ts';

export type Metrics = Record<string, number>;

export interface BenchCase {
  readonly name: string;
  readonly pavilion: Metrics;
  readonly peer: Metrics & { readonly name?: never };
  readonly peerName: string;
  readonly notes?: string;
  /** Why the case was not measured in this run (its metrics are then empty). */
  readonly skipped?: string;
}

export function machine(): Record<string, unknown> {
  const cpu = cpus();
  return {
    cpus: cpu.length,
    cpu_model: cpu[0]?.model ?? 'unknown',
    memory_gb: Math.round(totalmem() / 2 ** 30),
    os: `${osType()} ${release()}`,
    node: process.version,
  };
}

function ratio(pavilion: Metrics, peer: Metrics): Metrics {
  const out: Metrics = {};
  for (const [key, value] of Object.entries(pavilion)) {
    const other = peer[key];
    if (typeof other === 'number' && other !== 0) out[key] = Math.round((value / other) * 1000) / 1000;
  }
  return out;
}

function fmt(value: number | undefined): string {
  if (value === undefined) return '-';
  if (Math.abs(value) >= 100) return value.toFixed(0);
  if (Math.abs(value) >= 1) return value.toFixed(2);
  return value.toPrecision(3);
}

export async function writeResults(benchmark: string, cases: readonly BenchCase[], extra: Record<string, unknown> = {}): Promise<string> {
  const document = {
    benchmark,
    machine: machine(),
    date: new Date().toISOString(),
    ...extra,
    cases: cases.map((c) => ({
      name: c.name,
      pavilion: c.pavilion,
      peer: { name: c.peerName, ...c.peer },
      ratio: ratio(c.pavilion, c.peer),
      ...(c.notes === undefined ? {} : { notes: c.notes }),
      ...(c.skipped === undefined ? {} : { skipped: c.skipped }),
    })),
  };
  const dir = join(REPO_ROOT, 'bench', 'results');
  await mkdir(dir, { recursive: true });
  const file = join(dir, `${benchmark}.json`);
  await writeFile(file, `${JSON.stringify(document, null, 2)}\n`);

  // readable table
  const lines: string[] = [];
  for (const c of document.cases) {
    lines.push(`\n${c.name}   (peer: ${c.peer.name})`);
    if ('skipped' in c) lines.push(`  skipped: ${String(c.skipped)}`);
    lines.push(`  ${'metric'.padEnd(28)} ${'pavilion'.padStart(12)} ${'peer'.padStart(12)} ${'ratio'.padStart(8)}`);
    const keys = new Set([...Object.keys(c.pavilion), ...Object.keys(c.peer).filter((k) => k !== 'name')]);
    for (const key of keys) {
      const p = (c.pavilion as Metrics)[key];
      const q = (c.peer as unknown as Metrics)[key];
      lines.push(`  ${key.padEnd(28)} ${fmt(p).padStart(12)} ${fmt(q).padStart(12)} ${fmt((c.ratio as Metrics)[key]).padStart(8)}`);
    }
  }
  process.stdout.write(`${lines.join('\n')}\n\nwrote ${file}\n`);
  return file;
}
