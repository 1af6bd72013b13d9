/** RFC 9162 Merkle tree: hashing, an append-only tree with proofs, proof verification. Pure. */
export { EMPTY_ROOT, HASH_BYTES, hashChildren, hashLeaf } from './hashing.ts';
export { MerkleTree } from './merkle-tree.ts';
export { rootFromInclusionProof, verifyConsistency, verifyInclusion, type ProofFailure } from './verify-proofs.ts';
