/**
 * Retention of archived epochs (decisionLog.audit.keepArchivedEpochs, docs/audit-log.md,
 * "Retention"): every archived epoch but the newest N keeps only its seal and a PRUNED record
 * (final signed checkpoint, link, inclusion path of the link), so the chain still verifies;
 * an epoch that does not verify, or that JetStream did not hold all of, is kept whole; a crash
 * between the record and the removal is finished at the next start; a forged record fails.
 * By age (rotateAfterMs + keepArchivedDays, on a clock the tests move): live epochs are sealed
 * and archived ones pruned as their decisions age, with no event to prompt it.
 */
import assert from 'node:assert/strict';
import { readFile, readdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import {
  AuditLogSink,
  FileAnchor,
  FileAnchorVerifier,
  PRUNED_FILE,
  RETENTION_CHECK_INTERVAL_MS,
  SoftwareSigner,
  UNROUTED_KEEP_ARCHIVED_EPOCHS,
  verifyDecisionProof,
  verifyEpochs,
  type AuditLogSettings,
  type DecisionReceiptV1,
  type PrunedEpochV1,
} from '../sidecar/src/audit/index.ts';
import { RecordType, WAL_FILE, decodeCheckpoint, prunedEpochRecord, prunedEpochRecordOnThread, type SignedCheckpointV1 } from '../sidecar/src/audit/log/index.ts';
import { parseConfig } from '../sidecar/src/config/index.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { ROTATE_AT_BYTES, archiveOf, decisionEvent, forkOf, liveOf, readRecords, ringOf, rotatingSink, sinkTenants, tempDir, writeRecords } from './audit/fixtures.ts';
import { until } from './harness/wait.ts';

const signer = SoftwareSigner.generate();
const ring = ringOf(signer);
const ORIGIN = 'pavilion-test/bank';
const liveWal = (directory: string): string => join(liveOf(directory), WAL_FILE);

type Archived = Array<{ epoch: number; bytes: number; pruned?: true }>;
const archivedOf = (sink: AuditLogSink, tenant = 'bank'): Archived => (sinkTenants(sink)[tenant]?.details['archived_epochs'] ?? []) as Archived;

/** A sink over `directory` with rotation (and `anchorFile`'s anchor), having logged `count` decisions; their receipts. */
async function filled(directory: string, count: number, settings: Partial<AuditLogSettings> = {}, anchorFile?: string): Promise<{ sink: AuditLogSink; receipts: DecisionReceiptV1[] }> {
  const sink = rotatingSink(directory, signer, settings, undefined, anchorFile === undefined ? {} : { anchor: new FileAnchor({ path: anchorFile }) });
  await sink.start();
  const receipts: DecisionReceiptV1[] = [];
  for (let i = 0; i < count; i++) receipts.push(await sink.append(decisionEvent(i)));
  // the last append may have started a rotation: let it end (the live epoch under the threshold again)
  await until('no rotation is due', () => (sinkTenants(sink)['bank']!.details['bytes_on_disk'] as number) < ROTATE_AT_BYTES);
  return { sink, receipts };
}

/** The signed checkpoints in an archived epoch's log, in order. */
async function checkpointsOf(directory: string): Promise<SignedCheckpointV1[]> {
  return (await readRecords(directory)).records.filter((r) => r.type === RecordType.CHECKPOINT).map((r) => decodeCheckpoint(r.payload));
}

/**
 * A rotated log of 60 decisions (several archived epochs, nothing pruned), its sink stopped:
 * its directory and receipts; with `anchored`, each checkpoint anchored to `anchors` in it.
 */
async function sealedArchive(anchored = false): Promise<{ dir: string; receipts: DecisionReceiptV1[]; anchors: string }> {
  const dir = await tempDir();
  const anchors = join(dir, 'anchors.jsonl');
  const { sink, receipts } = await filled(dir, 60, {}, anchored ? anchors : undefined);
  await sink.stop(5000);
  return { dir, receipts, anchors };
}

/** A rotated log with epochs 0 and 1 pruned (keep the rest): the record and an earlier checkpoint of epoch 1, the archived epochs. */
async function prunedArchive(anchored = false): Promise<{ dir: string; file: string; record: PrunedEpochV1; earlier: SignedCheckpointV1; anchors: string; archived: number[] }> {
  const { dir, anchors } = await sealedArchive(anchored);
  // a genuine checkpoint of epoch 1 before its final one (the one signing its link), kept before pruning
  const earlier = (await checkpointsOf(join(archiveOf(dir), '1')))[0]!;
  const archived = (await readdir(archiveOf(dir))).map(Number).sort((a, b) => a - b);
  const again = rotatingSink(dir, signer, { keepArchivedEpochs: archived.length - 2 });
  await again.start();
  await until('epochs 0 and 1 are pruned', () => archivedOf(again).filter((a) => a.pruned === true).length === 2);
  await again.stop(5000);
  const file = join(archiveOf(dir), '1', PRUNED_FILE);
  const record = JSON.parse(await readFile(file, 'utf8')) as PrunedEpochV1;
  assert.ok(earlier.tree_size < record.final_checkpoint.tree_size);
  return { dir, file, record, earlier, anchors, archived };
}

const epochOf = (receipt: DecisionReceiptV1): number => Number(/\/e(\d+)$/.exec(receipt.origin)?.[1] ?? '0');
const codeOf = (error: unknown): string => (isPavilionError(error) ? error.code : String(error));

describe('archive retention (keepArchivedEpochs)', () => {
  it('prunes all but the newest epochs to their seal and record; the chain still verifies; their decisions no longer prove', async () => {
    const dir = await tempDir();
    const { sink, receipts } = await filled(dir, 110, { keepArchivedEpochs: 2 });
    const archivedCount = archivedOf(sink).length;
    assert.ok(archivedCount >= 5, `rotated into ${archivedCount} archived epochs`);
    await until('the older epochs are pruned', () => archivedOf(sink).filter((a) => a.pruned === true).length === archivedCount - 2);
    const archived = archivedOf(sink);
    assert.deepEqual(archived.map((a) => a.pruned === true), archived.map((_, i) => i < archivedCount - 2), 'the newest two are kept whole');
    assert.equal((sink.status().details as Record<string, unknown>)['pruned_epochs'], archivedCount - 2);

    for (const { epoch, pruned } of archived) {
      const files = (await readdir(join(archiveOf(dir), String(epoch)))).sort();
      if (pruned === true) assert.deepEqual(files, [PRUNED_FILE, 'SEALED'], `epoch ${epoch}: only its seal and record are left`);
      else assert.ok(files.includes(WAL_FILE), `epoch ${epoch} keeps its log`);
    }

    // a decision of a kept epoch proves; one of a pruned epoch is unknown, saying why
    const keptReceipt = receipts.find((r) => epochOf(r) === archivedCount - 1)!;
    const proof = await sink.proveInclusion('bank', keptReceipt.decision_id, { signNow: false });
    assert.equal(verifyDecisionProof(proof, ring, { decisionId: keptReceipt.decision_id }).origin, keptReceipt.origin);
    await assert.rejects(sink.proveInclusion('bank', receipts[0]!.decision_id), (error: unknown) => {
      assert.equal(codeOf(error), ErrorCodes.AUDIT_DECISION_UNKNOWN);
      assert.match((error as Error).message, /pruned by retention/);
      assert.deepEqual((error as { details?: { prunedEpochs?: number[] } }).details?.prunedEpochs, Array.from({ length: archivedCount - 2 }, (_, i) => i));
      return true;
    });
    await sink.stop(5000);

    const verified = await verifyEpochs(archiveOf(dir), liveWal(dir), ring, { origin: ORIGIN });
    assert.equal(verified.linksChecked, archivedCount, 'every link checked, across the pruned epochs too');
    assert.deepEqual(verified.epochs.map((e) => e.pruned === true), [...archived.map((a) => a.pruned === true), false]);
    const record = JSON.parse(await readFile(join(archiveOf(dir), '1', PRUNED_FILE), 'utf8')) as PrunedEpochV1;
    assert.equal(record.epoch, 1);
    assert.equal(record.final_checkpoint.origin, `${ORIGIN}/e1`);
    assert.equal(record.streamed, false);
    assert.ok(record.removed_bytes > 0);
  });

  it('keeps every epoch by default (keepArchivedEpochs 0)', async () => {
    const dir = await tempDir();
    const { sink } = await filled(dir, 60);
    assert.equal(parseConfig({ decisionLog: { sink: 'audit', audit: { directory: dir } } }).decisionLog.audit?.keepArchivedEpochs, 0);
    await sink.stop(5000);
    const verified = await verifyEpochs(archiveOf(dir), liveWal(dir), ring, { origin: ORIGIN });
    assert.ok(verified.epochs.length >= 3);
    assert.ok(verified.epochs.every((e) => e.pruned === undefined), 'nothing pruned');
  });

  it('keeps at most UNROUTED_KEEP_ARCHIVED_EPOCHS of the _unrouted log (checks any caller can send) whole, even when every tenant keeps all of its own', async () => {
    const dir = await tempDir();
    const sink = rotatingSink(dir, signer);
    await sink.start();
    for (let i = 0; i < 110; i++) await sink.append(decisionEvent(i, { tenant: '' }));
    for (let i = 200; i < 260; i++) await sink.append(decisionEvent(i));
    const unrouted = (): Archived => archivedOf(sink, '_unrouted');
    await until('all but the newest two _unrouted epochs pruned', () => unrouted().length >= 5 && unrouted().filter((a) => a.pruned !== true).length === UNROUTED_KEEP_ARCHIVED_EPOCHS);
    assert.deepEqual(unrouted().map((a) => a.pruned === true), unrouted().map((_, i) => i < unrouted().length - UNROUTED_KEEP_ARCHIVED_EPOCHS), 'the newest two are kept whole');
    assert.ok(archivedOf(sink).length >= 3 && archivedOf(sink).every((a) => a.pruned !== true), "the tenant's own epochs are all kept (keepArchivedEpochs 0)");
    assert.equal(sinkTenants(sink)['_unrouted']!.details['keep_archived_epochs'], UNROUTED_KEEP_ARCHIVED_EPOCHS);
    assert.equal(sinkTenants(sink)['bank']!.details['keep_archived_epochs'], 0);
    await sink.stop(5000);
    const verified = await verifyEpochs(archiveOf(dir, '_unrouted'), join(liveOf(dir, '_unrouted'), WAL_FILE), ring, { origin: 'pavilion-test/_unrouted' });
    assert.equal(verified.epochs.filter((e) => e.pruned !== undefined).length, verified.epochs.length - 1 - UNROUTED_KEEP_ARCHIVED_EPOCHS, 'the chain still verifies across the pruned epochs');
  });

  it('refuses a keepArchivedEpochs that is not a count', () => {
    for (const keepArchivedEpochs of [-1, 1.5, 'two']) {
      assert.throws(() => parseConfig({ decisionLog: { sink: 'audit', audit: { directory: '/tmp/x', keepArchivedEpochs } } }), (error: unknown) => {
        assert.equal(codeOf(error), ErrorCodes.CONFIG_INVALID);
        assert.match((error as Error).message, /keepArchivedEpochs/);
        return true;
      });
    }
  });

  it('keeps an epoch whose log does not verify, says so in status, and prunes nothing after it', async () => {
    const { dir } = await sealedArchive();
    // an edited decision in epoch 1 (framing rewritten, so only the tree and the checkpoints notice)
    const epoch1 = join(archiveOf(dir), '1');
    const { header, records } = await readRecords(epoch1);
    const edited = records.map((r, i) => (i === 3 ? { ...r, payload: Buffer.from(r.payload.toString('utf8').replace('"result":', '"result_edited":'), 'utf8') } : r));
    await writeRecords(epoch1, header, edited);

    const sink = rotatingSink(dir, signer, { keepArchivedEpochs: 1 });
    await sink.start();
    await until('the retention pass reports the epoch it could not prune', () => sink.status().state === 'WARN');
    assert.match(sink.status().message ?? '', /archive retention stopped: archived epoch 1 does not verify, so it is kept with every epoch after it: .*changed/);
    const archived = archivedOf(sink);
    assert.equal(archived.find((a) => a.epoch === 0)?.pruned, true, 'epoch 0 (before it) is pruned');
    assert.ok(archived.filter((a) => a.epoch >= 1).every((a) => a.pruned === undefined), 'epoch 1 and after are kept whole');
    assert.ok((await readdir(epoch1)).includes(WAL_FILE), 'the edited log is evidence and stays');
    await sink.stop(5000);
  });

  it('verifies an epoch on a thread of its own: the record and the typed errors are the in-process ones; a deadline or a stop ends the thread', async () => {
    const { dir } = await sealedArchive();
    const keys = join(dir, 'keys');
    const facts = { prunedAt: '2026-01-01T00:00:00.000Z', removedBytes: 1, streamed: false };
    const epoch1 = join(archiveOf(dir), '1');
    const wal1 = join(epoch1, WAL_FILE);
    assert.deepEqual(await prunedEpochRecordOnThread(wal1, 1, keys, `${ORIGIN}/e1`, facts), await prunedEpochRecord(wal1, 1, ring, `${ORIGIN}/e1`, facts));

    // a refusal keeps its code, message and details across the thread
    const sameRefusal = async (origin: string): Promise<string> => {
      const inProcess = await prunedEpochRecord(wal1, 1, ring, origin, facts).then(() => undefined, (e: unknown) => e);
      const onThread = await prunedEpochRecordOnThread(wal1, 1, keys, origin, facts).then(() => undefined, (e: unknown) => e);
      assert.ok(isPavilionError(onThread), String(onThread));
      assert.ok(isPavilionError(inProcess), String(inProcess));
      assert.deepEqual([onThread.code, onThread.message, onThread.details], [inProcess.code, inProcess.message, inProcess.details]);
      return onThread.code;
    };
    assert.equal(await sameRefusal(`${ORIGIN}/e7`), ErrorCodes.AUDIT_CHECKPOINT_INVALID, 'another log\'s origin');
    const { header, records } = await readRecords(epoch1);
    const leaf = records.filter((r) => r.type === RecordType.LEAF)[2]!;
    await writeRecords(epoch1, header, records.map((r) => (r === leaf ? { ...r, payload: Buffer.from(r.payload.toString('utf8').replace('decision-', 'decisioN-')) } : r)));
    assert.equal(await sameRefusal(`${ORIGIN}/e1`), ErrorCodes.AUDIT_ROOT_MISMATCH, 'a leaf edited in, its frame rewritten');
    await assert.rejects(prunedEpochRecordOnThread(wal1, 1, join(dir, 'no-keys'), `${ORIGIN}/e1`, facts), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_SIGNER_CONFIG));

    const wal0 = join(archiveOf(dir), '0', WAL_FILE);
    // a thread cannot start, let alone read the file, within a millisecond
    await assert.rejects(prunedEpochRecordOnThread(wal0, 0, keys, ORIGIN, facts, { timeoutMs: 1 }), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_LOG_IO) && /for its verification did not finish within 1 ms/.test(e.message));
    const stopping = new AbortController();
    const asked = prunedEpochRecordOnThread(wal0, 0, keys, ORIGIN, facts, { signal: stopping.signal });
    stopping.abort();
    await assert.rejects(asked, (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_LOG_CLOSED));
  });

  it('finishes a pruning cut short between the record and the removal', async () => {
    const { dir } = await sealedArchive();
    // the state a crash right after the record leaves: PRUNED written, the log still there
    const epoch0 = join(archiveOf(dir), '0');
    const record = await prunedEpochRecord(join(epoch0, WAL_FILE), 0, ring, ORIGIN, { prunedAt: '2026-01-01T00:00:00.000Z', removedBytes: 1, streamed: false });
    const text = `${JSON.stringify(record)}\n`;
    await writeFile(join(epoch0, PRUNED_FILE), text);
    // keep every epoch but epoch 0 whole
    const sink = rotatingSink(dir, signer, { keepArchivedEpochs: (await readdir(archiveOf(dir))).length - 1 });
    await sink.start();
    await until('the removal is finished', async () => (await readdir(epoch0)).length === 2);
    assert.deepEqual((await readdir(epoch0)).sort(), [PRUNED_FILE, 'SEALED']);
    assert.equal(await readFile(join(epoch0, PRUNED_FILE), 'utf8'), text, 'the record is not written again');
    assert.equal(sink.status().state, 'OK');
    await sink.stop(5000);
    await verifyEpochs(archiveOf(dir), liveWal(dir), ring, { origin: ORIGIN });
  });

  it('finishes a pruning cut short even when the rules no longer reach the epoch (retention changed since)', async () => {
    const { dir } = await sealedArchive();
    const epoch0 = join(archiveOf(dir), '0');
    const record = await prunedEpochRecord(join(epoch0, WAL_FILE), 0, ring, ORIGIN, { prunedAt: '2026-01-01T00:00:00.000Z', removedBytes: 1, streamed: false });
    await writeFile(join(epoch0, PRUNED_FILE), `${JSON.stringify(record)}\n`);
    // every archived epoch kept by count: only the record says epoch 0 was being pruned
    const sink = rotatingSink(dir, signer, { keepArchivedEpochs: (await readdir(archiveOf(dir))).length });
    await sink.start();
    await until('the removal is finished', async () => (await readdir(epoch0)).length === 2);
    assert.deepEqual(archivedOf(sink).map((a) => a.pruned === true).slice(0, 2), [true, false], 'epoch 0 only');
    await sink.stop(5000);
  });

  it('keeps a log cut back to an earlier checkpoint: it verifies alone, but not against its seal', async () => {
    const { dir } = await sealedArchive();
    const epoch1 = join(archiveOf(dir), '1');
    const { header, records } = await readRecords(epoch1);
    const checkpoints = records.filter((r) => r.type === RecordType.CHECKPOINT);
    assert.ok(checkpoints.length >= 2, 'epoch 1 has a checkpoint before its final one (its link\'s)');
    await writeRecords(epoch1, header, records.slice(0, records.indexOf(checkpoints.at(-2)!) + 1));
    const sink = rotatingSink(dir, signer, { keepArchivedEpochs: 1 });
    await sink.start();
    await until('the pass reports it', () => sink.status().state === 'WARN');
    assert.match(sink.status().message ?? '', /archived epoch 1 does not verify, so it is kept .*its final checkpoint gives tree_size \d+, its seal \d+/);
    assert.ok((await readdir(epoch1)).includes(WAL_FILE), 'the cut log stays');
    assert.deepEqual(archivedOf(sink).filter((a) => a.pruned === true).map((a) => a.epoch), [0], 'only epoch 0, before it, is pruned');
    await sink.stop(5000);
  });

  it('a PRUNED record beside a log that it does not match: the log is kept and verified, not the record', async () => {
    const { dir } = await sealedArchive();
    const epoch1 = join(archiveOf(dir), '1');
    const genuine = await prunedEpochRecord(join(epoch1, WAL_FILE), 1, ring, `${ORIGIN}/e1`, { prunedAt: '2026-01-01T00:00:00.000Z', removedBytes: 1, streamed: false });
    const earlier = (await checkpointsOf(epoch1))[0]!;
    await writeFile(join(epoch1, PRUNED_FILE), JSON.stringify({ ...genuine, final_checkpoint: earlier }));
    const sink = rotatingSink(dir, signer, { keepArchivedEpochs: 1 });
    await sink.start();
    await until('the pass reports it', () => /PRUNED record does not match its log/.test(sink.status().message ?? ''));
    assert.ok((await readdir(epoch1)).includes(WAL_FILE), 'the log stays');
    await sink.stop(5000);
    const verified = await verifyEpochs(archiveOf(dir), liveWal(dir), ring, { origin: ORIGIN });
    assert.equal(verified.epochs[1]!.pruned, undefined, 'epoch 1 was verified from its log');
  });

  /** A rotated log whose retention pass (epoch 0 only) is held once epoch 0 is recorded and marked pruned. */
  async function heldAtEpoch0(): Promise<{ dir: string; sink: AuditLogSink; receipts: DecisionReceiptV1[]; keep: number; release: () => void }> {
    const { dir, receipts } = await sealedArchive();
    const keep = (await readdir(archiveOf(dir))).length - 1;
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    let marked = false;
    const sink = rotatingSink(dir, signer, { keepArchivedEpochs: keep }, undefined, {
      onPruneMarked: async (_tenant, epoch) => {
        if (epoch !== 0) return;
        marked = true;
        await held;
      },
    });
    await sink.start();
    await until('epoch 0 is recorded and marked pruned', () => marked);
    return { dir, sink, receipts, keep, release };
  }

  it('an epoch marked pruned proves none of its decisions, even while its log is still there', async () => {
    const { dir, sink, receipts, release } = await heldAtEpoch0();
    try {
      assert.ok((await readdir(join(archiveOf(dir), '0'))).includes(WAL_FILE), 'its log is not removed yet');
      const inEpoch0 = receipts.find((r) => epochOf(r) === 0)!;
      await assert.rejects(sink.proveInclusion('bank', inEpoch0.decision_id), (error: unknown) => {
        assert.equal(codeOf(error), ErrorCodes.AUDIT_DECISION_UNKNOWN);
        assert.match((error as Error).message, /pruned by retention/);
        return true;
      });
      // a decision of a kept epoch still proves meanwhile
      const inEpoch1 = receipts.find((r) => epochOf(r) === 1)!;
      assert.equal((await sink.proveInclusion('bank', inEpoch1.decision_id, { signNow: false })).leaf_index, inEpoch1.leaf_index);
    } finally {
      release();
      await sink.stop(5000);
    }
  });

  it('stop() during a pass gives the live log its final checkpoint; the pass removes nothing after it, and the next start does', async () => {
    const { dir, sink, keep, release } = await heldAtEpoch0();
    // leaves no checkpoint covers yet: stop() must sign them
    for (let i = 0; i < 3; i++) await sink.append(decisionEvent(5000 + i));
    // the held pass is only a promise: keep the event loop alive while stop() waits for it (at most
    // 1 s, on an unref'd timer, as a real pass would keep it alive with its file I/O)
    const alive = setInterval(() => undefined, 50);
    try {
      await sink.stop(5000); // returns although the pass is held
    } finally {
      clearInterval(alive);
    }
    release();
    for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
    assert.ok((await readdir(join(archiveOf(dir), '0'))).includes(WAL_FILE), 'the pass saw the sink stopped and removed nothing');
    const verified = await verifyEpochs(archiveOf(dir), liveWal(dir), ring, { origin: ORIGIN });
    assert.equal(verified.epochs.at(-1)!.unsignedLeaves, 0, 'the live log got its final checkpoint');
    assert.equal(verified.epochs[0]!.pruned, undefined, 'epoch 0 is verified from its log while it is there');

    // the pass was still running when stop() returned: the tenant's lock stays, stale once the
    // process has exited (here: as a process gone would leave it)
    const tenantLock = join(dir, 'tenants', '.bank.lock');
    assert.match(await readFile(tenantLock, 'utf8'), new RegExp(`^${process.pid} `), 'kept while the pass may still touch the archive');
    await writeFile(tenantLock, '2147483646 exited\n');
    const again = rotatingSink(dir, signer, { keepArchivedEpochs: keep });
    await again.start();
    await until('the next start removes it', async () => (await readdir(join(archiveOf(dir), '0'))).length === 2);
    await again.stop(5000);
    assert.equal((await verifyEpochs(archiveOf(dir), liveWal(dir), ring, { origin: ORIGIN })).epochs[0]!.pruned, true);
  });

  it('with streaming, prunes an epoch JetStream held all of', async () => {
    const { dir } = await sealedArchive();
    // as a sink that streamed would have sealed them
    for (const name of await readdir(archiveOf(dir))) {
      const file = join(archiveOf(dir), name, 'SEALED');
      await writeFile(file, JSON.stringify({ ...JSON.parse(await readFile(file, 'utf8')), streamed: true }));
    }
    const sink = rotatingSink(dir, signer, { keepArchivedEpochs: 1 });
    sink.useStreamProgress({ streamPosition: () => undefined });
    await sink.start();
    const count = (await readdir(archiveOf(dir))).length;
    await until('all but the newest are pruned', () => archivedOf(sink).filter((a) => a.pruned === true).length === count - 1);
    assert.equal(sink.status().state, 'OK');
    await sink.stop(5000);
    const record = JSON.parse(await readFile(join(archiveOf(dir), '0', PRUNED_FILE), 'utf8')) as PrunedEpochV1;
    assert.equal(record.streamed, true);
  });

  it('with streaming, keeps whole an epoch JetStream did not hold all of when it was sealed', async () => {
    const { dir } = await sealedArchive(); // sealed without streaming: SEALED says streamed false
    const sink = rotatingSink(dir, signer, { keepArchivedEpochs: 1 });
    // a forwarder that reads no log yet (no rotation starts: this checks retention alone)
    sink.useStreamProgress({ streamPosition: () => undefined });
    await sink.start();
    await until('status says why the epochs are kept', () => /JetStream did not hold all of it/.test(sink.status().message ?? ''));
    assert.ok(archivedOf(sink).every((a) => a.pruned === undefined), 'nothing pruned');
    await sink.stop(5000);
  });
});

