/**
 * The evaluation engine on real Wasm built by opa: isolation between tenants, deadlines,
 * traps and conflicts as typed errors, recycling, load-time builtin checks, the decision
 * cache and its exemption for time-dependent policies.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { readBundle } from '../sidecar/src/bundles/index.ts';
import { compilePolicy, DecisionCache, PolicyEngine, type EngineOptions } from '../sidecar/src/engine/index.ts';
import { ErrorCodes, PavilionError, type ErrorCode } from '../sidecar/src/lib/errors.ts';
import { buildFixtureBundle, hostileWasm, makeTarGz, unpackFixture, type FixtureBundle } from './harness/fixtures.ts';

const ENGINE: EngineOptions = {
  workers: 2,
  evaluationTimeoutMs: 60,
  maxQueuedEvaluations: 1000,
  memoryInitialPages: 5,
  memoryMaxBytes: 64 * 1024 * 1024,
  maxInputDepth: 32,
  cache: { enabled: true, maxEntries: 1000, maxBytes: 1024 * 1024, maxKeyBytes: 4096 },
};

/**
 * Room for a spin to overrun its deadline before it runs out of memory (OPA's Wasm frees
 * nothing within an evaluation): with 64 MiB a fast machine on Node 24 reached the memory
 * maximum first, and the spin ended ERR_EVAL_MEMORY, not at the deadline.
 */
const SPIN_ROOM = { memoryMaxBytes: 1024 * 1024 * 1024 };

async function compiled(tenant: string, fixture: FixtureBundle) {
  const bundle = await readBundle(await buildFixtureBundle(fixture), { tenant, namespace: tenant });
  return await compilePolicy(bundle, { initialMemoryPages: 5 });
}

async function rejects(promise: Promise<unknown>, code: ErrorCode): Promise<PavilionError> {
  const error = await promise.then(() => assert.fail(`expected ${code}`), (e: unknown) => e);
  assert.ok(error instanceof PavilionError, String(error));
  assert.equal(error.code, code, error.message);
  return error;
}

const HEAVY = `package heavy

spin if {
	every i in numbers.range(1, input.n) {
		every j in numbers.range(1, input.n) {
			i + j > 0
		}
	}
}

hog := count([x | some x in numbers.range(1, input.n)])

conflict := input.a if input.a
conflict := input.b if input.b

echo := input
`;

