/**
 * Status refresh isolation: tenants are refreshed side by side, so an issuer host that does not
 * answer holds up only its own tenant; a tenant's refresh never overlaps itself (a tick while it
 * runs skips it); stopping the gate ends a refresh in flight; and whatever one tenant's refresh
 * runs into, even a step that throws, is that tenant's failure alone.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { ErrorCodes, PavilionError } from '../sidecar/src/lib/errors.ts';
import { CredentialGate, CredentialVerifier, type StatusListSource } from '../sidecar/src/credentials/index.ts';
import { issueSdJwtVc, issueTokenStatusList, type SampleKey } from '../sidecar/src/credentials/samples.ts';
import { NOW_MS, keys, kycCredential, policy, rejectsWith, signed, signedStatusList, trusting } from './credentials/fixtures.ts';

const LIST_A = 'https://status.a.example/lists/1';
const LIST_B = 'https://status.b.example/lists/1';
const TOKEN_A = 'https://status.a.example/tokens/1';
const TTL_MS = 60_000;
const MAX_AGE_MS = 600_000;

function statusList(issuer: SampleKey, url: string): Promise<Record<string, unknown>> {
  return signedStatusList(issuer, url);
}

function token(issuer: SampleKey, uri: string): string {
  return issueTokenStatusList(issuer, uri, { bits: 1, size: 64, values: new Map(), iatSeconds: Math.floor(NOW_MS / 1000) });
}

/** A status source: some URLs never answer (until the fetch is aborted), the others answer at once; every fetch is counted. */
function source(answers: ReadonlyMap<string, unknown>): StatusListSource & { fetched: Map<string, number>; aborted: string[] } {
  const fetched = new Map<string, number>();
  const aborted: string[] = [];
  return {
    fetched,
    aborted,
    fetch: (url: string, signal: AbortSignal) => {
      fetched.set(url, (fetched.get(url) ?? 0) + 1);
      if (answers.has(url)) return Promise.resolve(answers.get(url));
      return new Promise((_, reject) => {
        const abort = (): void => {
          aborted.push(url);
          reject(signal.reason);
        };
        if (signal.aborted) abort();
        else signal.addEventListener('abort', abort, { once: true });
      });
    },
  };
}

function statusSettings(): Record<string, unknown> {
  return { statusLists: { ttlMs: TTL_MS, maxAgeMs: MAX_AGE_MS } };
}

function entry(url: string): Record<string, unknown> {
  return { id: `${url}#6`, type: 'BitstringStatusListEntry', statusPurpose: 'revocation', statusListIndex: '6', statusListCredential: url };
}

/** Poll `check` until it passes or `ms` elapse (then throw its last error). */
async function eventually(check: () => Promise<unknown>, ms: number): Promise<void> {
  const deadline = performance.now() + ms;
  for (;;) {
    try {
      await check();
      return;
    } catch (error) {
      if (performance.now() > deadline) throw error;
      await sleep(25);
    }
  }
}

