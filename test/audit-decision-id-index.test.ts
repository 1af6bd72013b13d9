/**
 * The audit log's decision-id index (sidecar/src/audit/log/decision-id-index.ts): the id of
 * each leaf and the leaf of each id, packed outside the heap. Checked against the Map and
 * array it replaces, as a model, over random appends, repeats and rewinds.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { DecisionIdIndex } from '../sidecar/src/audit/log/decision-id-index.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';

/** What the log kept before: an id per leaf, and the last leaf of each id. */
class Model {
  readonly ids: Array<string | undefined> = [];
  push(id: string | undefined): void {
    this.ids.push(id);
  }
  indexOf(id: string): number | undefined {
    const at = this.ids.lastIndexOf(id);
    return at === -1 ? undefined : at;
  }
  truncate(count: number): void {
    this.ids.length = Math.min(this.ids.length, count);
  }
}

/** A small deterministic generator (xorshift32), so a failure can be replayed. */
function random(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
}

function assertSame(index: DecisionIdIndex, model: Model, probes: readonly string[]): void {
  assert.equal(index.size, model.ids.length);
  for (let leaf = 0; leaf < model.ids.length; leaf++) assert.equal(index.at(leaf), model.ids[leaf], `the id of leaf ${leaf}`);
  for (const id of probes) assert.equal(index.indexOf(id), model.indexOf(id), `the leaf of ${JSON.stringify(id)}`);
}

describe('decision-id index', () => {
  it('gives back each leaf\'s id and each id\'s leaf, across table and buffer growth (20,000 UUIDs)', () => {
    const index = new DecisionIdIndex();
    const ids = Array.from({ length: 20_000 }, () => randomUUID());
    ids.forEach((id) => index.push(id));
    assert.equal(index.size, ids.length);
    ids.forEach((id, leaf) => {
      assert.equal(index.at(leaf), id);
      assert.equal(index.indexOf(id), leaf);
    });
    // never logged: nothing, whatever it shares with a logged id
    assert.equal(index.indexOf(randomUUID()), undefined);
    assert.equal(index.indexOf(ids[7]!.slice(0, 35)), undefined, 'a prefix of a logged id');
    assert.equal(index.indexOf(`${ids[7]!}0`), undefined, 'a logged id with more after it');
    assert.equal(index.indexOf(ids[7]!.toUpperCase()), undefined, 'the same letters in another case');
  });

  it('a leaf without an id: at() is undefined, and it is found by no id', () => {
    const index = new DecisionIdIndex();
    index.push('a');
    index.push(undefined);
    index.push('');
    index.push('b');
    assert.deepEqual([0, 1, 2, 3].map((leaf) => index.at(leaf)), ['a', undefined, '', 'b']);
    assert.equal(index.indexOf('b'), 3);
    assert.equal(index.indexOf(''), 2, 'an empty id is still an id: the log never gives one, but it is kept as given');
  });

  it('ids that are not ASCII are kept byte for byte (UTF-8), and long ones grow the lookup buffer', () => {
    const index = new DecisionIdIndex();
    const ids = ['décision-1', '判断-2', '🔐-3', 'x'.repeat(10_000)];
    ids.forEach((id) => index.push(id));
    ids.forEach((id, leaf) => {
      assert.equal(index.at(leaf), id);
      assert.equal(index.indexOf(id), leaf);
    });
    assert.equal(index.indexOf('decision-1'), undefined, 'the same id without its accent');
  });

  it('an id logged again is found at its last leaf, and at its earlier one again once a rewind removed the last', () => {
    const index = new DecisionIdIndex();
    for (const id of ['d1', 'd2', 'd1', 'd3']) index.push(id);
    assert.equal(index.indexOf('d1'), 2);
    index.truncate(2); // the leaves from 2 on are gone (a full volume discarded their frames)
    assert.equal(index.size, 2);
    assert.equal(index.indexOf('d1'), 0, 'the earlier leaf carries it still');
    assert.equal(index.indexOf('d3'), undefined);
    assert.throws(() => index.at(2), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_MERKLE_RANGE), 'leaf 2 is gone, not read stale');
    index.push('d4');
    assert.equal(index.at(2), 'd4', 'the next leaf takes the first discarded index');
    assert.equal(index.indexOf('d4'), 2);
    index.truncate(0);
    assert.equal(index.size, 0);
    assert.equal(index.indexOf('d1'), undefined);
  });

  it('a rewind of a log without repeated ids empties only the removed leaves\' slots, and every id left is still found', () => {
    // unique ids take the deletion path (no rebuild), through long probe runs
    const next = random(0xd1e5);
    const index = new DecisionIdIndex();
    const model = new Model();
    let made = 0;
    for (let round = 0; round < 60; round++) {
      const grow = 200 + Math.floor(next() * 400);
      for (let i = 0; i < grow; i++) {
        const id = next() < 0.03 ? undefined : `u-${(made++).toString(36)}`;
        index.push(id);
        model.push(id);
      }
      const keep = Math.floor(model.ids.length * (0.5 + next() / 2));
      const removed = model.ids.slice(keep).filter((id): id is string => id !== undefined);
      index.truncate(keep);
      model.truncate(keep);
      for (const id of removed) assert.equal(index.indexOf(id), undefined, `${id} went with its leaf`);
      assertSame(index, model, model.ids.filter((id): id is string => id !== undefined));
    }
  });

  it('room made for a leaf that never came changes nothing; after a repeated id is rewound away (a rebuild), rewinds take the deletion path again', () => {
    const index = new DecisionIdIndex();
    const model = new Model();
    const add = (id: string | undefined): void => {
      index.push(id);
      model.push(id);
    };
    for (let i = 0; i < 3_000; i++) add(`p-${i}`);
    // an append refused after prepare (the log at its limit): the index grew, took no leaf
    for (let i = 0; i < 5_000; i++) index.prepare(`refused-${i}-${'r'.repeat(i % 50)}`);
    assertSame(index, model, ['refused-0-', 'p-0', 'p-2999']);
    add('p-5'); // a repeat: p-5 is found at its last leaf, and a rewind rebuilds
    assert.equal(index.indexOf('p-5'), 3_000);
    index.truncate(3_000);
    model.truncate(3_000);
    assertSame(index, model, ['p-5', 'p-2999']);
    for (let i = 3_000; i < 4_000; i++) add(`p-${i}`);
    index.truncate(3_500);
    model.truncate(3_500);
    assertSame(index, model, Array.from({ length: 4_000 }, (_, i) => `p-${i}`));
  });

  it('agrees with the Map and array it replaces over 30,000 random appends, repeats and rewinds', () => {
    const next = random(0x5eed);
    const index = new DecisionIdIndex();
    const model = new Model();
    const pool = Array.from({ length: 4_000 }, (_, i) => `decision-${i.toString(36)}-${'z'.repeat(i % 7)}`);
    for (let step = 0; step < 30_000; step++) {
      const r = next();
      if (r < 0.005) {
        const keep = Math.floor(next() * (model.ids.length + 1));
        index.truncate(keep);
        model.truncate(keep);
      } else {
        const id = r < 0.05 ? undefined : pool[Math.floor(next() * pool.length)];
        index.push(id);
        model.push(id);
      }
      if (step % 5_000 === 4_999) assertSame(index, model, pool.slice(0, 500));
    }
    assertSame(index, model, pool);
  });
});