describe('a PRUNED record is checked, not trusted', () => {
  const verifyCode = async (dir: string): Promise<string> =>
    verifyEpochs(archiveOf(dir), liveWal(dir), ring, { origin: ORIGIN }).then(() => 'verified', codeOf);

  it('a forged signature on the final checkpoint: ERR_AUDIT_SIGNATURE_INVALID', async () => {
    const { dir, file, record } = await prunedArchive();
    const signature = Buffer.from(record.final_checkpoint.signature, 'base64');
    signature[5] = (signature[5] as number) ^ 1;
    await writeFile(file, JSON.stringify({ ...record, final_checkpoint: { ...record.final_checkpoint, signature: signature.toString('base64') } }));
    assert.equal(await verifyCode(dir), ErrorCodes.AUDIT_SIGNATURE_INVALID);
  });

  it('a first leaf that is not leaf 0 of the final checkpoint: ERR_AUDIT_EPOCH_LINK_BROKEN', async () => {
    const { dir, file, record } = await prunedArchive();
    await writeFile(file, JSON.stringify({ ...record, first_leaf: record.first_leaf!.replace('"epoch":1', '"epoch":1 ') }));
    assert.equal(await verifyCode(dir), ErrorCodes.AUDIT_EPOCH_LINK_BROKEN);
  });

  it("another epoch's final checkpoint (validly signed) in the record: refused as a checkpoint of another log", async () => {
    const { dir, file, record } = await prunedArchive();
    const other = JSON.parse(await readFile(join(archiveOf(dir), '0', PRUNED_FILE), 'utf8')) as PrunedEpochV1;
    await writeFile(file, JSON.stringify({ ...record, final_checkpoint: other.final_checkpoint }));
    // epoch 0's checkpoint names epoch 0's log: refused as a checkpoint of another log
    assert.equal(await verifyCode(dir), ErrorCodes.AUDIT_CHECKPOINT_INVALID);
  });

  it('an earlier checkpoint of the same epoch (validly signed) as its final one: ERR_AUDIT_EPOCH_LINK_BROKEN', async () => {
    const { dir, file, record, earlier } = await prunedArchive();
    // the link's own checkpoint (tree size 1), with the link's inclusion path in that tree (none):
    // the record holds together, so only the next epoch's link can tell it is not the final one
    assert.equal(earlier.tree_size, 1);
    await writeFile(file, JSON.stringify({ ...record, final_checkpoint: earlier, first_leaf_inclusion_path: [] }));
    const failure = await verifyEpochs(archiveOf(dir), liveWal(dir), ring, { origin: ORIGIN }).then(() => undefined, (error: unknown) => error as Error);
    assert.equal(codeOf(failure), ErrorCodes.AUDIT_EPOCH_LINK_BROKEN);
    assert.match(failure?.message ?? '', /epoch 2 .*its link names tree_size \d+ for epoch 1, whose final checkpoint gives 1/);
  });

  it('a pruned epoch removed whole: the epoch after it names it missing', async () => {
    const { dir } = await prunedArchive();
    const { rm } = await import('node:fs/promises');
    await rm(join(archiveOf(dir), '1'), { recursive: true });
    assert.equal(await verifyCode(dir), ErrorCodes.AUDIT_EPOCH_LINK_BROKEN);
  });

  it('a trusted checkpoint of a pruned epoch other than its final one cannot be checked: ERR_AUDIT_LOG_TRUNCATED; a forged one: ERR_AUDIT_SIGNATURE_INVALID', async () => {
    const { dir, record, earlier } = await prunedArchive();
    const forged = { ...record.final_checkpoint, tree_size: record.final_checkpoint.tree_size - 1 };
    assert.equal(await verifyEpochs(archiveOf(dir), liveWal(dir), ring, { origin: ORIGIN, trustedCheckpoints: [forged] }).then(() => 'verified', codeOf), ErrorCodes.AUDIT_SIGNATURE_INVALID);
    const code = await verifyEpochs(archiveOf(dir), liveWal(dir), ring, { origin: ORIGIN, trustedCheckpoints: [earlier] }).then(() => 'verified', codeOf);
    assert.equal(code, ErrorCodes.AUDIT_LOG_TRUNCATED);
    // one at the final size with another root, validly signed: a fork, not "cannot be checked"
    const fork = await forkOf(record.final_checkpoint, 'ef'.repeat(32), signer);
    const forkFailure = await verifyEpochs(archiveOf(dir), liveWal(dir), ring, { origin: ORIGIN, trustedCheckpoints: [fork] }).then(() => undefined, (error: unknown) => error as Error);
    assert.equal(codeOf(forkFailure), ErrorCodes.AUDIT_ROOT_MISMATCH);
    assert.equal((forkFailure as { details?: Record<string, unknown> }).details?.['forked'], true);
    // its final checkpoint itself is checked and passes
    await verifyEpochs(archiveOf(dir), liveWal(dir), ring, { origin: ORIGIN, trustedCheckpoints: [record.final_checkpoint] });
  });
});

