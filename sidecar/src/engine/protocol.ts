/**
 * Messages between the engine (main thread) and its evaluation workers. Versioned by
 * shape only inside one process, so no version field: both sides ship together.
 */
import type { ErrorCode } from '../lib/errors.ts';

export const WASM_PAGE_BYTES = 64 * 1024;

export interface MemoryLimits {
  readonly initialPages: number;
  readonly maximumPages: number;
}

export interface LoadMessage {
  readonly type: 'load';
  readonly key: string;
  readonly module: WebAssembly.Module;
  readonly data: Record<string, unknown>;
  readonly memory: MemoryLimits;
}

export interface UnloadMessage {
  readonly type: 'unload';
  readonly key: string;
  /**
   * When the worker collects, if this drop makes it due (lib/collect-garbage.ts): the pool
   * staggers its workers, so that their collections (a pause of some 5-20 ms each) never
   * stop all of them at once.
   */
  readonly collectAfterMs: number;
}

export interface EvalItem {
  readonly key: string;
  readonly entrypointId: number;
  /**
   * Further entrypoints evaluated on the same input in the same turn (one round trip and one
   * copy of the input for several rules); their outcomes come back in `more`, in order.
   */
  readonly moreEntrypointIds?: readonly number[];
  /** JSON text of the input, or null when no input was given. */
  readonly input: string | null;
  /** Decimal nanoseconds since the epoch to use for time.now_ns, or null for "now". */
  readonly nowNs: string | null;
  /** The decision log's rules, evaluated on the decision's event once the entrypoint has a value. */
  readonly log?: LogRulesRequest;
}

/**
 * The decision log's rules (`system.log.drop` / `.mask`), evaluated in the same turn as the
 * decision they log, as OPA evaluates them: with the decision's event as input. The worker
 * completes `event` with the item's input, the entrypoint's result and the metrics OPA's
 * event has at that point (`completeLogEvent`): OPA stops its handler timer when evaluation
 * ends, before it logs. Not evaluated when the entrypoint fails (its event is an error event).
 */
export interface LogRulesRequest {
  /** JSON text of an object: the event's fields known before evaluation (no input, result, error or metrics). */
  readonly event: string;
  readonly entrypointIds: readonly number[];
  /** process.hrtime.bigint() when the request arrived (one monotonic clock for every thread): where its handler timer starts. */
  readonly startedNs: bigint;
  /**
   * How deeply the result may nest for the event to stay within the depth the rules take
   * apart; a deeper result is not evaluated here, so its rules fail apart, as any event's.
   */
  readonly maxResultDepth: number;
}

export interface EvalMessage {
  readonly type: 'eval';
  readonly batch: number;
  readonly items: readonly EvalItem[];
}

export type ToWorker = LoadMessage | UnloadMessage | EvalMessage;

export interface EvalSuccess {
  readonly ok: true;
  /** The value of the entrypoint, or undefined when the document is undefined. */
  readonly result: unknown;
  readonly evalNs: number;
  /**
   * Worker time spent instantiating the policy again around this evaluation (see
   * CONTROL_REBUILDING), not in evalNs: charged to the tenant's usage, not taken as the cost
   * of its evaluations.
   */
  readonly rebuildNs?: number;
  /** The outcomes of the item's `moreEntrypointIds`, in order. */
  readonly more?: readonly EvalOutcome[];
  /** The item's decision log rules: their outcomes in the order of `log.entrypointIds`, and the handler time their event has. */
  readonly log?: { readonly handlerNs: number; readonly outcomes: readonly EvalOutcome[] };
}

export interface EvalFailure {
  readonly ok: false;
  readonly code: ErrorCode;
  readonly message: string;
  /** How long it ran before it failed, when the worker timed it (not for a timeout or a crash). */
  readonly evalNs?: number;
  /** As on EvalSuccess. */
  readonly rebuildNs?: number;
  /** As on EvalSuccess; absent when the whole item failed (a timeout, a crashed worker). */
  readonly more?: readonly EvalOutcome[];
}

export type EvalOutcome = EvalSuccess | EvalFailure;

/**
 * The decision's event as its log rules see it (JSON text): `event`'s fields, then input,
 * result and metrics as the decision log's events have them (DecisionEvents.create); an
 * undefined result or a missing input is left out there too.
 */
export function completeLogEvent(event: string, input: string | null, result: unknown, evalNs: number, handlerNs: number): string {
  const head = event.slice(0, event.lastIndexOf('}'));
  const fields = [
    ...(input === null ? [] : [`"input":${input}`]),
    ...(result === undefined ? [] : [`"result":${JSON.stringify(result)}`]),
    `"metrics":{"timer_rego_query_eval_ns":${evalNs},"timer_server_handler_ns":${handlerNs}}`,
  ];
  return `${head}${/^\{\s*$/.test(head) ? '' : ','}${fields.join(',')}}`;
}

export type FromWorker =
  | { readonly type: 'ready' }
  | { readonly type: 'loaded'; readonly key: string; readonly error: { code: ErrorCode; message: string } | null }
  | { readonly type: 'results'; readonly batch: number; readonly results: readonly EvalOutcome[] };

/**
 * Layout of the shared control block each worker writes while evaluating, so the main
 * thread can see a runaway evaluation without the worker's cooperation.
 */
export const CONTROL_START_MS = 0; // wall-clock ms (timeOrigin + now) when the current item began; 0 = idle
export const CONTROL_BATCH = 1; // the batch being evaluated, or CONTROL_LOADING while a policy loads
export const CONTROL_LOADING = -1;
export const CONTROL_INDEX = 2;
export const CONTROL_PHASE = 3; // CONTROL_LOG_RULES while the current item's decision log rules run, else 0
export const CONTROL_LOG_RULES = 1;
/**
 * 1 while the current item instantiates its policy again (a failed evaluation threw the
 * instance away): judged by a load's deadline, and an overrun names that item.
 */
export const CONTROL_REBUILDING = 4;
export const CONTROL_SLOTS = 5;

/**
 * Worker-side identity of a loaded policy: the tenant, its bundle's content digest, and a
 * data variant (a delta applied on top of the bundle's data, same compiled module).
 */
export function policyKey(tenant: string, bundleDigest: string, variant = ''): string {
  return `${tenant}\u0000${bundleDigest}\u0000${variant}`;
}
