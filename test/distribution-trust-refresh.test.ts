/**
 * Bundle distribution over a real nats-server with JetStream, and the keys a sidecar trusts
 * changing on disk while it runs (a Kubernetes Secret mounted as the keys directory is
 * updated in place, without a restart):
 *
 * - a tenant discovered from the pointer bucket after start is judged by the keys on disk
 *   then: a key written after start is trusted, a key removed after start is not;
 * - a bundle refused for a key reason makes the sidecar read the keys again and verify once
 *   more - at most once per interval per tenant, however many pushes are refused - so a key
 *   that arrives after a refusal is trusted at the next push;
 * - a key rotated in place (same key id, new key) is read again for bundles and deltas, and
 *   the replaced key is no longer trusted (fail closed);
 * - a delta checked against a deploy that is replaced before the delta applies is dropped
 *   without being reported as a refusal of the tenant.
 *
 * The sidecar is wired as Pavilion wires it (engine, tenant manager, pushed-bundle source,
 * trust store from the keys directory, NATS distribution), with a counting key loader and an
 * injected clock, so the rate limit is shown by count rather than by timing. The last test
 * runs a whole Pavilion with its default wiring.
 */
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, rm, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { PushedBundleSource, TrustStore, developmentKey, parsePatch, signBundle, signDelta, type PatchOperation, type SignOptions } from '../sidecar/src/bundles/index.ts';
import { parseConfig, type NatsConfig } from '../sidecar/src/config/index.ts';
import { NatsBundleStore, NatsDistribution, buildStatusReport, connectNats } from '../sidecar/src/distribution/index.ts';
import { PolicyEngine } from '../sidecar/src/engine/index.ts';
import { ErrorCodes, PavilionError } from '../sidecar/src/lib/errors.ts';
import { TenantManager } from '../sidecar/src/tenants/index.ts';
import { engineOptions } from '../sidecar/src/pavilion.ts';
import { buildFixtureBundle } from './harness/fixtures.ts';
import { startNats, type RunningNats } from './harness/nats-server.ts';
import { post, startPavilion } from './harness/pavilion-harness.ts';
import { until } from './harness/wait.ts';

const INTERVAL_MS = 5_000;
const GENEROUS_MS = 30_000;

let nats: RunningNats;
let dir: string;
/** The sidecars' keys directory (what a mounted Secret would be). */
let keys: string;
let natsConfig: NatsConfig;
let publisher: NatsBundleStore;

before(async () => {
  nats = await startNats();
  dir = await mkdtemp(join(tmpdir(), 'pavilion-distribution-trust-'));
  keys = join(dir, 'keys');
  await mkdir(keys, { recursive: true });
  natsConfig = parseConfig({ nats: { servers: [nats.url], name: 'test-publisher' } }).nats as NatsConfig;
  publisher = new NatsBundleStore(await connectNats(natsConfig), natsConfig);
});

