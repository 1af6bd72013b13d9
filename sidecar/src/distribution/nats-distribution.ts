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
 *   stream's last delta and the tenant's delta record (`<tenant>.deltas` beside the
 *   pointer: how many deltas the deploy has), so deltas published meanwhile are replayed
 *   (the live consumer only sees new ones) and a history that is incomplete in the stream
 *   is reported (ERR_BUNDLE_DELTA_SEQUENCE) instead of served as complete;
 * - deltas follow OPA's delta bundles: the next one of the active deploy applies on top;
 *   a gap rebuilds from the snapshot with the stored deltas of the deploy; a delta with a
 *   number already applied is a redelivery when its content is the same, and a conflict
 *   (ERR_BUNDLE_DELTA_CONFLICT: the publisher's numbering started over) when it is not,
 *   which rebuilds from the snapshot too, once the stream holds more deltas than were
 *   applied (until then the applied ones keep serving, reported);
 * - a watch (pointers, deltas) that fails is started again with doubling backoff (capped),
 *   each time after a resync (never two at once); until it runs again, status is WARN
 *   with its code;
 * - a deploy that fails for a transient reason is retried with capped backoff for as long
 *   as the failure lasts; a final refusal (signature, replay, tests, ...) is not, unless it
 *   is for a key reason: the key may arrive on disk without a new push, so it is tried
 *   again at the pace of the key re-read interval, with backoff, while the pointer names it;
 * - the live delta consumer losing its consumer or stream restarts the delta watch (after a
 *   resync); its pulls refused (NATS permissions) or unanswered make status WARN with the
 *   code until deltas or heartbeats come again;
 * - its OPA-shaped status report goes to the status KV bucket on every change and on an
 *   interval, which is what `pavilion bundle status` reads.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import type { KvWatchEntry } from '@nats-io/kv';
import type { NatsConfig } from '../config/index.ts';
import type { ConsumerMessages } from '@nats-io/jetstream';
import { ErrorCodes, PavilionError, describeThrown, isPavilionError, wrapError, type ErrorCode } from '../lib/errors.ts';
import { parseDelta, type DeltaMessage } from './delta-message.ts';
import type { Component, ComponentStatus } from '../lib/lifecycle.ts';
import { withDeadline } from '../lib/lifecycle.ts';
import type { Metrics } from '../telemetry/index.ts';
import { DEFAULT_TRUST_REREAD_INTERVAL_MS, KEY_REFUSALS, type TenantManager } from '../tenants/index.ts';
import { NatsBundleStore, connectNats, distributionCode, tenantOfShadowKey, type DeltaRecordV1 } from './nats-bundle-store.ts';
import { sha256Hex } from '../lib/sha256.ts';
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
  /** Digests of the deltas applied on top of the deploy `base` (a redelivery and a conflict look alike otherwise). */
  appliedDeltas: { readonly base: number; readonly digests: Map<number, string> } | undefined;
  /**
   * The deploy whose applied deltas conflict with the stream's (0: none): later deltas of it
   * rebuild from the snapshot instead of applying on top, until a rebuild has succeeded.
   */
  divergedBase: number;
  /** Shadow pointer changes, one at a time. */
  shadow: Promise<void>;
  /** The newest deploy a live delta named while this sidecar was still on an older one. */
  deltasAhead: number;
  /** Retries of a failed catch-up on stored deltas. */
  readonly deltaRetry: Retry;
  /** Retries of the pointer that last failed for a transient reason, and its sequence. */
  readonly pointerRetry: Retry;
  retrying: number;
  /** Retries of the deploy last refused for a key reason, and its sequence. */
  readonly keyRetry: Retry;
  keyRetrying: number;
  /**
   * That deploy's archive, kept while it is retried: a retry verifies it again against the
   * keys on disk without downloading it again (one archive per tenant at most).
   */
  keyRefusedArchive: Buffer | undefined;
}

/** The longest wait between two tries of an action that keeps failing for a transient reason, and between two starts of a failing watch. */
const MAX_RETRY_DELAY_MS = 30_000;

/** `waitMs` doubled `doublings` times, at most MAX_RETRY_DELAY_MS, plus up to `jitterMs`. */
function backoffMs(waitMs: number, jitterMs: number, doublings: number): number {
  return Math.min(MAX_RETRY_DELAY_MS, waitMs * 2 ** doublings) + Math.random() * jitterMs;
}

