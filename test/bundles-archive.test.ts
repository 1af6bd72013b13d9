/**
 * The bundle loader refuses every malformed or hostile archive with its own code, and
 * accepts what `opa build -t wasm` produces.
 */
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { hashBundleFile, readBundle } from '../sidecar/src/bundles/index.ts';
import { ErrorCodes, PavilionError, type ErrorCode } from '../sidecar/src/lib/errors.ts';
import { buildFixtureBundle, makeTar, makeTarGz, unpackFixture, type RawTarEntry } from './harness/fixtures.ts';

const OPTIONS = { tenant: 'acme', namespace: 'acme' } as const;

async function refused(archive: Buffer, code: ErrorCode, options: Parameters<typeof readBundle>[1] = OPTIONS): Promise<PavilionError> {
  const error = await readBundle(archive, options).then(
    () => assert.fail(`expected ${code}, but the bundle was accepted`),
    (e: unknown) => e,
  );
  assert.ok(error instanceof PavilionError, `expected a PavilionError, got ${String(error)}`);
  assert.equal(error.code, code, error.message);
  return error;
}

describe('bundle archive loader', () => {
  let good: Buffer;
  let goodEntries: RawTarEntry[];

  before(async () => {
    good = await buildFixtureBundle({
      modules: { 'acme/authz.rego': 'package acme.authz\n\ndefault allow := false\n\nallow if input.user == data.acme.admin\n' },
      data: { 'acme': { admin: 'alice' } },
      entrypoints: ['acme/authz/allow'],
      roots: ['acme'],
      revision: 'rev-1',
    });
    goodEntries = await unpackFixture(good);
  });

  const repack = (change: (entries: RawTarEntry[]) => RawTarEntry[]): Buffer => makeTarGz(change([...goodEntries]));
  const withData = (text: string): Buffer =>
    repack((entries) => entries.map((e) => (e.name.endsWith('data.json') ? { name: e.name, data: text } : e)));
  const withManifest = (manifest: unknown): Buffer =>
    repack((entries) => entries.map((e) => (e.name === '.manifest' ? { name: e.name, data: JSON.stringify(manifest) } : e)));

  test('accepts a bundle built by opa build -t wasm, with its revision, data and entrypoints', async () => {
    const bundle = await readBundle(good, OPTIONS);
    assert.equal(bundle.revision, 'rev-1');
    assert.deepEqual(bundle.entrypoints, ['acme/authz/allow']);
    assert.deepEqual(bundle.data, { acme: { admin: 'alice' } });
    assert.deepEqual(bundle.manifest.roots, ['acme']);
    assert.equal(bundle.wasm.subarray(0, 4).toString('latin1'), '\0asm');
    assert.match(bundle.digest, /^[0-9a-f]{64}$/);
  });

  test('an unpaired surrogate escape in data is served as U+FFFD, as OPA decodes it (and as the signature hashes it); pairs stay', async () => {
    const text = '{"acme": {"admin": "al\\ud800ice", "smile": "\\ud83d\\ude00", "\\udfffkey": 1}}';
    const bundle = await readBundle(withData(text), OPTIONS);
    assert.deepEqual(bundle.data, { acme: { admin: 'al\ufffdice', smile: '\u{1f600}', '\ufffdkey': 1 } });
    assert.equal(hashBundleFile('/data.json', Buffer.from(text)), hashBundleFile('/data.json', Buffer.from(JSON.stringify(bundle.data))), 'the data served is the data hashed');
  });

  test('two data keys that are the same once an unpaired surrogate becomes U+FFFD -> ERR_BUNDLE_CORRUPT (the hash keeps the last written, JSON.parse another order)', async () => {
    const text = '{"acme": {"\\ud800": "junk", "\\ufffd": "Y", "\\ud800": "X"}}';
    const error = await refused(withData(text), ErrorCodes.BUNDLE_CORRUPT);
    assert.match(error.message, /data\.json has two keys that are the same once unpaired surrogates are replaced by U\+FFFD/);
  });

  test('a PAX size that is not a decimal byte count (abc, 1e3, -5) -> ERR_BUNDLE_CORRUPT, not a file read as empty or 1 byte long', async () => {
    for (const size of ['abc', '1e3', '-5']) {
      const record = (n: number): string => `${n} size=${size}\n`;
      const text = record(record(0).length + String(record(0).length).length - 1);
      const archive = makeTarGz([{ name: 'PaxHeaders/data.json', type: 'x', data: text }, ...goodEntries]);
      const error = await refused(archive, ErrorCodes.BUNDLE_CORRUPT);
      assert.match(error.message, new RegExp(`PAX size "${size}" is not a decimal byte count`), size);
    }
  });

  test('an old GNU tar header (magic "ustar  ") is read without the POSIX name prefix: its bytes at 345 are access and change times', async () => {
    const tar = makeTar(goodEntries);
    for (let at = 0; at + 512 <= tar.length && tar[at] !== 0;) {
      const size = parseInt(tar.toString('latin1', at + 124, at + 135), 8);
      tar.write('ustar  \0', at + 257, 'latin1');
      tar.write('14721576400\0', at + 345, 'latin1'); // GNU atime
      tar.write('14721576400\0', at + 357, 'latin1'); // GNU ctime
      tar.write('        ', at + 148, 'latin1');
      let sum = 0;
      for (const byte of tar.subarray(at, at + 512)) sum += byte;
      tar.write(`${sum.toString(8).padStart(6, '0')}\0 `, at + 148, 'latin1');
      at += 512 + Math.ceil(size / 512) * 512;
    }
    const bundle = await readBundle(gzipSync(tar), OPTIONS);
    assert.deepEqual([...bundle.files.keys()].sort(), goodEntries.map((e) => `/${e.name}`).sort());
    assert.deepEqual(bundle.data, { acme: { admin: 'alice' } });
  });

  test('not gzip -> ERR_BUNDLE_CORRUPT', async () => {
    await refused(Buffer.from('this is not a gzip stream'), ErrorCodes.BUNDLE_CORRUPT);
  });

  test('truncated gzip -> ERR_BUNDLE_CORRUPT', async () => {
    await refused(good.subarray(0, Math.floor(good.length / 2)), ErrorCodes.BUNDLE_CORRUPT);
  });

  test('gzip of something that is not a tar -> ERR_BUNDLE_CORRUPT', async () => {
    await refused(gzipSync(Buffer.alloc(2048, 0x41)), ErrorCodes.BUNDLE_CORRUPT);
  });

  test('a tar header with a wrong checksum -> ERR_BUNDLE_CORRUPT', async () => {
    const tar = makeTar(goodEntries);
    tar[0] = (tar[0] ?? 0) ^ 0x01; // flip a bit in the first name
    await refused(gzipSync(tar), ErrorCodes.BUNDLE_CORRUPT);
  });

  test('compressed size over the limit -> ERR_BUNDLE_TOO_LARGE', async () => {
    await refused(good, ErrorCodes.BUNDLE_TOO_LARGE, {
      ...OPTIONS,
      limits: { maxCompressedBytes: 1024, maxUncompressedBytes: 1024 * 1024 },
    });
  });

  test('a bomb whose gzip trailer claims a tiny size (to be inflated inline) -> ERR_BUNDLE_TOO_LARGE', async () => {
    const bomb = gzipSync(Buffer.alloc(64 * 1024 * 1024), { level: 9 });
    bomb.writeUInt32LE(100, bomb.length - 4);
    await refused(bomb, ErrorCodes.BUNDLE_TOO_LARGE, OPTIONS);
  });

  test('decompression bomb (64 MiB of zeros in a small gzip) -> ERR_BUNDLE_TOO_LARGE', async () => {
    const bomb = gzipSync(Buffer.alloc(64 * 1024 * 1024), { level: 9 });
    assert.ok(bomb.length < 128 * 1024, 'the bomb itself is small');
    await refused(bomb, ErrorCodes.BUNDLE_TOO_LARGE, {
      ...OPTIONS,
      limits: { maxCompressedBytes: 1024 * 1024, maxUncompressedBytes: 8 * 1024 * 1024 },
    });
  });

  test('path traversal (../) -> ERR_BUNDLE_PATH_TRAVERSAL', async () => {
    await refused(repack((e) => [...e, { name: '../../etc/cron.d/x/data.json', data: '{}' }]), ErrorCodes.BUNDLE_PATH_TRAVERSAL);
  });

  test('a symbolic link entry -> ERR_BUNDLE_UNEXPECTED_ENTRY', async () => {
    await refused(repack((e) => [...e, { name: 'acme/data.json', type: '2', linkName: '/etc/passwd' }]), ErrorCodes.BUNDLE_UNEXPECTED_ENTRY);
  });

  test('an unexpected file (a shell script) -> ERR_BUNDLE_UNEXPECTED_ENTRY', async () => {
    await refused(repack((e) => [...e, { name: 'run.sh', data: '#!/bin/sh\n' }]), ErrorCodes.BUNDLE_UNEXPECTED_ENTRY);
  });

  test('a duplicated entry -> ERR_BUNDLE_CORRUPT', async () => {
    await refused(repack((e) => [...e, { name: 'data.json', data: '{"acme": {"admin": "mallory"}}' }]), ErrorCodes.BUNDLE_CORRUPT);
  });

  test('no .manifest -> ERR_BUNDLE_MANIFEST_MISSING', async () => {
    await refused(repack((e) => e.filter((x) => x.name !== '.manifest')), ErrorCodes.BUNDLE_MANIFEST_MISSING);
  });

  test('.manifest that is not JSON -> ERR_BUNDLE_MANIFEST_INVALID', async () => {
    await refused(repack((e) => e.map((x) => (x.name === '.manifest' ? { name: x.name, data: '{revision' } : x))), ErrorCodes.BUNDLE_MANIFEST_INVALID);
  });

  test('.manifest without a string revision -> ERR_BUNDLE_MANIFEST_INVALID', async () => {
    await refused(withManifest({ revision: 7, roots: ['acme'], wasm: [{ entrypoint: 'acme/authz/allow', module: '/policy.wasm' }] }), ErrorCodes.BUNDLE_MANIFEST_INVALID);
  });

  test("roots outside the tenant's namespace -> ERR_BUNDLE_ROOTS_FOREIGN", async () => {
    await refused(withManifest({ revision: 'r', roots: ['acme', 'globex'], wasm: [{ entrypoint: 'acme/authz/allow', module: '/policy.wasm' }] }), ErrorCodes.BUNDLE_ROOTS_FOREIGN);
  });

  test('no roots at all (claims the whole data tree) -> ERR_BUNDLE_ROOTS_FOREIGN', async () => {
    await refused(withManifest({ revision: 'r', wasm: [{ entrypoint: 'acme/authz/allow', module: '/policy.wasm' }] }), ErrorCodes.BUNDLE_ROOTS_FOREIGN);
  });

  test('a root that is a prefix-string but not a path prefix (acmecorp for tenant acme) -> ERR_BUNDLE_ROOTS_FOREIGN', async () => {
    await refused(withManifest({ revision: 'r', roots: ['acmecorp'], wasm: [{ entrypoint: 'acmecorp/x', module: '/policy.wasm' }] }), ErrorCodes.BUNDLE_ROOTS_FOREIGN);
  });

  test('overlapping roots -> ERR_BUNDLE_ROOTS_OVERLAP', async () => {
    await refused(withManifest({ revision: 'r', roots: ['acme', 'acme/authz'], wasm: [{ entrypoint: 'acme/authz/allow', module: '/policy.wasm' }] }), ErrorCodes.BUNDLE_ROOTS_OVERLAP);
  });

  test('data outside the roots -> ERR_BUNDLE_DATA_OUTSIDE_ROOTS', async () => {
    await refused(
      repack((e) => e.map((x) => (x.name === 'data.json' ? { name: x.name, data: '{"acme": {}, "globex": {"secret": 1}}' } : x))),
      ErrorCodes.BUNDLE_DATA_OUTSIDE_ROOTS,
    );
  });

  test("a rego source declaring another tenant's package -> ERR_BUNDLE_ROOTS_FOREIGN", async () => {
    await refused(repack((e) => [...e, { name: 'evil.rego', data: 'package globex.authz\nallow := true\n' }]), ErrorCodes.BUNDLE_ROOTS_FOREIGN);
  });

  test('manifest names a wasm module that is missing -> ERR_BUNDLE_WASM_MISSING', async () => {
    await refused(repack((e) => e.filter((x) => x.name !== 'policy.wasm')), ErrorCodes.BUNDLE_WASM_MISSING);
  });

  test('manifest without wasm entrypoints (a rego-only bundle) -> ERR_BUNDLE_WASM_MISSING', async () => {
    await refused(
      repack((e) => e.filter((x) => x.name !== 'policy.wasm').map((x) => (x.name === '.manifest' ? { name: x.name, data: '{"revision":"r","roots":["acme"]}' } : x))),
      ErrorCodes.BUNDLE_WASM_MISSING,
    );
  });

  const probe = (): Record<string, unknown> => ({});

  test('a data file under a __proto__ folder stays data and never reaches Object.prototype', async () => {
    const archive = repack((e) => [...e, { name: 'acme/__proto__/data.json', data: '{"x-pavilion-tenant": "acme"}' }]);
    const bundle = await readBundle(archive, OPTIONS);
    assert.equal(probe()['x-pavilion-tenant'], undefined, 'Object.prototype was polluted through a data path');
    const acme = bundle.data['acme'] as Record<string, unknown>;
    assert.ok(Object.hasOwn(acme, '__proto__'), 'kept as an own key');
    assert.deepEqual(Object.getOwnPropertyDescriptor(acme, '__proto__')?.value, { 'x-pavilion-tenant': 'acme' });
  });

  test('a __proto__ key merged into existing data stays data and never reaches Object.prototype', async () => {
    const archive = repack((e) => [...e, { name: 'acme/data.json', data: '{"__proto__": {"polluted": "by key"}}' }]);
    const bundle = await readBundle(archive, OPTIONS);
    assert.equal(probe()['polluted'], undefined, 'Object.prototype was polluted through a data key');
    const acme = bundle.data['acme'] as Record<string, unknown>;
    assert.equal(acme['admin'], 'alice');
    assert.ok(Object.hasOwn(acme, '__proto__'));
  });

  test('an entrypoint outside the roots -> ERR_BUNDLE_ROOTS_FOREIGN', async () => {
    await refused(withManifest({ revision: 'r', roots: ['acme'], wasm: [{ entrypoint: 'globex/authz/allow', module: '/policy.wasm' }] }), ErrorCodes.BUNDLE_ROOTS_FOREIGN);
  });
});
