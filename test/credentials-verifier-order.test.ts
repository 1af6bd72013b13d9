/**
 * The order of the verifier's checks: refusals that need no signature come before any signature
 * work, and what they read is read once. Proven by counting, not timing:
 *   - proof work through the verifier's `executor` (a counting InlineProofExecutor): the holder
 *     proof of a presentation and Data Integrity credential proofs;
 *   - decoding of a JWT's parts through JSON.parse, counted on the exact texts of its header and
 *     payload (jose parses the protected header itself when it verifies a signature, so a header
 *     parsed only once means no signature check ran).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCodes, type ErrorCode } from '../sidecar/src/lib/errors.ts';
import { DidResolver, InlineProofExecutor, MemoryNonceStore, type CredentialVerifierOptions } from '../sidecar/src/credentials/index.ts';
import { issueSdJwtVc, issueVcJwt, presentSdJwtVc } from '../sidecar/src/credentials/samples.ts';
import { CHALLENGE, DAY_MS, DOMAIN, NOW_MS, issuerLoader, keys, kycCredential, presentDataIntegrity, rejectsWith, signed, trusting, verifier } from './credentials/fixtures.ts';

const MINUTE_MS = 60_000;
const NOW_S = Math.floor(NOW_MS / 1000);

/** The inline executor, counting the proof jobs the verifier hands it. */
class CountingProofExecutor extends InlineProofExecutor {
  presentationProofs = 0;
  credentialProofs = 0;
  override async verifyPresentationProof(...args: Parameters<InlineProofExecutor['verifyPresentationProof']>): ReturnType<InlineProofExecutor['verifyPresentationProof']> {
    this.presentationProofs++;
    return super.verifyPresentationProof(...args);
  }
  override async verifyCredentialProof(...args: Parameters<InlineProofExecutor['verifyCredentialProof']>): ReturnType<InlineProofExecutor['verifyCredentialProof']> {
    this.credentialProofs++;
    return super.verifyCredentialProof(...args);
  }
  get counts(): [presentationProofs: number, credentialProofs: number] {
    return [this.presentationProofs, this.credentialProofs];
  }
}

/** How many times each of `texts` is given to JSON.parse while `work` runs. */
async function parsesDuring(texts: readonly string[], work: () => Promise<unknown>): Promise<number[]> {
  const counts = texts.map(() => 0);
  const parse = JSON.parse;
  JSON.parse = ((text: string, reviver?: Parameters<typeof JSON.parse>[1]) => {
    const at = texts.indexOf(text);
    if (at >= 0) counts[at]!++;
    return parse(text, reviver);
  }) as typeof JSON.parse;
  try {
    await work();
  } finally {
    JSON.parse = parse;
  }
  return counts;
}

/** The decoded texts of a compact JWS's header and payload. */
function jwsTexts(jws: string): [header: string, payload: string] {
  const [h, p] = jws.split('.') as [string, string];
  return [Buffer.from(h, 'base64url').toString('utf8'), Buffer.from(p, 'base64url').toString('utf8')];
}

/**
 * The bank trusting the sample issuer for KYC credentials at most 200 days old, counting its
 * proof jobs; a credential about the holder; one from an issuer it does not trust; one too old.
 */
async function material(options: CredentialVerifierOptions = {}) {
  const k = await keys();
  const executor = new CountingProofExecutor();
  const nonces = new MemoryNonceStore();
  const v = await verifier({ ...trusting(k.issuer.did), maxAgeMsByType: { KycCredential: 200 * DAY_MS } }, { executor, nonces, ...options });
  const about = { credentialSubject: { id: k.holder.did, kycLevel: 'full' } };
  const credential = await signed(kycCredential(k.issuer.did, about), k.issuer);
  const untrusted = await signed(kycCredential(k.rogue.did, about), k.rogue);
  const tooOld = await signed(kycCredential(k.issuer.did, { ...about, validFrom: '2025-06-01T00:00:00Z' }), k.issuer);
  const present = (credentials: readonly Record<string, unknown>[], binding = { challenge: CHALLENGE, domain: DOMAIN }, createdMs = NOW_MS) =>
    presentDataIntegrity(credentials, k.holder, binding, issuerLoader(), k.holder.did, createdMs);
  return { ...k, v, executor, nonces, credential, untrusted, tooOld, present };
}

