/**
 * Reads from a nats-server that stops answering (the process frozen with SIGSTOP: the TCP
 * connection stays up, nothing comes back) end at `nats.fetchTimeoutMs`, not at the client
 * library's own timeouts or never: the deploy history (the replay check and `bundle history`
 * read it) and a bundle download each fail with ERR_DISTRIBUTION_UNAVAILABLE naming the
 * bound, and the same store reads again once the server answers.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { parseConfig, type NatsConfig } from '../sidecar/src/config/index.ts';
import { NatsBundleStore, connectNats } from '../sidecar/src/distribution/index.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { startNats, type RunningNats } from './harness/nats-server.ts';

const FETCH_TIMEOUT_MS = 300;

let nats: RunningNats;
let store: NatsBundleStore;

before(async () => {
  nats = await startNats();
  const config = parseConfig({ nats: { servers: [nats.url], name: 'test-deadlines', fetchTimeoutMs: FETCH_TIMEOUT_MS } }).nats as NatsConfig;
  store = new NatsBundleStore(await connectNats(config), config);
});

after(async () => {
  await store?.close();
  await nats?.stop();
});

describe('a server that stops answering mid-read', () => {
  test(`the history and a download give up after fetchTimeoutMs (${FETCH_TIMEOUT_MS} ms) with ERR_DISTRIBUTION_UNAVAILABLE; the store reads again once the server answers`, async () => {
    const bytes = Buffer.from('the bundle bytes');
    const { pointer } = await store.push('bank', bytes, { revision: 'r1', pushedBy: 'test' });
    assert.equal((await store.history('bank')).length, 1, 'the buckets are open before the server freezes');
    const pid = nats.pid as number;
    process.kill(pid, 'SIGSTOP');
    try {
      const bounded = (error: unknown): boolean => isPavilionError(error, ErrorCodes.DISTRIBUTION_UNAVAILABLE)
        && error.message.includes(`took longer than ${FETCH_TIMEOUT_MS} ms`);
      await assert.rejects(store.history('bank'), bounded, 'the history read');
      await assert.rejects(store.fetch(pointer, 1 << 20), bounded, 'the download');
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    assert.deepEqual((await store.history('bank')).map((e) => e.pointer.revision), ['r1']);
    assert.deepEqual(await store.fetch(pointer, 1 << 20), bytes);
  });
});
