/**
 * At start with the NATS source, the KV watch and the first resync both offer a tenant's
 * current pointer. The queue's `applied` moves only once an activation ends, so an offer
 * landing while the first activation was still running used to queue the same deploy again:
 * downloaded, verified and handed to the tenant manager twice (the second time taking the
 * no-swap path), once per tenant per start. Each deploy is now handed over once; a newer
 * deploy still follows one in flight, and a transiently failed activation is still retried.
 *
 * Real sidecars (the Pavilion composition root, NATS source) against a real nats-server;
 * the counting goes through the real objects: the sidecar's own tenant manager's activate
 * (wrapped on the instance before start) and the bundle store's fetch.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseConfig, type NatsConfig } from '../sidecar/src/config/index.ts';
import { NatsBundleStore, connectNats, type BundlePointer } from '../sidecar/src/distribution/index.ts';
import { Pavilion } from '../sidecar/src/pavilion.ts';
import type { ActivationOrigin } from '../sidecar/src/tenants/index.ts';
import { buildFixtureBundle } from './harness/fixtures.ts';
import { startNats, type RunningNats } from './harness/nats-server.ts';
import { signForTest } from './harness/pavilion-harness.ts';
import { until } from './harness/wait.ts';

let nats: RunningNats;
let dir: string;
let keys: string;
let publisher: NatsBundleStore;

/** Every NatsBundleStore.fetch in this process: the tenant and object it downloaded. */
const fetches: Array<{ tenant: string; digest: string }> = [];
const realFetch = NatsBundleStore.prototype.fetch;

before(async () => {
  nats = await startNats();
  dir = await mkdtemp(join(tmpdir(), 'pavilion-distribution-start-'));
  keys = join(dir, 'keys');
  const natsConfig = parseConfig({ nats: { servers: [nats.url], name: 'test-publisher' } }).nats as NatsConfig;
  publisher = new NatsBundleStore(await connectNats(natsConfig), natsConfig);
  NatsBundleStore.prototype.fetch = function fetch(this: NatsBundleStore, pointer: BundlePointer, maxBytes: number): Promise<Buffer> {
    fetches.push({ tenant: pointer.tenant, digest: pointer.digest });
    return realFetch.call(this, pointer, maxBytes);
  };
});

after(async () => {
  NatsBundleStore.prototype.fetch = realFetch;
  await publisher?.close();
  await nats?.stop();
  await rm(dir, { recursive: true, force: true });
});

async function signedBundle(tenant: string, revision: string): Promise<Buffer> {
  const archive = await buildFixtureBundle({
    modules: { 'authz.rego': `package ${tenant}.authz\n\nallow if input.user == "alice"\n\nrev := "${revision}"\n` },
    entrypoints: [`${tenant}/authz/allow`, `${tenant}/authz/rev`],
    roots: [tenant],
    revision,
  });
  return signForTest(tenant, archive, keys);
}

interface Activation {
  readonly tenant: string;
  readonly origin: ActivationOrigin | undefined;
}

interface Sidecar {
  readonly pavilion: Pavilion;
  /** Every call of the sidecar's tenant manager's activate, in order. */
  readonly activations: Activation[];
  /** The sidecar's start() (not awaited by `sidecar`). */
  readonly starting: Promise<void>;
  stop(): Promise<void>;
}

/**
 * A sidecar serving `tenant` from NATS, its tenant manager's activate wrapped before start.
 * `around` may delay or fail a call (the n-th, from 0) before it reaches the tenant manager.
 */
function sidecar(tenant: string, around: (n: number) => Promise<void> = async () => undefined): Sidecar {
  const id = `sidecar-${Math.random().toString(36).slice(2, 8)}`;
  const config = parseConfig({
    labels: { id },
    tenants: [{ id: tenant }],
    http: { host: '127.0.0.1', port: 0 },
    engine: { workers: 1 },
    bundles: { source: 'nats', keysDirectory: keys, persistDirectory: join(dir, id) },
    nats: { servers: [nats.url], connectTimeoutMs: 30_000, reconnectWaitMs: 50, reconnectJitterMs: 50, statusIntervalMs: 1_000 },
    decisionLog: { sink: 'none' },
  });
  const pavilion = new Pavilion(config);
  const activations: Activation[] = [];
  const tenants = pavilion.tenants;
  const activate = tenants.activate.bind(tenants);
  tenants.activate = async (t, archive, origin) => {
    const n = activations.length;
    // where it comes from (kind, deploy), not the replay check's history lookup
    activations.push({ tenant: t, origin: origin === undefined ? undefined : { kind: origin.kind, ...(origin.sequence === undefined ? {} : { sequence: origin.sequence }) } });
    await around(n);
    return activate(t, archive, origin);
  };
  return {
    pavilion,
    activations,
    starting: pavilion.start(),
    async stop() {
      await this.starting.catch(() => undefined);
      await pavilion.stop();
    },
  };
}

