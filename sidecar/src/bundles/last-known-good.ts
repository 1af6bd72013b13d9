/**
 * Last known good: every activated bundle is written to local disk, so a sidecar restarted
 * while its bundle source is unreachable serves the revisions it last ran (as OPA's bundle
 * persistence does), with the delta data updates it had applied on top of them.
 *
 * One commit point per save: the archive is written under its own SHA-256
 * (`bundle-<digest>.tar.gz`), then `meta.json`, which names that digest, replaces the old one
 * by rename; each file is fsync'ed before its rename and the directory after. A crash at any
 * moment leaves a meta.json that names an archive which is there in full, the old pair or the
 * new one, never a new archive labelled with the old deploy. A load reads the archive the
 * meta names and checks its SHA-256 (a pair that does not match - damage, or a tear left by an
 * older version that wrote `bundle.tar.gz` in place - loads as nothing). What is read back is
 * then verified again like any other bundle: the disk is not trusted more than the network.
 * Archives no meta names any more are removed after each save.
 *
 * Deltas: after each successful application the whole sequence of deltas applied on the
 * deploy (the signed messages as received: v, tenant, base, sequence, roots, patch,
 * signatures) is written to `deltas-<digest>-<deploy>.json` (PersistedDeltasV1, fsync'ed,
 * renamed into place, directory fsync'ed), bound inside to the tenant, the snapshot's digest
 * and its deploy. The file is not a second commit point for the snapshot: a load reads only
 * the file named after the digest and deploy that meta.json names, and checks the binding in
 * it again (a file renamed or copied onto another snapshot is refused,
 * ERR_BUNDLE_DELTA_SEQUENCE); the tenant manager then verifies every delta's signature and
 * applies it under the live sequence guard. Crash windows:
 * - during a delta save (before its rename): the previous deltas file, a prefix of the
 *   applied sequence, is what loads - the deltas of that last application are lost until the
 *   source is back (persistence is best effort; it never names the wrong snapshot);
 * - a new deploy's save, before meta.json's rename: the old meta, the old archive and the old
 *   deploy's deltas file are all still there, a consistent old pair;
 * - after meta.json's rename, before the old files are removed: the old deltas file is named
 *   after the old digest or deploy, so it is never read for the new snapshot (and is removed
 *   by the next save). The same bytes deployed again (a new deploy) are saved again, so the
 *   meta names the new deploy and the old deploy's deltas stop applying;
 * - a failed (not crashed) save of a new deploy leaves the old meta: the new deploy's deltas
 *   go to their own file, which that meta does not name.
 * Bounds: at most MAX_PERSISTED_DELTAS deltas (the publisher's per-deploy cap) and
 * `maxDeltasBytes` bytes per file; a larger file is refused on load (ERR_BUNDLE_DELTA_LIMIT)
 * and not written on save. Each save rewrites the file whole: the cost grows with the deploy's
 * deltas, bounded by those limits.
 */
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { syncDirectory, writeFileDurably } from '../lib/durable-file.ts';
import { ErrorCodes, PavilionError, isPavilionError, wrapError } from '../lib/errors.ts';
import { parsePatch, type DeltaMessageV1, type DeltaUpdate } from './delta.ts';
import { TENANT_ID_PATTERN } from '../lib/tenant-id.ts';

export interface PersistedBundleMeta {
  readonly tenant: string;
  readonly revision: string;
  /** Hex SHA-256 of the archive. */
  readonly digest: string;
  /** The distribution pointer's sequence (KV revision) the bundle came from, if any. */
  readonly sequence?: number;
  readonly savedAt: string;
}

export interface PersistedBundle {
  readonly archive: Buffer;
  readonly meta: PersistedBundleMeta;
}

/** The deltas file of one snapshot: bound to the tenant, the snapshot's digest and its deploy. */
export interface PersistedDeltasV1 {
  readonly v: 1;
  readonly tenant: string;
  /** Hex SHA-256 of the snapshot archive these deltas apply to. */
  readonly digest: string;
  /** The snapshot's deploy (pointer sequence). */
  readonly base: number;
  /** Each the signed message as received on `<prefix>.delta.<tenant>`. */
  readonly deltas: readonly DeltaMessageV1[];
}

