/**
 * Offline verification of a whole audit log file (`pavilion audit verify-log`) and of one
 * decision (`pavilion audit verify`). Both fail closed: they return what they verified or
 * throw a PavilionError whose code says what is wrong and whose details name the FIRST bad
 * position (`leafIndex`, `recordNumber`, `byteOffset`).
 *
 * verify-log reads the file in order and recomputes the tree. It fails on:
 *   - a frame cut short or failing its CRC (ERR_AUDIT_RECORD_CORRUPT) - an edit that did not
 *     fix the CRC, or a torn tail not yet recovered;
 *   - a leaf whose sequence number is not the next one (ERR_AUDIT_SEQUENCE_BROKEN) - deleted
 *     or reordered entries;
 *   - a checkpoint that is malformed, out of order or from another log (ERR_AUDIT_CHECKPOINT_INVALID),
 *     signed by a key the verifier does not trust (ERR_AUDIT_KEY_UNKNOWN) or with a signature
 *     that does not verify (ERR_AUDIT_SIGNATURE_INVALID);
 *   - a checkpoint whose root differs from the recomputed tree (ERR_AUDIT_ROOT_MISMATCH): some
 *     leaf between the previous good checkpoint and this one was changed, inserted or removed
 *     with its framing rewritten; the report names that range, as precisely as signatures allow;
 *   - a trusted checkpoint (from a receipt, an anchor or an earlier run) that the log no
 *     longer reaches (ERR_AUDIT_LOG_TRUNCATED) or contradicts (ERR_AUDIT_ROOT_MISMATCH);
 *   - leaves that no signed checkpoint covers at all (ERR_AUDIT_NOT_CHECKPOINTED, at leaf 0);
 *   - an anchor record that names no checkpoint of the log or another root, that the outside
 *     system does not hold, or (verifiers given) of a kind none of them checks
 *     (ERR_AUDIT_ANCHOR_MISMATCH);
 *   - any anchor the outside system holds for the log (every `Anchored` event, for verifiers
 *     that list them) that the log does not reach (ERR_AUDIT_LOG_TRUNCATED), contradicts
 *     (ERR_AUDIT_ROOT_MISMATCH) or has no checkpoint with that signature for
 *     (ERR_AUDIT_ANCHOR_MISMATCH).
 * Between consecutive checkpoints it also checks an RFC 9162 consistency proof.
 */
