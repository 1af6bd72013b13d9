/**
 * Delta updates and retries of bundle distribution, over a real nats-server with
 * JetStream and real signed bundles: a re-deploy of the same bytes starts from the
 * snapshot's data, a stale rebuild is refused, deltas published while a sidecar was away
 * are applied when it is back, a replay read of the delta stream is bounded, and a
 * transient failure is retried - also one that outlasts what used to be the retry budget.
 * A watch that keeps failing is restarted with doubling backoff and shows in status, and
 * nothing of the component runs or holds the process after stop().
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseConfig, type NatsConfig } from '../sidecar/src/config/index.ts';
import { NatsBundleStore, NatsDistribution, connectNats, encodePointer, sha256Hex, type BundlePointer, type StatusReport } from '../sidecar/src/distribution/index.ts';
import { isFinal } from '../sidecar/src/distribution/nats-distribution.ts';
import type { TenantManager } from '../sidecar/src/tenants/index.ts';
import { ErrorCodes, PavilionError } from '../sidecar/src/lib/errors.ts';
import { REPO_ROOT } from '../sidecar/src/lib/tools.ts';
import { buildFixtureBundle, limitsFixture } from './harness/fixtures.ts';
import { freePort, startNats, type RunningNats } from './harness/nats-server.ts';
import { until } from './harness/wait.ts';
import { deltaSigning, post, signForTest, startPavilion, type RunningPavilion } from './harness/pavilion-harness.ts';

let nats: RunningNats;
let dir: string;
let keys: string;
let natsConfig: NatsConfig;
let store: NatsBundleStore;
let sidecar: RunningPavilion;
let limits: Buffer;

async function limitsBundle(rev: string): Promise<Buffer> {
  return signForTest('bank', await buildFixtureBundle(limitsFixture(rev)), keys);
}

async function allows(amount: number, url = sidecar.url): Promise<boolean> {
  const res = await post(`${url}/v1/data/bank/authz/allow`, { input: { amount } }, { 'x-pavilion-tenant': 'bank' });
  return res.body['result'] === true;
}

/** The revision bank's policy reports on the sidecar at `url`. */
async function revision(url = sidecar.url): Promise<unknown> {
  return (await post(`${url}/v1/data/bank/authz/rev`, { input: {} }, { 'x-pavilion-tenant': 'bank' })).body['result'];
}

/**
 * A sidecar of tenant bank on NATS (the test's server unless `nats.servers` says otherwise):
 * quick reconnects and status reports, with `nats` and `bundles` settings on top.
 */
function startOnNats(id: string, natsSettings: Record<string, unknown> = {}, bundles: Record<string, unknown> = {}): Promise<RunningPavilion> {
  return startPavilion({
    config: {
      labels: { id },
      tenants: [{ id: 'bank' }],
      bundles: { source: 'nats', keysDirectory: keys, ...bundles },
      nats: { servers: [nats.url], connectTimeoutMs: 3_000, reconnectWaitMs: 50, reconnectJitterMs: 50, statusIntervalMs: 200, ...natsSettings },
    },
  });
}

before(async () => {
  nats = await startNats();
  dir = await mkdtemp(join(tmpdir(), 'pavilion-distribution-deltas-'));
  keys = join(dir, 'keys');
  natsConfig = parseConfig({ nats: { servers: [nats.url], name: 'test-publisher', fetchTimeoutMs: 2_000 } }).nats as NatsConfig;
  store = new NatsBundleStore(await connectNats(natsConfig), natsConfig);
  limits = await limitsBundle('limits');
  await store.push('bank', limits, { revision: 'limits', pushedBy: 'alice' });
  sidecar = await startOnNats('sidecar-deltas');
  await until('limits served', async () => (await revision()) === 'limits');
});

