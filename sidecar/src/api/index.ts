/** API: OPA-compatible REST Data API, health and metrics. */
export { ApiServer, type ApiServerDeps } from './api-server.ts';
export { toHttpError, type OpaErrorBody, type OpaErrorCode } from './error-body.ts';
