/**
 * Credential material for the sample tenants, derived deterministically (same keys, same
 * accreditations, same credentials for the same inputs):
 *   - bank: requires a KycCredential from an issuer accredited by the bank's KYC authority
 *     (anchor `bank-kyc-authority` -> accredited issuer `bank-kyc-issuer`);
 *   - hospital: requires a PractitionerLicenseCredential from the licensing board (an anchor).
 * Used by the `pavilion credential` CLI and the tests. The keys are public knowledge.
 */
import { ErrorCodes, PavilionError } from '../lib/errors.ts';
import { parseCredentialPolicy, type CredentialPolicy } from './credential-policy.ts';
import { createDocumentLoader } from './document-loader.ts';
import { DidResolver } from './did-resolver.ts';
import type { JsonObject } from './json.ts';
import { pinContexts } from './pinned-contexts.ts';
import { SAMPLE_CONTEXT_URL, sampleContext } from './sample-contexts.ts';
import { issueDataIntegrity, issueSdJwtVc, issueVcJwt, sampleKey, type SampleKey } from './sample-issuer.ts';

export const SAMPLE_TENANTS = ['bank', 'hospital'] as const;
export type SampleTenant = (typeof SAMPLE_TENANTS)[number];
export type SampleFormat = 'di' | 'vc-jwt' | 'sd-jwt';

const VC_V2 = 'https://www.w3.org/ns/credentials/v2';
const DAY_MS = 24 * 60 * 60_000;
/** Fixed issuance time of the sample accreditations (reproducible signatures). */
const ACCREDITED_AT = new Date('2026-01-01T00:00:00Z');

export interface SampleParties {
  readonly anchor: SampleKey;
  readonly issuer: SampleKey;
  readonly holder: SampleKey;
}

export function assertSampleTenant(tenant: string): SampleTenant {
  if (!(SAMPLE_TENANTS as readonly string[]).includes(tenant)) {
    throw new PavilionError(ErrorCodes.CREDENTIAL_TENANT_UNKNOWN, `sample credentials exist for ${SAMPLE_TENANTS.join(' and ')}, not ${tenant}`);
  }
  return tenant as SampleTenant;
}

export async function sampleParties(tenant: SampleTenant): Promise<SampleParties> {
  return tenant === 'bank'
    ? { anchor: await sampleKey('bank-kyc-authority'), issuer: await sampleKey('bank-kyc-issuer'), holder: await sampleKey('bank-customer-alice') }
    : { anchor: await sampleKey('hospital-licensing-board'), issuer: await sampleKey('hospital-licensing-board'), holder: await sampleKey('hospital-dr-bob') };
}

function loader() {
  return createDocumentLoader({ contexts: pinContexts([sampleContext()]), dids: new DidResolver() });
}

/** The tenant's credential policy, as JSON a config file would hold (accreditations signed). */
export async function sampleTenantPolicyJson(tenant: SampleTenant): Promise<JsonObject> {
  const { anchor, issuer } = await sampleParties(tenant);
  const context = sampleContext();
  const contexts = [{ url: context.url, sha256Hex: context.sha256Hex, path: 'samples-v1.jsonld' }];
  const domain = `https://${tenant}.example`;
  if (tenant === 'hospital') {
    return {
      domain,
      contexts,
      trustAnchors: [{ issuer: anchor.did, credentialTypes: ['PractitionerLicenseCredential'], maxValidityMs: 2 * 365 * DAY_MS }],
      maxChainDepth: 0,
      maxAgeMsByType: { PractitionerLicenseCredential: 2 * 365 * DAY_MS },
    };
  }
  const accreditation = await issueDataIntegrity(
    {
      '@context': [VC_V2, SAMPLE_CONTEXT_URL],
      id: 'urn:pavilion:sample:bank:accreditation:1',
      type: ['VerifiableCredential', 'AccreditationCredential'],
      issuer: anchor.did,
      validFrom: '2026-01-01T00:00:00Z',
      validUntil: '2031-01-01T00:00:00Z',
      credentialSubject: {
        id: issuer.did,
        accreditedFor: { credentialTypes: ['KycCredential'], claims: ['kycLevel', 'givenName', 'familyName', 'country'], maxValiditySeconds: 366 * 24 * 3600 },
      },
    },
    anchor,
    loader(),
    ACCREDITED_AT,
  );
  return {
    domain,
    contexts,
    trustAnchors: [{ issuer: anchor.did, credentialTypes: ['KycCredential'] }],
    accreditations: [accreditation],
    maxChainDepth: 1,
    maxAgeMsByType: { KycCredential: 366 * DAY_MS },
    keyBinding: { required: true, maxAgeMs: 5 * 60_000 },
  };
}

export async function sampleTenantPolicy(tenant: SampleTenant): Promise<CredentialPolicy> {
  const context = sampleContext();
  return parseCredentialPolicy(tenant, await sampleTenantPolicyJson(tenant), (path) => {
    if (path === 'samples-v1.jsonld') return context.bytes;
    throw new PavilionError(ErrorCodes.CONFIG_INVALID, `no sample file ${path}`);
  });
}

export interface SampleIssueOptions {
  readonly format: SampleFormat;
  readonly issuedAt: Date;
  readonly validDays: number;
  /** Subject DID (defaults to the sample holder). */
  readonly subject?: string;
}

/** Issue the tenant's sample credential in one format. */
export async function issueSampleCredential(tenant: SampleTenant, options: SampleIssueOptions): Promise<JsonObject | string> {
  const { issuer, holder } = await sampleParties(tenant);
  const subject = options.subject ?? holder.did;
  const from = new Date(Math.floor(options.issuedAt.getTime() / 1000) * 1000);
  const until = new Date(from.getTime() + options.validDays * DAY_MS);
  const iso = (d: Date): string => d.toISOString().replace('.000Z', 'Z');
  const claims: JsonObject = tenant === 'bank'
    ? { kycLevel: 'full', givenName: 'Alice', familyName: 'Example', country: 'CH' }
    : { licenseNumber: 'MD-4711', profession: 'physician', specialty: 'cardiology' };
  const type = tenant === 'bank' ? 'KycCredential' : 'PractitionerLicenseCredential';
  if (options.format === 'sd-jwt') {
    const seconds = Math.floor(from.getTime() / 1000);
    return issueSdJwtVc(
      { iss: issuer.did, vct: type, iat: seconds, nbf: seconds, exp: Math.floor(until.getTime() / 1000), sub: subject, ...claims },
      Object.keys(claims),
      issuer,
      holder,
      `pavilion-sample:${tenant}:${seconds}`,
    );
  }
  const credential: JsonObject = {
    '@context': [VC_V2, SAMPLE_CONTEXT_URL],
    type: ['VerifiableCredential', type],
    issuer: issuer.did,
    validFrom: iso(from),
    validUntil: iso(until),
    credentialSubject: { id: subject, ...claims },
  };
  if (options.format === 'vc-jwt') return issueVcJwt(credential, issuer);
  return issueDataIntegrity(credential, issuer, loader(), from);
}
