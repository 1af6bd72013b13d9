/**
 * The policy engine: per-tenant compiled policies, evaluated on a worker pool, with a
 * decision cache in front. Activation is an atomic swap of the tenant's active revision
 * after every worker has loaded the new one, so no request ever sees a half-loaded policy.
 */
import { ErrorCodes, PavilionError } from '../lib/errors.ts';
import { assertDepth, canonicalJson, sameCanonicalJson } from '../lib/canonical-json.ts';
import type { Component, ComponentStatus } from '../lib/lifecycle.ts';
import { WASM_PAGE_BYTES } from './protocol.ts';
import type { CompiledPolicy } from './compiled-policy.ts';
import { DecisionCache } from './decision-cache.ts';
import { policyKey, type EvalFailure, type EvalItem, type EvalOutcome, type LogRulesRequest } from './protocol.ts';
import { WorkerPool } from './worker-pool.ts';

export interface EngineOptions {
  readonly workers: number;
  readonly evaluationTimeoutMs: number;
  /** Deadline for loading a policy into a worker (default max(10 s, evaluationTimeoutMs)). */
  readonly loadTimeoutMs?: number;
  readonly maxQueuedEvaluations: number;
  /** See WorkerPoolOptions.maxPendingInputBytes (default: unbounded). */
  readonly maxPendingInputBytes?: number;
  /** See WorkerPoolOptions.maxPendingInputBytesTotal (default: unbounded). */
  readonly maxPendingInputBytesTotal?: number;
  readonly memoryInitialPages: number;
  readonly memoryMaxBytes: number;
  readonly maxInputDepth: number;
  readonly cache: {
    readonly enabled: boolean;
    readonly maxEntries: number;
    readonly maxBytes: number;
    readonly maxKeyBytes: number;
  };
}

/** Hooks for telemetry; the engine knows nothing of Prometheus. */
export interface EngineObserver {
  onCacheLookup?(tenant: string, hit: boolean): void;
  onWorkerRestart?(reason: 'timeout' | 'crash'): void;
  /** A live decision compared against the tenant's shadow revision. */
  onShadowComparison?(comparison: ShadowComparison): void;
}

export interface ActivePolicy {
  readonly tenant: string;
  readonly revision: string;
  readonly entrypoints: readonly string[];
  readonly deterministic: boolean;
  readonly requiredBuiltins: readonly string[];
  readonly bundleDigest: string;
  readonly activatedAt: Date;
}

export interface Decision {
  /** The entrypoint's value; undefined when the document is undefined. */
  readonly result: unknown;
  readonly revision: string;
  readonly cached: boolean;
  readonly evalNs: number;
  /**
   * The decision log's rules asked for with `EvaluateOptions.log`, when they were evaluated
   * beside the decision: each rule the answering revision has, by path, and the handler time
   * (ns) of the event they saw. Absent when they were not (a cached decision, none of the
   * rules in the revision, an event that would nest too deep, rules that overran the deadline
   * or took the worker down, whereupon the decision went again without them): the caller
   * then evaluates them apart.
   */
  readonly log?: {
    readonly handlerNs: number;
    readonly rules: ReadonlyMap<string, EachOutcome>;
    /** Worker time the rules took, all of them. */
    readonly evalNs: number;
  };
}

/**
 * The decision log's rules (e.g. `system.log.drop` and `.mask`) to evaluate on the decision's
 * event in the same worker turn as the decision: one hop instead of a second round trip to a
 * worker for every logged decision. The event is the one OPA's rules see: see
 * `LogRulesRequest` and `completeLogEvent`.
 */
export interface DecisionLogRules {
  readonly paths: readonly string[];
  /** The event's fields known before evaluation (no input, result, error or metrics), for the revision that answers. */
  event(revision: string): Readonly<Record<string, unknown>>;
  /** process.hrtime.bigint() when the request arrived: where the event's handler timer starts. */
  readonly startedNs: bigint;
}

/** One path's outcome from `evaluateEach`. */
export type EachOutcome = { readonly ok: true; readonly result: unknown } | { readonly ok: false; readonly error: PavilionError };

export interface EvaluateOptions {
  /** Fix time.now_ns for this evaluation (tests, replays). */
  readonly nowNs?: bigint;
  /** false: neither read nor fill the decision cache (inputs that never repeat, e.g. decision-log masking). */
  readonly cache?: boolean;
  /** false: do not evaluate the tenant's shadow revision beside this one (internal queries). */
  readonly shadow?: boolean;
  /** The decision log's rules to evaluate beside the decision (see `Decision.log`). */
  readonly log?: DecisionLogRules;
}

