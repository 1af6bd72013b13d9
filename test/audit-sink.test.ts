/**
 * The audit log as the sidecar's decision sink (`decisionLog.sink: 'audit'`): config parsing
 * with each refusal, and a real Pavilion whose decisions end up in a per-tenant log that
 * verifies offline with the published public key.
 */
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { AuditLogSink, FileAnchorVerifier, UNROUTED_MAX_DISK_BYTES, Keyring, SoftwareSigner, verifyDecisionProof, verifyLogFile } from '../sidecar/src/audit/index.ts';
import { parseConfig } from '../sidecar/src/config/index.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import type { ComponentStatus } from '../sidecar/src/lib/lifecycle.ts';
import { decisionEvent, liveOf, logOptions, openLog, readRecords, tempDir, walPath, writeRecords } from './audit/fixtures.ts';
import { get, post, startPavilion } from './harness/pavilion-harness.ts';

const invalid = (raw: unknown, pattern: RegExp): void => {
  assert.throws(() => parseConfig(raw, '/base'), (e: unknown) => isPavilionError(e, ErrorCodes.CONFIG_INVALID) && pattern.test(e.message), String(pattern));
};

describe('decisionLog.audit config', () => {
  it('gives every key a default with its unit, resolving paths against the config file', () => {
    const config = parseConfig({ decisionLog: { sink: 'audit', audit: { directory: 'var/audit' } } }, '/base');
    assert.deepEqual(config.decisionLog.audit, {
      directory: '/base/var/audit',
      fsync: 'always',
      fsyncIntervalMs: 100,
      groupCommitMaxDelayMs: 0,
      groupCommitMaxBytes: 1024 * 1024,
      maxDiskBytes: 1024 * 1024 * 1024,
      onFull: 'refuse',
      blockTimeoutMs: 1000,
      maxEventBytes: 1024 * 1024,
      checkpointEveryEvents: 1000,
      checkpointIntervalMs: 10_000,
      keepArchivedEpochs: 0,
      rotateAfterMs: 0,
      keepArchivedDays: 0,
      signer: { kind: 'software', keyFile: '/base/var/audit/checkpoint-key.pem' },
      stream: { enabled: false, maxInFlight: 256, retryWaitMs: 250 },
      anchor: { kind: 'file', path: '/base/var/audit/anchors.jsonl' },
    });
    assert.equal(parseConfig({}).decisionLog.sink, 'audit', 'the audit log is the embedded default');
    assert.equal(parseConfig({}, '/base').decisionLog.audit?.directory.startsWith('/base'), false, 'the default sits under the repository, not the config file');
    assert.equal(parseConfig({ decisionLog: { sink: 'file' } }).decisionLog.audit, undefined, 'the NDJSON file has no audit section');
    const hsm = parseConfig({ decisionLog: { sink: 'audit', audit: { signer: { kind: 'pkcs11', modulePath: '/usr/lib/softhsm/libsofthsm2.so', tokenLabel: 't', keyLabel: 'k' } } } });
    assert.deepEqual(hsm.decisionLog.audit?.signer, { kind: 'pkcs11', modulePath: '/usr/lib/softhsm/libsofthsm2.so', tokenLabel: 't', keyLabel: 'k', pinEnv: 'PAVILION_PKCS11_PIN', generateKey: false, allowImportedKey: false, operationTimeoutMs: 10_000 });
  });

  it('refuses each bad value', () => {
    const audit = (a: Record<string, unknown>): unknown => ({ decisionLog: { sink: 'audit', audit: a } });
    invalid({ decisionLog: { sink: 'file', audit: {} } }, /decisionLog\.audit: is only used with sink 'audit'/);
    invalid(audit({ fsynch: 'always' }), /audit\.fsynch: unknown key/);
    invalid(audit({ fsync: 'sometimes' }), /audit\.fsync: must be one of/);
    invalid(audit({ onFull: 'drop' }), /audit\.onFull: must be one of 'block', 'refuse'/);
    invalid(audit({ maxDiskBytes: 10 }), /audit\.maxDiskBytes/);
    invalid(audit({ maxDiskBytes: 65536, maxEventBytes: 65536 }), /audit\.maxEventBytes: must be below maxDiskBytes/);
    invalid(audit({ checkpointEveryEvents: 0 }), /audit\.checkpointEveryEvents/);
    invalid(audit({ groupCommitMaxDelayMs: -1 }), /audit\.groupCommitMaxDelayMs/);
    invalid(audit({ signer: { kind: 'cloud' } }), /audit\.signer\.kind: must be one of/);
    invalid(audit({ signer: { kind: 'software', pin: '1' } }), /audit\.signer\.pin: unknown key/);
    invalid(audit({ signer: { kind: 'pkcs11', tokenLabel: 't', keyLabel: 'k' } }), /audit\.signer\.modulePath: is required/);
    invalid(audit({ signer: { kind: 'pkcs11', modulePath: 'm', tokenLabel: 't', keyLabel: 'k', pinEnv: '1234' } }), /pinEnv: must be an environment variable name/);
  });
});

