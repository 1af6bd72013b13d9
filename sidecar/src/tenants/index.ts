/** Tenants: the configured tenants and the activation of their bundles. */
export {
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