/** One live decision evaluated on a tenant's shadow revision beside the active one. */
export interface ShadowComparison {
  readonly tenant: string;
  readonly path: string;
  readonly shadowDigest: string;
  /** The active revision's result (undefined = undefined document). */
  readonly active: unknown;
  readonly shadow: unknown;
  readonly same: boolean;
  /** The shadow evaluation failed (its code); `shadow` is then undefined. */
  readonly error?: string;
  readonly input: unknown;
}

/** A policy loaded into every worker: active, or staged for the gate or shadow mode. */
export interface LoadedPolicy {
  readonly info: ActivePolicy;
  readonly entrypoints: ReadonlyMap<string, number>;
  /** Worker key: tenant + bundle digest (+ data variant); a revision string may be reused for new content. */
  readonly key: string;
}

type ActiveEntry = LoadedPolicy;

/**
 * A string with an unpaired UTF-16 surrogate (JSON.parse takes `"\ud800"`, and JSON.stringify
 * writes it back as that escape): the policy's JSON parser in the Wasm refuses it, which
 * would surface as a trap. OPA's Go decoder reads it as U+FFFD instead; Pavilion refuses the
 * input, as it refuses a number a double would change, rather than decide on another text.
 * The escape is matched only where its backslash is not itself escaped.
 */
const LONE_SURROGATE_ESCAPE = /(?<!\\)(?:\\\\)*\\ud[89a-f][0-9a-f]{2}/;

/** `json` (JSON.stringify's or canonicalJson's text of an input), or a typed refusal. */
function readableInput(json: string): string {
  const match = LONE_SURROGATE_ESCAPE.exec(json);
  if (match !== null) {
    throw new PavilionError(ErrorCodes.REQUEST_INVALID, `input holds a string with an unpaired UTF-16 surrogate (${match[0].slice(match[0].lastIndexOf('\\'))}), which a policy cannot read`);
  }
  return json;
}

export class PolicyEngine implements Component {
  readonly name = 'engine';
  readonly #options: EngineOptions;
  readonly #observer: EngineObserver;
  readonly #pool: WorkerPool;
  readonly #cache: DecisionCache;
  readonly #active = new Map<string, ActiveEntry>();
  /** Loaded but not active (staged). */
  readonly #loaded = new Set<LoadedPolicy>();
  /** Per tenant: a staged revision every live decision is also evaluated on (shadow mode). */
  readonly #shadows = new Map<string, LoadedPolicy>();
  readonly #memory: { readonly initialPages: number; readonly maximumPages: number };
  /** Unloads scheduled for replaced policies, by worker key; cancelled if a key comes back. */
  readonly #pendingUnloads = new Map<string, NodeJS.Timeout>();
  /** Evaluations handed to the pool and not answered yet, by policy key. */
  readonly #inFlight = new Map<string, number>();
  /** Replaced revisions whose unload waits for their last evaluation (#scheduleUnload). */
  readonly #unloadWhenDrained = new Set<string>();
  #started = false;