const binding = { challenge: CHALLENGE, domain: DOMAIN };

describe('a JWT credential is decoded once', () => {
  it('a VC-JWT on a proof-cache miss: its payload is parsed once (the early trust check and the proof share it); on a hit, not at all', async () => {
    const { issuer } = await keys();
    const v = await verifier(trusting(issuer.did));
    const jwt = await issueVcJwt(kycCredential(issuer.did), issuer);
    const [, payload] = jwsTexts(jwt);
    assert.deepEqual(await parsesDuring([payload], async () => assert.equal((await v.verify('bank', jwt)).format, 'vc+jwt')), [1]);
    assert.deepEqual(await parsesDuring([payload], async () => assert.equal((await v.verify('bank', jwt)).format, 'vc+jwt')), [0]);
  });

  it('(guard) a VC-JWT from an issuer the tenant does not trust: decoded once, refused ISSUER_UNTRUSTED, and its signature is never checked', async () => {
    const { issuer, rogue } = await keys();
    const v = await verifier(trusting(issuer.did));
    const jwt = await issueVcJwt(kycCredential(rogue.did), rogue);
    // the header parsed once, by the decoding: jose, which parses it again to verify, never ran
    assert.deepEqual(await parsesDuring(jwsTexts(jwt), () => rejectsWith(v.verify('bank', jwt), ErrorCodes.CREDENTIAL_ISSUER_UNTRUSTED)), [1, 1]);
  });

  it('(guard) a tampered VC-JWT decoded once still fails its signature: the proof checks the bytes that were decoded', async () => {
    const { issuer } = await keys();
    const v = await verifier(trusting(issuer.did));
    const jwt = await issueVcJwt(kycCredential(issuer.did), issuer);
    const [h, p, s] = jwt.split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8'));
    claims.credentialSubject.kycLevel = 'none';
    await rejectsWith(v.verify('bank', `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${s}`), ErrorCodes.CREDENTIAL_SIGNATURE_INVALID);
  });

  it('an SD-JWT VC: its issuer JWT is decoded once by the verifier (the two other reads are @sd-jwt/core 0.19.0 recomputing the disclosed claims); once when its issuer is refused', async () => {
    const { issuer, holder, rogue } = await keys();
    const v = await verifier(trusting(issuer.did));
    const issue = (key: typeof issuer) =>
      issueSdJwtVc({ iss: key.did, vct: 'KycCredential', iat: NOW_S - 3600, exp: NOW_S + 86_400, kyc_level: 'full' }, ['kyc_level'], key, holder, 'order-test-salts');
    const presented = await presentSdJwtVc(await issue(issuer), ['kyc_level'], holder, { nonce: CHALLENGE, aud: DOMAIN, iatSeconds: NOW_S - 5 });
    const [, payload] = jwsTexts(presented.slice(0, presented.indexOf('~')));
    assert.deepEqual(await parsesDuring([payload], async () => assert.equal((await v.verify('bank', presented, binding)).format, 'sd-jwt-vc')), [3]);
    const foreign = await issue(rogue);
    assert.deepEqual(await parsesDuring(jwsTexts(foreign.slice(0, foreign.indexOf('~'))), () => rejectsWith(v.verify('bank', foreign, binding), ErrorCodes.CREDENTIAL_ISSUER_UNTRUSTED)), [1, 1]);
  });
});

