/**
 * One tenant's append-only decision log: a write-ahead log file whose leaves form an RFC 9162
 * Merkle tree, with signed checkpoints every `checkpointEveryEvents` events or
 * `checkpointIntervalMs`, inclusion proofs by decision id and consistency proofs between
 * sizes.
 *
 * Lifecycle: construct -> start() (lock the directory, recover the file, rebuild the tree)
 * -> append()... -> stop(deadlineMs) (final checkpoint, drain, unlock).
 *
 * Recovery on start: frames are read in order; when the first frame that is cut short or fails
 * its CRC lies within the last `maxTornTailBytes` of the file, it and everything after it are
 * the torn tail of a write that was never acknowledged (one batch is in flight at a time, and
 * it is acknowledged only once complete). The tail is copied aside
 * (`audit.wal.torn-<offset>-<time>`, so nothing is destroyed), the file is truncated to the
 * last good frame, and `recovery` reports it (status WARN until restart). Damage further from
 * the end (a bad disk, an edit) and frames that decode but break the sequence (a leaf out of
 * order, a checkpoint whose root does not match the rebuilt tree or whose signature fails)
 * are not a torn write: the log refuses to start (ERR_AUDIT_LOG_CORRUPT, with the position),
 * so acknowledged records are never cut off automatically; `pavilion audit verify-log` says
 * more.
 */
