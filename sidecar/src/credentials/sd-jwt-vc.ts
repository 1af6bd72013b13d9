/**
 * SD-JWT VC: RFC 9901 (Selective Disclosure for JWTs) and the IETF SD-JWT VC draft, through
 * `@sd-jwt/core` 0.19.0 - with the checks that library leaves out done here:
 *   - every presented disclosure must be referenced by a digest in the issuer-signed payload or
 *     in another presented disclosure (RFC 9901 section 7.1 step 3.3.4/3.4.4 "If ... not
 *     found, the SD-JWT MUST be rejected"); the library silently drops unreferenced ones, which
 *     would hide a tampered disclosure;
 *   - a digest used twice, and a disclosure presented twice, are refused (section 7.1 step 4);
 *   - Key Binding (section 7.3): the KB-JWT must exist when the tenant requires it, have
 *     `typ: kb+jwt`, be signed by the key in `cnf.jwk`, carry the verifier's `nonce` and `aud`,
 *     an `iat` within the allowed freshness window, and an `sd_hash` over exactly the presented
 *     SD-JWT; the library checks neither `aud` nor `iat` and only checks anything when a nonce
 *     is passed;
 *   - no network: the VC status list and type metadata fetchers of `@sd-jwt/sd-jwt-vc` are not
 *     used; a `status` claim is returned for the caller to check against the tenant's held
 *     Status List Tokens (token-status-list.ts).
 * Only the disclosed claims are returned.
 */
import { createHash } from 'node:crypto';
import { SDJwtInstance } from '@sd-jwt/core';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import type { DidResolver } from './did-resolver.ts';
import { MAX_CLOCK_SKEW_MS, parseNumericDate, type ValidityWindow } from './freshness.ts';
import { assertAlgorithm, publicKeyFromJwk, verifyJwsSignature } from './jws-keys.ts';
import { compactJwsText, decodeCompactJws, type CompactJws } from './jwt-parts.ts';
import { isObject, type JsonObject } from './json.ts';
import { readTokenStatusReference, type TokenStatusReference } from './token-status-list.ts';

export interface KeyBindingPolicy {
  /** Refuse an SD-JWT VC without a key-binding JWT. */
  readonly required: boolean;
  /** Oldest acceptable KB-JWT `iat`. */
  readonly maxAgeMs: number;
  readonly clockSkewMs: number;
}

export interface VerifiedSdJwtVc {
  readonly issuer: string;
  readonly vct: string;
  readonly subject?: string;
  readonly claims: JsonObject;
  readonly window: ValidityWindow;
  readonly proofType: string;
  /** The holder key thumbprint-free form: the `cnf.jwk` the presentation was bound to. */
  readonly holderJwk?: JsonObject;
  readonly keyBound: boolean;
  readonly nonce?: string;
  /** The Token Status List entry (`status.status_list`), checked by the caller. */
  readonly statusReference?: TokenStatusReference;
}

const RESERVED = new Set(['iss', 'iat', 'nbf', 'exp', 'cnf', 'vct', 'vct#integrity', 'status', 'sub', '_sd_alg', '_sd', 'jti']);

function sha256B64u(text: string): string {
  return createHash('sha256').update(text, 'ascii').digest('base64url');
}

function hasher(data: string | ArrayBuffer, alg: string): Uint8Array {
  if (alg.toLowerCase() !== 'sha-256') throw new PavilionError(ErrorCodes.CREDENTIAL_DISCLOSURE_INVALID, `_sd_alg ${alg} is not accepted`);
  return new Uint8Array(createHash('sha256').update(typeof data === 'string' ? data : Buffer.from(data)).digest());
}

/** Digests referenced by `_sd` arrays and `{"...": digest}` array elements anywhere in `value`. */
function collectDigests(value: unknown, into: string[]): void {
  if (Array.isArray(value)) {
    for (const item of value) {
      if (isObject(item) && Object.keys(item).length === 1 && typeof item['...'] === 'string') into.push(item['...']);
      else collectDigests(item, into);
    }
    return;
  }
  if (!isObject(value)) return;
  for (const [key, child] of Object.entries(value)) {
    if (key === '_sd' && Array.isArray(child)) {
      for (const digest of child) if (typeof digest === 'string') into.push(digest);
    } else {
      collectDigests(child, into);
    }
  }
}