describe('a presentation is refused on what it claims before any signature work', () => {
  it('an untrusted issuer\'s credential in a correctly signed presentation: ISSUER_UNTRUSTED with no proof checked at all, and the challenge left unused', async () => {
    const { v, executor, nonces, untrusted, present } = await material();
    await rejectsWith(v.verifyPresentation('bank', await present([untrusted]), binding), ErrorCodes.CREDENTIAL_ISSUER_UNTRUSTED);
    assert.deepEqual(executor.counts, [0, 0]);
    assert.equal(nonces.size, 0);
  });

  it('a credential too old for its type: TOO_OLD, no proof checked', async () => {
    const { v, executor, tooOld, present } = await material();
    await rejectsWith(v.verifyPresentation('bank', await present([tooOld]), binding), ErrorCodes.CREDENTIAL_TOO_OLD);
    assert.deepEqual(executor.counts, [0, 0]);
  });

  it('through verifyEach (the decision input): each credential\'s code under the presentation\'s index, no proof checked', async () => {
    const { v, executor, untrusted, tooOld, present } = await material();
    const { credentials, errors } = await v.verifyEach('bank', [await present([untrusted, tooOld])], binding);
    assert.deepEqual(credentials, []);
    assert.deepEqual(errors.map((e) => [e.index, e.code]), [[0, ErrorCodes.CREDENTIAL_ISSUER_UNTRUSTED], [0, ErrorCodes.CREDENTIAL_TOO_OLD]]);
    assert.deepEqual(executor.counts, [0, 0]);
  });

  it('a proof bound to another challenge or domain, or too old: refused without handing the proof to the executor', async () => {
    const { v, executor, credential, present } = await material();
    const vp = await present([credential]);
    await rejectsWith(v.verifyPresentation('bank', vp, { challenge: 'another', domain: DOMAIN }), ErrorCodes.CREDENTIAL_CHALLENGE_MISMATCH);
    await rejectsWith(v.verifyPresentation('bank', vp, { challenge: CHALLENGE, domain: 'https://other.example' }), ErrorCodes.CREDENTIAL_DOMAIN_MISMATCH);
    await rejectsWith(v.verifyPresentation('bank', await present([credential], binding, NOW_MS - 12 * MINUTE_MS), binding), ErrorCodes.CREDENTIAL_KEY_BINDING_INVALID);
    assert.deepEqual(executor.counts, [0, 0]);
  });

  it('a holder proof that would not verify either: the presentation is refused for its credentials (ISSUER_UNTRUSTED, not SIGNATURE_INVALID), since that proof is never checked', async () => {
    const { v, executor, nonces, untrusted, present } = await material();
    const tampered = await present([untrusted]);
    tampered['holder'] = 'did:example:mallory';
    await rejectsWith(v.verifyPresentation('bank', tampered, binding), ErrorCodes.CREDENTIAL_ISSUER_UNTRUSTED);
    assert.deepEqual(executor.counts, [0, 0]);
    assert.equal(nonces.size, 0);
  });

  it('(guard) a trusted credential beside an untrusted one: one holder proof, one credential proof (the trusted one), errors by index', async () => {
    const { v, executor, credential, untrusted, present } = await material();
    const result = await v.verifyPresentation('bank', await present([untrusted, credential]), binding);
    assert.equal(result.credentials.length, 1);
    assert.deepEqual(result.errors.map((e) => [e.index, e.code]), [[0, ErrorCodes.CREDENTIAL_ISSUER_UNTRUSTED]]);
    assert.deepEqual(executor.counts, [1, 1]);
  });

  it('(guard) the same credential twice in one presentation is proof-checked once', async () => {
    const { v, executor, credential, present } = await material();
    assert.equal((await v.verifyPresentation('bank', await present([credential, credential]), binding)).credentials.length, 2);
    assert.deepEqual(executor.counts, [1, 1]);
  });

  it('(guard) a refusal that can pass later (a credential not yet valid) still gets the holder proof checked: only a verified holder uses the challenge up', async () => {
    const { v, executor, nonces, issuer, holder, present } = await material();
    const early = await signed(kycCredential(issuer.did, { credentialSubject: { id: holder.did, kycLevel: 'full' }, validFrom: '2026-09-01T00:00:00Z' }), issuer);
    const tampered = await present([early]);
    tampered['holder'] = 'did:example:mallory';
    await rejectsWith(v.verifyPresentation('bank', tampered, binding), ErrorCodes.CREDENTIAL_SIGNATURE_INVALID);
    assert.deepEqual(executor.counts, [1, 0]);
    assert.equal(nonces.size, 0, 'a presentation whose holder proof fails uses nothing');
    await rejectsWith(v.verifyPresentation('bank', await present([early]), binding), ErrorCodes.CREDENTIAL_NOT_YET_VALID);
    assert.deepEqual(executor.counts, [2, 0]);
    assert.equal(nonces.size, 1, 'the verified holder\'s presentation used it up');
  });
});

