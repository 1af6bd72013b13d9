/**
 * VC-JWT: W3C credentials secured with JOSE. Two encodings are accepted:
 *   - VC-JOSE-COSE (W3C Recommendation, section 3.1.1): `typ: vc+jwt`, the payload *is* the
 *     credential (Data Model 2.0);
 *   - VC Data Model 1.1 section 6.3.1 JWT encoding: the credential in the `vc` claim, with
 *     `iss`, `sub`, `nbf`, `exp`, `jti` standing for issuer, subject, issuanceDate,
 *     expirationDate and id.
 * The signing key is the header `kid`, a DID URL resolved offline; its controller must be the
 * issuer. Signatures are checked with `jose` (EdDSA, ES256 only); time claims by Pavilion's
 * freshness rules.
 */
import { compactVerify } from 'jose';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import type { DidResolver } from './did-resolver.ts';
import { isoValidity, parseNumericDate, type ValidityWindow } from './freshness.ts';
import { assertAlgorithm, publicKeyFromJwk } from './jws-keys.ts';
import { decodeCompactJws } from './jwt-parts.ts';
import { isObject, nodeId } from './json.ts';
import { readW3cCredential, VC_V1_CONTEXT, type W3cCredentialView } from './w3c-credential.ts';

export interface VerifiedVcJwt {
  readonly view: W3cCredentialView;
  readonly proofType: string;
}

export async function verifyVcJwt(jwt: string, dids: DidResolver): Promise<VerifiedVcJwt> {
  const { header, payload } = decodeCompactJws(jwt, 'VC-JWT');
  const kid = header['kid'];
  if (typeof kid !== 'string' || !kid.startsWith('did:')) throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, 'VC-JWT header needs a kid that is a DID URL');
  const method = await dids.verificationMethod(kid);
  const key = publicKeyFromJwk(method.publicKeyJwk);
  const alg = assertAlgorithm(header['alg'], key);
  try {
    await compactVerify(jwt, key, { algorithms: [alg] });
  } catch (error) {
    throw new PavilionError(ErrorCodes.CREDENTIAL_SIGNATURE_INVALID, `VC-JWT signature: ${describeThrown(error)}`, { cause: error });
  }

  let view: W3cCredentialView;
  if (header['typ'] === 'vc+jwt') {
    view = readW3cCredential(payload);
    if (view.dataModel !== '2.0') throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, 'vc+jwt carries Data Model 2.0 credentials');
    if (payload['iss'] !== undefined && payload['iss'] !== view.issuer) throw new PavilionError(ErrorCodes.CREDENTIAL_ISSUER_MISMATCH, 'iss differs from the credential issuer');
  } else {
    const vc = payload['vc'];
    if (!isObject(vc)) throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, 'a VC 1.1 JWT carries its credential in the vc claim');
    const iss = payload['iss'];
    if (typeof iss !== 'string') throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, 'a VC 1.1 JWT needs iss');
    const inner = nodeId(vc['issuer']);
    if (inner !== undefined && inner !== iss) throw new PavilionError(ErrorCodes.CREDENTIAL_ISSUER_MISMATCH, 'iss differs from vc.issuer');
    const subject = isObject(vc['credentialSubject']) ? { ...vc['credentialSubject'] } : vc['credentialSubject'];
    if (typeof payload['sub'] === 'string' && isObject(subject)) subject['id'] = payload['sub'];
    const window: { validFromMs?: number; validUntilMs?: number; issuedAtMs?: number } = {};
    if (payload['nbf'] !== undefined) window.validFromMs = parseNumericDate(payload['nbf'], 'nbf');
    if (payload['exp'] !== undefined) window.validUntilMs = parseNumericDate(payload['exp'], 'exp');
    if (payload['iat'] !== undefined) window.issuedAtMs = parseNumericDate(payload['iat'], 'iat');
    if (window.validFromMs === undefined && window.issuedAtMs === undefined) throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, 'a VC 1.1 JWT needs nbf or iat');
    const issuance = new Date(window.validFromMs ?? window.issuedAtMs!).toISOString();
    const base = readW3cCredential({ '@context': [VC_V1_CONTEXT], ...vc, issuer: iss, issuanceDate: issuance, credentialSubject: subject });
    view = { ...base, window: window as ValidityWindow, validity: isoValidity(window) };
  }
  if (method.controller !== view.issuer) {
    throw new PavilionError(ErrorCodes.CREDENTIAL_ISSUER_MISMATCH, 'the signing key is not controlled by the credential issuer');
  }
  return { view, proofType: `JWT/${alg}` };
}

