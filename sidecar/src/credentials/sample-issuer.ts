/**
 * Sample issuers and holders for the CLI and the tests: keys derived deterministically from a
 * label (so fixtures reproduce), credentials issued in every format Pavilion verifies. These keys
 * are public knowledge - they exist to exercise the verifier, never to protect anything.
 */
import { createHash, createPrivateKey, randomBytes, sign as cryptoSign } from 'node:crypto';
import { deflateSync } from 'node:zlib';
import * as vc from '@digitalbazaar/vc';
import { DataIntegrityProof } from '@digitalbazaar/data-integrity';
import { cryptosuite as eddsaRdfc2022 } from '@digitalbazaar/eddsa-rdfc-2022-cryptosuite';
import { cryptosuite as ecdsaRdfc2019 } from '@digitalbazaar/ecdsa-rdfc-2019-cryptosuite';
import { Ed25519Signature2020 } from '@digitalbazaar/ed25519-signature-2020';
import * as Ed25519Multikey from '@digitalbazaar/ed25519-multikey';
import * as EcdsaMultikey from '@digitalbazaar/ecdsa-multikey';
import * as Bls12381Multikey from '@digitalbazaar/bls12-381-multikey';
import { createDiscloseCryptosuite, createSignCryptosuite } from '@digitalbazaar/bbs-2023-cryptosuite';
import { p256 } from '@noble/curves/nist.js';
import { SignJWT, importJWK } from 'jose';
import { SDJwtVcInstance } from '@sd-jwt/sd-jwt-vc';
import type { DisclosureFrame } from '@sd-jwt/types';
import type { DocumentLoader } from './document-loader.ts';
import type { JsonObject } from './json.ts';

export type SampleAlgorithm = 'Ed25519' | 'P-256';

export interface SampleKey {
  readonly did: string;
  /** Verification method id (`did:key:...#...`). */
  readonly kid: string;
  readonly algorithm: SampleAlgorithm;
  readonly publicJwk: Readonly<Record<string, string>>;
  readonly privateJwk: Readonly<Record<string, string>>;
  /** Data Integrity signer for `@digitalbazaar/vc`. */
  readonly signer: () => unknown;
}

function seedFor(label: string, bytes: number): Uint8Array {
  return new Uint8Array(createHash('sha512').update(`pavilion-sample-key:${label}`).digest().subarray(0, bytes));
}

/** A key derived from `label`: the same label always gives the same key. */
export async function sampleKey(label: string, algorithm: SampleAlgorithm = 'Ed25519'): Promise<SampleKey> {
  if (algorithm === 'Ed25519') {
    const seed = seedFor(label, 32);
    const probe = await Ed25519Multikey.generate({ seed });
    const did = `did:key:${probe.publicKeyMultibase}`;
    const keyPair = await Ed25519Multikey.generate({ seed, controller: did, id: `${did}#${probe.publicKeyMultibase}` });
    const { kty, crv, x } = await Ed25519Multikey.toJwk({ keyPair });
    const publicJwk = { kty: String(kty), crv: String(crv), x: String(x) };
    // RFC 8037 section 2: `d` is the 32-byte seed (the multikey library exports seed || public key)
    const privateJwk = { ...publicJwk, d: Buffer.from(seed).toString('base64url') };
    return { did, kid: `${did}#${probe.publicKeyMultibase}`, algorithm, publicJwk, privateJwk, signer: () => keyPair.signer() };
  }
  const d = p256.utils.randomSecretKey(seedFor(label, 48));
  const point = p256.getPublicKey(d, false);
  const b64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64url');
  const publicJwk = { kty: 'EC', crv: 'P-256', x: b64(point.subarray(1, 33)), y: b64(point.subarray(33, 65)) };
  const privateJwk = { ...publicJwk, d: b64(d) };
  const probe = await EcdsaMultikey.fromJwk({ jwk: publicJwk });
  const did = `did:key:${probe.publicKeyMultibase}`;
  const kid = `${did}#${probe.publicKeyMultibase}`;
  const keyPair = await EcdsaMultikey.fromJwk({ jwk: privateJwk, secretKey: true, id: kid, controller: did });
  return { did, kid, algorithm, publicJwk, privateJwk, signer: () => keyPair.signer() };
}

/** A BLS12-381 G2 key for bbs-2023, derived from `label` (issuing only: it signs no JWS). */
export interface SampleBbsKey {
  readonly did: string;
  readonly kid: string;
  readonly signer: () => unknown;
}

