/**
 * What a verified credential contributes to a decision: the facts Rego sees as
 * `input.credentials[i]`. Only disclosed claims are present (an SD-JWT's undisclosed digests and
 * a credential's proof never are), so the decision log cannot record more than the holder chose
 * to show. The shape is versioned; fields are added, never renamed.
 */
import type { ErrorCode } from '../lib/errors.ts';
import type { ValidityText } from './freshness.ts';
import type { JsonObject } from './json.ts';

export type CredentialFormat = 'vc+data-integrity' | 'vc+jwt' | 'sd-jwt-vc';

export type StatusMechanism = 'BitstringStatusList' | 'TokenStatusList' | 'BlsAccumulator';

export interface StatusCheckV1 {
  readonly mechanism: StatusMechanism;
  readonly purpose: 'revocation' | 'suspension';
  /** Where the status came from (status list credential id or accumulator id). */
  readonly source: string;
  /** Seconds since the status information was verified (its freshness). */
  readonly ageSeconds: number;
}

export interface VerifiedFactsV1 {
  readonly version: 1;
  readonly format: CredentialFormat;
  readonly issuer: string;
  readonly types: readonly string[];
  /** `credentialSubject.id` / `sub`, when present and disclosed. */
  readonly subject?: string;
  /** Disclosed claims only (credentialSubject for W3C VCs, disclosed payload claims for SD-JWT VC). */
  readonly claims: JsonObject;
  /** e.g. `DataIntegrityProof/eddsa-rdfc-2022`, `JWT/EdDSA`, `SD-JWT/ES256`. */
  readonly proofType: string;
  readonly validity: ValidityText;
  readonly status: readonly StatusCheckV1[];
  /** Issuer trust path, leaf issuer first, ending at a tenant trust anchor. */
  readonly chain: readonly string[];
  /** Holder key or DID the presentation was bound to, when it was. */
  readonly holder?: string;
  /** SHA-256 (hex) of the credential as received: the cache key and the decision-log reference. */
  readonly credentialHash: string;
}

/** A refused credential as Rego sees it in `input.credential_errors`. */
export interface CredentialErrorV1 {
  readonly version: 1;
  readonly index: number;
  readonly code: ErrorCode;
  readonly message: string;
}
