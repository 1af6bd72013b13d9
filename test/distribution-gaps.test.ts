/**
 * Bundle distribution over a real nats-server with JetStream: what used to fall through the
 * gaps between a push, the keys on disk, the delta stream and the sidecar's status.
 *
 * - a deploy refused for a key reason (no key for the tenant yet, a key rotated in place that
 *   the sidecar has not read) is tried again at the pace of the key re-read interval while
 *   the pointer still names it: writing the key file (a mounted Secret updated in place)
 *   activates it with no further push;
 * - `bundle prune-deltas` purges the tenant's deltas of deploys older than the previous one
 *   (its deltas stay: sidecars still on it need them); a push purges nothing; rollbacks and
 *   the deltas of the current deploy keep working;
 * - a live delta consumer that keeps failing - its stream deleted under it, its pulls refused
 *   by NATS permissions - shows in the distribution status as WARN with its code, and OK
 *   again once deltas flow.
 *
 * The sidecar is wired as Pavilion wires it (engine, tenant manager, pushed-bundle source,
 * trust store from the keys directory, NATS distribution), with an injected clock for the
 * tenant manager's key re-read interval, so that interval is passed by moving the clock.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { parseConfig, type NatsConfig } from '../sidecar/src/config/index.ts';
import { NatsBundleStore, connectNats } from '../sidecar/src/distribution/index.ts';
import { ErrorCodes } from '../sidecar/src/lib/errors.ts';
import { startNats, type RunningNats } from './harness/nats-server.ts';
import { teamKeys } from './harness/team-keys.ts';
import { startNatsSidecar, type NatsSidecar } from './harness/nats-sidecar.ts';
import { until } from './harness/wait.ts';

/** The tenant manager's key re-read interval (its default, which the distribution's key retries follow). */
const INTERVAL_MS = 5_000;
const GENEROUS_MS = 30_000;

/**
 * Users: `admin` may do anything (the publisher); `sidecar` too; `nopull` is a sidecar whose
 * grants refuse pulling from the delta stream ($JS.API.CONSUMER.MSG.NEXT.PAVILION_DELTAS.*)
 * while `pullDenied`. In a file the server's config includes, so a test can change it and
 * have the server reload it.
 */
function users(pullDenied: boolean): string {
  const deny = pullDenied ? ', deny: ["$JS.API.CONSUMER.MSG.NEXT.PAVILION_DELTAS.>"]' : '';
  return `authorization {
  users: [
    { user: admin, password: admin }
    { user: sidecar, password: sidecar }
    { user: nopull, password: nopull, permissions: { publish: { allow: [">"]${deny} } } }
  ]
}
`;
}

let nats: RunningNats;
let dir: string;
/** The sidecars' keys directory (what a mounted Secret would be). */
let keys: string;
let publisher: NatsBundleStore;
/** The users file the server's config includes. */
let usersFile: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pavilion-distribution-gaps-'));
  keys = join(dir, 'keys');
  await mkdir(keys, { recursive: true });
  usersFile = join(dir, 'users.conf');
  await writeFile(usersFile, users(true));
  // include paths are relative to the config file, which the harness writes in its own directory under tmpdir()
  nats = await startNats({ extraConfig: `include "../${basename(dir)}/users.conf"` });
  const natsConfig = parseConfig({ nats: { servers: [nats.url], name: 'test-publisher', user: 'admin', password: 'admin', fetchTimeoutMs: 2_000 } }).nats as NatsConfig;
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

async function publishDelta(tenant: string, max: number): Promise<{ base: number; sequence: number }> {
  return publisher.publishDelta(tenant, { data: [{ op: 'upsert', path: `/${tenant}/limits/max`, value: max }] }, [tenant], await signingKey(tenant));
}

type Sidecar = NatsSidecar;

/** A sidecar serving every tenant in the pointer bucket (none configured), from NATS as `user`. */
function startSidecar(user = 'sidecar'): Promise<Sidecar> {
  return startNatsSidecar({ natsUrl: nats.url, keys, dir, user, generousMs: GENEROUS_MS });
}

function activeRevision(side: Sidecar, tenant: string): string | undefined {
  return side.tenants.tenant(tenant)?.active?.revision;
}

