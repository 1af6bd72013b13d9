/**
 * Shadow samples pass the tenant's decision-log privacy: the results a sample shows through
 * `GET /v1/tenants/{t}` and the status report are masked (system.log.mask of both revisions),
 * pseudonymised with the decision log's keys, and erased when system.log.drop drops the
 * decision or masking fails; the counters stay exact and the sample bound holds while
 * maskings are in flight. Without any decision-log privacy configured, samples are as before.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { canonicalJson } from '../sidecar/src/lib/canonical-json.ts';
import { sha256Hex } from '../sidecar/src/lib/sha256.ts';
import { tempDir } from './audit/fixtures.ts';
import { buildFixtureBundle } from './harness/fixtures.ts';
import { get, post, signForTest, startPavilion, type RunningPavilion } from './harness/pavilion-harness.ts';
import { until } from './harness/wait.ts';

interface Sample {
  readonly path: string;
  readonly active: unknown;
  readonly shadow: unknown;
  readonly input_sha256?: string;
  readonly erased?: string[];
  readonly masked?: string[];
  readonly pseudonymised?: string[];
  readonly values_erased?: { reason: string; message: string };
}

interface Shadow {
  readonly revision: string;
  readonly evaluations: number;
  readonly differences: number;
  readonly errors: number;
  readonly samples: Sample[];
  readonly samples_pending?: number;
}

/** The decision names the customer in a reason: personal data in a result. */
function authz(tier: string, extra = ''): string {
  return [
    'package acme.authz',
    '',
    'import rego.v1',
    '',
    `decision := {"allow": input.customer == "ok", "reason": sprintf("customer %s is not allowed", [input.customer]), "customer": input.customer, "tier": "${tier}"${extra}}`,
    '',
  ].join('\n');
}

const LOG_RULES = [
  'package acme.system.log',
  '',
  'import rego.v1',
  '',
  'mask contains "/result/reason"',
  '',
  'mask contains {"op": "upsert", "path": "/result/allow", "value": "hidden"} if input.input.hide_allow',
  '',
  // a rule set OPA refuses: masking fails
  'mask contains "/elsewhere" if input.input.broken',
  '',
  'drop if input.input.healthcheck == true',
  '',
].join('\n');

async function bundle(tier: string, options: { extra?: string; log?: string } = {}): Promise<Buffer> {
  return buildFixtureBundle({
    modules: { 'authz.rego': authz(tier, options.extra), 'log.rego': options.log ?? LOG_RULES },
    entrypoints: ['acme/authz/decision', 'acme/system/log/mask', 'acme/system/log/drop'],
    roots: ['acme'],
    revision: tier,
  });
}

async function decide(app: RunningPavilion, input: Record<string, unknown>): Promise<unknown> {
  const response = await post(`${app.url}/v1/data/acme/authz/decision`, { input }, { 'x-pavilion-tenant': 'acme' });
  assert.equal(response.status, 200);
  return response.body['result'];
}

async function served(app: RunningPavilion): Promise<{ shadow: Shadow; text: string }> {
  const response = await get(`${app.url}/v1/tenants/acme`);
  assert.equal(response.status, 200);
  return { shadow: (response.body['result'] as { shadow: Shadow }).shadow, text: JSON.stringify(response.body) };
}

/** Wait until `count` samples are masked and none is pending. */
async function samples(app: RunningPavilion, count: number): Promise<{ shadow: Shadow; text: string }> {
  let last: { shadow: Shadow; text: string } | undefined;
  await until(`${count} samples`, async () => {
    last = await served(app);
    return last.shadow.samples.length >= count && last.shadow.samples_pending === undefined;
  });
  return last!;
}

async function stage(app: RunningPavilion, archive: Buffer): Promise<void> {
  await app.pavilion.tenants.stageShadow('acme', await signForTest('acme', archive, join(app.dir, 'keys')));
}

