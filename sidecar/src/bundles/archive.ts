/**
 * Reading an OPA bundle archive (`bundle.tar.gz` as `opa build -t wasm` writes it) into a
 * validated, tenant-confined `Bundle` value.
 *
 * Checks, in order, each failing with its own code and leaving nothing half-loaded:
 * compressed size, gzip integrity and decompressed size (decompression bombs), tar
 * structure (checksums, only regular files, no path traversal), the set of allowed entries,
 * the `.manifest` (revision, roots, wasm entries), roots confined to the tenant's namespace
 * and not overlapping, data, packages and entrypoints under the roots, and the Wasm module
 * named by the manifest being present.
 *
 * This module is pure: no I/O besides the buffer it is handed, no Wasm compilation
 * (that is the engine's job).
 */
import { setOwn } from '../lib/own-property.ts';
import { sha256Hex } from '../lib/sha256.ts';
import { promisify } from 'node:util';
import { gunzip, gunzipSync } from 'node:zlib';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import { readTar, type TarEntry } from './tar.ts';

const gunzipAsync = promisify(gunzip);
/** Archives that inflate to at most this are inflated on the calling thread. */
const INLINE_GUNZIP_BYTES = 4 * 1024 * 1024;

export interface BundleLimits {
  readonly maxCompressedBytes: number;
  readonly maxUncompressedBytes: number;
}

export const DEFAULT_BUNDLE_LIMITS: BundleLimits = Object.freeze({
  maxCompressedBytes: 32 * 1024 * 1024,
  maxUncompressedBytes: 128 * 1024 * 1024,
});

export interface WasmResolver {
  readonly entrypoint: string;
  readonly module: string;
}

/** The `.manifest` file, as OPA defines it. */
export interface BundleManifest {
  readonly revision: string;
  readonly roots: readonly string[];
  readonly wasm: readonly WasmResolver[];
  readonly metadata: Readonly<Record<string, unknown>>;
  readonly rego_version?: number;
}

export interface Bundle {
  readonly tenant: string;
  readonly manifest: BundleManifest;
  readonly revision: string;
  /** The single Wasm module all entrypoints resolve to. */
  readonly wasm: Buffer;
  /** The merged data document (what `data` is inside the policy). */
  readonly data: Record<string, unknown>;
  /** Entrypoint paths, e.g. 'bank/authz/allow'. */
  readonly entrypoints: readonly string[];
  /** Every file in the archive, by normalised name (for signature verification). */
  readonly files: ReadonlyMap<string, Buffer>;
  /** Hex SHA-256 of the compressed archive. */
  readonly digest: string;
  readonly sizeBytes: number;
}

export interface ReadBundleOptions {
  readonly tenant: string;
  /** Data path prefix the tenant owns, e.g. 'bank'. Roots must equal it or sit below it. */
  readonly namespace: string;
  readonly limits?: BundleLimits;
}

function invalidManifest(message: string): PavilionError {
  return new PavilionError(ErrorCodes.BUNDLE_MANIFEST_INVALID, `bundle .manifest is invalid: ${message}`);
}

function splitPath(path: string): string[] {
  return path.split('/').filter((segment) => segment !== '');
}

/** True when `path` equals `prefix` or lies below it, segment-wise. */
export function pathWithin(path: readonly string[], prefix: readonly string[]): boolean {
  if (prefix.length > path.length) return false;
  return prefix.every((segment, i) => path[i] === segment);
}

