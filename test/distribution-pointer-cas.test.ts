/**
 * The publisher side of distribution against concurrent writers, on a real nats-server with
 * JetStream: a rollback or a promotion moves the pointer only from the deploy it read
 * (compare-and-set), so a push landing in between is never undone without notice
 * (ERR_BUNDLE_POINTER_MOVED, nothing changed); a promotion leaves a shadow staged again
 * meanwhile in place; and a push of bytes whose object was deleted from the store uploads
 * them again instead of pointing every sidecar at a missing object.
 *
 * The interleavings are made by construction, not by timing: a store subclass runs the other
 * writer's push right after the step that reads (history, current pointer) or just before the
 * step that ends the shadow.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Objm } from '@nats-io/obj';
import { parseConfig, type NatsConfig } from '../sidecar/src/config/index.ts';
import { NatsBundleStore, connectNats, type PointerEntry } from '../sidecar/src/distribution/index.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { startNats, type RunningNats } from './harness/nats-server.ts';

let nats: RunningNats;
let natsConfig: NatsConfig;
const stores: NatsBundleStore[] = [];
const connections: Array<{ close(): Promise<void> }> = [];

/** Bytes stand in for bundles: the store is content-addressed and does not open them. */
const bundle = (revision: string): Buffer => Buffer.from(`bundle ${revision} `.repeat(64));

async function open<T extends NatsBundleStore>(make: (nc: Awaited<ReturnType<typeof connectNats>>, config: NatsConfig) => T): Promise<T> {
  const store = make(await connectNats(natsConfig), natsConfig);
  stores.push(store);
  return store;
}

async function push(store: NatsBundleStore, tenant: string, revision: string): Promise<PointerEntry> {
  return store.push(tenant, bundle(revision), { revision, pushedBy: 'alice' });
}

function moved(error: unknown): boolean {
  assert.ok(isPavilionError(error), `expected a PavilionError, got ${String(error)}`);
  assert.equal(error.code, ErrorCodes.BUNDLE_POINTER_MOVED, error.message);
  return true;
}

before(async () => {
  nats = await startNats();
  natsConfig = parseConfig({ nats: { servers: [nats.url], name: 'test-publisher' } }).nats as NatsConfig;
});

after(async () => {
  for (const store of stores) await store.close();
  for (const nc of connections) await nc.close();
  await nats?.stop();
});

