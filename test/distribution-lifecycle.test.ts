/**
 * The distribution component's lifecycle on a real nats-server with JetStream: no status
 * report is published, and no status timer fires, once stop() has returned - also when
 * stop() comes while the first resync is still running (cefd637: that resync used to
 * start the status interval after stop, and nothing ever cleared it).
 *
 * The component is wired as Pavilion wires it (engine, tenant manager, pushed-bundle
 * source, trust store), on its own so the test can hold the first activation: the tenant
 * manager's activate waits for the test's go-ahead, so stop() lands inside the first resync
 * by construction, not by timing. Showing that a timer never fires takes a quiet period:
 * longer than the status debounce (at most 2 s) and thirty status intervals; with the fix
 * nothing can fire in it, however slow the machine.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseConfig, type NatsConfig } from '../sidecar/src/config/index.ts';
import { NatsBundleStore, NatsDistribution, buildStatusReport, connectNats } from '../sidecar/src/distribution/index.ts';
import { PolicyEngine } from '../sidecar/src/engine/index.ts';
import { TenantManager } from '../sidecar/src/tenants/index.ts';
import { engineOptions } from '../sidecar/src/pavilion.ts';
import { buildFixtureBundle } from './harness/fixtures.ts';
import { startNats, type RunningNats } from './harness/nats-server.ts';
import { signForTest } from './harness/pavilion-harness.ts';
import { pushedTenantOptions } from './harness/tenants.ts';
import { until } from './harness/wait.ts';

const STATUS_INTERVAL_MS = 100; // the smallest the config allows: a leaked interval fires often
const QUIET_MS = 3_000; // > the 1-2 s status debounce, and 30 status intervals
const GENEROUS_MS = 30_000;

let nats: RunningNats;
let dir: string;
let keys: string;
let publisher: NatsBundleStore;

before(async () => {
  nats = await startNats();
  dir = await mkdtemp(join(tmpdir(), 'pavilion-distribution-lifecycle-'));
  keys = join(dir, 'keys');
  const archive = await buildFixtureBundle({
    modules: { 'bank/authz.rego': 'package bank.authz\n\nallow if input.user == "alice"\n' },
    entrypoints: ['bank/authz/allow'],
    roots: ['bank'],
    revision: 'r1',
  });
  const signed = await signForTest('bank', archive, keys); // before any sidecar reads the keys
  const natsConfig = parseConfig({ nats: { servers: [nats.url], name: 'test-publisher' } }).nats as NatsConfig;
  publisher = new NatsBundleStore(await connectNats(natsConfig), natsConfig);
  await publisher.push('bank', signed, { revision: 'r1', pushedBy: 'alice' });
});

after(async () => {
  await publisher?.close();
  await nats?.stop();
  await rm(dir, { recursive: true, force: true });
});

interface Sidecar {
  readonly id: string;
  readonly engine: PolicyEngine;
  readonly tenants: TenantManager;
  readonly distribution: NatsDistribution;
  /** When each call to publishStatus began (performance.now()), whoever made it. */
  readonly publishes: number[];
  close(): Promise<void>;
}