/** The pointer-update outcomes the sidecar counted for `tenant` (pavilion_distribution_pointer_updates_total). */
async function updates(pavilion: Pavilion, tenant: string): Promise<Record<string, number>> {
  const metric = await pavilion.metrics.registry.getSingleMetric('pavilion_distribution_pointer_updates_total')?.get();
  return Object.fromEntries((metric?.values ?? []).filter((v) => v.labels['tenant'] === tenant).map((v) => [String(v.labels['outcome']), v.value]));
}

function revisionOf(pavilion: Pavilion, tenant: string): string | undefined {
  return pavilion.engine.active(tenant)?.revision;
}

describe('one activation per deploy at start (KV watch and first resync both offer the current pointer)', () => {
  test('a sidecar starting on a pushed bundle downloads it and hands it to the tenant manager once', async () => {
    const pushed = await publisher.push('shop', await signedBundle('shop', 'r1'), { revision: 'r1', pushedBy: 'alice' });
    fetches.length = 0;
    const side = sidecar('shop');
    try {
      await side.starting;
      assert.equal(revisionOf(side.pavilion, 'shop'), 'r1');
      // both offers have been made: the watch's and the resync's (one of them stale)
      await until('the second offer of the deploy', async () => (await updates(side.pavilion, 'shop'))['stale'] === 1 || side.activations.length > 1);
      await side.pavilion.distribution?.settled();
      assert.deepEqual(side.activations.map((a) => a.origin), [{ kind: 'push', sequence: pushed.sequence }]);
      assert.deepEqual(fetches, [{ tenant: 'shop', digest: pushed.pointer.digest }]);
      assert.deepEqual(await updates(side.pavilion, 'shop'), { ok: 1, stale: 1 });
    } finally {
      await side.stop();
    }
  });

  test('also when the first activation is slow: the offer that lands while it runs is skipped, not queued again', async () => {
    const pushed = await publisher.push('agency', await signedBundle('agency', 'r1'), { revision: 'r1', pushedBy: 'alice' });
    fetches.length = 0;
    // a large bundle or a slow machine: the other offer certainly lands while this one runs
    const side = sidecar('agency', async (n) => {
      if (n === 0) await new Promise((resolve) => setTimeout(resolve, 1_500));
    });
    try {
      await side.starting;
      await side.pavilion.distribution?.settled();
      assert.equal(revisionOf(side.pavilion, 'agency'), 'r1');
      assert.deepEqual(side.activations.map((a) => a.origin), [{ kind: 'push', sequence: pushed.sequence }]);
      assert.deepEqual(fetches, [{ tenant: 'agency', digest: pushed.pointer.digest }]);
      assert.deepEqual(await updates(side.pavilion, 'agency'), { ok: 1, stale: 1 });
    } finally {
      await side.stop();
    }
  });
});

describe('ordering and retries are kept', () => {
  test('a newer deploy pushed while the first is being activated is activated after it, and wins', async () => {
    const first = await publisher.push('hospital', await signedBundle('hospital', 'r1'), { revision: 'r1', pushedBy: 'alice' });
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const side = sidecar('hospital', async (n) => {
      if (n === 0) await held;
    });
    try {
      await until('the first activation', () => side.activations.length === 1);
      const second = await publisher.push('hospital', await signedBundle('hospital', 'r2'), { revision: 'r2', pushedBy: 'bob' });
      await new Promise((resolve) => setTimeout(resolve, 500)); // the watch delivers the move meanwhile
      release();
      await side.starting;
      await until('r2 served', () => revisionOf(side.pavilion, 'hospital') === 'r2');
      await side.pavilion.distribution?.settled();
      assert.deepEqual(side.activations.map((a) => a.origin), [
        { kind: 'push', sequence: first.sequence },
        { kind: 'push', sequence: second.sequence },
      ]);
    } finally {
      release();
      await side.stop();
    }
  });

  test('an activation that fails for a transient reason while the other offer lands is still retried, and served', async () => {
    const pushed = await publisher.push('school', await signedBundle('school', 'r1'), { revision: 'r1', pushedBy: 'alice' });
    const side = sidecar('school', async (n) => {
      if (n === 0) {
        await new Promise((resolve) => setTimeout(resolve, 1_000));
        throw new Error('a transient failure (not a refusal of the bundle)');
      }
    });
    try {
      await until('r1 served after the retry', () => revisionOf(side.pavilion, 'school') === 'r1', 30_000);
      await side.starting;
      await side.pavilion.distribution?.settled();
      assert.deepEqual(side.activations.map((a) => a.origin), [
        { kind: 'push', sequence: pushed.sequence },
        { kind: 'push', sequence: pushed.sequence },
      ]);
    } finally {
      await side.stop();
    }
  });
});
