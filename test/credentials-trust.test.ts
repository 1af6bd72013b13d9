/**
 * Issuer trust: anchors, accreditation chains whose links narrow types, claims and validity,
 * maximum depth, cycles, expired links - each refusal with its own code. Accreditations are
 * signed AccreditationCredentials, verified when the tenant's verifier is built.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCodes } from '../sidecar/src/lib/errors.ts';
import { establishTrust, type Accreditation, type TrustPolicy } from '../sidecar/src/credentials/issuer-trust.ts';
import { SAMPLE_CONTEXT_URL } from '../sidecar/src/credentials/samples.ts';
import { DAY_MS, NOW_MS, VC_V2, keys, kycCredential, rejectsWith, signed, verifier } from './credentials/fixtures.ts';

const Y = 365 * DAY_MS;
const question = { issuer: 'did:ex:leaf', types: ['VerifiableCredential', 'KycCredential'], claimNames: ['kycLevel'], validFromMs: NOW_MS - DAY_MS, validUntilMs: NOW_MS + 30 * DAY_MS };
const link = (issuer: string, subject: string, over: Partial<Accreditation> = {}): Accreditation => ({ id: `${issuer}->${subject}`, issuer, subject, credentialTypes: ['KycCredential'], ...over });
const policy = (accreditations: Accreditation[], over: Partial<TrustPolicy> = {}): TrustPolicy => ({
  anchors: [{ issuer: 'did:ex:root', credentialTypes: ['*'] }],
  accreditations,
  maxChainDepth: 2,
  ...over,
});

describe('establishTrust', () => {
  it('trusts an anchor directly and returns the chain leaf first', () => {
    assert.deepEqual(establishTrust({ ...question, issuer: 'did:ex:root' }, policy([]), NOW_MS), ['did:ex:root']);
    assert.deepEqual(establishTrust(question, policy([link('did:ex:mid', 'did:ex:leaf'), link('did:ex:root', 'did:ex:mid')]), NOW_MS), ['did:ex:leaf', 'did:ex:mid', 'did:ex:root']);
  });

  it('refuses an issuer with no path to an anchor', () => {
    return rejectsWith(() => establishTrust(question, policy([]), NOW_MS), ErrorCodes.CREDENTIAL_ISSUER_UNTRUSTED);
  });

  it('refuses a chain longer than the maximum depth', () => {
    const chain = [link('did:ex:a', 'did:ex:leaf'), link('did:ex:b', 'did:ex:a'), link('did:ex:root', 'did:ex:b')];
    assert.equal(establishTrust(question, policy(chain, { maxChainDepth: 3 }), NOW_MS).length, 4);
    return rejectsWith(() => establishTrust(question, policy(chain, { maxChainDepth: 2 }), NOW_MS), ErrorCodes.CREDENTIAL_CHAIN_TOO_DEEP);
  });

  it('refuses a cycle', () => {
    const cycle = [link('did:ex:a', 'did:ex:leaf'), link('did:ex:leaf', 'did:ex:a')];
    return rejectsWith(() => establishTrust(question, policy(cycle, { maxChainDepth: 5 }), NOW_MS), ErrorCodes.CREDENTIAL_CHAIN_CYCLE);
  });

  it('refuses an expired or not-yet-valid link', async () => {
    await rejectsWith(() => establishTrust(question, policy([link('did:ex:root', 'did:ex:leaf', { validUntilMs: NOW_MS - 1 })]), NOW_MS), ErrorCodes.CREDENTIAL_CHAIN_INVALID);
    await rejectsWith(() => establishTrust(question, policy([link('did:ex:root', 'did:ex:leaf', { validFromMs: NOW_MS + 1 })]), NOW_MS), ErrorCodes.CREDENTIAL_CHAIN_INVALID);
  });

  it('narrows by type, claim and validity at every link; a lower link cannot widen', async () => {
    const narrowUpper = [link('did:ex:mid', 'did:ex:leaf', { credentialTypes: ['*'] }), link('did:ex:root', 'did:ex:mid', { credentialTypes: ['LicenseCredential'] })];
    await rejectsWith(() => establishTrust(question, policy(narrowUpper), NOW_MS), ErrorCodes.CREDENTIAL_OUT_OF_SCOPE);
    await rejectsWith(() => establishTrust(question, policy([link('did:ex:root', 'did:ex:leaf', { claims: ['country'] })]), NOW_MS), ErrorCodes.CREDENTIAL_OUT_OF_SCOPE);
    await rejectsWith(() => establishTrust(question, policy([link('did:ex:root', 'did:ex:leaf', { maxValidityMs: 7 * DAY_MS })]), NOW_MS), ErrorCodes.CREDENTIAL_OUT_OF_SCOPE);
    await rejectsWith(() => establishTrust(question, policy([link('did:ex:root', 'did:ex:leaf', { validUntilMs: NOW_MS + DAY_MS })]), NOW_MS), ErrorCodes.CREDENTIAL_OUT_OF_SCOPE);
    const { validUntilMs: _u, ...forever } = question;
    await rejectsWith(() => establishTrust(forever, policy([link('did:ex:root', 'did:ex:leaf', { maxValidityMs: Y })]), NOW_MS), ErrorCodes.CREDENTIAL_OUT_OF_SCOPE);
    assert.equal(establishTrust(question, policy([link('did:ex:root', 'did:ex:leaf', { claims: ['kycLevel'], maxValidityMs: Y })]), NOW_MS).length, 2);
  });

  it('limits an anchor to its own scope', () => {
    return rejectsWith(() => establishTrust({ ...question, issuer: 'did:ex:root' }, policy([], { anchors: [{ issuer: 'did:ex:root', credentialTypes: ['LicenseCredential'] }] }), NOW_MS), ErrorCodes.CREDENTIAL_OUT_OF_SCOPE);
  });

  it('finds a working chain when another one fails', () => {
    const accreditations = [link('did:ex:dead', 'did:ex:leaf', { validUntilMs: NOW_MS - 1 }), link('did:ex:root', 'did:ex:dead'), link('did:ex:root', 'did:ex:leaf')];
    assert.deepEqual(establishTrust(question, policy(accreditations), NOW_MS), ['did:ex:leaf', 'did:ex:root']);
  });

  it('stays bounded on a dense accreditation graph', () => {
    const nodes = Array.from({ length: 30 }, (_, i) => `did:ex:n${i}`);
    const dense: Accreditation[] = [];
    for (const a of nodes) for (const b of nodes) if (a !== b) dense.push(link(a, b));
    for (const n of nodes) dense.push(link(n, 'did:ex:leaf'));
    const started = performance.now();
    assert.throws(() => establishTrust(question, policy(dense, { maxChainDepth: 8 }), NOW_MS));
    assert.ok(performance.now() - started < 2_000);
  });
});

describe('signed accreditations through the verifier', () => {
  async function accreditation(issuerKey: { did: string }, subject: string, scope: Record<string, unknown>, over: Record<string, unknown> = {}) {
    return {
      '@context': [VC_V2, SAMPLE_CONTEXT_URL],
      type: ['VerifiableCredential', 'AccreditationCredential'],
      issuer: issuerKey.did,
      validFrom: '2026-01-01T00:00:00Z',
      validUntil: '2037-01-01T00:00:00Z',
      credentialSubject: { id: subject, accreditedFor: scope },
      ...over,
    };
  }

  it('accepts a KYC credential from an issuer accredited by the anchor', async () => {
    const { anchor, issuer } = await keys();
    const acc = await signed(await accreditation(anchor, issuer.did, { credentialTypes: ['KycCredential'], claims: ['kycLevel', 'country'] }), anchor);
    const v = await verifier({ trustAnchors: [{ issuer: anchor.did, credentialTypes: ['KycCredential'] }], accreditations: [acc] });
    const facts = await v.verify('bank', await signed(kycCredential(issuer.did), issuer));
    assert.deepEqual(facts.chain, [issuer.did, anchor.did]);
  });

  it('refuses a credential beyond its issuer\'s accredited claims', async () => {
    const { anchor, issuer } = await keys();
    const acc = await signed(await accreditation(anchor, issuer.did, { credentialTypes: ['KycCredential'], claims: ['kycLevel'] }), anchor);
    const v = await verifier({ trustAnchors: [{ issuer: anchor.did, credentialTypes: ['*'] }], accreditations: [acc] });
    await rejectsWith(v.verify('bank', await signed(kycCredential(issuer.did), issuer)), ErrorCodes.CREDENTIAL_OUT_OF_SCOPE);
  });

  it('refuses an expired accreditation at use time', async () => {
    const { anchor, issuer } = await keys();
    const acc = await signed(await accreditation(anchor, issuer.did, { credentialTypes: ['KycCredential'] }, { validUntil: '2026-03-01T00:00:00Z' }), anchor);
    const v = await verifier({ trustAnchors: [{ issuer: anchor.did, credentialTypes: ['*'] }], accreditations: [acc] });
    await rejectsWith(v.verify('bank', await signed(kycCredential(issuer.did), issuer)), ErrorCodes.CREDENTIAL_CHAIN_INVALID);
  });

  it('refuses to build a tenant whose accreditation is forged', async () => {
    const { anchor, issuer, rogue } = await keys();
    const forged = await signed(await accreditation(anchor, issuer.did, { credentialTypes: ['KycCredential'] }), rogue);
    await rejectsWith(verifier({ trustAnchors: [{ issuer: anchor.did, credentialTypes: ['*'] }], accreditations: [forged] }), ErrorCodes.CONFIG_INVALID);
  });
});