describe('policy engine', () => {
  const hits: boolean[] = [];
  const restarts: string[] = [];
  const engine = new PolicyEngine({ ...ENGINE, ...SPIN_ROOM }, {
    onCacheLookup: (_tenant, hit) => hits.push(hit),
    onWorkerRestart: (reason) => restarts.push(reason),
  });

  before(async () => {
    await engine.start();
    await engine.activate(await compiled('heavy', {
      modules: { 'heavy.rego': HEAVY },
      entrypoints: ['heavy/spin', 'heavy/hog', 'heavy/conflict', 'heavy/echo'],
      roots: ['heavy'],
    }));
    await engine.activate(await compiled('calm', {
      modules: {
        'calm.rego': 'package calm\n\nallow if input.user == data.calm.owner\n\nclock := time.now_ns()\n',
      },
      data: { calm: { owner: 'alice' } },
      entrypoints: ['calm/allow', 'calm/clock'],
      roots: ['calm'],
    }));
  });
  after(() => engine.stop());

  test('evaluates per tenant with that tenant\'s data', async () => {
    assert.equal((await engine.evaluate('calm', 'calm/allow', { user: 'alice' })).result, true);
    assert.equal((await engine.evaluate('calm', 'calm/allow', { user: 'bob' })).result, undefined);
  });

  test("a tenant cannot evaluate another tenant's entrypoint -> ERR_ENTRYPOINT_UNKNOWN", async () => {
    await rejects(engine.evaluate('calm', 'heavy/echo', {}), ErrorCodes.ENTRYPOINT_UNKNOWN);
  });

  test('a tenant without an active policy -> ERR_TENANT_NOT_READY', async () => {
    await rejects(engine.evaluate('nobody', 'nobody/allow', {}), ErrorCodes.TENANT_NOT_READY);
  });

  test('conflicting values -> ERR_EVAL_CONFLICT, and the next evaluation works', async () => {
    await rejects(engine.evaluate('heavy', 'heavy/conflict', { a: 'x', b: 'y' }), ErrorCodes.EVAL_CONFLICT);
    // an unpaired surrogate the Wasm's JSON parser would trap on: refused before a worker, cached path or not
    for (const cache of [true, false]) {
      const refused = await rejects(engine.evaluate('heavy', 'heavy/echo', { s: ['ok', 'x\ud800'] }, { cache }), ErrorCodes.REQUEST_INVALID);
      assert.match(refused.message, /unpaired UTF-16 surrogate \(\\ud800\)/);
    }
    assert.deepEqual((await engine.evaluate('heavy', 'heavy/echo', { s: '\u{1F600}\\ud800' }, { cache: false })).result, { s: '\u{1F600}\\ud800' }, 'a pair and an escaped backslash pass');
    const [each] = await engine.evaluateEach('heavy', ['heavy/echo'], { s: '\udfff' }).then(() => [undefined], (e: unknown) => [e]);
    assert.equal((each as PavilionError | undefined)?.code, ErrorCodes.REQUEST_INVALID, 'evaluateEach (the decision log rules) too');
    assert.equal((await engine.evaluate('heavy', 'heavy/conflict', { a: 'x' })).result, 'x');
  });

  test('a looping policy is stopped at the deadline -> ERR_EVAL_TIMEOUT; other tenants keep answering', async () => {
    const before = restarts.length;
    const slow = engine.evaluate('heavy', 'heavy/spin', { n: 700 }).then(() => undefined, (e: unknown) => e);
    // Meanwhile the other tenant is served, on the other worker or after the restart.
    const others = await Promise.all(Array.from({ length: 20 }, (_, i) => engine.evaluate('calm', 'calm/allow', { user: i % 2 === 0 ? 'alice' : 'bob', i })));
    assert.ok(others.every((d, i) => d.result === (i % 2 === 0 ? true : undefined)));
    const error = await slow;
    assert.ok(error instanceof PavilionError, String(error));
    assert.equal(error.code, ErrorCodes.EVAL_TIMEOUT);
    assert.equal(restarts.length, before + 1);
    assert.equal(restarts.at(-1), 'timeout');
    // The replacement worker has every policy loaded.
    const after = await Promise.all(Array.from({ length: 8 }, () => engine.evaluate('heavy', 'heavy/echo', { ok: 1 })));
    assert.ok(after.every((d) => (d.result as { ok: number }).ok === 1));
  });

  test('evaluateEach: several entrypoints on one input in one round trip, each with its own outcome', async () => {
    const outcomes = await engine.evaluateEach('heavy', ['heavy/echo', 'heavy/conflict', 'heavy/echo'], { a: 'x', b: 'y' });
    assert.equal(outcomes.length, 3);
    assert.deepEqual(outcomes[0], { ok: true, result: { a: 'x', b: 'y' } });
    const conflict = outcomes[1];
    assert.ok(conflict !== undefined && !conflict.ok && conflict.error.code === ErrorCodes.EVAL_CONFLICT, 'the failing rule fails alone');
    assert.deepEqual(outcomes[2], outcomes[0], 'and the rules after it still answer');
    await rejects(engine.evaluateEach('heavy', ['heavy/echo', 'calm/allow'], {}), ErrorCodes.ENTRYPOINT_UNKNOWN);
    await rejects(engine.evaluateEach('nobody', ['heavy/echo'], {}), ErrorCodes.TENANT_NOT_READY);
    assert.deepEqual(await engine.evaluateEach('heavy', [], {}), []);
  });

  test('evaluateEach: a rule that overruns the deadline fails every rule of its round with ERR_EVAL_TIMEOUT', async () => {
    const before = restarts.length;
    const outcomes = await engine.evaluateEach('heavy', ['heavy/echo', 'heavy/spin'], { n: 700 });
    assert.deepEqual(outcomes.map((o) => (o.ok ? 'ok' : o.error.code)), [ErrorCodes.EVAL_TIMEOUT, ErrorCodes.EVAL_TIMEOUT]);
    assert.equal(restarts.length, before + 1, 'the worker was replaced');
    assert.deepEqual((await engine.evaluateEach('heavy', ['heavy/echo'], { n: 1 }))[0], { ok: true, result: { n: 1 } });
  });

  test('deeply nested input -> ERR_REQUEST_TOO_DEEP', async () => {
    let input: unknown = 'leaf';
    for (let i = 0; i < 100; i++) input = { nested: input };
    await rejects(engine.evaluate('heavy', 'heavy/echo', input), ErrorCodes.REQUEST_TOO_DEEP);
  });

  test('identical inputs hit the cache, keyed canonically (key order does not matter)', async () => {
    hits.length = 0;
    const first = await engine.evaluate('heavy', 'heavy/echo', { b: 2, a: 1 });
    const second = await engine.evaluate('heavy', 'heavy/echo', { a: 1, b: 2 });
    assert.equal(first.cached, false);
    assert.equal(second.cached, true);
    assert.deepEqual(second.result, { a: 1, b: 2 });
    assert.deepEqual(hits, [false, true]);
  });

  test('policies using time.now_ns are never cached, and time.now_ns is fixed per evaluation', async () => {
    hits.length = 0;
    const a = await engine.evaluate('calm', 'calm/clock', {});
    const b = await engine.evaluate('calm', 'calm/clock', {});
    assert.equal(a.cached, false);
    assert.equal(b.cached, false);
    assert.deepEqual(hits, [], 'no cache lookups for a non-deterministic policy');
    const fixed = await engine.evaluate('calm', 'calm/clock', {}, { nowNs: 1_700_000_000_123_456_789n });
    assert.equal(fixed.result, 1_700_000_000_123_456_789);
    assert.equal(typeof a.result, 'number');
    assert.ok(Math.abs((a.result as number) / 1e6 - Date.now()) < 60_000, 'time.now_ns is the wall clock');
  });

  test('a new revision is activated atomically and the cache does not serve the old one', async () => {
    await engine.evaluate('calm', 'calm/allow', { user: 'carol' });
    await engine.activate(await compiled('calm', {
      modules: { 'calm.rego': 'package calm\n\nallow if input.user == data.calm.owner\n\nclock := time.now_ns()\n' },
      data: { calm: { owner: 'carol' } },
      entrypoints: ['calm/allow', 'calm/clock'],
      roots: ['calm'],
      revision: 'r2',
    }));
    const decision = await engine.evaluate('calm', 'calm/allow', { user: 'carol' });
    assert.equal(decision.result, true);
    assert.equal(decision.revision, 'r2');
    assert.equal(engine.active('calm')?.revision, 'r2');
  });
});

