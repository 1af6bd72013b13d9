/**
 * Issuer trust before proof work: a credential whose issuer the tenant does not trust for it is
 * refused before its proof is checked, and only credentials that passed the trust check take a
 * place in the shared proof cache. Everything else is still proof-checked (fail closed).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCodes } from '../sidecar/src/lib/errors.ts';
import { InlineProofExecutor } from '../sidecar/src/credentials/index.ts';
import type { ProofTime } from '../sidecar/src/credentials/proof-executor.ts';
import { issueSdJwtVc, issueVcJwt } from '../sidecar/src/credentials/samples.ts';
import type { JsonObject } from '../sidecar/src/credentials/json.ts';
import { NOW_MS, keys, kycCredential, rejectsWith, signed, trusting, verifier } from './credentials/fixtures.ts';

/** The real inline executor, counting the Data Integrity proofs it checks. */
class CountingExecutor extends InlineProofExecutor {
  proofs = 0;
  override async verifyCredentialProof(tenantId: string, credential: JsonObject, time: ProofTime): Promise<{ proofType: string }> {
    this.proofs++;
    return super.verifyCredentialProof(tenantId, credential, time);
  }
}

/** `jwt` with its signature replaced by garbage (what a forger without the key sends). */
function garbleSignature(jwt: string): string {
  const [h, p] = jwt.split('.') as [string, string, string];
  return `${h}.${p}.${Buffer.alloc(64, 7).toString('base64url')}`;
}

describe('issuer trust before proof work', () => {
  it('refuses a self-signed Data Integrity credential from an untrusted issuer without checking its proof or caching it', async () => {
    const { issuer, rogue } = await keys();
    const executor = new CountingExecutor();
    // one cache entry: whatever else is cached evicts the trusted credential's
    const v = await verifier(trusting(issuer.did), { executor, proofCacheEntries: 1 });
    const honest = await signed(kycCredential(issuer.did), issuer);
    await v.verify('bank', honest);
    assert.equal(executor.proofs, 1);
    for (let i = 0; i < 3; i++) {
      const selfSigned = await signed(kycCredential(rogue.did, { id: `urn:uuid:self-${i}` }), rogue);
      await rejectsWith(v.verify('bank', selfSigned), ErrorCodes.CREDENTIAL_ISSUER_UNTRUSTED);
    }
    assert.equal(executor.proofs, 1, 'no proof work for an untrusted issuer');
    await v.verify('bank', honest);
    assert.equal(executor.proofs, 1, 'the trusted credential is still cached: untrusted ones took no cache entry');
  });

  it('refuses a credential outside its issuer\'s trusted types before its proof; a forgery in scope is still proof-checked', async () => {
    const { issuer } = await keys();
    const executor = new CountingExecutor();
    const v = await verifier(trusting(issuer.did, ['PractitionerLicenseCredential']), { executor });
    await rejectsWith(v.verify('bank', await signed(kycCredential(issuer.did), issuer)), ErrorCodes.CREDENTIAL_OUT_OF_SCOPE);
    assert.equal(executor.proofs, 0);
    // fail closed: passing the early trust check is not acceptance, the proof still decides
    const inScope = await signed(kycCredential(issuer.did, { type: ['VerifiableCredential', 'PractitionerLicenseCredential'] }), issuer);
    const forged = structuredClone(inScope);
    (forged['credentialSubject'] as Record<string, unknown>)['kycLevel'] = 'none';
    await rejectsWith(v.verify('bank', forged), ErrorCodes.CREDENTIAL_SIGNATURE_INVALID);
    await rejectsWith(v.verify('bank', forged), ErrorCodes.CREDENTIAL_SIGNATURE_INVALID);
    assert.equal(executor.proofs, 2, 'a refused proof is checked again each time, never cached');
    assert.equal((await v.verify('bank', inScope)).issuer, issuer.did);
  });

  it('refuses a VC-JWT or SD-JWT VC claiming an issuer the tenant does not know before looking at its signature', async () => {
    const { issuer, rogue, holder } = await keys();
    const v = await verifier({ ...trusting(issuer.did), keyBinding: { required: false } });
    const vcJwt = garbleSignature(await issueVcJwt(kycCredential(rogue.did), rogue));
    await rejectsWith(v.verify('bank', vcJwt), ErrorCodes.CREDENTIAL_ISSUER_UNTRUSTED);
    const legacy = garbleSignature(await issueVcJwt(kycCredential(rogue.did), rogue, 'vc-1.1-jwt', { iss: rogue.did, nbf: Math.floor(NOW_MS / 1000) - 60 }));
    await rejectsWith(v.verify('bank', legacy), ErrorCodes.CREDENTIAL_ISSUER_UNTRUSTED);
    const [jwt, ...rest] = (await issueSdJwtVc({ iss: rogue.did, vct: 'KycCredential', iat: Math.floor(NOW_MS / 1000), kyc_level: 'full' }, ['kyc_level'], rogue, holder)).split('~');
    await rejectsWith(v.verify('bank', [garbleSignature(jwt!), ...rest].join('~')), ErrorCodes.CREDENTIAL_ISSUER_UNTRUSTED);
    // a known issuer's forgery still goes to its signature check
    await rejectsWith(v.verify('bank', garbleSignature(await issueVcJwt(kycCredential(issuer.did), issuer))), ErrorCodes.CREDENTIAL_SIGNATURE_INVALID);
  });

  it('does not cache a VC-JWT whose proof verified but whose issuer is not trusted for its claims', async () => {
    const { issuer } = await keys();
    const executor = new CountingExecutor();
    const v = await verifier({ trustAnchors: [{ issuer: issuer.did, credentialTypes: ['KycCredential'], claims: ['kycLevel'] }] }, { executor, proofCacheEntries: 1 });
    const honest = await signed(kycCredential(issuer.did, { credentialSubject: { id: 'did:example:alice', kycLevel: 'full' } }), issuer);
    await v.verify('bank', honest);
    assert.equal(executor.proofs, 1);
    // validly signed by a known issuer, but `country` is outside what the tenant trusts it for
    const beyond = await issueVcJwt(kycCredential(issuer.did), issuer);
    await rejectsWith(v.verify('bank', beyond), ErrorCodes.CREDENTIAL_OUT_OF_SCOPE);
    await rejectsWith(v.verify('bank', beyond), ErrorCodes.CREDENTIAL_OUT_OF_SCOPE);
    await v.verify('bank', honest);
    assert.equal(executor.proofs, 1, 'the trusted credential is still cached: the out-of-scope one took no cache entry');
  });
});
