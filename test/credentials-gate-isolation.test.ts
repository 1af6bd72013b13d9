/**
 * The gate's first fetch of HTTP(S) status lists (`statusListUrls`), tenant by tenant, against
 * real loopback servers: tenant-a's issuer host accepts the connection and never answers, tenant-b's
 * answers. tenant-b's list is fetched (its credentials verify) while tenant-a's fetch still hangs,
 * at start and on the refresh ticks; ticks never fetch tenant-a's list twice at once; health names
 * only lists still missing; stop() ends the fetch in flight.
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, beforeEach, describe, it } from 'node:test';
import { CredentialGate } from '../sidecar/src/credentials/index.ts';
import type { SampleKey } from '../sidecar/src/credentials/samples.ts';
import { ErrorCodes } from '../sidecar/src/lib/errors.ts';
import { NOW_MS, keys, kycCredential, policy, signed, signedStatusList, trusting } from './credentials/fixtures.ts';
import { until } from './harness/wait.ts';

const TTL_MS = 60_000;
const MAX_AGE_MS = 600_000;

/** An issuer's status host on loopback: answers 503, answers the list, or takes the request and never answers. */
class StatusHost {
  mode: 'fail' | 'answer' | 'hang' = 'answer';
  body = '';
  /** Requests received, and those left hanging (with whether the client closed them). */
  requests = 0;
  readonly hanging: Array<{ res: ServerResponse; closed: boolean }> = [];
  #server: Server | undefined;
  url = '';

  async listen(): Promise<void> {
    this.#server = createServer((req: IncomingMessage, res: ServerResponse) => {
      this.requests++;
      if (this.mode === 'fail') {
        res.writeHead(503, { 'content-type': 'text/plain' });
        res.end('later');
      } else if (this.mode === 'answer') {
        res.writeHead(200, { 'content-type': 'application/vc+ld+json' });
        res.end(this.body);
      } else {
        const held = { res, closed: false };
        req.socket.once('close', () => {
          held.closed = true;
        });
        this.hanging.push(held);
      }
    });
    await new Promise<void>((resolve) => this.#server!.listen(0, '127.0.0.1', () => resolve()));
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}/lists/1`;
  }

  reset(): void {
    this.mode = 'answer';
    this.requests = 0;
    for (const held of this.hanging.splice(0)) held.res.destroy();
  }

  /** Answer the requests left hanging with the list. */
  release(): void {
    for (const held of this.hanging) {
      held.res.writeHead(200, { 'content-type': 'application/vc+ld+json' });
      held.res.end(this.body);
    }
  }

  async close(): Promise<void> {
    this.reset();
    this.#server?.closeAllConnections();
    await new Promise((resolve) => this.#server?.close(resolve));
  }
}

async function statusList(issuer: SampleKey, url: string): Promise<string> {
  return JSON.stringify(await signedStatusList(issuer, url));
}

function entry(url: string): Record<string, unknown> {
  return { id: `${url}#6`, type: 'BitstringStatusListEntry', statusPurpose: 'revocation', statusListIndex: '6', statusListCredential: url };
}

