/**
 * The decision forwarder with several tenants when one tenant's event can never be published
 * (real nats-server, real audit logs): tenant `a` comes first in the walk and its first event
 * is refused for good, by the stream's max_msg_size or by the connection's max_payload once
 * the Nats-Msg-Id header is added. Tenant `b` must still be forwarded, all of it and in
 * order, while `a` stays in its audit log, is retried with a bounded backoff (not in a hot
 * loop) and is reported with a typed error code; `a` catches up once the limit allows it.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CURSOR_FILE, DecisionForwarder, type AuditLog } from '../sidecar/src/audit/index.ts';
import { encodeEvent } from '../sidecar/src/audit/log/event-encoding.ts';
import { parseConfig } from '../sidecar/src/config/index.ts';
import { ErrorCodes } from '../sidecar/src/lib/errors.ts';
import { decisionEvent, decisionEvents, logHolding, readRecords } from './audit/fixtures.ts';
import { startNats, type RunningNats } from './harness/nats-server.ts';
import { until } from './harness/wait.ts';

const MAX_PAYLOAD = 4096;

interface TenantError {
  readonly code: string;
  readonly message: string;
  readonly attempts: number;
  readonly details?: Record<string, unknown>;
}

describe('decision forwarder: one tenant whose event is refused for good does not stop the others', () => {
  let nats: RunningNats;
  let small: RunningNats;
  const connections: NatsConnection[] = [];
  const cleanup: Array<() => Promise<unknown>> = [];

  before(async () => {
    nats = await startNats();
    small = await startNats({ extraConfig: `max_payload: ${MAX_PAYLOAD}` });
  });

  after(async () => {
    for (const step of cleanup.reverse()) await step().catch(() => undefined);
    for (const nc of connections) await nc.close().catch(() => undefined);
    await nats?.stop();
    await small?.stop();
  });

  const manager = async (server: RunningNats): Promise<JetStreamManager> => {
    const nc = await connect({ servers: [server.url], reconnect: false });
    connections.push(nc);
    return jetstreamManager(nc);
  };


  const forwarder = (server: RunningNats, prefix: string, logs: ReadonlyMap<string, AuditLog>, warnings: string[], maxEventBytes?: number): DecisionForwarder => {
    const f = new DecisionForwarder({
      nats: parseConfig({ nats: { servers: [server.url], subjectPrefix: prefix, connectTimeoutMs: 500 } }).nats!,
      logs: () => logs,
      maxInFlight: 32,
      ...(maxEventBytes === undefined ? {} : { maxEventBytes }),
      retryWaitMs: 20,
      log: (level, message, fields) => {
        if (level === 'warn') warnings.push(`${message} ${JSON.stringify(fields ?? {})}`);
      },
    });
    cleanup.push(() => f.stop(2000));
    return f;
  };

  const details = (f: DecisionForwarder): Record<string, unknown> => f.status().details as Record<string, unknown>;
  const backlogOf = (f: DecisionForwarder, tenant: string): unknown => (details(f)['tenants'] as Record<string, number>)[tenant];
  const errorsOf = (f: DecisionForwarder): Record<string, TenantError> => (details(f)['tenant_errors'] ?? {}) as Record<string, TenantError>;

  /** The Nats-Msg-Id of every message on `subject`, in stream order. */
  const streamed = async (jsm: JetStreamManager, stream: string, subject: string): Promise<string[]> => {
    const info = await jsm.streams.info(stream);
    const ids: string[] = [];
    for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
      const message = await jsm.streams.getMessage(stream, { seq });
      if (message?.subject === subject) ids.push(message.header.get('Nats-Msg-Id'));
    }
    return ids;
  };

  const ids = (log: AuditLog): string[] => Array.from({ length: log.size }, (_, i) => log.decisionIdAt(i)!);

  test('a: first event over the stream\'s max_msg_size; b: 100 events: b is forwarded in order to backlog 0 while a stays in its log, retried with backoff and reported (ERR_AUDIT_EVENT_TOO_LARGE); a catches up once the limit is raised', async () => {
    const jsm = await manager(nats);
    await jsm.streams.add({ name: 'ISOLATED_DECISIONS', subjects: ['isolated.decisions.>'], max_msg_size: 2000 });
    const a = await logHolding([decisionEvent(0, { input: { pad: 'x'.repeat(3000) } }), ...decisionEvents(1, 5)], cleanup);
    const b = await logHolding(decisionEvents(1000, 100), cleanup);
    const warnings: string[] = [];
    const f = forwarder(nats, 'isolated', new Map([['a', a], ['b', b]]), warnings);
    await f.start();

    await until('b forwarded to backlog 0', () => backlogOf(f, 'b') === 0);
    assert.deepEqual(await streamed(jsm, 'ISOLATED_DECISIONS', 'isolated.decisions.b'), ids(b), 'every event of b once, in log order');
    assert.equal(backlogOf(f, 'a'), 6, 'a: nothing skipped, everything still waits in its log');
    await until('a reported', () => errorsOf(f)['a'] !== undefined);
    const refused = errorsOf(f)['a']!;
    assert.equal(refused.code, ErrorCodes.AUDIT_EVENT_TOO_LARGE);
    assert.equal(refused.details?.['leaf'], 0, 'the event it is stuck on');
    assert.match(refused.message, /size/i);
    assert.equal(errorsOf(f)['b'], undefined, 'b is healthy');
    const status = f.status();
    assert.equal(status.state, 'WARN');
    assert.match(status.message ?? '', /\ba\b.*ERR_AUDIT_EVENT_TOO_LARGE/);
    assert.equal(details(f)['state'], 'retrying');

    // b keeps flowing while a is refused; a is retried with a bounded backoff, not every poll
    const attemptsBefore = errorsOf(f)['a']!.attempts;
    for (const event of decisionEvents(1100, 20)) await b.append(event);
    await until('b\'s new events forwarded', () => backlogOf(f, 'b') === 0);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const attempts = errorsOf(f)['a']!.attempts - attemptsBefore;
    assert.ok(attempts >= 1, 'a is retried');
    assert.ok(attempts <= 10, `a retried ${attempts} times in about 1.6 s (retryWaitMs 20, polled every 50 ms): backing off, not a hot loop`);
    assert.deepEqual(await streamed(jsm, 'ISOLATED_DECISIONS', 'isolated.decisions.b'), ids(b), 'b: every event once, in log order');
    assert.equal(backlogOf(f, 'a'), 6);
    assert.equal(warnings.filter((w) => w.includes('"tenant":"a"')).length, 1, 'one warning for a, not one per retry');
    const aStreamed = await streamed(jsm, 'ISOLATED_DECISIONS', 'isolated.decisions.a');
    assert.ok(!aStreamed.includes(ids(a)[0]!), 'the refused event is not in the stream');

    await jsm.streams.update('ISOLATED_DECISIONS', { max_msg_size: -1 });
    await until('a caught up', () => backlogOf(f, 'a') === 0);
    const all = await streamed(jsm, 'ISOLATED_DECISIONS', 'isolated.decisions.a');
    assert.deepEqual(aStreamed, ids(a).slice(1, 1 + aStreamed.length), 'stored ahead of the refused one while it was in flight: in log order');
    assert.deepEqual(all, [...aStreamed, ids(a)[0], ...ids(a).slice(1 + aStreamed.length)], 'every event of a once; only the refused one out of place');
    assert.equal(errorsOf(f)['a'], undefined, 'a is no longer reported');
    assert.equal(f.status().state, 'OK');
  });

  test('a: first event within max_payload alone but over it with the Nats-Msg-Id header; b: 100 events: b is forwarded in order to backlog 0 while a is stuck and reported (ERR_AUDIT_EVENT_TOO_LARGE)', async () => {
    const jsm = await manager(small);
    // the canonical payload comes within a few bytes of max_payload: only the header pushes it over
    const base = encodeEvent(decisionEvent(0, { input: { pad: '' } })).bytes.length;
    const big = decisionEvent(0, { input: { pad: 'x'.repeat(MAX_PAYLOAD - 8 - base) } });
    const a = await logHolding([big, ...decisionEvents(1, 2)], cleanup);
    const aPayload = (await readRecords(a.directory)).records.find((r) => r.index === 0)!.payload.length;
    assert.ok(aPayload <= MAX_PAYLOAD && aPayload > MAX_PAYLOAD - 40, `the payload alone (${aPayload} bytes) fits max_payload ${MAX_PAYLOAD}; with the header it does not`);
    const b = await logHolding(decisionEvents(2000, 100), cleanup);
    const warnings: string[] = [];
    const f = forwarder(small, 'payload', new Map([['a', a], ['b', b]]), warnings);
    await f.start();

    await until('b forwarded to backlog 0', () => backlogOf(f, 'b') === 0);
    assert.deepEqual(await streamed(jsm, 'PAYLOAD_DECISIONS', 'payload.decisions.b'), ids(b), 'every event of b once, in log order');
    await until('a reported', () => errorsOf(f)['a'] !== undefined);
    const refused = errorsOf(f)['a']!;
    assert.equal(refused.code, ErrorCodes.AUDIT_EVENT_TOO_LARGE);
    assert.equal(refused.details?.['leaf'], 0);
    assert.equal(refused.details?.['bytes'], aPayload);
    assert.equal(refused.details?.['max_payload'], MAX_PAYLOAD);
    assert.equal(backlogOf(f, 'a'), 3, 'a: nothing skipped');
    assert.equal(errorsOf(f)['b'], undefined);
    assert.equal(f.status().state, 'WARN');

    const attemptsBefore = errorsOf(f)['a']!.attempts;
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const attempts = errorsOf(f)['a']!.attempts - attemptsBefore;
    assert.ok(attempts <= 10, `a retried ${attempts} times in 1.5 s: backing off, not a hot loop`);
    assert.equal(backlogOf(f, 'a'), 3, 'still waiting in the log');
    assert.equal(backlogOf(f, 'b'), 0);
    assert.ok(!(await streamed(jsm, 'PAYLOAD_DECISIONS', 'payload.decisions.a')).includes(ids(a)[0]!));
  });

  test('a tenant whose cursor file is damaged (a negative leaf; with an offset past the end, or inside the file) is forwarded from the start, and holds up no other tenant', async () => {
    const jsm = await manager(nats);
    const a = await logHolding(decisionEvents(7000, 5), cleanup);
    const c = await logHolding(decisionEvents(7100, 5), cleanup);
    const b = await logHolding(decisionEvents(7200, 50), cleanup);
    await writeFile(join(a.directory, CURSOR_FILE), `${JSON.stringify({ version: 1, next_leaf: -3, offset: 1e9 })}\n`);
    await writeFile(join(c.directory, CURSOR_FILE), `${JSON.stringify({ version: 1, next_leaf: -3, offset: 16 })}\n`);
    const warnings: string[] = [];
    const f = forwarder(nats, 'cursors', new Map([['a', a], ['c', c], ['b', b]]), warnings);
    await f.start();
    await until('every tenant forwarded', () => ['a', 'b', 'c'].every((t) => backlogOf(f, t) === 0));
    for (const [tenant, log] of [['a', a], ['b', b], ['c', c]] as const) {
      assert.deepEqual(await streamed(jsm, 'CURSORS_DECISIONS', `cursors.decisions.${tenant}`), ids(log), `every event of ${tenant} once, in log order`);
    }
    assert.deepEqual(errorsOf(f), {});
    assert.match(String(details(f)['last_error']), /^[ac]: stream\.cursor is not readable; forwarding from the start/);
  });

  test('a server whose max_payload cannot carry the largest event the log accepts is reported on connecting (WARN, one log line)', async () => {
    const warnings: string[] = [];
    const f = forwarder(small, 'limits', new Map([['b', await logHolding(decisionEvents(5000, 1), cleanup)]]), warnings, 64 * 1024);
    await f.start();
    await until('b forwarded', () => backlogOf(f, 'b') === 0);
    assert.equal(f.status().state, 'WARN');
    assert.match(f.status().message ?? '', /max_payload \(4096 bytes\) is below decisionLog\.audit\.maxEventBytes \(65536\)/);
    assert.equal(warnings.filter((w) => w.includes('max_payload')).length, 1);
    // the default server (max_payload 1 MiB) carries the streamed default (1 MiB less the header allowance)
    const fits = forwarder(nats, 'fits', new Map([['b', await logHolding(decisionEvents(6000, 1), cleanup)]]), [], parseConfig({ decisionLog: { sink: 'audit', audit: { stream: { enabled: true } } }, nats: { servers: [nats.url] } }).decisionLog.audit!.maxEventBytes);
    await fits.start();
    await until('b forwarded', () => backlogOf(fits, 'b') === 0);
    assert.equal(fits.status().state, 'OK', 'an event limit the server carries raises nothing');
  });
});
