/**
 * The decision log's rules (`system.log.drop` / `.mask`) evaluated beside the decision, in the
 * same worker turn, instead of in a second round trip for every logged decision: the rules
 * see exactly the event that is logged (every field, its metrics included: the handler time
 * at the end of evaluation, where OPA stops its handler timer before it logs); a decision the
 * engine does not evaluate (a cache hit) or whose event would nest too deep has its rules
 * evaluated apart, as before; a rule that fails, or overruns the deadline, fails only the
 * event's masking, never the decision.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { completeLogEvent } from '../sidecar/src/engine/protocol.ts';
import type { PolicyEngine } from '../sidecar/src/engine/index.ts';
import { buildFixtureBundle } from './harness/fixtures.ts';
import { post, startPavilion, type RunningPavilion } from './harness/pavilion-harness.ts';

/**
 * Watches a sidecar's engine: how many rounds the decision log's rules took apart from their
 * decisions (PolicyEngine.evaluateEach), and, per decision, whether its rules came back
 * evaluated beside it (Decision.log).
 */
function watch(engine: PolicyEngine): { readonly apart: () => number; readonly beside: boolean[] } {
  let rounds = 0;
  const beside: boolean[] = [];
  const evaluateEach = engine.evaluateEach.bind(engine);
  engine.evaluateEach = async (...args: Parameters<PolicyEngine['evaluateEach']>) => {
    rounds++;
    return evaluateEach(...args);
  };
  const evaluate = engine.evaluate.bind(engine);
  engine.evaluate = async (...args: Parameters<PolicyEngine['evaluate']>) => {
    const decision = await evaluate(...args);
    if (args[3]?.log !== undefined) beside.push(decision.log !== undefined);
    return decision;
  };
  return { apart: () => rounds, beside };
}

async function sidecar(modules: Record<string, string>, entrypoints: string[], config: Record<string, unknown> = {}): Promise<RunningPavilion> {
  const bundle = await buildFixtureBundle({ modules, entrypoints, roots: ['acme'] });
  return startPavilion({ bundles: { acme: bundle }, config });
}

const AUTHZ = 'package acme.authz\n\nimport rego.v1\n\ndefault allow := false\n\nallow if input.user == "alice"\n';

describe('completeLogEvent', () => {
  it('adds input, result and metrics to the known fields; leaves out a missing input and an undefined result', () => {
    const known = JSON.stringify({ decision_id: 'd', req_id: 3 });
    assert.deepEqual(JSON.parse(completeLogEvent(known, '{"a":[1]}', { allow: true }, 5, 9)), {
      decision_id: 'd', req_id: 3, input: { a: [1] }, result: { allow: true }, metrics: { timer_rego_query_eval_ns: 5, timer_server_handler_ns: 9 },
    });
    assert.deepEqual(JSON.parse(completeLogEvent(known, null, undefined, 5, 9)), {
      decision_id: 'd', req_id: 3, metrics: { timer_rego_query_eval_ns: 5, timer_server_handler_ns: 9 },
    });
    assert.deepEqual(JSON.parse(completeLogEvent('{}', 'null', false, 1, 1)), {
      input: null, result: false, metrics: { timer_rego_query_eval_ns: 1, timer_server_handler_ns: 1 },
    });
  });
});

