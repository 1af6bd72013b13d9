/**
 * A PKCS#11 checkpoint signer whose token calls all run on a thread of their own
 * (pkcs11-worker.ts): pkcs11js runs only the signature itself off the calling thread, while
 * C_SignInit, a session reopen (open, login, key lookup) and the start are synchronous. On the
 * event loop, a network HSM that stops answering would hold every decision for as long as its
 * client library waits. Here it holds that thread only:
 *
 * - every call (the start, each signature with its reopen) fails after `operationTimeoutMs`
 *   with ERR_AUDIT_SIGNER_FAILED (ERR_AUDIT_SIGNER_CONFIG for the start); while a timed-out
 *   signature is still unanswered, later ones fail at once, saying since when, instead of
 *   each waiting out its own timeout;
 * - a thread that stops (an error, or killed) fails what it had on board; the next signature
 *   starts a new thread (at most one start per RESTART_BACKOFF_MS), which must find the same
 *   key (ERR_AUDIT_SIGNER_KEY_CHANGED otherwise).
 *
 * Pkcs11Module and Pkcs11Signer (pkcs11-signer.ts) do the work on that thread, so sessions,
 * reopens, PIN and key checks behave exactly as in-process.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { ErrorCodes, PavilionError, describeThrown, type ErrorCode } from '../../lib/errors.ts';
import type { Pkcs11KeyAttributes, Pkcs11KeyOptions } from './pkcs11-signer.ts';
import type { Pkcs11Reply, Pkcs11Request } from './pkcs11-worker.ts';
import { p256Verifies, type CheckpointSigner } from './signer.ts';

// From TypeScript sources the worker needs tsx registered in its own thread (loader hooks
// are per thread); from compiled JavaScript it loads directly.
const workerUrl = import.meta.url.endsWith('.ts')
  ? new URL('./pkcs11-worker-entry.mjs', import.meta.url)
  : new URL('./pkcs11-worker.js', import.meta.url);

/** A thread not up (its code loaded) after this fails what was asked of it. */
const THREAD_START_LIMIT_MS = 30_000;

/** After the thread stopped, a new one is started at most this often (default). */
const RESTART_BACKOFF_MS = 5_000;

export interface Pkcs11ThreadSignerOptions {
  /** The PKCS#11 library (e.g. /usr/lib/softhsm/libsofthsm2.so). */
  readonly modulePath: string;
  readonly key: Pkcs11KeyOptions;
  /** Each call into the token (the start; a signature, with a session reopen) fails after this. */
  readonly operationTimeoutMs: number;
  /** After the thread stopped, a new one is started at most this often. Default 5 000. */
  readonly restartBackoffMs?: number;
  /** Tests only: let `stallNextSign` hold the thread as a token that does not answer would. */
  readonly allowStall?: boolean;
}

/** A request before its id is given (each member of the union without `id`). */
type Unsent = Pkcs11Request extends infer R ? (R extends unknown ? Omit<R, 'id'> : never) : never;

interface Pending {
  readonly resolve: (reply: Pkcs11Reply) => void;
  readonly reject: (error: PavilionError) => void;
}

/** Threads of this process on each PKCS#11 library: running, or left inside a call that has not returned. */
const LIBRARY_THREADS = new Map<string, Set<Pkcs11Thread>>();

/** One thread and the key it opened. */
class Pkcs11Thread {
  readonly worker: Worker;
  readonly #modulePath: string;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  /** The thread has loaded its code: deadlines start from here (a loaded machine takes a while to start a thread). */
  readonly #ready: Promise<void>;
  #becameReady!: () => void;
  /** Why the thread stopped, once it has. */
  stopped: PavilionError | undefined;

