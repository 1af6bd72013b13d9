/**
 * Proof jobs on worker threads, shared fairly between tenants.
 *
 * - Jobs wait on the main thread, one FIFO queue per tenant, and idle workers take them
 *   round-robin by tenant (next: the waiting tenant whose last job was taken longest ago):
 *   however many jobs one tenant has waiting, another tenant's job waits behind at most one of
 *   them per worker.
 * - The queue is bounded (`maxQueuedJobs`), and each tenant (those registered with addTenant,
 *   plus one share for jobs that name none) may have an equal share of it waiting. A job beyond
 *   its tenant's share is refused at once with `ERR_CREDENTIAL_PROOF_UNAVAILABLE`
 *   (`details.reason: 'tenant-share'`): the other tenants' shares stay free. A job that has
 *   waited longer than `maxWaitMs` (default the larger of 5 s and three job deadlines) when its
 *   turn comes is refused the same way (`details.reason: 'queue-wait'`) instead of run.
 * - A worker runs one proof job at a time, so a job's deadline (`jobTimeoutMs`) runs from when a
 *   worker takes it and measures that job's own work. A job past it fails alone
 *   (`ERR_CREDENTIAL_PROOF_UNAVAILABLE`); its worker is terminated (nothing else stops CPU-bound
 *   work) and replaced, and the jobs still waiting run on the replacement.
 * - A worker that dies during a job fails that job (its likely cause, so not retried) and is
 *   replaced; a worker's uncaught exception never reaches the main thread. A new worker is given
 *   every tenant's material and loads the proof stack before it takes a job, so no job is charged
 *   with a replacement's start. Never a hang: a worker not started within START_TIMEOUT_MS is
 *   terminated, and while no worker is running, waiting jobs fail with PROOF_UNAVAILABLE.
 * The credential whose job fails is refused, never accepted unchecked.
 */
import { Worker } from 'node:worker_threads';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import type { JsonObject } from './json.ts';
import type { ProofExecutor, ProofTime, TenantProofMaterial } from './proof-executor.ts';
import type { ProofJob, ProofReply, ProofRequest } from './proof-protocol.ts';

const defaultWorkerUrl = import.meta.url.endsWith('.ts')
  ? new URL('./proof-worker-entry.mjs', import.meta.url)
  : new URL('./proof-worker.js', import.meta.url);

const TENANT_TIMEOUT_MS = 10_000;
/** A worker that died before it was ready is replaced after this: no hot respawn loop. */
const RESPAWN_DELAY_MS = 1_000;
/** A worker not ready for jobs (started, tenants registered, proof stack loaded) within this is terminated. */
const START_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_QUEUED_JOBS = 1_024;
/** The queue of jobs that name no tenant (verifyMembership called without one). */
const NO_TENANT = '';
/** A new worker loads the proof stack before it takes jobs: its start is not charged to a job's deadline. */
const WARM_UP: ProofJob = { op: 'warm' };

export interface WorkerProofExecutorOptions {
  readonly workers: number;
  /**
   * A job not answered within this, counted from when a worker takes it (not while it waits),
   * fails with ERR_CREDENTIAL_PROOF_UNAVAILABLE (the worker is replaced).
   */
  readonly jobTimeoutMs: number;
  /** Jobs waiting for a worker, all tenants together (default 1024); each tenant may fill an equal share. */
  readonly maxQueuedJobs?: number;
  /** The longest a job may wait for a worker (default max(5 s, 3 x jobTimeoutMs)); past it, it is refused when its turn comes. */
  readonly maxWaitMs?: number;
  /** The worker script (default: proof-worker); it must speak proof-protocol. For tests. */
  readonly workerUrl?: URL;
}

/** Proof work that could not be done (timeout, dead worker, full share): typed, so the credential is refused as such. */
function unavailable(message: string, options: { cause?: unknown; details?: Record<string, unknown> } = {}): PavilionError {
  return new PavilionError(ErrorCodes.CREDENTIAL_PROOF_UNAVAILABLE, message, options);
}

/** A proof job, waiting or running. */
interface Job {
  readonly tenant: string;
  readonly job: ProofJob;
  /** When it was queued (performance.now()): a job that waited past maxWaitMs is refused, not run. */
  readonly queuedAtMs: number;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: PavilionError) => void;
}

/** A message outside the job queue (tenant material, the warm-up), answered by id. */
interface Control {
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: PavilionError) => void;
  readonly timer: NodeJS.Timeout | undefined;
}

