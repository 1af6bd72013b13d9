/**
 * Public keys for JWS verification (VC-JWT, SD-JWT, key-binding JWTs): JWK -> Node KeyObject,
 * algorithm agreement between the JWS header and the key, and raw JWS signature checks for the
 * SD-JWT library's verifier callbacks. Signatures are checked by `node:crypto` (OpenSSL); only
 * EdDSA (Ed25519) and ES256 (P-256) are accepted - `none`, HMAC and RSA never are.
 */
import { createPublicKey, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import { isObject } from './json.ts';

const JWS_ALGORITHMS = ['EdDSA', 'ES256'] as const;
export type JwsAlgorithm = (typeof JWS_ALGORITHMS)[number];

/** Imported keys by their public members: issuers and returning holders sign again and again. */
const importedKeys = new Map<string, KeyObject>();
const IMPORTED_KEYS_MAX = 1024;

export function publicKeyFromJwk(jwk: unknown): KeyObject {
  if (!isObject(jwk) || 'd' in jwk) throw new PavilionError(ErrorCodes.CREDENTIAL_KEY_UNSUPPORTED, 'a public JWK is required');
  const okp = jwk['kty'] === 'OKP' && jwk['crv'] === 'Ed25519';
  const ec = jwk['kty'] === 'EC' && jwk['crv'] === 'P-256';
  if (!okp && !ec) throw new PavilionError(ErrorCodes.CREDENTIAL_KEY_UNSUPPORTED, 'only Ed25519 and P-256 keys are accepted');
  const x = jwk['x'];
  const y = ec ? jwk['y'] : undefined;
  // only well-formed members make a cache key; anything else goes to the importer (and fails there)
  const id = typeof x === 'string' && (okp || typeof y === 'string') ? `${String(jwk['crv'])}.${x}.${y ?? ''}` : undefined;
  const known = id === undefined ? undefined : importedKeys.get(id);
  if (known !== undefined) return known;
  let key: KeyObject;
  try {
    const pub: Record<string, unknown> = { kty: jwk['kty'], crv: jwk['crv'], x };
    if (ec) pub['y'] = y;
    key = createPublicKey({ key: pub as import('node:crypto').JsonWebKey, format: 'jwk' });
  } catch (error) {
    throw new PavilionError(ErrorCodes.CREDENTIAL_KEY_UNSUPPORTED, `invalid JWK: ${describeThrown(error)}`, { cause: error });
  }
  if (id !== undefined) {
    if (importedKeys.size >= IMPORTED_KEYS_MAX) importedKeys.delete(importedKeys.keys().next().value!);
    importedKeys.set(id, key);
  }
  return key;
}

export function algorithmForKey(key: KeyObject): JwsAlgorithm {
  if (key.asymmetricKeyType === 'ed25519') return 'EdDSA';
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') return 'ES256';
  throw new PavilionError(ErrorCodes.CREDENTIAL_KEY_UNSUPPORTED, 'only Ed25519 and P-256 keys are accepted');
}

/** Refuse a JWS whose `alg` is not the one the key implies (no algorithm confusion). */
export function assertAlgorithm(alg: unknown, key: KeyObject): JwsAlgorithm {
  const expected = algorithmForKey(key);
  if (alg !== expected) throw new PavilionError(ErrorCodes.CREDENTIAL_SIGNATURE_INVALID, `JWS alg ${String(alg)} does not match the ${expected} key`);
  return expected;
}

/** Check a JWS signature over `signingInput` (`base64url(header).base64url(payload)`). */
export function verifyJwsSignature(signingInput: string, signatureB64u: string, key: KeyObject): boolean {
  const alg = algorithmForKey(key);
  if (!/^[A-Za-z0-9_-]*$/.test(signatureB64u)) return false;
  const signature = Buffer.from(signatureB64u, 'base64url');
  if (alg === 'EdDSA') return cryptoVerify(null, Buffer.from(signingInput), key, signature);
  return cryptoVerify('sha256', Buffer.from(signingInput), { key, dsaEncoding: 'ieee-p1363' }, signature);
}
