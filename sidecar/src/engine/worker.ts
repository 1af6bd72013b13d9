/**
 * Evaluation worker: holds one opa-wasm instance per loaded (tenant, revision) and
 * evaluates batches of requests synchronously. The main thread watches the shared control
 * block and terminates this thread when an evaluation overruns its deadline. An instance a
 * failed evaluation leaves in doubt (a trap, memory or stack exhausted) is replaced at once
 * by a fresh one, under a load's deadline. Dropped instances are counted, and the thread
 * collects its garbage once they are enough to matter, which frees their memories (see
 * lib/collect-garbage.ts).
 */
import { createRequire } from 'node:module';
import { parentPort, workerData } from 'node:worker_threads';
import type { LoadedPolicy } from '@open-policy-agent/opa-wasm';
import { assertDepth } from '../lib/canonical-json.ts';
import { garbageCollector } from '../lib/collect-garbage.ts';
import { ErrorCodes, PavilionError, describeThrown, type ErrorCode } from '../lib/errors.ts';
import { createHostBuiltins, type EvaluationContext } from './builtins/index.ts';
import {
  CONTROL_BATCH,
  CONTROL_LOADING,
  CONTROL_INDEX,
  CONTROL_LOG_RULES,
  CONTROL_PHASE,
  CONTROL_REBUILDING,
  CONTROL_START_MS,
  WASM_PAGE_BYTES,
  completeLogEvent,
  type EvalItem,
  type EvalOutcome,
  type EvalSuccess,
  type LogRulesRequest,
  type LoadMessage,
  type ToWorker,
} from './protocol.ts';

// ESM pitfall of opa-wasm 1.10: the named export loadPolicySync only exists on the CJS side.
const require = createRequire(import.meta.url);
const { loadPolicySync } = require('@open-policy-agent/opa-wasm') as {
  loadPolicySync: (
    wasm: WebAssembly.Module,
    memory: WebAssembly.MemoryDescriptor,
    builtins: Record<string, (...args: unknown[]) => unknown>,
  ) => LoadedPolicy;
};

const port = parentPort;
if (port === null) throw new Error('engine worker must run in a worker thread');
const control = new Float64Array(workerData.control as SharedArrayBuffer);

let context: EvaluationContext = { nowNs: 0n };
const builtins = createHostBuiltins(() => context);
const specs = new Map<string, LoadMessage>();
const instances = new Map<string, LoadedPolicy>();
const collector = garbageCollector();

/** opa-wasm keeps the instance's memory as `mem` (not in its typings). */
function memoryBytes(policy: LoadedPolicy | undefined): number {
  return (policy as { mem?: WebAssembly.Memory } | undefined)?.mem?.buffer.byteLength ?? 0;
}

function instantiate(spec: LoadMessage): LoadedPolicy {
  const policy = loadPolicySync(
    spec.module,
    { initial: spec.memory.initialPages, maximum: spec.memory.maximumPages },
    builtins as Record<string, (...args: unknown[]) => unknown>,
  );
  policy.setData(spec.data);
  return policy;
}

function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

function wallClockNs(): bigint {
  // Millisecond precision from timeOrigin plus sub-millisecond from the monotonic clock.
  return BigInt(Math.round(nowMs() * 1000)) * 1000n;
}

function classify(thrown: unknown): { code: ErrorCode; recycle: boolean } {
  if (thrown instanceof PavilionError) return { code: ErrorCodes.EVAL_BUILTIN, recycle: false };
  const text = describeThrown(thrown);
  // opa-wasm aborts with strings: "opa_malloc: failed" when the memory maximum is reached,
  // "<file>:<row>:<col>: var assignment conflict" / "object insert conflict" for conflicts.
  if (thrown instanceof RangeError || /opa_malloc|out of memory/i.test(text)) {
    return { code: ErrorCodes.EVAL_MEMORY, recycle: true };
  }
  if (typeof thrown === 'string' && /conflict|multiple outputs/i.test(thrown)) {
    return { code: ErrorCodes.EVAL_CONFLICT, recycle: false };
  }
  return { code: ErrorCodes.EVAL_TRAP, recycle: true };
}

const encoder = new TextEncoder();

/**
 * The item's entrypoint, then each of its `moreEntrypointIds`, on the same input. Each
 * evaluation gets the whole deadline: the watchdog's clock restarts for every entrypoint.
 */
function evaluateItem(item: EvalItem): EvalOutcome {
  let outcome = evaluate(item, item.entrypointId);
  if (item.moreEntrypointIds !== undefined) {
    const more = item.moreEntrypointIds.map((id) => {
      control[CONTROL_START_MS] = nowMs();
      return evaluate(item, id);
    });
    outcome = { ...outcome, more };
  }
  if (item.log !== undefined && outcome.ok) {
    const log = evaluateLogRules(item, item.log, outcome);
    if (log !== undefined) outcome = { ...outcome, log };
  }
  return outcome;
}

/**
 * The decision log's rules on the decision's event (see LogRulesRequest), each under the
 * deadline; undefined when the result nests too deep for the event (they are evaluated apart).
 */
function evaluateLogRules(item: EvalItem, log: LogRulesRequest, decision: EvalSuccess): EvalSuccess['log'] {
  try {
    assertDepth(decision.result, log.maxResultDepth);
  } catch {
    return undefined;
  }
  const handlerNs = Math.max(decision.evalNs, Number(process.hrtime.bigint() - log.startedNs));
  const event: EvalItem = { ...item, input: completeLogEvent(log.event, item.input, decision.result, decision.evalNs, handlerNs) };
  control[CONTROL_PHASE] = CONTROL_LOG_RULES; // an overrun from here on is the rules', not the decision's
  const outcomes = log.entrypointIds.map((id) => {
    control[CONTROL_START_MS] = nowMs();
    return evaluate(event, id);
  });
  control[CONTROL_PHASE] = 0;
  return { handlerNs, outcomes };
}