describe('a deploy refused for a key reason', () => {
  test('with no key for the tenant yet: writing the key file activates it, with no further push', async () => {
    const side = await startSidecar();
    try {
      const deploy = await publisher.push('shop', await signedBundle('shop', 'shop-1'), { revision: 'shop-1', pushedBy: 'alice' });
      await until('shop-1 refused', () => side.outcomes('shop').length > 0, GENEROUS_MS);
      // a key-refused deploy is not marked applied, so a resync running at start may offer the
      // same pointer again: refused the same way (seen once in CI, two refusals before the first look)
      const refusals = side.outcomes('shop').length;
      assert.deepEqual(side.outcomes('shop'), Array.from({ length: refusals }, () => ErrorCodes.BUNDLE_SIGNATURE_UNEXPECTED));
      assert.equal(activeRevision(side, 'shop'), undefined);
      // retried while the key is still missing: verified again, never downloaded again
      side.advance(INTERVAL_MS);
      await until('shop-1 refused again', () => side.outcomes('shop').length > refusals, GENEROUS_MS);
      assert.equal(await side.downloads(), 1, 'a retry verifies the archive kept from the refusal');
      // the operator adds the key (the Secret is updated in place); nobody pushes again
      await installKey('shop');
      side.advance(INTERVAL_MS);
      await until('shop-1 active without a new push', () => activeRevision(side, 'shop') === 'shop-1', GENEROUS_MS);
      assert.equal((await publisher.current('shop'))?.sequence, deploy.sequence, 'the pointer did not move');
      assert.equal(side.tenants.tenant('shop')?.origin?.sequence, deploy.sequence);
      assert.equal(side.tenants.tenant('shop')?.lastError, undefined);
    } finally {
      await side.close();
    }
  });

  test('with a key rotated in place that the sidecar has not read: the new key file activates it, with no further push', async () => {
    await installKey('mint', 1);
    await publisher.push('mint', await signedBundle('mint', 'mint-1', 1), { revision: 'mint-1', pushedBy: 'alice' });
    const side = await startSidecar();
    try {
      await until('mint-1 active', () => activeRevision(side, 'mint') === 'mint-1', GENEROUS_MS);
      const handled = side.outcomes('mint').length;
      // the team signs with its new key before the Secret carries it
      side.advance(INTERVAL_MS);
      const deploy = await publisher.push('mint', await signedBundle('mint', 'mint-2', 2), { revision: 'mint-2', pushedBy: 'alice' });
      await until('mint-2 refused', () => side.outcomes('mint').length > handled, GENEROUS_MS);
      assert.equal(side.outcomes('mint').at(-1), ErrorCodes.BUNDLE_SIGNATURE_INVALID);
      assert.equal(activeRevision(side, 'mint'), 'mint-1', 'the previous revision keeps serving');
      await installKey('mint', 2);
      side.advance(INTERVAL_MS);
      await until('mint-2 active without a new push', () => activeRevision(side, 'mint') === 'mint-2', GENEROUS_MS);
      assert.equal((await publisher.current('mint'))?.sequence, deploy.sequence, 'the pointer did not move');
      assert.equal(side.tenants.tenant('mint')?.lastError, undefined);
    } finally {
      await side.close();
    }
  });
});

describe('bundle prune-deltas', () => {
  /** The bases of the tenant's deltas still in the stream, in stream order. */
  async function storedBases(tenant: string): Promise<number[]> {
    return (await publisher.deltas(tenant)).map((d) => d.base);
  }

  test('the deltas of deploys before the previous one are purged; the previous deploy\'s stay; a rollback gets deltas of its own', async () => {
    assert.equal(await publisher.pruneDeltas('park'), undefined, 'no deploy yet: nothing to prune');
    await installKey('park');
    const push = async (revision: string): Promise<number> => (await publisher.push('park', await signedBundle('park', revision), { revision, pushedBy: 'alice' })).sequence;
    const a = await push('park-a');
    await publishDelta('park', 11);
    await publishDelta('park', 12);
    const b = await push('park-b');
    assert.deepEqual(await publisher.pruneDeltas('park'), { previousDeploy: a, purged: 0 });
    assert.deepEqual(await storedBases('park'), [a, a], 'the previous deploy keeps its deltas');
    await publishDelta('park', 21);
    // another tenant's deltas are not touched
    await installKey('pond');
    const pond = (await publisher.push('pond', await signedBundle('pond', 'pond-1'), { revision: 'pond-1', pushedBy: 'alice' })).sequence;
    await publishDelta('pond', 5);
    const c = await push('park-c');
    assert.deepEqual(await storedBases('park'), [a, a, b], 'a push purges nothing');
    assert.deepEqual(await publisher.pruneDeltas('park'), { previousDeploy: b, purged: 2 });
    assert.deepEqual(await storedBases('park'), [b], `deploy ${a}'s deltas are purged, deploy ${b}'s stay`);
    assert.deepEqual(await storedBases('pond'), [pond]);
    await publishDelta('park', 31);
    await publishDelta('park', 32);

    const side = await startSidecar();
    try {
      await until('park-c with its deltas', () => activeRevision(side, 'park') === 'park-c' && side.tenants.deltaState('park')?.sequence === 2, GENEROUS_MS);
      assert.deepEqual(side.tenants.deltaState('park'), { base: c, sequence: 2 });
      // a rollback to park-b is a new deploy: its deltas start at 1 and reach the sidecar
      const rollback = await publisher.rollback('park', { to: b, pushedBy: 'oncall' });
      await until('park-b back', () => side.tenants.deltaState('park')?.base === rollback.sequence, GENEROUS_MS);
      assert.equal(activeRevision(side, 'park'), 'park-b');
      const delta = await publishDelta('park', 41);
      assert.deepEqual([delta.base, delta.sequence], [rollback.sequence, 1]);
      await until('the rollback\'s delta applied', () => side.tenants.deltaState('park')?.sequence === 1, GENEROUS_MS);
      assert.equal(side.tenants.tenant('park')?.lastError, undefined);
      // after the next push, a prune keeps the rollback deploy's deltas and purges deploy c's
      await push('park-d');
      await publisher.pruneDeltas('park');
      assert.deepEqual(await storedBases('park'), [rollback.sequence]);
    } finally {
      await side.close();
    }
  });
});

