/**
 * The per-tenant audit log: durable appends with receipts, group commit, checkpoints,
 * inclusion proofs checked offline, restart and torn-tail recovery, the disk budget, key
 * rotation, and every refusal with its code.
 */
import assert from 'node:assert/strict';
import { appendFile, readFile, readdir, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { hashLeaf } from '../sidecar/src/audit/merkle/index.ts';
import {
  AuditLog,
  FILE_HEADER_BYTES,
  FRAME_OVERHEAD_BYTES,
  RecordType,
  SoftwareSigner,
  type AuditLogOptions,
  type CheckpointSigner,
  decisionIdOf,
  decodeCheckpoint,
  encodeEvent,
  verifyDecisionProof,
  verifyLogFile,
} from '../sidecar/src/audit/log/index.ts';
import { CHECKPOINT_HEADROOM_BYTES } from '../sidecar/src/audit/log/wal-writer.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { until } from './harness/wait.ts';
import { appendMany, decisionEvent, logOptions, openLog, readRecords, ringOf, tempDir, walPath } from './audit/fixtures.ts';

async function rejectsCode(promise: Promise<unknown> | (() => unknown), code: string): Promise<void> {
  await assert.rejects(async () => (typeof promise === 'function' ? promise() : promise), (error: unknown) => {
    assert.ok(isPavilionError(error), `expected a PavilionError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    return true;
  });
}

describe('appending', () => {
  it('acknowledges each decision with its sequence number once the record is on disk', async () => {
    const dir = await tempDir();
    const log = await openLog(dir);
    const receipts = [];
    for (let i = 0; i < 5; i++) receipts.push(await log.append(decisionEvent(i)));
    assert.deepEqual(receipts.map((r) => r.leaf_index), [0, 1, 2, 3, 4]);
    const { records } = await readRecords(dir);
    assert.equal(records.length, 5, 'every acknowledged record is in the file before stop');
    assert.equal((await stat(walPath(dir))).mode & 0o777, 0o600, 'events may hold personal data: owner-only');
    for (const [i, record] of records.entries()) {
      assert.equal(record.type, RecordType.LEAF);
      assert.equal(record.index, i);
      assert.equal(hashLeaf(record.payload).toString('hex'), receipts[i]!.leaf_hash);
      assert.equal(JSON.parse(record.payload.toString('utf8')).decision_id, decisionEvent(i).decision_id);
    }
    const first = receipts[0]!;
    assert.equal(first.decision_id, 'decision-000000');
    assert.equal(first.input_sha256, encodeEvent(decisionEvent(0)).inputSha256);
    assert.match(first.result_sha256 ?? '', /^[0-9a-f]{64}$/);
    assert.deepEqual(Object.keys(JSON.parse(JSON.stringify(receipts[1]))).sort(), ['decision_id', 'input_sha256', 'leaf_hash', 'leaf_index', 'origin', 'result_sha256', 'version']);
    const { input: _input, ...withoutInput } = decisionEvent(5);
    const bare = await log.append(withoutInput);
    assert.equal('input_sha256' in bare, false, 'no input, no input digest');
    assert.match(bare.result_sha256 ?? '', /^[0-9a-f]{64}$/);
    await log.stop(5000);
  });

  it('groups concurrent appends into few write batches and fsyncs', async () => {
    const dir = await tempDir();
    const log = await openLog(dir);
    const receipts = await Promise.all(Array.from({ length: 2000 }, (_, i) => log.append(decisionEvent(i))));
    assert.deepEqual(receipts.map((r) => r.leaf_index), Array.from({ length: 2000 }, (_, i) => i));
    const details = log.status().details as { write_batches: number; syncs: number };
    assert.ok(details.write_batches < 200, `${details.write_batches} batches for 2000 appends`);
    assert.ok(details.syncs <= details.write_batches + 1);
    await log.stop(5000);
  });

  it('refuses an event over maxEventBytes, a closed log and a second writer, each with its code', async () => {
    const dir = await tempDir();
    const log = await openLog(dir, SoftwareSigner.generate(), { maxEventBytes: 300 });
    await rejectsCode(log.append(decisionEvent(1, { input: { blob: 'x'.repeat(400) } })), ErrorCodes.AUDIT_EVENT_TOO_LARGE);
    await rejectsCode(openLog(dir), ErrorCodes.AUDIT_LOG_LOCKED);
    await log.stop(5000);
    await rejectsCode(log.append(decisionEvent(2)), ErrorCodes.AUDIT_LOG_CLOSED);
    assert.throws(() => log.recovery.leaves >= 0 && new AuditLog(logOptions(dir, SoftwareSigner.generate(), { origin: 'bad origin with spaces' })), (e: unknown) => isPavilionError(e, ErrorCodes.CONFIG_INVALID));
  });

  it('logs an event nested too deep for canonical JSON without its input, never dropping it', async () => {
    const dir = await tempDir();
    const log = await openLog(dir);
    let deep: unknown = 1;
    for (let i = 0; i < 400; i++) deep = [deep];
    const receipt = await log.append(decisionEvent(7, { input: deep }));
    assert.equal(receipt.input_sha256, undefined);
    const proof = await log.proveInclusion('decision-000007');
    const event = JSON.parse(proof.event) as { error: { code: string }; input?: unknown };
    assert.equal(event.error.code, 'ERR_DECISION_LOG_UNSERIALISABLE');
    assert.equal(event.input, undefined);
    await log.stop(5000);
  });
});

describe('disk budget', () => {
  it("'refuse' rejects the append that does not fit with ERR_AUDIT_LOG_FULL and keeps the log usable", async () => {
    const dir = await tempDir();
    const log = await openLog(dir, SoftwareSigner.generate(), { maxDiskBytes: FILE_HEADER_BYTES + CHECKPOINT_HEADROOM_BYTES + 1200, onFull: 'refuse' });
    let accepted = 0;
    let refused = 0;
    for (let i = 0; i < 10; i++) {
      try {
        await log.append(decisionEvent(i));
        accepted++;
      } catch (error) {
        assert.ok(isPavilionError(error, ErrorCodes.AUDIT_LOG_FULL), String(error));
        refused++;
      }
    }
    assert.ok(accepted >= 1 && refused >= 1, `${accepted} accepted, ${refused} refused`);
    assert.ok((await stat(walPath(dir))).size <= FILE_HEADER_BYTES + 1200, 'leaves stay out of the checkpoint headroom');
    await log.checkpoint(); // the headroom still takes a checkpoint
    log.setMaxDiskBytes(1024 * 1024);
    assert.equal((await log.append(decisionEvent(100))).leaf_index, accepted, 'sequence numbers have no gaps after refusals');
    await log.stop(5000);
  });

  it('a log holding the most leaves it takes refuses more with ERR_AUDIT_LOG_FULL, writing nothing of them: at once, and after a wait for disk budget (its reservation given back)', async () => {
    const dir = await tempDir();
    const frame = (i: number): number => FRAME_OVERHEAD_BYTES + encodeEvent(decisionEvent(i)).bytes.length;
    // room for two leaves: of five appends at once, three wait for budget
    const log = await openLog(dir, SoftwareSigner.generate(), {
      maxLeaves: 3, onFull: 'block', blockTimeoutMs: 10_000,
      maxDiskBytes: FILE_HEADER_BYTES + CHECKPOINT_HEADROOM_BYTES + frame(0) + frame(1) + 10,
    });
    const outcomes = Promise.allSettled([0, 1, 2, 3, 4].map((i) => log.append(decisionEvent(i))));
    await until('three appends wait for disk budget', () => log.status().details?.['blocked_writers'] === 3);
    log.setMaxDiskBytes(1024 * 1024); // they go on: one takes the third leaf, two find the log at its limit
    const settled = await outcomes;
    const refused = settled.filter((o) => o.status === 'rejected').map((o) => (o as PromiseRejectedResult).reason as unknown);
    assert.deepEqual(settled.map((o) => o.status), ['fulfilled', 'fulfilled', 'fulfilled', 'rejected', 'rejected']);
    for (const error of refused) {
      assert.ok(isPavilionError(error, ErrorCodes.AUDIT_LOG_FULL), String(error));
      assert.match(error.message, /holds 3 leaves, the most one log takes \(3\); with decisionLog\.audit\.rotateAtBytes or rotateAfterMs/);
    }
    assert.equal(log.size, 3);
    const onDisk = (): number => log.status().details?.['bytes_on_disk'] as number;
    // no room for another leaf either: 'block' would wait up to blockTimeoutMs for it, but a log
    // at its limit refuses at once
    log.setMaxDiskBytes(onDisk() + CHECKPOINT_HEADROOM_BYTES + Math.floor(frame(9) / 2));
    const started = performance.now();
    await rejectsCode(log.append(decisionEvent(9)), ErrorCodes.AUDIT_LOG_FULL);
    assert.ok(performance.now() - started < 5_000, 'refused without waiting for budget');
    const before = onDisk();
    await log.checkpoint(); // checkpoints are not leaves: still taken
    const checkpointBytes = onDisk() - before;
    // budget for one more checkpoint and not for the two refused frames besides: a reservation
    // not given back would hold the next checkpoint until blockTimeoutMs, then fail it
    log.setMaxDiskBytes(onDisk() + checkpointBytes + 64);
    await log.checkpoint();
    assert.ok(onDisk() > before + checkpointBytes, 'the second checkpoint is written');
    await log.stop(5000);
    const { records } = await readRecords(dir);
    assert.deepEqual(records.filter((r) => r.type === RecordType.LEAF).map((r) => r.index), [0, 1, 2], 'no frame of a refused append');
  });

  it("'block' holds the append until the budget grows, and refuses after blockTimeoutMs", async () => {
    const dir = await tempDir();
    const log = await openLog(dir, SoftwareSigner.generate(), { maxDiskBytes: FILE_HEADER_BYTES + CHECKPOINT_HEADROOM_BYTES + 400, onFull: 'block', blockTimeoutMs: 150 });
    await log.append(decisionEvent(0));
    const started = performance.now();
    await rejectsCode(log.append(decisionEvent(1)), ErrorCodes.AUDIT_LOG_FULL);
    assert.ok(performance.now() - started >= 140, 'it waited for the block timeout');
    const blocked = log.append(decisionEvent(2));
    let settled = false;
    void blocked.then(() => (settled = true), () => (settled = true));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(settled, false, 'still blocked');
    assert.equal(log.status().state, 'WARN');
    log.setMaxDiskBytes(1024 * 1024);
    assert.equal((await blocked).leaf_index, 1);
    await log.stop(5000);
  });
});

describe('checkpoints and proofs', () => {
  it('signs a checkpoint every checkpointEveryEvents events; each verifies and covers the tree at its size', async () => {
    const dir = await tempDir();
    const signer = SoftwareSigner.generate();
    const seen: number[] = [];
    const log = await openLog(dir, signer, { checkpointEveryEvents: 10, onCheckpoint: (cp) => seen.push(cp.tree_size) });
    for (let i = 0; i < 35; i++) await log.append(decisionEvent(i));
    await log.checkpoint();
    assert.deepEqual(seen, [10, 20, 30, 35]);
    const ring = ringOf(signer);
    for (const cp of log.checkpoints) {
      ring.verifyCheckpoint(cp);
      assert.equal(cp.root_hash, log.rootHash(cp.tree_size));
      assert.equal(cp.key_id, signer.keyId);
      assert.equal(cp.origin, 'pavilion-test/bank');
    }
    await log.stop(5000);
    const result = await verifyLogFile(walPath(dir), ring);
    assert.equal(result.leaves, 35);
    assert.equal(result.checkpoints, 4);
    assert.equal(result.unsignedLeaves, 0);
  });

  it('signs a checkpoint after checkpointIntervalMs when events arrived', async () => {
    const dir = await tempDir();
    const log = await openLog(dir, SoftwareSigner.generate(), { checkpointIntervalMs: 30, checkpointEveryEvents: 1_000_000 });
    await log.append(decisionEvent(0));
    await log.append(decisionEvent(1));
    const deadline = Date.now() + 2000;
    while (log.latestCheckpoint === undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.equal(log.latestCheckpoint?.tree_size, 2);
    await log.stop(5000);
  });

  it('proves a decision offline: event + inclusion path + checkpoint + public key', async () => {
    const dir = await tempDir();
    const signer = SoftwareSigner.generate();
    const log = await openLog(dir, signer, { checkpointEveryEvents: 8 });
    for (let i = 0; i < 21; i++) await log.append(decisionEvent(i));
    const ring = ringOf(signer);
    for (const i of [0, 7, 8, 20]) {
      const id = decisionEvent(i).decision_id;
      const proof = JSON.parse(JSON.stringify(await log.proveInclusion(id))) as unknown;
      const verified = verifyDecisionProof(proof, ring, { decisionId: id, origin: 'pavilion-test/bank' });
      assert.equal(verified.leafIndex, i);
      assert.equal(verified.tenant, 'bank');
      assert.ok(verified.treeSize > i);
    }
    await rejectsCode(log.proveInclusion('no-such-decision'), ErrorCodes.AUDIT_DECISION_UNKNOWN);
    assert.deepEqual(log.proveConsistency(8, 21).length > 0, true);
    await log.stop(5000);
  });

  it('consistencyProofBetween is the one range check: sizes below 1, not integers, from > to, past the end -> ERR_AUDIT_RANGE_INVALID', async () => {
    const dir = await tempDir();
    const log = await openLog(dir, SoftwareSigner.generate(), { checkpointEveryEvents: 4 });
    for (let i = 0; i < 8; i++) await log.append(decisionEvent(i));
    for (const [from, to] of [[0, 4], [1.5, 4], [4, 0], [8, 4], [4, 9], [Number.NaN, undefined], [9, undefined]] as Array<[number, number | undefined]>) {
      assert.throws(() => log.consistencyProofBetween(from, to), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_RANGE_INVALID), `${from}..${String(to)}`);
    }
    assert.equal(log.consistencyProofBetween(4).new_checkpoint.tree_size, 8);
    await log.stop(5000);
  });

  it('refuses each kind of bad decision proof with its code', async () => {
    const dir = await tempDir();
    const signer = SoftwareSigner.generate();
    const log = await openLog(dir, signer);
    for (let i = 0; i < 6; i++) await log.append(decisionEvent(i));
    const good = await log.proveInclusion('decision-000003');
    await log.stop(5000);
    const ring = ringOf(signer);
    const check = (proof: unknown, code: string, expect: { decisionId?: string; origin?: string } = {}): void => {
      assert.throws(() => verifyDecisionProof(proof, ring, expect), (e: unknown) => isPavilionError(e) && e.code === code, code);
    };
    const editedEvent = good.event.replace('"result":false', '"result":true');
    assert.notEqual(editedEvent, good.event);
    check({ ...good, event: editedEvent }, ErrorCodes.AUDIT_PROOF_INVALID);
    check({ ...good, leaf_index: 2 }, ErrorCodes.AUDIT_PROOF_INVALID);
    check({ ...good, inclusion_path: good.inclusion_path.slice(1) }, ErrorCodes.AUDIT_PROOF_INVALID);
    check({ ...good, inclusion_path: ['zz'] }, ErrorCodes.AUDIT_PROOF_INVALID);
    check({ ...good, version: 2 }, ErrorCodes.AUDIT_PROOF_INVALID);
    check('not an object', ErrorCodes.AUDIT_PROOF_INVALID);
    check({ ...good, event: '{not json' }, ErrorCodes.AUDIT_PROOF_INVALID);
    check(good, ErrorCodes.AUDIT_EVENT_MISMATCH, { decisionId: 'decision-000004' });
    check(good, ErrorCodes.AUDIT_CHECKPOINT_INVALID, { origin: 'other/log' });
    const sig = Buffer.from(good.checkpoint.signature, 'base64');
    sig[10] = sig[10]! ^ 1;
    check({ ...good, checkpoint: { ...good.checkpoint, signature: sig.toString('base64') } }, ErrorCodes.AUDIT_SIGNATURE_INVALID);
    check({ ...good, checkpoint: { ...good.checkpoint, tree_size: 7 } }, ErrorCodes.AUDIT_SIGNATURE_INVALID);
    check({ ...good, checkpoint: { ...good.checkpoint, extra: 1 } }, ErrorCodes.AUDIT_CHECKPOINT_INVALID);
    check({ ...good, checkpoint: { ...good.checkpoint, root_hash: 'ab' } }, ErrorCodes.AUDIT_CHECKPOINT_INVALID);
    assert.throws(() => verifyDecisionProof(good, ringOf(SoftwareSigner.generate())), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_KEY_UNKNOWN));
    // A checkpoint re-signed by someone else's key that claims the right key id.
    const forger = SoftwareSigner.generate();
    const { checkpointMessage } = await import('../sidecar/src/audit/log/index.ts');
    const forged = { ...good.checkpoint, signature: (await forger.sign(checkpointMessage(good.checkpoint))).toString('base64') };
    check({ ...good, checkpoint: forged }, ErrorCodes.AUDIT_SIGNATURE_INVALID);
    verifyDecisionProof(good, ring, { decisionId: 'decision-000003' });
  });
});

// A start scans a file from SCAN_ON_THREAD_MIN_BYTES on on a worker thread, a smaller one on the
// calling thread: every restart case runs both ways.
for (const [where, scanOnThreadMinBytes] of [['the calling thread', undefined], ['a worker thread', 0]] as const) {
describe(`restart (the file scanned on ${where})`, () => {
  const open = (directory: string, signer?: CheckpointSigner, overrides: Partial<AuditLogOptions> = {}): Promise<AuditLog> =>
    openLog(directory, signer, { ...overrides, ...(scanOnThreadMinBytes === undefined ? {} : { scanOnThreadMinBytes }) });

  it('continues the tree and the sequence after a clean stop; old checkpoints stay consistent', async () => {
    const dir = await tempDir();
    const signer = SoftwareSigner.generate();
    const first = await open(dir, signer, { checkpointEveryEvents: 4 });
    for (let i = 0; i < 10; i++) await first.append(decisionEvent(i));
    await first.stop(5000);
    const before = first.latestCheckpoint!;
    assert.equal(before.tree_size, 10, 'stop writes a final checkpoint');

    const second = await open(dir, signer, { checkpointEveryEvents: 4 });
    assert.equal(second.recovery.leaves, 10);
    assert.equal(second.recovery.tornTail, undefined);
    assert.equal(second.recovery.staleLockPid, undefined);
    assert.equal(second.rootHash(10), before.root_hash);
    assert.equal((await second.append(decisionEvent(10))).leaf_index, 10);
    assert.equal(second.leafIndexOf('decision-000003'), 3, 'decisions from before the restart are still provable');
    const { records } = await readRecords(dir);
    const leaves = records.filter((r) => r.type === RecordType.LEAF);
    assert.equal(leaves.length, 11);
    for (const leaf of leaves) {
      assert.equal(second.decisionIdAt(leaf.index), `decision-${String(leaf.index).padStart(6, '0')}`, `leaf ${leaf.index}: the id logged with it, recovered or appended`);
    }
    const proof = await second.proveInclusion('decision-000003');
    verifyDecisionProof(proof, ringOf(signer));
    await second.stop(5000);
    const result = await verifyLogFile(walPath(dir), ringOf(signer), { origin: 'pavilion-test/bank', trustedCheckpoints: [before] });
    assert.equal(result.leaves, 11);
  });

  it('rebuilds the same log from a file of several read chunks: every leaf hash, id and offset, the checkpoints, frames across chunk edges', async () => {
    const dir = await tempDir();
    const signer = SoftwareSigner.generate();
    const first = await openLog(dir, signer, { fsync: 'never', checkpointEveryEvents: 500 });
    // about 9 MiB: three 4 MiB reads; ids of every length and script, some events naming
    // another decision_id in their input
    const pad = 'x'.repeat(1000);
    const ids: string[] = [];
    await appendMany(first, 9000, (n) => {
      const id = n % 7 === 0 ? `é-${n}-${'漢'.repeat(n % 13)}` : `decision-${n}`;
      ids[n] = id;
      return decisionEvent(n, { decision_id: id, input: n % 5 === 0 ? { pad, n, decision_id: 'not this one' } : { pad, n } });
    });
    await first.stop(5000);
    const { records } = await readRecords(dir);
    const chunk = 4 * 1024 * 1024;
    for (const edge of [chunk, 2 * chunk]) {
      const frameEnd = (r: (typeof records)[number]): number => r.offset + FRAME_OVERHEAD_BYTES + r.payload.length;
      // file offsets: the reads start after the header
      assert.ok(records.some((r) => r.offset < FILE_HEADER_BYTES + edge && frameEnd(r) > FILE_HEADER_BYTES + edge), `a frame spans the read at ${edge}`);
    }
    const again = await open(dir, signer);
    try {
      assert.equal(again.recovery.leaves, 9000);
      assert.equal(again.recovery.checkpoints, first.checkpoints.length);
      assert.equal(again.rootHash(9000), first.rootHash(9000));
      const leaves = records.filter((r) => r.type === RecordType.LEAF);
      for (let n = 0; n < 9000; n++) {
        assert.equal(again.decisionIdAt(n), ids[n], `leaf ${n}`);
        assert.equal(again.leafIndexOf(ids[n] as string), n);
        assert.equal(again.leafOffsetAt(n), leaves[n]?.offset, `leaf ${n}'s frame`);
      }
      // a proof reads its frame at that offset and checks it against the tree
      for (let n = 0; n < 9000; n += 500) verifyDecisionProof(await again.proveInclusion(ids[n] as string), ringOf(signer));
      assert.equal((await again.append(decisionEvent(9000))).leaf_index, 9000);
    } finally {
      await again.stop(5000);
    }
  });

  it("takes over a lock left by an earlier process with this process's pid (a restarted container is pid 1 again)", async () => {
    const dir = await tempDir();
    const log = await open(dir);
    await log.stop(5000);
    await writeFile(join(dir, 'LOCK'), `${process.pid} token-of-an-earlier-incarnation\n`);
    const again = await open(dir);
    assert.equal(again.recovery.staleLockPid, process.pid);
    await again.stop(5000);
  });

  it('detects a torn tail, saves it aside, truncates it, reports it, and continues', async () => {
    const dir = await tempDir();
    const signer = SoftwareSigner.generate();
    const log = await open(dir, signer);
    for (let i = 0; i < 5; i++) await log.append(decisionEvent(i));
    await log.stop(5000);
    const goodSize = (await stat(walPath(dir))).size;
    // Half of a frame, as a write cut by a crash would leave it.
    const { records } = await readRecords(dir);
    const frame = (await readFile(walPath(dir))).subarray(records[1]!.offset, records[2]!.offset);
    await appendFile(walPath(dir), frame.subarray(0, 40));
    await rejectsCode(verifyLogFile(walPath(dir), ringOf(signer)), ErrorCodes.AUDIT_RECORD_CORRUPT);

    const reopened = await open(dir, signer);
    const torn = reopened.recovery.tornTail;
    assert.ok(torn !== undefined);
    assert.equal(torn.offset, goodSize);
    assert.equal(torn.bytesRemoved, 40);
    assert.equal(torn.reason, 'short_frame');
    assert.equal((await readFile(torn.savedAs)).length, 40, 'the removed bytes are kept');
    assert.equal((await stat(walPath(dir))).size, goodSize);
    assert.equal(reopened.status().state, 'WARN');
    assert.equal((await reopened.append(decisionEvent(5))).leaf_index, 5);
    await reopened.stop(5000);
    await verifyLogFile(walPath(dir), ringOf(signer));
  });

  it('treats a frame with a bad CRC at the end as torn, and a file cut to inside its header as new', async () => {
    const dir = await tempDir();
    const signer = SoftwareSigner.generate();
    const log = await open(dir, signer);
    for (let i = 0; i < 3; i++) await log.append(decisionEvent(i));
    await log.stop(5000);
    const { records } = await readRecords(dir);
    const last = records.at(-1)!;
    const bytes = await readFile(walPath(dir));
    bytes[last.offset + 20] = bytes[last.offset + 20]! ^ 0xff;
    await (await import('node:fs/promises')).writeFile(walPath(dir), bytes);
    const reopened = await open(dir, signer);
    assert.equal(reopened.recovery.tornTail?.reason, 'crc_mismatch');
    assert.equal(reopened.recovery.tornTail?.offset, last.offset);
    await reopened.stop(5000);

    const cut = await tempDir();
    const fresh = await open(cut, signer);
    await fresh.stop(5000);
    await truncate(walPath(cut), 7);
    const again = await open(cut, signer);
    assert.equal(again.recovery.tornTail?.reason, 'short_header');
    assert.equal(again.recovery.leaves, 0);
    await again.stop(5000);
  });

  it('refuses to cut acknowledged records: damage far from the end of the file is not a torn write', async () => {
    const dir = await tempDir();
    const signer = SoftwareSigner.generate();
    const log = await open(dir, signer);
    for (let i = 0; i < 40; i++) await log.append(decisionEvent(i));
    await log.stop(5000);
    const { records } = await readRecords(dir);
    const bytes = await readFile(walPath(dir));
    const target = records[3]!;
    bytes[target.offset + 40] = bytes[target.offset + 40]! ^ 0x01;
    await (await import('node:fs/promises')).writeFile(walPath(dir), bytes);
    const sizeBefore = bytes.length;
    await assert.rejects(open(dir, signer, { maxTornTailBytes: 2000 }), (e: unknown) =>
      isPavilionError(e, ErrorCodes.AUDIT_LOG_CORRUPT) && e.details?.['byteOffset'] === target.offset && e.details?.['leafIndex'] === 3);
    assert.equal((await stat(walPath(dir))).size, sizeBefore, 'nothing was cut');
    await assert.rejects(verifyLogFile(walPath(dir), ringOf(signer)), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_RECORD_CORRUPT) && e.details?.['leafIndex'] === 3);
  });

  it('refuses to start on damage that is not a torn write, with the position', async () => {
    const dir = await tempDir();
    const signer = SoftwareSigner.generate();
    const log = await open(dir, signer);
    for (let i = 0; i < 4; i++) await log.append(decisionEvent(i));
    await log.stop(5000);
    const { header, records } = await readRecords(dir);
    const { writeRecords } = await import('./audit/fixtures.ts');
    // Leaves 1 and 2 swapped with correct framing: a reorder, not a crash.
    await writeRecords(dir, header, [records[0]!, records[2]!, records[1]!, ...records.slice(3)]);
    await assert.rejects(open(dir, signer), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_LOG_CORRUPT) && e.details?.['leafIndex'] === 1);
    const badHeader = await tempDir();
    await (await import('node:fs/promises')).writeFile(walPath(badHeader), Buffer.from('NOTAUDITLOGATALL--------'));
    await rejectsCode(open(badHeader, signer), ErrorCodes.AUDIT_LOG_CORRUPT);
    assert.deepEqual((await readdir(badHeader)).sort(), ['audit.wal'], 'a refused start leaves no lock behind');
  });

  it('rotates keys: checkpoints name their key and verify with the old and new public keys', async () => {
    const dir = await tempDir();
    const oldKey = SoftwareSigner.generate();
    const newKey = SoftwareSigner.generate();
    const log = await open(dir, oldKey);
    for (let i = 0; i < 3; i++) await log.append(decisionEvent(i));
    await log.checkpoint();
    log.rotateSigner(newKey);
    for (let i = 3; i < 6; i++) await log.append(decisionEvent(i));
    await log.stop(5000);
    assert.deepEqual(log.checkpoints.map((c) => c.key_id), [oldKey.keyId, newKey.keyId]);

    // After a restart with only the new key configured, the old key must be supplied.
    await rejectsCode(open(dir, newKey), ErrorCodes.AUDIT_LOG_CORRUPT);
    const restarted = await open(dir, newKey, { keyring: ringOf(oldKey) });
    await restarted.append(decisionEvent(6));
    await restarted.stop(5000);

    const both = await verifyLogFile(walPath(dir), ringOf(oldKey, newKey));
    assert.deepEqual([...both.keyIds].sort(), [oldKey.keyId, newKey.keyId].sort());
    await assert.rejects(verifyLogFile(walPath(dir), ringOf(newKey)), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_KEY_UNKNOWN) && e.details?.['recordNumber'] === 3);
    const cp = decodeCheckpoint(JSON.stringify(log.checkpoints[0]));
    assert.equal(cp.key_id, oldKey.keyId);
  });
});
}