  constructor(modulePath: string, allowStall: boolean) {
    this.#modulePath = modulePath;
    this.#ready = new Promise((resolve) => (this.#becameReady = resolve));
    this.worker = new Worker(workerUrl, { workerData: { allowStall } });
    this.worker.unref();
    const threads = LIBRARY_THREADS.get(modulePath) ?? new Set<Pkcs11Thread>();
    threads.add(this);
    LIBRARY_THREADS.set(modulePath, threads);
    this.worker.once('exit', () => {
      threads.delete(this);
      if (threads.size === 0 && LIBRARY_THREADS.get(modulePath) === threads) LIBRARY_THREADS.delete(modulePath);
    });
    this.worker.on('message', (reply: Pkcs11Reply | { readonly ready: true }) => {
      if ('ready' in reply) {
        this.#becameReady();
        return;
      }
      const pending = this.#pending.get(reply.id);
      this.#pending.delete(reply.id);
      pending?.resolve(reply);
    });
    const stop = (why: string): void => {
      this.stopped ??= new PavilionError(ErrorCodes.AUDIT_SIGNER_FAILED, `PKCS#11: the signing thread stopped: ${why}`);
      for (const p of this.#pending.values()) p.reject(this.stopped);
      this.#pending.clear();
    };
    this.worker.on('error', (error) => stop(describeThrown(error)));
    this.worker.on('exit', (code) => stop(`exit code ${code}`));
  }

  /** Send a request; its reply, or the timeout's error (the request stays on board, answered into nothing). */
  call(request: Unsent, timeoutMs: number, timedOut: () => PavilionError): { readonly id: number; readonly reply: Promise<Pkcs11Reply> } {
    const id = this.#nextId++;
    const reply = new Promise<Pkcs11Reply>((resolve, reject) => {
      if (this.stopped !== undefined) {
        reject(this.stopped);
        return;
      }
      // the deadline is the token's: it starts once the thread is up (one that dies starting
      // rejects through 'error' / 'exit'; one that never gets up, after THREAD_START_LIMIT_MS)
      let timer = setTimeout(() => {
        this.#pending.delete(id); // never sent
        reject(timedOut());
      }, Math.max(THREAD_START_LIMIT_MS, timeoutMs));
      this.#pending.set(id, {
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      void this.#ready.then(() => {
        if (!this.#pending.has(id)) return;
        clearTimeout(timer);
        timer = setTimeout(() => reject(timedOut()), timeoutMs);
        this.worker.postMessage({ ...request, id } as Pkcs11Request);
      });
    });
    return { id, reply };
  }

  /** No other thread of the process uses the library: only then may this one finalize it. */
  get soleUser(): boolean {
    const threads = LIBRARY_THREADS.get(this.#modulePath);
    return threads === undefined || (threads.size === 1 && threads.has(this));
  }

  /** Whether request `id` is still unanswered. */
  waiting(id: number): boolean {
    return this.#pending.has(id);
  }

  /** A request's reply is kept after its timeout, to learn when the token answered again. */
  keep(id: number, onAnswer: () => void): void {
    const pending = this.#pending.get(id);
    if (pending === undefined) return;
    this.#pending.set(id, { resolve: () => onAnswer(), reject: () => onAnswer() });
  }
}

function replyError(reply: Pkcs11Reply): PavilionError | undefined {
  const e = reply.error;
  return e === undefined ? undefined : new PavilionError(e.code as ErrorCode, e.message, e.details === undefined ? {} : { details: e.details });
}

/**
 * Stop a thread without waiting for it: one inside a native call that does not return cannot
 * stop until it does, and nothing here may wait on the token past its timeout.
 */
function abandon(thread: Pkcs11Thread): void {
  void thread.worker.terminate().catch(() => undefined);
}

export class Pkcs11ThreadSigner implements CheckpointSigner {
  readonly keyId: string;
  readonly publicKeySpki: Buffer;
  readonly attributes: Pkcs11KeyAttributes;
  readonly #options: Pkcs11ThreadSignerOptions;
  readonly #publicKey: KeyObject;
  #thread: Pkcs11Thread;
  /** The thread that ran the last call (for tests: never the event loop's). */
  #lastThreadId = 0;
  /** Signatures that timed out and are still unanswered, and when the oldest was asked. */
  #unanswered = 0;
  #unansweredSince = 0;
  #stallNextMs: number | undefined;
  #restartedAt = 0;
  #restarting: Promise<void> | undefined;
  /** Set when a new thread found the PIN refused or another key: trying again cannot help. */
  #refusal: PavilionError | undefined;
  #closed = false;

