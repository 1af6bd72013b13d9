/**
 * Bounds a request puts on the verifier, and what a refused presentation leaves behind.
 *
 * `maxCredentialsPerRequest` counts every signed object the verifier would check: a credential
 * sent on its own counts one, a presentation counts one (its holder proof) plus one per credential
 * it embeds. A request over the limit is refused as a whole (`ERR_CREDENTIAL_TOO_LARGE`) before
 * anything in it is verified.
 *
 * A presentation's challenge is used up last, atomically, and only by a presentation that yields
 * something, or one refused for a reason that can pass later: one refused for good (its own
 * proof, its age, or every credential in it forged, untrusted, expired...) leaves the challenge to
 * the honest holder, and so does a bare presentation through the gate. One that yields facts uses
 * it up even if some of its credentials were refused, or a captured copy would yield those facts
 * again.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CredentialGate, MemoryNonceStore } from '../sidecar/src/credentials/index.ts';
import type { CredentialErrorV1, VerifiedFactsV1 } from '../sidecar/src/credentials/index.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { CHALLENGE, DAY_MS, DOMAIN, NOW_MS, issuerLoader, keys, kycCredential, policy, presentDataIntegrity, rejectsWith, signed, trusting, verifier } from './credentials/fixtures.ts';

const MINUTE_MS = 60_000;

/** The memory store, counting what the verifier asks of it. */
class CountingNonceStore extends MemoryNonceStore {
  consumeCalls = 0;
  seenCalls = 0;
  override async consumeOnce(key: string, expiresAtMs: number, nowMs: number): Promise<boolean> {
    this.consumeCalls++;
    return super.consumeOnce(key, expiresAtMs, nowMs);
  }
  override async seen(key: string, nowMs: number): Promise<boolean> {
    this.seenCalls++;
    return super.seen(key, nowMs);
  }
}

/**
 * The sample parties; the bank's settings (trusting the sample issuer for KYC credentials at most
 * 200 days old); a credential about the holder; and ways a credential inside a presentation is
 * refused. (Out of date is "too old for its type": the presentation library will not put a credential
 * past its validUntil, by the real clock, into a presentation.)
 */
async function material() {
  const k = await keys();
  const settings = { ...trusting(k.issuer.did), maxAgeMsByType: { KycCredential: 200 * DAY_MS } };
  const about = { credentialSubject: { id: k.holder.did, kycLevel: 'full' } };
  const credential = await signed(kycCredential(k.issuer.did, about), k.issuer);
  const forged = structuredClone(credential);
  (forged['credentialSubject'] as Record<string, unknown>)['kycLevel'] = 'basic';
  const refused: ReadonlyArray<readonly [string, Record<string, unknown>, (typeof ErrorCodes)[keyof typeof ErrorCodes]]> = [
    ['forged', forged, ErrorCodes.CREDENTIAL_SIGNATURE_INVALID],
    ['from an untrusted issuer', await signed(kycCredential(k.rogue.did, about), k.rogue), ErrorCodes.CREDENTIAL_ISSUER_UNTRUSTED],
    ['too old for its type', await signed(kycCredential(k.issuer.did, { ...about, validFrom: '2025-06-01T00:00:00Z' }), k.issuer), ErrorCodes.CREDENTIAL_TOO_OLD],
    ['about someone else', await signed(kycCredential(k.issuer.did), k.issuer), ErrorCodes.CREDENTIAL_HOLDER_MISMATCH],
  ];
  return { ...k, settings, credential, forged, refused };
}

const present = (credentials: readonly Record<string, unknown>[], holder: Awaited<ReturnType<typeof keys>>['holder'], challenge = CHALLENGE, createdMs = NOW_MS) =>
  presentDataIntegrity(credentials, holder, { challenge, domain: DOMAIN }, issuerLoader(), holder.did, createdMs);

type PreparedInput = { credentials: VerifiedFactsV1[]; credential_errors: CredentialErrorV1[] };

/** A started gate for the bank tenant (trusting the sample issuer, domain DOMAIN), on the frozen clock. */
async function startGate(maxCredentialsPerRequest: number, nonces: MemoryNonceStore, raw: Record<string, unknown> = {}): Promise<CredentialGate> {
  const { issuer } = await keys();
  const gate = new CredentialGate({
    policies: [policy({ ...trusting(issuer.did), domain: DOMAIN, ...raw })],
    refreshIntervalMs: 3_600_000,
    maxCredentialsPerRequest,
    nonces,
    proofWorkers: 0,
    proofJobTimeoutMs: 5_000,
    clock: () => NOW_MS,
  });
  await gate.start();
  return gate;
}

