/**
 * The sample tenants' credentials (what `pavilion credential ...` issues): every format verifies
 * under the tenant's own policy, output is reproducible, and each tenant refuses the other's.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { ErrorCodes } from '../sidecar/src/lib/errors.ts';
import { CredentialVerifier } from '../sidecar/src/credentials/index.ts';
import { issueSampleCredential, presentSdJwtVc, sampleParties, sampleTenantPolicy, type SampleFormat } from '../sidecar/src/credentials/samples.ts';
import { rejectsWith } from './credentials/fixtures.ts';

const NOW = new Date('2026-06-01T12:00:00Z');

describe('sample tenant credentials', () => {
  for (const tenant of ['bank', 'hospital'] as const) {
    for (const format of ['di', 'vc-jwt', 'sd-jwt'] as SampleFormat[]) {
      it(`${tenant}: a ${format} credential verifies under the tenant's policy`, async () => {
        const verifier = await CredentialVerifier.create([await sampleTenantPolicy(tenant)], { clock: () => NOW.getTime() });
        let credential = await issueSampleCredential(tenant, { format, issuedAt: NOW, validDays: 365 });
        const options = { challenge: `n-${tenant}-${format}`, domain: `https://${tenant}.example` };
        if (typeof credential === 'string' && format === 'sd-jwt') {
          const { holder } = await sampleParties(tenant);
          credential = await presentSdJwtVc(credential, [tenant === 'bank' ? 'kycLevel' : 'profession'], holder, { nonce: options.challenge, aud: options.domain, iatSeconds: NOW.getTime() / 1000 });
        }
        const facts = await verifier.verify(tenant, credential, options);
        assert.equal(facts.types.includes(tenant === 'bank' ? 'KycCredential' : 'PractitionerLicenseCredential'), true);
        assert.equal(facts.chain.length, tenant === 'bank' ? 2 : 1);
      });
    }
  }

  it('is reproducible: the same inputs give the same credential', async () => {
    const a = await issueSampleCredential('bank', { format: 'di', issuedAt: NOW, validDays: 30 });
    const b = await issueSampleCredential('bank', { format: 'di', issuedAt: NOW, validDays: 30 });
    assert.deepEqual(a, b);
    assert.equal(await issueSampleCredential('hospital', { format: 'sd-jwt', issuedAt: NOW, validDays: 30 }), await issueSampleCredential('hospital', { format: 'sd-jwt', issuedAt: NOW, validDays: 30 }));
  });

  it('the bank refuses the hospital\'s licence (untrusted issuer), and a licence valid too long', async () => {
    const bank = await CredentialVerifier.create([await sampleTenantPolicy('bank')], { clock: () => NOW.getTime() });
    await rejectsWith(bank.verify('bank', await issueSampleCredential('hospital', { format: 'di', issuedAt: NOW, validDays: 30 })), ErrorCodes.CREDENTIAL_ISSUER_UNTRUSTED);
    const hospital = await CredentialVerifier.create([await sampleTenantPolicy('hospital')], { clock: () => NOW.getTime() });
    await rejectsWith(hospital.verify('hospital', await issueSampleCredential('hospital', { format: 'di', issuedAt: NOW, validDays: 3 * 365 })), ErrorCodes.CREDENTIAL_OUT_OF_SCOPE);
  });

  it('the CLI prints the sample parties', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'sidecar/src/cli/main.ts', 'credential', 'parties', '--tenant', 'hospital'], { timeout: 60_000 });
    const parties = JSON.parse(stdout) as { issuer: string };
    assert.equal(parties.issuer, (await sampleParties('hospital')).issuer.did);
  });
});
