/**
 * The one place where Pavilion error codes become HTTP statuses and OPA-style error bodies
 * (`{"code": <OPA code>, "message": ..., "errors": [{"code": <Pavilion code>, "message": ...}]}`).
 * The top-level `code` uses OPA's vocabulary (v1/server/types), so OPA clients understand
 * it; `errors[0].code` is Pavilion's stable code.
 */
import { ErrorCodes, PavilionError, type ErrorCode } from '../lib/errors.ts';

export type OpaErrorCode =
  | 'invalid_parameter'
  | 'invalid_operation'
  | 'resource_not_found'
  | 'undefined_document'
  | 'unauthorized'
  | 'internal_error';

export interface OpaErrorBody {
  readonly code: OpaErrorCode;
  readonly message: string;
  readonly errors: ReadonlyArray<{ readonly code: ErrorCode; readonly message: string }>;
}

const MAPPING: Partial<Record<ErrorCode, readonly [status: number, code: OpaErrorCode]>> = {
  [ErrorCodes.TENANT_REQUIRED]: [400, 'invalid_parameter'],
  [ErrorCodes.TENANT_UNKNOWN]: [404, 'resource_not_found'],
  [ErrorCodes.TENANT_NOT_READY]: [503, 'internal_error'],
  // as OPA answers a missing or wrong token under --authentication=token
  [ErrorCodes.API_UNAUTHORIZED]: [401, 'unauthorized'],
  [ErrorCodes.REQUEST_MALFORMED_JSON]: [400, 'invalid_parameter'],
  [ErrorCodes.REQUEST_UNSUPPORTED_MEDIA_TYPE]: [415, 'invalid_parameter'],
  [ErrorCodes.REQUEST_TOO_LARGE]: [413, 'invalid_parameter'],
  [ErrorCodes.REQUEST_TOO_DEEP]: [400, 'invalid_parameter'],
  [ErrorCodes.REQUEST_INVALID]: [400, 'invalid_parameter'],
  [ErrorCodes.REQUEST_NUMBER_INEXACT]: [400, 'invalid_parameter'],
  [ErrorCodes.REQUEST_GZIP_INVALID]: [400, 'invalid_parameter'],
  [ErrorCodes.REQUEST_PARAMETER_UNSUPPORTED]: [400, 'invalid_parameter'],
  // answered by the HTTP parser's error hook, before any route (Node's bare 431/408/400 otherwise)
  [ErrorCodes.REQUEST_HEADERS_TOO_LARGE]: [431, 'invalid_parameter'],
  [ErrorCodes.REQUEST_TIMEOUT]: [408, 'invalid_parameter'],
  [ErrorCodes.REQUEST_MALFORMED_HTTP]: [400, 'invalid_parameter'],
  // v0 Data API only: OPA answers an undefined decision there with 404 undefined_document
  [ErrorCodes.DOCUMENT_UNDEFINED]: [404, 'undefined_document'],
  [ErrorCodes.METHOD_NOT_ALLOWED]: [405, 'invalid_operation'],
  [ErrorCodes.ROUTE_NOT_FOUND]: [404, 'resource_not_found'],
  [ErrorCodes.ENTRYPOINT_UNKNOWN]: [404, 'resource_not_found'],
  [ErrorCodes.EVAL_OVERLOADED]: [503, 'internal_error'],
  [ErrorCodes.ENGINE_STOPPED]: [503, 'internal_error'],
  // the audit log refused or could not take the decision event: the decision is not answered
  [ErrorCodes.AUDIT_LOG_FULL]: [503, 'internal_error'],
  [ErrorCodes.AUDIT_LOG_CLOSED]: [503, 'internal_error'],
  [ErrorCodes.AUDIT_LOG_IO]: [503, 'internal_error'],
  // the tenant's log was refused at start (damaged, or locked by another process): its
  // decisions, proofs and checkpoints are not served until it is repaired and the sidecar restarted
  [ErrorCodes.AUDIT_LOG_CORRUPT]: [503, 'internal_error'],
  [ErrorCodes.AUDIT_LOG_LOCKED]: [503, 'internal_error'],
  [ErrorCodes.AUDIT_DISK_FULL]: [503, 'internal_error'],
  [ErrorCodes.AUDIT_SIGNER_FAILED]: [503, 'internal_error'],
  [ErrorCodes.AUDIT_SIGNER_KEY_CHANGED]: [503, 'internal_error'],
  [ErrorCodes.AUDIT_EVENT_TOO_LARGE]: [413, 'invalid_parameter'],
  // proofs and checkpoints
  [ErrorCodes.AUDIT_DECISION_UNKNOWN]: [404, 'resource_not_found'],
  [ErrorCodes.AUDIT_NOT_CHECKPOINTED]: [404, 'resource_not_found'],
  [ErrorCodes.AUDIT_LOG_DISABLED]: [404, 'resource_not_found'],
  [ErrorCodes.AUDIT_RANGE_INVALID]: [400, 'invalid_parameter'],
  [ErrorCodes.AUDIT_CHECKPOINT_UNKNOWN]: [404, 'resource_not_found'],
  [ErrorCodes.AUDIT_PROOF_BUSY]: [503, 'internal_error'],
};

export function toHttpError(error: unknown): { status: number; body: OpaErrorBody } {
  const pavilion = error instanceof PavilionError
    ? error
    : new PavilionError(ErrorCodes.INTERNAL, 'internal error', { cause: error });
  const [status, code] = MAPPING[pavilion.code] ?? [500, 'internal_error'];
  return {
    status,
    body: { code, message: pavilion.message, errors: [{ code: pavilion.code, message: pavilion.message }] },
  };
}
