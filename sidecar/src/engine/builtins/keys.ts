/**
 * Key material for the JWT and X.509 builtins: Go's encoding/pem block decoding, OPA's
 * parseKeysFromCertOrJWK (v1/topdown/tokens.go: a single PEM "CERTIFICATE" or "PUBLIC KEY"
 * block with nothing after it, otherwise a JWK or JWK Set as lestrrat-go/jwx parses it), and
 * signature verification through node:crypto only (crypto.verify, createHmac,
 * createPublicKey with format 'jwk', X509Certificate).
 *
 * Two verification flavours exist in OPA and are kept apart here:
 * - `builtin`: io.jwt.verify_* — ECDSA signatures split in two halves of any length, RSA-PSS
 *   salt length detected, JWK private keys rejected (Go's type assertions fail on them);
 * - `jws`: io.jwt.decode_verify (jwx's jwsbb) — ECDSA signatures must be exactly twice the
 *   curve size, RSA-PSS salt length equals the hash size, private keys verify with their
 *   public half, and "oct" JWKs act as HMAC secrets.
 *
 * Known limits: RSA keys below 1024 bits never verify, as with Go >= 1.24 (OPA 1.22 is built
 * with Go 1.26); key types Go cannot parse but OpenSSL can (e.g. RSA-PSS-only SPKI, Ed448) are
 * accepted by node:crypto and then fail verification instead of failing to parse.
 */
import { type KeyObject, X509Certificate, constants, createHmac, createPublicKey, timingSafeEqual, verify } from 'node:crypto';
import { goBase64Decode, isObject, isString } from './common.ts';

export interface PemBlock {
  readonly type: string;
  readonly bytes: Buffer;
  /** Everything after the block's END line. */
  readonly rest: string;
}

function getLine(data: string): [string, string] {
  const newline = data.indexOf('\n');
  const line = newline < 0 ? data : data.slice(0, newline);
  const rest = newline < 0 ? '' : data.slice(newline + 1);
  return [line.replace(/[ \t\r]+$/, ''), rest];
}

/** Go's pem.Decode: the first well-formed PEM block in `data`, or undefined. */
export function decodePem(data: string): PemBlock | undefined {
  let rest = data;
  for (;;) {
    if (rest.startsWith('-----BEGIN ')) {
      rest = rest.slice('-----BEGIN '.length);
    } else {
      const at = rest.indexOf('\n-----BEGIN ');
      if (at < 0) return undefined;
      rest = rest.slice(at + '\n-----BEGIN '.length);
    }
    let typeLine: string;
    [typeLine, rest] = getLine(rest);
    if (!typeLine.endsWith('-----')) continue;
    const type = typeLine.slice(0, -5);
    let hasHeaders = false;
    for (;;) {
      if (rest.length === 0) return undefined;
      const [line, next] = getLine(rest);
      if (!line.includes(':')) break;
      hasHeaders = true;
      rest = next;
    }
    let endIndex: number;
    let trailerIndex: number;
    if (!hasHeaders && rest.startsWith('-----END ')) {
      endIndex = 0;
      trailerIndex = '-----END '.length;
    } else {
      endIndex = rest.indexOf('\n-----END ');
      trailerIndex = endIndex + '\n-----END '.length;
    }
    if (endIndex < 0) continue;
    const trailer = rest.slice(trailerIndex, trailerIndex + type.length + 5);
    if (trailer !== `${type}-----`) continue;
    const [afterEnd] = getLine(rest.slice(trailerIndex + type.length + 5));
    if (afterEnd.length !== 0) continue;
    const body = rest.slice(0, endIndex).replace(/[ \t]/g, '');
    const bytes = goBase64Decode(body, 'std');
    if (bytes === undefined) continue;
    const [, after] = getLine(rest.slice(endIndex === 0 ? trailerIndex - '-----END '.length : endIndex + 1));
    return { type, bytes, rest: after };
  }
}

