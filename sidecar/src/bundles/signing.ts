/**
 * Bundle signatures with OPA's format and rules (docs: management-bundles, "Signing"), so a
 * bundle signed by `opa build --signing-key` verifies here and one signed by
 * `pavilion bundle sign` verifies in OPA.
 *
 * `.signatures.json` = `{"signatures": ["<JWS compact>"]}` with exactly one JWT. Its payload
 * lists every file of the bundle (`files: [{name, hash, algorithm}]`) plus `scope`, `iat`,
 * `iss`, and the deprecated `keyid`. Verification, failing closed at each step with its code:
 *
 *   1. a signature when none is configured, or none when one is required -> refused;
 *   2. the key id is the header `kid`, else the payload `keyid`; it must be in the tenant's
 *      trusted set (a key of another tenant is unknown here);
 *   3. the JWS must verify with that key and exactly that key's algorithm (jose);
 *   4. `scope` must equal the tenant's configured scope;
 *   5. the signed file list must equal the bundle's files (minus `.signatures.json`), and
 *      every digest must match (`file-hash.ts`).
 */
import { X509Certificate, createPrivateKey, createPublicKey, createSecretKey, type KeyObject } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import { CompactSign, compactVerify, decodeProtectedHeader } from 'jose';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import { sha256Hex } from '../lib/sha256.ts';
import type { PatchOperation } from './delta.ts';
import { DEFAULT_FILE_HASH_ALGORITHM, hashBundleFile } from './file-hash.ts';
import { readTar, writeTar, type TarEntry } from './tar.ts';

export const SIGNING_ALGORITHMS = [
  'ES256', 'ES384', 'ES512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'EdDSA', 'HS256', 'HS384', 'HS512',
] as const;
export type SigningAlgorithm = (typeof SIGNING_ALGORITHMS)[number];

export function isSigningAlgorithm(value: unknown): value is SigningAlgorithm {
  return typeof value === 'string' && (SIGNING_ALGORITHMS as readonly string[]).includes(value);
}

export interface VerificationKey {
  readonly id: string;
  readonly algorithm: SigningAlgorithm;
  readonly key: KeyObject;
}

export interface SignaturePolicy {
  /** The tenant's trusted keys, by key id. */
  readonly keys: ReadonlyMap<string, VerificationKey>;
  /** The `scope` claim a signature must carry (default: the tenant id). */
  readonly scope: string;
  /** Development only: accept bundles without `.signatures.json`. */
  readonly allowUnsigned: boolean;
}

export interface SignatureInfo {
  readonly signed: boolean;
  /**
   * SHA-256 over the bundle's files as the signature lists them (name, hash algorithm and
   * hash, sorted by name); for an unsigned bundle over each file's SHA-256 (JSON files in
   * canonical form). The same content gives the same value however the archive was packed
   * or compressed, so it names a revision for the replay check where the archive's digest
   * would not.
   */
  readonly contentSha256: string;
  readonly keyId?: string;
  readonly algorithm?: string;
  /** The signature's `iat` (seconds), when it has one. */
  readonly issuedAt?: number;
  readonly issuer?: string;
}

const SIGNATURES_FILE = '.signatures.json';

function invalid(message: string, cause?: unknown): PavilionError {
  return new PavilionError(ErrorCodes.BUNDLE_SIGNATURE_INVALID, `bundle signature is invalid: ${message}`, cause === undefined ? {} : { cause });
}

function keyError(id: string, message: string, cause?: unknown): PavilionError {
  return new PavilionError(ErrorCodes.BUNDLE_KEY_INVALID, `key ${id}: ${message}`, cause === undefined ? {} : { cause });
}

