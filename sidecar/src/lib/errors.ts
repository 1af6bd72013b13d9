/**
 * One error base class for all of Pavilion, with stable codes.
 *
 * Every error Pavilion raises is a `PavilionError` whose `code` is one of `ErrorCode`.
 * Codes are part of the public contract (they appear in API bodies, logs, metrics and
 * status reports) and are never renamed. Foreign errors (opa-wasm throws strings, Node
 * throws `RangeError`s, ...) are wrapped with `cause` kept.
 *
 * Mapping a code to an HTTP status and an OPA error body happens in exactly one place:
 * `sidecar/src/api/errors.ts`.
 */

export const ErrorCodes = {
  // configuration
  CONFIG_INVALID: 'ERR_CONFIG_INVALID',
  // tenants and routing
  TENANT_REQUIRED: 'ERR_TENANT_REQUIRED',
  TENANT_UNKNOWN: 'ERR_TENANT_UNKNOWN',
  TENANT_NOT_READY: 'ERR_TENANT_NOT_READY',
  /** A tenant route without one of that tenant's bearer tokens (http.authentication, apiTokensFile). */
  API_UNAUTHORIZED: 'ERR_API_UNAUTHORIZED',
  // requests
  REQUEST_MALFORMED_JSON: 'ERR_REQUEST_MALFORMED_JSON',
  REQUEST_UNSUPPORTED_MEDIA_TYPE: 'ERR_REQUEST_UNSUPPORTED_MEDIA_TYPE',
  REQUEST_TOO_LARGE: 'ERR_REQUEST_TOO_LARGE',
  REQUEST_TOO_DEEP: 'ERR_REQUEST_TOO_DEEP',
  REQUEST_INVALID: 'ERR_REQUEST_INVALID',
  METHOD_NOT_ALLOWED: 'ERR_METHOD_NOT_ALLOWED',
  ROUTE_NOT_FOUND: 'ERR_ROUTE_NOT_FOUND',
  // bundles
  BUNDLE_TOO_LARGE: 'ERR_BUNDLE_TOO_LARGE',
  BUNDLE_CORRUPT: 'ERR_BUNDLE_CORRUPT',
  BUNDLE_PATH_TRAVERSAL: 'ERR_BUNDLE_PATH_TRAVERSAL',
  BUNDLE_UNEXPECTED_ENTRY: 'ERR_BUNDLE_UNEXPECTED_ENTRY',
  BUNDLE_MANIFEST_MISSING: 'ERR_BUNDLE_MANIFEST_MISSING',
  BUNDLE_MANIFEST_INVALID: 'ERR_BUNDLE_MANIFEST_INVALID',
  BUNDLE_ROOTS_FOREIGN: 'ERR_BUNDLE_ROOTS_FOREIGN',
  BUNDLE_ROOTS_OVERLAP: 'ERR_BUNDLE_ROOTS_OVERLAP',
  BUNDLE_DATA_OUTSIDE_ROOTS: 'ERR_BUNDLE_DATA_OUTSIDE_ROOTS',
  BUNDLE_WASM_MISSING: 'ERR_BUNDLE_WASM_MISSING',
  BUNDLE_WASM_INVALID: 'ERR_BUNDLE_WASM_INVALID',
  BUNDLE_ABI_UNSUPPORTED: 'ERR_BUNDLE_ABI_UNSUPPORTED',
  BUNDLE_BUILTIN_MISSING: 'ERR_BUNDLE_BUILTIN_MISSING',
  BUNDLE_BUILD_FAILED: 'ERR_BUNDLE_BUILD_FAILED',
  // bundle signatures (OPA's rules) and distribution
  BUNDLE_SIGNATURE_MISSING: 'ERR_BUNDLE_SIGNATURE_MISSING',
  BUNDLE_SIGNATURE_UNEXPECTED: 'ERR_BUNDLE_SIGNATURE_UNEXPECTED',
  BUNDLE_SIGNATURE_INVALID: 'ERR_BUNDLE_SIGNATURE_INVALID',
  BUNDLE_SIGNATURE_KEY_UNKNOWN: 'ERR_BUNDLE_SIGNATURE_KEY_UNKNOWN',
  BUNDLE_SIGNATURE_SCOPE: 'ERR_BUNDLE_SIGNATURE_SCOPE',
  BUNDLE_SIGNATURE_FILES: 'ERR_BUNDLE_SIGNATURE_FILES',
  BUNDLE_SIGNING_FAILED: 'ERR_BUNDLE_SIGNING_FAILED',
  BUNDLE_KEY_INVALID: 'ERR_BUNDLE_KEY_INVALID',
  BUNDLE_REPLAYED: 'ERR_BUNDLE_REPLAYED',
  BUNDLE_DIGEST_MISMATCH: 'ERR_BUNDLE_DIGEST_MISMATCH',
  BUNDLE_TESTS_FAILED: 'ERR_BUNDLE_TESTS_FAILED',
  BUNDLE_POINTER_INVALID: 'ERR_BUNDLE_POINTER_INVALID',
  /** A rollback or promotion found the pointer moved since it read it (a concurrent push): nothing was changed. */
  BUNDLE_POINTER_MOVED: 'ERR_BUNDLE_POINTER_MOVED',
  BUNDLE_REVISION_UNKNOWN: 'ERR_BUNDLE_REVISION_UNKNOWN',
  BUNDLE_DELTA_INVALID: 'ERR_BUNDLE_DELTA_INVALID',
  BUNDLE_DELTA_ROOTS: 'ERR_BUNDLE_DELTA_ROOTS',
  BUNDLE_DELTA_SEQUENCE: 'ERR_BUNDLE_DELTA_SEQUENCE',
  DISTRIBUTION_UNAVAILABLE: 'ERR_DISTRIBUTION_UNAVAILABLE',
  DISTRIBUTION_PERMISSION: 'ERR_DISTRIBUTION_PERMISSION',
  // evaluation
  ENTRYPOINT_UNKNOWN: 'ERR_ENTRYPOINT_UNKNOWN',
  EVAL_TIMEOUT: 'ERR_EVAL_TIMEOUT',
  EVAL_TRAP: 'ERR_EVAL_TRAP',
  EVAL_MEMORY: 'ERR_EVAL_MEMORY',
  EVAL_CONFLICT: 'ERR_EVAL_CONFLICT',
  EVAL_BUILTIN: 'ERR_EVAL_BUILTIN',
  EVAL_OVERLOADED: 'ERR_EVAL_OVERLOADED',
  ENGINE_STOPPED: 'ERR_ENGINE_STOPPED',
  // Envoy ext_authz (sidecar/src/extauthz)
  EXTAUTHZ_REQUEST_MALFORMED: 'ERR_EXTAUTHZ_REQUEST_MALFORMED',
  EXTAUTHZ_REQUEST_INVALID: 'ERR_EXTAUTHZ_REQUEST_INVALID',
  EXTAUTHZ_TENANT_MISSING: 'ERR_EXTAUTHZ_TENANT_MISSING',
  EXTAUTHZ_DECISION_UNDEFINED: 'ERR_EXTAUTHZ_DECISION_UNDEFINED',
  EXTAUTHZ_DECISION_INVALID: 'ERR_EXTAUTHZ_DECISION_INVALID',
  EXTAUTHZ_DEADLINE_EXCEEDED: 'ERR_EXTAUTHZ_DEADLINE_EXCEEDED',
  EXTAUTHZ_LISTEN_FAILED: 'ERR_EXTAUTHZ_LISTEN_FAILED',
  // credentials (sidecar/src/credentials): one code per reason a credential is refused
  CREDENTIAL_MALFORMED: 'ERR_CREDENTIAL_MALFORMED',
  CREDENTIAL_TOO_LARGE: 'ERR_CREDENTIAL_TOO_LARGE',
  CREDENTIAL_FORMAT_UNSUPPORTED: 'ERR_CREDENTIAL_FORMAT_UNSUPPORTED',
  CREDENTIAL_DOCUMENT_REFUSED: 'ERR_CREDENTIAL_DOCUMENT_REFUSED',
  CREDENTIAL_CONTEXT_HASH_MISMATCH: 'ERR_CREDENTIAL_CONTEXT_HASH_MISMATCH',
  CREDENTIAL_UNDEFINED_TERM: 'ERR_CREDENTIAL_UNDEFINED_TERM',
  CREDENTIAL_CANONICALIZATION_LIMIT: 'ERR_CREDENTIAL_CANONICALIZATION_LIMIT',
  CREDENTIAL_DID_UNSUPPORTED: 'ERR_CREDENTIAL_DID_UNSUPPORTED',
  CREDENTIAL_DID_UNRESOLVED: 'ERR_CREDENTIAL_DID_UNRESOLVED',
  CREDENTIAL_KEY_UNSUPPORTED: 'ERR_CREDENTIAL_KEY_UNSUPPORTED',
  CREDENTIAL_PROOF_UNSUPPORTED: 'ERR_CREDENTIAL_PROOF_UNSUPPORTED',
  CREDENTIAL_SIGNATURE_INVALID: 'ERR_CREDENTIAL_SIGNATURE_INVALID',
  CREDENTIAL_ISSUER_MISMATCH: 'ERR_CREDENTIAL_ISSUER_MISMATCH',
  CREDENTIAL_EXPIRED: 'ERR_CREDENTIAL_EXPIRED',
  CREDENTIAL_NOT_YET_VALID: 'ERR_CREDENTIAL_NOT_YET_VALID',
  CREDENTIAL_TOO_OLD: 'ERR_CREDENTIAL_TOO_OLD',
  CREDENTIAL_DISCLOSURE_INVALID: 'ERR_CREDENTIAL_DISCLOSURE_INVALID',
  CREDENTIAL_KEY_BINDING_MISSING: 'ERR_CREDENTIAL_KEY_BINDING_MISSING',
  CREDENTIAL_KEY_BINDING_INVALID: 'ERR_CREDENTIAL_KEY_BINDING_INVALID',
  CREDENTIAL_CHALLENGE_MISMATCH: 'ERR_CREDENTIAL_CHALLENGE_MISMATCH',
  CREDENTIAL_DOMAIN_MISMATCH: 'ERR_CREDENTIAL_DOMAIN_MISMATCH',
  CREDENTIAL_REPLAYED: 'ERR_CREDENTIAL_REPLAYED',
  CREDENTIAL_STATE_UNAVAILABLE: 'ERR_CREDENTIAL_STATE_UNAVAILABLE',
  /** The proof worker did not answer: timed out, crashed or not running (the credential is refused). */
  CREDENTIAL_PROOF_UNAVAILABLE: 'ERR_CREDENTIAL_PROOF_UNAVAILABLE',
  CREDENTIAL_HOLDER_MISMATCH: 'ERR_CREDENTIAL_HOLDER_MISMATCH',
  CREDENTIAL_ISSUER_UNTRUSTED: 'ERR_CREDENTIAL_ISSUER_UNTRUSTED',
  CREDENTIAL_CHAIN_INVALID: 'ERR_CREDENTIAL_CHAIN_INVALID',
  CREDENTIAL_CHAIN_TOO_DEEP: 'ERR_CREDENTIAL_CHAIN_TOO_DEEP',
  CREDENTIAL_CHAIN_CYCLE: 'ERR_CREDENTIAL_CHAIN_CYCLE',
  CREDENTIAL_OUT_OF_SCOPE: 'ERR_CREDENTIAL_OUT_OF_SCOPE',
  CREDENTIAL_REVOKED: 'ERR_CREDENTIAL_REVOKED',
  CREDENTIAL_SUSPENDED: 'ERR_CREDENTIAL_SUSPENDED',
  CREDENTIAL_STATUS_UNAVAILABLE: 'ERR_CREDENTIAL_STATUS_UNAVAILABLE',
  CREDENTIAL_STATUS_STALE: 'ERR_CREDENTIAL_STATUS_STALE',
  CREDENTIAL_STATUS_INVALID: 'ERR_CREDENTIAL_STATUS_INVALID',
  CREDENTIAL_WITNESS_INVALID: 'ERR_CREDENTIAL_WITNESS_INVALID',
  CREDENTIAL_TENANT_UNKNOWN: 'ERR_CREDENTIAL_TENANT_UNKNOWN',
  /** A request's credentials were not all verified within the tenant's `verifyTimeoutMs`: those not answered by then are refused. */
  CREDENTIAL_DEADLINE_EXCEEDED: 'ERR_CREDENTIAL_DEADLINE_EXCEEDED',
  // audit log (sidecar/src/audit): Merkle proofs, the write-ahead log, checkpoints, verification
  AUDIT_MERKLE_RANGE: 'ERR_AUDIT_MERKLE_RANGE',
  AUDIT_PROOF_INVALID: 'ERR_AUDIT_PROOF_INVALID',
  AUDIT_EVENT_TOO_LARGE: 'ERR_AUDIT_EVENT_TOO_LARGE',
  /** Too many proofs of archived decisions are waiting for their turn to read an epoch's file: try again later. */
  AUDIT_PROOF_BUSY: 'ERR_AUDIT_PROOF_BUSY',
  AUDIT_LOG_FULL: 'ERR_AUDIT_LOG_FULL',
  AUDIT_LOG_CLOSED: 'ERR_AUDIT_LOG_CLOSED',
  AUDIT_LOG_LOCKED: 'ERR_AUDIT_LOG_LOCKED',
  AUDIT_LOG_IO: 'ERR_AUDIT_LOG_IO',
  /** The volume holding the audit log has no space (ENOSPC/EDQUOT): the event was not logged; the log goes on once space is freed. */
  AUDIT_DISK_FULL: 'ERR_AUDIT_DISK_FULL',
  AUDIT_LOG_CORRUPT: 'ERR_AUDIT_LOG_CORRUPT',
  AUDIT_LOG_TRUNCATED: 'ERR_AUDIT_LOG_TRUNCATED',
  AUDIT_RECORD_CORRUPT: 'ERR_AUDIT_RECORD_CORRUPT',
  AUDIT_SEQUENCE_BROKEN: 'ERR_AUDIT_SEQUENCE_BROKEN',
  AUDIT_ROOT_MISMATCH: 'ERR_AUDIT_ROOT_MISMATCH',
  AUDIT_CHECKPOINT_INVALID: 'ERR_AUDIT_CHECKPOINT_INVALID',
  AUDIT_SIGNATURE_INVALID: 'ERR_AUDIT_SIGNATURE_INVALID',
  AUDIT_KEY_UNKNOWN: 'ERR_AUDIT_KEY_UNKNOWN',
  AUDIT_DECISION_UNKNOWN: 'ERR_AUDIT_DECISION_UNKNOWN',
  AUDIT_NOT_CHECKPOINTED: 'ERR_AUDIT_NOT_CHECKPOINTED',
  AUDIT_RANGE_INVALID: 'ERR_AUDIT_RANGE_INVALID',
  AUDIT_CHECKPOINT_UNKNOWN: 'ERR_AUDIT_CHECKPOINT_UNKNOWN',
  AUDIT_LOG_DISABLED: 'ERR_AUDIT_LOG_DISABLED',
  AUDIT_EVENT_MISMATCH: 'ERR_AUDIT_EVENT_MISMATCH',
  AUDIT_SIGNER_FAILED: 'ERR_AUDIT_SIGNER_FAILED',
  AUDIT_SIGNER_CONFIG: 'ERR_AUDIT_SIGNER_CONFIG',
  AUDIT_ANCHOR_MISMATCH: 'ERR_AUDIT_ANCHOR_MISMATCH',
  AUDIT_ANCHOR_FAILED: 'ERR_AUDIT_ANCHOR_FAILED',
  AUDIT_ANCHOR_REVERTED: 'ERR_AUDIT_ANCHOR_REVERTED',
  AUDIT_ANCHOR_CONFIG: 'ERR_AUDIT_ANCHOR_CONFIG',
  AUDIT_MASK_INVALID: 'ERR_AUDIT_MASK_INVALID',
  AUDIT_MASK_FAILED: 'ERR_AUDIT_MASK_FAILED',
  /** The key under a PKCS#11 signer's label is no longer the key it started with (found on reopening a lost session): it refuses to sign. */
  AUDIT_SIGNER_KEY_CHANGED: 'ERR_AUDIT_SIGNER_KEY_CHANGED',
  /** The decision stream (NATS JetStream) did not take an event: not connected, or no answer in time. */
  AUDIT_STREAM_UNAVAILABLE: 'ERR_AUDIT_STREAM_UNAVAILABLE',
  /** JetStream answered and refused an event (other than for its size: ERR_AUDIT_EVENT_TOO_LARGE). */
  AUDIT_STREAM_REFUSED: 'ERR_AUDIT_STREAM_REFUSED',
  /** An epoch of a rotated audit log does not link to the sealed epoch before it (verify-log with an archive). */
  AUDIT_EPOCH_LINK_BROKEN: 'ERR_AUDIT_EPOCH_LINK_BROKEN',
  // tooling
  TOOL_MISSING: 'ERR_TOOL_MISSING',
  INTERNAL: 'ERR_INTERNAL',
  // requests, OPA Data API compatibility (sidecar/src/api)
  /** A number in the request a JS double would not keep exactly (e.g. 12345678901234567890, 1e400): refused rather than altered. */
  REQUEST_NUMBER_INEXACT: 'ERR_REQUEST_NUMBER_INEXACT',
  /** A `Content-Encoding: gzip` body that does not decompress (corrupt or truncated stream). */
  REQUEST_GZIP_INVALID: 'ERR_REQUEST_GZIP_INVALID',
  /** A query parameter OPA honours that Wasm evaluation cannot (`explain`, `strict-builtin-errors=true`). */
  REQUEST_PARAMETER_UNSUPPORTED: 'ERR_REQUEST_PARAMETER_UNSUPPORTED',
  /** The request line and headers are over `http.maxHeaderBytes` (HTTP 431). */
  REQUEST_HEADERS_TOO_LARGE: 'ERR_REQUEST_HEADERS_TOO_LARGE',
  /** The request did not arrive whole within `http.requestTimeoutMs` (HTTP 408). */
  REQUEST_TIMEOUT: 'ERR_REQUEST_TIMEOUT',
  /** Bytes that are not an HTTP/1.1 request (a bad request line, header or chunk): refused before any route sees them. */
  REQUEST_MALFORMED_HTTP: 'ERR_REQUEST_MALFORMED_HTTP',
  /** v0 Data API: the decision is undefined (OPA answers 404 undefined_document there; v1 answers 200 without a result). */
  DOCUMENT_UNDEFINED: 'ERR_DOCUMENT_UNDEFINED',
  // delta updates (sidecar/src/distribution)
  /** A delta carries a number this sidecar already applied on the same deploy, with other content: the publisher's numbering started over. */
  BUNDLE_DELTA_CONFLICT: 'ERR_BUNDLE_DELTA_CONFLICT',
  /** The deploy already has the most deltas one deploy takes: push a new snapshot first. */
  BUNDLE_DELTA_LIMIT: 'ERR_BUNDLE_DELTA_LIMIT',
  /** The delta stream would drop deltas (an age limit, or limits discarding old messages) and this user cannot lift that. */
  DISTRIBUTION_DELTA_RETENTION: 'ERR_DISTRIBUTION_DELTA_RETENTION',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export interface PavilionErrorOptions {
  readonly cause?: unknown;
  /** Structured, JSON-safe details (never secrets or personal data). */
  readonly details?: Readonly<Record<string, unknown>>;
}

export class PavilionError extends Error {
  override readonly name = 'PavilionError';
  readonly code: ErrorCode;
  readonly details: Readonly<Record<string, unknown>> | undefined;

  constructor(code: ErrorCode, message: string, options: PavilionErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details;
  }

  toJSON(): { code: ErrorCode; message: string; details?: Readonly<Record<string, unknown>> } {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details };
  }
}

