/**
 * The thread a whole-file pass over a sealed epoch's log runs on (./log-file-thread.ts): a
 * proof of one decision, or the verification retention makes before it prunes the epoch. It
 * posts the answer, or the error (a file error as ERR_AUDIT_LOG_IO, with its errno code).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { ErrorCodes, describeThrown, isPavilionError } from '../../lib/errors.ts';
import type { LogFileJob, LogFileReply } from './log-file-thread.ts';
import { Keyring } from './signer.ts';
import { proveFromLogFile, prunedEpochRecord } from './verify-log.ts';

const job = workerData as LogFileJob;
const port = parentPort;
if (port === null) throw new Error('log-file-worker runs as a worker thread');

function run(): Promise<unknown> {
  switch (job.kind) {
    case 'prove':
      return proveFromLogFile(job.path, job.decisionId, { sealed: job.sealed });
    case 'pruned-record':
      return prunedEpochRecord(job.path, job.epoch, Keyring.load(job.keysDirectory), job.origin, job.facts);
  }
}

let reply: LogFileReply;
try {
  reply = { value: await run() };
} catch (error) {
  const errno = (error as NodeJS.ErrnoException | undefined)?.code;
  reply = {
    error: isPavilionError(error)
      ? { code: error.code, message: error.message, ...(error.details === undefined ? {} : { details: { ...error.details } }) }
      : { code: ErrorCodes.AUDIT_LOG_IO, message: `${job.path}: ${describeThrown(error)}`, ...(typeof errno === 'string' ? { details: { errno: errno } } : {}) },
  };
}
port.postMessage(reply);
