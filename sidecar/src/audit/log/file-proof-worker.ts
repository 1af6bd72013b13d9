/**
 * The thread a proof from a sealed epoch's file runs on (proveFromLogFileOnThread,
 * ./file-proof-thread.ts): it proves the decision from the file and posts the proof, or the
 * error (a file error as ERR_AUDIT_LOG_IO, with its errno code).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { ErrorCodes, describeThrown, isPavilionError } from '../../lib/errors.ts';
import type { FileProofReply } from './file-proof-thread.ts';
import { proveFromLogFile } from './verify-log.ts';

const { path, decisionId, sealed } = workerData as { path: string; decisionId: string; sealed: boolean };
const port = parentPort;
if (port === null) throw new Error('file-proof-worker runs as a worker thread');

let reply: FileProofReply;
try {
  reply = { proof: await proveFromLogFile(path, decisionId, { sealed }) };
} catch (error) {
  const errno = (error as NodeJS.ErrnoException | undefined)?.code;
  reply = {
    error: isPavilionError(error)
      ? { code: error.code, message: error.message, ...(error.details === undefined ? {} : { details: { ...error.details } }) }
      : { code: ErrorCodes.AUDIT_LOG_IO, message: `${path}: ${describeThrown(error)}`, ...(typeof errno === 'string' ? { details: { errno: errno } } : {}) },
  };
}
port.postMessage(reply);