/** The algorithm a public key implies when none is configured (RSA defaults to RS256, as in OPA). */
export function defaultAlgorithmFor(key: KeyObject): SigningAlgorithm | undefined {
  switch (key.asymmetricKeyType) {
    case 'ec': {
      const curve = key.asymmetricKeyDetails?.namedCurve;
      return curve === 'prime256v1' ? 'ES256' : curve === 'secp384r1' ? 'ES384' : curve === 'secp521r1' ? 'ES512' : undefined;
    }
    case 'ed25519': return 'EdDSA';
    case 'rsa': return 'RS256';
    case 'rsa-pss': return 'PS256';
    default: return undefined;
  }
}

function keyMatchesAlgorithm(key: KeyObject, algorithm: SigningAlgorithm): boolean {
  if (algorithm.startsWith('HS')) return key.type === 'secret';
  if (algorithm === 'EdDSA') return key.asymmetricKeyType === 'ed25519';
  if (algorithm.startsWith('ES')) return defaultAlgorithmFor(key) === algorithm;
  if (algorithm.startsWith('PS')) return key.asymmetricKeyType === 'rsa' || key.asymmetricKeyType === 'rsa-pss';
  return key.asymmetricKeyType === 'rsa';
}

/** RFC 7518 3.2: an HMAC key at least as long as the hash output. */
const MIN_SECRET_BYTES: Partial<Record<SigningAlgorithm, number>> = { HS256: 32, HS384: 48, HS512: 64 };

/** DER of a public key or certificate in any form createPublicKey reads (SPKI, PKCS#1, X.509). */
function isPublicKeyDer(der: Buffer): boolean {
  for (const type of ['spki', 'pkcs1'] as const) {
    try {
      createPublicKey({ key: der, format: 'der', type });
      return true;
    } catch {
      // not this form
    }
  }
  try {
    new X509Certificate(der);
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether text reads as a key in a usual form: PEM, an OpenSSH key, a JWK or JWK set, or
 * base64 of a public key's DER (line breaks allowed). A raw curve point in base64 cannot be
 * told from a random secret and is not caught.
 */
function readsAsPublicKey(material: string): boolean {
  if (/-----BEGIN [A-Z0-9 ]+-----/.test(material) || /^\s*(ssh-|ecdsa-sha2-)/.test(material)) return true;
  const text = material.replace(/\s+/g, '');
  if (text.startsWith('{')) {
    // a JWK or JWK set of any kind: the secret is its text, never a key object (an "oct" JWK
    // would be taken as the JSON text, not its `k`)
    try {
      const value = JSON.parse(text) as { kty?: unknown; keys?: unknown };
      const keys = Array.isArray(value.keys) ? (value.keys as Array<{ kty?: unknown }>) : [value];
      return keys.some((key) => typeof key?.kty === 'string');
    } catch {
      return false;
    }
  }
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(text)) return false;
  return isPublicKeyDer(Buffer.from(text, /[-_]/.test(text) ? 'base64url' : 'base64'));
}

/**
 * Why `material` is no HMAC secret for `algorithm` (undefined when it is one, or the algorithm
 * is not HS*): shorter than the hash (RFC 7518 3.2), or a public key - anyone holding that
 * could sign with it (algorithm confusion).
 */
function weakSecret(material: string, algorithm: SigningAlgorithm): string | undefined {
  const minimum = MIN_SECRET_BYTES[algorithm];
  if (minimum === undefined) return undefined;
  if (readsAsPublicKey(material)) return `${algorithm} takes a shared secret as text, not a key (PEM, JWK, DER or OpenSSH)`;
  const bytes = Buffer.byteLength(material, 'utf8');
  return bytes < minimum ? `an ${algorithm} secret must be at least ${minimum} bytes (RFC 7518 3.2), not ${bytes}` : undefined;
}

/** A verification key from PEM (public key or certificate) or, for HS*, a shared secret. */
export function loadVerificationKey(id: string, material: string, algorithm?: SigningAlgorithm): VerificationKey {
  const weak = algorithm === undefined ? undefined : weakSecret(material, algorithm);
  if (weak !== undefined) throw keyError(id, weak);
  let key: KeyObject;
  try {
    key = algorithm?.startsWith('HS') === true ? createSecretKey(Buffer.from(material, 'utf8')) : createPublicKey(material);
  } catch (error) {
    throw keyError(id, `cannot parse the key (${describeThrown(error)})`, error);
  }
  const chosen = algorithm ?? defaultAlgorithmFor(key);
  if (chosen === undefined) throw keyError(id, `unsupported key type ${key.asymmetricKeyType ?? key.type}`);
  if (!keyMatchesAlgorithm(key, chosen)) throw keyError(id, `a ${key.asymmetricKeyType ?? key.type} key cannot verify ${chosen}`);
  return { id, algorithm: chosen, key };
}

interface SignedFile {
  readonly name: string;
  readonly hash: string;
  readonly algorithm: string;
}

function bareName(name: string): string {
  return name.startsWith('/') ? name.slice(1) : name;
}

function parseSignatures(raw: Buffer): string {
  let value: unknown;
  try {
    value = JSON.parse(raw.toString('utf8'));
  } catch (error) {
    throw invalid(`${SIGNATURES_FILE} is not JSON (${describeThrown(error)})`);
  }
  const signatures = (value as { signatures?: unknown } | null)?.signatures;
  if (!Array.isArray(signatures)) throw invalid(`${SIGNATURES_FILE} has no "signatures" array`);
  if (signatures.length === 0) throw invalid(`${SIGNATURES_FILE}: missing JWT (expected exactly one)`);
  if (signatures.length > 1) throw invalid(`${SIGNATURES_FILE}: multiple JWTs not supported (expected exactly one)`);
  const token = signatures[0];
  if (typeof token !== 'string') throw invalid(`${SIGNATURES_FILE}: the signature is not a string`);
  return token;
}

/** The payload as sent, before verification: only to find the key id when the header has none. */
function unverifiedPayload(token: string): Record<string, unknown> {
  const part = token.split('.')[1];
  if (part === undefined) throw invalid('not a compact JWS');
  return jsonObject(Buffer.from(part, 'base64url'), 'the JWT payload');
}

function jsonObject(bytes: Uint8Array, what: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(Buffer.from(bytes).toString('utf8'));
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('payload is not an object');
    return value as Record<string, unknown>;
  } catch (error) {
    throw invalid(`cannot decode ${what} (${describeThrown(error)})`);
  }
}

