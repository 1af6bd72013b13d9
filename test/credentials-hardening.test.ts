/**
 * Hardening of the JWT credential paths and status caches:
 *   - VC-JWT validity: the JWT's nbf/exp and the credential's own dates all bind (stricter wins);
 *   - issuer signatures (VC-JWT, SD-JWT VC, Status List Tokens, accumulator states) need a key
 *     the issuer's DID document lists under assertionMethod, not merely any key in it;
 *   - a status list (Bitstring or Token) issued before the one held never replaces it.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { ErrorCodes } from '../sidecar/src/lib/errors.ts';
import { AccumulatorIssuer, CredentialVerifier, parseCredentialPolicy, signAccumulatorState, type CredentialVerifierOptions } from '../sidecar/src/credentials/index.ts';
import { issueSdJwtVc, issueTokenStatusList, issueVcJwt, jwsAlgorithm, sampleContext, type SampleKey } from '../sidecar/src/credentials/samples.ts';
import { NOW_MS, VC_V1, keys, kycCredential, rejectsWith, signed, signedStatusList, seeded, trusting, verifier } from './credentials/fixtures.ts';

const NOW_S = Math.floor(NOW_MS / 1000);
const HOUR_MS = 3_600_000;

describe('VC-JWT validity: JWT claims and credential dates both bind', () => {
  /** A VC 1.1 credential body without the dates the tests set themselves. */
  async function legacyBody(over: Record<string, unknown> = {}): Promise<{ issuer: SampleKey; vc: Record<string, unknown> }> {
    const { issuerP256: issuer } = await keys();
    const { validFrom: _f, validUntil: _u, issuer: _i, ...vc } = kycCredential(issuer.did, { '@context': [VC_V1], ...over });
    return { issuer, vc };
  }

  it('a VC 1.1 JWT whose vc.expirationDate has passed (no exp claim) gets CREDENTIAL_EXPIRED, also after being verified while valid', async () => {
    const { issuer, vc } = await legacyBody({ expirationDate: new Date(NOW_MS + HOUR_MS).toISOString() });
    const v = await verifier(trusting(issuer.did));
    const jwt = await issueVcJwt(vc, issuer, 'vc-1.1-jwt', { iss: issuer.did, nbf: NOW_S - 3600 });
    const facts = await v.verify('bank', jwt, { nowMs: NOW_MS });
    assert.equal(facts.validity.validUntil, new Date(NOW_MS + HOUR_MS).toISOString());
    await rejectsWith(v.verify('bank', jwt, { nowMs: NOW_MS + 2 * HOUR_MS }), ErrorCodes.CREDENTIAL_EXPIRED);
  });

  it('a VC 1.1 JWT past its exp claim gets CREDENTIAL_EXPIRED even when vc.expirationDate is later', async () => {
    const { issuer, vc } = await legacyBody({ expirationDate: '2030-01-01T00:00:00Z' });
    const v = await verifier(trusting(issuer.did));
    await rejectsWith(v.verify('bank', await issueVcJwt(vc, issuer, 'vc-1.1-jwt', { iss: issuer.did, nbf: NOW_S - 7200, exp: NOW_S - 3600 })), ErrorCodes.CREDENTIAL_EXPIRED);
  });

  it('a VC 1.1 JWT whose vc.expirationDate has passed gets CREDENTIAL_EXPIRED even when its exp claim is later', async () => {
    const { issuer, vc } = await legacyBody({ expirationDate: new Date(NOW_MS - HOUR_MS).toISOString() });
    const v = await verifier(trusting(issuer.did));
    await rejectsWith(v.verify('bank', await issueVcJwt(vc, issuer, 'vc-1.1-jwt', { iss: issuer.did, nbf: NOW_S - 7200, exp: NOW_S + 86_400 })), ErrorCodes.CREDENTIAL_EXPIRED);
  });

  it('a VC 1.1 JWT whose vc.issuanceDate is in the future (nbf in the past) gets CREDENTIAL_NOT_YET_VALID', async () => {
    const { issuer, vc } = await legacyBody({ issuanceDate: new Date(NOW_MS + 2 * HOUR_MS).toISOString() });
    const v = await verifier(trusting(issuer.did));
    await rejectsWith(v.verify('bank', await issueVcJwt(vc, issuer, 'vc-1.1-jwt', { iss: issuer.did, nbf: NOW_S - 3600, exp: NOW_S + 86_400 })), ErrorCodes.CREDENTIAL_NOT_YET_VALID);
  });

  it('a vc+jwt past its exp claim (validUntil later or absent) gets CREDENTIAL_EXPIRED, also after being verified while valid', async () => {
    const { issuer } = await keys();
    const v = await verifier(trusting(issuer.did));
    // validUntil a year away, exp one hour away: exp decides
    const jwt = await issueVcJwt(kycCredential(issuer.did), issuer, 'vc-jose-cose', { exp: NOW_S + 3600 });
    const facts = await v.verify('bank', jwt, { nowMs: NOW_MS });
    assert.equal(facts.validity.validUntil, new Date(NOW_MS + HOUR_MS).toISOString());
    assert.equal(facts.validity.validFrom, '2026-01-01T00:00:00Z'); // a bound exp/nbf do not narrow keeps its text
    await rejectsWith(v.verify('bank', jwt, { nowMs: NOW_MS + 2 * HOUR_MS }), ErrorCodes.CREDENTIAL_EXPIRED);
    const { validUntil: _u, ...open } = kycCredential(issuer.did);
    await rejectsWith(v.verify('bank', await issueVcJwt(open, issuer, 'vc-jose-cose', { exp: NOW_S - 3600 })), ErrorCodes.CREDENTIAL_EXPIRED);
  });

  it('a vc+jwt before its nbf claim gets CREDENTIAL_NOT_YET_VALID', async () => {
    const { issuer } = await keys();
    const v = await verifier(trusting(issuer.did));
    await rejectsWith(v.verify('bank', await issueVcJwt(kycCredential(issuer.did), issuer, 'vc-jose-cose', { nbf: NOW_S + 2 * 3600 })), ErrorCodes.CREDENTIAL_NOT_YET_VALID);
  });
});

