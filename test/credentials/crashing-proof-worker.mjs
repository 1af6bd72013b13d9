// A proof worker that throws an uncaught exception on a credential whose id is 'urn:crash' (a
// worker dying mid-job), and otherwise is the real proof worker.
import { parentPort } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
// registered before the real worker's listener: the job dies before it is verified
parentPort.on('message', ({ job }) => {
  if (job.op === 'credential' && job.credential?.id === 'urn:crash') throw new Error('proof worker crashed on purpose');
});
await import('../../sidecar/src/credentials/proof-worker.ts');
