/**
 * A pool of evaluation workers, sized to the cores, so Wasm evaluation never blocks the
 * event loop.
 *
 * - Requests wait in one queue per tenant. A free worker takes the next batch from them in
 *   order of worker time used (up to BATCH_MAX_ITEMS, and at most its share when several
 *   workers are free), as one postMessage: each request goes to the waiting tenant whose
 *   evaluations have used the least worker time so far, counting what it was just handed at
 *   its measured cost per evaluation (start-time fair queueing), and a batch holds about
 *   BATCH_MAX_COST_NS of that estimated work at most. Tenants that cost the same
 *   alternate, as round-robin; a tenant whose evaluations take 100 times longer gets a
 *   hundredth as many of them through while both wait, so it cannot take the workers from a
 *   cheap one by sending as many requests. A tenant that was idle starts level with the
 *   others (no credit saved up). A tenant's burst delays another tenant's request by at most
 *   a batch per worker, never by the whole burst, and a busy worker is handed its next batch
 *   as soon as it answers.
 * - Each worker writes the start time of its current evaluation into a shared control
 *   block. A watchdog on the main thread (ticking only while some worker has work: an idle
 *   sidecar, or one answering from the decision cache, is not woken for nothing) terminates
 *   a worker whose evaluation overruns the deadline: that evaluation fails with
 *   ERR_EVAL_TIMEOUT, everything else the worker held is re-dispatched (evaluation is
 *   pure), and a fresh worker is started with every loaded policy. Other tenants see at
 *   most a short delay, never an error.
 * - A worker that dies for any other reason is replaced the same way. A crash inside an
 *   evaluation (the control block names the item running, as for an overrun) names a suspect,
 *   which goes again alone; so does every other item on board for its second such crash (a
 *   worker's heap holds the whole batch, so the item that crossed a limit need not be the one
 *   that filled it, which a second crash finds). The rest go again. One that takes its worker
 *   down alone fails with ERR_EVAL_TRAP and limits its tenant as an overrun does, so another
 *   tenant's policy that takes workers down fails none of theirs. A crash between items names no one: every item on board counts it, and one
 *   on board for a third such death fails with ERR_EVAL_TRAP instead of being retried forever.
 *   An item whose failure threw its policy's instance away has the instance made
 *   again at once, under the load deadline (the worker flags it); an overrun there names the
 *   item too, which fails with ERR_EVAL_TRAP (or, inside its decision log rules, goes again
 *   without them, as after any overrun there). That rebuild's time is added to its tenant's
 *   usage, not to the estimate of what its evaluations cost.
 * - A tenant whose evaluation overran the deadline (or took its worker down alone) is limited, for QUARANTINE_MS after its
 *   latest overrun, to one evaluation at a time, in a batch of its own, and such batches
 *   together hold at most all workers but one: a policy that loops on some inputs then
 *   occupies at most one worker, and the other tenants keep the rest instead of queueing
 *   behind it (at most QUARANTINE_MAX_QUEUED of its evaluations wait; more get
 *   ERR_EVAL_OVERLOADED).
 * - Each tenant's queue holds at most `maxQueuedEvaluations`, and its evaluations in the pool
 *   (waiting or on a worker) hold at most `maxPendingInputBytes` of input text; more get
 *   ERR_EVAL_OVERLOADED. An input that is larger alone is taken when the tenant has none in
 *   the pool. So one tenant's callers cannot fill the process's memory with inputs waiting
 *   for a worker (a gzip body of a few KiB can inflate to maxBodyBytes), whatever the count.
 *   All tenants together hold `maxPendingInputBytesTotal`, so callers that reach many tenants
 *   cannot either: past it, a tenant gets ERR_EVAL_OVERLOADED once it holds more than its fair
 *   share (the total over the tenants holding input), and one holding none is always let in,
 *   so a flood through some tenants does not shut the others out. Past twice the bound only
 *   tenants holding none are let in: the total stays under twice the bound plus one input per
 *   tenant.
 */
import { Worker } from 'node:worker_threads';
import { exposeGcToWorkers } from '../lib/collect-garbage.ts';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import { tenantOfKey } from '../lib/tenant-id.ts';
import {
  CONTROL_BATCH,
  CONTROL_LOADING,
  CONTROL_INDEX,
  CONTROL_LOG_RULES,
  CONTROL_PHASE,
  CONTROL_REBUILDING,
  CONTROL_SLOTS,
  CONTROL_START_MS,
  type EvalItem,
  type EvalOutcome,
  type FromWorker,
  type LoadMessage,
  type MemoryLimits,
  type ToWorker,
} from './protocol.ts';

export interface WorkerPoolOptions {
  readonly workers: number;
  readonly evaluationTimeoutMs: number;
  /** Deadline for instantiating a policy and setting its data in a worker (default 10 s). */
  readonly loadTimeoutMs?: number;
  readonly maxQueuedEvaluations: number;
  /** Input text (its length) one tenant's evaluations may hold in the pool at once (default: unbounded). */
  readonly maxPendingInputBytes?: number;
  /** Input held by every tenant's evaluations in the pool together (past it: fair shares, see the header). */
  readonly maxPendingInputBytesTotal?: number;
  readonly memory: MemoryLimits;
  /** How long a tenant stays limited after its latest overrun (default QUARANTINE_MS). */
  readonly quarantineMs?: number;
  /** Called when a worker is replaced (metrics). */
  readonly onWorkerRestart?: (reason: 'timeout' | 'crash') => void;
  /**
   * For tests (a crash on demand): each worker's JS heap (V8's old generation), at most; past
   * it the worker dies. Not offered in the config: an allocation that alone passes the limit
   * by more than Node's allowance (16 MiB) is a fatal out-of-memory of the whole process.
   */
  readonly workerMaxHeapBytes?: number;
}