  private constructor(options: Pkcs11ThreadSignerOptions, thread: Pkcs11Thread, opened: Pkcs11Reply) {
    this.#options = options;
    this.#thread = thread;
    this.keyId = opened.keyId!;
    this.publicKeySpki = Buffer.from(opened.spki!);
    this.attributes = opened.attributes!;
    this.#publicKey = createPublicKey({ key: this.publicKeySpki, format: 'der', type: 'spki' });
    this.#lastThreadId = opened.threadId;
  }

  /**
   * Start the thread, open the library and the key (with the start's self-test signature).
   * Every failure is ERR_AUDIT_SIGNER_CONFIG, within `operationTimeoutMs`.
   */
  static async open(options: Pkcs11ThreadSignerOptions): Promise<Pkcs11ThreadSigner> {
    const thread = new Pkcs11Thread(options.modulePath, options.allowStall === true);
    try {
      return new Pkcs11ThreadSigner(options, thread, await Pkcs11ThreadSigner.#openOn(thread, options));
    } catch (error) {
      abandon(thread);
      if (error instanceof PavilionError && error.code !== ErrorCodes.AUDIT_SIGNER_FAILED) throw error;
      throw new PavilionError(ErrorCodes.AUDIT_SIGNER_CONFIG, `PKCS#11: ${describeThrown(error).replace(/^PKCS#11: /, '')}`, { cause: error });
    }
  }

  static async #openOn(thread: Pkcs11Thread, options: Pkcs11ThreadSignerOptions, restart = false): Promise<Pkcs11Reply> {
    // a new thread never generates a key: a missing one is not replaced behind the signer's back
    const key = restart ? { ...options.key, generate: false } : options.key;
    const { reply } = thread.call({ op: 'open', modulePath: options.modulePath, key, finalize: thread.soleUser }, options.operationTimeoutMs, () => new PavilionError(
      ErrorCodes.AUDIT_SIGNER_CONFIG,
      `PKCS#11: opening key ${JSON.stringify(options.key.keyLabel)} on token ${options.key.tokenLabel} did not finish within ${options.operationTimeoutMs} ms`,
    ));
    const opened = await reply;
    const error = replyError(opened);
    if (error !== undefined) throw opened.error?.final === true ? Object.assign(error, { final: true }) : error;
    return opened;
  }

  /** Signatures that timed out and are still unanswered (the token holds the thread). */
  get unanswered(): number {
    return this.#unanswered;
  }

  /** The thread that made the last signature (never the main thread's 0). */
  get threadId(): number {
    return this.#lastThreadId;
  }

  /** Whether `signature` over `message` verifies with this signer's public key. */
  verifies(message: Uint8Array, signature: Buffer): boolean {
    return p256Verifies(this.#publicKey, message, signature);
  }

  /** Tests only: stop the thread as a crash would (the next signature starts a new one). */
  async stopThreadForTests(): Promise<void> {
    await this.#thread.worker.terminate();
  }

  /** Tests only (`allowStall`): the next signature holds the thread `ms` before it starts. */
  stallNextSign(ms: number): void {
    this.#stallNextMs = ms;
  }

  #closedError(): PavilionError {
    return new PavilionError(ErrorCodes.AUDIT_SIGNER_FAILED, 'PKCS#11: the signer is closed');
  }

