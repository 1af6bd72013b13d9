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
 * Deltas: every delta applied on the deploy (the signed message as received: v, tenant, base,
 * sequence, roots, patch, signatures) is appended to `deltas-<digest>-<deploy>.json` as one
 * record, and the file fsync'ed, so a deploy's N deltas cost O(N) bytes written. Format 2
 * (the name is kept from format 1, which an upgraded sidecar must still find): one record a
 * line, `<hex SHA-256 of the JSON> <JSON>\n`; the first record binds the file to the tenant,
 * the snapshot's digest and its deploy (PersistedDeltasHeaderV2), each next one is delta 1,
 * 2, 3, ... of that deploy. A deploy's first delta (and a rebuild from the snapshot, or the
 * whole sequence when the file cannot be continued: both start again at 1) writes the file
 * whole: a temporary file, fsync'ed, renamed into place, the directory fsync'ed. The file is
 * not a second commit point for the snapshot: a load reads only the file named after the
 * digest and deploy that meta.json names, and checks the binding in it again (a file renamed
 * or copied onto another snapshot is refused, ERR_BUNDLE_DELTA_SEQUENCE); it returns the intact prefix - the records up to the first
 * that is torn, fails its checksum, does not read or is out of order - and reports the rest
 * as refused; the tenant manager then verifies every delta's signature and applies it under
 * the live sequence guard. A file in format 1 (one JSON document holding the whole sequence,
 * PersistedDeltasV1, written by earlier versions) still loads; the next delta applied
 * rewrites it in format 2. Crash windows:
 * - during an append (before its fsync): the file may end in torn or unsynced records (one
 *   append writes the records of one application at once, fsync'ed together, so after a
 *   power loss a later one may survive an earlier torn one); a load keeps the records before
 *   the first bad one and reports the rest (ERR_BUNDLE_DELTA_INVALID), whatever their state,
 *   so the deltas before it load and the rest are lost until the source is back (persistence
 *   is best effort; it never names the wrong snapshot). The next append truncates the bad
 *   tail before writing;
 * - during a whole write (before its rename): the previous file, or none, is what loads;
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
 * and not written on save (an append that would pass either is refused, the file unchanged).
 */
import { mkdir, open, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { syncPath, writeFileDurably } from '../lib/durable-file.ts';
import { ErrorCodes, PavilionError, describeThrown, isPavilionError, wrapError } from '../lib/errors.ts';
import { sha256Hex } from '../lib/sha256.ts';
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
  /**
   * Content digests (`SignatureInfo.contentSha256`) of the revisions this tenant replaced
   * before this one, oldest first: the replay check's memory, kept across a restart.
   */
  readonly replaced?: readonly string[];
}

export interface PersistedBundle {
  readonly archive: Buffer;
  readonly meta: PersistedBundleMeta;
}

/**
 * A deltas file in format 1, as versions before the append-only log wrote it: the whole
 * sequence in one document, bound to the tenant, the snapshot's digest and its deploy. Still
 * loaded; never written.
 */
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

