/**
 * Decision-log privacy: OPA's system.log.mask / system.log.drop, compared with the real OPA
 * server's own decision logger on the same rules and documents; each malformed rule set
 * refused; keyed pseudonymisation; fail-closed behaviour; and the whole path through a
 * running sidecar whose tenant bundle carries the rules.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import {
  DecisionMasker,
  PseudonymKeyStore,
  applyMaskRules,
  parseMaskRules,
  parsePseudonymField,
  pseudonym,
  pseudonymiseEvent,
  type DecisionEventV1,
  type LogPolicy,
} from '../sidecar/src/audit/index.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { findOpa } from '../sidecar/src/lib/tools.ts';
import { decisionEvent, tempDir } from './audit/fixtures.ts';
import { buildFixtureBundle } from './harness/fixtures.ts';
import { post, startPavilion } from './harness/pavilion-harness.ts';
import { until } from './harness/wait.ts';

interface Case {
  readonly name: string;
  readonly rules: readonly unknown[];
  readonly input: Record<string, unknown>;
  readonly doc?: unknown;
}

/** Inputs are `{rules, ...}`; the OPA policy masks with input.input.rules. */
const CASES: readonly Case[] = [
  { name: 'erase a nested field', rules: ['/input/user/password'], input: { user: { name: 'a', password: 'p' } } },
  { name: 'erase with op remove', rules: [{ op: 'remove', path: '/input/user/name' }], input: { user: { name: 'a', password: 'p' } } },
  { name: 'erase a missing field: nothing recorded', rules: ['/input/user/ssn'], input: { user: { name: 'a' } } },
  { name: 'erase through a missing parent', rules: ['/input/a/b/c'], input: { x: 1 } },
  { name: 'erase an array element in an object', rules: ['/input/list/1'], input: { list: ['a', 'b', 'c'] } },
  { name: 'erase an array element in an array', rules: ['/input/m/0/1'], input: { m: [[1, 2, 3], [4]] } },
  { name: 'erase an array element out of range', rules: ['/input/list/7'], input: { list: ['a'] } },
  { name: 'erase with a signed index', rules: ['/input/list/+1'], input: { list: ['a', 'b'] } },
  { name: 'erase all of input', rules: ['/input'], input: { secret: 1 } },
  { name: 'erase all of result', rules: ['/result'], input: { k: 1 }, doc: { v: 2 } },
  { name: 'erase a result field', rules: ['/result/doc/v'], input: { k: 1 }, doc: { v: 2, w: 3 } },
  { name: 'erase a key with a space (escaped lookup misses)', rules: ['/input/first name'], input: { 'first name': 'x', 'first%20name': 'y' } },
  { name: 'erase keys Go leaves unescaped', rules: ['/input/a:b', '/input/c@d', '/input/e+f', '/input/g=h'], input: { 'a:b': 1, 'c@d': 2, 'e+f': 3, 'g=h': 4, keep: 5 } },
  { name: 'erase a percent-escaped segment (double-escaped lookup)', rules: ['/input/a%41'], input: { aA: 1, 'a%41': 2, 'a%2541': 3 } },
  { name: 'upsert a new nested field', rules: [{ op: 'upsert', path: '/input/user/password', value: '***' }], input: { user: { password: 'p' } } },
  { name: 'upsert creating parents', rules: [{ op: 'upsert', path: '/input/a/b/c', value: 1 }], input: { x: 1 } },
  { name: 'upsert without a value is null', rules: [{ op: 'upsert', path: '/input/a' }], input: { a: 1 } },
  { name: 'upsert into an array element', rules: [{ op: 'upsert', path: '/input/l/1', value: 'X' }], input: { l: [1, 2] } },
  { name: 'upsert past the end of an array', rules: [{ op: 'upsert', path: '/input/l/5', value: 'X' }], input: { l: [1, 2] } },
  { name: 'upsert through an array past its end', rules: [{ op: 'upsert', path: '/input/l/5/x', value: 'X' }], input: { l: [1, 2] } },
  { name: 'upsert through a scalar', rules: [{ op: 'upsert', path: '/input/s/x', value: 1 }], input: { s: 'str' } },
  // "__proto__" is a member name in JSON like any other (JSON.parse makes these inputs)
  { name: 'upsert creating a "__proto__" member on the way', rules: [{ op: 'upsert', path: '/input/x/__proto__/y', value: 'v' }], input: { x: {} } },
  { name: 'upsert a "__proto__" member', rules: [{ op: 'upsert', path: '/input/__proto__', value: 1 }], input: { a: 1 } },
  { name: 'erase a "__proto__" member', rules: ['/input/__proto__'], input: JSON.parse('{"__proto__": {"a": 1}, "b": 2}') as Record<string, unknown> },
  { name: 'erase an element of an array under "__proto__"', rules: ['/input/__proto__/0'], input: JSON.parse('{"__proto__": [1, 2]}') as Record<string, unknown> },
  { name: 'upsert all of input', rules: [{ op: 'upsert', path: '/input', value: { replaced: true } }], input: { a: 1 } },
  { name: 'upsert into result', rules: [{ op: 'upsert', path: '/result/doc/v', value: 0 }], input: { k: 1 }, doc: { v: 2 } },
  { name: 'several rules in set order', rules: ['/input/b', '/input/a', { op: 'upsert', path: '/input/c', value: 3 }, { op: 'remove', path: '/input/d/0' }], input: { a: 1, b: 2, d: [1, 2] } },
  // several rules through the same arrays and objects (masking copies only what a rule walks through)
  { name: 'erase in a nested array twice and a sibling field', rules: ['/input/a/0/b/1', '/input/a/0/b/0', '/input/a/1/c'], input: { a: [{ b: [1, 2, 3], c: 'x' }, { b: [4], c: 'y' }], s: 'keep' } },
  { name: 'erase and upsert in one deep array', rules: ['/input/m/n/o/1', { op: 'upsert', path: '/input/m/n/o/0', value: 'set' }], input: { m: { n: { o: [10, 20, 30], p: { q: 'deep' } } } } },
  { name: 'upserts past an array end and under new parents', rules: [{ op: 'upsert', path: '/input/a/5/z', value: 1 }, { op: 'upsert', path: '/input/m/new/deeper', value: [1] }], input: { a: [{ c: 'x' }], m: { n: 1 } } },
  { name: 'erase an array element, then upsert into the one before it', rules: ['/input/a/1', { op: 'upsert', path: '/input/a/0/c', value: { v: 1 } }, '/input/m/p/q'], input: { a: [{ c: 'x' }, { c: 'y' }], m: { p: { q: 'deep', r: 1 } } } },
  { name: 'replace all of input, then upsert into the replacement', rules: [{ op: 'upsert', path: '/input', value: { fresh: true } }, { op: 'upsert', path: '/input/fresh2', value: 1 }], input: { a: [1] } },
  { name: 'nd_builtin_cache paths are accepted and do nothing', rules: ['/nd_builtin_cache/x'], input: { a: 1 } },
];

