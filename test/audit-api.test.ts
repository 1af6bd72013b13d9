/**
 * The audit log behind the sidecar's transports: a decision is answered only once its event is
 * durable (Data API and ext_authz), a refusal is an error answer and never a logged decision,
 * the HTTP proof and checkpoint endpoints (tenant by tenant), and receipts on request that
 * later prove inclusion offline.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Keyring, decodeReceiptHeader, hashLeaf, verifyConsistencyProof, verifyDecisionProof, verifyLogFile, type AuditLog, type DecisionSink, type TransportReceiptV1 } from '../sidecar/src/audit/index.ts';
import { RpcCode, correctionDecisionId } from '../sidecar/src/extauthz/index.ts';
import { canonicalJson } from '../sidecar/src/lib/canonical-json.ts';
import { ErrorCodes, PavilionError } from '../sidecar/src/lib/errors.ts';
import { tempDir } from './audit/fixtures.ts';
import { createCheckClient, structToJson, type CheckClient, type Message } from './extauthz/grpc-client.ts';
import { until } from './harness/wait.ts';
import { get, post, startPavilion, type JsonResponse, type RunningPavilion } from './harness/pavilion-harness.ts';

const TENANT = { 'x-pavilion-tenant': 'bank' };
const walOf = (auditDir: string, tenant: string): string => join(auditDir, 'tenants', tenant, 'audit.wal');
const CLI = join(import.meta.dirname, '..', 'sidecar', 'src', 'cli', 'main.ts');
const pavilionCode = (response: JsonResponse): unknown => (response.body['errors'] as Array<{ code: string }> | undefined)?.[0]?.code;

/** An audit log that fills after two events of 20-30 KB, checkpointed only every 1,000 events. */
const smallAuditLog = (directory: string, onFull: Record<string, unknown>): Record<string, unknown> => ({
  directory, maxDiskBytes: 64 * 1024, maxEventBytes: 30 * 1024, checkpointEveryEvents: 1000, checkpointIntervalMs: 600_000, ...onFull,
});

describe('a decision is answered only once durable; a refusal is an error answer', () => {
  let app: RunningPavilion;
  let auditDir: string;

  before(async () => {
    auditDir = await tempDir();
    app = await startPavilion({
      config: {
        decisionLog: {
          sink: 'audit',
          audit: smallAuditLog(auditDir, { onFull: 'refuse' }),
        },
        extAuthz: { grpc: { port: 0 }, tenantFrom: { header: 'x-pavilion-tenant' }, tenants: { envoy_demo: { failureStatus: 503 } } },
      },
    });
  });

  after(async () => {
    await app?.stop();
  });

  test('Data API: the decision is in the log file when the response arrives', async () => {
    for (let i = 0; i < 3; i++) {
      const response = await post(`${app.url}/v1/data/bank/authz/allow`, { input: { subject: { id: `durable-${i}` } } }, TENANT);
      assert.equal(response.status, 200);
      // read the file right away: no waiting, no stop
      const wal = await readFile(walOf(auditDir, 'bank'));
      assert.ok(wal.includes(String(response.body['decision_id'])), `decision ${i} is not in the log yet`);
      assert.ok(wal.includes(`durable-${i}`));
    }
    // three whole leaves, not yet under a signed checkpoint (one comes every 1,000 events here):
    // the verifier reads them all and says nothing signs them yet
    const keys = Keyring.load(join(auditDir, 'keys'));
    await assert.rejects(verifyLogFile(walOf(auditDir, 'bank'), keys), (error: unknown) =>
      error instanceof PavilionError && error.code === ErrorCodes.AUDIT_NOT_CHECKPOINTED && error.details?.['treeSize'] === 3);
  });

  test('Data API: a full log (onFull refuse) answers 503 ERR_AUDIT_LOG_FULL and the decision is not logged', async () => {
    const padding = 'x'.repeat(20 * 1024);
    let refused: JsonResponse | undefined;
    let marker = '';
    for (let i = 0; i < 10 && refused === undefined; i++) {
      marker = `refused-marker-${i}`;
      const response = await post(`${app.url}/v1/data/bank/authz/allow`, { input: { subject: { id: marker }, padding } }, TENANT);
      if (response.status !== 200) refused = response;
    }
    assert.ok(refused !== undefined, 'the log never filled');
    assert.equal(refused.status, 503);
    assert.equal(refused.body['code'], 'internal_error');
    assert.equal(pavilionCode(refused), ErrorCodes.AUDIT_LOG_FULL);
    assert.equal(refused.body['result'], undefined, 'no decision in a refused answer');
    assert.ok(!(await readFile(walOf(auditDir, 'bank'))).includes(marker), 'the refused decision is not in the log');
    assert.equal(app.pavilion.sink.status().state, 'WARN', 'the refusal shows in the sink status');
    const metrics = await (await fetch(`${app.url}/metrics`)).text();
    assert.match(metrics, /pavilion_decisions_total\{[^}]*tenant="bank"[^}]*outcome="ERR_AUDIT_LOG_FULL"[^}]*\} 1/, 'counted as refused, not as the decision');
    // the audit log's own metrics: the refusal by code, and the live epoch against its budget
    assert.match(metrics, /^pavilion_audit_events_refused_total\{tenant="bank",code="ERR_AUDIT_LOG_FULL"\} 1$/m);
    const gauge = (name: string): number => Number(new RegExp(`^${name}\\{tenant="bank"\\} (\\S+)$`, 'm').exec(metrics)?.[1]);
    assert.equal(gauge('pavilion_audit_log_max_bytes'), 64 * 1024);
    const bytes = gauge('pavilion_audit_log_bytes');
    assert.ok(bytes > 64 * 1024 - 30 * 1024 && bytes <= 64 * 1024, `the live epoch holds ${bytes} bytes, within one event of its budget`);
    assert.equal(gauge('pavilion_audit_log_leaves'), (app.pavilion.auditLog?.openLogs().get('bank'))?.size);
  });

  test('ext_authz: a refusal is a well-formed denial with the configured failure status and the code', async () => {
    const service = app.pavilion.extAuthz?.service;
    assert.ok(service !== undefined);
    const check = (i: number): ReturnType<typeof service.check> => service.check(
      { attributes: { request: { http: { method: 'GET', path: '/api/v1/products', headers: { 'x-pavilion-tenant': 'envoy_demo', 'x-pad': `${i}${'y'.repeat(20 * 1024)}` } } } } },
      { transport: 'grpc', requestedBy: '127.0.0.1:1' },
    );
    const first = await check(0);
    assert.equal(first.code, undefined, 'decided while the log has room');
    assert.ok((await readFile(walOf(auditDir, 'envoy_demo'))).includes(first.decisionId), 'logged before the answer');
    let refused: Awaited<ReturnType<typeof check>> | undefined;
    for (let i = 1; i < 10 && refused === undefined; i++) {
      const result = await check(i);
      if (result.code !== undefined) refused = result;
    }
    assert.ok(refused !== undefined, 'the log never filled');
    assert.equal(refused.code, ErrorCodes.AUDIT_LOG_FULL);
    assert.equal(refused.response.status.code, RpcCode.PERMISSION_DENIED);
    assert.equal(refused.response.deniedResponse?.status.code, 503);
    assert.equal(refused.response.dynamicMetadata?.['error_code'], ErrorCodes.AUDIT_LOG_FULL);
    assert.ok(!(await readFile(walOf(auditDir, 'envoy_demo'))).includes(refused.decisionId));
    const metrics = await (await fetch(`${app.url}/metrics`)).text();
    assert.match(metrics, /pavilion_extauthz_checks_total\{[^}]*result="ERR_AUDIT_LOG_FULL"[^}]*\} 1/);
  });
});