export function isPavilionError(value: unknown, code?: ErrorCode): value is PavilionError {
  return value instanceof PavilionError && (code === undefined || value.code === code);
}

/** Most characters `describeThrown` returns (a longer text is cut and says so). */
export const MAX_THROWN_DESCRIPTION_CHARS = 16_384;

/** Deepest nesting `describeThrown` writes out for a thrown object (deeper: `{…}` / `[…]`). */
const MAX_THROWN_DESCRIPTION_DEPTH = 16;

/**
 * Text of anything thrown, including the strings and plain objects opa-wasm throws. Total:
 * it is called in catch blocks everywhere, so it returns a string for any value - an object
 * with no prototype or holding a BigInt, a Proxy, a getter or `toJSON` that throws, a cycle -
 * and never throws itself. Bounded: at most MAX_THROWN_DESCRIPTION_CHARS characters (and a
 * short mark saying it was cut), however long the message or large and deep the object.
 * An Error's text is its message; an object's, its `message` when that is a string, else its
 * JSON (as `JSON.stringify` writes it, with BigInts as `1n`, cycles as `[Circular]` and
 * unreadable values as `[unreadable]`).
 */
export function describeThrown(thrown: unknown): string {
  try {
    return describeUnbounded(thrown);
  } catch {
    return undescribable(thrown);
  }
}

