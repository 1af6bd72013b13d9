/**
 * `pavilion bundle build` is reproducible: the same sources give byte-identical archives (no
 * temporary staging path stored in them), a changed source gives a new digest, and a signed
 * rebuild of unchanged sources keeps its signature (so the same bytes) only for the same key.
 */
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import {
  buildTenantBundle,
  definitionPath,
  loadVerificationKey,
  readBundle,
  readTar,
  verifyBundleSignature,
  type BuildOptions,
} from '../sidecar/src/bundles/index.ts';

const TENANT = 'repro';
const POLICY = 'package repro.authz\n\ndefault allow := false\n\nallow if input.user == data.repro.owners[_]\n';
/** The same decisions, one more rule: a source change that the tests still pass. */
const CHANGED = POLICY.replace('default allow := false', 'default allow := false\n\nowners_count := count(data.repro.owners)');
const POLICY_TEST = 'package repro.authz_test\n\nimport data.repro.authz\n\ntest_owner if authz.allow with input as {"user": "alice"}\n\ntest_stranger if not authz.allow with input as {"user": "mallory"}\n';

let root: string;

async function writeSources(policy = POLICY): Promise<void> {
  await writeFile(join(root, 'rego', TENANT, 'authz.rego'), policy);
}

/** Build the fixture tenant into `out`; returns the archive's bytes, its sha256 and revision. */
async function build(out: string, options: BuildOptions = {}): Promise<{ bytes: Buffer; sha256: string; revision: string; output: string }> {
  const result = await buildTenantBundle(definitionPath(TENANT, root), { root, outputDirectory: out, ...options });
  const bytes = await readFile(result.output);
  return { bytes, sha256: createHash('sha256').update(bytes).digest('hex'), revision: result.revision, output: result.output };
}

function entryNames(archive: Buffer): string[] {
  return readTar(gunzipSync(archive)).map((e) => e.name);
}

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'pavilion-repro-'));
  await mkdir(join(root, 'bundles', TENANT), { recursive: true });
  await mkdir(join(root, 'rego', TENANT), { recursive: true });
  await writeFile(join(root, 'bundles', TENANT, 'bundle.json'), JSON.stringify({
    tenant: TENANT,
    rego: [`rego/${TENANT}`],
    data: [{ path: `${TENANT}/owners`, file: `bundles/${TENANT}/owners.json` }],
    entrypoints: [`${TENANT}/authz/allow`],
    roots: [TENANT],
    metadata: { owner: 'repro-team' },
  }));
  await writeFile(join(root, 'bundles', TENANT, 'owners.json'), JSON.stringify(['alice']));
  await writeFile(join(root, 'rego', TENANT, 'authz_test.rego'), POLICY_TEST);
  await writeSources();
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('bundle build is reproducible', () => {
  test('the same sources built into two directories give byte-identical archives with no staging path in them', async () => {
    const a = await build(join(root, 'out-a'), { signing: false });
    const b = await build(join(root, 'out-b'), { signing: false });
    assert.equal(a.revision, b.revision);
    assert.equal(a.sha256, b.sha256, 'same sources, same digest');
    assert.ok(a.bytes.equals(b.bytes));
    const names = entryNames(a.bytes);
    assert.ok(names.includes('/authz.rego'), `the Rego file is stored by its path in the tenant's folder: ${names.join(', ')}`);
    for (const name of names) {
      assert.doesNotMatch(name, /pavilion-build-/, `entry ${name} names the staging directory`);
      assert.equal(name.includes(tmpdir()), false, `entry ${name} names a temporary directory`);
      assert.equal(name.includes(root), false, `entry ${name} names the build machine's paths`);
    }
    // what `bundle inspect` shows
    const bundle = await readBundle(a.bytes, { tenant: TENANT, namespace: TENANT });
    assert.deepEqual([...bundle.files.keys()].filter((f) => f.endsWith('.rego')), ['/authz.rego']);
  });

  test('a rego-target build is reproducible too', async () => {
    const a = await build(join(root, 'rego-a'), { target: 'rego', skipTests: true });
    const b = await build(join(root, 'rego-b'), { target: 'rego', skipTests: true });
    assert.equal(a.sha256, b.sha256);
    for (const name of entryNames(a.bytes)) assert.doesNotMatch(name, /pavilion-build-/);
  });

  test('a changed source changes the revision and the digest', async () => {
    const before = await build(join(root, 'change-a'), { signing: false });
    try {
      await writeSources(CHANGED);
      const changed = await build(join(root, 'change-b'), { signing: false });
      assert.notEqual(changed.revision, before.revision);
      assert.notEqual(changed.sha256, before.sha256);
    } finally {
      await writeSources();
    }
    assert.equal((await build(join(root, 'change-c'), { signing: false })).sha256, before.sha256, 'back to the same sources, back to the same bytes');
  });

  test('a signed rebuild in place gives the same bytes, re-signs a changed source, and never keeps another key\'s signature', async () => {
    const out = join(root, 'signed');
    const first = await build(out); // the tenant's development key, created on first use
    const second = await build(out);
    assert.equal(second.sha256, first.sha256, 'rebuilding unchanged sources in place gives the same signed bytes');
    // gzip header as opa writes it on every platform: no mtime, OS "unknown"
    assert.deepEqual([...first.bytes.subarray(4, 8)], [0, 0, 0, 0]);
    assert.equal(first.bytes[9], 0xff);
    const devKey = loadVerificationKey(TENANT, await readFile(join(out, 'keys', `${TENANT}.pub.pem`), 'utf8'));
    const policy = { keys: new Map([[TENANT, devKey]]), scope: TENANT, allowUnsigned: false };
    const verify = async (bytes: Buffer) => verifyBundleSignature((await readBundle(bytes, { tenant: TENANT, namespace: TENANT })).files, policy);
    assert.equal((await verify(second.bytes)).signed, true);

    try {
      await writeSources(CHANGED);
      const changed = await build(out);
      assert.notEqual(changed.sha256, first.sha256);
      assert.notEqual(changed.revision, first.revision);
      assert.equal((await verify(changed.bytes)).signed, true, 'a changed bundle is signed anew, and its signature holds');
    } finally {
      await writeSources();
    }

    // the same content, but another key: signed by that key, not left with the old signature
    const other = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const otherPem = other.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    await build(out); // back to the dev-signed original
    const resigned = await build(out, { signing: { keyPem: otherPem, keyId: TENANT, algorithm: 'ES256' } });
    assert.notEqual(resigned.sha256, first.sha256);
    const otherKey = loadVerificationKey(TENANT, other.publicKey.export({ type: 'spki', format: 'pem' }).toString());
    const info = await verifyBundleSignature((await readBundle(resigned.bytes, { tenant: TENANT, namespace: TENANT })).files, { ...policy, keys: new Map([[TENANT, otherKey]]) });
    assert.equal(info.signed, true);
  });
});
