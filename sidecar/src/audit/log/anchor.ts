/**
 * Anchoring: publishing a checkpoint's root somewhere the log's operator cannot rewrite (a
 * blockchain, a transparency witness, a timestamping service), so that even the holder of the
 * signing key cannot later present a different history. Pure types and checks; the adapters
 * (an EVM contract, ...) implement `Anchor` and `AnchorVerifier`.
 *
 * After a checkpoint is durable the log asks its `Anchor` to publish it and appends the
 * answer as an anchor record (record type 3): `AnchorRecordV1`, naming the checkpoint it
 * anchors by tree size and root hash plus an adapter-defined `reference` (chain id, contract,
 * transaction, block...). Verification checks that every anchor record names a checkpoint of
 * this log with the same root (ERR_AUDIT_ANCHOR_MISMATCH otherwise) and, given an
 * `AnchorVerifier` for its kind, that the outside system really holds that root.
 */
import { ErrorCodes, PavilionError } from '../../lib/errors.ts';
import type { ComponentStatus } from '../../lib/lifecycle.ts';
import type { SignedCheckpointV1 } from './checkpoint.ts';

export interface AnchorRecordV1 {
  readonly version: 1;
  /** The adapter, e.g. `evm`. */
  readonly kind: string;
  readonly tree_size: number;
  readonly root_hash: string;
  /** Where the root was published; the adapter's verifier reads it. JSON only. */
  readonly reference: Readonly<Record<string, unknown>>;
}

export interface Anchor {
  readonly kind: string;
  /** Publish the checkpoint's root; resolve with where it is, once it is final enough. */
  anchor(checkpoint: SignedCheckpointV1): Promise<Readonly<Record<string, unknown>>>;
  /** Release connections and timers (called once every log using it has stopped). */
  close?(): void | Promise<void>;
  /** The adapter's own health (e.g. damage it repaired on load), shown in the log's status. */
  status?(): ComponentStatus;
}

export interface AnchorVerifier {
  readonly kind: string;
  /**
   * Resolve when the outside system holds `record.root_hash` as `record.reference` says;
   * throw ERR_AUDIT_ANCHOR_MISMATCH otherwise (ERR_AUDIT_ANCHOR_FAILED when the outside
   * system cannot be asked). `checkpoint` is the log's checkpoint the record anchors (same
   * tree size and root, already checked), for adapters that also bind its origin and
   * signature.
   */
  verify(record: AnchorRecordV1, checkpoint?: SignedCheckpointV1): Promise<void>;
  /**
   * The newest anchor the outside system holds for the log `origin` names, whatever the log
   * file says: a log cut short or rewritten with its anchor records removed still has to
   * reach and agree with it. Undefined when nothing is anchored for that log.
   */
  latestAnchor?(origin: string): Promise<{ readonly treeSize: number; readonly rootHash: string } | undefined>;
}

const KIND = /^[a-z][a-z0-9_-]{0,31}$/;
const HEX32 = /^[0-9a-f]{64}$/;

function invalid(message: string): PavilionError {
  return new PavilionError(ErrorCodes.AUDIT_ANCHOR_MISMATCH, `anchor record: ${message}`);
}

export function decodeAnchorRecord(bytes: Uint8Array): AnchorRecordV1 {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (error) {
    throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_MISMATCH, 'anchor record: not JSON', { cause: error });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid('must be a JSON object');
  const v = value as Record<string, unknown>;
  for (const key of Object.keys(v)) if (!['version', 'kind', 'tree_size', 'root_hash', 'reference'].includes(key)) throw invalid(`unknown field ${JSON.stringify(key)}`);
  if (v['version'] !== 1) throw invalid('version must be 1');
  if (typeof v['kind'] !== 'string' || !KIND.test(v['kind'])) throw invalid('kind is missing or malformed');
  const size = v['tree_size'];
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 1) throw invalid('tree_size must be a positive integer');
  if (typeof v['root_hash'] !== 'string' || !HEX32.test(v['root_hash'])) throw invalid('root_hash must be 32 bytes of lower-case hex');
  const reference = v['reference'];
  if (typeof reference !== 'object' || reference === null || Array.isArray(reference)) throw invalid('reference must be an object');
  return { version: 1, kind: v['kind'], tree_size: size, root_hash: v['root_hash'], reference: reference as Record<string, unknown> };
}

/** The anchor record must name one of the log's checkpoints, with its root; returns that checkpoint. */
export function checkAnchorAgainst(record: AnchorRecordV1, checkpoints: readonly SignedCheckpointV1[]): SignedCheckpointV1 {
  const checkpoint = checkpoints.find((c) => c.tree_size === record.tree_size);
  if (checkpoint === undefined) {
    throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_MISMATCH, `the ${record.kind} anchor names tree size ${record.tree_size}, for which the log has no checkpoint before it`, { details: { treeSize: record.tree_size } });
  }
  if (checkpoint.root_hash !== record.root_hash) {
    throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_MISMATCH, `the ${record.kind} anchor at tree size ${record.tree_size} holds root ${record.root_hash}, the checkpoint ${checkpoint.root_hash}`, { details: { treeSize: record.tree_size } });
  }
  return checkpoint;
}
