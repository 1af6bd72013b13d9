/**
 * Run as its own process by test/distribution-deltas.test.ts: a NatsDistribution whose first
 * connection fails (nothing listens on the port given as argv[2]) and waits 10 minutes to
 * retry is started and stopped; the process must then exit by itself. Prints what is still
 * active after stop() (Node's getActiveResourcesInfo) on one line.
 */
import { parseConfig, type NatsConfig } from '../../../sidecar/src/config/index.ts';
import { NatsDistribution, type StatusReport } from '../../../sidecar/src/distribution/index.ts';
import type { TenantManager } from '../../../sidecar/src/tenants/index.ts';

const config = parseConfig({ nats: { servers: [`nats://127.0.0.1:${process.argv[2] ?? '1'}`], connectTimeoutMs: 300, reconnectWaitMs: 600_000, reconnectJitterMs: 0 } }).nats as NatsConfig;
const distribution = new NatsDistribution({
  config,
  tenants: {} as unknown as TenantManager, // never reached: there is no connection
  maxBundleBytes: 1024,
  sidecarId: 'sidecar-nowhere',
  statusReport: () => ({}) as unknown as StatusReport,
});
// the distribution's own timers are unref'd: this keeps the process alive until stop() has returned
const keepAlive = setInterval(() => undefined, 1_000);
await distribution.start(); // returns after connectTimeoutMs; the retry waits 10 minutes
process.stdout.write(`state ${distribution.status().state}\n`);
await distribution.stop(1_000);
clearInterval(keepAlive);
process.stdout.write(`active after stop: ${JSON.stringify(process.getActiveResourcesInfo())}\n`);
