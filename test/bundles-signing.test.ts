/**
 * Bundle signatures: interoperability with the real opa CLI in both directions, OPA's file
 * hashing rules, and every way a signature is refused (each with its code).
 */
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import { FlattenedSign } from 'jose';
import {
  hashBundleFile,
  loadVerificationKey,
  readBundle,
  readTar,
  signBundle,
  TrustStore,
  verifyBundleSignature,
  type SignaturePolicy,
  type SigningAlgorithm,
  type VerificationKey,
} from '../sidecar/src/bundles/index.ts';
import { ErrorCodes, isPavilionError, type ErrorCode } from '../sidecar/src/lib/errors.ts';
import { findOpa, runTool } from '../sidecar/src/lib/tools.ts';
import { buildFixtureBundle, makeTarGz, unpackFixture, type RawTarEntry } from './harness/fixtures.ts';

interface KeyPair {
  readonly privatePem: string;
  readonly publicPem: string;
}

function keyPair(algorithm: SigningAlgorithm): KeyPair {
  let pair: { privateKey: KeyObject; publicKey: KeyObject };
  if (algorithm === 'EdDSA') pair = generateKeyPairSync('ed25519');
  else if (algorithm.startsWith('ES')) {
    const curve = { ES256: 'prime256v1', ES384: 'secp384r1', ES512: 'secp521r1' }[algorithm as 'ES256'];
    pair = generateKeyPairSync('ec', { namedCurve: curve });
  } else pair = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    privatePem: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicPem: pair.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

const MODULE = 'package bank.authz\n\nallow if input.user == "alice"\n';
/** Whitespace, key order, number literals, escapes and non-ASCII keys OPA's hasher must agree on. */
const TRICKY_DATA = '{ "z": 1.0, "a": [1e2, -0, 0.5E-3, 12345678901234567890],\n  "\\u00e9": "line\\u2028sep <&> \\u0001 \\b \\/ \\ud834\\udd1e",\n  "éa": {"b": true, "a": null}, "ｚ": 2, "𝄞": "x", "A": "" }';

let dir: string;
let unsigned: Buffer;

function policy(keys: VerificationKey[], options: Partial<SignaturePolicy> = {}): SignaturePolicy {
  return { keys: new Map(keys.map((k) => [k.id, k])), scope: 'bank', allowUnsigned: false, ...options };
}

async function filesOf(archive: Buffer): Promise<ReadonlyMap<string, Buffer>> {
  return (await readBundle(archive, { tenant: 'bank', namespace: 'bank' })).files;
}

async function refused(archive: Buffer, p: SignaturePolicy, code: ErrorCode): Promise<void> {
  await assert.rejects(verifyBundleSignature(await filesOf(archive), p), (error: unknown) => {
    assert.ok(isPavilionError(error, code), `expected ${code}, got ${String(error)}`);
    return true;
  });
}

/** Ask the real opa CLI to verify a signed bundle (opa build verifies before it rebuilds). */
async function opaVerifies(archive: Buffer, publicPem: string, keyId: string, algorithm: string, scope: string): Promise<boolean> {
  const work = await mkdtemp(join(dir, 'opa-verify-'));
  await writeFile(join(work, 'in.tar.gz'), archive);
  await writeFile(join(work, 'pub.pem'), publicPem);
  try {
    await runTool(findOpa(), ['build', '-b', join(work, 'in.tar.gz'), '--verification-key', join(work, 'pub.pem'),
      '--verification-key-id', keyId, '--scope', scope, '--signing-alg', algorithm, '-o', join(work, 'out.tar.gz')]);
    return true;
  } catch {
    return false;
  }
}

async function repack(archive: Buffer, change: (entries: RawTarEntry[]) => RawTarEntry[]): Promise<Buffer> {
  return makeTarGz(change(await unpackFixture(archive)));
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pavilion-signing-'));
  unsigned = await buildFixtureBundle({
    modules: { 'bank/authz.rego': MODULE },
    entrypoints: ['bank/authz/allow'],
    roots: ['bank'],
    dataText: { 'bank/limits': TRICKY_DATA },
  });
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('OPA-compatible file hashing', () => {
  test('JSON files are hashed in canonical form: whitespace and key order do not matter', () => {
    const a = hashBundleFile('/bank/data.json', Buffer.from('{"b": 1, "a": [true, null]}'));
    const b = hashBundleFile('/bank/data.json', Buffer.from('{\n  "a":[true,null],\n  "b":1\n}'));
    assert.equal(a, b);
    // ...but number literals are kept as written, as OPA does (json.Number)
    assert.notEqual(hashBundleFile('/x/data.json', Buffer.from('{"a":1}')), hashBundleFile('/x/data.json', Buffer.from('{"a":1.0}')));
  });

  test('other files are hashed as raw bytes', () => {
    assert.notEqual(hashBundleFile('/bank/x.rego', Buffer.from('package bank\n')), hashBundleFile('/bank/x.rego', Buffer.from('package  bank\n')));
  });

  test('a malformed JSON file or a weak hash algorithm is refused', () => {
    assert.throws(() => hashBundleFile('/x/data.json', Buffer.from('{"a":')), (e: unknown) => isPavilionError(e, ErrorCodes.BUNDLE_CORRUPT));
    assert.throws(() => hashBundleFile('/x/data.json', Buffer.from('{}'), 'MD5'), (e: unknown) => isPavilionError(e, ErrorCodes.BUNDLE_SIGNATURE_INVALID));
  });
});

describe('bundles signed by opa build verify in Pavilion', () => {
  for (const algorithm of ['ES256', 'ES384', 'RS256', 'PS256'] as const) {
    test(`${algorithm}, key id from the keyid claim, scope from --claims-file, tricky JSON data`, async () => {
      const keys = keyPair(algorithm);
      const keyFile = join(dir, `opa-${algorithm}.pem`);
      await writeFile(keyFile, keys.privatePem);
      const archive = await buildFixtureBundle({
        modules: { 'bank/authz.rego': MODULE },
        entrypoints: ['bank/authz/allow'],
        roots: ['bank'],
        dataText: { 'bank/limits': TRICKY_DATA },
        signing: { keyFile, algorithm, claims: { scope: 'bank', keyid: 'bank-2026', iat: 1_790_000_000 } },
      });
      const info = await verifyBundleSignature(await filesOf(archive), policy([loadVerificationKey('bank-2026', keys.publicPem, algorithm)]));
      const { contentSha256, ...rest } = info;
      assert.deepEqual(rest, { signed: true, keyId: 'bank-2026', algorithm, issuedAt: 1_790_000_000 });
      assert.match(contentSha256, /^[0-9a-f]{64}$/);
    });
  }
});

describe('bundles signed by pavilion bundle sign verify in Pavilion and in OPA', () => {
  for (const algorithm of ['ES256', 'ES384', 'RS256', 'PS256', 'EdDSA'] as const) {
    test(algorithm, async () => {
      const keys = keyPair(algorithm);
      const signed = await signBundle(unsigned, { key: keys.privatePem, algorithm, keyId: 'bank-k1', scope: 'bank', issuedAt: 1_800_000_000 });
      const info = await verifyBundleSignature(await filesOf(signed), policy([loadVerificationKey('bank-k1', keys.publicPem, algorithm)]));
      assert.equal(info.keyId, 'bank-k1');
      assert.equal(info.issuedAt, 1_800_000_000);
      assert.equal(await opaVerifies(signed, keys.publicPem, 'bank-k1', algorithm, 'bank'), true, 'opa accepts the signature');
      assert.equal(await opaVerifies(signed, keys.publicPem, 'bank-k1', algorithm, 'hospital'), false, 'opa checks the scope too');
    });
  }

  test('the .signatures.json format is OPA\'s: one JWT, files in archive order without a leading slash', async () => {
    const keys = keyPair('ES256');
    const signed = await signBundle(unsigned, { key: keys.privatePem, algorithm: 'ES256', keyId: 'k', scope: 'bank' });
    const entries = readTar(gunzipSync(signed));
    const sig = JSON.parse(entries.find((e) => e.name === '/.signatures.json')?.data.toString() ?? '{}') as { signatures: string[] };
    assert.equal(sig.signatures.length, 1);
    const [header, payload] = (sig.signatures[0] ?? '').split('.').slice(0, 2).map((p) => JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>);
    assert.deepEqual(header, { alg: 'ES256', kid: 'k', typ: 'JWT' });
    const files = payload?.['files'] as Array<{ name: string; algorithm: string }>;
    assert.deepEqual(files.map((f) => f.name), entries.filter((e) => e.name !== '/.signatures.json').map((e) => e.name.slice(1)));
    assert.ok(files.every((f) => f.algorithm === 'SHA-256'));
    assert.equal(payload?.['scope'], 'bank');
  });
});

describe('refusals, each with its code', () => {
  let keys: KeyPair;
  let key: VerificationKey;
  let signed: Buffer;

  before(async () => {
    keys = keyPair('ES256');
    key = loadVerificationKey('bank-k1', keys.publicPem, 'ES256');
    signed = await signBundle(unsigned, { key: keys.privatePem, algorithm: 'ES256', keyId: 'bank-k1', scope: 'bank' });
  });

  test('an unsigned bundle for a tenant that requires signatures -> ERR_BUNDLE_SIGNATURE_MISSING', async () => {
    await refused(unsigned, policy([key]), ErrorCodes.BUNDLE_SIGNATURE_MISSING);
  });

  test('an unsigned bundle is accepted only for a tenant configured for development', async () => {
    const { contentSha256, ...rest } = await verifyBundleSignature(await filesOf(unsigned), policy([], { allowUnsigned: true }));
    assert.deepEqual(rest, { signed: false });
    assert.match(contentSha256, /^[0-9a-f]{64}$/);
  });

  test('a key file in the keys directory that cannot be read -> ERR_BUNDLE_KEY_INVALID naming it, recorded against its key id (the load goes on)', async () => {
    const keysDir = await mkdtemp(join(tmpdir(), 'pavilion-keys-'));
    try {
      await mkdir(join(keysDir, 'bank.pub.pem')); // a directory where a key file should be
      const [invalid] = (await TrustStore.load({}, keysDir)).invalidKeys;
      assert.ok(invalid !== undefined && isPavilionError(invalid.error) && invalid.error.code === ErrorCodes.BUNDLE_KEY_INVALID && /bank\.pub\.pem/.test(invalid.error.message), String(invalid?.error));
    } finally {
      await rm(keysDir, { recursive: true, force: true });
    }
  });

  test('the content digest names the files, not the archive: the same for a re-compressed archive, another for changed data', async () => {
    const dev = policy([], { allowUnsigned: true });
    const entries = await unpackFixture(unsigned);
    const digest = async (archive: Buffer): Promise<string> => (await verifyBundleSignature(await filesOf(archive), dev)).contentSha256;
    const original = await digest(unsigned);
    const recompressed = gzipSync(gunzipSync(unsigned), { level: 1 });
    assert.notDeepEqual(recompressed, unsigned);
    assert.equal(await digest(recompressed), original);
    assert.equal(await digest(makeTarGz(entries)), original, 'repacked tar');
    const changed = entries.map((e) => (e.name.endsWith('data.json') ? { ...e, data: JSON.stringify({ bank: { changed: true } }) } : e));
    assert.notEqual(await digest(makeTarGz(changed)), original);
  });

  test('a signed bundle for a tenant with no keys -> ERR_BUNDLE_SIGNATURE_UNEXPECTED', async () => {
    await refused(signed, policy([], { allowUnsigned: true }), ErrorCodes.BUNDLE_SIGNATURE_UNEXPECTED);
  });

  test("a signature by another tenant's key -> ERR_BUNDLE_SIGNATURE_KEY_UNKNOWN", async () => {
    const other = keyPair('ES256');
    const byHospital = await signBundle(unsigned, { key: other.privatePem, algorithm: 'ES256', keyId: 'hospital-k1', scope: 'bank' });
    await refused(byHospital, policy([key]), ErrorCodes.BUNDLE_SIGNATURE_KEY_UNKNOWN);
  });

  test('a forged signature under a trusted key id -> ERR_BUNDLE_SIGNATURE_INVALID', async () => {
    const forger = keyPair('ES256');
    const forged = await signBundle(unsigned, { key: forger.privatePem, algorithm: 'ES256', keyId: 'bank-k1', scope: 'bank' });
    await refused(forged, policy([key]), ErrorCodes.BUNDLE_SIGNATURE_INVALID);
  });

  test('a token whose alg differs from the key\'s configured algorithm -> ERR_BUNDLE_SIGNATURE_INVALID', async () => {
    const rsa = keyPair('RS256');
    const rs = await signBundle(unsigned, { key: rsa.privatePem, algorithm: 'RS256', keyId: 'bank-k1', scope: 'bank' });
    await refused(rs, policy([loadVerificationKey('bank-k1', rsa.publicPem, 'PS256')]), ErrorCodes.BUNDLE_SIGNATURE_INVALID);
  });

  test('a scope other than the tenant -> ERR_BUNDLE_SIGNATURE_SCOPE', async () => {
    const wrongScope = await signBundle(unsigned, { key: keys.privatePem, algorithm: 'ES256', keyId: 'bank-k1', scope: 'hospital' });
    await refused(wrongScope, policy([key]), ErrorCodes.BUNDLE_SIGNATURE_SCOPE);
  });

  test('data changed after signing -> ERR_BUNDLE_SIGNATURE_FILES (digest mismatch)', async () => {
    const tampered = await repack(signed, (entries) => entries.map((e) => e.name === 'data.json' ? { ...e, data: '{"bank":{"limits":{"z":2}}}' } : e));
    await refused(tampered, policy([key]), ErrorCodes.BUNDLE_SIGNATURE_FILES);
  });

  test('a data file only re-indented after signing still verifies (canonical JSON hashing)', async () => {
    const reformatted = await repack(signed, (entries) => entries.map((e) => e.name === 'data.json' ? { ...e, data: `\n${String(e.data)}\n` } : e));
    assert.equal((await verifyBundleSignature(await filesOf(reformatted), policy([key]))).signed, true);
  });

  test('a file added after signing -> ERR_BUNDLE_SIGNATURE_FILES (not included in signature)', async () => {
    const added = await repack(signed, (entries) => [...entries, { name: 'bank/extra/data.json', data: '{"x":1}' }]);
    await refused(added, policy([key]), ErrorCodes.BUNDLE_SIGNATURE_FILES);
  });

  test('a file removed after signing -> ERR_BUNDLE_SIGNATURE_FILES (in signature but not in bundle)', async () => {
    const removed = await repack(signed, (entries) => entries.filter((e) => e.name !== 'data.json'));
    await refused(removed, policy([key]), ErrorCodes.BUNDLE_SIGNATURE_FILES);
  });

  test('two JWTs, or a .signatures.json that is not JSON -> ERR_BUNDLE_SIGNATURE_INVALID', async () => {
    const sig = (await unpackFixture(signed)).find((e) => e.name === '.signatures.json');
    const token = (JSON.parse(String(sig?.data)) as { signatures: string[] }).signatures[0] ?? '';
    const two = await repack(signed, (entries) => entries.map((e) => e.name === '.signatures.json' ? { ...e, data: JSON.stringify({ signatures: [token, token] }) } : e));
    await refused(two, policy([key]), ErrorCodes.BUNDLE_SIGNATURE_INVALID);
    const garbage = await repack(signed, (entries) => entries.map((e) => e.name === '.signatures.json' ? { ...e, data: 'not json' } : e));
    await refused(garbage, policy([key]), ErrorCodes.BUNDLE_SIGNATURE_INVALID);
  });

  test('an unparseable or mismatched verification key is refused at load -> ERR_BUNDLE_KEY_INVALID', () => {
    assert.throws(() => loadVerificationKey('k', 'not a pem'), (e: unknown) => isPavilionError(e, ErrorCodes.BUNDLE_KEY_INVALID));
    assert.throws(() => loadVerificationKey('k', keys.publicPem, 'RS256'), (e: unknown) => isPavilionError(e, ErrorCodes.BUNDLE_KEY_INVALID));
  });

  test('an HMAC secret that is a PEM key (anyone with the public key could sign) or shorter than its hash (RFC 7518 3.2) -> ERR_BUNDLE_KEY_INVALID; a long enough one signs and verifies', async () => {
    const keyInvalid = (pattern: RegExp) => (e: unknown) => isPavilionError(e, ErrorCodes.BUNDLE_KEY_INVALID) && pattern.test(e.message);
    assert.throws(() => loadVerificationKey('k', keys.publicPem, 'HS256'), keyInvalid(/HS256 takes a shared secret as text, not a key/));
    const publicKey = createPublicKey(keys.publicPem);
    const jwk = publicKey.export({ format: 'jwk' });
    const der = publicKey.export({ format: 'der', type: 'spki' }).toString('base64');
    assert.throws(() => loadVerificationKey('k', JSON.stringify(jwk), 'HS256'), keyInvalid(/not a key/), 'a JWK');
    assert.throws(() => loadVerificationKey('k', der, 'HS256'), keyInvalid(/not a key/), 'base64 DER');
    assert.throws(() => loadVerificationKey('k', der.replace(/(.{20})/g, '$1\n'), 'HS256'), keyInvalid(/not a key/), 'base64 DER with line breaks');
    assert.throws(() => loadVerificationKey('k', JSON.stringify({ keys: [jwk] }), 'HS256'), keyInvalid(/not a key/), 'a JWK set');
    const rsa = createPublicKey(keyPair('RS256').publicPem);
    assert.throws(() => loadVerificationKey('k', rsa.export({ format: 'der', type: 'pkcs1' }).toString('base64'), 'HS256'), keyInvalid(/not a key/), 'PKCS#1 DER');
    assert.throws(() => loadVerificationKey('k', 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDw2m4yBjq8YhOBn7uWBGz1xWgVWB9ZQ8ZkZ5b9pWbXc alice@ci', 'HS256'), keyInvalid(/not a key/), 'an OpenSSH key');
    // an X.509 certificate as base64 DER (what a PEM-less key file often is): self-signed P-256,
    // made with `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -outform DER
    // -subj /CN=bundle-signer` (OpenSSL 3.0, 2026-11-30); parsing ignores that it has expired
    const certDer = 'MIIBhjCCASugAwIBAgIUMb5vp0kTCT/9anTMKyLIKnpPsTEwCgYIKoZIzj0EAwIwGDEWMBQGA1UEAwwNYnVuZGxlLXNpZ25lcjAeFw0yNjExMzAwNTE2NDhaFw0yNjEyMDEwNTE2NDhaMBgxFjAUBgNVBAMMDWJ1bmRsZS1zaWduZXIwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAR4tXl8hpa4oYywhbXEQELqRIvfI43daA0HkXiONgSVXwbSlMUupRdFWu/xPEOPCNI5az86uI5dLSXdWUNXa0Ozo1MwUTAdBgNVHQ4EFgQUERSE09rDbMVj5N6P/NmY2RDyHpIwHwYDVR0jBBgwFoAUERSE09rDbMVj5N6P/NmY2RDyHpIwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNJADBGAiEAlLsYZTa6o7E7aGbYhBA+Ci8yFK+uoUSKk2LAUVeXlL0CIQCUzo2GmAKVH6S9run91uyd5YyMR96yiW6scOc76GgytA==';
    assert.throws(() => loadVerificationKey('k', certDer, 'HS256'), keyInvalid(/not a key/), 'a certificate as base64 DER');
    assert.throws(() => loadVerificationKey('k', JSON.stringify({ kty: 'oct', k: 'c2hvcnQ' }), 'HS256'), keyInvalid(/not a key/), 'a symmetric JWK: its text is not its key');
    // a random secret, even in base64, is a secret
    const random = randomBytes(48).toString('base64');
    assert.equal(loadVerificationKey('k', random, 'HS256').algorithm, 'HS256');
    await assert.rejects(signBundle(unsigned, { key: 'short', algorithm: 'HS256', keyId: 'bank-hs', scope: 'bank' }), (e: unknown) =>
      isPavilionError(e, ErrorCodes.BUNDLE_SIGNING_FAILED) && /at least 32 bytes/.test(e.message), 'nor signed with');
    assert.throws(() => loadVerificationKey('k', 'x'.repeat(31), 'HS256'), keyInvalid(/at least 32 bytes \(RFC 7518 3\.2\), not 31/));
    assert.throws(() => loadVerificationKey('k', 'x'.repeat(47), 'HS384'), keyInvalid(/at least 48 bytes/));
    assert.throws(() => loadVerificationKey('k', 'x'.repeat(63), 'HS512'), keyInvalid(/at least 64 bytes/));
    const secret = 'a shared secret of thirty-two by';
    const hs = await signBundle(unsigned, { key: secret, algorithm: 'HS256', keyId: 'bank-hs', scope: 'bank' });
    const info = await verifyBundleSignature(await filesOf(hs), policy([loadVerificationKey('bank-hs', secret, 'HS256')]));
    assert.equal(info.algorithm, 'HS256');
  });

  test('a JWS with an unencoded payload (b64: false, RFC 7797), which jose verifies, is not a JWT -> ERR_BUNDLE_SIGNATURE_INVALID', async () => {
    const claims = '{"scope":"bank","files":[]}'; // no dot: the compact form can carry it raw
    const jws = await new FlattenedSign(new TextEncoder().encode(claims))
      .setProtectedHeader({ alg: 'ES256', kid: 'bank-k1', b64: false, crit: ['b64'] })
      .sign(createPrivateKey(keys.privatePem));
    const token = `${jws.protected}.${claims}.${jws.signature}`; // jose leaves an unencoded payload detached
    const unencoded = await repack(signed, (entries) => entries.map((e) => e.name === '.signatures.json' ? { ...e, data: JSON.stringify({ signatures: [token] }) } : e));
    await assert.rejects(verifyBundleSignature(await filesOf(unencoded), policy([key])), (e: unknown) =>
      isPavilionError(e, ErrorCodes.BUNDLE_SIGNATURE_INVALID) && /unencoded payload \(b64: false\)/.test(e.message));
  });
});
