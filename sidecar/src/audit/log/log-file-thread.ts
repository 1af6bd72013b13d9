/**
 * Whole-file passes over a sealed epoch's log, each on a thread of its own: a proof of one
 * decision (`proveFromLogFile`) and the verification retention makes before it prunes an
 * epoch (`prunedEpochRecord`). Each is a pass over the whole file (every frame's CRC, every
 * leaf hashed into a tree, for retention every checkpoint's signature): on the event loop each
 * 4 MiB chunk of it would hold every tenant's requests for tens of milliseconds, for as long
 * as the file takes (a retention pass over a 64 MiB epoch: 75 ms at a time for about a
 * second). One thread per pass, ended once it has answered; the answer, or the typed error,
 * comes back as the function on the event loop gives it.
 */
import { Worker } from 'node:worker_threads';
import { ErrorCodes, PavilionError, describeThrown, type ErrorCode } from '../../lib/errors.ts';
import type { DecisionProofV1 } from './audit-log.ts';
import type { PrunedEpochFacts, PrunedEpochV1 } from './verify-log.ts';

/** What a thread is asked to do: one pass over the file at `path`. */
export type LogFileJob =
  | { readonly kind: 'prove'; readonly path: string; readonly decisionId: string; readonly sealed: boolean }
  | {
    readonly kind: 'pruned-record';
    readonly path: string;
    readonly epoch: number;
    /** The trusted public keys (Keyring.load's directory), read by the thread. */
    readonly keysDirectory: string;
    readonly origin: string;
    readonly facts: PrunedEpochFacts;
  };

/** What the thread posts: the answer, or the error with its code, message and details. */
export type LogFileReply =
  | { readonly value: unknown }
  | { readonly error: { readonly code: string; readonly message: string; readonly details?: Record<string, unknown> } };

const workerUrl = import.meta.url.endsWith('.ts')
  ? new URL('./log-file-worker-entry.mjs', import.meta.url)
  : new URL('./log-file-worker.js', import.meta.url);

export interface LogFileThreadOptions {
  /** The thread is ended, and the pass refused (ERR_AUDIT_LOG_IO), when it has not answered by then (a file that does not answer). */
  readonly timeoutMs?: number;
  /** Ends the thread (the pass refused, ERR_AUDIT_LOG_CLOSED): the owner is stopping. */
  readonly signal?: AbortSignal;
}

export interface FileProofOptions extends LogFileThreadOptions {
  readonly sealed?: boolean;
}

export function proveFromLogFileOnThread(path: string, decisionId: string, options: FileProofOptions = {}): Promise<DecisionProofV1> {
  return onThread({ kind: 'prove', path, decisionId, sealed: options.sealed === true }, 'a proof', options) as Promise<DecisionProofV1>;
}

/** `prunedEpochRecord` (verify-log.ts) on a thread, with the keys read from `keysDirectory`. */
export function prunedEpochRecordOnThread(path: string, epoch: number, keysDirectory: string, origin: string, facts: PrunedEpochFacts, options: LogFileThreadOptions = {}): Promise<PrunedEpochV1> {
  return onThread({ kind: 'pruned-record', path, epoch, keysDirectory, origin, facts }, 'its verification', options) as Promise<PrunedEpochV1>;
}

function onThread(job: LogFileJob, what: string, options: LogFileThreadOptions): Promise<unknown> {
  const closed = (): PavilionError => new PavilionError(ErrorCodes.AUDIT_LOG_CLOSED, 'the audit log is stopping');
  if (options.signal?.aborted === true) return Promise.reject(closed());
  return new Promise((resolve, reject) => {
    const worker = new Worker(workerUrl, { workerData: job });
    let settled = false;
    const timer = options.timeoutMs === undefined ? undefined : setTimeout(() => settle(() => reject(new PavilionError(
      ErrorCodes.AUDIT_LOG_IO,
      `reading ${job.path} for ${what} did not finish within ${options.timeoutMs} ms`,
      { details: { timeoutMs: options.timeoutMs } },
    ))), options.timeoutMs);
    const onAbort = (): void => settle(() => reject(closed()));
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const settle = (outcome: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      void worker.terminate();
      outcome();
    };
    worker.once('message', (reply: LogFileReply) => settle(() => {
      if ('value' in reply) resolve(reply.value);
      else reject(new PavilionError(reply.error.code as ErrorCode, reply.error.message, reply.error.details === undefined ? {} : { details: reply.error.details }));
    }));
    worker.once('error', (error) => settle(() => reject(new PavilionError(ErrorCodes.AUDIT_LOG_IO, `reading ${job.path} on a worker thread: ${describeThrown(error)}`, { cause: error }))));
    worker.once('exit', (code) => settle(() => reject(new PavilionError(ErrorCodes.AUDIT_LOG_IO, `the thread reading ${job.path} stopped (exit code ${code}) before it answered`))));
  });
}
