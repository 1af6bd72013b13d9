/**
 * What the worker pool charges a tenant for (1c7fe30), seen in the order a one-worker pool
 * serves two tenants under contention. Nothing is compared with a clock: the order follows
 * from the charges (start-time fair queueing), and each scenario is sized so the orders
 * with and without the fix are far apart (see each test).
 *
 * - a failed evaluation is charged the worker time it ran (the worker times failures too);
 * - work re-dispatched after its worker died is refunded before it is charged again.
 * - an estimate far below a measured cost jumps to it (through the exported pure function
 *   nextCostEstimateNs: its effect is on charges in flight only, which no order shows reliably).
 *
 * Policies are built by the real opa CLI; each tenant loads the same module under its own key
 * (as test/engine-worker-pool.test.ts does).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { readBundle } from '../sidecar/src/bundles/index.ts';
import { compilePolicy, type CompiledPolicy } from '../sidecar/src/engine/index.ts';
import { policyKey, type EvalOutcome } from '../sidecar/src/engine/protocol.ts';
import { WorkerPool, nextCostEstimateNs, type WorkerPoolOptions } from '../sidecar/src/engine/worker-pool.ts';
import { ErrorCodes } from '../sidecar/src/lib/errors.ts';
import { buildFixtureBundle } from './harness/fixtures.ts';

// OPA's Wasm frees nothing within an evaluation: the long spin needs room
const MEMORY = { initialPages: 5, maximumPages: 8192 };

const SPIN = `package spin

run if {
	every i in numbers.range(1, input.n) {
		every j in numbers.range(1, input.n) {
			i + j > 0
		}
	}
}

# spins twice, then fails (two values for one rule)
boom := 1 if run
boom := 2 if run

echo := input
`;

let policy: CompiledPolicy;
const entrypoint = (name: string): number => {
  const id = policy.entrypoints.get(`spin/${name}`);
  assert.ok(id !== undefined);
  return id;
};

before(async () => {
  const archive = await buildFixtureBundle({ modules: { 'spin.rego': SPIN }, entrypoints: ['spin/run', 'spin/boom', 'spin/echo'], roots: ['spin'] });
  policy = await compilePolicy(await readBundle(archive, { tenant: 'spin', namespace: 'spin' }), { initialMemoryPages: MEMORY.initialPages });
});

const keyOf = (tenant: string): string => policyKey(tenant, policy.bundleDigest);

/** A one-worker pool with `tenants` loaded; stopped after the test. */
function pools(): { start(tenants: readonly string[], options?: Partial<WorkerPoolOptions>): Promise<WorkerPool> } {
  const started: WorkerPool[] = [];
  after(async () => {
    await Promise.all(started.map((pool) => pool.stop()));
  });
  return {
    async start(tenants, options = {}) {
      const pool = new WorkerPool({ workers: 1, evaluationTimeoutMs: 5_000, maxQueuedEvaluations: 1_000, memory: MEMORY, ...options });
      started.push(pool);
      await pool.start();
      for (const tenant of tenants) await pool.load({ type: 'load', key: keyOf(tenant), module: policy.module, data: {}, memory: MEMORY });
      return pool;
    },
  };
}

function evaluate(pool: WorkerPool, tenant: string, name: 'run' | 'boom' | 'echo', input: unknown): Promise<EvalOutcome> {
  return pool.evaluate({ key: keyOf(tenant), entrypointId: entrypoint(name), input: JSON.stringify(input), nowNs: null });
}

/** Answers in the order the pool gave them (one worker: the order it handed them out). */
function recorder(): { order: string[]; track(tenant: string, outcome: Promise<EvalOutcome>): Promise<EvalOutcome> } {
  const order: string[] = [];
  return {
    order,
    track: (tenant, outcome) =>
      outcome.then((o) => {
        order.push(tenant);
        return o;
      }),
  };
}

