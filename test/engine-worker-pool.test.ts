/**
 * The evaluation worker pool driven through its own API, on real Wasm: the fixes of
 * 6c94215 and d7efee8 that had no test of their own.
 *
 * - a load that finishes after its unload was requested leaves nothing loaded in the worker;
 * - a worker that exits before it is ready is a typed error, not a wait that never ends;
 * - a load that overruns its deadline fails only itself: the loads queued behind it on the
 *   same worker are forwarded, once, to the replacement and load there;
 * - an instance a failed evaluation threw away is instantiated again under the load deadline,
 *   not inside its tenant's next evaluation.
 *
 * The tenants' policies are built by the real opa CLI. The load that overruns its deadline
 * is a real Wasm module whose start function never returns (test/harness/fixtures.ts
 * hostileWasm): the worker pool does not inspect modules (compilePolicy's sandbox does), so
 * it is instantiated as given and overruns any deadline, whatever the machine's speed.
 * Races are forced with the pool's API in one synchronous turn (nothing the worker sends
 * can be handled before the turn ends), not with sleeps; every wait is for a condition,
 * under a generous bound that only turns a hang into a failure.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { readBundle } from '../sidecar/src/bundles/index.ts';
import { compilePolicy, type CompiledPolicy } from '../sidecar/src/engine/index.ts';
import { policyKey, type EvalOutcome, type LoadMessage } from '../sidecar/src/engine/protocol.ts';
import { WorkerPool, type WorkerPoolOptions } from '../sidecar/src/engine/worker-pool.ts';
import { ErrorCodes, PavilionError } from '../sidecar/src/lib/errors.ts';
import { buildFixtureBundle, hostileWasm } from './harness/fixtures.ts';

const MEMORY = { initialPages: 5, maximumPages: 1024 };

const OPTIONS: WorkerPoolOptions = {
  workers: 1,
  evaluationTimeoutMs: 5_000,
  // Generous: only the module that never returns may overrun it, even on a loaded machine.
  loadTimeoutMs: 2_000,
  maxQueuedEvaluations: 1_000,
  memory: MEMORY,
};

/** Far past anything the pool should take: it only turns a hang into a failed assertion. */
const HANG_MS = 30_000;

