/** Tenants: the configured tenants and the activation of their bundles. */
export { TenantManager, type TenantError, type TenantManagerOptions, type TenantStatus } from './tenant-manager.ts';
