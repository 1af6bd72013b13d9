/**
 * RFC 9162 section 2.1 Merkle tree: hashing (2.1.1), inclusion proofs (2.1.3) and
 * consistency proofs (2.1.4), checked against the reference vectors in
 * test/vectors/rfc9162/transparency-dev-merkle.json (provenance inside), against a naive
 * implementation of the RFC's recursive definitions, and for size at 10^6 leaves.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  EMPTY_ROOT,
  MerkleTree,
  hashChildren,
  hashLeaf,
  rootFromInclusionProof,
  verifyConsistency,
  verifyInclusion,
} from '../sidecar/src/audit/merkle/index.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';

interface Vectors {
  hasher: { emptyRoot: string; emptyLeaf: string; leaf: { data: string; hash: string }; node: { left: string; right: string; hash: string } };
  leaves: string[];
  roots: string[];
  inclusionProofs: Array<{ leaf: number; size: number; proof: string[] }>;
  consistencyProofs: Array<{ size1: number; size2: number; proof: string[] }>;
}
const vectors = JSON.parse(readFileSync(new URL('./vectors/rfc9162/transparency-dev-merkle.json', import.meta.url), 'utf8')) as Vectors;
const hx = (s: string): Buffer => Buffer.from(s, 'hex');
const hexes = (list: readonly Uint8Array[]): string[] => list.map((b) => Buffer.from(b).toString('hex'));

function referenceTree(): MerkleTree {
  const tree = new MerkleTree();
  for (const leaf of vectors.leaves) tree.append(hx(leaf));
  return tree;
}

/** RFC 9162 section 2.1.1 MTH, written directly from the definition. */
function naiveRoot(leaves: readonly Buffer[]): Buffer {
  if (leaves.length === 0) return createHash('sha256').digest();
  if (leaves.length === 1) return hashLeaf(leaves[0]!);
  let k = 1;
  while (k * 2 < leaves.length) k *= 2;
  return hashChildren(naiveRoot(leaves.slice(0, k)), naiveRoot(leaves.slice(k)));
}

function throwsCode(fn: () => unknown, code: string, reason?: string): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(isPavilionError(error), `expected a PavilionError, got ${String(error)}`);
    assert.equal(error.code, code);
    if (reason !== undefined) assert.equal(error.details?.['reason'], reason);
    return true;
  });
}

const flip = (proof: readonly Buffer[], i: number, mask: number): Buffer[] =>
  proof.map((p, j) => (j === i ? Buffer.from([p[0]! ^ mask, ...p.subarray(1)]) : p));

describe('RFC 9162 2.1.1 hashing', () => {
  it('the empty tree, an empty leaf, a leaf and a node hash to the reference values', () => {
    assert.equal(EMPTY_ROOT.toString('hex'), vectors.hasher.emptyRoot);
    assert.equal(new MerkleTree().root().toString('hex'), vectors.hasher.emptyRoot);
    assert.equal(hashLeaf(Buffer.alloc(0)).toString('hex'), vectors.hasher.emptyLeaf);
    assert.equal(hashLeaf(Buffer.from(vectors.hasher.leaf.data)).toString('hex'), vectors.hasher.leaf.hash);
    assert.equal(hashChildren(Buffer.from(vectors.hasher.node.left), Buffer.from(vectors.hasher.node.right)).toString('hex'), vectors.hasher.node.hash);
  });

  it('separates leaves from nodes: a node is not the leaf hash of its children concatenated', () => {
    const a = hashLeaf(Buffer.from('Hello'));
    const b = hashLeaf(Buffer.from('World'));
    assert.notEqual(hashChildren(a, b).toString('hex'), hashLeaf(Buffer.concat([a, b])).toString('hex'));
    assert.notEqual(hashChildren(a, b).toString('hex'), hashChildren(b, a).toString('hex'));
  });
});

describe('RFC 9162 2.1.1 tree heads of the reference tree', () => {
  it('the root of every prefix of the 8 reference leaves equals the published root', () => {
    const tree = referenceTree();
    for (let n = 1; n <= 8; n++) assert.equal(tree.root(n).toString('hex'), vectors.roots[n - 1], `size ${n}`);
  });

  it('a tree grown one leaf at a time has the published root at each size', () => {
    const tree = new MerkleTree();
    vectors.leaves.forEach((leaf, i) => {
      tree.append(hx(leaf));
      assert.equal(tree.root().toString('hex'), vectors.roots[i]);
    });
  });
});