describe('maxCredentialsPerRequest counts the credentials inside presentations', () => {
  let gate: CredentialGate;
  let nonces: CountingNonceStore;
  const prepare = async (credentials: readonly unknown[], challenge = CHALLENGE) =>
    (await gate.prepareInput('bank', {}, credentials, { challenge })) as PreparedInput;

  before(async () => {
    nonces = new CountingNonceStore();
    gate = await startGate(4, nonces);
  });
  after(async () => {
    await gate?.stop();
  });

  it('a presentation counts as one plus one per embedded credential: 3 inside fit a limit of 4, 4 inside are refused with TOO_LARGE before anything is verified', async () => {
    const { holder, credential, forged } = await material();
    const fits = await prepare([await present([credential, credential, credential], holder, 'fits-4')], 'fits-4');
    assert.deepEqual(fits.credential_errors, []);
    assert.equal(fits.credentials.length, 3);

    // holder proof broken and every credential in it forged: had anything been verified, their codes would show
    const tooMany = await present([forged, forged, forged, forged], holder, 'too-many');
    tooMany['holder'] = 'did:example:mallory';
    const calls = nonces.consumeCalls + nonces.seenCalls;
    const refused = await prepare([tooMany], 'too-many');
    assert.deepEqual(refused.credentials, []);
    assert.deepEqual(refused.credential_errors.map((e) => [e.index, e.code]), [[0, ErrorCodes.CREDENTIAL_TOO_LARGE]]);
    assert.match(refused.credential_errors[0]!.message, /carries 5 credentials.*at most 4 per request/);
    assert.equal(nonces.consumeCalls + nonces.seenCalls, calls, 'no challenge was looked at, let alone used');
  });

  it('credentials sent alone and inside presentations add up; the refusal names the item that crossed the limit', async () => {
    const { holder, credential } = await material();
    const fits = await prepare([credential, credential, await present([credential], holder, 'sum-fits')], 'sum-fits');
    assert.deepEqual(fits.credential_errors, []);
    assert.equal(fits.credentials.length, 3);

    const over = await prepare([credential, credential, await present([credential, credential], holder, 'sum-over')], 'sum-over');
    assert.deepEqual(over.credentials, []);
    assert.deepEqual(over.credential_errors.map((e) => [e.index, e.code]), [[2, ErrorCodes.CREDENTIAL_TOO_LARGE]]);
    assert.match(over.credential_errors[0]!.message, /carries 5 credentials.*at most 4 per request/);

    // a presentation carrying a single credential object (not an array) counts it too
    const single = await present([credential], holder, 'single');
    single['verifiableCredential'] = (single['verifiableCredential'] as unknown[])[0];
    const overBySingle = await prepare([credential, credential, credential, single], 'single');
    assert.deepEqual(overBySingle.credential_errors.map((e) => [e.index, e.code]), [[3, ErrorCodes.CREDENTIAL_TOO_LARGE]]);
  });

  it('too many credentials sent alone are still refused, and the message says how many', async () => {
    const { credential } = await material();
    const over = await prepare([credential, credential, credential, credential, credential]);
    assert.deepEqual(over.credential_errors.map((e) => [e.index, e.code]), [[4, ErrorCodes.CREDENTIAL_TOO_LARGE]]);
    assert.match(over.credential_errors[0]!.message, /carries 5 credentials.*at most 4 per request/);
  });

  it('with a limit of 1 a presentation carrying one credential counts 2 and is refused (the presentation itself counts one)', async () => {
    const { holder, credential } = await material();
    const one = await startGate(1, new MemoryNonceStore());
    try {
      const input = (await one.prepareInput('bank', {}, [await present([credential], holder)], { challenge: CHALLENGE })) as PreparedInput;
      assert.deepEqual(input.credential_errors.map((e) => [e.index, e.code]), [[0, ErrorCodes.CREDENTIAL_TOO_LARGE]]);
      assert.match(input.credential_errors[0]!.message, /carries 2 credentials.*at most 1 per request/);
    } finally {
      await one.stop();
    }
  });
});