function disclosureValue(encoded: string): unknown {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(encoded, 'base64url').toString('utf8'));
  } catch (error) {
    throw new PavilionError(ErrorCodes.CREDENTIAL_DISCLOSURE_INVALID, 'a disclosure is not base64url JSON', { cause: error });
  }
  if (!Array.isArray(parsed) || (parsed.length !== 2 && parsed.length !== 3) || typeof parsed[0] !== 'string') {
    throw new PavilionError(ErrorCodes.CREDENTIAL_DISCLOSURE_INVALID, 'a disclosure must be [salt, name, value] or [salt, value]');
  }
  if (parsed.length === 3 && (typeof parsed[1] !== 'string' || parsed[1] === '_sd' || parsed[1] === '...')) {
    throw new PavilionError(ErrorCodes.CREDENTIAL_DISCLOSURE_INVALID, 'a disclosure names a reserved claim');
  }
  return parsed[parsed.length - 1];
}

/** RFC 9901 section 7.1: every disclosure referenced exactly once, no digest used twice. */
function checkDisclosures(payload: JsonObject, disclosures: readonly string[]): void {
  const alg = payload['_sd_alg'] ?? 'sha-256';
  if (alg !== 'sha-256') throw new PavilionError(ErrorCodes.CREDENTIAL_DISCLOSURE_INVALID, `_sd_alg ${String(alg)} is not accepted`);
  const referenced: string[] = [];
  collectDigests(payload, referenced);
  const byDigest = new Map<string, string>();
  for (const disclosure of disclosures) {
    if (!/^[A-Za-z0-9_-]+$/.test(disclosure)) throw new PavilionError(ErrorCodes.CREDENTIAL_DISCLOSURE_INVALID, 'a disclosure is not base64url');
    const digest = sha256B64u(disclosure);
    if (byDigest.has(digest)) throw new PavilionError(ErrorCodes.CREDENTIAL_DISCLOSURE_INVALID, 'a disclosure is presented twice');
    byDigest.set(digest, disclosure);
    collectDigests(disclosureValue(disclosure), referenced);
  }
  const seen = new Set<string>();
  for (const digest of referenced) {
    if (seen.has(digest)) throw new PavilionError(ErrorCodes.CREDENTIAL_DISCLOSURE_INVALID, 'a digest appears more than once');
    seen.add(digest);
  }
  for (const digest of byDigest.keys()) {
    if (!seen.has(digest)) {
      throw new PavilionError(ErrorCodes.CREDENTIAL_DISCLOSURE_INVALID, 'a presented disclosure is not referenced by the issuer-signed payload (tampered or foreign disclosure)');
    }
  }
}

export interface SdJwtCheck {
  readonly dids: DidResolver;
  readonly nowMs: number;
  readonly clockSkewMs: number;
  readonly keyBinding: KeyBindingPolicy;
  /** The verifier's nonce and audience; required when a KB-JWT is present or required. */
  readonly challenge?: string;
  readonly domain?: string;
}

/**
 * `issuerJws`: the issuer-signed JWT (the part before the first `~`) as the caller decoded it
 * already, to read its claimed issuer; used only when it is the decoding of exactly that part
 * (else the part is decoded here), so the claims read are those of the bytes verified.
 */
