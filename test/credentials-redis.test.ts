/**
 * One-time credential state shared by replicas through a real redis-server: a presentation
 * accepted by one replica is a replay at another, a challenge minted by one is taken once by
 * any, and while Redis is away every presentation is refused with
 * ERR_CREDENTIAL_STATE_UNAVAILABLE (fail closed) and health says WARN, until it is back.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { parseConfig } from '../sidecar/src/config/index.ts';
import { CredentialGate } from '../sidecar/src/credentials/index.ts';
import { RedisSharedState } from '../sidecar/src/credentials/redis-shared-state.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { DOMAIN, issuerLoader, keys, kycCredential, policy, rejectsWith, signed, trusting, verifier, presentDataIntegrity } from './credentials/fixtures.ts';
import { startRedis, type RunningRedis } from './harness/redis-server.ts';
import { until } from './harness/wait.ts';

const redisConfig = (url: string) => parseConfig({ redis: { url, commandTimeoutMs: 300, connectTimeoutMs: 500 } }).redis!;

describe('credential one-time state in Redis, shared by replicas', () => {
  let redis: RunningRedis;
  let a: RedisSharedState;
  let b: RedisSharedState;

  before(async () => {
    redis = await startRedis();
    a = new RedisSharedState(redisConfig(redis.url));
    b = new RedisSharedState(redisConfig(redis.url));
    await a.start();
    await b.start();
  });

  after(async () => {
    await a?.stop();
    await b?.stop();
    await redis?.stop();
  });

  async function setup(raw: Record<string, unknown> = {}) {
    const k = await keys();
    const credential = await signed(kycCredential(k.issuer.did, { credentialSubject: { id: k.holder.did, kycLevel: 'full' } }), k.issuer);
    const settings = { ...trusting(k.issuer.did), domain: DOMAIN, ...raw };
    const replicaA = await verifier(settings, { nonces: a.nonces, challenges: a.challenges });
    const replicaB = await verifier(settings, { nonces: b.nonces, challenges: b.challenges });
    return { ...k, credential, replicaA, replicaB };
  }

  it('a presentation accepted by one replica is refused as replayed by the other', async () => {
    const { holder, credential, replicaA, replicaB } = await setup();
    const challenge = `shared-${Math.random()}`;
    const vp = await presentDataIntegrity([credential], holder, { challenge, domain: DOMAIN }, issuerLoader());
    await replicaA.verifyPresentation('bank', vp, { challenge, domain: DOMAIN });
    await rejectsWith(replicaB.verifyPresentation('bank', vp, { challenge, domain: DOMAIN }), ErrorCodes.CREDENTIAL_REPLAYED);
    await rejectsWith(replicaA.verifyPresentation('bank', vp, { challenge, domain: DOMAIN }), ErrorCodes.CREDENTIAL_REPLAYED);
  });

  it('a challenge minted by one replica is accepted by another, once; one never minted is refused', async () => {
    const { holder, credential, replicaA, replicaB } = await setup({ presentations: { requireIssuedChallenge: true, challengeLifetimeMs: 60_000 } });
    const { challenge } = await replicaA.issueChallenge('bank');
    const vp = await presentDataIntegrity([credential], holder, { challenge, domain: DOMAIN }, issuerLoader());
    await replicaB.verifyPresentation('bank', vp, { challenge, domain: DOMAIN });
    await rejectsWith(replicaA.verifyPresentation('bank', vp, { challenge, domain: DOMAIN }), ErrorCodes.CREDENTIAL_REPLAYED);
    const own = await presentDataIntegrity([credential], holder, { challenge: 'made-up', domain: DOMAIN }, issuerLoader());
    await rejectsWith(replicaB.verifyPresentation('bank', own, { challenge: 'made-up', domain: DOMAIN }), ErrorCodes.CREDENTIAL_CHALLENGE_MISMATCH);
  });

  it('a presentation refused on one replica for its only credential (forged) leaves the challenge: the honest one is accepted on the other, once', async () => {
    const { holder, credential, replicaA, replicaB } = await setup();
    const challenge = `refused-${Math.random()}`;
    const forged = structuredClone(credential);
    (forged['credentialSubject'] as Record<string, unknown>)['kycLevel'] = 'basic';
    const bad = await presentDataIntegrity([forged], holder, { challenge, domain: DOMAIN }, issuerLoader());
    await rejectsWith(replicaA.verifyPresentation('bank', bad, { challenge, domain: DOMAIN }), ErrorCodes.CREDENTIAL_SIGNATURE_INVALID);
    const honest = await presentDataIntegrity([credential], holder, { challenge, domain: DOMAIN }, issuerLoader());
    assert.equal((await replicaB.verifyPresentation('bank', honest, { challenge, domain: DOMAIN })).credentials.length, 1);
    await rejectsWith(replicaA.verifyPresentation('bank', honest, { challenge, domain: DOMAIN }), ErrorCodes.CREDENTIAL_REPLAYED);
  });

  it('(guard) one presentation sent to both replicas at once is accepted by exactly one (SET NX), the other gets REPLAYED', async () => {
    const { holder, credential, replicaA, replicaB } = await setup();
    const challenge = `race-${Math.random()}`;
    const vp = await presentDataIntegrity([credential], holder, { challenge, domain: DOMAIN }, issuerLoader());
    const outcomes = await Promise.allSettled([replicaA, replicaB, replicaA, replicaB].map((r) => r.verifyPresentation('bank', vp, { challenge, domain: DOMAIN })));
    assert.equal(outcomes.filter((o) => o.status === 'fulfilled').length, 1);
    for (const o of outcomes) if (o.status === 'rejected') assert.ok(isPavilionError(o.reason, ErrorCodes.CREDENTIAL_REPLAYED), String(o.reason));
  });

  it('Redis away: presentations are refused with ERR_CREDENTIAL_STATE_UNAVAILABLE at once, health WARN; accepted again when it is back', async () => {
    const { holder, credential, replicaA } = await setup();
    await redis.kill();
    await until('the connection noticed', () => a.status().state === 'WARN', 5000);
    const challenge = `outage-${Math.random()}`;
    const vp = await presentDataIntegrity([credential], holder, { challenge, domain: DOMAIN }, issuerLoader());
    const started = Date.now();
    await rejectsWith(replicaA.verifyPresentation('bank', vp, { challenge, domain: DOMAIN }), ErrorCodes.CREDENTIAL_STATE_UNAVAILABLE);
    assert.ok(Date.now() - started < 2000, 'refused without waiting for Redis');
    assert.match(a.status().message ?? '', /presentations that need a challenge are refused/);
    await redis.restart();
    await until('reconnected', () => a.status().state === 'OK', 10_000);
    await replicaA.verifyPresentation('bank', vp, { challenge, domain: DOMAIN });
  });

  it("bounds each tenant's live entries: a tenant's full nonces refuse its new presentations (nothing evicted to replay), its full challenges lose its own oldest; another tenant is untouched; replicas of earlier versions share the keys", async () => {
    const { Redis } = await import('ioredis');
    const { sha256Hex } = await import('../sidecar/src/lib/sha256.ts');
    const small = new RedisSharedState(parseConfig({ redis: { url: redis.url, keyPrefix: 'bounded', maxEntriesPerTenant: 3, commandTimeoutMs: 300, connectTimeoutMs: 500 } }).redis!);
    await small.start();
    const admin = new Redis(redis.url);
    try {
      const now = Date.now();
      const later = now + 60_000;
      // nonces: three live ones fill bank's share; a fourth is refused, a replay is still a replay
      for (let i = 0; i < 3; i++) assert.equal(await small.nonces.consumeOnce(`bank\u0000n-${i}`, later, now), true);
      await assert.rejects(small.nonces.consumeOnce('bank\u0000n-3', later, now), (e: unknown) => isPavilionError(e, ErrorCodes.CREDENTIAL_STATE_UNAVAILABLE) && /one-time nonces of tenant bank in Redis are at their bound \(3 live\)/.test(e.message));
      assert.equal(await small.nonces.consumeOnce('bank\u0000n-0', later, now), false, 'still recorded: replayed');
      assert.equal(await small.nonces.seen('bank\u0000n-1', now), true);
      assert.equal(await small.nonces.consumeOnce('hospital\u0000n-0', later, now), true, 'another tenant has its own bound');
      assert.equal(await admin.zcard('bounded:nonces:bank'), 3);
      assert.ok((await admin.pttl('bounded:nonces:bank')) > 0, 'the counting set expires with its entries');
      // an entry whose key is gone without the count (taken by an earlier version, evicted) leaves the count at the bound
      await admin.del(`bounded:nonce:${sha256Hex('bank\u0000n-2')}`);
      assert.equal(await small.nonces.consumeOnce('bank\u0000n-3', later, now), true);
      assert.equal(await admin.zcard('bounded:nonces:bank'), 3);
      // entries leave the count when their time (Redis's) has passed
      for (let i = 0; i < 3; i++) assert.equal(await small.nonces.consumeOnce(`agency\u0000short-${i}`, Date.now() + 50, Date.now()), true);
      await assert.rejects(small.nonces.consumeOnce('agency\u0000short-3', later, now), (e: unknown) => isPavilionError(e, ErrorCodes.CREDENTIAL_STATE_UNAVAILABLE));
      await new Promise((r) => setTimeout(r, 150));
      assert.equal(await small.nonces.consumeOnce('agency\u0000short-3', later, now), true);
      assert.equal(await admin.zcard('bounded:nonces:agency'), 1, 'the expired entries left the count');
      // challenges: a fourth minted drops bank's own oldest, key and all; the others are taken once
      for (let i = 0; i < 4; i++) await small.challenges.remember(`bank\u0000c-${i}`, later + i, now);
      await small.challenges.remember('hospital\u0000c-0', later, now);
      assert.deepEqual(await Promise.all([0, 1, 2, 3].map((i) => small.challenges.take(`bank\u0000c-${i}`, now))), [false, true, true, true]);
      assert.equal(await small.challenges.take('bank\u0000c-1', now), false, 'taken once');
      assert.equal(await small.challenges.take('hospital\u0000c-0', now), true);
      assert.equal(await admin.zcard('bounded:challenges:bank'), 0, 'taken ones leave the count');
      // one that would be the first to go (it expires before the others) when the bound is reached is refused, not kept unusable
      for (let i = 4; i < 7; i++) await small.challenges.remember(`bank\u0000c-${i}`, later, now);
      await assert.rejects(small.challenges.remember('bank\u0000c-early', now + 1_000, now), (e: unknown) => isPavilionError(e, ErrorCodes.CREDENTIAL_STATE_UNAVAILABLE));
      // Redis's own expiry ends an entry
      await small.challenges.remember('hospital\u0000c-short', Date.now() + 50, Date.now());
      await new Promise((r) => setTimeout(r, 150));
      assert.equal(await small.challenges.take('hospital\u0000c-short', Date.now()), false, 'an expired challenge is not taken');
      // the keys are the ones earlier versions write and read: each sees the other's
      await admin.set(`bounded:nonce:${sha256Hex('bank\u0000old-nonce')}`, '1', 'PX', 60_000);
      assert.equal(await small.nonces.consumeOnce('bank\u0000old-nonce', later, now), false, 'used by an earlier replica: a replay');
      assert.equal(await admin.exists(`bounded:nonce:${sha256Hex('hospital\u0000n-0')}`), 1, 'used here: seen by an earlier replica');
      await admin.set(`bounded:challenge:${sha256Hex('hospital\u0000old-challenge')}`, '1', 'PX', 60_000);
      assert.equal(await small.challenges.take('hospital\u0000old-challenge', now), true);
      assert.equal(await small.challenges.take('hospital\u0000old-challenge', now), false);
    } finally {
      admin.disconnect();
      await small.stop();
    }
  });

  it('says WARN when Redis may evict (a maxmemory-policy other than noeviction): an evicted nonce could be replayed', async () => {
    const { Redis } = await import('ioredis');
    const admin = new Redis(redis.url);
    const state = new RedisSharedState(redisConfig(redis.url));
    try {
      await until('noeviction reported', async () => {
        if (state.status().details?.['connection'] !== 'ready') await state.start();
        return state.status().details?.['maxmemory_policy'] === 'noeviction';
      }, 5000);
      assert.equal(state.status().state, 'OK');
      await state.stop();
      await admin.config('SET', 'maxmemory-policy', 'allkeys-lru');
      const evicting = new RedisSharedState(redisConfig(redis.url));
      await evicting.start();
      try {
        await until('the policy reported', () => evicting.status().details?.['maxmemory_policy'] === 'allkeys-lru', 5000);
        assert.equal(evicting.status().state, 'WARN');
        assert.match(evicting.status().message ?? '', /maxmemory-policy is allkeys-lru: .*replayed; set noeviction/);
      } finally {
        await evicting.stop();
      }
    } finally {
      await admin.config('SET', 'maxmemory-policy', 'noeviction');
      admin.disconnect();
      await state.stop();
    }
  });

  it('the credential gate uses Redis when configured and reports it', async () => {
    const gate = new CredentialGate({
      policies: [policy()],
      refreshIntervalMs: 60_000,
      maxCredentialsPerRequest: 4,
      proofWorkers: 0,
      proofJobTimeoutMs: 5000,
      redis: redisConfig(redis.url),
    });
    await gate.start();
    try {
      await until('gate ready', () => gate.status().state === 'OK', 5000);
      assert.equal((gate.status().details as Record<string, unknown>)['oneTimeState'], 'redis');
      const { challenge } = await gate.issueChallenge('bank');
      assert.match(challenge, /^[A-Za-z0-9_-]{22}$/);
    } finally {
      await gate.stop();
    }
  });
});

describe('redis config', () => {
  it('from the section or PAVILION_REDIS_URL / PAVILION_REDIS_PASSWORD; a bad URL or an unknown key is refused', () => {
    const fromEnv = parseConfig({}, process.cwd(), { PAVILION_REDIS_URL: 'rediss://cache.example:6380', PAVILION_REDIS_PASSWORD: 's3cret' }).redis;
    assert.deepEqual(fromEnv, { url: 'rediss://cache.example:6380', password: 's3cret', keyPrefix: 'pavilion', connectTimeoutMs: 2000, commandTimeoutMs: 500, maxEntriesPerTenant: 100_000 });
    assert.equal(parseConfig({}).redis, undefined, 'absent: in memory');
    for (const bad of [{ url: 'http://x' }, { url: 'redis://x', keyPrefix: 'has space' }, { url: 'redis://x', extra: 1 }, { url: 'redis://x', maxEntriesPerTenant: 0 }]) {
      assert.throws(() => parseConfig({ redis: bad }), (error: unknown) => isPavilionError(error, ErrorCodes.CONFIG_INVALID));
    }
  });
});
