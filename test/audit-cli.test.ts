/** `pavilion audit verify-log | verify | prove`: exit codes, JSON reports, the first bad position. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { SoftwareSigner, publicKeyPem, type SignedCheckpointV1 } from '../sidecar/src/audit/index.ts';
import { RecordType } from '../sidecar/src/audit/log/index.ts';
import { decisionEvent, openLog, readRecords, tempDir, walPath, writeRecords } from './audit/fixtures.ts';

const CLI = join(import.meta.dirname, '..', 'sidecar', 'src', 'cli', 'main.ts');

function pavilion(...args: string[]): { status: number | null; json: Record<string, unknown>; stderr: string } {
  const run = spawnSync(process.execPath, ['--import', 'tsx', CLI, 'audit', ...args], { encoding: 'utf8' });
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(run.stdout) as Record<string, unknown>;
  } catch {
    // usage errors print nothing on stdout
  }
  return { status: run.status, json, stderr: run.stderr };
}

let dir: string;
let keys: string;
let lastCheckpoint: SignedCheckpointV1;
let firstCheckpoint: SignedCheckpointV1;

before(async () => {
  dir = await tempDir();
  const signer = SoftwareSigner.generate();
  keys = join(dir, 'trusted.pem');
  await writeFile(keys, publicKeyPem(signer.publicKeySpki));
  const log = await openLog(join(dir, 'bank'), signer, { checkpointEveryEvents: 4 });
  for (let i = 0; i < 10; i++) await log.append(decisionEvent(i));
  await log.stop(5000);
  lastCheckpoint = log.latestCheckpoint!;
  firstCheckpoint = log.checkpoints[0]!;
});

describe('pavilion audit', () => {
  it('verify-log passes an intact log (exit 0) and names the first bad position of a damaged one (exit 1)', async () => {
    const ok = pavilion('verify-log', '--log', join(dir, 'bank'), '--keys', keys);
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(ok.json['ok'], true);
    assert.equal(ok.json['leaves'], 10);

    const copy = await tempDir();
    const bytes = await readFile(walPath(join(dir, 'bank')));
    await writeFile(walPath(copy), bytes.subarray(0, bytes.length - 5));
    const cut = pavilion('verify-log', '--log', copy, '--keys', keys);
    assert.equal(cut.status, 1);
    assert.equal(cut.json['code'], 'ERR_AUDIT_RECORD_CORRUPT');
    assert.equal((cut.json['position'] as Record<string, unknown>)['leafIndex'], 10);
    assert.match(cut.stderr, /verification FAILED \[ERR_AUDIT_RECORD_CORRUPT\]/);

    const checkpointFile = join(copy, 'cp.json');
    await writeFile(checkpointFile, JSON.stringify({ ...lastCheckpoint }));
    const shorter = await tempDir();
    await writeFile(walPath(shorter), bytes.subarray(0, 16));
    const truncated = pavilion('verify-log', '--log', shorter, '--keys', keys, '--origin', 'pavilion-test/bank', '--trusted-checkpoint', checkpointFile);
    assert.equal(truncated.status, 1);
    assert.equal(truncated.json['code'], 'ERR_AUDIT_LOG_TRUNCATED');
  });

  it('prove exports a decision proof that verify checks offline; a wrong key or decision fails', async () => {
    const proved = pavilion('prove', '--log', join(dir, 'bank'), '--decision', 'decision-000005');
    assert.equal(proved.status, 0, proved.stderr);
    const proofFile = join(dir, 'proof.json');
    await writeFile(proofFile, JSON.stringify(proved.json));
    const verified = pavilion('verify', '--decision', 'decision-000005', '--proof', proofFile, '--keys', keys);
    assert.equal(verified.status, 0, verified.stderr);
    assert.equal(verified.json['leafIndex'], 5);

    const direct = pavilion('verify', '--decision', 'decision-000009', '--log', join(dir, 'bank'), '--keys', keys);
    assert.equal(direct.status, 0, direct.stderr);

    const otherKey = join(dir, 'other.pem');
    await writeFile(otherKey, publicKeyPem(SoftwareSigner.generate().publicKeySpki));
    const wrongKey = pavilion('verify', '--decision', 'decision-000005', '--proof', proofFile, '--keys', otherKey);
    assert.equal(wrongKey.status, 1);
    assert.equal(wrongKey.json['code'], 'ERR_AUDIT_KEY_UNKNOWN');

    const wrongDecision = pavilion('verify', '--decision', 'decision-000006', '--proof', proofFile, '--keys', keys);
    assert.equal(wrongDecision.json['code'], 'ERR_AUDIT_EVENT_MISMATCH');

    const unknown = pavilion('verify', '--decision', 'nope', '--log', join(dir, 'bank'), '--keys', keys);
    assert.equal(unknown.status, 1);
    assert.equal(unknown.json['code'], 'ERR_AUDIT_DECISION_UNKNOWN');
  });

  it('prove-consistency and verify-consistency: the log only grew since a checkpoint an auditor kept', async () => {
    const kept = join(dir, 'kept-checkpoint.json');
    assert.equal(firstCheckpoint.tree_size, 4);
    await writeFile(kept, JSON.stringify(firstCheckpoint));
    const consistency = pavilion('prove-consistency', '--from', kept, '--log', join(dir, 'bank'));
    assert.equal(consistency.status, 0, consistency.stderr);
    const file = join(dir, 'consistency.json');
    await writeFile(file, JSON.stringify(consistency.json));
    const verified = pavilion('verify-consistency', '--proof', file, '--keys', keys);
    assert.equal(verified.status, 0, verified.stderr);
    assert.equal(verified.json['newSize'], 10);
    await writeFile(file, JSON.stringify({ ...consistency.json, consistency_path: [] }));
    const bad = pavilion('verify-consistency', '--proof', file, '--keys', keys);
    assert.equal(bad.status, 1);
    assert.equal(bad.json['code'], 'ERR_AUDIT_PROOF_INVALID');
  });

  it('anchor checks or a trusted checkpoint without --origin get a usage error (exit 2, typed code), never a pass', async () => {
    const anchorFile = join(dir, 'anchors.jsonl');
    await writeFile(anchorFile, '');
    const checkpointFile = join(dir, 'cp-origin.json');
    await writeFile(checkpointFile, JSON.stringify({ ...lastCheckpoint }));
    const bank = join(dir, 'bank');
    const anchored = pavilion('verify-log', '--log', bank, '--keys', keys, '--anchor-file', anchorFile);
    assert.equal(anchored.status, 2, anchored.stderr);
    assert.equal(anchored.json['code'], 'ERR_AUDIT_ANCHOR_CONFIG');
    assert.match(anchored.stderr, /--origin <o> is required with anchor checks/);
    const trusted = pavilion('verify-log', '--log', bank, '--keys', keys, '--trusted-checkpoint', checkpointFile);
    assert.equal(trusted.status, 2, trusted.stderr);
    assert.equal(trusted.json['code'], 'ERR_CONFIG_INVALID');
    const decision = pavilion('verify', '--decision', 'decision-000001', '--log', bank, '--keys', keys, '--rpc', 'http://127.0.0.1:1', '--chain-id', '1', '--contract', `0x${'11'.repeat(20)}`);
    assert.equal(decision.status, 2, decision.stderr);
    assert.equal(decision.json['code'], 'ERR_AUDIT_ANCHOR_CONFIG');
    // With --origin they run (the empty anchor file holds nothing for this log).
    const withOrigin = pavilion('verify-log', '--log', bank, '--keys', keys, '--origin', 'pavilion-test/bank', '--anchor-file', anchorFile, '--trusted-checkpoint', checkpointFile);
    assert.equal(withOrigin.status, 0, withOrigin.stderr);
  });

  it('verify-log of a log stripped of every checkpoint gets ERR_AUDIT_NOT_CHECKPOINTED (exit 1), not ok with 0 checkpoints', async () => {
    const { header, records } = await readRecords(join(dir, 'bank'));
    const stripped = await tempDir();
    await writeRecords(stripped, header, records.filter((r) => r.type === RecordType.LEAF));
    const run = pavilion('verify-log', '--log', stripped, '--keys', keys);
    assert.equal(run.status, 1, run.stderr);
    assert.equal(run.json['code'], 'ERR_AUDIT_NOT_CHECKPOINTED');
    assert.equal((run.json['position'] as Record<string, unknown>)['leafIndex'], 0);
  });

  it('refuses to verify without trusted keys (usage, exit 2)', () => {
    assert.equal(pavilion('verify-log', '--log', join(dir, 'bank')).status, 2);
    assert.equal(pavilion('verify', '--decision', 'x', '--keys', keys).status, 2);
  });
});
