/**
 * The sidecar side of bundle distribution over NATS JetStream.
 *
 * - start: connect (retrying forever with backoff and jitter, in the background when the
 *   server is not there: the tenants already serve their last known good revisions);
 * - a KV watch over every pointer delivers each tenant's current pointer, then every move;
 * - each move: download by digest, then the tenant manager's gate (signature, replay,
 *   test vectors) and an atomic swap; one tenant at a time in order, only the newest
 *   pending pointer is applied (a burst of pushes ends on the last one);
 * - after every reconnect, every tenant's pointer is read again (resync), so a move made
 *   while this sidecar was cut off is never missed, whatever the watch saw; likewise the
 *   stream's last delta, so deltas published meanwhile are replayed (the live consumer
 *   only sees new ones);
 * - its OPA-shaped status report goes to the status KV bucket on every change and on an
 *   interval, which is what `pavilion bundle status` reads.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import type { KvWatchEntry } from '@nats-io/kv';
import type { NatsConfig } from '../config/index.ts';
import type { ConsumerMessages } from '@nats-io/jetstream';
import { ErrorCodes, PavilionError, isPavilionError, wrapError, type ErrorCode } from '../lib/errors.ts';
import { parseDelta, type DeltaMessage } from './delta-message.ts';
import type { Component, ComponentStatus } from '../lib/lifecycle.ts';
import { withDeadline } from '../lib/lifecycle.ts';
import type { Metrics } from '../telemetry/index.ts';
import type { TenantManager } from '../tenants/index.ts';
import { NatsBundleStore, connectNats, tenantOfShadowKey } from './nats-bundle-store.ts';
import type { PointerEntry } from './pointer.ts';
import type { StatusReport } from './status-report.ts';
import { loadedNats } from './nats-modules.ts';

export interface NatsDistributionOptions {
  readonly config: NatsConfig;
  readonly tenants: TenantManager;
  readonly maxBundleBytes: number;
  /** This sidecar's id in status reports (the config's labels.id). */
  readonly sidecarId: string;
  readonly statusReport: () => StatusReport;
  readonly metrics?: Metrics;
  readonly log?: (level: 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>) => void;
}

type ConnectionState = 'connecting' | 'connected' | 'reconnecting' | 'closed';

interface TenantQueue {
  /** Highest pointer sequence applied or refused for good. */
  applied: number;
  /**
   * The sequence `#apply` is working on (0: none). `applied` moves only once its activation
   * ends, so without this an offer of the same pointer meanwhile (at start the KV watch and
   * the first resync both deliver the current pointer) would queue the deploy a second time.
   */
  inFlight: number;
  /**
   * The pointer in flight was offered again meanwhile (a resync): should its activation fail
   * for a transient reason, its retries start over, as a fresh offer's would have.
   */
  reoffered: boolean;
  pending: PointerEntry | undefined;
  running: Promise<void> | undefined;
  /** Live deltas, one at a time (the tenant manager orders them with activations). */
  deltas: Promise<void>;
  /** A delta is missing: later ones wait in the stream, and each new arrival rebuilds. */
  deltaGap: boolean;
  /** Shadow pointer changes, one at a time. */
  shadow: Promise<void>;
  /** The newest deploy a live delta named while this sidecar was still on an older one. */
  deltasAhead: number;
  /** Retries of a failed catch-up on stored deltas. */
  readonly deltaRetry: Retry;
  /** Retries of the pointer that last failed for a transient reason, and its sequence. */
  readonly pointerRetry: Retry;
  retrying: number;
}

/** An action that failed for a transient reason is retried this many times in a row (then at the next resync). */
const MAX_RETRIES = 8;
const MAX_RETRY_DELAY_MS = 30_000;

/**
 * One action retried after transient failures: exponential backoff with jitter, at most
 * MAX_RETRIES times in a row (then the next resync tries again); cancelled at stop.
 */
class Retry {
  attempts = 0;
  readonly #waitMs: number;
  readonly #jitterMs: number;
  #timer: NodeJS.Timeout | undefined;

  constructor(waitMs: number, jitterMs: number) {
    this.#waitMs = waitMs;
    this.#jitterMs = jitterMs;
  }