export interface VerificationKey {
  /** The JWK "alg", or '' (PEM keys and JWKs without one). */
  readonly alg: string;
  /** The JWK "kid", or ''. */
  readonly kid: string;
  /** Public key for asymmetric keys (the public half when the JWK was private). */
  readonly publicKey: KeyObject | undefined;
  /** HMAC secret of an "oct" JWK. */
  readonly secret: Buffer | undefined;
  /** The JWK carried private key parameters. */
  readonly isPrivate: boolean;
}

export const TOKEN_ALGORITHMS: ReadonlySet<string> = new Set([
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'HS256',
  'HS384',
  'HS512',
  'EdDSA',
]);

function jwkToKey(jwk: Record<string, unknown>): VerificationKey | undefined {
  const alg = jwk['alg'];
  const kid = jwk['kid'];
  if (alg !== undefined && !isString(alg)) return undefined;
  if (kid !== undefined && !isString(kid)) return undefined;
  const kty = jwk['kty'];
  let publicKey: KeyObject | undefined;
  let secret: Buffer | undefined;
  let isPrivate = false;
  if (kty === 'oct') {
    const k = jwk['k'];
    if (!isString(k)) return undefined;
    secret = goBase64Decode(k, 'url', true);
    if (secret === undefined) return undefined;
  } else if (kty === 'RSA' || kty === 'EC' || kty === 'OKP') {
    isPrivate = jwk['d'] !== undefined;
    try {
      publicKey = createPublicKey({ key: jwk as never, format: 'jwk' });
    } catch {
      return undefined;
    }
  } else {
    return undefined;
  }
  return { alg: alg ?? '', kid: kid ?? '', publicKey, secret, isPrivate };
}

/**
 * Parsed keys by their text. Policies verify tokens against the same few keys on every
 * request; parsing a PEM or JWK set costs more than the signature check itself. Bounded,
 * least recently used first out; entries are frozen and KeyObjects are immutable.
 */
const KEY_CACHE_MAX_ENTRIES = 256;
const keyCache = new Map<string, readonly VerificationKey[] | undefined>();

/** OPA's parseKeysFromCertOrJWK, memoised. */
export function parseVerificationKeys(text: string): readonly VerificationKey[] | undefined {
  if (keyCache.has(text)) {
    const hit = keyCache.get(text);
    keyCache.delete(text);
    keyCache.set(text, hit);
    return hit;
  }
  const parsed = parseVerificationKeysUncached(text);
  const frozen = parsed === undefined ? undefined : Object.freeze(parsed.map((key) => Object.freeze(key)));
  keyCache.set(text, frozen);
  if (keyCache.size > KEY_CACHE_MAX_ENTRIES) {
    const oldest = keyCache.keys().next();
    if (oldest.done !== true) keyCache.delete(oldest.value);
  }
  return frozen;
}

function parseVerificationKeysUncached(text: string): VerificationKey[] | undefined {
  const block = decodePem(text);
  if (block !== undefined) {
    if (block.rest.length > 0) return undefined;
    try {
      if (block.type === 'CERTIFICATE') {
        const cert = new X509Certificate(block.bytes);
        return [{ alg: '', kid: '', publicKey: cert.publicKey, secret: undefined, isPrivate: false }];
      }
      if (block.type === 'PUBLIC KEY') {
        const key = createPublicKey({ key: block.bytes, format: 'der', type: 'spki' });
        return [{ alg: '', kid: '', publicKey: key, secret: undefined, isPrivate: false }];
      }
    } catch {
      return undefined;
    }
    return undefined;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isObject(parsed)) return undefined;
  const entries: unknown[] = Object.prototype.hasOwnProperty.call(parsed, 'keys') ? (parsed['keys'] as unknown[]) : [parsed];
  if (!Array.isArray(entries)) return undefined;
  const keys: VerificationKey[] = [];
  for (const entry of entries) {
    if (!isObject(entry)) return undefined;
    const key = jwkToKey(entry);
    if (key === undefined) return undefined;
    // Keys with an algorithm OPA does not know are skipped.
    if (key.alg !== '' && !TOKEN_ALGORITHMS.has(key.alg)) continue;
    keys.push(key);
  }
  return keys;
}

