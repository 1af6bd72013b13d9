/**
 * Pavilion's ext_authz against opa-envoy-plugin's semantics, on a deterministic corpus of
 * 240 CheckRequests sent to the real gRPC server with a real grpc-js client.
 *
 * opa-envoy-plugin could not be installed here (the Go module proxy refuses
 * github.com/open-policy-agent/opa-envoy-plugin with 403 "not available"), so the reference
 * is `opa eval`: every input document Pavilion evaluated (read back from its decision log,
 * so it is the SAME document) is evaluated by OPA's own evaluator on the same policy in one
 * batch, the decision is mapped to a CheckResponse by the contract written in
 * test/extauthz/reference.ts, and compared with what Pavilion answered: status, allowed,
 * denied status, headers, body, headers to remove, query parameter changes, dynamic
 * metadata. Requests upstream cannot parse must get upstream's 400 denied response.
 *
 * The same corpus is then replayed over Envoy's HTTP service mode (`/ext_authz/...`), which
 * must give the same verdicts with the HTTP mapping (200 + headers / status + body).
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { defaultBuildDirectory } from '../sidecar/src/bundles/index.ts';
import { generateCorpus, type CorpusCase } from './extauthz/corpus.ts';
import { createCheckClient, type CheckClient, type Message } from './extauthz/grpc-client.ts';
import { appendActions, expectedResponse, normalizeResponse, opaEvalBatch } from './extauthz/reference.ts';
import { startPavilion, type RunningPavilion } from './harness/pavilion-harness.ts';

const SEED = 20_251_128;
const COUNT = 240;

interface Answer {
  readonly item: CorpusCase;
  readonly response: Message;
}

async function inParallel<T, R>(items: readonly T[], width: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T);
    }
  }));
  return out;
}

async function eventsFor(app: RunningPavilion, count: number): Promise<Array<Record<string, unknown>>> {
  for (let i = 0; i < 100; i++) {
    const events = await app.decisions();
    if (events.length >= count) return events;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return app.decisions();
}

describe('ext_authz: the corpus against opa eval (opa-envoy-plugin contract)', () => {
  let app: RunningPavilion;
  let client: CheckClient;
  let answers: Answer[];
  let events: Map<string, Record<string, unknown>>;
  let reference: Record<string, Record<string, unknown>>;

  before(async () => {
    const archive = await readFile(join(defaultBuildDirectory(), 'envoy_demo', 'bundle.tar.gz'));
    app = await startPavilion({
      bundles: { envoy_demo: archive, envoy_demo_bool: archive },
      config: {
        tenants: [{ id: 'envoy_demo' }, { id: 'envoy_demo_bool', namespace: 'envoy_demo' }],
        extAuthz: {
          grpc: { port: 0 },
          tenantFrom: { header: 'x-pavilion-tenant' },
          timeoutMs: 2000,
          tenants: { envoy_demo_bool: { path: 'envoy_demo/envoy/authz/allowed', timeoutMs: 2000 } },
        },
      },
    });
    const { port } = app.pavilion.extAuthz?.grpcAddress() ?? { port: 0 };
    client = createCheckClient(`127.0.0.1:${port}`);
    const corpus = generateCorpus(SEED, COUNT);
    answers = await inParallel(corpus, 8, async (item) => ({ item, response: await client.check(item.request) }));
    const logged = await eventsFor(app, COUNT);
    events = new Map(logged.map((e) => [String(e['decision_id']), e]));

    const inputs: Record<string, Record<string, unknown>> = { allow: {}, allowed: {} };
    for (const { item, response } of answers) {
      if (item.invalid) continue;
      const id = String(normalizeResponse(response).decisionId);
      const event = events.get(id);
      assert.ok(event !== undefined, `no decision event for ${item.name}`);
      (inputs[item.tenant === 'envoy_demo' ? 'allow' : 'allowed'] as Record<string, unknown>)[id] = event['input'];
    }
    reference = await opaEvalBatch('envoy_demo', {
      allow: { rule: 'envoy_demo/envoy/authz/allow', inputs: inputs['allow'] as Record<string, unknown> },
      allowed: { rule: 'envoy_demo/envoy/authz/allowed', inputs: inputs['allowed'] as Record<string, unknown> },
    });
  });

  after(async () => {
    client?.close();
    await app?.stop();
  });

  test('the corpus is large and varied: over 200 checks, allows and denials, both decision shapes', () => {
    assert.ok(answers.length >= 200);
    const allows = answers.filter((a) => ((a.response['status'] as { code?: number } | undefined)?.code ?? 0) === 0).length;
    const denials = answers.length - allows;
    assert.ok(allows >= 30 && denials >= 30, `allows ${allows}, denials ${denials}`);
    assert.ok(answers.filter((a) => a.item.tenant === 'envoy_demo_bool').length >= 15);
    assert.ok(answers.filter((a) => a.item.invalid).length >= 5);
  });

  test('every check Pavilion decided equals the opa eval decision mapped by the contract', () => {
    let compared = 0;
    for (const { item, response } of answers) {
      if (item.invalid) continue;
      const { normalized, decisionId } = normalizeResponse(response);
      const rule = item.tenant === 'envoy_demo' ? 'allow' : 'allowed';
      const decision = reference[rule]?.[String(decisionId)];
      assert.notEqual(decision, undefined, `opa eval has no decision for ${item.name}`);
      assert.deepEqual(normalized, expectedResponse(decision), item.name);
      compared++;
    }
    assert.ok(compared >= 200, `compared ${compared}`);
  });

  test('header options leave append and append_action unset (APPEND_IF_EXISTS_OR_ADD), as upstream', () => {
    for (const { item, response } of answers) {
      for (const action of appendActions(response)) assert.deepEqual(action, [undefined, 0], item.name);
    }
  });

  test('requests upstream cannot parse get its answer: PERMISSION_DENIED, a 400 denied response, the parse error as body', () => {
    for (const { item, response } of answers.filter((a) => a.item.invalid)) {
      const { normalized, decisionId } = normalizeResponse(response);
      assert.equal(normalized.code, 7, item.name);
      assert.equal(normalized.denied?.status, 400, item.name);
      assert.ok((normalized.denied?.body ?? '').length > 0, item.name);
      assert.equal(normalized.dynamicMetadata['error_code'], 'ERR_EXTAUTHZ_REQUEST_INVALID', item.name);
      assert.deepEqual((events.get(String(decisionId))?.['error'] as { code?: string } | undefined)?.code, 'ERR_EXTAUTHZ_REQUEST_INVALID');
    }
  });

  test('decision events: one per check, decision_id as in dynamic metadata, Envoy x-request-id, decision path', () => {
    for (const { item, response } of answers) {
      const { decisionId } = normalizeResponse(response);
      assert.match(String(decisionId), /^[0-9a-f-]{36}$/);
      const event = events.get(String(decisionId));
      assert.ok(event !== undefined, item.name);
      const headers = (((item.request['attributes'] as Message)['request'] as Message)['http'] as Message)['headers'] as Record<string, string>;
      assert.equal(event['request_id'], headers['x-request-id']);
      assert.equal(event['tenant'], item.tenant);
      assert.equal(event['path'], item.tenant === 'envoy_demo' ? 'envoy_demo/envoy/authz/allow' : 'envoy_demo/envoy/authz/allowed');
      assert.equal((event['ext_authz'] as { transport: string }).transport, 'grpc');
      if (!item.invalid) {
        const input = event['input'] as Record<string, unknown>;
        assert.deepEqual(input['version'], { ext_authz: 'v3', encoding: 'protojson' });
        assert.equal(((input['attributes'] as Message)['request'] as Message)['http'] !== undefined, true);
      }
    }
  });

  test('metrics: pavilion_decisions_total and pavilion_extauthz_checks_total count the corpus', async () => {
    const text = await (await fetch(`${app.url}/metrics`)).text();
    const sum = (pattern: RegExp): number => text.split('\n').filter((l) => pattern.test(l)).reduce((n, l) => n + Number(l.split(' ').at(-1)), 0);
    assert.equal(sum(/^pavilion_extauthz_checks_total\{transport="grpc"/), COUNT);
    assert.ok(sum(/^pavilion_extauthz_checks_total\{.*result="ERR_EXTAUTHZ_REQUEST_INVALID"/) >= 5);
    assert.equal(sum(/^pavilion_decisions_total\{tenant="envoy_demo(_bool)?"/), COUNT);
    assert.ok(sum(/^pavilion_decisions_total\{tenant="envoy_demo",path="envoy_demo\/envoy\/authz\/allow",outcome="allow"\}/) > 0);
  });

  test("the HTTP service mode gives the same verdicts with Envoy's HTTP mapping", async () => {
    const replayable = answers.filter(({ item }) => {
      const http = ((item.request['attributes'] as Message)['request'] as Message)['http'] as Message;
      const headers = http['headers'] as Record<string, string>;
      return !item.invalid && headers['content-length'] === undefined && headers['x-envoy-auth-partial-body'] === undefined && http['method'] !== 'HEAD';
    });
    assert.ok(replayable.length >= 100, `replayable ${replayable.length}`);
    const { port } = new URL(app.url);
    let checked = 0;
    await inParallel(replayable, 8, async ({ item, response }) => {
      const http = ((item.request['attributes'] as Message)['request'] as Message)['http'] as Message;
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(http['headers'] as Record<string, string>)) if (!k.startsWith(':')) headers[k] = v;
      headers['host'] = String(http['host']);
      const body = typeof http['body'] === 'string' ? Buffer.from(http['body']) : (http['rawBody'] as Buffer | undefined);
      // node's client frames a DELETE/GET body only when told its length
      if (body !== undefined) headers['content-length'] = String(body.length);
      const answer = await new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }>((resolve, reject) => {
        const req = httpRequest({ host: '127.0.0.1', port, method: String(http['method']), path: `/ext_authz${String(http['path'])}`, headers }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
        });
        req.on('error', reject);
        req.end(body);
      });
      const { normalized } = normalizeResponse(response);
      if (normalized.code === 0) {
        assert.equal(answer.status, 200, item.name);
        for (const [key, value] of [...(normalized.ok?.headers ?? []), ...(normalized.ok?.responseHeadersToAdd ?? [])]) {
          assert.ok(String(answer.headers[key]).split(', ').includes(value), `${item.name}: ${key}`);
        }
        const remove = normalized.ok?.headersToRemove ?? [];
        assert.equal(answer.headers['x-envoy-auth-headers-to-remove'], remove.length === 0 ? undefined : remove.join(','), item.name);
      } else {
        assert.equal(answer.status, normalized.denied?.status ?? 403, item.name);
        assert.equal(answer.body, normalized.denied?.body ?? '', item.name);
        for (const [key, value] of normalized.denied?.headers ?? []) assert.equal(answer.headers[key], value, `${item.name}: ${key}`);
      }
      checked++;
    });
    assert.equal(checked, replayable.length);
  });
});
