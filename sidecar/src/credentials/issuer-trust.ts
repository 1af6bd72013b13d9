/**
 * Issuer trust: is the issuer of a verified credential allowed, by this tenant, to say what it
 * says? Either the issuer is one of the tenant's trust anchors, or a chain of accreditations
 * leads from it to an anchor. Every link limits what may pass through it - credential types,
 * claim names, and validity (the accreditation's own window and a maximum credential lifetime) -
 * and the limits compose by intersection, so a chain can only narrow. Chains longer than the
 * tenant's maximum depth, chains that revisit an issuer, expired links and out-of-scope
 * credentials are refused, each with its own code. Pure: accreditations arrive already verified.
 */
import { ErrorCodes, PavilionError, type ErrorCode } from '../lib/errors.ts';

/** What an anchor or an accreditation allows. `undefined` means "no limit" for that dimension. */
export interface TrustScope {
  /** Credential types (besides `VerifiableCredential`) the issuer may issue; `*` allows every type. */
  readonly credentialTypes: readonly string[];
  /** Claim names the issuer may assert; absent: any. */
  readonly claims?: readonly string[];
  /** Longest credential lifetime (validUntil - validFrom) the issuer may grant. */
  readonly maxValidityMs?: number;
}

export interface TrustAnchor extends TrustScope {
  readonly issuer: string;
}

/** "`issuer` accredits `subject` for `scope`", from a verified AccreditationCredential. */
export interface Accreditation extends TrustScope {
  readonly id: string;
  readonly issuer: string;
  readonly subject: string;
  readonly validFromMs?: number;
  readonly validUntilMs?: number;
}

export interface TrustQuestion {
  readonly issuer: string;
  readonly types: readonly string[];
  readonly claimNames: readonly string[];
  readonly validFromMs?: number;
  readonly validUntilMs?: number;
}

export interface TrustPolicy {
  readonly anchors: readonly TrustAnchor[];
  readonly accreditations: readonly Accreditation[];
  /** Accreditation links allowed between the credential's issuer and an anchor (0: anchors only). */
  readonly maxChainDepth: number;
}

interface Narrowed {
  readonly types: ReadonlySet<string> | 'any';
  readonly claims: ReadonlySet<string> | 'any';
  readonly maxValidityMs: number;
  readonly notAfterMs: number;
}

const OPEN: Narrowed = { types: 'any', claims: 'any', maxValidityMs: Infinity, notAfterMs: Infinity };

function narrow(current: Narrowed, scope: TrustScope, notAfterMs = Infinity): Narrowed {
  const intersect = (a: ReadonlySet<string> | 'any', b: readonly string[] | undefined): ReadonlySet<string> | 'any' => {
    if (b === undefined || b.includes('*')) return a;
    if (a === 'any') return new Set(b);
    return new Set(b.filter((x) => a.has(x)));
  };
  return {
    types: intersect(current.types, scope.credentialTypes),
    claims: intersect(current.claims, scope.claims),
    maxValidityMs: Math.min(current.maxValidityMs, scope.maxValidityMs ?? Infinity),
    notAfterMs: Math.min(current.notAfterMs, notAfterMs),
  };
}

/** Why `scope` does not cover the credential, or undefined when it does. */
function outOfScope(scope: Narrowed, question: TrustQuestion): string | undefined {
  const types = question.types.filter((t) => t !== 'VerifiableCredential');
  if (scope.types !== 'any') {
    const allowed = scope.types;
    const denied = types.filter((t) => !allowed.has(t));
    if (denied.length > 0 || types.length === 0) return `type ${denied.join(', ') || '(none)'} is outside the issuer's accreditation`;
  }
  if (scope.claims !== 'any') {
    const allowed = scope.claims;
    const denied = question.claimNames.filter((c) => !allowed.has(c));
    if (denied.length > 0) return `claims ${denied.join(', ')} are outside the issuer's accreditation`;
  }
  if (scope.maxValidityMs !== Infinity || scope.notAfterMs !== Infinity) {
    if (question.validUntilMs === undefined) return 'the accreditation limits validity, and the credential never expires';
    if (question.validUntilMs > scope.notAfterMs) return 'the credential outlives the accreditation that allowed it';
    if (scope.maxValidityMs !== Infinity) {
      if (question.validFromMs === undefined) return 'the accreditation limits validity, and the credential has no start';
      if (question.validUntilMs - question.validFromMs > scope.maxValidityMs) return 'the credential is valid for longer than its issuer may grant';
    }
  }
  return undefined;
}