describe('one tenant\'s burst does not queue another tenant behind it', () => {
  // one worker: what is answered first does not depend on how the threads are scheduled (with
  // two, the other worker answers batches while the one carrying the request waits for a core)
  const engine = new PolicyEngine({ ...ENGINE, workers: 1, evaluationTimeoutMs: 5_000, cache: { ...ENGINE.cache, enabled: false } });

  before(async () => {
    await engine.start();
    for (const tenant of ['burst', 'calm']) {
      await engine.activate(await compiled(tenant, { modules: { 'p.rego': `package ${tenant}\n\necho := input\n` }, entrypoints: [`${tenant}/echo`], roots: [tenant] }));
    }
  });
  after(() => engine.stop());

  test('a request sent after 900 of another tenant is answered after at most the batch in flight', async () => {
    let burstDone = 0;
    const burst = Array.from({ length: 900 }, (_, i) => engine.evaluate('burst', 'burst/echo', { i }).then(() => { burstDone++; }));
    const calm = engine.evaluate('calm', 'calm/echo', { i: 'calm' }).then((d) => ({ result: d.result, burstDoneBefore: burstDone }));
    const { result, burstDoneBefore } = await calm;
    assert.deepEqual(result, { i: 'calm' });
    // round-robin: the calm request rides in the first batch the worker takes after it arrived,
    // so only the batch of 64 in flight (if any) is answered before it (a FIFO put it behind 900)
    assert.ok(burstDoneBefore <= 64, `${burstDoneBefore} of the burst were answered first`);
    await Promise.all(burst);
    assert.equal(burstDone, 900);
  });

  test('a tenant over its queue bound is refused alone: ERR_EVAL_OVERLOADED for it, answers for the others', async () => {
    const small = new PolicyEngine({ ...ENGINE, maxQueuedEvaluations: 10, cache: { ...ENGINE.cache, enabled: false } });
    await small.start();
    try {
      for (const tenant of ['burst', 'calm']) {
        await small.activate(await compiled(tenant, { modules: { 'p.rego': `package ${tenant}\n\necho := input\n` }, entrypoints: [`${tenant}/echo`], roots: [tenant] }));
      }
      const flood = Promise.all(Array.from({ length: 50 }, (_, i) => small.evaluate('burst', 'burst/echo', { i }).then(() => 'ok', (e: unknown) => (e as PavilionError).code)));
      // sent while the flood waits: the calm tenant's own queue has room
      const calm = await Promise.all(Array.from({ length: 5 }, (_, i) => small.evaluate('calm', 'calm/echo', { i })));
      const outcomes = await flood;
      assert.ok(outcomes.includes(ErrorCodes.EVAL_OVERLOADED), 'the flooding tenant is refused past its bound');
      assert.ok(outcomes.includes('ok'));
      assert.deepEqual(calm.map((d) => (d.result as { i: number }).i), [0, 1, 2, 3, 4]);
    } finally {
      await small.stop();
    }
  });
});

