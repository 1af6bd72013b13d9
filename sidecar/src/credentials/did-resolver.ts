/**
 * DID resolution without a network: `did:key` and `did:jwk` are decoded from the identifier
 * itself; `did:web` documents come only from the tenant's pinned cache (documents the operator
 * configured, each checked against its SHA-256 when the tenant's policy is built). Every other
 * method, and every `did:web` that is not pinned, is refused with a typed error: resolution can
 * never become a request to an address an attacker chose (SSRF).
 *
 * Specs: did:key (W3C CCG did-method-key v0.7, Multikey encoding), did:jwk (did-method-jwk,
 * base64url of a JWK), did:web (W3C CCG did-method-web, resolution replaced by the pinned cache).
 *
 * Resolved documents are rebuilt by Pavilion: every verification method is normalised to a
 * `Multikey` (with `publicKeyMultibase`) plus the equivalent public JWK, so the JSON-LD
 * verifier only ever sees documents written with pinned contexts.
 */
import * as Ed25519Multikey from '@digitalbazaar/ed25519-multikey';
import * as EcdsaMultikey from '@digitalbazaar/ecdsa-multikey';
import * as Bls12381Multikey from '@digitalbazaar/bls12-381-multikey';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import { isObject, nodeId, asArray, type JsonObject } from './json.ts';

export const DID_CONTEXT_V1 = 'https://www.w3.org/ns/did/v1';
export const MULTIKEY_CONTEXT_V1 = 'https://w3id.org/security/multikey/v1';

/** Ed25519 and P-256 sign JWS and Data Integrity proofs; BLS12-381 G2 keys only bbs-2023 proofs. */
export type KeyAlgorithm = 'Ed25519' | 'P-256' | 'Bls12381G2';

/** DID Core verification relationships Pavilion acts on: issuing (assertionMethod) and authenticating. */
export type VerificationRelationship = 'assertionMethod' | 'authentication';

/** A key as decoded, before the document says what it may be used for. */
interface KeyMaterial {
  readonly id: string;
  readonly controller: string;
  readonly algorithm: KeyAlgorithm;
  readonly publicKeyMultibase: string;
  /** The JWK form; for BLS12-381 keys empty (they never sign a JWS, and the JWS checks refuse them). */
  readonly publicKeyJwk: Readonly<Record<string, string>>;
}

/** A public key as every verifier in this domain needs it. */
export interface ResolvedVerificationMethod extends KeyMaterial {
  /**
   * The relationships that reference this key (by id or embedded). A key merely present in the
   * document (e.g. embedded under authentication) must not sign credentials: issuer-side callers
   * require 'assertionMethod'.
   */
  readonly relationships: readonly VerificationRelationship[];
}

export interface ResolvedDid {
  readonly did: string;
  readonly verificationMethods: readonly ResolvedVerificationMethod[];
  /** Ids of methods allowed to issue (assertionMethod) and to authenticate (authentication). */
  readonly assertionMethod: readonly string[];
  readonly authentication: readonly string[];
  /** The normalised JSON-LD DID document served to the Data Integrity verifier. */
  readonly document: JsonObject;
}

/** A `did:web` document the operator pinned for a tenant (already hash-checked). */
export interface PinnedDidDocument {
  readonly did: string;
  readonly document: JsonObject;
}

const MAX_DID_LENGTH = 4096;

function refused(code: typeof ErrorCodes.CREDENTIAL_DID_UNSUPPORTED | typeof ErrorCodes.CREDENTIAL_DID_UNRESOLVED, did: string, why: string, cause?: unknown): PavilionError {
  return new PavilionError(code, `DID ${did.slice(0, 120)}: ${why}`, cause === undefined ? { details: { did: did.slice(0, 120) } } : { cause, details: { did: did.slice(0, 120) } });
}

/** Only the public members (RFC 7518 section 6): WebCrypto exports add `ext` and `key_ops`. */
function publicMembers(jwk: Record<string, string>): Readonly<Record<string, string>> {
  const out: Record<string, string> = { kty: String(jwk['kty']), crv: String(jwk['crv']), x: String(jwk['x']) };
  if (jwk['kty'] === 'EC') out['y'] = String(jwk['y']);
  return Object.freeze(out);
}