  get scheduled(): boolean {
    return this.#timer !== undefined;
  }

  /** Run `action` after the next delay, replacing one scheduled; nothing once the attempts are used up. */
  schedule(action: () => void): void {
    if (this.attempts >= MAX_RETRIES) return;
    const delayMs = Math.min(MAX_RETRY_DELAY_MS, this.#waitMs * 2 ** this.attempts) + Math.random() * this.#jitterMs;
    this.attempts++;
    this.cancel();
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      action();
    }, delayMs);
    this.#timer.unref();
  }

  cancel(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}

/**
 * Status reports after a change wait 1-2 s (jittered), coalescing bursts: a fleet's
 * reports then spread over a second instead of landing together in the next push.
 */
const STATUS_DEBOUNCE_MS = 1_000;

/**
 * Refusals that the same bytes would get again: the archive, its signature, its roots, its
 * module, a replay. BUNDLE_WASM_INVALID stays here although a worker load timeout has that
 * code too: a module whose start never returns ends the same way, and retrying it would
 * tie up a worker each time.
 */
const PERMANENT_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  ErrorCodes.BUNDLE_TOO_LARGE,
  ErrorCodes.BUNDLE_CORRUPT,
  ErrorCodes.BUNDLE_PATH_TRAVERSAL,
  ErrorCodes.BUNDLE_UNEXPECTED_ENTRY,
  ErrorCodes.BUNDLE_MANIFEST_MISSING,
  ErrorCodes.BUNDLE_MANIFEST_INVALID,
  ErrorCodes.BUNDLE_ROOTS_FOREIGN,
  ErrorCodes.BUNDLE_ROOTS_OVERLAP,
  ErrorCodes.BUNDLE_DATA_OUTSIDE_ROOTS,
  ErrorCodes.BUNDLE_WASM_MISSING,
  ErrorCodes.BUNDLE_WASM_INVALID,
  ErrorCodes.BUNDLE_ABI_UNSUPPORTED,
  ErrorCodes.BUNDLE_BUILTIN_MISSING,
  ErrorCodes.BUNDLE_SIGNATURE_MISSING,
  ErrorCodes.BUNDLE_SIGNATURE_UNEXPECTED,
  ErrorCodes.BUNDLE_SIGNATURE_INVALID,
  ErrorCodes.BUNDLE_SIGNATURE_KEY_UNKNOWN,
  ErrorCodes.BUNDLE_SIGNATURE_SCOPE,
  ErrorCodes.BUNDLE_SIGNATURE_FILES,
  ErrorCodes.BUNDLE_KEY_INVALID,
  ErrorCodes.BUNDLE_REPLAYED,
  ErrorCodes.BUNDLE_DIGEST_MISMATCH,
  ErrorCodes.BUNDLE_POINTER_INVALID,
  ErrorCodes.ENTRYPOINT_UNKNOWN,
]);

/**
 * Refusals that will not change on retry. Anything else (network, an object not visible
 * yet, an overloaded or restarting worker) is retried with backoff. Failed decision tests
 * are final when a vector got a wrong result; when every failure was an evaluation error
 * (overload, timeout, a worker restart), the tests did not really run.
 */
export function isFinal(error: unknown): boolean {
  if (!isPavilionError(error)) return false;
  if (error.code === ErrorCodes.BUNDLE_TESTS_FAILED) {
    // transient only when every failed vector could not run for a reason outside the bundle
    // (an overloaded or stopping engine); a wrong result, a timeout or a trap repeats
    const failed = (error.details?.['failed'] ?? []) as ReadonlyArray<Record<string, unknown>>;
    return failed.length === 0 || failed.some((f) => !TRANSIENT_TEST_CODES.has(f['code'] as ErrorCode));
  }
  return PERMANENT_CODES.has(error.code);
}

/** Why a decision test vector could not run that is not the bundle's doing. */
const TRANSIENT_TEST_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([ErrorCodes.EVAL_OVERLOADED, ErrorCodes.ENGINE_STOPPED]);