/**
 * How many issuer keys the verifier resolves while `work` runs (DidResolver.verificationMethod,
 * through which every JWT signature check gets its key: no key resolved, no signature checked).
 */
async function keyResolutionsDuring(work: () => Promise<unknown>): Promise<number> {
  const resolve = DidResolver.prototype.verificationMethod;
  let count = 0;
  DidResolver.prototype.verificationMethod = function counted(this: DidResolver, ...args: Parameters<DidResolver['verificationMethod']>) {
    count++;
    return resolve.apply(this, args);
  };
  try {
    await work();
  } finally {
    DidResolver.prototype.verificationMethod = resolve;
  }
  return count;
}

/** `jwt` with its payload changed by `edit` and its signature kept (so no longer valid). */
function withClaims(jwt: string, edit: (claims: Record<string, unknown>) => void): string {
  const [h, p, s] = jwt.split('.') as [string, string, string];
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8'));
  edit(claims);
  return `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${s}`;
}

describe('a JWT credential is refused on what it claims before its key is resolved', () => {
  it('a VC-JWT expired, not yet valid, or past its JWT exp: refused with its time code, no key resolved (no signature checked)', async () => {
    const { issuer } = await keys();
    const v = await verifier(trusting(issuer.did));
    const expired = await issueVcJwt(kycCredential(issuer.did, { validUntil: '2026-05-01T00:00:00Z' }), issuer);
    const early = await issueVcJwt(kycCredential(issuer.did, { validFrom: '2026-09-01T00:00:00Z' }), issuer);
    const pastExp = await issueVcJwt(kycCredential(issuer.did), issuer, 'vc-1.1-jwt', { iss: issuer.did, nbf: NOW_S - 86_400, exp: NOW_S - 3600 });
    assert.equal(await keyResolutionsDuring(() => rejectsWith(v.verify('bank', expired), ErrorCodes.CREDENTIAL_EXPIRED)), 0);
    assert.equal(await keyResolutionsDuring(() => rejectsWith(v.verify('bank', early), ErrorCodes.CREDENTIAL_NOT_YET_VALID)), 0);
    assert.equal(await keyResolutionsDuring(() => rejectsWith(v.verify('bank', pastExp), ErrorCodes.CREDENTIAL_EXPIRED)), 0);
  });

  it('a VC-JWT the tenant trusts its issuer for, but not for this type: OUT_OF_SCOPE, no key resolved', async () => {
    const { issuer } = await keys();
    const v = await verifier(trusting(issuer.did, ['LicenseCredential']));
    const jwt = await issueVcJwt(kycCredential(issuer.did), issuer);
    assert.equal(await keyResolutionsDuring(() => rejectsWith(v.verify('bank', jwt), ErrorCodes.CREDENTIAL_OUT_OF_SCOPE)), 0);
  });

  it('(guard) expired with a bad signature too: still refused, with the time code (which the sender knew), no key resolved; fresh with a bad signature: SIGNATURE_INVALID', async () => {
    const { issuer } = await keys();
    const v = await verifier(trusting(issuer.did));
    const jwt = await issueVcJwt(kycCredential(issuer.did), issuer);
    const forgedExpired = withClaims(jwt, (claims) => { claims['validUntil'] = '2026-05-01T00:00:00Z'; });
    assert.equal(await keyResolutionsDuring(() => rejectsWith(v.verify('bank', forgedExpired), ErrorCodes.CREDENTIAL_EXPIRED)), 0);
    const forged = withClaims(jwt, (claims) => { claims['validUntil'] = '2036-06-01T00:00:00Z'; });
    assert.equal(await keyResolutionsDuring(() => rejectsWith(v.verify('bank', forged), ErrorCodes.CREDENTIAL_SIGNATURE_INVALID)), 1);
  });

  it('(guard) a valid VC-JWT: one key resolved, verified', async () => {
    const { issuer } = await keys();
    const v = await verifier(trusting(issuer.did));
    const jwt = await issueVcJwt(kycCredential(issuer.did), issuer);
    assert.equal(await keyResolutionsDuring(async () => assert.equal((await v.verify('bank', jwt)).format, 'vc+jwt')), 1);
  });

  it('an SD-JWT VC expired or not yet valid, or its KB-JWT for another audience, challenge or time: refused with its code, no key resolved', async () => {
    const { issuer, holder } = await keys();
    const v = await verifier(trusting(issuer.did));
    const issue = (times: Record<string, number>) =>
      issueSdJwtVc({ iss: issuer.did, vct: 'KycCredential', kyc_level: 'full', ...times }, ['kyc_level'], issuer, holder, 'order-test-salts');
    const kb = { nonce: CHALLENGE, aud: DOMAIN, iatSeconds: NOW_S - 5 };
    const fresh = await issue({ iat: NOW_S - 3600, exp: NOW_S + 86_400 });
    const cases: Array<[string, Promise<string>, string]> = [
      ['expired', presentSdJwtVc(await issue({ iat: NOW_S - 7200, exp: NOW_S - 3600 }), ['kyc_level'], holder, kb), ErrorCodes.CREDENTIAL_EXPIRED],
      ['not yet valid', presentSdJwtVc(await issue({ iat: NOW_S - 3600, nbf: NOW_S + 86_400 }), ['kyc_level'], holder, kb), ErrorCodes.CREDENTIAL_NOT_YET_VALID],
      ['another audience', presentSdJwtVc(fresh, ['kyc_level'], holder, { ...kb, aud: 'https://other.example' }), ErrorCodes.CREDENTIAL_DOMAIN_MISMATCH],
      ['another challenge', presentSdJwtVc(fresh, ['kyc_level'], holder, { ...kb, nonce: 'another' }), ErrorCodes.CREDENTIAL_CHALLENGE_MISMATCH],
      ['a stale KB-JWT', presentSdJwtVc(fresh, ['kyc_level'], holder, { ...kb, iatSeconds: NOW_S - 3600 }), ErrorCodes.CREDENTIAL_KEY_BINDING_INVALID],
    ];
    for (const [what, presented, code] of cases) {
      const compact = await presented;
      assert.equal(await keyResolutionsDuring(() => rejectsWith(v.verify('bank', compact, binding), code as ErrorCode)), 0, what);
    }
    // (guard) the fresh one, rightly bound: its key resolved once, verified
    const good = await presentSdJwtVc(fresh, ['kyc_level'], holder, kb);
    assert.equal(await keyResolutionsDuring(async () => assert.equal((await v.verify('bank', good, binding)).format, 'sd-jwt-vc')), 1);
  });
});

