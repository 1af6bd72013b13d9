/**
 * What a tenant id may be: a Rego identifier (so it can be the first segment of the tenant's
 * package and data namespace), lower case, at most 63 characters. It is also used in file
 * paths, metric labels and NATS subjects, so nothing else is allowed.
 */
export const TENANT_ID_PATTERN = /^[a-z][a-z0-9_]{0,62}$/;

/**
 * The tenant a NUL-separated key belongs to: its text up to the first NUL, or '' for a key
 * without one. Per-tenant stores (the decision cache, the evaluation queues, the one-time
 * challenge and nonce stores) write their keys `<tenant>\0...`, and a tenant id has no NUL.
 */
export function tenantOfKey(key: string): string {
  const end = key.indexOf('\u0000');
  return end < 0 ? '' : key.slice(0, end);
}
