/**
 * VC-JWT: W3C credentials secured with JOSE. Two encodings are accepted:
 *   - VC-JOSE-COSE (W3C Recommendation, section 3.1.1): `typ: vc+jwt`, the payload *is* the
 *     credential (Data Model 2.0);
 *   - VC Data Model 1.1 section 6.3.1 JWT encoding: the credential in the `vc` claim, with
 *     `iss`, `sub`, `nbf`, `exp`, `jti` standing for issuer, subject, issuanceDate,
 *     expirationDate and id.
 * The signing key is the header `kid`, a DID URL resolved offline; its controller must be the
 * issuer. Signatures are checked with `jose` (EdDSA, ES256 only); time claims by Pavilion's
 * freshness rules. The JWT claims (`nbf`, `exp`) and the credential's own dates
 * (`validFrom`/`validUntil`, `issuanceDate`/`expirationDate`) all bind: the window is the
 * stricter bound of each side, so an issuer expressing expiry either way is honoured.
 */
import { compactVerify } from 'jose';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import type { DidResolver } from './did-resolver.ts';
import { isoValidity, parseDateTime, parseNumericDate, type ValidityText, type ValidityWindow } from './freshness.ts';
import { assertAlgorithm, publicKeyFromJwk } from './jws-keys.ts';
import { compactJwsText, type CompactJws } from './jwt-parts.ts';
import { isObject, nodeId } from './json.ts';
import { readW3cCredential, VC_V1_CONTEXT, type W3cCredentialView } from './w3c-credential.ts';

export interface VerifiedVcJwt {
  readonly view: W3cCredentialView;
  readonly proofType: string;
}

type Writable<T> = { -readonly [K in keyof T]: T[K] };
type MutableWindow = Writable<ValidityWindow>;

/** The JWT's registered time claims (RFC 7519 nbf, exp, iat). */
function jwtTimes(payload: Record<string, unknown>): MutableWindow {
  const window: MutableWindow = {};
  if (payload['nbf'] !== undefined) window.validFromMs = parseNumericDate(payload['nbf'], 'nbf');
  if (payload['exp'] !== undefined) window.validUntilMs = parseNumericDate(payload['exp'], 'exp');
  if (payload['iat'] !== undefined) window.issuedAtMs = parseNumericDate(payload['iat'], 'iat');
  return window;
}

/** The stricter start (the later one) and end (the earlier one); a bound on one side alone still binds. */
function later(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined ? b : b === undefined ? a : Math.max(a, b);
}
function earlier(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined ? b : b === undefined ? a : Math.min(a, b);
}

/**
 * The credential a VC-JWT states, from its decoded claims alone (nothing verified): issuer,
 * types, subject, claims and the validity window the JWT's `nbf`/`exp` and the credential's own
 * dates give together. Pure, so the verifier can refuse on it (expired, not yet valid, untrusted)
 * before any key resolution or signature work; verifyVcJwt returns it only once the signature
 * over these very claims has verified.
 */
export function readVcJwt({ header, payload }: CompactJws): W3cCredentialView {
  if (header['typ'] === 'vc+jwt') {
    const view = readW3cCredential(payload);
    if (view.dataModel !== '2.0') throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, 'vc+jwt carries Data Model 2.0 credentials');
    if (payload['iss'] !== undefined && payload['iss'] !== view.issuer) throw new PavilionError(ErrorCodes.CREDENTIAL_ISSUER_MISMATCH, 'iss differs from the credential issuer');
    // nbf/exp narrow validFrom/validUntil (the text of a bound the claims do not change is kept)
    const times = jwtTimes(payload);
    const from = later(view.window.validFromMs, times.validFromMs);
    const until = earlier(view.window.validUntilMs, times.validUntilMs);
    const window: MutableWindow = { ...view.window };
    const validity: Writable<ValidityText> = { ...view.validity };
    if (from !== undefined && from !== view.window.validFromMs) {
      window.validFromMs = from;
      validity.validFrom = new Date(from).toISOString();
    }
    if (until !== undefined && until !== view.window.validUntilMs) {
      window.validUntilMs = until;
      validity.validUntil = new Date(until).toISOString();
    }
    return { ...view, window, validity };
  }
  const vc = payload['vc'];
  if (!isObject(vc)) throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, 'a VC 1.1 JWT carries its credential in the vc claim');
  const iss = payload['iss'];
  if (typeof iss !== 'string') throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, 'a VC 1.1 JWT needs iss');
  const inner = nodeId(vc['issuer']);
  if (inner !== undefined && inner !== iss) throw new PavilionError(ErrorCodes.CREDENTIAL_ISSUER_MISMATCH, 'iss differs from vc.issuer');
  const subject = isObject(vc['credentialSubject']) ? { ...vc['credentialSubject'] } : vc['credentialSubject'];
  if (typeof payload['sub'] === 'string' && isObject(subject)) subject['id'] = payload['sub'];
  const window = jwtTimes(payload);
  if (window.validFromMs === undefined && window.issuedAtMs === undefined) throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, 'a VC 1.1 JWT needs nbf or iat');
  // the vc's own issuanceDate/expirationDate bind too: an issuer that dates only the vc object
  // (no exp) must not get a credential that never expires
  const from = later(window.validFromMs, vc['issuanceDate'] === undefined ? undefined : parseDateTime(vc['issuanceDate'], 'vc.issuanceDate'));
  const until = earlier(window.validUntilMs, vc['expirationDate'] === undefined ? undefined : parseDateTime(vc['expirationDate'], 'vc.expirationDate'));
  if (from !== undefined) window.validFromMs = from;
  if (until !== undefined) window.validUntilMs = until;
  const issuance = new Date(window.validFromMs ?? window.issuedAtMs!).toISOString();
  const base = readW3cCredential({ '@context': [VC_V1_CONTEXT], ...vc, issuer: iss, issuanceDate: issuance, credentialSubject: subject });
  return { ...base, window: window as ValidityWindow, validity: isoValidity(window) };
}

/**
 * `jws`: the VC-JWT as decoded (decodeCompactJws, once, by the caller, who may have read its
 * claims already); its signature is checked over the very text its header and payload were
 * decoded from. `view`: readVcJwt of that same decoding, when the caller read it before (to
 * refuse an expired or untrusted credential before this function's key resolution and signature).
 */
export async function verifyVcJwt(jws: CompactJws, dids: DidResolver, view: W3cCredentialView = readVcJwt(jws)): Promise<VerifiedVcJwt> {
  const { header } = jws;
  const kid = header['kid'];
  if (typeof kid !== 'string' || !kid.startsWith('did:')) throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, 'VC-JWT header needs a kid that is a DID URL');
  // only a key the issuer's DID document lists under assertionMethod may issue credentials
  const method = await dids.verificationMethod(kid, 'assertionMethod');
  const key = publicKeyFromJwk(method.publicKeyJwk);
  const alg = assertAlgorithm(header['alg'], key);
  try {
    await compactVerify(compactJwsText(jws), key, { algorithms: [alg] });
  } catch (error) {
    throw new PavilionError(ErrorCodes.CREDENTIAL_SIGNATURE_INVALID, `VC-JWT signature: ${describeThrown(error)}`, { cause: error });
  }
  if (method.controller !== view.issuer) {
    throw new PavilionError(ErrorCodes.CREDENTIAL_ISSUER_MISMATCH, 'the signing key is not controlled by the credential issuer');
  }
  return { view, proofType: `JWT/${alg}` };
}