describe("one deadline covers a check's wait for the audit log", () => {
  let app: RunningPavilion;
  let auditDir: string;
  const TIMEOUT_MS = 150;

  before(async () => {
    auditDir = await tempDir();
    app = await startPavilion({
      config: {
        decisionLog: {
          sink: 'audit',
          // a full log holds appends for 5 s (onFull block) - far past the check's deadline
          audit: smallAuditLog(auditDir, { onFull: 'block', blockTimeoutMs: 5_000 }),
        },
        extAuthz: { grpc: { port: 0 }, tenantFrom: { header: 'x-pavilion-tenant' }, tenants: { envoy_demo: { failureStatus: 503, timeoutMs: TIMEOUT_MS } } },
      },
    });
  });

  after(async () => {
    await app?.stop();
  });

  test('ext_authz: a log that blocks past the deadline is answered at the deadline with the failure status, ERR_EXTAUTHZ_DEADLINE_EXCEEDED', async () => {
    const service = app.pavilion.extAuthz?.service;
    assert.ok(service !== undefined);
    let late: { code: string | undefined; status: number | undefined; elapsedMs: number } | undefined;
    for (let i = 0; i < 10 && late === undefined; i++) {
      const started = performance.now();
      const result = await service.check(
        { attributes: { request: { http: { method: 'GET', path: '/api/v1/products', headers: { 'x-pavilion-tenant': 'envoy_demo', 'x-pad': `${i}${'z'.repeat(20 * 1024)}` } } } } },
        { transport: 'grpc', requestedBy: '127.0.0.1:1' },
      );
      if (result.code !== undefined) late = { code: result.code, status: result.response.deniedResponse?.status.code, elapsedMs: performance.now() - started };
    }
    assert.ok(late !== undefined, 'the log never filled');
    assert.equal(late.code, ErrorCodes.EXTAUTHZ_DEADLINE_EXCEEDED);
    assert.equal(late.status, 503);
    assert.ok(late.elapsedMs < 2_000, `answered after ${Math.round(late.elapsedMs)} ms, not when the log gave up (5 s)`);
    const metrics = await (await fetch(`${app.url}/metrics`)).text();
    assert.match(metrics, /pavilion_extauthz_checks_total\{[^}]*result="ERR_EXTAUTHZ_DEADLINE_EXCEEDED"[^}]*\} 1/);
  });
});