function signedFiles(payload: Record<string, unknown>): Map<string, SignedFile> {
  const files = payload['files'];
  if (!Array.isArray(files)) throw invalid('the payload has no "files" list');
  const out = new Map<string, SignedFile>();
  for (const entry of files as unknown[]) {
    const { name, hash, algorithm } = (entry ?? {}) as Record<string, unknown>;
    if (typeof name !== 'string' || typeof hash !== 'string') throw invalid('a "files" entry needs string name and hash');
    if (typeof algorithm !== 'string' || algorithm === '') throw invalid(`no hashing algorithm provided for file ${name}`);
    const key = bareName(name);
    if (out.has(key)) throw invalid(`file ${key} is listed twice`);
    out.set(key, { name: key, hash: hash.toLowerCase(), algorithm });
  }
  return out;
}

function contentDigest(files: readonly SignedFile[]): string {
  const sorted = [...files].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return sha256Hex(JSON.stringify(sorted.map((f) => [f.name, f.algorithm, f.hash])));
}

/**
 * Verify a bundle's files (as `readBundle` returns them, names starting with '/') against
 * the tenant's signature policy. Returns what the signature says; throws a typed error.
 */
export async function verifyBundleSignature(files: ReadonlyMap<string, Buffer>, policy: SignaturePolicy): Promise<SignatureInfo> {
  const raw = files.get(`/${SIGNATURES_FILE}`);
  if (raw === undefined) {
    if (policy.allowUnsigned) {
      const listed = [...files].map(([name, bytes]): SignedFile => ({ name: bareName(name), hash: hashBundleFile(name, bytes, DEFAULT_FILE_HASH_ALGORITHM), algorithm: DEFAULT_FILE_HASH_ALGORITHM }));
      return { signed: false, contentSha256: contentDigest(listed) };
    }
    throw new PavilionError(ErrorCodes.BUNDLE_SIGNATURE_MISSING, 'bundle is not signed and the tenant requires signed bundles (bundle missing .signatures.json file)');
  }
  if (policy.keys.size === 0) {
    throw new PavilionError(ErrorCodes.BUNDLE_SIGNATURE_UNEXPECTED, 'bundle is signed but the tenant has no verification keys configured');
  }
  const token = parseSignatures(raw);
  let keyId: unknown;
  try {
    keyId = decodeProtectedHeader(token).kid;
  } catch (error) {
    throw invalid(`cannot decode the JWT header (${describeThrown(error)})`, error);
  }
  // OPA's fallback: the deprecated keyid claim, read before verification only to pick the key
  // (the claims used below are the verified payload's, the same bytes once b64 is refused)
  if (keyId === undefined || keyId === '') keyId = unverifiedPayload(token)['keyid'];
  if (typeof keyId !== 'string' || keyId === '') throw invalid('verification key ID is empty (no kid header and no keyid claim)');
  const key = policy.keys.get(keyId);
  if (key === undefined) {
    throw new PavilionError(ErrorCodes.BUNDLE_SIGNATURE_KEY_UNKNOWN, `bundle is signed with key ${JSON.stringify(keyId)}, which this tenant does not trust`, {
      details: { keyId, trusted: [...policy.keys.keys()] },
    });
  }
  let verified: Awaited<ReturnType<typeof compactVerify>>;
  try {
    verified = await compactVerify(token, key.key, { algorithms: [key.algorithm] });
  } catch (error) {
    throw invalid(`the JWT does not verify with key ${keyId} (${key.algorithm}): ${describeThrown(error)}`, error);
  }
  // The claims are read from what was verified. An unencoded payload (RFC 7797, b64: false),
  // which jose verifies, is not a JWT: the part decoded above to choose the key would not be
  // the signed bytes.
  if (verified.protectedHeader.b64 === false) throw invalid('the JWS has an unencoded payload (b64: false); a bundle signature is a JWT');
  return checkClaims(files, jsonObject(verified.payload, 'the JWT payload'), key, keyId, policy);
}