interface Pending {
  readonly item: EvalItem;
  resolve: (outcome: EvalOutcome) => void;
  deaths: number;
  /** Worker time charged to its tenant when it was handed out (its estimated cost), in ns. */
  chargedNs?: number | undefined;
  /** A limited tenant's evaluation holding that tenant's one turn (see #admit): it travels alone. */
  limitedTurn?: boolean;
  /** Crashes inside an evaluation it was on board for, named or not (see #replace). */
  crashes?: number;
}

/** Evaluations in one message to a worker, at most. */
export const BATCH_MAX_ITEMS = 64;

/**
 * The estimated work one batch holds, at most (one evaluation, whatever it costs, always
 * goes): a tenant's costly evaluations go a few at a time, so another tenant's requests that
 * arrive meanwhile wait for little more than one of them.
 */
const BATCH_MAX_COST_NS = 2_000_000;
/** What an evaluation of a tenant not measured yet is taken to cost. */
const INITIAL_COST_NS = 100_000;
/** The least an evaluation is charged: the hops that carry it cost the pool that much anyway. */
const MIN_COST_NS = 20_000;
/**
 * Between two workers' collections after an unload (see UnloadMessage): longer than one
 * such pause, so that the workers reaching their threshold on the same unload are not all
 * paused at once.
 */
const COLLECTION_STAGGER_MS = 100;

/** Worker time a tenant's evaluations have used (its virtual time) and what one costs (a moving average). */
interface Usage {
  usedNs: number;
  costNs: number;
}

/** How long a tenant stays limited to one evaluation at a time after its latest overrun. */
export const QUARANTINE_MS = 30_000;
/** A limited tenant's evaluations waiting for its turn, at most; more are refused. */
export const QUARANTINE_MAX_QUEUED = 64;

/** A tenant limited after an overrun: until when, whether its one turn is taken, who waits. */
interface Quarantine {
  untilMs: number;
  busy: boolean;
  readonly waiting: Pending[];
}

/** An outcome, those of its other entrypoints and (a success's) those of its decision log rules. */
function outcomesOf(outcome: EvalOutcome): EvalOutcome[] {
  return [outcome, ...(outcome.more ?? []), ...(outcome.ok ? outcome.log?.outcomes ?? [] : [])];
}

/** The worker time an evaluation took, every entrypoint of it and its decision log rules (failures too, when the worker timed them). */
function measuredNs(outcome: EvalOutcome | undefined): number | undefined {
  if (outcome?.evalNs === undefined) return undefined;
  return outcomesOf(outcome).reduce((ns, o) => ns + (o.evalNs ?? 0), 0);
}

/**
 * The worker time an item spent instantiating its policy again (EvalSuccess.rebuildNs), around
 * any of those evaluations: charged to its tenant's usage, not to its cost estimate (a rebuild
 * is not what the tenant's evaluations cost).
 */
function rebuildNsOf(outcome: EvalOutcome | undefined): number {
  return outcome === undefined ? 0 : outcomesOf(outcome).reduce((ns, o) => ns + (o.rebuildNs ?? 0), 0);
}

/**
 * A tenant's cost estimate after one of its evaluations cost `actualNs`: that cost at once when
 * it is more than 4 times the estimate (a tenant cannot slip a batch of costly evaluations in
 * under the estimate of its cheap ones), a moving average otherwise. Exported for its test.
 */
export function nextCostEstimateNs(estimateNs: number, actualNs: number): number {
  return actualNs > 4 * estimateNs ? actualNs : Math.round(0.8 * estimateNs + 0.2 * actualNs);
}

/** The tenant an evaluation is for: its policy key's (protocol.ts policyKey) up to the first NUL. */
const tenantOf = (item: EvalItem): string => tenantOfKey(item.key);

interface LoadWaiter {
  resolve(): void;
  reject(error: PavilionError): void;
}

// From TypeScript sources the worker needs tsx registered in its own thread (loader hooks
// are per thread); from compiled JavaScript it loads directly.
const workerUrl = import.meta.url.endsWith('.ts')
  ? new URL('./worker-entry.mjs', import.meta.url)
  : new URL('./worker.js', import.meta.url);

class Slot {
  readonly control = new Float64Array(new SharedArrayBuffer(CONTROL_SLOTS * Float64Array.BYTES_PER_ELEMENT));
  readonly worker: Worker;
  readonly batches = new Map<number, Pending[]>();
  readonly loadWaiters = new Map<string, LoadWaiter>();
  /** In-flight loads by key, so concurrent loads of one key share one answer. */
  readonly loading = new Map<string, Promise<void>>();
  /** Policy keys this worker has instantiated. */
  readonly loaded = new Set<string>();
  /** Registered policies that failed to load while this worker started (it is ready without them). */
  readonly failedLoads = new Map<string, PavilionError>();
  /** Settles once the worker is ready or dead: what a load waits for on a worker still starting. */
  readonly settled: Promise<void>;
  settle!: () => void;
  /** The worker started in this one's place when it died. */
  replacement: Slot | undefined;
  ready = false;
  dead = false;
  flushScheduled = false;
  /** Its batch is a limited tenant's evaluation, alone. */
  solo = false;

  constructor(maxHeapBytes: number | undefined) {
    exposeGcToWorkers();
    this.worker = new Worker(workerUrl, {
      workerData: { control: this.control.buffer },
      ...(maxHeapBytes === undefined ? {} : { resourceLimits: { maxOldGenerationSizeMb: Math.max(1, Math.floor(maxHeapBytes / 2 ** 20)) } }),
    });
    this.settled = new Promise((resolve) => (this.settle = resolve));
  }

  post(message: ToWorker): void {
    this.worker.postMessage(message);
  }
}

function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