  constructor(options: EngineOptions, observer: EngineObserver = {}) {
    this.#options = options;
    this.#observer = observer;
    this.#memory = {
      initialPages: options.memoryInitialPages,
      maximumPages: Math.max(options.memoryInitialPages, Math.floor(options.memoryMaxBytes / WASM_PAGE_BYTES)),
    };
    this.#cache = new DecisionCache(options.cache.enabled ? options.cache.maxEntries : 0, options.cache.maxBytes);
    this.#pool = new WorkerPool({
      workers: options.workers,
      evaluationTimeoutMs: options.evaluationTimeoutMs,
      ...(options.loadTimeoutMs === undefined ? {} : { loadTimeoutMs: options.loadTimeoutMs }),
      maxQueuedEvaluations: options.maxQueuedEvaluations,
      ...(options.maxPendingInputBytes === undefined ? {} : { maxPendingInputBytes: options.maxPendingInputBytes }),
      ...(options.maxPendingInputBytesTotal === undefined ? {} : { maxPendingInputBytesTotal: options.maxPendingInputBytesTotal }),
      memory: this.#memory,
      onWorkerRestart: (reason) => observer.onWorkerRestart?.(reason),
    });
  }

  async start(): Promise<void> {
    await this.#pool.start();
    this.#started = true;
  }

  async stop(): Promise<void> {
    this.#started = false;
    await this.#pool.stop();
  }

  status(): ComponentStatus {
    if (!this.#started) return { state: 'NOT_READY', message: 'engine not started' };
    const ready = this.#pool.readyWorkers;
    const limited = this.#pool.limitedTenants;
    const details = {
      workers: this.#pool.size, readyWorkers: ready, workerRestarts: this.#pool.restarts, cacheEntries: this.#cache.size, cacheBytes: this.#cache.bytes,
      ...(limited.length > 0 ? { limitedTenants: limited } : {}),
    };
    if (ready === 0) return { state: 'ERROR', message: 'no evaluation worker is ready', details };
    if (ready < this.#pool.size) return { state: 'WARN', message: 'an evaluation worker is restarting', details };
    if (limited.length > 0) return { state: 'WARN', message: `limited to one evaluation at a time after overrunning the deadline or taking a worker down: ${limited.join(', ')}`, details };
    return { state: 'OK', details };
  }

  active(tenant: string): ActivePolicy | undefined {
    return this.#active.get(tenant)?.info;
  }

  /**
   * Load `policy` into every worker without making it active (the activation gate and
   * shadow evaluation run on it first). Loading the tenant's active policy again is free.
   */
  async load(policy: CompiledPolicy): Promise<LoadedPolicy> {
    const key = policyKey(policy.tenant, policy.bundleDigest, policy.variant);
    const pending = this.#pendingUnloads.get(key);
    if (pending !== undefined) {
      // Rolled back to a policy whose unload was scheduled: keep it loaded.
      clearTimeout(pending);
      this.#pendingUnloads.delete(key);
    }
    this.#unloadWhenDrained.delete(key);
    if (!this.#isInUse(key)) {
      await this.#pool.load({ type: 'load', key, module: policy.module, data: policy.data, memory: this.#memory });
    }
    const info: ActivePolicy = {
      tenant: policy.tenant,
      revision: policy.revision,
      entrypoints: [...policy.entrypoints.keys()],
      deterministic: policy.deterministic,
      requiredBuiltins: policy.requiredBuiltins,
      bundleDigest: policy.bundleDigest,
      activatedAt: new Date(),
    };
    const loaded: LoadedPolicy = { info, entrypoints: policy.entrypoints, key };
    this.#loaded.add(loaded);
    return loaded;
  }

  /** Make a loaded policy the tenant's active revision: an atomic swap. */
  promote(loaded: LoadedPolicy): ActivePolicy {
    const tenant = loaded.info.tenant;
    const previous = this.#active.get(tenant);
    const info: ActivePolicy = { ...loaded.info, activatedAt: new Date() };
    this.#active.set(tenant, { info, entrypoints: loaded.entrypoints, key: loaded.key });
    this.#loaded.delete(loaded);
    this.#cache.purgeTenant(tenant);
    if (previous !== undefined && previous.key !== loaded.key) this.#scheduleUnload(previous.key);
    return info;
  }

  /** Drop a loaded policy that will not be promoted (refused by the gate, or shadow ended). */
  discard(loaded: LoadedPolicy): void {
    if (!this.#loaded.delete(loaded)) return;
    // a shadow revision's comparisons still queued are answered by it, then it goes
    if (!this.#isInUse(loaded.key)) this.#unloadWhenIdle(loaded.key);
  }

  /** Load `policy` into every worker, then make it the tenant's active revision. */
  async activate(policy: CompiledPolicy): Promise<ActivePolicy> {
    return this.promote(await this.load(policy));
  }

  #isInUse(key: string): boolean {
    for (const entry of this.#active.values()) if (entry.key === key) return true;
    for (const entry of this.#loaded) if (entry.key === key) return true;
    for (const entry of this.#shadows.values()) if (entry.key === key) return true;
    return false;
  }

  #scheduleUnload(oldKey: string): void {
    // Requests already taken against the previous policy finish on it: it is unloaded after a
    // delay, and not before the last of them is answered - under load they may wait in the
    // queues longer than the delay, and an unloaded revision would refuse them.
    const timer = setTimeout(() => {
      this.#pendingUnloads.delete(oldKey);
      if (!this.#isInUse(oldKey)) this.#unloadWhenIdle(oldKey);
    }, Math.max(1_000, this.#options.evaluationTimeoutMs * 4));
    timer.unref();
    this.#pendingUnloads.set(oldKey, timer);
  }

  /** Unload `key` now, or once its last evaluation in flight is answered. */
  #unloadWhenIdle(key: string): void {
    if ((this.#inFlight.get(key) ?? 0) > 0) this.#unloadWhenDrained.add(key);
    else this.#pool.unload(key);
  }

  /** The pool's answer to an evaluation of `item.key`, counted in flight while it is awaited. */
  async #evaluateInPool(item: EvalItem): Promise<EvalOutcome> {
    const key = item.key;
    this.#inFlight.set(key, (this.#inFlight.get(key) ?? 0) + 1);
    try {
      return await this.#pool.evaluate(item);
    } finally {
      const left = (this.#inFlight.get(key) ?? 1) - 1;
      if (left > 0) this.#inFlight.set(key, left);
      else {
        this.#inFlight.delete(key);
        if (this.#unloadWhenDrained.delete(key) && !this.#isInUse(key)) this.#pool.unload(key);
      }
    }
  }

  /** Evaluate on a loaded, not necessarily active, policy (no cache). */
  async evaluateLoaded(loaded: LoadedPolicy, path: string, input: unknown, options: EvaluateOptions = {}): Promise<Decision> {
    return this.#evaluateOn(loaded, path, input, options, false);
  }

  async evaluate(tenant: string, path: string, input: unknown, options: EvaluateOptions = {}): Promise<Decision> {
    const entry = this.#active.get(tenant);
    if (entry === undefined) {
      throw new PavilionError(ErrorCodes.TENANT_NOT_READY, `tenant ${tenant} has no active policy`);
    }
    const decision = await this.#evaluateOn(entry, path, input, options, this.#options.cache.enabled && options.cache !== false);
    const shadow = this.#shadows.get(tenant);
    if (shadow !== undefined && options.shadow !== false) void this.#compareShadow(shadow, path, input, decision.result, options);
    return decision;
  }

  /**
   * Evaluate several entrypoints of `tenant`'s active policy on one input, in one round trip
   * to a worker (no cache, no shadow): each path's value, or the error its evaluation gave, in
   * the order of `paths`. For rules asked about every decision together (the decision log's
   * `system.log.drop` and `.mask`): one hop and one copy of the input instead of one each.
   */
  async evaluateEach(tenant: string, paths: readonly string[], input: unknown): Promise<EachOutcome[]> {
    const entry = this.#active.get(tenant);
    if (entry === undefined) throw new PavilionError(ErrorCodes.TENANT_NOT_READY, `tenant ${tenant} has no active policy`);
    const ids = paths.map((path) => this.#entrypointId(entry, path));
    if (ids.length === 0) return [];
    const inputJson = input === undefined ? null : this.#inputText(input);
    const outcome = await this.#evaluateInPool({ key: entry.key, entrypointId: ids[0] as number, moreEntrypointIds: ids.slice(1), input: inputJson, nowNs: null });
    // a failure of the whole item (timeout, crashed worker) is every path's failure
    return paths.map((path, i) => PolicyEngine.#each(i === 0 ? outcome : (outcome.more?.[i - 1] ?? outcome), entry, path));
  }

  static #each(outcome: EvalOutcome, entry: LoadedPolicy, path: string): EachOutcome {
    return outcome.ok ? { ok: true, result: outcome.result } : { ok: false, error: PolicyEngine.#failure(outcome, entry, path) };
  }

  /** The input as JSON text for a worker, refused when nested past the bound. */
  #inputText(input: unknown): string {
    assertDepth(input, this.#options.maxInputDepth);
    return readableInput(JSON.stringify(input));
  }

  static #failure(outcome: EvalFailure, entry: LoadedPolicy, path: string): PavilionError {
    return new PavilionError(outcome.code, outcome.message, { details: { tenant: entry.info.tenant, path, revision: entry.info.revision } });
  }

  /**
   * Shadow mode: evaluate every live decision of `tenant` on `loaded` too, off the
   * response path, and report each comparison to the observer. undefined ends it.
   */
  setShadow(tenant: string, loaded: LoadedPolicy | undefined): void {
    if (loaded === undefined) this.#shadows.delete(tenant);
    else this.#shadows.set(tenant, loaded);
  }

  async #compareShadow(shadow: LoadedPolicy, path: string, input: unknown, active: unknown, options: EvaluateOptions): Promise<void> {
    const base = { tenant: shadow.info.tenant, path, shadowDigest: shadow.info.bundleDigest, active, input };
    try {
      const { log: _log, ...shadowOptions } = options; // the log's rules are the active revision's
      const { result } = await this.#evaluateOn(shadow, path, input, shadowOptions, false);
      const same = sameCanonicalJson(result, active, this.#options.maxInputDepth * 4);
      this.#observer.onShadowComparison?.({ ...base, shadow: result, same });
    } catch (error) {
      this.#observer.onShadowComparison?.({ ...base, shadow: undefined, same: false, error: error instanceof PavilionError ? error.code : ErrorCodes.INTERNAL });
    }
  }

  #entrypointId(entry: LoadedPolicy, path: string): number {
    const entrypointId = entry.entrypoints.get(path);
    if (entrypointId === undefined) {
      throw new PavilionError(
        ErrorCodes.ENTRYPOINT_UNKNOWN,
        `${path === '' ? 'the data root' : `path ${path}`} is not an entrypoint of tenant ${entry.info.tenant}'s bundle`,
        { details: { entrypoints: entry.info.entrypoints } },
      );
    }
    return entrypointId;
  }

  async #evaluateOn(entry: LoadedPolicy, path: string, input: unknown, options: EvaluateOptions, useCache: boolean): Promise<Decision> {
    const tenant = entry.info.tenant;
    const entrypointId = this.#entrypointId(entry, path);
    const { revision } = entry.info;
    const version = entry.key;
    const cacheable = useCache && entry.info.deterministic && options.nowNs === undefined && options.cache !== false;
    let inputJson: string | null = null;
    let cacheKey: string | undefined;
    if (input !== undefined) {
      if (cacheable) {
        inputJson = readableInput(canonicalJson(input, this.#options.maxInputDepth));
        if (inputJson.length <= this.#options.cache.maxKeyBytes) cacheKey = DecisionCache.key(tenant, version, path, inputJson);
      } else {
        inputJson = this.#inputText(input);
      }
    } else if (cacheable) {
      cacheKey = DecisionCache.key(tenant, version, path, '');
    }
    if (cacheKey !== undefined) {
      const hit = this.#cache.get(cacheKey);
      this.#observer.onCacheLookup?.(tenant, hit !== undefined);
      if (hit !== undefined) return { result: hit.result, revision, cached: true, evalNs: 0 };
    }
    const log = options.log === undefined ? undefined : this.#logRules(entry, options.log, input);
    const outcome = await this.#evaluateInPool({
      key: entry.key,
      entrypointId,
      input: inputJson,
      nowNs: options.nowNs === undefined ? null : options.nowNs.toString(),
      ...(log === undefined ? {} : { log: log.request }),
    });
    if (!outcome.ok) throw PolicyEngine.#failure(outcome, entry, path);
    if (cacheKey !== undefined) this.#cache.set(cacheKey, { result: outcome.result });
    const decision = { result: outcome.result, revision, cached: false, evalNs: outcome.evalNs };
    if (log === undefined || outcome.log === undefined) return decision;
    const { outcomes, handlerNs } = outcome.log;
    const rules = new Map(log.paths.map((rule, i) => [rule, PolicyEngine.#each(outcomes[i] as EvalOutcome, entry, rule)]));
    const evalNs = outcomes.reduce((sum, o) => sum + (o.evalNs ?? 0), 0);
    return { ...decision, log: { handlerNs, rules, evalNs } };
  }

  /**
   * What the worker needs to evaluate `log`'s rules that `entry` has; undefined when it has
   * none, or when the event would nest deeper than the rules take apart (where the event
   * is refused as a whole, the rules' failure): the known fields and the input are checked
   * here, the result by the worker.
   */
  #logRules(entry: LoadedPolicy, log: DecisionLogRules, input: unknown): { readonly paths: readonly string[]; readonly request: LogRulesRequest } | undefined {
    const paths = log.paths.filter((rule) => entry.entrypoints.has(rule));
    if (paths.length === 0) return undefined;
    const max = this.#options.maxInputDepth;
    const known = log.event(entry.info.revision);
    try {
      assertDepth(known, max);
      if (input !== undefined) assertDepth(input, max - 1); // the event holds the input one level down
    } catch {
      return undefined;
    }
    const entrypointIds = paths.map((rule) => entry.entrypoints.get(rule) as number);
    return { paths, request: { event: JSON.stringify(known), entrypointIds, startedNs: log.startedNs, maxResultDepth: max - 1 } };
  }
}
