/** API: OPA-compatible REST Data API, audit proofs and receipts, health and metrics. */
export { ApiServer, RECEIPT_HEADER, type ApiServerDeps, type DataApiReceiptV1 } from './api-server.ts';
export { toHttpError, type OpaErrorBody, type OpaErrorCode } from './error-body.ts';
export { TenantTokens, parseTokenFile, MIN_TOKEN_CHARS, type TenantAuthorizer } from './tenant-tokens.ts';
