/** Tenants: the configured tenants and the activation of their bundles. */
export {
  DEFAULT_TRUST_REREAD_INTERVAL_MS,
  KEY_REFUSALS,
  TenantManager,
  type ActivationOrigin,
  type ActivationPhase,
  type DeltaUpdate,
  type TenantError,
  type TenantManagerOptions,
  type TenantStatus,
} from './tenant-manager.ts';
export { decisionTests, runDecisionTests, type DecisionTest } from './decision-tests.ts';
export { type ShadowPrivacy, type ShadowReport, type ShadowSample } from './shadow.ts';
export { DirectoryWatcher, type DirectoryWatcherOptions } from './directory-watcher.ts';
