/**
 * A rotation that fails after its epoch was sealed (1c7fe30): the sealed log is no longer
 * handed out (proofs, status, the forwarder's openLogs) until the tenant's next event opens
 * the log again and finishes the rotation. The failure is injected with the sink's
 * onRotationStep hook (as the crash tests of audit-rotation.test.ts do), throwing at 'marked':
 * the epoch is sealed and marked SEALED on disk, and the next epoch is not open yet.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { verifyDecisionProof, type DecisionReceiptV1} from '../sidecar/src/audit/index.ts';
import { SoftwareSigner } from '../sidecar/src/audit/log/index.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { ROTATE_AT_BYTES, decisionEvent, ringOf, rotatingSink, sinkTenants as tenants, tempDir } from './audit/fixtures.ts';
import { until } from './harness/wait.ts';

const signer = SoftwareSigner.generate();
const ring = ringOf(signer);

describe('a rotation that fails after the seal', () => {
  it('hands the sealed log to no one (proofs, status, open logs) until the next event reopens the tenant in the next epoch', async () => {
    const dir = await tempDir();
    let failures = 0;
    const sink = rotatingSink(dir, signer, {}, (step) => {
      if (step !== 'marked' || failures > 0) return;
      failures++;
      throw new Error('injected: the disk went away after the seal');
    });
    await sink.start();
    try {
      // fill epoch 0 until the last append starts its rotation
      const receipts: DecisionReceiptV1[] = [];
      do receipts.push(await sink.append(decisionEvent(receipts.length)));
      while ((tenants(sink)['bank']?.details['bytes_on_disk'] as number) < ROTATE_AT_BYTES);
      await until('the rotation failed', () => failures === 1 && /rotation of epoch 0 failed/.test(sink.status().message ?? ''));

      // the sealed epoch-0 log is handed to no one
      assert.equal(sink.openLogs().has('bank'), false, 'the forwarder is not handed the sealed log');
      assert.equal(sink.latestCheckpoint('bank'), undefined, 'no checkpoint of the sealed log is handed out');
      assert.equal(tenants(sink)['bank'], undefined, 'status does not report the sealed log as the live one');
      assert.equal(sink.status().state, 'WARN');
      const first = receipts[0] as DecisionReceiptV1;
      const proof = await sink.proveInclusion('bank', first.decision_id).then((p) => p, (error: unknown) => error);
      assert.ok(isPavilionError(proof, ErrorCodes.AUDIT_DECISION_UNKNOWN), `no proof from the sealed log: got ${JSON.stringify(proof)}`);
      assert.throws(() => sink.consistencyProofBetween('bank', 1), (error: unknown) => isPavilionError(error, ErrorCodes.AUDIT_NOT_CHECKPOINTED));

      // the next event opens the tenant again: the rotation is finished, epoch 1 is live
      const next = await sink.append(decisionEvent(10_000));
      assert.match(next.origin, /\/e1$/);
      assert.equal(tenants(sink)['bank']?.details['epoch'], 1);
      assert.equal(sink.openLogs().has('bank'), true);
      // and a decision of the sealed epoch proves from the archive
      const archived = await sink.proveInclusion('bank', first.decision_id);
      assert.equal(archived.leaf_index, first.leaf_index);
      assert.equal(verifyDecisionProof(archived, ring, { decisionId: first.decision_id }).origin, first.origin);
    } finally {
      await sink.stop(5000);
    }
  });
});
