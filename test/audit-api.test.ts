/**
 * The audit log behind the sidecar's transports: a decision is answered only once its event is
 * durable (Data API and ext_authz), a refusal is an error answer and never a logged decision.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Keyring, verifyLogFile } from '../sidecar/src/audit/index.ts';
import { RpcCode } from '../sidecar/src/extauthz/index.ts';
import { ErrorCodes } from '../sidecar/src/lib/errors.ts';
import { tempDir } from './audit/fixtures.ts';
import { post, startPavilion, type JsonResponse, type RunningPavilion } from './harness/pavilion-harness.ts';

const TENANT = { 'x-pavilion-tenant': 'bank' };
const walOf = (auditDir: string, tenant: string): string => join(auditDir, 'tenants', tenant, 'audit.wal');
const pavilionCode = (response: JsonResponse): unknown => (response.body['errors'] as Array<{ code: string }> | undefined)?.[0]?.code;

describe('a decision is answered only once durable; a refusal is an error answer', () => {
  let app: RunningPavilion;
  let auditDir: string;

  before(async () => {
    auditDir = await tempDir();
    app = await startPavilion({
      config: {
        decisionLog: {
          sink: 'audit',
          audit: { directory: auditDir, maxDiskBytes: 64 * 1024, maxEventBytes: 30 * 1024, onFull: 'refuse', checkpointEveryEvents: 1000, checkpointIntervalMs: 600_000 },
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
    const keys = Keyring.load(join(auditDir, 'keys'));
    assert.equal((await verifyLogFile(walOf(auditDir, 'bank'), keys)).leaves, 3);
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
  });
});