describe('proof and checkpoint endpoints, receipts', () => {
  let app: RunningPavilion;
  let auditDir: string;

  before(async () => {
    auditDir = await tempDir();
    app = await startPavilion({
      config: { decisionLog: { sink: 'audit', audit: { directory: auditDir, checkpointEveryEvents: 2, checkpointIntervalMs: 600_000 } } },
    });
  });

  after(async () => {
    await app?.stop();
  });

  const decide = async (tenant: string, id: string, query = ''): Promise<JsonResponse> => {
    const path = tenant === 'hospital' ? 'hospital/records/allow' : `${tenant}/authz/allow`;
    const response = await post(`${app.url}/v1/tenants/${tenant}/data/${path}${query}`, { input: { subject: { id } } });
    assert.equal(response.status, 200, JSON.stringify(response.body));
    return response;
  };
  /** The proof endpoint, retried while the background checkpoint is being signed. */
  const proofOf = async (tenant: string, decisionId: string): Promise<JsonResponse> => {
    let response = await get(`${app.url}/v1/tenants/${tenant}/audit/decisions/${decisionId}/proof`);
    for (let i = 0; i < 50 && pavilionCode(response) === ErrorCodes.AUDIT_NOT_CHECKPOINTED; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      response = await get(`${app.url}/v1/tenants/${tenant}/audit/decisions/${decisionId}/proof`);
    }
    return response;
  };

  test('a decision not yet covered by a signed checkpoint: 404 ERR_AUDIT_NOT_CHECKPOINTED (the endpoint never signs on demand)', async () => {
    const first = await decide('hospital', 'not-yet');
    const response = await get(`${app.url}/v1/tenants/hospital/audit/decisions/${String(first.body['decision_id'])}/proof`);
    assert.equal(response.status, 404);
    assert.equal(pavilionCode(response), ErrorCodes.AUDIT_NOT_CHECKPOINTED);
    const checkpoint = await get(`${app.url}/v1/tenants/hospital/audit/checkpoint`);
    assert.equal(checkpoint.status, 404);
    assert.equal(pavilionCode(checkpoint), ErrorCodes.AUDIT_NOT_CHECKPOINTED);
  });

  test('the proof endpoint returns a bundle that verifies offline with the published key; the checkpoint endpoint the latest', async () => {
    const ids = [String((await decide('bank', 'p1')).body['decision_id']), String((await decide('bank', 'p2')).body['decision_id'])];
    const keys = Keyring.load(join(auditDir, 'keys'));
    for (const id of ids) {
      const response = await proofOf('bank', id);
      assert.equal(response.status, 200, JSON.stringify(response.body));
      const proof = response.body['result'] as Record<string, unknown>;
      // `anchor` once the checkpoint is anchored (in the background; the default file anchor).
      assert.deepEqual(Object.keys(proof).filter((k) => k !== 'anchor').sort(), ['checkpoint', 'event', 'inclusion_path', 'leaf_index', 'version']);
      if (proof['anchor'] !== undefined) assert.equal((proof['anchor'] as Record<string, unknown>)['kind'], 'file');
      assert.match(String((proof['checkpoint'] as Record<string, unknown>)['key_id']), /.+/);
      const verified = verifyDecisionProof(proof, keys, { decisionId: id });
      assert.equal(verified.tenant, 'bank');
      assert.equal(verified.origin.endsWith('/bank'), true);
    }
    // the endpoint's answer, saved as is, is what `pavilion audit verify --decision --proof` takes
    const saved = join(auditDir, 'proof.json');
    await writeFile(saved, JSON.stringify((await proofOf('bank', ids[0] as string)).body));
    const cli = spawnSync(process.execPath, ['--import', 'tsx', CLI, 'audit', 'verify', '--decision', ids[0] as string, '--proof', saved, '--keys', join(auditDir, 'keys')], { encoding: 'utf8' });
    assert.equal(cli.status, 0, cli.stderr);
    assert.equal((JSON.parse(cli.stdout) as { ok: boolean; tenant: string }).tenant, 'bank');
    const checkpoint = await get(`${app.url}/v1/tenants/bank/audit/checkpoint`);
    assert.equal(checkpoint.status, 200);
    const signed = keys.verifyCheckpoint(checkpoint.body['result'] as never);
    assert.ok(signed.tree_size >= 2);
  });

  test('unknown decisions, unknown tenants and bad methods get their codes', async () => {
    const unknown = await get(`${app.url}/v1/tenants/bank/audit/decisions/no-such-decision/proof`);
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body['code'], 'resource_not_found');
    assert.equal(pavilionCode(unknown), ErrorCodes.AUDIT_DECISION_UNKNOWN);
    const tenant = await get(`${app.url}/v1/tenants/nobody/audit/checkpoint`);
    assert.equal(tenant.status, 404);
    assert.equal(pavilionCode(tenant), ErrorCodes.TENANT_UNKNOWN);
    const never = await get(`${app.url}/v1/tenants/agency/audit/decisions/x/proof`);
    assert.equal(pavilionCode(never), ErrorCodes.AUDIT_DECISION_UNKNOWN, 'a tenant with no log yet');
    const method = await post(`${app.url}/v1/tenants/bank/audit/checkpoint`, {});
    assert.equal(method.status, 405);
    const extra = await get(`${app.url}/v1/tenants/bank/audit/decisions/a/b/proof`);
    assert.equal(extra.status, 404);
    assert.equal(pavilionCode(extra), ErrorCodes.ROUTE_NOT_FOUND);
    const mismatch = await get(`${app.url}/v1/tenants/bank/audit/checkpoint`, { 'x-pavilion-tenant': 'hospital' });
    assert.equal(mismatch.status, 400);
    assert.equal(pavilionCode(mismatch), ErrorCodes.REQUEST_INVALID);
  });

  test("tenant isolation: tenant A's decision is never returned under tenant B", async () => {
    const id = String((await decide('bank', 'isolated')).body['decision_id']);
    await decide('bank', 'filler'); // checkpoints every 2 events: one more makes sure one covers it
    await decide('hospital', 'other');
    await decide('hospital', 'other-2');
    assert.equal((await proofOf('bank', id)).status, 200);
    const elsewhere = await proofOf('hospital', id);
    assert.equal(elsewhere.status, 404);
    assert.equal(pavilionCode(elsewhere), ErrorCodes.AUDIT_DECISION_UNKNOWN);
    assert.ok(!JSON.stringify(elsewhere.body).includes('isolated'));
    const viaHeader = await get(`${app.url}/v1/tenants/hospital/audit/decisions/${id}/proof`, { 'x-pavilion-tenant': 'hospital' });
    assert.equal(pavilionCode(viaHeader), ErrorCodes.AUDIT_DECISION_UNKNOWN);
  });

  test('a receipt (?receipt or x-pavilion-receipt: 1) later proves inclusion through the proof endpoint and offline', async () => {
    const plain = await decide('bank', 'no-receipt');
    assert.equal(plain.body['receipt'], undefined, 'no receipt unless asked');
    const byQuery = await decide('bank', 'receipt-q', '?receipt');
    const byHeader = await post(`${app.url}/v1/data/bank/authz/allow`, { input: { subject: { id: 'receipt-h' } } }, { ...TENANT, 'x-pavilion-receipt': '1' });
    const byQueryOne = await decide('bank', 'receipt-q1', '?receipt=1'); // the header's spelling works in the query too
    await decide('bank', 'filler'); // checkpoints every 2 events: one more makes sure one covers them
    const keys = Keyring.load(join(auditDir, 'keys'));
    for (const response of [byQuery, byHeader, byQueryOne]) {
      const receipt = response.body['receipt'] as Record<string, unknown>;
      assert.equal(receipt['decision_id'], response.body['decision_id']);
      assert.equal(receipt['tenant'], 'bank');
      assert.equal(typeof receipt['leaf_index'], 'number');
      assert.equal(receipt['result_sha256'], createHash('sha256').update(canonicalJson(response.body['result'])).digest('hex'));
      assert.match(String(receipt['input_sha256']), /^[0-9a-f]{64}$/);
      // later: the proof endpoint, then offline verification, tie back to the receipt
      const proof = (await proofOf('bank', String(receipt['decision_id']))).body['result'] as { event: string; leaf_index: number };
      assert.equal(proof.leaf_index, receipt['leaf_index']);
      assert.equal(hashLeaf(Buffer.from(proof.event, 'utf8')).toString('hex'), receipt['leaf_hash']);
      const event = JSON.parse(proof.event) as { input: unknown; result: unknown };
      assert.equal(createHash('sha256').update(canonicalJson(event.input)).digest('hex'), receipt['input_sha256']);
      const verified = verifyDecisionProof(proof, keys, { decisionId: String(receipt['decision_id']), origin: String(receipt['origin']) });
      assert.equal(verified.leafIndex, receipt['leaf_index']);
    }
  });
});