describe('status list refresh, tenant by tenant', () => {
  it('refreshes another tenant\'s lists while one tenant\'s issuer host does not answer', { timeout: 30_000 }, async () => {
    const { issuer } = await keys();
    const fresh = await statusList(issuer, LIST_B);
    const src = source(new Map([[LIST_B, fresh]]));
    const raw = { ...trusting(issuer.did), ...statusSettings() };
    const v = await CredentialVerifier.create([policy(raw, 'tenant-a'), policy(raw, 'tenant-b')], { clock: () => NOW_MS, statusListSource: src });
    await v.admitStatusList('tenant-a', LIST_A, await statusList(issuer, LIST_A), NOW_MS);
    await v.admitStatusList('tenant-b', LIST_B, fresh, NOW_MS);
    const credential = await signed(kycCredential(issuer.did, { credentialStatus: entry(LIST_B) }), issuer);
    // past the max age of the lists admitted at NOW_MS, within it for lists refreshed at refreshAt
    const refreshAt = NOW_MS + TTL_MS + 1;
    const later = NOW_MS + MAX_AGE_MS + 10_000;
    await rejectsWith(v.verify('tenant-b', credential, { nowMs: later }), ErrorCodes.CREDENTIAL_STATUS_STALE);

    const stop = new AbortController();
    let ended = false;
    const run = v.refreshStatusLists(stop.signal, refreshAt).finally(() => {
      ended = true;
    });
    try {
      // tenant-a's host hangs; tenant-b's list is refreshed meanwhile
      await eventually(() => v.verify('tenant-b', credential, { nowMs: later }), 5_000);
      assert.equal(src.fetched.get(LIST_B), 1);
      assert.equal(ended, false, 'the run still waits for tenant-a');
    } finally {
      stop.abort();
    }
    const failures = await run;
    assert.deepEqual(failures.map((f) => [f.tenantId, f.url, f.error.code]), [['tenant-a', LIST_A, ErrorCodes.CREDENTIAL_STATUS_UNAVAILABLE]]);
    assert.deepEqual(src.aborted, [LIST_A]);
  });

  it('does not start a second refresh of a tenant while one runs: the second call skips it', { timeout: 30_000 }, async () => {
    const { issuer } = await keys();
    const src = source(new Map());
    const v = await CredentialVerifier.create([policy({ ...trusting(issuer.did), ...statusSettings() }, 'tenant-a')], { clock: () => NOW_MS, statusListSource: src });
    await v.admitTokenStatusList('tenant-a', TOKEN_A, token(issuer, TOKEN_A), NOW_MS);
    const stop = new AbortController();
    const first = v.refreshStatusLists(stop.signal, NOW_MS + TTL_MS + 1);
    try {
      await eventually(async () => assert.equal(src.fetched.get(TOKEN_A), 1), 5_000);
      const second = await Promise.race([v.refreshStatusLists(stop.signal, NOW_MS + 2 * TTL_MS + 2), sleep(2_000, 'still running')]);
      assert.deepEqual(second, [], 'skipped at once');
      assert.equal(src.fetched.get(TOKEN_A), 1);
    } finally {
      stop.abort();
    }
    assert.deepEqual((await first).map((f) => [f.tenantId, f.url]), [['tenant-a', TOKEN_A]]);
  });

  it('runs one refresh per tenant at a time: a call while one runs skips that tenant and refreshes the others', { timeout: 30_000 }, async () => {
    const { issuer } = await keys();
    const src = source(new Map<string, unknown>([[LIST_B, await statusList(issuer, LIST_B)]]));
    const raw = { ...trusting(issuer.did), ...statusSettings() };
    const v = await CredentialVerifier.create([policy(raw, 'tenant-a'), policy(raw, 'tenant-b')], { clock: () => NOW_MS, statusListSource: src });
    await v.admitTokenStatusList('tenant-a', TOKEN_A, token(issuer, TOKEN_A), NOW_MS);
    await v.admitStatusList('tenant-b', LIST_B, await statusList(issuer, LIST_B), NOW_MS);
    const credential = await signed(kycCredential(issuer.did, { credentialStatus: entry(LIST_B) }), issuer);
    const stop = new AbortController();
    const first = v.refreshStatusLists(stop.signal, NOW_MS + TTL_MS + 1);
    try {
      // tenant-b's refresh ended: its list is as fresh as that refresh
      await eventually(() => v.verify('tenant-b', credential, { nowMs: NOW_MS + MAX_AGE_MS + 10_000 }), 5_000);
      assert.equal(src.fetched.get(LIST_B), 1);
      // the next ticks, each past tenant-b's TTL again: tenant-a's refresh is still running
      for (const [i, at] of [NOW_MS + 2 * TTL_MS + 2, NOW_MS + 3 * TTL_MS + 3].entries()) {
        const tick = await Promise.race([v.refreshStatusLists(stop.signal, at), sleep(5_000, 'still running')]);
        assert.deepEqual(tick, [], 'returns once tenant-b is done, without waiting for tenant-a');
        assert.equal(src.fetched.get(TOKEN_A), 1, 'tenant-a is not fetched again while its refresh runs');
        assert.equal(src.fetched.get(LIST_B), i + 2);
      }
    } finally {
      stop.abort();
    }
    assert.deepEqual((await first).map((f) => [f.tenantId, f.url]), [['tenant-a', TOKEN_A]]);
    // once it ended, tenant-a is refreshed again, and its last failures are reported while it runs
    const again = new AbortController();
    const next = v.refreshStatusLists(again.signal, NOW_MS + 4 * TTL_MS + 4);
    await eventually(async () => assert.equal(src.fetched.get(TOKEN_A), 2), 5_000);
    assert.deepEqual((await v.refreshStatusLists(again.signal, NOW_MS + 4 * TTL_MS + 4)).map((f) => [f.tenantId, f.url]), [['tenant-a', TOKEN_A]]);
    again.abort();
    await next;
  });

  it('the gate\'s timer never overlaps a tenant\'s refresh, keeps refreshing the others, and stop() ends a refresh in flight', { timeout: 30_000 }, async () => {
    const { issuer } = await keys();
    const src = source(new Map<string, unknown>([[LIST_B, await statusList(issuer, LIST_B)]]));
    const raw = { ...trusting(issuer.did), ...statusSettings() };
    const started = performance.now();
    // each real millisecond is a second of the verifier's clock: every 25 ms tick is 25 s on
    const clock = (): number => NOW_MS + Math.round((performance.now() - started) * 1_000);
    const gate = new CredentialGate({ policies: [policy(raw, 'tenant-a'), policy(raw, 'tenant-b')], refreshIntervalMs: 25, maxCredentialsPerRequest: 4, proofWorkers: 0, proofJobTimeoutMs: 1_000, clock, statusListSource: src });
    await gate.start();
    let stopped = false;
    try {
      await gate.verifier.admitTokenStatusList('tenant-a', TOKEN_A, token(issuer, TOKEN_A), NOW_MS);
      await gate.verifier.admitStatusList('tenant-b', LIST_B, await statusList(issuer, LIST_B));
      await eventually(async () => assert.ok((src.fetched.get(LIST_B) ?? 0) >= 3, 'list B fetched at least three times'), 10_000);
      assert.equal(src.fetched.get(TOKEN_A), 1, 'one refresh of tenant-a at a time, however many ticks');
      await gate.stop();
      stopped = true;
      assert.deepEqual(src.aborted, [TOKEN_A], 'stop() aborted the refresh in flight');
      const after = new Map(src.fetched);
      await sleep(150);
      assert.deepEqual(src.fetched, after, 'nothing is fetched after stop()');
    } finally {
      if (!stopped) await gate.stop();
    }
  });

  it('a tenant whose refresh step throws gets that failure, for itself alone: the other tenants\' failures are still reported, its tokens still refreshed, and a call that skips it reports it', { timeout: 30_000 }, async () => {
    const { issuer } = await keys();
    // what a misbehaving source might reject with (no prototype, a BigInt inside): describeThrown
    // once threw on it, which made the status list refresh itself throw instead of reporting
    const undescribable = Object.assign(Object.create(null) as object, { bytes: 1n });
    let listAFetches = 0;
    const sources: Record<string, StatusListSource> = {
      'tenant-a': {
        fetch: async (url: string, signal: AbortSignal) => {
          if (url === TOKEN_A) return token(issuer, TOKEN_A);
          listAFetches++;
          if (listAFetches === 1) throw undescribable;
          // the next refresh waits (until aborted)
          return new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason), { once: true }));
        },
      },
      'tenant-b': {
        fetch: async (url: string) => {
          throw new PavilionError(ErrorCodes.CREDENTIAL_STATUS_UNAVAILABLE, `${url} does not answer`);
        },
      },
    };
    const raw = { ...trusting(issuer.did), ...statusSettings(), keyBinding: { required: false } };
    const v = await CredentialVerifier.create([policy(raw, 'tenant-a'), policy(raw, 'tenant-b')], { clock: () => NOW_MS, statusListSource: (tenantId) => sources[tenantId] });
    await v.admitStatusList('tenant-a', LIST_A, await statusList(issuer, LIST_A), NOW_MS);
    await v.admitTokenStatusList('tenant-a', TOKEN_A, token(issuer, TOKEN_A), NOW_MS);
    await v.admitStatusList('tenant-b', LIST_B, await statusList(issuer, LIST_B), NOW_MS);
    const codes = (failures: ReadonlyArray<{ tenantId: string; url?: string; error: PavilionError }>) => failures.map((f) => [f.tenantId, f.url, f.error.code]);

    const first = await v.refreshStatusLists(AbortSignal.timeout(5_000), NOW_MS + TTL_MS + 1);
    assert.deepEqual(codes(first), [['tenant-a', LIST_A, ErrorCodes.CREDENTIAL_STATUS_UNAVAILABLE], ['tenant-b', LIST_B, ErrorCodes.CREDENTIAL_STATUS_UNAVAILABLE]]);
    // tenant-a's token was refreshed all the same: past the admitted one's max age, its status is known
    const nowS = Math.floor(NOW_MS / 1000);
    const credential = await issueSdJwtVc({ iss: issuer.did, vct: 'KycCredential', iat: nowS - 3600, exp: nowS + 86_400, kyc_level: 'full', status: { status_list: { idx: 3, uri: TOKEN_A } } }, ['kyc_level'], issuer, undefined);
    assert.deepEqual((await v.verify('tenant-a', credential, { nowMs: NOW_MS + MAX_AGE_MS + 10_000 })).status.map((s) => s.mechanism), ['TokenStatusList']);

    // while tenant-a's next refresh waits, a call skips it and reports the failure recorded for it
    const stop = new AbortController();
    const second = v.refreshStatusLists(stop.signal, NOW_MS + 2 * TTL_MS + 2);
    try {
      await eventually(async () => assert.equal(listAFetches, 2), 5_000);
      const tick = await Promise.race([v.refreshStatusLists(stop.signal, NOW_MS + 2 * TTL_MS + 2), sleep(5_000, 'still running')]);
      assert.ok(Array.isArray(tick), 'returns without waiting for tenant-a');
      assert.deepEqual(codes(tick), codes(first));
    } finally {
      stop.abort();
    }
    assert.deepEqual(codes(await second), [['tenant-a', LIST_A, ErrorCodes.CREDENTIAL_STATUS_UNAVAILABLE], ['tenant-b', LIST_B, ErrorCodes.CREDENTIAL_STATUS_UNAVAILABLE]]);
  });
});
