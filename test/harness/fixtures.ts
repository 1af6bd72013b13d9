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
  /** Manifest metadata (e.g. decision_tests). */
  readonly metadata?: Readonly<Record<string, unknown>>;
  /** Data files given as exact text (data path -> JSON text), for canonical-hashing tests. */
  readonly dataText?: Readonly<Record<string, string>>;
  /** Sign with `opa build --signing-key` (PEM file) and these claims (`--claims-file`). */
  readonly signing?: { readonly keyFile: string; readonly algorithm: string; readonly claims?: Record<string, unknown> };
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
    for (const [path, text] of Object.entries(fixture.dataText ?? {})) {
      const target = join(src, ...path.split('/'), 'data.json');
      await mkdir(dirname(target), { recursive: true });
      await writeFile(target, text);
    }
    const signing: string[] = [];
    if (fixture.signing !== undefined) {
      signing.push('--signing-key', fixture.signing.keyFile, '--signing-alg', fixture.signing.algorithm);
      if (fixture.signing.claims !== undefined) {
        await writeFile(join(dir, 'claims.json'), JSON.stringify(fixture.signing.claims));
        signing.push('--claims-file', join(dir, 'claims.json'));
      }
    }
    await writeFile(join(src, '.manifest'), JSON.stringify({ revision: fixture.revision ?? 'r1', roots: fixture.roots, ...(fixture.metadata === undefined ? {} : { metadata: fixture.metadata }) }));
    const out = join(dir, 'bundle.tar.gz');
    await runTool(findOpa(), [
      'build', '-t', 'wasm', '-b', src, '-o', out,
      ...(fixture.revision === undefined ? [] : ['--revision', fixture.revision]),
      ...signing,
      ...fixture.entrypoints.flatMap((e) => ['-e', e]),
    ]);
    return await readFile(out);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * A tenant's (bank by default) limits policy of the distribution tests: `allow` while
 * `input.amount` is within `data.<tenant>.limits.max` (10 in the snapshot; deltas change it),
 * and `rev` names the revision.
 */
export function limitsFixture(rev: string, tenant = 'bank'): FixtureBundle {
  return {
    modules: { [`${tenant}/authz.rego`]: `package ${tenant}.authz\n\nallow if input.amount <= data.${tenant}.limits.max\n\nrev := "${rev}"\n` },
    entrypoints: [`${tenant}/authz/allow`, `${tenant}/authz/rev`],
    roots: [tenant],
    revision: rev,
    data: { [`${tenant}/limits`]: { max: 10 } },
  };
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

/** Minimal WebAssembly binary writer for hostile-module tests (sections with LEB128 sizes). */
function leb128(value: number): number[] {
  const out: number[] = [];
  let v = value >>> 0;
  do {
    let byte = v & 0x7f;
    v >>>= 7;
    if (v !== 0) byte |= 0x80;
    out.push(byte);
  } while (v !== 0);
  return out;
}

function section(id: number, body: number[]): number[] {
  return [id, ...leb128(body.length), ...body];
}

function name(text: string): number[] {
  const bytes = [...Buffer.from(text, 'utf8')];
  return [...leb128(bytes.length), ...bytes];
}

const LOOP_FOREVER = [0x03, 0x40, 0x0c, 0x00, 0x0b]; // loop ... br 0 ... end

/**
 * A module whose start function never returns (`loopIn: 'start'`), or one that exports the
 * OPA ABI version globals and a `builtins` function that never returns (`loopIn: 'builtins'`).
 */
export function hostileWasm(loopIn: 'start' | 'builtins'): Buffer {
  const types = section(1, [0x03, 0x60, 0x00, 0x00, 0x60, 0x00, 0x01, 0x7f, 0x60, 0x01, 0x7f, 0x01, 0x7f]); // ()->(), ()->i32, (i32)->i32
  const header = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
  if (loopIn === 'start') {
    const functions = section(3, [0x01, 0x00]);
    const start = section(8, [0x00]);
    const body = [0x00, ...LOOP_FOREVER, 0x0b];
    const code = section(10, [0x01, ...leb128(body.length), ...body]);
    return Buffer.from([...header, ...types, ...functions, ...start, ...code]);
  }
  const functions = section(3, [0x02, 0x01, 0x02]); // 0: loops, ()->i32; 1: returns 0, (i32)->i32
  const globals = section(6, [0x02, 0x7f, 0x00, 0x41, 0x01, 0x0b, 0x7f, 0x00, 0x41, 0x02, 0x0b]); // i32 1, i32 2
  const exports = section(7, [
    0x05,
    ...name('builtins'), 0x00, 0x00,
    ...name('entrypoints'), 0x00, 0x00,
    ...name('opa_json_dump'), 0x00, 0x01,
    ...name('opa_wasm_abi_version'), 0x03, 0x00,
    ...name('opa_wasm_abi_minor_version'), 0x03, 0x01,
  ]);
  const loops = [0x00, ...LOOP_FOREVER, 0x41, 0x00, 0x0b];
  const zero = [0x00, 0x41, 0x00, 0x0b];
  const code = section(10, [0x02, ...leb128(loops.length), ...loops, ...leb128(zero.length), ...zero]);
  return Buffer.from([...header, ...types, ...functions, ...globals, ...exports, ...code]);
}

/** A module that exports only the OPA ABI version globals, with the version given (ABI mismatch tests). */
export function abiVersionWasm(major: number, minor: number): Buffer {
  const header = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
  const globals = section(6, [0x02, 0x7f, 0x00, 0x41, ...leb128(major), 0x0b, 0x7f, 0x00, 0x41, ...leb128(minor), 0x0b]);
  const exports = section(7, [0x02, ...name('opa_wasm_abi_version'), 0x03, 0x00, ...name('opa_wasm_abi_minor_version'), 0x03, 0x01]);
  return Buffer.from([...header, ...globals, ...exports]);
}