describe('the consistency endpoint: GET /v1/tenants/{tenant}/audit/consistency?from=N[&to=M]', () => {
  let app: RunningPavilion;
  let auditDir: string;
  let bankLog: AuditLog;
  /** Checkpoint bodies as the checkpoint endpoint served them, at sizes 3 and 5. */
  let atThree: Record<string, unknown>;
  let atFive: Record<string, unknown>;
  const consistency = (query: string, headers: Record<string, string> = {}): Promise<JsonResponse> => get(`${app.url}/v1/tenants/bank/audit/consistency${query}`, headers);

  before(async () => {
    auditDir = await tempDir();
    // no automatic checkpoints: the test signs them, so the sizes are exact
    app = await startPavilion({
      config: { decisionLog: { sink: 'audit', audit: { directory: auditDir, checkpointEveryEvents: 100_000, checkpointIntervalMs: 600_000 } } },
    });
    const decide = async (id: string): Promise<void> => {
      assert.equal((await post(`${app.url}/v1/data/bank/authz/allow`, { input: { subject: { id } } }, TENANT)).status, 200);
    };
    for (const id of ['c1', 'c2', 'c3']) await decide(id);
    const log = app.pavilion.auditLog?.openLogs().get('bank');
    assert.ok(log !== undefined);
    bankLog = log;
    assert.equal((await bankLog.checkpoint()).tree_size, 3);
    atThree = (await get(`${app.url}/v1/tenants/bank/audit/checkpoint`)).body['result'] as Record<string, unknown>;
    for (const id of ['c4', 'c5']) await decide(id);
    assert.equal((await bankLog.checkpoint()).tree_size, 5);
    atFive = (await get(`${app.url}/v1/tenants/bank/audit/checkpoint`)).body['result'] as Record<string, unknown>;
    await decide('c6'); // leaf 6: in the log, not signed
    assert.equal(bankLog.size, 6);
  });

  after(async () => {
    await app?.stop();
  });

  test('from a held checkpoint to the latest: the proof verifies offline and joins the two signed roots', async () => {
    const response = await consistency('?from=3');
    assert.equal(response.status, 200, JSON.stringify(response.body));
    const proof = response.body['result'] as Record<string, unknown>;
    assert.deepEqual(Object.keys(proof).sort(), ['consistency_path', 'new_checkpoint', 'old_checkpoint', 'version']);
    assert.deepEqual(proof['old_checkpoint'], atThree, 'the old checkpoint is the one the caller held');
    assert.deepEqual(proof['new_checkpoint'], atFive, 'to defaults to the latest checkpoint');
    const keys = Keyring.load(join(auditDir, 'keys'));
    const verified = verifyConsistencyProof(proof, keys);
    assert.deepEqual([verified.oldSize, verified.newSize], [3, 5]);
    assert.equal(verified.origin.endsWith('/bank'), true);
    // the answer, saved as is, is what `pavilion audit verify-consistency --proof` takes
    const saved = join(auditDir, 'consistency.json');
    await writeFile(saved, JSON.stringify(response.body));
    const cli = spawnSync(process.execPath, ['--import', 'tsx', CLI, 'audit', 'verify-consistency', '--proof', saved, '--keys', join(auditDir, 'keys')], { encoding: 'utf8' });
    assert.equal(cli.status, 0, cli.stderr);
    assert.equal((JSON.parse(cli.stdout) as { newSize: number }).newSize, 5);
  });

  test('an explicit to, and from = to (an empty path), verify too; an altered path does not', async () => {
    const keys = Keyring.load(join(auditDir, 'keys'));
    const explicit = await consistency('?from=3&to=5');
    assert.equal(explicit.status, 200);
    const proof = explicit.body['result'] as { consistency_path: string[] };
    assert.equal(verifyConsistencyProof(proof, keys).newSize, 5);
    const same = await consistency('?to=3&from=3');
    assert.equal(same.status, 200);
    assert.deepEqual((same.body['result'] as { consistency_path: string[] }).consistency_path, []);
    assert.equal(verifyConsistencyProof(same.body['result'], keys).oldSize, 3);
    const first = proof.consistency_path[0] as string;
    const altered = { ...proof, consistency_path: [`${first[0] === '0' ? '1' : '0'}${first.slice(1)}`, ...proof.consistency_path.slice(1)] };
    assert.throws(() => verifyConsistencyProof(altered, keys), (error: unknown) => error instanceof PavilionError && error.code === ErrorCodes.AUDIT_PROOF_INVALID);
  });

  test('bad sizes get 400 ERR_AUDIT_RANGE_INVALID: not integers, below 1, missing from, repeated, from > to, past the end of the log', async () => {
    for (const query of ['', '?to=5', '?from=abc', '?from=1.5', '?from=-1', '?from=0', '?from=1e1', '?from=', '?from=3&to=x', '?from=3&from=5', '?from=5&to=3', '?from=3&to=7', '?from=3&to=99999999999']) {
      const response = await consistency(query);
      assert.equal(response.status, 400, query);
      assert.equal(response.body['code'], 'invalid_parameter', query);
      assert.equal(pavilionCode(response), ErrorCodes.AUDIT_RANGE_INVALID, query);
    }
  });

  test('a size in the log but not yet signed is 404 ERR_AUDIT_NOT_CHECKPOINTED; a size no checkpoint has is 404 ERR_AUDIT_CHECKPOINT_UNKNOWN', async () => {
    const unsigned = await consistency('?from=3&to=6');
    assert.equal(unsigned.status, 404);
    assert.equal(pavilionCode(unsigned), ErrorCodes.AUDIT_NOT_CHECKPOINTED);
    for (const query of ['?from=4', '?from=1&to=5', '?from=2&to=3']) {
      const response = await consistency(query);
      assert.equal(response.status, 404, query);
      assert.equal(response.body['code'], 'resource_not_found', query);
      assert.equal(pavilionCode(response), ErrorCodes.AUDIT_CHECKPOINT_UNKNOWN, query);
    }
  });

  test('tenant rules as for proofs: own log only, known tenant, matching header, GET only', async () => {
    const noLog = await get(`${app.url}/v1/tenants/hospital/audit/consistency?from=3`);
    assert.equal(noLog.status, 404);
    assert.equal(pavilionCode(noLog), ErrorCodes.AUDIT_NOT_CHECKPOINTED, "bank's checkpoints are not hospital's");
    const unknown = await get(`${app.url}/v1/tenants/nobody/audit/consistency?from=3`);
    assert.equal(pavilionCode(unknown), ErrorCodes.TENANT_UNKNOWN);
    const mismatch = await consistency('?from=3', { 'x-pavilion-tenant': 'hospital' });
    assert.equal(mismatch.status, 400);
    assert.equal(pavilionCode(mismatch), ErrorCodes.REQUEST_INVALID);
    const method = await post(`${app.url}/v1/tenants/bank/audit/consistency?from=3`, {});
    assert.equal(method.status, 405);
  });
});

