/**
 * The last known good store on its own: what a save writes is what a load returns, the
 * newest save wins, and a tenant directory removed while the sidecar runs is made again
 * (each save makes sure its directory exists). A save has one commit point (the metadata,
 * which names the archive by its SHA-256), so a save cut short leaves the previous pair, and
 * a pair whose archive does not match its metadata loads as nothing.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LastKnownGood, type PersistedBundleMeta } from '../sidecar/src/bundles/index.ts';
import { MAX_PERSISTED_DELTAS } from '../sidecar/src/bundles/last-known-good.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

/** The metadata of a save of `content` (the archive) as revision `revision`. */
function meta(revision: string, sequence: number, content: string): PersistedBundleMeta {
  return { tenant: 'bank', revision, digest: sha256(content), sequence, savedAt: '2026-01-01T00:00:00.000Z' };
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
    await store.save(Buffer.from('first'), meta('r1', 1, 'first'));
    await store.save(Buffer.from('second'), meta('r2', 2, 'second'));
    const loaded = await store.load('bank');
    assert.equal(loaded?.archive.toString(), 'second');
    assert.deepEqual(loaded?.meta, meta('r2', 2, 'second'));
    assert.deepEqual(await store.tenants(), ['bank']);
    assert.deepEqual((await readdir(join(directory, 'bank'))).sort(), [`bundle-${sha256('second')}.tar.gz`, 'meta.json'], 'the archive no metadata names is gone');
  });

  test('a tenant directory removed after the first save is made again by the next one', async () => {
    const store = new LastKnownGood(directory);
    await store.save(Buffer.from('before'), meta('r3', 3, 'before'));
    await rm(join(directory, 'bank'), { recursive: true, force: true });
    await store.save(Buffer.from('after'), meta('r4', 4, 'after'));
    const loaded = await store.load('bank');
    assert.equal(loaded?.archive.toString(), 'after');
    assert.equal(loaded?.meta.revision, 'r4');
  });

  test('a save cut short after its archive was written (a crash before the metadata) leaves the previous pair', async () => {
    const store = new LastKnownGood(directory);
    await store.save(Buffer.from('kept'), meta('r5', 5, 'kept'));
    // what the crashed save left: its archive, under its own name, and no new metadata
    await writeFile(join(directory, 'bank', `bundle-${sha256('newer')}.tar.gz`), 'newer');
    const loaded = await store.load('bank');
    assert.equal(loaded?.archive.toString(), 'kept');
    assert.equal(loaded?.meta.revision, 'r5', 'never the new archive labelled with the old deploy');
    await store.save(Buffer.from('next'), meta('r6', 6, 'next'));
    assert.deepEqual((await readdir(join(directory, 'bank'))).sort(), [`bundle-${sha256('next')}.tar.gz`, 'meta.json'], 'the leftover is removed by the next save');
  });

  test('a pair whose archive does not match its metadata loads as nothing; a matching pair in the earlier single-file layout still loads', async () => {
    const store = new LastKnownGood(directory);
    const dir = join(directory, 'legacy');
    await rm(dir, { recursive: true, force: true });
    await store.save(Buffer.from('x'), { ...meta('r0', 0, 'x'), tenant: 'legacy' });
    await rm(join(dir, `bundle-${sha256('x')}.tar.gz`));
    // the tear the earlier layout could leave: the new archive renamed in, the old metadata
    await writeFile(join(dir, 'meta.json'), JSON.stringify({ ...meta('r7', 7, 'old archive'), tenant: 'legacy' }));
    await writeFile(join(dir, 'bundle.tar.gz'), 'new archive');
    assert.equal(await store.load('legacy'), undefined);
    await writeFile(join(dir, 'bundle.tar.gz'), 'old archive');
    assert.equal((await store.load('legacy'))?.archive.toString(), 'old archive', 'an intact pair from before the upgrade');
  });

  test('a save whose archive is not the one its metadata names is refused (ERR_BUNDLE_DIGEST_MISMATCH) and changes nothing', async () => {
    const store = new LastKnownGood(directory);
    await store.save(Buffer.from('good'), meta('r8', 8, 'good'));
    await assert.rejects(store.save(Buffer.from('other bytes'), meta('r9', 9, 'good but not these')), (e: unknown) => isPavilionError(e, ErrorCodes.BUNDLE_DIGEST_MISMATCH));
    assert.equal((await store.load('bank'))?.meta.revision, 'r8');
  });

  describe('deltas', () => {
    const delta = (sequence: number, value: number, base = 10): { base: number; sequence: number; roots: string[]; operations: Array<{ op: 'upsert'; path: string; value: number }>; signatures: string[] } =>
      ({ base, sequence, roots: ['bank'], operations: [{ op: 'upsert', path: '/bank/limits/max', value }], signatures: [`sig-${sequence}`] });
    /** A deltas file in format 1 (one document, as versions before the append-only log wrote it) holding these signed messages. */
    const formatOne = (binding: { digest: string; base: number }, deltas: ReadonlyArray<ReturnType<typeof delta>>, patch = (d: ReturnType<typeof delta>): unknown => ({ data: d.operations })): string =>
      JSON.stringify({ v: 1, tenant: 'bank', digest: binding.digest, base: binding.base, deltas: deltas.map((d) => ({ v: 1, tenant: 'bank', base: d.base, sequence: d.sequence, roots: d.roots, patch: patch(d), signatures: d.signatures })) });

    test('the deltas saved for the snapshot the metadata names are what a load returns, in order', async () => {
      const store = new LastKnownGood(directory);
      const m = meta('d1', 10, 'snapshot-d1');
      await store.save(Buffer.from('snapshot-d1'), m);
      await store.saveDeltas({ tenant: 'bank', digest: m.digest, base: 10 }, [delta(1, 20)]);
      await store.saveDeltas({ tenant: 'bank', digest: m.digest, base: 10 }, [delta(1, 20), delta(2, 3)]);
      assert.deepEqual(await store.loadDeltas(m), { deltas: [delta(1, 20), delta(2, 3)] });
    });

    test('a new deploy (even of the same bytes) drops the previous deploy\'s deltas; a leftover of it is never read for the new one', async () => {
      const store = new LastKnownGood(directory);
      const old = meta('d2', 11, 'snapshot-d2');
      await store.save(Buffer.from('snapshot-d2'), old);
      await store.saveDeltas({ tenant: 'bank', digest: old.digest, base: 11 }, [delta(1, 20, 11)]);
      const oldFile = store.deltasFile({ tenant: 'bank', digest: old.digest, base: 11 });
      const oldContent = await readFile(oldFile);
      const next = meta('d2', 12, 'snapshot-d2');
      await store.save(Buffer.from('snapshot-d2'), next);
      assert.ok(!(await readdir(join(directory, 'bank'))).some((f) => f.startsWith('deltas-')), 'the old deploy\'s file is removed after the commit point');
      await writeFile(oldFile, oldContent); // a crash before that removal
      assert.deepEqual(await store.loadDeltas(next), { deltas: [] });
      // copied under the new deploy's name: the binding inside refuses it
      await writeFile(store.deltasFile({ tenant: 'bank', digest: next.digest, base: 12 }), oldContent);
      const loaded = await store.loadDeltas(next);
      assert.deepEqual(loaded.deltas, []);
      assert.ok(isPavilionError(loaded.refused, ErrorCodes.BUNDLE_DELTA_SEQUENCE));
    });

    test('a delta that does not read, in a file in format 1 (before the upgrade), is refused with its code, with the deltas before it returned', async () => {
      const store = new LastKnownGood(directory);
      const m = meta('d3', 13, 'snapshot-d3');
      await store.save(Buffer.from('snapshot-d3'), m);
      const binding = { tenant: 'bank', digest: m.digest, base: 13 };
      const explode = (d: ReturnType<typeof delta>): unknown => (d.sequence === 2 ? { data: [{ op: 'explode', path: '/bank' }] } : { data: d.operations });
      await writeFile(store.deltasFile(binding), formatOne(binding, [delta(1, 20, 13), delta(2, 30, 13), delta(3, 3, 13)], explode));
      const loaded = await store.loadDeltas(m);
      assert.deepEqual(loaded.deltas, [delta(1, 20, 13)]);
      assert.ok(isPavilionError(loaded.refused, ErrorCodes.BUNDLE_DELTA_INVALID));
      await writeFile(store.deltasFile(binding), '{"v":1,');
      assert.ok(isPavilionError((await store.loadDeltas(m)).refused, ErrorCodes.BUNDLE_DELTA_INVALID), 'not JSON');
    });

    test('deltas over the byte bound or the per-deploy count are refused on save and on load (ERR_BUNDLE_DELTA_LIMIT)', async () => {
      const small = new LastKnownGood(directory, { maxDeltasBytes: 300 });
      const m = meta('d4', 14, 'snapshot-d4');
      await small.save(Buffer.from('snapshot-d4'), m);
      const binding = { tenant: 'bank', digest: m.digest, base: 14 };
      await assert.rejects(small.saveDeltas(binding, [1, 2, 3].map((n) => delta(n, n, 14))), (e: unknown) => isPavilionError(e, ErrorCodes.BUNDLE_DELTA_LIMIT));
      await new LastKnownGood(directory).saveDeltas(binding, [1, 2, 3].map((n) => delta(n, n, 14)));
      const loaded = await small.loadDeltas(m);
      assert.deepEqual(loaded.deltas, []);
      assert.ok(isPavilionError(loaded.refused, ErrorCodes.BUNDLE_DELTA_LIMIT));
      const many = Array.from({ length: MAX_PERSISTED_DELTAS + 1 }, (_, i) => delta(i + 1, i, 14));
      await assert.rejects(new LastKnownGood(directory).saveDeltas(binding, many), (e: unknown) => isPavilionError(e, ErrorCodes.BUNDLE_DELTA_LIMIT));
      await writeFile(small.deltasFile(binding), formatOne(binding, Array.from({ length: MAX_PERSISTED_DELTAS + 1 }, () => delta(1, 1, 14))));
      assert.ok(isPavilionError((await new LastKnownGood(directory).loadDeltas(m)).refused, ErrorCodes.BUNDLE_DELTA_LIMIT));
    });
  });
});
