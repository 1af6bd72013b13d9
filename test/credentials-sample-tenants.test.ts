/**
 * The shipped sample tenants with their credential policies: the bank's
 * bank/credentials/decision wants a KYC credential from an accredited issuer, the hospital's
 * hospital/credentials/decision a practitioner licence from its licensing board. Real bundles,
 * real server, proofs on a worker thread. The same policies are the embedded defaults
 * (bundles/<tenant>/credentials/policy.json) when the config has no credentials section.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SAMPLE_BUNDLE_SOURCES_DIRECTORY } from '../sidecar/src/config/index.ts';
import { issueSampleCredential, presentSdJwtVc, sampleContext, sampleParties, sampleTenantPolicyJson } from '../sidecar/src/credentials/samples.ts';
import { post, startPavilion, type RunningPavilion } from './harness/pavilion-harness.ts';

describe('sample tenants with credential policies', () => {
  let running: RunningPavilion;
  let dir: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pavilion-samples-'));
    const contextPath = join(dir, 'samples-v1.jsonld');
    await writeFile(contextPath, sampleContext().bytes);
    const policyFor = async (tenant: 'bank' | 'hospital') => ({
      ...(await sampleTenantPolicyJson(tenant)),
      domain: `https://${tenant}.example`,
      contexts: [{ url: sampleContext().url, sha256Hex: sampleContext().sha256Hex, path: contextPath }],
    });
    running = await startPavilion({ config: { credentials: { proofWorkers: 1, tenants: { bank: await policyFor('bank'), hospital: await policyFor('hospital') } } } });
  });

  after(async () => {
    await running?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const decide = (tenant: string, path: string, body: unknown) => post(`${running.url}/v1/data/${path}`, body, { 'x-pavilion-tenant': tenant });

  it('bank: KYC verified with the accredited issuer\'s credential, not without', async () => {
    const credential = await issueSampleCredential('bank', { format: 'di', issuedAt: new Date(), validDays: 30 });
    const yes = await decide('bank', 'bank/credentials/decision', { input: {}, credentials: [credential] });
    assert.equal((yes.body['result'] as Record<string, unknown>)['kyc_verified'], true);
    const no = await decide('bank', 'bank/credentials/decision', { input: {} });
    assert.deepEqual(no.body['result'], { kyc_verified: false, reasons: [{ missing: 'KYC credential from an accredited issuer' }], verified: [] });
  });

  it('bank: the hospital\'s licence is refused with its code', async () => {
    const licence = await issueSampleCredential('hospital', { format: 'vc-jwt', issuedAt: new Date(), validDays: 30 });
    const result = (await decide('bank', 'bank/credentials/decision', { input: {}, credentials: [licence] })).body['result'] as { kyc_verified: boolean; reasons: unknown[] };
    assert.equal(result.kyc_verified, false);
    assert.deepEqual(result.reasons, [{ credential: 0, refused: 'ERR_CREDENTIAL_ISSUER_UNTRUSTED' }, { missing: 'KYC credential from an accredited issuer' }]);
  });

  it('hospital: a physician\'s licence presented as SD-JWT with key binding', async () => {
    const { holder } = await sampleParties('hospital');
    const issued = await issueSampleCredential('hospital', { format: 'sd-jwt', issuedAt: new Date(), validDays: 30 }) as string;
    const presented = await presentSdJwtVc(issued, ['profession', 'specialty'], holder, { nonce: 'h-1', aud: 'https://hospital.example', iatSeconds: Math.floor(Date.now() / 1000) });
    const result = (await decide('hospital', 'hospital/credentials/decision', { input: {}, credentials: [presented], credential_challenge: 'h-1' })).body['result'] as Record<string, unknown>;
    assert.equal(result['licensed_practitioner'], true);
    assert.deepEqual(result['specialties'], ['cardiology']);
  });

  it('a tenant without a credential policy never sees input.credentials, forged or not', async () => {
    const forged = { input: { credentials: [{ types: ['PractitionerLicenseCredential'] }], subject: {} } };
    const response = await decide('agency', 'agency/access/decision', forged);
    assert.equal(response.status, 200);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const logged = (await running.decisions()).find((e) => e['path'] === 'agency/access/decision');
    assert.ok(logged !== undefined);
    assert.equal(JSON.stringify(logged['input']).includes('PractitionerLicenseCredential'), false);
  });
});

describe('sample tenants on the embedded defaults (no credentials section)', () => {
  let running: RunningPavilion;
  before(async () => {
    running = await startPavilion();
  });
  after(async () => {
    await running?.stop();
  });

  const decide = (body: unknown) => post(`${running.url}/v1/data/bank/credentials/decision`, body, { 'x-pavilion-tenant': 'bank' });

  it('the committed sample policies are what `pavilion credential policy` prints, context included', async () => {
    for (const tenant of ['bank', 'hospital'] as const) {
      const folder = join(SAMPLE_BUNDLE_SOURCES_DIRECTORY, tenant, 'credentials');
      assert.deepEqual(JSON.parse(await readFile(join(folder, 'policy.json'), 'utf8')), await sampleTenantPolicyJson(tenant));
      assert.deepEqual(new Uint8Array(await readFile(join(folder, 'samples-v1.jsonld'))), sampleContext().bytes);
    }
    assert.deepEqual(running.config.credentials?.tenants.map((t) => t.tenantId), ['bank', 'hospital']);
  });

  it('bank allows on a valid sample KYC credential presented with key binding', async () => {
    const { holder } = await sampleParties('bank');
    const issued = await issueSampleCredential('bank', { format: 'sd-jwt', issuedAt: new Date(), validDays: 30 }) as string;
    const presented = await presentSdJwtVc(issued, ['kycLevel'], holder, { nonce: 'e-1', aud: 'https://bank.example', iatSeconds: Math.floor(Date.now() / 1000) });
    const response = await decide({ input: {}, credentials: [presented], credential_challenge: 'e-1' });
    assert.equal(response.status, 200);
    const { anchor, issuer } = await sampleParties('bank');
    assert.deepEqual(response.body['result'], {
      kyc_verified: true,
      reasons: [],
      verified: [{ issuer: issuer.did, accredited_by: anchor.did, subject: holder.did, claims: { kycLevel: 'full' } }],
    });
  });

  it('bank denies on a forged KYC credential and tells why with the verifier\'s code', async () => {
    const issued = await issueSampleCredential('bank', { format: 'di', issuedAt: new Date(), validDays: 30 }) as Record<string, unknown>;
    const forged = structuredClone(issued);
    (forged['credentialSubject'] as Record<string, unknown>)['givenName'] = 'Mallory';
    const result = (await decide({ input: {}, credentials: [forged] })).body['result'] as { kyc_verified: boolean; reasons: unknown[] };
    assert.equal(result.kyc_verified, false);
    // reasons is a Rego set: its order is not part of the answer
    assert.deepEqual(new Set(result.reasons.map((r) => JSON.stringify(r))), new Set([
      JSON.stringify({ credential: 0, refused: 'ERR_CREDENTIAL_SIGNATURE_INVALID' }),
      JSON.stringify({ missing: 'KYC credential from an accredited issuer' }),
    ]));
  });

  it('a client cannot feed forged facts to bank/credentials: input.credentials is reserved', async () => {
    const forged = [{ version: 1, types: ['VerifiableCredential', 'KycCredential'], claims: { kycLevel: 'full' }, chain: ['did:key:x', 'did:key:z6MkwXAotW95ZrUgh3yaSF2WnCWZg5pbwfFB4GZWkbM5mrt8'] }];
    const response = await decide({ input: { credentials: forged, credential_errors: [] } });
    assert.equal(response.status, 200);
    assert.equal((response.body['result'] as Record<string, unknown>)['kyc_verified'], false);
  });
});

describe('a configured credentials section replaces the embedded samples', () => {
  it('with {"tenants": {}} no tenant has a credential policy', async () => {
    const running = await startPavilion({ config: { credentials: { proofWorkers: 0, tenants: {} } } });
    try {
      assert.deepEqual(running.config.credentials?.tenants, []);
      const credential = await issueSampleCredential('bank', { format: 'vc-jwt', issuedAt: new Date(), validDays: 30 });
      const response = await post(`${running.url}/v1/data/bank/credentials/decision`, { input: {}, credentials: [credential] }, { 'x-pavilion-tenant': 'bank' });
      assert.equal((response.body['result'] as Record<string, unknown>)['kyc_verified'], false);
    } finally {
      await running.stop();
    }
  });
});
