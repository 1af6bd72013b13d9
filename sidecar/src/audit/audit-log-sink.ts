/**
 * The verifiable decision sink: routes each decision event to its tenant's AuditLog
 * (`<directory>/tenants/<tenant>/audit.wal`; events without a tenant go to `_unrouted`), and
 * publishes the checkpoint signer's public key to `<directory>/keys/` (old keys stay there,
 * so checkpoints from before a rotation keep verifying, and operators can hand the directory
 * to auditors - who should still compare it with keys obtained out of band).
 *
 * `write` (the DecisionSink contract) resolves once the event is durable and rejects with the
 * log's typed error (ERR_AUDIT_LOG_FULL, ...) when it is refused; the rejection is also
 * counted in `status()`, so a caller that does not await it does not lose it silently.
 * `append` returns the decision's receipt. `proveInclusion` / `proveConsistency` are the
 * programmatic API for an HTTP proof endpoint.
 *
 * Rotation. When a tenant's live log reaches `rotateAtBytes` (or `rotateAfterMs`, or 15/16 of
 * the leaves one log takes), it is sealed into an epoch and a new epoch starts
 * (docs/audit-log.md, "Epochs"), so the disk budget and the memory of the tree count only the
 * live epoch. The steps, each durable before the next, with what a crash after
 * it leaves (start-up, #finishRotation, finishes what was begun):
 *   frozen    appends held (they wait for the next epoch); a final checkpoint of every leaf is
 *             written and, when streaming, JetStream acknowledged every leaf and the
 *             forwarder's cursor file says so; after a crash: the epoch is still live;
 *   closed    the log closed, fsync'ed and unlocked; after a crash: the epoch is still live;
 *   marked    `SEALED` (the epoch's seal) written in its directory; after a crash: finished;
 *   archived  the directory renamed to `archive/<tenant>/<epoch>/`; after a crash: finished;
 *   staged    the next epoch's directory made aside (`tenants/.<tenant>.next/EPOCH`, its link);
 *   installed that directory renamed to `tenants/<tenant>/`; after a crash: finished;
 * and the new epoch's log opened, its first leaf the link to the sealed one, checkpointed.
 * A rename is atomic, so an epoch directory is either live or archived whole, never half moved.
 *
 * Between `archived` and `installed` the tenant has no live directory, so the live log's own
 * lock (inside that directory) cannot keep out a second process: each tenant also has a lock
 * that stays where it is, `tenants/.<tenant>.lock`, taken before anything of the tenant is
 * touched (finishing a rotation, opening its log, retention) and held until the sink stops.
 */
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { sameCanonicalJson } from '../lib/canonical-json.ts';
import { pathExists as exists, syncPath, writeFileDurably } from '../lib/durable-file.ts';
import { ErrorCodes, PavilionError, describeThrown, isPavilionError } from '../lib/errors.ts';
import { withDeadline, type ComponentState, type ComponentStatus } from '../lib/lifecycle.ts';
import { lockHeld, lockIsOurs, unlock } from '../lib/lock-file.ts';
import { TENANT_ID_PATTERN } from '../lib/tenant-id.ts';
import type { DecisionEventV1, DecisionSink } from './decision-event.ts';
import {
  AuditLog,
  Keyring,
  LOCK_FILE,
  publicKeyPem,
  type Anchor,
  type AuditLogOptions,
  type CheckpointSigner,
  type ConsistencyProofV1,
  type DecisionProofV1,
  type DecisionReceiptV1,
  type EpochLinkV1,
  type EpochSealV1,
  type PrunedEpochV1,
  type SignedCheckpointV1,
  PRUNED_FILE,
  WAL_FILE,
  epochLinkEvent,
  epochOrigin,
  epochSeal,
  listArchivedEpochs,
  proveFromLogFileOnThread,
  prunedEpochRecordOnThread,
  takeAuditLock,
} from './log/index.ts';

export const UNROUTED_TENANT = '_unrouted';
/**
 * The `_unrouted` log's own disk budget (or `maxDiskBytes`, if smaller): it holds checks no
 * tenant could be resolved for, which any caller can send, so it must not claim a tenant's
 * budget of the volume (sized as tenants x maxDiskBytes + headroom; the headroom holds it).
 */
export const UNROUTED_MAX_DISK_BYTES = 64 * 1024 * 1024;
/**
 * Archived epochs the `_unrouted` log keeps whole, at most (fewer if keepArchivedEpochs says
 * so): with rotation on, any caller could otherwise fill the volume every tenant logs to with
 * its sealed epochs, which no budget counts. Older ones are pruned to their seal and record.
 */
export const UNROUTED_KEEP_ARCHIVED_EPOCHS = 2;

export type AuditLogSettings = Omit<AuditLogOptions, 'directory' | 'origin' | 'signer' | 'keyring' | 'onCheckpoint' | 'anchor' | 'epoch'> & {
  /**
   * Seal a tenant's live log into an epoch and start the next once it holds this many bytes;
   * 0 or absent never rotates (see #rotateAt for the value to choose).
   */
  readonly rotateAtBytes?: number;
  /** Archived epochs kept whole per tenant; older ones are pruned (#prune). 0 or absent: all kept. */
  readonly keepArchivedEpochs?: number;
  /**
   * Seal a tenant's live epoch once its oldest decision is this old (#dueByAge), whatever its
   * size. 0 or absent: never by age.
   */
  readonly rotateAfterMs?: number;
  /**
   * Prune an archived epoch once its newest decision is this many days old (its final
   * checkpoint's time, #prune); with keepArchivedEpochs, whichever prunes first. 0 or absent:
   * never by age.
   */
  readonly keepArchivedDays?: number;
};

/**
 * How often a sink with rotateAfterMs or keepArchivedDays looks at ages without an event to
 * prompt it (enforceRetention): a quiet tenant's decisions age out too.
 */
export const RETENTION_CHECK_INTERVAL_MS = 60_000;
const DAY_MS = 86_400_000;

/** Where sealed epochs go: `<directory>/archive/<tenant>/<epoch>/`. */
export const ARCHIVE_DIRECTORY = 'archive';
/** In a sealed epoch's directory: its seal (SealedFileV1), written before it is archived. */
const SEALED_FILE = 'SEALED';
/** In the live directory of epoch N > 0: its link to epoch N-1 (EpochLinkV1), its first leaf to be. */
const EPOCH_FILE = 'EPOCH';
/** How long a rotation waits for JetStream to acknowledge an epoch's last leaves (the forwarder's ack timeout). */
const ROTATION_STREAM_WAIT_MS = 10_000;
/** A rotation starts only when the forwarder is at most this many leaves behind (well under a second of its work). */
const ROTATION_STREAM_LAG_LEAVES = 1024;
const ROTATION_STREAM_POLL_MS = 20;
/** Proofs of archived decisions one tenant may have waiting for their turn at once; more are ERR_AUDIT_PROOF_BUSY. */
export const MAX_ARCHIVED_PROOFS_WAITING = 4;
/** A read of one archived epoch for a proof that has not answered by then is ended (a file that does not answer). */
const ARCHIVED_PROOF_TIMEOUT_MS = 120_000;
/**
 * How long retention's verification of one archived epoch may take on its thread before the
 * thread is ended and the epoch kept (the next pass tries again): a file system that does not
 * answer, not a slow machine (a 64 MiB epoch takes about a second).
 */
const RETENTION_EPOCH_TIMEOUT_MS = 600_000;
/** After a rotation was called off (JetStream too slow, a checkpoint failed), the next try waits this long. */
const ROTATION_RETRY_MS = 5_000;

/** The steps of a rotation, in order (see the header). */
export type RotationStep = 'frozen' | 'closed' | 'marked' | 'archived' | 'staged' | 'installed';