describe('decisionLog.privacy config', () => {
  it('masks by OPA rules by default and pseudonymises nothing unless fields are named', () => {
    const config = parseConfig({ decisionLog: { privacy: { pseudonymiseFields: ['/input/subject/id'], pseudonymiseFieldsByTenant: { bank: ['/input/account'] }, pseudonymKeyDirectory: 'keys' } } }, '/base');
    assert.deepEqual(config.decisionLog.privacy, {
      maskPolicy: true,
      pseudonymiseFields: ['/input/subject/id'],
      pseudonymiseFieldsByTenant: { bank: ['/input/account'] },
      pseudonymKeyDirectory: '/base/keys',
    });
    assert.deepEqual(parseConfig({}).decisionLog.privacy.pseudonymiseFields, []);
    assert.equal(parseConfig({}).decisionLog.privacy.maskPolicy, true);
  });

  it('refuses each bad value', () => {
    const privacy = (p: Record<string, unknown>): unknown => ({ decisionLog: { privacy: p } });
    invalid(privacy({ mask: true }), /privacy\.mask: unknown key/);
    invalid(privacy({ maskPolicy: 'yes' }), /privacy\.maskPolicy: must be a boolean/);
    invalid(privacy({ pseudonymiseFields: '/input/a' }), /pseudonymiseFields: must be an array/);
    invalid(privacy({ pseudonymiseFields: ['/headers/a'] }), /pseudonymiseFields\[0\]: .*must start with \/input\/ or \/result\//);
    invalid(privacy({ pseudonymiseFields: ['/input'] }), /pseudonymiseFields\[0\]: .*not all of it/);
    invalid(privacy({ pseudonymiseFieldsByTenant: { 'Bad-Tenant': [] } }), /tenant ids must match/);
    invalid(privacy({ pseudonymiseFieldsByTenant: { bank: [1] } }), /pseudonymiseFieldsByTenant\.bank: must be an array of JSON pointers/);
  });
});

describe('AuditLogSink', () => {
  it('routes events per tenant, publishes its key, and refuses visibly (status, rejected write)', async () => {
    const dir = await tempDir();
    const sink = new AuditLogSink({
      directory: dir,
      originPrefix: 'pavilion-test',
      settings: {
        fsync: 'always', fsyncIntervalMs: 100, groupCommitMaxDelayMs: 0, groupCommitMaxBytes: 1 << 20, maxDiskBytes: 4096 + 2000,
        onFull: 'refuse', blockTimeoutMs: 100, maxEventBytes: 1500, checkpointEveryEvents: 100, checkpointIntervalMs: 60_000,
      },
      createSigner: async () => SoftwareSigner.generate(),
    });
    await sink.start();
    const receipt = await sink.append(decisionEvent(1));
    assert.equal(receipt.origin, 'pavilion-test/bank');
    await sink.write(decisionEvent(2, { tenant: 'hospital' }));
    await sink.write(decisionEvent(3, { tenant: '' }));
    let refused = 0;
    for (let i = 10; i < 20; i++) await sink.write(decisionEvent(i)).catch((e: unknown) => (refused += isPavilionError(e, ErrorCodes.AUDIT_LOG_FULL) ? 1 : 0));
    assert.ok(refused > 0);
    void sink.write(decisionEvent(99)); // not awaited: must not become an unhandled rejection
    await new Promise((r) => setTimeout(r, 20));
    const status = sink.status();
    assert.equal(status.state, 'WARN');
    assert.ok(((status.details as { refused_events: number }).refused_events) >= refused);
    const proof = await sink.proveInclusion('hospital', 'decision-000002');
    await sink.stop(5000);
    const keys = Keyring.load(join(dir, 'keys'));
    assert.equal(verifyDecisionProof(proof, keys).origin, 'pavilion-test/hospital');
    assert.equal((await verifyLogFile(join(dir, 'tenants', '_unrouted', 'audit.wal'), keys)).leaves, 1);
    await assert.rejects(sink.append(decisionEvent(5)), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_LOG_CLOSED));
  });

  it('gives the _unrouted log (checks no tenant was resolved for, which any caller can send) its own small disk budget', async () => {
    const dir = await tempDir();
    const sink = new AuditLogSink({
      directory: dir,
      originPrefix: 'pavilion-test',
      settings: {
        fsync: 'never', fsyncIntervalMs: 100, groupCommitMaxDelayMs: 0, groupCommitMaxBytes: 1 << 20, maxDiskBytes: 4 * UNROUTED_MAX_DISK_BYTES,
        onFull: 'refuse', blockTimeoutMs: 100, maxEventBytes: 1 << 20, checkpointEveryEvents: 100, checkpointIntervalMs: 60_000,
      },
      createSigner: async () => SoftwareSigner.generate(),
    });
    await sink.start();
    try {
      await sink.write(decisionEvent(1));
      await sink.write(decisionEvent(2, { tenant: '' }));
      const tenants = (sink.status().details as { tenants: Record<string, { details: { max_disk_bytes: number } }> }).tenants;
      assert.equal(tenants['bank']?.details.max_disk_bytes, 4 * UNROUTED_MAX_DISK_BYTES);
      assert.equal(tenants['_unrouted']?.details.max_disk_bytes, UNROUTED_MAX_DISK_BYTES);
    } finally {
      await sink.stop(5000);
    }
  });

  it('refuses alone a tenant whose log fails to open at start: the others are served, its files are left as they were, and it is not tried again until a restart', async () => {
    const dir = await tempDir();
    const signer = SoftwareSigner.generate();
    const sinkOn = (): AuditLogSink => new AuditLogSink({
      directory: dir,
      originPrefix: 'pavilion-test',
      settings: {
        fsync: 'always', fsyncIntervalMs: 100, groupCommitMaxDelayMs: 0, groupCommitMaxBytes: 1 << 20, maxDiskBytes: 1 << 20,
        onFull: 'refuse', blockTimeoutMs: 100, maxEventBytes: 1500, checkpointEveryEvents: 100, checkpointIntervalMs: 60_000,
      },
      createSigner: async () => signer,
    });
    const first = sinkOn();
    await first.start();
    for (let i = 0; i < 4; i++) await first.append(decisionEvent(i));
    await first.append(decisionEvent(10, { tenant: 'hospital' }));
    await first.stop(5000);
    // bank's leaves 1 and 2 swapped, framing intact: damage, not a torn write
    const bank = liveOf(dir, 'bank');
    const { header, records } = await readRecords(bank);
    const intact = await readFile(walPath(bank));
    await writeRecords(bank, header, [records[0]!, records[2]!, records[1]!, ...records.slice(3)]);
    const damaged = await readFile(walPath(bank));
    const files = (await readdir(bank)).sort();

    const sink = sinkOn();
    await sink.start(); // not refused as a whole
    try {
      const isRefusal = (e: unknown): boolean => isPavilionError(e, ErrorCodes.AUDIT_LOG_CORRUPT) && e.details?.['tenant'] === 'bank' && e.details['leafIndex'] === 1 && /refused at start/.test(e.message);
      assert.deepEqual([...sink.refusedTenants().keys()], ['bank']);
      assert.ok(isRefusal(sink.refusedTenants().get('bank')), String(sink.refusedTenants().get('bank')));
      // the other tenant is served: its log continues, its proofs verify
      const receipt = await sink.append(decisionEvent(11, { tenant: 'hospital' }));
      assert.equal(receipt.leaf_index, 1);
      const hospitalProof = await sink.proveInclusion('hospital', 'decision-000010');
      // the refused tenant: its events, proofs and checkpoints get the refusal
      await assert.rejects(sink.append(decisionEvent(20)), isRefusal);
      await assert.rejects(sink.write(decisionEvent(21)), isRefusal);
      await assert.rejects(sink.proveInclusion('bank', 'decision-000000'), isRefusal);
      assert.throws(() => sink.latestCheckpoint('bank'), isRefusal);
      assert.throws(() => sink.consistencyProofBetween('bank', 1, 2), isRefusal);
      assert.equal(sink.latestCheckpoint('hospital')?.tree_size, 1, 'signed at the last stop');
      const status = sink.status();
      assert.equal(status.state, 'WARN', 'WARN, not ERROR: the other tenants are served, so /health/ready stays ready');
      assert.match(status.message ?? '', /^bank: the audit log of tenant bank was refused at start/);
      const tenants = (status.details as { tenants: Record<string, ComponentStatus>; refused_events: number }).tenants;
      assert.equal(tenants['bank']?.state, 'ERROR');
      assert.deepEqual(tenants['bank']?.details, { code: ErrorCodes.AUDIT_LOG_CORRUPT });
      assert.equal(tenants['hospital']?.state, 'OK');
      assert.equal((status.details as { refused_events: number }).refused_events, 2, 'each refused event is counted');
      // nothing of the refused tenant's files was touched: no cut, no lock left, nothing added
      assert.deepEqual(await readFile(walPath(bank)), damaged);
      assert.deepEqual((await readdir(bank)).sort(), files);
      // repaired while it runs: still refused (not opened again per event) until a restart
      await writeRecords(bank, header, records);
      assert.deepEqual(await readFile(walPath(bank)), intact);
      await assert.rejects(sink.append(decisionEvent(22)), isRefusal);
      await sink.stop(5000);
      assert.equal(verifyDecisionProof(hospitalProof, Keyring.load(join(dir, 'keys'))).origin, 'pavilion-test/hospital');
    } finally {
      await sink.stop(5000);
    }
    const restarted = sinkOn();
    await restarted.start();
    try {
      assert.equal(restarted.refusedTenants().size, 0);
      assert.equal((await restarted.append(decisionEvent(23))).leaf_index, 4, 'the repaired log continues where it ended');
    } finally {
      await restarted.stop(5000);
    }
  });

  it('tries a log refused at start for a passing fault (its lock held by another log, here in this process) again with a later event, once its wait has passed', async () => {
    const dir = await tempDir();
    const signer = SoftwareSigner.generate();
    const { directory: _d, origin: _o, signer: _s, ...settings } = logOptions(liveOf(dir, 'bank'), signer);
    const holder = await openLog(liveOf(dir, 'bank'), signer);
    await holder.append(decisionEvent(0));
    const sink = new AuditLogSink({ directory: dir, originPrefix: 'pavilion-test', settings, createSigner: async () => signer });
    await sink.start();
    try {
      const locked = (e: unknown): boolean => isPavilionError(e, ErrorCodes.AUDIT_LOG_LOCKED) && /could not be opened, so its decisions are refused; it is tried again by its next decision after 1000 ms/.test(e.message);
      assert.ok(locked(sink.refusedTenants().get('bank')), String(sink.refusedTenants().get('bank')));
      await assert.rejects(sink.append(decisionEvent(1)), locked, 'refused at once within the wait, without trying');
      assert.equal(sink.status().state, 'WARN');
      // its wait passed, the lock still held: refused again, the wait doubled
      await new Promise((r) => setTimeout(r, 1_100));
      await assert.rejects(sink.append(decisionEvent(1)), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_LOG_LOCKED) && /after 2000 ms/.test(e.message));
      await holder.stop(5000);
      await new Promise((r) => setTimeout(r, 2_100));
      const receipt = await sink.append(decisionEvent(2));
      assert.equal(receipt.leaf_index, 1, 'opened on its next event: the log goes on after what the other held');
      assert.equal(sink.refusedTenants().size, 0);
      assert.equal((sink.status().details as { tenants: Record<string, ComponentStatus> }).tenants['bank']?.state, 'OK');
    } finally {
      await holder.stop(5000);
      await sink.stop(5000);
    }
  });

  it("keeps a sidecar serving and ready when one tenant's log is refused at start: that tenant's decisions and proofs get 503 with the code, the others 200, health says which", async () => {
    const auditDir = await tempDir();
    const config = { decisionLog: { sink: 'audit', audit: { directory: auditDir } } };
    const bankInput = { input: { subject: { id: 'c1' } } };
    const hospitalInput = { input: { subject: { id: 'dr-ahmed', role: 'doctor' }, purpose: 'treatment', resource: { patient_id: 'p-1001', sections: ['diagnoses'] } } };
    const first = await startPavilion({ config });
    let bankDecision = '';
    try {
      for (let i = 0; i < 3; i++) {
        const response = await post(`${first.url}/v1/data/bank/authz/allow`, bankInput, { 'x-pavilion-tenant': 'bank' });
        assert.equal(response.status, 200);
        bankDecision = String(response.body['decision_id']);
      }
      assert.equal((await post(`${first.url}/v1/data/hospital/records/decision`, hospitalInput, { 'x-pavilion-tenant': 'hospital' })).status, 200);
    } finally {
      await first.stop();
    }
    const bank = liveOf(auditDir, 'bank');
    const { header, records } = await readRecords(bank);
    await writeRecords(bank, header, [records[1]!, records[0]!, ...records.slice(2)]);

    const app = await startPavilion({ config });
    try {
      const isBankRefusal = (response: { status: number; body: Record<string, unknown> }): boolean =>
        response.status === 503 && (response.body['errors'] as Array<{ code: string }> | undefined)?.[0]?.code === ErrorCodes.AUDIT_LOG_CORRUPT;
      const refused = await post(`${app.url}/v1/data/bank/authz/allow`, bankInput, { 'x-pavilion-tenant': 'bank' });
      assert.ok(isBankRefusal(refused), JSON.stringify(refused.body));
      assert.match(String(refused.body['message']), /audit log of tenant bank was refused at start/);
      assert.equal(refused.body['result'], undefined, 'no decision is answered without its event logged');
      const proof = await get(`${app.url}/v1/tenants/bank/audit/decisions/${bankDecision}/proof`);
      assert.ok(isBankRefusal(proof), JSON.stringify(proof.body));
      assert.ok(isBankRefusal(await get(`${app.url}/v1/tenants/bank/audit/checkpoint`)));
      const served = await post(`${app.url}/v1/data/hospital/records/decision?receipt=1`, hospitalInput, { 'x-pavilion-tenant': 'hospital' });
      assert.equal(served.status, 200, JSON.stringify(served.body));
      assert.equal((served.body['receipt'] as { leaf_index: number }).leaf_index, 1, "the other tenant's log continues");
      assert.equal((await get(`${app.url}/health`)).status, 200, 'OPA\'s /health: the sidecar can evaluate');
      const ready = await get(`${app.url}/health/ready?verbose`);
      assert.equal(ready.status, 200, 'ready: the other tenants are served');
      const log = (ready.body['components'] as Record<string, ComponentStatus>)['decision_log'];
      assert.equal(log?.state, 'WARN');
      assert.match(log?.message ?? '', /^bank: the audit log of tenant bank was refused at start/);
      assert.equal((log?.details as { tenants: Record<string, ComponentStatus> }).tenants['bank']?.state, 'ERROR');
    } finally {
      await app.stop();
    }
  });

  it("is the sidecar's sink with decisionLog.sink 'audit': decisions over HTTP verify offline", async () => {
    const auditDir = await tempDir();
    const app = await startPavilion({
      config: { decisionLog: { sink: 'audit', audit: { directory: auditDir, checkpointEveryEvents: 3 } } },
    });
    const ids: string[] = [];
    try {
      for (let i = 0; i < 5; i++) {
        const response = await post(`${app.url}/v1/data/bank/authz/allow`, { input: { subject: { id: `c${i}` } } }, { 'x-pavilion-tenant': 'bank' });
        assert.equal(response.status, 200);
        ids.push(String(response.body['decision_id']));
      }
      assert.equal(app.pavilion.sink.status().state, 'OK', JSON.stringify(app.pavilion.sink.status()));
    } finally {
      await app.stop();
    }
    const keys = Keyring.load(join(auditDir, 'keys'));
    // The embedded default anchors every checkpoint to the local anchor file.
    const log = await verifyLogFile(join(auditDir, 'tenants', 'bank', 'audit.wal'), keys, { origin: `${app.pavilion.config.labels.id}/bank`, anchorVerifiers: [new FileAnchorVerifier({ path: join(auditDir, 'anchors.jsonl') })] });
    assert.ok(log.anchors >= 1, 'checkpoints are anchored by default');
    assert.equal(log.anchorsVerified, log.anchors);
    assert.equal(log.leaves, 5);
    assert.equal(log.unsignedLeaves, 0, 'stop signs a final checkpoint');
    const { proveFromLogFile } = await import('../sidecar/src/audit/index.ts');
    for (const id of ids) {
      const verified = verifyDecisionProof(await proveFromLogFile(join(auditDir, 'tenants', 'bank', 'audit.wal'), id), keys, { decisionId: id });
      assert.equal(verified.tenant, 'bank');
    }
    assert.match(await readFile(join(auditDir, 'checkpoint-key.pem'), 'utf8'), /BEGIN PRIVATE KEY/);
  });
});
