/** Config: parsed once, validated, frozen. */
export {
  TENANT_ID_PATTERN,
  defaultConfig,
  loadConfig,
  parseConfig,
  type PavilionConfig,
  type TenantConfig,
} from './config.ts';
