/**
 * The audit log when its file fails underneath it, induced for real: the log's own descriptor
 * is pointed at /dev/null, where writes still succeed and fdatasync fails (EINVAL), so the
 * background sync of fsync 'interval' is what fails. Also the writer's close with a frame
 * still waiting for the group-commit timer.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readdirSync, readlinkSync, realpathSync, renameSync, symlinkSync, unlinkSync } from 'node:fs';
import { access, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { FILE_HEADER_BYTES, FRAME_OVERHEAD_BYTES, SoftwareSigner, encodeEvent, verifyDecisionProof, verifyLogFile, type CheckpointSigner } from '../sidecar/src/audit/log/index.ts';
import { CHECKPOINT_HEADROOM_BYTES, WalWriter } from '../sidecar/src/audit/log/wal-writer.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { decisionEvent, openLog, ringOf, tempDir, walPath } from './audit/fixtures.ts';
import { within } from './harness/wait.ts';

async function rejectsCode(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isPavilionError(error), `expected a PavilionError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    return true;
  });
}


/** The one descriptor this process holds on `path`. */
function heldOn(path: string): number {
  const target = realpathSync(path);
  const held = readdirSync('/proc/self/fd').map(Number).filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`) === target;
    } catch {
      return false;
    }
  });
  assert.equal(held.length, 1, `one descriptor on ${target}`);
  return held[0]!;
}

/** Point descriptor `fd` at `replacement` (same number, so the log keeps using it). */
function repoint(fd: number, replacement: string): void {
  closeSync(fd);
  // open() takes the lowest free number: fill lower gaps until it is the one just closed.
  const fillers: number[] = [];
  for (let n = openSync(replacement, 'r+'); n !== fd; n = openSync(replacement, 'r+')) {
    fillers.push(n);
    assert.ok(n < fd, `descriptor ${fd} was taken by someone else`);
  }
  for (const n of fillers) closeSync(n);
}

/**
 * Point the log's descriptor on `path` at `device`, and the path too (the file moved aside, a
 * symlink to the device in its place): the log writes to a file that is still the one at its
 * path (a file that is not is refused before anything else, see audit-log-detached.test.ts),
 * and it fails as the device does. Returns how to put the file back, path and descriptor.
 */
function putOnDevice(path: string, device: string): () => void {
  const fd = heldOn(path);
  const aside = `${path}.aside`;
  renameSync(path, aside);
  symlinkSync(device, path);
  repoint(fd, device);
  return () => {
    unlinkSync(path);
    renameSync(aside, path);
    repoint(fd, path);
  };
}

const frameBytes = (n: number): number => FRAME_OVERHEAD_BYTES + encodeEvent(decisionEvent(n)).bytes.length;

async function until(condition: () => boolean, ms: number): Promise<void> {
  const end = performance.now() + ms;
  while (!condition() && performance.now() < end) await new Promise((r) => setTimeout(r, 5));
  assert.ok(condition(), `not reached within ${ms} ms`);
}

/** A writer's options for the tests that drive a WalWriter directly: no group-commit delay, background syncs only. */
const options = { fsync: 'interval', fsyncIntervalMs: 60_000, groupCommitMaxDelayMs: 0, groupCommitMaxBytes: 1 << 20, maxDiskBytes: 1 << 30, onFull: 'refuse', blockTimeoutMs: 100 } as const;

describe('audit log file failing underneath', () => {
  it("fsync 'interval': a failed background fdatasync gets the queued append and every later one ERR_AUDIT_LOG_IO, and stop() returns at once", async () => {
    const dir = await tempDir();
    // Three frames start a batch at once; one alone waits for the (60 s) group-commit timer.
    const log = await openLog(dir, SoftwareSigner.generate(), { fsync: 'interval', fsyncIntervalMs: 20, groupCommitMaxDelayMs: 60_000, groupCommitMaxBytes: 2 * frameBytes(0) + 1 });
    putOnDevice(walPath(dir), '/dev/null'); // writes succeed, fdatasync fails (EINVAL)
    await Promise.all([0, 1, 2].map((i) => log.append(decisionEvent(i)))); // written, so a sync is due
    const queued = log.append(decisionEvent(3));
    await rejectsCode(within(queued, 2000), ErrorCodes.AUDIT_LOG_IO);
    await rejectsCode(log.append(decisionEvent(4)), ErrorCodes.AUDIT_LOG_IO);
    assert.equal(log.status().state, 'ERROR');
    assert.match(log.status().message ?? '', /fdatasync failed/, 'the failure injected, not a file taken for detached');
    const started = performance.now();
    await log.stop(3000);
    assert.ok(performance.now() - started < 1000, `stop took ${Math.round(performance.now() - started)} ms`);
    await assert.rejects(access(join(dir, 'LOCK')), 'stop finished before its deadline and unlocked');
  });

  it('an append blocked on the disk budget when the writer fails gets ERR_AUDIT_LOG_IO, also once the budget grows; the tree, its proofs and the decision index stay as they were', async () => {
    const dir = await tempDir();
    const log = await openLog(dir, SoftwareSigner.generate(), {
      fsync: 'interval',
      fsyncIntervalMs: 20,
      onFull: 'block',
      blockTimeoutMs: 10_000,
      maxDiskBytes: FILE_HEADER_BYTES + CHECKPOINT_HEADROOM_BYTES + 2 * frameBytes(0) + 100,
    });
    await log.append(decisionEvent(0));
    await log.append(decisionEvent(1));
    await log.checkpoint();
    const before = {
      size: log.size,
      root: log.rootHash(),
      consistency: log.proveConsistency(1, 2),
      inclusion: (await log.proveInclusion(decisionEvent(1).decision_id)).inclusion_path,
    };
    const blocked = log.append(decisionEvent(2));
    blocked.catch(() => undefined);
    assert.equal((log.status().details as { blocked_writers: number }).blocked_writers, 1);
    const restore = putOnDevice(walPath(dir), '/dev/null');
    await log.checkpoint(); // a checkpoint fits the headroom: written, so a sync is due
    await until(() => log.status().state === 'ERROR', 2000);
    assert.match(log.status().message ?? '', /fdatasync failed/);
    restore(); // the file back where proofs read it from; the writer stays failed
    log.setMaxDiskBytes(1024 * 1024 * 1024);
    await rejectsCode(within(blocked, 2000), ErrorCodes.AUDIT_LOG_IO);
    await rejectsCode(log.append(decisionEvent(3)), ErrorCodes.AUDIT_LOG_IO);
    assert.equal(log.size, before.size);
    assert.equal(log.rootHash(), before.root);
    assert.deepEqual(log.proveConsistency(1, 2), before.consistency);
    assert.deepEqual((await log.proveInclusion(decisionEvent(1).decision_id, { signNow: false })).inclusion_path, before.inclusion);
    assert.equal(log.leafIndexOf(decisionEvent(2).decision_id), undefined);
    assert.throws(() => log.decisionIdAt(2), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_MERKLE_RANGE));
    await log.stop(3000);
  });

  it('appends made one after another, each as the previous one settles, are all written (none waits for a later append)', async () => {
    const path = join(await tempDir(), 'wal');
    const writer = new WalWriter(await open(path, 'w+'), 0, options);
    // awaited directly: the next append runs in the first turn after the previous one settles
    await within((async () => {
      for (let i = 0; i < 20; i++) {
        writer.reserve(3);
        await writer.append(Buffer.from(String(i).padStart(3, '0'))).durable;
      }
    })(), 5000);
    await writer.close();
    assert.equal(await readFile(path, 'utf8'), Array.from({ length: 20 }, (_, i) => String(i).padStart(3, '0')).join(''));
  });

  it('closing the writer with a frame waiting for the group-commit timer writes it at once instead of spinning', async () => {
    const path = join(await tempDir(), 'wal');
    const writer = new WalWriter(await open(path, 'w+'), 0, { ...options, groupCommitMaxDelayMs: 60_000 });
    writer.reserve(10);
    const { durable } = writer.append(Buffer.from('0123456789'));
    await within(writer.close(), 2000);
    await durable;
    assert.equal(await readFile(path, 'utf8'), '0123456789');
  });
});

/** A signer whose signatures wait until `release()`: a checkpoint can be caught between its tree and its frame. */
function gatedSigner(inner: CheckpointSigner): CheckpointSigner & { release(): void; readonly waiting: boolean } {
  let open: (() => void) | undefined;
  let gate = new Promise<void>((resolve) => (open = resolve));
  let waiting = false;
  return {
    keyId: inner.keyId,
    publicKeySpki: inner.publicKeySpki,
    async sign(message: Uint8Array): Promise<Buffer> {
      waiting = true;
      await gate;
      waiting = false;
      return inner.sign(message);
    },
    close: () => inner.close(),
    release(): void {
      open?.();
      gate = Promise.resolve();
    },
    get waiting() {
      return waiting;
    },
  };
}

describe('audit log on a full volume', () => {
  for (const fsync of ['always', 'interval'] as const) {
    it(`fsync '${fsync}': writes failing with ENOSPC (the log's descriptor on /dev/full) refuse those events with ERR_AUDIT_DISK_FULL and rewind the tree; once space is back the next event takes the first refused index and the file verifies`, async () => {
      const dir = await tempDir();
      const signer = SoftwareSigner.generate();
      const log = await openLog(dir, signer, { fsync, fsyncIntervalMs: 200 });
      for (const n of [0, 1, 2]) await log.append(decisionEvent(n));
      const before = await log.checkpoint();
      // with 'interval', nothing may be left for the background fdatasync (it would hit /dev/full)
      if (fsync === 'interval') await until(() => (log.status().details as { syncs: number }).syncs > 0, 2000);
      const restore = putOnDevice(walPath(dir), '/dev/full');

      const refused = [3, 4, 5].map((n) => log.append(decisionEvent(n)));
      for (const append of refused) await rejectsCode(within(append, 2000), ErrorCodes.AUDIT_DISK_FULL);
      assert.equal(log.size, 3, 'the refused leaves left the tree');
      assert.equal(log.rootHash(), before.root_hash);
      assert.equal(log.leafIndexOf(decisionEvent(4).decision_id), undefined);
      await rejectsCode(log.checkpoint(), ErrorCodes.AUDIT_DISK_FULL);
      const full = log.status();
      assert.equal(full.state, 'WARN', 'a full volume is a warning: the log is not broken');
      assert.match(full.message ?? '', /ERR_AUDIT_DISK_FULL/);
      assert.equal((full.details as { disk_full_refused_records: number }).disk_full_refused_records, 4, 'three leaves and the checkpoint');

      restore(); // space is back
      const receipt = await within(log.append(decisionEvent(6)), 2000);
      assert.equal(receipt.leaf_index, 3, 'the next event takes the first refused index');
      assert.equal(log.status().state, 'OK', 'recovered without a restart');
      const after = await log.checkpoint();
      assert.equal(after.tree_size, 4);
      const verified = verifyDecisionProof(await log.proveInclusion(decisionEvent(6).decision_id), ringOf(signer), { decisionId: decisionEvent(6).decision_id });
      assert.equal(verified.leafIndex, 3);
      assert.equal(log.proveConsistency(3, 4).length > 0, true);
      await log.stop(3000);

      const file = await verifyLogFile(walPath(dir), ringOf(signer));
      assert.equal(file.leaves, 4);
      assert.equal(file.checkpoints, 2);
      const again = await openLog(dir, signer);
      assert.equal(again.recovery.tornTail, undefined, 'nothing to cut at restart');
      assert.equal(again.size, 4);
      await again.stop(3000);
    });
  }

  it('a checkpoint signed over leaves that a full volume then refused is abandoned (ERR_AUDIT_DISK_FULL), not written over the different leaves that take their place', async () => {
    const dir = await tempDir();
    const inner = SoftwareSigner.generate();
    const signer = gatedSigner(inner);
    signer.release();
    const log = await openLog(dir, signer, { fsync: 'always' });
    for (const n of [0, 1]) await log.append(decisionEvent(n));
    await log.checkpoint();
    const restore = putOnDevice(walPath(dir), '/dev/full');
    const refusedLeaf = log.append(decisionEvent(2));
    // the checkpoint takes tree size 3 and root over the leaf about to be refused, then waits to sign
    const gated = gatedSigner(inner);
    log.rotateSigner(gated);
    const stale = log.checkpoint();
    await until(() => gated.waiting, 2000);
    await rejectsCode(within(refusedLeaf, 2000), ErrorCodes.AUDIT_DISK_FULL);
    restore();
    const replacement = await log.append(decisionEvent(3));
    assert.equal(replacement.leaf_index, 2, 'another event now holds leaf 2');
    gated.release();
    await rejectsCode(within(stale, 2000), ErrorCodes.AUDIT_DISK_FULL);
    const fresh = await log.checkpoint();
    assert.equal(fresh.tree_size, 3);
    await log.stop(3000);
    const file = await verifyLogFile(walPath(dir), ringOf(inner));
    assert.equal(file.leaves, 3);
    assert.equal(file.checkpoints, 2, 'the first checkpoint and the fresh one: the stale one was never written');
    await (await openLog(dir, inner)).stop(3000);
  });

  it('a real full filesystem (a 1 MiB tmpfs, needs mount): a batch cut short by ENOSPC is refused and its partial bytes cut off; freeing space lets the log go on, and a restart finds no torn tail', async (t) => {
    const dir = await tempDir();
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'tmpfs', dir], { stdio: 'ignore' });
    } catch {
      t.skip('mounting a tmpfs is not permitted here (needs root)');
      return;
    }
    try {
      const signer = SoftwareSigner.generate();
      const logDir = join(dir, 'bank');
      const log = await openLog(logDir, signer, { fsync: 'always' });
      const big = (n: number) => decisionEvent(n, { input: { n, note: 'x'.repeat(3000) } });
      for (const n of [0, 1]) await log.append(big(n));
      await log.checkpoint();
      const goodBytes = (await stat(walPath(logDir))).size;
      // Fill the volume, then give back about one event's room: a batch of three is cut short.
      const filler = join(dir, 'filler');
      const chunk = Buffer.alloc(4096);
      const handle = await open(filler, 'w');
      let filled = 0;
      try {
        for (;;) {
          await handle.write(chunk, 0, chunk.length, filled);
          filled += chunk.length;
        }
      } catch (error) {
        assert.equal((error as NodeJS.ErrnoException).code, 'ENOSPC');
      } finally {
        await handle.truncate(Math.max(0, filled - 4096));
        await handle.close();
      }
      const refused = [2, 3, 4].map((n) => log.append(big(n)));
      for (const append of refused) await rejectsCode(within(append, 2000), ErrorCodes.AUDIT_DISK_FULL);
      assert.equal((await stat(walPath(logDir))).size, goodBytes, 'the partial batch was cut off');
      assert.equal(log.size, 2);
      await rm(filler);
      const receipt = await log.append(big(5));
      assert.equal(receipt.leaf_index, 2);
      await log.checkpoint();
      await log.stop(3000);
      const file = await verifyLogFile(walPath(logDir), ringOf(signer));
      assert.equal(file.leaves, 3);
      const again = await openLog(logDir, signer);
      assert.equal(again.recovery.tornTail, undefined);
      await again.stop(3000);
      await writeFile(join(dir, 'done'), '');
    } finally {
      execFileSync('umount', [dir], { stdio: 'ignore' });
    }
  });
});
