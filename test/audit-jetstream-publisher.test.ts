/**
 * The forwarder's JetStream publisher against a real nats-server: acknowledgements with their
 * stream sequence, `Nats-Msg-Id` deduplication reported as `duplicate`, and what each failure
 * gets - no stream on the subject, a connection that closes with messages in flight, a closed
 * publisher - each a rejected promise at once, never a hang until the timeout - and a message no
 * one answers, which fails at its timeout even when the wall clock is stepped back meanwhile.
 */
import assert from 'node:assert/strict';
import { after, before, describe, mock, test } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { JetStreamPublisher } from '../sidecar/src/audit/index.ts';
import { parseConfig } from '../sidecar/src/config/index.ts';
import { connectNats } from '../sidecar/src/distribution/index.ts';
import { startNats, type RunningNats } from './harness/nats-server.ts';

describe('JetStreamPublisher', () => {
  let nats: RunningNats;
  const config = () => parseConfig({ nats: { servers: [nats.url], connectTimeoutMs: 1000 } }).nats!;

  before(async () => {
    nats = await startNats();
    const nc = await connectNats(config(), { reconnect: false });
    await (await jetstreamManager(nc)).streams.add({ name: 'PUBTEST', subjects: ['pubtest.>'] });
    await nc.close();
  });

  after(async () => {
    await nats?.stop();
  });

  /** A publisher on its own connection for one test; both closed after it. */
  async function withPublisher(timeoutMs: number, use: (publisher: JetStreamPublisher, nc: NatsConnection) => Promise<void>): Promise<void> {
    const nc = await connectNats(config(), { reconnect: false });
    const publisher = new JetStreamPublisher(nc, { timeoutMs });
    try {
      await use(publisher, nc);
    } finally {
      publisher.close();
      await nc.close();
    }
  }

  test('acknowledged in order with the stream sequence; a repeated message id is a duplicate, not stored twice', async () => {
    await withPublisher(5000, async (publisher, nc) => {
      const acks = await Promise.all(Array.from({ length: 500 }, (_, i) => publisher.publish('pubtest.a', new TextEncoder().encode(`m${i}`), `id-${i}`)));
      assert.deepEqual(acks.map((a) => a.seq), Array.from({ length: 500 }, (_, i) => i + 1));
      assert.ok(acks.every((a) => !a.duplicate));
      const again = await publisher.publish('pubtest.a', new TextEncoder().encode('m0 again'), 'id-0');
      assert.equal(again.duplicate, true);
      const info = await (await jetstreamManager(nc)).streams.info('PUBTEST');
      assert.equal(info.state.messages, 500);
    });
  });

  test('a subject no stream listens on: rejected at once (no responders), not after the timeout', async () => {
    await withPublisher(60_000, async (publisher) => {
      const started = Date.now();
      await assert.rejects(publisher.publish('nostream.x', new Uint8Array([1]), 'x'), /did not take the message: 503/);
      assert.ok(Date.now() - started < 5000);
    });
  });

  test('a message no one acknowledges fails at its timeout (no_ack), on the monotonic clock: a wall clock stepped back an hour does not hold it', async () => {
    await withPublisher(300, async (publisher, nc) => {
      const silent = nc.subscribe('silent.>'); // a responder that never answers: no 503, no PubAck
      mock.timers.enable({ apis: ['Date'], now: Date.now() });
      try {
        const started = performance.now();
        const publishing = publisher.publish('silent.x', new Uint8Array([1]), 'silent-1');
        mock.timers.setTime(Date.now() - 3_600_000);
        const outcome = await Promise.race([
          publishing.then(() => 'acked', (error: unknown) => error),
          new Promise((resolve) => setTimeout(() => resolve('still waiting after 5 s'), 5000)),
        ]);
        assert.ok(outcome instanceof Error, String(outcome));
        assert.match(outcome.message, /no acknowledgement from JetStream within 300 ms/);
        assert.ok(performance.now() - started >= 300);
      } finally {
        mock.timers.reset();
        silent.unsubscribe();
      }
    });
  });

  test('the connection closing with messages in flight, and a closed publisher: rejected at once', async () => {
    const nc = await connectNats(config(), { reconnect: false });
    const publisher = new JetStreamPublisher(nc, { timeoutMs: 60_000 });
    const inFlight = Array.from({ length: 200 }, (_, i) => publisher.publish('pubtest.b', new Uint8Array([i & 0xff]), `b-${i}`).then(() => 'acked', () => 'rejected'));
    await nc.close();
    const outcomes = await Promise.all(inFlight);
    assert.ok(outcomes.every((o) => o === 'acked' || o === 'rejected'), 'every publish settled');
    await assert.rejects(publisher.publish('pubtest.b', new Uint8Array([1]), 'late'), /closed/);
  });
});