import { hash } from 'node:crypto';
import { open, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { canonicalJson } from '../../lib/canonical-json.ts';
import { pathExists } from '../../lib/durable-file.ts';
import { ErrorCodes, PavilionError, isPavilionError } from '../../lib/errors.ts';
import type { DecisionEventV1 } from '../decision-event.ts';
import { MerkleTree, hashLeaf, verifyConsistency, verifyInclusion } from '../merkle/index.ts';
import { decodeCheckpoint, parseCheckpoint, type SignedCheckpointV1 } from './checkpoint.ts';
import { FILE_HEADER_BYTES, FRAME_OVERHEAD_BYTES, FrameDecoder, RecordType, checkFileHeader, type FrameDamage, type LogRecord } from './record-format.ts';
import type { Keyring } from './signer.ts';
import { WAL_FILE, type DecisionProofV1 } from './audit-log.ts';
import { checkAnchorAgainst, decodeAnchorRecord, type AnchorRecordV1, type AnchorVerifier } from './anchor.ts';
import { decisionIdOf } from './event-encoding.ts';
import { checkpointSignatureSha256 } from '../anchor/checkpoint-digests.ts';

export interface LogVerification {
  /** Anchor records in the log, and how many an AnchorVerifier confirmed with the outside system. */
  readonly anchors: number;
  readonly anchorsVerified: number;
  readonly anchoredSize: number;
  /** The largest tree size the outside systems hold for this log (0: none, or none asked); the log reaches it with the same root. */
  readonly anchoredOutsideSize: number;
  readonly origin: string | undefined;
  readonly leaves: number;
  readonly checkpoints: number;
  readonly rootHash: string;
  readonly lastCheckpoint: SignedCheckpointV1 | undefined;
  /** Leaves after the last checkpoint: intact framing, but no signature covers them yet. */
  readonly unsignedLeaves: number;
  readonly keyIds: readonly string[];
}

/** An anchor that none of the verifiers given can check: with anchor checks asked for, it does not pass. */
function uncheckableAnchor(anchor: { readonly kind: string; readonly tree_size: number }, verifiers: readonly { readonly kind: string }[], at: string, details: Readonly<Record<string, unknown>>): PavilionError {
  return new PavilionError(ErrorCodes.AUDIT_ANCHOR_MISMATCH, `the ${anchor.kind} anchor of the checkpoint at tree size ${anchor.tree_size} ${at}is of a kind no verifier given checks (${verifiers.map((v) => v.kind).join(', ')})`, {
    details: { ...details, kind: anchor.kind },
  });
}

/** One anchor an outside system holds for a log (e.g. one `Anchored` event of the contract). */
export interface OutsideAnchor {
  readonly treeSize: number;
  readonly rootHash: string;
  /** SHA-256 of the anchored checkpoint's signature, hex, when the system records it. */
  readonly checkpointSigSha256?: string;
  /** Where it is (transaction, block, line...), copied into failure reports. */
  readonly where?: Readonly<Record<string, unknown>>;
}

/** A verifier that can list every anchor its outside system holds for a log, oldest first. */
export interface AnchorHistory {
  anchorsOf(origin: string): Promise<readonly OutsideAnchor[]>;
}

export interface VerifyLogOptions {
  /**
   * Checkpoints must name this origin. Required with `trustedCheckpoints` or `anchorVerifiers`:
   * taken from the file, a log re-signed under another origin would find nothing anchored
   * or trusted to compare with. Without either, the first checkpoint's origin is the log's.
   */
  readonly origin?: string;
  /** Checkpoints obtained elsewhere that the log must still reach and agree with. */
  readonly trustedCheckpoints?: readonly SignedCheckpointV1[];
  /**
   * Check anchor records of these kinds against their outside systems (an anchor record of a
   * kind none of them checks then fails), and, for verifiers that list them (`anchorsOf`),
   * every anchor the outside system holds for the log.
   */
  readonly anchorVerifiers?: readonly (AnchorVerifier & Partial<AnchorHistory>)[];
}

const READ_CHUNK_BYTES = 4 * 1024 * 1024;

function bad(code: (typeof ErrorCodes)[keyof typeof ErrorCodes], message: string, details: Record<string, unknown>): PavilionError {
  return new PavilionError(code, message, { details });
}

export async function verifyLogFile(path: string, keyring: Keyring, options: VerifyLogOptions = {}): Promise<LogVerification> {
  return verifyLog(path, keyring, options);
}

/**
 * verifyLogFile, handing the first leaf's payload (an epoch's link) to `onFirstLeaf` and,
 * once everything verified, the recomputed tree to `onVerified`.
 */
async function verifyLog(
  path: string,
  keyring: Keyring,
  options: VerifyLogOptions,
  onFirstLeaf?: (payload: Buffer) => void,
  onVerified?: (tree: MerkleTree) => void,
): Promise<LogVerification> {
  const anchorsAsked = (options.anchorVerifiers?.length ?? 0) > 0;
  if (options.origin === undefined && (anchorsAsked || (options.trustedCheckpoints?.length ?? 0) > 0)) {
    throw new PavilionError(
      anchorsAsked ? ErrorCodes.AUDIT_ANCHOR_CONFIG : ErrorCodes.CONFIG_INVALID,
      `the log's origin is required with ${anchorsAsked ? 'anchor verifiers' : 'trusted checkpoints'}: the log to check is never taken from the file itself`,
    );
  }
  const handle = await open(path, 'r').catch((error: unknown) => {
    throw new PavilionError(ErrorCodes.AUDIT_LOG_IO, `cannot open ${path}`, { cause: error });
  });
  const tree = new MerkleTree();
  const checkpoints: SignedCheckpointV1[] = [];
  const keyIds = new Set<string>();
  const anchors: Array<{ anchor: AnchorRecordV1; checkpoint: SignedCheckpointV1; where: Record<string, unknown> }> = [];
  let origin = options.origin;
  let firstLeafIsLink = false;
  try {
    const header = Buffer.alloc(FILE_HEADER_BYTES);
    const { bytesRead: headerBytes } = await handle.read(header, 0, FILE_HEADER_BYTES, 0);
    const problem = checkFileHeader(header.subarray(0, headerBytes));
    if (problem !== undefined) throw bad(ErrorCodes.AUDIT_RECORD_CORRUPT, `${path}: ${problem}`, { leafIndex: 0, recordNumber: 0, byteOffset: 0, reason: 'header' });

    const decoder = new FrameDecoder(FILE_HEADER_BYTES);
    const chunk = Buffer.alloc(READ_CHUNK_BYTES);
    let position = FILE_HEADER_BYTES;
    const onRecord = (record: LogRecord): void => {
      const where = { leafIndex: tree.size, recordNumber: record.recordNumber, byteOffset: record.offset };
      if (record.type === RecordType.LEAF) {
        if (record.index !== tree.size) {
          const kind = record.index > tree.size ? 'missing (deleted) entries' : 'an entry out of order (reordered or duplicated)';
          throw bad(ErrorCodes.AUDIT_SEQUENCE_BROKEN, `record ${record.recordNumber} at byte ${record.offset} is leaf ${record.index} where leaf ${tree.size} was expected: ${kind}`, { ...where, found: record.index });
        }
        if (tree.size === 0) {
          firstLeafIsLink = parseEpochLink(record.payload) !== undefined;
          onFirstLeaf?.(record.payload);
        }
        tree.append(record.payload);
        return;
      }
      if (record.type === RecordType.ANCHOR) {
        let anchor: AnchorRecordV1;
        let anchored: SignedCheckpointV1;
        try {
          anchor = decodeAnchorRecord(record.payload);
          if (anchor.tree_size !== record.index) throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_MISMATCH, `the anchor's tree size ${anchor.tree_size} differs from its frame's ${record.index}`);
          anchored = checkAnchorAgainst(anchor, checkpoints);
        } catch (error) {
          throw bad(ErrorCodes.AUDIT_ANCHOR_MISMATCH, `record ${record.recordNumber} at byte ${record.offset}: ${isPavilionError(error) ? error.message : 'unreadable anchor record'}`, where);
        }
        anchors.push({ anchor, checkpoint: anchored, where: { ...where, treeSize: anchor.tree_size } });
        return;
      }
      let checkpoint: SignedCheckpointV1;
      try {
        checkpoint = decodeCheckpoint(record.payload);
      } catch (error) {
        throw bad(ErrorCodes.AUDIT_CHECKPOINT_INVALID, `record ${record.recordNumber} at byte ${record.offset}: ${isPavilionError(error) ? error.message : 'unreadable checkpoint'}`, where);
      }
      const previous = checkpoints.at(-1);
      const cpWhere = { ...where, treeSize: checkpoint.tree_size };
      if (checkpoint.tree_size !== record.index) throw bad(ErrorCodes.AUDIT_CHECKPOINT_INVALID, `record ${record.recordNumber}: the checkpoint's tree size ${checkpoint.tree_size} differs from its frame's ${record.index}`, cpWhere);
      origin ??= checkpoint.origin;
      if (checkpoint.origin !== origin) throw bad(ErrorCodes.AUDIT_CHECKPOINT_INVALID, `record ${record.recordNumber}: checkpoint of log ${checkpoint.origin}, expected ${origin}`, cpWhere);
      if (checkpoint.tree_size > tree.size) {
        // Leaves were deleted since the last good checkpoint; if the ones after them were
        // renumbered, any of them may be the gap, not only the last ones.
        const from = Math.min(previous?.tree_size ?? 0, tree.size);
        throw bad(ErrorCodes.AUDIT_SEQUENCE_BROKEN, `record ${record.recordNumber}: checkpoint at tree size ${checkpoint.tree_size} comes after only ${tree.size} leaves: ${checkpoint.tree_size - tree.size} of leaves ${from}..${checkpoint.tree_size - 1} are missing (deleted, the ones after them renumbered, or cut from the end)`, {
          ...cpWhere, leafIndex: from, firstSuspectLeaf: from, lastSuspectLeaf: checkpoint.tree_size - 1, missingLeaves: checkpoint.tree_size - tree.size,
        });
      }
      if (previous !== undefined && checkpoint.tree_size < previous.tree_size) {
        throw bad(ErrorCodes.AUDIT_CHECKPOINT_INVALID, `record ${record.recordNumber}: checkpoint at tree size ${checkpoint.tree_size} follows one at ${previous.tree_size}`, cpWhere);
      }
      if (previous !== undefined && Date.parse(checkpoint.timestamp) < Date.parse(previous.timestamp)) {
        throw bad(ErrorCodes.AUDIT_CHECKPOINT_INVALID, `record ${record.recordNumber}: checkpoint time ${checkpoint.timestamp} is before the previous ${previous.timestamp}`, cpWhere);
      }
      try {
        keyring.verifyCheckpoint(checkpoint);
      } catch (error) {
        if (isPavilionError(error)) throw new PavilionError(error.code, `record ${record.recordNumber} at byte ${record.offset}: ${error.message}`, { details: { ...cpWhere, keyId: checkpoint.key_id }, cause: error });
        throw error;
      }
      keyIds.add(checkpoint.key_id);
      const recomputed = tree.root(checkpoint.tree_size).toString('hex');
      if (recomputed !== checkpoint.root_hash) {
        if (previous !== undefined && previous.tree_size === checkpoint.tree_size) {
          // the leaves gave the previous checkpoint's root already: this one is the forgery
          throw bad(ErrorCodes.AUDIT_ROOT_MISMATCH, `the signed checkpoint at tree size ${checkpoint.tree_size} (record ${record.recordNumber}) names another root than the checkpoint before it at the same size: two roots for one tree (a fork), signed by key ${checkpoint.key_id}; the leaves match the earlier one`, {
            ...cpWhere, keyId: checkpoint.key_id, forked: true,
          });
        }
        const from = previous?.tree_size ?? 0;
        throw bad(ErrorCodes.AUDIT_ROOT_MISMATCH, `the signed checkpoint at tree size ${checkpoint.tree_size} (record ${record.recordNumber}) does not match the leaves: at least one of leaves ${from}..${checkpoint.tree_size - 1} was changed, inserted or removed`, {
          ...cpWhere, leafIndex: from, firstSuspectLeaf: from, lastSuspectLeaf: checkpoint.tree_size - 1,
        });
      }
      if (previous !== undefined) {
        verifyConsistency(previous.tree_size, checkpoint.tree_size, Buffer.from(previous.root_hash, 'hex'), Buffer.from(checkpoint.root_hash, 'hex'), tree.consistencyProof(previous.tree_size, checkpoint.tree_size));
      }
      checkpoints.push(checkpoint);
    };
    for (;;) {
      const { bytesRead } = await handle.read(chunk, 0, READ_CHUNK_BYTES, position);
      if (bytesRead === 0) break;
      position += bytesRead;
      for (const record of decoder.push(Buffer.from(chunk.subarray(0, bytesRead)))) onRecord(record);
      if (decoder.damage !== undefined) break;
    }
    const damage = decoder.finish();
    if (damage !== undefined) {
      const atEnd = damage.reason === 'short_header' || damage.reason === 'short_frame';
      throw bad(ErrorCodes.AUDIT_RECORD_CORRUPT, `record ${damage.recordNumber} at byte ${damage.offset} is damaged (${damage.reason})${atEnd ? ': the file ends inside it (a torn tail, or a cut file)' : ''}; leaves before ${tree.size} are intact`, {
        leafIndex: tree.size, recordNumber: damage.recordNumber, byteOffset: damage.offset, reason: damage.reason,
      });
    }
    // Decisions no signature covers at all: nothing binds them to the log (its checkpoints may
    // have been stripped). An epoch's first leaf is its link, which the epoch's first
    // checkpoint covers alone; a log whose checkpoints cover no decision has none signed.
    // Leaves after the last checkpoint of a log with signed decisions are only a note.
    const signedUpTo = checkpoints.at(-1)?.tree_size ?? 0;
    const firstDecision = firstLeafIsLink ? 1 : 0;
    if (tree.size > firstDecision && signedUpTo <= firstDecision) {
      throw bad(ErrorCodes.AUDIT_NOT_CHECKPOINTED, `the log has ${tree.size} leaves but no signed checkpoint covers any decision: none of leaves ${firstDecision}..${tree.size - 1} is covered by a signature (its checkpoints were removed, or none was signed yet: a log just started or rotated signs its first within checkpointIntervalMs, so verify it again after that)`, {
        leafIndex: firstDecision, treeSize: tree.size, firstSuspectLeaf: firstDecision, lastSuspectLeaf: tree.size - 1,
      });
    }
  } finally {
    await handle.close();
  }

  for (const trusted of options.trustedCheckpoints ?? []) {
    keyring.verifyCheckpoint(trusted);
    if (origin !== undefined && trusted.origin !== origin) {
      throw bad(ErrorCodes.AUDIT_CHECKPOINT_INVALID, `the trusted checkpoint is of log ${trusted.origin}, not ${origin}`, { treeSize: trusted.tree_size });
    }
    if (trusted.tree_size > tree.size) {
      throw bad(ErrorCodes.AUDIT_LOG_TRUNCATED, `the log has ${tree.size} leaves but a trusted checkpoint covers ${trusted.tree_size}: leaves from ${tree.size} on were removed`, { leafIndex: tree.size, treeSize: trusted.tree_size });
    }
    if (tree.root(trusted.tree_size).toString('hex') !== trusted.root_hash) {
      throw bad(ErrorCodes.AUDIT_ROOT_MISMATCH, `the log's first ${trusted.tree_size} leaves do not match the trusted checkpoint`, { leafIndex: 0, treeSize: trusted.tree_size, firstSuspectLeaf: 0, lastSuspectLeaf: trusted.tree_size - 1 });
    }
  }

  // Anchors, in file order: each must be held by the outside system it names.
  let anchorsVerified = 0;
  for (const { anchor, checkpoint, where } of anchors) {
    const verifier = options.anchorVerifiers?.find((v) => v.kind === anchor.kind);
    if (verifier === undefined) {
      // Asked to check anchors: one that none of the verifiers can check does not pass unchecked.
      if (!anchorsAsked) continue;
      throw uncheckableAnchor(anchor, options.anchorVerifiers ?? [], `(record ${String(where['recordNumber'])}) `, where);
    }
    try {
      await verifier.verify(anchor, checkpoint);
    } catch (error) {
      // An outside system that cannot be asked is not proof of tampering: say which it is.
      if (isPavilionError(error, ErrorCodes.AUDIT_ANCHOR_FAILED)) {
        throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_FAILED, `the ${anchor.kind} anchor of the checkpoint at tree size ${anchor.tree_size} (record ${String(where['recordNumber'])}) could not be checked: ${error.message}`, { details: where, cause: error });
      }
      throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_MISMATCH, `the ${anchor.kind} anchor of the checkpoint at tree size ${anchor.tree_size} (record ${String(where['recordNumber'])}) does not hold: ${isPavilionError(error) ? error.message : String(error)}`, { details: where, cause: error });
    }
    anchorsVerified++;
  }

  // Every anchor the outside systems hold for this log, whatever records the file kept: the
  // contract only makes tree sizes grow, so a history forked after an anchor and anchored
  // again at a larger size fails at the first anchor it contradicts.
  /** An anchored tree size the log no longer reaches: leaves were cut. */
  const checkReach = (kind: string, treeSize: number, at: Record<string, unknown>): void => {
    if (treeSize > tree.size) {
      throw bad(ErrorCodes.AUDIT_LOG_TRUNCATED, `the ${kind} anchor holds tree size ${treeSize} of ${origin ?? ''}, but the log has ${tree.size} leaves: leaves from ${tree.size} on were removed`, { ...at, leafIndex: tree.size });
    }
  };

  let anchoredOutsideSize = 0;
  for (const verifier of options.anchorVerifiers ?? []) {
    if (verifier.anchorsOf === undefined || origin === undefined) continue;
    const [anchorsOf, log] = [verifier.anchorsOf.bind(verifier), origin];
    const held = await readAnchors(verifier.kind, log, () => anchorsOf(log));
    let agreed = 0;
    for (const outside of [...held].sort((a, b) => a.treeSize - b.treeSize)) {
      const at = { ...outside.where, treeSize: outside.treeSize };
      checkReach(verifier.kind, outside.treeSize, at);
      if (tree.root(outside.treeSize).toString('hex') !== outside.rootHash) {
        throw bad(ErrorCodes.AUDIT_ROOT_MISMATCH, `the ${verifier.kind} anchor holds root ${outside.rootHash} for the first ${outside.treeSize} leaves of ${origin}; the log gives another: at least one of leaves ${agreed}..${outside.treeSize - 1} was rewritten after it was anchored`, {
          ...at, leafIndex: agreed, firstSuspectLeaf: agreed, lastSuspectLeaf: outside.treeSize - 1,
        });
      }
      // The checkpoint anchored was durable in the log before it was anchored: it must still be there.
      const inLog = checkpoints.filter((c) => c.tree_size === outside.treeSize);
      if (inLog.length === 0) {
        throw bad(ErrorCodes.AUDIT_ANCHOR_MISMATCH, `the ${verifier.kind} anchor holds a checkpoint of ${origin} at tree size ${outside.treeSize}, but the log has no checkpoint at that size: its checkpoints were removed or re-signed`, { ...at, leafIndex: outside.treeSize });
      }
      const sig = outside.checkpointSigSha256;
      if (sig !== undefined && !inLog.some((c) => checkpointSignatureSha256(c) === sig)) {
        throw bad(ErrorCodes.AUDIT_ANCHOR_MISMATCH, `the ${verifier.kind} anchor at tree size ${outside.treeSize} of ${origin} holds signature hash ${sig}, which no checkpoint of the log at that size has: the checkpoint was replaced (re-signed)`, { ...at, leafIndex: outside.treeSize });
      }
      agreed = outside.treeSize;
    }
    anchoredOutsideSize = Math.max(anchoredOutsideSize, agreed);
  }

  // What the outside systems hold last for this log: a log cut after its last anchor, or
  // rewritten with its anchor records dropped, fails here.
  for (const verifier of options.anchorVerifiers ?? []) {
    if (verifier.latestAnchor === undefined || origin === undefined) continue;
    const [latestAnchor, log] = [verifier.latestAnchor.bind(verifier), origin];
    const latest = await readAnchors(verifier.kind, log, () => latestAnchor(log));
    if (latest === undefined) continue;
    checkReach(verifier.kind, latest.treeSize, { treeSize: latest.treeSize });
    if (tree.root(latest.treeSize).toString('hex') !== latest.rootHash) {
      throw bad(ErrorCodes.AUDIT_ROOT_MISMATCH, `the ${verifier.kind} anchor holds root ${latest.rootHash} for the first ${latest.treeSize} leaves of ${origin}; the log gives another: it was rewritten after it was anchored`, {
        leafIndex: 0, treeSize: latest.treeSize, firstSuspectLeaf: 0, lastSuspectLeaf: latest.treeSize - 1,
      });
    }
    anchoredOutsideSize = Math.max(anchoredOutsideSize, latest.treeSize);
  }

  const last = checkpoints.at(-1);
  onVerified?.(tree);
  return {
    anchors: anchors.length,
    anchorsVerified,
    anchoredSize: anchors.at(-1)?.anchor.tree_size ?? 0,
    anchoredOutsideSize,
    origin,
    leaves: tree.size,
    checkpoints: checkpoints.length,
    rootHash: tree.root().toString('hex'),
    lastCheckpoint: last,
    unsignedLeaves: tree.size - (last?.tree_size ?? 0),
    keyIds: [...keyIds],
  };
}