import { open, mkdir, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { syncPath } from '../../lib/durable-file.ts';
import { tryLock, unlock } from '../../lib/lock-file.ts';
import { withRoom } from '../../lib/with-room.ts';
import { ErrorCodes, PavilionError, describeThrown, isPavilionError } from '../../lib/errors.ts';
import type { ComponentStatus } from '../../lib/lifecycle.ts';
import { withDeadline } from '../../lib/lifecycle.ts';
import type { DecisionEventV1 } from '../decision-event.ts';
import { HASH_BYTES, MerkleTree, hashLeaf } from '../merkle/index.ts';
import { CHECKPOINT_ALGORITHM, checkpointMessage, decodeCheckpoint, isValidOrigin, type SignedCheckpointV1 } from './checkpoint.ts';
import { decisionIdFrom, encodeEvent } from './event-encoding.ts';
import { SCAN_ON_THREAD_MIN_BYTES, scanFile, scanFileOnThread, type ScannedRecords } from './log-scan.ts';
import { FILE_HEADER_BYTES, FRAME_OVERHEAD_BYTES, FrameDecoder, RecordType, checkFileHeader, encodeFrame, fileHeader, type FrameDamage } from './record-format.ts';
import { Keyring, type CheckpointSigner } from './signer.ts';
import { checkAnchorAgainst, decodeAnchorRecord, type Anchor, type AnchorRecordV1 } from './anchor.ts';
import type { ConsistencyProofV1 } from './verify-log.ts';
import { DecisionIdIndex } from './decision-id-index.ts';
import { REFUSED_UNTIL_RESTART, WalWriter, holdingOrRefusal, type WalWriterOptions } from './wal-writer.ts';

export const WAL_FILE = 'audit.wal';
/** In a log's directory: the lock of the process that has it open (lib/lock-file.ts). */
export const LOCK_FILE = 'LOCK';

export interface AuditLogOptions extends WalWriterOptions {
  /** This tenant's directory (created if missing). */
  readonly directory: string;
  /** Names the log in every checkpoint, e.g. `pavilion-local/bank`. */
  readonly origin: string;
  readonly signer: CheckpointSigner;
  /** Public keys of earlier signers, so checkpoints from before a rotation verify at recovery. */
  readonly keyring?: Keyring;
  readonly maxEventBytes: number;
  readonly checkpointEveryEvents: number;
  readonly checkpointIntervalMs: number;
  /** Milliseconds since the epoch (injected for tests). */
  readonly clock?: () => number;
  /**
   * Damage closer than this to the end of the file is a torn write and is cut off; damage
   * followed by more bytes than this is not (one write batch is at most
   * groupCommitMaxBytes or one frame) and refuses the start. Default: groupCommitMaxBytes +
   * maxEventBytes + 64 KiB.
   */
  readonly maxTornTailBytes?: number;
  /** Called with every checkpoint once it is durable (for anchoring or streaming). */
  readonly onCheckpoint?: (checkpoint: SignedCheckpointV1) => void;
  /** Publishes checkpoints outside (e.g. an EVM contract); its answers become anchor records. */
  readonly anchor?: Anchor;
  /** Which epoch of the tenant's log this is (0, the default, for a log never rotated); shown in status. */
  readonly epoch?: number;
  /** The most leaves this log takes (default MAX_LEAVES_PER_LOG; lower in tests). */
  readonly maxLeaves?: number;
  /** A file from this size on is scanned at start on a worker thread (default SCAN_ON_THREAD_MIN_BYTES; tests set 0). */
  readonly scanOnThreadMinBytes?: number;
}

/**
 * The most leaves one log takes: past it an append is refused with ERR_AUDIT_LOG_FULL. The
 * tree's leaf level and the decision ids are each one growing buffer, and Node 20 allocates
 * none over 2^32 bytes (2^27 leaf hashes; fewer ids, by their length); 2^26 stays clear of
 * both for ids up to 64 bytes, with a typed refusal instead of an allocation failure after the
 * frame is queued. An epoch (`rotateAtBytes`) keeps a log far below it.
 */
const MAX_LEAVES_PER_LOG = 2 ** 26;

export interface TornTailReport {
  readonly reason: FrameDamage['reason'];
  /** Where the file was cut (the first byte of the bad frame). */
  readonly offset: number;
  readonly bytesRemoved: number;
  /** The removed bytes, kept for inspection. */
  readonly savedAs: string;
}

export interface RecoveryReport {
  readonly leaves: number;
  readonly checkpoints: number;
  readonly lastCheckpointSize: number;
  readonly tornTail: TornTailReport | undefined;
  /** A lock left by a process that is gone (a crash). */
  readonly staleLockPid: number | undefined;
}

/** What an acknowledged decision gets back: where it is in the log and what was logged. */
export interface DecisionReceiptV1 {
  readonly version: 1;
  readonly decision_id: string;
  readonly origin: string;
  readonly leaf_index: number;
  /** RFC 9162 leaf hash of the logged event, hex. */
  readonly leaf_hash: string;
  /** SHA-256 of the canonical JSON of the event's input and result (absent when absent). */
  readonly input_sha256?: string;
  readonly result_sha256?: string;
}

/** Everything needed to check one decision offline (with the signer's public key). */
export interface DecisionProofV1 {
  readonly version: 1;
  /** The logged event exactly as it is in the log (canonical JSON). */
  readonly event: string;
  readonly leaf_index: number;
  /** Inclusion path in the checkpoint's tree, bottom-up, hex. */
  readonly inclusion_path: readonly string[];
  readonly checkpoint: SignedCheckpointV1;
  /** The anchor record of that checkpoint, when it has been anchored. */
  readonly anchor?: AnchorRecordV1;
}

function corrupt(message: string, details: Record<string, unknown>): PavilionError {
  return new PavilionError(ErrorCodes.AUDIT_LOG_CORRUPT, message, { details });
}

/**
 * Take the lock `file` that guards `what` (lib/lock-file.ts): the pid of a stale lock taken
 * over (-1: unreadable), or undefined. ERR_AUDIT_LOG_LOCKED while another process, or another
 * holder in this one, has it; ERR_AUDIT_LOG_IO when the file system refuses. `details` go into
 * either error.
 */
export async function takeAuditLock(file: string, what: string, details: Readonly<Record<string, unknown>> = {}): Promise<number | undefined> {
  let attempt;
  try {
    attempt = await tryLock(file);
  } catch (error) {
    throw new PavilionError(ErrorCodes.AUDIT_LOG_IO, `cannot lock ${what} (${file}): ${describeThrown(error)}`, { cause: error, details: { ...details } });
  }
  if (attempt.taken) return attempt.stalePid;
  const by = attempt.thisProcess
    ? 'another audit log sink in this process'
    : attempt.pid === undefined ? 'another process (its lock is being taken or replaced, or holds no pid and is not yet 10 s old)' : `process ${attempt.pid}`;
  throw new PavilionError(ErrorCodes.AUDIT_LOG_LOCKED, `${what} is in use by ${by} (${file})`, { details: { ...details, ...(attempt.pid === undefined ? {} : { pid: attempt.pid }) } });
}

export class AuditLog {
  readonly name: string;
  readonly #options: AuditLogOptions;
  readonly #clock: () => number;
  readonly #tree = new MerkleTree();
  /** The decision id each leaf's event carries, and the leaf of each id, so a reader need not parse it. */
  readonly #decisionIds = new DecisionIdIndex();
  /** Byte offset of each leaf's frame, so a proof reads one frame, not the file. */
  readonly #offsets = new OffsetIndex();
  #signer: CheckpointSigner;
  /** The current signer's key and any this log rotated to. */
  #keyring: Keyring;
  /** Keys of signers before this process (rotation across restarts). */
  readonly #earlierKeys: Keyring | undefined;
  #tailTime: number | undefined;
  #writer: WalWriter | undefined;
  #recovery: RecoveryReport | undefined;
  #checkpoints: SignedCheckpointV1[] = [];
  #anchors: AnchorRecordV1[] = [];
  #anchoring: Promise<void> | undefined;
  /** The newest checkpoint waiting for the anchor while another is being anchored. */
  #anchorNext: SignedCheckpointV1 | undefined;
  /** The last anchoring failure, until an anchor succeeds again. */
  #anchorError: string | undefined;
  #checkpointing: Promise<SignedCheckpointV1> | undefined;
  /** The lock file, held open while the log runs (see #lockLost). */
  #lockHandle: FileHandle | undefined;
  #checkpointTimer: NodeJS.Timeout | undefined;
  #sinceCheckpoint = 0;
  /** Counts rewinds (a full volume): a checkpoint signed before one may cover leaves that are gone. */
  #rewinds = 0;
  /** Why the last checkpoint failed, until one is made again. */
  #checkpointError: string | undefined;
  /** Why the last append was refused, until an append is durable again. */
  #appendError: string | undefined;
  /** 'sealing': frozen for a rotation (freeze): appends are refused, checkpoints still made. */
  #state: 'new' | 'open' | 'sealing' | 'stopped' = 'new';

  constructor(options: AuditLogOptions) {
    if (!isValidOrigin(options.origin)) throw new PavilionError(ErrorCodes.CONFIG_INVALID, `audit log origin ${JSON.stringify(options.origin)} is not valid`);
    const { maxLeaves } = options;
    if (maxLeaves !== undefined && !(Number.isSafeInteger(maxLeaves) && maxLeaves >= 2 && maxLeaves <= MAX_LEAVES_PER_LOG)) {
      throw new PavilionError(ErrorCodes.CONFIG_INVALID, `audit log maxLeaves must be an integer from 2 (a link and a decision) to ${MAX_LEAVES_PER_LOG}, not ${String(maxLeaves)}`);
    }
    this.#options = options;
    this.#clock = options.clock ?? Date.now;
    this.#signer = options.signer;
    this.#keyring = new Keyring();
    this.#keyring.add(options.signer.publicKeySpki);
    this.#earlierKeys = options.keyring;
    this.name = `audit_log:${options.origin}`;
  }

  get path(): string {
    return join(this.#options.directory, WAL_FILE);
  }

  get directory(): string {
    return this.#options.directory;
  }

  /**
   * Bytes of the file that are written (and synced, with fsync 'always'): every frame before
   * this offset is complete and acknowledged, so a reader may read up to it while the log
   * keeps appending.
   */
  get writtenBytes(): number {
    return this.#writer?.stats().bytesOnDisk ?? 0;
  }

  get origin(): string {
    return this.#options.origin;
  }

  get size(): number {
    return this.#tree.size;
  }

  get recovery(): RecoveryReport {
    if (this.#recovery === undefined) throw new PavilionError(ErrorCodes.AUDIT_LOG_CLOSED, 'the audit log has not been started');
    return this.#recovery;
  }

  /** The latest durable checkpoint, if any. */
  get latestCheckpoint(): SignedCheckpointV1 | undefined {
    return this.#checkpoints.at(-1);
  }

  get checkpoints(): readonly SignedCheckpointV1[] {
    return this.#checkpoints;
  }

  async start(): Promise<void> {
    if (this.#state !== 'new') throw new PavilionError(ErrorCodes.AUDIT_LOG_CLOSED, 'an audit log is started once');
    await mkdir(this.#options.directory, { recursive: true, mode: 0o700 });
    const staleLockPid = await this.#lock();
    let handle: FileHandle | undefined;
    try {
      // held open for its link count: 0 once the lock is removed or a rename replaces it
      this.#lockHandle = await open(this.#lockPath(), 'r');
      // Decision events can hold personal data: owner-only, like the directory.
      handle = await open(this.path, 'a+', 0o600);
      const recovered = await this.#recover(handle);
      await handle.close();
      handle = await open(this.path, 'r+');
      this.#writer = new WalWriter(handle, recovered.end, {
        path: this.path,
        guard: (full) => this.#lockLost(full),
        fsync: this.#options.fsync,
        fsyncIntervalMs: this.#options.fsyncIntervalMs,
        groupCommitMaxDelayMs: this.#options.groupCommitMaxDelayMs,
        groupCommitMaxBytes: this.#options.groupCommitMaxBytes,
        maxDiskBytes: this.#options.maxDiskBytes,
        onFull: this.#options.onFull,
        blockTimeoutMs: this.#options.blockTimeoutMs,
      }, { onRewind: (position) => this.#rewind(position) });
      this.#recovery = { ...recovered.report, staleLockPid };
    } catch (error) {
      // The tree may hold part of the file: this instance cannot be started again.
      this.#state = 'stopped';
      await handle?.close().catch(() => undefined);
      await this.#unlock();
      throw error;
    }
    this.#state = 'open';
    this.#checkpointTimer = setInterval(() => {
      if (this.#tree.size > (this.latestCheckpoint?.tree_size ?? 0)) this.#checkpointInBackground();
    }, this.#options.checkpointIntervalMs);
    this.#checkpointTimer.unref();
  }

  /** Take the directory's lock file (takeAuditLock); the pid of a stale one taken over. */
  #lock(): Promise<number | undefined> {
    return takeAuditLock(this.#lockPath(), `the audit log in ${this.#options.directory}`);
  }

  async #unlock(): Promise<void> {
    await this.#closeLockHandle();
    await unlock(this.#lockPath());
  }

  /** Stop watching the lock (the writer is closed): its descriptor is closed, the file stays. */
  async #closeLockHandle(): Promise<void> {
    const held = this.#lockHandle;
    this.#lockHandle = undefined;
    await held?.close().catch(() => undefined);
  }

  #lockPath(): string {
    return join(this.#options.directory, LOCK_FILE);
  }

  /**
   * Why the lock this log took is not at its path any more (removed, moved away or replaced:
   * another process may then open the log and write it too), or undefined while it is: the
   * held lock file's link count every time, its path too when `full` (lib/file-identity.ts).
   * The WAL writer asks before each batch (`full` at most once a second), the status between
   * batches (`full`).
   */
  #lockLost(full: boolean): PavilionError | undefined {
    const fd = this.#lockHandle?.fd;
    if (fd === undefined) return undefined;
    const path = this.#lockPath();
    // one that cannot be looked at is not known to be held (as an unreadable WAL path, for good)
    const holding = holdingOrRefusal(fd, path, full, "the audit log's lock file", 'lock-unreadable');
    if (holding instanceof PavilionError) return holding;
    if (holding === 'same') return undefined;
    const replaced = holding === 'replaced';
    return new PavilionError(
      ErrorCodes.AUDIT_LOG_IO,
      `the audit log's lock file ${path} was ${replaced ? 'replaced' : 'removed or moved away'} while this sidecar held it: another process may open the log now, so this sidecar stops writing it: ${REFUSED_UNTIL_RESTART}`,
      { details: { path, reason: replaced ? 'lock-replaced' : 'lock-removed' } },
    );
  }

  async #recover(handle: FileHandle): Promise<{ end: number; report: Omit<RecoveryReport, 'staleLockPid'> }> {
    const { size } = await handle.stat();
    if (size < FILE_HEADER_BYTES) {
      // A new log, or one whose header write was torn (nothing in it was ever acknowledged).
      if (size > 0) await this.#saveTail(handle, 0, size);
      await handle.truncate(0);
      await handle.write(fileHeader(), 0, FILE_HEADER_BYTES, 0);
      await handle.sync();
      await syncPath(this.#options.directory);
      const tornTail = size > 0 ? { reason: 'short_header' as const, offset: 0, bytesRemoved: size, savedAs: this.#tailName(0) } : undefined;
      return { end: FILE_HEADER_BYTES, report: { leaves: 0, checkpoints: 0, lastCheckpointSize: 0, tornTail } };
    }
    const header = Buffer.alloc(FILE_HEADER_BYTES);
    await handle.read(header, 0, FILE_HEADER_BYTES, 0);
    const headerProblem = checkFileHeader(header);
    if (headerProblem !== undefined) throw corrupt(`${this.path}: ${headerProblem}`, { byteOffset: 0 });

    const apply = (batch: ScannedRecords): void => this.#applyScanned(batch);
    const minOnThread = this.#options.scanOnThreadMinBytes ?? SCAN_ON_THREAD_MIN_BYTES;
    const { goodEnd, damage } = size >= minOnThread
      ? await scanFileOnThread(handle.fd, size, apply)
      : await scanFile(async (buffer, position) => (await handle.read(buffer, 0, buffer.length, position)).bytesRead, size, apply);
    let tornTail: TornTailReport | undefined;
    const limit = this.#options.maxTornTailBytes ?? this.#options.groupCommitMaxBytes + this.#options.maxEventBytes + 65_536;
    if (damage !== undefined && size - damage.offset > limit) {
      throw corrupt(
        `${this.path}: record ${damage.recordNumber} at byte ${damage.offset} is damaged (${damage.reason}) and ${size - damage.offset} bytes follow it, more than a torn write can leave (${limit}); refusing to cut acknowledged records`,
        { byteOffset: damage.offset, recordNumber: damage.recordNumber, leafIndex: this.#tree.size, reason: damage.reason, bytesAfter: size - damage.offset },
      );
    }
    if (damage !== undefined) {
      await this.#saveTail(handle, damage.offset, size);
      await handle.truncate(damage.offset);
      await handle.sync();
      tornTail = { reason: damage.reason, offset: damage.offset, bytesRemoved: size - damage.offset, savedAs: this.#tailName(damage.offset) };
    }
    this.#sinceCheckpoint = this.#tree.size - (this.latestCheckpoint?.tree_size ?? 0);
    return {
      end: goodEnd,
      report: { leaves: this.#tree.size, checkpoints: this.#checkpoints.length, lastCheckpointSize: this.latestCheckpoint?.tree_size ?? 0, tornTail },
    };
  }

  /** A scanned chunk's records into the tree, the indexes and the checkpoint and anchor lists, in file order. */
  #applyScanned(batch: ScannedRecords): void {
    let leaf = 0;
    let other = 0;
    for (let k = 0; k < batch.types.length; k++) {
      const type = batch.types[k];
      const index = batch.indexes[k] as number;
      const offset = batch.offsets[k] as number;
      const recordNumber = batch.firstRecordNumber + k;
      if (type === RecordType.LEAF) {
        if (index !== this.#tree.size) {
          throw corrupt(`${this.path}: record ${recordNumber} at byte ${offset} is leaf ${index}, expected leaf ${this.#tree.size}`, {
            byteOffset: offset, recordNumber, leafIndex: this.#tree.size,
          });
        }
        this.#tree.appendLeafHash(batch.leafHashes.subarray(leaf * HASH_BYTES, (leaf + 1) * HASH_BYTES));
        this.#offsets.push(offset);
        // a payload without a decision id (not an event this build wrote) still counts as a leaf
        this.#decisionIds.push(batch.leafIds[leaf]);
        leaf++;
      } else if (type === RecordType.CHECKPOINT) {
        this.#acceptRecoveredCheckpoint(batch.otherPayloads[other++] as Uint8Array, index, offset, recordNumber);
      } else {
        this.#acceptRecoveredAnchor(batch.otherPayloads[other++] as Uint8Array, index, offset, recordNumber);
      }
    }
  }

  #tailName(offset: number): string {
    this.#tailTime ??= this.#clock();
    return `${this.path}.torn-${offset}-${this.#tailTime}`;
  }

  async #saveTail(handle: FileHandle, from: number, to: number): Promise<void> {
    const bytes = Buffer.alloc(to - from);
    await handle.read(bytes, 0, bytes.length, from);
    await writeFile(this.#tailName(from), bytes, { mode: 0o600 });
  }

  #acceptRecoveredCheckpoint(payload: Uint8Array, index: number, offset: number, recordNumber: number): void {
    const where = { byteOffset: offset, recordNumber };
    let checkpoint: SignedCheckpointV1;
    try {
      checkpoint = decodeCheckpoint(payload);
      if (checkpoint.tree_size !== index) throw corrupt('checkpoint frame index differs from its tree size', where);
      if (checkpoint.origin !== this.#options.origin) throw corrupt(`checkpoint origin ${checkpoint.origin} is not this log's ${this.#options.origin}`, where);
      if (checkpoint.tree_size > this.#tree.size || checkpoint.tree_size < (this.latestCheckpoint?.tree_size ?? 0)) {
        throw corrupt(`checkpoint at tree size ${checkpoint.tree_size} does not fit between ${this.latestCheckpoint?.tree_size ?? 0} and ${this.#tree.size}`, where);
      }
      if (this.#tree.root(checkpoint.tree_size).toString('hex') !== checkpoint.root_hash) {
        throw corrupt(`checkpoint at tree size ${checkpoint.tree_size} does not match the leaves before it`, { ...where, treeSize: checkpoint.tree_size });
      }
      this.#verifyWithKnownKeys(checkpoint);
    } catch (error) {
      if (isPavilionError(error, ErrorCodes.AUDIT_LOG_CORRUPT)) throw new PavilionError(ErrorCodes.AUDIT_LOG_CORRUPT, `${this.path}: ${error.message}`, { details: error.details ?? where, cause: error });
      throw corrupt(`${this.path}: checkpoint record ${recordNumber} at byte ${offset}: ${describeThrown(error)}`, where);
    }
    this.#checkpoints.push(checkpoint);
  }

  #acceptRecoveredAnchor(payload: Uint8Array, index: number, offset: number, recordNumber: number): void {
    try {
      const anchor = decodeAnchorRecord(payload);
      if (anchor.tree_size !== index) throw new Error('anchor frame index differs from its tree size');
      checkAnchorAgainst(anchor, this.#checkpoints);
      this.#anchors.push(anchor);
    } catch (error) {
      throw corrupt(`${this.path}: anchor record ${recordNumber} at byte ${offset}: ${describeThrown(error)}`, { byteOffset: offset, recordNumber });
    }
  }

  /** Anchor records written so far (recovered and new). */
  get anchors(): readonly AnchorRecordV1[] {
    return this.#anchors;
  }

  #anchorInBackground(checkpoint: SignedCheckpointV1): void {
    if (this.#options.anchor === undefined) return;
    if (this.#anchoring !== undefined) {
      this.#anchorNext = checkpoint; // anchoring the newest covers the older ones (consistency)
      return;
    }
    this.#anchoring = this.#anchorOne(checkpoint).finally(() => {
      this.#anchoring = undefined;
      const next = this.#anchorNext;
      this.#anchorNext = undefined;
      if (next !== undefined && this.#state === 'open') this.#anchorInBackground(next);
    });
  }

  async #anchorOne(checkpoint: SignedCheckpointV1): Promise<void> {
    const anchor = this.#options.anchor;
    const writer = this.#writer;
    if (anchor === undefined || writer === undefined) return;
    try {
      const reference = await anchor.anchor(checkpoint);
      const record: AnchorRecordV1 = { version: 1, kind: anchor.kind, tree_size: checkpoint.tree_size, root_hash: checkpoint.root_hash, reference };
      const payload = Buffer.from(JSON.stringify(record), 'utf8');
      decodeAnchorRecord(payload); // never write one that would not read back
      const frame = encodeFrame(RecordType.ANCHOR, checkpoint.tree_size, payload);
      const waiting = writer.reserve(frame.length, 'checkpoint');
      if (waiting !== undefined) await waiting;
      await writer.append(frame).durable;
      this.#anchors.push(record);
      this.#anchorError = undefined;
    } catch (error) {
      // Decisions go on; the next checkpoint is anchored afresh (it covers this one).
      this.#anchorError = `anchoring the checkpoint at tree size ${checkpoint.tree_size} failed: ${describeThrown(error)}`;
    }
  }

  #verifyWithKnownKeys(checkpoint: SignedCheckpointV1): void {
    if (this.#earlierKeys !== undefined && this.#earlierKeys.ids().includes(checkpoint.key_id)) {
      this.#earlierKeys.verifyCheckpoint(checkpoint);
      return;
    }
    this.#keyring.verifyCheckpoint(checkpoint);
  }

  /** The most leaves this log takes (MAX_LEAVES_PER_LOG unless set lower); a sink rotates before it. */
  get maxLeaves(): number {
    return this.#options.maxLeaves ?? MAX_LEAVES_PER_LOG;
  }

  /**
   * What can fail for want of memory in taking leaf `index`, done before its frame is queued:
   * its hash, its frame, and room in the tree, the offsets and the ids, which then take it
   * without growing a buffer. ERR_AUDIT_LOG_FULL when an allocation is refused.
   */
  #prepareLeaf(index: number, payload: Buffer, id: string | undefined): { readonly leafHash: Buffer; readonly frame: Buffer } | PavilionError {
    try {
      const leafHash = hashLeaf(payload);
      const frame = encodeFrame(RecordType.LEAF, index, payload);
      this.#tree.prepareAppend();
      this.#offsets.prepare();
      this.#decisionIds.prepare(id);
      return { leafHash, frame };
    } catch (error) {
      return new PavilionError(ErrorCodes.AUDIT_LOG_FULL, `the audit log ${this.#options.origin} cannot take another leaf (${index} leaves): ${describeThrown(error)}`, {
        cause: error,
        details: { leaves: index },
      });
    }
  }

  /** ERR_AUDIT_LOG_FULL when the log holds maxLeaves leaves. */
  #leafRefusal(): PavilionError | undefined {
    if (this.#tree.size < this.maxLeaves) return undefined;
    return new PavilionError(ErrorCodes.AUDIT_LOG_FULL, `the audit log ${this.#options.origin} holds ${this.#tree.size} leaves, the most one log takes (${this.maxLeaves}); with decisionLog.audit.rotateAtBytes or rotateAfterMs a new epoch starts before that`, {
      details: { leaves: this.#tree.size, maxLeaves: this.maxLeaves },
    });
  }

  /**
   * Append one decision event. Resolves with its receipt once the record is durable as the
   * fsync policy defines; rejects with ERR_AUDIT_LOG_FULL (budget, per policy; or the log holds
   * maxLeaves),
   * ERR_AUDIT_EVENT_TOO_LARGE, ERR_AUDIT_LOG_CLOSED or ERR_AUDIT_LOG_IO. Never drops.
   */
  async append(event: DecisionEventV1): Promise<DecisionReceiptV1> {
    if (this.#state !== 'open' || this.#writer === undefined) throw new PavilionError(ErrorCodes.AUDIT_LOG_CLOSED, 'the audit log is not open');
    const early = this.#leafRefusal();
    if (early !== undefined) throw early; // before waiting for disk budget that would not help
    const encoded = encodeEvent(event);
    if (encoded.bytes.length > this.#options.maxEventBytes) {
      throw new PavilionError(ErrorCodes.AUDIT_EVENT_TOO_LARGE, `decision event of ${encoded.bytes.length} bytes is over the audit log's maxEventBytes ${this.#options.maxEventBytes}`, {
        details: { bytes: encoded.bytes.length, maxEventBytes: this.#options.maxEventBytes, decisionId: event.decision_id },
      });
    }
    const frameBytes = FRAME_OVERHEAD_BYTES + encoded.bytes.length;
    const waiting = this.#writer.reserve(frameBytes);
    if (waiting !== undefined) await waiting;
    if (this.#state !== 'open') {
      this.#writer.release(frameBytes); // reserved, but no frame will follow
      throw new PavilionError(ErrorCodes.AUDIT_LOG_CLOSED, 'the audit log closed');
    }
    const id = decisionIdFrom(event.decision_id);
    // From here to the writer's `append` nothing awaits: the tree and the file get the same order
    const index = this.#tree.size;
    // again: others took leaves while this one waited
    const prepared = this.#leafRefusal() ?? this.#prepareLeaf(index, encoded.bytes, id);
    if (prepared instanceof PavilionError) {
      this.#writer.release(frameBytes);
      throw prepared;
    }
    // The writer takes the frame first, so one that refuses it (failed) leaves the tree as it was.
    const { offset, durable } = this.#writer.append(prepared.frame);
    this.#tree.appendLeafHash(prepared.leafHash);
    // what decisionIdOf reads back from the payload
    this.#decisionIds.push(id);
    this.#offsets.push(offset);
    if (++this.#sinceCheckpoint >= this.#options.checkpointEveryEvents) this.#checkpointInBackground();
    try {
      await durable;
    } catch (error) {
      this.#appendError = describeThrown(error);
      throw error;
    }
    this.#appendError = undefined;
    return {
      version: 1,
      decision_id: event.decision_id,
      origin: this.#options.origin,
      leaf_index: index,
      leaf_hash: prepared.leafHash.toString('hex'),
      ...(encoded.inputSha256 === undefined ? {} : { input_sha256: encoded.inputSha256 }),
      ...(encoded.resultSha256 === undefined ? {} : { result_sha256: encoded.resultSha256 }),
    };
  }

  /**
   * The writer discarded every frame from `position` on (a full volume; none of them was
   * acknowledged): forget their leaves, so the next leaf takes the first discarded index and
   * the tree matches the file again.
   */
  #rewind(position: number): void {
    let keep = this.#tree.size;
    while (keep > 0 && this.#offsets.at(keep - 1) >= position) keep--;
    this.#tree.truncate(keep);
    this.#offsets.truncate(keep);
    this.#decisionIds.truncate(keep);
    this.#sinceCheckpoint = Math.max(0, keep - (this.latestCheckpoint?.tree_size ?? 0));
    this.#rewinds++;
  }

  #checkpointInBackground(): void {
    if (this.#checkpointing !== undefined) return;
    this.checkpoint().catch((error: unknown) => {
      this.#checkpointError = `checkpoint failed: ${describeThrown(error)}`;
    });
  }

  /**
   * Sign and append a checkpoint of the current tree; resolves once it is durable. One at a
   * time: a call while one is being made waits for it and, if leaves arrived since, makes
   * another.
   */
  async checkpoint(): Promise<SignedCheckpointV1> {
    while (this.#checkpointing !== undefined) {
      const running = await this.#checkpointing.catch(() => undefined);
      if (running !== undefined && running.tree_size === this.#tree.size) return running;
    }
    const making = this.#makeCheckpoint();
    this.#checkpointing = making;
    try {
      return await making;
    } finally {
      if (this.#checkpointing === making) this.#checkpointing = undefined;
    }
  }

  async #makeCheckpoint(): Promise<SignedCheckpointV1> {
    const writer = this.#writer;
    if ((this.#state !== 'open' && this.#state !== 'sealing') || writer === undefined) throw new PavilionError(ErrorCodes.AUDIT_LOG_CLOSED, 'the audit log is not open');
    const size = this.#tree.size;
    const rewinds = this.#rewinds;
    this.#sinceCheckpoint = 0;
    const signer = this.#signer;
    const body = {
      origin: this.#options.origin,
      tree_size: size,
      root_hash: this.#tree.root(size).toString('hex'),
      timestamp: new Date(this.#clock()).toISOString(),
      key_id: signer.keyId,
    };
    let signature: Buffer;
    try {
      signature = await signer.sign(checkpointMessage(body));
    } catch (error) {
      throw isPavilionError(error) ? error : new PavilionError(ErrorCodes.AUDIT_SIGNER_FAILED, `checkpoint signing failed: ${describeThrown(error)}`, { cause: error });
    }
    if (signature.length !== 64) throw new PavilionError(ErrorCodes.AUDIT_SIGNER_FAILED, `the signer returned ${signature.length} bytes, not an r||s pair of 64`);
    const checkpoint: SignedCheckpointV1 = { version: 1, algorithm: CHECKPOINT_ALGORITHM, ...body, signature: signature.toString('base64') };
    // Never write a checkpoint that would not verify.
    this.#keyring.verifyCheckpoint(checkpoint);
    const payload = Buffer.from(JSON.stringify(checkpoint), 'utf8');
    const frame = encodeFrame(RecordType.CHECKPOINT, size, payload);
    const waiting = writer.reserve(frame.length, 'checkpoint');
    if (waiting !== undefined) await waiting;
    // Leaves dropped by a rewind while this was signed: sign again only if it still fits the tree.
    if (this.#rewinds !== rewinds && (size > this.#tree.size || this.#tree.root(size).toString('hex') !== body.root_hash)) {
      writer.release(frame.length);
      this.#sinceCheckpoint = this.#tree.size - (this.latestCheckpoint?.tree_size ?? 0);
      throw new PavilionError(ErrorCodes.AUDIT_DISK_FULL, `checkpoint at tree size ${size} abandoned: leaves it covered were refused for want of disk space`, { details: { treeSize: size } });
    }
    await writer.append(frame).durable;
    this.#checkpoints.push(checkpoint);
    this.#checkpointError = undefined;
    this.#options.onCheckpoint?.(checkpoint);
    this.#anchorInBackground(checkpoint);
    return checkpoint;
  }

  /**
   * Switch to another signing key (rotation). Checkpoints made from now on name the new key;
   * the old public key stays in this log's keyring, and must stay published for verifiers.
   */
  rotateSigner(signer: CheckpointSigner): void {
    this.#keyring.add(signer.publicKeySpki);
    this.#signer = signer;
  }

  /** Change the disk budget; a larger one releases writers blocked on it. */
  setMaxDiskBytes(maxDiskBytes: number): void {
    this.#writer?.setMaxDiskBytes(maxDiskBytes);
  }

  /** The decision id of leaf `index` (as `decisionIdOf` its payload), or undefined when it has none. */
  decisionIdAt(index: number): string | undefined {
    return this.#decisionIds.at(index);
  }

  /** The leaf hash of leaf `index`, hex (a reader checks that a leaf it remembers is still this one). */
  leafHashAt(index: number): string {
    return this.#tree.leafHash(index).toString('hex');
  }

  /** Byte offset of leaf `index`'s frame in the file. */
  leafOffsetAt(index: number): number {
    return this.#offsets.at(index);
  }

  /** Leaf index of a logged decision, or undefined. */
  leafIndexOf(decisionId: string): number | undefined {
    return this.#decisionIds.indexOf(decisionId);
  }

  /**
   * Proof that the decision is in the log, against the latest checkpoint that covers it. When
   * none does yet, one is signed now, or with `signNow: false` (what a network caller gets, so
   * it cannot make the log sign on demand) ERR_AUDIT_NOT_CHECKPOINTED is thrown. Throws
   * ERR_AUDIT_DECISION_UNKNOWN for a decision not in this log.
   */
  async proveInclusion(decisionId: string, options: { readonly signNow?: boolean } = {}): Promise<DecisionProofV1> {
    const index = this.#decisionIds.indexOf(decisionId);
    if (index === undefined) {
      throw new PavilionError(ErrorCodes.AUDIT_DECISION_UNKNOWN, `decision ${JSON.stringify(decisionId)} is not in the audit log ${this.#options.origin}`, { details: { decisionId } });
    }
    let checkpoint = this.latestCheckpoint;
    if (checkpoint === undefined || checkpoint.tree_size <= index) {
      if (options.signNow === false) {
        throw new PavilionError(
          ErrorCodes.AUDIT_NOT_CHECKPOINTED,
          `decision ${JSON.stringify(decisionId)} is leaf ${index} of ${this.#options.origin}, not yet covered by a signed checkpoint (the latest covers ${checkpoint?.tree_size ?? 0} leaves); the next is signed within ${this.#options.checkpointEveryEvents} events or ${this.#options.checkpointIntervalMs} ms`,
          { details: { decisionId, leafIndex: index, checkpointTreeSize: checkpoint?.tree_size ?? 0 } },
        );
      }
      checkpoint = await this.checkpoint();
    }
    const event = await this.#readLeaf(index);
    const anchor = this.#anchors.find((a) => a.tree_size === checkpoint.tree_size && a.root_hash === checkpoint.root_hash);
    return {
      version: 1,
      event: event.toString('utf8'),
      leaf_index: index,
      inclusion_path: this.#tree.inclusionProof(index, checkpoint.tree_size).map((h) => h.toString('hex')),
      checkpoint,
      ...(anchor === undefined ? {} : { anchor }),
    };
  }

  /** RFC 9162 consistency proof between two tree sizes of this log, hex. */
  proveConsistency(oldSize: number, newSize: number): string[] {
    return this.#tree.consistencyProof(oldSize, newSize).map((h) => h.toString('hex'));
  }

  /**
   * Proof that this log only grew since a checkpoint the caller holds, up to the latest
   * checkpoint. Throws ERR_AUDIT_LOG_TRUNCATED / ERR_AUDIT_ROOT_MISMATCH when `old` is not a
   * prefix of this log, ERR_AUDIT_DECISION_UNKNOWN when there is no checkpoint yet.
   */
  consistencyProofFrom(old: SignedCheckpointV1): ConsistencyProofV1 {
    const latest = this.latestCheckpoint;
    if (latest === undefined) throw new PavilionError(ErrorCodes.AUDIT_DECISION_UNKNOWN, `the audit log ${this.#options.origin} has no checkpoint yet`);
    if (old.origin !== this.#options.origin) {
      throw new PavilionError(ErrorCodes.AUDIT_CHECKPOINT_INVALID, `the checkpoint is of log ${old.origin}, not ${this.#options.origin}`, { details: { origin: old.origin } });
    }
    if (old.tree_size > latest.tree_size) {
      throw new PavilionError(ErrorCodes.AUDIT_LOG_TRUNCATED, `the log's latest checkpoint covers ${latest.tree_size} leaves, fewer than ${old.tree_size}`, { details: { leafIndex: latest.tree_size, treeSize: old.tree_size } });
    }
    if (this.#tree.root(old.tree_size).toString('hex') !== old.root_hash) {
      throw new PavilionError(ErrorCodes.AUDIT_ROOT_MISMATCH, `the log's first ${old.tree_size} leaves do not give the checkpoint's root`, { details: { leafIndex: 0, treeSize: old.tree_size } });
    }
    return {
      version: 1,
      old_checkpoint: old,
      new_checkpoint: latest,
      consistency_path: this.proveConsistency(old.tree_size, latest.tree_size),
    };
  }

  /**
   * Proof that this log only grew between two of its own signed checkpoints, named by tree
   * size (`newSize` default: the latest checkpoint's). What the HTTP consistency endpoint
   * serves: whoever holds the checkpoint at `oldSize` checks the answer offline with
   * `verifyConsistencyProof`. Throws ERR_AUDIT_RANGE_INVALID for sizes that are not integers
   * >= 1, `oldSize` > `newSize`, or a size past the end of the log; ERR_AUDIT_NOT_CHECKPOINTED
   * when `newSize` is in the log but no signed checkpoint reaches it yet;
   * ERR_AUDIT_CHECKPOINT_UNKNOWN when no checkpoint was signed at exactly that size.
   */
  consistencyProofBetween(oldSize: number, newSize?: number): ConsistencyProofV1 {
    const latest = this.latestCheckpoint;
    const to = newSize ?? latest?.tree_size ?? this.#tree.size;
    checkRange(oldSize, to, this.#tree.size);
    if (latest === undefined || to > latest.tree_size) {
      throw new PavilionError(
        ErrorCodes.AUDIT_NOT_CHECKPOINTED,
        `the audit log ${this.#options.origin} has ${this.#tree.size} leaves and its latest signed checkpoint covers ${latest?.tree_size ?? 0}; size ${to} is not signed yet`,
        { details: { treeSize: this.#tree.size, checkpointTreeSize: latest?.tree_size ?? 0, size: to } },
      );
    }
    const older = this.#checkpointAt(oldSize);
    const newer = this.#checkpointAt(to);
    return { version: 1, old_checkpoint: older, new_checkpoint: newer, consistency_path: this.proveConsistency(oldSize, to) };
  }

  /** The latest checkpoint signed at exactly `size` leaves (sizes only grow along the list). */
  #checkpointAt(size: number): SignedCheckpointV1 {
    const list = this.#checkpoints;
    let low = 0;
    let high = list.length; // first index whose size is > size
    while (low < high) {
      const middle = (low + high) >>> 1;
      if ((list[middle] as SignedCheckpointV1).tree_size <= size) low = middle + 1;
      else high = middle;
    }
    const found = list[low - 1];
    if (found === undefined || found.tree_size !== size) {
      throw new PavilionError(ErrorCodes.AUDIT_CHECKPOINT_UNKNOWN, `the audit log ${this.#options.origin} has no signed checkpoint at tree size ${size}; ask between the sizes of checkpoints you hold`, {
        details: { size },
      });
    }
    return found;
  }

  /** The root hash at a tree size (default: now), hex. */
  rootHash(treeSize: number = this.#tree.size): string {
    return this.#tree.root(treeSize).toString('hex');
  }

  /** Read a leaf's frame back from the file and check it against the tree. */
  async #readLeaf(index: number): Promise<Buffer> {
    const offset = this.#offsets.at(index);
    const handle = await open(this.path, 'r');
    try {
      const head = Buffer.alloc(FRAME_OVERHEAD_BYTES);
      await handle.read(head, 0, FRAME_OVERHEAD_BYTES, offset);
      const frame = Buffer.alloc(FRAME_OVERHEAD_BYTES + head.readUInt32BE(0));
      const { bytesRead } = await handle.read(frame, 0, frame.length, offset);
      const decoder = new FrameDecoder(offset);
      const [record] = decoder.push(frame.subarray(0, bytesRead));
      if (record === undefined || record.type !== RecordType.LEAF || record.index !== index || !hashLeaf(record.payload).equals(this.#tree.leafHash(index))) {
        throw corrupt(`${this.path}: leaf ${index} at byte ${offset} no longer matches the tree`, { leafIndex: index, byteOffset: offset });
      }
      return record.payload;
    } finally {
      await handle.close();
    }
  }

  status(): ComponentStatus {
    if (this.#state === 'new') return { state: 'NOT_READY', message: 'audit log not started' };
    if (this.#state === 'stopped') return { state: 'NOT_READY', message: 'audit log stopped' };
    const failure = this.#writer?.checkFile();
    const stats = this.#writer?.stats();
    const details = {
      origin: this.#options.origin,
      epoch: this.#options.epoch ?? 0,
      leaves: this.#tree.size,
      checkpoint_size: this.latestCheckpoint?.tree_size ?? 0,
      anchored_size: this.#anchors.at(-1)?.tree_size ?? 0,
      bytes_on_disk: stats?.bytesOnDisk ?? 0,
      max_disk_bytes: stats?.maxDiskBytes ?? this.#options.maxDiskBytes,
      blocked_writers: stats?.waiting ?? 0,
      write_batches: stats?.batches ?? 0,
      syncs: stats?.syncs ?? 0,
      ...(this.#recovery?.tornTail === undefined ? {} : { torn_tail: this.#recovery.tornTail }),
      // a lock left by a process that is gone (a crash), taken over at start (-1: unreadable)
      ...(this.#recovery?.staleLockPid === undefined ? {} : { stale_lock_pid: this.#recovery.staleLockPid }),
    };
    if (failure !== undefined) return { state: 'ERROR', message: failure.message, details };
    const diskFull = this.#writer?.diskFull;
    if (diskFull !== undefined) {
      const since = new Date(diskFull.since).toISOString();
      return {
        state: 'WARN',
        message: `disk full since ${since}: ${diskFull.refusedFrames} records refused (${ErrorCodes.AUDIT_DISK_FULL}); logging resumes by itself once space is freed`,
        details: { ...details, disk_full_since: since, disk_full_refused_records: diskFull.refusedFrames },
      };
    }
    if (this.#appendError !== undefined) return { state: 'WARN', message: this.#appendError, details };
    if (this.#checkpointError !== undefined) return { state: 'WARN', message: this.#checkpointError, details };
    if (this.#anchorError !== undefined) return { state: 'WARN', message: this.#anchorError, details };
    if (this.#recovery?.tornTail !== undefined) {
      return { state: 'WARN', message: `a torn tail of ${this.#recovery.tornTail.bytesRemoved} bytes was removed at byte ${this.#recovery.tornTail.offset} on start`, details };
    }
    if ((stats?.waiting ?? 0) > 0) return { state: 'WARN', message: 'writers are blocked on the disk budget', details };
    return { state: 'OK', details };
  }

  /**
   * First step of a rotation: refuse appends from now on (ERR_AUDIT_LOG_CLOSED: nothing of
   * theirs was written, so the caller may send them to the next epoch), then make a checkpoint
   * of every leaf and wait until all of it is written. Resolves with that final checkpoint,
   * which covers the whole tree. `thaw` undoes it; `seal` closes the log for good.
   */
  async freeze(): Promise<SignedCheckpointV1> {
    if (this.#state !== 'open' || this.#writer === undefined) throw new PavilionError(ErrorCodes.AUDIT_LOG_CLOSED, 'the audit log is not open');
    this.#state = 'sealing';
    // Appends that passed their reservation before the freeze are in the tree already: covered.
    let final = this.latestCheckpoint;
    while (final === undefined || final.tree_size < this.#tree.size) final = await this.checkpoint();
    await this.#writer.drain();
    if (final.tree_size !== this.#tree.size) {
      throw new PavilionError(ErrorCodes.AUDIT_DISK_FULL, `the final checkpoint at tree size ${final.tree_size} no longer covers the log's ${this.#tree.size} leaves (a full volume refused some)`, { details: { treeSize: final.tree_size } });
    }
    return final;
  }

  /** Undo `freeze` (the rotation was called off): appends are taken again. */
  thaw(): void {
    if (this.#state === 'sealing') this.#state = 'open';
  }

  /**
   * Last step of the log's life after `freeze`: close the file, fsync it (whatever the fsync
   * policy: a sealed epoch is archived complete) and unlock. An anchor still on its way for
   * the final checkpoint is not waited for: its record would land after the seal (a missing
   * anchor record is allowed; the outside system still holds the anchor).
   */
  async seal(): Promise<void> {
    if (this.#state !== 'sealing') throw new PavilionError(ErrorCodes.AUDIT_LOG_CLOSED, 'only a frozen audit log is sealed');
    if (this.#checkpointTimer !== undefined) clearInterval(this.#checkpointTimer);
    this.#state = 'stopped';
    try {
      await this.#writer?.close();
      await syncPath(this.path);
    } finally {
      await this.#closeLockHandle(); // a seal that fails keeps the lock, not its descriptor
    }
    await this.#unlock();
  }

  /** Final checkpoint (if leaves came after the last one), drain, close, unlock. */
  async stop(deadlineMs: number): Promise<boolean> {
    if (this.#state !== 'open' && this.#state !== 'sealing') return true;
    if (this.#checkpointTimer !== undefined) clearInterval(this.#checkpointTimer);
    const writer = this.#writer;
    const work = (async () => {
      if (this.#tree.size > (this.latestCheckpoint?.tree_size ?? 0) && writer?.failure === undefined) {
        await this.checkpoint().catch((error: unknown) => {
          this.#checkpointError = `final checkpoint failed: ${describeThrown(error)}`;
        });
      }
      // Let the anchor publish the final checkpoint (bounded by the deadline).
      while (this.#anchoring !== undefined) await this.#anchoring;
      this.#state = 'stopped';
      await writer?.close();
    })();
    const finished = await withDeadline(work, deadlineMs);
    this.#state = 'stopped';
    if (finished) await this.#unlock();
    return finished;
  }
}

/** Sizes for a consistency proof: integers, 1 <= oldSize <= newSize <= the log's size. */
function checkRange(oldSize: number, newSize: number, treeSize: number): void {
  const invalid = (message: string): PavilionError => new PavilionError(ErrorCodes.AUDIT_RANGE_INVALID, message, { details: { from: oldSize, to: newSize, treeSize } });
  for (const [name, value] of [['from', oldSize], ['to', newSize]] as const) {
    if (!Number.isSafeInteger(value) || value < 1) throw invalid(`${name} must be a tree size, an integer >= 1 (got ${String(value)})`);
  }
  if (oldSize > newSize) throw invalid(`from (${oldSize}) is larger than to (${newSize})`);
  if (newSize > treeSize) throw invalid(`the log has ${treeSize} leaves, fewer than ${newSize}`);
}

/** A growable list of byte offsets (8 bytes per leaf). */
class OffsetIndex {
  #values = new Float64Array(1024);
  #count = 0;

  push(offset: number): void {
    this.prepare();
    this.#values[this.#count++] = offset;
  }

  /** Room for one more offset, so that the push after it does not allocate. */
  prepare(): void {
    this.#values = withRoom(this.#values, this.#count + 1, this.#count, (length) => new Float64Array(length));
  }

  truncate(count: number): void {
    this.#count = Math.min(this.#count, count);
  }

  at(index: number): number {
    if (index < 0 || index >= this.#count) throw new PavilionError(ErrorCodes.AUDIT_MERKLE_RANGE, `no leaf ${index}`, { details: { leafIndex: index } });
    return this.#values[index]!;
  }
}