describe('a tenant whose evaluations fail', () => {
  const running = pools();

  test('is charged the worker time they ran: a cheap tenant waiting with it is served first, all of it', async () => {
    const pool = await running.start(['failing', 'calm']);
    // each 'boom' spins (tens of ms of worker time) and then fails with a conflict: charged
    // its time, the failing tenant is that far behind, and the calm tenant's 30 echoes (a few
    // tens of µs each) all go before its next one. Charged only its estimate (100 µs, as
    // before the fix), it is level with the calm tenant after an echo or two.
    for (let i = 0; i < 2; i++) {
      const outcome = await evaluate(pool, 'failing', 'boom', { n: 300, i });
      assert.ok(!outcome.ok && outcome.code === ErrorCodes.EVAL_CONFLICT, JSON.stringify(outcome));
    }
    for (let i = 0; i < 3; i++) assert.ok((await evaluate(pool, 'calm', 'echo', { i })).ok);

    const { order, track } = recorder();
    // one turn, the failing tenant's first: arrival order would favour it
    const failing = Array.from({ length: 3 }, (_, i) => track('failing', evaluate(pool, 'failing', 'boom', { n: 300, i })));
    const calm = Array.from({ length: 30 }, (_, i) => track('calm', evaluate(pool, 'calm', 'echo', { i })));
    const [failed, answered] = await Promise.all([Promise.all(failing), Promise.all(calm)]);
    assert.ok(failed.every((o) => !o.ok && o.code === ErrorCodes.EVAL_CONFLICT), JSON.stringify(failed));
    assert.deepEqual(answered.map((o) => (o.ok ? (o.result as { i: number }).i : o.code)), Array.from({ length: 30 }, (_, i) => i));
    assert.equal(order.indexOf('failing'), 30, `every calm echo goes before the failing tenant's next evaluation: ${order.join(' ')}`);
  });
});

describe('work re-dispatched after its worker died', () => {
  const running = pools();

  test('is refunded before it is charged again: its tenant goes ahead of a tenant that queued behind it meanwhile', async () => {
    const pool = await running.start(['hog', 'early', 'late'], { evaluationTimeoutMs: 500 });
    const { order, track } = recorder();
    // One turn: the hog's spin (it overruns the deadline) heads the first batch, followed by
    // 19 of the early tenant's 40 echoes (the batch holds 2 ms of estimated work, 100 µs each
    // for tenants not measured yet); the other 21 stay queued.
    const hog = evaluate(pool, 'hog', 'run', { n: 5000 });
    const early = Array.from({ length: 40 }, (_, i) => track('early', evaluate(pool, 'early', 'echo', { i })));
    await new Promise((resolve) => setImmediate(resolve)); // the batch is out, the hog spins
    // The late tenant queues now, level with the early tenant's last charge (where an idle
    // tenant starts). When the worker dies, the early tenant's 19 echoes that never ran are
    // refunded: it is 1.9 ms of estimates ahead and about that many of its echoes go first.
    // Charged twice (as before the fix), it is behind the late tenant, whose echoes go first.
    const late = Array.from({ length: 40 }, (_, i) => track('late', evaluate(pool, 'late', 'echo', { i })));
    const overrun = await hog;
    assert.ok(!overrun.ok && overrun.code === ErrorCodes.EVAL_TIMEOUT, JSON.stringify(overrun));
    const answers = await Promise.all([...early, ...late]);
    assert.deepEqual(answers.map((o) => (o.ok ? (o.result as { i: number }).i : o.code)), [...Array.from({ length: 40 }, (_, i) => i), ...Array.from({ length: 40 }, (_, i) => i)]);
    assert.equal(pool.restarts, 1);
    const firstLate = order.indexOf('late');
    assert.ok(firstLate >= 10, `the refunded tenant's echoes go first (${firstLate} of them before the other tenant's first): ${order.join(' ')}`);
  });
});

describe("a tenant's cost estimate (nextCostEstimateNs, the seam #settleCharge uses)", () => {
  test('jumps to a cost more than 4 times the estimate, so the next costly evaluations are not charged as cheap ones', () => {
    assert.equal(nextCostEstimateNs(20_000, 40_000_000), 40_000_000, 'far above the estimate: that cost at once');
    assert.equal(nextCostEstimateNs(100_000, 400_001), 400_001);
  });

  test('moves gradually otherwise: up to 4 times the estimate, and down', () => {
    assert.equal(nextCostEstimateNs(100_000, 400_000), 160_000);
    assert.equal(nextCostEstimateNs(100_000, 200_000), 120_000);
    assert.equal(nextCostEstimateNs(1_000_000, 20_000), 804_000);
  });
});