/** `SEALED`: what sealed the epoch, and whether JetStream acknowledged every leaf of it. */
interface SealedFileV1 {
  readonly version: 1;
  readonly seal: EpochSealV1;
  readonly streamed: boolean;
  /**
   * The final checkpoint's time (retention by age counts from it). Absent in seals written
   * before retention by age existed: such an epoch is pruned by count only.
   */
  readonly sealed_at?: string;
}

/** How far JetStream has taken a tenant's log: the decision forwarder (read-only). */
/** How far JetStream has taken a tenant's log (DecisionForwarder.streamPosition). */
export interface StreamPosition {
  readonly acknowledged: number;
  readonly saved: number;
  readonly forwarding: boolean;
}

export interface StreamProgress {
  /** Undefined when the forwarder does not read `log`; `saved`: acknowledged leaves its cursor file holds. */
  streamPosition(tenant: string, log: AuditLog): StreamPosition | undefined;
}

interface TenantEpochs {
  readonly epoch: number;
  readonly archived: ReadonlyArray<{ readonly epoch: number; readonly bytes: number }>;
}

function corrupt(message: string, details: Record<string, unknown>): PavilionError {
  return new PavilionError(ErrorCodes.AUDIT_LOG_CORRUPT, message, { details });
}

/** A JSON file the rotation wrote, or undefined when there is none. */
async function readJsonFile<T>(file: string): Promise<T | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new PavilionError(ErrorCodes.AUDIT_LOG_IO, `cannot read ${file}: ${describeThrown(error)}`, { cause: error });
  }
  try {
    return JSON.parse(text) as T;
  } catch (error) {
    throw corrupt(`${file} is not JSON: ${describeThrown(error)}`, { file });
  }
}

/** Two PRUNED records of the same log: the same final checkpoint and link (not the same time or sizes). */
function sameRecord(a: PrunedEpochV1, b: PrunedEpochV1): boolean {
  return a.epoch === b.epoch && a.first_leaf === b.first_leaf && sameCanonicalJson(a.final_checkpoint, b.final_checkpoint)
    && sameCanonicalJson(a.first_leaf_inclusion_path, b.first_leaf_inclusion_path);
}

/** Bytes of the files in a directory (an archived epoch; one being pruned loses files meanwhile, which count 0). */
async function directoryBytes(directory: string): Promise<number> {
  let bytes = 0;
  for (const entry of await readdir(directory, { withFileTypes: true })) {
    if (!entry.isFile()) continue;
    bytes += await stat(join(directory, entry.name)).then((s) => s.size, (error: unknown) => {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 0;
      throw error;
    });
  }
  return bytes;
}

/** One tenant's audit log as the metrics export it (AuditLogSink.figures). */
export interface AuditLogFigures {
  readonly state: ComponentState;
  /** The rest only while the tenant's log is open. Bytes of its live epoch's log on disk, and its budget. */
  readonly bytes?: number;
  readonly maxBytes?: number;
  /** Leaves of the live epoch, those under its latest signed checkpoint, and under its latest anchor. */
  readonly leaves?: number;
  readonly checkpointedLeaves?: number;
  readonly anchoredLeaves?: number;
  readonly epoch?: number;
  /** Bytes of its archived epochs (pruned ones count what is left of them). */
  readonly archivedBytes?: number;
  /** Appends waiting for disk budget (onFull 'block'). */
  readonly blockedWriters?: number;
  /** The latest signed checkpoint's time (its signed timestamp), ms since the epoch. */
  readonly checkpointTimestampMs?: number;
}

export interface AuditLogSinkOptions {
  readonly directory: string;
  /** Prefix of every log's origin: `<originPrefix>/<tenant>` (the sidecar's `labels.id`). */
  readonly originPrefix: string;
  readonly settings: AuditLogSettings;
  /** Called once at start; the sink closes the signer at stop. */
  readonly createSigner: () => Promise<CheckpointSigner>;
  readonly onCheckpoint?: (tenant: string, checkpoint: SignedCheckpointV1) => void;
  /** Publishes each tenant's checkpoints outside (e.g. an EVM contract); none by default. */
  readonly anchor?: Anchor;
  /** Makes the anchor at start (reads its key); wins over `anchor`. The sink closes it at stop. */
  readonly createAnchor?: () => Promise<Anchor | undefined>;
  /** For tests: awaited after each step of a rotation; a promise that never settles stops it there, as a crash would. */
  readonly onRotationStep?: (step: RotationStep, tenant: string) => Promise<void> | void;
  /** Called for every decision event refused (append or write rejected), with its tenant and code: the refusal counter. */
  readonly onRefused?: (tenant: string, code: string) => void;
  /** For tests: awaited once a retention pass has recorded and marked `epoch` pruned, before its files go. */
  readonly onPruneMarked?: (tenant: string, epoch: number) => Promise<void> | void;
}

const RANK: Record<ComponentState, number> = { OK: 0, NOT_READY: 1, WARN: 2, ERROR: 3 };

/** A tenant whose log could not be opened (#refuseOpen): what its requests get, and when it is tried again. */
interface Refusal {
  readonly error: PavilionError;
  /** performance.now() from which the next event tries again (Infinity: damage, until a restart). */
  readonly retryAtMs: number;
  readonly waitMs: number;
  /** Being tried again now: requests still get the refusal until it succeeds. */
  readonly retrying?: boolean;
}
/** The first wait before a log that failed to open for a passing fault is tried again, and the longest. */
const REFUSAL_RETRY_MIN_MS = 1_000;
const REFUSAL_RETRY_MAX_MS = 60_000;

export class AuditLogSink implements DecisionSink {
  readonly name = 'decision_log';
  readonly durable = true;
  readonly #options: AuditLogSinkOptions;
  readonly #logs = new Map<string, Promise<AuditLog>>();
  readonly #opened = new Map<string, AuditLog>();
  /**
   * Tenants whose log could not be opened (at start, or again at a retry), the refusal their
   * requests get, when it is tried again and whether a try is under way (#refuseOpen).
   */
  readonly #refusedOpen = new Map<string, Refusal>();
  #signer: CheckpointSigner | undefined;
  #anchor: Anchor | undefined;
  #earlierKeys: Keyring | undefined;
  #refused = 0;
  #lastRefusal: string | undefined;
  #startError: string | undefined;
  #stopped = false;
  readonly #epochs = new Map<string, TenantEpochs>();
  /** Tenants whose log is being rotated now. */
  readonly #rotating = new Set<string>();
  /** No rotation of the tenant before then (Date.now()): the last one was called off. */
  readonly #rotationRetryAtMs = new Map<string, number>();
  /** Per tenant, why its last rotation was called off or failed, until one of its rotations succeeds. */
  readonly #rotationErrors = new Map<string, string>();
  #streamProgress: StreamProgress | undefined;
  /** Reads of archived epochs for proofs, one at a time (each is a pass over an epoch's file). */
  #archiveReads: Promise<unknown> = Promise.resolve();
  /** Aborted by stop(): ends the threads reading archived epochs for proofs. */
  readonly #stopping = new AbortController();
  /** Tenants whose lock (#lockTenant) this sink holds. */
  readonly #tenantLocks = new Set<string>();
  /** Per tenant, the pid whose stale tenant lock (a crash) was taken over (-1: unreadable); shown in status. */
  readonly #staleTenantLocks = new Map<string, number>();
  /** Per tenant, its proofs of archived decisions queued or reading (at most MAX_ARCHIVED_PROOFS_WAITING each). */
  readonly #archiveReadsWaiting = new Map<string, number>();
  /** Retention passes, one at a time (each verifies whole epochs before removing anything). */
  #pruning: Promise<void> = Promise.resolve();
  /**
   * Per tenant, why its last retention pass left an epoch it was due to prune (or stopped),
   * until one of its passes leaves none: another tenant's clean pass does not clear it.
   */
  readonly #retentionErrors = new Map<string, string>();
  #prunedCount = 0;
  /** Tenants with a retention pass queued and not yet begun (one is enough). */
  readonly #pruneQueued = new Set<string>();
  #retentionTimer: NodeJS.Timeout | undefined;
  /**
   * Per tenant, the archived epochs whose decisions retention removed (a PRUNED record found
   * when the archive is listed, or one a pass wrote): proofs and status ask here.
   */
  readonly #pruned = new Map<string, Set<number>>();
  /** Per tenant, the pruned epochs whose files this process saw removed: later passes skip them. */
  readonly #prunedDone = new Map<string, Set<number>>();

