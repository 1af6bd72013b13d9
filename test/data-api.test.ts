/**
 * The OPA-compatible Data API over real HTTP, on the sample tenants' bundles as
 * `npm run bundles:build` builds them: correct decisions for every shipped example, OPA's
 * response shapes, tenant isolation, and a typed OPA-style error for every bad input.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { listDefinitions } from '../sidecar/src/bundles/index.ts';
import { REPO_ROOT } from '../sidecar/src/lib/tools.ts';
import { buildFixtureBundle } from './harness/fixtures.ts';
import { get, post, startPavilion, type RunningPavilion } from './harness/pavilion-harness.ts';

interface Example {
  readonly name: string;
  readonly path: string;
  readonly input: unknown;
  readonly expect: unknown;
}

async function examples(tenant: string): Promise<Example[]> {
  return JSON.parse(await readFile(join(REPO_ROOT, 'bundles', tenant, 'examples.json'), 'utf8')) as Example[];
}

function errorCode(body: Record<string, unknown>): string | undefined {
  return (body['errors'] as Array<{ code: string }> | undefined)?.[0]?.code;
}

describe('Data API on the sample tenants', () => {
  let app: RunningPavilion;
  let tenants: string[];

  before(async () => {
    tenants = await listDefinitions();
    app = await startPavilion();
  });
  after(() => app.stop());

  test('ships at least three sample tenants and all are active', async () => {
    assert.ok(tenants.length >= 3, `tenants: ${tenants.join(', ')}`);
    const health = await get(`${app.url}/health`);
    assert.equal(health.status, 200, JSON.stringify(health.body));
    assert.deepEqual(health.body, {});
  });

  test('every shipped example gets its expected decision, through the header and the path forms', async () => {
    let checked = 0;
    for (const tenant of tenants) {
      for (const example of await examples(tenant)) {
        const viaHeader = await post(`${app.url}/v1/data/${example.path}`, { input: example.input }, { 'x-pavilion-tenant': tenant });
        assert.equal(viaHeader.status, 200, `${tenant}/${example.name}: ${JSON.stringify(viaHeader.body)}`);
        assert.deepEqual(viaHeader.body['result'], example.expect, `${tenant}/${example.name}`);
        assert.match(String(viaHeader.body['decision_id']), /^[0-9a-f-]{36}$/);
        const viaPath = await post(`${app.url}/v1/tenants/${tenant}/data/${example.path}`, { input: example.input });
        assert.deepEqual(viaPath.body['result'], example.expect, `${tenant}/${example.name} (path form)`);
        checked++;
      }
    }
    assert.ok(checked >= 30, `checked ${checked} examples`);
  });

  test('an undefined decision answers 200 without a result key', async () => {
    const app2 = await startPavilion({
      bundles: {
        acme: await buildFixtureBundle({
          modules: { 'a.rego': 'package acme\n\nallow if input.user == "alice"\n' },
          entrypoints: ['acme/allow'],
          roots: ['acme'],
        }),
      },
    });
    try {
      const response = await post(`${app2.url}/v1/data/acme/allow`, { input: { user: 'bob' } }, { 'x-pavilion-tenant': 'acme' });
      assert.equal(response.status, 200);
      assert.equal('result' in response.body, false);
      assert.deepEqual(Object.keys(response.body), ['decision_id']);
    } finally {
      await app2.stop();
    }
  });

  test('?metrics and ?provenance add OPA\'s fields; the revision is in a response header', async () => {
    const [tenant] = tenants as [string];
    const [example] = (await examples(tenant)) as [Example];
    const response = await post(`${app.url}/v1/data/${example.path}?metrics&provenance`, { input: example.input }, { 'x-pavilion-tenant': tenant });
    const metrics = response.body['metrics'] as Record<string, number>;
    assert.equal(typeof metrics['timer_server_handler_ns'], 'number');
    const provenance = response.body['provenance'] as { bundles: Record<string, { revision: string }> };
    const revision = provenance.bundles[tenant]?.revision;
    assert.match(String(revision), /^[0-9a-f]{16}$/);
    assert.equal(response.headers.get('x-pavilion-bundle-revision'), revision);
  });

  test('a POST without input gets OPA\'s api_usage_warning', async () => {
    const [tenant] = tenants as [string];
    const [example] = (await examples(tenant)) as [Example];
    const response = await post(`${app.url}/v1/data/${example.path}`, {}, { 'x-pavilion-tenant': tenant });
    assert.equal(response.status, 200);
    assert.equal((response.body['warning'] as { code: string }).code, 'api_usage_warning');
  });

  describe('bad input gets an OPA-style error body with a stable code', () => {
    const cases: Array<{ name: string; send: () => Promise<{ status: number; body: Record<string, unknown> }>; status: number; opa: string; code: string }> = [
      {
        name: 'malformed JSON -> 400 ERR_REQUEST_MALFORMED_JSON',
        send: () => post(`${app.url}/v1/data/bank/authz/allow`, '{"input": {', { 'x-pavilion-tenant': 'bank' }),
        status: 400, opa: 'invalid_parameter', code: 'ERR_REQUEST_MALFORMED_JSON',
      },
      {
        name: 'a body that is not an object -> 400 ERR_REQUEST_INVALID',
        send: () => post(`${app.url}/v1/data/bank/authz/allow`, '[1,2]', { 'x-pavilion-tenant': 'bank' }),
        status: 400, opa: 'invalid_parameter', code: 'ERR_REQUEST_INVALID',
      },
      {
        name: 'a YAML content type -> 415 ERR_REQUEST_UNSUPPORTED_MEDIA_TYPE (other types are read as JSON, as OPA does)',
        send: () => post(`${app.url}/v1/data/bank/authz/allow`, 'input: 1', { 'x-pavilion-tenant': 'bank', 'content-type': 'application/yaml' }),
        status: 415, opa: 'invalid_parameter', code: 'ERR_REQUEST_UNSUPPORTED_MEDIA_TYPE',
      },
      {
        name: 'a body over the limit -> 413 ERR_REQUEST_TOO_LARGE',
        send: () => post(`${app.url}/v1/data/bank/authz/allow`, { input: { blob: 'x'.repeat(2 * 1024 * 1024) } }, { 'x-pavilion-tenant': 'bank' }),
        status: 413, opa: 'invalid_parameter', code: 'ERR_REQUEST_TOO_LARGE',
      },
      {
        name: 'deeply nested input -> 400 ERR_REQUEST_TOO_DEEP',
        send: () => post(`${app.url}/v1/data/bank/authz/allow`, `{"input": ${'['.repeat(5000)}${']'.repeat(5000)}}`, { 'x-pavilion-tenant': 'bank' }),
        status: 400, opa: 'invalid_parameter', code: 'ERR_REQUEST_TOO_DEEP',
      },
      {
        name: 'no tenant -> 400 ERR_TENANT_REQUIRED',
        send: () => post(`${app.url}/v1/data/bank/authz/allow`, { input: {} }),
        status: 400, opa: 'invalid_parameter', code: 'ERR_TENANT_REQUIRED',
      },
      {
        name: 'unknown tenant -> 404 ERR_TENANT_UNKNOWN',
        send: () => post(`${app.url}/v1/data/bank/authz/allow`, { input: {} }, { 'x-pavilion-tenant': 'globex' }),
        status: 404, opa: 'resource_not_found', code: 'ERR_TENANT_UNKNOWN',
      },
      {
        name: 'a tenant id that is not an id (traversal attempt) -> 404 ERR_TENANT_UNKNOWN',
        send: () => post(`${app.url}/v1/data/bank/authz/allow`, { input: {} }, { 'x-pavilion-tenant': '../bank' }),
        status: 404, opa: 'resource_not_found', code: 'ERR_TENANT_UNKNOWN',
      },
      {
        name: 'unknown path -> 404 ERR_ENTRYPOINT_UNKNOWN',
        send: () => post(`${app.url}/v1/data/bank/authz/nope`, { input: {} }, { 'x-pavilion-tenant': 'bank' }),
        status: 404, opa: 'resource_not_found', code: 'ERR_ENTRYPOINT_UNKNOWN',
      },
      {
        name: "another tenant's path under this tenant -> 404 ERR_ENTRYPOINT_UNKNOWN (isolation)",
        send: () => post(`${app.url}/v1/data/hospital/records/allow`, { input: {} }, { 'x-pavilion-tenant': 'bank' }),
        status: 404, opa: 'resource_not_found', code: 'ERR_ENTRYPOINT_UNKNOWN',
      },
      {
        name: 'header and path naming different tenants -> 400 ERR_REQUEST_INVALID (isolation)',
        send: () => post(`${app.url}/v1/tenants/hospital/data/hospital/records/allow`, { input: {} }, { 'x-pavilion-tenant': 'bank' }),
        status: 400, opa: 'invalid_parameter', code: 'ERR_REQUEST_INVALID',
      },
      {
        name: "another tenant's status page under this tenant's header -> 400 ERR_REQUEST_INVALID (isolation)",
        send: () => get(`${app.url}/v1/tenants/hospital`, { 'x-pavilion-tenant': 'bank' }),
        status: 400, opa: 'invalid_parameter', code: 'ERR_REQUEST_INVALID',
      },
      {
        name: 'wrong method -> 405 ERR_METHOD_NOT_ALLOWED',
        send: async () => {
          const response = await fetch(`${app.url}/v1/data/bank/authz/allow`, { method: 'DELETE', headers: { 'x-pavilion-tenant': 'bank' } });
          return { status: response.status, body: (await response.json()) as Record<string, unknown> };
        },
        status: 405, opa: 'invalid_operation', code: 'ERR_METHOD_NOT_ALLOWED',
      },
      {
        name: 'unknown route -> 404 ERR_ROUTE_NOT_FOUND',
        send: () => get(`${app.url}/v2/data/x`),
        status: 404, opa: 'resource_not_found', code: 'ERR_ROUTE_NOT_FOUND',
      },
      {
        name: 'bad percent-encoding in the path -> 400 ERR_REQUEST_INVALID',
        send: () => post(`${app.url}/v1/data/bank/%E0%A4%A/allow`, { input: {} }, { 'x-pavilion-tenant': 'bank' }),
        status: 400, opa: 'invalid_parameter', code: 'ERR_REQUEST_INVALID',
      },
    ];
    for (const c of cases) {
      test(c.name, async () => {
        const response = await c.send();
        assert.equal(response.status, c.status, JSON.stringify(response.body));
        assert.equal(response.body['code'], c.opa);
        assert.equal(errorCode(response.body), c.code);
        assert.equal(typeof response.body['message'], 'string');
      });
    }

    test('a body that never ends within the request timeout does not hang the server', async () => {
      const fast = await startPavilion({ config: { http: { requestTimeoutMs: 300 } } });
      try {
        const status = await new Promise<number | string>((resolve) => {
          const req = request(`${fast.url}/v1/data/bank/authz/allow`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', 'content-length': '1000', 'x-pavilion-tenant': 'bank' },
          }, (res) => resolve(res.statusCode ?? 0));
          req.on('error', (e) => resolve(e.message));
          req.write('{"input": ');
        });
        assert.ok(status === 408 || typeof status === 'string', `got ${status}`);
        const health = await get(`${fast.url}/health`);
        assert.equal(health.status, 200);
      } finally {
        await fast.stop();
      }
    });
  });

  test('a policy error answers 500 internal_error with ERR_EVAL_CONFLICT and is logged', async () => {
    const app2 = await startPavilion({
      bundles: {
        acme: await buildFixtureBundle({
          modules: { 'a.rego': 'package acme\n\nrole := input.a if input.a\nrole := input.b if input.b\n' },
          entrypoints: ['acme/role'],
          roots: ['acme'],
        }),
      },
    });
    try {
      const response = await post(`${app2.url}/v1/data/acme/role`, { input: { a: 'x', b: 'y' } }, { 'x-pavilion-tenant': 'acme' });
      assert.equal(response.status, 500);
      assert.equal(response.body['code'], 'internal_error');
      assert.equal(errorCode(response.body), 'ERR_EVAL_CONFLICT');
      await app2.pavilion.sink.stop(1000);
      const events = await app2.decisions();
      assert.equal(events.length, 1);
      assert.equal((events[0]?.['error'] as { code: string }).code, 'ERR_EVAL_CONFLICT');
    } finally {
      await app2.stop();
    }
  });

  test('decisions are written as OPA EventV1 lines with tenant, revision, input, result and metrics', async () => {
    const [tenant] = tenants as [string];
    const [example] = (await examples(tenant)) as [Example];
    const response = await post(`${app.url}/v1/data/${example.path}`, { input: example.input }, { 'x-pavilion-tenant': tenant });
    const id = response.body['decision_id'];
    await app.pavilion.sink.stop(1000); // flush
    const event = (await app.decisions()).find((e) => e['decision_id'] === id);
    assert.ok(event, 'the decision is in the log');
    assert.equal(event['tenant'], tenant);
    assert.equal(event['path'], example.path);
    assert.deepEqual(event['input'], example.input);
    assert.deepEqual(event['result'], example.expect);
    assert.match(String(event['timestamp']), /^\d{4}-\d\d-\d\dT/);
    assert.deepEqual(Object.keys(event['bundles'] as object), [tenant]);
    assert.equal(typeof (event['metrics'] as Record<string, number>)['timer_server_handler_ns'], 'number');
    assert.equal((event['labels'] as Record<string, string>)['id'], app.config.labels.id);
  });

  test('/metrics exposes decisions by tenant, path and outcome, latency and cache lookups', async () => {
    const text = (await get(`${app.url}/metrics`)).body['text'] as string;
    assert.match(text, /pavilion_decisions_total\{tenant="[a-z]+",path="[^"]+",outcome="(allow|deny|defined|undefined)"\} \d+/);
    assert.match(text, /pavilion_decisions_total\{tenant="bank",path="\(unknown\)",outcome="ERR_ENTRYPOINT_UNKNOWN"\} \d+/);
    assert.match(text, /pavilion_evaluation_duration_seconds_bucket\{le="0.001",tenant="[a-z]+"\} \d+/);
    assert.match(text, /pavilion_decision_cache_lookups_total\{tenant="bank",result="hit"\} \d+/);
    assert.match(text, /pavilion_process_resident_memory_bytes \d+/);
  });

  test('/health?verbose lists each component with its state', async () => {
    const health = await get(`${app.url}/health?verbose`);
    const components = health.body['components'] as Record<string, { state: string }>;
    assert.equal(components['engine']?.state, 'OK');
    assert.equal(components['tenants']?.state, 'OK');
    assert.equal(components['http']?.state, 'OK');
  });
});

describe('health reports real readiness', () => {
  test('a tenant whose bundle is refused makes /health?bundles fail with its code, while others serve', async () => {
    const good = await buildFixtureBundle({ modules: { 'a.rego': 'package acme\n\nallow := true\n' }, entrypoints: ['acme/allow'], roots: ['acme'] });
    const app = await startPavilion({ bundles: { acme: good, globex: good } }); // globex's bundle claims acme's roots
    try {
      const health = await get(`${app.url}/health?bundles`);
      assert.equal(health.status, 500);
      assert.match(String(health.body['error']), /globex/);
      const tenants = await get(`${app.url}/v1/tenants/globex`);
      assert.equal((tenants.body['result'] as { lastError: { code: string } }).lastError.code, 'ERR_BUNDLE_ROOTS_FOREIGN');
      const ok = await post(`${app.url}/v1/data/acme/allow`, { input: {} }, { 'x-pavilion-tenant': 'acme' });
      assert.equal(ok.body['result'], true);
      const refused = await post(`${app.url}/v1/data/acme/allow`, { input: {} }, { 'x-pavilion-tenant': 'globex' });
      assert.equal(refused.status, 503);
      assert.equal(errorCode(refused.body), 'ERR_TENANT_NOT_READY');
    } finally {
      await app.stop();
    }
  });
});