function parseManifest(raw: Buffer): BundleManifest {
  let value: unknown;
  try {
    value = JSON.parse(raw.toString('utf8'));
  } catch (error) {
    throw invalidManifest(`not JSON (${describeThrown(error)})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalidManifest('not an object');
  const m = value as Record<string, unknown>;
  if (typeof m['revision'] !== 'string') throw invalidManifest('revision must be a string');
  const roots = m['roots'] ?? [''];
  if (!Array.isArray(roots) || !roots.every((r): r is string => typeof r === 'string')) {
    throw invalidManifest('roots must be an array of strings');
  }
  const wasm = m['wasm'] ?? [];
  if (!Array.isArray(wasm)) throw invalidManifest('wasm must be an array');
  const resolvers: WasmResolver[] = wasm.map((w: unknown, i) => {
    if (typeof w !== 'object' || w === null) throw invalidManifest(`wasm[${i}] must be an object`);
    const { entrypoint, module } = w as Record<string, unknown>;
    if (typeof entrypoint !== 'string' || typeof module !== 'string') {
      throw invalidManifest(`wasm[${i}] needs string entrypoint and module`);
    }
    return { entrypoint, module };
  });
  const metadata = m['metadata'] ?? {};
  if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata)) {
    throw invalidManifest('metadata must be an object');
  }
  const regoVersion = m['rego_version'];
  if (regoVersion !== undefined && typeof regoVersion !== 'number') throw invalidManifest('rego_version must be a number');
  return {
    revision: m['revision'],
    roots,
    wasm: resolvers,
    metadata: metadata as Record<string, unknown>,
    ...(regoVersion === undefined ? {} : { rego_version: regoVersion }),
  };
}

function checkRoots(roots: readonly string[], namespace: string): string[][] {
  const ns = splitPath(namespace);
  const split = roots.map(splitPath);
  split.forEach((root, i) => {
    if (!pathWithin(root, ns)) {
      throw new PavilionError(
        ErrorCodes.BUNDLE_ROOTS_FOREIGN,
        `bundle root ${JSON.stringify(roots[i])} is outside the tenant's namespace '${namespace}'`,
        { details: { root: roots[i], namespace } },
      );
    }
  });
  for (let i = 0; i < split.length; i++) {
    for (let j = i + 1; j < split.length; j++) {
      const a = split[i] ?? [];
      const b = split[j] ?? [];
      if (pathWithin(a, b) || pathWithin(b, a)) {
        throw new PavilionError(
          ErrorCodes.BUNDLE_ROOTS_OVERLAP,
          `bundle roots ${JSON.stringify(roots[i])} and ${JSON.stringify(roots[j])} overlap`,
        );
      }
    }
  }
  return split;
}

function underSomeRoot(path: readonly string[], roots: readonly string[][]): boolean {
  return roots.some((root) => pathWithin(path, root));
}

/** Every value in `data` placed at `path` must lie under a root. */
function checkDataUnderRoots(value: unknown, path: string[], roots: readonly string[][], file: string): void {
  if (underSomeRoot(path, roots)) return;
  const leadsToRoot = roots.some((root) => pathWithin(root, path));
  if (leadsToRoot && typeof value === 'object' && value !== null && !Array.isArray(value)) {
    for (const [key, child] of Object.entries(value)) checkDataUnderRoots(child, [...path, key], roots, file);
    return;
  }
  throw new PavilionError(
    ErrorCodes.BUNDLE_DATA_OUTSIDE_ROOTS,
    `data at '${path.join('/')}' (from ${file}) is outside the bundle's roots`,
  );
}

/**
 * Own-property access only: bundle data is attacker-controlled, and `target['__proto__']`
 * would read or replace the object's prototype (prototype pollution) instead of a key.
 */
function ownGet(target: Record<string, unknown>, key: string): unknown {
  return Object.hasOwn(target, key) ? target[key] : undefined;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function mergeInto(target: Record<string, unknown>, path: readonly string[], value: unknown, file: string): void {
  if (path.length === 0) {
    if (!isPlainObject(value)) {
      throw new PavilionError(ErrorCodes.BUNDLE_CORRUPT, `${file} at the data root must be an object`);
    }
    for (const [key, child] of Object.entries(value)) mergeInto(target, [key], child, file);
    return;
  }
  const [head, ...rest] = path as [string, ...string[]];
  const existing = ownGet(target, head);
  if (rest.length === 0) {
    if (isPlainObject(existing) && isPlainObject(value)) {
      for (const [key, child] of Object.entries(value)) mergeInto(existing, [key], child, file);
      return;
    }
    if (existing !== undefined) {
      throw new PavilionError(ErrorCodes.BUNDLE_CORRUPT, `data conflict at '${path.join('/')}' (from ${file})`);
    }
    setOwn(target, head, value);
    return;
  }
  const next = existing ?? {};
  if (!isPlainObject(next)) {
    throw new PavilionError(ErrorCodes.BUNDLE_CORRUPT, `data conflict at '${head}' (from ${file})`);
  }
  setOwn(target, head, next);
  mergeInto(next, rest, value, file);
}

/** An escape of a surrogate code unit (`\ud800`-`\udfff`), paired or not. */
const SURROGATE_ESCAPE = /\\u[dD][89a-fA-F][0-9a-fA-F]{2}/;
const MAX_DATA_DEPTH = 512;

/**
 * A data file's value as OPA serves it. Go's JSON decoder turns an unpaired surrogate escape
 * into U+FFFD, and the signature's canonical hash does the same (file-hash.ts): served as
 * `JSON.parse` leaves it, `"\ud800"` and `"\ufffd"` would hash alike but be different data.
 */
function parseDataFile(name: string, text: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new PavilionError(ErrorCodes.BUNDLE_CORRUPT, `${name} is not valid JSON: ${describeThrown(error)}`);
  }
  return SURROGATE_ESCAPE.test(text) ? wellFormed(value, 0, name) : value;
}

