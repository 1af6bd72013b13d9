/**
 * An audit log whose file stops being the one at its path while the log runs (the directory
 * removed, the file renamed away or replaced): nothing written after that is acknowledged,
 * the log says so in its status before the next record arrives, and it refuses records with
 * ERR_AUDIT_LOG_IO until a restart. Before this check, records were acknowledged into the
 * unlinked file and were gone at the next start.
 */
import assert from 'node:assert/strict';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { decisionEvent, openLog, readRecords, tempDir, walPath } from './audit/fixtures.ts';

function refusedAs(reason: string): (error: unknown) => boolean {
  return (error: unknown) => {
    assert.ok(isPavilionError(error, ErrorCodes.AUDIT_LOG_IO), `expected ERR_AUDIT_LOG_IO, got ${String(error)}`);
    assert.equal(error.details?.['reason'], reason, error.message);
    return true;
  };
}

describe('audit log file detached from its path', () => {
  for (const fsync of ['always', 'interval'] as const) {
    it(`refuses the first record after the directory is removed (fsync ${fsync}), and the next ones`, async () => {
      const root = await tempDir();
      const dir = join(root, 'audit');
      await mkdir(dir);
      const log = await openLog(dir, undefined, { fsync });
      for (let i = 0; i < 3; i++) await log.append(decisionEvent(i));
      await rm(dir, { recursive: true, force: true });
      // the write into the unlinked file happens; its acknowledgement must not
      await assert.rejects(log.append(decisionEvent(3)), refusedAs('file-removed'));
      await assert.rejects(log.append(decisionEvent(4)), refusedAs('file-removed'));
      const status = log.status();
      assert.equal(status.state, 'ERROR');
      assert.match(status.message ?? '', /was removed while the sidecar had it open/);
      await log.stop(5000).catch(() => undefined);
    });
  }

  it('says so in its status before any record arrives, without a write', async () => {
    const root = await tempDir();
    const dir = join(root, 'audit');
    await mkdir(dir);
    const log = await openLog(dir);
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
    const root = await tempDir();
    const dir = join(root, 'audit');
    await mkdir(dir);
    const log = await openLog(dir, undefined, { fsync: 'interval' });
    for (let i = 0; i < 3; i++) await log.append(decisionEvent(i));
    await rename(dir, join(root, 'audit.moved'));
    await assert.rejects(log.append(decisionEvent(3)), refusedAs('file-removed'));
    assert.match(log.status().message ?? '', /moved away from its path/);
    await log.stop(5000).catch(() => undefined);
    const { records } = await readRecords(join(root, 'audit.moved'));
    assert.deepEqual(records.slice(0, 3).map((r) => r.index), [0, 1, 2], 'the acknowledged records are all in the moved file');
  });

  it('refuses records once another file is put at its path', async () => {
    const root = await tempDir();
    const dir = join(root, 'audit');
    await mkdir(dir);
    const log = await openLog(dir, undefined, { fsync: 'interval' });
    await log.append(decisionEvent(0));
    const other = join(root, 'other.wal');
    await writeFile(other, 'not this log');
    await rename(other, walPath(dir));
    await assert.rejects(log.append(decisionEvent(1)), refusedAs('file-replaced'));
    assert.match(log.status().message ?? '', /replaced by another file/);
    await log.stop(5000).catch(() => undefined);
  });
});
