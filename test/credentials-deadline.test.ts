/**
 * One deadline for the verification of a request's credentials (the tenant's `verifyTimeoutMs`).
 * Every step of a credential check has a timeout of its own (a Redis command, a proof job and its
 * wait for a worker); without one for the request, a request carrying many credentials waited
 * for the sum of them. The slow step here is a real redis-server holding every command
 * (`CLIENT PAUSE ... ALL`), and status lists from a real HTTP server on 127.0.0.1 that never
 * answers. Bound by counts and by generous "answered before" limits, never by measured durations.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { parseConfig } from '../sidecar/src/config/index.ts';
import { CredentialGate, InlineProofExecutor, MemoryNonceStore } from '../sidecar/src/credentials/index.ts';
import { HttpStatusListSource } from '../sidecar/src/credentials/http-status-list.ts';
import { RedisSharedState } from '../sidecar/src/credentials/redis-shared-state.ts';
import { ErrorCodes } from '../sidecar/src/lib/errors.ts';
import { CHALLENGE, DOMAIN, NOW_MS, issuerLoader, keys, kycCredential, policy, presentDataIntegrity, rejectsWith, signed, trusting, verifier } from './credentials/fixtures.ts';
import { startRedis, type RunningRedis } from './harness/redis-server.ts';
import { until } from './harness/wait.ts';

const binding = { challenge: CHALLENGE, domain: DOMAIN };

/** The inline executor, counting the proof jobs the verifier hands it. */
class CountingProofExecutor extends InlineProofExecutor {
  readonly counts: [presentationProofs: number, credentialProofs: number] = [0, 0];
  override async verifyPresentationProof(...args: Parameters<InlineProofExecutor['verifyPresentationProof']>): ReturnType<InlineProofExecutor['verifyPresentationProof']> {
    this.counts[0]++;
    return super.verifyPresentationProof(...args);
  }
  override async verifyCredentialProof(...args: Parameters<InlineProofExecutor['verifyCredentialProof']>): ReturnType<InlineProofExecutor['verifyCredentialProof']> {
    this.counts[1]++;
    return super.verifyCredentialProof(...args);
  }
}