export interface DecisionVerification {
  readonly decisionId: string;
  readonly tenant: string | undefined;
  readonly origin: string;
  readonly leafIndex: number;
  readonly treeSize: number;
  readonly rootHash: string;
  readonly keyId: string;
  readonly checkpointTime: string;
  /** The checkpoint's anchor record, when the proof carries one (checked against the checkpoint, not yet against its outside system). */
  readonly anchor: AnchorRecordV1 | undefined;
  readonly checkpoint: SignedCheckpointV1;
}

const HEX32 = /^[0-9a-f]{64}$/;

/**
 * Check one decision offline: the checkpoint's signature with a trusted key, then the
 * event's RFC 9162 inclusion in that checkpoint's tree. `decisionId`, when given, must be
 * the event's. Throws ERR_AUDIT_PROOF_INVALID (malformed proof, or one that does not lead to
 * the signed root), ERR_AUDIT_EVENT_MISMATCH, ERR_AUDIT_CHECKPOINT_INVALID,
 * ERR_AUDIT_KEY_UNKNOWN or ERR_AUDIT_SIGNATURE_INVALID.
 */
export function verifyDecisionProof(value: unknown, keyring: Keyring, expect: { decisionId?: string; origin?: string } = {}): DecisionVerification {
  const malformed = (message: string): PavilionError => new PavilionError(ErrorCodes.AUDIT_PROOF_INVALID, `decision proof: ${message}`, { details: { reason: 'malformed' } });
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw malformed('must be a JSON object');
  const proof = value as Partial<Record<keyof DecisionProofV1, unknown>>;
  if (proof.version !== 1) throw malformed('version must be 1');
  if (typeof proof.event !== 'string') throw malformed('event must be the logged event text');
  const index = proof.leaf_index;
  if (typeof index !== 'number' || !Number.isSafeInteger(index) || index < 0) throw malformed('leaf_index must be a non-negative integer');
  const path = proof.inclusion_path;
  if (!Array.isArray(path) || path.some((h) => typeof h !== 'string' || !HEX32.test(h))) throw malformed('inclusion_path must be an array of 32-byte hex hashes');
  const checkpoint = keyring.verifyCheckpoint((() => {
    const cp = proof.checkpoint;
    return decodeCheckpoint(JSON.stringify(cp ?? null));
  })());
  if (expect.origin !== undefined && checkpoint.origin !== expect.origin) {
    throw new PavilionError(ErrorCodes.AUDIT_CHECKPOINT_INVALID, `the checkpoint is of log ${checkpoint.origin}, not ${expect.origin}`, { details: { origin: checkpoint.origin } });
  }
  let event: { decision_id?: unknown; tenant?: unknown };
  try {
    event = JSON.parse(proof.event) as typeof event;
  } catch {
    throw malformed('event is not JSON');
  }
  if (typeof event !== 'object' || event === null || typeof event.decision_id !== 'string') throw malformed('event has no decision_id');
  if (expect.decisionId !== undefined && event.decision_id !== expect.decisionId) {
    throw new PavilionError(ErrorCodes.AUDIT_EVENT_MISMATCH, `the proof is for decision ${event.decision_id}, not ${expect.decisionId}`, { details: { decisionId: event.decision_id, expected: expect.decisionId } });
  }
  verifyInclusion(index, checkpoint.tree_size, hashLeaf(Buffer.from(proof.event, 'utf8')), path.map((h: string) => Buffer.from(h, 'hex')), Buffer.from(checkpoint.root_hash, 'hex'));
  let anchor: AnchorRecordV1 | undefined;
  if (proof.anchor !== undefined) {
    anchor = decodeAnchorRecord(Buffer.from(JSON.stringify(proof.anchor), 'utf8'));
    checkAnchorAgainst(anchor, [checkpoint]);
  }
  return {
    decisionId: event.decision_id,
    tenant: typeof event.tenant === 'string' ? event.tenant : undefined,
    origin: checkpoint.origin,
    leafIndex: index,
    treeSize: checkpoint.tree_size,
    rootHash: checkpoint.root_hash,
    keyId: checkpoint.key_id,
    checkpointTime: checkpoint.timestamp,
    anchor,
    checkpoint,
  };
}

