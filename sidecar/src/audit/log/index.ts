/** The audit log: a per-tenant write-ahead log, Merkle tree, signed checkpoints, verification. */
export {
  AuditLog,
  LOCK_FILE,
  WAL_FILE,
  takeAuditLock,
  type AuditLogOptions,
  type DecisionProofV1,
  type DecisionReceiptV1,
  type RecoveryReport,
  type TornTailReport,
} from './audit-log.ts';
export { CHECKPOINT_ALGORITHM, checkpointMessage, decodeCheckpoint, parseCheckpoint, type SignedCheckpointV1 } from './checkpoint.ts';
export { decisionIdOf, encodeEvent } from './event-encoding.ts';
export { FILE_HEADER_BYTES, FRAME_OVERHEAD_BYTES, FrameDecoder, RecordType, encodeFrame, fileHeader } from './record-format.ts';
export { Keyring, keyIdOf, publicKeyPem, type CheckpointSigner } from './signer.ts';
export { SoftwareSigner } from './software-signer.ts';
export { proveFromLogFileOnThread, prunedEpochRecordOnThread } from './log-file-thread.ts';
export {
  proveConsistencyFromLogFile,
  proveFromLogFile,
  verifyConsistencyProof,
  verifyDecisionAnchor,
  verifyDecisionProof,
  verifyLogFile,
  epochLinkEvent,
  epochOrigin,
  epochSeal,
  listArchivedEpochs,
  parseEpochLink,
  prunedEpochRecord,
  verifyEpochs,
  PRUNED_FILE,
  type ConsistencyProofV1,
  type ConsistencyVerification,
  type DecisionVerification,
  type EpochLinkV1,
  type EpochSealV1,
  type EpochVerification,
  type EpochsVerification,
  type PrunedEpochV1,
  type LogVerification,
  type VerifyLogOptions,
} from './verify-log.ts';
export type { FsyncPolicy, OnFullPolicy } from './wal-writer.ts';
export { Pkcs11Module, Pkcs11Signer, ecPointToSpki, type Pkcs11KeyAttributes, type Pkcs11KeyOptions } from './pkcs11-signer.ts';
export { Pkcs11ThreadSigner, type Pkcs11ThreadSignerOptions } from './pkcs11-thread-signer.ts';
export { checkAnchorAgainst, decodeAnchorRecord, type Anchor, type AnchorRecordV1, type AnchorVerifier } from './anchor.ts';