async function keyFromMultibase(publicKeyMultibase: string, id: string, controller: string): Promise<KeyMaterial> {
  try {
    if (publicKeyMultibase.startsWith('z6Mk')) {
      const keyPair = await Ed25519Multikey.from({ type: 'Multikey', id, controller, publicKeyMultibase });
      const publicKeyJwk = await Ed25519Multikey.toJwk({ keyPair });
      return { id, controller, algorithm: 'Ed25519', publicKeyMultibase, publicKeyJwk: publicMembers(publicKeyJwk) };
    }
    if (publicKeyMultibase.startsWith('zDn')) {
      const keyPair = await EcdsaMultikey.from({ type: 'Multikey', id, controller, publicKeyMultibase });
      const publicKeyJwk = await EcdsaMultikey.toJwk({ keyPair });
      if (publicKeyJwk['crv'] !== 'P-256') throw new Error(`curve ${publicKeyJwk['crv']} is not accepted`);
      return { id, controller, algorithm: 'P-256', publicKeyMultibase, publicKeyJwk: publicMembers(publicKeyJwk) };
    }
    if (publicKeyMultibase.startsWith('zUC7')) {
      await Bls12381Multikey.from({ type: 'Multikey', id, controller, publicKeyMultibase });
      return { id, controller, algorithm: 'Bls12381G2', publicKeyMultibase, publicKeyJwk: Object.freeze({}) };
    }
  } catch (error) {
    throw new PavilionError(ErrorCodes.CREDENTIAL_KEY_UNSUPPORTED, `key ${id.slice(0, 120)}: ${describeThrown(error)}`, { cause: error });
  }
  throw new PavilionError(ErrorCodes.CREDENTIAL_KEY_UNSUPPORTED, `key ${id.slice(0, 120)}: only Ed25519 (z6Mk), P-256 (zDn) and BLS12-381 G2 (zUC7) multikeys are accepted`);
}

async function keyFromJwk(jwk: unknown, id: string, controller: string): Promise<KeyMaterial> {
  if (!isObject(jwk) || 'd' in jwk) {
    throw new PavilionError(ErrorCodes.CREDENTIAL_KEY_UNSUPPORTED, `key ${id.slice(0, 120)}: must be a public JWK`);
  }
  try {
    if (jwk['kty'] === 'OKP' && jwk['crv'] === 'Ed25519') {
      const keyPair = await Ed25519Multikey.fromJwk({ jwk, id, controller });
      return keyFromMultibase(keyPair.publicKeyMultibase, id, controller);
    }
    if (jwk['kty'] === 'EC' && jwk['crv'] === 'P-256') {
      const keyPair = await EcdsaMultikey.fromJwk({ jwk, id, controller });
      return keyFromMultibase(keyPair.publicKeyMultibase, id, controller);
    }
  } catch (error) {
    if (error instanceof PavilionError) throw error;
    throw new PavilionError(ErrorCodes.CREDENTIAL_KEY_UNSUPPORTED, `key ${id.slice(0, 120)}: ${describeThrown(error)}`, { cause: error });
  }
  throw new PavilionError(ErrorCodes.CREDENTIAL_KEY_UNSUPPORTED, `key ${id.slice(0, 120)}: only Ed25519 and P-256 JWKs are accepted`);
}

function documentFor(did: string, methods: readonly KeyMaterial[], assertionMethod: readonly string[], authentication: readonly string[]): JsonObject {
  return {
    '@context': [DID_CONTEXT_V1, MULTIKEY_CONTEXT_V1],
    id: did,
    verificationMethod: methods.map((m) => ({ id: m.id, type: 'Multikey', controller: m.controller, publicKeyMultibase: m.publicKeyMultibase })),
    assertionMethod: [...assertionMethod],
    authentication: [...authentication],
  };
}

function resolved(did: string, keys: KeyMaterial[], assertionMethod: string[], authentication: string[]): ResolvedDid {
  const methods = keys.map((key): ResolvedVerificationMethod => {
    const relationships: VerificationRelationship[] = [];
    if (assertionMethod.includes(key.id)) relationships.push('assertionMethod');
    if (authentication.includes(key.id)) relationships.push('authentication');
    return Object.freeze({ ...key, relationships: Object.freeze(relationships) });
  });
  return Object.freeze({
    did,
    verificationMethods: Object.freeze(methods),
    assertionMethod: Object.freeze(assertionMethod),
    authentication: Object.freeze(authentication),
    document: documentFor(did, keys, assertionMethod, authentication),
  });
}

function base64UrlJson(text: string): unknown {
  if (!/^[A-Za-z0-9_-]+$/.test(text)) throw new Error('not base64url');
  return JSON.parse(Buffer.from(text, 'base64url').toString('utf8'));
}

export class DidResolver {
  readonly #web: ReadonlyMap<string, JsonObject>;
  readonly #cache = new Map<string, Promise<ResolvedDid>>();

  constructor(pinnedWebDocuments: readonly PinnedDidDocument[] = []) {
    const web = new Map<string, JsonObject>();
    for (const pinned of pinnedWebDocuments) {
      if (!pinned.did.startsWith('did:web:')) throw refused(ErrorCodes.CREDENTIAL_DID_UNSUPPORTED, pinned.did, 'only did:web documents are pinned');
      if (pinned.document['id'] !== pinned.did) throw refused(ErrorCodes.CREDENTIAL_DID_UNRESOLVED, pinned.did, 'pinned document id differs from the DID');
      web.set(pinned.did, pinned.document);
    }
    this.#web = web;
  }