/** `describeThrown`, but throwing what reading the value throws. */
function describeUnbounded(thrown: unknown): string {
  if (typeof thrown === 'string') return bounded(thrown);
  switch (typeof thrown) {
    case 'undefined': return 'undefined';
    case 'bigint':
    case 'symbol': return bounded(String(thrown));
    case 'function': return bounded(`[function ${typeof thrown.name === 'string' && thrown.name !== '' ? thrown.name : 'anonymous'}]`);
    default: break;
  }
  if (typeof thrown === 'object' && thrown !== null && 'message' in thrown) {
    const message: unknown = (thrown as { message: unknown }).message;
    if (typeof message === 'string') return bounded(message);
  }
  return jsonDescription(thrown) ?? undescribable(thrown);
}

/** What is left to say of a value that could not be read at all (a revoked Proxy, ...). */
function undescribable(thrown: unknown): string {
  let tag: string;
  try {
    tag = Object.prototype.toString.call(thrown);
  } catch {
    tag = typeof thrown;
  }
  return `an undescribable thrown value (${tag})`;
}

/** The text, or its first MAX_THROWN_DESCRIPTION_CHARS characters and a mark (how much more, when `whole`: the text is all there is). */
function bounded(text: string, whole = true): string {
  if (text.length <= MAX_THROWN_DESCRIPTION_CHARS) return text;
  let end = MAX_THROWN_DESCRIPTION_CHARS;
  const last = text.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--; // do not split a surrogate pair
  return `${text.slice(0, end)}… (cut${whole ? `, ${text.length - end} more characters` : ''})`;
}

