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
import { mkdir, mkdtemp, rm, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parsePatch, signDelta, type PatchOperation } from '../sidecar/src/bundles/index.ts';
import { parseConfig, type NatsConfig } from '../sidecar/src/config/index.ts';
import { NatsBundleStore, connectNats } from '../sidecar/src/distribution/index.ts';
import { ErrorCodes, PavilionError } from '../sidecar/src/lib/errors.ts';
import { startNats, type RunningNats } from './harness/nats-server.ts';
import { post, startPavilion } from './harness/pavilion-harness.ts';
import { teamKeys } from './harness/team-keys.ts';
import { startNatsSidecar, type NatsSidecar } from './harness/nats-sidecar.ts';
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

const team = teamKeys(() => ({ dir, keys }));
const signingKey = team.signingKey;
const installKey = team.install;
const signedBundle = team.signedBundle;

type Sidecar = NatsSidecar;

/** A sidecar serving every tenant in the pointer bucket (none configured), from NATS. */
function startSidecar(): Promise<Sidecar> {
  return startNatsSidecar({ natsUrl: nats.url, keys, dir, generousMs: GENEROUS_MS });
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