class ProofWorker {
  readonly worker: Worker;
  /** Resolves once the worker takes jobs; rejects when it dies (or is stopped) before. */
  readonly started: Promise<void>;
  readonly settleStart: { resolve: () => void; reject: (error: PavilionError) => void };
  readonly control = new Map<number, Control>();
  /** The one proof job this worker is running. */
  running: { readonly id: number; readonly job: Job; readonly timer: NodeJS.Timeout } | undefined;
  startTimer: NodeJS.Timeout | undefined;
  /** Answered its first message: tenant material can be sent. */
  isReady = false;
  /** Tenant material sent and warm-up answered: takes jobs. */
  accepting = false;
  /** Being terminated: takes nothing more. */
  stopping = false;
  dead = false;

  constructor(url: URL) {
    this.worker = new Worker(url);
    let settle!: { resolve: () => void; reject: (error: PavilionError) => void };
    this.started = new Promise<void>((resolve, reject) => {
      settle = { resolve, reject };
    });
    this.settleStart = settle;
    // awaited by start(); a worker nobody waits for must not be an unhandled rejection
    this.started.catch(() => undefined);
  }

  get idle(): boolean {
    return this.accepting && !this.stopping && !this.dead && this.running === undefined;
  }
}

export class WorkerProofExecutor implements ProofExecutor {
  readonly #options: WorkerProofExecutorOptions;
  readonly #maxQueued: number;
  readonly #maxWaitMs: number;
  readonly #workers: ProofWorker[] = [];
  readonly #tenants = new Map<string, TenantProofMaterial>();
  /** Waiting jobs by tenant (only tenants with some). */
  readonly #queues = new Map<string, Job[]>();
  #queued = 0;
  /** When each tenant last had a job taken (a turn number): the waiting tenant served longest ago goes next. */
  readonly #served = new Map<string, number>();
  #turn = 0;
  #nextId = 1;
  #closed = false;

  private constructor(options: WorkerProofExecutorOptions) {
    this.#options = options;
    this.#maxQueued = options.maxQueuedJobs ?? DEFAULT_MAX_QUEUED_JOBS;
    this.#maxWaitMs = options.maxWaitMs ?? Math.max(5_000, 3 * options.jobTimeoutMs);
  }

