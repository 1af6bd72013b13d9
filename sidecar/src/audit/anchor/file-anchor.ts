/**
 * The embedded anchor: a local JSON-lines file, one line per anchored checkpoint, for a
 * deployment without a chain. Each line names the log (id and origin), tree size, root and
 * the checkpoint signature's SHA-256, and the SHA-256 of the line before it, so the file is
 * a hash chain: editing, removing or reordering a line breaks every later link.
 *
 * Threat model and limits: the file sits with the operator, like the log itself, so it
 * cannot stop an operator who rewrites both. What it adds is a second, independently
 * copied record (ship it to another host, back it up, compare it): a log rewritten later
 * no longer matches anchors already copied. The EVM anchor is the one that resists the
 * operator.
 *
 * Tree sizes must grow per log, as the contract requires (ERR_AUDIT_ANCHOR_REVERTED
 * otherwise). Lines are written one at a time and synced (and the directory, when the file is
 * new) before the reference is returned.
 *
 * One process per file: the first read takes the lock file `<file>.lock` (lib/lock-file.ts)
 * and holds it until the last FileAnchor of this process on the file is closed; another
 * process's anchor on it is refused (ERR_AUDIT_ANCHOR_CONFIG, naming the holder) until that
 * one is gone. Within the process, anchors on one file take turns, and each reads the file
 * again when it grew since it last wrote it.
 */
