/** Config: parsed once, validated, frozen. */
export {
  TENANT_ID_PATTERN,
  defaultConfig,
  discoveredTenant,
  loadConfig,
  parseConfig,
  type AuditLogConfig,
  type AuditSignerConfig,
  type DecisionLogPrivacyConfig,
  type ExtAuthzConfig,
  type ExtAuthzTenantConfig,
  type ExtAuthzTenantSource,
  type KeyConfig,
  type NatsConfig,
  type PavilionConfig,
  type TenantConfig,
} from './config.ts';
