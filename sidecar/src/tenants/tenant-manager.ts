/**
 * Tenants: which tenants exist, and moving each one's bundle into the engine. Every
 * activation, whatever its origin (the local directory, a NATS push or rollback, the
 * persisted last known good), passes the same gate, in order:
 *
 *   read + structural checks -> signature (the tenant's keys and scope) -> replay check
 *   -> compile -> load beside the active revision -> decision test vectors -> atomic swap
 *   -> persist as last known good
 *
 * A bundle that fails any step is refused with its code and the tenant keeps serving its
 * previous revision; the failure is kept for health and status. Activations of one tenant
 * run one at a time, in arrival order.
 *
 * Deltas applied on a snapshot are persisted beside it after each successful application,
 * appended to those before (best effort: a failed write does not undo the application). A
 * start that serves the persisted snapshot (the source did not answer) verifies and applies
 * its persisted deltas in order, under the live sequence guard; the first one refused (its
 * code kept for health and status) ends the replay, and the snapshot with the deltas before
 * it serves, as after a refused live delta. The revision is reported as persisted until the
 * source confirms it (`confirmSource`: the source still names that deploy) or replaces it.
 */
import {
  applyPatch,
  checkDeltaRoots,
  readBundle,
  verifyBundleSignature,
  verifyDeltaSignature,
  type Bundle,
  type BundleLimits,
  type BundleSource,
  type DeltaUpdate,
  type LastKnownGood,
  type SignatureInfo,
  type SignaturePolicy,
  type TrustStore,
} from '../bundles/index.ts';
import { compilePolicy, type ActivePolicy, type CompiledPolicy, type LoadedPolicy, type PolicyEngine, type ShadowComparison } from '../engine/index.ts';
import { DEFAULT_PERSIST_DELAY_MS, discoveredTenant, type TenantConfig } from '../config/index.ts';
import { TENANT_ID_PATTERN } from '../lib/tenant-id.ts';
import { ErrorCodes, PavilionError, isPavilionError, wrapError, type ErrorCode } from '../lib/errors.ts';
import { withDeadline, type Component, type ComponentState, type ComponentStatus } from '../lib/lifecycle.ts';
import { decisionTests, runDecisionTests, type DecisionTest } from './decision-tests.ts';
import { recordComparison, shadowReport, type ShadowPrivacy, type ShadowReport, type ShadowState } from './shadow.ts';

export interface TenantError {
  readonly code: ErrorCode;
  readonly message: string;
  readonly at: string;
  readonly details?: Readonly<Record<string, unknown>>;
}

/** A failure as a tenant's status keeps it: code, message (or `message`), when, details. */
function tenantError(error: PavilionError, message = error.message): TenantError {
  return { code: error.code, message, at: new Date().toISOString(), ...(error.details === undefined ? {} : { details: error.details }) };
}

/** A deltas write's failure as status shows it (the snapshot it was bound to is internal). */
function withoutDigest(error: (TenantError & { readonly digest: string }) | undefined): TenantError | undefined {
  if (error === undefined) return undefined;
  const { digest: _digest, ...shown } = error;
  return shown;
}

/**
 * Replaced revisions remembered per tenant: as many deploys as the deploy history keeps (64,
 * the distribution's DEPLOY_HISTORY), so a revision that can no longer be rolled back to can
 * be pushed again.
 */
const MAX_REMEMBERED_REPLACED = 64;

/** Add `digest` to a tenant's replaced revisions as the newest, forgetting the oldest past the bound. */
function remember(replaced: Set<string>, digest: string): void {
  replaced.delete(digest);
  replaced.add(digest);
  for (const oldest of replaced) {
    if (replaced.size <= MAX_REMEMBERED_REPLACED) break;
    replaced.delete(oldest);
  }
}

/**
 * Where an activation comes from. A `push` may not bring back a revision already replaced.
 * `source` is also a persisted revision the source has confirmed since (`confirmSource`).
 */
export interface ActivationOrigin {
  readonly kind: 'source' | 'persisted' | 'push' | 'rollback';
  /** The distribution pointer's sequence (KV revision), when there is one. */
  readonly sequence?: number;
  /**
   * For a push the replay check would refuse: whether a rollback brought these bytes back just
   * before it in the history (one this sidecar did not see while it was down or cut off), so
   * the push re-deploys what the fleet serves and is no replay. Asked only then; a failure to
   * read the history is thrown (and retried), never taken as no.
   */
  readonly redeploysPrevious?: () => Promise<boolean>;
}

export interface TenantStatus {
  readonly id: string;
  readonly namespace: string;
  /** The decision `POST /` answers (OPA's default decision). */
  readonly defaultDecision: string;
  readonly state: ComponentState;
  readonly active: ActivePolicy | undefined;
  readonly signature: SignatureInfo | undefined;
  /** How the active revision got here ('persisted' = last known good, the source has not answered yet). */
  readonly origin: ActivationOrigin | undefined;
  readonly lastError: TenantError | undefined;
  /**
   * The last known good write that failed last (its snapshot or deltas), until one succeeds:
   * serving is not affected, but a restart without NATS would serve older data (WARN).
   */
  readonly persistError: TenantError | undefined;
  readonly lastSuccessfulActivation: string | undefined;
  readonly lastSuccessfulDownload: string | undefined;
  readonly testsPassed: number;
  /** Shadow mode, while a staged revision runs beside the active one. */
  readonly shadow: ShadowReport | undefined;
  /**
   * Why the last revision staged as a shadow was refused, until one is staged or shadow mode
   * ends. The active revision's state and lastError are not the shadow's to change.
   */
  readonly shadowError: TenantError | undefined;
}

