/**
 * W3C VC 2.0 and 1.1 with Data Integrity proofs (eddsa-rdfc-2022, ecdsa-rdfc-2019) through the
 * CredentialVerifier: verified facts for good credentials, one stable code for each bad one.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCodes } from '../sidecar/src/lib/errors.ts';
import { SAMPLE_CONTEXT_URL, issueEd25519Signature2020 } from '../sidecar/src/credentials/samples.ts';
import { DAY_MS, NOW_MS, VC_V1, issuerLoader, keys, kycCredential, rejectsWith, signed, trusting, verifier } from './credentials/fixtures.ts';

describe('Data Integrity credentials', () => {
  it('verifies eddsa-rdfc-2022 (VC 2.0) into facts with only the subject claims', async () => {
    const { issuer } = await keys();
    const v = await verifier(trusting(issuer.did));
    const facts = await v.verify('bank', await signed(kycCredential(issuer.did), issuer));
    assert.equal(facts.format, 'vc+data-integrity');
    assert.equal(facts.proofType, 'DataIntegrityProof/eddsa-rdfc-2022');
    assert.equal(facts.issuer, issuer.did);
    assert.deepEqual(facts.types, ['VerifiableCredential', 'KycCredential']);
    assert.equal(facts.subject, 'did:example:alice');
    assert.deepEqual(facts.claims, { kycLevel: 'full', country: 'CH' });
    assert.deepEqual(facts.chain, [issuer.did]);
    assert.equal(facts.validity.validUntil, '2036-01-01T00:00:00Z');
    assert.match(facts.credentialHash, /^[0-9a-f]{64}$/);
  });

  it('verifies ecdsa-rdfc-2019 with a P-256 did:key', async () => {
    const { issuerP256 } = await keys();
    const v = await verifier(trusting(issuerP256.did));
    const facts = await v.verify('bank', await signed(kycCredential(issuerP256.did), issuerP256));
    assert.equal(facts.proofType, 'DataIntegrityProof/ecdsa-rdfc-2019');
  });

  it('verifies a VC 1.1 credential (issuanceDate/expirationDate)', async () => {
    const { issuer } = await keys();
    const v = await verifier(trusting(issuer.did));
    const { validFrom: _f, validUntil: _u, ...rest } = kycCredential(issuer.did, { '@context': [VC_V1, SAMPLE_CONTEXT_URL] });
    const credential = { ...rest, issuanceDate: '2026-01-01T00:00:00Z', expirationDate: '2036-01-01T00:00:00Z' };
    const facts = await v.verify('bank', await signed(credential, issuer));
    assert.equal(facts.validity.issuedAt, '2026-01-01T00:00:00Z');
  });

  it('verifies the legacy Ed25519Signature2020 suite on a VC 1.1 credential, and refuses it tampered', async () => {
    const { issuer } = await keys();
    const v = await verifier(trusting(issuer.did));
    const { validFrom: _f, validUntil: _u, ...rest } = kycCredential(issuer.did, { '@context': [VC_V1, 'https://w3id.org/security/suites/ed25519-2020/v1', SAMPLE_CONTEXT_URL] });
    const credential = await issueEd25519Signature2020({ ...rest, issuanceDate: '2026-01-01T00:00:00Z' }, issuer, issuerLoader(), new Date(NOW_MS - DAY_MS));
    const facts = await v.verify('bank', credential);
    assert.equal(facts.proofType, 'Ed25519Signature2020');
    (credential['credentialSubject'] as Record<string, unknown>)['country'] = 'FR';
    await rejectsWith(v.verify('bank', credential), ErrorCodes.CREDENTIAL_SIGNATURE_INVALID);
  });

  it('refuses a tampered claim', async () => {
    const { issuer } = await keys();
    const v = await verifier(trusting(issuer.did));
    const credential = await signed(kycCredential(issuer.did), issuer);
    (credential['credentialSubject'] as Record<string, unknown>)['kycLevel'] = 'basic';
    await rejectsWith(v.verify('bank', credential), ErrorCodes.CREDENTIAL_SIGNATURE_INVALID);
  });

  it('refuses a proof made with another key than the issuer\'s', async () => {
    const { issuer, rogue } = await keys();
    const v = await verifier(trusting(issuer.did));
    await rejectsWith(v.verify('bank', await signed(kycCredential(issuer.did), rogue)), ErrorCodes.CREDENTIAL_ISSUER_MISMATCH);
  });

  it('refuses a proof whose verification method was swapped for another key', async () => {
    const { issuer, rogue } = await keys();
    const v = await verifier(trusting(issuer.did));
    const credential = await signed(kycCredential(issuer.did), issuer);
    (credential['proof'] as Record<string, unknown>)['verificationMethod'] = rogue.kid;
    await rejectsWith(v.verify('bank', credential), ErrorCodes.CREDENTIAL_SIGNATURE_INVALID);
  });

  it('refuses an unknown context without fetching it', async () => {
    const { issuer } = await keys();
    const v = await verifier(trusting(issuer.did));
    const credential = await signed(kycCredential(issuer.did), issuer);
    (credential['@context'] as string[]).push('https://contexts.attacker.example/v1');
    await rejectsWith(v.verify('bank', credential), ErrorCodes.CREDENTIAL_DOCUMENT_REFUSED);
  });

  it('refuses undefined terms (JSON-LD safe mode)', async () => {
    const { issuer } = await keys();
    const v = await verifier(trusting(issuer.did));
    const credential = await signed(kycCredential(issuer.did), issuer);
    (credential['credentialSubject'] as Record<string, unknown>)['notInAnyContext'] = 'x';
    await rejectsWith(v.verify('bank', credential), ErrorCodes.CREDENTIAL_UNDEFINED_TERM);
  });

  it('stops a canonicalization bomb at rdf-canonize\'s work-factor cap', async () => {
    const { issuer } = await keys();
    const v = await verifier({ ...trusting(issuer.did), maxCredentialBytes: 1024 * 1024 });
    // a clique of blank nodes: every node looks alike, so canonicalization must try permutations
    const n = 12;
    const nodes = Array.from({ length: n }, (_, i) => ({ id: `_:b${i}`, knows: Array.from({ length: n }, (_, j) => `_:b${j}`).filter((_, j) => j !== i) }));
    const good = await signed(kycCredential(issuer.did), issuer);
    const bomb = { ...kycCredential(issuer.did, { credentialSubject: { id: 'did:example:alice', knows: nodes } }), proof: good['proof'] };
    const started = performance.now();
    await rejectsWith(v.verify('bank', bomb), ErrorCodes.CREDENTIAL_CANONICALIZATION_LIMIT);
    assert.ok(performance.now() - started < 5_000, 'the cap stops the work early');
  });

  it('refuses an expired credential (validUntil) and one not yet valid (validFrom)', async () => {
    const { issuer } = await keys();
    const v = await verifier(trusting(issuer.did));
    await rejectsWith(v.verify('bank', await signed(kycCredential(issuer.did, { validUntil: '2026-05-01T00:00:00Z' }), issuer)), ErrorCodes.CREDENTIAL_EXPIRED);
    await rejectsWith(v.verify('bank', await signed(kycCredential(issuer.did, { validFrom: '2026-07-01T00:00:00Z' }), issuer)), ErrorCodes.CREDENTIAL_NOT_YET_VALID);
  });

  it('tolerates clock skew up to the configured bound, not beyond', async () => {
    const { issuer } = await keys();
    const v = await verifier({ ...trusting(issuer.did), clockSkewMs: 60_000 });
    const justExpired = new Date(NOW_MS - 30_000).toISOString();
    await v.verify('bank', await signed(kycCredential(issuer.did, { validUntil: justExpired }), issuer));
    const longExpired = new Date(NOW_MS - 120_000).toISOString();
    await rejectsWith(v.verify('bank', await signed(kycCredential(issuer.did, { validUntil: longExpired }), issuer)), ErrorCodes.CREDENTIAL_EXPIRED);
  });

  it('refuses a credential older than its type\'s maximum age', async () => {
    const { issuer } = await keys();
    const v = await verifier({ ...trusting(issuer.did), maxAgeMsByType: { KycCredential: 30 * DAY_MS } });
    await rejectsWith(v.verify('bank', await signed(kycCredential(issuer.did), issuer)), ErrorCodes.CREDENTIAL_TOO_OLD);
    const recent = new Date(NOW_MS - 10 * DAY_MS).toISOString().replace(/\.\d+Z$/, 'Z');
    await v.verify('bank', await signed(kycCredential(issuer.did, { validFrom: recent }), issuer));
  });

  it('refuses an oversized credential before any parsing', async () => {
    const { issuer } = await keys();
    const v = await verifier({ ...trusting(issuer.did), maxCredentialBytes: 1024 });
    const credential = await signed(kycCredential(issuer.did), issuer);
    (credential['credentialSubject'] as Record<string, unknown>)['country'] = 'x'.repeat(2048);
    await rejectsWith(v.verify('bank', credential), ErrorCodes.CREDENTIAL_TOO_LARGE);
  });

  it('refuses unsupported proof types and missing proofs', async () => {
    const { issuer } = await keys();
    const v = await verifier(trusting(issuer.did));
    const credential = await signed(kycCredential(issuer.did), issuer);
    await rejectsWith(v.verify('bank', { ...credential, proof: { ...(credential['proof'] as object), cryptosuite: 'ecdsa-sd-2023' } }), ErrorCodes.CREDENTIAL_PROOF_UNSUPPORTED);
    await rejectsWith(v.verify('bank', { ...credential, proof: { ...(credential['proof'] as object), type: 'RsaSignature2018' } }), ErrorCodes.CREDENTIAL_PROOF_UNSUPPORTED);
    const { proof: _p, ...bare } = credential;
    await rejectsWith(v.verify('bank', bare), ErrorCodes.CREDENTIAL_MALFORMED);
  });

  it('refuses malformed credentials with ERR_CREDENTIAL_MALFORMED', async () => {
    const { issuer } = await keys();
    const v = await verifier(trusting(issuer.did));
    const credential = await signed(kycCredential(issuer.did), issuer);
    await rejectsWith(v.verify('bank', { ...credential, '@context': ['https://example.org/not-vc'] }), ErrorCodes.CREDENTIAL_MALFORMED);
    await rejectsWith(v.verify('bank', { ...credential, validUntil: 'tomorrow' }), ErrorCodes.CREDENTIAL_MALFORMED);
    await rejectsWith(v.verify('bank', { ...credential, type: ['KycCredential'] }), ErrorCodes.CREDENTIAL_MALFORMED);
    await rejectsWith(v.verify('bank', 42), ErrorCodes.CREDENTIAL_FORMAT_UNSUPPORTED);
  });

  it('refuses an issuer the tenant does not trust, and an unknown tenant', async () => {
    const { issuer, anchor } = await keys();
    const v = await verifier(trusting(anchor.did));
    const credential = await signed(kycCredential(issuer.did), issuer);
    await rejectsWith(v.verify('bank', credential), ErrorCodes.CREDENTIAL_ISSUER_UNTRUSTED);
    await rejectsWith(v.verify('hospital', credential), ErrorCodes.CREDENTIAL_TENANT_UNKNOWN);
  });

  it('re-checks time on a cached proof: the cache never outlives validity', async () => {
    const { issuer } = await keys();
    let now = NOW_MS;
    const v = await verifier(trusting(issuer.did), { clock: () => now });
    const credential = await signed(kycCredential(issuer.did, { validUntil: new Date(NOW_MS + DAY_MS).toISOString() }), issuer);
    await v.verify('bank', credential);
    await v.verify('bank', credential); // served from the proof cache
    now = NOW_MS + 2 * DAY_MS;
    await rejectsWith(v.verify('bank', credential), ErrorCodes.CREDENTIAL_EXPIRED);
  });
});