// ---------------------------------------------------------------------------------------------
// Signature verification

const HASHES: Readonly<Record<string, string>> = { '256': 'sha256', '384': 'sha384', '512': 'sha512' };
const HASH_BYTES: Readonly<Record<string, number>> = { sha256: 32, sha384: 48, sha512: 64 };
const CURVE_BYTES: Readonly<Record<string, number>> = { prime256v1: 32, secp384r1: 48, secp521r1: 66, secp256k1: 32 };

export type VerifyFlavour = 'builtin' | 'jws';

function derInteger(bytes: Buffer): Buffer {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  let body = bytes.subarray(start);
  if (body.length === 0) body = Buffer.from([0]);
  if (((body[0] as number) & 0x80) !== 0) body = Buffer.concat([Buffer.from([0]), body]);
  return Buffer.concat([Buffer.from([0x02]), derLength(body.length), body]);
}

function derLength(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  for (let n = length; n > 0; n >>= 8) bytes.unshift(n & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** An ECDSA (r, s) pair as the DER Ecdsa-Sig-Value OpenSSL verifies. */
function ecdsaDer(r: Buffer, s: Buffer): Buffer {
  const body = Buffer.concat([derInteger(r), derInteger(s)]);
  return Buffer.concat([Buffer.from([0x30]), derLength(body.length), body]);
}

function rsaBitsOk(key: KeyObject): boolean {
  return (key.asymmetricKeyDetails?.modulusLength ?? 0) >= 1024;
}

/** Verify a JWS signature with one key; false on any mismatch of key type and algorithm. */
export function verifyWithKey(
  alg: string,
  key: VerificationKey,
  data: Buffer,
  signature: Buffer,
  flavour: VerifyFlavour,
): boolean {
  const family = alg.slice(0, 2);
  const hash = HASHES[alg.slice(2)];
  try {
    if (family === 'HS' && hash !== undefined && alg.length === 5) {
      if (flavour !== 'jws' || key.secret === undefined) return false;
      return hmacEqual(createHmac(hash, key.secret).update(data).digest(), signature);
    }
    const publicKey = key.publicKey;
    if (publicKey === undefined || (flavour === 'builtin' && key.isPrivate)) return false;
    if (alg === 'EdDSA') {
      if (publicKey.asymmetricKeyType !== 'ed25519') return false;
      return verify(null, data, publicKey, signature);
    }
    if (hash === undefined || alg.length !== 5) return false;
    if (family === 'RS' || family === 'PS') {
      if (publicKey.asymmetricKeyType !== 'rsa' || !rsaBitsOk(publicKey)) return false;
      if (family === 'RS') return verify(hash, data, publicKey, signature);
      const saltLength = flavour === 'jws' ? (HASH_BYTES[hash] as number) : constants.RSA_PSS_SALTLEN_AUTO;
      return verify(hash, data, { key: publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength }, signature);
    }
    if (family === 'ES') {
      if (publicKey.asymmetricKeyType !== 'ec') return false;
      let half: number;
      if (flavour === 'jws') {
        const size = CURVE_BYTES[publicKey.asymmetricKeyDetails?.namedCurve ?? ''];
        if (size === undefined || signature.length !== 2 * size) return false;
        half = size;
      } else {
        half = Math.floor(signature.length / 2);
      }
      const der = ecdsaDer(signature.subarray(0, half), signature.subarray(half));
      return verify(hash, data, { key: publicKey, dsaEncoding: 'der' }, der);
    }
    return false;
  } catch {
    return false;
  }
}

/** Constant-time comparison of two MACs (Go's hmac.Equal: different lengths are unequal). */
export function hmacEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
