/** The proof worker thread: runs ProofJobs with the inline executor and answers by id. */
import { parentPort } from 'node:worker_threads';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import { dataIntegrity, InlineProofExecutor } from './proof-executor.ts';
import type { ProofJob, ProofReply, ProofRequest } from './proof-protocol.ts';

const executor = new InlineProofExecutor();

async function run(job: ProofJob): Promise<unknown> {
  switch (job.op) {
    case 'tenant':
      return executor.addTenant(job.material);
    case 'warm':
      return dataIntegrity().then(() => 'warm');
    case 'credential':
      return executor.verifyCredentialProof(job.tenantId, job.credential, { nowMs: job.nowMs, clockSkewMs: job.clockSkewMs });
    case 'presentation':
      return executor.verifyPresentationProof(job.tenantId, job.presentation, job);
    case 'membership':
      return executor.verifyMembership(job.value, job.publicKey, BigInt(job.element), job.witness);
  }
}

const port = parentPort;
if (port === null) throw new Error('proof-worker.ts runs as a worker thread');
port.on('message', (request: ProofRequest) => {
  run(request.job).then(
    (value) => port.postMessage({ id: request.id, ok: true, value } satisfies ProofReply),
    (error: unknown) => {
      const typed = error instanceof PavilionError ? error : new PavilionError(ErrorCodes.INTERNAL, describeThrown(error));
      port.postMessage({ id: request.id, ok: false, code: typed.code, message: typed.message } satisfies ProofReply);
    },
  );
});
port.postMessage({ id: 0, ok: true, value: 'ready' } satisfies ProofReply);
// Load the Data Integrity stack (JSON-LD, the cryptosuites) now, while the worker is idle,
// instead of on the first credential; a failure here resurfaces on that credential's job.
void dataIntegrity().catch(() => undefined);
