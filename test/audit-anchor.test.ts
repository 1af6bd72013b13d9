/**
 * Anchoring seam: checkpoints published through an `Anchor` become anchor records in the log;
 * verification checks each against its checkpoint and, with an `AnchorVerifier`, against the
 * outside system. Issue 6 item 8: "a checkpoint whose anchor does not match" fails with its
 * position. The outside system here is an in-memory ledger; the EVM adapter plugs in the same way.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  RecordType,
  SoftwareSigner,
  verifyLogFile,
  type Anchor,
  type AnchorRecordV1,
  type AnchorVerifier,
  type SignedCheckpointV1,
} from '../sidecar/src/audit/log/index.ts';
import { ErrorCodes, PavilionError, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { decisionEvent, openLog, readRecords, ringOf, tempDir, walPath, writeRecords } from './audit/fixtures.ts';

/** An append-only ledger: each anchor is an entry number holding a root. */
class Ledger implements Anchor, AnchorVerifier {
  readonly kind = 'test-ledger';
  readonly entries: string[] = [];
  failing = false;

  async anchor(checkpoint: SignedCheckpointV1): Promise<Record<string, unknown>> {
    if (this.failing) throw new Error('ledger unreachable');
    this.entries.push(checkpoint.root_hash);
    return { entry: this.entries.length - 1 };
  }

  async verify(record: AnchorRecordV1): Promise<void> {
    const held = this.entries[record.reference['entry'] as number];
    if (held !== record.root_hash) throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_MISMATCH, `ledger entry ${String(record.reference['entry'])} holds ${held ?? 'nothing'}`);
  }
}

const signer = SoftwareSigner.generate();
const ring = ringOf(signer);

async function anchoredLog(ledger: Ledger): Promise<string> {
  const dir = await tempDir();
  const log = await openLog(dir, signer, { anchor: ledger, checkpointEveryEvents: 5 });
  for (let i = 0; i < 12; i++) await log.append(decisionEvent(i));
  await log.stop(5000);
  assert.equal(log.anchors.at(-1)?.tree_size, 12, 'the final checkpoint was anchored before stop');
  return dir;
}

const failsWith = async (promise: Promise<unknown>, code: string, details: Record<string, unknown> = {}): Promise<void> => {
  await assert.rejects(promise, (e: unknown) => {
    assert.ok(isPavilionError(e), String(e));
    assert.equal(e.code, code, e.message);
    for (const [k, v] of Object.entries(details)) assert.equal(e.details?.[k], v, k);
    return true;
  });
};

describe('anchoring', () => {
  it('anchors checkpoints, records the anchors in the log, and verifies them against the ledger', async () => {
    const ledger = new Ledger();
    const dir = await anchoredLog(ledger);
    const result = await verifyLogFile(walPath(dir), ring, { origin: 'pavilion-test/bank', anchorVerifiers: [ledger] });
    assert.ok(result.anchors >= 2);
    assert.equal(result.anchorsVerified, result.anchors);
    assert.equal(result.anchoredSize, 12);
    const withoutVerifier = await verifyLogFile(walPath(dir), ring);
    assert.equal(withoutVerifier.anchorsVerified, 0, 'unverified anchors are counted, not trusted');
    const reopened = await openLog(dir, signer, { anchor: ledger });
    assert.equal(reopened.anchors.length, result.anchors, 'anchors survive a restart');
    await reopened.stop(5000);
  });

  it('a ledger that no longer holds the root: ERR_AUDIT_ANCHOR_MISMATCH naming the anchor record', async () => {
    const ledger = new Ledger();
    const dir = await anchoredLog(ledger);
    ledger.entries[0] = '00'.repeat(32);
    const { records } = await readRecords(dir);
    const first = records.findIndex((r) => r.type === RecordType.ANCHOR);
    await failsWith(verifyLogFile(walPath(dir), ring, { origin: 'pavilion-test/bank', anchorVerifiers: [ledger] }), ErrorCodes.AUDIT_ANCHOR_MISMATCH, { recordNumber: first });
  });

  it('an anchor record edited to another root (CRC fixed): ERR_AUDIT_ANCHOR_MISMATCH at that record', async () => {
    const ledger = new Ledger();
    const dir = await anchoredLog(ledger);
    const { header, records } = await readRecords(dir);
    const at = records.findIndex((r) => r.type === RecordType.ANCHOR);
    const anchor = JSON.parse(records[at]!.payload.toString('utf8')) as AnchorRecordV1;
    records[at] = { ...records[at]!, payload: Buffer.from(JSON.stringify({ ...anchor, root_hash: 'ab'.repeat(32) })) };
    await writeRecords(dir, header, records);
    await failsWith(verifyLogFile(walPath(dir), ring), ErrorCodes.AUDIT_ANCHOR_MISMATCH, { recordNumber: at });
    await failsWith(openLog(dir, signer), ErrorCodes.AUDIT_LOG_CORRUPT, { recordNumber: at });
  });

  it('an anchor for a tree size with no checkpoint, or a malformed one: ERR_AUDIT_ANCHOR_MISMATCH', async () => {
    const ledger = new Ledger();
    const dir = await anchoredLog(ledger);
    const { header, records } = await readRecords(dir);
    const at = records.findIndex((r) => r.type === RecordType.ANCHOR);
    const anchor = JSON.parse(records[at]!.payload.toString('utf8')) as AnchorRecordV1;
    await writeRecords(dir, header, records.map((r, i) => (i === at ? { ...r, index: 3, payload: Buffer.from(JSON.stringify({ ...anchor, tree_size: 3 })) } : r)));
    await failsWith(verifyLogFile(walPath(dir), ring), ErrorCodes.AUDIT_ANCHOR_MISMATCH, { recordNumber: at });
    await writeRecords(dir, header, records.map((r, i) => (i === at ? { ...r, payload: Buffer.from('{"version":1,"kind":"x"}') } : r)));
    await failsWith(verifyLogFile(walPath(dir), ring), ErrorCodes.AUDIT_ANCHOR_MISMATCH, { recordNumber: at });
  });

  it('an unreachable ledger turns the log WARN and never blocks decisions', async () => {
    const ledger = new Ledger();
    ledger.failing = true;
    const dir = await tempDir();
    const log = await openLog(dir, signer, { anchor: ledger, checkpointEveryEvents: 2 });
    for (let i = 0; i < 6; i++) await log.append(decisionEvent(i));
    await log.checkpoint();
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(log.status().state, 'WARN');
    assert.match(log.status().message ?? '', /anchoring .* failed: ledger unreachable/);
    assert.equal(log.anchors.length, 0);
    await log.stop(5000);
    assert.equal((await verifyLogFile(walPath(dir), ring)).anchors, 0);
  });
});
