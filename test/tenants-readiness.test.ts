/**
 * Readiness (`/health/ready`, the Helm chart's probe) and tenants without a policy: a tenant
 * the operator configured must be served, so the sidecar is not ready without it; a tenant the
 * bundle source announced (no tenants configured) whose bundle is refused is reported (WARN)
 * but leaves the sidecar ready for the others - one policy team's broken first bundle must not
 * take every sidecar of the fleet out of service.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { buildFixtureBundle } from './harness/fixtures.ts';
import { get, post, startPavilion, type RunningPavilion } from './harness/pavilion-harness.ts';

function policy(tenant: string): Promise<Buffer> {
  return buildFixtureBundle({
    modules: { 'policy.rego': `package ${tenant}.authz\n\nanswer := "ok"\n` },
    entrypoints: [`${tenant}/authz/answer`],
    roots: [tenant],
  });
}

const NOT_A_BUNDLE = Buffer.from('not a gzip archive');

interface Tenants { state: string; message?: string }

async function readiness(app: RunningPavilion): Promise<{ status: number; tenants: Tenants }> {
  const response = await get(`${app.url}/health/ready?verbose`);
  const components = response.body['components'] as Record<string, Tenants>;
  return { status: response.status, tenants: components['tenants'] as Tenants };
}

describe('readiness with a tenant whose bundle is refused', () => {
  const apps: RunningPavilion[] = [];
  after(async () => {
    for (const app of apps) await app.stop();
  });

  test('discovered tenants: the refused one is WARN, the sidecar stays ready and serves the others', async () => {
    const app = await startPavilion({ bundles: { good: await policy('good'), broken: NOT_A_BUNDLE } });
    apps.push(app);
    const { status, tenants } = await readiness(app);
    assert.equal(status, 200);
    assert.equal(tenants.state, 'WARN');
    assert.match(tenants.message ?? '', /without an active policy.*broken/);
    const served = await post(`${app.url}/v1/data/good/authz/answer`, { input: {} }, { 'x-pavilion-tenant': 'good' });
    assert.equal(served.body['result'], 'ok');
    const refused = await post(`${app.url}/v1/data/broken/authz/answer`, { input: {} }, { 'x-pavilion-tenant': 'broken' });
    assert.equal((refused.body['errors'] as Array<{ code: string }>)[0]?.code, 'ERR_TENANT_NOT_READY');
  });

  test('configured tenants: one without a policy makes the sidecar not ready, named in the answer', async () => {
    const app = await startPavilion({
      bundles: { good: await policy('good'), broken: NOT_A_BUNDLE },
      config: { tenants: [{ id: 'good' }, { id: 'broken' }] },
    });
    apps.push(app);
    const { status, tenants } = await readiness(app);
    assert.equal(status, 500);
    assert.equal(tenants.state, 'ERROR');
    assert.match(tenants.message ?? '', /without an active policy: broken$/);
  });

  test('discovered tenants, none with a policy: not ready', async () => {
    const app = await startPavilion({ bundles: { broken: NOT_A_BUNDLE } });
    apps.push(app);
    const { status, tenants } = await readiness(app);
    assert.equal(status, 500);
    assert.equal(tenants.state, 'ERROR');
  });
});
