/**
 * An append-only RFC 9162 Merkle tree (Certificate Transparency 2.0, section 2.1) with
 * inclusion proofs (2.1.3.1) and consistency proofs (2.1.4.1) for any earlier tree size.
 *
 * Storage: for every level L the hashes of the complete, aligned subtrees of 2^L leaves seen
 * so far, packed 32 bytes each in one growing buffer per level (level 0 are the leaf
 * hashes). That is about 2 x 32 bytes per leaf (64 MB at 10^6 leaves) and makes every
 * perfect subtree a lookup: an append costs one leaf hash plus on average one node hash; a
 * root or a proof for any size costs O(log n) lookups plus O(log n) hashes along the right
 * edge of the tree.
 *
 * Limits: sizes and indexes are JavaScript integers, so at most 2^53 - 1 leaves. Inputs are
 * checked at the boundary; a bad index or size throws ERR_AUDIT_MERKLE_RANGE.
 */
import { ErrorCodes, PavilionError } from '../../lib/errors.ts';
import { withRoom } from '../../lib/with-room.ts';
import { EMPTY_ROOT, HASH_BYTES, hashChildren, hashLeaf } from './hashing.ts';

function rangeError(message: string, details: Record<string, unknown>): PavilionError {
  return new PavilionError(ErrorCodes.AUDIT_MERKLE_RANGE, message, { details });
}

/** Largest power of two strictly less than n (n >= 2), RFC 9162's k. */
export function largestPowerOfTwoBelow(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && Number.isInteger(Math.log2(n)) && 2 ** Math.log2(n) === n;
}

class Level {
  #bytes: Buffer = Buffer.alloc(HASH_BYTES * 1024);
  count = 0;

  push(hash: Uint8Array): void {
    this.reserve(this.count + 1);
    this.#bytes.set(hash, this.count * HASH_BYTES);
    this.count++;
  }

  /** Room for `count` hashes (the buffer doubles). */
  reserve(count: number): void {
    this.#bytes = withRoom(this.#bytes, count * HASH_BYTES, this.count * HASH_BYTES, (length) => Buffer.alloc(length));
  }

  truncate(count: number): void {
    this.count = Math.min(this.count, count);
  }

  /** A view into the level's buffer: copy it before the next push if it must outlive it. */
  at(index: number): Buffer {
    return this.#bytes.subarray(index * HASH_BYTES, (index + 1) * HASH_BYTES);
  }
}

export class MerkleTree {
  readonly #levels: Level[] = [new Level()];

  /** Number of leaves. */
  get size(): number {
    return this.#levels[0]!.count;
  }

  /** Append one entry (its leaf hash is computed here). Returns its leaf index. */
  append(data: Uint8Array): number {
    return this.appendLeafHash(hashLeaf(data));
  }

