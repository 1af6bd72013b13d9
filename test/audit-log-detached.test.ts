/**
 * An audit log whose file stops being the one at its path while the log runs (the directory
 * removed, the file renamed away or replaced): nothing written after that is acknowledged,
 * the log says so in its status before the next record arrives, and it refuses records with
 * ERR_AUDIT_LOG_IO until a restart. Before this check, records were acknowledged into the
 * unlinked file and were gone at the next start. Likewise its lock file removed or replaced
 * (another process may then open the log): nothing more is written. A removal or a rename
 * over the file is seen by every batch (the link count); a rename away, by a look at the
 * status or by the first batch PATH_CHECK_INTERVAL_MS after the last batch that looked at the
 * path.
 */
import assert from 'node:assert/strict';
import { mkdir, open, readFile, readdir, readlink, realpath, rename, rm, stat, symlink, writeFile, type FileHandle } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { PATH_CHECK_INTERVAL_MS, WalWriter } from '../sidecar/src/audit/log/wal-writer.ts';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ErrorCodes, PavilionError, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { decisionEvent, openLog, readRecords, tempDir, walPath } from './audit/fixtures.ts';
import { get, post, startPavilion } from './harness/pavilion-harness.ts';
import { within } from './harness/wait.ts';

function refusedAs(reason: string): (error: unknown) => boolean {
  return (error: unknown) => {
    assert.ok(isPavilionError(error, ErrorCodes.AUDIT_LOG_IO), `expected ERR_AUDIT_LOG_IO, got ${String(error)}`);
    assert.equal(error.details?.['reason'], reason, error.message);
    return true;
  };
}

/** A log in `<temporary root>/audit`, so that the directory itself can be removed or moved. */
async function logInAuditDir(fsync: 'always' | 'interval' = 'always'): Promise<{ root: string; dir: string; log: Awaited<ReturnType<typeof openLog>> }> {
  const root = await tempDir();
  const dir = join(root, 'audit');
  await mkdir(dir);
  return { root, dir, log: await openLog(dir, undefined, { fsync }) };
}

/**
 * A WalWriter with fsync 'always' on the real file `path`, whose next fdatasync (once armed)
 * first runs `duringSync`: something happening while a batch is being synced. `put` appends
 * one frame and waits until it is acknowledged.
 */
async function writerSyncingWith(path: string, options: { readonly guard?: () => PavilionError | undefined } = {}): Promise<{
  readonly writer: WalWriter;
  arm(duringSync: () => Promise<void> | void): void;
  put(text: string): Promise<void>;
}> {
  const real = await open(path, 'w+');
  let armed: (() => Promise<void> | void) | undefined;
  const handle = {
    fd: real.fd,
    writev: real.writev.bind(real),
    truncate: real.truncate.bind(real),
    close: real.close.bind(real),
    async datasync(): Promise<void> {
      const run = armed;
      armed = undefined; // once: a sync after a cut is a real one
      await run?.();
      await real.datasync();
    },
  } as unknown as FileHandle;
  const writer = new WalWriter(handle, 0, {
    path, ...options,
    fsync: 'always', fsyncIntervalMs: 1000, groupCommitMaxDelayMs: 0, groupCommitMaxBytes: 1 << 20, maxDiskBytes: 1 << 30, onFull: 'refuse', blockTimeoutMs: 100,
  });
  return {
    writer,
    arm: (duringSync) => { armed = duringSync; },
    async put(text) {
      assert.equal(writer.reserve(text.length), undefined);
      await writer.append(Buffer.from(text)).durable;
    },
  };
}

