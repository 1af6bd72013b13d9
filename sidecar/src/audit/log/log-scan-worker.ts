/**
 * The thread a start scans a large log file on (scanFileOnThread, ./log-scan.ts): it reads
 * the descriptor it is given from the first frame to `size`, posts each chunk's scanned
 * records (their buffers moved, not copied), at most SCAN_BATCHES_AHEAD ahead of those the
 * caller has applied, then how the pass ended - or why it failed.
 */
import { read } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { describeThrown } from '../../lib/errors.ts';
import { BATCH_APPLIED, SCAN_BATCHES_AHEAD, scanFile, transferables, type ReadAt, type ScanMessage, type ScannedRecords } from './log-scan.ts';

const { fd, size } = workerData as { fd: number; size: number };
const port = parentPort;
if (port === null) throw new Error('log-scan-worker runs as a worker thread');
const post = (message: ScanMessage, transfer: ArrayBuffer[] = []): void => port.postMessage(message, transfer);

const readAt: ReadAt = (buffer, position) =>
  new Promise((resolve, reject) => {
    read(fd, buffer, 0, buffer.length, position, (error, bytesRead) => (error === null ? resolve(bytesRead) : reject(error)));
  });

// batches posted and not yet applied, and who waits for one to be
let ahead = 0;
let applied: (() => void) | undefined;
port.on('message', (message: unknown) => {
  if (message !== BATCH_APPLIED) return;
  ahead--;
  applied?.();
});

async function postBatch(batch: ScannedRecords): Promise<void> {
  post({ batch }, transferables(batch));
  ahead++;
  while (ahead >= SCAN_BATCHES_AHEAD) await new Promise<void>((resolve) => (applied = resolve));
  applied = undefined;
}

try {
  const end = await scanFile(readAt, size, postBatch);
  post({ end });
} catch (error) {
  const { code, errno, syscall } = (error ?? {}) as NodeJS.ErrnoException;
  post({
    error: {
      message: describeThrown(error),
      ...(typeof code === 'string' ? { code } : {}),
      ...(typeof errno === 'number' ? { errno } : {}),
      ...(typeof syscall === 'string' ? { syscall } : {}),
    },
  });
}
// the caller ends the thread once it has the outcome (the port listening for answers keeps it)
