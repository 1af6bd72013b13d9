/**
 * Verifier side of accumulator revocation: the accumulators a tenant pinned (id, issuer DID,
 * public key), the latest signed state of each (a compact JWS by the issuer's DID key, epochs
 * only moving forward), and the membership check of a holder's witness. A state older than
 * `maxAgeMs` is refused: revocation that cannot be known fails closed.
 *
 * A credential refers to an accumulator with a `credentialStatus` entry
 * `{"type": "BlsAccumulatorStatusEntry", "accumulatorId": ..., "revocationHandle": ...}`; the
 * holder supplies the witness (base64url, 52 bytes) next to the credential.
 */
import { CompactSign, importJWK } from 'jose';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import { decodeWitness, elementFor, PUBLIC_KEY_BYTES, VALUE_BYTES, type AccumulatorState } from './bls-accumulator.ts';
import type { ResolvedVerificationMethod } from './did-resolver.ts';
import { assertAlgorithm, publicKeyFromJwk, verifyJwsSignature } from './jws-keys.ts';
import { decodeCompactJws, type CompactJws } from './jwt-parts.ts';
import { isObject, type JsonObject } from './json.ts';

export const ACCUMULATOR_STATE_TYP = 'pavilion-accumulator-state+jwt';
export const ACCUMULATOR_ENTRY_TYPE = 'BlsAccumulatorStatusEntry';

export interface PinnedAccumulator {
  readonly id: string;
  readonly issuer: string;
  /** Compressed G2 public key, hex. */
  readonly publicKeyHex: string;
}

export interface AccumulatorEntry {
  readonly accumulatorId: string;
  readonly revocationHandle: string;
}

export function readAccumulatorEntry(entry: JsonObject): AccumulatorEntry {
  const accumulatorId = entry['accumulatorId'];
  const revocationHandle = entry['revocationHandle'];
  if (typeof accumulatorId !== 'string' || typeof revocationHandle !== 'string' || revocationHandle === '' || revocationHandle.length > 512) {
    throw new PavilionError(ErrorCodes.CREDENTIAL_STATUS_INVALID, `${ACCUMULATOR_ENTRY_TYPE} needs accumulatorId and revocationHandle strings`);
  }
  return { accumulatorId, revocationHandle };
}

/** Issuer side: sign a state as a compact JWS with the issuer's private JWK. */
export async function signAccumulatorState(state: AccumulatorState, issuer: { kid: string; privateJwk: Readonly<Record<string, string>>; alg: 'EdDSA' | 'ES256' }, issuedAtSeconds: number): Promise<string> {
  const key = await importJWK({ ...issuer.privateJwk }, issuer.alg);
  const payload = new TextEncoder().encode(JSON.stringify({ ...state, iat: issuedAtSeconds }));
  return new CompactSign(payload).setProtectedHeader({ alg: issuer.alg, kid: issuer.kid, typ: ACCUMULATOR_STATE_TYP }).sign(key);
}

interface HeldState {
  readonly epoch: number;
  readonly value: Uint8Array;
  readonly verifiedAtMs: number;
}

export class AccumulatorRegistry {
  readonly #pinned: ReadonlyMap<string, PinnedAccumulator>;
  readonly #states = new Map<string, HeldState>();

  constructor(
    pinned: readonly PinnedAccumulator[],
    readonly maxAgeMs: number,
    readonly resolveKey: (kid: string) => Promise<ResolvedVerificationMethod>,
    /** The pairing check (bls-accumulator.ts verifyMembership), possibly on a worker thread. */
    readonly membership: (value: Uint8Array, publicKey: Uint8Array, element: bigint, witness: Uint8Array) => Promise<boolean>,
  ) {
    const map = new Map<string, PinnedAccumulator>();
    for (const p of pinned) {
      if (!/^[0-9a-f]+$/.test(p.publicKeyHex) || p.publicKeyHex.length !== PUBLIC_KEY_BYTES * 2) {
        throw new PavilionError(ErrorCodes.CONFIG_INVALID, `accumulator ${p.id}: publicKeyHex must be ${PUBLIC_KEY_BYTES} bytes of hex`);
      }
      map.set(p.id, p);
    }
    this.#pinned = map;
  }