/** Nanoseconds since `startedMs` (performance.now()). */
function nsSince(startedMs: number): number {
  return Math.round((performance.now() - startedMs) * 1e6);
}

function evaluate(item: EvalItem, entrypointId: number): EvalOutcome {
  const spec = specs.get(item.key);
  if (spec === undefined) {
    return { ok: false, code: ErrorCodes.TENANT_NOT_READY, message: 'policy revision is not loaded in this worker' };
  }
  let rebuildNs = 0;
  const rebuilt = (): { rebuildNs?: number } => (rebuildNs === 0 ? {} : { rebuildNs });
  let policy = instances.get(item.key);
  if (policy === undefined) {
    // only when instantiating it again after the last failure failed too (see below)
    const fresh = rebuild(item.key, spec);
    rebuildNs = fresh.ns;
    // evalNs 0 (it did not evaluate): the item's other entrypoints' times still add up
    if (!('policy' in fresh)) return { ok: false, code: classify(fresh.thrown).code, message: describeThrown(fresh.thrown), evalNs: 0, rebuildNs };
    policy = fresh.policy;
  }
  const started = performance.now();
  try {
    context = { nowNs: item.nowNs === null ? wallClockNs() : BigInt(item.nowNs) };
    const input = item.input === null ? undefined : encoder.encode(item.input).buffer;
    const resultSet = policy.evaluate(input, entrypointId) as Array<{ result: unknown }>;
    return { ok: true, result: resultSet[0]?.result, evalNs: nsSince(started), ...rebuilt() };
  } catch (thrown) {
    // timed too: the pool charges its tenant the worker time a failing evaluation took
    const evalNs = nsSince(started);
    const { code, recycle } = classify(thrown);
    if (recycle) {
      // The instance's memory is in doubt: a fresh one now, so that neither the rest of this
      // batch nor the tenant's next request instantiates it inside its evaluation deadline
      // (setting a large data document alone can overrun that). Its time is charged to this
      // item's tenant. One that fails is tried again at the next evaluation.
      // collected after this batch, when nothing (this frame, the error's stack) holds it
      collector.dropped(memoryBytes(policy));
      instances.delete(item.key);
      rebuildNs += rebuild(item.key, spec).ns;
    }
    return { ok: false, code, message: describeThrown(thrown), evalNs, ...rebuilt() };
  }
}

/** instantiateApart, timed: the fresh instance or what it threw, and the worker time it took. */
function rebuild(key: string, spec: LoadMessage): ({ readonly policy: LoadedPolicy } | { readonly thrown: unknown }) & { readonly ns: number } {
  const started = performance.now();
  try {
    const policy = instantiateApart(key, spec);
    return { policy, ns: nsSince(started) };
  } catch (thrown) {
    collector.dropped(spec.memory.initialPages * WASM_PAGE_BYTES); // what the failed attempt allocated
    return { thrown, ns: nsSince(started) };
  }
}

/**
 * Instantiate `spec` for the current item under a load's deadline, not the evaluation's:
 * the watchdog reads CONTROL_REBUILDING meanwhile (an overrun there names this item). Then
 * the item's clock starts again. The start time is cleared around each change of the flag,
 * so the watchdog (which reads the flag before and after the start) never pairs them wrong.
 */
function instantiateApart(key: string, spec: LoadMessage): LoadedPolicy {
  control[CONTROL_START_MS] = 0;
  control[CONTROL_REBUILDING] = 1;
  control[CONTROL_START_MS] = nowMs();
  try {
    const policy = instantiate(spec);
    instances.set(key, policy);
    return policy;
  } finally {
    control[CONTROL_START_MS] = 0;
    control[CONTROL_REBUILDING] = 0;
    control[CONTROL_START_MS] = nowMs();
  }
}

port.on('message', (message: ToWorker) => {
  switch (message.type) {
    case 'load': {
      try {
        specs.set(message.key, message);
        // Untrusted module code runs here (start function, setData): under the watchdog too.
        control[CONTROL_BATCH] = CONTROL_LOADING;
        control[CONTROL_START_MS] = nowMs();
        instances.set(message.key, instantiate(message));
        control[CONTROL_START_MS] = 0;
        port.postMessage({ type: 'loaded', key: message.key, error: null });
      } catch (thrown) {
        control[CONTROL_START_MS] = 0;
        specs.delete(message.key);
        collector.dropped(message.memory.initialPages * WASM_PAGE_BYTES); // what the failed instantiation allocated
        const code = thrown instanceof PavilionError ? thrown.code : ErrorCodes.BUNDLE_WASM_INVALID;
        port.postMessage({ type: 'loaded', key: message.key, error: { code, message: describeThrown(thrown) } });
      }
      return;
    }
    case 'unload': {
      const policy = instances.get(message.key);
      specs.delete(message.key);
      instances.delete(message.key);
      if (policy !== undefined) collector.dropped(memoryBytes(policy), message.collectAfterMs);
      return;
    }
    case 'eval': {
      const results: EvalOutcome[] = [];
      control[CONTROL_BATCH] = message.batch;
      for (let i = 0; i < message.items.length; i++) {
        control[CONTROL_INDEX] = i;
        control[CONTROL_START_MS] = nowMs();
        results.push(evaluateItem(message.items[i] as EvalItem));
        control[CONTROL_START_MS] = 0;
      }
      port.postMessage({ type: 'results', batch: message.batch, results });
      return;
    }
  }
});

port.postMessage({ type: 'ready' });
