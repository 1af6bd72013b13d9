/**
 * The last known good write of an activated snapshot comes shortly after the activation,
 * not within it (a fleet-wide rollout's writes would compete with the activations still
 * running): the store keeps the previous snapshot until then, a snapshot replaced before its
 * write is never written, stop() writes what is waiting, and persistDelayMs 0 writes within
 * the activation. Deltas applied on a snapshot still waiting for its write are restored with
 * it once it is written, and until then a restart serves the previous snapshot with its own
 * deltas, never with the new snapshot's.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LastKnownGood, type DeltaUpdate, type PatchOperation } from '../sidecar/src/bundles/index.ts';
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

/** A snapshot whose data deltas change: `max` (10 in the snapshot) and `flag` (none). */
async function dataArchive(revision: string): Promise<Buffer> {
  const key = `data:${revision}`;
  let built = archives.get(key);
  if (built === undefined) {
    built = await buildFixtureBundle({
      modules: { 'bank/authz.rego': `package bank.authz\n\nrev := "${revision}"\n\nmax := data.bank.limits.max\n\nflag := data.bank.limits.flag\n` },
      entrypoints: ['bank/authz/rev', 'bank/authz/max', 'bank/authz/flag'],
      roots: ['bank'],
      revision,
      data: { 'bank/limits': { max: 10 } },
    });
    archives.set(key, built);
  }
  return built;
}

/** An unsigned delta (the development tenant takes them) of deploy `base`. */
function delta(base: number, sequence: number, ...operations: PatchOperation[]): DeltaUpdate {
  return { base, sequence, roots: ['bank'], operations };
}

const setMax = (value: number): PatchOperation => ({ op: 'upsert', path: '/bank/limits/max', value });
const setFlag = (value: string): PatchOperation => ({ op: 'upsert', path: '/bank/limits/flag', value });

interface Sidecar {
  readonly tenants: TenantManager;
  readonly engine: PolicyEngine;
  readonly store: LastKnownGood;
  /** The revisions of the snapshots written, in order. */
  readonly saved: string[];
  stop(): Promise<void>;
  /** The process ends abruptly: the engine goes, tenants.stop() (which writes what waits) is never called. */
  crash(): Promise<void>;
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
    engine,
    store,
    saved,
    async stop() {
      await tenants.stop(5_000);
      await engine.stop();
    },
    async crash() {
      await engine.stop();
    },
  };
}

/** What bank serves: the revision, the data deltas change, and the deltas it holds. */
async function served(car: Sidecar): Promise<{ rev: unknown; max: unknown; flag: unknown; base: number | undefined; deltas: number | undefined }> {
  const value = async (rule: string): Promise<unknown> => (await car.engine.evaluate('bank', `bank/authz/${rule}`, {}, { cache: false })).result;
  const state = car.tenants.deltaState('bank');
  return { rev: await value('rev'), max: await value('max'), flag: await value('flag'), base: state?.base, deltas: state?.sequence };
}

