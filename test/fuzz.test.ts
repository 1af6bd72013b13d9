/**
 * Every fuzz target (test/fuzz/targets.ts) for a fixed number of cases from a fixed seed, so
 * each target keeps working and keeps its property; `npm run fuzz` runs them for longer, from
 * new seeds. A failure names the shrunk input and the seed and path that replay it.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { runTarget } from './fuzz/fuzz.ts';
import { TARGETS } from './fuzz/targets.ts';

const SEED = 20261201;
const RUNS = 200;

describe('fuzz targets, a short run each', () => {
  test('the targets are the ones the README lists', () => {
    assert.deepEqual(TARGETS.map((t) => t.name), ['bundle', 'delta', 'nats-messages', 'wasm', 'audit-wal', 'credentials', 'status-lists', 'extauthz', 'grpc-framing', 'data-api']);
  });

  for (const target of TARGETS) {
    test(`${target.name}: ${target.summary}`, async () => {
      const outcome = await runTarget(target, { seed: SEED, runs: RUNS });
      assert.equal(outcome.failure, undefined, outcome.failure === undefined ? '' : [
        outcome.failure.error,
        `counterexample: ${outcome.failure.counterexample}`,
        `replay: npm run fuzz -- ${target.name} --seed ${SEED} --path ${outcome.failure.path}`,
      ].join('\n'));
      assert.equal(outcome.runs, RUNS);
      // some inputs get past the first checks into what the target is about
      assert.ok(Object.keys(outcome.outcomes).some((o) => target.reached(o)), JSON.stringify(outcome.outcomes));
    });
  }
});