describe('worker time is shared by what evaluations cost, not by how many there are', () => {
  // one worker, so the share is the pool's and not a matter of thread scheduling
  const engine = new PolicyEngine({ ...ENGINE, workers: 1, evaluationTimeoutMs: 5_000, cache: { ...ENGINE.cache, enabled: false } });

  before(async () => {
    await engine.start();
    await engine.activate(await compiled('heavy', { modules: { 'heavy.rego': HEAVY }, entrypoints: ['heavy/spin'], roots: ['heavy'] }));
    await engine.activate(await compiled('calm', { modules: { 'calm.rego': 'package calm\n\necho := input\n' }, entrypoints: ['calm/echo'], roots: ['calm'] }));
  });
  after(() => engine.stop());

  test('a tenant whose evaluations cost far more gets far fewer of them through while both keep the pool busy', async () => {
    // then each keeps 8 requests waiting (a new one as each is answered) until the costly one
    // has had 10 answered; sharing by requests, as round-robin did, answers about as many of
    // the cheap tenant's (8 of each per batch)
    const IN_FLIGHT = 8;
    // each tenant's cost measured first, one evaluation at a time
    for (let i = 0; i < 5; i++) {
      await engine.evaluate('heavy', 'heavy/spin', { n: 300 });
      await engine.evaluate('calm', 'calm/echo', { i });
    }
    let costly = 0;
    let cheap = 0;
    let stop = false;
    const loop = async (evaluate: () => Promise<unknown>, done: () => void): Promise<void> => {
      while (!stop) {
        await evaluate();
        done();
      }
    };
    const costlyLoops = Array.from({ length: IN_FLIGHT }, () => loop(() => engine.evaluate('heavy', 'heavy/spin', { n: 300 }), () => {
      if (++costly >= 10) stop = true;
    }));
    const cheapLoops = Array.from({ length: IN_FLIGHT }, (_, i) => loop(() => engine.evaluate('calm', 'calm/echo', { i }), () => {
      cheap++;
    }));
    await Promise.all([...costlyLoops, ...cheapLoops]);
    assert.ok(cheap >= 5 * costly, `${cheap} cheap and ${costly} costly evaluations answered`);
  });
});

describe('a tenant whose policy overruns the deadline does not take the pool from the others', () => {
  const restarts: string[] = [];
  const engine = new PolicyEngine({ ...ENGINE, ...SPIN_ROOM }, { onWorkerRestart: (reason) => restarts.push(reason) });

  before(async () => {
    await engine.start();
    await engine.activate(await compiled('heavy', { modules: { 'heavy.rego': HEAVY }, entrypoints: ['heavy/spin', 'heavy/echo'], roots: ['heavy'] }));
    await engine.activate(await compiled('calm', { modules: { 'calm.rego': 'package calm\n\necho := input\n' }, entrypoints: ['calm/echo'], roots: ['calm'] }));
  });
  after(() => engine.stop());

  test('looping requests of one tenant, interleaved with another tenant\'s: the other tenant gets every answer', async () => {
    const calm: Array<Promise<unknown>> = [];
    const heavy: Array<Promise<unknown>> = [];
    for (let round = 0; round < 6; round++) {
      for (let i = 0; i < 2; i++) heavy.push(engine.evaluate('heavy', 'heavy/spin', { n: 700, round, i }, { cache: false }).then(() => 'ok', (e: unknown) => (e as PavilionError).code));
      for (let i = 0; i < 10; i++) {
        calm.push(engine.evaluate('calm', 'calm/echo', { round, i }, { cache: false }).then((d) => (d.result as { i: number }).i === i ? 'ok' : 'wrong', (e: unknown) => (e as PavilionError).code));
      }
      await new Promise((resolve) => setTimeout(resolve, 15));
    }
    const calmOutcomes = await Promise.all(calm);
    assert.deepEqual(calmOutcomes.filter((o) => o !== 'ok'), [], 'no error for the tenant that did nothing wrong (no ERR_EVAL_TRAP from deaths it did not cause)');
    const heavyOutcomes = await Promise.all(heavy);
    assert.ok(heavyOutcomes.every((o) => o === ErrorCodes.EVAL_TIMEOUT), `every spin stopped at the deadline: ${heavyOutcomes.join(', ')}`);
    assert.equal(restarts.length, heavy.length, 'one worker restart per overrun');
    let status = engine.status();
    for (let i = 0; i < 100 && (status.details as { readyWorkers: number }).readyWorkers < 2; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20)); // the last replacement worker starting
      status = engine.status();
    }
    assert.equal(status.state, 'WARN');
    assert.deepEqual((status.details as { limitedTenants?: string[] }).limitedTenants, ['heavy']);
    assert.match(status.message ?? '', /limited to one evaluation at a time.*heavy/);
    // the limited tenant is still served, one evaluation at a time
    const echoes = await Promise.all(Array.from({ length: 4 }, (_, i) => engine.evaluate('heavy', 'heavy/echo', { i }, { cache: false })));
    assert.deepEqual(echoes.map((d) => (d.result as { i: number }).i), [0, 1, 2, 3]);
  });
});

