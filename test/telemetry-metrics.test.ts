/**
 * The bundle distribution metrics are NATS-only: a sidecar on the local bundle directory used
 * to export `pavilion_distribution_connected 0`, so an alert "== 0 means disconnected" fired
 * on every sidecar not using NATS. Now they are registered only by the distribution
 * component (bundles.source "nats"): absent from a directory-source sidecar's /metrics,
 * present on a NATS-source one. The audit log's metrics likewise exist only with the audit
 * log as the decision sink, read from its figures at each scrape.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseConfig, type NatsConfig } from '../sidecar/src/config/index.ts';
import { NatsBundleStore, connectNats } from '../sidecar/src/distribution/index.ts';
import type { AuditLogFigures } from '../sidecar/src/audit/index.ts';
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

describe('audit log metrics are exported only with the audit log sink, read at each scrape', () => {
  test('a sidecar without the audit log has none; one with it has them per tenant (test/audit-api.test.ts checks a real log)', async () => {
    const app = await startPavilion();
    try {
      const names = declared(await metricsText(app.url));
      assert.deepEqual([...names].filter((n) => n.startsWith('pavilion_audit_')), [], 'no audit log, no stream: none of their metrics');
    } finally {
      await app.stop();
    }
  });

  test('each tenant gets its figures; a refused tenant its state only; a tenant gone has no series left; every state has a series', async () => {
    const metrics = new Metrics();
    let figures = new Map<string, AuditLogFigures>([
      ['bank', { state: 'WARN', bytes: 1000, maxBytes: 65536, leaves: 7, checkpointedLeaves: 6, anchoredLeaves: 5, epoch: 2, archivedBytes: 4096, blockedWriters: 1, checkpointTimestampMs: 1_800_000_000_500 }],
      ['hospital', { state: 'ERROR' }],
    ]);
    metrics.registerAuditLogMetrics(() => figures);
    metrics.registerAuditLogMetrics(() => figures);
    let backlog: Record<string, number> = { bank: 3 };
    metrics.registerAuditStreamMetrics(() => backlog);
    metrics.registerAuditStreamMetrics(() => backlog);
    metrics.auditEventsRefused.inc({ tenant: 'bank', code: 'ERR_AUDIT_LOG_FULL' });
    const text = await metrics.registry.metrics();
    for (const [line, value] of [
      ['pavilion_audit_log_bytes{tenant="bank"}', 1000],
      ['pavilion_audit_log_max_bytes{tenant="bank"}', 65536],
      ['pavilion_audit_log_leaves{tenant="bank"}', 7],
      ['pavilion_audit_log_checkpointed_leaves{tenant="bank"}', 6],
      ['pavilion_audit_log_anchored_leaves{tenant="bank"}', 5],
      ['pavilion_audit_log_epoch{tenant="bank"}', 2],
      ['pavilion_audit_log_archived_bytes{tenant="bank"}', 4096],
      ['pavilion_audit_log_blocked_writers{tenant="bank"}', 1],
      ['pavilion_audit_log_last_checkpoint_timestamp_seconds{tenant="bank"}', 1_800_000_000.5],
      ['pavilion_audit_log_state{tenant="bank",state="WARN"}', 1],
      ['pavilion_audit_log_state{tenant="bank",state="OK"}', 0],
      ['pavilion_audit_log_state{tenant="hospital",state="ERROR"}', 1],
      ['pavilion_audit_log_state{tenant="hospital",state="NOT_READY"}', 0],
      ['pavilion_audit_events_refused_total{tenant="bank",code="ERR_AUDIT_LOG_FULL"}', 1],
      ['pavilion_audit_stream_backlog{tenant="bank"}', 3],
    ] as const) {
      assert.ok(text.split('\n').includes(`${line} ${value}`), `${line} ${value} in:\n${text}`);
    }
    assert.doesNotMatch(text, /pavilion_audit_log_bytes\{tenant="hospital"\}/, 'a refused tenant has no sizes');
    // read once a scrape, not once a gauge; a tenant gone since has no series left
    figures = new Map([['hospital', { state: 'OK' }]]);
    backlog = {};
    await new Promise((r) => setTimeout(r, 300));
    const later = await metrics.registry.metrics();
    assert.doesNotMatch(later, /tenant="bank"\}/, 'no gauge of bank left');
    assert.match(later, /^pavilion_audit_log_state\{tenant="hospital",state="OK"\} 1$/m);
  });

  test('a source that throws costs its own series, not the scrape', async () => {
    const metrics = new Metrics();
    let reads = 0;
    metrics.registerAuditLogMetrics(() => {
      reads++;
      throw new Error('status failed');
    });
    const text = await metrics.registry.metrics();
    assert.match(text, /^# TYPE pavilion_audit_log_state gauge$/m, 'declared, with no series');
    assert.doesNotMatch(text, /^pavilion_audit_log_/m);
    assert.match(text, /^pavilion_process_cpu_user_seconds_total /m, 'every other metric still answers');
    assert.equal(reads, 1, 'read once for all the gauges of the scrape');
  });
});