export class WorkerPool {
  readonly #options: WorkerPoolOptions;
  readonly #slots: Slot[] = [];
  readonly #policies = new Map<string, LoadMessage>();
  /** Loads forwarded to a replacement worker and not settled yet (forwarded once at most). */
  readonly #forwarded = new Set<string>();
  /** Evaluations waiting for a worker, per tenant, in arrival order; the Map's order breaks ties (round-robin). */
  readonly #queues = new Map<string, Pending[]>();
  /** Worker time per tenant, for the order of #flush. */
  readonly #usage = new Map<string, Usage>();
  /** The virtual time of the last evaluation handed out: where a tenant that was idle starts. */
  #virtualNs = 0;
  /** Limited tenants' evaluations holding their turn, waiting for a worker of their own. */
  readonly #solo: Pending[] = [];
  /** Everything waiting: the tenants' queues and #solo. */
  #queued = 0;
  /** The last batch handed out was a limited tenant's turn (the next goes to the others, if any wait). */
  #lastFlushSolo = false;
  /** Slots with a flush scheduled (#pump): a flush takes its share of the queue. */
  #flushesScheduled = 0;
  #nextBatch = 1;
  #watchdog: NodeJS.Timeout | undefined;
  readonly #watchdogPeriodMs: number;
  #stopped = false;
  #restarts = 0;
  readonly #quarantined = new Map<string, Quarantine>();
  /** Input text held per tenant by its evaluations waiting for or on a worker (maxPendingInputBytes). */
  readonly #pendingInput = new Map<string, number>();
  /** The sum of #pendingInput (maxPendingInputBytesTotal). */
  #pendingInputTotal = 0;

  constructor(options: WorkerPoolOptions) {
    this.#options = options;
    this.#watchdogPeriodMs = Math.max(2, Math.min(50, Math.floor(options.evaluationTimeoutMs / 4)));
  }

  get restarts(): number {
    return this.#restarts;
  }

  get readyWorkers(): number {
    return this.#slots.filter((slot) => slot.ready).length;
  }

  get size(): number {
    return this.#options.workers;
  }

