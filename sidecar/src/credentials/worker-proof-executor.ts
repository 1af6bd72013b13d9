/**
 * Proof jobs on worker threads: a fixed number of workers, each job to the worker with the
 * fewest outstanding jobs, a per-job deadline (running from when the job is taken, a worker
 * still starting included), and a dead worker replaced: its jobs fail with
 * `ERR_CREDENTIAL_PROOF_UNAVAILABLE` (the credential is refused, never accepted unchecked), never
 * hang, and a worker's uncaught exception never reaches the main thread. Tenant material is
 * replayed to every new worker.
 */
import { Worker } from 'node:worker_threads';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import type { JsonObject } from './json.ts';
import type { ProofExecutor, ProofTime, TenantProofMaterial } from './proof-executor.ts';
import type { ProofJob, ProofReply } from './proof-protocol.ts';

const defaultWorkerUrl = import.meta.url.endsWith('.ts')
  ? new URL('./proof-worker-entry.mjs', import.meta.url)
  : new URL('./proof-worker.js', import.meta.url);

const TENANT_TIMEOUT_MS = 10_000;
/** A worker that died before it was ready is replaced after this: no hot respawn loop. */
const RESPAWN_DELAY_MS = 1_000;

export interface WorkerProofExecutorOptions {
  readonly workers: number;
  /** A job not answered within this fails with ERR_CREDENTIAL_PROOF_UNAVAILABLE (the worker is replaced). */
  readonly jobTimeoutMs: number;
  /** The worker script (default: proof-worker); it must speak proof-protocol. For tests. */
  readonly workerUrl?: URL;
}

/** Proof work that could not be done (timeout, dead worker): typed, so the credential is refused as such. */
function unavailable(message: string, cause?: unknown): PavilionError {
  return new PavilionError(ErrorCodes.CREDENTIAL_PROOF_UNAVAILABLE, message, cause === undefined ? undefined : { cause });
}

interface Pending {
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: PavilionError) => void;
  readonly timer: NodeJS.Timeout;
}

class ProofWorker {
  readonly worker: Worker;
  readonly pending = new Map<number, Pending>();
  readonly ready: Promise<void>;
  isReady = false;
  dead = false;

  constructor(url: URL, onExit: (slot: ProofWorker) => void) {
    this.worker = new Worker(url);
    let settle!: { resolve: () => void; reject: (error: PavilionError) => void };
    this.ready = new Promise<void>((resolve, reject) => {
      settle = { resolve, reject };
    });
    // awaited by jobs and start(); a worker nobody waits for must not be an unhandled rejection
    this.ready.catch(() => undefined);
    this.worker.on('message', (reply: ProofReply) => {
      if (reply.id === 0) {
        this.isReady = true;
        settle.resolve();
        return;
      }
      const pending = this.pending.get(reply.id);
      if (pending === undefined) return;
      this.pending.delete(reply.id);
      clearTimeout(pending.timer);
      if (reply.ok) pending.resolve(reply.value);
      else pending.reject(new PavilionError(reply.code, reply.message));
    });
    // for the worker's whole life: an 'error' with no listener would throw on the main thread.
    // 'exit' follows 'error'; whichever comes first retires the worker, so no job is sent to it
    // in between.
    this.worker.on('error', (error) => {
      this.#retire(unavailable(`a proof worker failed: ${describeThrown(error)}`, error), onExit, settle.reject);
    });
    this.worker.on('exit', (code) => {
      this.#retire(unavailable(`a proof worker stopped (exit code ${code})`), onExit, settle.reject);
    });
  }

  /** Fail every job on this worker and its start (no-op once ready), and have it replaced, once. */
  #retire(error: PavilionError, onExit: (slot: ProofWorker) => void, rejectReady: (error: PavilionError) => void): void {
    const first = !this.dead;
    this.dead = true;
    rejectReady(error);
    for (const pending of this.pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(error);
    }
    this.pending.clear();
    if (first) onExit(this);
  }
}

export class WorkerProofExecutor implements ProofExecutor {
  readonly #options: WorkerProofExecutorOptions;
  readonly #workers: ProofWorker[] = [];
  readonly #tenants = new Map<string, TenantProofMaterial>();
  #nextId = 1;
  #closed = false;

  private constructor(options: WorkerProofExecutorOptions) {
    this.#options = options;
  }

