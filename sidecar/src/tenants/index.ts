/** Tenants: the configured tenants and the activation of their bundles. */
export { TenantManager, decisionTests, type ActivationOrigin, type DecisionTest, type DeltaUpdate, type TenantError, type TenantManagerOptions, type TenantStatus } from './tenant-manager.ts';