describe('a pruned epoch against its anchors', () => {
  it('the last epoch of the archive pruned with an earlier checkpoint as its final one: refused by the anchors past it (ERR_AUDIT_LOG_TRUNCATED), though the record holds together', async () => {
    const { dir, anchors, record, earlier, archived } = await prunedArchive(true);
    // epoch 1 made the archive's last (the later ones moved away), its record naming its link's checkpoint
    for (const epoch of archived.filter((e) => e > 1)) await rename(join(archiveOf(dir), String(epoch)), join(dir, `away-${epoch}`));
    assert.equal(earlier.tree_size, 1);
    await writeFile(join(archiveOf(dir), '1', PRUNED_FILE), JSON.stringify({ ...record, final_checkpoint: earlier, first_leaf_inclusion_path: [] }));
    const verifier = new FileAnchorVerifier({ path: anchors });
    assert.equal((await verifyEpochs(archiveOf(dir), undefined, ring, { origin: ORIGIN })).epochs.length, 2, 'without anchor checks it passes: nothing else tells');
    const failure = await verifyEpochs(archiveOf(dir), undefined, ring, { origin: ORIGIN, anchorVerifiers: [verifier] }).then(() => undefined, (error: unknown) => error as Error);
    assert.equal(codeOf(failure), ErrorCodes.AUDIT_LOG_TRUNCATED);
    assert.equal((failure as { details?: Record<string, unknown> }).details?.['epoch'], 1);
    assert.match(failure?.message ?? '', /pruned epoch 1 keeps a final checkpoint at 1/);
    // the genuine record passes the same checks
    await writeFile(join(archiveOf(dir), '1', PRUNED_FILE), JSON.stringify(record));
    const verified = await verifyEpochs(archiveOf(dir), undefined, ring, { origin: ORIGIN, anchorVerifiers: [verifier] });
    assert.equal(verified.epochs[1]!.anchoredOutsideSize, record.final_checkpoint.tree_size);
  });

  it('a live log given that is not the newest (an epoch after it is anchored): ERR_AUDIT_LOG_TRUNCATED', async () => {
    const { dir, anchors, archived } = await prunedArchive(true);
    const newest = archived.at(-1)!;
    // the newest archived epoch handed over as if it were the live log
    await rename(join(archiveOf(dir), String(newest)), join(dir, 'stale'));
    const options = { origin: ORIGIN, anchorVerifiers: [new FileAnchorVerifier({ path: anchors })] };
    const failure = await verifyEpochs(archiveOf(dir), join(dir, 'stale', WAL_FILE), ring, options).then(() => undefined, (error: unknown) => error as Error);
    assert.equal(codeOf(failure), ErrorCodes.AUDIT_LOG_TRUNCATED);
    assert.match(failure?.message ?? '', new RegExp(`an epoch after the live log given \\(epoch ${newest}\\)`));
    await rename(join(dir, 'stale'), join(archiveOf(dir), String(newest)));
    await verifyEpochs(archiveOf(dir), liveWal(dir), ring, options);
  });
});

