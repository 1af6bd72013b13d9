/**
 * The bundle distribution metrics are NATS-only: a sidecar on the local bundle directory used
 * to export `pavilion_distribution_connected 0`, so an alert "== 0 means disconnected" fired
 * on every sidecar not using NATS. Now they are registered only by the distribution
 * component (bundles.source "nats"): absent from a directory-source sidecar's /metrics,
 * present on a NATS-source one.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseConfig, type NatsConfig } from '../sidecar/src/config/index.ts';
import { NatsBundleStore, connectNats } from '../sidecar/src/distribution/index.ts';
import { Metrics } from '../sidecar/src/telemetry/index.ts';
import { buildFixtureBundle } from './harness/fixtures.ts';
import { startNats, type RunningNats } from './harness/nats-server.ts';
import { signForTest, startPavilion, type RunningPavilion } from './harness/pavilion-harness.ts';
import { until } from './harness/wait.ts';

const DISTRIBUTION_METRICS = [
  'pavilion_distribution_connected',
  'pavilion_distribution_reconnects_total',
  'pavilion_distribution_pointer_updates_total',
  'pavilion_bundle_rollout_seconds',
];

async function metricsText(url: string): Promise<string> {
  const response = await fetch(`${url}/metrics`);
  assert.equal(response.status, 200);
  return response.text();
}

/** The names of the metrics declared in an exposition (`# TYPE <name> <type>` lines). */
function declared(text: string): Set<string> {
  return new Set(text.split('\n').filter((l) => l.startsWith('# TYPE ')).map((l) => l.split(' ')[2] ?? ''));
}

describe('distribution metrics are exported only with the NATS bundle source', () => {
  test('a directory-source sidecar has no pavilion_distribution_* (nor rollout) metric on /metrics', async () => {
    const app = await startPavilion();
    try {
      const text = await metricsText(app.url);
      assert.ok(declared(text).has('pavilion_bundle_activations_total'), 'the other metrics are still there');
      for (const name of DISTRIBUTION_METRICS) assert.ok(!declared(text).has(name), `${name} exported without NATS`);
      assert.doesNotMatch(text, /^pavilion_distribution_connected /m);
    } finally {
      await app.stop();
    }
  });

  test('Metrics: registered once asked for (idempotent), never before', async () => {
    const metrics = new Metrics();
    const names = async (): Promise<Set<string>> => declared(await metrics.registry.metrics());
    for (const name of DISTRIBUTION_METRICS) assert.ok(!(await names()).has(name), name);
    metrics.registerDistributionMetrics();
    metrics.registerDistributionMetrics();
    for (const name of DISTRIBUTION_METRICS) assert.ok((await names()).has(name), name);
  });

  describe('a NATS-source sidecar', () => {
    let nats: RunningNats;
    let dir: string;
    let publisher: NatsBundleStore;
    let app: RunningPavilion;

    before(async () => {
      nats = await startNats();
      dir = await mkdtemp(join(tmpdir(), 'pavilion-telemetry-'));
      const keys = join(dir, 'keys');
      const archive = await buildFixtureBundle({
        modules: { 'bank/authz.rego': 'package bank.authz\n\nallow if input.user == "alice"\n' },
        entrypoints: ['bank/authz/allow'],
        roots: ['bank'],
        revision: 'r1',
      });
      const signed = await signForTest('bank', archive, keys);
      const natsConfig = parseConfig({ nats: { servers: [nats.url], name: 'test-publisher' } }).nats as NatsConfig;
      publisher = new NatsBundleStore(await connectNats(natsConfig), natsConfig);
      await publisher.push('bank', signed, { revision: 'r1', pushedBy: 'alice' });
      app = await startPavilion({
        config: {
          labels: { id: `sidecar-${Math.random().toString(36).slice(2, 8)}` },
          tenants: [{ id: 'bank' }],
          bundles: { source: 'nats', keysDirectory: keys },
          nats: { servers: [nats.url], connectTimeoutMs: 10_000, reconnectWaitMs: 50, reconnectJitterMs: 50, statusIntervalMs: 1_000 },
        },
      });
    });

    after(async () => {
      await app?.stop();
      await publisher?.close();
      await nats?.stop();
      await rm(dir, { recursive: true, force: true });
    });

    test('has pavilion_distribution_connected 1 and the other distribution metrics', async () => {
      await until('r1 active', () => app.pavilion.engine.active('bank')?.revision === 'r1');
      const text = await metricsText(app.url);
      for (const name of DISTRIBUTION_METRICS) assert.ok(declared(text).has(name), `${name} missing with NATS`);
      assert.match(text, /^pavilion_distribution_connected 1$/m);
      assert.match(text, /^pavilion_distribution_pointer_updates_total\{tenant="bank",outcome="ok"\} 1$/m);
    });
  });
});