/**
 * What a load of the deltas gives: the deltas that read well, in order, and why the rest
 * (if any) were refused - the first bad delta and every one after it, or the whole file.
 */
export interface LoadedDeltas {
  readonly deltas: readonly DeltaUpdate[];
  readonly refused?: PavilionError;
}

/** The snapshot the deltas belong to. */
export interface DeltaBinding {
  readonly tenant: string;
  readonly digest: string;
  readonly base: number;
}

/** Most deltas a persisted file may hold (the publisher's cap per deploy, MAX_DELTAS_PER_DEPLOY). */
export const MAX_PERSISTED_DELTAS = 10_000;
/** Default of `LastKnownGoodOptions.maxDeltasBytes`. */
export const DEFAULT_MAX_PERSISTED_DELTAS_BYTES = 64 * 1024 * 1024;

export interface LastKnownGoodOptions {
  /** Largest deltas file written or loaded (default DEFAULT_MAX_PERSISTED_DELTAS_BYTES). */
  readonly maxDeltasBytes?: number;
}

const DIGEST = /^[0-9a-f]{64}$/;
const DELTAS_FILE = /^deltas-[0-9a-f]{64}-\d+\.json$/;
const deltasName = (digest: string, base: number): string => `deltas-${digest}-${base}.json`;
/** The archive file of each save, and the single file of versions before content addressing. */
const ARCHIVE_FILE = /^bundle(-[0-9a-f]{64})?\.tar\.gz$/;
const LEGACY_ARCHIVE = 'bundle.tar.gz';

const archiveName = (digest: string): string => `bundle-${digest}.tar.gz`;

export class LastKnownGood {
  readonly #directory: string;
  readonly #maxDeltasBytes: number;

  constructor(directory: string, options: LastKnownGoodOptions = {}) {
    const maxDeltasBytes = options.maxDeltasBytes ?? DEFAULT_MAX_PERSISTED_DELTAS_BYTES;
    if (!Number.isSafeInteger(maxDeltasBytes) || maxDeltasBytes < 1) {
      throw new PavilionError(ErrorCodes.CONFIG_INVALID, `maxDeltasBytes must be a positive integer, not ${maxDeltasBytes}`);
    }
    this.#directory = directory;
    this.#maxDeltasBytes = maxDeltasBytes;
  }

  get directory(): string {
    return this.#directory;
  }