describe('leaf encoding', () => {
  it('is canonical: an event parsed from the log and re-encoded gives the same leaf hash', async () => {
    const dir = await tempDir();
    const signer = SoftwareSigner.generate();
    const log = await openLog(dir, signer);
    const tricky = decisionEvent(1, {
      input: { z: 1, a: { 'ü': 'snow ☃', '\u2028': 'line sep', e: 1e21, f: 0.1 + 0.2, neg: -0, big: 2 ** 53 }, list: [3, { b: 2, a: 1 }], quote: '"\\' },
      result: { allow: true, reasons: [] },
    });
    const receipt = await log.append(tricky);
    const proof = await log.proveInclusion(tricky.decision_id);
    await log.stop(5000);
    const reparsed = JSON.parse(proof.event) as typeof tricky;
    assert.equal(hashLeaf(encodeEvent(reparsed).bytes).toString('hex'), receipt.leaf_hash);
    assert.equal(encodeEvent(reparsed).inputSha256, receipt.input_sha256);
    // Key order does not matter to the encoding.
    const shuffled = Object.fromEntries(Object.entries(reparsed).reverse()) as typeof tricky;
    assert.equal(hashLeaf(encodeEvent(shuffled).bytes).toString('hex'), receipt.leaf_hash);
  });
});
