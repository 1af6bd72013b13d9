/**
 * Crash safety (issue 6, item 7): a writer killed with SIGKILL at an arbitrary moment loses
 * no acknowledged decision; a torn tail is detected, truncated and reported on restart; the
 * tree continues and the whole log verifies.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import { SoftwareSigner, verifyLogFile, type RecoveryReport } from '../sidecar/src/audit/log/index.ts';
import { decisionEvent, openLog, ringOf, tempDir, walPath } from './audit/fixtures.ts';

interface Round {
  readonly pid: number;
  readonly recovery: RecoveryReport;
  readonly acked: Map<string, number>;
}

/** Run the writer until it has acknowledged `acks` decisions, then SIGKILL it. */
async function runAndKill(directory: string, keyFile: string, acks: number): Promise<Round> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'audit', 'crash-writer.ts'), directory, keyFile], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const acked = new Map<string, number>();
  let recovery: RecoveryReport | undefined;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const lines = createInterface({ input: child.stdout });
  const closed = new Promise<void>((resolve) => lines.once('close', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the writer did not reach its acks in time')), 60_000);
    lines.on('line', (line) => {
      if (line.startsWith('recovery ')) recovery = JSON.parse(line.slice(9)) as RecoveryReport;
      if (line.startsWith('ack ')) {
        const [, id, index] = line.split(' ');
        acked.set(id!, Number(index));
        if (acked.size === acks) {
          clearTimeout(timer);
          child.kill('SIGKILL');
          resolve();
        }
      }
    });
    child.once('exit', (code, signal) => {
      if (acked.size < acks) {
        clearTimeout(timer);
        reject(new Error(`the writer exited early: ${code ?? signal}`));
      }
    });
  });
  await exited;
  // Lines already in the pipe when the kill landed were acknowledged too.
  await closed;
  assert.ok(recovery !== undefined, 'the writer reported its recovery');
  return { pid: child.pid!, recovery, acked };
}

describe('crash safety', () => {
  it('SIGKILL mid-stream loses no acknowledged decision; a torn tail is truncated and reported', async () => {
    const dir = await tempDir();
    const keyFile = join(dir, 'checkpoint-key.pem');
    const first = await runAndKill(dir, keyFile, 400);
    assert.equal(first.recovery.leaves, 0);

    // A write torn by power loss: part of a frame at the end of the file.
    const tail = Buffer.from((await readFile(walPath(dir))).subarray(16, 16 + 60));
    await appendFile(walPath(dir), tail);

    const second = await runAndKill(dir, keyFile, 300);
    assert.equal(second.recovery.staleLockPid, first.pid, 'the dead writer\'s lock was taken over');
    assert.ok(second.recovery.tornTail !== undefined, 'the torn tail was reported');
    assert.equal(second.recovery.tornTail.bytesRemoved, 60);
    assert.ok(second.recovery.leaves >= first.acked.size, 'every acknowledged leaf of the first run survived');
    assert.equal(await readFile(second.recovery.tornTail.savedAs).then((b) => b.length), 60);

    const signer = SoftwareSigner.loadOrCreate(keyFile);
    const log = await openLog(dir, signer);
    assert.equal(log.recovery.staleLockPid, second.pid);
    assert.equal((log.status().details as Record<string, unknown>)['stale_lock_pid'], second.pid, 'and shown in its status');
    for (const round of [first, second]) {
      for (const [id, index] of round.acked) assert.equal(log.leafIndexOf(id), index, `acknowledged decision ${id} is at leaf ${index}`);
    }
    const sizeBefore = log.size;
    assert.equal((await log.append(decisionEvent(1, { decision_id: 'after-crash' }))).leaf_index, sizeBefore, 'the tree continues');
    await log.stop(5000);
    const ring = ringOf(signer);
    const verified = await verifyLogFile(walPath(dir), ring);
    assert.equal(verified.leaves, sizeBefore + 1);
    assert.equal(verified.unsignedLeaves, 0);
    console.log(`# crash test: ${first.acked.size} + ${second.acked.size} acknowledged, ${sizeBefore} leaves recovered, ${verified.checkpoints} checkpoints verified`);
  });
});
