/**
 * What an anchor publishes about a checkpoint besides its tree size and root: the log id
 * (SHA-256 of the checkpoint's origin, so one contract or file serves many logs without
 * naming tenants in public) and the SHA-256 of the checkpoint's 64-byte signature (binding
 * the anchor to one signed checkpoint, not just to a root). Pure.
 */
import { sha256Hex } from '../../lib/sha256.ts';
import type { SignedCheckpointV1 } from '../log/index.ts';

/** SHA-256 of the log's origin (UTF-8), lower-case hex. */
export function logIdOf(origin: string): string {
  return sha256Hex(origin);
}

/** SHA-256 of the checkpoint's signature bytes (r||s), lower-case hex. */
export function checkpointSignatureSha256(checkpoint: SignedCheckpointV1): string {
  return sha256Hex(Buffer.from(checkpoint.signature, 'base64'));
}
