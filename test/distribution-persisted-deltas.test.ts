/**
 * Delta updates persisted with the last known good, over a real nats-server with JetStream
 * and real signed bundles and deltas: a sidecar restarted while NATS is unreachable serves
 * its persisted snapshot with the deltas it had applied (a permission a delta revoked stays
 * revoked), and takes the stream's deltas once NATS is back without applying one twice; a
 * persisted delta that fails verification is refused with its code and the snapshot with
 * the deltas before it serves; a deltas file of an earlier deploy never applies to a new one.
 * Each delta is appended to the deploy's file (never written anew); once NATS is back and
 * the pointer still names the persisted deploy, the revision is confirmed as the source's
 * (the persisted WARN clears) without being reloaded.
 */
import assert from 'node:assert/strict';
import { link, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LastKnownGood, type PersistedDeltasV1 } from '../sidecar/src/bundles/last-known-good.ts';
import { parseConfig, type NatsConfig } from '../sidecar/src/config/index.ts';
import { NatsBundleStore, connectNats } from '../sidecar/src/distribution/index.ts';
import { ErrorCodes } from '../sidecar/src/lib/errors.ts';
import { buildFixtureBundle, limitsFixture } from './harness/fixtures.ts';
import { startNats, type RunningNats } from './harness/nats-server.ts';
import { until } from './harness/wait.ts';
import { deltaSigning, get, post, signForTest, startPavilion, type RunningPavilion } from './harness/pavilion-harness.ts';

let nats: RunningNats;
let dir: string;
let keys: string;
let natsConfig: NatsConfig;
let store: NatsBundleStore;

async function limitsBundle(rev: string): Promise<Buffer> {
  return signForTest('bank', await buildFixtureBundle(limitsFixture(rev)), keys);
}

async function allows(sidecar: RunningPavilion, amount: number): Promise<boolean> {
  const res = await post(`${sidecar.url}/v1/data/bank/authz/allow`, { input: { amount } }, { 'x-pavilion-tenant': 'bank' });
  assert.equal(res.status, 200);
  return res.body['result'] === true;
}

async function setMax(value: number): Promise<void> {
  await store.publishDelta('bank', { data: [{ op: 'upsert', path: '/bank/limits/max', value }] }, ['bank'], await deltaSigning('bank', keys));
}

/** A sidecar on the test's NATS keeping its last known good in `persistDirectory`; `offline`: NATS is expected down. */
function startPersisting(id: string, persistDirectory: string, offline = false): Promise<RunningPavilion> {
  return startPavilion({
    config: {
      labels: { id },
      tenants: [{ id: 'bank' }],
      bundles: { source: 'nats', keysDirectory: keys, persistDirectory },
      nats: { servers: [nats.url], connectTimeoutMs: offline ? 200 : 3_000, reconnectWaitMs: 50, reconnectJitterMs: 50, statusIntervalMs: 200 },
    },
  });
}

/** The persisted deltas of the snapshot the persisted meta names, once `count` are on disk. */
async function persistedDeltas(persistDirectory: string, count: number): Promise<{ file: string; base: number; digest: string }> {
  const lkg = new LastKnownGood(persistDirectory);
  let found: { file: string; base: number; digest: string } | undefined;
  await until(`${count} deltas persisted`, async () => {
    const loaded = await lkg.load('bank');
    if (loaded?.meta.sequence === undefined) return false;
    const deltas = await lkg.loadDeltas(loaded.meta);
    if (deltas.deltas.length !== count) return false;
    found = { file: lkg.deltasFile({ tenant: 'bank', digest: loaded.meta.digest, base: loaded.meta.sequence }), base: loaded.meta.sequence, digest: loaded.meta.digest };
    return true;
  });
  return found as { file: string; base: number; digest: string };
}

/** Run `body` while NATS is down (it is brought back after, whatever happens). */
async function withoutNats(body: () => Promise<void>): Promise<void> {
  await nats.kill();
  try {
    await body();
  } finally {
    await nats.restart();
    await until('publisher reconnected', async () => store.nc.flush().then(() => true, () => false));
  }
}