  /** Verify and hold a signed state. Older epochs than the one held are refused. */
  async admit(jws: string, nowMs: number): Promise<number> {
    const invalid = (message: string, cause?: unknown): PavilionError =>
      new PavilionError(ErrorCodes.CREDENTIAL_STATUS_INVALID, `accumulator state: ${message}`, cause === undefined ? {} : { cause });
    // The same path as every other JWS here (status list tokens, SD-JWT): decode, resolve the
    // key the header names, match it to its alg, check the signature (jws-keys.ts).
    let jwsParts: CompactJws;
    try {
      jwsParts = decodeCompactJws(jws, 'accumulator state');
    } catch (error) {
      throw invalid(`not a compact JWS: ${describeThrown(error)}`, error);
    }
    const { header, payload: claims, signingInput, signature } = jwsParts;
    if (header['typ'] !== ACCUMULATOR_STATE_TYP || typeof header['kid'] !== 'string') throw invalid('wrong header');
    const method = await this.resolveKey(header['kid']);
    // a state is an issuer statement: only a key the issuer lists under assertionMethod may sign it
    if (!method.relationships.includes('assertionMethod')) throw invalid(`key ${header['kid'].slice(0, 120)} is not an assertionMethod of its DID`);
    const signer = method.controller;
    const key = publicKeyFromJwk(method.publicKeyJwk);
    assertAlgorithm(header['alg'], key);
    if (!verifyJwsSignature(signingInput, signature, key)) throw new PavilionError(ErrorCodes.CREDENTIAL_SIGNATURE_INVALID, 'accumulator state signature does not verify');
    const pinned = typeof claims['id'] === 'string' ? this.#pinned.get(claims['id']) : undefined;
    if (pinned === undefined) throw invalid(`accumulator ${String(claims['id'])} is not pinned by this tenant`);
    if (signer !== pinned.issuer) throw invalid('signed by a key that is not the accumulator issuer\'s');
    if (claims['publicKey'] !== pinned.publicKeyHex) throw invalid('public key differs from the pinned one');
    const epoch = claims['epoch'];
    const value = claims['value'];
    if (typeof epoch !== 'number' || !Number.isSafeInteger(epoch) || epoch < 0) throw invalid('epoch must be a non-negative integer');
    if (typeof value !== 'string' || value.length !== VALUE_BYTES * 2 || !/^[0-9a-f]+$/.test(value)) throw invalid('value must be a compressed G1 point in hex');
    const held = this.#states.get(pinned.id);
    if (held !== undefined && epoch < held.epoch) throw invalid(`epoch ${epoch} is older than the held ${held.epoch}`);
    this.#states.set(pinned.id, { epoch, value: new Uint8Array(Buffer.from(value, 'hex')), verifiedAtMs: nowMs });
    return epoch;
  }

  /** Check membership of a credential's handle with the holder's witness; throws unless a member now. */
  async check(entry: AccumulatorEntry, issuer: string, witnessB64u: string | undefined, nowMs: number): Promise<{ ageMs: number }> {
    const pinned = this.#pinned.get(entry.accumulatorId);
    if (pinned === undefined) throw new PavilionError(ErrorCodes.CREDENTIAL_STATUS_UNAVAILABLE, `accumulator ${entry.accumulatorId.slice(0, 120)} is not pinned by this tenant`);
    if (pinned.issuer !== issuer) throw new PavilionError(ErrorCodes.CREDENTIAL_STATUS_INVALID, 'the accumulator belongs to another issuer');
    const held = this.#states.get(pinned.id);
    if (held === undefined) throw new PavilionError(ErrorCodes.CREDENTIAL_STATUS_UNAVAILABLE, `no verified state for accumulator ${pinned.id}`);
    const ageMs = nowMs - held.verifiedAtMs;
    if (ageMs > this.maxAgeMs) throw new PavilionError(ErrorCodes.CREDENTIAL_STATUS_STALE, `accumulator ${pinned.id} state is ${Math.round(ageMs / 1000)} s old`);
    if (witnessB64u === undefined) throw new PavilionError(ErrorCodes.CREDENTIAL_WITNESS_INVALID, 'no witness was presented for the accumulator status');
    if (!/^[A-Za-z0-9_-]+$/.test(witnessB64u) || witnessB64u.length > 200) throw new PavilionError(ErrorCodes.CREDENTIAL_WITNESS_INVALID, 'witness must be base64url');
    const witness = decodeWitness(new Uint8Array(Buffer.from(witnessB64u, 'base64url')));
    if (witness.epoch !== held.epoch) {
      throw new PavilionError(ErrorCodes.CREDENTIAL_WITNESS_INVALID, `witness is for epoch ${witness.epoch}, the accumulator is at ${held.epoch}: update the witness`);
    }
    const member = await this.membership(held.value, new Uint8Array(Buffer.from(pinned.publicKeyHex, 'hex')), elementFor(entry.revocationHandle), witness.point);
    if (!member) throw new PavilionError(ErrorCodes.CREDENTIAL_REVOKED, `not a member of accumulator ${pinned.id} at epoch ${held.epoch} (revoked, or the witness is not this credential's)`);
    return { ageMs };
  }
}
