/**
 * Credentials on the decision path: a real Pavilion with a credential policy for the bank; the
 * Data API verifies the credentials a request carries (body field or header) and the policy sees
 * only verified facts in input.credentials and codes in input.credential_errors.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ErrorCodes } from '../sidecar/src/lib/errors.ts';
import { randomBytes } from 'node:crypto';
import { ACCUMULATOR_ENTRY_TYPE, AccumulatorIssuer, DidResolver, createDocumentLoader, encodeWitness, pinContexts, signAccumulatorState, type Witness } from '../sidecar/src/credentials/index.ts';
import { SAMPLE_CONTEXT_URL, issueDataIntegrity, issueSampleCredential, jwsAlgorithm, presentSdJwtVc, sampleContext, sampleParties, sampleTenantPolicyJson } from '../sidecar/src/credentials/samples.ts';
import { buildFixtureBundle } from './harness/fixtures.ts';
import { post, startPavilion, type RunningPavilion } from './harness/pavilion-harness.ts';

const DOMAIN = 'https://bank.pavilion.example';
const POLICY = `package bank.kyc
import rego.v1

default allow := false

allow if {
	some c in input.credentials
	"KycCredential" in c.types
	c.claims.kycLevel == "full"
	count(c.chain) == 2
}

errors := [e.code | some e in input.credential_errors]
`;

describe('credentials in the Data API', () => {
  let running: RunningPavilion;
  let dir: string;
  let accumulator: AccumulatorIssuer;
  let aliceWitness: Witness;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pavilion-cred-'));
    await writeFile(join(dir, 'samples-v1.jsonld'), sampleContext().bytes);
    const context = sampleContext();
    // an accumulator for the bank's issuer: its signed state is held from a file at start
    const { issuer } = await sampleParties('bank');
    accumulator = AccumulatorIssuer.create('urn:accumulator:bank:decision-test', randomBytes);
    aliceWitness = accumulator.add('handle-alice');
    await writeFile(join(dir, 'acc.jws'), await signAccumulatorState(accumulator.state(), { kid: issuer.kid, privateJwk: issuer.privateJwk, alg: jwsAlgorithm(issuer) }, Math.floor(Date.now() / 1000)));
    const policy = {
      ...(await sampleTenantPolicyJson('bank')),
      domain: DOMAIN,
      contexts: [{ url: context.url, sha256Hex: context.sha256Hex, path: join(dir, 'samples-v1.jsonld') }],
      accumulators: [{ id: accumulator.id, issuer: issuer.did, publicKeyHex: Buffer.from(accumulator.publicKey).toString('hex') }],
      accumulatorStateFiles: [join(dir, 'acc.jws')],
    };
    const bundle = await buildFixtureBundle({ modules: { 'kyc.rego': POLICY }, entrypoints: ['bank/kyc/allow', 'bank/kyc/errors'], roots: ['bank'] });
    running = await startPavilion({
      bundles: { bank: bundle },
      config: {
        tenants: [{ id: 'bank' }],
        credentials: { tenants: { bank: policy } },
        extAuthz: { grpc: { enabled: false }, http: { enabled: true }, tenantFrom: { header: 'x-pavilion-tenant' }, tenants: { bank: { path: 'bank/kyc/allow' } } },
      },
    });
  });

  after(async () => {
    await running?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const ask = (path: string, body: unknown, headers: Record<string, string> = {}) =>
    post(`${running.url}/v1/data/bank/kyc/${path}`, body, { 'x-pavilion-tenant': 'bank', ...headers });

  it('allows with a verified KYC credential from the accredited issuer (body field)', async () => {
    const credential = await issueSampleCredential('bank', { format: 'di', issuedAt: new Date(), validDays: 30 });
    const response = await ask('allow', { input: { action: 'open' }, credentials: [credential] });
    assert.equal(response.status, 200);
    assert.equal(response.body['result'], true);
  });

  it('denies with a tampered credential and shows its code to the policy', async () => {
    const credential = structuredClone(await issueSampleCredential('bank', { format: 'di', issuedAt: new Date(), validDays: 30 })) as Record<string, Record<string, unknown>>;
    credential['credentialSubject']!['kycLevel'] = 'full-plus';
    assert.equal((await ask('allow', { input: {}, credentials: [credential] })).body['result'], false);
    assert.deepEqual((await ask('errors', { input: {}, credentials: [credential] })).body['result'], [ErrorCodes.CREDENTIAL_SIGNATURE_INVALID]);
  });

  it('ignores facts a client writes into input.credentials itself', async () => {
    const forged = [{ types: ['KycCredential'], claims: { kycLevel: 'full' }, chain: ['a', 'b'] }];
    assert.equal((await ask('allow', { input: { credentials: forged } })).body['result'], false);
  });

  it('accepts an SD-JWT VC in the header bound to the challenge, once', async () => {
    const { holder } = await sampleParties('bank');
    const issued = await issueSampleCredential('bank', { format: 'sd-jwt', issuedAt: new Date(), validDays: 30 }) as string;
    const presented = await presentSdJwtVc(issued, ['kycLevel'], holder, { nonce: 'n-42', aud: DOMAIN, iatSeconds: Math.floor(Date.now() / 1000) });
    const headers = { 'x-pavilion-credentials': presented, 'x-pavilion-credential-challenge': 'n-42' };
    assert.equal((await ask('allow', { input: {} }, headers)).body['result'], true);
    assert.deepEqual((await ask('errors', { input: {} }, headers)).body['result'], [ErrorCodes.CREDENTIAL_REPLAYED]);
  });

  it('logs verified facts only: no proof, no raw credential, no undisclosed claim', async () => {
    const { holder } = await sampleParties('bank');
    const issued = await issueSampleCredential('bank', { format: 'sd-jwt', issuedAt: new Date(), validDays: 30 }) as string;
    const presented = await presentSdJwtVc(issued, ['kycLevel'], holder, { nonce: 'n-log', aud: DOMAIN, iatSeconds: Math.floor(Date.now() / 1000) });
    await ask('allow', { input: { marker: 'log-check' }, credentials: [presented], credential_challenge: 'n-log' });
    await new Promise((resolve) => setTimeout(resolve, 200));
    const event = (await running.decisions()).find((d) => JSON.stringify(d['input'] ?? {}).includes('log-check'));
    assert.ok(event !== undefined, 'the decision was logged');
    const logged = JSON.stringify(event);
    assert.ok(logged.includes('"kycLevel":"full"'));
    assert.ok(!logged.includes('Alice'), 'an undisclosed claim reached the log');
    assert.ok(!logged.includes(presented.slice(0, 40)), 'the raw credential reached the log');
  });

  it('ext_authz (HTTP mode): credentials in the checked request\'s header decide, and leave the logged input', async () => {
    const { holder } = await sampleParties('bank');
    const issued = await issueSampleCredential('bank', { format: 'sd-jwt', issuedAt: new Date(), validDays: 30 }) as string;
    const presented = await presentSdJwtVc(issued, ['kycLevel'], holder, { nonce: 'n-envoy', aud: DOMAIN, iatSeconds: Math.floor(Date.now() / 1000) });
    const check = (headers: Record<string, string>) => fetch(`${running.url}/ext_authz/accounts/open`, { headers: { 'x-pavilion-tenant': 'bank', ...headers } });
    assert.equal((await check({})).status, 403);
    const allowed = await check({ 'x-pavilion-credentials': presented, 'x-pavilion-credential-challenge': 'n-envoy' });
    assert.equal(allowed.status, 200);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const events = (await running.decisions()).filter((d) => d['ext_authz'] !== undefined);
    assert.ok(events.length >= 2);
    const logged = JSON.stringify(events);
    assert.ok(!logged.includes(presented.slice(0, 40)), 'the raw credential header reached the log');
    assert.ok(logged.includes('"kycLevel":"full"'));
  });

  it('counts credentials by outcome in /metrics', async () => {
    const text = await (await fetch(`${running.url}/metrics`)).text();
    assert.match(text, /pavilion_credentials_total\{tenant="bank",outcome="vc\+data-integrity"\} [1-9]/);
    assert.match(text, /pavilion_credentials_total\{tenant="bank",outcome="ERR_CREDENTIAL_SIGNATURE_INVALID"\} [1-9]/);
    assert.match(text, /pavilion_credential_verification_duration_seconds_count\{tenant="bank"\} [1-9]/);
  });

  it('mints one-time challenges at POST /v1/tenants/{tenant}/credentials/challenge', async () => {
    const minted = await post(`${running.url}/v1/tenants/bank/credentials/challenge`, {});
    assert.equal(minted.status, 200);
    const result = minted.body['result'] as { challenge: string; domain: string; expires_at: string };
    assert.match(result.challenge, /^[A-Za-z0-9_-]{22}$/);
    assert.equal(result.domain, DOMAIN);
    assert.ok(Date.parse(result.expires_at) > Date.now());
    const again = (await post(`${running.url}/v1/tenants/bank/credentials/challenge`, {})).body['result'] as { challenge: string };
    assert.notEqual(again.challenge, result.challenge);
    assert.equal((await fetch(`${running.url}/v1/tenants/bank/credentials/challenge`)).status, 405);
    assert.equal((await post(`${running.url}/v1/tenants/nobody/credentials/challenge`, {})).status, 404);
    // as on every tenant route, a tenant header naming another tenant is refused
    const mixed = await post(`${running.url}/v1/tenants/bank/credentials/challenge`, {}, { 'x-pavilion-tenant': 'hospital' });
    assert.equal(mixed.status, 400);
    assert.equal((mixed.body['errors'] as Array<{ code: string }> | undefined)?.[0]?.code, 'ERR_REQUEST_INVALID');
  });

  it('takes accumulator witnesses from the body (credential_witnesses)', async () => {
    const { issuer, holder } = await sampleParties('bank');
    const now = new Date(Math.floor(Date.now() / 1000) * 1000);
    const credential = await issueDataIntegrity({
      '@context': ['https://www.w3.org/ns/credentials/v2', SAMPLE_CONTEXT_URL],
      type: ['VerifiableCredential', 'KycCredential'],
      issuer: issuer.did,
      validFrom: now.toISOString().replace('.000Z', 'Z'),
      validUntil: new Date(now.getTime() + 86_400_000).toISOString().replace('.000Z', 'Z'),
      credentialSubject: { id: holder.did, kycLevel: 'full' },
      credentialStatus: { type: ACCUMULATOR_ENTRY_TYPE, accumulatorId: accumulator.id, revocationHandle: 'handle-alice' },
    }, issuer, createDocumentLoader({ contexts: pinContexts([sampleContext()]), dids: new DidResolver() }));
    const witness = Buffer.from(encodeWitness(aliceWitness)).toString('base64url');
    assert.equal((await ask('allow', { input: {}, credentials: [credential], credential_witnesses: { 'handle-alice': witness } })).body['result'], true);
    assert.deepEqual((await ask('errors', { input: {}, credentials: [credential] })).body['result'], [ErrorCodes.CREDENTIAL_WITNESS_INVALID]);
    assert.equal((await ask('allow', { input: {}, credentials: [credential], credential_witnesses: ['nope'] })).status, 400);
    // the same through the header (the body's credential list, the header's witness)
    assert.equal((await ask('allow', { input: {}, credentials: [credential] }, { 'x-pavilion-credential-witnesses': `handle-alice=${witness}` })).body['result'], true);
  });
});