/** Rule sets OPA refuses as a whole (it then logs nothing). */
const INVALID: ReadonlyArray<readonly [string, unknown]> = [
  ['prefix not allowed', ['/foo/bar']],
  ['not slash-prefixed', ['input/a']],
  ['empty path', ['']],
  ['bad URL escape', ['/input/a%zz']],
  ['unknown op', [{ op: 'replace', path: '/input/a' }]],
  ['op missing', [{ path: '/input/a' }]],
  ['op not a string', [{ op: 1, path: '/input/a' }]],
  ['path missing', [{ op: 'remove' }]],
  ['path not a string', [{ op: 'remove', path: 5 }]],
  ['a number as a rule', [5]],
];

const MASK_POLICY = `package system.log

import rego.v1

mask contains rule if {
	some rule in input.input.rules
}

drop if input.input.drop == true

# which fields of the event the rules see, when asked
mask contains {"op": "upsert", "path": "/input/rules_saw", "value": object.keys(input)} if input.input.probe
`;
const DECISION_POLICY = `package t

import rego.v1

decision := {"rules": {r | some r in input.rules}, "doc": object.get(input, "doc", null)}

# an evaluation error (a complete rule with two values), for an error event
conflict := x if some x in [1, 2]
`;

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('system.log.mask: the same events as OPA v1.22.3 logs', () => {
  let opa: ChildProcess;
  let url: string;
  const logged = new Map<string, Record<string, unknown>>();

  before(async () => {
    const dir = await tempDir('pavilion-opa-mask-');
    await writeFile(join(dir, 'mask.rego'), MASK_POLICY);
    await writeFile(join(dir, 't.rego'), DECISION_POLICY);
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    opa = spawn(findOpa(), ['run', '--server', '--addr', `127.0.0.1:${port}`, '--set', 'decision_logs.console=true', join(dir, 'mask.rego'), join(dir, 't.rego')], { stdio: ['ignore', 'ignore', 'pipe'] });
    createInterface({ input: opa.stderr! }).on('line', (line) => {
      try {
        const entry = JSON.parse(line) as Record<string, unknown>;
        if (entry['msg'] === 'Decision Log') logged.set(String(entry['decision_id']), entry);
      } catch {
        // not JSON
      }
    });
    for (let i = 0; i < 100; i++) {
      try {
        if ((await fetch(`${url}/health`)).ok) return;
      } catch {
        // not up yet
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error('opa did not start');
  });

  after(() => {
    opa?.kill();
  });

  async function askOpa(input: Record<string, unknown>): Promise<{ id: string; result: { rules: unknown[]; doc: unknown } }> {
    const response = await post(`${url}/v1/data/t/decision`, { input });
    return { id: String(response.body['decision_id']), result: response.body['result'] as { rules: unknown[]; doc: unknown } };
  }

  async function opaEvent(id: string): Promise<Record<string, unknown> | undefined> {
    for (let i = 0; i < 50 && !logged.has(id); i++) await new Promise((r) => setTimeout(r, 20));
    return logged.get(id);
  }

  for (const c of CASES) {
    it(c.name, async () => {
      const input = { ...c.input, rules: c.rules, ...(c.doc === undefined ? {} : { doc: c.doc }) };
      const { id, result } = await askOpa(input);
      const theirs = await opaEvent(id);
      assert.ok(theirs !== undefined, 'OPA logged the event');
      // OPA hands the mask rule set over in its set order, which the response shows.
      const before = structuredClone({ input, result });
      const ours = applyMaskRules(decisionEvent(0, { input, result }), parseMaskRules(result.rules));
      assert.deepEqual({ input, result }, before, "masking never writes the caller's input or result");
      assert.deepEqual(ours.input, theirs['input']);
      assert.deepEqual(ours.result, theirs['result']);
      assert.deepEqual(ours.erased, theirs['erased']);
      assert.deepEqual(ours.masked, theirs['masked']);
    });
  }

  for (const [name, rules] of INVALID) {
    it(`refuses the whole rule set: ${name} (OPA logs nothing)`, async () => {
      const { id, result } = await askOpa({ rules, a: 1 });
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(await opaEvent(id), undefined, 'OPA did not log it');
      assert.throws(() => parseMaskRules(result.rules), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_MASK_INVALID));
    });
  }

  it('system.log.drop: OPA does not log the event; the masker drops it', async () => {
    const { id } = await askOpa({ rules: [], drop: true });
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(await opaEvent(id), undefined);
    const policy: LogPolicy = { evaluate: async (_t, event) => ({ drop: { ok: true, result: (event as DecisionEventV1 & { input: { drop?: boolean } }).input.drop === true }, mask: { ok: true, result: [] } }) };
    assert.deepEqual(await new DecisionMasker({ policy }).process(decisionEvent(1, { input: { drop: true } })), { kind: 'drop' });
    assert.equal((await new DecisionMasker({ policy }).process(decisionEvent(1, { input: { drop: false } }))).kind, 'log');
  });

  it('the rules see the event with its metrics, and an error event with its error, as OPA v1.22.3\'s do; so does the masker', async () => {
    const { id } = await askOpa({ rules: [], probe: true });
    const decided = await opaEvent(id);
    assert.ok((decided?.['input'] as { rules_saw: string[] }).rules_saw.includes('metrics'), JSON.stringify(decided));
    // an error event: OPA's answer carries no decision id, so it is found by its path
    assert.equal((await post(`${url}/v1/data/t/conflict`, { input: { rules: [], probe: true } })).status, 500);
    let failed: Record<string, unknown> | undefined;
    await until('OPA logged the error event', () => (failed = [...logged.values()].find((e) => e['path'] === 't/conflict')) !== undefined);
    const sawOnError = (failed?.['input'] as { rules_saw: string[] } | undefined)?.rules_saw ?? [];
    assert.ok(sawOnError.includes('metrics') && sawOnError.includes('error'), JSON.stringify(failed));
    let seen: Record<string, unknown> | undefined;
    const policy: LogPolicy = { evaluate: async (_t, event) => ((seen = event as Record<string, unknown>), {}) };
    const event = { ...decisionEvent(1, { input: { a: 1 } }), metrics: { timer_rego_query_eval_ns: 5 }, error: { code: 'ERR_EVAL_CONFLICT', message: 'conflict' } };
    await new DecisionMasker({ policy }).process(event);
    assert.deepEqual(seen, event);
  });

  it('copies only along the rules\' paths: one object reached twice is masked where the rule points, nowhere else', () => {
    const shared = { ssn: '123', name: 'alice' };
    const input = { a: shared, b: shared, other: { big: [1, 2, 3] } };
    const ours = applyMaskRules(decisionEvent(0, { input }), parseMaskRules(['/input/a/ssn', { op: 'upsert', path: '/input/b/name', value: 'x' }]));
    assert.deepEqual(ours.input, { a: { name: 'alice' }, b: { ssn: '123', name: 'x' }, other: { big: [1, 2, 3] } });
    assert.deepEqual(shared, { ssn: '123', name: 'alice' }, 'the shared original is untouched');
    assert.deepEqual(ours.erased, ['/input/a/ssn']);
    assert.deepEqual(ours.masked, ['/input/b/name']);
  });

  it('a rule set that is not an array is refused', () => {
    assert.throws(() => parseMaskRules({ a: 1 }), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_MASK_INVALID));
  });

  it('a refused rule set is named by its kind, never by its value: the refusal is logged in the event and shown in health, and the value may be what it was meant to mask', async () => {
    const secret = '4111-1111-1111-1111';
    const malformed: unknown[] = [
      { op: 'upsert', path: '/input/card', value: secret }, // one object where a set belongs
      [{ op: { card: secret }, path: '/input/card' }],
      [{ op: 'remove', path: [secret] }],
    ];
    for (const result of malformed) {
      const outcome = await new DecisionMasker({ policy: { evaluate: async () => ({ mask: { ok: true, result } }) } }).process(decisionEvent(1, { input: { card: secret } }));
      assert.ok(outcome.kind === 'log' && outcome.failure !== undefined, JSON.stringify(result));
      assert.equal(JSON.stringify(outcome.event).includes(secret), false, JSON.stringify(outcome.event));
      assert.equal(outcome.failure.includes(secret), false, outcome.failure);
    }
  });
});

