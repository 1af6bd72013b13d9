/**
 * Proof verification exactly as RFC 9162 specifies it:
 *   - inclusion: section 2.1.3.2 (fn/sn walk over the path, then sn == 0 and r == root)
 *   - consistency: section 2.1.4.2 (fn/sn walk producing both roots, then sn == 0)
 * The bit operations of the RFC ("LSB", "right-shift") are written as integer arithmetic so
 * that sizes up to 2^53 work (JavaScript's bitwise operators are 32-bit).
 *
 * Fail-closed: each function returns nothing and throws ERR_AUDIT_PROOF_INVALID (a proof
 * that does not verify) or ERR_AUDIT_MERKLE_RANGE (an index or size that cannot be proven)
 * with the reason in `details.reason`.
 */
import { ErrorCodes, PavilionError } from '../../lib/errors.ts';
import { EMPTY_ROOT, HASH_BYTES, hashChildren } from './hashing.ts';

export type ProofFailure =
  | 'hash_length'
  | 'path_too_long'
  | 'path_too_short'
  | 'root_mismatch'
  | 'empty_proof'
  | 'non_empty_proof';

function invalid(reason: ProofFailure, message: string, details: Record<string, unknown> = {}): PavilionError {
  return new PavilionError(ErrorCodes.AUDIT_PROOF_INVALID, message, { details: { reason, ...details } });
}

function checkHash(value: Uint8Array, what: string): void {
  if (value.length !== HASH_BYTES) throw invalid('hash_length', `${what} has ${value.length} bytes, not ${HASH_BYTES}`);
}

function checkSize(value: number, what: string): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new PavilionError(ErrorCodes.AUDIT_MERKLE_RANGE, `${what} must be a non-negative integer below 2^53`, { details: { [what]: value } });
  }
}

const lsb = (x: number): boolean => x % 2 === 1;
const shr = (x: number): number => Math.floor(x / 2);
// Exact: Math.log2 rounds, so a size such as 2^49 + 1 would come out as exactly 49.
const isPowerOfTwo = (x: number): boolean => x > 0 && 2 ** Math.round(Math.log2(x)) === x;

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

/**
 * The root an inclusion path leads to (RFC 9162 section 2.1.3.2 steps 1-4), after checking
 * that the path has exactly the length the index and size call for (step 5's sn == 0).
 */
export function rootFromInclusionProof(leafIndex: number, treeSize: number, leafHash: Uint8Array, path: readonly Uint8Array[]): Buffer {
  checkSize(leafIndex, 'leafIndex');
  checkSize(treeSize, 'treeSize');
  if (leafIndex >= treeSize) {
    throw new PavilionError(ErrorCodes.AUDIT_MERKLE_RANGE, `leaf index ${leafIndex} is not in a tree of ${treeSize} leaves`, { details: { leafIndex, treeSize } });
  }
  checkHash(leafHash, 'the leaf hash');
  let fn = leafIndex;
  let sn = treeSize - 1;
  let r: Buffer = Buffer.from(leafHash);
  for (const [i, p] of path.entries()) {
    checkHash(p, `inclusion path element ${i}`);
    if (sn === 0) throw invalid('path_too_long', `the inclusion path has more than the ${i} elements leaf ${leafIndex} of ${treeSize} needs`, { leafIndex, treeSize });
    if (lsb(fn) || fn === sn) {
      r = hashChildren(p, r);
      if (!lsb(fn)) {
        while (!lsb(fn) && fn !== 0) {
          fn = shr(fn);
          sn = shr(sn);
        }
      }
    } else {
      r = hashChildren(r, p);
    }
    fn = shr(fn);
    sn = shr(sn);
  }
  if (sn !== 0) throw invalid('path_too_short', `the inclusion path of ${path.length} elements is too short for leaf ${leafIndex} of ${treeSize}`, { leafIndex, treeSize });
  return r;
}

