/**
 * The start's pass over a log file on a worker thread (scanFileOnThread): the same batches as
 * on the calling thread, and its failures - a read that fails, a batch the caller refuses -
 * reach the caller as the calling thread's pass would fail. (Restarts through it are in
 * audit-log.test.ts, every restart case both ways.)
 */
import assert from 'node:assert/strict';
import { open, stat } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { scanFile, scanFileOnThread, type ScannedRecords } from '../sidecar/src/audit/log/log-scan.ts';
import { appendMany, decisionEvent, openLog, tempDir, walPath } from './audit/fixtures.ts';

/** A stopped log of 5,000 decisions of about 1.3 KB (two 4 MiB reads), checkpoints among them; its file's path. */
async function logFile(): Promise<string> {
  const dir = await tempDir();
  const log = await openLog(dir, undefined, { fsync: 'never', checkpointEveryEvents: 700 });
  const pad = 'x'.repeat(1000);
  await appendMany(log, 5000, (n) => decisionEvent(n, { input: { pad } }));
  await log.stop(5000);
  return walPath(dir);
}

/** A batch as plain values, to compare the two threads' batches. */
function plain(batch: ScannedRecords): unknown {
  return { ...batch, types: [...batch.types], indexes: [...batch.indexes], offsets: [...batch.offsets], leafHashes: Buffer.from(batch.leafHashes).toString('hex'), otherPayloads: batch.otherPayloads.map((p) => Buffer.from(p).toString('hex')) };
}

describe('scanning a log file on a worker thread', () => {
  it('hands over the same batches and end as the calling thread, in file order', async () => {
    const path = await logFile();
    const { size } = await stat(path);
    const handle = await open(path, 'r');
    try {
      const here: unknown[] = [];
      const hereEnd = await scanFile(async (buffer, position) => (await handle.read(buffer, 0, buffer.length, position)).bytesRead, size, (b) => void here.push(plain(b)));
      const there: unknown[] = [];
      const thereEnd = await scanFileOnThread(handle.fd, size, (b) => void there.push(plain(b)));
      assert.deepEqual(there, here);
      assert.deepEqual(thereEnd, hereEnd);
      assert.equal(thereEnd.damage, undefined);
      assert.equal(thereEnd.goodEnd, size);
      assert.equal(here.length, 2, 'a batch per read');
      const types = here.flatMap((b) => (b as { types: number[] }).types);
      assert.equal(types.filter((t) => t === 1).length, 5000, 'every leaf');
      assert.equal(types.filter((t) => t === 2).length, 8, 'and the checkpoints among them (a final one at stop)');
    } finally {
      await handle.close();
    }
  });

  it('a read that fails rejects with the system error: its code, errno and syscall kept', async () => {
    // a descriptor this process does not have open (a closed one's number may be reused at
    // once): the thread's first read fails as the calling thread's would
    await assert.rejects(scanFileOnThread(999_999, 1024, () => undefined), (error: NodeJS.ErrnoException) => {
      assert.equal(error.code, 'EBADF');
      assert.equal(error.syscall, 'read');
      assert.equal(typeof error.errno, 'number');
      assert.match(error.message, /^scanning the log file on a worker thread: /);
      return true;
    });
  });

  it('a batch the caller refuses (its check throws) rejects with that very error, once', async () => {
    const path = await logFile();
    const { size } = await stat(path);
    const handle = await open(path, 'r');
    try {
      const refusal = new Error('leaf 3 is out of order');
      let batches = 0;
      await assert.rejects(scanFileOnThread(handle.fd, size, () => {
        batches++;
        throw refusal;
      }), (error: unknown) => error === refusal);
      assert.equal(batches, 1, 'nothing is applied after the refusal');
    } finally {
      await handle.close();
    }
  });
});