export async function verifySdJwtVc(compact: string, check: SdJwtCheck, issuerJws?: CompactJws): Promise<VerifiedSdJwtVc> {
  const parts = compact.split('~');
  if (parts.length < 2) throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, 'an SD-JWT is <jwt>~<disclosures>~[kb-jwt]');
  const issuerJwt = parts[0]!;
  const kbJwt = parts[parts.length - 1]!;
  const disclosures = parts.slice(1, -1);
  if (disclosures.some((d) => d === '')) throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, 'empty disclosure');

  // 1. what the issuer JWT and the KB-JWT claim, before any key is resolved or signature checked:
  // a credential for another verifier or challenge costs no signature work (its code says only
  // what the presenter sent; one whose signature is also bad is refused all the same)
  const { header, payload, signingInput, signature } = issuerJws !== undefined && compactJwsText(issuerJws) === issuerJwt ? issuerJws : decodeCompactJws(issuerJwt, 'SD-JWT');
  const iss = payload['iss'];
  if (typeof iss !== 'string' || !iss.startsWith('did:')) throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, 'SD-JWT VC iss must be a DID');
  const kid = typeof header['kid'] === 'string' ? header['kid'] : iss;
  if (kid !== iss && !kid.startsWith(`${iss}#`)) throw new PavilionError(ErrorCodes.CREDENTIAL_ISSUER_MISMATCH, 'kid is not a key of iss');
  if (header['typ'] !== 'dc+sd-jwt' && header['typ'] !== 'vc+sd-jwt') throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, 'SD-JWT VC typ must be dc+sd-jwt (or the older vc+sd-jwt)');
  const vct = payload['vct'];
  if (typeof vct !== 'string' || vct === '') throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, 'SD-JWT VC needs vct');
  const statusReference = payload['status'] === undefined ? undefined : readTokenStatusReference(payload['status']);
  const window = sdJwtWindow(payload);
  const cnf = payload['cnf'];
  const holderJwk = isObject(cnf) && isObject(cnf['jwk']) ? cnf['jwk'] : undefined;
  let keyBinding: { readonly jws: CompactJws; readonly holderJwk: JsonObject } | undefined;
  if (kbJwt === '') {
    if (check.keyBinding.required) throw new PavilionError(ErrorCodes.CREDENTIAL_KEY_BINDING_MISSING, 'this tenant requires key binding, and the SD-JWT has no KB-JWT');
  } else {
    if (holderJwk === undefined) throw new PavilionError(ErrorCodes.CREDENTIAL_KEY_BINDING_INVALID, 'a KB-JWT without cnf.jwk in the credential');
    keyBinding = { jws: readKeyBinding(kbJwt, compact.slice(0, compact.length - kbJwt.length), check), holderJwk };
  }

  // 2. issuer signature, with the issuer's key resolved offline from kid (a DID URL under iss);
  // an issuer signature: the key must be under assertionMethod (not, say, an authentication key)
  const method = await check.dids.verificationMethod(kid, 'assertionMethod');
  if (method.controller !== iss) throw new PavilionError(ErrorCodes.CREDENTIAL_ISSUER_MISMATCH, 'the signing key is not controlled by iss');
  const issuerKey = publicKeyFromJwk(method.publicKeyJwk);
  const alg = assertAlgorithm(header['alg'], issuerKey);
  if (!verifyJwsSignature(signingInput, signature, issuerKey)) throw new PavilionError(ErrorCodes.CREDENTIAL_SIGNATURE_INVALID, 'SD-JWT issuer signature does not verify');

  // 3. disclosures: the check @sd-jwt/core leaves out
  checkDisclosures(payload, disclosures);

  // 4. key binding (RFC 9901 section 7.3), entirely here: its claims were read in step 1
  if (keyBinding !== undefined) verifyKeyBindingSignature(keyBinding.jws, keyBinding.holderJwk);
  const keyBound = keyBinding !== undefined;

  // 5. claims: the library recomputes the disclosed payload (and re-checks the times). The
  // signature it asks about is the one step 2 verified: the same bytes are not verified twice
  // (anything else it might ask about still is).
  const instance = new SDJwtInstance({
    hasher,
    verifier: (data: string, sig: string) => (data === signingInput && sig === signature) || verifyJwsSignature(data, sig, issuerKey),
  });
  let disclosed: unknown;
  try {
    ({ payload: disclosed } = await instance.verify(compact.slice(0, compact.length - kbJwt.length), {
      currentDate: Math.floor(check.nowMs / 1000),
      skewSeconds: Math.floor(Math.min(check.clockSkewMs, MAX_CLOCK_SKEW_MS) / 1000),
    }));
  } catch (error) {
    if (error instanceof PavilionError) throw error;
    const message = describeThrown(error);
    const code = /expired|exp/i.test(message) ? ErrorCodes.CREDENTIAL_EXPIRED : /nbf|iat|not yet|future/i.test(message) ? ErrorCodes.CREDENTIAL_NOT_YET_VALID : ErrorCodes.CREDENTIAL_SIGNATURE_INVALID;
    throw new PavilionError(code, `SD-JWT: ${message}`, { cause: error });
  }
  if (!isObject(disclosed)) throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, 'SD-JWT payload is not an object');
  const claims: JsonObject = {};
  for (const [key, value] of Object.entries(disclosed)) if (!RESERVED.has(key)) claims[key] = value;
  const sub = disclosed['sub'];
  return {
    issuer: iss,
    vct,
    ...(typeof sub === 'string' ? { subject: sub } : {}),
    claims,
    window,
    proofType: `SD-JWT/${alg}`,
    ...(holderJwk === undefined ? {} : { holderJwk }),
    keyBound,
    ...(keyBound && check.challenge !== undefined ? { nonce: check.challenge } : {}),
    ...(statusReference === undefined ? {} : { statusReference }),
  };
}

