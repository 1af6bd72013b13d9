/** Anchoring adapters: the local anchor file (embedded default) and a PavilionAnchor contract on an EVM chain. */
export { checkpointSignatureSha256, logIdOf } from './checkpoint-digests.ts';
export { createAnchor } from './create-anchor.ts';
export {
  EVM_ANCHOR_KIND,
  EvmAnchor,
  EvmAnchorVerifier,
  deployAnchorContract,
  evmProvider,
  parseEvmPrivateKey,
  parseEvmReference,
  setAnchorSubmitter,
  type DeployedAnchorContract,
  type EvmAnchorOptions,
  type EvmAnchorReferenceV1,
  type EvmAnchorSubmission,
  type EvmAnchorVerifierOptions,
  type EvmConnectionOptions,
} from './evm-anchor.ts';
export { FILE_ANCHOR_KIND, FileAnchor, FileAnchorVerifier, type FileAnchorEntryV1, type FileAnchorReferenceV1 } from './file-anchor.ts';
export { PAVILION_ANCHOR_ARTIFACT } from './contract/pavilion-anchor-artifact.ts';
