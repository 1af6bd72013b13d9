/**
 * The audit log when its file fails underneath it, induced for real: the log's own descriptor
 * is pointed at /dev/null, where writes still succeed and fdatasync fails (EINVAL), so the
 * background sync of fsync 'interval' is what fails. Also the writer's close with a frame
 * still waiting for the group-commit timer.
 */
import assert from 'node:assert/strict';
import { closeSync, openSync, readdirSync, readlinkSync, realpathSync } from 'node:fs';
import { access, open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { FILE_HEADER_BYTES, FRAME_OVERHEAD_BYTES, SoftwareSigner, encodeEvent } from '../sidecar/src/audit/log/index.ts';
import { CHECKPOINT_HEADROOM_BYTES, WalWriter } from '../sidecar/src/audit/log/wal-writer.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { decisionEvent, openLog, tempDir, walPath } from './audit/fixtures.ts';

async function rejectsCode(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isPavilionError(error), `expected a PavilionError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    return true;
  });
}

/** The promise, or a plain error once `ms` pass without it settling (a hang becomes a failure). */
function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still pending after ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** Point the descriptor this process holds on `path` at /dev/null (same number, so the log keeps using it). */
function swapForDevNull(path: string): void {
  const target = realpathSync(path);
  const held = readdirSync('/proc/self/fd').map(Number).filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`) === target;
    } catch {
      return false;
    }
  });
  assert.equal(held.length, 1, `one descriptor on ${target}`);
  const fd = held[0]!;
  closeSync(fd);
  // open() takes the lowest free number: fill lower gaps until it is the one just closed.
  const fillers: number[] = [];
  for (let n = openSync('/dev/null', 'r+'); n !== fd; n = openSync('/dev/null', 'r+')) {
    fillers.push(n);
    assert.ok(n < fd, `descriptor ${fd} was taken by someone else`);
  }
  for (const n of fillers) closeSync(n);
}

const frameBytes = (n: number): number => FRAME_OVERHEAD_BYTES + encodeEvent(decisionEvent(n)).bytes.length;

async function until(condition: () => boolean, ms: number): Promise<void> {
  const end = performance.now() + ms;
  while (!condition() && performance.now() < end) await new Promise((r) => setTimeout(r, 5));
  assert.ok(condition(), `not reached within ${ms} ms`);
}

describe('audit log file failing underneath', () => {
  it("fsync 'interval': a failed background fdatasync gets the queued append and every later one ERR_AUDIT_LOG_IO, and stop() returns at once", async () => {
    const dir = await tempDir();
    // Three frames start a batch at once; one alone waits for the (60 s) group-commit timer.
    const log = await openLog(dir, SoftwareSigner.generate(), { fsync: 'interval', fsyncIntervalMs: 20, groupCommitMaxDelayMs: 60_000, groupCommitMaxBytes: 2 * frameBytes(0) + 1 });
    swapForDevNull(walPath(dir));
    await Promise.all([0, 1, 2].map((i) => log.append(decisionEvent(i)))); // written, so a sync is due
    const queued = log.append(decisionEvent(3));
    await rejectsCode(within(queued, 2000), ErrorCodes.AUDIT_LOG_IO);
    await rejectsCode(log.append(decisionEvent(4)), ErrorCodes.AUDIT_LOG_IO);
    assert.equal(log.status().state, 'ERROR');
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
    swapForDevNull(walPath(dir));
    await log.checkpoint(); // a checkpoint fits the headroom: written, so a sync is due
    await until(() => log.status().state === 'ERROR', 2000);
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

  it('closing the writer with a frame waiting for the group-commit timer writes it at once instead of spinning', async () => {
    const path = join(await tempDir(), 'wal');
    const writer = new WalWriter(await open(path, 'w+'), 0, {
      fsync: 'interval', fsyncIntervalMs: 60_000, groupCommitMaxDelayMs: 60_000, groupCommitMaxBytes: 1 << 20,
      maxDiskBytes: 1 << 30, onFull: 'refuse', blockTimeoutMs: 100,
    });
    writer.reserve(10);
    const { durable } = writer.append(Buffer.from('0123456789'));
    await within(writer.close(), 2000);
    await durable;
    assert.equal(await readFile(path, 'utf8'), '0123456789');
  });
});