/**
 * One action retried after transient failures: exponential backoff with jitter, capped at
 * MAX_RETRY_DELAY_MS, for as long as the failure lasts (a transient failure that outlasts
 * a fixed number of tries would otherwise be dropped until the next reconnect); cancelled
 * at stop. Final refusals never get here.
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

  /** Run `action` after the next delay, replacing one scheduled. */
  schedule(action: () => void): void {
    const delayMs = backoffMs(this.#waitMs, this.#jitterMs, this.attempts);
    this.attempts = Math.min(this.attempts + 1, MAX_BACKOFF_EXPONENT);
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

/** How often the pointer watch looks at its bucket's identity (#watchPointers). */
const POINTER_BUCKET_CHECK_MS = 5_000;

/** Past this many doublings every backoff is at its cap anyway. */
const MAX_BACKOFF_EXPONENT = 30;

/** What identifies a delta's content: tenant, deploy, number, roots, patch (not its signatures: re-signing changes nothing). */
function deltaDigest(delta: DeltaMessage): string {
  return sha256Hex(Buffer.from(JSON.stringify([delta.tenant, delta.base, delta.sequence, delta.roots, delta.patch.data])));
}

/** A foreign failure as a distribution error: a refusal by NATS permissions keeps its own code. */
function distributionError(error: unknown, context: string): PavilionError {
  if (error instanceof PavilionError) return new PavilionError(error.code, `${context}: ${error.message}`, { cause: error, ...(error.details === undefined ? {} : { details: error.details }) });
  return wrapError(error, distributionCode(describeThrown(error)), context);
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
  // deltas: the deltas themselves, or their place in the sequence
  ErrorCodes.BUNDLE_DELTA_INVALID,
  ErrorCodes.BUNDLE_DELTA_ROOTS,
  ErrorCodes.BUNDLE_DELTA_SEQUENCE,
  ErrorCodes.BUNDLE_DELTA_CONFLICT,
  ErrorCodes.BUNDLE_DELTA_LIMIT,
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

/**
 * Settle an application of deltas: true once applied, false once refused for good; anything
 * else (an overloaded or restarting engine, test vectors that could not run) is thrown, so
 * the caller's chain tries again from the stream with backoff (#retryDeltasLater) instead of
 * leaving the data short of the deltas until another one arrives.
 */
function appliedOrRefused(applying: Promise<unknown>): Promise<boolean> {
  return applying.then(() => true, (error: unknown) => {
    if (isFinal(error)) return false;
    throw error;
  });
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
  /** A resync that could not read some tenant's pointers (not a final refusal): run again with backoff. */
  readonly #resyncRetry: Retry;
  #statusTimer: NodeJS.Timeout | undefined;
  #stopping = false;
  #connecting: Promise<void> | undefined;
  /** Pending waits (connection retries, watch restarts): stop() ends them. */
  readonly #sleepers = new Set<() => void>();
  /** Watches that failed and have not run since, with why: status is WARN while any is here. */
  readonly #watchErrors = new Map<string, PavilionError>();
  /** The resync running, and whether another was asked for meanwhile (it runs once this one ends). */
  #resyncing: Promise<void> | undefined;
  #resyncAgain = false;
  #deltaMessages: ConsumerMessages | undefined;
  /** Why the live delta consumer's pulls fail, until a delta or a heartbeat comes: status is WARN meanwhile. */
  #deltaPullError: PavilionError | undefined;
  #statusPending: NodeJS.Timeout | undefined;

  constructor(options: NatsDistributionOptions) {
    this.#options = options;
    this.#resyncRetry = this.#retry();
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
        await this.#sleep(reconnectWaitMs + Math.random() * reconnectJitterMs);
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
      } else if (event.type === 'error') {
        this.#onServerError(event.error);
      }
    }
  }

  /**
   * An error the server sent: a pull from the delta stream refused (NATS permissions) is the
   * live delta consumer getting nothing, which the consumer itself never reports (it waits
   * for heartbeats that cannot come).
   */
  #onServerError(error: Error): void {
    const store = this.#store;
    const text = describeThrown(error);
    if (store === undefined || !text.includes(`.CONSUMER.MSG.NEXT.${store.deltaStream}.`)) return;
    this.#deltaPullError = new PavilionError(distributionCode(text), `pulling deltas: ${text}`, { cause: error });
    this.#statusSoon();
  }

  /**
   * Run `watch` until stopping. When it ends or fails: record why (status is WARN with its
   * code until the watch runs again), wait - doubling the wait, up to MAX_RETRY_DELAY_MS,
   * while it keeps failing before it runs - resync (so nothing that happened in between is
   * lost; a resync asked for while one runs follows it, never beside it) and run it again.
   * `watch` calls `running` once it is established.
   */
  async #forever(what: string, watch: (store: NatsBundleStore, running: () => void) => Promise<void>): Promise<void> {
    const store = this.#store;
    if (store === undefined) return;
    let failures = 0;
    while (!this.#stopping) {
      let ran = false;
      const running = (): void => {
        ran = true;
        failures = 0;
        this.#watchErrors.delete(what);
      };
      try {
        await watch(store, running);
        if (!this.#stopping) throw new PavilionError(ErrorCodes.DISTRIBUTION_UNAVAILABLE, 'the watch ended');
      } catch (error) {
        if (this.#stopping) return;
        this.#watchErrors.set(what, distributionError(error, what));
      }
      if (!ran) failures = Math.min(failures + 1, MAX_BACKOFF_EXPONENT);
      const { reconnectWaitMs, reconnectJitterMs } = this.#options.config;
      await this.#sleep(backoffMs(reconnectWaitMs, reconnectJitterMs, Math.max(0, failures - 1)));
      if (this.#stopping) return;
      void this.#resync();
    }
  }

  /** Wait `ms` (a timer that does not hold the process open); stop() ends the wait at once. */
  #sleep(ms: number): Promise<void> {
    if (this.#stopping) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.#sleepers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      timer.unref();
      this.#sleepers.add(wake);
    });
  }

  /**
   * Every pointer, then every move (an ordered consumer that resumes across disconnects).
   * The bucket made again under the watch (deleted, or lost with the server's store): its
   * ordered consumer would resume at its old position in the new bucket, past the new
   * bucket's first pointers, without a word. So the bucket's identity is looked at every
   * POINTER_BUCKET_CHECK_MS, and a new one ends the watch: it starts again on the new bucket,
   * after a resync (which reports a tenant whose pointer went back, #checkNotBehind).
   */
  #watchPointers(): Promise<void> {
    return this.#forever('watching pointers', async (store, running) => {
      const kv = await store.pointers(true);
      const created = await store.pointerBucketCreated();
      const watch = await kv.watch({ key: '>' });
      running();
      let remade: string | undefined;
      const check = setInterval(() => {
        store.pointerBucketCreated().then((now) => {
          if (now === undefined || now === created || remade !== undefined) return;
          remade = now;
          watch.stop();
        }, () => undefined); // not answered now: looked at again next time
      }, POINTER_BUCKET_CHECK_MS);
      check.unref();
      try {
        for await (const entry of watch) {
          if (this.#stopping) break;
          this.#onKvEntry(entry);
        }
      } finally {
        clearInterval(check);
      }
      if (remade !== undefined) {
        throw new PavilionError(ErrorCodes.DISTRIBUTION_UNAVAILABLE, `the pointer bucket was made again (created ${remade}, the watched one ${created ?? 'unknown'}): watching the new one`);
      }
    });
  }

  /** Live deltas: the next in sequence applies at once; a gap makes the tenant rebuild from its snapshot. */
  #watchDeltas(): Promise<void> {
    return this.#forever('watching deltas', async (store, running) => {
      await store.ensureDeltaStream();
      const consumer = await loadedNats().jetstream.jetstream(store.nc).consumers.get(store.deltaStream, {
        // one filter, as a string: nats.js sends an array of filters to the API subject
        // without the filter (CONSUMER.CREATE.<stream>), which confined grants refuse
        filter_subjects: `${this.#options.config.subjectPrefix}.delta.>`, deliver_policy: loadedNats().jetstream.DeliverPolicy.New,
      });
      const messages = await consumer.consume();
      this.#deltaMessages = messages;
      void this.#followDeltaConsumer(messages);
      running();
      // Deltas stored before this consumer existed (a resync may have looked before it did).
      for (const tenant of this.#options.tenants.ids()) void this.#catchUpDeltas(tenant);
      for await (const m of messages) {
        if (this.#stopping) break;
        this.#deltaPullError = undefined;
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

  /**
   * The live delta consumer's notifications. Its consumer or stream gone (deleted, lost with
   * a server restart): stopped with why, so the watch reports it and starts again after a
   * resync - left alone, the client waits for two missed heartbeats, then makes the consumer
   * again from where it was, past every delta of a stream made again. Its pulls unanswered
   * (heartbeats missed): reported until a heartbeat or a delta comes.
   */
  async #followDeltaConsumer(messages: ConsumerMessages): Promise<void> {
    for await (const notification of messages.status()) {
      switch (notification.type) {
        case 'consumer_deleted':
        case 'consumer_not_found':
        case 'stream_not_found':
          messages.stop(new PavilionError(ErrorCodes.DISTRIBUTION_UNAVAILABLE, `the live delta consumer lost its ${notification.type === 'stream_not_found' ? 'stream' : 'consumer'} (${notification.type})`));
          return;
        case 'heartbeats_missed':
        case 'no_responders':
          this.#deltaPullError ??= new PavilionError(ErrorCodes.DISTRIBUTION_UNAVAILABLE, `pulling deltas: no answer from the server (${notification.type})`);
          this.#statusSoon();
          break;
        case 'heartbeat':
          this.#deltaPullError = undefined;
          break;
      }
    }
  }

  #onDelta(tenant: string, delta: DeltaMessage): void {
    const state = this.#options.tenants.deltaState(tenant);
    const queue = this.#queue(tenant);
    // A delta for another deploy: older ones are obsolete; a newer deploy's deltas are
    // replayed once its pointer has been applied (`#apply` catches up).
    if (state?.base === undefined || delta.base > state.base) queue.deltasAhead = Math.max(queue.deltasAhead, delta.base);
    if (state === undefined || state.base !== delta.base) return;
    // a delta already applied, delivered again: nothing to do, unless its content differs
    if (delta.sequence <= state.sequence && !this.#differsFromApplied(queue, delta)) return;
    queue.deltas = queue.deltas.then(async () => {
      const now = this.#options.tenants.deltaState(tenant);
      if (now?.base !== delta.base) return;
      if (delta.sequence <= now.sequence) {
        if (this.#differsFromApplied(queue, delta)) await this.#replayDeltas(tenant, { conflict: delta });
        return;
      }
      if (delta.sequence === now.sequence + 1 && !queue.deltaGap && queue.divergedBase !== delta.base) {
        const applied = await appliedOrRefused(this.#options.tenants.applyDeltas(tenant, [{ ...delta, operations: delta.patch.data }], 'append'));
        if (applied) this.#remember(queue, delta.base, [delta], 'append');
      } else {
        await this.#replayDeltas(tenant);
      }
    }).catch(() => this.#retryDeltasLater(tenant, queue));
  }

  /** The delta has a number applied on its deploy, with other content (the publisher numbered it again). */
  #differsFromApplied(queue: TenantQueue, delta: DeltaMessage): boolean {
    if (queue.appliedDeltas?.base !== delta.base) return false;
    const digest = queue.appliedDeltas.digests.get(delta.sequence);
    return digest !== undefined && digest !== deltaDigest(delta);
  }

  #remember(queue: TenantQueue, base: number, deltas: readonly DeltaMessage[], mode: 'append' | 'rebuild'): void {
    if (mode === 'rebuild' || queue.appliedDeltas?.base !== base) queue.appliedDeltas = { base, digests: new Map() };
    for (const d of deltas) queue.appliedDeltas.digests.set(d.sequence, deltaDigest(d));
  }

  /**
   * Replay the stored deltas of the active deploy when the deploy has more than are applied
   * (published while this sidecar was away, or before its live consumer existed: the
   * stream's last delta or the tenant's delta record says so), or when the stream's last
   * delta conflicts with the one applied under its number. In the tenant's delta chain, so
   * it never races live deltas; a failed read is retried with backoff.
   */
  #catchUpDeltas(tenant: string): Promise<void> {
    const queue = this.#queue(tenant);
    queue.deltas = queue.deltas.then(async () => {
      const store = this.#store;
      const state = this.#options.tenants.deltaState(tenant);
      if (store === undefined || state?.base === undefined) return;
      const [last, record] = await Promise.all([store.lastDelta(tenant), store.deltaRecord(tenant)]);
      const lastOfDeploy = last !== undefined && last !== 'malformed' && last.base === state.base ? last : undefined;
      const published = Math.max(record?.base === state.base ? record.sequence : 0, lastOfDeploy?.sequence ?? 0);
      // a malformed last message says nothing about those before it: read them all
      if (last === 'malformed' || published > state.sequence || queue.divergedBase === state.base
        || (lastOfDeploy !== undefined && this.#differsFromApplied(queue, lastOfDeploy))) {
        await this.#replayDeltas(tenant, { record });
      }
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

  /**
   * Rebuild the tenant's data from its snapshot and the stored deltas 1, 2, 3, ... of its
   * deploy (the last stored under a number wins: a publisher that numbered again published
   * it last). Then report, on the tenant: a conflict with what was applied
   * (ERR_BUNDLE_DELTA_CONFLICT) - rebuilt, or, while the stream holds no more deltas than
   * were applied, served as applied until it holds more (see below); else a history the
   * deploy has but the stream does not
   * (ERR_BUNDLE_DELTA_SEQUENCE: a gap, a missing start, deltas the record counts but the
   * stream lost) - the snapshot with the deltas before it keeps serving, as for any gap.
   * Fails when the stream cannot be read, or the rebuild failed for a reason that may pass
   * (appliedOrRefused): the caller retries.
   */
  async #replayDeltas(tenant: string, hints: { readonly record?: DeltaRecordV1 | undefined; readonly conflict?: DeltaMessage } = {}): Promise<void> {
    const store = this.#store;
    const state = this.#options.tenants.deltaState(tenant);
    if (store === undefined || state?.base === undefined) return;
    const base = state.base;
    const queue = this.#queue(tenant);
    const record = 'record' in hints ? hints.record : await store.deltaRecord(tenant);
    const recorded = record?.base === base ? record : undefined;
    const from = recorded?.first_stream_seq;
    const stored = (await store.deltas(tenant, from === undefined ? {} : { fromStreamSequence: from })).filter((d) => d.base === base);
    const byNumber = new Map<number, DeltaMessage>();
    let conflict = hints.conflict;
    for (const d of stored) {
      const earlier = byNumber.get(d.sequence);
      if (earlier !== undefined && deltaDigest(earlier) !== deltaDigest(d)) conflict ??= d;
      byNumber.set(d.sequence, d);
    }
    const contiguous: DeltaMessage[] = [];
    for (let next = byNumber.get(1); next !== undefined; next = byNumber.get(contiguous.length + 1)) contiguous.push(next);
    conflict ??= contiguous.find((d) => this.#differsFromApplied(queue, d));
    if (conflict !== undefined) queue.divergedBase = base;
    // Diverged: rebuild once the stream holds more deltas than were applied. The tenant
    // manager refuses a rebuild to fewer (older data of the same deploy), and one to as many
    // would not replace the data: the engine keeps a tenant's loaded data per deploy and
    // delta number, and that pair is in use already.
    const diverged = queue.divergedBase === base;
    let rebuilt = false;
    if (contiguous.length > 0 && (diverged
      ? contiguous.length > state.sequence
      : contiguous.length !== state.sequence || byNumber.size > contiguous.length)) {
      rebuilt = await appliedOrRefused(this.#options.tenants.applyDeltas(tenant, contiguous.map((d) => ({ ...d, operations: d.patch.data })), 'rebuild'));
      if (rebuilt) {
        this.#remember(queue, base, contiguous, 'rebuild');
        queue.divergedBase = 0;
      }
    }
    const served = this.#options.tenants.deltaState(tenant)?.sequence ?? 0;
    let published = recorded?.sequence ?? 0;
    for (const n of byNumber.keys()) published = Math.max(published, n);
    const have = Math.max(contiguous.length, served);
    queue.deltaGap = published > have;
    if (conflict !== undefined || queue.divergedBase === base) {
      const sequence = conflict?.sequence ?? served;
      this.#options.tenants.reportFailure(tenant, new PavilionError(ErrorCodes.BUNDLE_DELTA_CONFLICT, rebuilt
        ? `delta ${sequence} of deploy ${base} differs from the delta ${sequence} this sidecar applied (its numbering started over); rebuilt from the snapshot with the stored deltas 1-${contiguous.length}`
        : `delta ${sequence} of deploy ${base} differs from the delta ${sequence} this sidecar applied (its numbering started over); the stream holds deltas 1-${contiguous.length} of it, so the deltas 1-${served} applied keep serving until the stream holds more than ${served} (then the data is rebuilt from the snapshot) or the next deploy`,
      { details: { base, sequence, applied: served, stored: contiguous.length, rebuilt } }));
    } else if (queue.deltaGap) {
      this.#options.tenants.reportFailure(tenant, new PavilionError(ErrorCodes.BUNDLE_DELTA_SEQUENCE,
        `delta ${have + 1} of deploy ${base} is missing from the delta stream (the deploy has deltas through ${published}); serving the snapshot with deltas 1-${served}`,
        { details: { base, applied: served, next: have + 1, published } }));
    }
  }

  #onKvEntry(kvEntry: KvWatchEntry): void {
    const shadowOf = tenantOfShadowKey(kvEntry.key);
    if (shadowOf !== undefined) {
      const tenant = shadowOf;
      if (!this.#options.tenants.has(tenant)) return;
      if (kvEntry.operation !== 'PUT') {
        this.#endShadow(tenant);
        return;
      }
      try {
        const entry = NatsBundleStore.entry(tenant, kvEntry);
        if (entry !== undefined) this.#stageShadow(tenant, entry);
      } catch (error) {
        this.#options.tenants.reportShadowFailure(tenant, error);
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
    // below the applied deploy: a replay of moves the watch missed while a resync ran ahead of
    // it (after a reconnect), or a bucket made again; only the key's current value can tell
    if (entry !== undefined && entry.sequence < this.#queue(tenant).applied) void this.#confirmBehind(tenant);
    if (entry !== undefined) this.#offer(tenant, entry);
  }

  /** Check the tenant's current pointer (not a watch entry, which may be history) against the applied deploy. */
  async #confirmBehind(tenant: string): Promise<void> {
    try {
      const current = await this.#store?.current(tenant);
      if (!this.#stopping) this.#checkNotBehind(tenant, current);
    } catch {
      // not read now: the next resync checks it
    }
  }

  #stageShadow(tenant: string, entry: PointerEntry): void {
    const store = this.#store;
    if (store === undefined) return;
    const queue = this.#queue(tenant);
    queue.shadow = queue.shadow.then(async () => {
      if (this.#options.tenants.tenant(tenant)?.shadow?.digest === entry.pointer.digest) return;
      const archive = await store.fetch(entry.pointer, this.#options.maxBundleBytes).catch((error: unknown) => {
        throw this.#options.tenants.reportShadowFailure(tenant, error);
      });
      await this.#options.tenants.stageShadow(tenant, archive, entry.sequence);
      this.#options.log?.('info', 'shadow revision staged beside the active one', { tenant, revision: entry.pointer.revision });
      this.#statusSoon();
    }).catch(() => undefined);
  }

  /**
   * The tenant's current pointer numbered below the deploy this sidecar applied (read by a
   * resync, or after the watch delivered such a pointer): KV numbers never go back within a
   * bucket's life, so the pointer bucket was made
   * again (deleted, or lost with the server's store). Every pointer numbered up to the
   * applied deploy is then taken as stale, so say so on the tenant instead of ignoring pushes
   * without a word (also when it names the bytes served: the next pushes would be ignored).
   */
  #checkNotBehind(tenant: string, entry: PointerEntry | undefined): void {
    const applied = this.#queue(tenant).applied;
    if (entry === undefined || entry.sequence >= applied) return;
    this.#options.tenants.reportFailure(tenant, new PavilionError(ErrorCodes.BUNDLE_POINTER_INVALID,
      `the pointer's deploy number went back from ${applied} to ${entry.sequence} (the pointer bucket was made again?): deploy ${applied} keeps serving, and pushes numbered up to ${applied} are taken as stale; push until the number passes ${applied}, or restart this sidecar with an empty last known good directory`,
      { details: { applied, pointer: entry.sequence, revision: entry.pointer.revision } }));
  }

  /** Run the resync again after the next backoff (a tenant's pointer, or the tenants, could not be read). */
  #resyncLater(): void {
    if (!this.#stopping) this.#resyncRetry.schedule(() => void this.#resync());
  }

  /** End the tenant's shadow revision in its shadow chain (after a staging under way, never beside it). */
  #endShadow(tenant: string): void {
    const queue = this.#queue(tenant);
    queue.shadow = queue.shadow.then(() => this.#options.tenants.endShadow(tenant)).catch((error: unknown) => {
      this.#options.log?.('warn', 'ending the shadow revision failed', { tenant, error: describeThrown(error) });
    });
  }

  /**
   * Read every tenant's pointer again (after a reconnect, or a broken watch). One at a time:
   * asked for while one runs, another runs once it ends (the callers wait for that one).
   */
  #resync(): Promise<void> {
    if (this.#resyncing !== undefined) {
      this.#resyncAgain = true;
      return this.#resyncing;
    }
    const run = (async () => {
      try {
        do {
          this.#resyncAgain = false;
          await this.#resyncOnce();
        } while (this.#resyncAgain && !this.#stopping);
      } finally {
        this.#resyncing = undefined;
      }
    })();
    this.#resyncing = run;
    return run;
  }

  async #resyncOnce(): Promise<void> {
    const store = this.#store;
    if (store === undefined) return;
    try {
      const tenants = new Set(this.#options.tenants.ids());
      const failed: string[] = [];
      for (const id of await store.tenants()) if (this.#options.tenants.discover(id)) tenants.add(id);
      await Promise.all([...tenants].map(async (tenant) => {
        try {
          const entry = await store.current(tenant);
          this.#checkNotBehind(tenant, entry);
          // the deploy this sidecar serves from its last known good (started without NATS),
          // named by the source again: reported as the source's from now on, nothing reloaded
          if (entry !== undefined) await this.#options.tenants.confirmSource(tenant, entry.sequence, entry.pointer.digest);
          if (entry !== undefined) this.#offer(tenant, entry);
          const shadow = await store.currentShadow(tenant);
          if (shadow !== undefined) this.#stageShadow(tenant, shadow);
          else if (this.#options.tenants.tenant(tenant)?.shadow !== undefined) this.#endShadow(tenant);
          // Already on the current deploy (a stale pointer: `#apply` does not run): deltas
          // published while this sidecar was away or cut off are only in the stream.
          await this.#queue(tenant).running;
          if (entry !== undefined && this.#options.tenants.deltaState(tenant)?.base === entry.sequence) {
            this.#queue(tenant).deltaRetry.attempts = 0;
            await this.#catchUpDeltas(tenant);
          }
        } catch (error) {
          if (isFinal(error)) this.#options.tenants.reportFailure(tenant, error);
          else failed.push(`${tenant}: ${describeThrown(error)}`);
        }
      }));
      if (failed.length > 0) {
        // a move the watch missed may be behind one of them: not synchronised until it is read
        this.#lastError = `resynchronising: the pointers of ${failed.length} tenant(s) could not be read, tried again shortly: ${failed.slice(0, 3).join('; ')}`;
        this.#resyncLater();
        return;
      }
      this.#resyncRetry.attempts = 0;
      this.#resyncRetry.cancel();
      this.#lastSync = new Date().toISOString();
      this.#lastError = undefined; // the connection's and the resync's own error (a failing watch keeps its own)
      await Promise.all([...this.#queues.values()].map((q) => q.running));
    } catch (error) {
      this.#lastError = wrapError(error, ErrorCodes.DISTRIBUTION_UNAVAILABLE, 'resynchronising').message;
      this.#resyncLater();
    }
  }

  #queue(tenant: string): TenantQueue {
    let queue = this.#queues.get(tenant);
    if (queue === undefined) {
      queue = {
        applied: this.#options.tenants.tenant(tenant)?.origin?.sequence ?? 0, inFlight: 0, reoffered: false, pending: undefined, running: undefined,
        deltas: Promise.resolve(), deltaGap: false, appliedDeltas: undefined, divergedBase: 0, shadow: Promise.resolve(), deltasAhead: 0,
        deltaRetry: this.#retry(), pointerRetry: this.#retry(), retrying: 0,
        keyRetry: new Retry(DEFAULT_TRUST_REREAD_INTERVAL_MS, this.#options.config.reconnectJitterMs), keyRetrying: 0, keyRefusedArchive: undefined,
      };
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
    try {
      while (queue.pending !== undefined && !this.#stopping) {
        const entry = queue.pending;
        queue.pending = undefined;
        queue.inFlight = entry.sequence;
        queue.reoffered = false;
        try {
          await this.#apply(tenant, queue, entry);
        } catch (error) {
          // `#apply` settles refusals itself: whatever escapes it is reported and retried,
          // and never leaves the tenant without a drain (its next pointers would wait forever)
          this.#options.tenants.reportFailure(tenant, wrapError(error, ErrorCodes.INTERNAL, `applying deploy ${entry.sequence}`));
          if (entry.sequence > queue.applied) this.#retryLater(tenant, queue, entry);
        } finally {
          queue.inFlight = 0;
        }
      }
    } finally {
      queue.running = undefined;
    }
  }

  /**
   * Whether a rollback brought these bytes back just before this push: going back through the
   * history from `entry`, the deploys naming the same bytes reach a rollback before any deploy
   * of other bytes. Then the push re-deploys what the fleet serves since that rollback, which
   * this sidecar missed (down or cut off). Pushes alone never qualify: the same replaced bytes
   * pushed twice are refused twice. Read only when the replay check would refuse the push.
   */
  async #redeploysPrevious(store: NatsBundleStore, tenant: string, entry: PointerEntry): Promise<boolean> {
    const asking = `the replay check could not read ${tenant}'s deploy history (to tell a re-push after a rollback from a replay)`;
    // history() throws typed errors only (its read's, or the distribution's UNAVAILABLE)
    const history = await store.history(tenant).catch((error: PavilionError) => {
      throw new PavilionError(error.code, `${asking}: ${error.message}`, { cause: error });
    });
    // A read that ends before this deploy (the client stops at a heartbeat) proves nothing:
    // retried, not a refusal. One that goes past it without it, or an empty one (the key
    // purged), will not bring it back: no rollback is found below.
    const newest = history.at(-1)?.sequence;
    if (newest !== undefined && newest < entry.sequence) {
      throw new PavilionError(ErrorCodes.DISTRIBUTION_UNAVAILABLE, `${asking}: it does not reach deploy ${entry.sequence} yet`);
    }
    const before = history.filter((e) => e.sequence < entry.sequence).reverse();
    for (const earlier of before) {
      if (earlier.pointer.digest !== entry.pointer.digest) return false;
      if (earlier.pointer.action === 'rollback') return true;
    }
    return false;
  }

  async #apply(tenant: string, queue: TenantQueue, entry: PointerEntry): Promise<void> {
    const store = this.#store;
    if (store === undefined) return;
    const { pointer, sequence } = entry;
    let archive = queue.keyRetrying === sequence ? queue.keyRefusedArchive : undefined;
    queue.keyRefusedArchive = undefined;
    try {
      if (archive === undefined) {
        const fetchStarted = performance.now();
        archive = await store.fetch(pointer, this.#options.maxBundleBytes).catch((error: unknown) => {
          throw this.#options.tenants.reportFailure(tenant, error);
        });
        this.#options.metrics?.activationPhaseSeconds.observe({ phase: 'fetch' }, (performance.now() - fetchStarted) / 1000);
      }
      await this.#options.tenants.activate(tenant, archive, {
        kind: pointer.action,
        sequence,
        ...(pointer.action === 'push' ? { redeploysPrevious: () => this.#redeploysPrevious(store, tenant, entry) } : {}),
      });
      queue.applied = Math.max(queue.applied, sequence);
      if (this.#options.tenants.deltaState(tenant)?.base === sequence) queue.deltaGap = false; // a new deploy: its deltas start at 1
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
      // A refused bundle stays refused, unless the keys on disk can change that; a transient
      // failure is retried with backoff.
      if (isPavilionError(error) && KEY_REFUSALS.has(error.code) && archive !== undefined) {
        queue.keyRefusedArchive = archive;
        this.#retryForKeys(tenant, queue, entry);
      } else if (isFinal(error)) queue.applied = Math.max(queue.applied, sequence);
      else this.#retryLater(tenant, queue, entry);
      this.#options.log?.('warn', 'bundle refused; the previous revision keeps serving', { tenant, revision: pointer.revision, deploy: sequence, code });
    }
    this.#statusSoon();
  }

  /**
   * Offer a pointer again after a transient failure, with exponential backoff (capped) and
   * jitter, for as long as the failure lasts. A newer pointer, or
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

  /**
   * Try a deploy refused for a key reason again, for as long as the pointer names it: the
   * operator may add or replace the key file (a Secret updated in place) without a new push.
   * First after the tenant manager's key re-read interval (sooner, the keys would not be read
   * again), doubling up to MAX_RETRY_DELAY_MS; each try reads the pointer (one KV get) and
   * offers the deploy only if the pointer is still at it, verifying the archive kept from the
   * refusal (no download). Not marked applied meanwhile, so a resync offers it again too.
   */
  #retryForKeys(tenant: string, queue: TenantQueue, entry: PointerEntry): void {
    if (queue.keyRetrying !== entry.sequence) {
      queue.keyRetrying = entry.sequence;
      queue.keyRetry.attempts = 0;
    }
    if (this.#stopping) return;
    queue.keyRetry.schedule(() => void this.#offerIfCurrent(tenant, queue, entry));
  }

  async #offerIfCurrent(tenant: string, queue: TenantQueue, entry: PointerEntry): Promise<void> {
    const store = this.#store;
    if (this.#stopping || store === undefined) return;
    let current: PointerEntry | undefined;
    try {
      current = await store.current(tenant);
    } catch {
      this.#retryForKeys(tenant, queue, entry); // the pointer could not be read: try again later
      return;
    }
    if (current?.sequence === entry.sequence) this.#offer(tenant, current);
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
      ...(this.#watchErrors.size === 0 ? {} : {
        failingWatches: [...this.#watchErrors].map(([what, error]) => ({ watch: what, code: error.code, message: error.message })),
      }),
    };
    const failing = this.#watchErrors.entries().next().value;
    const pullError = this.#deltaPullError;
    if (this.#state === 'connected' && failing === undefined && pullError === undefined) return { state: 'OK', details };
    if (this.#state === 'connected' && failing !== undefined) {
      const [, error] = failing;
      return {
        state: 'WARN',
        message: `bundle distribution is connected but a watch keeps failing (${error.code}): ${error.message}; retrying it with backoff, and re-reading every pointer on each retry`,
        details: { ...details, code: error.code },
      };
    }
    if (this.#state === 'connected' && pullError !== undefined) {
      return {
        state: 'WARN',
        message: `bundle distribution is connected but the live delta consumer gets no deltas (${pullError.code}): ${pullError.message}; new deltas reach this sidecar only on a resync until its pulls are answered again`,
        details: { ...details, code: pullError.code, deltaConsumer: { code: pullError.code, message: pullError.message } },
      };
    }
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
    this.#resyncRetry.cancel();
    for (const queue of this.#queues.values()) {
      queue.pointerRetry.cancel();
      queue.deltaRetry.cancel();
      queue.keyRetry.cancel();
    }
    for (const wake of [...this.#sleepers]) wake();
    this.#deltaMessages?.stop();
    // a first connection still in flight closes itself when it lands
    if (this.#connecting !== undefined) await withDeadline(this.#connecting, deadlineMs);
    const nc = this.#nc;
    if (nc !== undefined) await withDeadline(nc.close(), deadlineMs);
  }
}
