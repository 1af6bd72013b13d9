/**
 * Verifiable presentations with holder binding: the holder's Data Integrity proof must carry this
 * verifier's challenge and domain, be made by the declared holder, and be seen only once; the
 * credentials inside are verified one by one and must be about the holder.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCodes } from '../sidecar/src/lib/errors.ts';
import { CHALLENGE, DOMAIN, issuerLoader, keys, kycCredential, rejectsWith, signed, trusting, verifier, presentDataIntegrity } from './credentials/fixtures.ts';

async function setup() {
  const k = await keys();
  const credential = await signed(kycCredential(k.issuer.did, { credentialSubject: { id: k.holder.did, kycLevel: 'full' } }), k.issuer);
  return { ...k, credential };
}

describe('verifiable presentations', () => {
  it('verifies a presentation bound to the challenge and domain, with the holder on each fact', async () => {
    const { issuer, holder, credential } = await setup();
    const v = await verifier(trusting(issuer.did));
    const vp = await presentDataIntegrity([credential], holder, { challenge: CHALLENGE, domain: DOMAIN }, issuerLoader());
    const result = await v.verifyPresentation('bank', vp, { challenge: CHALLENGE, domain: DOMAIN });
    assert.equal(result.holder, holder.did);
    assert.deepEqual(result.errors, []);
    assert.equal(result.credentials.length, 1);
    assert.equal(result.credentials[0]?.holder, holder.did);
  });

  it('refuses a replayed presentation', async () => {
    const { issuer, holder, credential } = await setup();
    const v = await verifier(trusting(issuer.did));
    const vp = await presentDataIntegrity([credential], holder, { challenge: CHALLENGE, domain: DOMAIN }, issuerLoader());
    await v.verifyPresentation('bank', vp, { challenge: CHALLENGE, domain: DOMAIN });
    await rejectsWith(v.verifyPresentation('bank', vp, { challenge: CHALLENGE, domain: DOMAIN }), ErrorCodes.CREDENTIAL_REPLAYED);
  });

  it('refuses another challenge, another domain, and no challenge at all', async () => {
    const { issuer, holder, credential } = await setup();
    const v = await verifier(trusting(issuer.did));
    const vp = await presentDataIntegrity([credential], holder, { challenge: CHALLENGE, domain: DOMAIN }, issuerLoader());
    await rejectsWith(v.verifyPresentation('bank', vp, { challenge: 'another', domain: DOMAIN }), ErrorCodes.CREDENTIAL_CHALLENGE_MISMATCH);
    await rejectsWith(v.verifyPresentation('bank', vp, { challenge: CHALLENGE, domain: 'https://other.example' }), ErrorCodes.CREDENTIAL_DOMAIN_MISMATCH);
    await rejectsWith(v.verifyPresentation('bank', vp, {}), ErrorCodes.CREDENTIAL_CHALLENGE_MISMATCH);
  });

  it('refuses a presentation whose proof was edited to another challenge', async () => {
    const { issuer, holder, credential } = await setup();
    const v = await verifier(trusting(issuer.did));
    const vp = await presentDataIntegrity([credential], holder, { challenge: CHALLENGE, domain: DOMAIN }, issuerLoader());
    (vp['proof'] as Record<string, unknown>)['challenge'] = 'edited';
    await rejectsWith(v.verifyPresentation('bank', vp, { challenge: 'edited', domain: DOMAIN }), ErrorCodes.CREDENTIAL_SIGNATURE_INVALID);
  });

  it('refuses a presentation signed by someone other than its holder', async () => {
    const { issuer, holder, rogue, credential } = await setup();
    const v = await verifier(trusting(issuer.did));
    const vp = await presentDataIntegrity([credential], rogue, { challenge: CHALLENGE, domain: DOMAIN }, issuerLoader(), holder.did);
    await rejectsWith(v.verifyPresentation('bank', vp, { challenge: CHALLENGE, domain: DOMAIN }), ErrorCodes.CREDENTIAL_HOLDER_MISMATCH);
    const edited = await presentDataIntegrity([credential], rogue, { challenge: 'c2', domain: DOMAIN }, issuerLoader());
    edited['holder'] = holder.did;
    await rejectsWith(v.verifyPresentation('bank', edited, { challenge: 'c2', domain: DOMAIN }), ErrorCodes.CREDENTIAL_SIGNATURE_INVALID);
  });

  it('reports a credential about someone else as HOLDER_MISMATCH, and a bad credential by index', async () => {
    const { issuer, holder, credential } = await setup();
    const v = await verifier(trusting(issuer.did));
    const aboutSomeoneElse = await signed(kycCredential(issuer.did), issuer);
    const tampered = structuredClone(credential);
    (tampered['credentialSubject'] as Record<string, unknown>)['kycLevel'] = 'none';
    const vp = await presentDataIntegrity([credential, aboutSomeoneElse, tampered], holder, { challenge: CHALLENGE, domain: DOMAIN }, issuerLoader());
    const result = await v.verifyPresentation('bank', vp, { challenge: CHALLENGE, domain: DOMAIN });
    assert.equal(result.credentials.length, 1);
    assert.deepEqual(result.errors.map((e) => [e.index, e.code]), [[1, ErrorCodes.CREDENTIAL_HOLDER_MISMATCH], [2, ErrorCodes.CREDENTIAL_SIGNATURE_INVALID]]);
  });

  it('verifyEach mixes formats and keeps errors with their index for input.credential_errors', async () => {
    const { issuer, credential } = await setup();
    const v = await verifier(trusting(issuer.did));
    const result = await v.verifyEach('bank', [credential, 'not-a-credential', { type: ['VerifiableCredential'] }], {});
    assert.equal(result.credentials.length, 1);
    assert.deepEqual(result.errors.map((e) => [e.index, e.code]), [[1, ErrorCodes.CREDENTIAL_MALFORMED], [2, ErrorCodes.CREDENTIAL_MALFORMED]]);
  });
});

describe('verifier-minted challenges', () => {
  it('with requireIssuedChallenge, accepts a presentation only for a challenge it issued, once, in time', async () => {
    const { issuer, holder, credential } = await setup();
    let now = Date.parse('2026-06-01T12:00:00Z');
    const v = await verifier({ ...trusting(issuer.did), domain: DOMAIN, presentations: { requireIssuedChallenge: true, challengeLifetimeMs: 60_000 } }, { clock: () => now });
    const { challenge, domain, expiresAtMs } = await v.issueChallenge('bank');
    assert.equal(domain, DOMAIN);
    assert.equal(expiresAtMs, now + 60_000);
    const vp = await presentDataIntegrity([credential], holder, { challenge, domain: DOMAIN }, issuerLoader());
    await v.verifyPresentation('bank', vp, { challenge, domain: DOMAIN });
    await rejectsWith(v.verifyPresentation('bank', vp, { challenge, domain: DOMAIN }), ErrorCodes.CREDENTIAL_REPLAYED);

    const own = await presentDataIntegrity([credential], holder, { challenge: 'holder-chosen', domain: DOMAIN }, issuerLoader());
    await rejectsWith(v.verifyPresentation('bank', own, { challenge: 'holder-chosen', domain: DOMAIN }), ErrorCodes.CREDENTIAL_CHALLENGE_MISMATCH);
    // a challenge it never issued is not recorded: the same answer again, not a replay
    await rejectsWith(v.verifyPresentation('bank', own, { challenge: 'holder-chosen', domain: DOMAIN }), ErrorCodes.CREDENTIAL_CHALLENGE_MISMATCH);

    const late = await v.issueChallenge('bank');
    const lateVp = await presentDataIntegrity([credential], holder, { challenge: late.challenge, domain: DOMAIN }, issuerLoader());
    now += 60_001;
    await rejectsWith(v.verifyPresentation('bank', lateVp, { challenge: late.challenge, domain: DOMAIN }), ErrorCodes.CREDENTIAL_CHALLENGE_MISMATCH);
  });
});