  /** Tenants limited to one evaluation at a time after an overrun (see the header). */
  get limitedTenants(): string[] {
    const now = nowMs();
    return [...this.#quarantined].filter(([, q]) => q.untilMs > now || q.busy).map(([tenant]) => tenant);
  }

  async start(): Promise<void> {
    const started = Array.from({ length: this.#options.workers }, () => this.#spawn());
    await Promise.all(started.map((slot) => this.#whenReady(slot)));
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#disarmWatchdog();
    const failure: EvalOutcome = { ok: false, code: ErrorCodes.ENGINE_STOPPED, message: 'the policy engine is stopping' };
    const waiting = [...this.#quarantined.values()].flatMap((q) => q.waiting.splice(0));
    const queued = [...this.#queues.values()].flat().concat(this.#solo.splice(0));
    this.#queues.clear();
    this.#queued = 0;
    for (const pending of [...queued, ...waiting]) pending.resolve(failure);
    await Promise.all(
      this.#slots.map(async (slot) => {
        slot.dead = true;
        slot.settle(); // a load waiting for it to start: refused (no replacement)
        for (const pending of this.#drain(slot)) pending.resolve(failure);
        await slot.worker.terminate();
      }),
    );
    this.#slots.length = 0;
  }

  /**
   * Load a policy into every worker; resolves once all have instantiated it. One ready worker
   * first, then the others: a module whose load never returns (the sandbox runs its start
   * function and exports, not the data load) or fails holds or costs one worker, not all of
   * them at once. A worker still starting picks it up from the registry before it is marked
   * ready, and the load waits for that too: with every worker starting (all replaced at once)
   * it would otherwise resolve with the policy loaded nowhere, and fail nowhere.
   */
  async load(spec: LoadMessage): Promise<void> {
    this.#policies.set(spec.key, spec);
    for (const slot of this.#slots) slot.failedLoads.delete(spec.key); // an earlier attempt's
    /** A worker still starting loads it from the registry: its start decides, or, if it dies, its replacement's. */
    const intoStarting = async (slot: Slot, forwarded = false): Promise<void> => {
      await slot.settled;
      const failure = slot.failedLoads.get(spec.key);
      if (failure !== undefined) throw failure;
      if (!slot.dead) return;
      if (slot.replacement === undefined) throw new PavilionError(ErrorCodes.ENGINE_STOPPED, 'the policy engine is stopping');
      if (forwarded) throw new PavilionError(ErrorCodes.EVAL_TRAP, 'evaluation worker restarted while loading a policy');
      await intoStarting(slot.replacement, true);
    };
    try {
      const first = this.#slots.find((slot) => slot.ready && !slot.dead);
      if (first !== undefined) await this.#loadInto(first, spec);
      await Promise.all(this.#slots.filter((slot) => !slot.dead && slot !== first).map((slot) => (slot.ready ? this.#loadInto(slot, spec) : intoStarting(slot))));
    } catch (error) {
      this.unload(spec.key);
      throw error;
    }
  }

  unload(key: string): void {
    this.#policies.delete(key);
    this.#slots.forEach((slot, i) => {
      slot.failedLoads.delete(key);
      if (slot.dead || !slot.loaded.has(key)) return;
      slot.loaded.delete(key);
      slot.post({ type: 'unload', key, collectAfterMs: i * COLLECTION_STAGGER_MS });
    });
  }

  evaluate(item: EvalItem): Promise<EvalOutcome> {
    if (this.#stopped) {
      return Promise.resolve({ ok: false, code: ErrorCodes.ENGINE_STOPPED, message: 'the policy engine is stopped' });
    }
    const tenant = tenantOf(item);
    const bytes = (item.input?.length ?? 0) + (item.log?.event.length ?? 0);
    const held = this.#pendingInput.get(tenant) ?? 0;
    const max = this.#options.maxPendingInputBytes ?? Infinity;
    if (held > 0 && held + bytes > max) {
      return Promise.resolve({ ok: false, code: ErrorCodes.EVAL_OVERLOADED, message: `the evaluations of tenant ${tenant} waiting or running hold ${held} bytes of input; this one (${bytes} bytes) would pass the limit of ${max}` });
    }
    const maxTotal = this.#options.maxPendingInputBytesTotal ?? Infinity;
    if (held > 0 && this.#pendingInputTotal + bytes > maxTotal) {
      // the pool is full: a tenant still under its fair share of it (the total over the
      // tenants holding input) is let in, but never past twice the bound (the shares of
      // tenants let in one after another add up). The message names only the asking tenant's
      // own figures: it goes back to the caller.
      const fairShare = maxTotal / this.#pendingInput.size;
      if (held + bytes > fairShare || this.#pendingInputTotal + bytes > 2 * maxTotal) {
        return Promise.resolve({ ok: false, code: ErrorCodes.EVAL_OVERLOADED, message: `the evaluation pool holds as much input as it may for all tenants (maxPendingInputBytesTotal), and tenant ${tenant}'s evaluations hold ${held} bytes of it already; this one is ${bytes} bytes` });
      }
    }
    if (held + bytes > 0) this.#pendingInput.set(tenant, held + bytes); // an empty input holds nothing, nor counts for a share
    this.#pendingInputTotal += bytes;
    return new Promise<EvalOutcome>((resolve) => this.#admit({ item, resolve, deaths: 0 })).finally(() => {
      const left = (this.#pendingInput.get(tenant) ?? bytes) - bytes;
      if (left > 0) this.#pendingInput.set(tenant, left);
      else this.#pendingInput.delete(tenant);
      this.#pendingInputTotal -= bytes;
    });
  }

  /** Input text held per tenant by its evaluations in the pool (see maxPendingInputBytes). */
  get pendingInputBytes(): ReadonlyMap<string, number> {
    return this.#pendingInput;
  }

  /** Input text held by every tenant's evaluations in the pool together (see maxPendingInputBytesTotal). */
  get pendingInputBytesTotal(): number {
    return this.#pendingInputTotal;
  }

  /** Dispatch, unless the item's tenant is limited and its one turn is taken: then it waits. */
  #admit(pending: Pending): void {
    if (this.#stopped) {
      pending.resolve({ ok: false, code: ErrorCodes.ENGINE_STOPPED, message: 'the policy engine is stopped' });
      return;
    }
    const tenant = tenantOf(pending.item);
    const quarantine = this.#quarantined.get(tenant);
    if (quarantine === undefined) {
      this.#enqueue(tenant, pending);
      return;
    }
    if (!quarantine.busy && quarantine.untilMs <= nowMs()) {
      this.#quarantined.delete(tenant);
      // any still waiting (sent again after a crash) go on as usual, ahead of this one
      for (const waiting of quarantine.waiting.splice(0)) this.#enqueue(tenant, waiting);
      this.#enqueue(tenant, pending);
      return;
    }
    if (quarantine.busy) {
      this.#wait(quarantine, tenant, pending);
      return;
    }
    quarantine.busy = true;
    const resolve = pending.resolve;
    pending.limitedTurn = true;
    pending.resolve = (outcome) => {
      resolve(outcome);
      quarantine.busy = false;
      if (quarantine.untilMs <= nowMs()) {
        // the limit ended while this turn ran: everything waiting goes on as usual
        if (this.#quarantined.get(tenant) === quarantine) this.#quarantined.delete(tenant);
        for (const next of quarantine.waiting.splice(0)) this.#admit(next);
        return;
      }
      const next = quarantine.waiting.shift();
      if (next !== undefined) this.#admit(next);
    };
    this.#enqueue(tenant, pending);
  }

  /**
   * Limit `tenant` (its evaluation overran the deadline) from now for QUARANTINE_MS. Its
   * evaluations already queued join the limit's queue (past QUARANTINE_MAX_QUEUED they are
   * refused), so none of them goes out in an ordinary batch to overrun again on every worker.
   */
  #limit(tenant: string): Quarantine {
    const untilMs = nowMs() + (this.#options.quarantineMs ?? QUARANTINE_MS);
    let quarantine = this.#quarantined.get(tenant);
    if (quarantine !== undefined) quarantine.untilMs = untilMs;
    else this.#quarantined.set(tenant, (quarantine = { untilMs, busy: false, waiting: [] }));
    const queued = this.#queues.get(tenant) ?? [];
    this.#queues.delete(tenant);
    this.#queued -= queued.length;
    for (const pending of queued) this.#wait(quarantine, tenant, pending);
    return quarantine;
  }

  /** Queue `pending` behind a limited tenant's turn, unless QUARANTINE_MAX_QUEUED already wait. */
  #wait(quarantine: Quarantine, tenant: string, pending: Pending, front = false): void {
    if (!front && quarantine.waiting.length >= QUARANTINE_MAX_QUEUED) {
      pending.resolve({
        ok: false,
        code: ErrorCodes.EVAL_OVERLOADED,
        message: `tenant ${tenant} overran the evaluation deadline or took an evaluation worker down recently and is limited to one evaluation at a time; ${QUARANTINE_MAX_QUEUED} are already waiting`,
      });
      return;
    }
    if (front) quarantine.waiting.unshift(pending);
    else quarantine.waiting.push(pending);
  }

  #spawn(): Slot {
    const slot = new Slot(this.#options.workerMaxHeapBytes);
    this.#slots.push(slot);
    slot.worker.on('message', (message: FromWorker) => this.#onMessage(slot, message));
    slot.worker.on('error', (error) => this.#replace(slot, 'crash', undefined, undefined, error));
    slot.worker.on('exit', (code) => this.#replace(slot, 'crash', undefined, undefined, `exit code ${code}`));
    return slot;
  }

  /** Resolves on the worker's 'ready'; a typed error if it fails or exits first. */
  #whenReady(slot: Slot): Promise<void> {
    return new Promise((resolve, reject) => {
      const settle = (error: PavilionError | undefined): void => {
        slot.worker.off('message', onMessage);
        slot.worker.off('error', onError);
        slot.worker.off('exit', onExit);
        if (error === undefined) resolve();
        else reject(error);
      };
      const onMessage = (message: FromWorker): void => {
        if (message.type === 'ready') settle(undefined);
      };
      const onError = (error: Error): void => settle(new PavilionError(ErrorCodes.INTERNAL, `evaluation worker failed to start: ${describeThrown(error)}`, { cause: error }));
      const onExit = (): void => settle(new PavilionError(ErrorCodes.INTERNAL, 'evaluation worker exited before it was ready'));
      slot.worker.on('message', onMessage);
      slot.worker.on('error', onError);
      slot.worker.on('exit', onExit);
    });
  }

  #loadInto(slot: Slot, spec: LoadMessage): Promise<void> {
    if (slot.loaded.has(spec.key)) return Promise.resolve();
    const inFlight = slot.loading.get(spec.key);
    if (inFlight !== undefined) return inFlight;
    const promise = new Promise<void>((resolve, reject) => {
      slot.loadWaiters.set(spec.key, {
        resolve: () => {
          // unloaded meanwhile (a load into another worker failed, or the policy was
          // discarded): do not keep an instance nothing will ever unload
          if (this.#policies.has(spec.key)) slot.loaded.add(spec.key);
          else if (!slot.dead) slot.post({ type: 'unload', key: spec.key, collectAfterMs: 0 });
          resolve();
        },
        reject,
      });
      slot.post(spec);
      this.#armWatchdog();
    }).finally(() => slot.loading.delete(spec.key));
    slot.loading.set(spec.key, promise);
    return promise;
  }

  #onMessage(slot: Slot, message: FromWorker): void {
    switch (message.type) {
      case 'ready':
        void this.#onReady(slot);
        return;
      case 'loaded': {
        const waiter = slot.loadWaiters.get(message.key);
        slot.loadWaiters.delete(message.key);
        if (message.error === null) waiter?.resolve();
        else waiter?.reject(new PavilionError(message.error.code, message.error.message));
        return;
      }
      case 'results': {
        const batch = slot.batches.get(message.batch);
        if (batch === undefined) return;
        slot.batches.delete(message.batch);
        slot.solo = false;
        batch.forEach((pending, i) => this.#settleCharge(pending, measuredNs(message.results[i]), rebuildNsOf(message.results[i])));
        // the next batch at once: the worker is not left idle while others wait
        if (!slot.flushScheduled) this.#flush(slot);
        batch.forEach((pending, i) => {
          pending.resolve(
            message.results[i] ?? { ok: false, code: ErrorCodes.INTERNAL, message: 'worker returned no result' },
          );
        });
        return;
      }
    }
  }

  async #onReady(slot: Slot): Promise<void> {
    // Policies may be added while this runs: repeat until the worker has all of them. One
    // that fails here (a load in progress elsewhere that fails there too, and is unloaded;
    // or a registered one this worker cannot instantiate) is noted and skipped: the worker
    // is ready without it - its evaluations here are refused as not loaded - rather than
    // never ready, which would take a worker out of the pool for good.
    for (;;) {
      const missing = [...this.#policies.values()].filter((spec) => !slot.loaded.has(spec.key) && !slot.failedLoads.has(spec.key));
      if (missing.length === 0 || slot.dead) break;
      await Promise.all(missing.map((spec) => this.#loadInto(slot, spec).catch((error: unknown) => {
        // still this registration (not unloaded meanwhile, nor loaded anew): note it
        if (this.#policies.get(spec.key) === spec) slot.failedLoads.set(spec.key, error instanceof PavilionError ? error : new PavilionError(ErrorCodes.INTERNAL, describeThrown(error)));
      })));
    }
    slot.settle();
    if (slot.dead) return;
    slot.ready = true;
    this.#pump();
    // A registered policy that failed here may have failed for a passing reason: one more try,
    // in the background (its evaluations on this worker are refused until it loads)
    for (const key of [...slot.failedLoads.keys()]) {
      const spec = this.#policies.get(key);
      if (spec !== undefined) void this.#loadInto(slot, spec).then(() => slot.failedLoads.delete(key), () => undefined);
    }
  }

  /**
   * Queue an evaluation behind its tenant's earlier ones (`front`: ahead of them, for one
   * re-dispatched after a worker died) and wake a free worker.
   */
  #enqueue(tenant: string, pending: Pending, front = false): void {
    if (pending.limitedTurn === true) {
      // its tenant's one turn (the quarantine bounds how many wait): no queue bound here
      if (front) this.#solo.unshift(pending);
      else this.#solo.push(pending);
      this.#queued++;
      this.#pump();
      return;
    }
    let queue = this.#queues.get(tenant);
    if (!front && (queue?.length ?? 0) >= this.#options.maxQueuedEvaluations) {
      pending.resolve({ ok: false, code: ErrorCodes.EVAL_OVERLOADED, message: `the evaluation queue of tenant ${tenant} is full (${this.#options.maxQueuedEvaluations} waiting)` });
      return;
    }
    if (queue === undefined) {
      this.#queues.set(tenant, (queue = []));
      const usage = this.#usageOf(tenant);
      usage.usedNs = Math.max(usage.usedNs, this.#virtualNs); // no credit saved up while idle
    }
    if (front) queue.unshift(pending);
    else queue.push(pending);
    this.#queued++;
    this.#pump();
  }

  /**
   * Schedule a flush on free workers, as many as there is work for. The flush runs at the end
   * of this event-loop turn, so the evaluations of the turn travel together.
   */
  #pump(): void {
    let wanted = this.#queued - this.#flushesScheduled;
    for (const slot of this.#slots) {
      if (wanted <= 0) return;
      if (!slot.ready || slot.dead || slot.flushScheduled || slot.batches.size > 0) continue;
      slot.flushScheduled = true;
      this.#flushesScheduled++;
      wanted--;
      setImmediate(() => {
        slot.flushScheduled = false;
        this.#flushesScheduled--;
        this.#flush(slot);
      });
    }
  }

  /**
   * Hand a free worker its next batch: a limited tenant's evaluation alone, while fewer than
   * all but one worker (at least one) carry such an evaluation; otherwise each evaluation to
   * the waiting tenant that has used the least worker time, up to its share of what waits
   * (the other scheduled flushes take the rest), BATCH_MAX_ITEMS and BATCH_MAX_COST_NS of
   * estimated work. A tenant served moves to the back of the order (ties go round-robin).
   */
  #flush(slot: Slot): void {
    if (slot.dead || !slot.ready || slot.batches.size > 0 || this.#queued === 0) return;
    const items: Pending[] = [];
    // A limited tenant's turn goes alone, on at most all ready workers but one, and not twice
    // in a row while other tenants wait (with one worker, or right after a restart, it would
    // otherwise take every free worker as soon as it is free).
    const soloTurn = this.#solo.length > 0 && !(this.#lastFlushSolo && this.#queued > this.#solo.length) && this.#soloRoom();
    this.#lastFlushSolo = soloTurn;
    if (soloTurn) {
      items.push(this.#solo.shift() as Pending);
      this.#queued--;
      slot.solo = true;
    } else {
      const max = Math.min(BATCH_MAX_ITEMS, Math.ceil(this.#queued / (this.#flushesScheduled + 1)));
      let costNs = 0;
      while (items.length < max && this.#queues.size > 0) {
        const tenant = this.#leastServed();
        // a batch holds about BATCH_MAX_COST_NS of work: the worker comes back for the next
        // one soon, so what arrives meanwhile is not queued behind a long batch of costly ones
        const cost = this.#usageOf(tenant).costNs;
        if (items.length > 0 && costNs + cost > BATCH_MAX_COST_NS) break;
        costNs += cost;
        const queue = this.#queues.get(tenant) as Pending[];
        this.#queues.delete(tenant); // to the back: the next of equal usage goes first
        const pending = queue.shift() as Pending;
        this.#charge(tenant, pending);
        items.push(pending);
        this.#queued--;
        if (queue.length > 0) this.#queues.set(tenant, queue);
      }
    }
    if (items.length === 0) return;
    if (soloTurn) this.#charge(tenantOf((items[0] as Pending).item), items[0] as Pending);
    const batch = this.#nextBatch++;
    slot.batches.set(batch, items);
    slot.post({ type: 'eval', batch, items: items.map((pending) => pending.item) });
    this.#armWatchdog();
  }

  /** The waiting tenant whose evaluations have used the least worker time (the first of equals in #queues order). */
  #leastServed(): string {
    let best: string | undefined;
    let bestNs = Infinity;
    for (const tenant of this.#queues.keys()) {
      const usedNs = this.#usageOf(tenant).usedNs;
      if (usedNs < bestNs) {
        best = tenant;
        bestNs = usedNs;
      }
    }
    return best as string;
  }

  #usageOf(tenant: string): Usage {
    let usage = this.#usage.get(tenant);
    if (usage === undefined) this.#usage.set(tenant, (usage = { usedNs: this.#virtualNs, costNs: INITIAL_COST_NS }));
    return usage;
  }

  /** Charge `pending`'s tenant its estimated cost as it is handed out (corrected by #settleCharge). */
  #charge(tenant: string, pending: Pending): void {
    const usage = this.#usageOf(tenant);
    this.#virtualNs = Math.max(this.#virtualNs, usage.usedNs);
    pending.chargedNs = usage.costNs;
    usage.usedNs += usage.costNs;
  }

  /**
   * Replace the estimate charged for `pending` with the time its evaluation took (undefined:
   * not known, the estimate stands), and move its tenant's estimate towards it: at once when
   * it cost far more than estimated (so a tenant cannot slip a batch of costly evaluations in
   * under the estimate of its cheap ones), gradually otherwise. `rebuildNs` (instantiating its
   * policy again) is added to the tenant's usage only.
   */
  #settleCharge(pending: Pending, measuredNs: number | undefined, rebuildNs = 0): void {
    if (rebuildNs > 0) this.#usageOf(tenantOf(pending.item)).usedNs += rebuildNs;
    const charged = pending.chargedNs;
    if (charged === undefined) return;
    pending.chargedNs = undefined;
    if (measuredNs === undefined) return;
    const usage = this.#usageOf(tenantOf(pending.item));
    const actual = Math.max(MIN_COST_NS, measuredNs);
    usage.usedNs += actual - charged;
    usage.costNs = nextCostEstimateNs(usage.costNs, actual);
  }

  /** Take back the estimate charged for `pending`, which did not run (its worker died under it). */
  #refund(pending: Pending): void {
    const charged = pending.chargedNs;
    if (charged === undefined) return;
    pending.chargedNs = undefined;
    this.#usageOf(tenantOf(pending.item)).usedNs -= charged;
  }

  /** Fewer workers carry a limited tenant's turn than all ready ones but one (at least one). */
  #soloRoom(): boolean {
    let ready = 0;
    let solos = 0;
    for (const slot of this.#slots) {
      if (!slot.ready || slot.dead) continue;
      ready++;
      if (slot.solo) solos++;
    }
    return solos < Math.max(1, ready - 1);
  }

  /** Start the watchdog when work is handed to a worker (a no-op while it runs). */
  #armWatchdog(): void {
    if (this.#watchdog !== undefined || this.#stopped) return;
    this.#watchdog = setInterval(() => this.#checkDeadlines(), this.#watchdogPeriodMs);
    this.#watchdog.unref();
  }

  #disarmWatchdog(): void {
    if (this.#watchdog !== undefined) clearInterval(this.#watchdog);
    this.#watchdog = undefined;
  }

  /** A worker has a batch or a load outstanding, or is inside one. */
  static #busy(slot: Slot): boolean {
    return !slot.dead && (slot.batches.size > 0 || slot.loadWaiters.size > 0 || (slot.control[CONTROL_START_MS] ?? 0) !== 0);
  }

  #checkDeadlines(): void {
    const now = nowMs();
    const loadTimeoutMs = this.#options.loadTimeoutMs ?? Math.max(10_000, this.#options.evaluationTimeoutMs);
    for (const slot of [...this.#slots]) {
      if (slot.dead) continue;
      // The worker writes batch and index, then the start time: read batch and index, then the
      // start, then both again, and trust the start as that item's only if neither moved
      // meanwhile (else the item ended between the reads, and blaming the next one would fail
      // an innocent item). The phase before the start: the worker marks the log rules' phase,
      // then their start. The rebuilding flag is read before and after the start: the worker
      // clears the start around each change of it.
      const batch = slot.control[CONTROL_BATCH] ?? -1;
      const index = slot.control[CONTROL_INDEX] ?? -1;
      const inLogRules = slot.control[CONTROL_PHASE] === CONTROL_LOG_RULES;
      const rebuilding = slot.control[CONTROL_REBUILDING] === 1;
      const started = slot.control[CONTROL_START_MS] ?? 0;
      if (started === 0 || (slot.control[CONTROL_REBUILDING] === 1) !== rebuilding) continue;
      if (slot.control[CONTROL_INDEX] !== index || slot.control[CONTROL_BATCH] !== batch) continue;
      const loading = batch === CONTROL_LOADING;
      if (now - started <= (loading || rebuilding ? loadTimeoutMs : this.#options.evaluationTimeoutMs)) continue;
      if (loading) {
        this.#replace(slot, 'timeout', undefined, new PavilionError(
          ErrorCodes.BUNDLE_WASM_INVALID,
          `loading the policy into an evaluation worker did not finish within ${loadTimeoutMs} ms`,
        ));
      } else {
        this.#replace(slot, 'timeout', { batch, index, inLogRules, ...(rebuilding ? { rebuildMs: loadTimeoutMs } : {}) });
      }
    }
    if (!this.#slots.some((slot) => WorkerPool.#busy(slot))) this.#disarmWatchdog();
  }

  /**
   * An item whose decision log rules overran the deadline or took the worker down: the
   * decision again without them (its caller then evaluates them apart, where they fail
   * alone). A log rule never costs its decision its answer.
   */
  static #withoutLogRules(pending: Pending): Pending {
    const { log: _rules, ...item } = pending.item;
    return { ...pending, item, chargedNs: undefined };
  }

  /** Everything a slot holds, in dispatch order, and clears it. */
  #drain(slot: Slot): Pending[] {
    const held: Pending[] = [];
    for (const batch of [...slot.batches.keys()].sort((a, b) => a - b)) held.push(...(slot.batches.get(batch) ?? []));
    slot.batches.clear();
    return held;
  }