describe('receipts on ext_authz answers (x-pavilion-receipt: 1, gRPC and HTTP service mode)', () => {
  let app: RunningPavilion;
  let auditDir: string;
  let client: CheckClient;
  const RECEIPT = 'x-pavilion-receipt';
  /** A check of envoy_demo: GET /public/index.html is allowed, GET /api/v1/products without a token denied (401). */
  const checkRequest = (path: string, headers: Record<string, string>, tenant = 'envoy_demo'): Message => ({
    attributes: { request: { http: { method: 'GET', path, host: 'shop.envoy-demo.example', headers: { 'x-pavilion-tenant': tenant, ...headers } } } },
  });
  type Header = { header: { key: string; value: string }; appendAction?: number };
  const receiptHeaders = (list: unknown): Header[] => ((list ?? []) as Header[]).filter((h) => h.header.key === RECEIPT);
  /** The response with every trace of the receipt taken out (and the decision id, which differs per check). */
  const withoutReceipt = (response: Message): unknown => JSON.parse(JSON.stringify(response, (key, value: unknown) => {
    if (Array.isArray(value)) return value.filter((h) => (h as Header | undefined)?.header?.key !== RECEIPT);
    return key === 'receipt' || key === 'decision_id' ? undefined : value;
  }));
  const metadataOf = (response: Message): Record<string, unknown> => structToJson(response['dynamicMetadata']);
  /** Sign a checkpoint now, then the proof endpoint's answer for the receipt's decision must verify and match it. */
  const assertProves = async (receipt: TransportReceiptV1): Promise<void> => {
    await app.pavilion.auditLog?.openLogs().get(receipt.tenant)?.checkpoint();
    const response = await get(`${app.url}/v1/tenants/${receipt.tenant}/audit/decisions/${receipt.decision_id}/proof`);
    assert.equal(response.status, 200, JSON.stringify(response.body));
    const proof = response.body['result'] as { event: string; leaf_index: number };
    assert.equal(proof.leaf_index, receipt.leaf_index);
    assert.equal(hashLeaf(Buffer.from(proof.event, 'utf8')).toString('hex'), receipt.leaf_hash);
    const event = JSON.parse(proof.event) as { input: unknown; result?: unknown };
    assert.equal(createHash('sha256').update(canonicalJson(event.input)).digest('hex'), receipt.input_sha256);
    const verified = verifyDecisionProof(proof, Keyring.load(join(auditDir, 'keys')), { decisionId: receipt.decision_id, origin: receipt.origin });
    assert.equal(verified.leafIndex, receipt.leaf_index);
  };

  before(async () => {
    auditDir = await tempDir();
    app = await startPavilion({
      config: {
        decisionLog: { sink: 'audit', audit: { directory: auditDir, checkpointEveryEvents: 100_000, checkpointIntervalMs: 600_000 } },
        extAuthz: {
          grpc: { port: 0 },
          http: { enabled: true },
          tenantFrom: { header: 'x-pavilion-tenant' },
          // bank's boolean decision path, with a receipt on every check
          tenants: { bank: { path: 'bank/authz/allow', receipts: 'always' } },
        },
      },
    });
    const { port } = app.pavilion.extAuthz?.grpcAddress() ?? { port: 0 };
    client = createCheckClient(`127.0.0.1:${port}`);
  });

  after(async () => {
    client?.close();
    await app?.stop();
  });

  test('gRPC allow: the receipt goes upstream and to the client (overwriting the request header), and into dynamic_metadata; it proves inclusion', async () => {
    const response = await client.check(checkRequest('/public/index.html', { [RECEIPT]: '1' }));
    assert.equal((response['status'] as { code?: number } | undefined)?.code ?? 0, RpcCode.OK);
    const ok = response['okResponse'] as { headers?: unknown; responseHeadersToAdd?: unknown };
    const [upstream, ...more] = receiptHeaders(ok.headers);
    assert.ok(upstream !== undefined && more.length === 0, 'one receipt header upstream');
    assert.equal(upstream.appendAction, 2, 'OVERWRITE_IF_EXISTS_OR_ADD: replaces the client\'s "1"');
    assert.deepEqual(receiptHeaders(ok.responseHeadersToAdd).map((h) => h.header.value), [upstream.header.value], 'and the client gets it');
    const receipt = decodeReceiptHeader(upstream.header.value);
    const metadata = metadataOf(response);
    assert.deepEqual(metadata['receipt'], receipt, 'dynamic_metadata.receipt is the same receipt');
    assert.equal(metadata['decision_id'], receipt.decision_id);
    assert.equal(receipt.tenant, 'envoy_demo');
    await assertProves(receipt);
  });

  test('gRPC deny: the receipt is a header of the denied response; status, body and the other headers are unchanged', async () => {
    const plain = await client.check(checkRequest('/api/v1/products', {}));
    const asked = await client.check(checkRequest('/api/v1/products', { [RECEIPT]: '1' }));
    const denied = asked['deniedResponse'] as { status?: { code?: number }; headers?: unknown };
    assert.equal((asked['status'] as { code?: number }).code, RpcCode.PERMISSION_DENIED);
    assert.equal(denied.status?.code, 401);
    const [header] = receiptHeaders(denied.headers);
    assert.ok(header !== undefined);
    const receipt = decodeReceiptHeader(header.header.value);
    assert.deepEqual(metadataOf(asked)['receipt'], receipt);
    // the request header itself is in the logged input, so only the answers are compared
    assert.deepEqual(withoutReceipt(asked), withoutReceipt(plain), 'the decision is the same with and without a receipt');
    await assertProves(receipt);
  });

  test('without the header nothing changes: no receipt header, no dynamic_metadata.receipt', async () => {
    for (const path of ['/public/index.html', '/api/v1/products']) {
      const response = await client.check(checkRequest(path, { [RECEIPT]: 'yes' }));
      assert.ok(!JSON.stringify(response).includes(RECEIPT), path);
      assert.equal(metadataOf(response)['receipt'], undefined, path);
    }
  });

  test('HTTP service mode: the receipt is a header of the 200 (allow) or the denial, once; it proves inclusion', async () => {
    const allowed = await fetch(`${app.url}/ext_authz/public/index.html`, { headers: { 'x-pavilion-tenant': 'envoy_demo', [RECEIPT]: '1' } });
    assert.equal(allowed.status, 200);
    const value = allowed.headers.get(RECEIPT);
    assert.ok(value !== null && !value.includes(','), 'one value');
    await assertProves(decodeReceiptHeader(value));
    const denied = await fetch(`${app.url}/ext_authz/api/v1/products`, { headers: { 'x-pavilion-tenant': 'envoy_demo', [RECEIPT]: '1' } });
    assert.equal(denied.status, 401);
    assert.match(await denied.text(), /authentication required/);
    const deniedValue = denied.headers.get(RECEIPT);
    assert.ok(deniedValue !== null);
    await assertProves(decodeReceiptHeader(deniedValue));
    const plain = await fetch(`${app.url}/ext_authz/public/index.html`, { headers: { 'x-pavilion-tenant': 'envoy_demo' } });
    assert.equal(plain.status, 200);
    assert.equal(plain.headers.get(RECEIPT), null);
  });

  test("receipts: 'always' attaches one without the header; a boolean denial keeps Envoy's 403 with no body", async () => {
    const response = await client.check(checkRequest('/anything', {}, 'bank'));
    assert.equal((response['status'] as { code?: number }).code, RpcCode.PERMISSION_DENIED);
    const denied = response['deniedResponse'] as { status?: { code?: number }; body?: string; headers?: unknown };
    assert.equal(denied.status?.code, 403);
    assert.equal(denied.body ?? '', '');
    const [header] = receiptHeaders(denied.headers);
    assert.ok(header !== undefined);
    const receipt = decodeReceiptHeader(header.header.value);
    assert.equal(receipt.tenant, 'bank');
    await assertProves(receipt);
  });

  test('a receipt header that is not one is refused with ERR_AUDIT_PROOF_INVALID', () => {
    const good = { decision_id: 'd', tenant: 't', origin: 'o/t', leaf_index: 0, leaf_hash: 'a'.repeat(64) };
    assert.equal(decodeReceiptHeader(Buffer.from(JSON.stringify(good)).toString('base64url')).leaf_index, 0);
    for (const bad of ['', 'not base64!', Buffer.from('[]').toString('base64url'), Buffer.from(JSON.stringify({ ...good, leaf_index: -1 })).toString('base64url'), Buffer.from(JSON.stringify({ ...good, leaf_hash: 'xyz' })).toString('base64url')]) {
      assert.throws(() => decodeReceiptHeader(bad), (error: unknown) => error instanceof PavilionError && error.code === ErrorCodes.AUDIT_PROOF_INVALID, bad);
    }
  });
});

