/**
 * VC-JWT (VC-JOSE-COSE and VC 1.1 JWT) and SD-JWT VC (RFC 9901 + SD-JWT VC draft) with key
 * binding: the checks @sd-jwt/core 0.19.0 leaves out (unreferenced disclosures, KB-JWT aud, iat,
 * sd_hash, presence) are each proven to bite.
 */
import assert from 'node:assert/strict';
import { createHash, createPrivateKey, generateKeyPairSync, sign, type JsonWebKey } from 'node:crypto';
import { describe, it } from 'node:test';
import { ErrorCodes } from '../sidecar/src/lib/errors.ts';
import { issueSdJwtVc, issueTokenStatusList, issueVcJwt, jwsAlgorithm, presentSdJwtVc, type SampleKey } from '../sidecar/src/credentials/samples.ts';
import { statusValueAt } from '../sidecar/src/credentials/token-status-list.ts';
import { publicKeyFromJwk } from '../sidecar/src/credentials/jws-keys.ts';
import { CHALLENGE, DOMAIN, NOW_MS, keys, kycCredential, rejectsWith, trusting, verifier } from './credentials/fixtures.ts';

const NOW_S = Math.floor(NOW_MS / 1000);

function signWith(key: SampleKey, header: object, payload: object): string {
  // a hand-made JWS for the negative cases the issuing helpers refuse to make
  const h = Buffer.from(JSON.stringify(header)).toString('base64url');
  const p = Buffer.from(JSON.stringify(payload)).toString('base64url');
  const privateKey = createPrivateKey({ key: key.privateJwk as JsonWebKey, format: 'jwk' });
  const signature = key.algorithm === 'Ed25519' ? sign(null, Buffer.from(`${h}.${p}`), privateKey) : sign('sha256', Buffer.from(`${h}.${p}`), { key: privateKey, dsaEncoding: 'ieee-p1363' });
  return `${h}.${p}.${signature.toString('base64url')}`;
}

describe('JWK import', () => {
  it('imports a public key once and hands out the same key for the same members, never for other ones', () => {
    const p256 = (): JsonWebKey => generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' });
    const a = p256();
    assert.equal(publicKeyFromJwk({ ...a }), publicKeyFromJwk({ ...a, kid: 'other name, same key' }));
    // same x, another y: not the same key (and not a point on the curve: refused)
    const b = p256();
    assert.notEqual(publicKeyFromJwk(b), publicKeyFromJwk(a));
    assert.throws(() => publicKeyFromJwk({ ...a, y: b.y }), (e: unknown) => (e as { code?: string }).code === ErrorCodes.CREDENTIAL_KEY_UNSUPPORTED);
    // a private member, or a key type that does not go with the curve, is refused even for a known key
    assert.throws(() => publicKeyFromJwk({ ...a, d: 'AAAA' }), (e: unknown) => (e as { code?: string }).code === ErrorCodes.CREDENTIAL_KEY_UNSUPPORTED);
    assert.throws(() => publicKeyFromJwk({ ...a, kty: 'OKP' }), (e: unknown) => (e as { code?: string }).code === ErrorCodes.CREDENTIAL_KEY_UNSUPPORTED);
  });
});