export async function sampleBbsKey(label: string): Promise<SampleBbsKey> {
  const seed = seedFor(`bbs:${label}`, 32);
  const algorithm = Bls12381Multikey.ALGORITHMS.BBS_BLS12381_SHA256;
  const probe = await Bls12381Multikey.generateBbsKeyPair({ algorithm, seed });
  const did = `did:key:${probe.publicKeyMultibase}`;
  const kid = `${did}#${probe.publicKeyMultibase}`;
  const keyPair = await Bls12381Multikey.generateBbsKeyPair({ algorithm, seed, id: kid, controller: did });
  return { did, kid, signer: () => keyPair.signer() };
}

/** Issue a bbs-2023 base proof; `mandatoryPointers` (JSON Pointers) are always disclosed. */
export async function issueBbsBase(credential: JsonObject, key: SampleBbsKey, mandatoryPointers: readonly string[], documentLoader: DocumentLoader): Promise<JsonObject> {
  const suite = new DataIntegrityProof({ signer: key.signer(), cryptosuite: createSignCryptosuite({ mandatoryPointers: [...mandatoryPointers] }) });
  return vc.issue({ credential: structuredClone(credential), suite, documentLoader });
}

/** Holder side of bbs-2023: derive an unlinkable proof revealing `selectivePointers` only. */
export async function deriveBbs(baseCredential: JsonObject, selectivePointers: readonly string[], documentLoader: DocumentLoader): Promise<JsonObject> {
  const suite = new DataIntegrityProof({ cryptosuite: createDiscloseCryptosuite({ selectivePointers: [...selectivePointers] }) });
  return vc.derive({ verifiableCredential: structuredClone(baseCredential), suite, documentLoader });
}

/** Sign a JWS signing input with a sample key (raw signature, base64url). */
export function signJws(key: SampleKey, signingInput: string): string {
  const privateKey = createPrivateKey({ key: key.privateJwk as import('node:crypto').JsonWebKey, format: 'jwk' });
  const signature = key.algorithm === 'Ed25519'
    ? cryptoSign(null, Buffer.from(signingInput), privateKey)
    : cryptoSign('sha256', Buffer.from(signingInput), { key: privateKey, dsaEncoding: 'ieee-p1363' });
  return signature.toString('base64url');
}

export function jwsAlgorithm(key: SampleKey): 'EdDSA' | 'ES256' {
  return key.algorithm === 'Ed25519' ? 'EdDSA' : 'ES256';
}

/** Issue a W3C credential with a Data Integrity proof (eddsa-rdfc-2022 or ecdsa-rdfc-2019 by key). */
export async function issueDataIntegrity(credential: JsonObject, key: SampleKey, documentLoader: DocumentLoader, created?: Date): Promise<JsonObject> {
  const suite = new DataIntegrityProof({
    signer: key.signer(),
    cryptosuite: key.algorithm === 'Ed25519' ? eddsaRdfc2022 : ecdsaRdfc2019,
    ...(created === undefined ? {} : { date: created }),
  });
  return vc.issue({ credential: structuredClone(credential), suite, documentLoader, ...(created === undefined ? {} : { now: created }) });
}

/** Issue with the legacy Ed25519Signature2020 suite (the credential needs its context). */
export async function issueEd25519Signature2020(credential: JsonObject, key: SampleKey, documentLoader: DocumentLoader, created?: Date): Promise<JsonObject> {
  if (key.algorithm !== 'Ed25519') throw new Error('Ed25519Signature2020 needs an Ed25519 key');
  // the suite mutates the credential it signs: always a copy
  const suite = new Ed25519Signature2020({ signer: key.signer(), ...(created === undefined ? {} : { date: created }) });
  return vc.issue({ credential: structuredClone(credential), suite, documentLoader, ...(created === undefined ? {} : { now: created }) });
}

/** Wrap credentials in a presentation signed by the holder for a verifier's challenge and domain. */
export async function presentDataIntegrity(
  credentials: readonly JsonObject[],
  holder: SampleKey,
  binding: { challenge: string; domain: string },
  documentLoader: DocumentLoader,
  holderId: string = holder.did,
): Promise<JsonObject> {
  const presentation = vc.createPresentation({ verifiableCredential: structuredClone([...credentials]), holder: holderId });
  const suite = new DataIntegrityProof({ signer: holder.signer(), cryptosuite: holder.algorithm === 'Ed25519' ? eddsaRdfc2022 : ecdsaRdfc2019 });
  return vc.signPresentation({ presentation, suite, documentLoader, challenge: binding.challenge, domain: binding.domain });
}

