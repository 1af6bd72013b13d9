/**
 * JSON-LD contexts for the sample tenants' credentials (bank KYC, hospital practitioner licence,
 * issuer accreditation). Tenants pin them by SHA-256 like any tenant-added context; the bytes
 * here are the pinned bytes.
 */
import { sha256Hex } from '../lib/sha256.ts';
import type { TenantContext } from './pinned-contexts.ts';

export const SAMPLE_CONTEXT_URL = 'https://pavilion.example/contexts/samples/v1';

const term = (name: string): Record<string, unknown> => ({ '@id': `https://pavilion.example/vocab#${name}` });

const document = {
  '@context': {
    '@protected': true,
    KycCredential: term('KycCredential'),
    PractitionerLicenseCredential: term('PractitionerLicenseCredential'),
    AccreditationCredential: term('AccreditationCredential'),
    kycLevel: term('kycLevel'),
    givenName: term('givenName'),
    familyName: term('familyName'),
    birthDate: term('birthDate'),
    country: term('country'),
    licenseNumber: term('licenseNumber'),
    profession: term('profession'),
    specialty: term('specialty'),
    accreditedFor: term('accreditedFor'),
    credentialTypes: term('credentialTypes'),
    claims: term('claims'),
    maxValiditySeconds: term('maxValiditySeconds'),
    knows: { '@id': 'https://pavilion.example/vocab#knows', '@type': '@id' },
    // status entry for the BLS12-381 accumulator (sidecar/src/credentials/accumulator-registry.ts)
    BlsAccumulatorStatusEntry: term('BlsAccumulatorStatusEntry'),
    accumulatorId: term('accumulatorId'),
    revocationHandle: term('revocationHandle'),
  },
};

export const SAMPLE_CONTEXT_BYTES: Uint8Array = new TextEncoder().encode(JSON.stringify(document, null, 2));

export function sampleContext(): TenantContext {
  return {
    url: SAMPLE_CONTEXT_URL,
    sha256Hex: sha256Hex(SAMPLE_CONTEXT_BYTES),
    bytes: SAMPLE_CONTEXT_BYTES,
  };
}
