/**
 * The issuing side, for demos, the CLI, tests and benchmarks: sample keys and parties, and
 * issuing, deriving and presenting sample credentials. A separate public face from
 * `index.ts` (the verifier), so a sidecar never loads the issuing libraries.
 */
export {
  deriveBbs,
  issueBbsBase,
  issueDataIntegrity,
  issueEd25519Signature2020,
  issueSdJwtVc,
  issueTokenStatusList,
  issueVcJwt,
  jwsAlgorithm,
  presentDataIntegrity,
  presentSdJwtVc,
  sampleBbsKey,
  sampleKey,
} from './sample-issuer.ts';
export type { SampleBbsKey, SampleKey, SampleAlgorithm } from './sample-issuer.ts';
export { SAMPLE_CONTEXT_URL, sampleContext } from './sample-contexts.ts';
export {
  SAMPLE_TENANTS,
  assertSampleTenant,
  issueSampleCredential,
  sampleParties,
  sampleTenantPolicy,
  sampleTenantPolicyJson,
} from './sample-tenants.ts';
export type { SampleFormat, SampleTenant } from './sample-tenants.ts';