describe('issuer signatures need an assertionMethod key', () => {
  const WEB_DID = 'did:web:issuer.hardening.example';


  /**
   * A pinned did:web issuer with an assertion key, an authentication-only key referenced by id,
   * and one embedded under authentication; a verifier trusting it, built from the real policy.
   */
  async function webIssuer(raw: Record<string, unknown> = {}, options: CredentialVerifierOptions = {}) {
    const { issuer, rogue, holder } = await keys();
    const asWeb = (key: SampleKey, fragment: string): SampleKey => ({ ...key, did: WEB_DID, kid: `${WEB_DID}#${fragment}` });
    const document = {
      '@context': ['https://www.w3.org/ns/did/v1'],
      id: WEB_DID,
      verificationMethod: [
        { id: `${WEB_DID}#assert-1`, type: 'JsonWebKey2020', controller: WEB_DID, publicKeyJwk: issuer.publicJwk },
        { id: `${WEB_DID}#auth-1`, type: 'JsonWebKey2020', controller: WEB_DID, publicKeyJwk: rogue.publicJwk },
      ],
      assertionMethod: ['#assert-1'],
      authentication: ['#auth-1', { id: `${WEB_DID}#auth-embedded`, type: 'JsonWebKey2020', controller: WEB_DID, publicKeyJwk: holder.publicJwk }],
    };
    const didBytes = new Uint8Array(Buffer.from(JSON.stringify(document)));
    const context = sampleContext();
    const policy = parseCredentialPolicy(
      'bank',
      {
        contexts: [{ url: context.url, sha256Hex: context.sha256Hex, path: 'ctx.jsonld' }],
        didWeb: [{ did: WEB_DID, sha256Hex: createHash('sha256').update(didBytes).digest('hex'), path: 'did.json' }],
        ...trusting(WEB_DID),
        keyBinding: { required: false },
        ...raw,
      },
      (path) => {
        if (path === 'ctx.jsonld') return context.bytes;
        if (path === 'did.json') return didBytes;
        throw new Error(`no file ${path}`);
      },
    );
    const v = await CredentialVerifier.create([policy], { clock: () => NOW_MS, ...options });
    return { v, assertion: asWeb(issuer, 'assert-1'), authOnly: asWeb(rogue, 'auth-1'), embeddedAuth: asWeb(holder, 'auth-embedded') };
  }

  it('a VC-JWT signed by a did:web authentication-only key (referenced or embedded) gets CREDENTIAL_ISSUER_MISMATCH; the assertion key verifies', async () => {
    const { v, assertion, authOnly, embeddedAuth } = await webIssuer();
    assert.equal((await v.verify('bank', await issueVcJwt(kycCredential(WEB_DID), assertion))).issuer, WEB_DID);
    await rejectsWith(v.verify('bank', await issueVcJwt(kycCredential(WEB_DID), authOnly)), ErrorCodes.CREDENTIAL_ISSUER_MISMATCH);
    await rejectsWith(v.verify('bank', await issueVcJwt(kycCredential(WEB_DID), embeddedAuth)), ErrorCodes.CREDENTIAL_ISSUER_MISMATCH);
  });

  it('an SD-JWT VC signed by a did:web authentication-only key gets CREDENTIAL_ISSUER_MISMATCH; the assertion key verifies', async () => {
    const { v, assertion, authOnly, embeddedAuth } = await webIssuer();
    const sdJwt = (key: SampleKey) => issueSdJwtVc({ iss: WEB_DID, vct: 'KycCredential', iat: NOW_S - 60, exp: NOW_S + 3600, kyc_level: 'full' }, ['kyc_level'], key, undefined);
    assert.equal((await v.verify('bank', await sdJwt(assertion))).issuer, WEB_DID);
    await rejectsWith(v.verify('bank', await sdJwt(authOnly)), ErrorCodes.CREDENTIAL_ISSUER_MISMATCH);
    await rejectsWith(v.verify('bank', await sdJwt(embeddedAuth)), ErrorCodes.CREDENTIAL_ISSUER_MISMATCH);
  });

  it('a Status List Token signed by a did:web authentication-only key is not admitted (CREDENTIAL_ISSUER_MISMATCH)', async () => {
    const { v, assertion, authOnly } = await webIssuer({ statusLists: { ttlMs: 60_000, maxAgeMs: 600_000 } });
    const uri = 'https://status.issuer.hardening.example/tokens/1';
    const token = (key: SampleKey) => issueTokenStatusList(key, uri, { bits: 1, size: 64, values: new Map(), iatSeconds: NOW_S });
    await rejectsWith(v.admitTokenStatusList('bank', uri, token(authOnly)), ErrorCodes.CREDENTIAL_ISSUER_MISMATCH);
    const credential = await issueSdJwtVc({ iss: WEB_DID, vct: 'KycCredential', iat: NOW_S - 60, status: { status_list: { idx: 3, uri } } }, [], assertion, undefined);
    await rejectsWith(v.verify('bank', credential), ErrorCodes.CREDENTIAL_STATUS_UNAVAILABLE);
    await v.admitTokenStatusList('bank', uri, token(assertion));
    await v.verify('bank', credential);
  });

  it('an accumulator state signed by a did:web authentication-only key gets CREDENTIAL_STATUS_INVALID; the assertion key is admitted', async () => {
    const acc = AccumulatorIssuer.create('urn:accumulator:hardening:1', seeded('hardening-acc'));
    const { v, assertion, authOnly } = await webIssuer({ accumulators: [{ id: acc.id, issuer: WEB_DID, publicKeyHex: Buffer.from(acc.publicKey).toString('hex') }] });
    const sign = (key: SampleKey) => signAccumulatorState(acc.state(), { kid: key.kid, privateJwk: key.privateJwk, alg: jwsAlgorithm(key) }, NOW_S);
    await rejectsWith(v.admitAccumulatorState('bank', await sign(authOnly)), ErrorCodes.CREDENTIAL_STATUS_INVALID);
    assert.equal(await v.admitAccumulatorState('bank', await sign(assertion)), 0);
  });
});