describe('VC-JWT', () => {
  it('verifies a VC-JOSE-COSE vc+jwt (EdDSA) and a VC 1.1 JWT (ES256)', async () => {
    const { issuer, issuerP256 } = await keys();
    const v = await verifier({ trustAnchors: [{ issuer: issuer.did, credentialTypes: ['KycCredential'] }, { issuer: issuerP256.did, credentialTypes: ['KycCredential'] }] });
    const jose = await v.verify('bank', await issueVcJwt(kycCredential(issuer.did), issuer));
    assert.equal(jose.format, 'vc+jwt');
    assert.equal(jose.proofType, 'JWT/EdDSA');
    assert.deepEqual(jose.claims, { kycLevel: 'full', country: 'CH' });
    const { validFrom: _f, validUntil: _u, issuer: _i, ...vc } = kycCredential(issuerP256.did, { '@context': ['https://www.w3.org/2018/credentials/v1'] });
    const legacy = await v.verify('bank', await issueVcJwt(vc, issuerP256, 'vc-1.1-jwt', { iss: issuerP256.did, sub: 'did:example:alice', nbf: NOW_S - 3600, exp: NOW_S + 3600 }));
    assert.equal(legacy.proofType, 'JWT/ES256');
    assert.equal(legacy.subject, 'did:example:alice');
  });

  it('refuses a tampered payload, a foreign signer, alg confusion and expiry', async () => {
    const { issuer, rogue } = await keys();
    const v = await verifier(trusting(issuer.did));
    const jwt = await issueVcJwt(kycCredential(issuer.did), issuer);
    const [h, p, s] = jwt.split('.') as [string, string, string];
    const payload = JSON.parse(Buffer.from(p, 'base64url').toString());
    payload.credentialSubject.kycLevel = 'none';
    await rejectsWith(v.verify('bank', `${h}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.${s}`), ErrorCodes.CREDENTIAL_SIGNATURE_INVALID);
    await rejectsWith(v.verify('bank', signWith(rogue, { alg: 'EdDSA', kid: rogue.kid, typ: 'vc+jwt' }, kycCredential(issuer.did))), ErrorCodes.CREDENTIAL_ISSUER_MISMATCH);
    await rejectsWith(v.verify('bank', signWith(issuer, { alg: 'ES256', kid: issuer.kid, typ: 'vc+jwt' }, kycCredential(issuer.did))), ErrorCodes.CREDENTIAL_SIGNATURE_INVALID);
    await rejectsWith(v.verify('bank', `${Buffer.from(JSON.stringify({ alg: 'none', kid: issuer.kid, typ: 'vc+jwt' })).toString('base64url')}.${p}.`), ErrorCodes.CREDENTIAL_SIGNATURE_INVALID);
    await rejectsWith(v.verify('bank', await issueVcJwt(kycCredential(issuer.did, { validUntil: '2026-02-01T00:00:00Z' }), issuer)), ErrorCodes.CREDENTIAL_EXPIRED);
  });

  it('checks freshness on every call: a VC-JWT verified (and cached) while valid is refused once it expired', async () => {
    const { issuer, issuerP256 } = await keys();
    const v = await verifier({ trustAnchors: [{ issuer: issuer.did, credentialTypes: ['KycCredential'] }, { issuer: issuerP256.did, credentialTypes: ['KycCredential'] }] });
    const jose = await issueVcJwt(kycCredential(issuer.did, { validUntil: new Date(NOW_MS + 3_600_000).toISOString() }), issuer);
    await v.verify('bank', jose, { nowMs: NOW_MS });
    await rejectsWith(v.verify('bank', jose, { nowMs: NOW_MS + 2 * 3_600_000 }), ErrorCodes.CREDENTIAL_EXPIRED);
    const { validFrom: _f, validUntil: _u, issuer: _i, ...vc } = kycCredential(issuerP256.did, { '@context': ['https://www.w3.org/2018/credentials/v1'] });
    const legacy = await issueVcJwt(vc, issuerP256, 'vc-1.1-jwt', { iss: issuerP256.did, sub: 'did:example:alice', nbf: NOW_S - 3600, exp: NOW_S + 3600 });
    await v.verify('bank', legacy, { nowMs: NOW_MS });
    await rejectsWith(v.verify('bank', legacy, { nowMs: NOW_MS + 2 * 3_600_000 }), ErrorCodes.CREDENTIAL_EXPIRED);
    await rejectsWith(v.verify('bank', legacy, { nowMs: NOW_MS - 2 * 3_600_000 }), ErrorCodes.CREDENTIAL_NOT_YET_VALID);
  });
});

async function sdJwt(issuer: SampleKey, holder: SampleKey | undefined, extra: Record<string, unknown> = {}): Promise<string> {
  return issueSdJwtVc(
    { iss: issuer.did, vct: 'KycCredential', iat: NOW_S - 3600, exp: NOW_S + 86_400, given_name: 'Alice', family_name: 'Example', birthdate: '1990-01-01', kyc_level: 'full', ...extra },
    ['given_name', 'family_name', 'birthdate', 'kyc_level'],
    issuer,
    holder,
    'sd-jwt-test-salts',
  );
}