  /** Resolve a DID (no fragment). Results are memoised: resolution is a pure function here. */
  resolve(did: string): Promise<ResolvedDid> {
    let entry = this.#cache.get(did);
    if (entry === undefined) {
      entry = this.#resolve(did);
      // a failed resolution is not cached: it is cheap and must not fill the map with garbage
      entry.catch(() => this.#cache.delete(did));
      if (this.#cache.size < 10_000) this.#cache.set(did, entry);
    }
    return entry;
  }

  /**
   * Resolve a DID URL naming a verification method (`did:...#fragment`). With `relationship`,
   * the key must be referenced by it in the DID document (an issuer signature needs
   * 'assertionMethod'); otherwise it is refused as not the issuer's to use, the code the Data
   * Integrity path gives for the same case (jsonld-signatures "not authorized by controller").
   */
  async verificationMethod(didUrl: string, relationship?: VerificationRelationship): Promise<ResolvedVerificationMethod> {
    const method = await this.#method(didUrl);
    if (relationship !== undefined && !method.relationships.includes(relationship)) {
      throw new PavilionError(ErrorCodes.CREDENTIAL_ISSUER_MISMATCH, `key ${didUrl.slice(0, 120)} is not listed under ${relationship} in its DID document`, { details: { did: method.controller.slice(0, 120) } });
    }
    return method;
  }

  async #method(didUrl: string): Promise<ResolvedVerificationMethod> {
    const hash = didUrl.indexOf('#');
    const did = hash < 0 ? didUrl : didUrl.slice(0, hash);
    const doc = await this.resolve(did);
    if (hash < 0) {
      // a bare DID names its only key (did:key, did:jwk); an ambiguous document is refused
      if (doc.verificationMethods.length === 1) return doc.verificationMethods[0]!;
      throw refused(ErrorCodes.CREDENTIAL_DID_UNRESOLVED, didUrl, 'a key id with a fragment is required');
    }
    const method = doc.verificationMethods.find((m) => m.id === didUrl || (didUrl.startsWith(did) && m.id === `${did}${didUrl.slice(hash)}`));
    if (method === undefined) throw refused(ErrorCodes.CREDENTIAL_DID_UNRESOLVED, didUrl, 'no such verification method');
    return method;
  }

  async #resolve(did: string): Promise<ResolvedDid> {
    if (did.length > MAX_DID_LENGTH) throw refused(ErrorCodes.CREDENTIAL_DID_UNRESOLVED, did, 'identifier too long');
    if (did.startsWith('did:key:')) {
      const fingerprint = did.slice('did:key:'.length);
      const id = `${did}#${fingerprint}`;
      const method = await keyFromMultibase(fingerprint, id, did);
      return resolved(did, [method], [id], [id]);
    }
    if (did.startsWith('did:jwk:')) {
      let jwk: unknown;
      try {
        jwk = base64UrlJson(did.slice('did:jwk:'.length));
      } catch (error) {
        throw refused(ErrorCodes.CREDENTIAL_DID_UNRESOLVED, did, 'not a base64url JWK', error);
      }
      const id = `${did}#0`;
      const method = await keyFromJwk(jwk, id, did);
      return resolved(did, [method], [id], [id]);
    }
    if (did.startsWith('did:web:')) {
      const document = this.#web.get(did);
      if (document === undefined) throw refused(ErrorCodes.CREDENTIAL_DID_UNRESOLVED, did, 'did:web is resolved only from the tenant\'s pinned documents, and this one is not pinned');
      return this.#fromDocument(did, document);
    }
    throw refused(ErrorCodes.CREDENTIAL_DID_UNSUPPORTED, did, 'only did:key, did:jwk and pinned did:web are resolved');
  }

  async #fromDocument(did: string, document: JsonObject): Promise<ResolvedDid> {
    const absolute = (id: string): string => (id.startsWith('#') ? `${did}${id}` : id);
    const methods: KeyMaterial[] = [];
    const embedded: unknown[] = [];
    for (const relation of ['assertionMethod', 'authentication']) {
      for (const entry of asArray(document[relation])) if (isObject(entry)) embedded.push(entry);
    }
    for (const raw of [...asArray(document['verificationMethod']), ...embedded]) {
      if (!isObject(raw) || typeof raw['id'] !== 'string') continue;
      const id = absolute(raw['id']);
      const controller = typeof raw['controller'] === 'string' ? raw['controller'] : did;
      if (controller !== did) continue; // keys controlled by someone else do not speak for this DID
      if (methods.some((m) => m.id === id)) continue;
      if (typeof raw['publicKeyMultibase'] === 'string') methods.push(await keyFromMultibase(raw['publicKeyMultibase'], id, did));
      else if (raw['publicKeyJwk'] !== undefined) methods.push(await keyFromJwk(raw['publicKeyJwk'], id, did));
    }
    const relation = (name: string): string[] =>
      asArray(document[name]).map(nodeId).filter((v): v is string => v !== undefined).map(absolute).filter((id) => methods.some((m) => m.id === id));
    return resolved(did, methods, relation('assertionMethod'), relation('authentication'));
  }
}
