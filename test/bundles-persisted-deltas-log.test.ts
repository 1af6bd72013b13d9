/**
 * The persisted deltas as an append-only log (format 2 of `deltas-<digest>-<deploy>.json`,
 * see the header of sidecar/src/bundles/last-known-good.ts): each delta is one appended,
 * fsync'ed record, so a deploy's N deltas cost bytes written in proportion to N, not N²; a
 * torn or damaged tail is cut off and reported and what loads is the intact prefix, in
 * order; the binding in the first record still refuses a file put under another snapshot's
 * name; a file in format 1 (written whole by earlier versions) still loads; the bounds hold.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { appendFile, link, mkdtemp, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LastKnownGood, MAX_PERSISTED_DELTAS, type PersistedBundleMeta, type PersistedDeltasV1 } from '../sidecar/src/bundles/last-known-good.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

type TestDelta = { base: number; sequence: number; roots: string[]; operations: Array<{ op: 'upsert'; path: string; value: number }>; signatures: string[] };

const delta = (sequence: number, base: number, value = sequence): TestDelta =>
  ({ base, sequence, roots: ['bank'], operations: [{ op: 'upsert', path: '/bank/limits/max', value }], signatures: [`sig-${sequence}`] });

/** The delta as the signed message a record holds. */
const message = (d: TestDelta): Record<string, unknown> =>
  ({ v: 1, tenant: 'bank', base: d.base, sequence: d.sequence, roots: d.roots, patch: { data: d.operations }, signatures: d.signatures });

/** One record of format 2, as the file's header documents it: the SHA-256 of the JSON, a space, the JSON, a newline. */
const record = (value: unknown): string => {
  const json = JSON.stringify(value);
  return `${sha256(json)} ${json}\n`;
};

/** Bytes this process has written so far (every write(2), files and pipes alike), from /proc. */
async function bytesWritten(): Promise<number> {
  const match = /^wchar: (\d+)$/m.exec(await readFile('/proc/self/io', 'utf8'));
  assert.ok(match?.[1] !== undefined, 'wchar in /proc/self/io');
  return Number(match[1]);
}