describe('audit log file detached from its path', () => {
  for (const fsync of ['always', 'interval'] as const) {
    it(`refuses the first record after the directory is removed (fsync ${fsync}), and the next ones`, async () => {
      const { dir, log } = await logInAuditDir(fsync);
      for (let i = 0; i < 3; i++) await log.append(decisionEvent(i));
      await rm(dir, { recursive: true, force: true });
      // the lock went with the directory: refused before the write, named by the file's state
      await assert.rejects(log.append(decisionEvent(3)), refusedAs('file-removed'));
      await assert.rejects(log.append(decisionEvent(4)), refusedAs('file-removed'));
      const status = log.status();
      assert.equal(status.state, 'ERROR');
      assert.match(status.message ?? '', /was removed while the sidecar had it open/);
      await log.stop(5000).catch(() => undefined);
    });
  }

  it('says so in its status before any record arrives, without a write', async () => {
    const { dir, log } = await logInAuditDir();
    await log.append(decisionEvent(0));
    assert.equal(log.status().state, 'OK');
    await rm(dir, { recursive: true, force: true });
    const status = log.status();
    assert.equal(status.state, 'ERROR', 'health turns ERROR at the next look, not at the next decision');
    assert.match(status.message ?? '', /ERR_AUDIT_LOG_IO|was removed/);
    await assert.rejects(log.append(decisionEvent(1)), refusedAs('file-removed'));
    await log.stop(5000).catch(() => undefined);
  });

  it('refuses records once the directory is renamed away; the records before stay in the moved file', async () => {
    const { root, dir, log } = await logInAuditDir('interval');
    for (let i = 0; i < 3; i++) await log.append(decisionEvent(i));
    await rename(dir, join(root, 'audit.moved'));
    const status = log.status();
    assert.equal(status.state, 'ERROR', 'a look at the status checks the path at once');
    assert.match(status.message ?? '', /moved away from its path/);
    await assert.rejects(log.append(decisionEvent(3)), refusedAs('file-removed'));
    await log.stop(5000).catch(() => undefined);
    const { records } = await readRecords(join(root, 'audit.moved'));
    assert.deepEqual(records.map((r) => r.index), [0, 1, 2], 'the acknowledged records are in the moved file, and the refused one is not');
  });

  it(`without a status look, a rename away is seen by the first batch once PATH_CHECK_INTERVAL_MS (${PATH_CHECK_INTERVAL_MS} ms) passed since the last look at the path`, async () => {
    const { root, dir, log } = await logInAuditDir('interval');
    await log.append(decisionEvent(0));
    await rename(dir, join(root, 'audit.moved'));
    await sleep(PATH_CHECK_INTERVAL_MS + 50);
    await assert.rejects(log.append(decisionEvent(1)), refusedAs('file-removed'));
    await log.stop(5000).catch(() => undefined);
    const { records } = await readRecords(join(root, 'audit.moved'));
    assert.deepEqual(records.map((r) => r.index), [0]);
  });

  it('refuses records once another file is put at its path', async () => {
    const { root, dir, log } = await logInAuditDir('interval');
    await log.append(decisionEvent(0));
    const other = join(root, 'other.wal');
    await writeFile(other, 'not this log');
    await rename(other, walPath(dir));
    await assert.rejects(log.append(decisionEvent(1)), refusedAs('file-replaced'));
    assert.match(log.status().message ?? '', /replaced by another file/);
    await log.stop(5000).catch(() => undefined);
  });

  it('stops writing, before the write, once its lock file is removed or replaced (another process may now open the log)', async () => {
    for (const [reason, tamper] of [
      ['lock-removed', (lock: string) => rm(lock)],
      ['lock-removed', (lock: string) => rename(lock, `${lock}.moved`)], // keeps its link: seen by the path
      ['lock-replaced', async (lock: string) => {
        await writeFile(`${lock}.other`, '4242 someone-else');
        await rename(`${lock}.other`, lock);
      }],
    ] as const) {
      const { dir, log } = await logInAuditDir('interval');
      await log.append(decisionEvent(0));
      const before = (await stat(walPath(dir))).size;
      await tamper(join(dir, 'LOCK'));
      assert.equal(log.status().state, 'ERROR', `${reason}: health says so before the next record`);
      await assert.rejects(log.append(decisionEvent(1)), refusedAs(reason));
      assert.equal((await stat(walPath(dir))).size, before, `${reason}: nothing was written after the lock was lost`);
      await log.stop(5000).catch(() => undefined);
    }
  });

  it('a lock or WAL path that cannot be looked at (a symbolic link to itself put there: ELOOP) fails the log for good: lock-unreadable, file-unreadable', async () => {
    for (const [reason, file] of [['lock-unreadable', 'LOCK'], ['file-unreadable', undefined]] as const) {
      const { dir, log } = await logInAuditDir('interval');
      try {
        await log.append(decisionEvent(0));
        const path = file === undefined ? walPath(dir) : join(dir, file);
        await rm(path);
        await symlink(path, path);
        assert.equal(log.status().state, 'ERROR', `${reason}: health says so before the next record`);
        assert.match(log.status().message ?? '', /cannot be looked at/);
        await assert.rejects(log.append(decisionEvent(1)), refusedAs(reason));
      } finally {
        await log.stop(5000).catch(() => undefined);
      }
    }
  });

  it('a seal that fails (its file gone before the final fsync) closes the lock\'s descriptor all the same; the lock file stays', async () => {
    const { dir, log } = await logInAuditDir('interval');
    await log.append(decisionEvent(0));
    const lock = await realpath(join(dir, 'LOCK')); // as /proc names an open file
    /** This process's descriptors open on `path`. */
    const openOn = async (path: string): Promise<number> => {
      let n = 0;
      for (const fd of await readdir('/proc/self/fd')) {
        if (await readlink(`/proc/self/fd/${fd}`).then((target) => target === path, () => false)) n++;
      }
      return n;
    };
    assert.equal(await openOn(lock), 1, 'the running log holds its lock open');
    await log.freeze();
    await rm(walPath(dir));
    await assert.rejects(log.seal(), /ENOENT/, 'the final fsync of the removed file fails');
    assert.equal(await openOn(lock), 0, 'no descriptor left on the lock after the failed seal');
    assert.ok((await stat(lock)).isFile(), 'the lock itself stays: the failed seal did not unlock');
  });

  it('refuses the batch before writing it when the lock went between two records (no status look in between)', async () => {
    const { dir, log } = await logInAuditDir('interval');
    await log.append(decisionEvent(0));
    const before = (await stat(walPath(dir))).size;
    await rm(join(dir, 'LOCK'));
    await assert.rejects(log.append(decisionEvent(1)), refusedAs('lock-removed'));
    assert.equal((await stat(walPath(dir))).size, before, 'the refused record is not in the file');
    await log.stop(5000).catch(() => undefined);
  });

  it("cuts a batch refused after its write off the file where it went (the directory renamed away during fsync 'always')", async () => {
    const root = await tempDir();
    const dir = join(root, 'audit');
    await mkdir(dir);
    const { writer, arm, put } = await writerSyncingWith(join(dir, 'audit.wal'));
    await put('first;');
    await sleep(PATH_CHECK_INTERVAL_MS + 50); // the next batch looks at the path (a rename keeps the link count)
    arm(() => rename(dir, join(root, 'audit.moved'))); // written, then found detached
    await assert.rejects(put('refused;'), refusedAs('file-removed'));
    await writer.close().catch(() => undefined);
    assert.equal(await readFile(join(root, 'audit.moved', 'audit.wal'), 'utf8'), 'first;', 'the refused frame was cut off the moved file');
  });

  it('a lock moved away without a status look: the first batch once the path check is due refuses, before the write', async () => {
    const { dir, log } = await logInAuditDir('interval');
    await log.append(decisionEvent(0));
    const before = (await stat(walPath(dir))).size;
    await rename(join(dir, 'LOCK'), join(dir, 'LOCK.moved'));
    await sleep(PATH_CHECK_INTERVAL_MS + 50);
    await assert.rejects(log.append(decisionEvent(1)), refusedAs('lock-removed'));
    assert.equal((await stat(walPath(dir))).size, before);
    await log.stop(5000).catch(() => undefined);
  });

  it("a status look that fails the log (its lock gone) while a batch is being synced refuses that batch too; the batch stays in the file, which another process may own now", async () => {
    const dir = join(await tempDir(), 'audit');
    await mkdir(dir);
    const path = join(dir, 'audit.wal');
    let lockGone = false;
    const lost = new PavilionError(ErrorCodes.AUDIT_LOG_IO, 'lock gone', { details: { reason: 'lock-removed' } });
    const { writer, arm, put } = await writerSyncingWith(path, { guard: () => (lockGone ? lost : undefined) });
    await put('first;');
    // the file stays where it is: only the failure the look notes can refuse the batch
    arm(() => {
      lockGone = true;
      assert.ok(writer.checkFile() !== undefined, 'the look finds the lock gone');
    });
    await assert.rejects(put('second;'), refusedAs('lock-removed'));
    await writer.close().catch(() => undefined);
    assert.equal(await readFile(path, 'utf8'), 'first;second;', 'not cut: past this point the file may hold another process\'s records');
  });
});