describe('a presentation uses its challenge up last, and only when it is accepted', () => {
  it('one refused for a credential inside it (forged, untrusted issuer, too old, about someone else) leaves the challenge unused: the holder answers it once more, and only once', async () => {
    const { settings, holder, credential, refused } = await material();
    for (const [why, bad, code] of refused) {
      const nonces = new CountingNonceStore();
      const v = await verifier(settings, { nonces });
      await rejectsWith(v.verifyPresentation('bank', await present([bad], holder), { challenge: CHALLENGE, domain: DOMAIN }), code);
      assert.equal(nonces.size, 0, `${why}: the challenge is still unused`);
      assert.equal(nonces.consumeCalls, 0, `${why}: the store was not asked to use it`);
      const honest = await present([credential], holder);
      const accepted = await v.verifyPresentation('bank', honest, { challenge: CHALLENGE, domain: DOMAIN });
      assert.deepEqual([accepted.credentials.length, accepted.errors], [1, []], why);
      assert.equal(nonces.consumeCalls, 1, `${why}: the accepted presentation used it exactly once`);
      await rejectsWith(v.verifyPresentation('bank', honest, { challenge: CHALLENGE, domain: DOMAIN }), ErrorCodes.CREDENTIAL_REPLAYED);
    }
  });

  it('through the gate: a presentation whose credentials are all refused reports each code, yields nothing and leaves the challenge; the honest one is then accepted, and its replay is REPLAYED', async () => {
    const { settings, holder, credential, refused } = await material();
    const nonces = new MemoryNonceStore();
    const gate = await startGate(8, nonces, settings);
    try {
      const prepare = async (vp: Record<string, unknown>) => (await gate.prepareInput('bank', {}, [vp], { challenge: CHALLENGE })) as PreparedInput;
      const bad = await prepare(await present(refused.map(([, c]) => c), holder));
      assert.deepEqual(bad.credentials, []);
      assert.deepEqual(bad.credential_errors.map((e) => [e.index, e.code]), refused.map(([, , code]) => [0, code]));
      assert.equal(nonces.size, 0);
      const honest = await present([credential], holder);
      const good = await prepare(honest);
      assert.deepEqual([good.credentials.length, good.credential_errors], [1, []]);
      const replay = await prepare(honest);
      assert.deepEqual(replay.credentials, []);
      assert.deepEqual(replay.credential_errors.map((e) => e.code), [ErrorCodes.CREDENTIAL_REPLAYED]);
    } finally {
      await gate.stop();
    }
  });

  it('with requireIssuedChallenge, a presentation refused for its credentials does not take the minted challenge: the honest one takes it, once', async () => {
    const { issuer, holder, forged, credential } = await material();
    const v = await verifier({ ...trusting(issuer.did), domain: DOMAIN, presentations: { requireIssuedChallenge: true, challengeLifetimeMs: 10 * MINUTE_MS } });
    const { challenge } = await v.issueChallenge('bank');
    await rejectsWith(v.verifyPresentation('bank', await present([forged], holder, challenge), { challenge, domain: DOMAIN }), ErrorCodes.CREDENTIAL_SIGNATURE_INVALID);
    const honest = await present([credential], holder, challenge);
    assert.equal((await v.verifyPresentation('bank', honest, { challenge, domain: DOMAIN })).credentials.length, 1);
    await rejectsWith(v.verifyPresentation('bank', honest, { challenge, domain: DOMAIN }), ErrorCodes.CREDENTIAL_REPLAYED);
  });

  it('a bare presentation (no credentials) through the gate yields nothing and leaves the challenge, so whoever sees a challenge cannot burn it without a credential; verifyPresentation still authenticates a bare holder once', async () => {
    const { settings, holder, rogue, credential } = await material();
    const nonces = new MemoryNonceStore();
    const gate = await startGate(8, nonces, settings);
    try {
      const bare = (await gate.prepareInput('bank', {}, [await present([], rogue)], { challenge: CHALLENGE })) as PreparedInput;
      assert.deepEqual([bare.credentials, bare.credential_errors], [[], []]);
      assert.equal(nonces.size, 0, 'the challenge is still unused');
      const honest = (await gate.prepareInput('bank', {}, [await present([credential], holder)], { challenge: CHALLENGE })) as PreparedInput;
      assert.deepEqual([honest.credentials.length, honest.credential_errors], [1, []]);
    } finally {
      await gate.stop();
    }
    const v = await verifier(settings, { nonces: new MemoryNonceStore() });
    const authentication = await present([], holder);
    assert.equal((await v.verifyPresentation('bank', authentication, { challenge: CHALLENGE, domain: DOMAIN })).holder, holder.did);
    await rejectsWith(v.verifyPresentation('bank', authentication, { challenge: CHALLENGE, domain: DOMAIN }), ErrorCodes.CREDENTIAL_REPLAYED);
  });

  it('one refused for a reason that can pass later (a credential not yet valid) uses the challenge up: a copy shown once the reason is gone is REPLAYED', async () => {
    const { settings, issuer, holder, credential } = await material();
    const nonces = new MemoryNonceStore();
    const v = await verifier(settings, { nonces });
    const early = await signed(kycCredential(issuer.did, { credentialSubject: { id: holder.did, kycLevel: 'full' }, validFrom: '2026-09-01T00:00:00Z' }), issuer);
    await rejectsWith(v.verifyPresentation('bank', await present([early], holder), { challenge: CHALLENGE, domain: DOMAIN }), ErrorCodes.CREDENTIAL_NOT_YET_VALID);
    assert.equal(nonces.size, 1, 'used up');
    await rejectsWith(v.verifyPresentation('bank', await present([credential], holder), { challenge: CHALLENGE, domain: DOMAIN }), ErrorCodes.CREDENTIAL_REPLAYED);
  });

  it('(guard) one refused for its own proof (tampered after signing, too old) leaves the challenge unused too', async () => {
    const { issuer, holder, credential } = await material();
    const nonces = new MemoryNonceStore();
    const v = await verifier(trusting(issuer.did), { nonces });
    const tampered = await present([credential], holder);
    tampered['holder'] = 'did:example:mallory';
    await rejectsWith(v.verifyPresentation('bank', tampered, { challenge: CHALLENGE, domain: DOMAIN }), ErrorCodes.CREDENTIAL_SIGNATURE_INVALID);
    const old = await present([credential], holder, CHALLENGE, NOW_MS - 12 * MINUTE_MS);
    await rejectsWith(v.verifyPresentation('bank', old, { challenge: CHALLENGE, domain: DOMAIN }), ErrorCodes.CREDENTIAL_KEY_BINDING_INVALID);
    assert.equal(nonces.size, 0);
    assert.equal((await v.verifyPresentation('bank', await present([credential], holder), { challenge: CHALLENGE, domain: DOMAIN })).credentials.length, 1);
  });

  it('(guard) one that yields facts uses the challenge up even with a refused credential beside them: its replay is REPLAYED, not the same facts again', async () => {
    const { issuer, holder, credential, forged } = await material();
    const nonces = new MemoryNonceStore();
    const v = await verifier(trusting(issuer.did), { nonces });
    const mixed = await present([credential, forged], holder);
    const first = await v.verifyPresentation('bank', mixed, { challenge: CHALLENGE, domain: DOMAIN });
    assert.equal(first.credentials.length, 1);
    assert.deepEqual(first.errors.map((e) => [e.index, e.code]), [[1, ErrorCodes.CREDENTIAL_SIGNATURE_INVALID]]);
    assert.equal(nonces.size, 1);
    await rejectsWith(v.verifyPresentation('bank', mixed, { challenge: CHALLENGE, domain: DOMAIN }), ErrorCodes.CREDENTIAL_REPLAYED);
  });

  it('(guard) the same valid presentation sent twice at once is accepted exactly once, by the verifier and through the gate', async () => {
    const { issuer, holder, credential } = await material();
    const nonces = new MemoryNonceStore();
    const v = await verifier(trusting(issuer.did), { nonces });
    const vp = await present([credential, credential], holder);
    const outcomes = await Promise.allSettled([1, 2, 3].map(() => v.verifyPresentation('bank', vp, { challenge: CHALLENGE, domain: DOMAIN })));
    assert.equal(outcomes.filter((o) => o.status === 'fulfilled').length, 1);
    for (const o of outcomes) if (o.status === 'rejected') assert.ok(isPavilionError(o.reason, ErrorCodes.CREDENTIAL_REPLAYED), String(o.reason));

    const gate = await startGate(8, new MemoryNonceStore());
    try {
      const inputs = (await Promise.all([1, 2, 3].map(() => gate.prepareInput('bank', {}, [vp], { challenge: CHALLENGE })))) as PreparedInput[];
      assert.deepEqual(inputs.map((i) => i.credentials.length).sort(), [0, 0, 2]);
      assert.deepEqual(inputs.flatMap((i) => i.credential_errors.map((e) => e.code)), [ErrorCodes.CREDENTIAL_REPLAYED, ErrorCodes.CREDENTIAL_REPLAYED]);
    } finally {
      await gate.stop();
    }
  });
});