describe('receipts and proofs need the audit log', () => {
  test('with the NDJSON file sink: ?receipt and the proof endpoint answer 404 ERR_AUDIT_LOG_DISABLED', async () => {
    const app = await startPavilion();
    try {
      const receipt = await post(`${app.url}/v1/data/bank/authz/allow?receipt`, { input: {} }, TENANT);
      assert.equal(receipt.status, 404);
      assert.equal(pavilionCode(receipt), ErrorCodes.AUDIT_LOG_DISABLED);
      const proof = await get(`${app.url}/v1/tenants/bank/audit/decisions/x/proof`);
      assert.equal(pavilionCode(proof), ErrorCodes.AUDIT_LOG_DISABLED);
      const consistency = await get(`${app.url}/v1/tenants/bank/audit/consistency?from=1`);
      assert.equal(pavilionCode(consistency), ErrorCodes.AUDIT_LOG_DISABLED);
      const plain = await post(`${app.url}/v1/data/bank/authz/allow`, { input: {} }, TENANT);
      assert.equal(plain.status, 200, 'the file sink answers as before');
    } finally {
      await app.stop();
    }
  });
});

describe('DecisionSink.durable decides whether an answer waits for the write', () => {
  /** A sink whose writes settle `delayMs` later (rejecting with `refusal` if given), recording when. */
  const slowSink = (durable: boolean, delayMs: number, refusal?: PavilionError): DecisionSink & { settled: number } => {
    const sink = {
      name: 'decision_log',
      durable,
      settled: 0,
      start: async (): Promise<void> => undefined,
      stop: async (): Promise<void> => undefined,
      status: () => ({ state: 'OK' as const }),
      write: (): Promise<undefined> => new Promise((resolve, reject) => setTimeout(() => {
        sink.settled++;
        if (refusal === undefined) resolve(undefined);
        else reject(refusal);
      }, delayMs)),
    };
    return sink;
  };

  test('a sink that is not durable (the NDJSON file, none) is not waited for', async () => {
    const sink = slowSink(false, 500);
    const app = await startPavilion({ sink });
    try {
      const response = await post(`${app.url}/v1/data/bank/authz/allow`, { input: {} }, TENANT);
      assert.equal(response.status, 200);
      assert.equal(sink.settled, 0, 'answered before the write settled');
    } finally {
      await new Promise((resolve) => setTimeout(resolve, 600));
      await app.stop();
    }
  });

  test('a durable sink is waited for, and its refusal is the answer', async () => {
    const sink = slowSink(true, 50);
    const app = await startPavilion({ sink });
    try {
      const response = await post(`${app.url}/v1/data/bank/authz/allow`, { input: {} }, TENANT);
      assert.equal(response.status, 200);
      assert.equal(sink.settled, 1, 'answered only after the write settled');
    } finally {
      await app.stop();
    }
    const refusing = slowSink(true, 10, new PavilionError(ErrorCodes.AUDIT_LOG_IO, 'the disk went away'));
    const failing = await startPavilion({ sink: refusing });
    try {
      const response = await post(`${failing.url}/v1/data/bank/authz/allow`, { input: {} }, TENANT);
      assert.equal(response.status, 503);
      assert.equal(pavilionCode(response), ErrorCodes.AUDIT_LOG_IO);
    } finally {
      await failing.stop();
    }
  });
});