describe('retention by age (rotateAfterMs, keepArchivedDays)', () => {
  const HOUR_MS = 3_600_000;
  const DAY_MS = 24 * HOUR_MS;

  interface Aging {
    readonly sink: AuditLogSink;
    readonly clock: { now: number };
    /** Every rotation step the sink took, in order (a rotation that starts shows here first). */
    readonly steps: string[];
  }

  /** A sink rotating by age only (no size threshold), on a clock the test moves; every decision checkpointed at once. */
  async function agingSink(directory: string, settings: Partial<AuditLogSettings>, clock = { now: Date.parse('2026-01-01T00:00:00.000Z') }): Promise<Aging> {
    const steps: string[] = [];
    const sink = rotatingSink(directory, signer, { rotateAtBytes: 0, checkpointEveryEvents: 1, clock: () => clock.now, ...settings }, (step, tenant) => {
      steps.push(`${tenant}:${step}`);
    });
    await sink.start();
    return { sink, clock, steps };
  }

  /** Log `count` decisions of `tenant` and wait until a checkpoint covers them (the age of an epoch counts from it). */
  async function logDecisions(sink: AuditLogSink, from: number, count: number, tenant = 'bank'): Promise<DecisionReceiptV1[]> {
    const receipts: DecisionReceiptV1[] = [];
    for (let i = 0; i < count; i++) receipts.push(await sink.append(decisionEvent(from + i, { tenant })));
    const last = receipts.at(-1) as DecisionReceiptV1;
    await until('a checkpoint covers the decisions', () => ((sinkTenants(sink)[tenant]!.details['checkpoint_size'] as number | undefined) ?? 0) > last.leaf_index);
    return receipts;
  }

  /**
   * Each day `count` decisions per tenant, then a day later the check that seals them: epoch
   * `day` of each. The time of each epoch's newest decision (its final checkpoint's), and the
   * receipts in order.
   */
  async function sealDays(aging: Aging, days: number, options: { readonly tenants?: readonly string[]; readonly count?: number } = {}): Promise<{ newest: number[]; receipts: DecisionReceiptV1[] }> {
    const { tenants = ['bank'], count = 2 } = options;
    const newest: number[] = [];
    const receipts: DecisionReceiptV1[] = [];
    for (let day = 0; day < days; day++) {
      for (const tenant of tenants) receipts.push(...(await logDecisions(aging.sink, day * 10, count, tenant)));
      newest.push(aging.clock.now);
      aging.clock.now += DAY_MS;
      await aging.sink.enforceRetention();
      for (const tenant of tenants) await until(`epoch ${day} of ${tenant} is sealed`, () => archivedOf(aging.sink, tenant).length === day + 1);
    }
    return { newest, receipts };
  }

  const sealFile = (dir: string, epoch: number, tenant = 'bank'): string => join(archiveOf(dir, tenant), String(epoch), 'SEALED');
  const readSeal = async (dir: string, epoch: number, tenant = 'bank'): Promise<Record<string, unknown>> => JSON.parse(await readFile(sealFile(dir, epoch, tenant), 'utf8')) as Record<string, unknown>;

  /** No rotation starts within 300 ms (one that did shows its first step by then: freezing is a checkpoint at most). */
  async function noRotation(aging: Aging, why: string): Promise<void> {
    const before = aging.steps.length;
    await aging.sink.enforceRetention();
    await sleep(300);
    assert.deepEqual(aging.steps.slice(before), [], why);
  }

  it('seals a live epoch once its oldest decision is rotateAfterMs old, with no event to prompt it; one holding only its link stays live', async () => {
    const dir = await tempDir();
    const aging = await agingSink(dir, { rotateAfterMs: HOUR_MS });
    const { sink, clock } = aging;
    await logDecisions(sink, 0, 3);
    clock.now += HOUR_MS - 60_000;
    await noRotation(aging, 'not yet an hour old: still live');

    clock.now += 2 * 60_000;
    await sink.enforceRetention();
    await until('epoch 0 is sealed', () => archivedOf(sink).length === 1);
    assert.equal((await readSeal(dir, 0))['sealed_at'], '2026-01-01T00:00:00.000Z', 'its seal names its final checkpoint\'s time: that of its newest decision\'s checkpoint');

    clock.now += 10 * HOUR_MS;
    await noRotation(aging, 'the new epoch holds only its link: nothing to seal');

    const [late] = await logDecisions(sink, 3, 1);
    clock.now += HOUR_MS;
    await sink.enforceRetention();
    await until('epoch 1 is sealed an hour after its first decision', () => archivedOf(sink).length === 2);
    await sink.stop(5000);
    const verified = await verifyEpochs(archiveOf(dir), liveWal(dir), ring, { origin: ORIGIN });
    assert.equal(verified.epochs.length, 3, 'two sealed epochs and the live one, chained');
    assert.equal(epochOf(late as DecisionReceiptV1), 1);
  });

  it('checks by itself once a minute (RETENTION_CHECK_INTERVAL_MS), with no event and no call', async (t) => {
    t.mock.timers.enable({ apis: ['setInterval'] });
    const dir = await tempDir();
    const { sink, clock } = await agingSink(dir, { rotateAfterMs: HOUR_MS });
    await logDecisions(sink, 0, 2);
    clock.now += 2 * HOUR_MS;
    t.mock.timers.tick(RETENTION_CHECK_INTERVAL_MS - 1);
    await sleep(300);
    assert.deepEqual(archivedOf(sink), [], 'not before the minute is up');
    t.mock.timers.tick(1);
    await until('the minute\'s check seals epoch 0', () => archivedOf(sink).length === 1);
    await sink.stop(5000);
  });

  it('prunes each archived epoch once its newest decision is keepArchivedDays old, with no event; younger ones stay whole; the chain still verifies', async () => {
    const dir = await tempDir();
    const aging = await agingSink(dir, { rotateAfterMs: DAY_MS, keepArchivedDays: 30 });
    const { sink, clock } = aging;
    const { newest: seals, receipts } = await sealDays(aging, 3, { count: 5 });
    const live = await logDecisions(sink, 100, 2);

    // a minute short of 30 days after epoch 0's newest decision: nothing is pruned; the live
    // epoch's decisions (27 days old by then) are sealed into epoch 3
    clock.now = (seals[0] as number) + 30 * DAY_MS - 60_000;
    await sink.enforceRetention();
    await until('the live epoch is sealed', () => archivedOf(sink).length === 4);
    await sink.enforceRetention();
    assert.ok(archivedOf(sink).every((a) => a.pruned === undefined), 'nothing pruned');

    clock.now = (seals[0] as number) + 30 * DAY_MS;
    await sink.enforceRetention();
    assert.deepEqual(archivedOf(sink).map((a) => a.pruned === true), [true, false, false, false], 'epoch 0 is 30 days old: pruned');
    await assert.rejects(sink.proveInclusion('bank', receipts[0]!.decision_id), (error: unknown) => codeOf(error) === ErrorCodes.AUDIT_DECISION_UNKNOWN);
    assert.equal((await sink.proveInclusion('bank', receipts[5]!.decision_id)).leaf_index, receipts[5]!.leaf_index, 'a decision of epoch 1 still proves');

    clock.now = (seals[2] as number) + 30 * DAY_MS;
    await sink.enforceRetention();
    assert.deepEqual(archivedOf(sink).map((a) => a.pruned === true), [true, true, true, false], 'epochs 1 and 2 too; epoch 3 (a day younger) is kept');
    const proof = await sink.proveInclusion('bank', live[0]!.decision_id);
    assert.match(proof.checkpoint.origin, /\/e3$/, 'the decisions sealed from the live epoch prove from epoch 3');
    assert.equal(sink.status().state, 'OK');
    await sink.stop(5000);
    const verified = await verifyEpochs(archiveOf(dir), liveWal(dir), ring, { origin: ORIGIN });
    assert.deepEqual(verified.epochs.map((e) => e.pruned !== undefined), [true, true, true, false, false], 'pruned epochs and kept ones, chained to the live one');
  });

  it('with keepArchivedEpochs too, whichever rule prunes first', async () => {
    const dir = await tempDir();
    const aging = await agingSink(dir, { rotateAfterMs: DAY_MS, keepArchivedDays: 30, keepArchivedEpochs: 3 });
    const { newest: seals } = await sealDays(aging, 4);
    await aging.sink.enforceRetention();
    assert.deepEqual(archivedOf(aging.sink).map((a) => a.pruned === true), [true, false, false, false], 'by count: all but the newest 3');
    aging.clock.now = (seals[1] as number) + 30 * DAY_MS;
    await aging.sink.enforceRetention();
    assert.deepEqual(archivedOf(aging.sink).map((a) => a.pruned === true), [true, true, false, false], 'by age: epoch 1, which the count keeps');
    await aging.sink.stop(5000);
  });

  it('an epoch sealed without a seal time (by an earlier version) is kept by age, with every later one, and only its tenant\'s status says so; with the seal time back, both go', async () => {
    const dir = await tempDir();
    const first = await agingSink(dir, { rotateAfterMs: DAY_MS });
    await sealDays(first, 2, { tenants: ['bank', 'acme'] });
    await first.sink.stop(5000);
    const original = await readSeal(dir, 0);
    const { sealed_at: _dropped, ...legacy } = original;
    await writeFile(sealFile(dir, 0), `${JSON.stringify(legacy)}\n`);

    const later = { now: first.clock.now + 400 * DAY_MS };
    const second = await agingSink(dir, { rotateAfterMs: DAY_MS, keepArchivedDays: 1 }, later);
    await second.sink.enforceRetention(); // bank's pass, then acme's (which prunes all of acme's)
    assert.ok(archivedOf(second.sink, 'bank').every((a) => a.pruned === undefined), 'nothing of bank pruned: epoch 0 comes first and its age is unknown');
    assert.deepEqual(archivedOf(second.sink, 'acme').map((a) => a.pruned === true), [true, true], 'acme\'s epochs, sealed with their time, are pruned');
    const warning = /bank: archived epoch 0 has no seal time \(sealed by an earlier version\): retention by age keeps it and every later one/;
    assert.equal(second.sink.status().state, 'WARN', 'acme\'s clean pass after bank\'s does not clear bank\'s warning');
    assert.match(second.sink.status().message ?? '', warning);
    assert.match(String(sinkTenants(second.sink)['bank']!.details['retention_error']), warning);
    assert.equal(sinkTenants(second.sink)['acme']!.details['retention_error'], undefined);
    await second.sink.stop(5000);

    // the control: the same archive with epoch 0's seal time back prunes both of bank's
    await writeFile(sealFile(dir, 0), `${JSON.stringify(original)}\n`);
    const third = await agingSink(dir, { rotateAfterMs: DAY_MS, keepArchivedDays: 1 }, later);
    await third.sink.enforceRetention();
    assert.deepEqual(archivedOf(third.sink, 'bank').map((a) => a.pruned === true), [true, true]);
    assert.equal(third.sink.status().state, 'OK');
    await third.sink.stop(5000);
  });

  it('a seal time that is not the final checkpoint\'s (SEALED is unsigned): the epoch is kept, evidence, and status says why', async () => {
    const dir = await tempDir();
    const first = await agingSink(dir, { rotateAfterMs: DAY_MS });
    await sealDays(first, 2);
    await first.sink.stop(5000);
    // an edited seal that would make epoch 1 look a year older than its decisions
    const seal = await readSeal(dir, 1);
    await writeFile(sealFile(dir, 1), `${JSON.stringify({ ...seal, sealed_at: '2025-01-01T00:00:00.000Z' })}\n`);

    const { sink } = await agingSink(dir, { rotateAfterMs: DAY_MS, keepArchivedDays: 30 }, { now: first.clock.now + 10 * DAY_MS });
    await sink.enforceRetention();
    assert.ok(archivedOf(sink).every((a) => a.pruned === undefined), 'nothing pruned: epoch 0 is 11 days old, and epoch 1\'s seal time is not its own');
    assert.equal(sink.status().state, 'OK', 'an epoch the rules do not reach is not checked');
    await sink.stop(5000);

    // 30 days and a minute after epoch 0's newest decision (epoch 1's is a day younger): epoch 0
    // is due; epoch 1 is reached only through the time its seal claims, which is checked
    const { sink: due } = await agingSink(dir, { rotateAfterMs: DAY_MS, keepArchivedDays: 30 }, { now: first.clock.now - 2 * DAY_MS + 30 * DAY_MS + 60_000 });
    await due.enforceRetention();
    assert.deepEqual(archivedOf(due).map((a) => a.pruned === true), [true, false]);
    assert.equal(due.status().state, 'WARN');
    assert.match(due.status().message ?? '', /archived epoch 1 does not verify, so it is kept with every epoch after it: .*final checkpoint's time is 2026-01-02T00:00:00.000Z, its seal's sealed_at 2025-01-01T00:00:00.000Z/);
    assert.ok((await readdir(join(archiveOf(dir), '1'))).includes(WAL_FILE), 'its log stays');
    await due.stop(5000);
  });

  it('config: both default to 0; keepArchivedDays needs rotateAfterMs; rotateAfterMs is 0 or at least a minute', () => {
    const audit = (extra: Record<string, unknown>) => parseConfig({ decisionLog: { sink: 'audit', audit: { directory: '/tmp/x', ...extra } } }).decisionLog.audit;
    assert.equal(audit({})?.rotateAfterMs, 0);
    assert.equal(audit({})?.keepArchivedDays, 0);
    assert.equal(audit({ rotateAfterMs: 86_400_000, keepArchivedDays: 2555 })?.keepArchivedDays, 2555);
    for (const [extra, field] of [
      [{ keepArchivedDays: 30 }, /keepArchivedDays.*needs rotateAfterMs/],
      [{ rotateAfterMs: 59_999 }, /rotateAfterMs.*at least 60000/],
      [{ rotateAfterMs: 86_400_000, keepArchivedDays: 1.5 }, /keepArchivedDays/],
      [{ rotateAfterMs: -1 }, /rotateAfterMs/],
    ] as const) {
      assert.throws(() => audit(extra), (error: unknown) => codeOf(error) === ErrorCodes.CONFIG_INVALID && field.test((error as Error).message), JSON.stringify(extra));
    }
  });
});