after(async () => {
  await publisher?.close();
  await nats?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** A policy team's signing key for `tenant` (key id = tenant id), kept outside the sidecars' keys directory; `generation` makes a new one. */
async function signingKey(tenant: string, generation = 1): Promise<SignOptions & { publicFile: string }> {
  const build = join(dir, 'signing', `g${generation}`);
  const key = await developmentKey(tenant, build);
  return { key: key.keyPem, algorithm: key.algorithm, keyId: key.keyId, scope: tenant, publicFile: join(build, 'keys', `${tenant}.pub.pem`) };
}

/** Install (or replace in place) the tenant's public key in the sidecars' keys directory. */
async function installKey(tenant: string, generation = 1): Promise<void> {
  await copyFile((await signingKey(tenant, generation)).publicFile, join(keys, `${tenant}.pub.pem`));
}

async function signedBundle(tenant: string, revision: string, generation = 1): Promise<Buffer> {
  const archive = await buildFixtureBundle({
    modules: { [`${tenant}/authz.rego`]: `package ${tenant}.authz\n\nallow if input.amount <= data.${tenant}.limits.max\n\nrev := "${revision}"\n` },
    entrypoints: [`${tenant}/authz/allow`, `${tenant}/authz/rev`],
    roots: [tenant],
    revision,
    data: { [`${tenant}/limits`]: { max: 10 } },
  });
  return signBundle(archive, await signingKey(tenant, generation));
}

interface Sidecar {
  readonly tenants: TenantManager;
  readonly distribution: NatsDistribution;
  /** How many times the keys were read. */
  reads(): number;
  /** Move the tenant manager's clock on. */
  advance(ms: number): void;
  /** Every activation outcome reported for `tenant` (what the failure metric counts). */
  outcomes(tenant: string): string[];
  close(): Promise<void>;
}

/** A sidecar serving every tenant in the pointer bucket (none configured), from NATS. */
async function startSidecar(): Promise<Sidecar> {
  const id = `sidecar-${Math.random().toString(36).slice(2, 8)}`;
  const config = parseConfig({
    labels: { id },
    bundles: { source: 'nats', keysDirectory: keys, persistDirectory: join(dir, id) },
    nats: { servers: [nats.url], connectTimeoutMs: GENEROUS_MS, reconnectWaitMs: 50, reconnectJitterMs: 50, statusIntervalMs: 1_000 },
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
    trustRereadIntervalMs: INTERVAL_MS,
    nowMs: () => clockMs,
    onActivation: (tenant, outcome) => outcomes.push([tenant, outcome]),
  });
  const distribution = new NatsDistribution({
    config: config.nats,
    tenants,
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
    async close() {
      await distribution.stop(GENEROUS_MS);
      await tenants.stop();
      await engine.stop();
    },
  };
}

/** Push and wait until the sidecar has handled that deploy (one more outcome reported for the tenant). */
async function pushAndWait(side: Sidecar, tenant: string, archive: Buffer, revision: string): Promise<string> {
  const before = side.outcomes(tenant).length;
  await publisher.push(tenant, archive, { revision, pushedBy: 'alice' });
  await until(`deploy of ${revision} handled`, () => side.outcomes(tenant).length > before, GENEROUS_MS);
  await side.distribution.settled();
  return side.outcomes(tenant).at(-1) as string;
}

function activeRevision(side: Sidecar, tenant: string): string | undefined {
  return side.tenants.tenant(tenant)?.active?.revision;
}

describe('a tenant discovered after start', () => {
  test('is verified with the keys on disk when it is discovered: a key written after start is trusted', async () => {
    const side = await startSidecar();
    try {
      const readsAtStart = side.reads();
      await installKey('shop'); // after the sidecar read its keys
      assert.equal(await pushAndWait(side, 'shop', await signedBundle('shop', 'shop-1'), 'shop-1'), 'ok');
      assert.equal(activeRevision(side, 'shop'), 'shop-1');
      assert.equal(side.tenants.tenant('shop')?.lastError, undefined);
      assert.equal(side.reads(), readsAtStart + 1, 'one read for the discovery');
    } finally {
      await side.close();
    }
  });

  test('a key removed after start is not trusted (fail closed)', async () => {
    await installKey('gone');
    const side = await startSidecar(); // reads gone.pub.pem; the tenant has no pointer yet
    try {
      await unlink(join(keys, 'gone.pub.pem'));
      const outcome = await pushAndWait(side, 'gone', await signedBundle('gone', 'gone-1'), 'gone-1');
      assert.equal(outcome, ErrorCodes.BUNDLE_SIGNATURE_UNEXPECTED);
      assert.equal(activeRevision(side, 'gone'), undefined);
    } finally {
      await side.close();
    }
  });
});

describe('a bundle refused for a key reason', () => {
  test('reads the keys again at most once per interval per tenant; a key that arrives after a refusal is trusted at the next push', async () => {
    const side = await startSidecar();
    try {
      const archive = await signedBundle('cafe', 'cafe-1');
      assert.equal(await pushAndWait(side, 'cafe', archive, 'cafe-1'), ErrorCodes.BUNDLE_SIGNATURE_UNEXPECTED);
      const reads = side.reads();
      // a flood of refused pushes within the interval: no more reads
      for (let i = 0; i < 4; i++) {
        assert.equal(await pushAndWait(side, 'cafe', archive, 'cafe-1'), ErrorCodes.BUNDLE_SIGNATURE_UNEXPECTED);
      }
      assert.equal(side.reads(), reads, 'refusals within the interval do not read the keys again');
      await installKey('cafe');
      assert.equal(await pushAndWait(side, 'cafe', archive, 'cafe-1'), ErrorCodes.BUNDLE_SIGNATURE_UNEXPECTED, 'still within the interval');
      assert.equal(side.reads(), reads);
      side.advance(INTERVAL_MS);
      assert.equal(await pushAndWait(side, 'cafe', archive, 'cafe-1'), 'ok');
      assert.equal(side.reads(), reads + 1);
      assert.equal(activeRevision(side, 'cafe'), 'cafe-1');
      assert.equal(side.tenants.tenant('cafe')?.lastError, undefined);
    } finally {
      await side.close();
    }
  });

  test('a key rotated in place is read again for bundles and deltas; the replaced key is no longer trusted', async () => {
    await installKey('mint', 1);
    await publisher.push('mint', await signedBundle('mint', 'mint-1', 1), { revision: 'mint-1', pushedBy: 'alice' });
    const side = await startSidecar();
    try {
      await until('mint-1 active', () => activeRevision(side, 'mint') === 'mint-1', GENEROUS_MS);
      // the Secret is updated: same key id, a new key
      await installKey('mint', 2);
      side.advance(INTERVAL_MS);
      assert.equal(await pushAndWait(side, 'mint', await signedBundle('mint', 'mint-2', 2), 'mint-2'), 'ok');
      assert.equal(activeRevision(side, 'mint'), 'mint-2');

      // rotated again; a delta signed with the newest key applies after a read
      await installKey('mint', 3);
      side.advance(INTERVAL_MS);
      await publisher.publishDelta('mint', { data: [{ op: 'upsert', path: '/mint/limits/max', value: 20 }] }, ['mint'], await signingKey('mint', 3));
      await until('delta 1 applied', () => side.tenants.deltaState('mint')?.sequence === 1, GENEROUS_MS);
      assert.equal(side.tenants.tenant('mint')?.lastError, undefined);

      // the key before (generation 2) is no longer trusted, after a read as well
      side.advance(INTERVAL_MS);
      const reads = side.reads();
      const outcome = await pushAndWait(side, 'mint', await signedBundle('mint', 'mint-old', 2), 'mint-old');
      assert.equal(outcome, ErrorCodes.BUNDLE_SIGNATURE_INVALID);
      assert.equal(side.reads(), reads + 1, 'the refusal stands after reading the keys again');
      assert.equal(activeRevision(side, 'mint'), 'mint-2');
    } finally {
      await side.close();
    }
  });
});

describe('a delta that a newer deploy overtakes', () => {
  test('is dropped, not reported as a refusal of the tenant (live append and replay rebuild alike)', async () => {
    await installKey('desk');
    const first = await publisher.push('desk', await signedBundle('desk', 'desk-1'), { revision: 'desk-1', pushedBy: 'alice' });
    const side = await startSidecar();
    try {
      await until('desk-1 active', () => side.tenants.deltaState('desk')?.base === first.sequence, GENEROUS_MS);
      const signing = await signingKey('desk');
      await publisher.publishDelta('desk', { data: [{ op: 'upsert', path: '/desk/limits/max', value: 20 }] }, ['desk'], signing);
      await until('delta 1 applied', () => side.tenants.deltaState('desk')?.sequence === 1, GENEROUS_MS);

      // delta 2 of the first deploy was checked while the activation of the next deploy waited
      const delta = async (sequence: number, value: number): Promise<{ base: number; sequence: number; roots: string[]; operations: PatchOperation[]; signatures: string[] }> => {
        const operations: PatchOperation[] = parsePatch({ data: [{ op: 'upsert', path: '/desk/limits/max', value }] });
        const content = { tenant: 'desk', base: first.sequence, sequence, roots: ['desk'], operations };
        return { ...content, signatures: await signDelta(content, signing) };
      };
      const [one, two] = [await delta(1, 20), await delta(2, 30)];
      const archive = await signedBundle('desk', 'desk-2');
      const next = await publisher.push('desk', archive, { revision: 'desk-2', pushedBy: 'alice' });
      const failuresBefore = side.outcomes('desk').filter((o) => o !== 'ok').length;
      const activation = side.tenants.activate('desk', archive, { kind: 'push', sequence: next.sequence });
      const append = side.tenants.applyDeltas('desk', [two], 'append');
      const rebuild = side.tenants.applyDeltas('desk', [one, two], 'rebuild');
      await activation;
      const obsolete = (error: unknown): boolean => error instanceof PavilionError && error.code === ErrorCodes.BUNDLE_DELTA_SEQUENCE;
      await assert.rejects(append, obsolete);
      await assert.rejects(rebuild, obsolete);
      await side.distribution.settled();
      assert.equal(side.tenants.deltaState('desk')?.base, next.sequence);
      assert.equal(side.tenants.tenant('desk')?.lastError, undefined, 'nothing was refused');
      assert.equal(side.tenants.tenant('desk')?.state, 'OK');
      assert.equal(side.outcomes('desk').filter((o) => o !== 'ok').length, failuresBefore, 'no failure counted');
    } finally {
      await side.close();
    }
  });
});

describe('a whole sidecar (default wiring)', () => {
  test('serves a tenant whose key was written after start, pushed after', async () => {
    const app = await startPavilion({
      config: {
        labels: { id: 'sidecar-trust-default' },
        bundles: { source: 'nats', keysDirectory: keys },
        nats: { servers: [nats.url], connectTimeoutMs: 3_000, reconnectWaitMs: 50, reconnectJitterMs: 50, statusIntervalMs: 1_000 },
      },
    });
    try {
      await installKey('kiosk');
      await publisher.push('kiosk', await signedBundle('kiosk', 'kiosk-1'), { revision: 'kiosk-1', pushedBy: 'alice' });
      await until('kiosk-1 served', async () => {
        const res = await post(`${app.url}/v1/data/kiosk/authz/rev`, { input: {} }, { 'x-pavilion-tenant': 'kiosk' });
        return res.body['result'] === 'kiosk-1';
      }, GENEROUS_MS);
      assert.equal(app.pavilion.tenants.tenant('kiosk')?.lastError, undefined);
    } finally {
      await app.stop();
    }
  });
});
