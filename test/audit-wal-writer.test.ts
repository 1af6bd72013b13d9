/**
 * The WAL writer's durability policies and group commit, and its failure mode, against a
 * file handle double that records what was asked of the disk.
 */
import assert from 'node:assert/strict';
import { mkdtemp, open, readFile, rm, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { SYNC_WRITE_MAX_BYTES, WalWriter, type WalWriterOptions } from '../sidecar/src/audit/log/wal-writer.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { within } from './harness/wait.ts';

class FakeHandle {
  writes: number[] = [];
  syncs = 0;
  bytes: Buffer[] = [];
  failWrites = false;
  writeError = { code: 'EIO', message: 'EIO: i/o error' };
  failSync = false;
  failTruncate = false;
  truncatedTo: number[] = [];
  closed = false;

  async writev(buffers: Buffer[], position: number): Promise<{ bytesWritten: number; buffers: Buffer[] }> {
    if (this.failWrites) throw Object.assign(new Error(this.writeError.message), { code: this.writeError.code });
    this.writes.push(position);
    this.bytes.push(...buffers);
    return { bytesWritten: buffers.reduce((n, b) => n + b.length, 0), buffers };
  }

  async datasync(): Promise<void> {
    if (this.failSync) throw Object.assign(new Error('EIO: i/o error'), { code: 'EIO' });
    this.syncs++;
  }

  async truncate(length: number): Promise<void> {
    if (this.failTruncate) throw Object.assign(new Error('EIO: i/o error, ftruncate'), { code: 'EIO' });
    this.truncatedTo.push(length);
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

const options = (overrides: Partial<WalWriterOptions> = {}): WalWriterOptions => ({
  fsync: 'always', fsyncIntervalMs: 20, groupCommitMaxDelayMs: 0, groupCommitMaxBytes: 1 << 20,
  maxDiskBytes: 1 << 30, onFull: 'refuse', blockTimeoutMs: 100, ...overrides,
});

function writer(handle: FakeHandle, overrides: Partial<WalWriterOptions> = {}): WalWriter {
  return new WalWriter(handle as unknown as FileHandle, 16, options(overrides));
}

async function append(w: WalWriter, frame: Buffer): Promise<number> {
  const waiting = w.reserve(frame.length);
  if (waiting !== undefined) await waiting;
  const { offset, durable } = w.append(frame);
  await durable;
  return offset;
}

describe('WAL writer', () => {
  it("fsync 'always': a batch is acknowledged only after its fdatasync; offsets follow the file", async () => {
    const handle = new FakeHandle();
    const w = writer(handle);
    const offsets = await Promise.all(Array.from({ length: 50 }, () => append(w, Buffer.alloc(10))));
    assert.deepEqual(offsets, Array.from({ length: 50 }, (_, i) => 16 + i * 10));
    assert.ok(handle.writes.length < 50, `${handle.writes.length} writes for 50 frames`);
    assert.equal(handle.syncs, handle.writes.length, 'one fdatasync per batch');
    await w.close();
    assert.ok(handle.closed);
  });

  it("fsync 'interval': acknowledged after the write, fdatasync'ed on the interval", async () => {
    const handle = new FakeHandle();
    const w = writer(handle, { fsync: 'interval', fsyncIntervalMs: 20 });
    await append(w, Buffer.alloc(10));
    assert.equal(handle.syncs, 0);
    await new Promise((r) => setTimeout(r, 60));
    assert.ok(handle.syncs >= 1);
    await w.close();
  });

  it("fsync 'never': never fdatasyncs, not even at close", async () => {
    const handle = new FakeHandle();
    const w = writer(handle, { fsync: 'never' });
    await append(w, Buffer.alloc(10));
    await w.close();
    assert.equal(handle.syncs, 0);
  });

  it('groupCommitMaxDelayMs gathers frames into one batch; groupCommitMaxBytes starts it early', async () => {
    const handle = new FakeHandle();
    const w = writer(handle, { groupCommitMaxDelayMs: 30, groupCommitMaxBytes: 1000 });
    const started = performance.now();
    await Promise.all(Array.from({ length: 10 }, () => append(w, Buffer.alloc(10))));
    assert.equal(handle.writes.length, 1);
    assert.ok(performance.now() - started >= 25, 'waited for the delay');
    const big = performance.now();
    await Promise.all(Array.from({ length: 10 }, () => append(w, Buffer.alloc(100))));
    assert.ok(performance.now() - big < 25, 'a full batch does not wait for the delay');
    await w.close();
  });

  it('a failed write fails the batch, everything queued and every later append with ERR_AUDIT_LOG_IO', async () => {
    const handle = new FakeHandle();
    const w = writer(handle);
    await append(w, Buffer.alloc(10));
    handle.failWrites = true;
    await assert.rejects(append(w, Buffer.alloc(10)), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_LOG_IO) && /EIO/.test(e.message));
    handle.failWrites = false;
    assert.throws(() => w.reserve(10), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_LOG_IO));
    assert.ok(w.failure !== undefined);
  });

  for (const code of ['ENOSPC', 'EDQUOT']) {
    it(`a write failing with ${code} refuses the batch and everything queued with ERR_AUDIT_DISK_FULL, rewinds to the last written byte, and the writer goes on`, async () => {
      const handle = new FakeHandle();
      const rewinds: number[] = [];
      const w = new WalWriter(handle as unknown as FileHandle, 0, options(), { onRewind: (position) => rewinds.push(position) });
      await append(w, Buffer.alloc(10));
      handle.failWrites = true;
      handle.writeError = { code, message: `${code}: no room` };
      const refused = [append(w, Buffer.alloc(10)), append(w, Buffer.alloc(10))];
      for (const r of refused) await assert.rejects(r, (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_DISK_FULL));
      assert.deepEqual(rewinds, [10], 'told where the file ends before the refusals');
      assert.deepEqual(handle.truncatedTo, [10]);
      assert.equal(w.failure, undefined);
      assert.equal(w.diskFull?.refusedFrames, 2);
      assert.equal(w.stats().bytesQueued, 0);
      handle.failWrites = false;
      w.reserve(10);
      const next = w.append(Buffer.alloc(10));
      assert.equal(next.offset, 10, 'written where the refused frames would have gone');
      await next.durable;
      assert.equal(w.diskFull, undefined);
      assert.deepEqual(handle.writes, [0, 10]);
      await w.close();
    });
  }

  it('a failed fdatasync fails the batch with ERR_AUDIT_LOG_IO', async () => {
    const handle = new FakeHandle();
    handle.failSync = true;
    const w = writer(handle);
    await assert.rejects(append(w, Buffer.alloc(10)), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_LOG_IO) && /EIO/.test(e.message));
  });

  it('closing refuses blocked writers with ERR_AUDIT_LOG_CLOSED and later appends too', async () => {
    const handle = new FakeHandle();
    const w = writer(handle, { maxDiskBytes: 16 + 4096 + 10, onFull: 'block', blockTimeoutMs: 5000 });
    await append(w, Buffer.alloc(10));
    const blocked = append(w, Buffer.alloc(10));
    await new Promise((r) => setTimeout(r, 10));
    await w.close();
    await assert.rejects(blocked, (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_LOG_CLOSED));
    assert.throws(() => w.reserve(1), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_LOG_CLOSED));
  });

  it('a frame larger than the whole budget is refused at once, even when blocking', () => {
    const w = writer(new FakeHandle(), { maxDiskBytes: 16 + 4096 + 100, onFull: 'block' });
    assert.throws(() => w.reserve(200), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_LOG_FULL));
  });

  it('a real file: batches up to SYNC_WRITE_MAX_BYTES are written on the calling thread, larger ones through the thread pool, in order', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pavilion-wal-'));
    const handle = await open(join(dir, 'audit.wal'), 'w+');
    const pooled: number[] = [];
    const writev = handle.writev.bind(handle);
    // counts the writes that go through the thread pool (FileHandle.writev)
    handle.writev = (async (buffers: NodeJS.ArrayBufferView[], position?: number | null) => {
      pooled.push(position ?? -1);
      return writev(buffers, position ?? undefined);
    }) as FileHandle['writev'];
    try {
      const w = new WalWriter(handle, 0, options({ fsync: 'interval', fsyncIntervalMs: 60_000 }));
      const small = Buffer.alloc(100, 1);
      const large = Buffer.alloc(SYNC_WRITE_MAX_BYTES + 1, 2);
      assert.equal(await append(w, small), 0);
      assert.deepEqual(pooled, [], 'a small batch does not go to the thread pool');
      assert.equal(await append(w, large), 100);
      assert.deepEqual(pooled, [100], 'a batch over SYNC_WRITE_MAX_BYTES does');
      assert.equal(await append(w, small), 100 + large.length);
      await w.close();
      assert.deepEqual(await readFile(join(dir, 'audit.wal')), Buffer.concat([small, large, small]));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('WAL writer: a full volume whose rewind cannot finish', () => {
  /** A handle whose writes fail with ENOSPC, and whose cuts fail too while `failTruncate`. */
  function fullHandle(): FakeHandle {
    const handle = new FakeHandle();
    handle.failWrites = true;
    handle.writeError = { code: 'ENOSPC', message: 'ENOSPC: no space left on device, write' };
    return handle;
  }
  const refusedWith = (code: string) => (e: unknown): boolean => isPavilionError(e) && e.code === code;
  const interval = { fsync: 'interval', fsyncIntervalMs: 60_000 } as const;

  it('a cut that fails after ENOSPC is made before the next batch: while it fails, nothing is written past the end (the batch is refused); once it succeeds, writing goes on', async () => {
    const handle = fullHandle();
    handle.failTruncate = true;
    const w = writer(handle, interval);
    await within(assert.rejects(append(w, Buffer.from('0123456789')), refusedWith(ErrorCodes.AUDIT_DISK_FULL)), 2000);
    handle.failWrites = false;
    // a shorter batch ending on a boundary of the refused frames would leave them readable
    await within(assert.rejects(append(w, Buffer.from('abcde')), refusedWith(ErrorCodes.AUDIT_DISK_FULL)), 2000);
    assert.deepEqual(handle.bytes, [], 'nothing written while the file could not be cut');
    handle.failTruncate = false;
    await within(append(w, Buffer.from('xyz')), 2000);
    assert.deepEqual(handle.bytes.map(String), ['xyz']);
  });

  it('an onRewind that throws fails the writer: the refused append and every later one settle with ERR_AUDIT_LOG_IO instead of waiting for ever', async () => {
    const handle = fullHandle();
    const w = new WalWriter(handle as unknown as FileHandle, 16, options(interval), { onRewind: () => { throw new Error('the owner could not cut its tree'); } });
    await within(assert.rejects(append(w, Buffer.from('0123456789')), refusedWith(ErrorCodes.AUDIT_LOG_IO)), 2000);
    handle.failWrites = false;
    await within(assert.rejects(append(w, Buffer.from('abcde')), refusedWith(ErrorCodes.AUDIT_LOG_IO)), 2000);
  });
});