describe('RFC 9162 2.1.3 inclusion proofs', () => {
  const tree = referenceTree();
  for (const v of vectors.inclusionProofs) {
    it(`leaf ${v.leaf - 1} of ${v.size}: generated proof equals the reference and verifies`, () => {
      assert.deepEqual(hexes(tree.inclusionProof(v.leaf - 1, v.size)), v.proof);
      const leafHash = hashLeaf(hx(vectors.leaves[v.leaf - 1]!));
      verifyInclusion(v.leaf - 1, v.size, leafHash, v.proof.map(hx), hx(vectors.roots[v.size - 1]!));
    });
  }

  for (const v of vectors.inclusionProofs.filter((x) => x.size > 1)) {
    it(`leaf ${v.leaf - 1} of ${v.size}: every corruption the reference suite probes fails`, () => {
      const index = v.leaf - 1;
      const proof = v.proof.map(hx);
      const root = hx(vectors.roots[v.size - 1]!);
      const leafHash = hashLeaf(hx(vectors.leaves[index]!));
      const some = hx('abacaba000000000000000000000000000000000000000000060061e00123456');
      const probes: Array<[string, () => void]> = [
        ['index - 1', () => verifyInclusion(index - 1, v.size, leafHash, proof, root)],
        ['index + 1', () => verifyInclusion(index + 1, v.size, leafHash, proof, root)],
        ['index ^ 2', () => verifyInclusion(index ^ 2, v.size, leafHash, proof, root)],
        ['size * 2', () => verifyInclusion(index, v.size * 2, leafHash, proof, root)],
        ['size / 2', () => verifyInclusion(index, Math.floor(v.size / 2), leafHash, proof, root)],
        ['wrong leaf', () => verifyInclusion(index, v.size, hashLeaf(Buffer.from('WrongLeaf')), proof, root)],
        ['empty root', () => verifyInclusion(index, v.size, leafHash, proof, EMPTY_ROOT)],
        ['random root', () => verifyInclusion(index, v.size, leafHash, proof, some)],
        ['trailing root', () => verifyInclusion(index, v.size, leafHash, [...proof, root], root)],
        ['preceding root', () => verifyInclusion(index, v.size, leafHash, [root, ...proof], root)],
        ['trailing short', () => verifyInclusion(index, v.size, leafHash, [...proof, Buffer.alloc(0)], root)],
        ['removed component', () => verifyInclusion(index, v.size, leafHash, proof.slice(0, -1), root)],
        ['inserted component', () => verifyInclusion(index, v.size, leafHash, [some, ...proof], root)],
        ...proof.map((_, i): [string, () => void] => [`bit flip in proof[${i}]`, () => verifyInclusion(index, v.size, leafHash, flip(proof, i, 8), root)]),
      ];
      for (const [name, probe] of probes) {
        assert.throws(probe, (error: unknown) => isPavilionError(error) && (error.code === ErrorCodes.AUDIT_PROOF_INVALID || error.code === ErrorCodes.AUDIT_MERKLE_RANGE), name);
      }
    });
  }

  it('a single-leaf tree: the leaf hash is the root and the proof is empty', () => {
    const tree = new MerkleTree();
    tree.append(Buffer.from('data'));
    assert.deepEqual(tree.inclusionProof(0), []);
    verifyInclusion(0, 1, hashLeaf(Buffer.from('data')), [], tree.root());
    throwsCode(() => verifyInclusion(0, 1, Buffer.alloc(0), [], tree.root()), ErrorCodes.AUDIT_PROOF_INVALID, 'hash_length');
    throwsCode(() => verifyInclusion(0, 1, tree.root(), [], Buffer.alloc(0)), ErrorCodes.AUDIT_PROOF_INVALID, 'hash_length');
  });

  it('indexes and sizes that cannot be proven are range errors, each case', () => {
    const tree = referenceTree();
    throwsCode(() => tree.inclusionProof(8, 8), ErrorCodes.AUDIT_MERKLE_RANGE);
    throwsCode(() => tree.inclusionProof(-1, 8), ErrorCodes.AUDIT_MERKLE_RANGE);
    throwsCode(() => tree.inclusionProof(0.5, 8), ErrorCodes.AUDIT_MERKLE_RANGE);
    throwsCode(() => tree.inclusionProof(0, 9), ErrorCodes.AUDIT_MERKLE_RANGE);
    throwsCode(() => tree.inclusionProof(0, 0), ErrorCodes.AUDIT_MERKLE_RANGE);
    throwsCode(() => tree.root(9), ErrorCodes.AUDIT_MERKLE_RANGE);
    throwsCode(() => tree.root(Number.NaN), ErrorCodes.AUDIT_MERKLE_RANGE);
    throwsCode(() => tree.leafHash(8), ErrorCodes.AUDIT_MERKLE_RANGE);
    throwsCode(() => tree.appendLeafHash(Buffer.alloc(31)), ErrorCodes.AUDIT_MERKLE_RANGE);
    throwsCode(() => rootFromInclusionProof(0, 0, EMPTY_ROOT, []), ErrorCodes.AUDIT_MERKLE_RANGE);
    throwsCode(() => rootFromInclusionProof(3, 2, EMPTY_ROOT, []), ErrorCodes.AUDIT_MERKLE_RANGE);
    throwsCode(() => rootFromInclusionProof(-1, 2, EMPTY_ROOT, []), ErrorCodes.AUDIT_MERKLE_RANGE);
    throwsCode(() => rootFromInclusionProof(0, 2 ** 53, EMPTY_ROOT, []), ErrorCodes.AUDIT_MERKLE_RANGE);
  });
});