describe('keyed pseudonymisation', () => {
  const key = Buffer.alloc(32, 7);
  const fields = ['/input/subject/id', '/input/accounts/*', '/result/owner', '/input/a~1b'].map(parsePseudonymField);

  it('replaces configured fields with stable, keyed pseudonyms and records them', () => {
    const event = decisionEvent(1, { input: { subject: { id: 'alice' }, accounts: ['GB-1', 'GB-2'], 'a/b': 'x', keep: 'k' }, result: { owner: 'alice' } });
    const out = pseudonymiseEvent(event, fields, key);
    const input = out.input as { subject: { id: string }; accounts: string[]; keep: string; 'a/b': string };
    assert.match(input.subject.id, /^hmac-sha256:[A-Za-z0-9_-]{43}$/);
    assert.equal(input.subject.id, (out.result as { owner: string }).owner, 'the same value gets the same pseudonym in any field');
    assert.notEqual(input.accounts[0], input.accounts[1]);
    assert.equal(input.keep, 'k');
    assert.notEqual(input['a/b'], 'x');
    assert.deepEqual(out.pseudonymised, ['/input/subject/id', '/input/accounts/*', '/result/owner', '/input/a~1b']);
    assert.equal((event.input as { subject: { id: string } }).subject.id, 'alice', 'the original event is untouched');
    const other = pseudonymiseEvent(event, fields, Buffer.alloc(32, 8));
    assert.notEqual((other.input as { subject: { id: string } }).subject.id, input.subject.id, 'another tenant key, another pseudonym');
  });

  it('a masker remembering recent pseudonyms gives what the HMAC gives, and starts over when the key changes', async () => {
    let tenantKey: Uint8Array = key;
    const masker = new DecisionMasker({ pseudonyms: { fields: () => fields, key: async () => tenantKey } });
    const logged = async (id: string): Promise<string> => {
      const outcome = await masker.process(decisionEvent(4, { input: { subject: { id } } }));
      assert.equal(outcome.kind, 'log');
      return ((outcome.kind === 'log' ? outcome.event.input : undefined) as { subject: { id: string } }).subject.id;
    };
    for (let round = 0; round < 2; round++) {
      for (const id of ['alice', 'bob', 'alice']) assert.equal(await logged(id), pseudonym(key, id), `${id}, round ${round}`);
    }
    tenantKey = Buffer.alloc(32, 9);
    assert.equal(await logged('alice'), pseudonym(tenantKey, 'alice'), 'a rotated key: pseudonyms under the new key');
  });

  it('skips missing fields and refuses short keys and bad pointers', () => {
    const event = decisionEvent(2, { input: { other: 1 } });
    assert.equal(pseudonymiseEvent(event, fields, key), event);
    assert.throws(() => pseudonymiseEvent(decisionEvent(3, { input: { subject: { id: 'x' } } }), fields, Buffer.alloc(16)), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_MASK_FAILED));
    for (const bad of ['input/x', '/input', '/headers/x', '/input/a~2']) {
      assert.throws(() => parsePseudonymField(bad), (e: unknown) => isPavilionError(e, ErrorCodes.CONFIG_INVALID), bad);
    }
  });

  it('keeps one 32-byte key per tenant in a 0600 file', async () => {
    const dir = await tempDir();
    const store = new PseudonymKeyStore(dir);
    const a = await store.key('bank');
    assert.equal(a.length, 32);
    assert.deepEqual(await new PseudonymKeyStore(dir).key('bank'), a, 'read back after a restart');
    assert.notDeepEqual(await store.key('hospital'), a);
    assert.equal((await stat(join(dir, 'bank.key'))).mode & 0o777, 0o600);
    await assert.rejects(store.key('../etc'), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_MASK_FAILED));
  });
});