  constructor(options: AuditLogSinkOptions) {
    if (!/^[A-Za-z0-9._~:-]{1,100}$/.test(options.originPrefix)) {
      throw new PavilionError(ErrorCodes.CONFIG_INVALID, `labels.id ${JSON.stringify(options.originPrefix)} cannot name an audit log (letters, digits, . _ ~ : - only)`);
    }
    this.#options = options;
  }

  /** The settings' clock (tests move it), for the times logged and retention's ages. */
  #now(): number {
    return (this.#options.settings.clock ?? Date.now)();
  }

  get keysDirectory(): string {
    return join(this.#options.directory, 'keys');
  }

  /**
   * Seal an epoch only once JetStream acknowledged every leaf of it (the decision forwarder).
   * Set before start when streaming is on: otherwise archived epochs may hold decisions that
   * exist nowhere else, which is the operator's to know (SEALED's `streamed`).
   */
  useStreamProgress(progress: StreamProgress): void {
    this.#streamProgress = progress;
  }

  #liveDirectory(tenant: string): string {
    return join(this.#options.directory, 'tenants', tenant);
  }

  /** The tenant's lock (see the header): where it stays whatever its epochs do. */
  #tenantLockPath(tenant: string): string {
    return join(this.#options.directory, 'tenants', `.${tenant}.lock`);
  }

  /**
   * Take the tenant's lock, once (held until stop): ERR_AUDIT_LOG_LOCKED while another
   * process (or another sink in this one) has it.
   */
  async #lockTenant(tenant: string): Promise<void> {
    if (this.#tenantLocks.has(tenant)) return;
    const stalePid = await takeAuditLock(this.#tenantLockPath(tenant), `tenant ${tenant}'s audit log`, { tenant });
    if (stalePid !== undefined) this.#staleTenantLocks.set(tenant, stalePid);
    this.#tenantLocks.add(tenant);
  }

  /**
   * Before a rotation moves the tenant's epochs: the tenant's lock must still be this
   * process's. One removed meanwhile (by hand) is taken again; one another process holds now
   * calls the rotation off (ERR_AUDIT_LOG_LOCKED), the live epoch staying live.
   */
  async #confirmTenantLock(tenant: string): Promise<void> {
    const file = this.#tenantLockPath(tenant);
    let ours: boolean;
    try {
      ours = await lockIsOurs(file);
    } catch (error) {
      throw new PavilionError(ErrorCodes.AUDIT_LOG_IO, `cannot read tenant ${tenant}'s audit log lock (${file}): ${describeThrown(error)}`, { cause: error, details: { tenant } });
    }
    if (ours) return;
    this.#tenantLocks.delete(tenant); // not ours now: stop() must not count it as held
    await this.#lockTenant(tenant);
  }

  /** Give back the tenant locks this sink holds but those of `keep` (whose files may still be touched). */
  async #unlockTenants(keep: ReadonlySet<string> = new Set()): Promise<void> {
    const released = [...this.#tenantLocks].filter((tenant) => !keep.has(tenant));
    await Promise.allSettled(released.map((tenant) => unlock(this.#tenantLockPath(tenant))));
    for (const tenant of released) this.#tenantLocks.delete(tenant);
  }

  #archiveDirectory(tenant: string): string {
    return join(this.#options.directory, ARCHIVE_DIRECTORY, tenant);
  }

  async start(): Promise<void> {
    try {
      this.#signer = await this.#options.createSigner();
      this.#anchor = this.#options.createAnchor === undefined ? this.#options.anchor : await this.#options.createAnchor();
      await mkdir(this.keysDirectory, { recursive: true, mode: 0o700 });
      const file = join(this.keysDirectory, `${this.#signer.keyId.replace(':', '_')}.pem`);
      await writeFile(file, publicKeyPem(this.#signer.publicKeySpki), { flag: 'w', mode: 0o644 });
      this.#earlierKeys = Keyring.load(this.keysDirectory);
      const tenantsDir = join(this.#options.directory, 'tenants');
      await mkdir(tenantsDir, { recursive: true, mode: 0o700 });
      // Open (and so recover) every existing log now, so a torn tail is reported at boot; a
      // tenant found only in the archive was between two epochs when the process stopped.
      const archiveDir = join(this.#options.directory, ARCHIVE_DIRECTORY);
      const names = new Set<string>();
      for (const directory of [tenantsDir, archiveDir]) {
        const entries = await readdir(directory, { withFileTypes: true }).catch((error: unknown) => {
          if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
          throw error;
        });
        for (const entry of entries) {
          if (entry.isDirectory() && (TENANT_ID_PATTERN.test(entry.name) || entry.name === UNROUTED_TENANT)) names.add(entry.name);
        }
      }
      // A log that cannot be opened (damage that is not a torn write, a lock another process
      // holds, an unreadable file) is its tenant's alone: that tenant is refused, the others
      // are served (#refuseOpen).
      for (const name of names) {
        try {
          await this.#log(name);
        } catch (error) {
          this.#refuseOpen(name, error);
        }
      }
      for (const name of names) if (!this.#refusedOpen.has(name)) this.#pruneInBackground(name);
      const { rotateAfterMs = 0, keepArchivedDays = 0 } = this.#options.settings;
      if (rotateAfterMs > 0 || keepArchivedDays > 0) {
        this.#retentionTimer = setInterval(() => void this.enforceRetention(), RETENTION_CHECK_INTERVAL_MS);
        this.#retentionTimer.unref();
      }
    } catch (error) {
      this.#startError = describeThrown(error);
      // Release what was opened before the failure: the logs (their locks), the anchor, and the
      // signer (a PKCS#11 session and C_Initialize, which a later start in this process needs).
      const logs = await Promise.allSettled([...this.#logs.values()]);
      await Promise.allSettled(logs.map((r) => (r.status === 'fulfilled' ? r.value.stop(5000) : undefined)));
      this.#logs.clear();
      this.#opened.clear();
      await this.#unlockTenants();
      if (this.#options.createAnchor !== undefined) await Promise.resolve().then(() => this.#anchor?.close?.()).catch(() => undefined);
      await this.#signer?.close().catch(() => undefined);
      this.#anchor = undefined;
      this.#signer = undefined;
      throw error;
    }
  }

  /**
   * A tenant whose log failed to open (at start, or at a retry): its events, proofs and checkpoints are refused
   * with the failure's own code, and its archive is left alone (no retention, no rotation); the
   * log file is not cut. Damage (ERR_AUDIT_LOG_CORRUPT) does not mend itself, so that refusal
   * lasts until a restart (each try would be a pass over the whole file). Anything else (a lock
   * another process still holds while it stops, a file error, a signer that did not answer) is
   * tried again by the tenant's next event once REFUSAL_RETRY_MIN_MS has passed, the wait
   * doubling up to REFUSAL_RETRY_MAX_MS while it keeps failing.
   */
  #refuseOpen(tenant: string, error: unknown, previousWaitMs = 0): PavilionError {
    const cause = isPavilionError(error) ? error : new PavilionError(ErrorCodes.AUDIT_LOG_IO, describeThrown(error), { cause: error });
    const permanent = cause.code === ErrorCodes.AUDIT_LOG_CORRUPT;
    const waitMs = permanent ? Infinity : Math.min(REFUSAL_RETRY_MAX_MS, Math.max(REFUSAL_RETRY_MIN_MS, previousWaitMs * 2));
    const refusal = new PavilionError(
      cause.code,
      permanent
        ? `the audit log of tenant ${tenant} was refused at start, so its decisions are refused until it is repaired and the sidecar restarted: ${cause.message}`
        : `the audit log of tenant ${tenant} could not be opened, so its decisions are refused; it is tried again by its next decision after ${waitMs} ms: ${cause.message}`,
      { details: { ...cause.details, tenant }, cause },
    );
    this.#refusedOpen.set(tenant, { error: refusal, retryAtMs: performance.now() + waitMs, waitMs });
    return refusal;
  }

  /**
   * Open a refused tenant's log again. A tenant lock another process holds refuses it in
   * #open before anything is touched; a live log's lock held by a process of an earlier
   * version (which takes only that one) is looked at here first, since #open would finish an
   * interrupted rotation under that process's feet: the same refusal again.
   */
  async #reopen(tenant: string, refusal: PavilionError): Promise<AuditLog> {
    if (refusal.code === ErrorCodes.AUDIT_LOG_LOCKED && (await lockHeld(join(this.#liveDirectory(tenant), LOCK_FILE)))) throw refusal.cause ?? refusal;
    return this.#open(tenant);
  }

  /** Tenants whose log could not be opened (at start, or again at a retry), with why (see #refuseOpen). */
  refusedTenants(): ReadonlyMap<string, PavilionError> {
    return new Map([...this.#refusedOpen].map(([tenant, { error }]) => [tenant, error]));
  }

  /** The tenant's live log: open, being opened, or (while it rotates) the next epoch's to be. */
  #log(tenant: string): Promise<AuditLog> {
    const refused = this.#refusedOpen.get(tenant);
    if (refused !== undefined) {
      const trying = this.#logs.get(tenant);
      if (refused.retrying === true && trying !== undefined) return trying;
      if (performance.now() < refused.retryAtMs || this.#signer === undefined || this.#stopped) return Promise.reject(refused.error);
      // a passing fault's refusal, due for another try: this event waits for it, as do those
      // meanwhile; proofs, checkpoints and status keep the refusal until it has succeeded
      this.#refusedOpen.set(tenant, { ...refused, retrying: true });
      return this.#track(tenant, this.#reopen(tenant, refused.error).then((log) => {
        this.#refusedOpen.delete(tenant);
        this.#pruneInBackground(tenant); // as a start does
        return log;
      }, (error: unknown) => {
        throw this.#refuseOpen(tenant, error, refused.waitMs);
      }));
    }
    const existing = this.#logs.get(tenant);
    if (existing !== undefined) return existing;
    if (this.#signer === undefined || this.#stopped) return Promise.reject(new PavilionError(ErrorCodes.AUDIT_LOG_CLOSED, 'the audit log sink is not running'));
    return this.#track(tenant, this.#open(tenant));
  }

  /** Make `opening` the tenant's live log to be; one that fails is forgotten, so the next event tries again. */
  #track(tenant: string, opening: Promise<AuditLog>): Promise<AuditLog> {
    this.#logs.set(tenant, opening);
    opening.catch(() => {
      if (this.#logs.get(tenant) === opening) this.#logs.delete(tenant);
    });
    return opening;
  }

  #maxDiskBytes(tenant: string): number {
    const { maxDiskBytes } = this.#options.settings;
    return tenant === UNROUTED_TENANT ? Math.min(maxDiskBytes, UNROUTED_MAX_DISK_BYTES) : maxDiskBytes;
  }

  /**
   * Where the tenant's live log is rotated (0: never, the default: archived epochs are kept
   * beyond the budget, so rotation is the operator's choice with the volume sized for them).
   * Half of maxDiskBytes is the value to choose: the other half takes what arrives while an
   * epoch cannot be sealed (JetStream away or behind) before the budget's backpressure
   * applies, and the tree kept in memory is at most half a budget's worth of leaves.
   */
  #rotateAt(tenant: string): number {
    const configured = this.#options.settings.rotateAtBytes ?? 0;
    // the _unrouted log's budget is smaller than the one rotateAtBytes was set against
    return tenant === UNROUTED_TENANT ? Math.min(configured, Math.floor(this.#maxDiskBytes(tenant) / 2)) : configured;
  }

  /** Take the tenant's lock, finish a rotation that was interrupted (#finishRotation), then open the tenant's live epoch. */
  async #open(tenant: string): Promise<AuditLog> {
    const signer = this.#signer;
    if (signer === undefined) throw new PavilionError(ErrorCodes.AUDIT_LOG_CLOSED, 'the audit log sink is not running');
    // held already (a rotation opening the next epoch, a retry): confirmed before anything moves
    await (this.#tenantLocks.has(tenant) ? this.#confirmTenantLock(tenant) : this.#lockTenant(tenant));
    await this.#finishRotation(tenant);
    const directory = this.#liveDirectory(tenant);
    const link = await readJsonFile<EpochLinkV1>(join(directory, EPOCH_FILE));
    const epoch = link?.epoch ?? 0;
    const archived = await this.#archived(tenant);
    if (link === undefined && archived.length > 0) {
      throw corrupt(`${directory} has no ${EPOCH_FILE} file, but epochs of tenant ${tenant} are archived: it is not the epoch after them`, { tenant, archived: archived.map((a) => a.epoch) });
    }
    const log = new AuditLog({
      ...this.#options.settings,
      maxDiskBytes: this.#maxDiskBytes(tenant),
      directory,
      origin: epochOrigin(`${this.#options.originPrefix}/${tenant}`, epoch),
      epoch,
      signer,
      ...(this.#earlierKeys === undefined ? {} : { keyring: this.#earlierKeys }),
      onCheckpoint: (checkpoint) => this.#options.onCheckpoint?.(tenant, checkpoint),
      ...(this.#anchor === undefined ? {} : { anchor: this.#anchor }),
    });
    await log.start();
    try {
      // The link is the epoch's first leaf, written before any decision and signed at once
      // (again after a crash between the two).
      if (link !== undefined && log.latestCheckpoint === undefined) {
        if (log.size === 0) await log.append(epochLinkEvent(link, tenant, log.origin, new Date(this.#now()).toISOString()));
        await log.checkpoint();
      }
    } catch (error) {
      await log.stop(1000);
      throw error;
    }
    this.#epochs.set(tenant, { epoch, archived });
    this.#opened.set(tenant, log);
    return log;
  }

  async #archived(tenant: string): Promise<TenantEpochs['archived']> {
    const root = this.#archiveDirectory(tenant);
    const epochs = await listArchivedEpochs(root);
    return Promise.all(epochs.map(async (epoch) => {
      const directory = join(root, String(epoch));
      if (await exists(join(directory, PRUNED_FILE))) this.#markPruned(tenant, epoch);
      return { epoch, bytes: await directoryBytes(directory) };
    }));
  }

  #isPruned(tenant: string, epoch: number): boolean {
    return this.#pruned.get(tenant)?.has(epoch) === true;
  }

  /** Proofs skip `epoch` from now on. */
  #markPruned(tenant: string, epoch: number): void {
    let epochs = this.#pruned.get(tenant);
    if (epochs === undefined) this.#pruned.set(tenant, (epochs = new Set()));
    epochs.add(epoch);
  }

  /**
   * Start a retention pass over the tenant's archive after the ones running (none without
   * keepArchivedEpochs or keepArchivedDays; none if one for the tenant is still waiting).
   */
  #pruneInBackground(tenant: string): void {
    const keep = this.#keepArchivedEpochs(tenant);
    const { keepArchivedDays: days = 0 } = this.#options.settings;
    if ((keep === 0 && days === 0) || this.#pruneQueued.has(tenant)) return;
    this.#pruneQueued.add(tenant);
    this.#pruning = this.#pruning.then(() => {
      this.#pruneQueued.delete(tenant);
      return this.#prune(tenant, keep, days);
    }).catch((error: unknown) => {
      this.#retentionErrors.set(tenant, `${tenant}: archive retention stopped: ${describeThrown(error)}`);
    });
  }

  /** Archived epochs of the tenant kept whole (0: all); the `_unrouted` log keeps UNROUTED_KEEP_ARCHIVED_EPOCHS at most. */
  #keepArchivedEpochs(tenant: string): number {
    const configured = this.#options.settings.keepArchivedEpochs ?? 0;
    if (tenant !== UNROUTED_TENANT) return configured;
    return configured === 0 ? UNROUTED_KEEP_ARCHIVED_EPOCHS : Math.min(configured, UNROUTED_KEEP_ARCHIVED_EPOCHS);
  }

  /**
   * What the sink does every RETENTION_CHECK_INTERVAL_MS when rotateAfterMs or keepArchivedDays
   * is set: rotate each live epoch whose oldest decision reached rotateAfterMs (an event
   * prompts this too), and start a retention pass over each tenant's archive (epochs age out
   * of keepArchivedDays with no event at all). Resolves when the passes queued so far end.
   */
  async enforceRetention(): Promise<void> {
    if (this.#stopped) return;
    for (const [tenant, log] of this.#opened) this.#maybeRotate(tenant, log);
    for (const tenant of this.#epochs.keys()) this.#pruneInBackground(tenant);
    await this.#pruning;
  }

  /**
   * Retention: every archived epoch of the tenant but the newest `keep`, and every one sealed
   * more than `days` days ago (0: neither rule), loses its decisions - oldest first, up to the
   * first epoch neither rule reaches (seal times grow with the epoch number). Each is first
   * verified in full under its origin (a log that does not verify is evidence and stays, and
   * the pass stops there), then its PRUNED record (prunedEpochRecord: the final
   * checkpoint, the link and its inclusion path) is written durably, then every other file
   * but SEALED is removed; a crash between the two leaves the record, and the next pass (at
   * start) finishes the removal. With streaming, an epoch JetStream did not hold all of when
   * sealed (its seal's `streamed`) exists nowhere else: it is kept, and status says so.
   */
  async #prune(tenant: string, keep: number, days: number): Promise<void> {
    const root = this.#archiveDirectory(tenant);
    const epochs = await listArchivedEpochs(root);
    const sealedBefore = days === 0 ? undefined : this.#now() - days * DAY_MS;
    const done = this.#prunedDone.get(tenant) ?? new Set<number>();
    this.#prunedDone.set(tenant, done);
    let kept: string | undefined;
    for (const [i, epoch] of epochs.entries()) {
      if (this.#stopped) return;
      if (done.has(epoch)) continue;
      const dueByCount = keep > 0 && i < epochs.length - keep;
      const directory = join(root, String(epoch));
      const wal = join(directory, WAL_FILE);
      const recorded = await readJsonFile<PrunedEpochV1>(join(directory, PRUNED_FILE));
      if (recorded === undefined || (await exists(wal))) {
        const sealed = await readJsonFile<SealedFileV1>(join(directory, SEALED_FILE));
        if (sealed === undefined) throw corrupt(`archived epoch ${epoch} of tenant ${tenant} has no ${SEALED_FILE} file`, { tenant, epoch });
        // An epoch with its record is finished whatever the rules say now (a pass was cut
        // short after the record); otherwise stop at the first epoch neither rule reaches:
        // the later ones are newer still.
        if (recorded === undefined && !dueByCount && (sealedBefore === undefined || !(Date.parse(sealed.sealed_at ?? '') <= sealedBefore))) {
          if (sealedBefore !== undefined && sealed.sealed_at === undefined) {
            kept ??= `${tenant}: archived epoch ${epoch} has no seal time (sealed by an earlier version): retention by age keeps it and every later one`;
          }
          break;
        }
        if (recorded === undefined && this.#streamProgress !== undefined && !sealed.streamed) {
          kept = `${tenant}: archived epoch ${epoch} is kept whole: JetStream did not hold all of it when it was sealed`;
          continue;
        }
        const record = await this.#pruneRecord(tenant, epoch, directory, sealed);
        if (recorded === undefined) {
          if (this.#stopped) return;
          await writeFileDurably(join(directory, PRUNED_FILE), `${JSON.stringify(record)}\n`);
          await syncPath(directory);
          this.#prunedCount++;
        } else if (!sameRecord(recorded, record)) {
          // a crash left the record, or someone wrote one: the log it would replace must agree
          throw corrupt(`archived epoch ${epoch} of tenant ${tenant}: its ${PRUNED_FILE} record does not match its log, so the log is kept`, { tenant, epoch });
        }
      }
      // proofs stop looking in it before its files go
      this.#markPruned(tenant, epoch);
      await this.#options.onPruneMarked?.(tenant, epoch);
      if (this.#stopped) return; // the next start finishes the removal
      // everything but the seal and the record (again after a crash between the record and this)
      for (const name of await readdir(directory)) {
        if (name !== SEALED_FILE && name !== PRUNED_FILE) await rm(join(directory, name), { recursive: true, force: true });
      }
      await syncPath(directory);
      this.#setArchivedBytes(tenant, epoch, await directoryBytes(directory));
      done.add(epoch);
    }
    if (kept === undefined) this.#retentionErrors.delete(tenant);
    else this.#retentionErrors.set(tenant, kept);
  }

  /**
   * What PRUNED keeps of archived `epoch`: its log verified in full (prunedEpochRecord), and its
   * final checkpoint the one its seal names (a log cut back to an earlier checkpoint verifies
   * on its own, but no longer matches the seal and the next epoch's link).
   */
  async #pruneRecord(tenant: string, epoch: number, directory: string, sealed: SealedFileV1): Promise<PrunedEpochV1> {
    try {
      // a pass over the whole file, on a thread of its own (log-file-thread.ts)
      const record = await prunedEpochRecordOnThread(join(directory, WAL_FILE), epoch, this.keysDirectory, epochOrigin(`${this.#options.originPrefix}/${tenant}`, epoch), {
        prunedAt: new Date(this.#now()).toISOString(),
        removedBytes: (await directoryBytes(directory)) - (await stat(join(directory, SEALED_FILE))).size,
        streamed: sealed.streamed,
      }, { timeoutMs: RETENTION_EPOCH_TIMEOUT_MS, signal: this.#stopping.signal });
      const seal = epochSeal(epoch, record.final_checkpoint);
      const differs = (['epoch', 'origin', 'tree_size', 'root_hash', 'checkpoint_sha256'] as const).find((field) => seal[field] !== sealed.seal[field]);
      if (differs !== undefined) throw corrupt(`its final checkpoint gives ${differs} ${String(seal[differs])}, its seal ${String(sealed.seal[differs])}`, { tenant, epoch, field: differs });
      // the seal time retention by age went by is unsigned: it must be the signed one
      if (sealed.sealed_at !== undefined && sealed.sealed_at !== record.final_checkpoint.timestamp) {
        throw corrupt(`its final checkpoint's time is ${record.final_checkpoint.timestamp}, its seal's sealed_at ${sealed.sealed_at}`, { tenant, epoch, field: 'sealed_at' });
      }
      return record;
    } catch (error) {
      if (isPavilionError(error, ErrorCodes.AUDIT_LOG_CLOSED)) throw error; // stopping: the next start goes on
      const code = error instanceof PavilionError ? error.code : ErrorCodes.AUDIT_LOG_IO;
      // a file, key or thread that failed is no verdict on the log: the next pass tries again
      const verdict = code === ErrorCodes.AUDIT_LOG_IO || code === ErrorCodes.AUDIT_SIGNER_CONFIG
        ? 'could not be verified (the next pass tries again)'
        : 'does not verify';
      throw new PavilionError(code, `archived epoch ${epoch} ${verdict}, so it is kept with every epoch after it: ${describeThrown(error)}`, { cause: error, details: { tenant, epoch } });
    }
  }

  /** What status shows of an archived epoch's size once retention removed its files. */
  #setArchivedBytes(tenant: string, epoch: number, bytes: number): void {
    const current = this.#epochs.get(tenant);
    if (current === undefined) return;
    this.#epochs.set(tenant, { ...current, archived: current.archived.map((a) => (a.epoch === epoch ? { epoch, bytes } : a)) });
  }

  async #step(step: RotationStep, tenant: string): Promise<void> {
    await this.#options.onRotationStep?.(step, tenant);
  }

  /**
   * Bring a rotation that was interrupted to its end, so the tenant has exactly one live epoch:
   * a live directory with a SEALED file is archived, and a missing live directory (the epoch
   * archived, the next not installed yet) is made from the last archived epoch's seal. A
   * staging directory left behind held only the next epoch's EPOCH file: it is made again.
   */
  async #finishRotation(tenant: string): Promise<void> {
    const live = this.#liveDirectory(tenant);
    await rm(join(this.#options.directory, 'tenants', `.${tenant}.next`), { recursive: true, force: true });
    const sealed = await readJsonFile<SealedFileV1>(join(live, SEALED_FILE));
    if (sealed !== undefined) await this.#archive(tenant, sealed.seal.epoch);
    if (await exists(live)) return;
    const last = (await listArchivedEpochs(this.#archiveDirectory(tenant))).at(-1);
    if (last === undefined) return; // a tenant's first event
    const lastSealed = await readJsonFile<SealedFileV1>(join(this.#archiveDirectory(tenant), String(last), SEALED_FILE));
    if (lastSealed === undefined) throw corrupt(`archived epoch ${last} of tenant ${tenant} has no ${SEALED_FILE} file`, { tenant, epoch: last });
    await this.#install(tenant, { version: 1, epoch: last + 1, previous: lastSealed.seal });
  }

  /** Move the sealed live directory to `archive/<tenant>/<epoch>/` (one rename: all of it or none). */
  async #archive(tenant: string, epoch: number): Promise<void> {
    const root = join(this.#options.directory, ARCHIVE_DIRECTORY);
    const archive = this.#archiveDirectory(tenant);
    await mkdir(archive, { recursive: true, mode: 0o700 });
    await syncPath(this.#options.directory);
    await syncPath(root);
    const target = join(archive, String(epoch));
    if (await exists(target)) throw corrupt(`epoch ${epoch} of tenant ${tenant} is sealed in ${this.#liveDirectory(tenant)} and archived in ${target} too`, { tenant, epoch });
    await rename(this.#liveDirectory(tenant), target);
    await syncPath(archive);
    await syncPath(join(this.#options.directory, 'tenants'));
    await this.#step('archived', tenant);
  }

  /** Make the next epoch's live directory, holding its link, aside and rename it into place. */
  async #install(tenant: string, link: EpochLinkV1): Promise<void> {
    const tenants = join(this.#options.directory, 'tenants');
    const staging = join(tenants, `.${tenant}.next`);
    await mkdir(staging, { mode: 0o700 });
    await writeFileDurably(join(staging, EPOCH_FILE), `${JSON.stringify(link)}\n`);
    await syncPath(staging);
    await syncPath(tenants);
    await this.#step('staged', tenant);
    await rename(staging, this.#liveDirectory(tenant));
    await syncPath(tenants);
    await this.#step('installed', tenant);
  }

  /**
   * Start a rotation of the tenant's live log when it is due (see #rotateAt) and can be sealed
   * now: none running, none called off lately, and, when streaming, the forwarder reads this
   * log, is connected and is at most ROTATION_STREAM_LAG_LEAVES behind (while NATS is away the
   * epoch stays live and the budget's backpressure applies). Appends from now on wait for it.
   */
  #maybeRotate(tenant: string, log: AuditLog): void {
    const at = this.#rotateAt(tenant);
    if (this.#stopped || this.#rotating.has(tenant) || this.#opened.get(tenant) !== log) return;
    if (!((at > 0 && log.writtenBytes >= at) || this.#dueByAge(tenant, log) || this.#dueByLeaves(at, log))) return;
    if ((this.#rotationRetryAtMs.get(tenant) ?? 0) > Date.now()) return;
    if (this.#streamProgress !== undefined) {
      const position = this.#streamProgress.streamPosition(tenant, log);
      if (position === undefined || !position.forwarding || log.size - position.acknowledged > ROTATION_STREAM_LAG_LEAVES) return;
    }
    this.#rotating.add(tenant);
    void this.#track(tenant, this.#rotate(tenant, log).finally(() => this.#rotating.delete(tenant)));
  }

  /**
   * With rotation on (by size or age), whether the live epoch holds 15/16 of the leaves one log
   * takes (AuditLog.maxLeaves, 2^26): many small events can get there before rotateAtBytes, and
   * a log at its leaf limit refuses every decision. The last sixteenth takes what arrives while
   * the epoch cannot be sealed yet (#maybeRotate: JetStream away or behind); past it, decisions
   * are refused until it can be.
   */
  #dueByLeaves(at: number, log: AuditLog): boolean {
    if (at === 0 && (this.#options.settings.rotateAfterMs ?? 0) === 0) return false;
    // at least 2 (maxLeaves is): an epoch holding nothing but its link is never due
    return log.size >= log.maxLeaves - Math.floor(log.maxLeaves / 16);
  }

  /**
   * Whether the live epoch's oldest decision reached rotateAfterMs: its age is taken from the
   * first checkpoint that covers it (a little after the decision itself). An epoch holding
   * nothing but its link to the one before is never due: sealing it would archive no decision.
   */
  #dueByAge(tenant: string, log: AuditLog): boolean {
    const after = this.#options.settings.rotateAfterMs ?? 0;
    if (after === 0) return false;
    const links = (this.#epochs.get(tenant)?.epoch ?? 0) === 0 ? 0 : 1;
    const first = log.checkpoints.find((c) => c.tree_size > links);
    return first !== undefined && this.#now() - Date.parse(first.timestamp) >= after;
  }

  /** Seal `log` (the steps in the header) and open the next epoch; resolves with the live log after it. */
  async #rotate(tenant: string, log: AuditLog): Promise<AuditLog> {
    const epoch = this.#epochs.get(tenant)?.epoch ?? 0;
    let final: SignedCheckpointV1;
    try {
      await this.#confirmTenantLock(tenant);
      final = await log.freeze();
      if (!(await this.#streamed(tenant, log, final.tree_size))) {
        throw new PavilionError(ErrorCodes.AUDIT_STREAM_UNAVAILABLE, `JetStream did not acknowledge all ${final.tree_size} leaves of epoch ${epoch} within ${ROTATION_STREAM_WAIT_MS} ms`, { details: { tenant, epoch } });
      }
      await this.#step('frozen', tenant);
    } catch (error) {
      // Called off: the epoch stays live (its final checkpoint is one more checkpoint).
      log.thaw();
      this.#rotationRetryAtMs.set(tenant, Date.now() + ROTATION_RETRY_MS);
      this.#rotationErrors.set(tenant, `${tenant}: rotation of epoch ${epoch} called off: ${describeThrown(error)}`);
      return log;
    }
    try {
      await log.seal();
      await this.#step('closed', tenant);
      const sealed: SealedFileV1 = { version: 1, seal: epochSeal(epoch, final), streamed: this.#streamProgress !== undefined, sealed_at: final.timestamp };
      await writeFileDurably(join(log.directory, SEALED_FILE), `${JSON.stringify(sealed)}\n`);
      await syncPath(log.directory);
      await this.#step('marked', tenant);
      const next = await this.#open(tenant);
      this.#rotationErrors.delete(tenant);
      this.#pruneInBackground(tenant);
      return next;
    } catch (error) {
      // The tenant's next event opens its log again, finishing the rotation where it stopped;
      // meanwhile no one is handed the sealed log (proofs, status, the forwarder).
      if (this.#opened.get(tenant) === log) this.#opened.delete(tenant);
      this.#rotationErrors.set(tenant, `${tenant}: rotation of epoch ${epoch} failed: ${describeThrown(error)}`);
      throw error;
    }
  }

  /** True once the forwarder's cursor file holds all `size` leaves of `log` as acknowledged (at once without streaming). */
  async #streamed(tenant: string, log: AuditLog, size: number): Promise<boolean> {
    const progress = this.#streamProgress;
    if (progress === undefined) return true;
    const deadline = Date.now() + ROTATION_STREAM_WAIT_MS;
    for (;;) {
      if ((progress.streamPosition(tenant, log)?.saved ?? -1) >= size) return true;
      if (Date.now() >= deadline || this.#stopped) return false;
      await sleep(ROTATION_STREAM_POLL_MS);
    }
  }

  static tenantOf(event: DecisionEventV1): string {
    return TENANT_ID_PATTERN.test(event.tenant) ? event.tenant : UNROUTED_TENANT;
  }

  /**
   * Log one event; resolves with its receipt once durable. An event refused by an epoch being
   * sealed (ERR_AUDIT_LOG_CLOSED before anything of it was written: frozen, or waiting for disk
   * budget when it closed) goes to the next epoch. It waits for that epoch (#log answers the
   * rotation while one runs), so it is tried again only once per rotation it meets.
   */
  async append(event: DecisionEventV1): Promise<DecisionReceiptV1> {
    const tenant = AuditLogSink.tenantOf(event);
    try {
      for (;;) {
        const log = await this.#log(tenant);
        try {
          return await log.append(event);
        } catch (error) {
          const sealed = isPavilionError(error, ErrorCodes.AUDIT_LOG_CLOSED) && !this.#stopped && (this.#rotating.has(tenant) || this.#opened.get(tenant) !== log);
          if (!sealed) throw error;
        } finally {
          // also after a refusal: a full epoch is rotated once it can be sealed
          this.#maybeRotate(tenant, log);
        }
      }
    } catch (error) {
      this.#refused++;
      this.#lastRefusal = describeThrown(error);
      this.#options.onRefused?.(tenant, isPavilionError(error) ? error.code : ErrorCodes.AUDIT_LOG_IO);
      throw error;
    }
  }

  /**
   * Per tenant, what the metrics export (pavilion_audit_log_*): the state of its log (as in
   * status) and, for a log that is open, its sizes and its latest checkpoint's time. A tenant
   * refused at start has its state only.
   */
  figures(): Map<string, AuditLogFigures> {
    const figures = new Map<string, AuditLogFigures>();
    // each tenant's entry of status(), without the sink's own (anchor, errors) around them
    for (const [tenant, log] of this.#opened) {
      const { state, details } = this.#withEpochs(tenant, log.status());
      const d = (details ?? {}) as Record<string, unknown>;
      const n = (key: string): number => (typeof d[key] === 'number' ? d[key] : 0);
      const checkpointAt = log.latestCheckpoint === undefined ? Number.NaN : Date.parse(log.latestCheckpoint.timestamp);
      figures.set(tenant, {
        state,
        bytes: n('bytes_on_disk'),
        maxBytes: n('max_disk_bytes'),
        leaves: n('leaves'),
        checkpointedLeaves: n('checkpoint_size'),
        anchoredLeaves: n('anchored_size'),
        epoch: n('epoch'),
        archivedBytes: n('archived_bytes'),
        blockedWriters: n('blocked_writers'),
        ...(Number.isNaN(checkpointAt) ? {} : { checkpointTimestampMs: checkpointAt }),
      });
    }
    // as in status(): a refused tenant is ERROR, with nothing else to show
    for (const tenant of this.#refusedOpen.keys()) figures.set(tenant, { state: 'ERROR' });
    return figures;
  }

  write(event: DecisionEventV1): Promise<DecisionReceiptV1> {
    const durable = this.append(event);
    // Counted in status() by append; marking it handled keeps a caller that does not await
    // it from turning a refusal into an unhandled rejection. Callers that await still see it.
    durable.catch(() => undefined);
    return durable;
  }

  /**
   * See AuditLog.proveInclusion; only ever looks in `tenant`'s own log: its live epoch, then
   * its archived epochs, newest first, read from their files (against their final checkpoints'
   * origins: `<labels.id>/<tenant>/e<N>`). A decision in no epoch is ERR_AUDIT_DECISION_UNKNOWN.
   */
  async proveInclusion(tenant: string, decisionId: string, options: { readonly signNow?: boolean } = {}): Promise<DecisionProofV1> {
    const log = this.#openedOrRefused(tenant);
    if (log === undefined) throw new PavilionError(ErrorCodes.AUDIT_DECISION_UNKNOWN, `no audit log for tenant ${JSON.stringify(tenant)}`, { details: { tenant, decisionId } });
    try {
      return await log.proveInclusion(decisionId, options);
    } catch (error) {
      const archived = this.#epochs.get(tenant)?.archived ?? [];
      if (!isPavilionError(error, ErrorCodes.AUDIT_DECISION_UNKNOWN) || archived.length === 0) throw error;
      const pruned = archived.filter((a) => this.#isPruned(tenant, a.epoch)).map((a) => a.epoch);
      const unknown = pruned.length === 0 ? error : new PavilionError(ErrorCodes.AUDIT_DECISION_UNKNOWN, `${error.message}; epochs ${pruned.join(', ')} of tenant ${tenant} were pruned by retention and prove none of their decisions`, {
        details: { tenant, decisionId, prunedEpochs: pruned },
      });
      return this.#proveArchived(tenant, decisionId, archived.map((a) => a.epoch).reverse(), unknown);
    }
  }

  /** One archive read at a time: each is a pass over an epoch's file, which a caller must not multiply. */
  #proveArchived(tenant: string, decisionId: string, epochs: readonly number[], unknown: PavilionError): Promise<DecisionProofV1> {
    // each is a pass over whole epoch files (on a thread of its own): a caller asking for ids
    // that are nowhere must not queue up more of them than a few, and one tenant's few take
    // no other tenant's room (they wait behind them, each behind at most this many per tenant)
    const waiting = this.#archiveReadsWaiting.get(tenant) ?? 0;
    if (waiting >= MAX_ARCHIVED_PROOFS_WAITING) {
      return Promise.reject(new PavilionError(ErrorCodes.AUDIT_PROOF_BUSY, `${MAX_ARCHIVED_PROOFS_WAITING} proofs of archived decisions of tenant ${tenant} are waiting already; try again later`, { details: { tenant, decisionId } }));
    }
    this.#archiveReadsWaiting.set(tenant, waiting + 1);
    const read = this.#archiveReads.then(async () => {
      // pruned ones asked when each epoch's turn comes: a pass may prune one meanwhile
      let damaged: PavilionError | undefined;
      for (const epoch of epochs) {
        if (this.#isPruned(tenant, epoch)) continue;
        try {
          return await proveFromLogFileOnThread(join(this.#archiveDirectory(tenant), String(epoch), WAL_FILE), decisionId, {
            sealed: true,
            timeoutMs: ARCHIVED_PROOF_TIMEOUT_MS,
            signal: this.#stopping.signal,
          });
        } catch (error) {
          if (this.#isPruned(tenant, epoch) || isPavilionError(error, ErrorCodes.AUDIT_DECISION_UNKNOWN)) continue;
          // a damaged epoch may hold it, past the damage; the others are still searched
          if (isPavilionError(error, ErrorCodes.AUDIT_RECORD_CORRUPT)) {
            damaged ??= new PavilionError(ErrorCodes.AUDIT_RECORD_CORRUPT, `decision ${JSON.stringify(decisionId)} is in no readable archived epoch of tenant ${tenant}; archived epoch ${epoch} is damaged and may hold it: ${error.message}`, {
              details: { tenant, decisionId, epoch },
            });
            continue;
          }
          throw error;
        }
      }
      throw damaged ?? unknown;
    });
    this.#archiveReads = read.catch(() => undefined);
    return read.finally(() => {
      const left = (this.#archiveReadsWaiting.get(tenant) ?? 1) - 1;
      if (left > 0) this.#archiveReadsWaiting.set(tenant, left);
      else this.#archiveReadsWaiting.delete(tenant);
    });
  }

  proveConsistency(tenant: string, oldSize: number, newSize: number): string[] {
    const log = this.#openedOrRefused(tenant);
    if (log === undefined) throw new PavilionError(ErrorCodes.AUDIT_MERKLE_RANGE, `no audit log for tenant ${JSON.stringify(tenant)}`, { details: { tenant } });
    return log.proveConsistency(oldSize, newSize);
  }

  /** Proof that the tenant's log only grew since `old`, up to its latest checkpoint. */
  consistencyProofFrom(tenant: string, old: SignedCheckpointV1): ConsistencyProofV1 {
    const log = this.#openedOrRefused(tenant);
    if (log === undefined) throw new PavilionError(ErrorCodes.AUDIT_DECISION_UNKNOWN, `no audit log for tenant ${JSON.stringify(tenant)}`, { details: { tenant } });
    return log.consistencyProofFrom(old);
  }

  /**
   * See AuditLog.consistencyProofBetween; only ever looks in `tenant`'s own log. A tenant
   * whose log is not open has no checkpoint: ERR_AUDIT_NOT_CHECKPOINTED.
   */
  consistencyProofBetween(tenant: string, oldSize: number, newSize?: number): ConsistencyProofV1 {
    const log = this.#openedOrRefused(tenant);
    if (log === undefined) {
      throw new PavilionError(ErrorCodes.AUDIT_NOT_CHECKPOINTED, `the audit log of tenant ${tenant} has no signed checkpoint yet`, { details: { tenant } });
    }
    return log.consistencyProofBetween(oldSize, newSize);
  }

  /** The tenant logs open now (a tenant's log opens at start or with its first event). */
  openLogs(): ReadonlyMap<string, AuditLog> {
    return this.#opened;
  }

  /** The tenant's latest signed checkpoint; a tenant refused at start gets its refusal. */
  latestCheckpoint(tenant: string): SignedCheckpointV1 | undefined {
    return this.#openedOrRefused(tenant)?.latestCheckpoint;
  }

  /** The tenant's open log, if any; throws the refusal of a tenant whose log could not be opened (#refuseOpen). */
  #openedOrRefused(tenant: string): AuditLog | undefined {
    const refused = this.#refusedOpen.get(tenant);
    if (refused !== undefined) throw refused.error;
    return this.#opened.get(tenant);
  }

  status(): ComponentStatus {
    if (this.#startError !== undefined) return { state: 'ERROR', message: `audit log failed to start: ${this.#startError}` };
    if (this.#signer === undefined) return { state: 'NOT_READY', message: 'audit log not started' };
    const tenants: Record<string, ComponentStatus> = {};
    let state: ComponentState = 'OK';
    let message: string | undefined;
    for (const [tenant, log] of this.#opened) {
      const s = this.#withEpochs(tenant, log.status());
      tenants[tenant] = s;
      if (RANK[s.state] > RANK[state]) {
        state = s.state;
        message = `${tenant}: ${s.message ?? s.state}`;
      }
    }
    // A tenant refused at start is ERROR in its own entry; the component is WARN for it (not
    // ERROR, which fails /health/ready and takes the pod's traffic from every tenant).
    for (const [tenant, { error }] of this.#refusedOpen) {
      tenants[tenant] = { state: 'ERROR', message: error.message, details: { code: error.code } };
      if (RANK[state] < RANK.WARN) {
        state = 'WARN';
        message = `${tenant}: ${error.message}`;
      }
    }
    const anchor = this.#anchor?.status?.();
    if (anchor !== undefined && RANK[anchor.state] > RANK[state]) {
      state = anchor.state;
      message = `anchor: ${anchor.message ?? anchor.state}`;
    }
    for (const errors of [this.#rotationErrors, this.#retentionErrors]) {
      const first = errors.values().next();
      if (first.done === true || RANK[state] >= RANK.WARN) continue;
      state = 'WARN';
      message = errors.size === 1 ? first.value : `${first.value} (and ${errors.size - 1} more tenant(s): each tenant's rotation_error / retention_error)`;
    }
    if (this.#refused > 0 && RANK[state] < RANK.WARN) {
      state = 'WARN';
      message = `${this.#refused} decision events refused; last: ${this.#lastRefusal ?? ''}`;
    }
    const details = { key_id: this.#signer.keyId, refused_events: this.#refused, pruned_epochs: this.#prunedCount, tenants, ...(anchor === undefined ? {} : { anchor }) };
    return message === undefined ? { state, details } : { state, message, details };
  }

  /** A tenant log's status with its epochs: the live one's number, and each archived one's bytes. */
  #withEpochs(tenant: string, status: ComponentStatus): ComponentStatus {
    const epochs = this.#epochs.get(tenant);
    const archived = epochs?.archived ?? [];
    return {
      ...status,
      details: {
        ...status.details,
        rotate_at_bytes: this.#rotateAt(tenant),
        archived_epochs: archived.map((a) => (this.#isPruned(tenant, a.epoch) ? { ...a, pruned: true } : a)),
        archived_bytes: archived.reduce((sum, a) => sum + a.bytes, 0),
        keep_archived_epochs: this.#keepArchivedEpochs(tenant),
        keep_archived_days: this.#options.settings.keepArchivedDays ?? 0,
        rotate_after_ms: this.#options.settings.rotateAfterMs ?? 0,
        ...(this.#staleTenantLocks.has(tenant) ? { stale_tenant_lock_pid: this.#staleTenantLocks.get(tenant) } : {}),
        ...(this.#rotationErrors.has(tenant) ? { rotation_error: this.#rotationErrors.get(tenant) } : {}),
        ...(this.#retentionErrors.has(tenant) ? { retention_error: this.#retentionErrors.get(tenant) } : {}),
      },
    };
  }

  async stop(deadlineMs: number): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#stopping.abort();
    clearInterval(this.#retentionTimer);
    const started = Date.now();
    // Tenants whose files may still be touched after this returns keep their lock (it is stale
    // once the process exits, and taken over then): a log whose stop did not finish within the
    // deadline (it keeps its own lock too), and every tenant while a retention pass still runs.
    const stillBusy = new Set<string>();
    let failure: unknown;
    try {
      await Promise.all([...this.#logs].map(async ([tenant, opening]) => {
        const log = await opening.catch(() => undefined);
        try {
          if (log !== undefined && !(await log.stop(deadlineMs))) stillBusy.add(tenant);
        } catch (error) {
          stillBusy.add(tenant);
          failure ??= error;
        }
      }));
      // The logs' final checkpoints first, then what is left of the deadline (at most 1 s) for a
      // retention pass: once it sees the sink stopped it starts no new record or removal (one
      // under way finishes; either way the next start completes the epoch).
      const pruned = await withDeadline(this.#pruning, Math.max(0, Math.min(1000, deadlineMs - (Date.now() - started))));
      if (!pruned) for (const tenant of this.#tenantLocks) stillBusy.add(tenant);
    } finally {
      await this.#unlockTenants(stillBusy);
      // both closed, whichever fails (the signer's is a PKCS#11 session)
      const closed = await Promise.allSettled([
        this.#options.createAnchor === undefined ? undefined : Promise.resolve().then(() => this.#anchor?.close?.()),
        this.#signer?.close(),
      ]);
      for (const c of closed) if (c.status === 'rejected') failure ??= c.reason;
    }
    if (failure !== undefined) throw failure;
  }
}
