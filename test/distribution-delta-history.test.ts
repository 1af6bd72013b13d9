/**
 * A deploy's delta history over a real nats-server with JetStream and real signed bundles
 * (OPA delta bundle semantics: deltas 1, 2, 3, ... of one deploy apply in order on top of
 * its snapshot). Losing stored deltas - a stream age limit, a purge - must never make a
 * deploy's numbering start over, nor let a sidecar serve a history it does not have as if
 * it were complete:
 *
 * - the next number survives the loss of every stored delta (it is kept in the tenant's
 *   delta record beside the pointer, not derived from what the stream still holds);
 * - the delta stream keeps deltas with no age limit; a stream from an earlier version
 *   that expires them is fixed before the next publish, one that discards old messages is
 *   refused with ERR_DISTRIBUTION_DELTA_RETENTION;
 * - a sidecar that starts after the deploy's deltas were lost reports
 *   ERR_BUNDLE_DELTA_SEQUENCE and serves the snapshot, holding later deltas back;
 * - a delta numbered again with other content (what the earlier publisher did after
 *   expiry) is a conflict (ERR_BUNDLE_DELTA_CONFLICT), reported at once; the data is
 *   rebuilt from the snapshot with the stream's deltas as soon as the stream holds more
 *   than were applied, and never are the new deltas applied on top of the old.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DiscardPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { signDelta, type PatchOperation } from '../sidecar/src/bundles/index.ts';
import { parseConfig, type NatsConfig } from '../sidecar/src/config/index.ts';
import { NatsBundleStore, connectNats } from '../sidecar/src/distribution/index.ts';
import { ErrorCodes, PavilionError } from '../sidecar/src/lib/errors.ts';
import { buildFixtureBundle } from './harness/fixtures.ts';
import { startNats, type RunningNats } from './harness/nats-server.ts';
import { until } from './harness/wait.ts';
import { deltaSigning, post, signForTest, startPavilion, type RunningPavilion } from './harness/pavilion-harness.ts';

const MODULE = (rev: string): string =>
  `package bank.authz\n\nallow if input.amount <= data.bank.limits.max\n\nrev := "${rev}"\n\nmax := data.bank.limits.max\n\nflag := data.bank.limits.flag\n`;
const DAY_NS = 24 * 3600 * 1_000_000_000;

let nats: RunningNats;
let dir: string;
let keys: string;
let natsConfig: NatsConfig;
let store: NatsBundleStore;
let sidecar: RunningPavilion;

/** The pointer bucket key of bank's delta record (`deltaRecordKey('bank')`). */
const RECORD_KEY = 'bank.deltas';

async function deltaRecord(): Promise<{ base?: number; sequence?: number } | undefined> {
  const entry = await (await store.pointers()).get(RECORD_KEY);
  return entry === null || entry.operation !== 'PUT' ? undefined : (JSON.parse(entry.string()) as { base?: number; sequence?: number });
}

async function bundle(rev: string): Promise<Buffer> {
  return signForTest('bank', await buildFixtureBundle({
    modules: { 'bank/authz.rego': MODULE(rev) },
    entrypoints: ['bank/authz/allow', 'bank/authz/rev', 'bank/authz/max', 'bank/authz/flag'],
    roots: ['bank'],
    revision: rev,
    data: { 'bank/limits': { max: 10 } },
  }), keys);
}

async function query(rule: string, url = sidecar.url): Promise<unknown> {
  return (await post(`${url}/v1/data/bank/authz/${rule}`, { input: {} }, { 'x-pavilion-tenant': 'bank' })).body['result'];
}

/** A new deploy of bank, served by the test's sidecar. */
async function deploy(rev: string): Promise<number> {
  const entry = await store.push('bank', await bundle(rev), { revision: rev, pushedBy: 'alice' });
  await until(`${rev} served`, async () => (await query('rev')) === rev && sidecar.pavilion.tenants.deltaState('bank')?.base === entry.sequence);
  return entry.sequence;
}

async function publish(operations: PatchOperation[]): Promise<number> {
  return (await store.publishDelta('bank', { data: operations }, ['bank'], await deltaSigning('bank', keys))).sequence;
}

/** What a stream age limit does to bank's deltas after a week (and an operator's purge at once). */
async function loseStoredDeltas(): Promise<void> {
  await (await jetstreamManager(store.nc)).streams.purge(store.deltaStream, { filter: store.deltaSubject('bank') });
}

/** Publish a signed delta as the earlier publisher did: straight to the stream, no delta record. */
async function publishRaw(base: number, sequence: number, operations: PatchOperation[]): Promise<void> {
  const content = { tenant: 'bank', base, sequence, roots: ['bank'], operations };
  const signatures = await signDelta(content, await deltaSigning('bank', keys));
  await jetstream(store.nc).publish(store.deltaSubject('bank'), Buffer.from(JSON.stringify({ v: 1, tenant: 'bank', base, sequence, roots: ['bank'], patch: { data: operations }, signatures })));
}