describe('pointer moves against concurrent writers', () => {
  test('a push landing between a rollback reading the history and moving the pointer is not undone: ERR_BUNDLE_POINTER_MOVED, the push stays deployed', async () => {
    const other = await open((nc, c) => new NatsBundleStore(nc, c));
    let interleave = true;
    const racing = await open((nc, c) => new (class extends NatsBundleStore {
      override async history(tenant: string): Promise<PointerEntry[]> {
        const read = await super.history(tenant);
        if (interleave) {
          interleave = false;
          await push(other, tenant, 'r3-hotfix'); // lands after the read, before the move
        }
        return read;
      }
    })(nc, c));
    await push(other, 'cas-rollback', 'r1');
    await push(other, 'cas-rollback', 'r2');
    await assert.rejects(racing.rollback('cas-rollback', { pushedBy: 'carol' }), moved);
    assert.equal((await other.current('cas-rollback'))?.pointer.revision, 'r3-hotfix', 'the concurrent push is still deployed');
    // read again, the same rollback goes through (from the hotfix back to r2)
    const back = await racing.rollback('cas-rollback', { pushedBy: 'carol' });
    assert.equal(back.pointer.revision, 'r2');
    assert.equal((await other.current('cas-rollback'))?.sequence, back.sequence);
  });

  test('a promotion that finds the pointer moved since it read it changes nothing: ERR_BUNDLE_POINTER_MOVED, the push deployed and the shadow still staged', async () => {
    const other = await open((nc, c) => new NatsBundleStore(nc, c));
    let interleave = true;
    const racing = await open((nc, c) => new (class extends NatsBundleStore {
      override async current(tenant: string): Promise<PointerEntry | undefined> {
        const read = await super.current(tenant);
        if (interleave) {
          interleave = false;
          await push(other, tenant, 'r2-hotfix');
        }
        return read;
      }
    })(nc, c));
    await push(other, 'cas-promote', 'r1');
    await other.pushShadow('cas-promote', bundle('r2-candidate'), { revision: 'r2-candidate', pushedBy: 'bob' });
    await assert.rejects(racing.promoteShadow('cas-promote', { pushedBy: 'bob' }), moved);
    assert.equal((await other.current('cas-promote'))?.pointer.revision, 'r2-hotfix');
    assert.equal((await other.currentShadow('cas-promote'))?.pointer.revision, 'r2-candidate', 'still staged');
  });

  test('a shadow staged again while a promotion ends the old one stays staged; the promotion itself is done', async () => {
    const other = await open((nc, c) => new NatsBundleStore(nc, c));
    const racing = await open((nc, c) => new (class extends NatsBundleStore {
      override async endShadow(tenant: string, expectedSequence?: number): Promise<void> {
        await other.pushShadow(tenant, bundle('r3-candidate'), { revision: 'r3-candidate', pushedBy: 'erin' });
        return super.endShadow(tenant, expectedSequence);
      }
    })(nc, c));
    await push(other, 'cas-restage', 'r1');
    await other.pushShadow('cas-restage', bundle('r2-candidate'), { revision: 'r2-candidate', pushedBy: 'bob' });
    const promoted = await racing.promoteShadow('cas-restage', { pushedBy: 'bob' });
    assert.equal(promoted.pointer.revision, 'r2-candidate');
    assert.equal((await other.current('cas-restage'))?.pointer.revision, 'r2-candidate');
    assert.equal((await other.currentShadow('cas-restage'))?.pointer.revision, 'r3-candidate', 'the newer shadow was not ended');
  });

  test('a rollback and a promotion with no concurrent writer still work (first deploy included)', async () => {
    const store = await open((nc, c) => new NatsBundleStore(nc, c));
    await store.pushShadow('cas-first', bundle('r1'), { revision: 'r1', pushedBy: 'bob' });
    const first = await store.promoteShadow('cas-first', { pushedBy: 'bob' });
    assert.equal(first.pointer.revision, 'r1', 'a promotion onto a tenant with no deploy yet');
    assert.equal(await store.currentShadow('cas-first'), undefined);
    await push(store, 'cas-first', 'r2');
    assert.equal((await store.rollback('cas-first', { pushedBy: 'carol' })).pointer.revision, 'r1');
  });
});

describe('content-addressed upload', () => {
  test('pushing bytes whose object was deleted uploads them again: the pointer never names a missing object', async () => {
    const store = await open((nc, c) => new NatsBundleStore(nc, c));
    const first = await push(store, 'reupload', 'r1');
    const nc = await connectNats(natsConfig);
    connections.push(nc);
    const objects = await new Objm(nc).open(`${natsConfig.objectBucketPrefix}reupload`);
    await objects.delete(first.pointer.object);
    assert.equal((await objects.info(first.pointer.object))?.deleted, true);
    await push(store, 'reupload', 'r1');
    const info = await objects.info(first.pointer.object);
    assert.equal(info?.deleted, false, 'stored again');
    assert.deepEqual(await store.fetch((await store.current('reupload'))!.pointer, 1 << 20), bundle('r1'));
    // the first deploy's pointer names the deleted object's chunk: read by the object's name instead
    assert.deepEqual(await store.fetch(first.pointer, 1 << 20), bundle('r1'));
  });

  test('pushing bytes already stored reuses their object: the earlier deploy still names a live chunk, and a rollback to it is fetched from that chunk', async () => {
    const store = await open((nc, c) => new NatsBundleStore(nc, c));
    const first = await push(store, 'reuse', 'r1');
    await push(store, 'reuse', 'r2');
    const again = await push(store, 'reuse', 'r1');
    assert.ok(first.pointer.object_nuid !== undefined);
    assert.equal(again.pointer.object_nuid, first.pointer.object_nuid, 'not uploaded again (the digest comparison read the store\'s padded base64url)');
    const back = await store.rollback('reuse', { to: first.sequence, pushedBy: 'oncall' });
    assert.equal(back.pointer.object_nuid, first.pointer.object_nuid);
    assert.deepEqual(await store.fetch(back.pointer, 1 << 20), bundle('r1'));
  });
});
