/** Bundles: reading, validating, building and sourcing OPA bundles per tenant. */
export {
  DEFAULT_BUNDLE_LIMITS,
  pathWithin,
  readBundle,
  type Bundle,
  type BundleLimits,
  type BundleManifest,
  type ReadBundleOptions,
  type WasmResolver,
} from './archive.ts';
export {
  DECISION_TESTS_METADATA_KEY,
  buildTenantBundle,
  developmentKey,
  defaultBuildDirectory,
  definitionPath,
  listDefinitions,
  readDefinition,
  type BuildOptions,
  type BuildResult,
  type BundleDefinition,
} from './build.ts';
export { LocalDirectoryBundleSource, PushedBundleSource, type BundleSource } from './bundle-source.ts';
export { normaliseEntryName, readTar, writeTar, type TarEntry } from './tar.ts';
export { canonicalStructuredBytes, hashBundleFile, isStructuredFile } from './file-hash.ts';
export {
  SIGNING_ALGORITHMS,
  defaultAlgorithmFor,
  isSigningAlgorithm,
  loadVerificationKey,
  signBundle,
  signDelta,
  verifyBundleSignature,
  verifyDeltaSignature,
  type DeltaContent,
  type SignOptions,
  type SignatureInfo,
  type SignaturePolicy,
  type SigningAlgorithm,
  type VerificationKey,
} from './signing.ts';
export { TrustStore, type InvalidKey } from './trust.ts';
export { LastKnownGood, type PersistedBundle, type PersistedBundleMeta } from './last-known-good.ts';
export { applyPatch, checkDeltaRoots, parsePatch, parsePatchPath, type DeltaMessageV1, type DeltaUpdate, type PatchOperation } from './delta.ts';