  #replace(
    slot: Slot,
    reason: 'timeout' | 'crash',
    /** The item that overran: its evaluation, or (rebuildMs) instantiating its policy again after it failed. */
    culprit: { batch: number; index: number; inLogRules: boolean; rebuildMs?: number } | undefined,
    loadFailure?: PavilionError,
    /** What a crash reported (the worker's error, or its exit code). */
    crash?: unknown,
  ): void {
    if (slot.dead) return;
    slot.dead = true;
    slot.ready = false;
    const index = this.#slots.indexOf(slot);
    if (index >= 0) this.#slots.splice(index, 1);
    const culpritPending =
      culprit === undefined ? undefined : slot.batches.get(culprit.batch)?.[culprit.index];
    // a crash inside an item's decision log rules: that item goes again without them
    const crashedInRules = reason === 'crash' && slot.control[CONTROL_PHASE] === CONTROL_LOG_RULES
      ? slot.batches.get(slot.control[CONTROL_BATCH] ?? -1)?.[slot.control[CONTROL_INDEX] ?? -1]
      : undefined;
    // a crash inside an evaluation (its start set; not a load, not its log rules): that item
    // took the worker down. The worker writes batch and index before the start, and a crash
    // leaves the block as it was.
    const crashStartedMs = slot.control[CONTROL_START_MS] ?? 0;
    const rebuildingAtCrash = slot.control[CONTROL_REBUILDING] === 1;
    const crashedIn = reason === 'crash' && crashedInRules === undefined && crashStartedMs !== 0 && slot.control[CONTROL_BATCH] !== CONTROL_LOADING
      ? slot.batches.get(slot.control[CONTROL_BATCH] ?? -1)?.[slot.control[CONTROL_INDEX] ?? -1]
      : undefined;
    const held = this.#drain(slot);
    // The worker runs loads in the order they were posted: the first unanswered one is the
    // one it was inside, if it was loading at all. Only that load fails; the others (other
    // tenants' revisions queued behind it) are loaded into the replacement instead.
    // An overrun says whether it was a load (its failure); the block may have moved on since
    // the watchdog read it. A crash leaves the block as it was.
    const loading = reason === 'timeout'
      ? loadFailure !== undefined
      : slot.control[CONTROL_BATCH] === CONTROL_LOADING && (slot.control[CONTROL_START_MS] ?? 0) !== 0;
    const waiters = [...slot.loadWaiters];
    slot.loadWaiters.clear();
    void slot.worker.terminate();
    this.#restarts++;
    this.#options.onWorkerRestart?.(reason);
    const restarted = new PavilionError(ErrorCodes.EVAL_TRAP, 'evaluation worker restarted while loading a policy');
    const replacement = this.#stopped ? undefined : this.#spawn();
    slot.replacement = replacement;
    let ready: Promise<void> | undefined; // one wait for the replacement, shared by every forwarded load
    waiters.forEach(([key, waiter], i) => {
      const spec = this.#policies.get(key);
      if (i === 0 && loading) {
        // the load the worker was inside: it overran its deadline, or took the worker down
        const failure = loadFailure ?? new PavilionError(ErrorCodes.BUNDLE_WASM_INVALID, 'loading the policy crashed its evaluation worker');
        if (spec !== undefined) slot.failedLoads.set(key, failure); // for a load waiting on this worker's start
        waiter.reject(failure);
        return;
      }
      if (replacement === undefined || spec === undefined || this.#forwarded.has(key)) {
        waiter.reject(restarted); // forwarded once already: that replacement died too
        return;
      }
      this.#forwarded.add(key);
      (ready ??= this.#whenReady(replacement)).then(() => this.#loadInto(replacement, spec)).then(() => waiter.resolve(), (error: unknown) => {
        waiter.reject(error instanceof PavilionError ? error : restarted);
      }).finally(() => this.#forwarded.delete(key));
    });
    slot.settle(); // after the failure above is noted and the replacement named
    if (replacement === undefined) return;
    // alone on board, it took the worker down by itself; with others, it goes again alone first
    const crashedAlone = crashedIn !== undefined && held.length === 1;
    const named = culpritPending ?? (crashedAlone ? crashedIn : undefined);
    const limited = named === undefined ? undefined : this.#limit(tenantOf(named.item));
    // Back to the front of their tenants' queues, in the order they were dispatched.
    const again: Pending[] = [];
    /** Items that go again alone: the one named by a crash inside an evaluation, and those on board for a second one. */
    const alone: Pending[] = [];
    for (const pending of held) {
      if (pending === culpritPending) {
        // it held the worker for the whole deadline: its evaluation's, or its rebuild's (usage
        // only, not what its evaluations cost)
        if (culprit?.rebuildMs === undefined) this.#settleCharge(pending, this.#options.evaluationTimeoutMs * 1e6);
        else this.#settleCharge(pending, undefined, culprit.rebuildMs * 1e6);
        if (culprit?.inLogRules === true && pending.item.log !== undefined) {
          again.push(WorkerPool.#withoutLogRules(pending)); // the decision's value went with the worker
          continue;
        }
        pending.resolve(culprit?.rebuildMs === undefined
          ? { ok: false, code: ErrorCodes.EVAL_TIMEOUT, message: `policy evaluation exceeded its deadline of ${this.#options.evaluationTimeoutMs} ms and was stopped` }
          : { ok: false, code: ErrorCodes.EVAL_TRAP, message: `the evaluation failed, and instantiating its policy again with fresh memory did not finish within the load deadline of ${culprit.rebuildMs} ms` });
        continue;
      }
      if (pending === crashedIn) {
        // it held the worker from its start until the crash (instantiating its policy again: usage only)
        const heldNs = Math.max(0, nowMs() - crashStartedMs) * 1e6;
        if (rebuildingAtCrash) this.#settleCharge(pending, undefined, heldNs);
        else this.#settleCharge(pending, heldNs);
        if (crashedAlone) {
          pending.resolve({ ok: false, code: ErrorCodes.EVAL_TRAP, message: `the evaluation took its worker down, alone on it (${describeThrown(crash)}); its tenant is limited to one evaluation at a time for a while` });
        } else {
          pending.crashes = (pending.crashes ?? 0) + 1;
          alone.push(pending);
        }
        continue;
      }
      this.#refund(pending); // charged again when it is handed out again
      if (crashedIn !== undefined && (pending.crashes = (pending.crashes ?? 0) + 1) >= 2) {
        alone.push(pending);
        continue;
      }
      // an overrun or a crash inside an evaluation names its suspect: the others on board did nothing wrong
      if (named === undefined && crashedIn === undefined && ++pending.deaths > 2) {
        pending.resolve({ ok: false, code: ErrorCodes.EVAL_TRAP, message: 'evaluation worker died repeatedly on this request' });
        continue;
      }
      again.push(pending === crashedInRules ? WorkerPool.#withoutLogRules(pending) : pending);
    }
    /** Limited tenants given a waiting item here: one whose turn is not running takes it below. */
    const waitedOn = new Set<Quarantine>();
    /** Back to its tenant's queue (front), or `byItself` in a batch of its own; a limited tenant's waits for its turn. */
    const sendAgain = (pending: Pending, byItself: boolean): void => {
      const tenant = tenantOf(pending.item);
      const quarantine = pending.limitedTurn === true ? undefined : this.#quarantined.get(tenant);
      if (quarantine !== undefined) {
        this.#wait(quarantine, tenant, pending, true);
        waitedOn.add(quarantine);
      } else if (byItself) {
        // ahead of the limited tenants' turns
        this.#solo.unshift(pending);
        this.#queued++;
        this.#pump();
      } else {
        this.#enqueue(tenant, pending, true);
      }
    };
    for (const pending of again.reverse()) sendAgain(pending, false);
    for (const pending of alone.reverse()) sendAgain(pending, true);
    // a tenant limited just now, or one whose turn is not running (it ended before this
    // crash), has no turn to hand its waiting evaluations on: the first takes the turn now
    if (limited !== undefined) waitedOn.add(limited);
    for (const quarantine of waitedOn) {
      if (quarantine.busy) continue;
      const next = quarantine.waiting.shift();
      if (next !== undefined) this.#admit(next);
    }
  }
}