/** Steps 4 and 5 on the verified claims: the scope, then every file against the signed list. */
function checkClaims(files: ReadonlyMap<string, Buffer>, payload: Record<string, unknown>, key: VerificationKey, keyId: string, policy: SignaturePolicy): SignatureInfo {
  if (payload['scope'] !== policy.scope) {
    throw new PavilionError(ErrorCodes.BUNDLE_SIGNATURE_SCOPE, `bundle signature scope ${JSON.stringify(payload['scope'] ?? null)} is not ${JSON.stringify(policy.scope)}`, {
      details: { expected: policy.scope },
    });
  }
  const signed = signedFiles(payload);
  const contentSha256 = contentDigest([...signed.values()]);
  for (const [name, bytes] of files) {
    const bare = bareName(name);
    if (bare === SIGNATURES_FILE) continue;
    const entry = signed.get(bare);
    if (entry === undefined) {
      throw new PavilionError(ErrorCodes.BUNDLE_SIGNATURE_FILES, `file ${bare} not included in bundle signature`, { details: { file: bare } });
    }
    const digest = hashBundleFile(name, bytes, entry.algorithm);
    if (digest !== entry.hash) {
      throw new PavilionError(ErrorCodes.BUNDLE_SIGNATURE_FILES, `${bare}: digest mismatch (want: ${entry.hash}, got: ${digest})`, { details: { file: bare } });
    }
    signed.delete(bare);
  }
  if (signed.size > 0) {
    const missing = [...signed.keys()];
    throw new PavilionError(ErrorCodes.BUNDLE_SIGNATURE_FILES, `file(s) ${missing.join(', ')} in signature but not in bundle`, { details: { files: missing } });
  }
  const iat = payload['iat'];
  const iss = payload['iss'];
  return {
    signed: true,
    contentSha256,
    keyId,
    algorithm: key.algorithm,
    ...(typeof iat === 'number' ? { issuedAt: iat } : {}),
    ...(typeof iss === 'string' ? { issuer: iss } : {}),
  };
}

