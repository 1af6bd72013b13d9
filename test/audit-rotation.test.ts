/**
 * Rotation of a tenant's audit log into sealed, linked epochs (docs/audit-log.md, "Epochs"):
 * nothing acknowledged is lost, the live budget counts only the live epoch, appends during a
 * rotation wait for the next epoch, a crash after any step starts cleanly, and with streaming
 * an epoch is sealed only once JetStream acknowledged all of it (a real nats-server).
 */
import assert from 'node:assert/strict';
import { readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import {
  AuditLogSink,
  DecisionForwarder,
  MAX_ARCHIVED_PROOFS_WAITING,
  SoftwareSigner,
  parseEpochLink,
  verifyDecisionProof,
  verifyEpochs,
  type AuditLogSettings,
  type DecisionReceiptV1,
  type RotationStep,
} from '../sidecar/src/audit/index.ts';
import { RecordType, WAL_FILE, decisionIdOf, proveFromLogFile, proveFromLogFileOnThread } from '../sidecar/src/audit/log/index.ts';
import { parseConfig } from '../sidecar/src/config/index.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { ROTATE_AT_BYTES, archiveOf, decisionEvent, liveOf, openLog, readRecords, ringOf, rotatingSink, sinkTenants, tempDir } from './audit/fixtures.ts';
import { startNats, type RunningNats } from './harness/nats-server.ts';
import { until } from './harness/wait.ts';

const signer = SoftwareSigner.generate();
const ring = ringOf(signer);
const sinkAt = (directory: string, settings: Partial<AuditLogSettings> = {}, onRotationStep?: (step: RotationStep, tenant: string) => Promise<void> | void): AuditLogSink =>
  rotatingSink(directory, signer, settings, onRotationStep);


function tenantDetails(sink: AuditLogSink): Record<string, unknown> {
  return sinkTenants(sink)['bank']!.details;
}

/** Every receipt's decision is in the epoch its origin names, at its leaf, and proves offline. */
async function assertReceiptsKept(directory: string, receipts: readonly DecisionReceiptV1[]): Promise<void> {
  for (const receipt of receipts) {
    const epoch = /\/e(\d+)$/.exec(receipt.origin)?.[1] ?? '0';
    const archived = join(archiveOf(directory), epoch, WAL_FILE);
    const file = await stat(archived).then(() => archived, () => join(liveOf(directory), WAL_FILE));
    const proof = await proveFromLogFile(file, receipt.decision_id);
    assert.equal(proof.leaf_index, receipt.leaf_index, `${receipt.decision_id} is where its receipt says`);
    assert.equal(verifyDecisionProof(proof, ring, { decisionId: receipt.decision_id }).origin, receipt.origin);
  }
}

/** Append until the live epoch reaches the rotation threshold (the last append starts a rotation); their receipts. */
async function fillEpoch(sink: AuditLogSink, from: number): Promise<DecisionReceiptV1[]> {
  const receipts: DecisionReceiptV1[] = [];
  do receipts.push(await sink.append(decisionEvent(from + receipts.length)));
  while ((tenantDetails(sink)['bytes_on_disk'] as number) < ROTATE_AT_BYTES);
  return receipts;
}

/** The locks left by a process that died (a crash leaves the files behind): its live log's, if any, and the tenant's. */
async function crashLocks(directory: string, tenant = 'bank'): Promise<void> {
  for (const lock of [join(liveOf(directory), 'LOCK'), join(directory, 'tenants', `.${tenant}.lock`)]) {
    if (await stat(lock).then(() => true, () => false)) await writeFile(lock, '2147483646 crashed\n');
  }
}

describe('rotation into sealed, linked epochs', () => {
  it('a proof thread that has not answered by its deadline, or whose owner stops, is ended with a typed error', async () => {
    const dir = await tempDir();
    const log = await openLog(dir);
    await log.append(decisionEvent(0));
    await log.stop(5000);
    const file = join(dir, WAL_FILE);
    // a thread cannot start, let alone read the file, within a millisecond
    await assert.rejects(proveFromLogFileOnThread(file, 'decision-000000', { timeoutMs: 1 }), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_LOG_IO) && /did not finish within 1 ms/.test(e.message));
    const stopping = new AbortController();
    const asked = proveFromLogFileOnThread(file, 'decision-000000', { signal: stopping.signal });
    stopping.abort();
    await assert.rejects(asked, (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_LOG_CLOSED));
    await assert.rejects(proveFromLogFileOnThread(file, 'decision-000000', { signal: stopping.signal }), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_LOG_CLOSED));
    // and one left alone answers
    assert.equal((await proveFromLogFileOnThread(file, 'decision-000000', { timeoutMs: 60_000 })).leaf_index, 0);
  });

  it("proves archived decisions on a thread per proof, and one tenant's waiting proofs take none of another tenant's room", async () => {
    const dir = await tempDir();
    const sink = sinkAt(dir);
    await sink.start();
    try {
      const receipts = { bank: [] as DecisionReceiptV1[], hospital: [] as DecisionReceiptV1[] };
      for (let i = 0; i < 40; i++) {
        receipts.bank.push(await sink.append(decisionEvent(i)));
        receipts.hospital.push(await sink.append(decisionEvent(500 + i, { tenant: 'hospital' })));
      }
      await until('both tenants rotated', () => ['bank', 'hospital'].every((t) => ((sinkTenants(sink)[t]?.details['archived_epochs'] ?? []) as unknown[]).length >= 2));
      // in one turn: more unknown ids of bank than it may have waiting, and a decision of hospital's first epoch
      const code = (p: Promise<unknown>): Promise<string> => p.then(() => 'proved', (e: unknown) => (isPavilionError(e) ? e.code : String(e)));
      const bankCodes = Array.from({ length: MAX_ARCHIVED_PROOFS_WAITING + 2 }, (_, i) => code(sink.proveInclusion('bank', `nowhere-${i}`)));
      const first = receipts.hospital[0]!;
      const hospital = sink.proveInclusion('hospital', first.decision_id, { signNow: false });
      assert.deepEqual(await Promise.all(bankCodes), [
        ...Array.from({ length: MAX_ARCHIVED_PROOFS_WAITING }, () => ErrorCodes.AUDIT_DECISION_UNKNOWN),
        ErrorCodes.AUDIT_PROOF_BUSY, ErrorCodes.AUDIT_PROOF_BUSY,
      ]);
      const proof = await hospital;
      assert.equal(proof.leaf_index, first.leaf_index);
      assert.equal(verifyDecisionProof(proof, ring, { decisionId: first.decision_id }).origin, 'pavilion-test/hospital');
      // the typed errors of a proof from a damaged epoch come back from the thread whole
      const epoch0 = join(archiveOf(dir, 'hospital'), '0', WAL_FILE);
      const bytes = await readFile(epoch0);
      bytes[bytes.length - 10] = (bytes[bytes.length - 10] ?? 0) ^ 0xff;
      await writeFile(epoch0, bytes);
      await assert.rejects(sink.proveInclusion('hospital', first.decision_id, { signNow: false }), (e: unknown) =>
        isPavilionError(e, ErrorCodes.AUDIT_RECORD_CORRUPT) && e.details?.['epoch'] === 0 && /archived epoch 0 is damaged/.test(e.message));
    } finally {
      await sink.stop(5000);
    }
  });

  it('keeps every acknowledged decision, counts only the live epoch in the budget, and the chain verifies', async () => {
    const dir = await tempDir();
    let sink = sinkAt(dir);
    await sink.start();
    const receipts: DecisionReceiptV1[] = [];
    // about 45 KiB of decisions: nearly three times the budget, which alone would refuse them
    for (let i = 0; i < 130; i++) receipts.push(await sink.append(decisionEvent(i)));
    const details = tenantDetails(sink);
    const epoch = details['epoch'] as number;
    assert.ok(epoch >= 8, `rotated into ${epoch} epochs`);
    assert.ok((details['bytes_on_disk'] as number) < ROTATE_AT_BYTES + 1024, 'the live epoch holds less than a rotation threshold and one event');
    const archived = details['archived_epochs'] as Array<{ epoch: number; bytes: number }>;
    assert.deepEqual(archived.map((a) => a.epoch), Array.from({ length: epoch }, (_, i) => i));
    assert.equal(details['archived_bytes'], archived.reduce((sum, a) => sum + a.bytes, 0));
    assert.equal(details['origin'], `pavilion-test/bank/e${epoch}`);

    // An archived decision is proved by the running sink, from its epoch's file.
    const proof = await sink.proveInclusion('bank', receipts[0]!.decision_id, { signNow: false });
    assert.equal(verifyDecisionProof(proof, ring).origin, 'pavilion-test/bank', "epoch 0 keeps the log's origin as it always was");
    // Ids that are in no epoch each cost a pass over every archived file: a few wait, the rest are refused at once.
    const codes = await Promise.all(Array.from({ length: MAX_ARCHIVED_PROOFS_WAITING + 2 }, (_, i) => sink.proveInclusion('bank', `nowhere-${i}`).then(
      () => 'proved',
      (e: unknown) => (isPavilionError(e) ? e.code : String(e)),
    )));
    assert.deepEqual(codes, [
      ...Array.from({ length: MAX_ARCHIVED_PROOFS_WAITING }, () => ErrorCodes.AUDIT_DECISION_UNKNOWN),
      ErrorCodes.AUDIT_PROOF_BUSY, ErrorCodes.AUDIT_PROOF_BUSY,
    ]);

    // A restart opens the live epoch and keeps going there.
    await sink.stop(5000);
    sink = sinkAt(dir);
    await sink.start();
    assert.equal(tenantDetails(sink)['epoch'], epoch);
    receipts.push(await sink.append(decisionEvent(1000)));
    await sink.stop(5000);

    await assertReceiptsKept(dir, receipts);
    const verified = await verifyEpochs(archiveOf(dir), join(liveOf(dir), WAL_FILE), ring, { origin: 'pavilion-test/bank' });
    assert.equal(verified.linksChecked, epoch);
    for (const sealed of verified.epochs.slice(0, -1)) {
      assert.equal(sealed.unsignedLeaves, 0, `epoch ${sealed.epoch}'s final checkpoint covers all of it`);
      const marker = JSON.parse(await readFile(join(archiveOf(dir), String(sealed.epoch), 'SEALED'), 'utf8')) as { seal: { tree_size: number }; streamed: boolean };
      assert.equal(marker.seal.tree_size, sealed.leaves);
      assert.equal(marker.streamed, false, 'without streaming the archive is the only copy');
    }
    // Each later epoch opens with its link, a leaf like a decision's with a reserved id.
    const { records } = await readRecords(join(archiveOf(dir), '1'));
    const link = parseEpochLink(records[0]!.payload);
    assert.equal(link?.epoch, 1);
    assert.equal(link?.previous.origin, 'pavilion-test/bank');
    assert.equal(link?.previous.tree_size, verified.epochs[0]!.leaves);
    assert.equal(link?.previous.root_hash, verified.epochs[0]!.rootHash);
  });

  it('a damaged archived epoch does not hide the others from proofs: an older decision is still proved; an id found nowhere names the damaged epoch (ERR_AUDIT_RECORD_CORRUPT), not "unknown"', async () => {
    const dir = await tempDir();
    const sink = sinkAt(dir);
    await sink.start();
    const receipts: DecisionReceiptV1[] = [];
    for (let i = 0; i < 40; i++) receipts.push(await sink.append(decisionEvent(i)));
    const newest = (tenantDetails(sink)['archived_epochs'] as Array<{ epoch: number }>).at(-1)!.epoch;
    assert.ok(newest >= 1, `rotated into ${newest + 1} archived epochs`);
    const epochDir = join(archiveOf(dir), String(newest));
    const file = join(epochDir, WAL_FILE);
    const intact = await readFile(file);
    const namedDamaged = (e: unknown): boolean =>
      isPavilionError(e, ErrorCodes.AUDIT_RECORD_CORRUPT) && e.details?.['epoch'] === newest && /archived epoch \d+ is damaged and may hold it/.test(e.message);
    try {
      // a byte flipped inside the payload of the newest archived epoch's second leaf (that epoch is searched first)
      const second = (await readRecords(epochDir)).records.filter((r) => r.type === RecordType.LEAF)[1]!;
      const flipped = Buffer.from(intact);
      flipped[second.offset + 20] = flipped[second.offset + 20]! ^ 0xff;
      await writeFile(file, flipped);
      const proof = await sink.proveInclusion('bank', receipts[0]!.decision_id, { signNow: false });
      assert.equal(verifyDecisionProof(proof, ring).leafIndex, receipts[0]!.leaf_index);
      await assert.rejects(sink.proveInclusion('bank', 'nowhere'), namedDamaged);
      // cut short: a sealed epoch ending inside a frame is damage too, not a tail being written
      await writeFile(file, intact.subarray(0, intact.length - 10));
      await assert.rejects(sink.proveInclusion('bank', 'nowhere'), namedDamaged);
    } finally {
      await sink.stop(5000);
    }
  });

  it('holds appends that arrive during a rotation and logs them in the next epoch, refusing none', async () => {
    const dir = await tempDir();
    let release: () => void = () => undefined;
    const paused = new Promise<void>((resolve) => {
      release = resolve;
    });
    let reached = false;
    const sink = sinkAt(dir, {}, async (step) => {
      if (step !== 'closed' || reached) return;
      reached = true;
      await paused;
    });
    await sink.start();
    await fillEpoch(sink, 0);
    await until('the rotation reached its pause', () => reached);
    const settled: boolean[] = [];
    const during = Array.from({ length: 20 }, (_, i) => sink.append(decisionEvent(500 + i)).finally(() => settled.push(true)));
    for (let turn = 0; turn < 20; turn++) await new Promise((resolve) => setImmediate(resolve));
    assert.equal(settled.length, 0, 'appends wait while the epoch is sealed');
    release();
    const receipts = await Promise.all(during);
    assert.ok(receipts.every((r) => r.origin.startsWith('pavilion-test/bank/e')), 'logged in a later epoch');
    assert.equal(receipts[0]!.origin, 'pavilion-test/bank/e1');
    await sink.stop(5000);
    await assertReceiptsKept(dir, receipts);
    await verifyEpochs(archiveOf(dir), join(liveOf(dir), WAL_FILE), ring);
  });

  it("with onFull 'block', appends waiting for budget when an epoch is sealed go to the next one", async () => {
    const dir = await tempDir();
    const sink = sinkAt(dir, { onFull: 'block', blockTimeoutMs: 30_000 });
    await sink.start();
    // more at once than one epoch's budget holds: some wait on it when the epoch is sealed
    const receipts = await Promise.all(Array.from({ length: 120 }, (_, i) => sink.append(decisionEvent(i))));
    assert.equal(new Set(receipts.map((r) => `${r.origin}#${r.leaf_index}`)).size, 120);
    assert.ok((tenantDetails(sink)['epoch'] as number) >= 2);
    await sink.stop(5000);
    await assertReceiptsKept(dir, receipts);
    await verifyEpochs(archiveOf(dir), join(liveOf(dir), WAL_FILE), ring);
  });

  it('rotates by leaves as well: an epoch is sealed at 15/16 of the leaves a log takes, long before rotateAtBytes, refusing none; with rotation off the limit refuses', async () => {
    const dir = await tempDir();
    const sink = sinkAt(dir, { maxLeaves: 16, maxDiskBytes: 1024 * 1024, rotateAtBytes: 512 * 1024 });
    await sink.start();
    const receipts: DecisionReceiptV1[] = [];
    for (let i = 0; i < 40; i++) receipts.push(await sink.append(decisionEvent(i)));
    await sink.stop(5000);
    const leavesOf = new Map<string, number[]>();
    for (const r of receipts) leavesOf.set(r.origin, [...(leavesOf.get(r.origin) ?? []), r.leaf_index]);
    // epoch 0: 15 decisions; each later one: its link to the one before, then 14 decisions
    assert.deepEqual([...leavesOf.keys()], ['pavilion-test/bank', 'pavilion-test/bank/e1', 'pavilion-test/bank/e2']);
    assert.deepEqual([...leavesOf.values()].map((leaves) => [leaves[0], leaves.at(-1)]), [[0, 14], [1, 14], [1, 11]]);
    await assertReceiptsKept(dir, receipts);
    await verifyEpochs(archiveOf(dir), join(liveOf(dir), WAL_FILE), ring);

    const off = await tempDir();
    const unrotated = sinkAt(off, { maxLeaves: 4, rotateAtBytes: 0 });
    await unrotated.start();
    for (let i = 0; i < 4; i++) await unrotated.append(decisionEvent(i));
    await assert.rejects(unrotated.append(decisionEvent(4)), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_LOG_FULL) && /holds 4 leaves, the most one log takes/.test(e.message));
    assert.equal(sinkTenants(unrotated)['bank']!.details['epoch'], 0);
    await unrotated.stop(5000);
  });

  it('is off with rotateAtBytes 0: the budget refuses as before', async () => {
    const dir = await tempDir();
    const sink = sinkAt(dir, { rotateAtBytes: 0 });
    await sink.start();
    let refusal: unknown;
    for (let i = 0; i < 100 && refusal === undefined; i++) await sink.append(decisionEvent(i)).catch((error: unknown) => (refusal = error));
    assert.ok(isPavilionError(refusal, ErrorCodes.AUDIT_LOG_FULL));
    assert.equal(tenantDetails(sink)['epoch'], 0);
    await sink.stop(5000);
  });
});