describe('through the sidecar', () => {
  it('the audit directory removed under a running sidecar: /health?plugins fails at once, the next decision is 503 ERR_AUDIT_LOG_IO, not a decision', async () => {
    const root = await tempDir();
    const auditDir = join(root, 'audit');
    const app = await startPavilion({ config: { decisionLog: { sink: 'audit', audit: { directory: auditDir, checkpointIntervalMs: 600_000 } } } });
    try {
      const decide = (id: string) => post(`${app.url}/v1/data/bank/authz/allow`, { input: { subject: { id } } }, { 'x-pavilion-tenant': 'bank' });
      assert.equal((await decide('before')).status, 200);
      assert.equal((await get(`${app.url}/health?plugins`)).status, 200);
      await rm(auditDir, { recursive: true, force: true });
      const health = await get(`${app.url}/health?plugins`);
      assert.equal(health.status, 500, `health after the removal: ${JSON.stringify(health.body)}`);
      const refused = await decide('after');
      assert.equal(refused.status, 503, JSON.stringify(refused.body));
      assert.equal((refused.body['errors'] as Array<{ code: string }>)[0]?.code, ErrorCodes.AUDIT_LOG_IO);
      assert.equal(refused.body['result'], undefined, 'no decision in a refused answer');
    } finally {
      await app.stop().catch(() => undefined);
    }
  });
});