describe('ext_authz: an event that becomes durable after the deadline is followed by the answer Envoy got', () => {
  /** A durable sink that keeps every event and settles each write `delayMs` later. */
  const recordingSink = (delayMs: number): DecisionSink & { events: Array<Record<string, unknown>> } => {
    const events: Array<Record<string, unknown>> = [];
    return {
      name: 'decision_log',
      durable: true,
      events,
      start: async (): Promise<void> => undefined,
      stop: async (): Promise<void> => undefined,
      status: () => ({ state: 'OK' as const }),
      write: (event): Promise<undefined> => {
        events.push(event as unknown as Record<string, unknown>);
        return new Promise((resolve) => setTimeout(() => resolve(undefined), delayMs));
      },
    };
  };
  const TIMEOUT_MS = 100;
  const allowedCheck = (tenantHeader: string) => ({
    // envoy_demo allows GET /public/... without a token
    attributes: { request: { http: { method: 'GET', path: '/public/index.html', headers: { 'x-pavilion-tenant': tenantHeader } } } },
  });

  test('policy allowed, the log took longer than the deadline: Envoy got 503 and a second event (<id>.response, ext_authz.corrects) records it', async () => {
    const sink = recordingSink(400);
    const app = await startPavilion({
      sink,
      config: { extAuthz: { grpc: { port: 0 }, tenantFrom: { header: 'x-pavilion-tenant' }, tenants: { envoy_demo: { failureStatus: 503, timeoutMs: TIMEOUT_MS } } } },
    });
    try {
      const service = app.pavilion.extAuthz?.service;
      assert.ok(service !== undefined);
      const result = await service.check(allowedCheck('envoy_demo'), { transport: 'grpc', requestedBy: '127.0.0.1:1' });
      assert.equal(result.code, ErrorCodes.EXTAUTHZ_DEADLINE_EXCEEDED);
      assert.equal(result.response.deniedResponse?.status.code, 503);
      // the masking stage in front of the sink hands events on asynchronously
      await until('both events reach the sink', () => sink.events.length >= 2, 5_000);
      assert.equal(sink.events.length, 2, 'the policy answer and the answer Envoy got');
      const [original, correction] = sink.events as [Record<string, any>, Record<string, any>];
      assert.equal(original['decision_id'], result.decisionId);
      assert.equal(original['ext_authz'].allowed, true, "the first event keeps the policy's answer");
      assert.equal(correction['decision_id'], correctionDecisionId(result.decisionId));
      assert.deepEqual(correction['ext_authz'], { transport: 'grpc', allowed: false, dry_run: false, http_status: 503, corrects: result.decisionId });
      assert.equal(correction['error'].code, ErrorCodes.EXTAUTHZ_DEADLINE_EXCEEDED);
      assert.equal(correction['input'], undefined, 'the input stays in the first event only');
    } finally {
      await new Promise((resolve) => setTimeout(resolve, 450));
      await app.stop();
    }
  });

  test('dry run: Envoy got the same answer either way, so no second event', async () => {
    const sink = recordingSink(400);
    const app = await startPavilion({
      sink,
      config: { extAuthz: { grpc: { port: 0 }, tenantFrom: { header: 'x-pavilion-tenant' }, tenants: { envoy_demo: { failureStatus: 503, timeoutMs: TIMEOUT_MS, dryRun: true } } } },
    });
    try {
      const result = await app.pavilion.extAuthz!.service.check(allowedCheck('envoy_demo'), { transport: 'grpc', requestedBy: '127.0.0.1:1' });
      assert.equal(result.code, ErrorCodes.EXTAUTHZ_DEADLINE_EXCEEDED);
      assert.equal(result.response.status.code, RpcCode.OK);
      await until('the event reaches the sink', () => sink.events.length >= 1, 5_000);
      await new Promise((resolve) => setTimeout(resolve, 300)); // time for a second event, were one written
      assert.equal(sink.events.length, 1);
    } finally {
      await new Promise((resolve) => setTimeout(resolve, 450));
      await app.stop();
    }
  });
});