/**
 * Check a verified decision's anchor with the outside system it names. Resolves true when a
 * verifier of its kind confirmed it, false when no verifier was given or the proof has no
 * anchor (nothing outside was consulted); throws ERR_AUDIT_ANCHOR_MISMATCH when verifiers
 * were given but none is of the anchor's kind (it cannot be checked, so it does not pass),
 * ERR_AUDIT_ANCHOR_MISMATCH or ERR_AUDIT_ANCHOR_FAILED when the check fails.
 */
export async function verifyDecisionAnchor(verified: DecisionVerification, anchorVerifiers: readonly AnchorVerifier[]): Promise<boolean> {
  const anchor = verified.anchor;
  if (anchor === undefined) return false;
  if (anchorVerifiers.length === 0) return false;
  const verifier = anchorVerifiers.find((v) => v.kind === anchor.kind);
  if (verifier === undefined) {
    throw uncheckableAnchor(anchor, anchorVerifiers, '', { treeSize: anchor.tree_size });
  }
  try {
    await verifier.verify(anchor, verified.checkpoint);
  } catch (error) {
    const code = isPavilionError(error, ErrorCodes.AUDIT_ANCHOR_FAILED) ? ErrorCodes.AUDIT_ANCHOR_FAILED : ErrorCodes.AUDIT_ANCHOR_MISMATCH;
    throw new PavilionError(code, `the ${anchor.kind} anchor of the checkpoint at tree size ${anchor.tree_size} ${code === ErrorCodes.AUDIT_ANCHOR_FAILED ? 'could not be checked' : 'does not hold'}: ${isPavilionError(error) ? error.message : String(error)}`, {
      details: { treeSize: anchor.tree_size, ...(isPavilionError(error) ? error.details : {}) },
      cause: error,
    });
  }
  return true;
}

/**
 * Build the inclusion proof of a decision from a log file, offline (no running sidecar),
 * against the latest checkpoint in the file that covers it. It proves nothing by itself:
 * check the result with `verifyDecisionProof` and trusted keys. Throws
 * ERR_AUDIT_DECISION_UNKNOWN when the decision is not in the file or no checkpoint covers it
 * yet, ERR_AUDIT_RECORD_CORRUPT when the file cannot be read up to it.
 */

/**
 * Read a log file front to back: check its header, append every leaf to `tree` (in
 * sequence, or fail naming the first break) and hand every intact record to `visit`;
 * stop at the first damaged frame and return it (with `finish`, a cut last frame too).
 */
async function scanLogFile(path: string, tree: MerkleTree, options: { readonly finish: boolean }, visit: (record: LogRecord) => void): Promise<FrameDamage | undefined> {
  const handle = await open(path, 'r').catch((error: unknown) => {
    throw new PavilionError(ErrorCodes.AUDIT_LOG_IO, `cannot open ${path}`, { cause: error });
  });
  try {
    const header = Buffer.alloc(FILE_HEADER_BYTES);
    const { bytesRead: headerBytes } = await handle.read(header, 0, FILE_HEADER_BYTES, 0);
    const problem = checkFileHeader(header.subarray(0, headerBytes));
    if (problem !== undefined) throw bad(ErrorCodes.AUDIT_RECORD_CORRUPT, `${path}: ${problem}`, { byteOffset: 0 });
    const decoder = new FrameDecoder(FILE_HEADER_BYTES);
    const chunk = Buffer.alloc(READ_CHUNK_BYTES);
    let position = FILE_HEADER_BYTES;
    for (;;) {
      const { bytesRead } = await handle.read(chunk, 0, READ_CHUNK_BYTES, position);
      if (bytesRead === 0) break;
      position += bytesRead;
      for (const record of decoder.push(Buffer.from(chunk.subarray(0, bytesRead)))) {
        if (record.type === RecordType.LEAF) {
          if (record.index !== tree.size) throw bad(ErrorCodes.AUDIT_SEQUENCE_BROKEN, `record ${record.recordNumber} is leaf ${record.index}, expected ${tree.size}`, { leafIndex: tree.size, byteOffset: record.offset });
          tree.append(record.payload);
        }
        visit(record);
      }
      if (decoder.damage !== undefined) break;
    }
    return options.finish ? decoder.finish() : decoder.damage;
  } finally {
    await handle.close();
  }
}

/**
 * `sealed`: the file is a sealed (archived) epoch, complete by construction: a file that ends
 * inside a frame, or a decision no checkpoint covers, is damage there, not a tail in progress.
 */
