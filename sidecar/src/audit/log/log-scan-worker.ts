/**
 * The thread a start scans a large log file on (scanFileOnThread, ./log-scan.ts): it reads
 * the descriptor it is given from the first frame to `size`, posts each chunk's scanned
 * records (their buffers moved, not copied), then how the pass ended - or the read's failure.
 */
import { read } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { describeThrown } from '../../lib/errors.ts';
import { scanFile, transferables, type ReadAt, type ScanMessage } from './log-scan.ts';

const { fd, size } = workerData as { fd: number; size: number };
const port = parentPort;
if (port === null) throw new Error('log-scan-worker runs as a worker thread');
const post = (message: ScanMessage, transfer: ArrayBuffer[] = []): void => port.postMessage(message, transfer);

const readAt: ReadAt = (buffer, position) =>
  new Promise((resolve, reject) => {
    read(fd, buffer, 0, buffer.length, position, (error, bytesRead) => (error === null ? resolve(bytesRead) : reject(error)));
  });

try {
  const end = await scanFile(readAt, size, (batch) => post({ batch }, transferables(batch)));
  post({ end });
} catch (error) {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  post({ error: { message: describeThrown(error), ...(typeof code === 'string' ? { code } : {}) } });
}