describe('a status list issued before the one held never replaces it', () => {
  const LIST_URL = 'https://status.bank.example/lists/hardening';

  const statusList = (issuer: SampleKey, validFrom: string, revoked: number[]) => signedStatusList(issuer, LIST_URL, { validFrom, set: revoked });
  const entry = (index: number) => ({ id: `${LIST_URL}#${index}`, type: 'BitstringStatusListEntry', statusPurpose: 'revocation', statusListIndex: String(index), statusListCredential: LIST_URL });

  it('an older Bitstring Status List (admitted or refreshed) gets CREDENTIAL_STATUS_STALE and the revoked credential stays revoked', async () => {
    const { issuer } = await keys();
    let now = NOW_MS;
    let served: unknown;
    const v = await verifier({ ...trusting(issuer.did), statusLists: { ttlMs: 60_000, maxAgeMs: 600_000 } }, { clock: () => now, statusListSource: { fetch: async () => served } });
    const credential = await signed(kycCredential(issuer.did, { credentialStatus: entry(6) }), issuer);
    const before = await statusList(issuer, '2026-05-01T00:00:00Z', []);
    const revoked = await statusList(issuer, '2026-05-20T00:00:00Z', [6]);
    await v.admitStatusList('bank', LIST_URL, revoked);
    await rejectsWith(v.verify('bank', credential), ErrorCodes.CREDENTIAL_REVOKED);
    // the pre-revocation list, still validly signed and unexpired, handed in later
    now = NOW_MS + 1_000;
    await rejectsWith(v.admitStatusList('bank', LIST_URL, before), ErrorCodes.CREDENTIAL_STATUS_STALE);
    await rejectsWith(v.verify('bank', credential), ErrorCodes.CREDENTIAL_REVOKED);
    // ...or served by a stale copy at refresh: a refresh failure, the newer list keeps serving
    served = before;
    now = NOW_MS + 120_000;
    assert.deepEqual((await v.refreshStatusLists(AbortSignal.timeout(5_000), now)).map((f) => [f.url, f.error.code]), [[LIST_URL, ErrorCodes.CREDENTIAL_STATUS_STALE]]);
    await rejectsWith(v.verify('bank', credential), ErrorCodes.CREDENTIAL_REVOKED);
    // a list issued at the same time or later still replaces it
    await v.admitStatusList('bank', LIST_URL, await statusList(issuer, '2026-05-20T00:00:00Z', []));
    await v.verify('bank', credential);
  });

  it('an older Status List Token (admitted or refreshed) gets CREDENTIAL_STATUS_STALE and the revoked credential stays revoked', async () => {
    const { issuer } = await keys();
    const uri = 'https://status.bank.example/tokens/hardening';
    let now = NOW_MS;
    let served: unknown;
    const v = await verifier({ ...trusting(issuer.did), keyBinding: { required: false }, statusLists: { ttlMs: 60_000, maxAgeMs: 600_000 } }, { clock: () => now, statusListSource: { fetch: async () => served } });
    const credential = await issueSdJwtVc({ iss: issuer.did, vct: 'KycCredential', iat: NOW_S - 7200, status: { status_list: { idx: 7, uri } } }, [], issuer, undefined);
    const before = issueTokenStatusList(issuer, uri, { bits: 1, size: 64, values: new Map(), iatSeconds: NOW_S - 3600 });
    const revoked = issueTokenStatusList(issuer, uri, { bits: 1, size: 64, values: new Map([[7, 1]]), iatSeconds: NOW_S });
    await v.admitTokenStatusList('bank', uri, revoked);
    await rejectsWith(v.verify('bank', credential), ErrorCodes.CREDENTIAL_REVOKED);
    now = NOW_MS + 1_000;
    await rejectsWith(v.admitTokenStatusList('bank', uri, before), ErrorCodes.CREDENTIAL_STATUS_STALE);
    await rejectsWith(v.verify('bank', credential), ErrorCodes.CREDENTIAL_REVOKED);
    served = before;
    now = NOW_MS + 120_000;
    assert.deepEqual((await v.refreshStatusLists(AbortSignal.timeout(5_000), now)).map((f) => [f.url, f.error.code]), [[uri, ErrorCodes.CREDENTIAL_STATUS_STALE]]);
    await rejectsWith(v.verify('bank', credential), ErrorCodes.CREDENTIAL_REVOKED);
    await v.admitTokenStatusList('bank', uri, issueTokenStatusList(issuer, uri, { bits: 1, size: 64, values: new Map(), iatSeconds: NOW_S + 60 }));
    await v.verify('bank', credential);
  });
});
