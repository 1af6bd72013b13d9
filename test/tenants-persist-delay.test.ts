/**
 * The last known good write of an activated snapshot comes shortly after the activation,
 * not within it (a fleet-wide rollout's writes would compete with the activations still
 * running): the store keeps the previous snapshot until then, a snapshot replaced before its
 * write is never written, stop() writes what is waiting, and persistDelayMs 0 writes within
 * the activation.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LastKnownGood } from '../sidecar/src/bundles/index.ts';
import { parseConfig } from '../sidecar/src/config/index.ts';
import { PolicyEngine } from '../sidecar/src/engine/index.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { engineOptions } from '../sidecar/src/pavilion.ts';
import { TenantManager } from '../sidecar/src/tenants/index.ts';
import { buildFixtureBundle } from './harness/fixtures.ts';
import { pushedTenantOptions } from './harness/tenants.ts';
import { until } from './harness/wait.ts';

let dir: string;
const archives = new Map<string, Buffer>();

async function archive(revision: string): Promise<Buffer> {
  let built = archives.get(revision);
  if (built === undefined) {
    built = await buildFixtureBundle({
      modules: { 'bank/authz.rego': `package bank.authz\n\nrev := "${revision}"\n` },
      entrypoints: ['bank/authz/rev'],
      roots: ['bank'],
      revision,
    });
    archives.set(revision, built);
  }
  return built;
}

interface Sidecar {
  readonly tenants: TenantManager;
  readonly store: LastKnownGood;
  /** The revisions of the snapshots written, in order. */
  readonly saved: string[];
  stop(): Promise<void>;
}

/** An unsigned development tenant 'bank' fed by pushes, persisting to `lkg`. */
async function sidecar(lkg: string, persistDelayMs: number): Promise<Sidecar> {
  const config = parseConfig({
    tenants: [{ id: 'bank', keys: [], allowUnsigned: true }],
    bundles: { source: 'nats', keysDirectory: join(dir, 'keys'), persistDirectory: lkg },
    nats: { servers: ['nats://127.0.0.1:4222'] },
    engine: { workers: 1 },
    decisionLog: { sink: 'none' },
  });
  const engine = new PolicyEngine(engineOptions(config));
  const store = new LastKnownGood(lkg);
  const saved: string[] = [];
  const save = store.save.bind(store);
  store.save = async (archive, meta) => {
    saved.push(meta.revision);
    await save(archive, meta);
  };
  const tenants = new TenantManager({ ...pushedTenantOptions(config, engine), persisted: store, persistDelayMs });
  await engine.start();
  try {
    await tenants.start();
  } catch (error) {
    await engine.stop();
    throw error;
  }
  return {
    tenants,
    store,
    saved,
    async stop() {
      await tenants.stop(5_000);
      await engine.stop();
    },
  };
}

async function persistedRevision(store: LastKnownGood): Promise<string | undefined> {
  return (await store.load('bank'))?.meta.revision;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pavilion-persist-delay-'));
  await mkdir(join(dir, 'keys'));
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('last known good write after an activation', () => {
  test('comes after the delay, not within the activation; stop() writes a snapshot still waiting', async () => {
    const car = await sidecar(join(dir, 'waiting'), 60_000);
    try {
      await car.tenants.activate('bank', await archive('r1'), { kind: 'source', sequence: 1 });
      assert.equal(await persistedRevision(car.store), undefined, 'nothing written within the activation');
    } finally {
      await car.stop();
    }
    const persisted = await car.store.load('bank');
    assert.equal(persisted?.meta.revision, 'r1');
    assert.equal(persisted?.meta.sequence, 1);
  });

  test('stop() during an activation writes that activation\'s snapshot before it returns', async () => {
    const car = await sidecar(join(dir, 'stop-race'), 60_000);
    let activation: Promise<unknown> | undefined;
    try {
      activation = car.tenants.activate('bank', await archive('r1'), { kind: 'source', sequence: 1 });
      await car.tenants.stop(5_000); // while r1 is still being activated
      await activation;
      assert.equal(await persistedRevision(car.store), 'r1', 'written by the time stop() returned');
    } finally {
      await activation?.catch(() => undefined);
      await car.stop();
    }
  });

  test('happens by itself once the delay has passed', async () => {
    const car = await sidecar(join(dir, 'by-itself'), 20);
    try {
      await car.tenants.activate('bank', await archive('r1'), { kind: 'source', sequence: 1 });
      await until('the snapshot is persisted', async () => (await persistedRevision(car.store)) === 'r1');
    } finally {
      await car.stop();
    }
  });

  test('a snapshot replaced before its write is never written; the one that replaced it is', async () => {
    const lkg = join(dir, 'replaced');
    const car = await sidecar(lkg, 60_000);
    try {
      await car.tenants.activate('bank', await archive('r1'), { kind: 'source', sequence: 1 });
      await car.tenants.activate('bank', await archive('r2'), { kind: 'source', sequence: 2 });
    } finally {
      await car.stop();
    }
    const persisted = await car.store.load('bank');
    assert.equal(persisted?.meta.revision, 'r2');
    assert.equal(persisted?.meta.sequence, 2);
    assert.deepEqual(car.saved, ['r2'], 'r1 was never written');
    const files = (await readdir(join(lkg, 'bank'))).filter((f) => f.startsWith('bundle-'));
    assert.deepEqual(files, [`bundle-${persisted?.meta.digest}.tar.gz`]);
  });

  test('until then the store keeps the previous snapshot, which a restart serves', async () => {
    const lkg = join(dir, 'previous');
    const first = await sidecar(lkg, 0);
    try {
      await first.tenants.activate('bank', await archive('r1'), { kind: 'source', sequence: 1 });
    } finally {
      await first.stop();
    }
    const second = await sidecar(lkg, 60_000);
    try {
      const started = second.tenants.list().find((t) => t.id === 'bank');
      assert.equal(started?.active?.revision, 'r1', 'started on the persisted r1');
      assert.equal(started?.origin?.kind, 'persisted');
      await second.tenants.activate('bank', await archive('r2'), { kind: 'source', sequence: 2 });
      assert.equal(await persistedRevision(second.store), 'r1', 'r1 stays persisted until r2 is written');
    } finally {
      await second.stop();
    }
    assert.equal(await persistedRevision(second.store), 'r2');
  });

  test('persistDelayMs 0 writes within the activation', async () => {
    const car = await sidecar(join(dir, 'at-once'), 0);
    try {
      await car.tenants.activate('bank', await archive('r1'), { kind: 'source', sequence: 1 });
      assert.equal(await persistedRevision(car.store), 'r1');
    } finally {
      await car.stop();
    }
  });

  test('a negative or non-finite persistDelayMs is refused (ERR_CONFIG_INVALID)', async () => {
    for (const persistDelayMs of [-1, Number.NaN, Number.POSITIVE_INFINITY]) {
      await assert.rejects(sidecar(join(dir, 'refused'), persistDelayMs), (error: unknown) => isPavilionError(error, ErrorCodes.CONFIG_INVALID), String(persistDelayMs));
    }
  });
});