/** The first record of a deltas file in format 2: what every record after it is bound to. */
export interface PersistedDeltasHeaderV2 {
  readonly v: 2;
  readonly tenant: string;
  /** Hex SHA-256 of the snapshot archive these deltas apply to. */
  readonly digest: string;
  /** The snapshot's deploy (pointer sequence). */
  readonly base: number;
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
const DEFAULT_MAX_PERSISTED_DELTAS_BYTES = 64 * 1024 * 1024;

export interface LastKnownGoodOptions {
  /** Largest deltas file written or loaded (default DEFAULT_MAX_PERSISTED_DELTAS_BYTES). */
  readonly maxDeltasBytes?: number;
}

const DIGEST = /^[0-9a-f]{64}$/;
/** A record of format 2, without its newline: the SHA-256 of the JSON, a space, the JSON. */
const RECORD = /^([0-9a-f]{64}) (.*)$/s;
const NEWLINE = 0x0a;
/** Format 1 is one JSON document; format 2 opens with a hex checksum. */
const FORMAT_1_START = 0x7b; // '{'

/** How far a deltas file this process appends to is known to be intact. */
interface DeltasTail {
  readonly file: string;
  readonly deltas: number;
  readonly bytes: number;
}

/** A format 2 file read: its intact prefix (deltas and bytes), and why the rest (if any) was refused. */
interface DeltasLog extends LoadedDeltas {
  readonly intactBytes: number;
}
const DELTAS_FILE = /^deltas-[0-9a-f]{64}-\d+\.json$/;
const deltasName = (digest: string, base: number): string => `deltas-${digest}-${base}.json`;
/** The archive file of each save, and the single file of versions before content addressing. */
const ARCHIVE_FILE = /^bundle(-[0-9a-f]{64})?\.tar\.gz$/;
const LEGACY_ARCHIVE = 'bundle.tar.gz';

const archiveName = (digest: string): string => `bundle-${digest}.tar.gz`;

export class LastKnownGood {
  readonly #directory: string;
  readonly #maxDeltasBytes: number;
  /** Per tenant, the deltas file last written and how far (the next append goes at its end without reading it). */
  readonly #tails = new Map<string, DeltasTail>();

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
    const digest = sha256Hex(archive);
    if (meta.digest !== digest) {
      throw new PavilionError(ErrorCodes.BUNDLE_DIGEST_MISMATCH, `last known good: the archive's SHA-256 is ${digest}, not the ${meta.digest} its metadata names`);
    }
    const dir = join(this.#directory, meta.tenant);
    await mkdir(dir, { recursive: true });
    const keep = archiveName(digest);
    await writeFileDurably(join(dir, keep), archive);
    await writeFileDurably(join(dir, 'meta.json'), `${JSON.stringify(meta)}\n`); // the commit point
    await syncPath(dir);
    // after the commit point: the old archive, and deltas of any other snapshot or deploy
    const keepDeltas = meta.sequence === undefined ? undefined : deltasName(digest, meta.sequence);
    if (keepDeltas === undefined || this.#tails.get(meta.tenant)?.file !== join(dir, keepDeltas)) this.#tails.delete(meta.tenant);
    for (const file of await readdir(dir)) {
      if ((file !== keep && ARCHIVE_FILE.test(file)) || (file !== keepDeltas && DELTAS_FILE.test(file))) await rm(join(dir, file), { force: true });
    }
  }

  /**
   * Persist deltas applied on the snapshot `binding` names, in order: deltas starting at 1
   * (the deploy's first, or a rebuild from the snapshot) write the file whole, in one rename;
   * later ones are appended as they continue it (fsync'ed, one write: O(their size), whatever
   * the file holds). Deltas that do not continue what the file holds intact - it is missing,
   * in format 1, bound to something else, or shorter (a write that failed) - are refused
   * (ERR_BUNDLE_DELTA_SEQUENCE, the file unchanged): the caller saves the whole sequence
   * from 1 instead. Touches nothing else (meta.json decides which snapshot, hence which
   * deltas file, a load reads).
   */
  async saveDeltas(binding: DeltaBinding, deltas: readonly DeltaUpdate[]): Promise<void> {
    if (!TENANT_ID_PATTERN.test(binding.tenant) || !DIGEST.test(binding.digest) || !Number.isSafeInteger(binding.base) || binding.base < 1) {
      throw new PavilionError(ErrorCodes.BUNDLE_DELTA_INVALID, 'last known good: deltas must be bound to a tenant, a snapshot digest and a deploy');
    }
    const first = deltas[0];
    if (first === undefined) return;
    const file = this.deltasFile(binding);
    const known = this.#tails.get(binding.tenant);
    const tail = first.sequence === 1 ? { file, deltas: 0, bytes: 0 } : known?.file === file ? known : await this.#readTail(file, binding);
    const stray = deltas.find((d, i) => d.base !== binding.base || d.sequence !== tail.deltas + i + 1);
    if (stray !== undefined) {
      throw new PavilionError(ErrorCodes.BUNDLE_DELTA_SEQUENCE, `last known good: the persisted deltas of deploy ${binding.base} end at ${tail.deltas}; delta ${stray.sequence} of deploy ${stray.base} does not continue them`);
    }
    if (tail.deltas + deltas.length > MAX_PERSISTED_DELTAS) {
      throw new PavilionError(ErrorCodes.BUNDLE_DELTA_LIMIT, `last known good: ${tail.deltas + deltas.length} deltas are more than the ${MAX_PERSISTED_DELTAS} one deploy takes`);
    }
    const header: PersistedDeltasHeaderV2 = { v: 2, tenant: binding.tenant, digest: binding.digest, base: binding.base };
    const records = Buffer.concat([
      ...(tail.deltas === 0 ? [encodeRecord(header)] : []),
      ...deltas.map((d) => encodeRecord(deltaMessage(binding.tenant, d))),
    ]);
    if (tail.bytes + records.length > this.#maxDeltasBytes) {
      throw new PavilionError(ErrorCodes.BUNDLE_DELTA_LIMIT, `last known good: the deltas of deploy ${binding.base} take ${tail.bytes + records.length} bytes, more than ${this.#maxDeltasBytes}`);
    }
    this.#tails.delete(binding.tenant); // unknown until the write has ended
    if (tail.deltas === 0) {
      const dir = join(this.#directory, binding.tenant);
      await mkdir(dir, { recursive: true });
      await writeFileDurably(file, records);
      await syncPath(dir);
    } else {
      await appendAt(file, tail.bytes, records);
    }
    this.#tails.set(binding.tenant, { file, deltas: tail.deltas + deltas.length, bytes: tail.bytes + records.length });
  }

  /** How far the deltas file is intact, read from disk (the first append of a process, or after a failed one). */
  async #readTail(file: string, binding: DeltaBinding): Promise<DeltasTail> {
    const cannotAppend = (why: string, cause?: unknown): PavilionError => new PavilionError(ErrorCodes.BUNDLE_DELTA_SEQUENCE, `last known good: cannot append to the persisted deltas of deploy ${binding.base}: ${why}`, cause === undefined ? {} : { cause });
    let bytes: Buffer;
    try {
      bytes = await this.#readDeltasFile(file, binding);
    } catch (error) {
      if (isPavilionError(error, ErrorCodes.BUNDLE_DELTA_LIMIT)) throw error; // a whole write would be over the bound too
      throw cannotAppend((error as NodeJS.ErrnoException).code === 'ENOENT' ? 'there is no file' : describeThrown(error), error);
    }
    if (bytes[0] === FORMAT_1_START) throw cannotAppend('the file is in format 1');
    const log = parseDeltasLog(bytes, binding);
    if (log.intactBytes === 0) throw cannotAppend(log.refused?.message ?? 'no header', log.refused);
    return { file, deltas: log.deltas.length, bytes: log.intactBytes };
  }

  /** The bytes of a deltas file; ERR_BUNDLE_DELTA_LIMIT when it is larger than `maxDeltasBytes`. */
  async #readDeltasFile(file: string, binding: DeltaBinding): Promise<Buffer> {
    const size = (await stat(file)).size;
    if (size > this.#maxDeltasBytes) {
      throw new PavilionError(ErrorCodes.BUNDLE_DELTA_LIMIT, `persisted deltas of deploy ${binding.base}: ${size} bytes, more than ${this.#maxDeltasBytes}`, { details: { base: binding.base, bytes: size, limit: this.#maxDeltasBytes } });
    }
    return readFile(file);
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
    let bytes: Buffer;
    try {
      bytes = await this.#readDeltasFile(this.deltasFile(binding), binding);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { deltas: [] };
      return { deltas: [], refused: isPavilionError(error) ? error : wrapError(error, ErrorCodes.BUNDLE_DELTA_INVALID, `reading the persisted deltas of deploy ${binding.base}`) };
    }
    if (bytes[0] !== FORMAT_1_START) {
      const { deltas, refused } = parseDeltasLog(bytes, binding);
      return refused === undefined ? { deltas } : { deltas, refused };
    }
    try {
      return parseDeltasV1(bytes.toString('utf8'), binding);
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
      if (sha256Hex(archive) !== meta.digest) return undefined;
      if (meta.replaced === undefined) return { archive, meta };
      // the replay memory is advisory: what is malformed in it is dropped, not the revision
      const listed: readonly unknown[] = Array.isArray(meta.replaced) ? meta.replaced : [];
      return { archive, meta: { ...meta, replaced: listed.filter((d): d is string => typeof d === 'string' && DIGEST.test(d)) } };
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

/** Read a deltas file in format 1: the binding, then each delta's structure, in order (the first bad one ends the list). */
function parseDeltasV1(text: string, binding: DeltaBinding): LoadedDeltas {
  const invalid = (message: string): PavilionError => new PavilionError(ErrorCodes.BUNDLE_DELTA_INVALID, `persisted deltas of deploy ${binding.base}: ${message}`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw invalid('not JSON');
  }
  const file = (typeof value === 'object' && value !== null ? value : {}) as Record<string, unknown>;
  if (file['v'] !== 1) throw invalid('unsupported version');
  checkBinding(file, binding);
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

/** The tenant, snapshot and deploy a deltas file names must be the persisted snapshot's; else the file is refused whole. */
function checkBinding(file: Record<string, unknown>, binding: DeltaBinding): void {
  if (file['tenant'] !== binding.tenant || file['digest'] !== binding.digest || file['base'] !== binding.base) {
    throw new PavilionError(ErrorCodes.BUNDLE_DELTA_SEQUENCE, `persisted deltas are bound to tenant ${JSON.stringify(file['tenant'])}, snapshot ${String(file['digest']).slice(0, 12)}, deploy ${String(file['base'])}, not to the persisted snapshot ${binding.digest.slice(0, 12)} of deploy ${binding.base}: not applied`, {
      details: { base: binding.base, boundBase: file['base'], boundDigest: file['digest'] },
    });
  }
}

/**
 * Read a deltas file in format 2: the header (a bad one, or a binding to something else,
 * refuses the whole file), then delta 1, 2, 3, ... up to the first record that is torn (no
 * newline), fails its checksum, does not read, is out of order or is over
 * MAX_PERSISTED_DELTAS; that one and the rest are refused with why, and `intactBytes` is
 * where it starts.
 */
function parseDeltasLog(bytes: Buffer, binding: DeltaBinding): DeltasLog {
  let offset = 0;
  const next = (): unknown => {
    const end = bytes.indexOf(NEWLINE, offset);
    if (end === -1) throw new PavilionError(ErrorCodes.BUNDLE_DELTA_INVALID, 'torn (a write cut short)');
    const value = readRecord(bytes.subarray(offset, end));
    offset = end + 1;
    return value;
  };
  try {
    readHeader(next(), binding);
  } catch (error) {
    const refused = isPavilionError(error, ErrorCodes.BUNDLE_DELTA_SEQUENCE)
      ? error
      : wrapError(error, ErrorCodes.BUNDLE_DELTA_INVALID, 'persisted delta');
    return { deltas: [], refused: new PavilionError(refused.code, `persisted deltas of deploy ${binding.base}: the first record: ${refused.message}`, { cause: refused, ...(refused.details === undefined ? {} : { details: refused.details }) }), intactBytes: 0 };
  }
  const deltas: DeltaUpdate[] = [];
  while (offset < bytes.length) {
    const intactBytes = offset;
    const index = deltas.length + 1;
    try {
      if (index > MAX_PERSISTED_DELTAS) throw new PavilionError(ErrorCodes.BUNDLE_DELTA_LIMIT, `more than the ${MAX_PERSISTED_DELTAS} deltas one deploy takes`);
      deltas.push(readLoggedDelta(next(), binding, index));
    } catch (error) {
      const cause = isPavilionError(error) ? error : wrapError(error, ErrorCodes.BUNDLE_DELTA_INVALID, 'persisted delta');
      const refused = new PavilionError(cause.code, `persisted delta ${index} of deploy ${binding.base}: ${cause.message}; cut off there (the deltas before it load)`, {
        cause, details: { base: binding.base, index, intactBytes },
      });
      return { deltas, refused, intactBytes };
    }
  }
  return { deltas, intactBytes: offset };
}

/** One record of format 2 (without its newline): its JSON, once the checksum matches. */
function readRecord(line: Buffer): unknown {
  const [, checksum, json] = RECORD.exec(line.toString('utf8')) ?? [];
  if (json === undefined || sha256Hex(json) !== checksum) throw new PavilionError(ErrorCodes.BUNDLE_DELTA_INVALID, 'damaged (its checksum does not match)');
  return JSON.parse(json);
}

function encodeRecord(value: PersistedDeltasHeaderV2 | DeltaMessageV1): Buffer {
  const json = JSON.stringify(value);
  return Buffer.from(`${sha256Hex(json)} ${json}\n`);
}

function readHeader(value: unknown, binding: DeltaBinding): void {
  const header = (typeof value === 'object' && value !== null ? value : {}) as Record<string, unknown>;
  if (header['v'] !== 2) throw new PavilionError(ErrorCodes.BUNDLE_DELTA_INVALID, 'unsupported version');
  checkBinding(header, binding);
}

/** Delta `index` of the deploy: its structure, and its place (the record's order is the deltas' order). */
function readLoggedDelta(value: unknown, binding: DeltaBinding, index: number): DeltaUpdate {
  const delta = parsePersistedDelta(value, binding.tenant);
  if (delta.base !== binding.base || delta.sequence !== index) {
    throw new PavilionError(ErrorCodes.BUNDLE_DELTA_SEQUENCE, `out of order: delta ${delta.sequence} of deploy ${delta.base} where delta ${index} of deploy ${binding.base} belongs`);
  }
  return delta;
}

/** A delta as the signed message it was received as (what the tenant manager verifies again on load). */
function deltaMessage(tenant: string, d: DeltaUpdate): DeltaMessageV1 {
  return {
    v: 1, tenant, base: d.base, sequence: d.sequence, roots: d.roots, patch: { data: d.operations },
    ...(d.signatures === undefined ? {} : { signatures: d.signatures }),
  };
}

/** Write `data` at `offset` of `file`, cutting off whatever is after it (a torn record), and fsync. */
async function appendAt(file: string, offset: number, data: Buffer): Promise<void> {
  const handle = await open(file, 'r+');
  try {
    await handle.truncate(offset);
    for (let written = 0; written < data.length;) {
      written += (await handle.write(data, written, data.length - written, offset + written)).bytesWritten;
    }
    await handle.sync();
  } finally {
    await handle.close();
  }
}