export class NatsDistribution implements Component {
  readonly name = 'distribution';
  readonly #options: NatsDistributionOptions;
  readonly #queues = new Map<string, TenantQueue>();
  #nc: NatsConnection | undefined;
  #store: NatsBundleStore | undefined;
  #state: ConnectionState = 'connecting';
  #reconnects = 0;
  #lastSync: string | undefined;
  #lastError: string | undefined;
  #statusTimer: NodeJS.Timeout | undefined;
  #stopping = false;
  #connecting: Promise<void> | undefined;
  #retryWake: (() => void) | undefined;
  #deltaMessages: ConsumerMessages | undefined;
  #statusPending: NodeJS.Timeout | undefined;

  constructor(options: NatsDistributionOptions) {
    this.#options = options;
    // only a sidecar with this component exports the distribution metrics (a directory-source
    // sidecar has no connection whose 0 would read as "disconnected")
    options.metrics?.registerDistributionMetrics();
  }

  async start(): Promise<void> {
    this.#options.metrics?.distributionConnected.set(0);
    this.#connecting = this.#connect();
    // Wait a bounded time for the first sync; past it, serve the last known good and keep trying.
    await withDeadline(this.#connecting, this.#options.config.connectTimeoutMs);
  }

  async #connect(): Promise<void> {
    // First connection: our own retry loop (cancellable by stop), then the client's
    // built-in reconnection (forever, with backoff and jitter) takes over.
    let nc: NatsConnection | undefined;
    const { reconnectWaitMs, reconnectJitterMs } = this.#options.config;
    while (nc === undefined && !this.#stopping) {
      try {
        nc = await connectNats(this.#options.config);
      } catch (error) {
        this.#lastError = wrapError(error, ErrorCodes.DISTRIBUTION_UNAVAILABLE, 'connecting').message;
        await new Promise<void>((resolve) => {
          this.#retryWake = resolve;
          setTimeout(resolve, reconnectWaitMs + Math.random() * reconnectJitterMs);
        });
      }
    }
    if (nc === undefined) return;
    if (this.#stopping) {
      await nc.close();
      return;
    }
    this.#nc = nc;
    this.#store = new NatsBundleStore(nc, this.#options.config);
    this.#state = 'connected';
    this.#options.metrics?.distributionConnected.set(1);
    void this.#watchStatus(nc);
    void this.#watchPointers();
    void this.#watchDeltas();
    await this.#resync();
    if (this.#stopping) return; // stopped during the first resync: no interval nobody clears
    this.#statusTimer = setInterval(() => void this.publishStatus(), this.#options.config.statusIntervalMs);
    this.#statusTimer.unref();
  }

  async #watchStatus(nc: NatsConnection): Promise<void> {
    for await (const event of nc.status()) {
      if (event.type === 'disconnect') {
        this.#state = 'reconnecting';
        this.#options.metrics?.distributionConnected.set(0);
        this.#options.log?.('warn', 'bundle distribution disconnected; serving the active revisions', { server: String(event.server ?? '') });
      } else if (event.type === 'reconnect') {
        this.#state = 'connected';
        this.#reconnects++;
        this.#options.metrics?.distributionConnected.set(1);
        this.#options.metrics?.distributionReconnects.inc();
        this.#options.log?.('info', 'bundle distribution reconnected; resynchronising every pointer');
        void this.#resync();
      }
    }
  }

  /**
   * Run `watch` until stopping: when it ends or fails, record why, pause, resync (so
   * nothing that happened in between is lost) and run it again.
   */
  async #forever(what: string, watch: (store: NatsBundleStore) => Promise<void>): Promise<void> {
    const store = this.#store;
    if (store === undefined) return;
    while (!this.#stopping) {
      try {
        await watch(store);
      } catch (error) {
        this.#lastError = wrapError(error, ErrorCodes.DISTRIBUTION_UNAVAILABLE, what).message;
      }
      if (this.#stopping) return;
      await new Promise((resolve) => setTimeout(resolve, this.#options.config.reconnectWaitMs).unref());
      void this.#resync();
    }
  }

  /** Every pointer, then every move (an ordered consumer that resumes across disconnects). */
  #watchPointers(): Promise<void> {
    return this.#forever('watching pointers', async (store) => {
      const watch = await (await store.pointers(true)).watch({ key: '>' });
      for await (const entry of watch) {
        if (this.#stopping) break;
        this.#onKvEntry(entry);
      }
    });
  }

  /** Live deltas: the next in sequence applies at once; a gap makes the tenant rebuild from its snapshot. */
  #watchDeltas(): Promise<void> {
    return this.#forever('watching deltas', async (store) => {
      await store.ensureDeltaStream();
      const consumer = await loadedNats().jetstream.jetstream(store.nc).consumers.get(store.deltaStream, {
        filter_subjects: [`${this.#options.config.subjectPrefix}.delta.>`], deliver_policy: loadedNats().jetstream.DeliverPolicy.New,
      });
      const messages = await consumer.consume();
      this.#deltaMessages = messages;
      // Deltas stored before this consumer existed (a resync may have looked before it did).
      for (const tenant of this.#options.tenants.ids()) void this.#catchUpDeltas(tenant);
      for await (const m of messages) {
        if (this.#stopping) break;
        const tenant = m.subject.slice(m.subject.lastIndexOf('.') + 1);
        if (!this.#options.tenants.has(tenant)) continue;
        let delta: DeltaMessage;
        try {
          delta = parseDelta(m.data, tenant);
        } catch (error) {
          this.#options.tenants.reportFailure(tenant, error);
          continue;
        }
        this.#onDelta(tenant, delta);
      }
    });
  }

  #onDelta(tenant: string, delta: DeltaMessage): void {
    const state = this.#options.tenants.deltaState(tenant);
    const queue = this.#queue(tenant);
    // A delta for another deploy: older ones are obsolete; a newer deploy's deltas are
    // replayed once its pointer has been applied (`#apply` catches up).
    if (state?.base === undefined || delta.base > state.base) queue.deltasAhead = Math.max(queue.deltasAhead, delta.base);
    if (state === undefined || state.base !== delta.base || delta.sequence <= state.sequence) return;
    queue.deltas = queue.deltas.then(async () => {
      const now = this.#options.tenants.deltaState(tenant);
      if (now?.base !== delta.base || delta.sequence <= now.sequence) return;
      if (delta.sequence === now.sequence + 1 && !queue.deltaGap) {
        await this.#options.tenants.applyDeltas(tenant, [{ ...delta, operations: delta.patch.data }], 'append').catch(() => undefined);
      } else {
        await this.#replayDeltas(tenant);
      }
    }).catch(() => this.#retryDeltasLater(tenant, queue));
  }

  /**
   * Replay the stored deltas of the active deploy when the stream's last one is ahead of the
   * applied sequence (published while this sidecar was away, or before its live consumer
   * existed). In the tenant's delta chain, so it never races live deltas; a failed read is
   * retried with backoff (then at the next resync).
   */
  #catchUpDeltas(tenant: string): Promise<void> {
    const queue = this.#queue(tenant);
    queue.deltas = queue.deltas.then(async () => {
      const store = this.#store;
      const state = this.#options.tenants.deltaState(tenant);
      if (store === undefined || state?.base === undefined) return;
      const last = await store.lastDelta(tenant);
      // a malformed last message says nothing about those before it: read them all
      if (last === 'malformed' || (last !== undefined && last.base === state.base && last.sequence > state.sequence)) await this.#replayDeltas(tenant);
      queue.deltaRetry.attempts = 0;
    }).catch(() => this.#retryDeltasLater(tenant, queue));
    return queue.deltas;
  }

  #retryDeltasLater(tenant: string, queue: TenantQueue): void {
    if (this.#stopping || queue.deltaRetry.scheduled) return;
    queue.deltaRetry.schedule(() => {
      if (!this.#stopping) void this.#catchUpDeltas(tenant);
    });
  }

  /** Rebuild the tenant's data from its snapshot and every stored delta of its deploy (fails when the stream cannot be read). */
  async #replayDeltas(tenant: string): Promise<void> {
    const store = this.#store;
    const state = this.#options.tenants.deltaState(tenant);
    if (store === undefined || state?.base === undefined) return;
    const all = (await store.deltas(tenant)).filter((d) => d.base === state.base).sort((a, b) => a.sequence - b.sequence);
    const contiguous: DeltaMessage[] = [];
    for (const d of all) {
      if (d.sequence === contiguous.length + 1) contiguous.push(d);
      else if (d.sequence > contiguous.length + 1) break;
    }
    if (contiguous.length > 0 && (contiguous.length !== state.sequence || all.length > contiguous.length)) {
      await this.#options.tenants.applyDeltas(tenant, contiguous.map((d) => ({ ...d, operations: d.patch.data })), 'rebuild').catch(() => undefined);
    }
    const missing = all.find((d) => d.sequence > contiguous.length + 1);
    this.#queue(tenant).deltaGap = missing !== undefined;
    if (missing !== undefined) {
      this.#options.tenants.reportFailure(tenant, new PavilionError(ErrorCodes.BUNDLE_DELTA_SEQUENCE,
        `delta ${contiguous.length + 1} of deploy ${state.base} is missing; serving the snapshot with deltas 1-${contiguous.length}`,
        { details: { base: state.base, applied: contiguous.length, next: missing.sequence } }));
    }
  }

  #onKvEntry(kvEntry: KvWatchEntry): void {
    const shadowOf = tenantOfShadowKey(kvEntry.key);
    if (shadowOf !== undefined) {
      const tenant = shadowOf;
      if (!this.#options.tenants.has(tenant)) return;
      if (kvEntry.operation !== 'PUT') {
        const queue = this.#queue(tenant);
        queue.shadow = queue.shadow.then(() => this.#options.tenants.endShadow(tenant));
        return;
      }
      try {
        const entry = NatsBundleStore.entry(tenant, kvEntry);
        if (entry !== undefined) this.#stageShadow(tenant, entry);
      } catch (error) {
        this.#options.tenants.reportFailure(tenant, error);
      }
      return;
    }
    const tenant = kvEntry.key;
    if (!this.#options.tenants.discover(tenant)) return; // not a tenant of this sidecar
    let entry: PointerEntry | undefined;
    try {
      entry = NatsBundleStore.entry(tenant, kvEntry);
    } catch (error) {
      this.#options.tenants.reportFailure(tenant, error);
      this.#options.metrics?.distributionUpdates.inc({ tenant, outcome: isPavilionError(error) ? error.code : 'error' });
      return;
    }
    if (entry !== undefined) this.#offer(tenant, entry);
  }

  #stageShadow(tenant: string, entry: PointerEntry): void {
    const store = this.#store;
    if (store === undefined) return;
    const queue = this.#queue(tenant);
    queue.shadow = queue.shadow.then(async () => {
      if (this.#options.tenants.tenant(tenant)?.shadow?.digest === entry.pointer.digest) return;
      const archive = await store.fetch(entry.pointer, this.#options.maxBundleBytes).catch((error: unknown) => {
        throw this.#options.tenants.reportFailure(tenant, error);
      });
      await this.#options.tenants.stageShadow(tenant, archive, entry.sequence);
      this.#options.log?.('info', 'shadow revision staged beside the active one', { tenant, revision: entry.pointer.revision });
      this.#statusSoon();
    }).catch(() => undefined);
  }

  /** Read every tenant's pointer again (after a reconnect, or a broken watch). */
  async #resync(): Promise<void> {
    const store = this.#store;
    if (store === undefined) return;
    try {
      const tenants = new Set(this.#options.tenants.ids());
      for (const id of await store.tenants()) if (this.#options.tenants.discover(id)) tenants.add(id);
      await Promise.all([...tenants].map(async (tenant) => {
        try {
          const entry = await store.current(tenant);
          if (entry !== undefined) this.#offer(tenant, entry);
          const shadow = await store.currentShadow(tenant);
          if (shadow !== undefined) this.#stageShadow(tenant, shadow);
          else if (this.#options.tenants.tenant(tenant)?.shadow !== undefined) this.#options.tenants.endShadow(tenant);
          // Already on the current deploy (a stale pointer: `#apply` does not run): deltas
          // published while this sidecar was away or cut off are only in the stream.
          await this.#queue(tenant).running;
          if (entry !== undefined && this.#options.tenants.deltaState(tenant)?.base === entry.sequence) {
            this.#queue(tenant).deltaRetry.attempts = 0;
            await this.#catchUpDeltas(tenant);
          }
        } catch (error) {
          if (isFinal(error)) this.#options.tenants.reportFailure(tenant, error);
        }
      }));
      this.#lastSync = new Date().toISOString();
      this.#lastError = undefined;
      await Promise.all([...this.#queues.values()].map((q) => q.running));
    } catch (error) {
      this.#lastError = wrapError(error, ErrorCodes.DISTRIBUTION_UNAVAILABLE, 'resynchronising').message;
    }
  }

  #queue(tenant: string): TenantQueue {
    let queue = this.#queues.get(tenant);
    if (queue === undefined) {
      queue = { applied: this.#options.tenants.tenant(tenant)?.origin?.sequence ?? 0, inFlight: 0, reoffered: false, pending: undefined, running: undefined, deltas: Promise.resolve(), deltaGap: false, shadow: Promise.resolve(), deltasAhead: 0, deltaRetry: this.#retry(), pointerRetry: this.#retry(), retrying: 0 };
      this.#queues.set(tenant, queue);
    }
    return queue;
  }

  /**
   * Queue a pointer for the tenant unless it is not newer than one already applied (or
   * refused for good), being applied right now, or pending: each deploy is handed to the
   * tenant manager once. A newer pointer replaces the pending one and runs after the one in
   * flight; a pointer whose activation failed for a transient reason is offered again by its
   * retry (or the next resync) once that activation has ended.
   */
  #offer(tenant: string, entry: PointerEntry): void {
    const queue = this.#queue(tenant);
    if (entry.sequence === queue.inFlight) queue.reoffered = true;
    if (entry.sequence <= queue.applied || entry.sequence <= queue.inFlight || (queue.pending !== undefined && entry.sequence <= queue.pending.sequence)) {
      this.#options.metrics?.distributionUpdates.inc({ tenant, outcome: 'stale' });
      return;
    }
    queue.pending = entry;
    if (queue.running === undefined) queue.running = this.#drain(tenant, queue);
  }

  async #drain(tenant: string, queue: TenantQueue): Promise<void> {
    while (queue.pending !== undefined && !this.#stopping) {
      const entry = queue.pending;
      queue.pending = undefined;
      queue.inFlight = entry.sequence;
      queue.reoffered = false;
      try {
        await this.#apply(tenant, queue, entry);
      } finally {
        queue.inFlight = 0;
      }
    }
    queue.running = undefined;
  }

  async #apply(tenant: string, queue: TenantQueue, entry: PointerEntry): Promise<void> {
    const store = this.#store;
    if (store === undefined) return;
    const { pointer, sequence } = entry;
    try {
      const fetchStarted = performance.now();
      const archive = await store.fetch(pointer, this.#options.maxBundleBytes).catch((error: unknown) => {
        throw this.#options.tenants.reportFailure(tenant, error);
      });
      this.#options.metrics?.activationPhaseSeconds.observe({ phase: 'fetch' }, (performance.now() - fetchStarted) / 1000);
      await this.#options.tenants.activate(tenant, archive, { kind: pointer.action, sequence });
      queue.applied = Math.max(queue.applied, sequence);
      // A live delta named this deploy before we had it: it, and any before it, are only in
      // the stream now. (On a (re)connection the resync catches up every tenant anyway; a
      // lookup after every activation cost the fleet a stream request per push.)
      if (queue.deltasAhead >= sequence) await this.#catchUpDeltas(tenant);
      queue.pointerRetry.attempts = 0;
      this.#options.metrics?.distributionUpdates.inc({ tenant, outcome: 'ok' });
      const pushedAt = Date.parse(pointer.pushed_at);
      if (Number.isFinite(pushedAt)) this.#options.metrics?.rolloutSeconds.observe(Math.max(0, Date.now() - pushedAt) / 1000);
      this.#options.log?.('info', 'bundle activated', { tenant, revision: pointer.revision, deploy: sequence, action: pointer.action });
    } catch (error) {
      const code = isPavilionError(error) ? error.code : ErrorCodes.INTERNAL;
      this.#options.metrics?.distributionUpdates.inc({ tenant, outcome: code });
      // A refused bundle stays refused; a transient failure is retried with backoff.
      if (isFinal(error)) queue.applied = Math.max(queue.applied, sequence);
      else this.#retryLater(tenant, queue, entry);
      this.#options.log?.('warn', 'bundle refused; the previous revision keeps serving', { tenant, revision: pointer.revision, deploy: sequence, code });
    }
    this.#statusSoon();
  }

  /**
   * Offer a pointer again after a transient failure, with exponential backoff and jitter,
   * a bounded number of times (a resync offers it again after that). A newer pointer, or
   * the same one offered by a resync meanwhile, makes the retry a no-op (`#offer` drops it).
   */
  #retryLater(tenant: string, queue: TenantQueue, entry: PointerEntry): void {
    if (queue.retrying !== entry.sequence || queue.reoffered) {
      queue.reoffered = false;
      queue.retrying = entry.sequence;
      queue.pointerRetry.attempts = 0;
    }
    if (this.#stopping) return;
    queue.pointerRetry.schedule(() => {
      if (!this.#stopping) this.#offer(tenant, entry);
    });
  }

  #retry(): Retry {
    return new Retry(this.#options.config.reconnectWaitMs, this.#options.config.reconnectJitterMs);
  }

  /**
   * Report a change shortly, not at once: a rollout reaches every sidecar at the same
   * moment, and thirty status writes then would compete with the activations still running.
   */
  #statusSoon(): void {
    // stopping: an activation that ends after stop() must not arm a timer stop() no longer clears
    if (this.#stopping || this.#statusPending !== undefined) return;
    this.#statusPending = setTimeout(() => {
      this.#statusPending = undefined;
      void this.publishStatus();
    }, STATUS_DEBOUNCE_MS + Math.random() * STATUS_DEBOUNCE_MS);
    this.#statusPending.unref();
  }

  /** Put this sidecar's status report in the status bucket (best effort). */
  async publishStatus(): Promise<void> {
    const store = this.#store;
    if (store === undefined || this.#state !== 'connected') return;
    try {
      const kv = await store.statusBucket();
      const report = { ...this.#options.statusReport(), sidecar: this.#options.sidecarId, reported_at: new Date().toISOString() };
      await kv.put(this.#options.sidecarId, Buffer.from(JSON.stringify(report)));
    } catch {
      // status is advisory; the next interval tries again
    }
  }

  /** Wait until every queued pointer has been handled (tests, benchmarks). */
  async settled(): Promise<void> {
    await Promise.all([...this.#queues.values()].flatMap((q) => [q.running, q.deltas, q.shadow]));
  }

  status(): ComponentStatus {
    const details = {
      connection: this.#state,
      servers: this.#options.config.servers,
      reconnects: this.#reconnects,
      ...(this.#lastSync === undefined ? {} : { lastSync: this.#lastSync }),
      ...(this.#lastError === undefined ? {} : { lastError: this.#lastError }),
    };
    if (this.#state === 'connected') return { state: 'OK', details };
    return {
      state: 'WARN',
      message: `bundle distribution (NATS) is ${this.#state === 'connecting' ? 'not reachable yet' : 'disconnected'}; active revisions keep serving and updates resume on reconnect`,
      details,
    };
  }

  async stop(deadlineMs: number): Promise<void> {
    this.#stopping = true;
    this.#state = 'closed';
    if (this.#statusTimer !== undefined) clearInterval(this.#statusTimer);
    if (this.#statusPending !== undefined) clearTimeout(this.#statusPending);
    for (const queue of this.#queues.values()) {
      queue.pointerRetry.cancel();
      queue.deltaRetry.cancel();
    }
    this.#retryWake?.();
    this.#deltaMessages?.stop();
    // a first connection still in flight closes itself when it lands
    if (this.#connecting !== undefined) await withDeadline(this.#connecting, deadlineMs);
    const nc = this.#nc;
    if (nc !== undefined) await withDeadline(nc.close(), deadlineMs);
  }
}