after(async () => {
  await sidecar?.stop();
  await store?.close();
  await nats?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('deltas across deploys', () => {
  test('re-deploying the same bundle bytes drops the previous deploy\'s deltas and takes the new deploy\'s', async () => {
    await store.publishDelta('bank', { data: [{ op: 'upsert', path: '/bank/limits/max', value: 20 }] }, ['bank'], await deltaSigning('bank', keys));
    await until('delta 1 applied', () => allows(15));
    const redeploy = await store.push('bank', limits, { revision: 'limits', pushedBy: 'alice', note: 'same bytes again' });
    await until('new deploy taken', () => sidecar.pavilion.tenants.deltaState('bank')?.base === redeploy.sequence);
    assert.equal(sidecar.pavilion.tenants.deltaState('bank')?.sequence, 0, 'the new deploy has no deltas yet');
    assert.equal(await allows(15), false, 'the snapshot\'s data is served again');
    const next = await store.publishDelta('bank', { data: [{ op: 'upsert', path: '/bank/limits/max', value: 100 }] }, ['bank'], await deltaSigning('bank', keys));
    assert.equal(next.base, redeploy.sequence);
    assert.equal(next.sequence, 1);
    await until('the new deploy\'s delta 1 applied', () => allows(99));
    assert.equal(sidecar.pavilion.tenants.tenant('bank')?.lastError, undefined);
  });

  test('a rebuild that ends before the applied delta of the same deploy is refused; the newer data keeps serving', async () => {
    const deploy = await store.push('bank', await limitsBundle('limits-c'), { revision: 'limits-c', pushedBy: 'alice' });
    await until('limits-c served', async () => (await revision()) === 'limits-c');
    await store.publishDelta('bank', { data: [{ op: 'upsert', path: '/bank/limits/max', value: 100 }] }, ['bank'], await deltaSigning('bank', keys));
    await store.publishDelta('bank', { data: [{ op: 'upsert', path: '/bank/limits/max', value: 200 }] }, ['bank'], await deltaSigning('bank', keys));
    await until('delta 2 applied', () => sidecar.pavilion.tenants.deltaState('bank')?.sequence === 2);
    const base = sidecar.pavilion.tenants.deltaState('bank')?.base;
    assert.equal(base, deploy.sequence);
    const first = (await store.deltas('bank')).find((d) => d.base === base && d.sequence === 1);
    assert.ok(first !== undefined);
    await assert.rejects(
      sidecar.pavilion.tenants.applyDeltas('bank', [{ ...first, operations: first.patch.data }], 'rebuild'),
      (error: unknown) => error instanceof PavilionError && error.code === ErrorCodes.BUNDLE_DELTA_SEQUENCE,
    );
    assert.equal(sidecar.pavilion.tenants.deltaState('bank')?.sequence, 2);
    assert.equal(await allows(150), true, 'delta 2\'s data still serves');
    assert.equal(sidecar.pavilion.tenants.tenant('bank')?.lastError, undefined, 'a stale rebuild is not a failure of the tenant');
  });
});

describe('a delta whose application fails for a reason that may pass', () => {
  test('is applied once the engine takes it again, with no further delta to prompt it', async () => {
    await store.push('bank', await limitsBundle('limits-t'), { revision: 'limits-t', pushedBy: 'alice' });
    await until('limits-t served', async () => (await revision()) === 'limits-t');
    const tenants = sidecar.pavilion.tenants;
    await store.publishDelta('bank', { data: [{ op: 'upsert', path: '/bank/limits/max', value: 100 }] }, ['bank'], await deltaSigning('bank', keys));
    await until('delta 1 applied', () => tenants.deltaState('bank')?.sequence === 1);
    // the next application fails as an overloaded engine fails it
    const applyDeltas = tenants.applyDeltas.bind(tenants);
    let failed = 0;
    tenants.applyDeltas = async (...args: Parameters<TenantManager['applyDeltas']>) => {
      if (failed++ === 0) throw new PavilionError(ErrorCodes.EVAL_OVERLOADED, 'every evaluation worker is busy');
      return applyDeltas(...args);
    };
    try {
      await store.publishDelta('bank', { data: [{ op: 'upsert', path: '/bank/limits/max', value: 200 }] }, ['bank'], await deltaSigning('bank', keys));
      await until('delta 2 applied on a later try', () => tenants.deltaState('bank')?.sequence === 2, 20_000);
      assert.ok(failed >= 2, 'the first try failed, a later one applied it');
      assert.equal(await allows(150), true, 'delta 2\'s data serves');
    } finally {
      tenants.applyDeltas = applyDeltas;
    }
  });
});

describe('a resync that cannot read a tenant\'s pointer', () => {
  test('says so in the distribution status and runs again until it reads it', async () => {
    const current = NatsBundleStore.prototype.current;
    let reads = 0;
    // the sidecar's reads (not this test's publisher's): the first one times out
    NatsBundleStore.prototype.current = async function (this: NatsBundleStore, tenant: string) {
      if (this !== store && reads++ === 0) throw new PavilionError(ErrorCodes.DISTRIBUTION_UNAVAILABLE, 'reading the pointer timed out');
      return current.call(this, tenant);
    };
    try {
      // the resync's retry waits reconnectWaitMs first: long enough to see the failure in status
      const fresh = await startOnNats('sidecar-resync', { reconnectWaitMs: 1_000, reconnectJitterMs: 0 });
      try {
        const status = (): Record<string, unknown> => (fresh.pavilion.distribution?.status().details ?? {}) as Record<string, unknown>;
        await until('the failed read shows', () => /resynchronising: the pointers of 1 tenant\(s\) could not be read, tried again shortly: bank: .*timed out/.test(String(status()['lastError'])), 5_000);
        await until('the resync ran again and read the pointer', () => reads >= 2, 20_000);
        await until('nothing left to report', () => status()['lastError'] === undefined && status()['lastSync'] !== undefined);
      } finally {
        await fresh.stop();
      }
    } finally {
      NatsBundleStore.prototype.current = current;
    }
  });
});

describe('a pointer bucket made again', () => {
  test('a pointer numbered below the applied deploy, naming other bytes, is reported on the tenant (pushes up to that number would be ignored without a word)', async () => {
    const own = await startNats();
    const config = parseConfig({ nats: { servers: [own.url], name: 'test-publisher-bucket' } }).nats as NatsConfig;
    let publisher = new NatsBundleStore(await connectNats(config), config);
    let side: RunningPavilion | undefined;
    try {
      for (const rev of ['b1', 'b2', 'b3']) await publisher.push('bank', await limitsBundle(rev), { revision: rev, pushedBy: 'alice' });
      side = await startOnNats('sidecar-bucket', { servers: [own.url] });
      const running = side;
      await until('b3 served', async () => (await revision(running.url)) === 'b3');
      const { jetstreamManager } = await import('@nats-io/jetstream');
      await (await jetstreamManager(publisher.nc)).streams.delete('KV_pavilion-bundles');
      await publisher.close();
      publisher = new NatsBundleStore(await connectNats(config), config);
      await publisher.push('bank', await limitsBundle('again'), { revision: 'again', pushedBy: 'alice' });
      await until('the tenant says the pointer went back', () => /deploy number went back from 3 to 1 \(the pointer bucket was made again\?\)/.test(running.pavilion.tenants.tenant('bank')?.lastError?.message ?? ''), 30_000);
      assert.equal(running.pavilion.tenants.tenant('bank')?.lastError?.code, ErrorCodes.BUNDLE_POINTER_INVALID);
      assert.equal(await revision(running.url), 'b3', 'deploy 3 keeps serving');
      // as the report says: pushes past deploy 3 of the new bucket are taken
      for (const rev of ['again-2', 'again-3', 'again-4']) await publisher.push('bank', await limitsBundle(rev), { revision: rev, pushedBy: 'alice' });
      await until('deploy 4 of the new bucket served', async () => (await revision(running.url)) === 'again-4', 20_000);
    } finally {
      await side?.stop();
      await publisher.close();
      await own.stop();
    }
  });
});

/** A sidecar on the test's NATS keeping its last known good in `persistDirectory` (restartable on it). */
function startPersisting(id: string, persistDirectory: string): Promise<RunningPavilion> {
  return startOnNats(id, {}, { persistDirectory });
}

describe('deltas published while a sidecar is away', () => {
  test('deltas published while a sidecar is stopped are applied when it starts again on its persisted revision of the same deploy', async () => {
    const start = (id: string): Promise<RunningPavilion> => startPersisting(id, join(dir, 'persisted-away'));
    const deploy = await store.push('bank', await limitsBundle('away'), { revision: 'away', pushedBy: 'alice' });
    let away = await start('sidecar-away');
    try {
      await until('the deploy taken', () => away.pavilion.tenants.deltaState('bank')?.base === deploy.sequence);
      await store.publishDelta('bank', { data: [{ op: 'upsert', path: '/bank/limits/max', value: 20 }] }, ['bank'], await deltaSigning('bank', keys));
      await until('delta 1 applied', () => away.pavilion.tenants.deltaState('bank')?.sequence === 1);
    } finally {
      await away.stop();
    }
    await store.publishDelta('bank', { data: [{ op: 'upsert', path: '/bank/limits/max', value: 30 }] }, ['bank'], await deltaSigning('bank', keys));
    await store.publishDelta('bank', { data: [{ op: 'upsert', path: '/bank/limits/max', value: 40 }] }, ['bank'], await deltaSigning('bank', keys));
    away = await start('sidecar-away-again');
    try {
      // its last known good is the current deploy: kept (not downloaded again), and confirmed by the resync
      assert.equal(away.pavilion.tenants.tenant('bank')?.origin?.sequence, deploy.sequence, 'serving its last known good, the current deploy');
      await until('deltas 1-3 applied', () => away.pavilion.tenants.deltaState('bank')?.sequence === 3);
      assert.deepEqual(away.pavilion.tenants.tenant('bank')?.origin, { kind: 'source', sequence: deploy.sequence }, 'the source names that deploy: no longer reported as persisted');
      assert.equal(await allows(35, away.url), true, 'delta 3\'s data serves');
      assert.equal(away.pavilion.tenants.tenant('bank')?.lastError, undefined);
    } finally {
      await away.stop();
    }
  });

  test('a malformed last message on the delta subject does not stall the catch-up: the deltas before it are applied', async () => {
    const start = (id: string): Promise<RunningPavilion> => startPersisting(id, join(dir, 'persisted-malformed'));
    const deploy = await store.push('bank', await limitsBundle('malformed'), { revision: 'malformed', pushedBy: 'alice' });
    let away = await start('sidecar-malformed');
    try {
      await until('the deploy taken', () => away.pavilion.tenants.deltaState('bank')?.base === deploy.sequence);
    } finally {
      await away.stop();
    }
    await store.publishDelta('bank', { data: [{ op: 'upsert', path: '/bank/limits/max', value: 30 }] }, ['bank'], await deltaSigning('bank', keys));
    await store.publishDelta('bank', { data: [{ op: 'upsert', path: '/bank/limits/max', value: 40 }] }, ['bank'], await deltaSigning('bank', keys));
    const { jetstream, jetstreamManager } = await import('@nats-io/jetstream');
    await jetstream(store.nc).publish(store.deltaSubject('bank'), Buffer.from(JSON.stringify({ v: 1, tenant: 'bank', base: deploy.sequence, sequence: 3, roots: ['bank'], patch: { data: [] }, signatures: [] })));
    away = await start('sidecar-malformed-again');
    try {
      await until('deltas 1-2 applied', () => away.pavilion.tenants.deltaState('bank')?.sequence === 2);
      assert.equal(await allows(35, away.url), true, 'delta 2\'s data serves');
      // nor does it block the next publish, which follows the last good delta
      const next = await store.publishDelta('bank', { data: [{ op: 'upsert', path: '/bank/limits/max', value: 50 }] }, ['bank'], await deltaSigning('bank', keys));
      assert.equal(next.sequence, 3);
      await until('delta 3 applied', () => away.pavilion.tenants.deltaState('bank')?.sequence === 3);
    } finally {
      await away.stop();
      // the next tests publish on this subject: no malformed last message for them
      await (await jetstreamManager(store.nc)).streams.purge(store.deltaStream, { filter: store.deltaSubject('bank') });
    }
  });
});

describe('transient failures are retried', () => {
  test('a pointer whose object is not in the store yet is retried and served once the object appears', async () => {
    const before = await revision();
    const late = await limitsBundle('late');
    const digest = sha256Hex(late);
    const pointer: BundlePointer = {
      v: 1, tenant: 'bank', revision: 'late', object: digest, digest, size_bytes: late.length,
      action: 'push', pushed_by: 'alice', pushed_at: new Date().toISOString(),
    };
    await (await store.pointers()).put('bank', encodePointer(pointer));
    await until('object missing', () => sidecar.pavilion.tenants.tenant('bank')?.lastError?.code === ErrorCodes.BUNDLE_REVISION_UNKNOWN);
    assert.equal(await revision(), before, 'the active revision keeps serving');
    await store.upload('bank', late, 'late');
    await until('late served after a retry', async () => (await revision()) === 'late');
  });

  test('a transient failure that outlasts the old retry budget (8 tries) is still retried, and the deploy served once it clears', { timeout: 90_000 }, async () => {
    // reconnectWaitMs 10: the 9th try (the old budget: 1 + 8 retries) comes about 2.5 s in, the 10th about 5 s
    const patient = await startOnNats('sidecar-patient', { reconnectWaitMs: 10, reconnectJitterMs: 10 });
    try {
      await until('the current deploy served', async () => (await revision(patient.url)) === (await revision()));
      let tries = 0;
      const tenants = patient.pavilion.tenants;
      const reportFailure = tenants.reportFailure.bind(tenants);
      tenants.reportFailure = (tenant, error) => {
        if (error instanceof PavilionError && error.code === ErrorCodes.BUNDLE_REVISION_UNKNOWN) tries++;
        return reportFailure(tenant, error);
      };
      const later = await limitsBundle('later');
      const digest = sha256Hex(later);
      await (await store.pointers()).put('bank', encodePointer({
        v: 1, tenant: 'bank', revision: 'later', object: digest, digest, size_bytes: later.length,
        action: 'push', pushed_by: 'alice', pushed_at: new Date().toISOString(),
      }));
      await until('a 10th try of the missing object', () => tries >= 10, 30_000);
      await store.upload('bank', later, 'later');
      await until('later served after the object appeared', async () => (await revision(patient.url)) === 'later', 45_000);
    } finally {
      await patient.stop();
    }
  });

  test('an exception escaping a deploy\'s activation does not wedge the tenant: its next deploy is served', async () => {
    const counter = sidecar.pavilion.metrics.distributionUpdates;
    const inc = counter.inc.bind(counter);
    let thrown = 0;
    counter.inc = ((...args: Parameters<typeof counter.inc>) => {
      const labels = args[0] as Record<string, unknown> | undefined;
      if (typeof labels === 'object' && labels?.['outcome'] === ErrorCodes.BUNDLE_SIGNATURE_MISSING && thrown === 0) {
        thrown++;
        throw new Error('metrics backend down');
      }
      inc(...args);
    }) as typeof counter.inc;
    try {
      const { data: _data, ...withoutData } = limitsFixture('unsigned');
      const unsigned = await buildFixtureBundle(withoutData);
      await store.push('bank', unsigned, { revision: 'unsigned', pushedBy: 'mallory' });
      await until('the refusal path threw', () => thrown === 1);
      await store.push('bank', await limitsBundle('after-throw'), { revision: 'after-throw', pushedBy: 'alice' });
      await until('the next deploy served', async () => (await revision()) === 'after-throw');
    } finally {
      counter.inc = inc;
    }
  });

  test('an untyped error inside an activation (not the bundle\'s doing) is retried, and the deploy served', async () => {
    const engine = sidecar.pavilion.engine;
    const load = engine.load.bind(engine);
    let calls = 0;
    engine.load = async (...args: Parameters<typeof engine.load>) => {
      if (calls++ === 0) throw new TypeError('a defect, not the bundle');
      return load(...args);
    };
    try {
      await store.push('bank', await limitsBundle('after-defect'), { revision: 'after-defect', pushedBy: 'alice' });
      await until('after-defect served on a later try', async () => (await revision()) === 'after-defect', 20_000);
      assert.ok(calls >= 2);
    } finally {
      engine.load = load;
    }
  });

  test('classification: wrong test results, vectors that time out or trap, signatures and replays are final; overload, missing objects are not', () => {
    const testsFailed = (failed: Array<Record<string, unknown>>): PavilionError =>
      new PavilionError(ErrorCodes.BUNDLE_TESTS_FAILED, 'tests failed', { details: { failed, total: failed.length } });
    assert.equal(isFinal(testsFailed([{ name: 'a', path: 'p', expected: true, actual: false }])), true);
    assert.equal(isFinal(testsFailed([{ name: 'a', path: 'p', error: 'overloaded', code: ErrorCodes.EVAL_OVERLOADED }, { name: 'b', path: 'p', expected: 1, actual: 2 }])), true);
    assert.equal(isFinal(testsFailed([{ name: 'a', path: 'p', error: 'evaluation queue is full', code: ErrorCodes.EVAL_OVERLOADED }])), false);
    // a vector that loops or traps does so on every attempt: retrying would only restart workers
    assert.equal(isFinal(testsFailed([{ name: 'a', path: 'p', error: 'timed out', code: ErrorCodes.EVAL_TIMEOUT }])), true);
    assert.equal(isFinal(testsFailed([{ name: 'a', path: 'p', error: 'trap', code: ErrorCodes.EVAL_TRAP }])), true);
    for (const code of [ErrorCodes.BUNDLE_SIGNATURE_INVALID, ErrorCodes.BUNDLE_REPLAYED, ErrorCodes.BUNDLE_DIGEST_MISMATCH, ErrorCodes.BUNDLE_ROOTS_FOREIGN, ErrorCodes.BUNDLE_CORRUPT]) {
      assert.equal(isFinal(new PavilionError(code, code)), true, code);
    }
    for (const code of [ErrorCodes.EVAL_OVERLOADED, ErrorCodes.EVAL_TIMEOUT, ErrorCodes.EVAL_TRAP, ErrorCodes.BUNDLE_REVISION_UNKNOWN, ErrorCodes.DISTRIBUTION_UNAVAILABLE, ErrorCodes.ENGINE_STOPPED]) {
      assert.equal(isFinal(new PavilionError(code, code)), false, code);
    }
    assert.equal(isFinal(new Error('socket closed')), false);
  });
});

describe('reading stored deltas', () => {
  test('a read whose deltas are purged between the lookup and the read ends, and leaves no consumer behind', async () => {
    const { jetstream, jetstreamManager } = await import('@nats-io/jetstream');
    const subject = store.deltaSubject('ledger');
    const other = await connectNats(natsConfig);
    const jsm = await jetstreamManager(other);
    try {
      for (let round = 0; round < 5; round++) {
        for (let sequence = 1; sequence <= 3; sequence++) {
          await jetstream(store.nc).publish(subject, Buffer.from(JSON.stringify({ v: 1, tenant: 'ledger', base: 1, sequence, roots: ['ledger'], patch: { data: [] } })));
        }
        // purge the tenant's deltas as soon as the reader has looked its last one up
        const spy = other.subscribe(`$JS.API.STREAM.MSG.GET.${store.deltaStream}`, {
          max: 1,
          callback: () => void jsm.streams.purge(store.deltaStream, { filter: subject }),
        });
        await other.flush();
        let timer: NodeJS.Timeout | undefined;
        const read = await Promise.race([
          store.deltas('ledger').then((d) => d.length, (error: unknown) => (error as PavilionError).code),
          new Promise<string>((resolve) => { timer = setTimeout(() => resolve('still reading'), natsConfig.fetchTimeoutMs + 3_000); }),
        ]);
        clearTimeout(timer);
        spy.unsubscribe();
        // it ends: with nothing (purged under it), refused as unavailable, or - the purge is
        // asynchronous to the lookup it follows - with all three when it read before the purge landed
        assert.ok(read === 0 || read === 3 || read === ErrorCodes.DISTRIBUTION_UNAVAILABLE, `round ${round}: ${String(read)}`);
      }
      const left = [];
      for await (const info of jsm.consumers.list(store.deltaStream)) {
        if ((info.config.filter_subjects ?? [info.config.filter_subject]).includes(subject)) left.push(info.name);
      }
      assert.deepEqual(left, [], 'every replay consumer was deleted');
    } finally {
      await other.close();
    }
  });
});

describe('a watch that keeps failing', () => {
  // the delta stream of prefix `blocked` cannot be created: another stream holds its subjects
  let blocked: RunningPavilion;
  let blockedStopped = false;

  before(async () => {
    await (await (await import('@nats-io/jetstream')).jetstreamManager(store.nc)).streams.add({ name: 'BLOCKER', subjects: ['blocked.delta.>'] });
    blocked = await startOnNats('sidecar-blocked', { subjectPrefix: 'blocked', reconnectJitterMs: 10 });
  });

  after(async () => {
    if (!blockedStopped) await blocked?.stop();
  });

  test('shows in status as WARN with its code, though the connection is up', async () => {
    await until('status WARN', () => blocked.pavilion.distribution?.status().state === 'WARN');
    const status = blocked.pavilion.distribution?.status();
    assert.equal(status?.details?.['connection'], 'connected');
    assert.equal(status?.details?.['code'], ErrorCodes.DISTRIBUTION_UNAVAILABLE, JSON.stringify(status));
    assert.match(status?.message ?? '', /watching deltas/);
    // pointers still move: the pointer watch is not the failing one
    assert.equal(await revision(blocked.url), await revision());
  });

  test('is started again with doubling backoff, not every reconnectWaitMs', async () => {
    let attempts = 0;
    const spy = store.nc.subscribe('$JS.API.STREAM.CREATE.BLOCKED_DELTAS', { callback: () => void attempts++ });
    await store.nc.flush();
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    spy.unsubscribe();
    // every 50-60 ms would be about 50 in 3 s; with doubling from 50 ms, at most a handful
    assert.ok(attempts <= 15, `${attempts} attempts in 3 s`);
  });

  test('nothing runs after stop(): no resync from the watch loop', async () => {
    let resyncs = 0;
    const tenants = blocked.pavilion.tenants;
    const ids = tenants.ids.bind(tenants);
    let stopped = false;
    tenants.ids = () => {
      if (stopped) resyncs++;
      return ids();
    };
    blockedStopped = true;
    await blocked.stop();
    stopped = true;
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    assert.equal(resyncs, 0);
  });
});

describe('lifecycle without a server', () => {
  // in its own process: counting the timers of this one raced the other tests' timers
  test('stop() while the first connection is waiting to retry leaves no timer holding the process: it exits by itself', async () => {
    const script = join(REPO_ROOT, 'test', 'harness', 'scripts', 'distribution-stop.ts');
    const child = spawn(process.execPath, ['--import', 'tsx', script, String(await freePort())], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString(); });
    child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString(); });
    // generous: the retry it must not wait for is 10 minutes away
    const exited = await new Promise<number | null | 'still running'>((resolve) => {
      const timer = setTimeout(() => resolve('still running'), 30_000);
      child.once('exit', (code) => {
        clearTimeout(timer);
        resolve(code);
      });
    });
    if (exited === 'still running') child.kill('SIGKILL');
    assert.equal(exited, 0, `the process did not exit by itself after stop(): ${output}`);
    assert.match(output, /state WARN/, 'the first connection had failed and was waiting to retry');
  });
});