  /**
   * Make room for the next leaf and the nodes it completes, so that the append after it does
   * not allocate: a caller that must not fail half-way (the audit log, once a frame is queued)
   * calls this first.
   */
  prepareAppend(): void {
    const size = this.size + 1;
    for (let k = 0; 2 ** k <= size; k++) {
      if (this.#levels[k] === undefined) this.#levels.push(new Level());
      this.#levels[k]!.reserve(Math.floor(size / 2 ** k));
    }
  }

  /** Append an already computed leaf hash (RFC 9162 leaf hash, 32 bytes). */
  appendLeafHash(leafHash: Uint8Array): number {
    if (leafHash.length !== HASH_BYTES) throw rangeError(`a leaf hash has ${HASH_BYTES} bytes, not ${leafHash.length}`, { length: leafHash.length });
    const index = this.size;
    this.#levels[0]!.push(leafHash);
    // Complete every subtree this leaf closes: while the node just written is a right child.
    let level = 0;
    let position = index;
    while (position % 2 === 1) {
      const below = this.#levels[level]!;
      const parent = hashChildren(below.at(position - 1), below.at(position));
      level++;
      if (this.#levels[level] === undefined) this.#levels.push(new Level());
      this.#levels[level]!.push(parent);
      position = (position - 1) / 2;
    }
    return index;
  }

  /**
   * Forget every leaf from `size` on (leaves appended but never made durable). The nodes that
   * remain are exactly those of a tree that only ever had `size` leaves: level k holds the
   * floor(size / 2^k) complete subtrees.
   */
  truncate(size: number): void {
    this.#checkSize(size);
    this.#levels.forEach((level, k) => level.truncate(Math.floor(size / 2 ** k)));
  }

  /** The leaf hash at `index`. */
  leafHash(index: number): Buffer {
    this.#checkIndex(index, this.size);
    return Buffer.from(this.#levels[0]!.at(index));
  }

  /** MTH(D[0:treeSize]) for any treeSize <= size (default: the current size). */
  root(treeSize: number = this.size): Buffer {
    this.#checkSize(treeSize);
    if (treeSize === 0) return Buffer.from(EMPTY_ROOT);
    return Buffer.from(this.#range(0, treeSize));
  }

  /**
   * RFC 9162 section 2.1.3.1 PATH(m, D[n]): the inclusion proof of leaf `leafIndex` in the
   * tree of `treeSize` leaves, bottom-up.
   */
  inclusionProof(leafIndex: number, treeSize: number = this.size): Buffer[] {
    this.#checkSize(treeSize);
    this.#checkIndex(leafIndex, treeSize);
    const proof: Buffer[] = [];
    this.#path(leafIndex, 0, treeSize, proof);
    return proof.reverse().map((h) => Buffer.from(h));
  }

  /**
   * RFC 9162 section 2.1.4.1 PROOF(m, D[n]): the consistency proof between the tree of
   * `oldSize` leaves and the tree of `newSize` leaves, 0 < oldSize <= newSize <= size.
   * (For oldSize == newSize, or oldSize == 0, the proof is empty.)
   */
  consistencyProof(oldSize: number, newSize: number = this.size): Buffer[] {
    this.#checkSize(newSize);
    if (!Number.isSafeInteger(oldSize) || oldSize < 0 || oldSize > newSize) {
      throw rangeError(`consistency proof from size ${oldSize} to ${newSize}: the old size must be between 0 and the new size`, { oldSize, newSize });
    }
    if (oldSize === 0 || oldSize === newSize) return [];
    const proof: Buffer[] = [];
    this.#subproof(oldSize, 0, newSize, true, proof);
    return proof.reverse().map((h) => Buffer.from(h));
  }

  /** SUBPROOF(m, D[start:start+n], b), appending top-down (the caller reverses). */
  #subproof(m: number, start: number, n: number, complete: boolean, out: Buffer[]): void {
    if (m === n) {
      if (!complete) out.push(this.#range(start, start + n));
      return;
    }
    const k = largestPowerOfTwoBelow(n);
    if (m <= k) {
      out.push(this.#range(start + k, start + n));
      this.#subproof(m, start, k, complete, out);
    } else {
      out.push(this.#range(start, start + k));
      this.#subproof(m - k, start + k, n - k, false, out);
    }
  }

  /** PATH(m, D[start:start+n]), appending top-down (the caller reverses). */
  #path(m: number, start: number, n: number, out: Buffer[]): void {
    if (n === 1) return;
    const k = largestPowerOfTwoBelow(n);
    if (m < k) {
      out.push(this.#range(start + k, start + n));
      this.#path(m, start, k, out);
    } else {
      out.push(this.#range(start, start + k));
      this.#path(m - k, start + k, n - k, out);
    }
  }

  /**
   * MTH(D[start:end]) for a non-empty range whose start is a multiple of the largest power of
   * two not above its length, which holds for every range RFC 9162's recursions visit.
   */
  #range(start: number, end: number): Buffer {
    const n = end - start;
    if (isPowerOfTwo(n) && start % n === 0) {
      const level = Math.log2(n);
      return this.#levels[level]!.at(start / n);
    }
    const k = largestPowerOfTwoBelow(n);
    return hashChildren(this.#range(start, start + k), this.#range(start + k, end));
  }

  #checkSize(treeSize: number): void {
    if (!Number.isSafeInteger(treeSize) || treeSize < 0 || treeSize > this.size) {
      throw rangeError(`tree size ${treeSize} is not between 0 and the tree's ${this.size} leaves`, { treeSize, size: this.size });
    }
  }

  #checkIndex(index: number, treeSize: number): void {
    if (!Number.isSafeInteger(index) || index < 0 || index >= treeSize) {
      throw rangeError(`leaf index ${index} is not in a tree of ${treeSize} leaves`, { leafIndex: index, treeSize });
    }
  }
}