import { mkdir, open, readFile, realpath, stat, truncate, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { syncPath } from '../../lib/durable-file.ts';
import { ErrorCodes, PavilionError, describeThrown } from '../../lib/errors.ts';
import { tryLock, unlock } from '../../lib/lock-file.ts';
import type { ComponentStatus } from '../../lib/lifecycle.ts';
import { sha256Hex } from '../../lib/sha256.ts';
import type { Anchor, AnchorRecordV1, AnchorVerifier, SignedCheckpointV1 } from '../log/index.ts';
import { checkpointSignatureSha256, logIdOf } from './checkpoint-digests.ts';

export const FILE_ANCHOR_KIND = 'file';

/** One line of the anchor file. */
export interface FileAnchorEntryV1 {
  readonly version: 1;
  /** 0-based line number. */
  readonly line: number;
  readonly log_id: string;
  readonly origin: string;
  readonly tree_size: number;
  readonly root_hash: string;
  readonly checkpoint_sig_sha256: string;
  readonly anchored_at: string;
  /** SHA-256 of the previous line's text (64 zeros for the first line). */
  readonly prev_sha256: string;
}

/** Where a file anchor is, as the anchor record's `reference` holds it. */
export interface FileAnchorReferenceV1 {
  /** The anchor file's name (not its path: the verifier is told where the file is). */
  readonly file: string;
  readonly line: number;
  /** SHA-256 of the line's text. */
  readonly entry_sha256: string;
}

const ZERO = '0'.repeat(64);
const HEX32 = /^[0-9a-f]{64}$/;

const sha256 = (text: string): string => sha256Hex(text);

/** A torn last line (a crash or full disk mid-write) set aside when the anchor loaded the file. */
export interface FileAnchorTornTail {
  /** Byte offset the file was cut back to (the end of its last whole line). */
  readonly offset: number;
  readonly bytesRemoved: number;
  /** Where the removed bytes were saved (`<file>.torn-<offset>-<time>`), so nothing is destroyed. */
  readonly savedAs: string;
}

interface FileState {
  /** Bytes of whole lines: the file's size once this anchor read or wrote it last. */
  bytes: number;
  lines: number;
  lastSha256: string;
  latest: Map<string, number>;
}

/**
 * Read and check the whole chain; ERR_AUDIT_ANCHOR_MISMATCH at the first bad line. Only whole
 * lines count: bytes after the last newline are a torn write (a line is acknowledged only once
 * written with its newline and synced), returned as `torn` and not parsed.
 */
async function readChain(path: string, onMissing: 'empty' | 'fail'): Promise<{ entries: FileAnchorEntryV1[]; texts: string[]; end: number; torn: { offset: number; bytes: Buffer } | undefined }> {
  let raw: Buffer;
  try {
    raw = await readFile(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT' && onMissing === 'empty') return { entries: [], texts: [], end: 0, torn: undefined };
    throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_FAILED, `cannot read the anchor file ${path}: ${describeThrown(error)}`, { cause: error });
  }
  const end = raw.lastIndexOf(0x0a) + 1;
  const torn = end < raw.length ? { offset: end, bytes: raw.subarray(end) } : undefined;
  const text = raw.subarray(0, end).toString('utf8');
  const texts = text.split('\n');
  if (texts.at(-1) === '') texts.pop();
  const entries: FileAnchorEntryV1[] = [];
  let previous = ZERO;
  for (const [line, lineText] of texts.entries()) {
    const bad = (why: string): PavilionError => new PavilionError(ErrorCodes.AUDIT_ANCHOR_MISMATCH, `anchor file ${basename(path)} line ${line}: ${why}`, { details: { anchorLine: line } });
    let entry: FileAnchorEntryV1;
    try {
      entry = JSON.parse(lineText) as FileAnchorEntryV1;
    } catch {
      throw bad('not JSON (a torn or edited line)');
    }
    if (entry.version !== 1 || entry.line !== line) throw bad(`numbered ${String(entry.line)}: lines were removed, inserted or reordered`);
    if (entry.prev_sha256 !== previous) throw bad('does not chain to the line before it: an earlier line was edited, removed or reordered');
    entries.push(entry);
    previous = sha256(lineText);
  }
  return { entries, texts, end, torn };
}

/**
 * Per anchor file in this process: its lock, held while any FileAnchor on it is open, and one
 * turn for everything that reads or writes the file. `released` is set once the last anchor
 * closed: a new one waits for the lock to be removed and takes it afresh.
 */
interface SharedFile {
  /** The file's directory with its symbolic links resolved, and its name: one entry however the path is spelt. */
  readonly key: string;
  refs: number;
  turn: Promise<unknown>;
  readonly locked: Promise<void>;
  released?: Promise<void>;
}

const SHARED = new Map<string, SharedFile>();

export class FileAnchor implements Anchor {
  readonly kind = FILE_ANCHOR_KIND;
  readonly #path: string;
  readonly #clock: () => number;
  readonly #onTornTail: ((tail: FileAnchorTornTail) => void) | undefined;
  #shared: Promise<SharedFile> | undefined;
  /** Why the file's lock could not be taken, the last time it was tried (shown in status until it is taken). */
  #lockRefusal: string | undefined;
  #closed = false;
  #state: Promise<FileState> | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  #tornTail: FileAnchorTornTail | undefined;
  /** The file was found shorter than this anchor last left it (removed, truncated or replaced under it). */
  #shrunk: { readonly fromBytes: number; readonly toBytes: number; readonly at: string } | undefined;

  constructor(options: { readonly path: string; readonly clock?: () => number; readonly onTornTail?: (tail: FileAnchorTornTail) => void }) {
    this.#path = resolve(options.path);
    this.#clock = options.clock ?? Date.now;
    this.#onTornTail = options.onTornTail;
  }

  get path(): string {
    return this.#path;
  }

  /** The torn last line set aside when the file was loaded, if there was one (as the WAL reports its own). */
  get tornTail(): FileAnchorTornTail | undefined {
    return this.#tornTail;
  }

  /**
   * WARN once a torn last line was set aside, or once the file was found shorter than this
   * anchor left it (until restart), as the log reports a torn WAL tail.
   */
  status(): ComponentStatus {
    if (this.#lockRefusal !== undefined) return { state: 'WARN', message: this.#lockRefusal, details: { path: this.#path } };
    const shrunk = this.#shrunk;
    if (shrunk !== undefined) {
      return {
        state: 'WARN',
        message: `the anchor file was ${shrunk.toBytes === 0 ? 'removed or emptied' : 'cut short or replaced'} under the running sidecar (${shrunk.fromBytes} bytes when last written, ${shrunk.toBytes} bytes at ${shrunk.at}): anchoring goes on after what is there${shrunk.toBytes === 0 ? ' (a new chain from line 0, once the file can be made again: not while its directory is gone)' : ''}, and the lines that were past it are only in copies of the file`,
        details: { path: this.#path, shrunk },
      };
    }
    const tail = this.#tornTail;
    if (tail === undefined) return { state: 'OK', details: { path: this.#path } };
    return {
      state: 'WARN',
      message: `a torn last line of ${tail.bytesRemoved} bytes was removed from the anchor file at byte ${tail.offset} (saved as ${tail.savedAs})`,
      details: { path: this.#path, torn_tail: tail },
    };
  }

  anchor(checkpoint: SignedCheckpointV1): Promise<Readonly<Record<string, unknown>>> {
    const run = this.#queue.then(() => this.#inTurn(() => this.#append(checkpoint)));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /** Run `work` in the file's turn: anchors of this process on one file read and write it one at a time. */
  async #inTurn<T>(work: () => Promise<T>): Promise<T> {
    const shared = await this.#acquire();
    const turn = shared.turn.then(work);
    shared.turn = turn.catch(() => undefined);
    return turn;
  }

  /** The file's lock, taken for this process by the first anchor on it; a refusal is tried again next time. */
  #acquire(): Promise<SharedFile> {
    if (this.#closed) return Promise.reject(new PavilionError(ErrorCodes.AUDIT_ANCHOR_FAILED, `the anchor on ${this.#path} is closed`));
    this.#shared ??= (async () => {
      const key = await this.#key();
      let shared = SHARED.get(key);
      while (shared?.released !== undefined) {
        await shared.released; // the last anchor before this one is removing the lock
        shared = SHARED.get(key);
      }
      if (shared === undefined) {
        shared = { key, refs: 0, turn: Promise.resolve(), locked: this.#lock() };
        SHARED.set(key, shared);
      }
      shared.refs++;
      try {
        await shared.locked;
        return shared;
      } catch (error) {
        if (--shared.refs === 0 && SHARED.get(key) === shared) SHARED.delete(key);
        throw error;
      }
    })();
    const acquiring = this.#shared;
    acquiring.then(() => {
      this.#lockRefusal = undefined;
    }, (error: unknown) => {
      this.#lockRefusal = describeThrown(error);
      if (this.#shared === acquiring) this.#shared = undefined;
    });
    return acquiring;
  }

  /** The file's key in SHARED (its directory made first, so that its real path exists). */
  async #key(): Promise<string> {
    try {
      await mkdir(dirname(this.#path), { recursive: true, mode: 0o700 });
      return join(await realpath(dirname(this.#path)), basename(this.#path));
    } catch (error) {
      throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_FAILED, `cannot reach the directory of the anchor file ${this.#path}: ${describeThrown(error)}`, { cause: error });
    }
  }

  async #lock(): Promise<void> {
    const file = `${this.#path}.lock`;
    let attempt;
    try {
      attempt = await tryLock(file);
    } catch (error) {
      throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_FAILED, `cannot lock the anchor file ${this.#path}: ${describeThrown(error)}`, { cause: error });
    }
    // held by this process: a lock an earlier anchor here could not remove; it is this process's
    if (attempt.taken || attempt.thisProcess) return;
    if (attempt.pid === undefined) throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_FAILED, `cannot lock the anchor file ${this.#path}: its lock is being taken or replaced by another process (or holds no pid, and is not yet 10 s old)`);
    throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_CONFIG, `the anchor file ${this.#path} is in use by process ${attempt.pid} (${file}); each sidecar needs an anchor file of its own`, {
      details: { pid: attempt.pid, lockFile: file },
    });
  }

  /** Give up this anchor's hold on the file: the lock is removed once no anchor of this process uses it. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const acquiring = this.#shared;
    this.#shared = undefined;
    const shared = await acquiring?.catch(() => undefined);
    if (shared === undefined || --shared.refs > 0) return;
    // kept in SHARED until the lock is gone, so a new anchor on the file waits for that
    shared.released = (async () => {
      await shared.turn;
      await unlock(`${this.#path}.lock`).catch(() => undefined);
    })().finally(() => {
      if (SHARED.get(shared.key) === shared) SHARED.delete(shared.key);
    });
    await shared.released;
  }

  async #load(): Promise<FileState> {
    const { entries, texts, end, torn } = await readChain(this.#path, 'empty');
    if (torn !== undefined) {
      // Part of a line that was never acknowledged: save it beside the file and cut the file
      // back to its last whole line, so the next line is appended after it.
      const savedAs = `${this.#path}.torn-${torn.offset}-${this.#clock()}`;
      try {
        await writeFile(savedAs, torn.bytes, { flag: 'wx', mode: 0o600 });
        await truncate(this.#path, torn.offset);
      } catch (error) {
        throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_FAILED, `cannot set aside the torn last line of the anchor file ${this.#path}: ${describeThrown(error)}`, { cause: error });
      }
      this.#tornTail = { offset: torn.offset, bytesRemoved: torn.bytes.length, savedAs };
      this.#onTornTail?.(this.#tornTail);
    }
    const latest = new Map<string, number>();
    for (const e of entries) latest.set(e.log_id, Math.max(latest.get(e.log_id) ?? 0, e.tree_size));
    return { bytes: end, lines: entries.length, lastSha256: texts.length === 0 ? ZERO : sha256(texts.at(-1)!), latest };
  }

  /**
   * Read the file now rather than at the first anchor, so a torn last line is set aside and
   * reported from start. A failure is thrown here and again by the next anchor.
   */
  async open(): Promise<void> {
    // in the file's turn: a torn tail is cut only by the file's holder, never under an append
    await this.#inTurn(() => this.#loaded());
  }

  /** This anchor's view of the file, read once (in the file's turn: called from open() and appends). */
  async #loaded(): Promise<FileState> {
    this.#state ??= this.#load();
    try {
      return await this.#state;
    } catch (error) {
      this.#state = undefined; // read again next time
      throw error;
    }
  }

  async #append(checkpoint: SignedCheckpointV1): Promise<Readonly<Record<string, unknown>>> {
    let state = await this.#loaded();
    const size = await stat(this.#path).then((s) => s.size, (error: unknown) => {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 0;
      throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_FAILED, `cannot read the anchor file ${this.#path}: ${describeThrown(error)}`, { cause: error });
    });
    if (size !== state.bytes) {
      // another anchor of this process appended (or the file changed under this one): number after what is there now
      if (size < state.bytes) this.#shrunk = { fromBytes: state.bytes, toBytes: size, at: new Date(this.#clock()).toISOString() };
      this.#state = undefined;
      state = await this.#loaded();
    }
    const logId = logIdOf(checkpoint.origin);
    const latest = state.latest.get(logId) ?? 0;
    if (checkpoint.tree_size <= latest) {
      throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_REVERTED, `the anchor file already holds tree size ${latest} of ${checkpoint.origin}; tree size ${checkpoint.tree_size} does not grow it`, {
        details: { treeSize: checkpoint.tree_size, latestTreeSize: latest },
      });
    }
    const entry: FileAnchorEntryV1 = {
      version: 1,
      line: state.lines,
      log_id: logId,
      origin: checkpoint.origin,
      tree_size: checkpoint.tree_size,
      root_hash: checkpoint.root_hash,
      checkpoint_sig_sha256: checkpointSignatureSha256(checkpoint),
      anchored_at: new Date(this.#clock()).toISOString(),
      prev_sha256: state.lastSha256,
    };
    const text = JSON.stringify(entry);
    const line = `${text}\n`;
    try {
      const handle = await open(this.#path, 'a', 0o600);
      try {
        await handle.writeFile(line); // every byte (a write may take fewer)
        await handle.sync();
      } finally {
        await handle.close();
      }
      if (state.bytes === 0) await syncPath(dirname(this.#path)); // a new file's entry
    } catch (error) {
      // The file may now end in part of a line: read it again (and fail on it) next time.
      this.#state = undefined;
      throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_FAILED, `cannot append to the anchor file ${this.#path}: ${describeThrown(error)}`, { cause: error });
    }
    state.bytes += Buffer.byteLength(line);
    state.lines++;
    state.lastSha256 = sha256(text);
    state.latest.set(logId, checkpoint.tree_size);
    const reference: FileAnchorReferenceV1 = { file: basename(this.#path), line: entry.line, entry_sha256: state.lastSha256 };
    return reference as unknown as Readonly<Record<string, unknown>>;
  }
}

/** Checks file anchor records against an anchor file (a copy kept elsewhere is the point). */
export class FileAnchorVerifier implements AnchorVerifier {
  readonly kind = FILE_ANCHOR_KIND;
  readonly #path: string;

  constructor(options: { readonly path: string }) {
    this.#path = options.path;
  }

  /** The file's latest line for the log. */
  async latestAnchor(origin: string): Promise<{ readonly treeSize: number; readonly rootHash: string } | undefined> {
    const logId = logIdOf(origin);
    const { entries } = await readChain(this.#path, 'fail');
    const latest = entries.filter((e) => e.log_id === logId).at(-1);
    return latest === undefined ? undefined : { treeSize: latest.tree_size, rootHash: latest.root_hash };
  }

  async verify(record: AnchorRecordV1, checkpoint?: SignedCheckpointV1): Promise<void> {
    const ref = record.reference;
    const line = ref['line'];
    const entrySha = ref['entry_sha256'];
    const mismatch = (why: string): PavilionError => new PavilionError(ErrorCodes.AUDIT_ANCHOR_MISMATCH, why, { details: { treeSize: record.tree_size, anchorLine: line } });
    if (typeof line !== 'number' || !Number.isSafeInteger(line) || line < 0) throw mismatch('file anchor reference: line is missing or malformed');
    if (typeof entrySha !== 'string' || !HEX32.test(entrySha)) throw mismatch('file anchor reference: entry_sha256 is missing or malformed');
    const { entries, texts } = await readChain(this.#path, 'fail');
    const entry = entries[line];
    if (entry === undefined) throw mismatch(`the anchor file has ${entries.length} lines, none numbered ${line}`);
    if (sha256(texts[line]!) !== entrySha) throw mismatch(`anchor file line ${line} is not the line the record names (its SHA-256 differs)`);
    if (entry.tree_size !== record.tree_size || entry.root_hash !== record.root_hash) {
      throw mismatch(`anchor file line ${line} holds root ${entry.root_hash} at tree size ${entry.tree_size}, the record ${record.root_hash} at ${record.tree_size}`);
    }
    if (checkpoint !== undefined) {
      if (entry.log_id !== logIdOf(checkpoint.origin)) throw mismatch(`anchor file line ${line} is of another log than ${checkpoint.origin}`);
      if (entry.checkpoint_sig_sha256 !== checkpointSignatureSha256(checkpoint)) throw mismatch(`anchor file line ${line} holds another checkpoint signature than the checkpoint at tree size ${checkpoint.tree_size}`);
    }
  }
}