  static async start(options: WorkerProofExecutorOptions): Promise<WorkerProofExecutor> {
    if (!Number.isInteger(options.workers) || options.workers < 1) throw new PavilionError(ErrorCodes.CONFIG_INVALID, 'proof workers: at least one');
    const executor = new WorkerProofExecutor(options);
    try {
      await Promise.all(Array.from({ length: options.workers }, () => executor.#spawn().ready));
    } catch (error) {
      await executor.close();
      throw error;
    }
    return executor;
  }

  #spawn(): ProofWorker {
    const slot = new ProofWorker(this.#options.workerUrl ?? defaultWorkerUrl, (dead) => {
      const index = this.#workers.indexOf(dead);
      if (index >= 0) this.#workers.splice(index, 1);
      if (this.#closed) return;
      if (dead.isReady) this.#replace();
      else setTimeout(() => this.#replace(), RESPAWN_DELAY_MS).unref();
    });
    this.#workers.push(slot);
    return slot;
  }

  #replace(): void {
    if (this.#closed) return;
    const replacement = this.#spawn();
    // registered before any job can await `ready`, so a replacement knows every tenant first
    void replacement.ready.then(() => Promise.all([...this.#tenants.values()].map((material) => this.#send(replacement, { op: 'tenant', material })))).catch(() => undefined);
  }

  /**
   * Run `job` on `slot`. The deadline starts now, before the worker is ready: a worker that never
   * starts fails the job instead of hanging it.
   */
  #send(slot: ProofWorker, job: ProofJob): Promise<unknown> {
    if (this.#closed) return Promise.reject(new PavilionError(ErrorCodes.ENGINE_STOPPED, 'proof workers are stopped'));
    const id = this.#nextId++;
    // registering a tenant pins its contexts once; only proof jobs are held to the job deadline
    const timeoutMs = job.op === 'tenant' ? Math.max(this.#options.jobTimeoutMs, TENANT_TIMEOUT_MS) : this.#options.jobTimeoutMs;
    return new Promise<unknown>((resolve, reject) => {
      let posted = false;
      const timer = setTimeout(() => {
        slot.pending.delete(id);
        reject(unavailable(`proof job took longer than ${timeoutMs} ms`));
        // a worker stuck on a job is replaced; one still starting is left to start
        if (posted) void slot.worker.terminate();
      }, timeoutMs);
      slot.pending.set(id, { resolve, reject, timer });
      const post = (): void => {
        if (!slot.pending.has(id)) return; // timed out or failed while the worker started
        posted = true;
        slot.worker.postMessage({ id, job });
      };
      // a ready worker is posted to at once, keeping messages in call order (a replacement's
      // tenant material before the jobs that need it)
      if (slot.isReady) post();
      else slot.ready.then(post, () => undefined); // on a failed start the exit handler failed this job
    });
  }

  async #job(job: ProofJob): Promise<unknown> {
    if (this.#closed) throw new PavilionError(ErrorCodes.ENGINE_STOPPED, 'proof workers are stopped');
    const live = this.#workers.filter((w) => !w.dead);
    const slot = live.sort((a, b) => a.pending.size - b.pending.size)[0];
    if (slot === undefined) throw unavailable('no proof worker is running');
    return this.#send(slot, job);
  }

  async addTenant(material: TenantProofMaterial): Promise<void> {
    this.#tenants.set(material.tenantId, material);
    await Promise.all(this.#workers.map((slot) => this.#send(slot, { op: 'tenant', material })));
  }

  async verifyCredentialProof(tenantId: string, credential: JsonObject, time: ProofTime): Promise<{ proofType: string }> {
    return (await this.#job({ op: 'credential', tenantId, credential, ...time })) as { proofType: string };
  }

  async verifyPresentationProof(tenantId: string, presentation: JsonObject, check: ProofTime & { challenge: string; domain: string }): Promise<{ proofType: string; holderKey: string }> {
    return (await this.#job({ op: 'presentation', tenantId, presentation, ...check })) as { proofType: string; holderKey: string };
  }

  async verifyMembership(value: Uint8Array, publicKey: Uint8Array, element: bigint, witness: Uint8Array): Promise<boolean> {
    return (await this.#job({ op: 'membership', value, publicKey, element: element.toString(), witness })) === true;
  }

  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all(this.#workers.map((slot) => slot.worker.terminate()));
    this.#workers.length = 0;
  }
}
