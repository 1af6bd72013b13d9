/** Config: parsed once, validated, frozen. */
export {
  TENANT_ID_PATTERN,
  defaultConfig,
  loadConfig,
  parseConfig,
  type AuditLogConfig,
  type AuditSignerConfig,
  type DecisionLogPrivacyConfig,
  type ExtAuthzConfig,
  type ExtAuthzTenantConfig,
  type ExtAuthzTenantSource,
  type PavilionConfig,
  type TenantConfig,
} from './config.ts';