describe('a live delta consumer that keeps failing', () => {
  test('its stream deleted (and not made again): status WARN with the code; OK once deltas flow again', async () => {
    await installKey('desk');
    const deploy = await publisher.push('desk', await signedBundle('desk', 'desk-1'), { revision: 'desk-1', pushedBy: 'alice' });
    const side = await startSidecar();
    const jsm = await jetstreamManager(publisher.nc);
    try {
      await until('desk-1 active', () => side.tenants.deltaState('desk')?.base === deploy.sequence, GENEROUS_MS);
      await until('status OK', () => side.distribution.status().state === 'OK', GENEROUS_MS);
      // the stream is deleted, and another stream takes its subjects: it cannot be made again
      await jsm.streams.delete(publisher.deltaStream);
      await jsm.streams.add({ name: 'SQUATTER', subjects: ['pavilion.delta.>'] });
      await until('status WARN', () => side.distribution.status().state === 'WARN', 20_000);
      const status = side.distribution.status();
      assert.equal(status.details?.['connection'], 'connected');
      assert.equal(status.details?.['code'], ErrorCodes.DISTRIBUTION_UNAVAILABLE, JSON.stringify(status));
      // the operator puts it right; the next delta reaches the sidecar
      await jsm.streams.delete('SQUATTER');
      await publishDelta('desk', 30);
      await until('delta 1 applied', () => side.tenants.deltaState('desk')?.sequence === 1, GENEROUS_MS);
      await until('status OK again', () => side.distribution.status().state === 'OK', GENEROUS_MS);
      assert.equal(side.tenants.tenant('desk')?.lastError, undefined);
    } finally {
      await side.close();
      await jsm.streams.delete('SQUATTER').catch(() => undefined);
    }
  });

  test('its pulls refused by NATS permissions: status WARN with ERR_DISTRIBUTION_PERMISSION; OK once the grant is fixed and deltas flow', async () => {
    await installKey('till');
    const deploy = await publisher.push('till', await signedBundle('till', 'till-1'), { revision: 'till-1', pushedBy: 'alice' });
    const side = await startSidecar('nopull');
    try {
      await until('till-1 active', () => side.tenants.deltaState('till')?.base === deploy.sequence, GENEROUS_MS);
      await until('status WARN', () => side.distribution.status().state === 'WARN', 20_000);
      const status = side.distribution.status();
      assert.equal(status.details?.['connection'], 'connected');
      assert.equal(status.details?.['code'], ErrorCodes.DISTRIBUTION_PERMISSION, JSON.stringify(status));
      assert.match(status.message ?? '', /MSG\.NEXT\.PAVILION_DELTAS/);
      // the operator fixes the grant (the server reloads its config on SIGHUP; connections keep
      // going with the new permissions); the client pulls again after missing two heartbeats
      await writeFile(usersFile, users(false));
      assert.ok(nats.pid !== undefined);
      process.kill(nats.pid, 'SIGHUP');
      await publishDelta('till', 20);
      await until('delta 1 applied', () => side.tenants.deltaState('till')?.sequence === 1, 90_000);
      await until('status OK again', () => side.distribution.status().state === 'OK', GENEROUS_MS);
      assert.equal(side.tenants.tenant('till')?.lastError, undefined);
    } finally {
      await side.close();
    }
  });
});