export async function proveFromLogFile(path: string, decisionId: string, options: { readonly sealed?: boolean } = {}): Promise<DecisionProofV1> {
  const tree = new MerkleTree();
  let found: { index: number; event: string } | undefined;
  let covering: SignedCheckpointV1 | undefined;
  let anchored: { checkpoint: SignedCheckpointV1; anchor: AnchorRecordV1 } | undefined;
  const damage = await scanLogFile(path, tree, { finish: true }, (record) => {
    if (record.type === RecordType.LEAF) {
      if (found !== undefined) return;
      if (decisionIdOf(record.payload) === decisionId) found = { index: record.index, event: record.payload.toString('utf8') };
    } else if (record.type === RecordType.CHECKPOINT && found !== undefined) {
      const checkpoint = decodeCheckpoint(record.payload);
      if (checkpoint.tree_size > found.index && checkpoint.tree_size <= tree.size) covering = checkpoint;
    } else if (record.type === RecordType.ANCHOR && covering !== undefined) {
      const anchor = decodeAnchorRecord(record.payload);
      if (anchor.tree_size === covering.tree_size && anchor.root_hash === covering.root_hash) anchored = { checkpoint: covering, anchor };
    }
  });
  // Damage inside the file ends the read: what lies beyond it (the decision, or the checkpoint
  // that covers it) cannot be seen, which is not the same as not being there. A file that ends
  // inside a frame (a tail being written, or torn by a crash) has nothing beyond. A decision
  // proved before the damage stands: its proof is checked against a signed checkpoint.
  const tail = damage?.reason === 'short_header' || damage?.reason === 'short_frame';
  const inside = options.sealed === true || !tail ? damage : undefined;
  if (inside !== undefined && (found === undefined || covering === undefined)) {
    throw bad(ErrorCodes.AUDIT_RECORD_CORRUPT, `${path}: record ${inside.recordNumber} at byte ${inside.offset} is damaged (${inside.reason}), and the file cannot be read past it to ${found === undefined ? `find decision ${JSON.stringify(decisionId)}` : `a checkpoint covering leaf ${found.index}`}; verify-log reports the whole file`, {
      leafIndex: tree.size, recordNumber: inside.recordNumber, byteOffset: inside.offset, reason: inside.reason, decisionId,
    });
  }
  if (found === undefined) throw new PavilionError(ErrorCodes.AUDIT_DECISION_UNKNOWN, `decision ${JSON.stringify(decisionId)} is not in ${path}`, { details: { decisionId } });
  if (covering === undefined && options.sealed === true) {
    throw bad(ErrorCodes.AUDIT_RECORD_CORRUPT, `${path}: decision ${JSON.stringify(decisionId)} is leaf ${found.index} of a sealed epoch, yet no checkpoint covers it: the file lost its final checkpoint`, { leafIndex: found.index, decisionId });
  }
  if (covering === undefined) {
    throw new PavilionError(ErrorCodes.AUDIT_DECISION_UNKNOWN, `decision ${JSON.stringify(decisionId)} is leaf ${found.index}, but no checkpoint in ${path} covers it yet`, { details: { decisionId, leafIndex: found.index } });
  }
  // The latest covering checkpoint that is anchored, so the proof can be checked outside too.
  const chosen = anchored?.checkpoint ?? covering;
  return {
    version: 1,
    event: found.event,
    leaf_index: found.index,
    inclusion_path: tree.inclusionProof(found.index, chosen.tree_size).map((h) => h.toString('hex')),
    checkpoint: chosen,
    ...(anchored === undefined ? {} : { anchor: anchored.anchor }),
  };
}

export interface ConsistencyProofV1 {
  readonly version: 1;
  readonly old_checkpoint: SignedCheckpointV1;
  readonly new_checkpoint: SignedCheckpointV1;
  /** RFC 9162 section 2.1.4 consistency path, hex. */
  readonly consistency_path: readonly string[];
}

export interface ConsistencyVerification {
  readonly origin: string;
  readonly oldSize: number;
  readonly newSize: number;
  readonly oldRootHash: string;
  readonly newRootHash: string;
}

/**
 * Check offline that a log only grew between two of its checkpoints: both signatures with
 * trusted keys, the same origin, and the RFC 9162 consistency proof between their roots. What
 * a witness or an auditor holding an older checkpoint runs against a newer one. Throws
 * ERR_AUDIT_PROOF_INVALID, ERR_AUDIT_CHECKPOINT_INVALID (also: not of `expect.origin`),
 * ERR_AUDIT_KEY_UNKNOWN, ERR_AUDIT_SIGNATURE_INVALID, ERR_AUDIT_MERKLE_RANGE, or
 * ERR_AUDIT_ROOT_MISMATCH when the older checkpoint is not `expect.old`.
 */
export function verifyConsistencyProof(value: unknown, keyring: Keyring, expect: { readonly origin?: string; readonly old?: SignedCheckpointV1 } = {}): ConsistencyVerification {
  const malformed = (message: string): PavilionError => new PavilionError(ErrorCodes.AUDIT_PROOF_INVALID, `consistency proof: ${message}`, { details: { reason: 'malformed' } });
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw malformed('must be a JSON object');
  const proof = value as Partial<Record<keyof ConsistencyProofV1, unknown>>;
  if (proof.version !== 1) throw malformed('version must be 1');
  const path = proof.consistency_path;
  if (!Array.isArray(path) || path.some((h) => typeof h !== 'string' || !HEX32.test(h))) throw malformed('consistency_path must be an array of 32-byte hex hashes');
  const older = keyring.verifyCheckpoint(decodeCheckpoint(JSON.stringify(proof.old_checkpoint ?? null)));
  const newer = keyring.verifyCheckpoint(decodeCheckpoint(JSON.stringify(proof.new_checkpoint ?? null)));
  if (older.origin !== newer.origin) {
    throw new PavilionError(ErrorCodes.AUDIT_CHECKPOINT_INVALID, `the checkpoints are of different logs (${older.origin}, ${newer.origin})`, { details: { origin: older.origin } });
  }
  // Pinned by the caller: the proof must start from the checkpoint the caller kept, of the log
  // it asked about; a validly signed other checkpoint (a fork, another tenant's log under the
  // same key) would otherwise prove consistency with something the caller never held.
  if (expect.origin !== undefined && older.origin !== expect.origin) {
    throw new PavilionError(ErrorCodes.AUDIT_CHECKPOINT_INVALID, `the proof is of log ${older.origin}, not ${expect.origin}`, { details: { origin: older.origin, expected: expect.origin } });
  }
  if (expect.old !== undefined && (expect.old.origin !== older.origin || expect.old.tree_size !== older.tree_size || expect.old.root_hash !== older.root_hash)) {
    throw new PavilionError(ErrorCodes.AUDIT_ROOT_MISMATCH, `the proof starts from ${older.origin} at tree size ${older.tree_size} (root ${older.root_hash}), not from the checkpoint kept (${expect.old.origin} at ${expect.old.tree_size}, root ${expect.old.root_hash})`, {
      details: { treeSize: older.tree_size, keptTreeSize: expect.old.tree_size, keptRootHash: expect.old.root_hash, rootHash: older.root_hash },
    });
  }
  verifyConsistency(older.tree_size, newer.tree_size, Buffer.from(older.root_hash, 'hex'), Buffer.from(newer.root_hash, 'hex'), path.map((h: string) => Buffer.from(h, 'hex')));
  return { origin: older.origin, oldSize: older.tree_size, newSize: newer.tree_size, oldRootHash: older.root_hash, newRootHash: newer.root_hash };
}

/**
 * Build the consistency proof between a checkpoint the caller holds (`old`, which must be
 * one of this file's or at least agree with it) and the file's latest checkpoint, offline.
 * Throws ERR_AUDIT_LOG_TRUNCATED when the file no longer reaches `old`, and
 * ERR_AUDIT_ROOT_MISMATCH when its leaves do not give `old`'s root.
 */
export async function proveConsistencyFromLogFile(path: string, old: SignedCheckpointV1): Promise<ConsistencyProofV1> {
  const tree = new MerkleTree();
  let latest: SignedCheckpointV1 | undefined;
  await scanLogFile(path, tree, { finish: false }, (record) => {
    if (record.type === RecordType.CHECKPOINT) latest = decodeCheckpoint(record.payload);
  });
  if (latest === undefined) throw new PavilionError(ErrorCodes.AUDIT_DECISION_UNKNOWN, `${path} has no checkpoint yet`);
  if (old.tree_size > latest.tree_size) {
    throw bad(ErrorCodes.AUDIT_LOG_TRUNCATED, `the log's latest checkpoint covers ${latest.tree_size} leaves, fewer than the ${old.tree_size} of the one given`, { leafIndex: latest.tree_size, treeSize: old.tree_size });
  }
  if (tree.root(old.tree_size).toString('hex') !== old.root_hash) {
    throw bad(ErrorCodes.AUDIT_ROOT_MISMATCH, `the log's first ${old.tree_size} leaves do not give the given checkpoint's root`, { leafIndex: 0, treeSize: old.tree_size, firstSuspectLeaf: 0, lastSuspectLeaf: old.tree_size - 1 });
  }
  return {
    version: 1,
    old_checkpoint: old,
    new_checkpoint: latest,
    consistency_path: tree.consistencyProof(old.tree_size, latest.tree_size).map((h) => h.toString('hex')),
  };
}

/*
 * Epochs. A tenant's log is rotated into sealed epochs (as Certificate Transparency shards its
 * logs in time), each its own log and tree under its own origin: epoch 0 is `<labels.id>/<tenant>`
 * (the log as it always was), epoch N `<labels.id>/<tenant>/e<N>`. Epoch N's first leaf is an
 * epoch link, a decision-event-shaped leaf whose `result` names the seal of epoch N-1: its
 * origin, final tree size, root and the SHA-256 of its final signed checkpoint. So the chain
 * of epochs is as tamper-evident as one log: an archived epoch replaced, cut or re-signed no
 * longer matches the link after it, and the link itself is covered by the next epoch's
 * signed checkpoints. A leaf rather than a record type of its own, so that every reader of
 * leaves (proofs, the forwarder, consumers of the stream) handles it unchanged; its decision
 * id and path are reserved, so consumers can tell it from a decision.
 */

