/**
 * A pairing-based dynamic accumulator on BLS12-381 for revocation with constant-size witnesses.
 *
 * Construction: L. Nguyen, "Accumulators from Bilinear Pairings and Applications", CT-RSA 2005
 * (LNCS 3376, pp. 275-292), in the positive dynamic form with the single-element add/delete and
 * witness-update equations of G. Vitto and A. Biryukov, "Dynamic Universal Accumulator with
 * Batch Update over Bilinear Groups", CT-RSA 2022 (IACR ePrint 2020/777), section 3 ("VB").
 * All group and pairing arithmetic is `@noble/curves` (bls12-381); nothing here implements a
 * field or curve operation.
 *
 *   keys      secret alpha in Fr; public Q~ = alpha * P~  (P~ the G2 generator)
 *   element   y = hash_to_scalar(revocation handle)  (RFC 9380 expand_message_xmd, own DST)
 *   add y     V' = (y + alpha) V;          new member's witness C = V  (so (y + alpha) C = V')
 *   delete y  V' = V / (y + alpha)
 *   verify    e(C, y P~ + Q~) == e(V, P~), computed as e(yC - V, P~) e(C, Q~) == 1
 *   update    after add y':    C' = (y' - y) C + V      (V the value before the add)
 *             after delete y': C' = (C - V') / (y' - y)  (V' the value after the delete)
 *
 * Threat model: the issuer is trusted to add only credentials it issued (it holds alpha and could
 * make a witness for anything); verifiers hold only public values. Soundness of membership rests
 * on the q-strong Diffie-Hellman assumption in the pairing groups (Nguyen 2005, Thm. 1): without
 * alpha a holder whose element was deleted cannot produce a witness for the new value.
 * NOT DONE (limits of this module, stated in the README too):
 *   - the VB batch updates, with polynomials that hide which element changed, are not
 *     implemented: the update log names the added and deleted elements (hashes of revocation
 *     handles, not credential ids), so an observer of the log links updates to handles;
 *   - witnesses are not zero-knowledge: a verifier sees the holder's handle. This is a
 *     revocation check, not an anonymous credential.
 *
 * Sizes: value 48 bytes (compressed G1), public key 96 bytes (compressed G2), witness 52 bytes
 * (4-byte epoch + compressed G1). AnonCreds v1 instead ships a public tails file of about
 * 1.6 MB per 5,000 credentials, which every holder downloads.
 */
import { bls12_381 } from '@noble/curves/bls12-381.js';
import { bytesToNumberBE } from '@noble/curves/utils.js';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';

const { G1, G2, fields } = bls12_381;
const Fr = fields.Fr;
type G1Point = ReturnType<typeof G1.Point.fromBytes>;
type G2Point = ReturnType<typeof G2.Point.fromBytes>;

/** Domain separation tag for hashing revocation handles to Fr (RFC 9380 section 3.1). */
export const ACCUMULATOR_DST = 'PAVILION-BLS12381G1-ACCUMULATOR-V1_XMD:SHA-256_SSWU_RO_';
export const WITNESS_BYTES = 4 + 48;
export const VALUE_BYTES = 48;
export const PUBLIC_KEY_BYTES = 96;

export function elementFor(revocationHandle: string): bigint {
  return G1.hashToScalar(new TextEncoder().encode(revocationHandle), { DST: ACCUMULATOR_DST });
}

function witnessError(message: string, cause?: unknown): PavilionError {
  return new PavilionError(ErrorCodes.CREDENTIAL_WITNESS_INVALID, message, cause === undefined ? {} : { cause });
}

/** A valid, non-identity point of `group` from its compressed bytes, or ERR_CREDENTIAL_WITNESS_INVALID. */
function point<P extends { assertValidity(): void; equals(other: P): boolean }>(
  group: { readonly Point: { fromBytes(bytes: Uint8Array): P; readonly ZERO: P } },
  name: string,
  bytes: Uint8Array,
  what: string,
): P {
  try {
    const decoded = group.Point.fromBytes(bytes);
    decoded.assertValidity();
    if (decoded.equals(group.Point.ZERO)) throw new Error('identity');
    return decoded;
  } catch (error) {
    throw witnessError(`${what} is not a ${name} point: ${describeThrown(error)}`, error);
  }
}

const g1 = (bytes: Uint8Array, what: string): G1Point => point(G1, 'G1', bytes, what);
const g2 = (bytes: Uint8Array, what: string): G2Point => point(G2, 'G2', bytes, what);