/** `work`, or a failure naming `what` once `limitMs` has passed (so a test on the old code ends). */
async function answeredWithin<T>(what: string, limitMs: number, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new assert.AssertionError({ message: `${what}: no answer within ${limitMs} ms` })), limitMs);
  });
  try {
    return await Promise.race([work, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** The bank trusting the sample issuer, and `count` presentations of a credential about its holder, all for one challenge. */
async function presentations(count: number) {
  const k = await keys();
  const credential = await signed(kycCredential(k.issuer.did, { credentialSubject: { id: k.holder.did, kycLevel: 'full' } }), k.issuer);
  const one = await presentDataIntegrity([credential], k.holder, binding, issuerLoader());
  return { ...k, credential, presented: Array.from({ length: count }, () => structuredClone(one)) };
}

describe('(guard) a status list server that never answers costs a request nothing (status is never fetched on the request path)', () => {
  let server: Server;
  let asked = 0;
  let url: string;

  before(async () => {
    server = createServer(() => {
      asked++; // and never answers
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/lists/1`;
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it('twenty credentials naming that list: each refused STATUS_UNAVAILABLE at once, and the server is never asked', async () => {
    const { issuer, holder } = await keys();
    const v = await verifier({ ...trusting(issuer.did), statusListUrls: [url] }, { statusListSource: new HttpStatusListSource({ urls: [url], timeoutMs: 60_000 }) });
    const status = { type: 'BitstringStatusListEntry', statusPurpose: 'revocation', statusListIndex: '7', statusListCredential: url };
    const credential = await signed(kycCredential(issuer.did, { credentialSubject: { id: holder.did, kycLevel: 'full' }, credentialStatus: status }), issuer);
    const { credentials, errors } = await answeredWithin('twenty credentials', 10_000, v.verifyEach('bank', Array.from({ length: 20 }, () => credential)));
    assert.deepEqual(credentials, []);
    assert.deepEqual(errors.map((e) => e.code), Array.from({ length: 20 }, () => ErrorCodes.CREDENTIAL_STATUS_UNAVAILABLE));
    assert.equal(asked, 0);
  });
});

describe('one deadline for a request\'s credentials: a real Redis that holds every command', () => {
  let redis: RunningRedis;
  let admin: Redis;

  before(async () => {
    redis = await startRedis();
    admin = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 0 });
    await admin.connect();
  });

  after(async () => {
    admin?.disconnect();
    await redis?.stop();
  });

  /** Hold every client's commands (this one's too) for `ms`; Redis runs them when the pause ends. */
  async function pauseRedis(ms: number): Promise<void> {
    await admin.call('CLIENT', 'PAUSE', String(ms), 'ALL');
  }

  it('eight presentations through the gate, each waiting on a 2 s Redis command: answered by the 500 ms verifyTimeoutMs, every one refused DEADLINE_EXCEEDED (not after 8 x 2 s)', async () => {
    const { presented } = await presentations(8);
    const gate = new CredentialGate({
      policies: [policy({ ...trusting((await keys()).issuer.did), domain: DOMAIN, verifyTimeoutMs: 500 })],
      refreshIntervalMs: 60_000,
      maxCredentialsPerRequest: 32,
      proofWorkers: 0,
      proofJobTimeoutMs: 5_000,
      redis: parseConfig({ redis: { url: redis.url, commandTimeoutMs: 2_000, connectTimeoutMs: 1_000 } }).redis!,
      clock: () => NOW_MS,
    });
    await gate.start();
    try {
      await until('gate ready', () => gate.status().state === 'OK', 5_000);
      await pauseRedis(60_000);
      const input = await answeredWithin('the request', 8_000, gate.prepareInput('bank', {}, presented, { challenge: CHALLENGE })) as Record<string, unknown>;
      assert.deepEqual(input['credentials'], []);
      const errors = input['credential_errors'] as Array<{ index: number; code: string }>;
      assert.deepEqual(errors.map((e) => [e.index, e.code]), presented.map((_, i) => [i, ErrorCodes.CREDENTIAL_DEADLINE_EXCEEDED]));
    } finally {
      await redis.kill(); // ends the pause: the gate's connection closes at once
      await gate.stop();
      await redis.restart();
      await admin.connect().catch(() => undefined);
    }
  });

  it('past the deadline the presentation in flight starts no further step: once its Redis look-up returns, no holder proof, no credential proof, no challenge used', async () => {
    const shared = new RedisSharedState(parseConfig({ redis: { url: redis.url, commandTimeoutMs: 10_000, connectTimeoutMs: 1_000 } }).redis!);
    await shared.start();
    await until('admin connected', () => admin.status === 'ready', 5_000);
    try {
      const { issuer, presented } = await presentations(2);
      const executor = new CountingProofExecutor();
      const v = await verifier({ ...trusting(issuer.did), domain: DOMAIN }, { executor, nonces: shared.nonces, challenges: shared.challenges });
      await pauseRedis(1_500);
      const { credentials, errors } = await answeredWithin('the request', 8_000, v.verifyEach('bank', presented, { ...binding, signal: AbortSignal.timeout(300) }));
      assert.deepEqual(credentials, []);
      assert.deepEqual(errors.map((e) => [e.index, e.code]), [[0, ErrorCodes.CREDENTIAL_DEADLINE_EXCEEDED], [1, ErrorCodes.CREDENTIAL_DEADLINE_EXCEEDED]]);
      // the pause ends and the look-up in flight is answered ("not used"): the work behind it
      // would go on to the holder proof and use the challenge up, were it not stopped
      await until('the paused look-up answered', async () => /cmdstat_exists:calls=[1-9]/.test(String(await admin.call('INFO', 'commandstats'))), 10_000);
      await until('a round trip after it', async () => (await admin.ping()) === 'PONG', 5_000);
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.deepEqual(executor.counts, [0, 0]);
      assert.equal(await admin.dbsize(), 0, 'no challenge used up');
    } finally {
      await shared.stop();
    }
  });

  it('(guard) within the deadline nothing changes: a presentation and its copy in one request are accepted (one use of the challenge), a later copy is REPLAYED', async () => {
    const { issuer, presented } = await presentations(2);
    const v = await verifier({ ...trusting(issuer.did), domain: DOMAIN }, { nonces: new MemoryNonceStore() });
    const { credentials, errors } = await v.verifyEach('bank', presented, { ...binding, signal: AbortSignal.timeout(60_000) });
    assert.equal(credentials.length, 2);
    assert.deepEqual(errors, []);
    await rejectsWith(v.verifyPresentation('bank', presented[0], binding), ErrorCodes.CREDENTIAL_REPLAYED);
  });
});

describe('verifyTimeoutMs', () => {
  it('per tenant, 5000 ms by default, from 10 ms to 60 s; anything else is refused', async () => {
    assert.equal(policy().verifyTimeoutMs, 5_000);
    assert.equal(policy({ verifyTimeoutMs: 250 }).verifyTimeoutMs, 250);
    for (const bad of [0, 9, 60_001, 1.5, '1000']) {
      await rejectsWith(() => policy({ verifyTimeoutMs: bad }), ErrorCodes.CONFIG_INVALID);
    }
  });
});
