/** What reached the decision stream (JetStream), for the benchmarks that count lost events. */
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';

/** The stream the sidecar's decision forwarder creates (`<subjectPrefix>.decisions.>`). */
export const DECISION_STREAM = 'PAVILION_DECISIONS';

/** Every Nats-Msg-Id (= decision id) in the stream. */
export async function streamDecisionIds(natsUrl: string): Promise<{ ids: Set<string>; messages: number }> {
  const nc = await connect({ servers: [natsUrl], reconnect: false, timeout: 2000 });
  const ids = new Set<string>();
  try {
    // no stream yet (the case runs first, BENCH_AUDIT_CASES): nothing in it
    const info = await (await jetstreamManager(nc)).streams.info(DECISION_STREAM).catch((error: unknown) => {
      if (/not found/i.test(String(error))) return undefined;
      throw error;
    });
    if (info === undefined) return { ids, messages: 0 };
    const total = info.state.messages;
    if (total === 0) return { ids, messages: 0 };
    const consumer = await jetstream(nc).consumers.get(DECISION_STREAM);
    const messages = await consumer.consume({ max_messages: 1000 });
    let seen = 0;
    for await (const message of messages) {
      ids.add(message.headers?.get('Nats-Msg-Id') ?? '');
      if (++seen >= total) break;
    }
    return { ids, messages: total };
  } finally {
    await nc.close();
  }
}