/** RFC 9162 section 2.1.3.2: `leafHash` is leaf `leafIndex` of the tree of `treeSize` leaves with root `root`. */
export function verifyInclusion(leafIndex: number, treeSize: number, leafHash: Uint8Array, path: readonly Uint8Array[], root: Uint8Array): void {
  checkHash(root, 'the root hash');
  const computed = rootFromInclusionProof(leafIndex, treeSize, leafHash, path);
  if (!equal(computed, root)) {
    throw invalid('root_mismatch', `the inclusion path of leaf ${leafIndex} leads to root ${computed.toString('hex')}, not the expected ${Buffer.from(root).toString('hex')}`, { leafIndex, treeSize });
  }
}

/**
 * RFC 9162 section 2.1.4.2: the tree of `oldSize` leaves with root `oldRoot` is a prefix of
 * the tree of `newSize` leaves with root `newRoot`.
 *
 * The RFC's algorithm covers 0 < oldSize < newSize. The edge cases are decided strictly:
 * oldSize == newSize needs an empty proof and equal roots; oldSize == 0 needs an empty proof
 * and the empty tree's root as `oldRoot`; oldSize > newSize never verifies.
 */
export function verifyConsistency(oldSize: number, newSize: number, oldRoot: Uint8Array, newRoot: Uint8Array, path: readonly Uint8Array[]): void {
  checkSize(oldSize, 'oldSize');
  checkSize(newSize, 'newSize');
  checkHash(oldRoot, 'the old root');
  checkHash(newRoot, 'the new root');
  if (oldSize > newSize) {
    throw new PavilionError(ErrorCodes.AUDIT_MERKLE_RANGE, `a tree of ${newSize} leaves cannot extend one of ${oldSize}`, { details: { oldSize, newSize } });
  }
  if (oldSize === newSize || oldSize === 0) {
    if (path.length !== 0) throw invalid('non_empty_proof', `a consistency proof from ${oldSize} to ${newSize} leaves must be empty`, { oldSize, newSize });
    const expected = oldSize === 0 ? EMPTY_ROOT : newRoot;
    if (!equal(oldRoot, expected)) throw invalid('root_mismatch', `roots differ for trees of ${oldSize} and ${newSize} leaves`, { oldSize, newSize });
    return;
  }
  // Step 1.
  if (path.length === 0) throw invalid('empty_proof', `a consistency proof from ${oldSize} to ${newSize} leaves cannot be empty`, { oldSize, newSize });
  for (const [i, p] of path.entries()) checkHash(p, `consistency path element ${i}`);
  // Step 2: when the old tree is a complete subtree its root is the proof's implicit start.
  const nodes: readonly Uint8Array[] = isPowerOfTwo(oldSize) ? [oldRoot, ...path] : path;
  // Step 3.
  let fn = oldSize - 1;
  let sn = newSize - 1;
  // Step 4.
  while (lsb(fn)) {
    fn = shr(fn);
    sn = shr(sn);
  }
  // Step 5.
  let fr: Buffer = Buffer.from(nodes[0]!);
  let sr: Buffer = Buffer.from(nodes[0]!);
  // Step 6.
  for (let i = 1; i < nodes.length; i++) {
    const c = nodes[i]!;
    if (sn === 0) throw invalid('path_too_long', `the consistency proof from ${oldSize} to ${newSize} leaves has too many elements`, { oldSize, newSize });
    if (lsb(fn) || fn === sn) {
      fr = hashChildren(c, fr);
      sr = hashChildren(c, sr);
      if (!lsb(fn)) {
        while (!lsb(fn) && fn !== 0) {
          fn = shr(fn);
          sn = shr(sn);
        }
      }
    } else {
      sr = hashChildren(sr, c);
    }
    fn = shr(fn);
    sn = shr(sn);
  }
  // Step 7.
  if (sn !== 0) throw invalid('path_too_short', `the consistency proof from ${oldSize} to ${newSize} leaves is too short`, { oldSize, newSize });
  if (!equal(fr, oldRoot)) throw invalid('root_mismatch', `the consistency proof does not lead to the old root (${oldSize} leaves)`, { oldSize, newSize, which: 'old' });
  if (!equal(sr, newRoot)) throw invalid('root_mismatch', `the consistency proof does not lead to the new root (${newSize} leaves)`, { oldSize, newSize, which: 'new' });
}
