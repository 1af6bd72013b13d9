/**
 * One tenant's bad signing key file affects only the key ids it names. The keys directory
 * holds every tenant's `<key id>.pub.pem`; a file there that cannot be read or parsed is
 * recorded against its key id (ERR_BUNDLE_KEY_INVALID, naming the file and the key id) and
 * every other key is loaded:
 *
 * - the trust store loads (a sidecar starts, every tenant's key re-read succeeds), with the
 *   good keys and a list of the bad files for status;
 * - a bundle signed with a key id whose file is bad is refused with that recorded error, not
 *   as an unknown key and not as a tenant without keys; the tenant's other keys and the other
 *   tenants' keys verify as before;
 * - a configured tenant listing a key id whose file is bad is not a configuration error (the
 *   whole start would fail), it is refused bundle by bundle; a key id nothing provides still is;
 * - through the tenant manager: the sidecar starts with the good tenant served and the bad
 *   one refused, and a fixed key file is read again at the bad tenant's next push.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  TrustStore,
  developmentKey,
  readBundle,
  signBundle,
  verifyBundleSignature,
  type InvalidKey,
  type SignaturePolicy,
} from '../sidecar/src/bundles/index.ts';
import { parseConfig, type TenantConfig } from '../sidecar/src/config/index.ts';
import { PolicyEngine } from '../sidecar/src/engine/index.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { engineOptions } from '../sidecar/src/pavilion.ts';
import { TenantManager } from '../sidecar/src/tenants/index.ts';
import { buildFixtureBundle } from './harness/fixtures.ts';
import { pushedTenantOptions } from './harness/tenants.ts';

let dir: string;
/** The shared keys directory: good keys for alice and dave, a garbage file for bob, a directory where carol's file should be. */
let keysDir: string;
const archives = new Map<string, Buffer>();

/** A tenant's signing key (kept outside the keys directory); its public half is `publicPem`. */
async function signingKey(keyId: string): Promise<{ keyPem: string; publicPem: string }> {
  const build = join(dir, 'signing');
  const key = await developmentKey(keyId, build);
  return { keyPem: key.keyPem, publicPem: await readFile(join(build, 'keys', `${keyId}.pub.pem`), 'utf8') };
}

async function unsigned(tenant: string, revision = 'r1'): Promise<Buffer> {
  const cached = archives.get(`${tenant}/${revision}`);
  if (cached !== undefined) return cached;
  const archive = await buildFixtureBundle({
    modules: { [`${tenant}/authz.rego`]: `package ${tenant}.authz\n\nrev := "${revision}"\n` },
    entrypoints: [`${tenant}/authz/rev`],
    roots: [tenant],
    revision,
  });
  archives.set(`${tenant}/${revision}`, archive);
  return archive;
}

/** The tenant's bundle signed with `keyId`'s signing key, scoped to the tenant. */
async function signedBy(tenant: string, keyId: string, revision = 'r1'): Promise<Buffer> {
  return signBundle(await unsigned(tenant, revision), { key: (await signingKey(keyId)).keyPem, algorithm: 'ES256', keyId, scope: tenant });
}

async function verify(tenant: string, archive: Buffer, policy: SignaturePolicy): Promise<{ keyId?: string }> {
  return verifyBundleSignature((await readBundle(archive, { tenant, namespace: tenant })).files, policy);
}

function tenant(id: string, keys: readonly string[] = [id]): TenantConfig {
  return { id, namespace: id, keys, scope: id, allowUnsigned: false, defaultDecision: `${id}/system/main` };
}

