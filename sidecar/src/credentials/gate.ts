/**
 * The credentials domain's runtime face: what the sidecar, its transports and its config need
 * (the gate, the reserved input keys and headers, the policy parser). Importing it does not load
 * the verifier's JSON-LD, Data Integrity and BLS12-381 stacks; the gate loads them when a tenant
 * has a credential policy. Everything else (the verifier itself, accumulators, resolvers) is
 * on the full face, `index.ts`.
 */
export {
  CredentialGate,
  CREDENTIALS_HEADER,
  CREDENTIAL_CHALLENGE_HEADER,
  CREDENTIAL_WITNESSES_HEADER,
  CREDENTIALS_INPUT_KEY,
  CREDENTIAL_ERRORS_INPUT_KEY,
  credentialsFromHeader,
  witnessesFromHeader,
  withoutReservedCredentialKeys,
} from './credential-gate.ts';
export type { CredentialBinding, CredentialGateOptions, CredentialObserver } from './credential-gate.ts';
export { defaultCredentialPolicy, parseCredentialPolicy } from './credential-policy.ts';
export type { CredentialPolicy } from './credential-policy.ts';
