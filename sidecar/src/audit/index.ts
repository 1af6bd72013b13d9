/** Audit: decision events and where they go, and the verifiable per-tenant audit log. */
export type { DecisionEventV1, DecisionSink, EvaluatedLogRules, LogRuleOutcome } from './decision-event.ts';
export { DecisionEvents, type DecisionRecord, type KnownRecord } from './decision-events.ts';
export { FileDecisionSink, NullDecisionSink, serialise } from './file-decision-sink.ts';
export {
  AuditLog,
  Keyring,
  Pkcs11Module,
  Pkcs11Signer,
  Pkcs11ThreadSigner,
  SoftwareSigner,
  WAL_FILE,
  decodeCheckpoint,
  parseCheckpoint,
  proveConsistencyFromLogFile,
  proveFromLogFile,
  publicKeyPem,
  verifyConsistencyProof,
  verifyDecisionAnchor,
  verifyDecisionProof,
  verifyLogFile,
  verifyEpochs,
  parseEpochLink,
  PRUNED_FILE,
  type PrunedEpochV1,
  type EpochLinkV1,
  type EpochSealV1,
  type EpochsVerification,
  type Anchor,
  type AnchorRecordV1,
  type AnchorVerifier,
  type AuditLogOptions,
  type CheckpointSigner,
  type ConsistencyProofV1,
  type DecisionProofV1,
  type DecisionReceiptV1,
  type DecisionVerification,
  type FsyncPolicy,
  type LogVerification,
  type OnFullPolicy,
  type RecoveryReport,
  type SignedCheckpointV1,
} from './log/index.ts';
export { MerkleTree, hashLeaf, verifyConsistency, verifyInclusion } from './merkle/index.ts';
export {
  AuditLogSink,
  MAX_ARCHIVED_PROOFS_WAITING,
  RETENTION_CHECK_INTERVAL_MS,
  UNROUTED_KEEP_ARCHIVED_EPOCHS,
  UNROUTED_MAX_DISK_BYTES,
  UNROUTED_TENANT,
  type AuditLogFigures,
  type AuditLogSettings,
  type AuditLogSinkOptions,
  type RotationStep,
  type StreamProgress,
} from './audit-log-sink.ts';
export { CURSOR_FILE, DUPLICATE_WINDOW_MS, DecisionForwarder, type DecisionForwarderOptions } from './decision-forwarder.ts';
export { RECEIPT_HEADER, decodeReceiptHeader, encodeReceiptHeader, transportReceipt, type TransportReceiptV1 } from './transport-receipt.ts';
export { createCheckpointSigner, type CheckpointSignerSettings } from './checkpoint-signers.ts';
// The EVM adapter (EvmAnchor, its verifier, contract deployment) has its own face,
// ./anchor/index.ts, so that importing the audit domain does not load ethers.
export { FileAnchor, FileAnchorVerifier, type FileAnchorReferenceV1 } from './anchor/file-anchor.ts';
export { createAnchor } from './anchor/create-anchor.ts';
export type { EvmAnchorReferenceV1 } from './anchor/evm-anchor.ts';
export {
  DecisionMasker,
  MaskingDecisionSink,
  bothRevisions,
  PseudonymKeyStore,
  applyMaskRules,
  parseMaskRules,
  parsePseudonymField,
  pseudonym,
  pseudonymiseEvent,
  type LogPolicy,
  type MaskOutcome,
  type Pseudonyms,
} from './masking/index.ts';
export { JetStreamPublisher, type StreamAck } from './jetstream-publisher.ts';