describe('shadow samples under the decision log privacy', () => {
  let app: RunningPavilion;

  before(async () => {
    app = await startPavilion({
      bundles: { acme: await bundle('basic') },
      config: { decisionLog: { privacy: { pseudonymiseFields: ['/result/customer', '/input/customer'], pseudonymKeyDirectory: await tempDir() } } },
    });
    // the candidate adds a field with personal data, and its own mask rule for it
    await stage(app, await bundle('gold', {
      extra: ', "note": sprintf("call %s back", [input.customer])',
      log: `${LOG_RULES}\nmask contains "/result/note"\n`,
    }));
  });

  after(async () => {
    await app?.stop();
  });

  it('masks, erases and pseudonymises both results as the decision log does, through the tenant API and the status report', async () => {
    await decide(app, { customer: 'Jane Roe' });
    const { shadow, text } = await samples(app, 1);
    assert.equal(shadow.differences, 1);
    const sample = shadow.samples[0]!;
    assert.equal(sample.path, 'acme/authz/decision');
    const active = sample.active as Record<string, unknown>;
    const candidate = sample.shadow as Record<string, unknown>;
    assert.deepEqual(Object.keys(active).sort(), ['allow', 'customer', 'tier']);
    assert.equal(active['tier'], 'basic');
    assert.deepEqual(Object.keys(candidate).sort(), ['allow', 'customer', 'tier'], "the candidate's own mask rule hides its new field");
    assert.equal(candidate['tier'], 'gold');
    assert.match(String(active['customer']), /^hmac-sha256:/);
    assert.equal(candidate['customer'], active['customer']);
    assert.deepEqual(sample.erased, ['/active/reason', '/shadow/reason', '/shadow/note']);
    assert.equal(sample.masked, undefined);
    assert.deepEqual(sample.pseudonymised, ['/active/customer', '/shadow/customer']);
    assert.equal(text.includes('Jane'), false, 'the tenant API never shows the raw value');
    const status = JSON.stringify((await get(`${app.url}/v1/status`)).body);
    assert.ok(status.includes(String(active['customer'])), 'the status report carries the sample');
    assert.equal(status.includes('Jane'), false, 'nor does the status report');

    // the decision log's own event: the same pseudonym under the same key
    await until('decision logged', async () => (await app.decisions()).length >= 1);
    const logged = (await app.decisions())[0]!;
    assert.equal((logged['result'] as Record<string, unknown>)['customer'], active['customer']);
    assert.equal(JSON.stringify(logged['result']).includes('Jane'), false);
    // the input hash is of the input as the log holds it (the receipt's input_sha256), never the raw input's
    assert.equal(sample.input_sha256, sha256Hex(canonicalJson(logged['input'], 64)));
    assert.notEqual(sample.input_sha256, sha256Hex(canonicalJson({ customer: 'Jane Roe' }, 64)));
  });

  it('records upserts as masked, per side', async () => {
    await decide(app, { customer: 'Ann Other', hide_allow: true });
    const { shadow, text } = await samples(app, 2);
    const sample = shadow.samples[1]!;
    assert.equal((sample.active as Record<string, unknown>)['allow'], 'hidden');
    assert.deepEqual(sample.masked, ['/active/allow', '/shadow/allow']);
    assert.equal(text.includes('Ann Other'), false);
  });

  it('a decision the tenant drops from its log, and one whose masking fails, keep counts, with values and the input hash left out', async () => {
    await decide(app, { customer: 'Hal Check', healthcheck: true });
    await decide(app, { customer: 'Bea Broken', broken: true });
    const { shadow, text } = await samples(app, 4);
    assert.equal(shadow.evaluations, 4);
    assert.equal(shadow.differences, 4);
    const [dropped, failed] = [shadow.samples[2]!, shadow.samples[3]!];
    for (const sample of [dropped, failed]) {
      assert.equal(sample.active, null);
      assert.equal(sample.shadow, null);
      assert.deepEqual(sample.erased, ['/active', '/shadow']);
      assert.equal(sample.input_sha256, undefined, 'a hash of an input the log never holds would let a guess be confirmed');
    }
    assert.equal(dropped.values_erased?.reason, 'dropped_by_policy');
    assert.equal(failed.values_erased?.reason, 'mask_failed');
    assert.match(String(failed.values_erased?.message), /system\.log\.mask: .*prefix not allowed/);
    for (const name of ['Hal', 'Bea']) assert.equal(text.includes(name), false, name);
  });

  it('counts every comparison at once and keeps at most 20 samples however many are being masked', async () => {
    await stage(app, await bundle('platinum'));
    assert.equal((await served(app)).shadow.revision, 'platinum');
    await Promise.all(Array.from({ length: 30 }, (_, i) => decide(app, { customer: `Client ${i}` })));
    await until('30 comparisons', async () => (await served(app)).shadow.evaluations === 30);
    const counted = (await served(app)).shadow;
    assert.equal(counted.differences, 30);
    assert.ok(counted.samples.length + (counted.samples_pending ?? 0) === 20, JSON.stringify(counted));
    const { shadow, text } = await samples(app, 20);
    assert.equal(shadow.samples.length, 20);
    assert.equal(text.includes('Client'), false);
  });
});

describe('shadow samples without any decision log privacy configured', () => {
  it('show the results as they are, at once', async () => {
    const app = await startPavilion({
      bundles: { acme: await bundle('basic') },
      config: { decisionLog: { privacy: { maskPolicy: false } } },
    });
    try {
      await stage(app, await bundle('gold'));
      await decide(app, { customer: 'Jane Roe' });
      await until('a comparison', () => (app.pavilion.tenants.tenant('acme')?.shadow?.evaluations ?? 0) >= 1);
      const sample = app.pavilion.tenants.tenant('acme')?.shadow?.samples[0] as Sample | undefined;
      assert.equal((sample?.active as Record<string, unknown>)['reason'], 'customer Jane Roe is not allowed');
      assert.equal((sample?.shadow as Record<string, unknown>)['tier'], 'gold');
      assert.equal(sample?.erased, undefined);
    } finally {
      await app.stop();
    }
  });
});
