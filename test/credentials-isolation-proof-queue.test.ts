/**
 * Tenant isolation in the proof worker queue: one tenant's slow proof jobs neither time out nor
 * fail another tenant's job (the deadline runs from when a worker takes a job, a timed-out job
 * fails alone, jobs are handed out round-robin by tenant), a tenant past its share of the queue
 * is refused for its own job only, and accumulator checks are queued under their tenant.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { ACCUMULATOR_ENTRY_TYPE, AccumulatorIssuer, CredentialVerifier, InlineProofExecutor, WorkerProofExecutor, encodeWitness, signAccumulatorState } from '../sidecar/src/credentials/index.ts';
import { jwsAlgorithm } from '../sidecar/src/credentials/samples.ts';
import { NOW_MS, keys, kycCredential, policy, signed, trusting, verifier } from './credentials/fixtures.ts';

/**
 * The real proof worker, behind a listener that first spins the CPU on a credential whose id
 * starts with `urn:slow:<ms>:` (a CPU-bound proof job that takes that long), then lets it be
 * verified as usual. A data: URL, so the test needs no extra file.
 */
function slowWorkerUrl(): URL {
  const source = `
import { parentPort } from 'node:worker_threads';
const { register } = await import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))});
register();
parentPort.on('message', ({ job }) => {
  const id = job.op === 'credential' ? job.credential?.id : undefined;
  const match = typeof id === 'string' ? /^urn:slow:(\\d+):/.exec(id) : null;
  if (match !== null) { const until = Date.now() + Number(match[1]); while (Date.now() < until); }
});
await import(${JSON.stringify(new URL('../sidecar/src/credentials/proof-worker.ts', import.meta.url).href)});
`;
  return new URL(`data:text/javascript,${encodeURIComponent(source)}`);
}

/** Two tenants trusting the same issuer, on one executor. */
async function twoTenants(executor: WorkerProofExecutor | InlineProofExecutor): Promise<CredentialVerifier> {
  const { issuer } = await keys();
  return CredentialVerifier.create([policy(trusting(issuer.did), 'tenant-a'), policy(trusting(issuer.did), 'tenant-b')], { clock: () => NOW_MS, executor });
}

/** Settle `work`, recording `name` and its outcome (ok or the error code) in `order` when it does. */
function track(order: string[], name: string, work: Promise<unknown>): Promise<unknown> {
  return work.then(
    () => order.push(`${name} ok`),
    (error: unknown) => {
      order.push(`${name} ${isPavilionError(error) ? error.code : String(error)}`);
      return error;
    },
  );
}

