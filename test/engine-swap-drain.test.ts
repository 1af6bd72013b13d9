/**
 * A swap under load: evaluations already taken against the previous revision are answered
 * by it, however long they wait in the queue. The previous revision is unloaded a delay
 * after the swap (max(1 s, 4 x evaluationTimeoutMs)) and not before its last evaluation is
 * answered; before, the ones still queued at the delay were refused with
 * ERR_TENANT_NOT_READY ("policy revision is not loaded in this worker").
 *
 * The queue is made long enough by calibration, not by assumption about the machine's speed:
 * one evaluation's cost is measured first (the fastest of a few), and enough are queued to
 * keep one worker busy for about four times the delay.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { readBundle } from '../sidecar/src/bundles/index.ts';
import { parseConfig } from '../sidecar/src/config/index.ts';
import { compilePolicy, PolicyEngine } from '../sidecar/src/engine/index.ts';
import { engineOptions } from '../sidecar/src/pavilion.ts';
import { buildFixtureBundle } from './harness/fixtures.ts';

/** One worker, the default deadline, no cache (every evaluation reaches the queue). */
const ENGINE = engineOptions(parseConfig({ engine: { workers: 1, evaluationTimeoutMs: 250, maxQueuedEvaluations: 10_000, cache: { enabled: false } } }));
const UNLOAD_DELAY_MS = Math.max(1_000, 4 * ENGINE.evaluationTimeoutMs);

async function revision(rev: string) {
  const archive = await buildFixtureBundle({
    modules: { 'spin.rego': `package t\n\nrev := "${rev}" if {\n\tevery i in numbers.range(1, input.n) {\n\t\tevery j in numbers.range(1, input.n) {\n\t\t\ti + j > 0\n\t\t}\n\t}\n}\n` },
    entrypoints: ['t/rev'],
    roots: ['t'],
    revision: rev,
  });
  return compilePolicy(await readBundle(archive, { tenant: 't', namespace: 't' }), { initialMemoryPages: 5 });
}

describe('a swap while evaluations of the previous revision wait in the queue', () => {
  const engine = new PolicyEngine(ENGINE);
  after(async () => engine.stop());

  test('every one of them is answered by the previous revision, also those still queued when its unload was due', async () => {
    await engine.start();
    const [v1, v2] = await Promise.all([revision('v1'), revision('v2')]);
    await engine.activate(v1);
    // an n whose evaluation takes 20-120 ms here: well inside the deadline, and measurable
    let n = 50;
    let costMs = 0;
    for (;;) {
      const started = performance.now();
      assert.equal((await engine.evaluate('t', 't/rev', { n })).result, 'v1');
      costMs = performance.now() - started;
      if (costMs >= 20 || n >= 3_000) break;
      n = Math.ceil(n * 1.6);
    }
    assert.ok(costMs < 120, `one evaluation takes ${costMs.toFixed(0)} ms, too close to the deadline`);
    // the fastest of a few: a machine that is busy now and quiet in a moment must still queue
    // enough (one estimate taken while another process held the cores drained early once)
    for (let i = 0; i < 3; i++) {
      const started = performance.now();
      await engine.evaluate('t', 't/rev', { n, probe: i });
      costMs = Math.min(costMs, performance.now() - started);
    }
    const count = Math.min(600, Math.ceil((4 * UNLOAD_DELAY_MS) / costMs));
    const queuedAt = performance.now();
    const queued = Array.from({ length: count }, (_, i) => engine.evaluate('t', 't/rev', { n, i }));
    // the swap: v2 loads (behind the evaluation running) and becomes active; the queued ones
    // were taken against v1
    await engine.activate(v2);
    const answers = await Promise.allSettled(queued);
    const elapsedMs = performance.now() - queuedAt;
    assert.ok(elapsedMs > UNLOAD_DELAY_MS, `the queue drained in ${elapsedMs.toFixed(0)} ms, before the unload was due: nothing was tested`);
    const refused = answers.filter((a) => a.status === 'rejected').map((a) => String((a as PromiseRejectedResult).reason));
    assert.ok(answers.every((a) => a.status === 'fulfilled' && a.value.result === 'v1'), `all answered by the revision they were taken against; ${refused.length} of ${count} refused: ${refused.slice(0, 2).join('; ')}`);
    assert.equal((await engine.evaluate('t', 't/rev', { n: 1 })).result, 'v2');
  });
});