export interface SignOptions {
  /** PEM private key, or the shared secret for HS*. */
  readonly key: string;
  readonly algorithm: SigningAlgorithm;
  readonly keyId: string;
  /** Normally the tenant id. */
  readonly scope: string;
  readonly issuer?: string;
  /** Seconds since the epoch; default now. */
  readonly issuedAt?: number;
  readonly hashAlgorithm?: string;
}

/** An archive's entries and, apart, its `.signatures.json` (undefined when unsigned). */
function unpackSigned(archive: Buffer): { files: TarEntry[]; signatures: Buffer | undefined } {
  const entries = readTar(gunzipSync(archive));
  return {
    files: entries.filter((entry) => bareName(entry.name) !== SIGNATURES_FILE),
    signatures: entries.find((entry) => bareName(entry.name) === SIGNATURES_FILE)?.data,
  };
}

/** `files` and `signatures` packed as a signed bundle archive (the signatures last). */
function packSigned(files: readonly TarEntry[], signatures: Buffer): Buffer {
  return gzipSync(writeTar([...files, { name: `/${SIGNATURES_FILE}`, data: signatures }]));
}

/** Sign a bundle archive: returns a new archive with `.signatures.json` (replacing any old one). */
export async function signBundle(archive: Buffer, options: SignOptions): Promise<Buffer> {
  const key = signingKey(options);
  let entries;
  try {
    entries = unpackSigned(archive).files;
  } catch (error) {
    throw new PavilionError(ErrorCodes.BUNDLE_SIGNING_FAILED, `cannot read the bundle to sign: ${describeThrown(error)}`, { cause: error });
  }
  return packSigned(entries, signaturesFile([await signToken(entries, options, key)]));
}

/**
 * `unsigned` signed with the previous archive's signature, packed as `signBundle` packs, when
 * that archive holds exactly the same files (names, order, bytes) and its signature verifies
 * with `key` for `scope`; otherwise undefined (sign anew). A signature is only ever reused
 * for the very content it covers, by the key that made it: a rebuild of unchanged sources
 * gives the same bytes.
 */
export async function keepPreviousSignature(
  previous: Buffer,
  unsigned: Buffer,
  key: { readonly keyPem: string; readonly keyId: string; readonly algorithm: SigningAlgorithm },
  scope: string,
): Promise<Buffer | undefined> {
  try {
    const old = unpackSigned(previous);
    const { files } = unpackSigned(unsigned);
    if (old.signatures === undefined || old.files.length !== files.length) return undefined;
    if (old.files.some((e, i) => e.name !== files[i]?.name || !e.data.equals(files[i].data))) return undefined;
    // the public half of a private PEM (or the shared secret for HS*)
    const verification = loadVerificationKey(key.keyId, key.keyPem, key.algorithm);
    const held = new Map([...old.files.map((e) => [e.name, e.data] as const), [`/${SIGNATURES_FILE}`, old.signatures] as const]);
    await verifyBundleSignature(held, { keys: new Map([[key.keyId, verification]]), scope, allowUnsigned: false });
    return packSigned(files, old.signatures);
  } catch {
    return undefined;
  }
}