  static async start(options: WorkerProofExecutorOptions): Promise<WorkerProofExecutor> {
    if (!Number.isInteger(options.workers) || options.workers < 1) throw new PavilionError(ErrorCodes.CONFIG_INVALID, 'proof workers: at least one');
    if (options.maxQueuedJobs !== undefined && (!Number.isInteger(options.maxQueuedJobs) || options.maxQueuedJobs < 1)) {
      throw new PavilionError(ErrorCodes.CONFIG_INVALID, 'proof workers: maxQueuedJobs must be a positive integer');
    }
    const executor = new WorkerProofExecutor(options);
    try {
      await Promise.all(Array.from({ length: options.workers }, () => executor.#spawn().started));
    } catch (error) {
      await executor.close();
      throw error;
    }
    return executor;
  }

  #spawn(): ProofWorker {
    const slot = new ProofWorker(this.#options.workerUrl ?? defaultWorkerUrl);
    slot.worker.on('message', (reply: ProofReply) => this.#onReply(slot, reply));
    // for the worker's whole life: an 'error' with no listener would throw on the main thread.
    // 'exit' follows 'error'; whichever comes first retires the worker.
    slot.worker.on('error', (error) => this.#retire(slot, unavailable(`a proof worker failed: ${describeThrown(error)}`, { cause: error })));
    slot.worker.on('exit', (code) => this.#retire(slot, unavailable(`a proof worker stopped (exit code ${code})`)));
    slot.startTimer = setTimeout(() => this.#stop(slot), START_TIMEOUT_MS).unref();
    this.#workers.push(slot);
    return slot;
  }

  #onReply(slot: ProofWorker, reply: ProofReply): void {
    if (reply.id === 0) {
      slot.isReady = true;
      // messages are handled in order: the tenants are known before the warm-up and any job
      for (const material of this.#tenants.values()) void this.#control(slot, { op: 'tenant', material }).catch(() => undefined);
      void this.#control(slot, WARM_UP, false)
        .catch(() => undefined) // a stack that fails to load fails the jobs that need it, with their own error
        .then(() => {
          if (slot.dead || slot.stopping) return;
          clearTimeout(slot.startTimer);
          slot.accepting = true;
          slot.settleStart.resolve();
          this.#pump();
        });
      return;
    }
    const control = slot.control.get(reply.id);
    if (control !== undefined) {
      slot.control.delete(reply.id);
      clearTimeout(control.timer);
      if (reply.ok) control.resolve(reply.value);
      else control.reject(new PavilionError(reply.code, reply.message));
      return;
    }
    const running = slot.running;
    if (running === undefined || running.id !== reply.id) return; // a job already timed out
    slot.running = undefined;
    clearTimeout(running.timer);
    if (reply.ok) running.job.resolve(reply.value);
    else running.job.reject(new PavilionError(reply.code, reply.message));
    this.#pump();
  }

  /** Send a message outside the job queue; past its deadline (if any) the worker is replaced. */
  #control(slot: ProofWorker, job: ProofJob, deadline = true): Promise<unknown> {
    if (slot.dead || slot.stopping) return Promise.reject(unavailable('the proof worker is stopping'));
    const id = this.#nextId++;
    // registering a tenant pins its contexts once: not held to the (short) job deadline
    const timeoutMs = Math.max(this.#options.jobTimeoutMs, TENANT_TIMEOUT_MS);
    return new Promise<unknown>((resolve, reject) => {
      const timer = deadline
        ? setTimeout(() => {
            if (!slot.control.delete(id)) return;
            reject(unavailable(`registering proof material took longer than ${timeoutMs} ms`));
            this.#stop(slot);
          }, timeoutMs)
        : undefined;
      slot.control.set(id, { resolve, reject, timer });
      slot.worker.postMessage({ id, job } satisfies ProofRequest);
    });
  }

  /**
   * Terminate `slot` (stuck on a job, or not starting). Its running job, if still there, is not
   * the cause: it goes back to the front of its tenant's queue, for another worker.
   */
  #stop(slot: ProofWorker): void {
    if (slot.dead || slot.stopping) return;
    slot.stopping = true;
    const running = slot.running;
    if (running !== undefined) {
      slot.running = undefined;
      clearTimeout(running.timer);
      this.#requeue(running.job);
    }
    void slot.worker.terminate();
  }

  /** Fail what is aboard a dead worker (its start, its messages, its job) and have it replaced, once. */
  #retire(slot: ProofWorker, error: PavilionError): void {
    if (slot.dead) return;
    slot.dead = true;
    clearTimeout(slot.startTimer);
    slot.settleStart.reject(error);
    for (const control of slot.control.values()) {
      clearTimeout(control.timer);
      control.reject(error);
    }
    slot.control.clear();
    const running = slot.running;
    slot.running = undefined;
    if (running !== undefined) {
      clearTimeout(running.timer);
      running.job.reject(error);
    }
    const index = this.#workers.indexOf(slot);
    if (index >= 0) this.#workers.splice(index, 1);
    if (this.#closed) return;
    if (slot.accepting) this.#spawn();
    else setTimeout(() => this.#replace(), RESPAWN_DELAY_MS).unref();
    // a worker that could not start and no other running: the waiting jobs fail, not hang
    if (this.#workers.length === 0) this.#failQueued(unavailable('no proof worker is running', { cause: error }));
    else this.#pump();
  }

  #replace(): void {
    if (!this.#closed) this.#spawn();
  }

  /** Hand waiting jobs to idle workers, one tenant's turn after another. */
  #pump(): void {
    for (const slot of this.#workers) {
      if (this.#queued === 0) return;
      if (!slot.idle) continue;
      const job = this.#next(); // undefined when every job left waited too long
      if (job === undefined) return;
      this.#run(slot, job);
    }
  }

  /**
   * The next job: round-robin, the first waiting job of the tenant whose turn was longest ago.
   * A job that has waited past maxWaitMs is refused on the way (its caller has waited long
   * enough; running it now would only delay the jobs behind it).
   */
  #next(): Job | undefined {
    for (;;) {
      const job = this.#take();
      if (job === undefined) return undefined;
      const waitedMs = performance.now() - job.queuedAtMs;
      if (waitedMs <= this.#maxWaitMs) return job;
      job.reject(unavailable(`the proof job waited ${Math.round(waitedMs)} ms for a worker, longer than ${this.#maxWaitMs} ms: this credential is refused`, {
        details: { reason: 'queue-wait', waitedMs: Math.round(waitedMs), maxWaitMs: this.#maxWaitMs },
      }));
    }
  }

  #take(): Job | undefined {
    let next: { tenant: string; queue: Job[]; served: number } | undefined;
    for (const [tenant, queue] of this.#queues) {
      const served = this.#served.get(tenant) ?? 0;
      if (next === undefined || served < next.served) next = { tenant, queue, served };
    }
    if (next === undefined) return undefined;
    const job = next.queue.shift()!;
    if (next.queue.length === 0) this.#queues.delete(next.tenant);
    this.#served.set(next.tenant, ++this.#turn);
    this.#queued--;
    return job;
  }

  #requeue(job: Job): void {
    const queue = this.#queues.get(job.tenant);
    if (queue === undefined) this.#queues.set(job.tenant, [job]);
    else queue.unshift(job);
    this.#queued++;
  }

  #failQueued(error: PavilionError): void {
    const queues = [...this.#queues.values()];
    this.#queues.clear();
    this.#queued = 0;
    for (const queue of queues) for (const job of queue) job.reject(error);
  }

  /** Run `job` on idle `slot`: its deadline starts now, as the worker takes it. */
  #run(slot: ProofWorker, job: Job): void {
    const id = this.#nextId++;
    const timeoutMs = this.#options.jobTimeoutMs;
    const timer = setTimeout(() => {
      if (slot.running?.id !== id) return;
      slot.running = undefined;
      job.reject(unavailable(`proof job took longer than ${timeoutMs} ms`));
      // the only way to stop CPU-bound work; the jobs waiting run on the replacement
      this.#stop(slot);
    }, timeoutMs);
    slot.running = { id, job, timer };
    try {
      slot.worker.postMessage({ id, job: job.job } satisfies ProofRequest);
    } catch (error) {
      slot.running = undefined;
      clearTimeout(timer);
      job.reject(unavailable(`a proof job could not be sent to its worker: ${describeThrown(error)}`, { cause: error }));
      this.#pump();
    }
  }

  /** An equal share of the queue for each tenant (and for jobs that name none). */
  #share(): number {
    return Math.max(1, Math.floor(this.#maxQueued / (this.#tenants.size + 1)));
  }

  #job(tenant: string, job: ProofJob): Promise<unknown> {
    if (this.#closed) return Promise.reject(new PavilionError(ErrorCodes.ENGINE_STOPPED, 'proof workers are stopped'));
    if (this.#workers.length === 0) return Promise.reject(unavailable('no proof worker is running'));
    const waiting = this.#queues.get(tenant)?.length ?? 0;
    const share = this.#share();
    if (waiting >= share || this.#queued >= this.#maxQueued) {
      const full = waiting >= share
        ? { reason: 'tenant-share', message: `${tenant === NO_TENANT ? 'the queue of jobs naming no tenant' : `tenant ${tenant.slice(0, 64)}`} already has ${waiting} proof jobs waiting, its share of the queue` }
        : { reason: 'queue-full', message: `${this.#queued} proof jobs are waiting, as many as the queue holds` };
      return Promise.reject(unavailable(`${full.message}: this credential is refused`, { details: { reason: full.reason, waiting, share } }));
    }
    return new Promise<unknown>((resolve, reject) => {
      const entry: Job = { tenant, job, queuedAtMs: performance.now(), resolve, reject };
      const queue = this.#queues.get(tenant);
      if (queue === undefined) this.#queues.set(tenant, [entry]);
      else queue.push(entry);
      this.#queued++;
      this.#pump();
    });
  }

  async addTenant(material: TenantProofMaterial): Promise<void> {
    this.#tenants.set(material.tenantId, material);
    // a worker not ready yet is given every tenant's material when it is
    await Promise.all(this.#workers.filter((slot) => slot.isReady && !slot.dead && !slot.stopping).map((slot) => this.#control(slot, { op: 'tenant', material })));
  }

  async verifyCredentialProof(tenantId: string, credential: JsonObject, time: ProofTime): Promise<{ proofType: string }> {
    return (await this.#job(tenantId, { op: 'credential', tenantId, credential, ...time })) as { proofType: string };
  }

  async verifyPresentationProof(tenantId: string, presentation: JsonObject, check: ProofTime & { challenge: string; domain: string }): Promise<{ proofType: string; holderKey: string }> {
    return (await this.#job(tenantId, { op: 'presentation', tenantId, presentation, ...check })) as { proofType: string; holderKey: string };
  }

  /** `tenantId`: whose queue the job waits in (the verifier names it; without one, a queue of its own). */
  async verifyMembership(value: Uint8Array, publicKey: Uint8Array, element: bigint, witness: Uint8Array, tenantId: string = NO_TENANT): Promise<boolean> {
    return (await this.#job(tenantId, { op: 'membership', value, publicKey, element: element.toString(), witness })) === true;
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#failQueued(new PavilionError(ErrorCodes.ENGINE_STOPPED, 'proof workers are stopped'));
    for (const slot of this.#workers) clearTimeout(slot.startTimer);
    await Promise.all(this.#workers.map((slot) => slot.worker.terminate()));
    this.#workers.length = 0;
  }
}