/** Decision ids of epoch links: `epoch-link:<origin of the epoch it opens>` (a decision's id is a random UUID). */
export const EPOCH_LINK_ID_PREFIX = 'epoch-link:';
/** The `path` of an epoch link event. */
export const EPOCH_LINK_PATH = 'pavilion/audit/epoch_link';

/** What sealed an epoch: its final signed checkpoint, which covers every leaf of it. */
export interface EpochSealV1 {
  readonly epoch: number;
  readonly origin: string;
  readonly tree_size: number;
  readonly root_hash: string;
  /** SHA-256 of the final checkpoint's canonical JSON (keys sorted, no whitespace), hex. */
  readonly checkpoint_sha256: string;
}

/** The `result` of an epoch's first leaf: the epoch it opens and the seal of the one before. */
export interface EpochLinkV1 {
  readonly version: 1;
  readonly epoch: number;
  readonly previous: EpochSealV1;
}

/** The origin of epoch `epoch` of the log whose epoch 0 is `base`. */
export function epochOrigin(base: string, epoch: number): string {
  return epoch === 0 ? base : `${base}/e${epoch}`;
}

/** SHA-256 of a checkpoint's canonical JSON, hex: independent of how its JSON was laid out. */
export function checkpointSha256(checkpoint: SignedCheckpointV1): string {
  return hash('sha256', canonicalJson(checkpoint), 'hex');
}

export function epochSeal(epoch: number, final: SignedCheckpointV1): EpochSealV1 {
  return { epoch, origin: final.origin, tree_size: final.tree_size, root_hash: final.root_hash, checkpoint_sha256: checkpointSha256(final) };
}

/** The decision event that is the first leaf of the epoch `link` opens, whose origin is `origin`. */
export function epochLinkEvent(link: EpochLinkV1, tenant: string, origin: string, timestamp: string): DecisionEventV1 {
  return {
    labels: {},
    decision_id: `${EPOCH_LINK_ID_PREFIX}${origin}`,
    tenant,
    bundles: {},
    path: EPOCH_LINK_PATH,
    result: link,
    requested_by: 'pavilion',
    timestamp,
    metrics: {},
    req_id: 0,
  };
}

const isCount = (value: unknown): value is number => typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;

/** The epoch link a leaf holds, or undefined when the leaf is not one (or not a well-formed one). */
export function parseEpochLink(payload: Buffer): EpochLinkV1 | undefined {
  let event: { decision_id?: unknown; path?: unknown; result?: unknown };
  try {
    event = JSON.parse(payload.toString('utf8')) as typeof event;
  } catch {
    return undefined;
  }
  if (typeof event !== 'object' || event === null || event.path !== EPOCH_LINK_PATH) return undefined;
  if (typeof event.decision_id !== 'string' || !event.decision_id.startsWith(EPOCH_LINK_ID_PREFIX)) return undefined;
  const link = event.result as Partial<EpochLinkV1> | null | undefined;
  const previous = link?.previous as Partial<EpochSealV1> | undefined;
  if (link?.version !== 1 || !isCount(link.epoch) || previous === undefined || !isCount(previous.epoch) || !isCount(previous.tree_size)) return undefined;
  if (typeof previous.origin !== 'string' || !HEX32.test(String(previous.root_hash)) || !HEX32.test(String(previous.checkpoint_sha256))) return undefined;
  return {
    version: 1,
    epoch: link.epoch,
    previous: { epoch: previous.epoch, origin: previous.origin, tree_size: previous.tree_size, root_hash: String(previous.root_hash), checkpoint_sha256: String(previous.checkpoint_sha256) },
  };
}

/** The epoch numbers archived in a tenant's archive directory (`<n>/`), ascending; none when it does not exist. */
export async function listArchivedEpochs(archiveDirectory: string): Promise<number[]> {
  let names: string[];
  try {
    names = await readdir(archiveDirectory);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new PavilionError(ErrorCodes.AUDIT_LOG_IO, `cannot read ${archiveDirectory}`, { cause: error });
  }
  return names.filter((name) => /^(0|[1-9][0-9]{0,8})$/.test(name)).map(Number).sort((a, b) => a - b);
}

export interface EpochVerification extends LogVerification {
  readonly epoch: number;
  readonly path: string;
  /**
   * The epoch's decisions were removed by retention (its PRUNED record): its final checkpoint
   * and its link were checked, not its leaves, and its anchors cannot be.
   */
  readonly pruned?: true;
}

/** In an archived epoch's directory once retention removed its log file: what stays of it (PrunedEpochV1). */
export const PRUNED_FILE = 'PRUNED';

/**
 * What stays of an archived epoch whose decisions retention removed: its final signed
 * checkpoint (which its seal, and the next epoch's link, name by hash) and, for epoch N > 0,
 * its first leaf (the link to epoch N-1) with that leaf's RFC 9162 inclusion path under the
 * final checkpoint. So the chain of epochs still verifies across it, link by link, with the
 * same keys; what it no longer proves is any decision of its own.
 */
export interface PrunedEpochV1 {
  readonly version: 1;
  readonly epoch: number;
  readonly pruned_at: string;
  readonly final_checkpoint: SignedCheckpointV1;
  /** Epoch N > 0: its first leaf as logged (canonical JSON of the epoch link event). */
  readonly first_leaf?: string;
  /** Epoch N > 0: the inclusion path of leaf 0 in the final checkpoint's tree, bottom-up, hex. */
  readonly first_leaf_inclusion_path?: readonly string[];
  /** Bytes of the files removed. */
  readonly removed_bytes: number;
  /** Whether JetStream had acknowledged every leaf of it (its seal's `streamed`). */
  readonly streamed: boolean;
}

/** What a PRUNED record says beside the verified log: when, how many bytes go, whether JetStream held them. */
export interface PrunedEpochFacts {
  readonly prunedAt: string;
  readonly removedBytes: number;
  readonly streamed: boolean;
}

/**
 * Verify a sealed epoch's log file in full (as verifyLogFile, under `origin`) and return
 * what a PrunedEpochV1 keeps of it: nothing is removed that does not verify first. Throws
 * as verifyLogFile does, or ERR_AUDIT_EPOCH_LINK_BROKEN when the epoch is not sealed (leaves
 * past its last checkpoint) or epoch N > 0 does not open with a link.
 */
export async function prunedEpochRecord(path: string, epoch: number, keyring: Keyring, origin: string, facts: PrunedEpochFacts): Promise<PrunedEpochV1> {
  let first: Buffer | undefined;
  let tree: MerkleTree | undefined;
  const verified = await verifyLog(path, keyring, { origin }, (payload) => {
    first = payload;
  }, (recomputed) => {
    tree = recomputed;
  });
  const final = verified.lastCheckpoint;
  if (final === undefined || verified.unsignedLeaves > 0) {
    throw linkBroken(epoch, path, `epoch ${epoch} is not sealed: its last checkpoint covers ${final?.tree_size ?? 0} of its ${verified.leaves} leaves`, { field: 'tree_size' });
  }
  const record = { version: 1 as const, epoch, pruned_at: facts.prunedAt, final_checkpoint: final, removed_bytes: facts.removedBytes, streamed: facts.streamed };
  if (epoch === 0) return record;
  if (first === undefined || parseEpochLink(first)?.epoch !== epoch) throw linkBroken(epoch, path, 'its first leaf is not an epoch link', { field: 'link' });
  return {
    ...record,
    first_leaf: first.toString('utf8'),
    // the tree verification recomputed (one pass over the file)
    first_leaf_inclusion_path: (tree as MerkleTree).inclusionProof(0, final.tree_size).map((h) => h.toString('hex')),
  };
}

/**
 * A pruned epoch as verifyEpochs checks it: its final checkpoint well-formed, of `origin`
 * when known and signed by a trusted key, and (epoch N > 0) its first leaf included at index
 * 0 under it; that leaf goes to the link check like a first leaf read from a file.
 */
