/**
 * Proof jobs on worker threads: a fixed number of workers, each job to the worker with the
 * fewest outstanding jobs, a per-job deadline, and a dead worker replaced (its jobs fail with
 * `ERR_INTERNAL`, never hang). Tenant material is replayed to every new worker.
 */
import { Worker } from 'node:worker_threads';
import { ErrorCodes, PavilionError } from '../lib/errors.ts';
import type { JsonObject } from './json.ts';
import type { ProofExecutor, ProofTime, TenantProofMaterial } from './proof-executor.ts';
import type { ProofJob, ProofReply } from './proof-protocol.ts';

const workerUrl = import.meta.url.endsWith('.ts')
  ? new URL('./proof-worker-entry.mjs', import.meta.url)
  : new URL('./proof-worker.js', import.meta.url);

const TENANT_TIMEOUT_MS = 10_000;

export interface WorkerProofExecutorOptions {
  readonly workers: number;
  /** A job not answered within this fails with ERR_INTERNAL (the worker is replaced). */
  readonly jobTimeoutMs: number;
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
  dead = false;

  constructor(onExit: (slot: ProofWorker) => void) {
    this.worker = new Worker(workerUrl);
    this.ready = new Promise<void>((resolve, reject) => {
      const onMessage = (reply: ProofReply): void => {
        if (reply.id === 0) {
          this.worker.off('error', reject);
          resolve();
          return;
        }
        const pending = this.pending.get(reply.id);
        if (pending === undefined) return;
        this.pending.delete(reply.id);
        clearTimeout(pending.timer);
        if (reply.ok) pending.resolve(reply.value);
        else pending.reject(new PavilionError(reply.code, reply.message));
      };
      this.worker.on('message', onMessage);
      this.worker.once('error', reject);
    });
    this.worker.on('exit', () => {
      this.dead = true;
      for (const pending of this.pending.values()) {
        clearTimeout(pending.timer);
        pending.reject(new PavilionError(ErrorCodes.INTERNAL, 'a proof worker stopped while verifying'));
      }
      this.pending.clear();
      onExit(this);
    });
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
    await Promise.all(Array.from({ length: options.workers }, () => executor.#spawn().ready));
    return executor;
  }

  #spawn(): ProofWorker {
    const slot = new ProofWorker((dead) => {
      const index = this.#workers.indexOf(dead);
      if (index >= 0) this.#workers.splice(index, 1);
      if (!this.#closed) {
        const replacement = this.#spawn();
        void replacement.ready.then(() => Promise.all([...this.#tenants.values()].map((material) => this.#send(replacement, { op: 'tenant', material })))).catch(() => undefined);
      }
    });
    this.#workers.push(slot);
    return slot;
  }

  #send(slot: ProofWorker, job: ProofJob): Promise<unknown> {
    if (this.#closed) return Promise.reject(new PavilionError(ErrorCodes.ENGINE_STOPPED, 'proof workers are stopped'));
    const id = this.#nextId++;
    // registering a tenant pins its contexts once; only proof jobs are held to the job deadline
    const timeoutMs = job.op === 'tenant' ? Math.max(this.#options.jobTimeoutMs, TENANT_TIMEOUT_MS) : this.#options.jobTimeoutMs;
    return new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => {
        slot.pending.delete(id);
        reject(new PavilionError(ErrorCodes.INTERNAL, `proof job took longer than ${timeoutMs} ms`));
        void slot.worker.terminate(); // a stuck worker is replaced
      }, timeoutMs);
      slot.pending.set(id, { resolve, reject, timer });
      slot.worker.postMessage({ id, job });
    });
  }

  async #job(job: ProofJob): Promise<unknown> {
    if (this.#closed) throw new PavilionError(ErrorCodes.ENGINE_STOPPED, 'proof workers are stopped');
    const live = this.#workers.filter((w) => !w.dead);
    const slot = live.sort((a, b) => a.pending.size - b.pending.size)[0];
    if (slot === undefined) throw new PavilionError(ErrorCodes.INTERNAL, 'no proof worker is running');
    await slot.ready;
    return this.#send(slot, job);
  }

  async addTenant(material: TenantProofMaterial): Promise<void> {
    this.#tenants.set(material.tenantId, material);
    await Promise.all(this.#workers.map(async (slot) => {
      await slot.ready;
      await this.#send(slot, { op: 'tenant', material });
    }));
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
