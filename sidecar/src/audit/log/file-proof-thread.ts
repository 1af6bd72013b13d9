/**
 * `proveFromLogFile` on a thread of its own. A proof from a sealed epoch's file is a pass over
 * the whole file (each leaf hashed into a tree, each decision id read): on the event loop each
 * 4 MiB chunk of it would hold every tenant's requests for tens of milliseconds, for as long
 * as the file takes. One thread per proof, ended once it has answered; the answer, or the
 * typed error, comes back as `proveFromLogFile` gives it.
 */
import { Worker } from 'node:worker_threads';
import { ErrorCodes, PavilionError, describeThrown, type ErrorCode } from '../../lib/errors.ts';
import type { DecisionProofV1 } from './audit-log.ts';

/** What the thread posts: the proof, or the error with its code, message and details. */
export type FileProofReply =
  | { readonly proof: DecisionProofV1 }
  | { readonly error: { readonly code: string; readonly message: string; readonly details?: Record<string, unknown> } };

const workerUrl = import.meta.url.endsWith('.ts')
  ? new URL('./file-proof-worker-entry.mjs', import.meta.url)
  : new URL('./file-proof-worker.js', import.meta.url);

export interface FileProofOptions {
  readonly sealed?: boolean;
  /** The thread is ended, and the proof refused (ERR_AUDIT_LOG_IO), when it has not answered by then (a file that does not answer). */
  readonly timeoutMs?: number;
  /** Ends the thread (the proof refused, ERR_AUDIT_LOG_CLOSED): the owner is stopping. */
  readonly signal?: AbortSignal;
}

export function proveFromLogFileOnThread(path: string, decisionId: string, options: FileProofOptions = {}): Promise<DecisionProofV1> {
  if (options.signal?.aborted === true) return Promise.reject(new PavilionError(ErrorCodes.AUDIT_LOG_CLOSED, 'the audit log is stopping'));
  return new Promise((resolve, reject) => {
    const worker = new Worker(workerUrl, { workerData: { path, decisionId, sealed: options.sealed === true } });
    let settled = false;
    const timer = options.timeoutMs === undefined ? undefined : setTimeout(() => settle(() => reject(new PavilionError(
      ErrorCodes.AUDIT_LOG_IO,
      `reading ${path} for a proof did not finish within ${options.timeoutMs} ms`,
    ))), options.timeoutMs);
    const onAbort = (): void => settle(() => reject(new PavilionError(ErrorCodes.AUDIT_LOG_CLOSED, 'the audit log is stopping')));
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const settle = (outcome: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      void worker.terminate();
      outcome();
    };
    worker.once('message', (reply: FileProofReply) => settle(() => {
      if ('proof' in reply) resolve(reply.proof);
      else reject(new PavilionError(reply.error.code as ErrorCode, reply.error.message, reply.error.details === undefined ? {} : { details: reply.error.details }));
    }));
    worker.once('error', (error) => settle(() => reject(new PavilionError(ErrorCodes.AUDIT_LOG_IO, `reading ${path} on a worker thread: ${describeThrown(error)}`, { cause: error }))));
    worker.once('exit', (code) => settle(() => reject(new PavilionError(ErrorCodes.AUDIT_LOG_IO, `the thread reading ${path} stopped (exit code ${code}) before it answered`))));
  });
}