/** The engine, tenant manager and distribution of a sidecar serving tenant 'bank' from NATS. */
async function sidecar(): Promise<Sidecar> {
  const id = `sidecar-${Math.random().toString(36).slice(2, 8)}`;
  const config = parseConfig({
    labels: { id },
    tenants: [{ id: 'bank' }],
    bundles: { source: 'nats', keysDirectory: keys, persistDirectory: join(dir, id) },
    nats: { servers: [nats.url], connectTimeoutMs: GENEROUS_MS, reconnectWaitMs: 50, reconnectJitterMs: 50, statusIntervalMs: STATUS_INTERVAL_MS },
    engine: { workers: 1 },
    decisionLog: { sink: 'none' },
  });
  const nc = config.nats;
  assert.ok(nc !== undefined);
  const engine = new PolicyEngine(engineOptions(config));
  const tenants = new TenantManager(pushedTenantOptions(config, engine));
  const distribution = new NatsDistribution({
    config: nc,
    tenants,
    maxBundleBytes: config.bundles.maxCompressedBytes,
    sidecarId: id,
    statusReport: () => buildStatusReport({ id }, tenants.list(), [{ name: engine.name, status: engine.status() }]),
  });
  // Every status report goes through publishStatus (the interval and the debounced report
  // after a change both look it up on the instance when they fire): count the calls.
  const publishes: number[] = [];
  const publishStatus = distribution.publishStatus.bind(distribution);
  distribution.publishStatus = async () => {
    publishes.push(performance.now());
    await publishStatus();
  };
  await engine.start();
  await tenants.start();
  return {
    id,
    engine,
    tenants,
    distribution,
    publishes,
    async close() {
      await tenants.stop();
      await engine.stop();
    },
  };
}

async function publishedReport(id: string): Promise<Record<string, unknown> | undefined> {
  const entry = await (await publisher.statusBucket()).get(id);
  return entry === null || entry.operation !== 'PUT' ? undefined : (JSON.parse(Buffer.from(entry.value).toString()) as Record<string, unknown>);
}

/** Wait for `promise`; fail naming `what` if it has not settled within GENEROUS_MS (a hang). */
async function within(what: string, promise: Promise<unknown>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<void>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), GENEROUS_MS);
  });
  try {
    await Promise.race([promise, hung]);
  } finally {
    clearTimeout(timer);
  }
}

/** Wait `QUIET_MS`, then assert publishStatus was not called since `count` calls. */
async function assertQuietAfterStop(side: Sidecar, count: number): Promise<void> {
  const stoppedAt = performance.now();
  await new Promise((resolve) => setTimeout(resolve, QUIET_MS));
  const late = side.publishes.slice(count).map((at) => `${Math.round(at - stoppedAt)} ms`);
  assert.deepEqual(late, [], `publishStatus was called after stop() returned (at ${late.join(', ')} after it)`);
}

describe('status reports end with stop()', () => {
  test('a running distribution reports its status on the interval, and nothing after stop()', async () => {
    const side = await sidecar();
    try {
      await side.distribution.start();
      await until('two interval reports', () => side.publishes.length >= 2, GENEROUS_MS);
      await until('the report in the status bucket', async () => (await publishedReport(side.id)) !== undefined, GENEROUS_MS);
      await side.distribution.settled();
      await side.distribution.stop(GENEROUS_MS);
      await assertQuietAfterStop(side, side.publishes.length);
    } finally {
      await side.close();
    }
  });

  test('stop() during the first resync: no status interval is started when that resync ends, nothing is published', async () => {
    const side = await sidecar();
    try {
      // Hold the first activation until stop() has begun: the first resync waits for it.
      const activate = side.tenants.activate.bind(side.tenants);
      let entered!: () => void;
      const inActivation = new Promise<void>((resolve) => {
        entered = resolve;
      });
      let release!: () => void;
      const released = new Promise<void>((resolve) => {
        release = resolve;
      });
      side.tenants.activate = async (tenant, archive, origin) => {
        entered();
        await released;
        return activate(tenant, archive, origin);
      };
      const starting = side.distribution.start();
      await within('the first activation to begin', inActivation);
      const stopping = side.distribution.stop(GENEROUS_MS); // marks the component stopping at once
      release(); // the first resync now ends, after stop() began
      await stopping; // which waits for the first connection, and so for that resync
      await starting;
      // the resync did run to its end: the activation it waited for went through
      assert.equal(side.engine.active('bank')?.revision, 'r1');
      const count = side.publishes.length;
      await assertQuietAfterStop(side, count);
      assert.equal(count, 0, 'no report before stop() either: the interval never started');
      assert.equal(await publishedReport(side.id), undefined, 'no status report in the bucket');
    } finally {
      await side.close();
    }
  });
});
