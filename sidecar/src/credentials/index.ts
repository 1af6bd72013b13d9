/**
 * Credentials: verification of W3C Verifiable Credentials (Data Integrity, VC-JWT), SD-JWT VC and
 * presentations into verified facts for Rego, with offline resolution, issuer trust chains,
 * freshness and revocation (Bitstring Status List, BLS12-381 accumulator). The public face of the
 * domain; every other file in this folder is private to it, except `gate.ts` (the runtime subset,
 * without the verifier's heavy stacks) and `samples.ts` (issuing, for samples and tests).
 */
export { CredentialVerifier, toCredentialError } from './credential-verifier.ts';
export type { CredentialVerifierOptions, PresentationResultV1, VerifyOptions } from './credential-verifier.ts';
export type { CredentialErrorV1, CredentialFormat, StatusCheckV1, VerifiedFactsV1 } from './verified-facts.ts';
export type { StatusListSource } from './bitstring-status-list.ts';
export { encodeStatusList, FileStatusListSource, MIN_STATUS_LIST_BITS } from './bitstring-status-list.ts';
export { MemoryNonceStore } from './nonce-store.ts';
export type { NonceStore } from './nonce-store.ts';
export {
  AccumulatorIssuer,
  decodeWitness,
  elementFor,
  encodeWitness,
  updateWitness,
  verifyMembership,
  prepareAccumulatorKey,
  WITNESS_BYTES,
  VALUE_BYTES,
  PUBLIC_KEY_BYTES,
} from './bls-accumulator.ts';
export type { AccumulatorState, AccumulatorUpdate, PreparedAccumulatorKey, Witness } from './bls-accumulator.ts';
export { ACCUMULATOR_ENTRY_TYPE, signAccumulatorState } from './accumulator-registry.ts';
export type { PinnedAccumulator } from './accumulator-registry.ts';
export { pinContexts, builtInContexts } from './pinned-contexts.ts';
export type { TenantContext } from './pinned-contexts.ts';
export { DidResolver } from './did-resolver.ts';
export { createDocumentLoader } from './document-loader.ts';
export type { DocumentLoader } from './document-loader.ts';
// the gate, reserved keys and headers, and the policy parser: the runtime face
export * from './gate.ts';
export { InlineProofExecutor } from './proof-executor.ts';
export type { ProofExecutor, TenantProofMaterial } from './proof-executor.ts';
export { WorkerProofExecutor } from './worker-proof-executor.ts';
export type { WorkerProofExecutorOptions } from './worker-proof-executor.ts';