const binding = { nonce: CHALLENGE, aud: DOMAIN, iatSeconds: NOW_S - 5 };

describe('SD-JWT VC', () => {
  it('verifies with key binding and returns only the disclosed claims', async () => {
    const { issuer, holder } = await keys();
    const v = await verifier(trusting(issuer.did));
    const presented = await presentSdJwtVc(await sdJwt(issuer, holder), ['kyc_level'], holder, binding);
    const facts = await v.verify('bank', presented, { challenge: CHALLENGE, domain: DOMAIN });
    assert.equal(facts.format, 'sd-jwt-vc');
    assert.equal(facts.proofType, `SD-JWT/${jwsAlgorithm(issuer)}`);
    assert.deepEqual(facts.claims, { kyc_level: 'full' });
    assert.deepEqual(facts.types, ['KycCredential']);
    assert.match(facts.holder ?? '', /^urn:ietf:params:oauth:jwk-thumbprint:sha-256:/);
  });

  it('works with P-256 issuer and holder keys', async () => {
    const { issuerP256, holderP256 } = await keys();
    const v = await verifier(trusting(issuerP256.did));
    const presented = await presentSdJwtVc(await sdJwt(issuerP256, holderP256), ['given_name'], holderP256, binding);
    assert.deepEqual((await v.verify('bank', presented, { challenge: CHALLENGE, domain: DOMAIN })).claims, { given_name: 'Alice' });
  });

  it('refuses an SD-JWT without key binding when the tenant requires it, accepts it when not', async () => {
    const { issuer, holder } = await keys();
    const presented = await presentSdJwtVc(await sdJwt(issuer, holder), ['kyc_level'], holder, undefined);
    await rejectsWith((await verifier(trusting(issuer.did))).verify('bank', presented, { challenge: CHALLENGE, domain: DOMAIN }), ErrorCodes.CREDENTIAL_KEY_BINDING_MISSING);
    const lax = await verifier({ ...trusting(issuer.did), keyBinding: { required: false } });
    assert.deepEqual((await lax.verify('bank', presented)).claims, { kyc_level: 'full' });
  });

  it('refuses a tampered disclosure (the library alone would drop it silently)', async () => {
    const { issuer, holder } = await keys();
    const v = await verifier({ ...trusting(issuer.did), keyBinding: { required: false } });
    const presented = await presentSdJwtVc(await sdJwt(issuer, holder), ['kyc_level'], holder, undefined);
    const parts = presented.split('~');
    const [salt, name] = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString()) as [string, string, unknown];
    parts[1] = Buffer.from(JSON.stringify([salt, name, 'basic'])).toString('base64url');
    await rejectsWith(v.verify('bank', parts.join('~')), ErrorCodes.CREDENTIAL_DISCLOSURE_INVALID);
    // a disclosure from another credential, and a duplicated one
    const forged = Buffer.from(JSON.stringify(['c2FsdA', 'kyc_level', 'full'])).toString('base64url');
    await rejectsWith(v.verify('bank', `${parts[0]}~${forged}~`), ErrorCodes.CREDENTIAL_DISCLOSURE_INVALID);
    const original = presented.split('~');
    await rejectsWith(v.verify('bank', `${original[0]}~${original[1]}~${original[1]}~`), ErrorCodes.CREDENTIAL_DISCLOSURE_INVALID);
  });

  it('checks every key-binding claim: nonce, aud, iat freshness, sd_hash, signer', async () => {
    const { issuer, holder, rogue } = await keys();
    const v = await verifier(trusting(issuer.did));
    const issued = await sdJwt(issuer, holder);
    const opts = { challenge: CHALLENGE, domain: DOMAIN };
    await rejectsWith(v.verify('bank', await presentSdJwtVc(issued, ['kyc_level'], holder, { ...binding, nonce: 'other' }), opts), ErrorCodes.CREDENTIAL_CHALLENGE_MISMATCH);
    await rejectsWith(v.verify('bank', await presentSdJwtVc(issued, ['kyc_level'], holder, { ...binding, aud: 'https://elsewhere.example' }), opts), ErrorCodes.CREDENTIAL_DOMAIN_MISMATCH);
    await rejectsWith(v.verify('bank', await presentSdJwtVc(issued, ['kyc_level'], holder, { ...binding, iatSeconds: NOW_S - 3600 }), opts), ErrorCodes.CREDENTIAL_KEY_BINDING_INVALID);
    await rejectsWith(v.verify('bank', await presentSdJwtVc(issued, ['kyc_level'], holder, { ...binding, iatSeconds: NOW_S + 3600 }), opts), ErrorCodes.CREDENTIAL_KEY_BINDING_INVALID);
    await rejectsWith(v.verify('bank', await presentSdJwtVc(issued, ['kyc_level'], rogue, binding), opts), ErrorCodes.CREDENTIAL_KEY_BINDING_INVALID);
    // sd_hash: a KB-JWT made for one disclosure set, moved onto another
    const one = await presentSdJwtVc(issued, ['kyc_level'], holder, binding);
    const two = await presentSdJwtVc(issued, ['kyc_level', 'given_name'], holder, binding);
    const moved = `${two.slice(0, two.lastIndexOf('~') + 1)}${one.slice(one.lastIndexOf('~') + 1)}`;
    await rejectsWith(v.verify('bank', moved, opts), ErrorCodes.CREDENTIAL_KEY_BINDING_INVALID);
  });

  it('refuses a replayed presentation (the KB-JWT nonce is accepted once)', async () => {
    const { issuer, holder } = await keys();
    const v = await verifier(trusting(issuer.did));
    const presented = await presentSdJwtVc(await sdJwt(issuer, holder), ['kyc_level'], holder, binding);
    await v.verify('bank', presented, { challenge: CHALLENGE, domain: DOMAIN });
    await rejectsWith(v.verify('bank', presented, { challenge: CHALLENGE, domain: DOMAIN }), ErrorCodes.CREDENTIAL_REPLAYED);
  });

  it('accepts several credentials answering one challenge in one request, and refuses the request replayed', async () => {
    const { issuer, holder } = await keys();
    const v = await verifier(trusting(issuer.did));
    const kyc = await presentSdJwtVc(await sdJwt(issuer, holder), ['kyc_level'], holder, binding);
    const name = await presentSdJwtVc(await sdJwt(issuer, holder, { iat: NOW_S - 60 }), ['given_name'], holder, binding);
    const first = await v.verifyEach('bank', [kyc, name], { challenge: CHALLENGE, domain: DOMAIN });
    assert.deepEqual(first.errors, []);
    assert.equal(first.credentials.length, 2);
    const again = await v.verifyEach('bank', [kyc, name], { challenge: CHALLENGE, domain: DOMAIN });
    assert.deepEqual(again.errors.map((e) => e.code), [ErrorCodes.CREDENTIAL_REPLAYED, ErrorCodes.CREDENTIAL_REPLAYED]);
  });

  it('refuses a tampered issuer JWT, a foreign issuer key, expiry, and an untrusted issuer', async () => {
    const { issuer, holder, rogue, anchor } = await keys();
    const v = await verifier({ ...trusting(issuer.did), keyBinding: { required: false } });
    const presented = await presentSdJwtVc(await sdJwt(issuer, holder), ['kyc_level'], holder, undefined);
    const [jwt, ...rest] = presented.split('~');
    const [h, p, s] = jwt!.split('.') as [string, string, string];
    const payload = JSON.parse(Buffer.from(p, 'base64url').toString());
    payload.vct = 'AdminCredential';
    await rejectsWith(v.verify('bank', [`${h}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.${s}`, ...rest].join('~')), ErrorCodes.CREDENTIAL_SIGNATURE_INVALID);
    const foreign = await issueSdJwtVc({ iss: issuer.did, vct: 'KycCredential', iat: NOW_S, kyc_level: 'full' }, ['kyc_level'], rogue, holder);
    await rejectsWith(v.verify('bank', foreign), ErrorCodes.CREDENTIAL_ISSUER_MISMATCH);
    await rejectsWith(v.verify('bank', await sdJwt(issuer, holder, { exp: NOW_S - 3600, iat: NOW_S - 7200 })), ErrorCodes.CREDENTIAL_EXPIRED);
    await rejectsWith(v.verify('bank', await sdJwt(anchor, holder)), ErrorCodes.CREDENTIAL_ISSUER_UNTRUSTED);
  });

  it('checks the status claim against held Status List Tokens: valid, revoked, suspended, unknown, stale', async () => {
    const { issuer, holder, rogue } = await keys();
    let now = NOW_MS;
    const v = await verifier({ ...trusting(issuer.did), keyBinding: { required: false }, statusLists: { ttlMs: 60_000, maxAgeMs: 600_000 } }, { clock: () => now });
    const uri = 'https://status.bank.example/tokens/1';
    const withStatus = (idx: number) => sdJwt(issuer, holder, { status: { status_list: { idx, uri } } });
    await rejectsWith(v.verify('bank', await withStatus(3)), ErrorCodes.CREDENTIAL_STATUS_UNAVAILABLE);
    const values = new Map([[4, 1], [5, 2], [6, 3]]);
    await v.admitTokenStatusList('bank', uri, issueTokenStatusList(issuer, uri, { bits: 2, size: 1024, values, iatSeconds: NOW_S }));
    assert.deepEqual((await v.verify('bank', await withStatus(3))).status.map((s) => s.mechanism), ['TokenStatusList']);
    await rejectsWith(v.verify('bank', await withStatus(4)), ErrorCodes.CREDENTIAL_REVOKED);
    await rejectsWith(v.verify('bank', await withStatus(5)), ErrorCodes.CREDENTIAL_SUSPENDED);
    await rejectsWith(v.verify('bank', await withStatus(6)), ErrorCodes.CREDENTIAL_STATUS_INVALID);
    await rejectsWith(v.verify('bank', await withStatus(4096)), ErrorCodes.CREDENTIAL_STATUS_INVALID);
    // a token from another issuer is held but not believed; one for another URI is not admitted
    await v.admitTokenStatusList('bank', uri, issueTokenStatusList(rogue, uri, { bits: 1, size: 8, values: new Map(), iatSeconds: NOW_S }));
    await rejectsWith(v.verify('bank', await withStatus(3)), ErrorCodes.CREDENTIAL_STATUS_INVALID);
    await rejectsWith(v.admitTokenStatusList('bank', 'https://other.example/1', issueTokenStatusList(issuer, uri, { bits: 1, size: 8, values: new Map(), iatSeconds: NOW_S })), ErrorCodes.CREDENTIAL_STATUS_INVALID);
    await v.admitTokenStatusList('bank', uri, issueTokenStatusList(issuer, uri, { bits: 2, size: 1024, values, iatSeconds: NOW_S }));
    now = NOW_MS + 600_001;
    await rejectsWith(v.verify('bank', await sdJwt(issuer, holder, { iat: NOW_S, exp: NOW_S + 7200, status: { status_list: { idx: 3, uri } } })), ErrorCodes.CREDENTIAL_STATUS_STALE);
  });

  it('decodes Token Status List entries least significant bits first (draft-ietf-oauth-status-list)', () => {
    // the draft's 1-bit example: statuses [1,0,0,1,1,1,0,1, 1,1,0,0,0,1,0,1] are bytes 0xB9 0xA3
    const bytes = new Uint8Array([0xb9, 0xa3]);
    const decoded = Array.from({ length: 16 }, (_, i) => statusValueAt(bytes, 1, i));
    assert.deepEqual(decoded, [1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1]);
  });

  it('hashes disclosures as RFC 9901 does (its family_name "Möbius" example)', () => {
    // the disclosure and digest printed in RFC 9901's "Hashing Disclosures" example: the digest is
    // over the ASCII of the base64url disclosure, as checkDisclosures computes it
    const disclosure = 'WyJfMjZiYzRMVC1hYzZxMktJNmNCVzVlcyIsICJmYW1pbHlfbmFtZSIsICJNw7ZiaXVzIl0';
    assert.equal(createHash('sha256').update(disclosure, 'ascii').digest('base64url'), 'X9yH0Ajrdm1Oij4tWso9UzzKJvPoDxwmuEcO3XAdRC0');
  });
});