describe('a crash at each step of a rotation starts cleanly', () => {
  // After `frozen` and `closed` the epoch is still live; from `marked` on, start-up finishes the rotation.
  const steps: ReadonlyArray<readonly [RotationStep, number]> = [['frozen', 0], ['closed', 0], ['marked', 1], ['archived', 1], ['staged', 1], ['installed', 1]];
  for (const [step, epochAfter] of steps) {
    it(`stopped after '${step}': epoch ${epochAfter} is live, nothing acknowledged is lost, the chain verifies`, async () => {
      const dir = await tempDir();
      let reached = false;
      // the process "dies" there: the rotation never goes on
      const crashed = sinkAt(dir, {}, (at) => {
        if (at !== step) return undefined;
        reached = true;
        return new Promise<void>(() => undefined);
      });
      await crashed.start();
      const receipts = await fillEpoch(crashed, 0);
      await until(`the rotation reached '${step}'`, () => reached);
      await crashLocks(dir);
      if (step === 'staged') assert.ok((await readdir(join(dir, 'tenants'))).includes('.bank.next'), 'the next epoch was staged aside');

      const sink = sinkAt(dir);
      await sink.start();
      const details = tenantDetails(sink);
      assert.equal(details['stale_tenant_lock_pid'], 2147483646, "the crashed process's tenant lock, taken over, is reported");
      assert.equal(details['epoch'], epochAfter);
      assert.equal((details['archived_epochs'] as unknown[]).length, epochAfter);
      assert.ok(!(await readdir(join(dir, 'tenants'))).includes('.bank.next'), 'no staging directory is left');
      for (let i = 0; i < 30; i++) receipts.push(await sink.append(decisionEvent(1000 + i)));
      assert.ok((tenantDetails(sink)['epoch'] as number) > epochAfter, 'rotation goes on afterwards');
      await sink.stop(5000);
      await assertReceiptsKept(dir, receipts);
      const verified = await verifyEpochs(archiveOf(dir), join(liveOf(dir), WAL_FILE), ring, { origin: 'pavilion-test/bank' });
      assert.equal(verified.linksChecked, verified.epochs.length - 1);
    });
  }
});