describe('a tenant whose queued evaluations all loop: the limit holds them, so the others keep a worker', () => {
  for (const workers of [2, 1]) {
    test(`${workers} worker(s): another tenant's requests sent after the first overrun are answered within a couple of restarts, not after all of them`, async () => {
      const restarts: string[] = [];
      const engine = new PolicyEngine({ ...ENGINE, ...SPIN_ROOM, workers }, { onWorkerRestart: (reason) => restarts.push(reason) });
      await engine.start();
      try {
        await engine.activate(await compiled('heavy', { modules: { 'heavy.rego': HEAVY }, entrypoints: ['heavy/spin'], roots: ['heavy'] }));
        await engine.activate(await compiled('calm', { modules: { 'calm.rego': 'package calm\n\necho := input\n' }, entrypoints: ['calm/echo'], roots: ['calm'] }));
        // eight looping evaluations queued at once, before the tenant is limited
        const spins = Array.from({ length: 8 }, (_, i) => engine.evaluate('heavy', 'heavy/spin', { n: 700, i }, { cache: false }).then(() => 'ok', (e: unknown) => (e as PavilionError).code));
        for (let i = 0; i < 500 && restarts.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
        assert.ok(restarts.length > 0, 'the first overrun happened');
        const before = restarts.length;
        const calm = await Promise.all(Array.from({ length: 6 }, (_, i) => engine.evaluate('calm', 'calm/echo', { i }, { cache: false })));
        const during = restarts.length - before;
        assert.deepEqual(calm.map((d) => (d.result as { i: number }).i), [0, 1, 2, 3, 4, 5]);
        assert.ok(during <= 2, `${during} more worker restarts (overruns of the limited tenant) came before the other tenant's answers`);
        const outcomes = await Promise.all(spins);
        assert.ok(outcomes.every((o) => o === ErrorCodes.EVAL_TIMEOUT), outcomes.join(', '));
      } finally {
        await engine.stop();
      }
    });
  }
});

describe('decision cache bounds', () => {
  test('evicts least recently used entries by count', () => {
    const cache = new DecisionCache(2);
    cache.set('a', { result: 1 });
    cache.set('b', { result: 2 });
    cache.get('a');
    cache.set('c', { result: 3 });
    assert.equal(cache.get('b'), undefined, 'b was least recently used');
    assert.deepEqual(cache.get('a'), { result: 1 });
    assert.equal(cache.size, 2);
  });

  test('evicts by approximate bytes, so unique large inputs cannot grow it past maxBytes', () => {
    const maxBytes = 64 * 1024;
    const cache = new DecisionCache(1_000_000, maxBytes);
    for (let i = 0; i < 10_000; i++) cache.set(`tenant\u0000rev\u0000path\u0000${'x'.repeat(500)}${i}`, { result: i });
    assert.ok(cache.bytes <= maxBytes, `${cache.bytes} bytes held`);
    assert.ok(cache.size > 10 && cache.size < 100, `${cache.size} entries`);
    cache.purgeTenant('tenant');
    assert.equal(cache.size, 0);
    assert.equal(cache.bytes, 0);
  });

  test('the budget is shared fairly: a tenant flooding unique inputs evicts its own entries, not a quieter tenant\'s', () => {
    const key = (tenant: string, i: number): string => DecisionCache.key(tenant, 'rev', 'path', `{"i":${i}}`);
    const byCount = new DecisionCache(100);
    for (let i = 0; i < 10; i++) byCount.set(key('quiet', i), { result: i });
    for (let i = 0; i < 10_000; i++) byCount.set(key('flood', i), { result: i });
    for (let i = 0; i < 10; i++) assert.deepEqual(byCount.get(key('quiet', i)), { result: i }, `quiet entry ${i} survives`);
    assert.deepEqual(byCount.held('flood').entries, 90);
    assert.equal(byCount.size, 100);

    const byBytes = new DecisionCache(1_000_000, 64 * 1024);
    for (let i = 0; i < 10; i++) byBytes.set(key('quiet', i), { result: i });
    for (let i = 0; i < 10_000; i++) byBytes.set(`${key('flood', i)}${'x'.repeat(500)}`, { result: i });
    assert.equal(byBytes.held('quiet').entries, 10, 'bytes: the quiet share is intact');
    assert.ok(byBytes.bytes <= 64 * 1024);
    byBytes.purgeTenant('flood');
    assert.deepEqual(byBytes.held('flood'), { entries: 0, bytes: 0 });
    assert.equal(byBytes.size, 10);
    assert.equal(byBytes.bytes, byBytes.held('quiet').bytes);
  });

  test('an entry larger than maxBytes is not cached at all', () => {
    const cache = new DecisionCache(10, 100);
    cache.set('k'.repeat(200), { result: true });
    assert.equal(cache.size, 0);
    const small = new DecisionCache(10, 4096);
    small.set('k', { result: 'r'.repeat(5000) });
    assert.equal(small.size, 0, 'a small key with a large result neither');
  });

  test('counts the results too: small unique inputs with large results stay within maxBytes', () => {
    const maxBytes = 256 * 1024;
    const cache = new DecisionCache(1_000_000, maxBytes);
    const permissions = Array.from({ length: 200 }, (_, i) => `permission-${i}`);
    for (let i = 0; i < 5_000; i++) cache.set(`tenant\u0000rev\u0000path\u0000{"user":${i}}`, { result: { allow: true, permissions } });
    assert.ok(cache.bytes <= maxBytes, `${cache.bytes} bytes held`);
    assert.ok(cache.size < 100, `${cache.size} entries of about 6 KB each`);
    cache.purgeTenant('tenant');
    assert.equal(cache.bytes, 0);
  });
});

describe('activation identity', () => {
  const engine = new PolicyEngine(ENGINE);
  const owner = async (name: string, revision = 'same') => compiled('acme', {
    modules: { 'a.rego': 'package acme.policy\n\nowner := data.acme.people.owner\n' },
    data: { acme: { people: { owner: name } } },
    entrypoints: ['acme/policy/owner'],
    roots: ['acme'],
    revision,
  });
  before(() => engine.start());
  after(() => engine.stop());

  test('a new bundle reusing the same revision string is served, not the old content', async () => {
    await engine.activate(await owner('alice'));
    assert.equal((await engine.evaluate('acme', 'acme/policy/owner', {})).result, 'alice');
    await engine.activate(await owner('bob'));
    assert.equal((await engine.evaluate('acme', 'acme/policy/owner', {})).result, 'bob');
  });

  test('rolling back before the old policy is unloaded keeps serving it after the unload delay', async () => {
    const a = await owner('carol', 'a');
    const b = await owner('dave', 'b');
    await engine.activate(a);
    await engine.activate(b);
    await engine.activate(a);
    await new Promise((resolve) => setTimeout(resolve, 1_300)); // past the unload delay
    const decisions = await Promise.all(Array.from({ length: 6 }, () => engine.evaluate('acme', 'acme/policy/owner', {})));
    assert.ok(decisions.every((d) => d.result === 'carol'), JSON.stringify(decisions.map((d) => d.result)));
  });

  test('two concurrent activations of the same bundle both settle', async () => {
    const c = await owner('erin', 'c');
    const settled = await Promise.race([
      Promise.all([engine.activate(c), engine.activate(c)]).then(() => 'settled'),
      new Promise((resolve) => setTimeout(() => resolve('hung'), 5_000)),
    ]);
    assert.equal(settled, 'settled');
    assert.equal((await engine.evaluate('acme', 'acme/policy/owner', {})).result, 'erin');
  });
});

describe('loading under the watchdog', () => {
  const engine = new PolicyEngine({ ...ENGINE, loadTimeoutMs: 1 });
  before(async () => {
    await engine.start();
  });
  after(() => engine.stop());

  test('a load that overruns its deadline fails the activation with ERR_BUNDLE_WASM_INVALID; active tenants keep answering', async () => {
    // Activated while loads are still fast enough for a 1 ms deadline to be checked only by a
    // watchdog tick; the big one is not.
    const calm = await compiled('calm', { modules: { 'calm.rego': 'package calm\n\nallow := true\n' }, entrypoints: ['calm/allow'], roots: ['calm'] });
    await engine.activate(calm).catch(() => undefined);
    const rows = Array.from({ length: 200_000 }, (_, i) => ({ id: i, name: `row-${i}`, tags: ['a', 'b'] }));
    const big = await compiled('big', { modules: { 'big.rego': 'package big\n\nn := count(data.big.rows)\n' }, data: { big: { rows } }, entrypoints: ['big/n'], roots: ['big'] });
    await assert.rejects(engine.activate(big), (e: unknown) => e instanceof PavilionError && e.code === ErrorCodes.BUNDLE_WASM_INVALID && /did not finish within 1 ms/.test(e.message));
    assert.equal(engine.active('big'), undefined);
    if (engine.active('calm') !== undefined) {
      assert.equal((await engine.evaluate('calm', 'calm/allow', {})).result, true);
    }
  });
});

describe('a load that overruns its deadline fails only itself', () => {
  // one worker, so the second tenant's load queues behind the slow one on the same thread
  const engine = new PolicyEngine({ ...ENGINE, workers: 1, loadTimeoutMs: 40 });
  before(async () => {
    await engine.start();
  });
  after(() => engine.stop());

  test("another tenant's revision queued behind it on the same worker is loaded into the replacement and activates", async () => {
    const rows = Array.from({ length: 300_000 }, (_, i) => ({ id: i, name: `row-${i}`, tags: ['a', 'b'] }));
    const big = await compiled('big', { modules: { 'big.rego': 'package big\n\nn := count(data.big.rows)\n' }, data: { big: { rows } }, entrypoints: ['big/n'], roots: ['big'] });
    const small = await compiled('small', { modules: { 'small.rego': 'package small\n\nallow := true\n' }, entrypoints: ['small/allow'], roots: ['small'] });
    const [slow, queued] = await Promise.allSettled([engine.activate(big), engine.activate(small)]);
    assert.equal(slow.status, 'rejected');
    assert.ok(slow.reason instanceof PavilionError && slow.reason.code === ErrorCodes.BUNDLE_WASM_INVALID, String(slow.reason));
    assert.equal(queued.status, 'fulfilled', queued.status === 'rejected' ? String(queued.reason) : '');
    assert.equal((await engine.evaluate('small', 'small/allow', {})).result, true);
    assert.equal(engine.active('big'), undefined);
  });
});

describe('memory maximum', () => {
  const engine = new PolicyEngine({ ...ENGINE, workers: 1, evaluationTimeoutMs: 10_000, memoryMaxBytes: 8 * 1024 * 1024 });
  before(async () => {
    await engine.start();
    await engine.activate(await compiled('heavy', { modules: { 'heavy.rego': HEAVY }, entrypoints: ['heavy/hog'], roots: ['heavy'] }));
  });
  after(() => engine.stop());

  test('a policy exhausting its memory maximum -> ERR_EVAL_MEMORY, and the instance is recycled', async () => {
    await rejects(engine.evaluate('heavy', 'heavy/hog', { n: 5_000_000 }), ErrorCodes.EVAL_MEMORY);
    assert.equal((await engine.evaluate('heavy', 'heavy/hog', { n: 10 })).result, 10);
  });
});

describe('load-time checks', () => {
  test('a module needing a builtin Pavilion does not provide is refused, naming it -> ERR_BUNDLE_BUILTIN_MISSING', async () => {
    const bundle = await readBundle(
      await buildFixtureBundle({
        modules: { 'net.rego': 'package acme\n\nresp := http.send({"method": "GET", "url": input.url})\n' },
        entrypoints: ['acme/resp'],
        roots: ['acme'],
      }),
      { tenant: 'acme', namespace: 'acme' },
    );
    const error = await compilePolicy(bundle, { initialMemoryPages: 5 }).then(() => undefined, (e: unknown) => e);
    assert.ok(error instanceof PavilionError);
    assert.equal(error.code, ErrorCodes.BUNDLE_BUILTIN_MISSING);
    assert.match(error.message, /http\.send/);
  });

  test('bytes that are not Wasm -> ERR_BUNDLE_WASM_INVALID', async () => {
    const bundle = await readBundle(
      await buildFixtureBundle({ modules: { 'a.rego': 'package acme\n\nallow := true\n' }, entrypoints: ['acme/allow'], roots: ['acme'] }),
      { tenant: 'acme', namespace: 'acme' },
    );
    await assert.rejects(
      async () => compilePolicy({ ...bundle, wasm: Buffer.from('\0asm\x02\0\0\0garbage') }, { initialMemoryPages: 5 }),
      (e: unknown) => e instanceof PavilionError && e.code === ErrorCodes.BUNDLE_WASM_INVALID,
    );
  });

  test('a Wasm module that is not an OPA policy -> ERR_BUNDLE_WASM_INVALID or ERR_BUNDLE_ABI_UNSUPPORTED', async () => {
    const bundle = await readBundle(
      await buildFixtureBundle({ modules: { 'a.rego': 'package acme\n\nallow := true\n' }, entrypoints: ['acme/allow'], roots: ['acme'] }),
      { tenant: 'acme', namespace: 'acme' },
    );
    // The smallest valid module: magic + version, no sections.
    const empty = Buffer.from([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]);
    await assert.rejects(
      compilePolicy({ ...bundle, wasm: empty }, { initialMemoryPages: 5 }),
      (e: unknown) => e instanceof PavilionError && (e.code === ErrorCodes.BUNDLE_ABI_UNSUPPORTED || e.code === ErrorCodes.BUNDLE_WASM_INVALID),
    );
  });

  test('the same Wasm bytes are compiled and inspected once: a data-only revision or a rollback reuses the module; other bytes or memory limits inspect again', async () => {
    const fixture: FixtureBundle = {
      modules: { 'a.rego': 'package acme\n\nallow if input.n < data.acme.limit\n' },
      entrypoints: ['acme/allow'],
      roots: ['acme'],
      data: { 'acme/limit': 1 },
      revision: 'r1',
    };
    const archive = await buildFixtureBundle(fixture);
    const first = await compilePolicy(await readBundle(archive, { tenant: 'acme', namespace: 'acme' }), { initialMemoryPages: 5 });
    // the next revision changes only data: opa builds the same policy.wasm (from the same sources)
    const entries = (await unpackFixture(archive)).map((entry) => {
      if (entry.name.endsWith('data.json')) return { ...entry, data: JSON.stringify({ acme: { limit: 2 } }) };
      if (entry.name.endsWith('.manifest')) return { ...entry, data: JSON.stringify({ ...JSON.parse(String(entry.data)), revision: 'r2' }) };
      return entry;
    });
    const dataOnly = await compilePolicy(await readBundle(makeTarGz(entries), { tenant: 'acme', namespace: 'acme' }), { initialMemoryPages: 5 });
    assert.equal(dataOnly.revision, 'r2');
    assert.deepEqual(dataOnly.data, { acme: { limit: 2 } }, 'with its own data');
    assert.ok(dataOnly.module === first.module, 'the data-only revision reuses the compiled module');
    assert.deepEqual([...dataOnly.entrypoints], [...first.entrypoints]);
    const rollback = await compilePolicy(await readBundle(archive, { tenant: 'acme', namespace: 'acme' }), { initialMemoryPages: 5 });
    assert.ok(rollback.module === first.module, 'a rollback to the first revision reuses it too');
    const roomier = await compilePolicy(await readBundle(archive, { tenant: 'acme', namespace: 'acme' }), { initialMemoryPages: 6 });
    assert.ok(roomier.module !== first.module, 'inspected again under other memory limits');
    const other = await compiled('acme', { ...fixture, modules: { 'a.rego': 'package acme\n\nallow if input.n <= data.acme.limit\n' } });
    assert.ok(other.module !== first.module, 'other bytes, another module');
  });

  for (const loopIn of ['start', 'builtins'] as const) {
    test(`a module whose ${loopIn === 'start' ? 'start function' : 'builtins export'} never returns is refused within the deadline, and the event loop keeps running -> ERR_BUNDLE_WASM_INVALID`, async () => {
      const bundle = await readBundle(
        await buildFixtureBundle({ modules: { 'a.rego': 'package acme\n\nallow := true\n' }, entrypoints: ['acme/allow'], roots: ['acme'] }),
        { tenant: 'acme', namespace: 'acme' },
      );
      let ticks = 0;
      const ticker = setInterval(() => ticks++, 10);
      const started = performance.now();
      try {
        await assert.rejects(
          compilePolicy({ ...bundle, wasm: hostileWasm(loopIn) }, { initialMemoryPages: 5, inspectionTimeoutMs: 300 }),
          (e: unknown) => e instanceof PavilionError && e.code === ErrorCodes.BUNDLE_WASM_INVALID && /within 300 ms/.test(e.message),
        );
      } finally {
        clearInterval(ticker);
      }
      assert.ok(performance.now() - started < 5_000, 'refused promptly');
      assert.ok(ticks >= 10, `the event loop ran during the inspection (${ticks} ticks)`);
    });
  }
});