function startSidecar(id: string): Promise<RunningPavilion> {
  return startPavilion({
    config: {
      labels: { id },
      tenants: [{ id: 'bank' }],
      bundles: { source: 'nats', keysDirectory: keys },
      nats: { servers: [nats.url], connectTimeoutMs: 3_000, reconnectWaitMs: 50, reconnectJitterMs: 50, statusIntervalMs: 200 },
    },
  });
}

before(async () => {
  nats = await startNats();
  dir = await mkdtemp(join(tmpdir(), 'pavilion-delta-history-'));
  keys = join(dir, 'keys');
  natsConfig = parseConfig({ nats: { servers: [nats.url], name: 'test-publisher', fetchTimeoutMs: 2_000 } }).nats as NatsConfig;
  store = new NatsBundleStore(await connectNats(natsConfig), natsConfig);
  await store.push('bank', await bundle('first'), { revision: 'first', pushedBy: 'alice' });
  sidecar = await startSidecar('sidecar-history');
  await until('first served', async () => (await query('rev')) === 'first');
});

after(async () => {
  await sidecar?.stop();
  await store?.close();
  await nats?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('the publisher never numbers a deploy\'s deltas again', () => {
  test('after every stored delta of the deploy is lost, the next delta continues the numbering (4, not 1) and is recorded', async () => {
    const base = await deploy('numbering');
    assert.deepEqual([await publish([{ op: 'upsert', path: '/bank/limits/max', value: 20 }]), await publish([{ op: 'upsert', path: '/bank/limits/max', value: 30 }]), await publish([{ op: 'upsert', path: '/bank/limits/max', value: 40 }])], [1, 2, 3]);
    await loseStoredDeltas();
    assert.equal(await publish([{ op: 'upsert', path: '/bank/limits/max', value: 50 }]), 4);
    const record = await deltaRecord();
    assert.deepEqual([record?.base, record?.sequence], [base, 4]);
    // the sidecar that applied 1-3 applies 4 on top of them
    await until('delta 4 applied', async () => (await query('max')) === 50);
    assert.equal(sidecar.pavilion.tenants.deltaState('bank')?.sequence, 4);
  });

  test('deltas published by an earlier version (no record) are continued from the stream\'s last delta of the deploy', async () => {
    const base = await deploy('earlier-version');
    await publishRaw(base, 1, [{ op: 'upsert', path: '/bank/limits/max', value: 20 }]);
    await publishRaw(base, 2, [{ op: 'upsert', path: '/bank/limits/max', value: 30 }]);
    assert.notEqual((await deltaRecord())?.base, base, 'no record for this deploy yet');
    assert.equal(await publish([{ op: 'upsert', path: '/bank/limits/max', value: 40 }]), 3);
    await until('deltas 1-3 applied', async () => (await query('max')) === 40);
  });
});

describe('the delta stream keeps deltas', () => {
  test('a new delta stream has no age limit', async () => {
    const config = parseConfig({ nats: { servers: [nats.url], name: 'test-fresh', subjectPrefix: 'fresh' } }).nats as NatsConfig;
    const fresh = new NatsBundleStore(await connectNats(config), config);
    try {
      await fresh.ensureDeltaStream();
      const info = await (await jetstreamManager(store.nc)).streams.info(fresh.deltaStream);
      assert.equal(info.config.max_age, 0);
    } finally {
      await fresh.close();
    }
  });

  test('a delta stream that expires deltas after 7 days (made by an earlier version) loses that limit before the next publish', async () => {
    const config = parseConfig({ nats: { servers: [nats.url], name: 'test-legacy', subjectPrefix: 'legacy' } }).nats as NatsConfig;
    const legacy = new NatsBundleStore(await connectNats(config), config);
    const jsm = await jetstreamManager(store.nc);
    try {
      await jsm.streams.add({ name: legacy.deltaStream, subjects: ['legacy.delta.>'], max_age: 7 * DAY_NS, duplicate_window: 120 * 1_000_000_000 });
      await legacy.publishDelta('bank', { data: [{ op: 'upsert', path: '/bank/limits/max', value: 1 }] }, ['bank']);
      assert.equal((await jsm.streams.info(legacy.deltaStream)).config.max_age, 0);
    } finally {
      await legacy.close();
    }
  });

  test('a delta stream that discards old messages at a limit -> ERR_DISTRIBUTION_DELTA_RETENTION, nothing published', async () => {
    const config = parseConfig({ nats: { servers: [nats.url], name: 'test-limited', subjectPrefix: 'limited' } }).nats as NatsConfig;
    const limited = new NatsBundleStore(await connectNats(config), config);
    const jsm = await jetstreamManager(store.nc);
    try {
      await jsm.streams.add({ name: limited.deltaStream, subjects: ['limited.delta.>'], max_msgs_per_subject: 100, discard: DiscardPolicy.Old });
      await assert.rejects(
        limited.publishDelta('bank', { data: [{ op: 'upsert', path: '/bank/limits/max', value: 1 }] }, ['bank']),
        (error: unknown) => error instanceof PavilionError && error.code === ErrorCodes.DISTRIBUTION_DELTA_RETENTION && /max-age|limit/.test(error.message),
      );
      assert.equal((await jsm.streams.info(limited.deltaStream)).state.messages, 0);
    } finally {
      await limited.close();
    }
  });
});

describe('a sidecar whose deploy\'s delta history is incomplete in the stream', () => {
  test('one that starts after every delta of its deploy was lost reports ERR_BUNDLE_DELTA_SEQUENCE, serves the snapshot, and holds the next delta back', async () => {
    const base = await deploy('lost-history');
    await publish([{ op: 'upsert', path: '/bank/limits/max', value: 20 }]);
    await publish([{ op: 'upsert', path: '/bank/limits/max', value: 30 }]);
    await loseStoredDeltas();
    const late = await startSidecar('sidecar-late');
    try {
      await until('the gap reported', () => late.pavilion.tenants.tenant('bank')?.lastError?.code === ErrorCodes.BUNDLE_DELTA_SEQUENCE);
      const reported = late.pavilion.tenants.tenant('bank')?.lastError;
      assert.deepEqual([reported?.details?.['base'], reported?.details?.['published'], reported?.details?.['next']], [base, 2, 1], JSON.stringify(reported));
      assert.equal(await query('max', late.url), 10, 'the snapshot\'s data serves (as for any detected gap)');
      // delta 3 cannot apply on the snapshot without 1 and 2: held back, the gap still reported
      await publish([{ op: 'upsert', path: '/bank/limits/max', value: 40 }]);
      await until('the sidecar that had 1-2 applied 3', async () => (await query('max')) === 40);
      await until('the late sidecar looked at delta 3', () => late.pavilion.tenants.tenant('bank')?.lastError?.details?.['published'] === 3);
      await late.pavilion.distribution?.settled();
      assert.equal(late.pavilion.tenants.deltaState('bank')?.sequence, 0);
      assert.equal(await query('max', late.url), 10);
      assert.equal(late.pavilion.tenants.tenant('bank')?.lastError?.code, ErrorCodes.BUNDLE_DELTA_SEQUENCE);
    } finally {
      await late.stop();
    }
  });
});

describe('a delta numbered again with other content', () => {
  test('is a conflict (ERR_BUNDLE_DELTA_CONFLICT), reported at once; the data is rebuilt from the snapshot with the stream\'s deltas, never the new deltas on top of the old', async () => {
    const base = await deploy('conflict');
    await publish([{ op: 'upsert', path: '/bank/limits/max', value: 20 }]);
    await publish([{ op: 'upsert', path: '/bank/limits/flag', value: 'old-2' }]);
    await until('old 1-2 applied', async () => (await query('flag')) === 'old-2' && (await query('max')) === 20);
    // the earlier publisher after the stream expired old 1-2: numbering from 1 again, no record
    await loseStoredDeltas();
    await (await store.pointers()).purge(RECORD_KEY);
    await publishRaw(base, 1, [{ op: 'upsert', path: '/bank/limits/max', value: 50 }]);
    await until('the conflict reported', () => sidecar.pavilion.tenants.tenant('bank')?.lastError?.code === ErrorCodes.BUNDLE_DELTA_CONFLICT);
    await publishRaw(base, 2, [{ op: 'upsert', path: '/bank/limits/max', value: 60 }]);
    await publishRaw(base, 3, [{ op: 'upsert', path: '/bank/limits/max', value: 70 }]);
    // the rebuild serves its data a moment before its report is filed: wait for both
    await until('rebuilt from the snapshot with new 1-3, and reported', async () => (await query('max')) === 70
      && sidecar.pavilion.tenants.tenant('bank')?.lastError?.details?.['rebuilt'] === true);
    assert.equal(await query('flag'), undefined, 'nothing of old delta 2 is left');
    const reported = sidecar.pavilion.tenants.tenant('bank')?.lastError;
    assert.equal(reported?.code, ErrorCodes.BUNDLE_DELTA_CONFLICT);
    assert.equal(reported?.details?.['rebuilt'], true, JSON.stringify(reported));
    // and the next delta applies on top of the rebuilt data
    await publishRaw(base, 4, [{ op: 'upsert', path: '/bank/limits/max', value: 80 }]);
    await until('new 4 applied', async () => (await query('max')) === 80);
    assert.equal(await query('flag'), undefined);
    assert.equal(sidecar.pavilion.tenants.deltaState('bank')?.sequence, 4);
    assert.equal(sidecar.pavilion.tenants.tenant('bank')?.lastError, undefined);
  });

  test('the same delta delivered again (same content, even re-signed) is not a conflict', async () => {
    const base = await deploy('redelivery');
    await publish([{ op: 'upsert', path: '/bank/limits/max', value: 20 }]);
    await until('delta 1 applied', async () => (await query('max')) === 20);
    await publishRaw(base, 1, [{ op: 'upsert', path: '/bank/limits/max', value: 20 }]);
    await publish([{ op: 'upsert', path: '/bank/limits/max', value: 30 }]);
    await until('delta 2 applied', async () => (await query('max')) === 30);
    await sidecar.pavilion.distribution?.settled();
    assert.equal(sidecar.pavilion.tenants.tenant('bank')?.lastError, undefined);
  });
});