describe('DecisionMasker fails closed', () => {
  const event = decisionEvent(1, { input: { secret: 's' }, result: { v: 1 } });

  it('a mask rule that fails to evaluate or is malformed: logged with input and result erased and the reason', async () => {
    for (const [rule, policy] of [
      ['mask', { evaluate: async () => ({ mask: { ok: false, error: new Error('boom') } }) }],
      ['mask', { evaluate: async () => ({ mask: { ok: true, result: ['/nope'] } }) }],
      ['drop', { evaluate: async () => ({ drop: { ok: false, error: new Error('drop broke') }, mask: { ok: true, result: [] } }) }],
      ['drop', { evaluate: async () => Promise.reject(new Error('the tenant has no active policy')) }],
    ] satisfies Array<[string, LogPolicy]>) {
      const outcome = await new DecisionMasker({ policy }).process(event);
      assert.equal(outcome.kind, 'log');
      if (outcome.kind !== 'log') return;
      assert.equal(outcome.event.input, undefined);
      assert.equal(outcome.event.result, undefined);
      assert.deepEqual(outcome.event.erased, ['/input', '/result']);
      assert.equal(outcome.event.error?.code, 'ERR_AUDIT_MASK_FAILED');
      assert.ok(outcome.failure?.startsWith(`system.log.${rule}: `), outcome.failure);
    }
  });

  it('no rules in the tenant policy: the event passes unchanged', async () => {
    const outcome = await new DecisionMasker({ policy: { evaluate: async () => ({}) } }).process(event);
    assert.deepEqual(outcome, { kind: 'log', event });
  });
});