describe('RFC 9162 2.1.4 consistency proofs', () => {
  const tree = referenceTree();
  for (const v of vectors.consistencyProofs) {
    it(`from ${v.size1} to ${v.size2}: generated proof equals the reference and verifies`, () => {
      assert.deepEqual(hexes(tree.consistencyProof(v.size1, v.size2)), v.proof);
      verifyConsistency(v.size1, v.size2, hx(vectors.roots[v.size1 - 1]!), hx(vectors.roots[v.size2 - 1]!), v.proof.map(hx));
    });
  }

  for (const v of vectors.consistencyProofs.filter((x) => x.proof.length > 0)) {
    it(`from ${v.size1} to ${v.size2}: every corruption the reference suite probes fails`, () => {
      const proof = v.proof.map(hx);
      const r1 = hx(vectors.roots[v.size1 - 1]!);
      const r2 = hx(vectors.roots[v.size2 - 1]!);
      const wrong = hashLeaf(Buffer.from('WrongRoot'));
      const probes: Array<[string, () => void]> = [
        ['size1 - 1', () => verifyConsistency(v.size1 - 1, v.size2, r1, r2, proof)],
        ['size1 + 1', () => verifyConsistency(v.size1 + 1, v.size2, r1, r2, proof)],
        ['size1 ^ 2', () => verifyConsistency(v.size1 ^ 2, v.size2, r1, r2, proof)],
        ['size2 * 2', () => verifyConsistency(v.size1, v.size2 * 2, r1, r2, proof)],
        ['size2 / 2', () => verifyConsistency(v.size1, Math.floor(v.size2 / 2), r1, r2, proof)],
        ['wrong root1', () => verifyConsistency(v.size1, v.size2, wrong, r2, proof)],
        ['wrong root2', () => verifyConsistency(v.size1, v.size2, r1, wrong, proof)],
        ['swapped roots', () => verifyConsistency(v.size1, v.size2, r2, r1, proof)],
        ['empty proof', () => verifyConsistency(v.size1, v.size2, r1, r2, [])],
        ['trailing root1', () => verifyConsistency(v.size1, v.size2, r1, r2, [...proof, r1])],
        ['trailing root2', () => verifyConsistency(v.size1, v.size2, r1, r2, [...proof, r2])],
        ['preceding root1', () => verifyConsistency(v.size1, v.size2, r1, r2, [r1, ...proof])],
        ['preceding root2', () => verifyConsistency(v.size1, v.size2, r1, r2, [r2, ...proof])],
        ['preceding proof[0]', () => verifyConsistency(v.size1, v.size2, r1, r2, [proof[0]!, ...proof])],
        ['truncated proof', () => verifyConsistency(v.size1, v.size2, r1, r2, proof.slice(0, -1))],
        ...proof.map((_, i): [string, () => void] => [`bit flip in proof[${i}]`, () => verifyConsistency(v.size1, v.size2, r1, r2, flip(proof, i, 16))]),
      ];
      for (const [name, probe] of probes) {
        assert.throws(probe, (error: unknown) => isPavilionError(error) && (error.code === ErrorCodes.AUDIT_PROOF_INVALID || error.code === ErrorCodes.AUDIT_MERKLE_RANGE), name);
      }
    });
  }

  it('edge sizes are decided strictly, each case', () => {
    const r = hx(vectors.roots[0]!);
    verifyConsistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, []);
    verifyConsistency(0, 5, EMPTY_ROOT, r, []);
    verifyConsistency(1, 1, r, r, []);
    throwsCode(() => verifyConsistency(0, 5, r, r, []), ErrorCodes.AUDIT_PROOF_INVALID, 'root_mismatch');
    throwsCode(() => verifyConsistency(1, 1, r, EMPTY_ROOT, []), ErrorCodes.AUDIT_PROOF_INVALID, 'root_mismatch');
    throwsCode(() => verifyConsistency(1, 1, r, r, [r]), ErrorCodes.AUDIT_PROOF_INVALID, 'non_empty_proof');
    throwsCode(() => verifyConsistency(0, 1, EMPTY_ROOT, r, [r]), ErrorCodes.AUDIT_PROOF_INVALID, 'non_empty_proof');
    throwsCode(() => verifyConsistency(1, 2, r, r, []), ErrorCodes.AUDIT_PROOF_INVALID, 'empty_proof');
    throwsCode(() => verifyConsistency(2, 1, r, r, []), ErrorCodes.AUDIT_MERKLE_RANGE);
    throwsCode(() => verifyConsistency(1, 2, Buffer.alloc(5), r, [r]), ErrorCodes.AUDIT_PROOF_INVALID, 'hash_length');
    throwsCode(() => tree.consistencyProof(9, 8), ErrorCodes.AUDIT_MERKLE_RANGE);
    throwsCode(() => tree.consistencyProof(1, 9), ErrorCodes.AUDIT_MERKLE_RANGE);
    assert.deepEqual(tree.consistencyProof(0, 8), []);
  });

  it('a valid proof from 2^49 + 1 leaves (not a power of two, though Math.log2 gives exactly 49) verifies; a tampered one gets ERR_AUDIT_PROOF_INVALID', () => {
    // RFC 9162 2.1.4.1 for m = 2^49 + 1, n = m + 1: [leaf m-1, leaf m, MTH(D[0:2^49])]; no tree needed.
    const [left, last, next] = ['left', 'last', 'next'].map((s) => createHash('sha256').update(s).digest()) as [Buffer, Buffer, Buffer];
    const m = 2 ** 49 + 1;
    const oldRoot = hashChildren(left, last);
    const newRoot = hashChildren(left, hashChildren(last, next));
    verifyConsistency(m, m + 1, oldRoot, newRoot, [last, next, left]);
    throwsCode(() => verifyConsistency(m, m + 1, oldRoot, newRoot, [last, next, oldRoot]), ErrorCodes.AUDIT_PROOF_INVALID, 'root_mismatch');
  });
});