function signingKey(options: SignOptions): KeyObject {
  // what every sidecar would refuse to verify with is not signed with either
  const weak = weakSecret(options.key, options.algorithm);
  if (weak !== undefined) throw new PavilionError(ErrorCodes.BUNDLE_SIGNING_FAILED, `cannot sign with this key: ${weak}`);
  try {
    return options.algorithm.startsWith('HS') ? createSecretKey(Buffer.from(options.key, 'utf8')) : createPrivateKey(options.key);
  } catch (error) {
    throw new PavilionError(ErrorCodes.BUNDLE_SIGNING_FAILED, `cannot read the signing key: ${describeThrown(error)}`, { cause: error });
  }
}

/**
 * OPA's bundle signature (one JWS over the files' names and hashes, the key id and the scope)
 * for a set of files, names as `readBundle` gives them.
 */
async function signToken(files: ReadonlyArray<{ readonly name: string; readonly data: Buffer }>, options: SignOptions, key = signingKey(options)): Promise<string> {
  const algorithm = options.hashAlgorithm ?? DEFAULT_FILE_HASH_ALGORITHM;
  const payload = {
    files: files.map(({ name, data }) => ({ name: bareName(name), hash: hashBundleFile(name, data, algorithm), algorithm })),
    iat: options.issuedAt ?? Math.floor(Date.now() / 1000),
    ...(options.issuer === undefined ? {} : { iss: options.issuer }),
    keyid: options.keyId,
    scope: options.scope,
  };
  try {
    return await new CompactSign(Buffer.from(JSON.stringify(payload), 'utf8'))
      .setProtectedHeader({ alg: options.algorithm, kid: options.keyId, typ: 'JWT' })
      .sign(key);
  } catch (error) {
    throw new PavilionError(ErrorCodes.BUNDLE_SIGNING_FAILED, `signing failed: ${describeThrown(error)}`, { cause: error });
  }
}

/** The `.signatures.json` file holding `signatures`. */
function signaturesFile(signatures: readonly string[]): Buffer {
  return Buffer.from(JSON.stringify({ signatures }), 'utf8');
}

/** A delta data update as signed: where it applies (tenant, deploy, place in that deploy's sequence), its roots and its operations. */
export interface DeltaContent {
  readonly tenant: string;
  readonly base: number;
  readonly sequence: number;
  readonly roots: readonly string[];
  readonly operations: readonly PatchOperation[];
}

/**
 * What a delta's signature covers, laid out as a delta bundle's files: `patch.json`, and a
 * `.manifest` with its roots and where it applies, so a signed delta cannot be replayed on
 * another tenant, deploy or place in the sequence. Signed and verified exactly as a
 * bundle's files are (one JWS over their hashes, the key id and the tenant as scope).
 */
function deltaFiles(delta: DeltaContent): Array<{ name: string; data: Buffer }> {
  const manifest = { roots: delta.roots, metadata: { pavilion_delta: { tenant: delta.tenant, base: delta.base, sequence: delta.sequence } } };
  return [
    { name: '/.manifest', data: Buffer.from(JSON.stringify(manifest), 'utf8') },
    { name: '/patch.json', data: Buffer.from(JSON.stringify({ data: delta.operations }), 'utf8') },
  ];
}

/** The `signatures` a delta message carries (OPA's `.signatures.json` list). */
export async function signDelta(delta: DeltaContent, options: SignOptions): Promise<string[]> {
  return [await signToken(deltaFiles(delta), options)];
}

/**
 * Verify a delta against the tenant's signature policy, with the bundle rules: unsigned only
 * for a tenant configured for development, else a valid signature by a trusted key, scoped
 * to the tenant, over exactly this delta. Throws the bundle signature codes.
 */
export async function verifyDeltaSignature(delta: DeltaContent, signatures: readonly string[] | undefined, policy: SignaturePolicy): Promise<SignatureInfo> {
  const files = new Map(deltaFiles(delta).map(({ name, data }) => [name, data]));
  if (signatures !== undefined) files.set(`/${SIGNATURES_FILE}`, signaturesFile(signatures));
  return await verifyBundleSignature(files, policy);
}