/**
 * The time window an SD-JWT VC's issuer JWT states (`nbf`, `exp`, `iat`), read without verifying
 * anything: the verifier refuses an expired or not yet valid credential on it before the proof.
 */
export function sdJwtWindow(payload: JsonObject): ValidityWindow {
  const window: { validFromMs?: number; validUntilMs?: number; issuedAtMs?: number } = {};
  if (payload['nbf'] !== undefined) window.validFromMs = parseNumericDate(payload['nbf'], 'nbf');
  if (payload['exp'] !== undefined) window.validUntilMs = parseNumericDate(payload['exp'], 'exp');
  if (payload['iat'] !== undefined) window.issuedAtMs = parseNumericDate(payload['iat'], 'iat');
  return window;
}

function keyBindingInvalid(message: string): PavilionError {
  return new PavilionError(ErrorCodes.CREDENTIAL_KEY_BINDING_INVALID, `KB-JWT: ${message}`);
}

/**
 * A KB-JWT's claims (RFC 9901 section 7.3): `typ`, this verifier's `nonce` and `aud`, an `iat`
 * within the allowed age, an `sd_hash` over exactly the presented SD-JWT. Nothing verified yet:
 * verifyKeyBindingSignature then checks the holder signed these very claims.
 */
function readKeyBinding(kbJwt: string, presented: string, check: SdJwtCheck): CompactJws {
  const jws = decodeCompactJws(kbJwt, 'KB-JWT');
  const { header, payload } = jws;
  if (header['typ'] !== 'kb+jwt') throw keyBindingInvalid('typ must be kb+jwt');
  if (check.challenge === undefined || check.domain === undefined) throw keyBindingInvalid('the verifier gave no challenge and domain to bind to');
  if (payload['nonce'] !== check.challenge) throw new PavilionError(ErrorCodes.CREDENTIAL_CHALLENGE_MISMATCH, 'KB-JWT nonce is not this verifier\'s challenge');
  const aud = payload['aud'];
  if (aud !== check.domain) throw new PavilionError(ErrorCodes.CREDENTIAL_DOMAIN_MISMATCH, 'KB-JWT aud is not this verifier');
  const iatMs = parseNumericDate(payload['iat'], 'KB-JWT iat');
  const skew = Math.min(check.keyBinding.clockSkewMs, MAX_CLOCK_SKEW_MS);
  if (iatMs > check.nowMs + skew) throw keyBindingInvalid('iat is in the future');
  if (check.nowMs - skew - iatMs > check.keyBinding.maxAgeMs) throw keyBindingInvalid(`iat is older than ${check.keyBinding.maxAgeMs} ms`);
  if (payload['sd_hash'] !== sha256B64u(presented)) throw keyBindingInvalid('sd_hash does not match the presented SD-JWT');
  return jws;
}

/** The KB-JWT read by readKeyBinding is signed by the holder key in the credential's `cnf.jwk`. */
function verifyKeyBindingSignature({ header, signingInput, signature }: CompactJws, holderJwk: JsonObject): void {
  const holderKey = publicKeyFromJwk(holderJwk);
  assertAlgorithm(header['alg'], holderKey);
  if (!verifyJwsSignature(signingInput, signature, holderKey)) throw keyBindingInvalid('signature does not verify with cnf.jwk');
}