/** VC-JWT: VC-JOSE-COSE (`typ: vc+jwt`, the credential is the payload) or VC 1.1 JWT (`vc` claim). */
export async function issueVcJwt(credential: JsonObject, key: SampleKey, encoding: 'vc-jose-cose' | 'vc-1.1-jwt' = 'vc-jose-cose', claims: JsonObject = {}): Promise<string> {
  const privateKey = await importJWK(key.privateJwk, jwsAlgorithm(key));
  const payload = encoding === 'vc-jose-cose' ? { ...credential, ...claims } : { ...claims, vc: credential };
  return new SignJWT(payload)
    .setProtectedHeader({ alg: jwsAlgorithm(key), kid: key.kid, typ: encoding === 'vc-jose-cose' ? 'vc+jwt' : 'JWT' })
    .sign(privateKey);
}

function sha256Hasher(data: string | ArrayBuffer, alg: string): Uint8Array {
  if (alg.toLowerCase() !== 'sha-256') throw new Error(`hash ${alg} is not supported`);
  return new Uint8Array(createHash('sha256').update(typeof data === 'string' ? data : Buffer.from(data)).digest());
}

/** Salts from a seeded counter when `saltSeed` is given (reproducible fixtures), random otherwise. */
function saltGenerator(saltSeed?: string): (length: number) => string {
  let counter = 0;
  return (length: number) => {
    if (saltSeed === undefined) return randomBytes(length).toString('base64url');
    counter++;
    return createHash('sha256').update(`${saltSeed}:${counter}`).digest().subarray(0, length).toString('base64url');
  };
}

/** Issue an SD-JWT VC (RFC 9901, SD-JWT VC draft) bound to `holder`'s key through `cnf.jwk`. */
export async function issueSdJwtVc(
  payload: JsonObject & { vct: string; iss: string },
  disclosable: readonly string[],
  issuer: SampleKey,
  holder: SampleKey | undefined,
  saltSeed?: string,
): Promise<string> {
  const instance = new SDJwtVcInstance({
    signer: (data) => signJws(issuer, data),
    signAlg: jwsAlgorithm(issuer),
    hasher: sha256Hasher,
    hashAlg: 'sha-256',
    saltGenerator: saltGenerator(saltSeed),
  });
  const full = holder === undefined ? payload : { ...payload, cnf: { jwk: holder.publicJwk } };
  const frame = { _sd: [...disclosable] } as unknown as DisclosureFrame<typeof full>;
  return instance.issue(full, frame, { header: { kid: issuer.kid, typ: 'dc+sd-jwt' } });
}

/** Present an SD-JWT VC: keep only `disclose`, append a key-binding JWT for the verifier. */
export async function presentSdJwtVc(
  sdJwt: string,
  disclose: readonly string[],
  holder: SampleKey,
  binding: { nonce: string; aud: string; iatSeconds: number } | undefined,
): Promise<string> {
  const instance = new SDJwtVcInstance({
    hasher: sha256Hasher,
    hashAlg: 'sha-256',
    kbSigner: (data) => signJws(holder, data),
    kbSignAlg: jwsAlgorithm(holder),
  });
  const frame = Object.fromEntries(disclose.map((k) => [k, true]));
  return instance.present(sdJwt, frame, binding === undefined ? {} : { kb: { payload: { nonce: binding.nonce, aud: binding.aud, iat: binding.iatSeconds } } });
}

/**
 * A Status List Token (draft-ietf-oauth-status-list) for `uri`: `values` maps index -> status
 * (0 valid, 1 invalid, 2 suspended) in a list of `size` entries of `bits` each.
 */
export function issueTokenStatusList(
  issuer: SampleKey,
  uri: string,
  options: { bits: 1 | 2 | 4 | 8; size: number; values: ReadonlyMap<number, number>; iatSeconds: number; expSeconds?: number },
): string {
  const bytes = new Uint8Array(Math.ceil((options.size * options.bits) / 8));
  for (const [index, value] of options.values) {
    const offset = index * options.bits;
    bytes[Math.floor(offset / 8)]! |= (value & ((1 << options.bits) - 1)) << (offset % 8);
  }
  const header = { alg: jwsAlgorithm(issuer), kid: issuer.kid, typ: 'statuslist+jwt' };
  const payload = {
    iss: issuer.did,
    sub: uri,
    iat: options.iatSeconds,
    ...(options.expSeconds === undefined ? {} : { exp: options.expSeconds }),
    status_list: { bits: options.bits, lst: deflateSync(bytes).toString('base64url') },
  };
  const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');
  const signingInput = `${b64(header)}.${b64(payload)}`;
  return `${signingInput}.${signJws(issuer, signingInput)}`;
}