describe('proof worker queue, shared by tenants', () => {
  it('a flood of slow jobs from one tenant neither times out nor fails another tenant\'s job', { timeout: 60_000 }, async () => {
    const { issuer } = await keys();
    // tenant-a's jobs would each take 30 s of CPU; each is stopped at the 1 s deadline
    const executor = await WorkerProofExecutor.start({ workers: 1, jobTimeoutMs: 1_000, workerUrl: slowWorkerUrl() });
    try {
      const v = await twoTenants(executor);
      const slow = await Promise.all([1, 2, 3].map((i) => signed(kycCredential(issuer.did, { id: `urn:slow:30000:${i}` }), issuer)));
      const honest = await signed(kycCredential(issuer.did), issuer);
      const order: string[] = [];
      const started = performance.now();
      const flood = slow.map((credential, i) => track(order, `a${i + 1}`, v.verify('tenant-a', credential)));
      // queued behind a1 for longer than the job deadline (a1's second, then a worker restart)
      const b = track(order, 'b', v.verify('tenant-b', honest));
      await Promise.all([...flood, b]);
      const unavailable = ErrorCodes.CREDENTIAL_PROOF_UNAVAILABLE;
      // round-robin: b's turn comes before tenant-a's second job; each timeout fails its own job only
      assert.deepEqual(order, [`a1 ${unavailable}`, 'b ok', `a2 ${unavailable}`, `a3 ${unavailable}`]);
      assert.ok(performance.now() - started > 3_000, 'three jobs ran to their 1 s deadline');
      // the executor still serves both tenants
      assert.equal((await v.verify('tenant-a', honest)).issuer, issuer.did);
    } finally {
      await executor.close();
    }
  });

  it('refuses a tenant past its share of the queue for its own job only, with a typed reason', { timeout: 60_000 }, async () => {
    const { issuer } = await keys();
    // 2 tenants + the share of jobs without one: 6 / 3 = 2 waiting jobs per tenant
    const executor = await WorkerProofExecutor.start({ workers: 1, jobTimeoutMs: 20_000, maxQueuedJobs: 6, workerUrl: slowWorkerUrl() });
    try {
      const v = await twoTenants(executor);
      const busy = await signed(kycCredential(issuer.did, { id: 'urn:slow:1500:busy' }), issuer);
      const more = await Promise.all([2, 3, 4].map((i) => signed(kycCredential(issuer.did, { id: `urn:uuid:more-${i}` }), issuer)));
      const honest = await signed(kycCredential(issuer.did), issuer);
      const order: string[] = [];
      const a1 = track(order, 'a1', v.verify('tenant-a', busy)); // running: not waiting
      const a2 = track(order, 'a2', v.verify('tenant-a', more[0]!));
      const a3 = track(order, 'a3', v.verify('tenant-a', more[1]!));
      const a4 = track(order, 'a4', v.verify('tenant-a', more[2]!)); // a third waiting job: over the share
      const b = track(order, 'b', v.verify('tenant-b', honest));
      const refused = await a4;
      await Promise.all([a1, a2, a3, b]);
      assert.equal(order[0], `a4 ${ErrorCodes.CREDENTIAL_PROOF_UNAVAILABLE}`, 'refused at once, not after waiting');
      assert.ok(isPavilionError(refused, ErrorCodes.CREDENTIAL_PROOF_UNAVAILABLE));
      assert.equal(refused.details?.['reason'], 'tenant-share');
      assert.match(refused.message, /tenant-a already has 2 proof jobs waiting/);
      assert.deepEqual(order.slice(1).sort(), ['a1 ok', 'a2 ok', 'a3 ok', 'b ok']);
    } finally {
      await executor.close();
    }
  });

  it('refuses a job that waited past maxWaitMs when its turn comes (queue-wait), instead of running it late', { timeout: 60_000 }, async () => {
    const { issuer } = await keys();
    const executor = await WorkerProofExecutor.start({ workers: 1, jobTimeoutMs: 5_000, maxWaitMs: 400, workerUrl: slowWorkerUrl() });
    try {
      const v = await twoTenants(executor);
      const busy = await signed(kycCredential(issuer.did, { id: 'urn:slow:1000:busy' }), issuer);
      const honest = await signed(kycCredential(issuer.did), issuer);
      const running = v.verify('tenant-a', busy); // takes the worker for about 1 s
      const late = v.verify('tenant-b', honest).then(() => undefined, (e: unknown) => e); // waits about 1 s
      assert.equal((await running).issuer, issuer.did, 'a job under its deadline runs to the end');
      const refused = await late;
      assert.ok(isPavilionError(refused, ErrorCodes.CREDENTIAL_PROOF_UNAVAILABLE), String(refused));
      assert.equal(refused.details?.['reason'], 'queue-wait');
      assert.equal(refused.details?.['maxWaitMs'], 400);
      assert.equal((await v.verify('tenant-b', honest)).issuer, issuer.did, 'sent again with the worker free, it is verified');
    } finally {
      await executor.close();
    }
  });

  it('queues an accumulator check under the tenant whose credential it is', async () => {
    const { issuer } = await keys();
    const tenants: Array<string | undefined> = [];
    class Recording extends InlineProofExecutor {
      override async verifyMembership(value: Uint8Array, publicKey: Uint8Array, element: bigint, witness: Uint8Array, tenantId?: string): Promise<boolean> {
        tenants.push(tenantId);
        return super.verifyMembership(value, publicKey, element, witness);
      }
    }
    const acc = AccumulatorIssuer.create('urn:accumulator:isolation', randomBytes);
    const v = await verifier({ ...trusting(issuer.did), accumulators: [{ id: acc.id, issuer: issuer.did, publicKeyHex: Buffer.from(acc.publicKey).toString('hex') }] }, { executor: new Recording() });
    const witness = acc.add('h-1');
    await v.admitAccumulatorState('bank', await signAccumulatorState(acc.state(), { kid: issuer.kid, privateJwk: issuer.privateJwk, alg: jwsAlgorithm(issuer) }, 0));
    const credential = await signed(kycCredential(issuer.did, { credentialStatus: { type: ACCUMULATOR_ENTRY_TYPE, accumulatorId: acc.id, revocationHandle: 'h-1' } }), issuer);
    const facts = await v.verify('bank', credential, { witnesses: { 'h-1': Buffer.from(encodeWitness(witness)).toString('base64url') } });
    assert.deepEqual(facts.status.map((s) => s.mechanism), ['BlsAccumulator']);
    assert.deepEqual(tenants, ['bank']);
  });
});