/** The order in which reasons are reported when no chain works: the most telling first. */
const PRIORITY: readonly ErrorCode[] = [
  ErrorCodes.CREDENTIAL_OUT_OF_SCOPE,
  ErrorCodes.CREDENTIAL_CHAIN_CYCLE,
  ErrorCodes.CREDENTIAL_CHAIN_TOO_DEEP,
  ErrorCodes.CREDENTIAL_CHAIN_INVALID,
];

/**
 * The trust chain for `question` (leaf issuer first, anchor last), or a typed error.
 * Depth-first over accreditations; the search is bounded by `maxChainDepth` and by the visited
 * set, so a hostile accreditation graph cannot make it loop or explode.
 */
export function establishTrust(question: TrustQuestion, policy: TrustPolicy, nowMs: number): readonly string[] {
  const failures: Array<{ code: ErrorCode; message: string }> = [];
  const byIssuer = new Map<string, TrustAnchor[]>();
  for (const anchor of policy.anchors) byIssuer.set(anchor.issuer, [...(byIssuer.get(anchor.issuer) ?? []), anchor]);
  const bySubject = new Map<string, Accreditation[]>();
  for (const acc of policy.accreditations) bySubject.set(acc.subject, [...(bySubject.get(acc.subject) ?? []), acc]);
  let steps = 0;

  const search = (node: string, scope: Narrowed, path: readonly string[]): readonly string[] | undefined => {
    if (++steps > 10_000) {
      failures.push({ code: ErrorCodes.CREDENTIAL_CHAIN_TOO_DEEP, message: 'accreditation graph too large to search' });
      return undefined;
    }
    for (const anchor of byIssuer.get(node) ?? []) {
      const why = outOfScope(narrow(scope, anchor), question);
      if (why === undefined) return path;
      failures.push({ code: ErrorCodes.CREDENTIAL_OUT_OF_SCOPE, message: why });
    }
    for (const acc of bySubject.get(node) ?? []) {
      if (path.includes(acc.issuer)) {
        failures.push({ code: ErrorCodes.CREDENTIAL_CHAIN_CYCLE, message: `accreditation ${acc.id} leads back to ${acc.issuer}` });
        continue;
      }
      if (path.length > policy.maxChainDepth) {
        failures.push({ code: ErrorCodes.CREDENTIAL_CHAIN_TOO_DEEP, message: `no trust anchor within ${policy.maxChainDepth} accreditation links` });
        continue;
      }
      if ((acc.validUntilMs !== undefined && nowMs > acc.validUntilMs) || (acc.validFromMs !== undefined && nowMs < acc.validFromMs)) {
        failures.push({ code: ErrorCodes.CREDENTIAL_CHAIN_INVALID, message: `accreditation ${acc.id} is not valid now` });
        continue;
      }
      const next = narrow(scope, acc, acc.validUntilMs);
      const why = outOfScope(next, question);
      if (why !== undefined) {
        failures.push({ code: ErrorCodes.CREDENTIAL_OUT_OF_SCOPE, message: why });
        continue;
      }
      const found = search(acc.issuer, next, [...path, acc.issuer]);
      if (found !== undefined) return found;
    }
    return undefined;
  };

  const chain = search(question.issuer, OPEN, [question.issuer]);
  if (chain !== undefined) return Object.freeze([...chain]);
  if (failures.length === 0) {
    throw new PavilionError(ErrorCodes.CREDENTIAL_ISSUER_UNTRUSTED, `issuer ${question.issuer.slice(0, 120)} is neither a trust anchor nor accredited by one`);
  }
  failures.sort((a, b) => PRIORITY.indexOf(a.code) - PRIORITY.indexOf(b.code));
  const first = failures[0]!;
  throw new PavilionError(first.code, first.message, { details: { issuer: question.issuer.slice(0, 120) } });
}