/** r1 (deploy 1) with its delta 1 (max 11, flag 'one'), written at once: the previous snapshot of the tests below. */
async function persistFirst(lkg: string): Promise<void> {
  const first = await sidecar(lkg, 0);
  try {
    await first.tenants.activate('bank', await dataArchive('r1'), { kind: 'source', sequence: 1 });
    await first.tenants.applyDeltas('bank', [delta(1, 1, setMax(11), setFlag('one'))], 'append');
  } finally {
    await first.stop();
  }
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

describe('deltas applied on a snapshot before its last known good write', () => {
  /** r2 (deploy 2) activated on top of the persisted r1, and its deltas 1 (max 20) and 2 (flag 'two') applied. */
  async function activateWithDeltas(car: Sidecar, archive: Buffer, deploy = 2): Promise<void> {
    await car.tenants.activate('bank', archive, { kind: 'source', sequence: deploy });
    assert.equal(await car.tenants.applyDeltas('bank', [delta(deploy, 1, setMax(20))], 'append'), 1);
    assert.equal(await car.tenants.applyDeltas('bank', [delta(deploy, 2, setFlag('two'))], 'append'), 2);
  }

  /** A restart on `lkg` with no source (NATS unreachable): what it serves from the store. */
  async function restart(lkg: string): Promise<{ served: Awaited<ReturnType<typeof served>>; origin: string | undefined; error: string | undefined }> {
    const car = await sidecar(lkg, 60_000);
    try {
      const status = car.tenants.tenant('bank');
      return { served: await served(car), origin: status?.origin?.kind, error: status?.lastError?.code };
    } finally {
      await car.stop();
    }
  }

  const R1_WITH_ITS_DELTA = { rev: 'r1', max: 11, flag: 'one', base: 1, deltas: 1 };
  const R2_WITH_DELTAS = { rev: 'r2', max: 20, flag: 'two', base: 2, deltas: 2 };

  /** A restart on `lkg` serves r2 from the store with its deltas 1-2, every one applied. */
  async function restartServesR2WithDeltas(lkg: string): Promise<void> {
    const after = await restart(lkg);
    assert.deepEqual(after.served, R2_WITH_DELTAS, 'r2 with its deltas 1-2 - not without them, not r1 with them');
    assert.equal(after.origin, 'persisted');
    assert.equal(after.error, undefined, 'every persisted delta applied');
  }

  test('are written with it when its write comes by itself: a restart serves the new snapshot with deltas 1-2', async () => {
    const lkg = join(dir, 'deltas-then-write');
    await persistFirst(lkg);
    // 3-6 s: the activation and two deltas come long before it, even on a loaded machine
    const car = await sidecar(lkg, 3_000);
    try {
      assert.deepEqual(await served(car), R1_WITH_ITS_DELTA, 'started on the persisted r1 and its delta');
      await activateWithDeltas(car, await dataArchive('r2'));
      assert.deepEqual(car.saved, [], 'the deltas were applied before r2 was written');
      assert.equal(await persistedRevision(car.store), 'r1');
      await until('r2 is written by itself', async () => (await persistedRevision(car.store)) === 'r2');
    } finally {
      await car.stop();
    }
    assert.deepEqual(car.saved, ['r2'], 'written once, by its delay (stop() had nothing left to write)');
    await restartServesR2WithDeltas(lkg);
  });

  test('are written with it by stop(): a restart serves the new snapshot with deltas 1-2', async () => {
    const lkg = join(dir, 'deltas-then-stop');
    await persistFirst(lkg);
    const car = await sidecar(lkg, 60_000);
    try {
      await activateWithDeltas(car, await dataArchive('r2'));
      assert.equal(await persistedRevision(car.store), 'r1', 'r2 still waiting for its write');
    } finally {
      await car.stop();
    }
    assert.deepEqual(car.saved, ['r2']);
    await restartServesR2WithDeltas(lkg);
  });

  test('a process that ends before the write (no stop()) restarts on the previous snapshot with its own deltas, never with the new snapshot\'s', async () => {
    const lkg = join(dir, 'deltas-then-crash');
    await persistFirst(lkg);
    const car = await sidecar(lkg, 60_000);
    try {
      await activateWithDeltas(car, await dataArchive('r2'));
      assert.deepEqual(await served(car), R2_WITH_DELTAS);
      assert.equal(await persistedRevision(car.store), 'r1', 'r2 still waiting for its write');
      await car.crash();
      const after = await restart(lkg);
      assert.notDeepEqual([after.served.rev, after.served.max], ['r1', 20], 'r1 with r2\'s delta 1 would be a mix');
      assert.notDeepEqual([after.served.rev, after.served.flag], ['r1', 'two'], 'r1 with r2\'s delta 2 would be a mix');
      assert.deepEqual(after.served, R1_WITH_ITS_DELTA, 'the consistent earlier state: r1 with its own persisted delta');
      assert.equal(after.origin, 'persisted');
      assert.equal(after.error, undefined, 'nothing of r2 was offered to r1');
    } finally {
      await car.tenants.stop(5_000); // the crashed manager's timer: nothing may write after the test
    }
    assert.deepEqual(car.saved, ['r2'], 'r2 was never written before the crash');
  });

  test('the same bytes deployed again: until the new deploy is written, a process that ends restarts on the old deploy with the old deploy\'s deltas, not the new deploy\'s', async () => {
    const lkg = join(dir, 'same-bytes-crash');
    await persistFirst(lkg); // r1 as deploy 1, delta 1 of deploy 1 (max 11, flag 'one')
    const car = await sidecar(lkg, 60_000);
    try {
      await activateWithDeltas(car, await dataArchive('r1'), 2); // the same archive as deploy 2, its deltas 1-2
      assert.deepEqual(await served(car), { rev: 'r1', max: 20, flag: 'two', base: 2, deltas: 2 });
      assert.equal((await car.store.load('bank'))?.meta.sequence, 1, 'deploy 2 still waiting for its write');
      await car.crash();
      const after = await restart(lkg);
      assert.deepEqual(after.served, R1_WITH_ITS_DELTA, 'deploy 1 with delta 1 of deploy 1, none of deploy 2\'s');
      assert.equal(after.error, undefined);
    } finally {
      await car.tenants.stop(5_000);
    }
    assert.deepEqual(car.saved, ['r1'], 'deploy 2 written only by the stop() after the crash test');
    const written = await restart(lkg);
    assert.deepEqual(written.served, { rev: 'r1', max: 20, flag: 'two', base: 2, deltas: 2 }, 'once written, deploy 2 with its deltas 1-2');
    assert.equal(written.error, undefined);
  });
});

describe('a last known good write that fails', () => {
  /** The car's snapshot writes fail with ENOSPC while `failing.snapshot`, its deltas writes with EIO while `failing.deltas`. */
  function failWrites(car: Sidecar, failing: { snapshot: boolean; deltas: boolean }): void {
    const save = car.store.save.bind(car.store);
    car.store.save = async (...args: Parameters<LastKnownGood['save']>) => {
      if (failing.snapshot) throw new Error('ENOSPC: no space left on device, write');
      return save(...args);
    };
    const saveDeltas = car.store.saveDeltas.bind(car.store);
    car.store.saveDeltas = async (...args: Parameters<LastKnownGood['saveDeltas']>) => {
      if (failing.deltas) throw new Error('EIO: i/o error, write');
      return saveDeltas(...args);
    };
  }

  test('leaves serving alone and shows in the tenant\'s status (WARN, persistError) until a write of the same kind succeeds', async () => {
    const car = await sidecar(join(dir, 'lkg-failing'), 0);
    try {
      const failing = { snapshot: true, deltas: true };
      failWrites(car, failing);
      await car.tenants.activate('bank', await dataArchive('f1'), { kind: 'source', sequence: 1 });
      assert.equal((await served(car)).rev, 'f1', 'served all the same');
      assert.equal(car.tenants.tenant('bank')?.state, 'WARN');
      const snapshotFailed = /^writing revision f1 as last known good failed: .*ENOSPC/;
      assert.match(car.tenants.tenant('bank')?.persistError?.message ?? '', snapshotFailed);
      await car.tenants.applyDeltas('bank', [delta(1, 1, setMax(5))], 'append');
      assert.equal((await served(car)).max, 5);
      assert.match(car.tenants.tenant('bank')?.persistError?.message ?? '', snapshotFailed, 'the snapshot\'s failure comes first');

      failing.deltas = false;
      await car.tenants.applyDeltas('bank', [delta(1, 2, setMax(6))], 'append');
      assert.match(car.tenants.tenant('bank')?.persistError?.message ?? '', snapshotFailed, 'deltas written do not make up for the snapshot that was not');
      assert.equal(car.tenants.tenant('bank')?.state, 'WARN');

      failing.snapshot = false;
      await car.tenants.activate('bank', await dataArchive('f2'), { kind: 'source', sequence: 2 });
      assert.equal(car.tenants.tenant('bank')?.persistError, undefined, 'a snapshot written clears it');
      assert.equal(car.tenants.tenant('bank')?.state, 'OK');
      assert.equal(await persistedRevision(car.store), 'f2');

      failing.deltas = true;
      await car.tenants.applyDeltas('bank', [delta(2, 1, setMax(7))], 'append');
      assert.match(car.tenants.tenant('bank')?.persistError?.message ?? '', /^writing the deltas of deploy 2 as last known good failed: .*EIO/);
      failing.deltas = false;
      await car.tenants.applyDeltas('bank', [delta(2, 2, setMax(8))], 'append');
      assert.equal(car.tenants.tenant('bank')?.persistError, undefined, 'deltas written clear a deltas failure');
    } finally {
      await car.stop();
    }
  });

  test('a delayed snapshot write does not clear a deltas failure on that same snapshot: its deltas file still lacks them', async () => {
    const car = await sidecar(join(dir, 'lkg-delayed-failing'), 300);
    try {
      const failing = { snapshot: false, deltas: true };
      failWrites(car, failing);
      await car.tenants.activate('bank', await dataArchive('g1'), { kind: 'source', sequence: 1 });
      await car.tenants.applyDeltas('bank', [delta(1, 1, setMax(9))], 'append');
      assert.equal(car.saved.length, 0, 'the snapshot is not written yet (delayed)');
      const deltasFailed = /^writing the deltas of deploy 1 as last known good failed: .*EIO/;
      assert.match(car.tenants.tenant('bank')?.persistError?.message ?? '', deltasFailed);
      await until('the delayed snapshot write done', async () => (await persistedRevision(car.store)) === 'g1', 5_000);
      await new Promise((resolve) => setImmediate(resolve)); // its settlement runs after the write
      assert.match(car.tenants.tenant('bank')?.persistError?.message ?? '', deltasFailed, 'still short of delta 1');
      failing.deltas = false;
      await car.tenants.applyDeltas('bank', [delta(1, 2, setMax(10))], 'append');
      assert.equal(car.tenants.tenant('bank')?.persistError, undefined);
    } finally {
      await car.stop();
    }
  });
});