describe("a tenant's lock, which stays where it is while its epochs move", () => {
  it("keeps a second sink off a tenant whose rotation is between 'archived' and 'installed' (no live directory, so no live lock)", async () => {
    const dir = await tempDir();
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    let reached = false;
    const first = sinkAt(dir, {}, async (at) => {
      if (at !== 'archived') return;
      reached = true;
      await held;
    });
    await first.start();
    const receipts = await fillEpoch(first, 0);
    await until("the first sink's rotation reached 'archived'", () => reached);
    assert.ok(!(await readdir(join(dir, 'tenants'))).includes('bank'), 'no live directory: epoch 0 archived, epoch 1 not installed');

    // the second sink would otherwise finish that rotation itself, under the first one's feet
    const second = sinkAt(dir);
    await second.start();
    const refusal = second.refusedTenants().get('bank');
    assert.equal(refusal?.code, ErrorCodes.AUDIT_LOG_LOCKED, String(refusal));
    assert.match(refusal.message, /tenant bank's audit log is in use by another audit log sink in this process/);
    assert.equal((refusal.details as { tenant?: string }).tenant, 'bank');
    await assert.rejects(second.append(decisionEvent(900)), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_LOG_LOCKED));
    assert.ok(!(await readdir(join(dir, 'tenants'))).includes('bank'), 'the second sink touched nothing of the tenant');

    // the first sink's rotation ends as if alone, and it goes on logging
    release();
    await until('the first sink is in epoch 1', () => tenantDetails(first)['epoch'] === 1);
    receipts.push(await first.append(decisionEvent(901)));
    await first.stop(5000);

    // once it has stopped, the second sink's next try (after the refusal's wait) takes the tenant over
    await new Promise((r) => setTimeout(r, 1100));
    receipts.push(await second.append(decisionEvent(902)));
    assert.equal(receipts.at(-1)!.origin, receipts.at(-2)!.origin, 'the same epoch 1, continued');
    await second.stop(5000);
    await assertReceiptsKept(dir, receipts);
    const verified = await verifyEpochs(archiveOf(dir), join(liveOf(dir), WAL_FILE), ring, { origin: 'pavilion-test/bank' });
    assert.equal(verified.linksChecked, 1);
    assert.ok(!(await readdir(join(dir, 'tenants'))).includes('.bank.lock'), 'the lock is given back at stop');
  });

  it('is confirmed before each rotation: one removed by hand is taken again; one another process holds calls the rotation off, the live epoch logging on', async () => {
    const dir = await tempDir();
    const sink = sinkAt(dir);
    await sink.start();
    try {
      const lock = join(dir, 'tenants', '.bank.lock');
      const receipts = await fillEpoch(sink, 0);
      await until('the first rotation ended', () => tenantDetails(sink)['epoch'] === 1);
      // removed by hand: the next rotation takes it again, and goes on
      await rm(lock);
      receipts.push(...(await fillEpoch(sink, 100)));
      await until('the second rotation ended', () => tenantDetails(sink)['epoch'] === 2);
      assert.match(await readFile(lock, 'utf8'), new RegExp(`^${process.pid} `), 'taken again');
      // another live process's now: the rotation is called off and the epoch stays live
      await writeFile(lock, `${process.ppid} another-process\n`);
      receipts.push(...(await fillEpoch(sink, 200)));
      await until('the rotation is called off', () => /rotation of epoch 2 called off: .*tenant bank's audit log is in use by process/.test(String(tenantDetails(sink)['rotation_error'])));
      assert.equal(tenantDetails(sink)['epoch'], 2, 'still epoch 2');
      receipts.push(await sink.append(decisionEvent(300)));
      assert.equal(receipts.at(-1)!.origin, 'pavilion-test/bank/e2', 'decisions are still logged, in the live epoch');
      await rm(lock); // the other process gone; this sink's stop then leaves no lock behind
    } finally {
      await sink.stop(5000);
    }
  });

  it('is confirmed again before the sealed epoch moves: another process holding it by then fails the rotation, and the tenant is refused until it lets go', async () => {
    const dir = await tempDir();
    const lock = join(dir, 'tenants', '.bank.lock');
    let taken = false;
    // between 'marked' (sealed, SEALED written) and the move into the archive, another process takes the lock
    const sink = sinkAt(dir, {}, async (at) => {
      if (at !== 'marked' || taken) return;
      taken = true;
      await writeFile(lock, `${process.ppid} another-process\n`);
    });
    await sink.start();
    try {
      const receipts = await fillEpoch(sink, 0);
      // the sealed log is no longer the tenant's (no entry of its own): the sink's message says why
      await until('the rotation failed', () => /rotation of epoch 0 failed: .*tenant bank's audit log is in use by process/.test(sink.status().message ?? ''));
      assert.ok((await readdir(join(dir, 'tenants', 'bank'))).includes('SEALED'), 'sealed, not moved');
      await assert.rejects(sink.append(decisionEvent(500)), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_LOG_LOCKED));
      // the other process lets go: the next decision finishes the rotation and is logged in epoch 1
      await rm(lock);
      receipts.push(await sink.append(decisionEvent(501)));
      assert.equal(receipts.at(-1)!.origin, 'pavilion-test/bank/e1');
      await sink.stop(5000);
      await assertReceiptsKept(dir, receipts);
    } finally {
      await sink.stop(5000);
    }
  });
});

describe('rotation with streaming to JetStream', () => {
  let nats: RunningNats;
  before(async () => {
    nats = await startNats();
  });
  after(async () => {
    await nats?.stop();
  });

  /** The Nats-Msg-Id (decision id) of the first `count` messages of `stream`, in stream order. */
  async function streamedIds(stream: string, count: number): Promise<string[]> {
    const nc = await connect({ servers: [nats.url] });
    try {
      const consumer = await jetstream(nc).consumers.get(stream);
      const ids: string[] = [];
      while (ids.length < count) {
        const message = await consumer.next({ expires: 2_000 });
        if (message === null) break;
        ids.push(message.headers?.get('Nats-Msg-Id') ?? '');
      }
      return ids;
    } finally {
      await nc.close();
    }
  }

  async function streamedCount(stream: string): Promise<number> {
    const nc = await connect({ servers: [nats.url] });
    try {
      return (await (await jetstreamManager(nc)).streams.info(stream)).state.messages;
    } finally {
      await nc.close();
    }
  }

  /** A started sink in a new directory whose rotations wait for a forwarder to `<subjectPrefix>.decisions.bank` (not started). */
  async function streamedSink(subjectPrefix: string, connectTimeoutMs: number): Promise<{ dir: string; sink: AuditLogSink; forwarder: DecisionForwarder }> {
    const dir = await tempDir();
    const sink = sinkAt(dir);
    const config = parseConfig({ nats: { servers: [nats.url], subjectPrefix, connectTimeoutMs } }).nats!;
    const forwarder = new DecisionForwarder({ nats: config, logs: () => sink.openLogs(), maxInFlight: 8, retryWaitMs: 20, pollIntervalMs: 20 });
    sink.useStreamProgress(forwarder);
    await sink.start();
    return { dir, sink, forwarder };
  }

  it('seals an epoch only once JetStream acknowledged all of it; while NATS is away the budget applies', async () => {
    const { dir, sink, forwarder } = await streamedSink('rotation', 500);
    await nats.kill();
    await forwarder.start();
    try {
      const receipts: DecisionReceiptV1[] = [];
      let refusal: unknown;
      for (let i = 0; i < 100 && refusal === undefined; i++) {
        await sink.append(decisionEvent(i)).then((r) => receipts.push(r), (error: unknown) => (refusal = error));
      }
      assert.ok(isPavilionError(refusal, ErrorCodes.AUDIT_LOG_FULL), 'the budget refuses while the epoch cannot be sealed');
      assert.equal(tenantDetails(sink)['epoch'], 0, 'not sealed while JetStream has not acknowledged it');
      assert.ok(receipts.length * 300 > ROTATE_AT_BYTES, 'the threshold was passed');

      await nats.restart();
      await until('JetStream holds every leaf', () => (forwarder.status().details as { backlog: number }).backlog === 0, 30_000);
      // the next decision finds the epoch sealable: it is sealed, and the decision goes to epoch 1
      let next: DecisionReceiptV1 | undefined;
      await until('a decision logged after the seal', async () => {
        next = await sink.append(decisionEvent(500 + receipts.length)).catch(() => undefined);
        return next !== undefined && tenantDetails(sink)['epoch'] === 1;
      }, 30_000);
      const marker = JSON.parse(await readFile(join(archiveOf(dir), '0', 'SEALED'), 'utf8')) as { seal: { tree_size: number }; streamed: boolean };
      assert.equal(marker.streamed, true);

      const { records } = await readRecords(join(archiveOf(dir), '0'));
      const sealedIds = records.filter((r) => r.type === RecordType.LEAF).map((r) => decisionIdOf(r.payload) as string);
      assert.equal(sealedIds.length, marker.seal.tree_size);
      // the stream begins with every leaf of the sealed epoch, in order (epoch 1's follow them)
      assert.deepEqual((await streamedIds('ROTATION_DECISIONS', sealedIds.length)), sealedIds, 'every leaf of the sealed epoch is in the stream');
      await assertReceiptsKept(dir, receipts);
    } finally {
      await forwarder.stop(2000);
      await sink.stop(5000);
    }
  });

  it('the forwarder follows the tenant into each new epoch: the stream holds every leaf of every epoch once, in order', async () => {
    const { dir, sink, forwarder } = await streamedSink('epochs', 2_000);
    await forwarder.start();
    const receipts: DecisionReceiptV1[] = [];
    try {
      // appends wait while a rotation waits for JetStream: three epochs sealed, the fourth live
      // a rotation starts once the forwarder reads the live epoch (it looks every poll): each
      // append waits for that, as a real rate gives it time to (this budget fills in 45 events)
      const followed = (): boolean => {
        const log = sink.openLogs().get('bank');
        return log !== undefined && forwarder.streamPosition('bank', log)?.forwarding === true;
      };
      do {
        receipts.push(await sink.append(decisionEvent(receipts.length)));
        await until('the forwarder reads the live epoch', followed, 30_000);
      } while ((tenantDetails(sink)['epoch'] as number) < 3);
      await until('the live epoch streamed', () => (forwarder.status().details as { backlog: number }).backlog === 0, 30_000);
      const leaves: string[] = [];
      for (const epoch of ['0', '1', '2']) {
        const { records } = await readRecords(join(archiveOf(dir), epoch));
        leaves.push(...records.filter((r) => r.type === RecordType.LEAF).map((r) => decisionIdOf(r.payload) as string));
      }
      const live = await readRecords(liveOf(dir));
      leaves.push(...live.records.filter((r) => r.type === RecordType.LEAF).map((r) => decisionIdOf(r.payload) as string));
      assert.equal(leaves.filter((id) => id.startsWith('epoch-link:')).length, 3, 'epochs 1-3 open with their link');

      assert.deepEqual(await streamedIds('EPOCHS_DECISIONS', leaves.length), leaves, 'every leaf of epochs 0-3, once each, in log order');
      assert.equal(await streamedCount('EPOCHS_DECISIONS'), leaves.length, 'nothing more');
      await sink.openLogs().get('bank')?.checkpoint(); // the live epoch's last leaves signed, for the proofs
      await assertReceiptsKept(dir, receipts);
    } finally {
      await forwarder.stop(2000);
      await sink.stop(5000);
    }
  });
});