export interface TenantManagerOptions {
  /** Configured tenants; empty means every tenant the source (or the persisted store) has. */
  readonly tenants: readonly TenantConfig[];
  readonly source: BundleSource;
  readonly engine: PolicyEngine;
  readonly limits: BundleLimits;
  readonly memoryInitialPages: number;
  /**
   * The tenants' signature keys (key files are I/O): read at start, for a tenant discovered
   * after start, and again when a signature is refused for a key reason (see
   * `trustRereadIntervalMs`).
   */
  readonly loadTrust: () => Promise<TrustStore>;
  /**
   * Least time between two reads of the keys on behalf of one tenant whose bundle or delta
   * was refused for a key reason (default DEFAULT_TRUST_REREAD_INTERVAL_MS): a flood of
   * refused pushes reads the key files at most this often per tenant.
   */
  readonly trustRereadIntervalMs?: number;
  /** A monotonic clock in milliseconds (default `performance.now`); injected by tests. */
  readonly nowMs?: () => number;
  /** Last known good store; undefined disables persistence. */
  readonly persisted?: LastKnownGood;
  /**
   * How long after an activation its snapshot is written to the last known good store
   * (default DEFAULT_PERSIST_DELAY_MS, plus up to as much again at random); 0 writes it
   * within the activation. See `#persistSoon`.
   */
  readonly persistDelayMs?: number;
  /** Most decision test vectors a bundle may carry (each runs before activation). */
  readonly maxDecisionTests?: number;
  readonly onActivation?: (tenant: string, outcome: 'ok' | ErrorCode) => void;
  /** Time spent in each step of an activation (telemetry). */
  readonly onPhase?: (phase: ActivationPhase, seconds: number) => void;
  /**
   * The tenants' decision-log privacy, applied to the results shadow samples show (they are
   * served by the tenant API and status reports). Absent when no decision-log privacy is
   * configured: samples show the results as they are.
   */
  readonly shadowPrivacy?: ShadowPrivacy;
}

/** Default of `TenantManagerOptions.trustRereadIntervalMs`. */
export const DEFAULT_TRUST_REREAD_INTERVAL_MS = 5_000;

/**
 * Signature refusals that keys read since could turn around, so the keys are read again
 * before one is final: a key that was not there (a new tenant's, a new key id: KEY_UNKNOWN,
 * or UNEXPECTED for a tenant that had none), a key replaced in place under the same id (a
 * rotation: INVALID - a Kubernetes Secret is updated in place, the files change without a
 * restart), or a configured tenant whose listed key was missing at the last read
 * (CONFIG_INVALID, which only the trust policy throws here).
 */
export const KEY_REFUSALS: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  ErrorCodes.BUNDLE_SIGNATURE_UNEXPECTED,
  ErrorCodes.BUNDLE_SIGNATURE_KEY_UNKNOWN,
  ErrorCodes.BUNDLE_SIGNATURE_INVALID,
  ErrorCodes.CONFIG_INVALID,
  // a key file the last read could not load (the trust store refuses its key id with why): it may be fixed or rewritten since
  ErrorCodes.BUNDLE_KEY_INVALID,
]);

export type ActivationPhase = 'read' | 'verify' | 'compile' | 'load' | 'test' | 'swap' | 'persist';

interface TenantEntry {
  readonly config: TenantConfig;
  readonly explicit: boolean;
  lastError: TenantError | undefined;
  /** The last known good writes that failed last, by what they wrote (a deltas write that succeeds does not make up for a snapshot that failed). */
  persistErrors: { snapshot?: TenantError; deltas?: TenantError & { readonly digest: string } };
  shadowError: TenantError | undefined;
  signature: SignatureInfo | undefined;
  origin: ActivationOrigin | undefined;
  lastSuccessfulActivation: string | undefined;
  lastSuccessfulDownload: string | undefined;
  testsPassed: number;
  /**
   * Content digests (`SignatureInfo.contentSha256`) of revisions the tenant activated and
   * then replaced, oldest first (replay detection): the newest MAX_REMEMBERED_REPLACED, kept
   * with the last known good so a restart does not forget them.
   */
  readonly replaced: Set<string>;
  /** The activation chain: one activation at a time per tenant. */
  queue: Promise<unknown>;
  /** The active snapshot, kept to apply deltas without recompiling (`digest`: the archive's SHA-256). */
  snapshot: Snapshot | undefined;
  /** Deltas applied on top of the snapshot (0 = none) and the data they produced. */
  deltaSequence: number;
  deltaData: Record<string, unknown> | undefined;
  /** The deltas 1..deltaSequence themselves, as received (persisted with the snapshot). */
  appliedDeltas: readonly DeltaUpdate[];
  /** A staged revision evaluated beside the active one on live traffic. */
  shadow: ShadowState | undefined;
  /** When the keys were last read on this tenant's behalf (`nowMs`); undefined: not since start. */
  trustReadAt: number | undefined;
  /** Discovered after start: its first verification reads the keys first (they may be newer than start's). */
  trustStale: boolean;
  /** Why the last read on this tenant's behalf failed (refuses it while `trustStale`). */
  trustReadError: PavilionError | undefined;
  /** The snapshot activated last and not yet persisted (`#persistSoon`). */
  unsaved: UnsavedSnapshot | undefined;
}

/** An activated snapshot waiting for its last known good write. */
interface UnsavedSnapshot {
  readonly archive: Buffer;
  readonly bundle: Bundle;
  readonly origin: ActivationOrigin;
  readonly timer: NodeJS.Timeout;
}

interface Snapshot {
  readonly compiled: CompiledPolicy;
  readonly roots: readonly string[];
  readonly tests: readonly DecisionTest[];
  readonly digest: string;
}

/** Deltas folded onto data: how far they got, and why they stopped short (if they did). */
interface DeltaFold {
  readonly sequence: number;
  readonly data: Record<string, unknown>;
  readonly applied: readonly DeltaUpdate[];
  readonly error?: PavilionError;
}

/** The steps of the gate that differ between an activation and a shadow staging. */
interface GateSteps {
  /** After the signature: true stops the gate there (these bytes are already in place). */
  readonly unchanged: (bundle: Bundle) => boolean;
  /** After the signature, before loading: throws to refuse the revision (the replay check). */
  readonly admit?: (bundle: Bundle, signature: SignatureInfo) => Promise<void>;
  /** The engine variant to load as (the shadow revision is loaded beside the active one). */
  readonly variant?: string;
  readonly phase?: (name: ActivationPhase) => void;
}

/** A revision that passed the gate: loaded, its test vectors passed, not yet swapped in. */
interface GatePassed {
  readonly bundle: Bundle;
  readonly signature: SignatureInfo;
  readonly compiled: CompiledPolicy;
  readonly tests: readonly DecisionTest[];
  readonly loaded: LoadedPolicy;
}

export type { DeltaUpdate };

export class TenantManager implements Component {
  readonly name = 'tenants';
  readonly #options: TenantManagerOptions;
  readonly #tenants = new Map<string, TenantEntry>();
  #trust: TrustStore | undefined;
  /** Reads of the keys started, and which one `#trust` came from (a slower older read never replaces a newer one). */
  #trustReadsStarted = 0;
  #trustReadApplied = 0;
  #started = false;
  /** Set by stop(): an activation that ends from now on writes its snapshot at once. */
  #stopping = false;
  readonly #trustRereadIntervalMs: number;
  readonly #persistDelayMs: number;
  readonly #nowMs: () => number;

