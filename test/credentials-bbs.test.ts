/**
 * bbs-2023 (W3C Data Integrity BBS Cryptosuites): the issuer signs a base proof, the holder
 * derives an unlinkable proof revealing chosen claims, the verifier (on a worker thread: each
 * BBS operation is hundreds of milliseconds of pure-JS pairing work) sees only those claims.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ErrorCodes } from '../sidecar/src/lib/errors.ts';
import { WorkerProofExecutor } from '../sidecar/src/credentials/index.ts';
import { deriveBbs, issueBbsBase, sampleBbsKey } from '../sidecar/src/credentials/samples.ts';
import { issuerLoader, kycCredential, rejectsWith, trusting, verifier } from './credentials/fixtures.ts';

describe('bbs-2023 derived proofs', () => {
  let executor: WorkerProofExecutor;
  before(async () => {
    executor = await WorkerProofExecutor.start({ workers: 1, jobTimeoutMs: 30_000 });
  });
  after(() => executor.close());

  it('verifies a derived proof and exposes only the disclosed claims; refuses tampering and base proofs', async () => {
    const issuer = await sampleBbsKey('test-bbs-issuer');
    const loader = issuerLoader();
    const base = await issueBbsBase(
      kycCredential(issuer.did, { credentialSubject: { id: 'did:example:alice', kycLevel: 'full', givenName: 'Alice', country: 'CH' } }),
      issuer,
      ['/issuer', '/validFrom', '/validUntil'],
      loader,
    );
    const derived = await deriveBbs(base, ['/credentialSubject/kycLevel'], loader);
    const v = await verifier(trusting(issuer.did), { executor });
    const facts = await v.verify('bank', derived);
    assert.equal(facts.proofType, 'DataIntegrityProof/bbs-2023');
    assert.deepEqual(facts.claims, { kycLevel: 'full' });
    assert.equal(JSON.stringify(derived).includes('Alice'), false, 'the derived credential carries no undisclosed claim');

    const tampered = structuredClone(derived);
    (tampered['credentialSubject'] as Record<string, unknown>)['kycLevel'] = 'basic';
    await rejectsWith(v.verify('bank', tampered), ErrorCodes.CREDENTIAL_SIGNATURE_INVALID);
    // the issuer's base proof is for the holder only; verifiers accept derived proofs
    await rejectsWith(v.verify('bank', base), ErrorCodes.CREDENTIAL_SIGNATURE_INVALID);
  });
});