function wellFormed(value: unknown, depth: number, name: string): unknown {
  if (typeof value === 'string') return value.toWellFormed();
  if (typeof value !== 'object' || value === null) return value;
  if (depth >= MAX_DATA_DEPTH) throw new PavilionError(ErrorCodes.BUNDLE_CORRUPT, `${name} is nested deeper than ${MAX_DATA_DEPTH} levels`);
  if (Array.isArray(value)) return value.map((item) => wellFormed(item, depth + 1, name));
  const out: Record<string, unknown> = {};
  for (const [key, child] of Object.entries(value)) {
    const clean = key.toWellFormed();
    // keys are unique here, so a clash is two keys that differ only by an unpaired surrogate:
    // the hash keeps the one written last in the file, JSON.parse's order another, and which
    // value was signed cannot be told
    if (Object.hasOwn(out, clean)) {
      throw new PavilionError(ErrorCodes.BUNDLE_CORRUPT, `${name} has two keys that are the same once unpaired surrogates are replaced by U+FFFD: ${JSON.stringify(clean)}`);
    }
    setOwn(out, clean, wellFormed(child, depth + 1, name));
  }
  return out;
}

const PACKAGE_LINE = /^\s*package\s+([A-Za-z_][\w.]*)/m;

async function decompress(compressed: Buffer, limits: BundleLimits): Promise<Buffer> {
  if (compressed.length > limits.maxCompressedBytes) {
    throw new PavilionError(
      ErrorCodes.BUNDLE_TOO_LARGE,
      `bundle is ${compressed.length} bytes; the limit is ${limits.maxCompressedBytes}`,
      { details: { sizeBytes: compressed.length, maxCompressedBytes: limits.maxCompressedBytes } },
    );
  }
  try {
    // Small archives (the usual bundle) inflate in about a millisecond: do it inline rather
    // than hop to the thread pool, which a fleet-wide rollout keeps busy. "Small" is what
    // the gzip trailer claims (ISIZE), and the inline inflate is capped at that bound, so a
    // bomb that lies about its size cannot hold the event loop.
    const claimed = compressed.length >= 4 ? compressed.readUInt32LE(compressed.length - 4) : Number.MAX_SAFE_INTEGER;
    const inlineCap = Math.min(INLINE_GUNZIP_BYTES, limits.maxUncompressedBytes);
    // One output chunk of the claimed size instead of zlib's 16 KiB steps: about 40% less
    // CPU for a typical 140 KB bundle (a lie only costs more steps, still under the cap).
    return claimed <= inlineCap
      ? gunzipSync(compressed, { maxOutputLength: inlineCap, chunkSize: Math.max(16 * 1024, claimed + 1) })
      : await gunzipAsync(compressed, { maxOutputLength: limits.maxUncompressedBytes });
  } catch (error) {
    if (error instanceof RangeError || (error as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') {
      throw new PavilionError(
        ErrorCodes.BUNDLE_TOO_LARGE,
        `bundle decompresses to more than ${limits.maxUncompressedBytes} bytes`,
        { cause: error, details: { maxUncompressedBytes: limits.maxUncompressedBytes } },
      );
    }
    throw new PavilionError(ErrorCodes.BUNDLE_CORRUPT, `bundle is not valid gzip: ${describeThrown(error)}`, {
      cause: error,
    });
  }
}

function classifyEntries(entries: readonly TarEntry[], manifest: BundleManifest): void {
  const modules = new Set(manifest.wasm.map((w) => `/${splitPath(w.module).join('/')}`));
  for (const { name } of entries) {
    const base = name.slice(name.lastIndexOf('/') + 1);
    const allowed =
      name === '/.manifest' ||
      name === '/.signatures.json' ||
      base === 'data.json' ||
      name.endsWith('.rego') ||
      modules.has(name);
    if (!allowed) {
      throw new PavilionError(
        ErrorCodes.BUNDLE_UNEXPECTED_ENTRY,
        `bundle contains an unexpected entry ${name} (allowed: .manifest, .signatures.json, data.json files, .rego sources, the manifest's wasm modules)`,
        { details: { entry: name } },
      );
    }
  }
}

/** Decompress, parse and validate a bundle archive for one tenant. */
export async function readBundle(compressed: Buffer, options: ReadBundleOptions): Promise<Bundle> {
  const limits = options.limits ?? DEFAULT_BUNDLE_LIMITS;
  const tarBytes = await decompress(compressed, limits);
  const entries = readTar(tarBytes);
  const files = new Map(entries.map((entry) => [entry.name, entry.data] as const));

  const manifestBytes = files.get('/.manifest');
  if (manifestBytes === undefined) {
    throw new PavilionError(ErrorCodes.BUNDLE_MANIFEST_MISSING, 'bundle has no .manifest');
  }
  const manifest = parseManifest(manifestBytes);
  classifyEntries(entries, manifest);
  const roots = checkRoots(manifest.roots, options.namespace);

  const data: Record<string, unknown> = {};
  for (const [name, bytes] of files) {
    if (!name.endsWith('/data.json')) continue;
    const value = parseDataFile(name, bytes.toString('utf8'));
    const dir = splitPath(name).slice(0, -1);
    checkDataUnderRoots(value, dir, roots, name);
    mergeInto(data, dir, value, name);
  }

  for (const [name, bytes] of files) {
    if (!name.endsWith('.rego')) continue;
    const match = PACKAGE_LINE.exec(bytes.toString('utf8'));
    if (match?.[1] === undefined) throw new PavilionError(ErrorCodes.BUNDLE_CORRUPT, `${name} has no package line`);
    const pkg = match[1].split('.');
    if (!underSomeRoot(pkg, roots)) {
      throw new PavilionError(
        ErrorCodes.BUNDLE_ROOTS_FOREIGN,
        `${name} declares package ${match[1]}, outside the bundle's roots`,
      );
    }
  }

  if (manifest.wasm.length === 0) {
    throw new PavilionError(ErrorCodes.BUNDLE_WASM_MISSING, 'bundle manifest lists no wasm entrypoints (build with opa build -t wasm)');
  }
  const moduleNames = new Set(manifest.wasm.map((w) => `/${splitPath(w.module).join('/')}`));
  if (moduleNames.size !== 1) {
    throw new PavilionError(ErrorCodes.BUNDLE_MANIFEST_INVALID, 'bundle manifest names more than one wasm module; one per bundle is supported');
  }
  const moduleName = [...moduleNames][0];
  const wasm = moduleName === undefined ? undefined : files.get(moduleName);
  if (wasm === undefined) {
    throw new PavilionError(ErrorCodes.BUNDLE_WASM_MISSING, `bundle manifest names wasm module ${moduleName ?? ''} but it is not in the archive`);
  }
  const entrypoints = manifest.wasm.map((w) => splitPath(w.entrypoint).join('/'));
  for (const entrypoint of entrypoints) {
    if (!underSomeRoot(splitPath(entrypoint), roots)) {
      throw new PavilionError(ErrorCodes.BUNDLE_ROOTS_FOREIGN, `entrypoint ${entrypoint} is outside the bundle's roots`);
    }
  }

  return {
    tenant: options.tenant,
    manifest,
    revision: manifest.revision,
    wasm,
    data,
    entrypoints,
    files,
    digest: sha256Hex(compressed),
    sizeBytes: compressed.length,
  };
}