async function verifyPrunedEpoch(file: string, epoch: number, keyring: Keyring, origin: string | undefined): Promise<{ verification: LogVerification; first: Buffer | undefined; final: SignedCheckpointV1 }> {
  let record: PrunedEpochV1;
  try {
    record = JSON.parse(await readFile(file, 'utf8')) as PrunedEpochV1;
  } catch (error) {
    throw linkBroken(epoch, file, `its ${PRUNED_FILE} record cannot be read: ${(error as Error).message}`, { field: 'pruned' });
  }
  if (record === null || typeof record !== 'object' || record.version !== 1 || record.epoch !== epoch) {
    throw linkBroken(epoch, file, `its ${PRUNED_FILE} record is not a version 1 record of epoch ${epoch}`, { field: 'pruned' });
  }
  const final = keyring.verifyCheckpoint(parseCheckpoint(record.final_checkpoint));
  if (origin !== undefined && final.origin !== origin) {
    throw bad(ErrorCodes.AUDIT_CHECKPOINT_INVALID, `${file}: the final checkpoint is of log ${final.origin}, not ${origin}`, { epoch, origin: final.origin, expected: origin });
  }
  let first: Buffer | undefined;
  if (epoch > 0) {
    const path = record.first_leaf_inclusion_path;
    if (typeof record.first_leaf !== 'string' || !Array.isArray(path) || !path.every((h) => typeof h === 'string' && /^[0-9a-f]{64}$/.test(h))) {
      throw linkBroken(epoch, file, `its ${PRUNED_FILE} record has no first leaf with an inclusion path`, { field: 'link' });
    }
    first = Buffer.from(record.first_leaf, 'utf8');
    try {
      verifyInclusion(0, final.tree_size, hashLeaf(first), path.map((h) => Buffer.from(h, 'hex')), Buffer.from(final.root_hash, 'hex'));
    } catch (error) {
      throw linkBroken(epoch, file, `its first leaf is not leaf 0 of its final checkpoint's tree: ${(error as Error).message}`, { field: 'link' });
    }
  }
  return {
    first,
    final,
    verification: {
      anchors: 0, anchorsVerified: 0, anchoredSize: 0, anchoredOutsideSize: 0,
      origin: final.origin, leaves: final.tree_size, checkpoints: 1, rootHash: final.root_hash,
      lastCheckpoint: final, unsignedLeaves: 0, keyIds: [final.key_id],
    },
  };
}

/** What an outside system holds for `origin`, or ERR_AUDIT_ANCHOR_FAILED when it cannot be asked. */
async function readAnchors<T>(kind: string, origin: string, read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (error) {
    throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_FAILED, `the ${kind} anchors of ${origin} could not be read: ${isPavilionError(error) ? error.message : String(error)}`, { cause: error });
  }
}

/** Every anchor `verifier`'s outside system holds for `origin` that it can list, and its latest. */
async function heldBy(verifier: NonNullable<VerifyLogOptions['anchorVerifiers']>[number], origin: string): Promise<OutsideAnchor[]> {
  const held: OutsideAnchor[] = [];
  const { anchorsOf, latestAnchor } = verifier;
  if (anchorsOf !== undefined) held.push(...await readAnchors(verifier.kind, origin, () => anchorsOf.call(verifier, origin)));
  if (latestAnchor !== undefined) {
    const latest = await readAnchors(verifier.kind, origin, () => latestAnchor.call(verifier, origin));
    if (latest !== undefined) held.push(latest);
  }
  return held;
}

/**
 * A pruned epoch against what the outside systems hold for its origin: nothing anchored past
 * its final checkpoint (a PRUNED record written over a cut epoch, naming an earlier
 * checkpoint as final, fails here), and an anchor at the final size must hold its root and
 * signature. Anchors below it cannot be checked any more: their leaves are gone. Returns the
 * largest anchored size seen.
 */
async function checkPrunedAgainstAnchors(final: SignedCheckpointV1, epoch: number, path: string, verifiers: VerifyLogOptions['anchorVerifiers']): Promise<number> {
  const origin = final.origin;
  let largest = 0;
  for (const verifier of verifiers ?? []) {
    for (const outside of await heldBy(verifier, origin)) {
      const at = { ...outside.where, epoch, path, pruned: true, treeSize: outside.treeSize };
      if (outside.treeSize > final.tree_size) {
        throw bad(ErrorCodes.AUDIT_LOG_TRUNCATED, `the ${verifier.kind} anchor holds tree size ${outside.treeSize} of ${origin}, but pruned epoch ${epoch} keeps a final checkpoint at ${final.tree_size}: the epoch was cut before its PRUNED record was written, or the record names an earlier checkpoint`, { ...at, leafIndex: final.tree_size });
      }
      if (outside.treeSize === final.tree_size) {
        if (outside.rootHash !== final.root_hash) {
          throw bad(ErrorCodes.AUDIT_ROOT_MISMATCH, `the ${verifier.kind} anchor holds root ${outside.rootHash} for tree size ${final.tree_size} of ${origin}; pruned epoch ${epoch}'s final checkpoint names ${final.root_hash}`, at);
        }
        const sig = outside.checkpointSigSha256;
        if (sig !== undefined && checkpointSignatureSha256(final) !== sig) {
          throw bad(ErrorCodes.AUDIT_ANCHOR_MISMATCH, `the ${verifier.kind} anchor at tree size ${final.tree_size} of ${origin} holds signature hash ${sig}, which pruned epoch ${epoch}'s final checkpoint does not have: it was re-signed`, at);
        }
      }
      largest = Math.max(largest, outside.treeSize);
    }
  }
  return largest;
}

/**
 * With a live log and anchor checks: nothing may be anchored for the epoch after it, or the
 * log given is not the newest (later epochs removed, or an old copy of the live log).
 */
async function checkNothingAnchoredAfter(base: string, epoch: number, verifiers: VerifyLogOptions['anchorVerifiers']): Promise<void> {
  const next = epochOrigin(base, epoch + 1);
  for (const verifier of verifiers ?? []) {
    const found = (await heldBy(verifier, next))[0];
    if (found !== undefined) {
      throw new PavilionError(ErrorCodes.AUDIT_LOG_TRUNCATED, `the ${verifier.kind} anchors hold ${next} (tree size ${found.treeSize}), an epoch after the live log given (epoch ${epoch}): later epochs were removed, or the live log is an old copy`, {
        details: { ...found.where, epoch: epoch + 1, origin: next, treeSize: found.treeSize },
      });
    }
  }
}

export interface EpochsVerification {
  /** Oldest first; the live log last when one was given. */
  readonly epochs: readonly EpochVerification[];
  /** Links checked against the epoch before them (the oldest epoch present has none before it to check). */
  readonly linksChecked: number;
}

function linkBroken(epoch: number, path: string, why: string, details: Record<string, unknown> = {}): PavilionError {
  return new PavilionError(ErrorCodes.AUDIT_EPOCH_LINK_BROKEN, `epoch ${epoch} (${path}): ${why}`, { details: { epoch, previousEpoch: epoch - 1, path, ...details } });
}

/** Epoch `epoch`'s link (its first leaf) against the verified epoch before it. Throws ERR_AUDIT_EPOCH_LINK_BROKEN. */
function checkLink(epoch: number, path: string, first: Buffer | undefined, previous: EpochVerification): void {
  if (previous.epoch !== epoch - 1) throw linkBroken(epoch, path, `it follows epoch ${previous.epoch}: epoch ${epoch - 1} is missing`, { field: 'epoch' });
  const final = previous.lastCheckpoint;
  if (final === undefined || previous.unsignedLeaves > 0) {
    throw linkBroken(epoch, path, `epoch ${previous.epoch} was not sealed: its last checkpoint covers ${final?.tree_size ?? 0} of its ${previous.leaves} leaves`, { field: 'tree_size' });
  }
  const link = first === undefined ? undefined : parseEpochLink(first);
  if (link === undefined) throw linkBroken(epoch, path, 'its first leaf is not an epoch link', { field: 'link' });
  if (link.epoch !== epoch) throw linkBroken(epoch, path, `its link opens epoch ${link.epoch}`, { field: 'epoch', expected: epoch, found: link.epoch });
  const expected = epochSeal(previous.epoch, final);
  for (const field of ['epoch', 'origin', 'tree_size', 'root_hash', 'checkpoint_sha256'] as const) {
    if (link.previous[field] !== expected[field]) {
      throw linkBroken(epoch, path, `its link names ${field} ${String(link.previous[field])} for epoch ${previous.epoch}, whose final checkpoint gives ${String(expected[field])}: epoch ${previous.epoch} was replaced, cut or re-signed since it was sealed, or the link was forged`, {
        field, expected: expected[field], found: link.previous[field],
      });
    }
  }
}

/**
 * Verify a tenant's archived epochs (`<archiveDirectory>/<n>/audit.wal`, oldest first) and
 * then, when given, its live log (the epoch after the last archived one): each as
 * verifyLogFile does, under its epoch's origin (`options.origin` names epoch 0's; without it
 * the oldest epoch's checkpoints name it), and each epoch's link against the epoch before it:
 * that epoch's final checkpoint must cover all of it, and the link must name exactly its
 * number, origin, size, root and final checkpoint hash. Throws the first failure in epoch
 * order: an epoch's own (as verifyLogFile), or ERR_AUDIT_EPOCH_LINK_BROKEN naming the first
 * epoch whose link does not hold, is missing, or follows a missing epoch. An epoch pruned by
 * retention (a PRUNED record in its directory) is checked by what it keeps (verifyPrunedEpoch);
 * a trusted checkpoint of it other than its final one cannot be checked (ERR_AUDIT_LOG_TRUNCATED).
 */