/** Wait until `sidecar`'s distribution is connected again and has resynchronised every pointer. */
async function reconnected(sidecar: RunningPavilion): Promise<void> {
  await until('NATS reconnected', async () => {
    const health = (await get(`${sidecar.url}/health?verbose`)).body as { components?: { distribution?: { details?: { connection?: string; lastSync?: string } } } };
    const details = health.components?.distribution?.details;
    return details?.connection === 'connected' && details.lastSync !== undefined;
  });
}

/**
 * A sidecar (persisting into `<dir>/<name>`) takes a new deploy of `revision`, then the deltas
 * setting the limit to each of `maxes` in turn, and stops: what a later start without NATS
 * finds on disk.
 */
async function persistDeploy(name: string, revision: string, maxes: readonly number[]): Promise<{ persistDirectory: string; deploy: { sequence: number } }> {
  const persistDirectory = join(dir, name);
  const deploy = await store.push('bank', await limitsBundle(revision), { revision, pushedBy: 'alice' });
  const first = await startPersisting(`sidecar-${name}`, persistDirectory);
  try {
    await until('the deploy taken', () => first.pavilion.tenants.deltaState('bank')?.base === deploy.sequence);
    for (const max of maxes) await setMax(max);
    await until(`delta ${maxes.length} applied`, () => first.pavilion.tenants.deltaState('bank')?.sequence === maxes.length);
  } finally {
    await first.stop();
  }
  return { persistDirectory, deploy };
}

before(async () => {
  nats = await startNats();
  dir = await mkdtemp(join(tmpdir(), 'pavilion-persisted-deltas-'));
  keys = join(dir, 'keys');
  natsConfig = parseConfig({ nats: { servers: [nats.url], name: 'test-publisher', fetchTimeoutMs: 2_000 } }).nats as NatsConfig;
  store = new NatsBundleStore(await connectNats(natsConfig), natsConfig);
});

