/**
 * Proof verification on worker threads: the same answers and the same typed codes as inline,
 * deadlines that fail a job instead of hanging it, and a clean stop.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ErrorCodes } from '../sidecar/src/lib/errors.ts';
import { ACCUMULATOR_ENTRY_TYPE, AccumulatorIssuer, WorkerProofExecutor, elementFor, encodeWitness, signAccumulatorState } from '../sidecar/src/credentials/index.ts';
import { jwsAlgorithm } from '../sidecar/src/credentials/samples.ts';
import { CHALLENGE, DOMAIN, issuerLoader, keys, kycCredential, rejectsWith, signed, trusting, verifier, presentDataIntegrity } from './credentials/fixtures.ts';
import { randomBytes } from 'node:crypto';

describe('WorkerProofExecutor', () => {
  let executor: WorkerProofExecutor;
  before(async () => {
    executor = await WorkerProofExecutor.start({ workers: 1, jobTimeoutMs: 10_000 });
  });
  after(() => executor.close());

  it('verifies Data Integrity credentials and presentations off the event loop, with the same codes', async () => {
    const { issuer, holder } = await keys();
    const v = await verifier(trusting(issuer.did), { executor });
    const credential = await signed(kycCredential(issuer.did, { credentialSubject: { id: holder.did, kycLevel: 'full' } }), issuer);
    assert.equal((await v.verify('bank', credential)).proofType, 'DataIntegrityProof/eddsa-rdfc-2022');
    const tampered = structuredClone(credential);
    (tampered['credentialSubject'] as Record<string, unknown>)['kycLevel'] = 'none';
    await rejectsWith(v.verify('bank', tampered), ErrorCodes.CREDENTIAL_SIGNATURE_INVALID);
    await rejectsWith(v.verify('bank', { ...credential, '@context': [...(credential['@context'] as string[]), 'https://elsewhere.example/ctx'] }), ErrorCodes.CREDENTIAL_DOCUMENT_REFUSED);
    const vp = await presentDataIntegrity([credential], holder, { challenge: CHALLENGE, domain: DOMAIN }, issuerLoader());
    assert.equal((await v.verifyPresentation('bank', vp, { challenge: CHALLENGE, domain: DOMAIN })).credentials.length, 1);
  });

  it('checks accumulator witnesses on a worker', async () => {
    const { issuer } = await keys();
    const acc = AccumulatorIssuer.create('urn:accumulator:workers', randomBytes);
    const v = await verifier({ ...trusting(issuer.did), accumulators: [{ id: acc.id, issuer: issuer.did, publicKeyHex: Buffer.from(acc.publicKey).toString('hex') }] }, { executor });
    const witness = acc.add('h-1');
    acc.add('h-2');
    await v.admitAccumulatorState('bank', await signAccumulatorState(acc.state(), { kid: issuer.kid, privateJwk: issuer.privateJwk, alg: jwsAlgorithm(issuer) }, 0));
    const credential = await signed(kycCredential(issuer.did, { credentialStatus: { type: ACCUMULATOR_ENTRY_TYPE, accumulatorId: acc.id, revocationHandle: 'h-1' } }), issuer);
    // the witness from epoch 1 is stale at epoch 2; an up-to-date one passes
    await rejectsWith(v.verify('bank', credential, { witnesses: { 'h-1': Buffer.from(encodeWitness(witness)).toString('base64url') } }), ErrorCodes.CREDENTIAL_WITNESS_INVALID);
    const { updateWitness } = await import('../sidecar/src/credentials/index.ts');
    const current = updateWitness(witness, elementFor('h-1'), acc.updatesSince(witness.epoch), acc.valueAt(witness.epoch));
    const facts = await v.verify('bank', credential, { witnesses: { 'h-1': Buffer.from(encodeWitness(current)).toString('base64url') } });
    assert.deepEqual(facts.status.map((s) => s.mechanism), ['BlsAccumulator']);
  });

  it('fails a job that misses its deadline with a typed error, replaces the worker, refuses jobs once stopped', async () => {
    const { issuer } = await keys();
    const slow = await WorkerProofExecutor.start({ workers: 1, jobTimeoutMs: 1 });
    try {
      const v = await verifier(trusting(issuer.did), { executor: slow });
      const credential = await signed(kycCredential(issuer.did), issuer);
      await rejectsWith(v.verify('bank', credential), ErrorCodes.CREDENTIAL_PROOF_UNAVAILABLE);
      // the replacement worker answers again (and misses the same 1 ms deadline: still typed, not hung)
      await new Promise((resolve) => setTimeout(resolve, 500));
      await rejectsWith(v.verify('bank', credential), ErrorCodes.CREDENTIAL_PROOF_UNAVAILABLE);
    } finally {
      await slow.close();
    }
    await rejectsWith(slow.verifyMembership(new Uint8Array(48), new Uint8Array(96), 1n, new Uint8Array(48)), ErrorCodes.ENGINE_STOPPED);
  });

  it('fails with PROOF_UNAVAILABLE a job whose worker dies mid-job, without crashing the process, and the next job succeeds', async () => {
    const { issuer } = await keys();
    const crashing = await WorkerProofExecutor.start({ workers: 1, jobTimeoutMs: 10_000, workerUrl: new URL('./credentials/crashing-proof-worker.mjs', import.meta.url) });
    try {
      const v = await verifier(trusting(issuer.did), { executor: crashing });
      const crash = await signed(kycCredential(issuer.did, { id: 'urn:crash' }), issuer);
      await rejectsWith(v.verify('bank', crash), ErrorCodes.CREDENTIAL_PROOF_UNAVAILABLE);
      // the next job waits for the replacement worker (which knows the tenant) and passes
      const facts = await v.verify('bank', await signed(kycCredential(issuer.did), issuer));
      assert.equal(facts.issuer, issuer.did);
      // a worker that crashes after its first job was answered is caught too
      await rejectsWith(v.verify('bank', crash), ErrorCodes.CREDENTIAL_PROOF_UNAVAILABLE);
    } finally {
      await crashing.close();
    }
  });

  it('fails start with PROOF_UNAVAILABLE when a worker exits before it is ready, instead of hanging', { timeout: 20_000 }, async () => {
    await rejectsWith(WorkerProofExecutor.start({ workers: 1, jobTimeoutMs: 1_000, workerUrl: new URL('./credentials/exiting-proof-worker.mjs', import.meta.url) }), ErrorCodes.CREDENTIAL_PROOF_UNAVAILABLE);
  });
});
