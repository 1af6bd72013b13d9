/**
 * Streaming the audit log to NATS JetStream (real nats-server): decisions made through the
 * Data API arrive on `pavilion.decisions.<tenant>` in log order with Nats-Msg-Id = decision
 * id; while NATS is down the log keeps them and status shows the backlog; after it returns
 * they all arrive in order, once; a restarted sidecar resumes from its cursor, and re-sent
 * events are dropped by JetStream's duplicate detection.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { CURSOR_FILE, DecisionForwarder, SoftwareSigner, type AuditLog } from '../sidecar/src/audit/index.ts';
import { parseConfig } from '../sidecar/src/config/index.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { decisionEvent, openLog, tempDir } from './audit/fixtures.ts';
import { startNats, type RunningNats } from './harness/nats-server.ts';
import { post, startPavilion, type RunningPavilion } from './harness/pavilion-harness.ts';
import { until } from './harness/wait.ts';

const TENANT = { 'x-pavilion-tenant': 'bank' };
const STREAM = 'PAVILION_DECISIONS';

interface Streamed {
  readonly subject: string;
  readonly msgId: string | undefined;
  readonly decisionId: string;
}

describe('decisionLog.audit.stream config', () => {
  const withStream = (stream: unknown, nats = true): unknown => parseConfig({
    ...(nats ? { nats: { servers: ['nats://127.0.0.1:4222'] } } : {}),
    decisionLog: { sink: 'audit', audit: { stream } },
  });

  test('off by default; maxInFlight and retryWaitMs have defaults', () => {
    assert.deepEqual(parseConfig({ decisionLog: { sink: 'audit' } }).decisionLog.audit?.stream, { enabled: false, maxInFlight: 256, retryWaitMs: 250 });
    assert.deepEqual((withStream({ enabled: true, maxInFlight: 4, retryWaitMs: 100 }) as ReturnType<typeof parseConfig>).decisionLog.audit?.stream, { enabled: true, maxInFlight: 4, retryWaitMs: 100 });
  });

  test('unknown keys, bad values and enabled without a nats section are refused', () => {
    for (const [stream, nats] of [[{ enable: true }, true], [{ maxInFlight: 0 }, true], [{ retryWaitMs: 'fast' }, true], [{ enabled: true }, false]] as const) {
      assert.throws(() => withStream(stream, nats), (e: unknown) => isPavilionError(e, ErrorCodes.CONFIG_INVALID), JSON.stringify(stream));
    }
  });
});

describe('decisions stream to NATS JetStream from the audit log', () => {
  let nats: RunningNats;
  let auditDir: string;
  let app: RunningPavilion | undefined;
  let observer: NatsConnection | undefined;
  /** Decision ids in the order the Data API answered them (= log order: one at a time). */
  const made: string[] = [];

  const startSidecar = async (): Promise<RunningPavilion> => startPavilion({
    config: {
      nats: { servers: [nats.url], reconnectWaitMs: 50, reconnectJitterMs: 0, connectTimeoutMs: 500 },
      decisionLog: {
        sink: 'audit',
        audit: { directory: auditDir, checkpointIntervalMs: 600_000, stream: { enabled: true, maxInFlight: 8, retryWaitMs: 50 } },
      },
    },
  });

  const decide = async (count: number): Promise<void> => {
    for (let i = 0; i < count; i++) {
      const response = await post(`${app!.url}/v1/data/bank/authz/allow`, { input: { subject: { id: `stream-${made.length}` } } }, TENANT);
      assert.equal(response.status, 200);
      made.push(String(response.body['decision_id']));
    }
  };

  /** A JetStream manager on a connection of the test's own (reopened after a NATS restart). */
  const jsm = async (): Promise<JetStreamManager> => {
    if (observer === undefined || observer.isClosed()) observer = await connect({ servers: [nats.url], reconnect: false });
    return jetstreamManager(observer);
  };

  const count = async (): Promise<number> => {
    try {
      return (await (await jsm()).streams.info(STREAM)).state.messages;
    } catch {
      observer = undefined;
      return -1;
    }
  };

  const streamed = async (): Promise<Streamed[]> => {
    const manager = await jsm();
    const info = await manager.streams.info(STREAM);
    const out: Streamed[] = [];
    for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
      const message = await manager.streams.getMessage(STREAM, { seq });
      assert.ok(message !== null);
      out.push({
        subject: message.subject,
        msgId: message.header.get('Nats-Msg-Id') || undefined,
        decisionId: String((message.json<{ decision_id: string }>()).decision_id),
      });
    }
    return out;
  };

  /** Decisions of another tenant (its own log and subject). */
  const other: string[] = [];

  const assertStreamIsLog = async (): Promise<void> => {
    const all = await streamed();
    assert.deepEqual(all.filter((m) => m.subject === 'pavilion.decisions.hospital').map((m) => m.msgId), other, 'the other tenant, on its own subject');
    const messages = all.filter((m) => m.subject !== 'pavilion.decisions.hospital');
    assert.equal(messages.length, made.length, 'one message per decision');
    assert.deepEqual(messages.map((m) => m.decisionId), made, 'in log order, none missing, none twice');
    assert.deepEqual(messages.map((m) => m.msgId), made, 'Nats-Msg-Id is the decision id');
    assert.ok(messages.every((m) => m.subject === 'pavilion.decisions.bank'));
  };

  const forwarderDetails = (): Record<string, unknown> => app!.pavilion.decisionStream!.status().details as Record<string, unknown>;

  before(async () => {
    nats = await startNats();
    auditDir = await tempDir();
    app = await startSidecar();
  });

  after(async () => {
    await observer?.close().catch(() => undefined);
    await app?.stop();
    await nats?.stop();
  });

  test('decisions made through the Data API arrive in log order with Nats-Msg-Id = decision id', async () => {
    assert.ok(app!.pavilion.decisionStream !== undefined, 'the forwarder is wired when stream.enabled');
    await decide(5);
    const response = await post(`${app!.url}/v1/data/hospital/records/allow`, { input: {} }, { 'x-pavilion-tenant': 'hospital' });
    assert.equal(response.status, 200);
    other.push(String(response.body['decision_id']));
    await until('6 decisions on the stream', async () => (await count()) === 6);
    await assertStreamIsLog();
    await until('backlog 0', () => forwarderDetails()['backlog'] === 0);
    assert.equal(app!.pavilion.decisionStream!.status().state, 'OK');
    const metrics = await (await fetch(`${app!.url}/metrics`)).text();
    assert.match(metrics, /pavilion_audit_stream_published_total\{tenant="bank"\} 5/);
    assert.match(metrics, /pavilion_audit_stream_backlog\{tenant="bank"\} 0/);
  });

  test('NATS down: the log keeps the decisions, status shows the backlog; back: all arrive in order, once', async () => {
    await nats.kill();
    const N = 20;
    await decide(N);
    await until('the backlog of 20 in status', () => forwarderDetails()['backlog'] === N);
    const down = app!.pavilion.decisionStream!.status();
    assert.equal(down.state, 'WARN', 'status says the stream is not forwarding');
    assert.equal((down.details as Record<string, unknown>)['state'], 'retrying');
    assert.ok(typeof (down.details as Record<string, unknown>)['last_error'] === 'string', 'last error reported');
    const metrics = await (await fetch(`${app!.url}/metrics`)).text();
    assert.match(metrics, new RegExp(`pavilion_audit_stream_backlog\\{tenant="bank"\\} ${N}`));

    await nats.restart();
    await until('26 decisions on the stream', async () => (await count()) === 6 + N, 20_000);
    await until('backlog 0', () => forwarderDetails()['backlog'] === 0);
    await assertStreamIsLog();
    assert.equal(app!.pavilion.decisionStream!.status().state, 'OK');
  });

  test('a sidecar restarted mid-backlog resumes from its cursor; re-sent events are deduplicated', async () => {
    await nats.kill();
    await decide(10);
    await app!.stop();
    const cursorFile = join(auditDir, 'tenants', 'bank', CURSOR_FILE);
    const cursor = JSON.parse(await readFile(cursorFile, 'utf8')) as { next_leaf: number; offset: number };
    assert.equal(cursor.next_leaf, 25, 'the cursor covers exactly what JetStream acknowledged');

    app = await startSidecar();
    await until('the restarted sidecar shows the backlog from its cursor', () => forwarderDetails()['backlog'] === 10);
    assert.equal(app.pavilion.decisionStream!.status().state, 'WARN');
    await nats.restart();
    await until('36 decisions on the stream', async () => (await count()) === 36, 20_000);
    await until('backlog 0', () => forwarderDetails()['backlog'] === 0);
    assert.equal(forwarderDetails()['published'], 10, 'resumed at the cursor: only the 10 new ones were sent');
    assert.equal(forwarderDetails()['duplicates'], 0);
    await assertStreamIsLog();

    // A crash after publishing but before the cursor was written: the cursor is behind.
    await app!.stop();
    await writeFile(cursorFile, `${JSON.stringify({ version: 1, next_leaf: 0, offset: 16 })}\n`);
    app = await startSidecar();
    await until('everything re-sent', () => forwarderDetails()['published'] === 35, 20_000);
    assert.equal(forwarderDetails()['duplicates'], 35, 'JetStream reported every re-send as a duplicate');
    assert.equal(await count(), 36, 'the stream count is unchanged');
    await assertStreamIsLog();
    // the forwarder writes its cursor once it finds nothing new (not after every publish)
    const cursorLeaf = async (): Promise<number> => (JSON.parse(await readFile(cursorFile, 'utf8')) as { next_leaf: number }).next_leaf;
    await until('the cursor file records the catch-up', async () => (await cursorLeaf()) === 35, 5_000);
    assert.equal(await cursorLeaf(), 35);
  });
});

