/**
 * Verification against anchors fails closed: an anchor record (in the log or in a decision
 * proof) of a kind none of the given verifiers checks does not pass unchecked, and a log
 * whose leaves no signed checkpoint covers fails. Real logs, a real file anchor, real signers.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  RecordType,
  SoftwareSigner,
  proveFromLogFile,
  verifyDecisionAnchor,
  verifyDecisionProof,
  verifyLogFile,
  type AnchorRecordV1,
} from '../sidecar/src/audit/log/index.ts';
import { FileAnchor, FileAnchorVerifier } from '../sidecar/src/audit/anchor/index.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { decisionEvent, openLog, readRecords, ringOf, tempDir, walPath, writeRecords } from './audit/fixtures.ts';

const signer = SoftwareSigner.generate();
const ring = ringOf(signer);

const failsWith = async (promise: Promise<unknown>, code: string, details: Record<string, unknown> = {}, message?: RegExp): Promise<void> => {
  await assert.rejects(promise, (e: unknown) => {
    assert.ok(isPavilionError(e), String(e));
    assert.equal(e.code, code, e.message);
    for (const [k, v] of Object.entries(details)) assert.equal(e.details?.[k], v, `${k} in ${JSON.stringify(e.details)}`);
    if (message !== undefined) assert.match(e.message, message);
    return true;
  });
};

/** A log of 8 decisions, checkpoints every 4, anchored to a file anchor; stopped. */
async function fileAnchoredLog(): Promise<{ dir: string; file: string }> {
  const root = await tempDir();
  const file = join(root, 'anchors.jsonl');
  const dir = join(root, 'bank');
  const log = await openLog(dir, signer, { anchor: new FileAnchor({ path: file }), checkpointEveryEvents: 4 });
  for (let i = 0; i < 8; i++) await log.append(decisionEvent(i));
  await log.stop(5000);
  return { dir, file };
}

/** The log's records with the first anchor record's kind set to `kind`; returns its record number. */
async function relabelFirstAnchor(dir: string, kind: string): Promise<number> {
  const { header, records } = await readRecords(dir);
  const at = records.findIndex((r) => r.type === RecordType.ANCHOR);
  assert.ok(at >= 0, 'the log has an anchor record');
  const record = JSON.parse(records[at]!.payload.toString('utf8')) as AnchorRecordV1;
  await writeRecords(dir, header, records.map((r, i) => (i === at ? { ...r, payload: Buffer.from(JSON.stringify({ ...record, kind })) } : r)));
  return at;
}

describe("the log's origin is never taken from the file when anything outside it is compared", () => {
  it('verifyLogFile with anchor verifiers or trusted checkpoints and no origin: refused (ERR_AUDIT_ANCHOR_CONFIG / ERR_CONFIG_INVALID) before reading', async () => {
    const { dir, file } = await fileAnchoredLog();
    await assert.rejects(verifyLogFile(walPath(dir), ring, { anchorVerifiers: [new FileAnchorVerifier({ path: file })] }), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_ANCHOR_CONFIG) && /origin is required/.test(e.message));
    const trusted = (await verifyLogFile(walPath(dir), ring)).checkpoints;
    assert.ok(trusted > 0);
    const { records } = await readRecords(dir);
    const checkpoint = JSON.parse(records.find((r) => r.type === RecordType.CHECKPOINT)!.payload.toString('utf8'));
    await assert.rejects(verifyLogFile(walPath(dir), ring, { trustedCheckpoints: [checkpoint] }), (e: unknown) => isPavilionError(e, ErrorCodes.CONFIG_INVALID));
    assert.equal((await verifyLogFile(walPath(dir), ring, { origin: 'pavilion-test/bank', trustedCheckpoints: [checkpoint] })).leaves, 8);
  });
});

describe('anchors no given verifier can check', () => {
  it("verify-log: an anchor record relabelled kind 'zzz' gets ERR_AUDIT_ANCHOR_MISMATCH at that record, not a pass", async () => {
    const { dir, file } = await fileAnchoredLog();
    const verifier = new FileAnchorVerifier({ path: file });
    assert.equal((await verifyLogFile(walPath(dir), ring, { origin: 'pavilion-test/bank', anchorVerifiers: [verifier] })).anchorsVerified, 2);
    const at = await relabelFirstAnchor(dir, 'zzz');
    assert.equal((await verifyLogFile(walPath(dir), ring)).anchorsVerified, 0, 'offline (no verifier asked) it is only counted');
    await failsWith(verifyLogFile(walPath(dir), ring, { origin: 'pavilion-test/bank', anchorVerifiers: [verifier] }), ErrorCodes.AUDIT_ANCHOR_MISMATCH, { recordNumber: at, kind: 'zzz' }, /of a kind no verifier given checks \(file\)/);
  });

  it("verify: a proof whose anchor is relabelled kind 'zzz' gets ERR_AUDIT_ANCHOR_MISMATCH when a verifier is given", async () => {
    const { dir, file } = await fileAnchoredLog();
    const proof = await proveFromLogFile(walPath(dir), 'decision-000001');
    assert.ok(proof.anchor !== undefined);
    const verifier = new FileAnchorVerifier({ path: file });
    assert.equal(await verifyDecisionAnchor(verifyDecisionProof(JSON.parse(JSON.stringify(proof)), ring), [verifier]), true);
    const relabelled = verifyDecisionProof(JSON.parse(JSON.stringify({ ...proof, anchor: { ...proof.anchor, kind: 'zzz' } })), ring);
    assert.equal(await verifyDecisionAnchor(relabelled, []), false, 'no verifier asked: nothing outside consulted');
    await failsWith(verifyDecisionAnchor(relabelled, [verifier]), ErrorCodes.AUDIT_ANCHOR_MISMATCH, { kind: 'zzz', treeSize: proof.anchor.tree_size }, /of a kind no verifier given checks/);
  });
});

describe('a log no signature covers', () => {
  it('a log stripped of every checkpoint and anchor record gets ERR_AUDIT_NOT_CHECKPOINTED at leaf 0', async () => {
    const { dir } = await fileAnchoredLog();
    const { header, records } = await readRecords(dir);
    await writeRecords(dir, header, records.filter((r) => r.type === RecordType.LEAF));
    await failsWith(verifyLogFile(walPath(dir), ring), ErrorCodes.AUDIT_NOT_CHECKPOINTED, { leafIndex: 0, treeSize: 8, lastSuspectLeaf: 7 });
    // Leaves after the last checkpoint stay a note (unsignedLeaves), not a failure.
    await writeRecords(dir, header, records.filter((r) => r.type === RecordType.LEAF || r.index <= 4));
    const partly = await verifyLogFile(walPath(dir), ring);
    assert.equal(partly.checkpoints, 1);
    assert.equal(partly.unsignedLeaves, 4);
  });
});