after(async () => {
  await store?.close();
  await nats?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('deltas persisted with the last known good', () => {
  test('a permission a delta revoked stays revoked when the sidecar restarts without NATS; once NATS is back no delta applies twice', async () => {
    const persistDirectory = join(dir, 'revoked');
    const deploy = await store.push('bank', await limitsBundle('revoke'), { revision: 'revoke', pushedBy: 'alice' });
    const first = await startPersisting('sidecar-revoke', persistDirectory);
    try {
      await until('the deploy taken', () => first.pavilion.tenants.deltaState('bank')?.base === deploy.sequence);
      assert.equal(await allows(first, 5), true, 'the snapshot allows 5');
      await setMax(20);
      await setMax(3); // revokes: 5 is no longer allowed
      await until('delta 2 applied', async () => first.pavilion.tenants.deltaState('bank')?.sequence === 2);
      assert.equal(await allows(first, 5), false);
      await persistedDeltas(persistDirectory, 2);
    } finally {
      await first.stop();
    }
    let second: RunningPavilion | undefined;
    try {
      await withoutNats(async () => {
        second = await startPersisting('sidecar-revoke-again', persistDirectory, true);
        const tenant = second.pavilion.tenants.tenant('bank');
        assert.deepEqual([tenant?.origin?.kind, tenant?.origin?.sequence], ['persisted', deploy.sequence]);
        assert.equal(await allows(second, 5), false, 'the revoked decision stays denied');
        assert.deepEqual(second.pavilion.tenants.deltaState('bank'), { base: deploy.sequence, sequence: 2 });
        assert.equal(await allows(second, 15), false, 'delta 1 is superseded by delta 2, not served alone');
        assert.equal(await allows(second, 3), true);
        assert.equal(tenant?.lastError, undefined);
        const health = await get(`${second.url}/health?verbose`);
        assert.match(JSON.stringify(health.body), /persisted \(last known good\)/);
        assert.equal((second.pavilion.tenants.status().details?.['bank'] as Record<string, unknown>)['persistedDeltas'], 2);
      });
      const resumed = second as unknown as RunningPavilion;
      // the same deploy is not activated again; deltas go on from 2
      await reconnected(resumed);
      await setMax(4);
      await until('delta 3 applied on top', () => resumed.pavilion.tenants.deltaState('bank')?.sequence === 3);
      assert.equal(await allows(resumed, 4), true);
      assert.equal(await allows(resumed, 5), false);
      assert.equal(resumed.pavilion.tenants.tenant('bank')?.lastError, undefined, 'nothing was applied twice or out of sequence');
      await persistedDeltas(persistDirectory, 3);
    } finally {
      await second?.stop();
    }
  });

  test('each delta a sidecar applies is appended to its deploy\'s persisted file, which is never written anew', async () => {
    const persistDirectory = join(dir, 'appended');
    const deploy = await store.push('bank', await limitsBundle('append'), { revision: 'append', pushedBy: 'alice' });
    const sidecar = await startPersisting('sidecar-append', persistDirectory);
    try {
      await until('the deploy taken', () => sidecar.pavilion.tenants.deltaState('bank')?.base === deploy.sequence);
      await setMax(10);
      await until('delta 1 applied', () => sidecar.pavilion.tenants.deltaState('bank')?.sequence === 1);
      const { file } = await persistedDeltas(persistDirectory, 1);
      const probe = join(persistDirectory, 'probe-link');
      await link(file, probe); // the same inode: it sees every append, and not a file renamed over it
      for (let value = 11; value <= 30; value++) await setMax(value);
      await until('delta 21 applied', () => sidecar.pavilion.tenants.deltaState('bank')?.sequence === 21);
      await persistedDeltas(persistDirectory, 21);
      assert.ok((await readFile(probe)).equals(await readFile(file)), 'deltas 2-21 were appended to the file delta 1 created');
      assert.equal(await allows(sidecar, 30), true);
      assert.equal(await allows(sidecar, 31), false);
    } finally {
      await sidecar.stop();
    }
  });

  test('once NATS is back and its pointer still names the persisted deploy, the resync makes the revision the source\'s: the persisted WARN clears, nothing is reloaded', async () => {
    const persistDirectory = join(dir, 'confirmed');
    const deploy = await store.push('bank', await limitsBundle('confirm'), { revision: 'confirm', pushedBy: 'alice' });
    const first = await startPersisting('sidecar-confirm', persistDirectory);
    let digest: string;
    try {
      await until('the deploy taken', () => first.pavilion.tenants.deltaState('bank')?.base === deploy.sequence);
      await setMax(3);
      await until('delta 1 applied', () => first.pavilion.tenants.deltaState('bank')?.sequence === 1);
      digest = (await persistedDeltas(persistDirectory, 1)).digest;
    } finally {
      await first.stop();
    }
    const persistedWarn = async (sidecar: RunningPavilion): Promise<boolean> => /persisted \(last known good\)/.test(JSON.stringify((await get(`${sidecar.url}/health?verbose`)).body));
    let second: RunningPavilion | undefined;
    try {
      await withoutNats(async () => {
        second = await startPersisting('sidecar-confirm-again', persistDirectory, true);
        const tenants = second.pavilion.tenants;
        assert.equal(tenants.tenant('bank')?.origin?.kind, 'persisted');
        assert.equal(await persistedWarn(second), true);
        // another deploy, or other bytes under this deploy, confirm nothing
        assert.equal(await tenants.confirmSource('bank', deploy.sequence + 1, digest), false);
        assert.equal(await tenants.confirmSource('bank', deploy.sequence, '0'.repeat(64)), false);
        assert.equal(tenants.tenant('bank')?.origin?.kind, 'persisted');
      });
      const resumed = second as unknown as RunningPavilion;
      const served = resumed.pavilion.engine.active('bank');
      await reconnected(resumed);
      // the resync after the reconnect read the pointer: the same deploy of the same bytes
      await until('the persisted WARN clears on its own', async () => !(await persistedWarn(resumed)));
      const tenant = resumed.pavilion.tenants.tenant('bank');
      assert.deepEqual([tenant?.origin?.kind, tenant?.origin?.sequence, tenant?.state], ['source', deploy.sequence, 'OK']);
      assert.equal(resumed.pavilion.engine.active('bank'), served, 'the same loaded revision serves: nothing was reloaded');
      assert.deepEqual(resumed.pavilion.tenants.deltaState('bank'), { base: deploy.sequence, sequence: 1 }, 'the persisted delta stays applied');
      await setMax(4);
      await until('delta 2 applied on top', () => resumed.pavilion.tenants.deltaState('bank')?.sequence === 2);
      assert.equal(await allows(resumed, 4), true);
      assert.equal(await allows(resumed, 5), false);
    } finally {
      await second?.stop();
    }
  });

  test('a sidecar upgraded in place serves the deltas its earlier version persisted whole (format 1); its next delta rewrites them in format 2', async () => {
    const { persistDirectory, deploy } = await persistDeploy('upgraded', 'upgrade', [20, 3]);
    const { file, base, digest } = await persistedDeltas(persistDirectory, 2);
    const { deltas } = await new LastKnownGood(persistDirectory).loadDeltas({ tenant: 'bank', revision: 'upgrade', digest, sequence: base, savedAt: new Date().toISOString() });
    const formatOne: PersistedDeltasV1 = {
      v: 1, tenant: 'bank', digest, base,
      deltas: deltas.map((d) => ({ v: 1, tenant: 'bank', base: d.base, sequence: d.sequence, roots: d.roots, patch: { data: d.operations }, ...(d.signatures === undefined ? {} : { signatures: d.signatures }) })),
    };
    await writeFile(file, `${JSON.stringify(formatOne)}\n`); // as the earlier version left it
    let second: RunningPavilion | undefined;
    try {
      await withoutNats(async () => {
        second = await startPersisting('sidecar-upgrade-again', persistDirectory, true);
        assert.deepEqual(second.pavilion.tenants.deltaState('bank'), { base: deploy.sequence, sequence: 2 });
        assert.equal(await allows(second, 5), false, 'the revoking delta 2 serves');
        assert.equal(second.pavilion.tenants.tenant('bank')?.lastError, undefined);
      });
      const resumed = second as unknown as RunningPavilion;
      await reconnected(resumed);
      await setMax(4);
      await until('delta 3 applied on top', () => resumed.pavilion.tenants.deltaState('bank')?.sequence === 3);
      await persistedDeltas(persistDirectory, 3);
      assert.match(await readFile(file, 'utf8'), /^[0-9a-f]{64} \{"v":2,/, 'rewritten in format 2');
    } finally {
      await second?.stop();
    }
  });

  test('a tampered persisted delta is refused with its code; the snapshot with the deltas before it serves, and health says so', async () => {
    const { persistDirectory, deploy } = await persistDeploy('tampered', 'tamper', [20, 30, 3]);
    const { base, digest } = await persistedDeltas(persistDirectory, 3);
    const lkg = new LastKnownGood(persistDirectory);
    const persisted = await lkg.loadDeltas({ tenant: 'bank', revision: 'tamper', digest, sequence: base, savedAt: new Date().toISOString() });
    // well-formed records (their checksums match) of a delta 2 whose data is not what was signed
    const tampered = persisted.deltas.map((d) => d.sequence === 2 ? { ...d, operations: [{ op: 'upsert' as const, path: '/bank/limits/max', value: 1000 }] } : d);
    await lkg.saveDeltas({ tenant: 'bank', digest, base }, tampered);
    await withoutNats(async () => {
      const second = await startPersisting('sidecar-tamper-again', persistDirectory, true);
      try {
        const tenant = second.pavilion.tenants.tenant('bank');
        assert.equal(tenant?.origin?.kind, 'persisted');
        assert.deepEqual(second.pavilion.tenants.deltaState('bank'), { base: deploy.sequence, sequence: 1 }, 'delta 1 applies, delta 2 and after do not');
        assert.equal(await allows(second, 15), true, 'delta 1\'s data serves');
        assert.equal(await allows(second, 25), false, 'neither the tampered delta 2 nor anything after it');
        assert.equal(tenant?.lastError?.code, ErrorCodes.BUNDLE_SIGNATURE_FILES, 'delta 2 does not match its signed file hashes');
        assert.match(tenant?.lastError?.message ?? '', /persisted deltas of deploy \d+: delta 2/);
        assert.equal(tenant?.state, 'WARN');
        const health = await get(`${second.url}/health?verbose`);
        assert.match(JSON.stringify(health.body), /ERR_BUNDLE_SIGNATURE_FILES/);
      } finally {
        await second.stop();
      }
    });
  });

  test('a deltas file of an earlier deploy is not applied to the next deploy\'s snapshot, even of the same bytes', async () => {
    const persistDirectory = join(dir, 'redeployed');
    const bytes = await limitsBundle('redeploy');
    const deploy = await store.push('bank', bytes, { revision: 'redeploy', pushedBy: 'alice' });
    const first = await startPersisting('sidecar-redeploy', persistDirectory);
    let oldFile: { file: string; base: number; digest: string };
    let oldContent: Buffer;
    try {
      await until('the deploy taken', () => first.pavilion.tenants.deltaState('bank')?.base === deploy.sequence);
      await setMax(3);
      await until('delta 1 applied', () => first.pavilion.tenants.deltaState('bank')?.sequence === 1);
      oldFile = await persistedDeltas(persistDirectory, 1);
      oldContent = await readFile(oldFile.file);
      const redeploy = await store.push('bank', bytes, { revision: 'redeploy', pushedBy: 'alice', note: 'same bytes again' });
      await until('the new deploy taken', () => first.pavilion.tenants.deltaState('bank')?.base === redeploy.sequence);
      assert.equal(await allows(first, 5), true, 'the new deploy serves the snapshot\'s data');
      const lkg = new LastKnownGood(persistDirectory);
      await until('the new deploy persisted', async () => (await lkg.load('bank'))?.meta.sequence === redeploy.sequence);
    } finally {
      await first.stop();
    }
    // the crash window after the new meta's rename: the old deploy's file still there
    await writeFile(oldFile.file, oldContent);
    await withoutNats(async () => {
      const second = await startPersisting('sidecar-redeploy-again', persistDirectory, true);
      try {
        assert.equal(second.pavilion.tenants.tenant('bank')?.origin?.kind, 'persisted');
        assert.equal(second.pavilion.tenants.deltaState('bank')?.sequence, 0);
        assert.equal(await allows(second, 5), true, 'the earlier deploy\'s delta is not applied');
        assert.equal(second.pavilion.tenants.tenant('bank')?.lastError, undefined, 'a leftover file is not an error');
      } finally {
        await second.stop();
      }
      // the same file put under the new deploy's name: its binding refuses it
      const lkg = new LastKnownGood(persistDirectory);
      const meta = (await lkg.load('bank'))?.meta;
      assert.ok(meta?.sequence !== undefined && meta.sequence !== oldFile.base);
      await writeFile(lkg.deltasFile({ tenant: 'bank', digest: meta.digest, base: meta.sequence }), oldContent);
      const third = await startPersisting('sidecar-redeploy-renamed', persistDirectory, true);
      try {
        assert.equal(third.pavilion.tenants.deltaState('bank')?.sequence, 0);
        assert.equal(await allows(third, 5), true, 'a file bound to another deploy is not applied');
        assert.equal(third.pavilion.tenants.tenant('bank')?.lastError?.code, ErrorCodes.BUNDLE_DELTA_SEQUENCE);
      } finally {
        await third.stop();
      }
    });
  });
});
