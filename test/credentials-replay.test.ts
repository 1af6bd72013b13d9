/**
 * Replay defences: a presentation proof is accepted only while it is young (its `created` within
 * the challenge lifetime), a used challenge is remembered as long as any proof answering it could
 * still be accepted, only a credential that passed trust uses a challenge up, and a full
 * challenge store refuses new challenges instead of forgetting live ones.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCodes } from '../sidecar/src/lib/errors.ts';
import { MemoryNonceStore } from '../sidecar/src/credentials/index.ts';
import { issueSdJwtVc, presentSdJwtVc, type SampleKey } from '../sidecar/src/credentials/samples.ts';
import { CHALLENGE, DOMAIN, NOW_MS, issuerLoader, keys, kycCredential, presentDataIntegrity, rejectsWith, signed, trusting, verifier } from './credentials/fixtures.ts';

const MINUTE_MS = 60_000;
const NOW_S = Math.floor(NOW_MS / 1000);

async function setup() {
  const k = await keys();
  const credential = await signed(kycCredential(k.issuer.did, { credentialSubject: { id: k.holder.did, kycLevel: 'full' } }), k.issuer);
  return { ...k, credential };
}

function sdJwt(issuer: SampleKey, holder: SampleKey): Promise<string> {
  return issueSdJwtVc({ iss: issuer.did, vct: 'KycCredential', iat: NOW_S - 3600, exp: NOW_S + 86_400, kyc_level: 'full' }, ['kyc_level'], issuer, holder, 'replay-test-salts');
}

describe('presentation proof age', () => {
  it('refuses with KEY_BINDING_INVALID a presentation whose proof was created longer ago than the challenge lifetime', async () => {
    const { issuer, holder, credential } = await setup();
    // challengeLifetimeMs 10 min and clockSkewMs 1 min (the defaults): 11 min + 1 s is too old
    const v = await verifier(trusting(issuer.did));
    const old = await presentDataIntegrity([credential], holder, { challenge: CHALLENGE, domain: DOMAIN }, issuerLoader(), holder.did, NOW_MS - 11 * MINUTE_MS - 1000);
    await rejectsWith(v.verifyPresentation('bank', old, { challenge: CHALLENGE, domain: DOMAIN }), ErrorCodes.CREDENTIAL_KEY_BINDING_INVALID);
    const young = await presentDataIntegrity([credential], holder, { challenge: CHALLENGE, domain: DOMAIN }, issuerLoader(), holder.did, NOW_MS - 9 * MINUTE_MS);
    assert.equal((await v.verifyPresentation('bank', young, { challenge: CHALLENGE, domain: DOMAIN })).credentials.length, 1);
  });

  it('refuses with KEY_BINDING_INVALID a presentation whose proof is dated beyond the clock skew in the future', async () => {
    const { issuer, holder, credential } = await setup();
    const v = await verifier(trusting(issuer.did));
    const future = await presentDataIntegrity([credential], holder, { challenge: CHALLENGE, domain: DOMAIN }, issuerLoader(), holder.did, NOW_MS + 2 * MINUTE_MS);
    await rejectsWith(v.verifyPresentation('bank', future, { challenge: CHALLENGE, domain: DOMAIN }), ErrorCodes.CREDENTIAL_KEY_BINDING_INVALID);
  });

  it('refuses as REPLAYED a presentation replayed after its challenge lifetime, while its proof is still within lifetime + skew', async () => {
    const { issuer, holder, credential } = await setup();
    let now = NOW_MS;
    const v = await verifier(trusting(issuer.did), { clock: () => now });
    const vp = await presentDataIntegrity([credential], holder, { challenge: CHALLENGE, domain: DOMAIN }, issuerLoader());
    await v.verifyPresentation('bank', vp, { challenge: CHALLENGE, domain: DOMAIN });
    now = NOW_MS + 10 * MINUTE_MS + 30_000; // past the old 10-minute nonce entry, inside 10 min + 1 min skew
    await rejectsWith(v.verifyPresentation('bank', vp, { challenge: CHALLENGE, domain: DOMAIN }), ErrorCodes.CREDENTIAL_REPLAYED);
  });

  it('refuses as REPLAYED a key-bound SD-JWT replayed after the challenge lifetime, while its KB-JWT is within keyBinding.maxAgeMs', async () => {
    const { issuer, holder } = await keys();
    let now = NOW_MS;
    const v = await verifier({ ...trusting(issuer.did), presentations: { challengeLifetimeMs: MINUTE_MS }, keyBinding: { maxAgeMs: 5 * MINUTE_MS } }, { clock: () => now });
    const presented = await presentSdJwtVc(await sdJwt(issuer, holder), ['kyc_level'], holder, { nonce: CHALLENGE, aud: DOMAIN, iatSeconds: NOW_S });
    await v.verify('bank', presented, { challenge: CHALLENGE, domain: DOMAIN });
    now = NOW_MS + 2 * MINUTE_MS;
    await rejectsWith(v.verify('bank', presented, { challenge: CHALLENGE, domain: DOMAIN }), ErrorCodes.CREDENTIAL_REPLAYED);
  });
});

describe('challenge use', () => {
  it('gives ISSUER_UNTRUSTED to a self-issued SD-JWT without using up its challenge, which a trusted one then answers', async () => {
    const { issuer, holder, rogue } = await keys();
    const nonces = new MemoryNonceStore();
    const v = await verifier(trusting(issuer.did), { nonces });
    const binding = { nonce: CHALLENGE, aud: DOMAIN, iatSeconds: NOW_S };
    const selfIssued = await presentSdJwtVc(await sdJwt(rogue, holder), ['kyc_level'], holder, binding);
    await rejectsWith(v.verify('bank', selfIssued, { challenge: CHALLENGE, domain: DOMAIN }), ErrorCodes.CREDENTIAL_ISSUER_UNTRUSTED);
    assert.equal(nonces.size, 0);
    const trusted = await presentSdJwtVc(await sdJwt(issuer, holder), ['kyc_level'], holder, binding);
    assert.equal((await v.verify('bank', trusted, { challenge: CHALLENGE, domain: DOMAIN })).issuer, issuer.did);
    assert.equal(nonces.size, 1);
  });

  it('a full nonce store refuses a new challenge with STATE_UNAVAILABLE and keeps its live entries (no eviction replay)', async () => {
    const store = new MemoryNonceStore(2);
    assert.equal(await store.consumeOnce('victim', NOW_MS + 1000, NOW_MS), true);
    assert.equal(await store.consumeOnce('other', NOW_MS + 2000, NOW_MS), true);
    await rejectsWith(store.consumeOnce('attacker', NOW_MS + 2000, NOW_MS), ErrorCodes.CREDENTIAL_STATE_UNAVAILABLE);
    assert.equal(await store.consumeOnce('victim', NOW_MS + 1000, NOW_MS + 10), false);
    // once an entry expires its room is free again
    assert.equal(await store.consumeOnce('attacker', NOW_MS + 3000, NOW_MS + 1000), true);
    assert.equal(await store.consumeOnce('other', NOW_MS + 4000, NOW_MS + 1000), false);
    assert.equal(store.size, 2);
  });
});