describe('through a running sidecar', () => {
  it("evaluates the tenant's system.log.drop and .mask from its bundle, then pseudonymises", async () => {
    const bundle = await buildFixtureBundle({
      modules: {
        'authz.rego': 'package acme.authz\n\nimport rego.v1\n\ndefault allow := false\n\nallow if input.user.role == "admin"\n',
        'log.rego': [
          'package acme.system.log',
          '',
          'import rego.v1',
          '',
          'mask contains "/input/user/password"',
          '',
          'mask contains {"op": "upsert", "path": "/input/card", "value": "****"} if input.input.card',
          '',
          'drop if input.input.healthcheck == true',
          '',
        ].join('\n'),
      },
      entrypoints: ['acme/authz/allow', 'acme/system/log/mask', 'acme/system/log/drop'],
      roots: ['acme'],
    });
    const keys = await tempDir();
    const app = await startPavilion({
      bundles: { acme: bundle },
      config: { decisionLog: { privacy: { pseudonymiseFields: ['/input/user/id'], pseudonymKeyDirectory: keys } } },
    });
    let events: Array<Record<string, unknown>>;
    const ids: string[] = [];
    try {
      const ask = async (input: unknown): Promise<void> => {
        const r = await post(`${app.url}/v1/data/acme/authz/allow`, { input }, { 'x-pavilion-tenant': 'acme' });
        assert.equal(r.status, 200);
        ids.push(String(r.body['decision_id']));
      };
      await ask({ user: { id: 'alice', role: 'admin', password: 'hunter2' }, card: '4111111111111111' });
      await ask({ healthcheck: true });
      await ask({ user: { id: 'bob', role: 'guest' } });
      await app.pavilion.sink.stop(5000);
      events = await app.decisions();
      assert.equal((app.pavilion.sink.status().details as { dropped_by_policy: number }).dropped_by_policy, 1);
    } finally {
      await app.stop();
    }
    assert.deepEqual(events.map((e) => e['decision_id']), [ids[0], ids[2]], 'the health check was dropped by policy');
    const first = events[0]!;
    const input = first['input'] as { user: { id: string; password?: string; role: string }; card: string };
    assert.equal(input.user.password, undefined);
    assert.equal(input.card, '****');
    assert.match(input.user.id, /^hmac-sha256:/);
    assert.deepEqual(first['erased'], ['/input/user/password']);
    assert.deepEqual(first['masked'], ['/input/card']);
    assert.deepEqual(first['pseudonymised'], ['/input/user/id']);
    assert.equal(first['result'], true);
    assert.ok((await readFile(join(keys, 'acme.key'), 'utf8')).length > 0);
  });

  it('a tenant with only a mask rule: its failure is reported as the mask\'s, and no drop rule is asked for', async () => {
    const bundle = await buildFixtureBundle({
      modules: {
        'authz.rego': 'package solo.authz\n\nimport rego.v1\n\nallow if input.ok\n',
        // two values for one key: a conflict error for inputs with both a and b
        'log.rego': 'package solo.system.log\n\nimport rego.v1\n\nmask := ["/input/a"] if input.input.a\n\nmask := ["/input/b"] if input.input.b\n',
      },
      entrypoints: ['solo/authz/allow', 'solo/system/log/mask'],
      roots: ['solo'],
    });
    const app = await startPavilion({ bundles: { solo: bundle }, config: { http: { maxInputDepth: 8 } } });
    let events: Array<Record<string, unknown>>;
    // the deepest input the API takes: the event holding it is one level deeper, too deep
    // for the rules' round itself (a failure of the whole round, not of one rule)
    let deep: unknown = 'leaf';
    for (let i = 0; i < 7; i++) deep = { n: deep };
    try {
      for (const input of [{ ok: true, a: 1 }, { ok: true, a: 1, b: 2 }, { ok: true, deep }]) {
        const r = await post(`${app.url}/v1/data/solo/authz/allow`, { input }, { 'x-pavilion-tenant': 'solo' });
        assert.equal(r.status, 200, 'a log rule failing never fails the decision');
      }
      await app.pavilion.sink.stop(5000);
      events = await app.decisions();
    } finally {
      await app.stop();
    }
    assert.equal(events.length, 3, 'nothing dropped: the tenant has no drop rule');
    // in request order: the file sink is not waited for, so a quick failure (the depth check)
    // can be written before an earlier event whose rules were still evaluating
    events.sort((x, y) => (x['req_id'] as number) - (y['req_id'] as number));
    assert.deepEqual(events[0]!['erased'], ['/input/a']);
    for (const [failed, why] of [[events[1]!, /system\.log\.mask: .*conflict/i], [events[2]!, /system\.log\.mask: .*deeper/]] as const) {
      assert.equal(failed['input'], undefined);
      assert.equal((failed['error'] as { code: string }).code, 'ERR_AUDIT_MASK_FAILED');
      assert.match((failed['error'] as { message: string }).message, why);
    }
  });

  it('shutdown under a masking backlog: every decision already answered is logged masked, none erased (the engine outlives the sink)', async () => {
    const bundle = await buildFixtureBundle({
      modules: {
        'authz.rego': 'package slow.authz\n\nimport rego.v1\n\nallow if input.ok\n',
        // about 20-50 ms per evaluation: answered decisions queue up for masking
        'log.rego': 'package slow.system.log\n\nimport rego.v1\n\nmask contains "/input/secret" if count([i | some i in numbers.range(1, 150000)]) > 0\n',
      },
      entrypoints: ['slow/authz/allow', 'slow/system/log/mask'],
      roots: ['slow'],
    });
    const app = await startPavilion({ bundles: { slow: bundle }, config: { engine: { evaluationTimeoutMs: 2_000 }, shutdownTimeoutMs: 20_000 } });
    let events: Array<Record<string, unknown>>;
    try {
      const answers = await Promise.all(Array.from({ length: 30 }, (_, i) =>
        post(`${app.url}/v1/data/slow/authz/allow`, { input: { ok: true, secret: `s-${i}` } }, { 'x-pavilion-tenant': 'slow' })));
      assert.ok(answers.every((r) => r.status === 200));
      await app.pavilion.stop(); // the sidecar's own shutdown, at once, with most of the 30 still waiting for their mask rule
      events = await app.decisions();
    } finally {
      await app.stop();
    }
    assert.equal(events.length, 30);
    for (const e of events) {
      assert.equal(e['error'], undefined, JSON.stringify(e['error']));
      assert.deepEqual(e['erased'], ['/input/secret']);
    }
  });
});