describe('persisted deltas as an append-only log', () => {
  let directory: string;
  let deploy = 100;
  before(async () => {
    directory = await mkdtemp(join(tmpdir(), 'pavilion-delta-log-'));
  });
  after(async () => {
    await rm(directory, { recursive: true, force: true });
  });

  /** A new snapshot (its own deploy) saved as last known good, and its deltas' binding. */
  async function snapshot(store: LastKnownGood): Promise<{ meta: PersistedBundleMeta; binding: { tenant: string; digest: string; base: number } }> {
    deploy += 1;
    const content = `snapshot-${deploy}`;
    const meta = { tenant: 'bank', revision: `r${deploy}`, digest: sha256(content), sequence: deploy, savedAt: '2026-01-01T00:00:00.000Z' };
    await store.save(Buffer.from(content), meta);
    return { meta, binding: { tenant: 'bank', digest: meta.digest, base: deploy } };
  }

  test('deltas saved one at a time are appended in place and load back in order; the bytes written grow linearly with their number', { skip: !existsSync('/proc/self/io') && 'counts bytes written with /proc/self/io (Linux)' }, async () => {
    const store = new LastKnownGood(directory);
    const { meta, binding } = await snapshot(store);
    const count = 400;
    const all = Array.from({ length: count }, (_, i) => delta(i + 1, binding.base));
    const before = await bytesWritten();
    await store.saveDeltas(binding, all.slice(0, 1));
    const file = store.deltasFile(binding);
    const probe = join(directory, 'probe-link');
    await link(file, probe); // the same inode: it sees every append, and not a file renamed over it
    for (const d of all.slice(1)) await store.saveDeltas(binding, [d]);
    const written = (await bytesWritten()) - before;
    const size = (await stat(file)).size;
    assert.deepEqual(await store.loadDeltas(meta), { deltas: all });
    assert.ok((await readFile(probe)).equals(await readFile(file)), 'deltas 2.. were appended to the file delta 1 created, never written anew');
    await rm(probe);
    // whole rewrites would write about count/2 times the final size (~200 x here); appends write it once
    assert.ok(written <= 2 * size + 64 * 1024, `${written} bytes written for a ${size}-byte file of ${count} deltas`);
  });

  test('a torn or damaged tail is cut off and reported, the intact prefix loads, and the next append goes right after it', async () => {
    const store = new LastKnownGood(directory);
    const { meta, binding } = await snapshot(store);
    const file = store.deltasFile(binding);
    await store.saveDeltas(binding, [delta(1, binding.base), delta(2, binding.base)]);
    await store.saveDeltas(binding, [delta(3, binding.base)]);
    const whole = await readFile(file);
    await truncate(file, whole.length - 7); // a crash during the append of delta 3
    const torn = await store.loadDeltas(meta);
    assert.deepEqual(torn.deltas, [delta(1, binding.base), delta(2, binding.base)]);
    assert.ok(isPavilionError(torn.refused, ErrorCodes.BUNDLE_DELTA_INVALID));
    assert.match(torn.refused.message, /delta 3 .*torn/);

    // a sidecar restarted after the crash appends delta 3 again: the torn bytes are cut off first
    const restarted = new LastKnownGood(directory);
    await restarted.saveDeltas(binding, [delta(3, binding.base, 33)]);
    assert.deepEqual(await restarted.loadDeltas(meta), { deltas: [delta(1, binding.base), delta(2, binding.base), delta(3, binding.base, 33)] });

    // a byte changed inside delta 2 (same length): its checksum fails; delta 3, intact after it, is cut off too
    const text = (await readFile(file, 'utf8')).split('\n');
    text[2] = (text[2] ?? '').replace('"sig-2"', '"sig-X"');
    await writeFile(file, text.join('\n'));
    const damaged = await new LastKnownGood(directory).loadDeltas(meta);
    assert.deepEqual(damaged.deltas, [delta(1, binding.base)]);
    assert.ok(isPavilionError(damaged.refused, ErrorCodes.BUNDLE_DELTA_INVALID));
    assert.match(damaged.refused.message, /delta 2 .*checksum/);
  });

  test('records out of order are refused from the first out of place (ERR_BUNDLE_DELTA_SEQUENCE); what loads is never out of order', async () => {
    const store = new LastKnownGood(directory);
    const { meta, binding } = await snapshot(store);
    const header = { v: 2, tenant: 'bank', digest: binding.digest, base: binding.base };
    await writeFile(store.deltasFile(binding), [header, message(delta(1, binding.base)), message(delta(3, binding.base)), message(delta(2, binding.base))].map(record).join(''));
    const loaded = await store.loadDeltas(meta);
    assert.deepEqual(loaded.deltas, [delta(1, binding.base)]);
    assert.ok(isPavilionError(loaded.refused, ErrorCodes.BUNDLE_DELTA_SEQUENCE));
    await writeFile(store.deltasFile(binding), [header, message(delta(1, binding.base - 1))].map(record).join(''));
    assert.ok(isPavilionError((await store.loadDeltas(meta)).refused, ErrorCodes.BUNDLE_DELTA_SEQUENCE), 'a delta of another deploy');
  });

  test('a file put under another snapshot\'s name is refused whole (ERR_BUNDLE_DELTA_SEQUENCE), and not appended to', async () => {
    const store = new LastKnownGood(directory);
    const older = await snapshot(new LastKnownGood(join(directory, 'elsewhere')));
    await new LastKnownGood(join(directory, 'elsewhere')).saveDeltas(older.binding, [delta(1, older.binding.base), delta(2, older.binding.base)]);
    const content = await readFile(new LastKnownGood(join(directory, 'elsewhere')).deltasFile(older.binding));
    const { meta, binding } = await snapshot(store);
    await writeFile(store.deltasFile(binding), content);
    const loaded = await store.loadDeltas(meta);
    assert.deepEqual(loaded.deltas, []);
    assert.ok(isPavilionError(loaded.refused, ErrorCodes.BUNDLE_DELTA_SEQUENCE));
    await assert.rejects(store.saveDeltas(binding, [delta(3, binding.base)]), (e: unknown) => isPavilionError(e, ErrorCodes.BUNDLE_DELTA_SEQUENCE));
    assert.ok((await readFile(store.deltasFile(binding))).equals(content), 'the file is unchanged');
  });

  test('a file in format 1 (a sidecar upgraded in place) still loads; an append to it is refused and the whole sequence, saved from 1, rewrites it in format 2', async () => {
    const store = new LastKnownGood(directory);
    const { meta, binding } = await snapshot(store);
    const v1: PersistedDeltasV1 = { v: 1, tenant: 'bank', digest: binding.digest, base: binding.base, deltas: [delta(1, binding.base), delta(2, binding.base)].map(message) as unknown as PersistedDeltasV1['deltas'] };
    await writeFile(store.deltasFile(binding), `${JSON.stringify(v1)}\n`);
    assert.deepEqual(await store.loadDeltas(meta), { deltas: [delta(1, binding.base), delta(2, binding.base)] });
    await assert.rejects(store.saveDeltas(binding, [delta(3, binding.base)]), (e: unknown) => isPavilionError(e, ErrorCodes.BUNDLE_DELTA_SEQUENCE) && /format 1/.test(e.message));
    const all = [1, 2, 3].map((n) => delta(n, binding.base));
    await store.saveDeltas(binding, all); // what the tenant manager does then
    assert.deepEqual(await store.loadDeltas(meta), { deltas: all });
    assert.match(await readFile(store.deltasFile(binding), 'utf8'), /^[0-9a-f]{64} \{"v":2,/);
  });

  test('an append over the byte bound or the per-deploy count is refused (ERR_BUNDLE_DELTA_LIMIT) with the file unchanged; a longer file is cut at the count on load', async () => {
    const small = new LastKnownGood(directory, { maxDeltasBytes: 1_200 });
    const first = await snapshot(small);
    await small.saveDeltas(first.binding, [delta(1, first.binding.base)]);
    let next = 2;
    let content = await readFile(small.deltasFile(first.binding));
    const refusal = await (async (): Promise<unknown> => {
      for (;; next++) {
        await small.saveDeltas(first.binding, [delta(next, first.binding.base)]);
        content = await readFile(small.deltasFile(first.binding));
      }
    })().catch((error: unknown) => error);
    assert.ok(isPavilionError(refusal, ErrorCodes.BUNDLE_DELTA_LIMIT));
    assert.ok(next > 2, 'some deltas fit');
    assert.ok((await readFile(small.deltasFile(first.binding))).equals(content), 'the refused append left the file as it was');
    assert.equal((await small.loadDeltas(first.meta)).deltas.length, next - 1, 'every delta accepted before the refusal');

    const store = new LastKnownGood(directory);
    const { meta, binding } = await snapshot(store);
    const all = Array.from({ length: MAX_PERSISTED_DELTAS }, (_, i) => delta(i + 1, binding.base));
    await store.saveDeltas(binding, all);
    await assert.rejects(store.saveDeltas(binding, [delta(MAX_PERSISTED_DELTAS + 1, binding.base)]), (e: unknown) => isPavilionError(e, ErrorCodes.BUNDLE_DELTA_LIMIT));
    await appendFile(store.deltasFile(binding), record(message(delta(MAX_PERSISTED_DELTAS + 1, binding.base))));
    const loaded = await store.loadDeltas(meta);
    assert.equal(loaded.deltas.length, MAX_PERSISTED_DELTAS);
    assert.ok(isPavilionError(loaded.refused, ErrorCodes.BUNDLE_DELTA_LIMIT));
  });
});
