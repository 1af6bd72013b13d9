/**
 * Freshness rules and the one-time stores, as pure units: strict dates, skew bound, per-type
 * maximum age, and nonces/challenges that are accepted once and bounded in memory.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { MAX_CLOCK_SKEW_MS, checkFreshness, parseDateTime, parseNumericDate } from '../sidecar/src/credentials/freshness.ts';
import { MemoryChallengeStore, MemoryNonceStore } from '../sidecar/src/credentials/nonce-store.ts';
import { rejectsWith } from './credentials/fixtures.ts';

const NOW = Date.parse('2026-06-01T12:00:00Z');
const DAY = 86_400_000;
const policy = { clockSkewMs: 60_000, maxAgeMsByType: { KycCredential: 30 * DAY, Strict: DAY } };

describe('freshness', () => {
  it('accepts XML Schema dateTimes with a zone only', async () => {
    assert.equal(parseDateTime('2026-06-01T12:00:00Z', 'd'), NOW);
    assert.equal(parseDateTime('2026-06-01T14:00:00.5+02:00', 'd'), NOW + 500);
    for (const bad of ['2026-06-01', '2026-06-01T12:00:00', '2026-13-01T00:00:00Z', '1717243200', 'tomorrow', 20260601]) {
      await rejectsWith(() => parseDateTime(bad, 'd'), ErrorCodes.CREDENTIAL_MALFORMED);
    }
    assert.equal(parseNumericDate(1, 'iat'), 1000);
    await rejectsWith(() => parseNumericDate('1', 'iat'), ErrorCodes.CREDENTIAL_MALFORMED);
    await rejectsWith(() => parseNumericDate(-5, 'iat'), ErrorCodes.CREDENTIAL_MALFORMED);
  });

  it('applies the skew symmetrically and caps it', async () => {
    checkFreshness({ validUntilMs: NOW - 59_000 }, [], NOW, policy);
    await rejectsWith(() => checkFreshness({ validUntilMs: NOW - 61_000 }, [], NOW, policy), ErrorCodes.CREDENTIAL_EXPIRED);
    checkFreshness({ validFromMs: NOW + 59_000 }, [], NOW, policy);
    await rejectsWith(() => checkFreshness({ validFromMs: NOW + 61_000 }, [], NOW, policy), ErrorCodes.CREDENTIAL_NOT_YET_VALID);
    await rejectsWith(() => checkFreshness({ issuedAtMs: NOW + 61_000 }, [], NOW, policy), ErrorCodes.CREDENTIAL_NOT_YET_VALID);
    // a configured skew of a day is capped at MAX_CLOCK_SKEW_MS
    await rejectsWith(() => checkFreshness({ validUntilMs: NOW - MAX_CLOCK_SKEW_MS - 1 }, [], NOW, { ...policy, clockSkewMs: DAY }), ErrorCodes.CREDENTIAL_EXPIRED);
    await rejectsWith(() => checkFreshness({ validFromMs: NOW, validUntilMs: NOW - 1 }, [], NOW, policy), ErrorCodes.CREDENTIAL_MALFORMED);
  });

  it('takes the strictest maximum age of a credential\'s types, and fails closed without an issuance time', async () => {
    checkFreshness({ issuedAtMs: NOW - 10 * DAY }, ['KycCredential'], NOW, policy);
    await rejectsWith(() => checkFreshness({ issuedAtMs: NOW - 10 * DAY }, ['KycCredential', 'Strict'], NOW, policy), ErrorCodes.CREDENTIAL_TOO_OLD);
    await rejectsWith(() => checkFreshness({}, ['KycCredential'], NOW, policy), ErrorCodes.CREDENTIAL_TOO_OLD);
    checkFreshness({}, ['Other'], NOW, policy);
    await rejectsWith(() => checkFreshness({ validFromMs: NOW - 2 * DAY }, ['Other'], NOW, { ...policy, defaultMaxAgeMs: DAY }), ErrorCodes.CREDENTIAL_TOO_OLD);
  });
});

describe('one-time stores', () => {
  it('a nonce is accepted once until it expires, and the store stays bounded', async () => {
    const store = new MemoryNonceStore(3);
    assert.equal(await store.consumeOnce('a', NOW + 1000, NOW), true);
    assert.equal(await store.consumeOnce('a', NOW + 1000, NOW + 500), false);
    assert.equal(await store.consumeOnce('a', NOW + 3000, NOW + 1001), true, 'an expired record no longer blocks');
    for (const key of ['b', 'c']) assert.equal(await store.consumeOnce(key, NOW + 10_000, NOW), true);
    // full of live entries: a new one is refused (fail closed), none is forgotten
    for (const key of ['d', 'e']) {
      await assert.rejects(store.consumeOnce(key, NOW + 10_000, NOW), (e: unknown) => isPavilionError(e) && e.code === ErrorCodes.CREDENTIAL_STATE_UNAVAILABLE);
    }
    assert.equal(store.size, 3);
    assert.equal(await store.consumeOnce('b', NOW + 10_000, NOW), false, 'b is still remembered');
  });

  it('the bound is per tenant: a flood that fills one tenant\'s share refuses that tenant only', async () => {
    const store = new MemoryNonceStore(2);
    for (const n of ['n1', 'n2']) assert.equal(await store.consumeOnce(`bank\u0000d\u0000${n}`, NOW + 10_000, NOW), true);
    await assert.rejects(store.consumeOnce('bank\u0000d\u0000n3', NOW + 10_000, NOW), (e: unknown) => isPavilionError(e) && e.code === ErrorCodes.CREDENTIAL_STATE_UNAVAILABLE);
    assert.equal(await store.consumeOnce('hospital\u0000d\u0000n1', NOW + 10_000, NOW), true, 'another tenant is not affected');
    assert.equal(await store.consumeOnce('bank\u0000d\u0000n3', NOW + 20_000, NOW + 10_001), true, 'room again once the flood expires');
  });

  it('a minted challenge is taken once, before it expires', async () => {
    const store = new MemoryChallengeStore(2);
    await store.remember('x', NOW + 1000, NOW);
    assert.equal(await store.take('x', NOW), true);
    assert.equal(await store.take('x', NOW), false);
    await store.remember('y', NOW + 1000, NOW);
    assert.equal(await store.take('y', NOW + 1001), false);
    await store.remember('p', NOW + 1000, NOW);
    await store.remember('q', NOW + 1000, NOW);
    await store.remember('r', NOW + 1000, NOW);
    assert.equal(await store.take('p', NOW), false, 'the oldest challenge was dropped when full');
    assert.equal(await store.take('r', NOW), true);
  });

  it('the challenge bound is per tenant: minting a full share for one tenant drops none of another tenant\'s', async () => {
    const store = new MemoryChallengeStore(2);
    await store.remember('hospital\u0000h1', NOW + 1000, NOW);
    for (const c of ['b1', 'b2', 'b3', 'b4']) await store.remember(`bank\u0000${c}`, NOW + 1000, NOW);
    assert.equal(await store.take('hospital\u0000h1', NOW), true, 'the other tenant\'s challenge survives the flood');
    assert.equal(await store.take('bank\u0000b2', NOW), false, 'the flooding tenant loses its own oldest');
    assert.equal(await store.take('bank\u0000b4', NOW), true);
  });

  it('the challenges of all tenants together are bounded too: the tenant holding the most loses its oldest', async () => {
    const store = new MemoryChallengeStore(10, 4);
    for (const c of ['b1', 'b2', 'b3']) await store.remember(`bank\u0000${c}`, NOW + 1000, NOW);
    await store.remember('hospital\u0000h1', NOW + 1000, NOW);
    await store.remember('hospital\u0000h2', NOW + 1000, NOW); // 5th: bank, holding 3, gives up b1
    assert.equal(await store.take('bank\u0000b1', NOW), false);
    for (const key of ['bank\u0000b2', 'bank\u0000b3', 'hospital\u0000h1', 'hospital\u0000h2']) assert.equal(await store.take(key, NOW), true, key);
  });

  it('expired challenges at the front of a share leave before a live one is dropped', async () => {
    const store = new MemoryChallengeStore(2);
    await store.remember('bank\u0000old', NOW + 10, NOW);
    await store.remember('bank\u0000live', NOW + 1000, NOW);
    await store.remember('bank\u0000new', NOW + 1000, NOW + 20);
    assert.equal(await store.take('bank\u0000live', NOW + 20), true, 'the expired one made the room');
    assert.equal(await store.take('bank\u0000new', NOW + 20), true);
  });
});