describe('NATS killed in the middle of a catch-up', () => {
  let nats: RunningNats;
  let log: AuditLog;
  let forwarder: DecisionForwarder;
  let nc: NatsConnection | undefined;
  const TOTAL = 10_000;

  before(async () => {
    nats = await startNats();
    log = await openLog(await tempDir(), SoftwareSigner.generate(), { fsync: 'never', checkpointEveryEvents: 2000 });
    for (let start = 0; start < TOTAL; start += 1000) {
      await Promise.all(Array.from({ length: 1000 }, (_, i) => log.append(decisionEvent(start + i))));
    }
  });

  after(async () => {
    await forwarder?.stop(2000);
    await nc?.close().catch(() => undefined);
    await log?.stop(2000);
    await nats?.stop();
  });

  test('every event arrives once, in order, though publishes were in flight when the server died', async () => {
    const nats1 = parseConfig({ nats: { servers: [nats.url], subjectPrefix: 'midflight', connectTimeoutMs: 500 } }).nats!;
    forwarder = new DecisionForwarder({ nats: nats1, logs: () => new Map([['bank', log]]), maxInFlight: 32, retryWaitMs: 20 });
    const details = (): Record<string, unknown> => forwarder.status().details as Record<string, unknown>;
    await forwarder.start();
    await until('a first part published', () => (details()['published'] as number) >= 200, 20_000);
    await nats.kill();
    const before = details()['published'] as number;
    assert.ok(before < TOTAL, `the catch-up was still running when the server died (${before} of ${TOTAL})`);
    await until('retrying', () => details()['state'] === 'retrying');
    await nats.restart();
    await until('backlog 0', () => details()['backlog'] === 0, 60_000);

    nc = await connect({ servers: [nats.url] });
    const info = await (await jetstreamManager(nc)).streams.info('MIDFLIGHT_DECISIONS');
    assert.equal(info.state.messages, TOTAL, 'no event lost, none stored twice');
    const consumer = await jetstream(nc).consumers.get('MIDFLIGHT_DECISIONS');
    const ids: string[] = [];
    const messages = await consumer.consume();
    for await (const m of messages) {
      ids.push(m.headers?.get('Nats-Msg-Id') ?? '');
      if (ids.length === TOTAL) break;
    }
    const expected = Array.from({ length: TOTAL }, (_, n) => decisionEvent(n).decision_id);
    assert.ok(ids.every((id, i) => id === expected[i]), `stream order is log order (first difference at ${ids.findIndex((id, i) => id !== expected[i])})`);
  });
});