export interface Witness {
  readonly epoch: number;
  /** Compressed G1 point C with (y + alpha) C = V at `epoch`. */
  readonly point: Uint8Array;
}

export function encodeWitness(witness: Witness): Uint8Array {
  const out = new Uint8Array(WITNESS_BYTES);
  new DataView(out.buffer).setUint32(0, witness.epoch);
  out.set(witness.point, 4);
  return out;
}

export function decodeWitness(bytes: Uint8Array): Witness {
  if (bytes.length !== WITNESS_BYTES) throw witnessError(`a witness is ${WITNESS_BYTES} bytes, not ${bytes.length}`);
  return { epoch: new DataView(bytes.buffer, bytes.byteOffset).getUint32(0), point: bytes.slice(4) };
}

/** One change to the accumulator, as published for holders to update their witnesses. */
export interface AccumulatorUpdate {
  readonly epoch: number;
  readonly kind: 'add' | 'delete';
  /** y as 32-byte big-endian hex. */
  readonly element: string;
  /** V after this update (compressed G1, hex). */
  readonly value: string;
}

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');
const unhex = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, 'hex'));
const scalarHex = (s: bigint): string => s.toString(16).padStart(64, '0');

type Precompute = ReturnType<typeof bls12_381.utils.calcPairingPrecomputes>;

/** A verifier's public key with the Miller-loop line functions of P~ and Q~ computed once. */
export interface PreparedAccumulatorKey {
  readonly publicKey: Uint8Array;
  readonly generatorLines: Precompute;
  readonly keyLines: Precompute;
  /** Decoded, subgroup-checked accumulator values: one per epoch, reused by every check in it. */
  readonly values: Map<string, G1Point>;
}

/** Values kept per key: the current one and a few before it, for holders a refresh behind. */
const VALUES_KEPT = 4;

function accumulatorValue(prepared: PreparedAccumulatorKey, value: Uint8Array): G1Point {
  const id = hex(value);
  let V = prepared.values.get(id);
  if (V === undefined) {
    V = g1(value, 'accumulator value');
    if (prepared.values.size >= VALUES_KEPT) prepared.values.delete(prepared.values.keys().next().value!);
    prepared.values.set(id, V);
  }
  return V;
}

export function prepareAccumulatorKey(publicKey: Uint8Array): PreparedAccumulatorKey {
  const Q = g2(publicKey, 'accumulator public key');
  return {
    publicKey: publicKey.slice(),
    generatorLines: bls12_381.utils.calcPairingPrecomputes(G2.Point.BASE),
    keyLines: bls12_381.utils.calcPairingPrecomputes(Q),
    values: new Map(),
  };
}

/**
 * Membership check: does `witness` prove `element` is in the accumulator `value` under the
 * public key? Returns false for a non-member; throws only for malformed inputs.
 *
 * e(C, yP~ + Q~) == e(V, P~)  <=>  e(yC - V, P~) * e(C, Q~) == 1: the scalar multiplication
 * moves to G1 (cheaper than G2), both Miller loops reuse the key's precomputed lines, and they
 * share one final exponentiation.
 */
export function verifyMembership(value: Uint8Array, key: Uint8Array | PreparedAccumulatorKey, element: bigint, witness: Uint8Array): boolean {
  const prepared = key instanceof Uint8Array ? prepareAccumulatorKey(key) : key;
  const V = accumulatorValue(prepared, value);
  const C = g1(witness, 'witness');
  // every input is public (value, witness, element): the variable-time multiplication is safe
  const left = (element === 0n ? G1.Point.ZERO : C.multiplyUnsafe(element)).subtract(V);
  if (left.equals(G1.Point.ZERO)) return false; // would need e(C, Q~) == 1, i.e. C the identity
  const l = left.toAffine();
  const c = C.toAffine();
  const miller = bls12_381.millerLoopBatch([
    [prepared.generatorLines, l.x, l.y],
    [prepared.keyLines, c.x, c.y],
  ]);
  return fields.Fp12.eql(fields.Fp12.finalExponentiate(miller), fields.Fp12.ONE);
}

