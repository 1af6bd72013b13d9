/**
 * What a tenant id may be: a Rego identifier (so it can be the first segment of the tenant's
 * package and data namespace), lower case, at most 63 characters. It is also used in file
 * paths, metric labels and NATS subjects, so nothing else is allowed.
 */
export const TENANT_ID_PATTERN = /^[a-z][a-z0-9_]{0,62}$/;