function recorded(store: TrustStore, keyId: string): InvalidKey {
  const bad = store.invalidKeys.find((k) => k.keyId === keyId);
  assert.ok(bad !== undefined, `${keyId} is recorded as invalid`);
  return bad;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pavilion-trust-isolation-'));
  keysDir = join(dir, 'keys');
  await mkdir(keysDir, { recursive: true });
  await writeFile(join(keysDir, 'alice.pub.pem'), (await signingKey('alice')).publicPem);
  await writeFile(join(keysDir, 'dave.pub.pem'), (await signingKey('dave')).publicPem);
  await signingKey('bob'); // bob's team has a real key; the file the sidecar has is broken
  await writeFile(join(keysDir, 'bob.pub.pem'), '-----BEGIN PUBLIC KEY-----\ntruncated in the middle of a rotation\n');
  await mkdir(join(keysDir, 'carol.pub.pem')); // unreadable as a file
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('trust store: a bad key file is recorded against its key id, the other keys load', () => {
  test('load keeps every good key and records each bad file with ERR_BUNDLE_KEY_INVALID naming the file and the key id', async () => {
    const store = await TrustStore.load({}, keysDir);
    assert.equal(store.size, 2, 'alice and dave loaded');
    assert.deepEqual(store.invalidKeys.map((k) => k.keyId), ['bob', 'carol']);
    for (const id of ['bob', 'carol']) {
      const bad = recorded(store, id);
      assert.equal(bad.file, join(keysDir, `${id}.pub.pem`));
      assert.ok(isPavilionError(bad.error, ErrorCodes.BUNDLE_KEY_INVALID));
      assert.ok(bad.error.message.startsWith(`key ${id}: `), bad.error.message);
      assert.ok(bad.error.message.includes(join(keysDir, `${id}.pub.pem`)), bad.error.message);
      assert.deepEqual(bad.error.details, { keyId: id, file: join(keysDir, `${id}.pub.pem`) });
    }
    assert.match(recorded(store, 'bob').error.message, /cannot parse the key/);
    assert.match(recorded(store, 'carol').error.message, /cannot read/);
  });

  test('the other tenants keep working: a bundle signed with a good key verifies', async () => {
    const store = await TrustStore.load({}, keysDir);
    const info = await verify('alice', await signedBy('alice', 'alice'), store.policyFor(tenant('alice'), true));
    assert.equal(info.keyId, 'alice');
  });

  test('a bundle signed with a key id whose file is bad is refused with the recorded error, not as an unknown key nor as a tenant without keys', async () => {
    const store = await TrustStore.load({}, keysDir);
    const policy = store.policyFor(tenant('bob'), true);
    await assert.rejects(verify('bob', await signedBy('bob', 'bob'), policy), (error: unknown) => {
      assert.ok(isPavilionError(error, ErrorCodes.BUNDLE_KEY_INVALID), String(error));
      assert.equal(error.message, recorded(store, 'bob').error.message);
      return true;
    });
  });

  test('a tenant trusting a good and a bad key: the good one verifies, the bad one is refused with its error, a foreign key is still unknown', async () => {
    const store = await TrustStore.load({}, keysDir);
    const policy = store.policyFor(tenant('team', ['dave', 'carol']), true);
    assert.equal((await verify('team', await signedBy('team', 'dave'), policy)).keyId, 'dave');
    await assert.rejects(verify('team', await signedBy('team', 'carol'), policy), (error: unknown) => isPavilionError(error, ErrorCodes.BUNDLE_KEY_INVALID) && error.message === recorded(store, 'carol').error.message);
    await assert.rejects(verify('team', await signedBy('team', 'alice'), policy), (error: unknown) => isPavilionError(error, ErrorCodes.BUNDLE_SIGNATURE_KEY_UNKNOWN));
  });

  test('a configured tenant naming a key id whose file is bad is not a configuration error; one naming a key nothing provides still is', async () => {
    const store = await TrustStore.load({}, keysDir);
    assert.doesNotThrow(() => store.policyFor(tenant('bob'), true));
    assert.throws(() => store.policyFor(tenant('zed'), true), (error: unknown) => isPavilionError(error, ErrorCodes.CONFIG_INVALID));
  });

  test('a configured key replaces a bad directory file of its id; a configured key file that cannot be read is recorded alone', async () => {
    const store = await TrustStore.load({ bob: { key: (await signingKey('bob')).publicPem }, erin: { file: join(dir, 'missing.pem') } }, keysDir);
    assert.deepEqual(store.invalidKeys.map((k) => k.keyId), ['carol', 'erin']);
    assert.equal(recorded(store, 'erin').file, join(dir, 'missing.pem'));
    assert.equal((await verify('bob', await signedBy('bob', 'bob'), store.policyFor(tenant('bob'), true))).keyId, 'bob');
  });
});

describe('tenant manager: one tenant with a bad key file', () => {
  test('the sidecar starts and serves the other tenant; the bad tenant is refused with ERR_BUNDLE_KEY_INVALID; a fixed file is read again at its next push', { timeout: 60_000 }, async () => {
    const ownKeys = join(dir, 'manager-keys');
    await mkdir(ownKeys, { recursive: true });
    await writeFile(join(ownKeys, 'alice.pub.pem'), (await signingKey('alice')).publicPem);
    await writeFile(join(ownKeys, 'bob.pub.pem'), 'not a key\n');
    const config = parseConfig({
      tenants: [{ id: 'alice' }, { id: 'bob' }],
      bundles: { keysDirectory: ownKeys },
      engine: { workers: 1 },
      decisionLog: { sink: 'none' },
    });
    const engine = new PolicyEngine(engineOptions(config));
    let clockMs = 1_000_000;
    let reads = 0;
    const tenants = new TenantManager({
      ...pushedTenantOptions(config, engine),
      loadTrust: () => {
        reads++;
        return TrustStore.load(config.keys, config.bundles.keysDirectory);
      },
      trustRereadIntervalMs: 5_000,
      nowMs: () => clockMs,
    });
    await engine.start();
    try {
      await tenants.start();
      assert.equal((await tenants.activate('alice', await signedBy('alice', 'alice'))).revision, 'r1');
      await assert.rejects(tenants.activate('bob', await signedBy('bob', 'bob')), (error: unknown) => {
        assert.ok(isPavilionError(error, ErrorCodes.BUNDLE_KEY_INVALID), String(error));
        assert.match(error.message, /key bob: .*bob\.pub\.pem/);
        return true;
      });
      assert.equal(tenants.tenant('bob')?.lastError?.code, ErrorCodes.BUNDLE_KEY_INVALID);
      assert.equal(tenants.tenant('alice')?.state, 'OK');
      // health names the file (before any push is refused, an operator can see it)
      const status = tenants.status();
      assert.match(status.message ?? '', /signing keys that cannot be used \(ERR_BUNDLE_KEY_INVALID\): .*bob\.pub\.pem/);
      assert.deepEqual((status.details?.['invalid_keys'] as Array<{ key_id: string }>).map((k) => k.key_id), ['bob']);

      // the file is fixed (the rotation finished): bob's next push reads the keys again
      await writeFile(join(ownKeys, 'bob.pub.pem'), (await signingKey('bob')).publicPem);
      clockMs += 5_000;
      const readsBefore = reads;
      assert.equal((await tenants.activate('bob', await signedBy('bob', 'bob'))).revision, 'r1');
      assert.equal(reads, readsBefore + 1, 'the refusal read the keys again once');
      assert.equal(tenants.tenant('bob')?.state, 'OK');
      assert.equal(tenants.status().details?.['invalid_keys'], undefined, 'the fixed file is no longer reported');
    } finally {
      await tenants.stop();
      await engine.stop();
    }
  });
});