describe('the writer around a lost lock (a handle double without a descriptor: writes go the asynchronous way)', () => {
  const lost = new PavilionError(ErrorCodes.AUDIT_LOG_IO, 'lock gone', { details: { reason: 'lock-removed' } });
  const options = { fsync: 'interval', fsyncIntervalMs: 60_000, groupCommitMaxDelayMs: 0, groupCommitMaxBytes: 1 << 20, maxDiskBytes: 1 << 30, onFull: 'refuse', blockTimeoutMs: 100 } as const;

  /** A file handle double; `onWrite` runs inside each writev before it answers. */
  function handleDouble(onWrite: (call: number) => { written?: number; error?: string } | undefined) {
    const state = { writes: 0, truncates: 0, closes: 0 };
    const handle = {
      async writev(buffers: Buffer[]): Promise<{ bytesWritten: number }> {
        const call = ++state.writes;
        const total = buffers.reduce((n, b) => n + b.length, 0);
        const answer = onWrite(call);
        if (answer?.error !== undefined) throw Object.assign(new Error(answer.error), { code: answer.error });
        return { bytesWritten: answer?.written ?? total };
      },
      async datasync(): Promise<void> {},
      async truncate(): Promise<void> {
        state.truncates++;
      },
      async close(): Promise<void> {
        state.closes++;
      },
    };
    return { state, handle: handle as unknown as FileHandle };
  }

  it('a write cut short stops once a look at health found the lock gone: the batch is refused, the rest not written, nothing cut', async () => {
    let lockGone = false;
    let writer: WalWriter | undefined;
    const { state, handle } = handleDouble((call) => {
      if (call === 1) {
        lockGone = true;
        writer?.checkFile();
        return { written: 4 }; // part of the batch: the loop would write the rest next
      }
      return undefined;
    });
    writer = new WalWriter(handle, 0, { ...options, guard: () => (lockGone ? lost : undefined) });
    assert.equal(writer.reserve(10), undefined);
    await assert.rejects(writer.append(Buffer.from('0123456789')).durable, refusedAs('lock-removed'));
    assert.equal(state.writes, 1, 'the rest of the batch was not written');
    assert.equal(state.truncates, 0, 'not cut: the file may be another process\'s log now');
  });

  it('a full volume met after the lock was lost refuses the batch without cutting the file', async () => {
    let lockGone = false;
    let writer: WalWriter | undefined;
    const { state, handle } = handleDouble(() => {
      lockGone = true;
      writer?.checkFile();
      return { error: 'ENOSPC' };
    });
    writer = new WalWriter(handle, 0, { ...options, guard: () => (lockGone ? lost : undefined) });
    assert.equal(writer.reserve(10), undefined);
    await assert.rejects(writer.append(Buffer.from('0123456789')).durable);
    assert.equal(state.truncates, 0);
  });

  it('a guard that throws refuses the batch with ERR_AUDIT_LOG_IO instead of leaving it pending', async () => {
    const { handle } = handleDouble(() => undefined);
    const writer = new WalWriter(handle, 0, { ...options, guard: () => { throw new Error('broken check'); } });
    assert.equal(writer.reserve(3), undefined);
    await assert.rejects(within(writer.append(Buffer.from('abc')).durable, 2000), (error: unknown) => isPavilionError(error, ErrorCodes.AUDIT_LOG_IO) && /broken check/.test(error.message));
  });

  it('close() called again while the first is draining waits for it (a stop racing a seal must not unlock under a write)', async () => {
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => { release = resolve; });
    const { state, handle } = handleDouble(() => undefined);
    (handle as unknown as { datasync: () => Promise<void> }).datasync = () => gate;
    const writer = new WalWriter(handle, 0, { ...options, fsync: 'always' });
    assert.equal(writer.reserve(3), undefined);
    const durable = writer.append(Buffer.from('abc')).durable;
    const first = writer.close();
    let secondDone = false;
    const second = writer.close().then(() => { secondDone = true; });
    await sleep(50);
    assert.equal(secondDone, false, 'the second close waits while the first still drains');
    release();
    await Promise.all([durable, first, second]);
    assert.equal(state.closes, 1);
  });
});