/** Holder side: bring a witness for `element` up to date with the published updates. */
export function updateWitness(witness: Witness, element: bigint, updates: readonly AccumulatorUpdate[], valueAtWitnessEpoch: Uint8Array): Witness {
  let C = g1(witness.point, 'witness');
  let V = g1(valueAtWitnessEpoch, 'accumulator value');
  let epoch = witness.epoch;
  for (const update of [...updates].sort((a, b) => a.epoch - b.epoch)) {
    if (update.epoch <= epoch) continue;
    if (update.epoch !== epoch + 1) throw witnessError(`update log has a gap after epoch ${epoch}`);
    const other = Fr.create(BigInt(`0x${update.element}`));
    const next = g1(unhex(update.value), 'accumulator value');
    if (other === element) {
      if (update.kind === 'delete') throw new PavilionError(ErrorCodes.CREDENTIAL_REVOKED, `element deleted at epoch ${update.epoch}`);
      throw witnessError('element added twice');
    }
    const diff = Fr.sub(other, element);
    C = update.kind === 'add' ? C.multiply(diff).add(V) : C.subtract(next).multiply(Fr.inv(diff));
    V = next;
    epoch = update.epoch;
  }
  return { epoch, point: C.toBytes(true) };
}

export interface AccumulatorState {
  readonly id: string;
  readonly epoch: number;
  /** Compressed G1, hex. */
  readonly value: string;
  /** Compressed G2, hex. */
  readonly publicKey: string;
}

/**
 * Issuer side. Holds alpha; `random` is injected (tests pass a seeded source). Elements are
 * tracked so an element is never added twice or deleted when absent.
 */
export class AccumulatorIssuer {
  readonly #alpha: bigint;
  readonly #members = new Set<bigint>();
  readonly #log: AccumulatorUpdate[] = [];
  #value: G1Point;
  #epoch = 0;
  readonly #initial: Uint8Array;
  readonly #publicKey: Uint8Array;

  private constructor(readonly id: string, alpha: bigint, initial: G1Point) {
    this.#alpha = alpha;
    this.#value = initial;
    this.#initial = initial.toBytes(true);
    // a G2 multiplication (milliseconds): once, not on every read
    this.#publicKey = G2.Point.BASE.multiply(alpha).toBytes(true);
  }

  static create(id: string, random: (bytes: number) => Uint8Array): AccumulatorIssuer {
    const scalar = (): bigint => {
      for (;;) {
        const s = Fr.create(bytesToNumberBE(random(48)));
        if (s !== 0n) return s;
      }
    };
    return new AccumulatorIssuer(id, scalar(), G1.Point.BASE.multiply(scalar()));
  }

  /** Q~ = alpha P~ (compressed G2); a copy, so a caller cannot alter the issuer's. */
  get publicKey(): Uint8Array {
    return this.#publicKey.slice();
  }

  state(): AccumulatorState {
    return { id: this.id, epoch: this.#epoch, value: hex(this.#value.toBytes(true)), publicKey: hex(this.publicKey) };
  }

  /** The value at epoch 0, which holders of epoch-0 witnesses start updating from. */
  valueAt(epoch: number): Uint8Array {
    if (epoch === 0) return this.#initial;
    const update = this.#log[epoch - 1];
    if (update === undefined) throw witnessError(`no epoch ${epoch}`);
    return unhex(update.value);
  }

  updatesSince(epoch: number): readonly AccumulatorUpdate[] {
    return this.#log.slice(epoch);
  }

  /** Accumulate `revocationHandle`; returns the new member's witness (valid at the new epoch). */
  add(revocationHandle: string): Witness {
    const y = elementFor(revocationHandle);
    if (this.#members.has(y)) throw witnessError('handle already accumulated');
    const factor = Fr.add(y, this.#alpha);
    if (factor === 0n) throw witnessError('handle collides with the secret key; use another handle');
    const before = this.#value;
    this.#value = before.multiply(factor);
    this.#members.add(y);
    this.#record('add', y);
    return { epoch: this.#epoch, point: before.toBytes(true) };
  }

  /** Remove `revocationHandle`: every witness for it stops verifying from the new epoch on. */
  delete(revocationHandle: string): AccumulatorUpdate {
    const y = elementFor(revocationHandle);
    if (!this.#members.delete(y)) throw witnessError('handle is not accumulated');
    this.#value = this.#value.multiply(Fr.inv(Fr.add(y, this.#alpha)));
    return this.#record('delete', y);
  }

  #record(kind: 'add' | 'delete', y: bigint): AccumulatorUpdate {
    this.#epoch++;
    const update = { epoch: this.#epoch, kind, element: scalarHex(y), value: hex(this.#value.toBytes(true)) };
    this.#log.push(update);
    return update;
  }
}
