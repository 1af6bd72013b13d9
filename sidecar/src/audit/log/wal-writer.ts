/**
 * The write side of the audit log file: ordered appends with group commit, an fsync policy
 * and a disk budget. The file is an adapter detail; the record format and the tree are not.
 *
 * Group commit: frames queue in memory; one batch at a time is written with a single
 * positioned `writev` (and, with `fsync: 'always'`, one `fdatasync`), and frames that arrive
 * meanwhile form the next batch. A batch of at most SYNC_WRITE_MAX_BYTES is written on the
 * calling thread, a larger one through libuv's thread pool (why: SYNC_WRITE_MAX_BYTES). A batch starts at the latest `groupCommitMaxDelayMs` after
 * its first frame, or at once when `groupCommitMaxBytes` are queued. `append` resolves when
 * its frame is durable as the policy defines it:
 *   - 'always':   written and fdatasync'ed (survives power loss);
 *   - 'interval': written to the OS (survives a process crash; fdatasync every fsyncIntervalMs);
 *   - 'never':    written to the OS, never fdatasync'ed by Pavilion.
 * A failed write or fdatasync (also the background one of 'interval') fails the batch, every
 * frame queued, every blocked reservation and the writer for good (ERR_AUDIT_LOG_IO): the
 * file position is then unknown and only reopening (which recovers the tail) is safe.
 *
 * Except a full volume: a batch whose write (or, with 'always', its own fdatasync) fails with
 * ENOSPC or EDQUOT was never acknowledged and the file before it is intact, so the writer
 * rewinds instead of failing. The batch and every frame queued behind it are refused with
 * ERR_AUDIT_DISK_FULL, `onRewind` is told the offset everything from which was discarded (before
 * any refusal is delivered, so the owner's tree never runs ahead of the file), the file is cut
 * back there, and the next append is written as if the refused ones never were. A cut that
 * fails is made again before the next batch, which is refused the same way while it still
 * fails: whole refused frames left past the end of a shorter batch could read as the log's
 * continuation after a crash. An `onRewind` that throws fails the writer (ERR_AUDIT_LOG_IO).
 * The log thus goes on by itself once space is freed; `diskFull` says since when it is
 * refusing, until a batch is written again. The background fdatasync of 'interval' is not
 * rewound: the frames it covers were acknowledged, so its failure stays ERR_AUDIT_LOG_IO.
 *
 * A file that is no longer the one at its path (`path`: removed, with or without its
 * directory, renamed away or replaced) holds what is written to it where no start will read
 * it: a later start opens a new log at the path, and the records only this process still
 * holds open are gone when it closes the file. So every batch, once written, is checked
 * before it is acknowledged: the open file's link count (an fstat, a few microseconds; 0 once
 * it was removed or a rename replaced it), and at most every PATH_CHECK_INTERVAL_MS its path
 * too (a stat: a file or directory renamed away keeps its link, and the records acknowledged
 * meanwhile are in it where it went; on NFS and FUSE a removed open file is renamed and
 * keeps its link too, so a removal there is seen by the path check only, and what was
 * acknowledged meanwhile goes when the file is closed). The owner's `guard` (the log's lock)
 * runs before each write, and `checkFile` (the log's status) makes every check between
 * batches. A batch refused after its write is cut off the file again, best effort.
 * A file found detached fails the writer for good (ERR_AUDIT_LOG_IO, details.reason
 * `file-removed`, `file-replaced`, or `file-unreadable` when the path cannot be looked at):
 * the batch that found it is refused (and cut off the file again when it was written), nothing
 * after it is taken, and the log stays refused until a restart. What the check cannot see: the
 * same file overwritten or cut in place (its inode unchanged).
 *
 * Budget: bytes on disk plus bytes queued never exceed `maxDiskBytes`. When a frame does not
 * fit, 'refuse' throws ERR_AUDIT_LOG_FULL at once; 'block' waits (first come, first served)
 * until it fits or `blockTimeoutMs` passes, then throws ERR_AUDIT_LOG_FULL. Nothing is dropped.
 * The last CHECKPOINT_HEADROOM_BYTES of the budget are kept for checkpoints, so a full log can
 * still sign the leaves it holds.
 */
import { writevSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { ErrorCodes, PavilionError, describeThrown } from '../../lib/errors.ts';
import { pathHolding, type PathHolding } from '../../lib/file-identity.ts';

export type FsyncPolicy = 'always' | 'interval' | 'never';
/**
 * Batches up to this size are written on the calling thread. Copying a few kilobytes into the
 * page cache takes microseconds there, while a write through libuv's thread pool costs two
 * cross-thread wake-ups (tens of microseconds each on a virtual machine, and most of a lone
 * decision's logging latency). Larger batches - a busy log - go to the pool, so the event
 * loop goes on encoding the next batch meanwhile. The sync write's own cost (it can block
 * if the kernel throttles a writer with too many dirty pages) is bounded by this size.
 */
export const SYNC_WRITE_MAX_BYTES = 64 * 1024;
/**
 * How often a batch also looks at the file's path (a directory or file renamed away, which
 * keeps its link count; see the header). The link count itself is looked at every batch.
 */
export const PATH_CHECK_INTERVAL_MS = 1_000;

export type ReservationKind = 'leaf' | 'checkpoint';
export const CHECKPOINT_HEADROOM_BYTES = 4096;
export type OnFullPolicy = 'block' | 'refuse';

export interface WalWriterOptions {
  /** The file's path: a file that is no longer the one there is refused (see the header). */
  readonly path?: string;
  /**
   * The owner's own check before each batch is written and in `checkFile` (the audit log's:
   * that its lock file is still the one it took); an error returned fails the writer with it.
   * `full`: a path may be looked at too (when the writer looks at its own path).
   */
  readonly guard?: (full: boolean) => PavilionError | undefined;
  readonly fsync: FsyncPolicy;
  readonly fsyncIntervalMs: number;
  readonly groupCommitMaxDelayMs: number;
  readonly groupCommitMaxBytes: number;
  readonly maxDiskBytes: number;
  readonly onFull: OnFullPolicy;
  readonly blockTimeoutMs: number;
}

interface Pending {
  readonly frame: Buffer;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

interface Waiter {
  readonly bytes: number;
  readonly kind: ReservationKind;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
  timer: NodeJS.Timeout | undefined;
}

export interface WalWriterStats {
  readonly bytesOnDisk: number;
  readonly bytesQueued: number;
  readonly batches: number;
  readonly syncs: number;
  readonly waiting: number;
  readonly maxDiskBytes: number;
}

export interface WalWriterHooks {
  /** Frames from `position` on were discarded (a full volume); called before they are refused. */
  readonly onRewind?: (position: number) => void;
}

export interface DiskFullState {
  /** When the first refused batch failed (ms since the epoch). */
  readonly since: number;
  /** Frames refused since then. */
  readonly refusedFrames: number;
}

/** A write the volume has no room for: nothing of the batch was acknowledged, so it can be rewound. */
function isNoSpace(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

/** How every refusal for a file no longer at its path ends. */
export const REFUSED_UNTIL_RESTART = 'records from here on are not logged, and the log refuses them until a restart';

/**
 * Where the file open at `fd` stands against `path` (lib/file-identity.ts), or, when either
 * cannot be looked at for another reason than the path's absence, the refusal that fails the
 * log for good (the next start could not read it there either): `name` names the file in its
 * message, `reason` is its details.reason.
 */
export function holdingOrRefusal(fd: number, path: string, lookAtPath: boolean, name: string, reason: 'file-unreadable' | 'lock-unreadable'): PathHolding | PavilionError {
  try {
    return pathHolding(fd, path, lookAtPath);
  } catch (error) {
    return new PavilionError(ErrorCodes.AUDIT_LOG_IO, `${name} ${path} cannot be looked at (${describeThrown(error)}): ${REFUSED_UNTIL_RESTART}`, {
      cause: error,
      details: { path, reason },
    });
  }
}

/**
 * Why the open file `fd` is not the file at `path` any more (see the header; `lookAtPath`:
 * its path too, not only its link count), or undefined while it is.
 */
function detachedFrom(fd: number, path: string, lookAtPath: boolean): PavilionError | undefined {
  const holding = holdingOrRefusal(fd, path, lookAtPath, 'the audit log file', 'file-unreadable');
  if (holding instanceof PavilionError) return holding;
  if (holding === 'same') return undefined;
  const what = holding === 'removed'
    ? 'was removed while the sidecar had it open'
    : holding === 'moved' ? 'was moved away from its path while the sidecar had it open' : 'was replaced by another file while the sidecar had it open';
  return new PavilionError(
    ErrorCodes.AUDIT_LOG_IO,
    `the audit log file ${path} ${what}: a record written to it would be on no path a start reads the log from, so ${REFUSED_UNTIL_RESTART} (put the directory back before restarting to keep the records acknowledged before; a start on an empty directory begins a new log)`,
    { details: { path, reason: holding === 'replaced' ? 'file-replaced' : 'file-removed' } },
  );
}

/** A failed write or fdatasync: the writer is done (ERR_AUDIT_LOG_IO). */
function ioError(what: 'write' | 'fdatasync', error: unknown): PavilionError {
  return new PavilionError(ErrorCodes.AUDIT_LOG_IO, `audit log ${what} failed: ${describeThrown(error)}`, { cause: error });
}

export class WalWriter {
  readonly #handle: FileHandle;
  readonly #hooks: WalWriterHooks;
  #options: WalWriterOptions;
  #position: number;
  #queue: Pending[] = [];
  #queuedBytes = 0;
  #reservedBytes = 0;
  #waiters: Waiter[] = [];
  #flushing: Promise<void> | undefined;
  /** The file must be cut back to #position before the next batch (a cut after a full volume failed). */
  #cutPending = false;
  #timer: NodeJS.Timeout | undefined;
  #syncTimer: NodeJS.Timeout | undefined;
  #dirty = false;
  #failure: PavilionError | undefined;
  #diskFull: DiskFullState | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;
  #batches = 0;
  #syncs = 0;
  /** The owner's guard's first refusal, if it refused. */
  #guardRefusal: PavilionError | undefined;
  /** When a batch last looked at the file's path (performance.now()). */
  #pathCheckedAtMs = -Infinity;

  constructor(handle: FileHandle, position: number, options: WalWriterOptions, hooks: WalWriterHooks = {}) {
    this.#handle = handle;
    this.#hooks = hooks;
    this.#position = position;
    this.#options = options;
    if (options.fsync === 'interval') {
      this.#syncTimer = setInterval(() => void this.#periodicSync(), options.fsyncIntervalMs);
      this.#syncTimer.unref();
    }
  }

  get failure(): PavilionError | undefined {
    return this.#failure;
  }

  /** Set while the volume is full: from the first refused batch until one is written again. */
  get diskFull(): DiskFullState | undefined {
    return this.#diskFull;
  }

  stats(): WalWriterStats {
    return { bytesOnDisk: this.#position, bytesQueued: this.#queuedBytes, batches: this.#batches, syncs: this.#syncs, waiting: this.#waiters.length, maxDiskBytes: this.#options.maxDiskBytes };
  }

  /** Change the disk budget (a larger one releases blocked writers). */
  setMaxDiskBytes(maxDiskBytes: number): void {
    this.#options = { ...this.#options, maxDiskBytes };
    this.#releaseWaiters();
  }

  #used(): number {
    return this.#position + this.#queuedBytes + this.#reservedBytes;
  }

  #limit(kind: ReservationKind): number {
    return kind === 'checkpoint' ? this.#options.maxDiskBytes : this.#options.maxDiskBytes - CHECKPOINT_HEADROOM_BYTES;
  }

  #fits(bytes: number, kind: ReservationKind): boolean {
    return this.#used() + bytes <= this.#limit(kind);
  }

  #full(bytes: number): PavilionError {
    return new PavilionError(ErrorCodes.AUDIT_LOG_FULL, `the audit log's disk budget of ${this.#options.maxDiskBytes} bytes is reached`, {
      details: { maxDiskBytes: this.#options.maxDiskBytes, usedBytes: this.#used(), neededBytes: bytes, policy: this.#options.onFull },
    });
  }

  #checkOpen(): void {
    if (this.#failure !== undefined) throw this.#failure;
    if (this.#closed) throw new PavilionError(ErrorCodes.AUDIT_LOG_CLOSED, 'the audit log is closed');
  }

  /**
   * Reserve room for a frame of `bytes`. Synchronous (returns undefined) when it fits and
   * nobody is waiting; otherwise a promise that resolves once reserved. The caller must
   * follow a resolved reservation with `append` of exactly that many bytes.
   */
  reserve(bytes: number, kind: ReservationKind = 'leaf'): Promise<void> | undefined {
    this.#checkOpen();
    if (bytes > this.#limit(kind)) throw this.#full(bytes);
    if ((this.#waiters.length === 0 || kind === 'checkpoint') && this.#fits(bytes, kind)) {
      this.#reservedBytes += bytes;
      return undefined;
    }
    if (this.#options.onFull === 'refuse') throw this.#full(bytes);
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = { bytes, kind, resolve, reject, timer: undefined };
      waiter.timer = setTimeout(() => {
        const at = this.#waiters.indexOf(waiter);
        if (at >= 0) this.#waiters.splice(at, 1);
        reject(this.#full(bytes));
        this.#releaseWaiters();
      }, this.#options.blockTimeoutMs);
      this.#waiters.push(waiter);
    });
  }

  /** Give back a reservation that will not be followed by `append`. */
  release(bytes: number): void {
    this.#reservedBytes = Math.max(0, this.#reservedBytes - bytes);
    this.#releaseWaiters();
  }

  #releaseWaiters(): void {
    while (this.#waiters.length > 0) {
      const first = this.#waiters[0]!;
      if (!this.#fits(first.bytes, first.kind)) return;
      this.#waiters.shift();
      clearTimeout(first.timer);
      this.#reservedBytes += first.bytes;
      first.resolve();
    }
  }

  /**
   * Queue a frame (after `reserve`). Returns the byte offset it will have in the file and a
   * promise that resolves when it is durable per the fsync policy.
   */
  append(frame: Buffer): { readonly offset: number; readonly durable: Promise<void> } {
    this.#reservedBytes = Math.max(0, this.#reservedBytes - frame.length);
    this.#checkOpen();
    const offset = this.#position + this.#queuedBytes;
    const durable = new Promise<void>((resolve, reject) => {
      this.#queue.push({ frame, resolve, reject });
    });
    this.#queuedBytes += frame.length;
    this.#schedule();
    return { offset, durable };
  }

  #schedule(): void {
    if (this.#flushing !== undefined) return; // the running batch schedules the next one
    if (this.#queuedBytes >= this.#options.groupCommitMaxBytes || this.#options.groupCommitMaxDelayMs === 0) {
      this.#flushNow();
      return;
    }
    if (this.#timer === undefined) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        if (this.#flushing === undefined) this.#flushing = this.#flush();
      }, this.#options.groupCommitMaxDelayMs);
    }
  }

  #flushNow(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#flushing = this.#flush();
  }

  /**
   * Fail the writer for good. Every frame still queued and every waiter gets the (first)
   * failure: nothing will write them, and a promise left pending would hang its caller.
   */
  #fail(failure: PavilionError, inFlight: readonly Pending[] = []): void {
    this.#failure ??= failure;
    for (const p of inFlight) p.reject(this.#failure);
    for (const p of this.#queue.splice(0)) {
      this.#queuedBytes -= p.frame.length; // a batch in flight keeps its bytes until it ends
      p.reject(this.#failure);
    }
    for (const w of this.#waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(this.#failure);
    }
  }

  async #flush(): Promise<void> {
    try {
      await this.#flushBatches();
    } catch (error) {
      // nothing above should throw (I/O errors are handled where they happen); if something
      // does, fail the writer rather than leave every later append waiting on this flush
      this.#fail(new PavilionError(ErrorCodes.AUDIT_LOG_IO, `the audit log writer failed: ${describeThrown(error)}`, { cause: error }));
    } finally {
      this.#flushing = undefined;
    }
    // Appended by callers that resumed when their batch settled, while this flush was still
    // the running one (#schedule then left them to it): their batch starts now.
    if (this.#queue.length > 0 && this.#failure === undefined) this.#schedule();
  }

  async #flushBatches(): Promise<void> {
    // Let the frames of this event-loop turn join the batch.
    await new Promise<void>((resolve) => setImmediate(resolve));
    while (this.#queue.length > 0 && this.#failure === undefined) {
      const batch: Pending[] = [];
      let bytes = 0;
      while (this.#queue.length > 0 && (batch.length === 0 || bytes + this.#queue[0]!.frame.length <= this.#options.groupCommitMaxBytes)) {
        const next = this.#queue.shift()!;
        batch.push(next);
        bytes += next.frame.length;
      }
      // Nothing is written into a log another process may own now (the owner's guard: its
      // lock); when it refuses, the file itself is looked at too (gone with its directory?).
      // This batch looks at the paths when one has not for PATH_CHECK_INTERVAL_MS; the time
      // is taken once the WAL's path was looked at after the write (not by a rewound batch).
      const full = performance.now() - this.#pathCheckedAtMs >= PATH_CHECK_INTERVAL_MS;
      const guarded = this.#guarded(full);
      const refused = guarded === undefined ? undefined : this.#detached(true) ?? guarded;
      if (refused !== undefined) {
        this.#queuedBytes -= bytes;
        this.#fail(refused, batch);
        break;
      }
      let written = 0;
      try {
        // a cut after a full volume that failed: nothing is written past it until it is made
        if (this.#cutPending) {
          await this.#handle.truncate(this.#position);
          this.#cutPending = false;
        }
        // From here on, a failure noted while this batch waits on the disk (a look at health
        // found the file or the lock gone) stops its writing: the batch is refused after.
        const buffers = batch.map((p) => p.frame);
        const rest = (): Buffer[] => (written === 0 ? buffers : [Buffer.concat(buffers).subarray(written)]);
        if (bytes <= SYNC_WRITE_MAX_BYTES && typeof this.#handle.fd === 'number') {
          while (written < bytes) written += writevSync(this.#handle.fd, rest(), this.#position + written);
        } else {
          while (written < bytes && this.#failure === undefined) written += (await this.#handle.writev(rest(), this.#position + written)).bytesWritten;
        }
        if (this.#failure !== undefined) {
          // not synced: it is refused below
        } else if (this.#options.fsync === 'always') {
          await this.#handle.datasync();
          this.#syncs++;
        } else {
          this.#dirty = true;
        }
      } catch (error) {
        this.#queuedBytes -= bytes;
        if (!isNoSpace(error) && !this.#cutPending) {
          this.#fail(ioError(written < bytes ? 'write' : 'fdatasync', error), batch);
          break;
        }
        await this.#rewind(error, batch);
        continue;
      }
      // a failure noted meanwhile (a status look found the file or the lock gone, or the
      // background fdatasync failed, while this batch was being written or synced) refuses
      // this batch too: health already says so
      const detached = this.#failure ?? this.#detached(full);
      if (full) this.#pathCheckedAtMs = performance.now();
      if (detached !== undefined) {
        this.#queuedBytes -= bytes;
        this.#fail(detached, batch);
        // The refused frames must not stay in the file where it went (a directory renamed
        // away and put back would give them to the next start as logged): cut them off, best
        // effort (the writer is done; a cut that fails is not tried again). Not when the lock
        // was lost: the file may be another process's log by now, holding records of its own
        // past this point; the refused frames may then stay (refused, yet perhaps read as
        // logged by that process: a duplicate at worst, never a loss).
        if (detached !== this.#guardRefusal) {
          await this.#handle.truncate(this.#position)
            .then(() => (this.#options.fsync === 'always' ? this.#handle.datasync() : undefined))
            .catch(() => undefined);
        }
        break;
      }
      this.#position += bytes;
      this.#queuedBytes -= bytes;
      this.#batches++;
      this.#diskFull = undefined;
      for (const p of batch) p.resolve();
      this.#releaseWaiters();
    }
    // A failure after the last batch (the background fdatasync): refuse what queued meanwhile.
    if (this.#failure !== undefined) this.#fail(this.#failure);
  }

  /**
   * See the header: refuse `batch` and everything queued behind it, and cut the file back.
   * `error` is the write's, or (while #cutPending) the failed cut's before the write.
   */
  async #rewind(error: unknown, batch: readonly Pending[]): Promise<void> {
    const queued = this.#queue.splice(0);
    for (const p of queued) this.#queuedBytes -= p.frame.length;
    const discarded = [...batch, ...queued];
    const why = this.#cutPending
      ? `the audit log file could not be cut back to its last record after the volume was full (${describeThrown(error)}): the event was not logged; the log goes on once the cut succeeds`
      : `the volume holding the audit log is full (${describeThrown(error)}): the event was not logged; the log goes on once space is freed`;
    const refusal = new PavilionError(ErrorCodes.AUDIT_DISK_FULL, why, {
      cause: error,
      details: { position: this.#position, refusedFrames: discarded.length },
    });
    this.#diskFull = {
      since: this.#diskFull?.since ?? Date.now(),
      refusedFrames: (this.#diskFull?.refusedFrames ?? 0) + discarded.length,
    };
    try {
      this.#hooks.onRewind?.(this.#position);
    } catch (hookError) {
      this.#fail(new PavilionError(ErrorCodes.AUDIT_LOG_IO, `rewinding the audit log after a full volume failed: ${describeThrown(hookError)}`, { cause: hookError }), discarded);
      // the refused frames must not stay readable past the end (best effort: the writer is done)
      if (this.#guardRefusal === undefined) await this.#handle.truncate(this.#position).catch(() => undefined);
      return;
    }
    for (const p of discarded) p.reject(refusal);
    this.#releaseWaiters();
    // the lock was lost meanwhile: the file may be another process's log now, not to be cut
    if (this.#guardRefusal !== undefined) return;
    // Part of the batch may have reached the file: cut it off (it frees the space it took).
    try {
      await this.#handle.truncate(this.#position);
      this.#cutPending = false;
    } catch {
      // Whole refused frames may stay past the end, and a shorter next batch that ends on one
      // of their boundaries would leave them readable as the log's continuation (after a
      // crash, recovery would take refused decisions in): cut before the next batch instead.
      this.#cutPending = true;
    }
  }

  /**
   * The file's link count; also its path when `full` (see the header). Undefined while it is
   * the file at its path.
   */
  #detached(full: boolean): PavilionError | undefined {
    const fd = this.#handle.fd;
    const path = this.#options.path;
    return path === undefined || typeof fd !== 'number' ? undefined : detachedFrom(fd, path, full);
  }

  /** The owner's guard; its refusal is kept (a batch refused for it is not cut, see #flushBatches). */
  #guarded(full: boolean): PavilionError | undefined {
    let refusal: PavilionError | undefined;
    try {
      refusal = this.#options.guard?.(full);
    } catch (error) {
      refusal = new PavilionError(ErrorCodes.AUDIT_LOG_IO, `the audit log's own check before a write failed: ${describeThrown(error)}`, { cause: error });
    }
    if (refusal !== undefined) this.#guardRefusal ??= refusal;
    return refusal;
  }

  /**
   * Between batches: whether the file is still the one at its path (see the header); a
   * detached file fails the writer now, so the log's status says so before the next record
   * is refused. Returns the writer's failure, if any.
   */
  checkFile(): PavilionError | undefined {
    if (this.#failure === undefined && !this.#closed) {
      const refused = this.#detached(true) ?? this.#guarded(true);
      if (refused !== undefined) this.#fail(refused);
    }
    return this.#failure;
  }

  async #periodicSync(): Promise<void> {
    if (!this.#dirty || this.#failure !== undefined) return;
    this.#dirty = false;
    try {
      await this.#handle.datasync();
      this.#syncs++;
    } catch (error) {
      this.#fail(ioError('fdatasync', error));
    }
  }

  /** Wait until everything queued so far is written (and synced, unless fsync is 'never'). */
  async drain(): Promise<void> {
    while (this.#flushing !== undefined || this.#queue.length > 0) {
      // Write now: waiting for the group-commit timer here would spin on microtasks and starve it.
      if (this.#flushing === undefined) this.#flushNow();
      await this.#flushing;
    }
    if (this.#failure !== undefined) throw this.#failure;
    if (this.#options.fsync !== 'never' && this.#dirty) {
      this.#dirty = false;
      try {
        await this.#handle.datasync();
      } catch (error) {
        this.#fail(ioError('fdatasync', error));
        throw this.#failure;
      }
      this.#syncs++;
    }
  }

  /** Stop accepting, refuse blocked writers, drain, close the file. A later call waits for the first. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#closed = true;
    if (this.#syncTimer !== undefined) clearInterval(this.#syncTimer);
    for (const w of this.#waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(new PavilionError(ErrorCodes.AUDIT_LOG_CLOSED, 'the audit log closed while waiting for disk budget'));
    }
    try {
      await this.drain();
    } finally {
      if (this.#timer !== undefined) clearTimeout(this.#timer);
      await this.#handle.close();
    }
  }
}