  constructor(options: TenantManagerOptions) {
    const interval = options.trustRereadIntervalMs ?? DEFAULT_TRUST_REREAD_INTERVAL_MS;
    if (!Number.isFinite(interval) || interval < 0) {
      throw new PavilionError(ErrorCodes.CONFIG_INVALID, `trustRereadIntervalMs must be a non-negative number, not ${interval}`);
    }
    this.#options = options;
    this.#trustRereadIntervalMs = interval;
    const persistDelayMs = options.persistDelayMs ?? DEFAULT_PERSIST_DELAY_MS;
    if (!Number.isFinite(persistDelayMs) || persistDelayMs < 0) {
      throw new PavilionError(ErrorCodes.CONFIG_INVALID, `persistDelayMs must be a non-negative number, not ${persistDelayMs}`);
    }
    this.#persistDelayMs = persistDelayMs;
    this.#nowMs = options.nowMs ?? ((): number => performance.now());
  }

  async start(): Promise<void> {
    this.#stopping = false;
    await this.#readTrust();
    const explicit = this.#options.tenants.length > 0;
    let configured: TenantConfig[] = [...this.#options.tenants];
    if (!explicit) {
      const found = new Set([...(await this.#options.source.listTenants()), ...(await this.#options.persisted?.tenants() ?? [])]);
      configured = [...found].filter((id) => TENANT_ID_PATTERN.test(id)).sort().map(discoveredTenant);
    }
    for (const config of configured) this.#add(config, explicit);
    await Promise.all(configured.map((config) => this.#startTenant(config.id)));
    this.#started = true;
  }

  async #startTenant(tenant: string): Promise<void> {
    try {
      await this.reload(tenant);
      return;
    } catch {
      // fall back to the last known good below
    }
    const store = this.#options.persisted;
    const persisted = await store?.load(tenant);
    if (store === undefined || persisted === undefined || this.#options.engine.active(tenant) !== undefined) return;
    const entry = this.#tenants.get(tenant);
    if (entry === undefined) return;
    for (const digest of persisted.meta.replaced ?? []) remember(entry.replaced, digest);
    const deltas = await store.loadDeltas(persisted.meta);
    const activation = this.activate(tenant, persisted.archive, {
      kind: 'persisted',
      ...(persisted.meta.sequence === undefined ? {} : { sequence: persisted.meta.sequence }),
    });
    // queued right behind the activation: nothing else runs in between
    const replay = this.#inTurn(entry, () => this.#replayPersistedDeltas(entry, persisted.meta.digest, deltas.deltas, deltas.refused));
    await Promise.all([activation.catch(() => undefined), replay.catch(() => undefined)]);
  }

  /**
   * The persisted deltas of the persisted snapshot, at start: each verified and checked as a
   * live delta is (deploy, sequence guard, signature, roots, patch), in order; the first
   * refused ends the replay with its code, and the snapshot with the deltas before it serves
   * (one load, the snapshot's test vectors run on it). Nothing is written back: the file
   * stays as it is until the source's deltas replace it.
   */
  async #replayPersistedDeltas(entry: TenantEntry, digest: string, deltas: readonly DeltaUpdate[], refused: PavilionError | undefined): Promise<void> {
    const tenant = entry.config.id;
    const snapshot = entry.snapshot;
    const base = entry.origin?.sequence;
    // Only onto the snapshot they were persisted with, while nothing else was activated.
    if (entry.origin?.kind !== 'persisted' || snapshot === undefined || base === undefined || snapshot.digest !== digest || entry.deltaSequence !== 0) return;
    const fold = await this.#foldDeltas(entry, snapshot, base, 0, snapshot.compiled.data, deltas);
    try {
      if (fold.sequence > 0) await this.#serveDeltas(entry, snapshot, base, fold.sequence, fold.data, fold.applied);
    } catch (error) {
      this.#recordFailure(tenant, wrapError(error, ErrorCodes.BUNDLE_DELTA_INVALID, `applying the persisted deltas 1-${fold.sequence} of deploy ${base}`));
      return;
    }
    const error = fold.error ?? refused;
    if (error !== undefined) {
      this.#recordFailure(tenant, new PavilionError(error.code, `persisted deltas of deploy ${base}: ${error.message}; serving the snapshot with the persisted deltas 1-${fold.sequence}`, {
        cause: error,
        details: { ...error.details, base, applied: fold.sequence, persisted: true },
      }));
    }
  }

  #add(config: TenantConfig, explicit: boolean, discovered = false): TenantEntry {
    // Resolve the trust policy now, so a tenant naming an unknown key fails at start.
    this.#trustStore().policyFor(config, explicit);
    const entry: TenantEntry = {
      config,
      explicit,
      lastError: undefined,
      persistErrors: {},
      shadowError: undefined,
      signature: undefined,
      origin: undefined,
      lastSuccessfulActivation: undefined,
      lastSuccessfulDownload: undefined,
      testsPassed: 0,
      replaced: new Set(),
      queue: Promise.resolve(),
      snapshot: undefined,
      deltaSequence: 0,
      deltaData: undefined,
      appliedDeltas: [],
      shadow: undefined,
      trustReadAt: undefined,
      trustStale: discovered,
      trustReadError: undefined,
      unsaved: undefined,
    };
    this.#tenants.set(config.id, entry);
    return entry;
  }

  /**
   * A tenant the source announced after start (only when no tenants are configured, so
   * the source decides which tenants exist). Returns false when the id is not acceptable.
   */
  discover(tenant: string): boolean {
    if (this.#tenants.has(tenant)) return true;
    if (this.#options.tenants.length > 0 || !TENANT_ID_PATTERN.test(tenant)) return false;
    this.#add(discoveredTenant(tenant), false, true);
    return true;
  }

  /**
   * Write the snapshots waiting for their last known good write (within `deadlineMs`): each
   * tenant's in its turn, so an activation running now is written too, and one that ends
   * later (a pointer the distribution had already queued) writes its own at once.
   */
  async stop(deadlineMs = 5_000): Promise<void> {
    this.#started = false;
    this.#stopping = true;
    await withDeadline(Promise.all([...this.#tenants.values()].map((entry) => this.#persistUnsaved(entry))), deadlineMs);
  }

  /** Read the verification keys again (a keys directory may have gained a new tenant's key). */
  async refreshTrust(): Promise<void> {
    const stale = [...this.#tenants.values()].filter((entry) => entry.trustStale);
    await this.#readTrust();
    for (const entry of stale) entry.trustStale = false; // discovered before this read began
  }

  /**
   * Read the keys and use them from now on. They replace the previous keys as a whole, so a
   * key gone from disk is no longer trusted either; a read that fails leaves the previous
   * keys in place and throws.
   */
  async #readTrust(): Promise<void> {
    const read = ++this.#trustReadsStarted;
    const trust = await this.#options.loadTrust();
    if (read > this.#trustReadApplied) {
      this.#trust = trust;
      this.#trustReadApplied = read;
    }
  }

  /**
   * Read the keys again on the tenant's behalf, unless that was done less than
   * `trustRereadIntervalMs` ago (then false: the caller keeps what it has). Throws, with the
   * previous keys kept, when they cannot be read.
   */
  async #rereadTrust(entry: TenantEntry): Promise<boolean> {
    const now = this.#nowMs();
    if (entry.trustReadAt !== undefined && now - entry.trustReadAt < this.#trustRereadIntervalMs) return false;
    entry.trustReadAt = now;
    try {
      await this.#readTrust();
    } catch (error) {
      entry.trustReadError = wrapError(error, ErrorCodes.BUNDLE_KEY_INVALID, 'reading the trusted keys again');
      throw entry.trustReadError;
    }
    entry.trustReadError = undefined;
    entry.trustStale = false;
    return true;
  }

  /**
   * Verify with the tenant's signature policy, by the keys on disk: a tenant discovered after
   * start reads them first; a refusal for a key reason (KEY_REFUSALS) reads them again
   * (rate limited per tenant) and verifies once more, and stands if it is refused again. Fail
   * closed: a discovered tenant whose keys could not be read is refused until a read succeeds.
   */
  async #verifyWithKeys<T>(entry: TenantEntry, verify: (policy: SignaturePolicy) => Promise<T>): Promise<T> {
    if (entry.trustStale && !(await this.#rereadTrust(entry))) {
      throw entry.trustReadError ?? new PavilionError(ErrorCodes.BUNDLE_KEY_INVALID, `the trusted keys of tenant ${entry.config.id} could not be read`);
    }
    try {
      return await verify(this.#trustStore().policyFor(entry.config, entry.explicit));
    } catch (error) {
      if (!isPavilionError(error) || !KEY_REFUSALS.has(error.code)) throw error;
      let reread: boolean;
      try {
        reread = await this.#rereadTrust(entry);
      } catch (readError) {
        const cause = readError as PavilionError;
        throw new PavilionError(cause.code, `${error.message}; reading the trusted keys again failed: ${cause.message}`, { cause });
      }
      if (!reread) throw error;
      return await verify(this.#trustStore().policyFor(entry.config, entry.explicit));
    }
  }

  #trustStore(): TrustStore {
    if (this.#trust === undefined) throw new PavilionError(ErrorCodes.TENANT_NOT_READY, 'tenants are not started');
    return this.#trust;
  }

  has(tenant: string): boolean {
    return this.#tenants.has(tenant);
  }

  /** The decision `POST /` answers for a known tenant (its config's defaultDecision). */
  defaultDecision(tenant: string): string {
    const entry = this.#tenants.get(tenant);
    if (entry === undefined) throw new PavilionError(ErrorCodes.TENANT_UNKNOWN, `unknown tenant ${tenant}`);
    return entry.config.defaultDecision;
  }

  ids(): string[] {
    return [...this.#tenants.keys()].sort();
  }

  /** Fetch the tenant's bundle from the source and activate it. */
  async reload(tenant: string): Promise<ActivePolicy> {
    const archive = await this.#options.source.fetch(tenant).catch((error: unknown) => {
      throw this.#recordFailure(tenant, wrapError(error, ErrorCodes.BUNDLE_CORRUPT, 'fetching bundle'));
    });
    if (archive === undefined) {
      throw this.#recordFailure(
        tenant,
        new PavilionError(ErrorCodes.TENANT_NOT_READY, `no bundle found for tenant ${tenant} in the ${this.#options.source.kind} source`),
      );
    }
    return this.activate(tenant, archive);
  }

  /** Record that a download failed before an archive could be activated (for status). */
  reportFailure(tenant: string, error: unknown): PavilionError {
    return this.#recordFailure(tenant, wrapError(error, ErrorCodes.BUNDLE_CORRUPT, 'fetching bundle'));
  }

  /** Validate, verify, test and activate an archive for a tenant; the old revision stays on failure. */
  async activate(tenant: string, archive: Buffer, origin: ActivationOrigin = { kind: 'source' }): Promise<ActivePolicy> {
    const entry = this.#tenants.get(tenant);
    if (entry === undefined) throw new PavilionError(ErrorCodes.TENANT_UNKNOWN, `unknown tenant ${tenant}`);
    return this.#inTurn(entry, () => this.#activate(entry, archive, origin));
  }

  async #activate(entry: TenantEntry, archive: Buffer, origin: ActivationOrigin): Promise<ActivePolicy> {
    const tenant = entry.config.id;
    const engine = this.#options.engine;
    let loaded: LoadedPolicy | undefined;
    let started = performance.now();
    const phase = (name: ActivationPhase): void => {
      const now = performance.now();
      this.#options.onPhase?.(name, (now - started) / 1000);
      started = now;
    };
    try {
      // OPA's meaning: the bytes arrived (whether or not they then pass the gate); a revision
      // read back from the last known good store was not downloaded
      if (origin.kind !== 'persisted') entry.lastSuccessfulDownload = new Date().toISOString();
      const current = engine.active(tenant);
      let same: Bundle | undefined;
      const passed = await this.#passGate(entry, archive, {
        phase,
        // Already serving these bytes (a resync, or a pointer re-announced): nothing to swap.
        unchanged: (bundle) => {
          if (current?.bundleDigest !== bundle.digest) return false;
          same = bundle;
          return true;
        },
        admit: (bundle, signature) => this.#checkReplay(entry, bundle, signature, origin),
      });
      if (passed === undefined) {
        // The same bytes under a new deploy (sequence): its deltas count from the snapshot's
        // data, so the previous deploy's deltas must stop being served first.
        if (origin.sequence !== entry.origin?.sequence) {
          if (entry.snapshot !== undefined && entry.deltaData !== undefined) {
            const snapshot = entry.snapshot;
            loaded = await engine.load({ ...snapshot.compiled, variant: `${origin.sequence ?? origin.kind}.0` });
            await this.#runDecisionTests(loaded, snapshot.tests);
            engine.promote(loaded);
            loaded = undefined;
          }
          entry.deltaSequence = 0;
          entry.deltaData = undefined;
          entry.appliedDeltas = [];
          // The persisted meta names the new deploy (its save drops the old deploy's deltas).
          if (origin.kind !== 'persisted' && same !== undefined) await this.#persistSoon(entry, archive, same, origin);
        }
        entry.origin = origin;
        entry.lastError = undefined;
        return engine.active(tenant) as ActivePolicy;
      }
      const { bundle, signature, compiled, tests } = passed;
      loaded = passed.loaded;
      const active = engine.promote(loaded);
      loaded = undefined;
      phase('swap');
      if (entry.signature !== undefined) remember(entry.replaced, entry.signature.contentSha256);
      entry.replaced.delete(signature.contentSha256);
      entry.signature = signature;
      entry.origin = origin;
      entry.testsPassed = tests.length;
      entry.snapshot = { compiled, roots: bundle.manifest.roots, tests, digest: bundle.digest };
      entry.deltaSequence = 0;
      entry.deltaData = undefined;
      entry.appliedDeltas = [];
      entry.lastError = undefined;
      entry.lastSuccessfulActivation = active.activatedAt.toISOString();
      this.#options.onActivation?.(tenant, 'ok');
      if (origin.kind !== 'persisted') await this.#persistSoon(entry, archive, bundle, origin);
      return active;
    } catch (error) {
      if (loaded !== undefined) engine.discard(loaded);
      // every refusal of the gate is typed; anything else is not the bundle's doing (and may
      // pass: the distribution retries INTERNAL, where a bundle refusal would be final)
      throw this.#recordFailure(tenant, wrapError(error, ErrorCodes.INTERNAL, 'activating bundle'));
    }
  }

  /**
   * Persist an activated snapshot as last known good, `persistDelayMs` from now (with
   * jitter), or at once when that is 0. A snapshot replaced before its write is never
   * written: the one that replaced it is, in its place. Meanwhile the store keeps the
   * previous snapshot and its deltas, a consistent earlier state: deltas applied on the
   * new snapshot go to its own deltas file, which the snapshot's write keeps. `stop` writes
   * what is still waiting. The write takes the tenant's turn, so a push arriving during its
   * fsyncs waits for them (a few milliseconds).
   */
  async #persistSoon(entry: TenantEntry, archive: Buffer, bundle: Bundle, origin: ActivationOrigin): Promise<void> {
    if (this.#options.persisted === undefined) return;
    if (entry.unsaved !== undefined) clearTimeout(entry.unsaved.timer);
    const delayMs = this.#persistDelayMs;
    if (delayMs === 0 || this.#stopping) {
      entry.unsaved = undefined;
      await this.#persistSnapshot(entry, archive, bundle, origin);
      return;
    }
    // a write that fails is already dropped in #persistSnapshot (best effort): nothing to report here
    const timer = setTimeout(() => void this.#persistUnsaved(entry).catch(() => undefined), delayMs + Math.random() * delayMs);
    timer.unref();
    entry.unsaved = { archive, bundle, origin, timer };
  }

  /** Write the tenant's waiting snapshot, in the tenant's turn (after any activation running now). */
  #persistUnsaved(entry: TenantEntry): Promise<void> {
    return this.#inTurn(entry, async () => {
      const unsaved = entry.unsaved;
      if (unsaved === undefined) return;
      entry.unsaved = undefined;
      clearTimeout(unsaved.timer);
      await this.#persistSnapshot(entry, unsaved.archive, unsaved.bundle, unsaved.origin);
    });
  }

  /** Persist an activated snapshot as last known good (its save drops every other snapshot's deltas). */
  async #persistSnapshot(entry: TenantEntry, archive: Buffer, bundle: Bundle, origin: ActivationOrigin): Promise<void> {
    const started = performance.now();
    const store = this.#options.persisted;
    if (store === undefined) return;
    // persistence is best effort (serving is not affected), and says when it fails
    await this.#persisting(entry, { kind: 'snapshot', digest: bundle.digest }, `writing revision ${bundle.revision} as last known good`, store.save(archive, {
      tenant: entry.config.id,
      revision: bundle.revision,
      digest: bundle.digest,
      ...(origin.sequence === undefined ? {} : { sequence: origin.sequence }),
      savedAt: new Date().toISOString(),
      replaced: [...entry.replaced],
    }));
    this.#options.onPhase?.('persist', (performance.now() - started) / 1000);
  }

  /**
   * Settle a last known good write of a snapshot, or of deltas on the snapshot `digest`: a
   * failure is the tenant's persistError (status shows it) until a write of the same kind
   * succeeds. A snapshot written also settles a deltas failure on another snapshot (its save
   * drops every other snapshot's deltas), not one on itself: its deltas file still lacks them.
   */
  async #persisting(entry: TenantEntry, what: { readonly kind: 'snapshot' | 'deltas'; readonly digest: string }, doing: string, write: Promise<unknown>): Promise<void> {
    try {
      await write;
      const { snapshot, deltas } = entry.persistErrors;
      if (what.kind === 'deltas') entry.persistErrors = snapshot === undefined ? {} : { snapshot };
      else entry.persistErrors = deltas !== undefined && deltas.digest === what.digest ? { deltas } : {};
    } catch (error) {
      const failure = wrapError(error, ErrorCodes.INTERNAL, doing);
      const recorded = tenantError(failure, `${doing} failed: ${failure.message}`);
      entry.persistErrors = what.kind === 'snapshot'
        ? { ...entry.persistErrors, snapshot: recorded }
        : { ...entry.persistErrors, deltas: { ...recorded, digest: what.digest } };
    }
  }

  /**
   * Persist the deltas just applied on the active snapshot, bound to its digest and deploy:
   * appended to those persisted before (a rebuild starts at 1 and writes the file whole), so
   * a deploy's deltas cost bytes in proportion to their number. When the file does not end
   * where they start (format 1, written by an earlier version, or short of a write that
   * failed), it is written whole with every applied delta instead. Best effort: a failed
   * write leaves a prefix of these deltas, for the same snapshot, and does not fail the
   * application.
   */
  async #persistDeltas(entry: TenantEntry, snapshot: Snapshot, base: number, applied: readonly DeltaUpdate[]): Promise<void> {
    const store = this.#options.persisted;
    if (store === undefined) return;
    const binding = { tenant: entry.config.id, digest: snapshot.digest, base };
    await this.#persisting(entry, { kind: 'deltas', digest: snapshot.digest }, `writing the deltas of deploy ${base} as last known good`, store.saveDeltas(binding, applied)
      .catch((error: unknown) => {
        if (!isPavilionError(error, ErrorCodes.BUNDLE_DELTA_SEQUENCE)) throw error;
        return store.saveDeltas(binding, entry.appliedDeltas);
      }));
  }

  /**
   * The gate every revision passes, for activation and for shadow mode alike: read and
   * structural checks, signature, the caller's admission check, compile, load beside the
   * active revision, decision test vectors. Returns what passed, loaded but not swapped in,
   * or undefined when `unchanged` says these bytes are already in place. A failure throws,
   * with nothing left loaded.
   */
  async #passGate(entry: TenantEntry, archive: Buffer, steps: GateSteps): Promise<GatePassed | undefined> {
    const phase = steps.phase ?? ((): void => undefined);
    const bundle = await readBundle(archive, { tenant: entry.config.id, namespace: entry.config.namespace, limits: this.#options.limits });
    phase('read');
    // Compile and inspect the Wasm (in the sandbox worker, off this thread) while the
    // signature is checked here: the sandbox exists so that an unverified module is safe
    // to inspect, and a refused signature still wins (it is awaited first).
    const compiling = compilePolicy(bundle, { initialMemoryPages: this.#options.memoryInitialPages });
    compiling.catch(() => undefined);
    const signature = await this.#verifyWithKeys(entry, (policy) => verifyBundleSignature(bundle.files, policy));
    phase('verify');
    if (steps.unchanged(bundle)) return undefined;
    await steps.admit?.(bundle, signature);
    const tests = decisionTests(bundle, this.#options.maxDecisionTests);
    const compiled = await compiling;
    phase('compile');
    const loaded = await this.#options.engine.load(steps.variant === undefined ? compiled : { ...compiled, variant: steps.variant });
    phase('load');
    try {
      await this.#runDecisionTests(loaded, tests);
    } catch (error) {
      this.#options.engine.discard(loaded);
      throw error;
    }
    phase('test');
    return { bundle, signature, compiled, tests, loaded };
  }

  /**
   * Shadow mode: put a revision through the same gate as an activation (structure,
   * signature, compile, test vectors) and load it beside the active one, without swapping;
   * every live decision is then also evaluated on it and the differences counted.
   */
  async stageShadow(tenant: string, archive: Buffer, sequence?: number): Promise<ShadowReport> {
    const entry = this.#tenants.get(tenant);
    if (entry === undefined) throw new PavilionError(ErrorCodes.TENANT_UNKNOWN, `unknown tenant ${tenant}`);
    return this.#inTurn(entry, async () => {
      let loaded: LoadedPolicy | undefined;
      try {
        const passed = await this.#passGate(entry, archive, {
          unchanged: (bundle) => entry.shadow?.digest === bundle.digest,
          variant: 'shadow',
        });
        if (passed === undefined) return shadowReport(entry.shadow as ShadowState);
        loaded = passed.loaded;
        this.#endShadow(entry);
        entry.shadow = {
          loaded, revision: passed.bundle.revision, digest: passed.bundle.digest, since: new Date().toISOString(), sequence,
          evaluations: 0, differences: 0, errors: 0, samples: [],
        };
        this.#options.engine.setShadow(tenant, loaded);
        entry.shadowError = undefined;
        return shadowReport(entry.shadow);
      } catch (error) {
        if (loaded !== undefined) this.#options.engine.discard(loaded);
        throw this.reportShadowFailure(tenant, wrapError(error, ErrorCodes.INTERNAL, 'staging shadow revision'));
      }
    });
  }

  /** A revision to be staged as a shadow was refused (or could not be fetched): the tenant's shadowError. */
  reportShadowFailure(tenant: string, error: unknown): PavilionError {
    const failure = wrapError(error, ErrorCodes.BUNDLE_CORRUPT, 'fetching shadow revision');
    const entry = this.#tenants.get(tenant);
    if (entry !== undefined) entry.shadowError = tenantError(failure);
    return failure;
  }

  /** End shadow mode for a tenant (the shadow pointer was removed or promoted). */
  endShadow(tenant: string): void {
    const entry = this.#tenants.get(tenant);
    if (entry === undefined) return;
    this.#endShadow(entry);
    entry.shadowError = undefined;
  }

  #endShadow(entry: TenantEntry): void {
    if (entry.shadow === undefined) return;
    this.#options.engine.setShadow(entry.config.id, undefined);
    this.#options.engine.discard(entry.shadow.loaded);
    entry.shadow = undefined;
  }

  /** The engine's report of one live decision compared on the shadow revision. */
  recordShadow(comparison: ShadowComparison): void {
    const shadow = this.#tenants.get(comparison.tenant)?.shadow;
    if (shadow !== undefined) recordComparison(shadow, comparison, this.#options.shadowPrivacy);
  }

  /**
   * The source names the deploy the tenant serves from its last known good - the same deploy
   * (pointer sequence) of the same bytes (archive SHA-256): the revision is the source's
   * again (origin 'source', no longer reported as persisted), with nothing reloaded and the
   * deltas applied on it kept. Anything else changes nothing here (a newer deploy goes
   * through the gate). In the tenant's activation order, so it never overtakes the persisted
   * activation or its deltas' replay. Returns whether the revision was confirmed.
   */
  async confirmSource(tenant: string, sequence: number, digest: string): Promise<boolean> {
    const entry = this.#tenants.get(tenant);
    if (entry === undefined) throw new PavilionError(ErrorCodes.TENANT_UNKNOWN, `unknown tenant ${tenant}`);
    return this.#inTurn(entry, () => {
      if (entry.origin?.kind !== 'persisted' || entry.origin.sequence !== sequence || entry.snapshot?.digest !== digest) return false;
      entry.origin = { kind: 'source', sequence };
      return true;
    });
  }

  /** Run `work` after everything queued for the tenant before it: a tenant's changes go one at a time, in arrival order. */
  #inTurn<T>(entry: TenantEntry, work: () => T | Promise<T>): Promise<T> {
    const run = entry.queue.then(work);
    entry.queue = run.catch(() => undefined);
    return run;
  }

  /** Deltas applied on top of the tenant's active snapshot, and that snapshot's deploy. */
  deltaState(tenant: string): { base: number | undefined; sequence: number } | undefined {
    const entry = this.#tenants.get(tenant);
    if (entry === undefined) return undefined;
    return { base: entry.snapshot === undefined ? undefined : entry.origin?.sequence, sequence: entry.deltaSequence };
  }

  /**
   * Apply deltas, in order, on top of the current data ('append': the next deltas) or of the
   * snapshot's data ('rebuild': every delta since the snapshot, after a gap). The same
   * compiled module gets the new data; the snapshot's decision test vectors run on it
   * before the swap. Sequence guard: deltas must continue the applied sequence exactly.
   */
  async applyDeltas(tenant: string, deltas: readonly DeltaUpdate[], mode: 'append' | 'rebuild'): Promise<number> {
    const entry = this.#tenants.get(tenant);
    if (entry === undefined) throw new PavilionError(ErrorCodes.TENANT_UNKNOWN, `unknown tenant ${tenant}`);
    return this.#inTurn(entry, () => this.#applyDeltas(entry, deltas, mode));
  }

  async #applyDeltas(entry: TenantEntry, deltas: readonly DeltaUpdate[], mode: 'append' | 'rebuild'): Promise<number> {
    const tenant = entry.config.id;
    const snapshot = entry.snapshot;
    const base = entry.origin?.sequence;
    const last = deltas.at(-1);
    if (base !== undefined && last !== undefined && deltas.every((delta) => delta.base < base)) {
      // Checked against an older deploy while the activation of this one waited in the queue
      // (a live delta, or a replay read of the stream spanning the deploy): obsolete, not
      // refused. Not recorded as a failure, like the stale rebuild below. (Activations queued
      // before this call have run by now; one that was refused leaves the older deploy
      // active, and its deltas apply.)
      throw new PavilionError(ErrorCodes.BUNDLE_DELTA_SEQUENCE, `deltas of deploy ${last.base} no longer apply: deploy ${base} was activated meanwhile`, {
        details: { base, received: last.base },
      });
    }
    if (mode === 'rebuild' && last !== undefined && last.base === base && last.sequence < entry.deltaSequence) {
      // A replay read before newer deltas were applied: applying it would serve older data.
      // Not recorded as a failure: the tenant already serves newer data of the same deploy.
      throw new PavilionError(ErrorCodes.BUNDLE_DELTA_SEQUENCE, `rebuild through delta ${last.sequence} of deploy ${base} is older than the applied delta ${entry.deltaSequence}`, {
        details: { base, applied: entry.deltaSequence, received: last.sequence },
      });
    }
    try {
      if (snapshot === undefined || base === undefined) {
        throw new PavilionError(ErrorCodes.BUNDLE_DELTA_SEQUENCE, `tenant ${tenant} has no distributed snapshot to apply deltas to`);
      }
      const start = mode === 'rebuild' ? 0 : entry.deltaSequence;
      const fold = await this.#foldDeltas(entry, snapshot, base, start, mode === 'rebuild' || entry.deltaData === undefined ? snapshot.compiled.data : entry.deltaData, deltas);
      if (fold.error !== undefined) throw fold.error;
      const { sequence, data } = fold;
      if (deltas.length === 0) return entry.deltaSequence;
      await this.#serveDeltas(entry, snapshot, base, sequence, data, mode === 'rebuild' ? fold.applied : [...entry.appliedDeltas, ...fold.applied]);
      entry.lastError = undefined;
      await this.#persistDeltas(entry, snapshot, base, fold.applied);
      return sequence;
    } catch (error) {
      throw this.#recordFailure(tenant, wrapError(error, ErrorCodes.BUNDLE_DELTA_INVALID, 'applying delta'));
    }
  }

  /**
   * Serve `data` (the snapshot with the deltas 1..`sequence` of deploy `base` folded in) once it
   * passes the snapshot's decision tests, and remember what it holds; a revision that fails is
   * discarded and the error thrown.
   */
  async #serveDeltas(entry: TenantEntry, snapshot: Snapshot, base: number, sequence: number, data: Record<string, unknown>, applied: readonly DeltaUpdate[]): Promise<void> {
    const loaded = await this.#options.engine.load({ ...snapshot.compiled, data, variant: `${base}.${sequence}` });
    try {
      await this.#runDecisionTests(loaded, snapshot.tests);
      this.#options.engine.promote(loaded);
    } catch (error) {
      this.#options.engine.discard(loaded);
      throw error;
    }
    entry.deltaSequence = sequence;
    entry.deltaData = data;
    entry.appliedDeltas = applied;
  }

  /**
   * Fold deltas onto `data`, in order, from the applied delta `start` of deploy `base`: each
   * must be of that deploy and continue the sequence exactly (the sequence guard), pass the
   * tenant's signature policy, have the snapshot's roots and patch cleanly. Stops at the
   * first that does not, with its error (the deltas before it are folded).
   */
  async #foldDeltas(entry: TenantEntry, snapshot: Snapshot, base: number, start: number, data: Record<string, unknown>, deltas: readonly DeltaUpdate[]): Promise<DeltaFold> {
    let sequence = start;
    const applied: DeltaUpdate[] = [];
    for (const delta of deltas) {
      try {
        if (delta.base !== base) {
          throw new PavilionError(ErrorCodes.BUNDLE_DELTA_SEQUENCE, `delta ${delta.sequence} is for deploy ${delta.base}; the active snapshot is deploy ${base}`);
        }
        if (delta.sequence !== sequence + 1) {
          throw new PavilionError(ErrorCodes.BUNDLE_DELTA_SEQUENCE, `delta ${delta.sequence} does not follow delta ${sequence} of deploy ${base} (lost or reordered)`, {
            details: { expected: sequence + 1, received: delta.sequence, base },
          });
        }
        await this.#verifyDelta(entry, delta);
        checkDeltaRoots(delta.roots, snapshot.roots);
        data = applyPatch(data, delta.operations, snapshot.roots);
      } catch (error) {
        return { sequence, data, applied, error: wrapError(error, ErrorCodes.BUNDLE_DELTA_INVALID, 'applying delta') };
      }
      sequence = delta.sequence;
      applied.push(delta);
    }
    return { sequence, data, applied };
  }

  /** A delta changes policy data as a bundle does: it passes the tenant's signature policy too. */
  async #verifyDelta(entry: TenantEntry, delta: DeltaUpdate): Promise<void> {
    const content = { tenant: entry.config.id, base: delta.base, sequence: delta.sequence, roots: delta.roots, operations: delta.operations };
    try {
      await this.#verifyWithKeys(entry, (policy) => verifyDeltaSignature(content, delta.signatures, policy));
    } catch (error) {
      if (!(error instanceof PavilionError)) throw error;
      throw new PavilionError(error.code, `delta ${delta.sequence} of deploy ${delta.base}: ${error.message}`, { cause: error, ...(error.details === undefined ? {} : { details: error.details }) });
    }
  }

  /**
   * A push must move forward: a bundle this sidecar already replaced, or one whose signature
   * is older than the active one's, comes back only through an explicit rollback.
   */
  async #checkReplay(entry: TenantEntry, bundle: Bundle, signature: SignatureInfo, origin: ActivationOrigin): Promise<void> {
    if (origin.kind !== 'push') return;
    const activeIat = entry.signature?.issuedAt;
    let refusal: PavilionError | undefined;
    if (entry.replaced.has(signature.contentSha256)) {
      refusal = new PavilionError(ErrorCodes.BUNDLE_REPLAYED, `bundle ${bundle.digest.slice(0, 12)} (revision ${bundle.revision}) was already replaced on this tenant; bring it back with a rollback`, {
        details: { revision: bundle.revision, digest: bundle.digest },
      });
    } else if (signature.issuedAt !== undefined && activeIat !== undefined && signature.issuedAt < activeIat) {
      refusal = new PavilionError(ErrorCodes.BUNDLE_REPLAYED, `bundle revision ${bundle.revision} was signed at ${signature.issuedAt}, before the active revision (${activeIat}); bring it back with a rollback`, {
        details: { revision: bundle.revision, issuedAt: signature.issuedAt, activeIssuedAt: activeIat },
      });
    }
    // the fleet saw the moves this sidecar missed: the same bytes pushed again after them are what it serves
    if (refusal !== undefined && !(await origin.redeploysPrevious?.())) throw refusal;
  }

  async #runDecisionTests(loaded: LoadedPolicy, tests: readonly DecisionTest[]): Promise<void> {
    await runDecisionTests(this.#options.engine, loaded, tests);
  }

  #recordFailure(tenant: string, error: PavilionError): PavilionError {
    const entry = this.#tenants.get(tenant);
    if (entry !== undefined) entry.lastError = tenantError(error);
    this.#options.onActivation?.(tenant, error.code);
    return error;
  }

  tenant(id: string): TenantStatus | undefined {
    const entry = this.#tenants.get(id);
    if (entry === undefined) return undefined;
    const active = this.#options.engine.active(id);
    const persistError = entry.persistErrors.snapshot ?? withoutDigest(entry.persistErrors.deltas);
    const state: ComponentState = active === undefined
      ? (entry.lastError === undefined ? 'NOT_READY' : 'ERROR')
      : (entry.lastError === undefined && persistError === undefined ? 'OK' : 'WARN');
    return {
      id,
      namespace: entry.config.namespace,
      defaultDecision: entry.config.defaultDecision,
      state,
      active,
      signature: entry.signature,
      origin: entry.origin,
      lastError: entry.lastError,
      persistError,
      lastSuccessfulActivation: entry.lastSuccessfulActivation,
      lastSuccessfulDownload: entry.lastSuccessfulDownload,
      testsPassed: entry.testsPassed,
      shadow: entry.shadow === undefined ? undefined : shadowReport(entry.shadow),
      shadowError: entry.shadowError,
    };
  }

  list(): TenantStatus[] {
    return this.ids().map((id) => this.tenant(id) as TenantStatus);
  }

  status(): ComponentStatus {
    if (!this.#started) return { state: 'NOT_READY', message: 'tenants not loaded yet' };
    const tenants = this.list();
    // a key file that cannot be read or parsed: bundles signed with that key id are refused
    const badKeys = this.#trust?.invalidKeys ?? [];
    const details = {
      ...Object.fromEntries(tenants.map((t) => [t.id, {
        state: t.state,
        revision: t.active?.revision,
        error: t.lastError?.code,
        ...(t.origin?.kind === 'persisted' ? { persisted: true, persistedDeltas: this.#tenants.get(t.id)?.deltaSequence ?? 0 } : {}),
      }])),
      ...(badKeys.length === 0 ? {} : { invalid_keys: badKeys.map((k) => ({ key_id: k.keyId, ...(k.file === undefined ? {} : { file: k.file }), message: k.error.message })) }),
    };
    const keyNote = badKeys.length > 0 ? [`signing keys that cannot be used (${ErrorCodes.BUNDLE_KEY_INVALID}): ${badKeys.map((k) => k.file ?? k.keyId).join(', ')}`] : [];
    if (tenants.length === 0) return { state: 'ERROR', message: 'no tenants configured or found', details };
    // A configured tenant without a policy fails readiness: the operator said it must be
    // served. A tenant the bundle source announced (no tenants configured) does not: one
    // policy team's refused first bundle, or a new tenant still loading, would otherwise take
    // every sidecar of the fleet out of service for all the other tenants at once.
    const inactive = tenants.filter((t) => t.active === undefined);
    const required = inactive.filter((t) => this.#tenants.get(t.id)?.explicit === true);
    if (required.length > 0 || inactive.length === tenants.length) {
      const named = required.length > 0 ? required : inactive;
      return { state: 'ERROR', message: [`tenants without an active policy: ${named.map((t) => t.id).join(', ')}`, ...keyNote].join('; '), details };
    }
    const persisted = tenants.filter((t) => t.origin?.kind === 'persisted');
    const warned = tenants.filter((t) => t.state === 'WARN');
    const messages = [
      ...(inactive.length > 0 ? [`discovered tenants without an active policy (not served until one activates): ${inactive.map((t) => t.id).join(', ')}`] : []),
      ...(warned.length > 0 ? [`tenants whose last bundle was refused: ${warned.map((t) => t.id).join(', ')}`] : []),
      ...(persisted.length > 0 ? [`serving persisted (last known good) revisions for: ${persisted.map((t) => t.id).join(', ')}`] : []),
      ...keyNote,
    ];
    if (messages.length > 0) return { state: 'WARN', message: messages.join('; '), details };
    return { state: 'OK', details };
  }
}
