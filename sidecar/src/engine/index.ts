/** Engine: compiled per-tenant Wasm policies evaluated on worker threads, with a decision cache. */
export { type InspectionLimits, type WasmInspection } from './abi.ts';
export { compilePolicy, SDK_BUILTIN_NAMES, type CompiledPolicy, type CompileOptions } from './compiled-policy.ts';
export { DecisionCache, type CachedDecision } from './decision-cache.ts';
export {
  PolicyEngine,
  type ActivePolicy,
  type Decision,
  type DecisionLogRules,
  type EachOutcome,
  type EngineObserver,
  type EngineOptions,
  type EvaluateOptions,
  type LoadedPolicy,
  type ShadowComparison,
} from './policy-engine.ts';
export { HOST_BUILTIN_NAMES, NON_DETERMINISTIC_BUILTINS } from './builtins/index.ts';