/** The promise's outcome, or 'hung' when it has not settled within `ms`. */
async function settledWithin<T>(promise: Promise<T>, ms = HANG_MS): Promise<PromiseSettledResult<T> | 'hung'> {
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<'hung'>((resolve) => {
    timer = setTimeout(() => resolve('hung'), ms);
  });
  try {
    return await Promise.race([
      promise.then((value): PromiseSettledResult<T> => ({ status: 'fulfilled', value }), (reason: unknown): PromiseSettledResult<T> => ({ status: 'rejected', reason })),
      hung,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function assertRejectedWith(outcome: PromiseSettledResult<unknown> | 'hung', code: string, message?: RegExp): void {
  assert.notEqual(outcome, 'hung', `expected ${code}, but it never settled`);
  assert.ok(outcome !== 'hung' && outcome.status === 'rejected', `expected ${code}, but it succeeded`);
  const error: unknown = outcome.reason;
  assert.ok(error instanceof PavilionError, `expected a PavilionError ${code}, got ${String(error)}`);
  assert.equal(error.code, code, error.message);
  if (message !== undefined) assert.match(error.message, message);
}

// One real policy, built once by opa: each tenant loads it with its own data (as a data-only
// revision does), so each tenant's answer says whose instance answered.
let policy: CompiledPolicy;
let whoId: number;

before(async () => {
  const archive = await buildFixtureBundle({
    modules: { 'who.rego': 'package who.policy\n\nname := data.who.tenant\n' },
    entrypoints: ['who/policy/name'],
    roots: ['who'],
  });
  policy = await compilePolicy(await readBundle(archive, { tenant: 'who', namespace: 'who' }), { initialMemoryPages: MEMORY.initialPages });
  const id = policy.entrypoints.get('who/policy/name');
  assert.ok(id !== undefined);
  whoId = id;
});

function tenantLoad(tenant: string): LoadMessage {
  return { type: 'load', key: policyKey(tenant, policy.bundleDigest), module: policy.module, data: { who: { tenant } }, memory: MEMORY };
}

/** A load whose start function never returns: it overruns any load deadline. */
function neverReturns(tenant: string): LoadMessage {
  return { type: 'load', key: policyKey(tenant, 'hostile'), module: new WebAssembly.Module(hostileWasm('start')), data: {}, memory: MEMORY };
}

function evaluate(pool: WorkerPool, key: string): Promise<EvalOutcome> {
  return pool.evaluate({ key, entrypointId: whoId, input: null, nowNs: null });
}

/** Start a pool; stopped after the test. */
function pools(): { start(options?: Partial<WorkerPoolOptions>): Promise<WorkerPool> } {
  const started: WorkerPool[] = [];
  after(async () => {
    await Promise.all(started.map((pool) => pool.stop()));
  });
  return {
    async start(options = {}) {
      const pool = new WorkerPool({ ...OPTIONS, ...options });
      started.push(pool);
      await pool.start();
      return pool;
    },
  };
}

describe('a load that finishes after its unload was requested', () => {
  const running = pools();

  test('leaves nothing loaded in any worker: evaluations find no policy, and loading it again loads it', async () => {
    const pool = await running.start({ workers: 2 });
    const spec = tenantLoad('late');
    // Both calls in one turn: the workers cannot have answered the load yet, so the unload
    // lands while the load is in flight (the policy is discarded before it finished loading).
    const loading = pool.load(spec);
    pool.unload(spec.key);
    const loaded = await settledWithin(loading);
    assert.ok(loaded !== 'hung' && loaded.status === 'fulfilled', `the load settles: ${JSON.stringify(loaded)}`);
    // Four at once: the free workers share them, so every worker is asked (each would
    // still answer from an instance it kept).
    const outcomes = await Promise.all(Array.from({ length: 4 }, () => evaluate(pool, spec.key)));
    for (const outcome of outcomes) {
      assert.ok(!outcome.ok, `a worker still holds the unloaded policy: it answered ${JSON.stringify(outcome)}`);
      assert.equal(outcome.code, ErrorCodes.TENANT_NOT_READY, outcome.message);
    }
    // It was not counted as loaded either: a new load of the same key really loads it.
    await pool.load(spec);
    const again = await Promise.all(Array.from({ length: 4 }, () => evaluate(pool, spec.key)));
    assert.deepEqual(again.map((o) => (o.ok ? o.result : o.code)), ['late', 'late', 'late', 'late']);
  });
});

describe('a worker that exits before it is ready', () => {
  test('start() fails with a typed error when its workers are stopped while they boot, instead of hanging', async () => {
    const pool = new WorkerPool({ ...OPTIONS, workers: 2 });
    const starting = settledWithin(pool.start());
    // Same turn: the workers are still loading their code, far from sending 'ready'.
    await pool.stop();
    assertRejectedWith(await starting, ErrorCodes.INTERNAL, /exited before it was ready/);
  });

  test('a load waiting for a replacement worker that is stopped before it is ready fails with a typed error, instead of hanging', async () => {
    const pool = new WorkerPool(OPTIONS);
    try {
      await pool.start();
      const culprit = pool.load(neverReturns('hostile'));
      const queued = pool.load(tenantLoad('queued'));
      // The watchdog replaces the worker and forwards 'queued' to the replacement, which
      // starts booting in the same turn; the culprit's refusal is handled right after that
      // turn (microtasks), long before the new thread can report ready: stop the pool then.
      let stopping: Promise<void> | undefined;
      const refused = culprit.catch((error: unknown) => {
        stopping = pool.stop();
        throw error;
      });
      assertRejectedWith(await settledWithin(refused), ErrorCodes.BUNDLE_WASM_INVALID, /did not finish within 2000 ms/);
      assertRejectedWith(await settledWithin(queued), ErrorCodes.INTERNAL, /exited before it was ready/);
      await stopping;
    } finally {
      await pool.stop();
    }
  });
});

describe('a load that fails on a worker still starting', () => {
  const running = pools();

  test('is refused to its caller, and the worker starts without it: the pool keeps its worker and answers the other tenants', async () => {
    const pool = await running.start();
    await pool.load(tenantLoad('good'));
    // data that cannot fit its memory limit: the worker refuses the load
    const tooBig: LoadMessage = { ...tenantLoad('big'), data: { who: { tenant: 'x'.repeat(1 << 20) } }, memory: { initialPages: 5, maximumPages: 5 } };
    // The culprit overruns its deadline: the watchdog replaces the only worker, and in the
    // turn its refusal is handled the replacement is still starting - the load of 'big'
    // then has no ready worker to go to, only the one starting.
    let bigLoad: Promise<void> | undefined;
    await settledWithin(pool.load(neverReturns('hostile')).catch(() => {
      bigLoad = pool.load(tooBig);
    }));
    assert.ok(bigLoad !== undefined);
    const big = await settledWithin(bigLoad);
    assert.ok(big !== 'hung' && big.status === 'rejected', `the load of 'big' must fail: ${big === 'hung' ? 'hung' : 'it succeeded'}`);
    // the replacement is ready without it, and still answers the tenant it had
    const answer = await settledWithin(evaluate(pool, tenantLoad('good').key));
    assert.ok(answer !== 'hung' && answer.status === 'fulfilled', `the good tenant is answered: ${answer === 'hung' ? 'hung' : String((answer as PromiseRejectedResult).reason)}`);
    assert.deepEqual(answer.value.ok ? answer.value.result : answer.value.code, 'good');
    assert.equal(pool.readyWorkers, 1);
  });
  test('one that takes the starting worker down (its load never returns) is refused too, and the next replacement starts without it', async () => {
    const restarts: string[] = [];
    const pool = await running.start({ onWorkerRestart: (reason) => restarts.push(reason) });
    await pool.load(tenantLoad('good'));
    let second: Promise<void> | undefined;
    await settledWithin(pool.load(neverReturns('first')).catch(() => {
      second = pool.load(neverReturns('second')); // only the starting replacement can take it
    }));
    assert.ok(second !== undefined);
    assertRejectedWith(await settledWithin(second), ErrorCodes.BUNDLE_WASM_INVALID, /did not finish within 2000 ms/);
    assert.deepEqual(restarts, ['timeout', 'timeout'], 'the first worker, then its replacement');
    const answer = await settledWithin(evaluate(pool, tenantLoad('good').key));
    assert.ok(answer !== 'hung' && answer.status === 'fulfilled' && answer.value.ok && answer.value.result === 'good', JSON.stringify(answer));
    assert.deepEqual(restarts, ['timeout', 'timeout'], 'and no more: the refused load is not tried again');
  });
});

describe('a load that overruns its deadline fails only itself', () => {
  const running = pools();

  test("other tenants' loads queued behind it on the same worker are loaded into the replacement, once, and answer with their own data", async () => {
    const restarts: string[] = [];
    const pool = await running.start({ onWorkerRestart: (reason) => restarts.push(reason) });
    const tenants = ['alpha', 'bravo', 'charlie'];
    // One worker: every load is queued on it behind the one that never returns.
    const [culprit, ...queued] = await Promise.all([neverReturns('hostile'), ...tenants.map(tenantLoad)].map((spec) => settledWithin(pool.load(spec))));
    assertRejectedWith(culprit as PromiseSettledResult<void>, ErrorCodes.BUNDLE_WASM_INVALID, /did not finish within 2000 ms/);
    queued.forEach((outcome, i) => {
      assert.ok(outcome !== 'hung' && outcome.status === 'fulfilled', `${tenants[i]}'s load: ${outcome === 'hung' ? 'hung' : String((outcome as PromiseRejectedResult).reason)}`);
    });
    assert.deepEqual(restarts, ['timeout'], 'one replacement worker, for the culprit alone');
    const answers = await Promise.all(tenants.map((tenant) => evaluate(pool, tenantLoad(tenant).key)));
    assert.deepEqual(answers.map((o) => (o.ok ? o.result : o.code)), tenants);
    const hostile = await evaluate(pool, neverReturns('hostile').key);
    assert.ok(!hostile.ok && hostile.code === ErrorCodes.TENANT_NOT_READY, `the culprit is not loaded in the replacement: ${JSON.stringify(hostile)}`);
  });

  test('with several workers it overruns on one of them only: the load goes to one worker before the others, so one is replaced, not all', async () => {
    const restarts: string[] = [];
    const pool = await running.start({ workers: 2, onWorkerRestart: (reason) => restarts.push(reason) });
    await pool.load(tenantLoad('steady'));
    assertRejectedWith(await settledWithin(pool.load(neverReturns('hostile'))), ErrorCodes.BUNDLE_WASM_INVALID, /did not finish within 2000 ms/);
    assert.deepEqual(restarts, ['timeout'], 'one worker replaced');
    const answers = await Promise.all(Array.from({ length: 4 }, () => evaluate(pool, tenantLoad('steady').key)));
    assert.deepEqual(answers.map((o) => (o.ok ? o.result : o.code)), ['steady', 'steady', 'steady', 'steady']);
  });

  test('many queued loads share one wait for the replacement (no listener pile-up on its thread)', async () => {
    const pool = await running.start();
    const warnings: Error[] = [];
    const onWarning = (warning: Error): void => {
      warnings.push(warning);
    };
    process.on('warning', onWarning);
    try {
      const tenants = Array.from({ length: 12 }, (_, i) => `tenant-${i}`);
      const [culprit, ...queued] = await Promise.all([neverReturns('hostile'), ...tenants.map(tenantLoad)].map((spec) => settledWithin(pool.load(spec))));
      assertRejectedWith(culprit as PromiseSettledResult<void>, ErrorCodes.BUNDLE_WASM_INVALID);
      assert.ok(queued.every((outcome) => outcome !== 'hung' && outcome.status === 'fulfilled'), 'every queued load succeeds');
      const answers = await Promise.all(tenants.map((tenant) => evaluate(pool, tenantLoad(tenant).key)));
      assert.deepEqual(answers.map((o) => (o.ok ? o.result : o.code)), tenants);
      // process warnings are emitted on a later tick than the listener was added
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.off('warning', onWarning);
    }
    const leaks = warnings.filter((w) => w.name === 'MaxListenersExceededWarning');
    assert.deepEqual(leaks.map((w) => w.message), [], 'one readiness wait for all forwarded loads');
  });

  test('a forwarded load whose replacement dies too is refused (ERR_EVAL_TRAP), not forwarded again', async () => {
    const restarts: string[] = [];
    const pool = await running.start({ onWorkerRestart: (reason) => restarts.push(reason) });
    // 'first' holds the first worker; 'second' and 'queued' are forwarded to the replacement,
    // where 'second' never returns either: 'queued' was forwarded once already.
    const [first, second, queued] = await Promise.all([neverReturns('first'), neverReturns('second'), tenantLoad('queued')].map((spec) => settledWithin(pool.load(spec))));
    assertRejectedWith(first as PromiseSettledResult<void>, ErrorCodes.BUNDLE_WASM_INVALID, /did not finish within/);
    assertRejectedWith(second as PromiseSettledResult<void>, ErrorCodes.BUNDLE_WASM_INVALID, /did not finish within/);
    assertRejectedWith(queued as PromiseSettledResult<void>, ErrorCodes.EVAL_TRAP, /restarted while loading/);
    assert.deepEqual(restarts, ['timeout', 'timeout']);
    // The pool is whole again: a new load of the refused revision loads and answers.
    await pool.load(tenantLoad('queued'));
    const answer = await evaluate(pool, tenantLoad('queued').key);
    assert.deepEqual(answer.ok ? answer.result : answer.code, 'queued');
  });
});

describe('a tenant limited after an overrun', () => {
  const running = pools();

  test('evaluations waiting behind its one turn go on when the limit ends while that turn runs (none is left unanswered)', async () => {
    const archive = await buildFixtureBundle({
      modules: { 'spin.rego': 'package spin\n\nrun if {\n\tevery i in numbers.range(1, input.n) {\n\t\tevery j in numbers.range(1, input.n) {\n\t\t\ti + j > 0\n\t\t}\n\t}\n}\n\necho := input\n' },
      entrypoints: ['spin/run', 'spin/echo'],
      roots: ['spin'],
    });
    const spin = await compilePolicy(await readBundle(archive, { tenant: 'spin', namespace: 'spin' }), { initialMemoryPages: MEMORY.initialPages });
    const key = policyKey('spin', spin.bundleDigest);
    const [runId, echoId] = [spin.entrypoints.get('spin/run'), spin.entrypoints.get('spin/echo')] as [number, number];
    // OPA's Wasm frees nothing within an evaluation: a long run needs room (512 MiB at most)
    const load: LoadMessage = { type: 'load', key, module: spin.module, data: {}, memory: { initialPages: MEMORY.initialPages, maximumPages: 8192 } };
    const runOn = (pool: WorkerPool, n: number): Promise<EvalOutcome> => pool.evaluate({ key, entrypointId: runId, input: JSON.stringify({ n }), nowNs: null });
    // n for a run of at least 100 ms on this machine (the run is quadratic in n)
    const calibration = await running.start({ workers: 1, evaluationTimeoutMs: 20_000 });
    await calibration.load(load);
    let n = 100;
    let ms = 0;
    while (ms < 100 && n < 50_000) {
      const started = performance.now();
      await runOn(calibration, n);
      ms = performance.now() - started;
      if (ms < 100) n = Math.ceil(n * Math.min(4, Math.sqrt(160 / Math.max(ms, 1))));
    }
    // a deadline of five runs of n: 3n (nine times as long) overruns it, n does not, with room
    // for a loaded machine either way (three runs of n were too few: a loaded CI run timed out n)
    const pool = await running.start({ workers: 2, evaluationTimeoutMs: Math.ceil(5 * ms), quarantineMs: 50 });
    await pool.load(load);
    const run = (size: number): Promise<EvalOutcome> => runOn(pool, size);
    const echo = (i: number): Promise<EvalOutcome> => pool.evaluate({ key, entrypointId: echoId, input: JSON.stringify({ i }), nowNs: null });
    // an overrun: limited for 50 ms
    const overrun = await run(3 * n);
    assert.ok(!overrun.ok && overrun.code === ErrorCodes.EVAL_TIMEOUT, JSON.stringify(overrun));
    // a turn that outlasts the limit, with two evaluations waiting behind it
    const outcomes = await settledWithin(Promise.all([run(n), echo(1), echo(2)]), 15_000);
    assert.notEqual(outcomes, 'hung', 'the evaluations waiting behind the turn were never answered');
    assert.ok(outcomes !== 'hung' && outcomes.status === 'fulfilled');
    assert.deepEqual(outcomes.value.map((o) => (o.ok ? o.result : o.code)), [true, { i: 1 }, { i: 2 }]);
    assert.deepEqual(pool.limitedTenants, [], 'the limit has ended');
  });
});

describe('a policy instance a failed evaluation threw away', () => {
  const running = pools();

  test("is replaced at once, under the load deadline, its time reported apart: the tenant's next evaluation answers even when setting the data takes far longer than an evaluation may", async () => {
    const memory = { initialPages: MEMORY.initialPages, maximumPages: 32_768 };
    // Data that takes at least 1.5 s to set here (doubled until it does), so that a deadline of
    // a sixth of that, at least 250 ms, leaves any evaluation of this policy ample room and no
    // instantiation of it any.
    const measuring = new WorkerPool({ ...OPTIONS, memory, loadTimeoutMs: 120_000 });
    await measuring.start();
    let spec: LoadMessage | undefined;
    let loadMs = 0;
    try {
      for (let entries = 200_000; loadMs < 1_500 && entries <= 1_600_000; entries *= 2) {
        if (spec !== undefined) measuring.unload(spec.key);
        spec = {
          ...tenantLoad('large'),
          key: policyKey('large', `${policy.bundleDigest}-${entries}`),
          data: { who: { tenant: 'large', filler: Array.from({ length: entries }, (_, k) => ({ k, s: 'abcdefghij' })) } },
          memory,
        };
        const started = performance.now();
        await measuring.load(spec);
        loadMs = performance.now() - started;
      }
    } finally {
      await measuring.stop();
    }
    assert.ok(spec !== undefined && loadMs >= 1_500, `the data takes ${Math.round(loadMs)} ms to load`);
    const deadlineMs = Math.max(250, Math.floor(loadMs / 6));
    const restarts: string[] = [];
    const pool = await running.start({ memory, loadTimeoutMs: 120_000, evaluationTimeoutMs: deadlineMs, onWorkerRestart: (reason) => restarts.push(reason) });
    await pool.load(spec);
    // In one turn: input nested deeper than the Wasm stack (the evaluation fails, its instance
    // is thrown away), then a plain one, in the same batch or the next.
    const [deep, next] = await Promise.all([
      pool.evaluate({ key: spec.key, entrypointId: whoId, input: `${'['.repeat(100_000)}${']'.repeat(100_000)}`, nowNs: null }),
      pool.evaluate({ key: spec.key, entrypointId: whoId, input: null, nowNs: null }),
    ]);
    assert.ok(!deep.ok && deep.code === ErrorCodes.EVAL_MEMORY, JSON.stringify(deep).slice(0, 300));
    assert.match(deep.message, /call stack/);
    const ms = (ns: number | undefined): number => Math.round((ns ?? 0) / 1e6);
    assert.ok(ms(deep.rebuildNs) > deadlineMs, `the fresh instance's time, past any evaluation's deadline, is reported with the failure (${ms(deep.rebuildNs)} ms; deadline ${deadlineMs} ms)`);
    assert.ok(ms(deep.evalNs) < deadlineMs, `and not as the evaluation's (${ms(deep.evalNs)} ms)`);
    assert.deepEqual(next.ok ? next.result : next, 'large', `the evaluation after the failure (deadline ${deadlineMs} ms)`);
    assert.deepEqual(restarts, [], 'no worker stopped for an overrun');
  });
});

describe('the input one tenant holds in the pool', () => {
  const running = pools();

  test("is bounded by maxPendingInputBytes, per tenant: past it ERR_EVAL_OVERLOADED at once, other tenants unaffected, one input larger than the bound taken alone, the room given back as evaluations end", async () => {
    const pool = await running.start({ maxPendingInputBytes: 1_000_000 });
    for (const tenant of ['a', 'b', 'c']) await pool.load(tenantLoad(tenant));
    const input = (bytes: number): string => JSON.stringify({ pad: 'x'.repeat(bytes - 10) });
    const ask = (tenant: string, bytes: number): Promise<EvalOutcome> =>
      pool.evaluate({ key: policyKey(tenant, policy.bundleDigest), entrypointId: whoId, input: input(bytes), nowNs: null });
    const answer = (o: EvalOutcome): unknown => (o.ok ? o.result : o.code);
    // one synchronous turn: nothing is handed to the worker before all are asked
    const asked = [ask('a', 400_000), ask('a', 400_000), ask('a', 400_000), ask('b', 400_000), ask('c', 1_500_000)];
    assert.deepEqual(Object.fromEntries(pool.pendingInputBytes), { a: 800_000, b: 400_000, c: 1_500_000 });
    const outcomes = await Promise.all(asked);
    assert.deepEqual(outcomes.map(answer), ['a', 'a', ErrorCodes.EVAL_OVERLOADED, 'b', 'c']);
    const refused = outcomes[2]!;
    assert.ok(!refused.ok);
    assert.match(refused.message, /tenant a .* hold 800000 bytes of input; this one \(400000 bytes\) would pass the limit of 1000000/);
    assert.equal(pool.pendingInputBytes.size, 0, 'every answered evaluation gave its room back');
    assert.deepEqual((await Promise.all([ask('a', 400_000), ask('a', 400_000)])).map(answer), ['a', 'a'], 'room again once they ended');
  });

  test('is bounded for all tenants together by maxPendingInputBytesTotal: past it a tenant over its fair share is refused, one under it or holding none is let in; past twice the bound only one holding none', async () => {
    const pool = await running.start({ maxPendingInputBytes: 1_000_000, maxPendingInputBytesTotal: 1_000_000 });
    for (const tenant of ['a', 'b', 'c', 'd', 'e']) await pool.load(tenantLoad(tenant));
    const input = (bytes: number): string => JSON.stringify({ pad: 'x'.repeat(bytes - 10) });
    const ask = (tenant: string, bytes: number): Promise<EvalOutcome> =>
      pool.evaluate({ key: policyKey(tenant, policy.bundleDigest), entrypointId: whoId, input: input(bytes), nowNs: null });
    const answer = (o: EvalOutcome): unknown => (o.ok ? o.result : o.code);
    // one synchronous turn (nothing reaches a worker before all are asked); the shares are of
    // 1,000,000 over the tenants holding input at each ask
    const asked = [
      ask('a', 400_000), ask('a', 400_000), // under the total: 800,000
      ask('b', 300_000), // b holds none: in (1,100,000, past the total)
      ask('b', 100_000), // b 400,000 <= its share 500,000: in
      ask('a', 100_000), // a 900,000 > its share 500,000: refused
      ask('c', 300_000), // c holds none: in
      ask('b', 100_000), // b 500,000 > its share 333,333: refused
      ask('c', 30_000), // c 330,000 <= 333,333: in
      ask('d', 500_000), // d holds none: in (2,030,000)
      ask('e', 10_000), // e holds none: in (2,040,000)
      ask('e', 10_000), // e 20,000 <= its share 200,000, but past twice the bound: refused
    ];
    assert.deepEqual(Object.fromEntries(pool.pendingInputBytes), { a: 800_000, b: 400_000, c: 330_000, d: 500_000, e: 10_000 });
    assert.equal(pool.pendingInputBytesTotal, 2_040_000);
    const outcomes = await Promise.all(asked);
    assert.deepEqual(outcomes.map(answer), ['a', 'a', 'b', 'b', ErrorCodes.EVAL_OVERLOADED, 'c', ErrorCodes.EVAL_OVERLOADED, 'c', 'd', 'e', ErrorCodes.EVAL_OVERLOADED]);
    const refused = outcomes[4]!;
    assert.ok(!refused.ok);
    assert.equal(refused.message, "the evaluation pool holds as much input as it may for all tenants (maxPendingInputBytesTotal), and tenant a's evaluations hold 800000 bytes of it already; this one is 100000 bytes", 'the asking tenant\'s own figures only');
    assert.equal(pool.pendingInputBytes.size, 0, 'every answered evaluation gave its room back');
    assert.equal(pool.pendingInputBytesTotal, 0);
    assert.deepEqual((await Promise.all([ask('b', 400_000), ask('b', 400_000), ask('c', 100_000)])).map(answer), ['b', 'b', 'c'], 'room again for all once they ended');
  });
});

describe('a worker that one evaluation takes down', () => {
  const running = pools();

  test("is sent again alone, and one that takes its worker down alone fails (ERR_EVAL_TRAP) and limits its tenant: the other tenants' evaluations on board go again and are answered, however often that tenant's policy crashes", async () => {
    // A crash on demand: a result of eight 1 MiB strings (8 MiB of JSON, then eight strings of
    // the heap's) in a worker whose JS heap may hold 16 MiB. One string of that size is not
    // enough on every Node (Node 24's V8 holds it), and one much larger can abort the process.
    const archive = await buildFixtureBundle({
      modules: { 'big.rego': 'package big\n\nout := [input.s | some x in numbers.range(1, input.n)]\n' },
      entrypoints: ['big/out'],
      roots: ['big'],
    });
    const big = await compilePolicy(await readBundle(archive, { tenant: 'big', namespace: 'big' }), { initialMemoryPages: MEMORY.initialPages });
    const outId = big.entrypoints.get('big/out') as number;
    const memory = { initialPages: MEMORY.initialPages, maximumPages: 4096 };
    const restarts: string[] = [];
    const pool = await running.start({ workerMaxHeapBytes: 16 * 2 ** 20, memory, onWorkerRestart: (reason) => restarts.push(reason) });
    for (const tenant of ['crasher', 'a', 'b']) await pool.load({ type: 'load', key: policyKey(tenant, big.bundleDigest), module: big.module, data: {}, memory });
    const ask = (tenant: string, s: string, n: number): Promise<EvalOutcome> =>
      pool.evaluate({ key: policyKey(tenant, big.bundleDigest), entrypointId: outId, input: JSON.stringify({ s, n }), nowNs: null });
    const megabyte = 'x'.repeat(2 ** 20);
    for (let round = 0; round < 3; round++) {
      // one synchronous turn: one batch, the crashing evaluation between the others
      const outcomes = await Promise.all([ask('a', 'a', 2), ask('crasher', megabyte, 8), ask('b', 'b', 2), ask('a', 'c', 2)]);
      assert.deepEqual(outcomes.map((o) => (o.ok ? o.result : o.code)), [['a', 'a'], ErrorCodes.EVAL_TRAP, ['b', 'b'], ['c', 'c']], `round ${round}`);
      const crashed = outcomes[1]!;
      assert.ok(!crashed.ok);
      assert.match(crashed.message, /the evaluation took its worker down, alone on it \(.*memory limit/);
      assert.deepEqual(pool.limitedTenants, ['crasher'], 'the tenant whose evaluation crashed alone is limited');
      // the first round: once among the others, then alone; later rounds: its tenant's turns go alone
      assert.equal(restarts.length, round + 2, `round ${round}: ${restarts.join(', ')}`);
    }
    const small = await ask('crasher', 'ok', 1);
    assert.deepEqual(small.ok ? small.result : small, ['ok'], 'its evaluations that do not crash are answered');
    assert.equal(pool.pendingInputBytesTotal, 0, 'items sent again after a crash give their room back once');
  });
});
