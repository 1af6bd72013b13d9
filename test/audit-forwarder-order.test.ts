/**
 * The decision forwarder when things go wrong under it (real nats-server, real audit logs):
 * a message the stream refuses while later ones are in flight (at most the window in flight
 * is stored ahead of it, nothing more while it is refused, and nothing twice), and a log
 * recovered to another history than the one its cursor forwarded.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { CURSOR_FILE, DecisionForwarder, SoftwareSigner, type AuditLog } from '../sidecar/src/audit/index.ts';
import { RecordType } from '../sidecar/src/audit/log/index.ts';
import { parseConfig } from '../sidecar/src/config/index.ts';
import { decisionEvent, openLog, readRecords, tempDir, writeRecords } from './audit/fixtures.ts';
import { startNats, type RunningNats } from './harness/nats-server.ts';
import { until } from './harness/wait.ts';

const MINUTE_NS = 60 * 1_000_000_000;

describe('decision forwarder: stream order and no duplicates under failures', () => {
  let nats: RunningNats;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  const cleanup: Array<() => Promise<unknown>> = [];

  before(async () => {
    nats = await startNats();
    nc = await connect({ servers: [nats.url], reconnect: false });
    jsm = await jetstreamManager(nc);
  });

  after(async () => {
    for (const step of cleanup.reverse()) await step().catch(() => undefined);
    await nc?.close().catch(() => undefined);
    await nats?.stop();
  });

  const forwarder = (log: AuditLog, prefix: string, warnings: string[] = []): DecisionForwarder => {
    const f = new DecisionForwarder({
      nats: parseConfig({ nats: { servers: [nats.url], subjectPrefix: prefix, connectTimeoutMs: 500 } }).nats!,
      logs: () => new Map([['bank', log]]),
      maxInFlight: 32,
      retryWaitMs: 20,
      log: (level, message) => {
        if (level === 'warn') warnings.push(message);
      },
    });
    cleanup.push(() => f.stop(2000));
    return f;
  };

  const details = (f: DecisionForwarder): Record<string, unknown> => f.status().details as Record<string, unknown>;

  /** The Nats-Msg-Id of every message in the stream, in stream order. */
  const streamed = async (stream: string): Promise<string[]> => {
    const info = await jsm.streams.info(stream);
    const ids: string[] = [];
    for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
      ids.push((await jsm.streams.getMessage(stream, { seq }))?.header.get('Nats-Msg-Id') ?? '');
    }
    return ids;
  };

  const logIds = (log: AuditLog): string[] => Array.from({ length: log.size }, (_, i) => log.decisionIdAt(i)!);

  const newLog = async (events: number, dir?: string): Promise<AuditLog> => {
    const log = await openLog(dir ?? (await tempDir()), SoftwareSigner.generate(), { fsync: 'never' });
    cleanup.push(() => log.stop(2000));
    for (let n = 0; n < events; n++) await log.append(decisionEvent(n, n === 40 ? { input: { pad: 'x'.repeat(3000) } } : {}));
    return log;
  };

  test('an event the stream refuses (max_msg_size) while later ones are in flight: at most the in-flight window is stored ahead of it, nothing more while it is refused; once the limit is raised every event is stored once', async () => {
    await jsm.streams.add({ name: 'REFUSE_DECISIONS', subjects: ['refuse.decisions.>'], max_msg_size: 2000, duplicate_window: 200_000_000 });
    const log = await newLog(120); // event 40 is over 2000 bytes
    const f = forwarder(log, 'refuse');
    await f.start();
    await until('the refusal reported', () => /size/i.test(String(details(f)['last_error'] ?? '')) && details(f)['state'] === 'retrying');
    const ids = logIds(log);
    const whileRefused = await streamed('REFUSE_DECISIONS');
    await new Promise((resolve) => setTimeout(resolve, 600)); // more retries, each refused again; past the 200 ms duplicate window
    assert.deepEqual(await streamed('REFUSE_DECISIONS'), whileRefused, 'nothing more is sent past the refused event while it is refused');
    assert.deepEqual(whileRefused.slice(0, 40), ids.slice(0, 40));
    const ahead = whileRefused.slice(40);
    assert.ok(ahead.length <= 32, `${ahead.length} stored ahead of it, at most maxInFlight`);
    assert.deepEqual(ahead, ids.slice(41, 41 + ahead.length), 'those in log order');

    await jsm.streams.update('REFUSE_DECISIONS', { max_msg_size: -1 });
    await until('backlog 0', () => details(f)['backlog'] === 0);
    const all = await streamed('REFUSE_DECISIONS');
    assert.deepEqual(all, [...ids.slice(0, 40), ...ahead, ids[40], ...ids.slice(41 + ahead.length)], 'every event once (those stored ahead not again, though past the duplicate window); only the refused one out of place');
  });

  test('a log recovered to a shorter, different history than its cursor forwarded: every leaf of the log reaches the stream once and in order, and the reset is reported', async () => {
    const dir = await tempDir();
    let log = await newLog(100, dir);
    const first = forwarder(log, 'recovered');
    await first.start();
    await until('100 forwarded', () => details(first)['backlog'] === 0);
    await first.stop(2000);
    const before = logIds(log);
    await log.stop(2000);

    // A power loss with fsync 'never': recovery keeps 90 leaves, and new decisions follow.
    const { header, records } = await readRecords(dir);
    const cut = records.findIndex((r) => r.type === RecordType.LEAF && r.index >= 90);
    await writeRecords(dir, header, records.slice(0, cut));
    log = await openLog(dir, SoftwareSigner.generate(), { fsync: 'never' });
    cleanup.push(() => log.stop(2000));
    assert.equal(log.size, 90);
    for (let n = 1000; n < 1020; n++) await log.append(decisionEvent(n));
    assert.equal(log.size, 110, 'the log grew past the cursor (leaf 100) again');

    const warnings: string[] = [];
    const second = forwarder(log, 'recovered', warnings);
    await second.start();
    await until('the 20 new leaves forwarded', () => details(second)['backlog'] === 0 && details(second)['published'] === 20);
    const ids = logIds(log);
    const all = await streamed('RECOVERED_DECISIONS');
    assert.deepEqual(all.filter((id) => ids.includes(id)), ids, 'every leaf of the log once, in log order');
    assert.deepEqual(all.slice(0, 100), before, 'what was forwarded before stays as it was');
    assert.equal(all.length, 120, 'the 90 leaves recovery kept were not published again (past the duplicate window they would be stored twice)');
    assert.ok(warnings.some((w) => /not the one the cursor forwarded/.test(w)), 'a warning says the cursor was reset');
    assert.match(String(details(second)['last_error']), /forwarding from leaf 90 \(where the log recovered at start ends\)/);
  });
});
