/**
 * The last known good store on its own: what a save writes is what a load returns, the
 * newest save wins, and a tenant directory removed while the sidecar runs is made again
 * (each save makes sure its directory exists).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LastKnownGood, type PersistedBundleMeta } from '../sidecar/src/bundles/index.ts';

function meta(revision: string, sequence: number): PersistedBundleMeta {
  return { tenant: 'bank', revision, digest: revision.padEnd(64, '0'), sequence, savedAt: '2026-01-01T00:00:00.000Z' };
}

describe('last known good', () => {
  let directory: string;
  before(async () => {
    directory = await mkdtemp(join(tmpdir(), 'pavilion-lkg-'));
  });
  after(async () => {
    await rm(directory, { recursive: true, force: true });
  });

  test('the newest save is what a load returns', async () => {
    const store = new LastKnownGood(directory);
    await store.save(Buffer.from('first'), meta('r1', 1));
    await store.save(Buffer.from('second'), meta('r2', 2));
    const loaded = await store.load('bank');
    assert.equal(loaded?.archive.toString(), 'second');
    assert.deepEqual(loaded?.meta, meta('r2', 2));
    assert.deepEqual(await store.tenants(), ['bank']);
  });

  test('a tenant directory removed after the first save is made again by the next one', async () => {
    const store = new LastKnownGood(directory);
    await store.save(Buffer.from('before'), meta('r3', 3));
    await rm(join(directory, 'bank'), { recursive: true, force: true });
    await store.save(Buffer.from('after'), meta('r4', 4));
    const loaded = await store.load('bank');
    assert.equal(loaded?.archive.toString(), 'after');
    assert.equal(loaded?.meta.revision, 'r4');
  });
});
