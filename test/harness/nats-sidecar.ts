/**
 * A sidecar wired as Pavilion wires it for bundle distribution (engine, tenant manager over
 * the pushed-bundle source, trust store from a keys directory, NATS distribution), serving
 * every tenant in the pointer bucket, with an injected clock for the tenant manager's key
 * re-read interval (a test passes it by moving the clock, not by waiting) and counters for
 * what the tests look at: key reads, activation outcomes, downloads.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { PushedBundleSource, TrustStore } from '../../sidecar/src/bundles/index.ts';
import { parseConfig } from '../../sidecar/src/config/index.ts';
import { NatsDistribution, buildStatusReport } from '../../sidecar/src/distribution/index.ts';
import { PolicyEngine } from '../../sidecar/src/engine/index.ts';
import { engineOptions } from '../../sidecar/src/pavilion.ts';
import { Metrics } from '../../sidecar/src/telemetry/index.ts';
import { TenantManager } from '../../sidecar/src/tenants/index.ts';

export interface NatsSidecar {
  readonly tenants: TenantManager;
  readonly distribution: NatsDistribution;
  /** How many times the keys were read. */
  reads(): number;
  /** Move the tenant manager's clock on. */
  advance(ms: number): void;
  /** Every activation outcome reported for `tenant` (what the failure metric counts). */
  outcomes(tenant: string): string[];
  /** How many bundles the distribution downloaded. */
  downloads(): Promise<number>;
  close(): Promise<void>;
}

export interface NatsSidecarOptions {
  readonly natsUrl: string;
  /** The sidecar's keys directory (what a mounted Secret would be). */
  readonly keys: string;
  /** Where its last known good goes (a directory of its own is made below). */
  readonly dir: string;
  /** NATS user (its password is the same word); none: no authentication. */
  readonly user?: string;
  /** How long the distribution waits for a connection and a test for anything. */
  readonly generousMs: number;
}

export async function startNatsSidecar(options: NatsSidecarOptions): Promise<NatsSidecar> {
  const id = `sidecar-${Math.random().toString(36).slice(2, 8)}`;
  const config = parseConfig({
    labels: { id },
    bundles: { source: 'nats', keysDirectory: options.keys, persistDirectory: join(options.dir, id) },
    nats: {
      servers: [options.natsUrl], ...(options.user === undefined ? {} : { user: options.user, password: options.user }),
      connectTimeoutMs: options.generousMs, fetchTimeoutMs: 2_000, reconnectWaitMs: 50, reconnectJitterMs: 50, statusIntervalMs: 1_000,
    },
    engine: { workers: 1 },
    decisionLog: { sink: 'none' },
  });
  assert.ok(config.nats !== undefined);
  const engine = new PolicyEngine(engineOptions(config));
  const limits = { maxCompressedBytes: config.bundles.maxCompressedBytes, maxUncompressedBytes: config.bundles.maxUncompressedBytes };
  let reads = 0;
  let clockMs = 1_000_000;
  const outcomes: Array<[string, string]> = [];
  const tenants = new TenantManager({
    tenants: config.tenants,
    source: new PushedBundleSource('nats'),
    engine,
    limits,
    memoryInitialPages: config.engine.memoryInitialPages,
    loadTrust: () => {
      reads++;
      return TrustStore.load(config.keys, config.bundles.keysDirectory);
    },
    nowMs: () => clockMs,
    onActivation: (tenant, outcome) => outcomes.push([tenant, outcome]),
  });
  const metrics = new Metrics();
  const distribution = new NatsDistribution({
    config: config.nats,
    tenants,
    metrics,
    maxBundleBytes: limits.maxCompressedBytes,
    sidecarId: id,
    statusReport: () => buildStatusReport({ id }, tenants.list(), [{ name: engine.name, status: engine.status() }]),
  });
  await engine.start();
  await tenants.start();
  await distribution.start();
  return {
    tenants,
    distribution,
    reads: () => reads,
    advance: (ms) => {
      clockMs += ms;
    },
    outcomes: (tenant) => outcomes.filter(([t]) => t === tenant).map(([, outcome]) => outcome),
    downloads: async () => (await metrics.activationPhaseSeconds.get()).values.find((v) => v.metricName?.endsWith('_count') === true && v.labels['phase'] === 'fetch')?.value ?? 0,
    async close() {
      await distribution.stop(options.generousMs);
      await tenants.stop();
      await engine.stop();
    },
  };
}