export async function verifyEpochs(archiveDirectory: string, liveLog: string | undefined, keyring: Keyring, options: VerifyLogOptions = {}): Promise<EpochsVerification> {
  const archived = await listArchivedEpochs(archiveDirectory);
  if (archived.length === 0) throw new PavilionError(ErrorCodes.AUDIT_LOG_IO, `${archiveDirectory} holds no archived epoch (<n>/${WAL_FILE})`);
  if ((options.trustedCheckpoints?.length ?? 0) > 0 && options.origin === undefined) {
    throw new PavilionError(ErrorCodes.AUDIT_CHECKPOINT_UNKNOWN, 'trusted checkpoints of a rotated log need its origin (epoch 0\'s): without it a checkpoint whose epoch is missing could not be told from one of another log');
  }
  const anchorsAsked = (options.anchorVerifiers?.length ?? 0) > 0;
  if (anchorsAsked && options.origin === undefined) {
    throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_CONFIG, 'anchor checks of a rotated log need its origin (epoch 0\'s): the logs to ask about are never taken from the files themselves');
  }
  /** Epoch 0's origin when anchors are to be checked (never taken from the files). */
  const anchorBase = anchorsAsked ? options.origin : undefined;
  // retention keeps a PRUNED record in a pruned epoch's directory: an archive that does not start at 0 lost its oldest epochs
  if (archived[0] !== 0) {
    throw linkBroken(archived[0] as number, join(archiveDirectory, String(archived[0])), `the archive starts at epoch ${archived[0]}: epochs 0 to ${(archived[0] as number) - 1} are missing`, { field: 'epoch' });
  }
  const files = await Promise.all(archived.map(async (epoch) => {
    // pruned: a record and no log (a log beside a record, pruning cut short, is verified itself)
    const pruned = join(archiveDirectory, String(epoch), PRUNED_FILE);
    const wal = join(archiveDirectory, String(epoch), WAL_FILE);
    return (await pathExists(pruned)) && !(await pathExists(wal)) ? { epoch, path: pruned, pruned: true } : { epoch, path: wal, pruned: false };
  }));
  if (liveLog !== undefined) {
    // the epoch its link names (so an archived epoch missing at the end is named as missing)
    const first = await firstLeafOf(liveLog);
    files.push({ epoch: (first === undefined ? undefined : parseEpochLink(first))?.epoch ?? archived.at(-1)! + 1, path: liveLog, pruned: false });
    // asked first, not after the (possibly long) verification: a sidecar rotating meanwhile is not a stale copy
    if (anchorBase !== undefined) await checkNothingAnchoredAfter(anchorBase, files.at(-1)!.epoch, options.anchorVerifiers);
  }
  let base = options.origin;
  const epochs: EpochVerification[] = [];
  let linksChecked = 0;
  for (const { epoch, path, pruned } of files) {
    const origin = base === undefined ? undefined : epochOrigin(base, epoch);
    const trustedCheckpoints = options.trustedCheckpoints?.filter((c) => c.origin === origin);
    let first: Buffer | undefined;
    let verified: LogVerification;
    if (pruned) {
      let final: SignedCheckpointV1;
      ({ verification: verified, first, final } = await verifyPrunedEpoch(path, epoch, keyring, origin));
      if (anchorBase !== undefined) verified = { ...verified, anchoredOutsideSize: await checkPrunedAgainstAnchors(final, epoch, path, options.anchorVerifiers) };
      // only its final checkpoint is left to hold a trusted one against (each signed, as verifyLog requires)
      for (const trusted of trustedCheckpoints ?? []) keyring.verifyCheckpoint(trusted);
      const forked = trustedCheckpoints?.find((c) => c.tree_size === verified.leaves && c.root_hash !== verified.rootHash);
      if (forked !== undefined) {
        throw bad(ErrorCodes.AUDIT_ROOT_MISMATCH, `a trusted checkpoint of ${forked.origin} at tree size ${forked.tree_size} names root ${forked.root_hash}; pruned epoch ${epoch}'s final checkpoint at that size names ${verified.rootHash}: two roots for one tree (a fork)`, {
          epoch, path, origin: forked.origin, treeSize: forked.tree_size, pruned: true, forked: true,
        });
      }
      const unchecked = trustedCheckpoints?.find((c) => c.tree_size !== verified.leaves);
      if (unchecked !== undefined) {
        throw bad(ErrorCodes.AUDIT_LOG_TRUNCATED, `a trusted checkpoint of ${unchecked.origin} (tree size ${unchecked.tree_size}) cannot be checked: epoch ${epoch} was pruned and only its final checkpoint (tree size ${verified.leaves}) is kept`, {
          epoch, path, origin: unchecked.origin, treeSize: unchecked.tree_size, pruned: true,
        });
      }
    } else {
      verified = await verifyLog(path, keyring, {
        ...options,
        ...(origin === undefined ? {} : { origin }),
        ...(trustedCheckpoints === undefined ? {} : { trustedCheckpoints }),
      }, (payload) => {
        first = payload;
      });
    }
    if (base === undefined) base = baseOrigin(verified.origin, epoch, path);
    const previous = epochs.at(-1);
    if (previous !== undefined) {
      checkLink(epoch, path, first, previous);
      linksChecked++;
    }
    epochs.push({ ...verified, epoch, path, ...(pruned ? { pruned: true as const } : {}) });
  }
  const last = epochs.at(-1) as EpochVerification;
  if (liveLog === undefined && (last.lastCheckpoint === undefined || last.unsignedLeaves > 0)) {
    // an archived epoch was sealed: leaves past its final checkpoint were added after
    throw linkBroken(last.epoch, last.path, `archived epoch ${last.epoch} is not sealed: its last checkpoint covers ${last.lastCheckpoint?.tree_size ?? 0} of its ${last.leaves} leaves`, { field: 'tree_size' });
  }
  // a trusted checkpoint names its epoch by origin: one that matches none present means the archive lost that epoch
  const present = new Set(epochs.map((e) => e.origin));
  const orphan = options.trustedCheckpoints?.find((c) => !present.has(c.origin));
  if (orphan !== undefined) {
    throw new PavilionError(ErrorCodes.AUDIT_LOG_TRUNCATED, `a trusted checkpoint of ${orphan.origin} (tree size ${orphan.tree_size}) matches no epoch present: that epoch is missing`, { details: { origin: orphan.origin, treeSize: orphan.tree_size } });
  }
  return { epochs, linksChecked };
}

/** No link is larger (a damaged length field must not make the verifier allocate gigabytes). */
const MAX_LINK_BYTES = 64 * 1024;

/** The payload of a log file's first record when it is an intact leaf (else undefined: verification says why). */
async function firstLeafOf(path: string): Promise<Buffer | undefined> {
  const handle = await open(path, 'r').catch((error: unknown) => {
    throw new PavilionError(ErrorCodes.AUDIT_LOG_IO, `cannot open ${path}`, { cause: error });
  });
  try {
    const head = Buffer.alloc(FRAME_OVERHEAD_BYTES);
    const { bytesRead } = await handle.read(head, 0, head.length, FILE_HEADER_BYTES);
    const length = head.readUInt32BE(0);
    if (bytesRead < head.length || length > MAX_LINK_BYTES) return undefined;
    const frame = Buffer.alloc(FRAME_OVERHEAD_BYTES + length);
    const read = await handle.read(frame, 0, frame.length, FILE_HEADER_BYTES);
    const [record] = new FrameDecoder(FILE_HEADER_BYTES).push(frame.subarray(0, read.bytesRead));
    return record?.type === RecordType.LEAF ? record.payload : undefined;
  } finally {
    await handle.close();
  }
}

/** Epoch 0's origin, from the origin of the oldest epoch present (`<base>/e<n>` for n > 0). */
function baseOrigin(origin: string | undefined, epoch: number, path: string): string {
  const suffix = `/e${epoch}`;
  if (origin === undefined) throw linkBroken(epoch, path, 'it has no signed checkpoint, so nothing names its log');
  if (epoch === 0) return origin;
  if (!origin.endsWith(suffix)) throw linkBroken(epoch, path, `its checkpoints are of log ${origin}, not of an epoch ${epoch} (<origin>${suffix})`, { field: 'origin' });
  return origin.slice(0, -suffix.length);
}
