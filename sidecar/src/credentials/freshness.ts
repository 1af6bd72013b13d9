/**
 * Freshness, one rule set for every format: validity windows (VC 2.0 `validFrom`/`validUntil`,
 * VC 1.1 `issuanceDate`/`expirationDate`, JWT `nbf`/`exp`/`iat`), a bounded clock skew, and a
 * per-type maximum age measured from issuance. Pure: the clock is an argument.
 */
import { ErrorCodes, PavilionError } from '../lib/errors.ts';

export interface FreshnessPolicy {
  /** Tolerated difference between issuer and verifier clocks. */
  readonly clockSkewMs: number;
  /** Maximum age since issuance per credential type; a type not listed has no age limit... */
  readonly maxAgeMsByType: Readonly<Record<string, number>>;
  /** ...unless this is set, which applies to every type not listed. */
  readonly defaultMaxAgeMs?: number;
}

export interface ValidityWindow {
  readonly validFromMs?: number;
  readonly validUntilMs?: number;
  readonly issuedAtMs?: number;
}

/** A validity window as RFC 3339 text, the way verified facts carry it. */
export interface ValidityText {
  readonly validFrom?: string;
  readonly validUntil?: string;
  readonly issuedAt?: string;
}

/** The window's instants as ISO 8601 UTC text (absent stays absent). */
export function isoValidity(window: ValidityWindow): ValidityText {
  const out: { validFrom?: string; validUntil?: string; issuedAt?: string } = {};
  if (window.validFromMs !== undefined) out.validFrom = new Date(window.validFromMs).toISOString();
  if (window.validUntilMs !== undefined) out.validUntil = new Date(window.validUntilMs).toISOString();
  if (window.issuedAtMs !== undefined) out.issuedAt = new Date(window.issuedAtMs).toISOString();
  return out;
}

export const MAX_CLOCK_SKEW_MS = 10 * 60_000;

/** XML Schema dateTime as the VC data model requires (with a time zone). */
const DATE_TIME = /^(\d{4,})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$/;

/** Parse an XML Schema dateTime with an explicit zone; anything else is a malformed credential. */
export function parseDateTime(value: unknown, field: string): number {
  if (typeof value !== 'string' || !DATE_TIME.test(value)) {
    throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, `${field} must be an XML Schema dateTime with a time zone`);
  }
  const ms = Date.parse(value);
  if (!Number.isFinite(ms)) throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, `${field} is not a valid date`);
  return ms;
}

/** A NumericDate (seconds since the epoch, RFC 7519 section 2) in milliseconds. */
export function parseNumericDate(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, `${field} must be a NumericDate`);
  }
  return value * 1000;
}

export function checkFreshness(window: ValidityWindow, types: readonly string[], nowMs: number, policy: FreshnessPolicy): void {
  const skew = Math.min(policy.clockSkewMs, MAX_CLOCK_SKEW_MS);
  const { validFromMs, validUntilMs, issuedAtMs } = window;
  if (validFromMs !== undefined && validUntilMs !== undefined && validUntilMs < validFromMs) {
    throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, 'validity ends before it starts');
  }
  if (validUntilMs !== undefined && nowMs - skew > validUntilMs) {
    throw new PavilionError(ErrorCodes.CREDENTIAL_EXPIRED, `credential expired at ${new Date(validUntilMs).toISOString()}`);
  }
  if (validFromMs !== undefined && nowMs + skew < validFromMs) {
    throw new PavilionError(ErrorCodes.CREDENTIAL_NOT_YET_VALID, `credential is valid from ${new Date(validFromMs).toISOString()}`);
  }
  if (issuedAtMs !== undefined && nowMs + skew < issuedAtMs) {
    throw new PavilionError(ErrorCodes.CREDENTIAL_NOT_YET_VALID, `credential is issued in the future (${new Date(issuedAtMs).toISOString()})`);
  }
  let maxAgeMs: number | undefined;
  for (const type of types) {
    const limit = policy.maxAgeMsByType[type];
    if (limit !== undefined) maxAgeMs = maxAgeMs === undefined ? limit : Math.min(maxAgeMs, limit);
  }
  maxAgeMs ??= policy.defaultMaxAgeMs;
  if (maxAgeMs === undefined) return;
  const since = issuedAtMs ?? validFromMs;
  if (since === undefined) {
    throw new PavilionError(ErrorCodes.CREDENTIAL_TOO_OLD, 'a maximum age applies to this credential type, and it carries no issuance time');
  }
  if (nowMs - skew - since > maxAgeMs) {
    throw new PavilionError(ErrorCodes.CREDENTIAL_TOO_OLD, `credential issued ${new Date(since).toISOString()} is older than the ${maxAgeMs} ms allowed for its type`);
  }
}

/**
 * Refuse a status list (or token) issued before the one held: a stale copy from before a
 * revocation, still validly signed, must not bring a credential back. One without an issue
 * time cannot be ordered against a dated one, so it is refused too; the held one keeps serving
 * until its own maximum age.
 */
export function refuseOlderStatus(what: string, issuedAtMs: number | undefined, heldIssuedAtMs: number | undefined): void {
  if (heldIssuedAtMs === undefined || (issuedAtMs !== undefined && issuedAtMs >= heldIssuedAtMs)) return;
  const issued = issuedAtMs === undefined ? 'at an unknown time' : new Date(issuedAtMs).toISOString();
  throw new PavilionError(ErrorCodes.CREDENTIAL_STATUS_STALE, `${what} was issued ${issued}, before the one held (${new Date(heldIssuedAtMs).toISOString()}); the held one is kept`);
}