describe('a replayed presentation is refused before its holder proof', () => {
  it('the same presentation again: REPLAYED with no proof checked the second time', async () => {
    const { v, executor, credential, present } = await material();
    const vp = await present([credential]);
    await v.verifyPresentation('bank', vp, binding);
    assert.deepEqual(executor.counts, [1, 1]);
    await rejectsWith(v.verifyPresentation('bank', vp, binding), ErrorCodes.CREDENTIAL_REPLAYED);
    assert.deepEqual(executor.counts, [1, 1], 'the replay cost no holder proof and no credential proof');
    const { errors } = await v.verifyEach('bank', [vp], binding);
    assert.deepEqual(errors.map((e) => e.code), [ErrorCodes.CREDENTIAL_REPLAYED]);
    assert.deepEqual(executor.counts, [1, 1]);
  });

  it('(guard) a forged holder proof for a fresh challenge uses nothing up: the honest holder\'s presentation is then accepted, once', async () => {
    const { v, executor, nonces, credential, present } = await material();
    const challenge = { challenge: 'fresh-challenge', domain: DOMAIN };
    const forged = await present([credential], challenge);
    forged['holder'] = 'did:example:mallory';
    await rejectsWith(v.verifyPresentation('bank', forged, challenge), ErrorCodes.CREDENTIAL_SIGNATURE_INVALID);
    assert.equal(nonces.size, 0, 'a presentation whose holder proof fails uses nothing');
    assert.equal((await v.verifyPresentation('bank', await present([credential], challenge), challenge)).credentials.length, 1);
    await rejectsWith(v.verifyPresentation('bank', await present([credential], challenge), challenge), ErrorCodes.CREDENTIAL_REPLAYED);
    assert.deepEqual(executor.counts, [2, 1], 'the forged and the honest holder proofs; the replay none (the credential proof cached)');
  });
});
