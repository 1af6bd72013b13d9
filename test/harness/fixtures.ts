/**
 * Test fixtures: bundles built by the real `opa build -t wasm` from Rego written in the
 * test, and hand-made archives for malformed-bundle tests.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { findOpa, runTool } from '../../sidecar/src/lib/tools.ts';

export interface FixtureBundle {
  /** Rego modules by file name. */
  readonly modules: Readonly<Record<string, string>>;
  readonly entrypoints: readonly string[];
  readonly roots: readonly string[];
  /** Data files: data path -> value. */
  readonly data?: Readonly<Record<string, unknown>>;
  readonly revision?: string;
}

/** Build a Wasm bundle with the real opa CLI and return the archive bytes. */
export async function buildFixtureBundle(fixture: FixtureBundle): Promise<Buffer> {
  const dir = await mkdtemp(join(tmpdir(), 'pavilion-fixture-'));
  try {
    const src = join(dir, 'src');
    for (const [name, text] of Object.entries(fixture.modules)) {
      await mkdir(dirname(join(src, name)), { recursive: true });
      await writeFile(join(src, name), text);
    }
    for (const [path, value] of Object.entries(fixture.data ?? {})) {
      const target = join(src, ...path.split('/'), 'data.json');
      await mkdir(dirname(target), { recursive: true });
      await writeFile(target, JSON.stringify(value));
    }
    await writeFile(join(src, '.manifest'), JSON.stringify({ revision: fixture.revision ?? 'r1', roots: fixture.roots }));
    const out = join(dir, 'bundle.tar.gz');
    await runTool(findOpa(), [
      'build', '-t', 'wasm', '-b', src, '-o', out,
      ...(fixture.revision === undefined ? [] : ['--revision', fixture.revision]),
      ...fixture.entrypoints.flatMap((e) => ['-e', e]),
    ]);
    return await readFile(out);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export interface RawTarEntry {
  readonly name: string;
  readonly data?: Buffer | string;
  /** ustar type flag: '0' file (default), '2' symlink, '5' directory, ... */
  readonly type?: string;
  readonly linkName?: string;
}

function octal(value: number, length: number): string {
  return value.toString(8).padStart(length - 1, '0') + '\0';
}

/** Write a ustar archive by hand (for archives opa would never produce). */
export function makeTar(entries: readonly RawTarEntry[]): Buffer {
  const blocks: Buffer[] = [];
  for (const entry of entries) {
    const data = Buffer.isBuffer(entry.data) ? entry.data : Buffer.from(entry.data ?? '');
    const header = Buffer.alloc(512);
    header.write(entry.name, 0, 100, 'utf8');
    header.write(octal(0o644, 8), 100);
    header.write(octal(0, 8), 108);
    header.write(octal(0, 8), 116);
    header.write(octal(data.length, 12), 124);
    header.write(octal(0, 12), 136);
    header.write('        ', 148);
    header.write(entry.type ?? '0', 156);
    if (entry.linkName !== undefined) header.write(entry.linkName, 157, 100);
    header.write('ustar\0', 257);
    header.write('00', 263);
    let sum = 0;
    for (const byte of header) sum += byte;
    header.write(octal(sum, 7) + ' ', 148);
    blocks.push(header, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

export function makeTarGz(entries: readonly RawTarEntry[]): Buffer {
  return gzipSync(makeTar(entries));
}

/** Read every entry of a (well-formed) bundle so a test can modify and repack it. */
export async function unpackFixture(archive: Buffer): Promise<RawTarEntry[]> {
  const { readTar } = await import('../../sidecar/src/bundles/index.ts');
  const { gunzipSync } = await import('node:zlib');
  return readTar(gunzipSync(archive)).map((entry) => ({ name: entry.name.slice(1), data: entry.data }));
}