describe('system.log rules beside the decision, through a running sidecar', () => {
  it('the rules see the very event that is logged, every field of it, and take no round of their own', async () => {
    // the mask rule copies the whole event it sees into the logged event
    const app = await sidecar({
      'authz.rego': `${AUTHZ}\nmaybe if input.user == "carol"\n`,
      'log.rego': 'package acme.system.log\n\nimport rego.v1\n\nmask contains {"op": "upsert", "path": "/input/seen", "value": input}\n\nmask contains "/input/secret"\n',
    }, ['acme/authz/allow', 'acme/authz/maybe', 'acme/system/log/mask'], { engine: { cache: { enabled: false } } });
    const seen = watch(app.pavilion.engine);
    let events: Array<Record<string, unknown>>;
    try {
      for (const input of [{ user: 'alice', secret: 's1' }, { user: 'bob', secret: 's2' }]) {
        const r = await post(`${app.url}/v1/data/acme/authz/allow`, { input }, { 'x-pavilion-tenant': 'acme' });
        assert.equal(r.status, 200);
      }
      // an undefined document: the event has no result
      const undefinedDoc = await post(`${app.url}/v1/data/acme/authz/maybe`, { input: { user: 'alice', secret: 's3' } }, { 'x-pavilion-tenant': 'acme' });
      assert.equal(undefinedDoc.status, 200);
      assert.equal(undefinedDoc.body['result'], undefined);
      await app.pavilion.sink.stop(5000);
      events = await app.decisions();
    } finally {
      await app.stop();
    }
    assert.equal(seen.apart(), 0, 'no decision needed a second round for its log rules');
    assert.deepEqual(seen.beside, [true, true, true]);
    assert.equal(events.length, 3);
    events.sort((x, y) => (x['req_id'] as number) - (y['req_id'] as number));
    assert.equal(events[2]!['result'], undefined);
    for (const logged of events) {
      const { masked, erased, input, ...rest } = logged;
      assert.deepEqual(erased, ['/input/secret']);
      assert.deepEqual(masked, ['/input/seen']);
      const { seen, ...ownInput } = input as Record<string, unknown>;
      const seenEvent = structuredClone(seen) as Record<string, unknown> & { input: Record<string, unknown> };
      delete seenEvent.input['secret']; // erased from the logged event
      assert.deepEqual(seenEvent, { ...rest, input: ownInput });
      const metrics = seenEvent['metrics'] as Record<string, number>;
      assert.ok(metrics['timer_server_handler_ns']! >= metrics['timer_rego_query_eval_ns']!, JSON.stringify(metrics));
    }
    assert.equal((events[0]!['input'] as { secret?: string }).secret, undefined, 'the secret is erased');
    assert.equal(((events[0]!['input'] as { seen: { input: { secret: string } } }).seen.input.secret), 's1', 'the rules saw the unmasked event (as OPA\'s do)');
  });

  it('a cached decision, and an event that would nest too deep by its input or its result: their rules are evaluated apart, and the events masked as before', async () => {
    const app = await sidecar({
      'authz.rego': `${AUTHZ}\nnested := {"a": {"b": {"c": {"d": {"e": {"f": input.user}}}}}}\n`,
      'log.rego': 'package acme.system.log\n\nimport rego.v1\n\nmask contains "/input/secret"\n\ndrop if input.input.healthcheck\n',
    }, ['acme/authz/allow', 'acme/authz/nested', 'acme/system/log/mask', 'acme/system/log/drop'], { http: { maxInputDepth: 6 } });
    const seen = watch(app.pavilion.engine);
    let deep: unknown = 'leaf';
    for (let i = 0; i < 5; i++) deep = { n: deep };
    let events: Array<Record<string, unknown>>;
    try {
      const ask = async (input: unknown, rule = 'allow'): Promise<void> => {
        assert.equal((await post(`${app.url}/v1/data/acme/authz/${rule}`, { input }, { 'x-pavilion-tenant': 'acme' })).status, 200);
      };
      await ask({ user: 'alice', secret: 'a' }); // evaluated: rules beside it
      assert.equal(seen.apart(), 0);
      await ask({ user: 'alice', secret: 'a' }); // the same input again: a cache hit, rules apart
      assert.equal(seen.apart(), 1);
      await ask({ user: 'alice', secret: 'b', deep }); // its input would put the event 7 deep: rules apart (and refused there)
      assert.equal(seen.apart(), 2);
      await ask({ user: 'carol', secret: 'd' }, 'nested'); // its result would: the worker leaves the rules to be evaluated apart
      assert.equal(seen.apart(), 3);
      await ask({ healthcheck: true, secret: 'c' }); // dropped by the rule beside it
      assert.equal(seen.apart(), 3);
      await app.pavilion.sink.stop(5000);
      events = await app.decisions();
      assert.equal((app.pavilion.sink.status().details as { dropped_by_policy: number }).dropped_by_policy, 1);
    } finally {
      await app.stop();
    }
    // rules beside: the first decision and the dropped one; not the cached one, nor the two too deep
    assert.deepEqual(seen.beside, [true, false, false, false, true]);
    events.sort((x, y) => (x['req_id'] as number) - (y['req_id'] as number));
    assert.equal(events.length, 4);
    for (const e of events.slice(0, 2)) assert.deepEqual(e['erased'], ['/input/secret']);
    // the deep events' rules failed as a whole where they were evaluated apart: erased, fail closed
    for (const e of events.slice(2)) {
      assert.equal((e['error'] as { code: string }).code, 'ERR_AUDIT_MASK_FAILED');
      assert.match((e['error'] as { message: string }).message, /deeper/);
    }
  });

  it('a log rule that overruns the deadline beside its decision: the decision is answered (evaluated again without its rules), and its event is logged erased, the rules having overrun apart too', async () => {
    const app = await sidecar({
      'authz.rego': AUTHZ,
      'log.rego': [
        'package acme.system.log',
        '',
        'import rego.v1',
        '',
        // spins past the deadline; it allocates as it goes, so memory is set high enough for
        // the deadline to come first on every Node version (at the default, a faster V8
        // reaches opa_malloc's limit first)
        'mask contains "/input/secret" if {',
        '\tr := numbers.range(1, input.input.n)',
        '\tevery i in r {',
        '\t\tevery j in r {',
        '\t\t\ti > 0',
        '\t\t\tj > 0',
        '\t\t}',
        '\t}',
        '}',
        '',
      ].join('\n'),
    }, ['acme/authz/allow', 'acme/system/log/mask'], { engine: { evaluationTimeoutMs: 100, memoryMaxBytes: 512 * 1024 * 1024, cache: { enabled: false } } });
    const seen = watch(app.pavilion.engine);
    let events: Array<Record<string, unknown>>;
    try {
      const quick = await post(`${app.url}/v1/data/acme/authz/allow`, { input: { user: 'alice', secret: 'a', n: 2 } }, { 'x-pavilion-tenant': 'acme' });
      assert.equal(quick.status, 200);
      const spinning = await post(`${app.url}/v1/data/acme/authz/allow`, { input: { user: 'alice', secret: 'b', n: 100_000 } }, { 'x-pavilion-tenant': 'acme' });
      assert.equal(spinning.status, 200, JSON.stringify(spinning.body));
      assert.equal(spinning.body['result'], true, 'a log rule never fails the decision');
      await app.pavilion.sink.stop(10_000);
      events = await app.decisions();
    } finally {
      await app.stop();
    }
    assert.deepEqual(seen.beside, [true, false], 'the second decision came back without its rules');
    events.sort((x, y) => (x['req_id'] as number) - (y['req_id'] as number));
    assert.equal(events.length, 2);
    assert.deepEqual(events[0]!['erased'], ['/input/secret']);
    const failed = events[1]!;
    assert.equal(failed['input'], undefined, 'erased: its rules could not be evaluated apart either');
    assert.equal(failed['result'], undefined);
    assert.equal((failed['error'] as { code: string }).code, 'ERR_AUDIT_MASK_FAILED');
    assert.match((failed['error'] as { message: string }).message, /system\.log\.mask: .*deadline/);
  });

  it('a tenant whose bundle has no log rules: nothing is evaluated for them, beside the decision or apart', async () => {
    const app = await sidecar({ 'authz.rego': AUTHZ }, ['acme/authz/allow'], { engine: { cache: { enabled: false } } });
    const seen = watch(app.pavilion.engine);
    let events: Array<Record<string, unknown>>;
    try {
      assert.equal((await post(`${app.url}/v1/data/acme/authz/allow`, { input: { user: 'alice' } }, { 'x-pavilion-tenant': 'acme' })).status, 200);
      await app.pavilion.sink.stop(5000);
      events = await app.decisions();
    } finally {
      await app.stop();
    }
    assert.equal(events.length, 1);
    assert.deepEqual(events[0]!['input'], { user: 'alice' });
    assert.equal(seen.apart(), 0, 'the masker found no rules in the active revision without asking a worker');
    assert.deepEqual(seen.beside, [false], 'nor was anything evaluated beside the decision');
  });
});