/** Thrown by the writer below when the description is long enough (caught there). */
const DESCRIPTION_FULL: unique symbol = Symbol('description full');

/**
 * `JSON.stringify(value)` written out at most to the length limit (so a huge object costs no
 * more than that), depth limited, and never throwing for what a value holds. Undefined when
 * JSON has no text for the value (a `toJSON` answering undefined).
 */
function jsonDescription(value: unknown): string | undefined {
  const parts: string[] = [];
  let length = 0;
  const push = (text: string): void => {
    parts.push(text);
    length += text.length;
    if (length > MAX_THROWN_DESCRIPTION_CHARS) throw DESCRIPTION_FULL;
  };
  const quote = (text: string): string => JSON.stringify(text.length > MAX_THROWN_DESCRIPTION_CHARS ? text.slice(0, MAX_THROWN_DESCRIPTION_CHARS) : text);
  const ancestors = new Set<object>();
  /** The value JSON writes for `holder[key]` (its `toJSON` applied); throws what a getter throws. */
  const read = (holder: object, key: string): unknown => {
    const raw: unknown = (holder as Record<string, unknown>)[key];
    if ((typeof raw !== 'object' || raw === null) && typeof raw !== 'bigint') return raw;
    const toJSON: unknown = (raw as { toJSON?: unknown }).toJSON;
    return typeof toJSON === 'function' ? (toJSON as (key: string) => unknown).call(raw, key) : raw;
  };
  const omitted = (item: unknown): boolean => item === undefined || typeof item === 'function' || typeof item === 'symbol';
  const write = (item: unknown, depth: number): void => {
    switch (typeof item) {
      case 'string': return push(quote(item));
      case 'number': return push(Number.isFinite(item) ? String(item) : 'null');
      case 'boolean': return push(String(item));
      case 'bigint': return push(`${item}n`);
      case 'object': break;
      default: return push('null');
    }
    if (item === null) return push('null');
    if (ancestors.has(item)) return push('"[Circular]"');
    let array: boolean;
    let keys: readonly string[];
    try {
      array = Array.isArray(item); // throws for a revoked Proxy
      keys = array ? [] : Object.keys(item); // runs a Proxy's ownKeys trap
    } catch {
      return push('"[unreadable]"');
    }
    if (depth >= MAX_THROWN_DESCRIPTION_DEPTH) return push(array ? '[…]' : '{…}');
    ancestors.add(item);
    if (array) {
      const count = guarded(() => (item as readonly unknown[]).length);
      push('[');
      for (let i = 0; typeof count === 'number' && i < count; i++) {
        if (i > 0) push(',');
        const element = guarded(() => read(item, String(i)));
        write(omitted(element) ? null : element, depth + 1);
      }
      push(']');
    } else {
      push('{');
      let first = true;
      for (const key of keys) {
        const member = guarded(() => read(item, key));
        if (omitted(member)) continue;
        push(`${first ? '' : ','}${quote(key)}:`);
        first = false;
        write(member, depth + 1);
      }
      push('}');
    }
    ancestors.delete(item);
  };
  try {
    const top = read({ '': value }, '');
    if (omitted(top)) return undefined;
    write(top, 0);
  } catch (error) {
    if (error !== DESCRIPTION_FULL) throw error;
    return bounded(parts.join(''), false);
  }
  return parts.join('');
}

/** A value's reading, or `[unreadable]` when reading it throws (a getter, a Proxy trap, `toJSON`). */
function guarded(readValue: () => unknown): unknown {
  try {
    return readValue();
  } catch (error) {
    if (error === DESCRIPTION_FULL) throw error;
    return '[unreadable]';
  }
}

/** Wrap a foreign error unless it already is a PavilionError. */
export function wrapError(thrown: unknown, code: ErrorCode, context: string): PavilionError {
  if (thrown instanceof PavilionError) return thrown;
  return new PavilionError(code, `${context}: ${describeThrown(thrown)}`, { cause: thrown });
}