  async save(archive: Buffer, meta: PersistedBundleMeta): Promise<void> {
    const digest = createHash('sha256').update(archive).digest('hex');
    if (meta.digest !== digest) {
      throw new PavilionError(ErrorCodes.BUNDLE_DIGEST_MISMATCH, `last known good: the archive's SHA-256 is ${digest}, not the ${meta.digest} its metadata names`);
    }
    const dir = join(this.#directory, meta.tenant);
    await mkdir(dir, { recursive: true });
    const keep = archiveName(digest);
    await writeFileDurably(join(dir, keep), archive);
    await writeFileDurably(join(dir, 'meta.json'), `${JSON.stringify(meta)}\n`); // the commit point
    await syncDirectory(dir);
    // after the commit point: the old archive, and deltas of any other snapshot or deploy
    const keepDeltas = meta.sequence === undefined ? undefined : deltasName(digest, meta.sequence);
    for (const file of await readdir(dir)) {
      if ((file !== keep && ARCHIVE_FILE.test(file)) || (file !== keepDeltas && DELTAS_FILE.test(file))) await rm(join(dir, file), { force: true });
    }
  }

  /**
   * Persist the whole sequence of deltas applied on the snapshot `binding` names (1, 2, ...
   * in order). Replaces that snapshot's previous deltas file in one rename; touches nothing
   * else (meta.json decides which snapshot, hence which deltas file, a load reads).
   */
  async saveDeltas(binding: DeltaBinding, deltas: readonly DeltaUpdate[]): Promise<void> {
    if (!TENANT_ID_PATTERN.test(binding.tenant) || !DIGEST.test(binding.digest) || !Number.isSafeInteger(binding.base) || binding.base < 1) {
      throw new PavilionError(ErrorCodes.BUNDLE_DELTA_INVALID, 'last known good: deltas must be bound to a tenant, a snapshot digest and a deploy');
    }
    if (deltas.length > MAX_PERSISTED_DELTAS) {
      throw new PavilionError(ErrorCodes.BUNDLE_DELTA_LIMIT, `last known good: ${deltas.length} deltas are more than the ${MAX_PERSISTED_DELTAS} one deploy takes`);
    }
    const file: PersistedDeltasV1 = {
      v: 1, tenant: binding.tenant, digest: binding.digest, base: binding.base,
      deltas: deltas.map((d) => ({
        v: 1, tenant: binding.tenant, base: d.base, sequence: d.sequence, roots: d.roots, patch: { data: d.operations },
        ...(d.signatures === undefined ? {} : { signatures: d.signatures }),
      })),
    };
    const bytes = Buffer.from(`${JSON.stringify(file)}\n`);
    if (bytes.length > this.#maxDeltasBytes) {
      throw new PavilionError(ErrorCodes.BUNDLE_DELTA_LIMIT, `last known good: the deltas of deploy ${binding.base} take ${bytes.length} bytes, more than ${this.#maxDeltasBytes}`);
    }
    const dir = join(this.#directory, binding.tenant);
    await mkdir(dir, { recursive: true });
    await writeFileDurably(join(dir, deltasName(binding.digest, binding.base)), bytes);
    await syncDirectory(dir);
  }

  /**
   * The persisted deltas of the snapshot `meta` names (as `load` returned it): none when
   * there is no file; else the deltas that read well up to the first that does not, and the
   * refusal (its code) of the rest. Structure only: signatures and the sequence guard are
   * the tenant manager's, as for live deltas.
   */
  async loadDeltas(meta: PersistedBundleMeta): Promise<LoadedDeltas> {
    if (meta.sequence === undefined) return { deltas: [] };
    const binding: DeltaBinding = { tenant: meta.tenant, digest: meta.digest, base: meta.sequence };
    const path = join(this.#directory, meta.tenant, deltasName(meta.digest, meta.sequence));
    let text: string;
    try {
      const size = (await stat(path)).size;
      if (size > this.#maxDeltasBytes) {
        return { deltas: [], refused: new PavilionError(ErrorCodes.BUNDLE_DELTA_LIMIT, `persisted deltas of deploy ${binding.base}: ${size} bytes, more than ${this.#maxDeltasBytes}`, { details: { base: binding.base, bytes: size, limit: this.#maxDeltasBytes } }) };
      }
      text = await readFile(path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { deltas: [] };
      return { deltas: [], refused: wrapError(error, ErrorCodes.BUNDLE_DELTA_INVALID, `reading the persisted deltas of deploy ${binding.base}`) };
    }
    try {
      return parsePersistedDeltas(text, binding);
    } catch (error) {
      return { deltas: [], refused: isPavilionError(error) ? error : wrapError(error, ErrorCodes.BUNDLE_DELTA_INVALID, 'persisted deltas') };
    }
  }

  async load(tenant: string): Promise<PersistedBundle | undefined> {
    try {
      const dir = join(this.#directory, tenant);
      const meta = JSON.parse(await readFile(join(dir, 'meta.json'), 'utf8')) as PersistedBundleMeta;
      if (meta.tenant !== tenant || typeof meta.digest !== 'string' || !DIGEST.test(meta.digest)) return undefined;
      const archive = await readFile(join(dir, archiveName(meta.digest))).catch(async (error: unknown) => {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
        return readFile(join(dir, LEGACY_ARCHIVE));
      });
      if (createHash('sha256').update(archive).digest('hex') !== meta.digest) return undefined;
      return { archive, meta };
    } catch {
      return undefined;
    }
  }

  /** Where the deltas of a snapshot are persisted (for tests and operators). */
  deltasFile(binding: DeltaBinding): string {
    return join(this.#directory, binding.tenant, deltasName(binding.digest, binding.base));
  }

  async tenants(): Promise<string[]> {
    try {
      const entries = await readdir(this.#directory, { withFileTypes: true });
      return entries.filter((e) => e.isDirectory() && TENANT_ID_PATTERN.test(e.name)).map((e) => e.name).sort();
    } catch {
      return [];
    }
  }
}

/** Read a deltas file: the binding, then each delta's structure, in order (the first bad one ends the list). */
function parsePersistedDeltas(text: string, binding: DeltaBinding): LoadedDeltas {
  const invalid = (message: string): PavilionError => new PavilionError(ErrorCodes.BUNDLE_DELTA_INVALID, `persisted deltas of deploy ${binding.base}: ${message}`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw invalid('not JSON');
  }
  const file = (typeof value === 'object' && value !== null ? value : {}) as Record<string, unknown>;
  if (file['v'] !== 1) throw invalid('unsupported version');
  if (file['tenant'] !== binding.tenant || file['digest'] !== binding.digest || file['base'] !== binding.base) {
    throw new PavilionError(ErrorCodes.BUNDLE_DELTA_SEQUENCE, `persisted deltas are bound to tenant ${JSON.stringify(file['tenant'])}, snapshot ${String(file['digest']).slice(0, 12)}, deploy ${String(file['base'])}, not to the persisted snapshot ${binding.digest.slice(0, 12)} of deploy ${binding.base}: not applied`, {
      details: { base: binding.base, boundBase: file['base'], boundDigest: file['digest'] },
    });
  }
  const raw = file['deltas'];
  if (!Array.isArray(raw)) throw invalid('deltas must be an array');
  if (raw.length > MAX_PERSISTED_DELTAS) {
    throw new PavilionError(ErrorCodes.BUNDLE_DELTA_LIMIT, `persisted deltas of deploy ${binding.base}: ${raw.length} deltas, more than the ${MAX_PERSISTED_DELTAS} one deploy takes`);
  }
  const deltas: DeltaUpdate[] = [];
  for (const [i, item] of raw.entries()) {
    try {
      deltas.push(parsePersistedDelta(item, binding.tenant));
    } catch (error) {
      const cause = isPavilionError(error) ? error : wrapError(error, ErrorCodes.BUNDLE_DELTA_INVALID, 'persisted delta');
      return { deltas, refused: new PavilionError(cause.code, `persisted delta ${i + 1} of deploy ${binding.base}: ${cause.message}`, { cause, details: { base: binding.base, index: i + 1 } }) };
    }
  }
  return { deltas };
}

function parsePersistedDelta(value: unknown, tenant: string): DeltaUpdate {
  const d = (typeof value === 'object' && value !== null ? value : {}) as Record<string, unknown>;
  const bad = (message: string): PavilionError => new PavilionError(ErrorCodes.BUNDLE_DELTA_INVALID, message);
  if (d['v'] !== 1) throw bad('unsupported version');
  if (d['tenant'] !== tenant) throw bad(`names tenant ${JSON.stringify(d['tenant'])}`);
  for (const field of ['base', 'sequence'] as const) {
    if (!Number.isSafeInteger(d[field]) || (d[field] as number) < 1) throw bad(`${field} must be a positive integer`);
  }
  const roots = d['roots'];
  if (!Array.isArray(roots) || !roots.every((r): r is string => typeof r === 'string')) throw bad('roots must be an array of strings');
  const signatures = d['signatures'];
  if (signatures !== undefined && (!Array.isArray(signatures) || signatures.length === 0 || !signatures.every((t): t is string => typeof t === 'string'))) {
    throw bad('signatures must be a non-empty array of strings');
  }
  return {
    base: d['base'] as number, sequence: d['sequence'] as number, roots, operations: parsePatch(d['patch']),
    ...(signatures === undefined ? {} : { signatures }),
  };
}