describe('the tree agrees with the RFC definitions for every size up to 70', () => {
  it('roots equal the naive MTH; every inclusion and consistency proof verifies', () => {
    const data = Array.from({ length: 70 }, (_, i) => Buffer.from(`entry-${i}`));
    const tree = new MerkleTree();
    for (const d of data) tree.append(d);
    const roots = [EMPTY_ROOT, ...data.map((_, i) => naiveRoot(data.slice(0, i + 1)))];
    for (let n = 0; n <= data.length; n++) {
      assert.equal(tree.root(n).toString('hex'), roots[n]!.toString('hex'), `root ${n}`);
      for (let m = 0; m < n; m++) verifyInclusion(m, n, hashLeaf(data[m]!), tree.inclusionProof(m, n), roots[n]!);
      for (let m = 0; m <= n; m++) verifyConsistency(m, n, roots[m]!, roots[n]!, tree.consistencyProof(m, n));
    }
  });
});

describe('size: 10^6 leaves', () => {
  // Correctness at size only: the proof time is measured by the audit benchmark, not asserted here.
  it('inclusion and consistency proofs at 10^6 leaves verify', () => {
    const n = 1_000_000;
    const tree = new MerkleTree();
    const leaf = Buffer.alloc(32);
    for (let i = 0; i < n; i++) {
      leaf.writeUInt32BE(i, 0);
      tree.appendLeafHash(leaf);
    }
    const root = tree.root();
    for (const index of [0, 1, 524_287, 524_288, 999_998, 999_999]) {
      leaf.writeUInt32BE(index, 0);
      verifyInclusion(index, n, leaf, tree.inclusionProof(index), root);
    }
    const old = 765_432;
    verifyConsistency(old, n, tree.root(old), root, tree.consistencyProof(old));
  });
});