  async sign(message: Uint8Array): Promise<Buffer> {
    if (this.#closed) throw this.#closedError();
    if (this.#refusal !== undefined) throw this.#refusal;
    if (this.#unanswered > 0) {
      throw new PavilionError(ErrorCodes.AUDIT_SIGNER_FAILED, `PKCS#11: the token has not answered the signature asked ${Date.now() - this.#unansweredSince} ms ago; not asking again until it does`);
    }
    if (this.#thread.stopped !== undefined) {
      await this.#restart();
      if (this.#closed) throw this.#closedError();
    }
    const thread = this.#thread;
    const asked = Date.now();
    const stallMs = this.#stallNextMs;
    this.#stallNextMs = undefined;
    const { id, reply } = thread.call({ op: 'sign', message, ...(stallMs === undefined ? {} : { stallMs }) }, this.#options.operationTimeoutMs, () => new PavilionError(
      ErrorCodes.AUDIT_SIGNER_FAILED,
      `PKCS#11: the token did not answer a signature within ${this.#options.operationTimeoutMs} ms`,
    ));
    let answer: Pkcs11Reply;
    try {
      answer = await reply;
    } catch (error) {
      if (thread.waiting(id)) {
        if (this.#unanswered++ === 0) this.#unansweredSince = asked;
        thread.keep(id, () => {
          this.#unanswered--;
        });
      }
      throw error;
    }
    this.#lastThreadId = answer.threadId;
    const error = replyError(answer);
    if (error !== undefined) throw error;
    return Buffer.from(answer.signature!);
  }

  /** A new thread in place of one that stopped; it must open the same key. */
  async #restart(): Promise<void> {
    this.#restarting ??= (async () => {
      const since = Date.now() - this.#restartedAt;
      const backoffMs = this.#options.restartBackoffMs ?? RESTART_BACKOFF_MS;
      if (since < backoffMs) {
        throw new PavilionError(ErrorCodes.AUDIT_SIGNER_FAILED, `${this.#thread.stopped!.message}; restarted ${since} ms ago, the next start is in ${backoffMs - since} ms`);
      }
      this.#restartedAt = Date.now();
      const thread = new Pkcs11Thread(this.#options.modulePath, this.#options.allowStall === true);
      let opened: Pkcs11Reply;
      try {
        opened = await Pkcs11ThreadSigner.#openOn(thread, this.#options, true);
      } catch (error) {
        abandon(thread);
        const failure = new PavilionError(ErrorCodes.AUDIT_SIGNER_FAILED, `${this.#thread.stopped!.message}; a new one could not open the key: ${describeThrown(error)}`, { cause: error });
        // the PIN refused (every try counts toward locking it) or another key: not again
        if ((error as { final?: unknown }).final === true) this.#refusal = error instanceof PavilionError && error.code === ErrorCodes.AUDIT_SIGNER_KEY_CHANGED ? error : failure;
        throw failure;
      }
      if (opened.keyId !== this.keyId) {
        abandon(thread);
        this.#refusal = new PavilionError(ErrorCodes.AUDIT_SIGNER_KEY_CHANGED, `PKCS#11: after the signing thread restarted, the key labelled ${JSON.stringify(this.#options.key.keyLabel)} is ${String(opened.keyId)}, not ${this.keyId}; refusing to sign`, {
          details: { expectedKeyId: this.keyId, foundKeyId: opened.keyId },
        });
        throw this.#refusal;
      }
      if (this.#closed) {
        // closed while this thread opened the key: it closes what it opened, and goes
        await this.#closeOn(thread);
        abandon(thread);
        throw this.#closedError();
      }
      this.#thread = thread;
    })().finally(() => {
      this.#restarting = undefined;
    });
    await this.#restarting;
  }

  /** Close the key (and, when no other thread uses it, the library) on `thread`: whether it answered in time. */
  #closeOn(thread: Pkcs11Thread): Promise<boolean> {
    return thread.call({ op: 'close', finalize: thread.soleUser }, this.#options.operationTimeoutMs, () => this.#closedError()).reply.then(() => true, () => false);
  }

  /**
   * Close the key and the library on the thread, then stop it; within `operationTimeoutMs`.
   * A thread held by a token that does not answer is left to stop when the call returns: it
   * cannot stop before, and it holds the process's exit until then (Node joins its threads).
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#restarting?.catch(() => undefined);
    const thread = this.#thread;
    if (thread.stopped !== undefined) return;
    // not while the token holds a signature: the close would queue behind it
    const answered = this.#unanswered === 0 && (await this.#closeOn(thread));
    if (answered) await thread.worker.terminate();
    else abandon(thread);
  }
}
