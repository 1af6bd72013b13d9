/**
 * RFC 9162 (Certificate Transparency 2.0) section 2.1.1 hashing with SHA-256:
 *   MTH({})    = SHA-256()                      (the empty tree)
 *   leaf hash  = SHA-256(0x00 || d)
 *   node hash  = SHA-256(0x01 || left || right)
 * The 0x00/0x01 prefixes separate leaves from interior nodes, so a leaf can never be
 * passed off as a subtree (second-preimage resistance of the tree, RFC 9162 section 2.1.1).
 * SHA-256 itself comes from node:crypto; nothing here implements a primitive.
 */
import { hash } from 'node:crypto';

export const HASH_BYTES = 32;

const LEAF_PREFIX = Buffer.from([0x00]);
const NODE_PREFIX = Buffer.from([0x01]);

/** MTH of the empty tree: SHA-256 of the empty string. */
export const EMPTY_ROOT: Buffer = hash('sha256', Buffer.alloc(0), 'buffer');

export function hashLeaf(data: Uint8Array): Buffer {
  return hash('sha256', Buffer.concat([LEAF_PREFIX, data]), 'buffer');
}

export function hashChildren(left: Uint8Array, right: Uint8Array): Buffer {
  return hash('sha256', Buffer.concat([NODE_PREFIX, left, right], 1 + left.length + right.length), 'buffer');
}