describe('the gate fetches missing status lists tenant by tenant', () => {
  const hostA = new StatusHost();
  const hostB = new StatusHost();
  let issuer: SampleKey;
  let credentialA: Record<string, unknown>;
  let credentialB: Record<string, unknown>;

  before(async () => {
    ({ issuer } = await keys());
    await hostA.listen();
    await hostB.listen();
    hostA.body = await statusList(issuer, hostA.url);
    hostB.body = await statusList(issuer, hostB.url);
    credentialA = await signed(kycCredential(issuer.did, { credentialStatus: entry(hostA.url) }), issuer);
    credentialB = await signed(kycCredential(issuer.did, { credentialStatus: entry(hostB.url) }), issuer);
  });

  beforeEach(() => {
    hostA.reset();
    hostB.reset();
  });

  after(async () => {
    await hostA.close();
    await hostB.close();
  });

  /** tenant-a (listed first) fetches from host A, tenant-b from host B; the clock is `clock`. */
  function gateFor(refreshIntervalMs: number, clock: () => number): CredentialGate {
    const raw = (url: string): Record<string, unknown> => ({ ...trusting(issuer.did), statusLists: { ttlMs: TTL_MS, maxAgeMs: MAX_AGE_MS }, statusListUrls: [url] });
    return new CredentialGate({
      policies: [policy(raw(hostA.url), 'tenant-a'), policy(raw(hostB.url), 'tenant-b')],
      refreshIntervalMs,
      maxCredentialsPerRequest: 4,
      proofWorkers: 0,
      proofJobTimeoutMs: 5_000,
      clock,
    });
  }

  /** The codes a request of `tenant` carrying `credential` gets (none: verified). */
  async function refusals(gate: CredentialGate, tenant: string, credential: Record<string, unknown>): Promise<string[]> {
    const input = await gate.prepareInput(tenant, {}, [credential], {}) as { credentials: unknown[]; credential_errors: Array<{ code: string }> };
    return input.credential_errors.map((e) => e.code);
  }

  async function verifies(gate: CredentialGate, tenant: string, credential: Record<string, unknown>): Promise<boolean> {
    return (await refusals(gate, tenant, credential)).length === 0;
  }

  it('at start: tenant-b\'s list is fetched while tenant-a\'s host holds the first round; stop() ends that round', { timeout: 30_000 }, async () => {
    hostA.mode = 'hang';
    const gate = gateFor(60_000, () => NOW_MS);
    let started = false;
    const starting = gate.start().then(() => {
      started = true;
    });
    try {
      await until('host A has the request', () => hostA.hanging.length === 1, 5_000);
      // host A will not answer for the fetch's 10 s; tenant-b's list must not wait for it
      await until('tenant-b\'s credential verifies', () => verifies(gate, 'tenant-b', credentialB), 5_000);
      assert.equal(hostB.requests, 1);
      assert.equal(started, false, 'start() still waits for tenant-a\'s fetch');
      assert.deepEqual(await refusals(gate, 'tenant-a', credentialA), [ErrorCodes.CREDENTIAL_STATUS_UNAVAILABLE]);
      const status = gate.status();
      assert.equal(status.state, 'WARN');
      assert.match(status.message ?? '', /^1 status lists could not be fetched yet/);
      assert.doesNotMatch(status.message ?? '', /tenant-b/);
      assert.equal(hostA.requests, 1);
    } finally {
      await gate.stop();
    }
    await starting;
    assert.equal(started, true, 'start() returns once stop() aborted the first round');
    await until('the hanging fetch is closed', () => hostA.hanging.every((h) => h.closed), 5_000);
    const counts = [hostA.requests, hostB.requests];
    await sleep(150);
    assert.deepEqual([hostA.requests, hostB.requests], counts, 'nothing is fetched after stop()');
  });

  it('on the ticks: tenant-a\'s hanging fetch is never started twice, tenant-b\'s list is fetched meanwhile, health names only what is missing', { timeout: 30_000 }, async () => {
    hostA.mode = 'fail';
    hostB.mode = 'fail';
    const gate = gateFor(25, () => NOW_MS);
    await gate.start();
    try {
      assert.equal(gate.status().state, 'WARN');
      assert.match(gate.status().message ?? '', /^2 status lists could not be fetched yet/);
      hostA.mode = 'hang';
      await until('host A has a request', () => hostA.hanging.length === 1, 5_000);
      hostB.mode = 'answer';
      await until('tenant-b\'s credential verifies', () => verifies(gate, 'tenant-b', credentialB), 5_000);
      await sleep(300); // a dozen ticks
      assert.equal(hostA.hanging.length, 1, 'one fetch of tenant-a\'s list at a time, however many ticks');
      assert.equal(hostA.hanging[0]!.closed, false);
      const status = gate.status();
      assert.equal(status.state, 'WARN');
      assert.match(status.message ?? '', /^1 status lists could not be fetched yet; .*\(tenant-a: .*HTTP 503/);
      assert.doesNotMatch(status.message ?? '', /tenant-b/, 'tenant-b\'s list is held: its old error is not reported');
      assert.deepEqual(await refusals(gate, 'tenant-a', credentialA), [ErrorCodes.CREDENTIAL_STATUS_UNAVAILABLE]);

      // host A answers at last: that fetch admits the list and the next ticks leave the tenant alone
      hostA.mode = 'answer';
      hostA.release();
      await until('health is OK', () => gate.status().state === 'OK', 5_000);
      assert.equal(await verifies(gate, 'tenant-a', credentialA), true);
      const counts = [hostA.requests, hostB.requests];
      await sleep(150);
      assert.deepEqual([hostA.requests, hostB.requests], counts, 'lists held and fresh are not fetched again');
    } finally {
      await gate.stop();
    }
  });

  it('on the ticks: tenant-b\'s first fetch does not wait for tenant-a\'s refresh stuck on its host', { timeout: 30_000 }, async () => {
    hostB.mode = 'fail';
    let now = NOW_MS;
    const intervalMs = 3_000;
    const gate = gateFor(intervalMs, () => now);
    await gate.start();
    try {
      assert.equal(await verifies(gate, 'tenant-a', credentialA), true, 'tenant-a\'s list was fetched at start');
      // by the first tick tenant-a's list is past its TTL, and its host no longer answers
      now += TTL_MS + 1;
      hostA.mode = 'hang';
      hostB.mode = 'answer';
      await until('the first tick refreshes tenant-a', () => hostA.hanging.length === 1, 2 * intervalMs);
      const tick = performance.now();
      await until('tenant-b\'s credential verifies', () => verifies(gate, 'tenant-b', credentialB), 2 * intervalMs);
      const waitedMs = performance.now() - tick;
      assert.ok(waitedMs < intervalMs / 2, `tenant-b's list was fetched on the same tick, not a later one (${Math.round(waitedMs)} ms)`);
      assert.equal(hostA.hanging[0]!.closed, false, 'tenant-a\'s refresh is still waiting');
    } finally {
      await gate.stop();
    }
    await until('stop() closed the refresh in flight', () => hostA.hanging.every((h) => h.closed), 5_000);
  });
});

describe('credential gate lifecycle', () => {
  it('a stop() while start() is still opening its proof workers leaves the gate stopped: no verifier set up after it, the workers closed', async () => {
    const { issuer } = await keys();
    const gate = new CredentialGate({
      policies: [policy(trusting(issuer.did), 'tenant-a')],
      refreshIntervalMs: 60_000,
      maxCredentialsPerRequest: 4,
      proofWorkers: 1,
      proofJobTimeoutMs: 5_000,
    });
    const starting = gate.start(); // awaits the proof worker's start
    await gate.stop();
    await starting;
    assert.equal(gate.status().state, 'NOT_READY', JSON.stringify(gate.status()));
    await gate.stop(); // and stopping again is harmless
  });
});
