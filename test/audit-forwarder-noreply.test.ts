/**
 * The decision forwarder with several tenants when one tenant's publishes get no usable answer
 * (real nats-server, real audit logs), and when the connection itself fails:
 *
 * - no reply at all: tenant `a`'s subject is captured by a stream with `no_ack` (it stores,
 *   never acknowledges), so every publish of `a` waits out the ack timeout. Tenant `b` must
 *   keep flowing meanwhile - each new event of `b` on the stream well within the ack timeout,
 *   the connection kept (nothing of `b` re-sent) - while `a` is reported with its code, and once
 *   `a`'s subject is acknowledged again it catches up: every event of both once, in log order;
 *   with no other tenant publishing, a request for the stream's info on the same connection
 *   shows the connection works, so it is still `a`'s failure and the connection is kept;
 * - publish denied by the account's permissions (the server drops the message and says so with
 *   an asynchronous -ERR, never a reply): `a` fails at once with a typed refusal instead of
 *   waiting out the timeout, `b` flows, and after a permission reload `a` catches up;
 * - no responders (a stream exists, but its subjects leave `a` out): `a` alone is reported;
 * - the failure is the connection's (the server killed, the stream deleted): no tenant is
 *   blamed or kept waiting by a backoff of its own; every tenant catches up once it is back.
 */
import assert from 'node:assert/strict';
import { rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { after, describe, test } from 'node:test';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { DecisionForwarder, type AuditLog } from '../sidecar/src/audit/index.ts';
import { parseConfig } from '../sidecar/src/config/index.ts';
import { ErrorCodes } from '../sidecar/src/lib/errors.ts';
import { decisionEvent, decisionEvents, logHolding, tempDir } from './audit/fixtures.ts';
import { startNats, type RunningNats } from './harness/nats-server.ts';
import { until } from './harness/wait.ts';

/** The ack timeout the forwarders get: long enough that waiting it out shows. */
const ACK_TIMEOUT_MS = 4000;
/** How soon an innocent tenant's new event must be on the stream: well below the ack timeout. */
const PROMPT_MS = 2000;

interface TenantError {
  readonly code: string;
  readonly message: string;
  readonly attempts: number;
  readonly details?: Record<string, unknown>;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe('decision forwarder: a tenant whose publishes get no reply does not hold up the others', () => {
  const cleanup: Array<() => Promise<unknown>> = [];
  const connections: NatsConnection[] = [];
  const servers: RunningNats[] = [];

  after(async () => {
    for (const step of cleanup.reverse()) await step().catch(() => undefined);
    for (const nc of connections) await nc.close().catch(() => undefined);
    for (const server of servers) await server.stop().catch(() => undefined);
  });

  const server = async (extraConfig?: string): Promise<RunningNats> => {
    const running = await startNats(extraConfig === undefined ? {} : { extraConfig });
    servers.push(running);
    return running;
  };

  const manager = async (nats: RunningNats, auth: { user?: string; pass?: string } = {}): Promise<JetStreamManager> => {
    const nc = await connect({ servers: [nats.url], reconnect: false, ...auth });
    connections.push(nc);
    return jetstreamManager(nc);
  };


  const forwarder = (
    nats: RunningNats,
    prefix: string,
    logs: ReadonlyMap<string, AuditLog>,
    warnings: string[],
    extra: { user?: string; password?: string; retryWaitMs?: number; ackTimeoutMs?: number } = {},
  ): DecisionForwarder => {
    const f = new DecisionForwarder({
      nats: parseConfig({
        nats: {
          servers: [nats.url], subjectPrefix: prefix, connectTimeoutMs: 500,
          ...(extra.user === undefined ? {} : { user: extra.user, password: extra.password }),
        },
      }).nats!,
      logs: () => logs,
      maxInFlight: 32,
      retryWaitMs: extra.retryWaitMs ?? 100,
      ackTimeoutMs: extra.ackTimeoutMs ?? ACK_TIMEOUT_MS,
      log: (level, message, fields) => {
        if (level === 'warn') warnings.push(`${message} ${JSON.stringify(fields ?? {})}`);
      },
    });
    cleanup.push(() => f.stop(ACK_TIMEOUT_MS + 2000));
    return f;
  };

  const details = (f: DecisionForwarder): Record<string, unknown> => f.status().details as Record<string, unknown>;
  const backlogOf = (f: DecisionForwarder, tenant: string): unknown => (details(f)['tenants'] as Record<string, number>)[tenant];
  const errorsOf = (f: DecisionForwarder): Record<string, TenantError> => (details(f)['tenant_errors'] ?? {}) as Record<string, TenantError>;
  const ids = (log: AuditLog): string[] => Array.from({ length: log.size }, (_, i) => log.decisionIdAt(i)!);

  /** The Nats-Msg-Id of every message on `subject`, in stream order. */
  const streamed = async (jsm: JetStreamManager, stream: string, subject: string): Promise<string[]> => {
    const info = await jsm.streams.info(stream);
    const out: string[] = [];
    for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
      const message = await jsm.streams.getMessage(stream, { seq }).catch(() => null);
      if (message?.subject === subject) out.push(message.header.get('Nats-Msg-Id'));
    }
    return out;
  };

  /**
   * Append one event to `log` at a time for `forMs`, each as soon as the previous one reached
   * the stream (the tenant's backlog 0), and return the longest time one took.
   */
  const slowestDelivery = async (f: DecisionForwarder, tenant: string, log: AuditLog, from: number, forMs: number): Promise<{ slowest: number; sent: number }> => {
    const end = Date.now() + forMs;
    let slowest = 0;
    let sent = 0;
    while (Date.now() < end) {
      const started = Date.now();
      await log.append(decisionEvent(from + sent));
      sent++;
      await until(`${tenant}'s event ${sent} forwarded`, () => backlogOf(f, tenant) === 0, 4 * ACK_TIMEOUT_MS);
      slowest = Math.max(slowest, Date.now() - started);
      await sleep(50);
    }
    return { slowest, sent };
  };

  test('no reply (a\'s subject captured by a no_ack stream): b\'s events reach the stream well within the ack timeout throughout, a is reported (ERR_AUDIT_STREAM_UNAVAILABLE, no acknowledgement) on its own; a catches up once acknowledged again, every event of both once and in order', async () => {
    const nats = await server();
    const jsm = await manager(nats);
    // the operator's stream leaves `a` out; another stream takes `a`'s subject and never acknowledges
    await jsm.streams.add({ name: 'NOREPLY_DECISIONS', subjects: ['noreply.decisions.b'] });
    await jsm.streams.add({ name: 'NOREPLY_BLACKHOLE', subjects: ['noreply.decisions.a'], no_ack: true });
    const a = await logHolding(decisionEvents(0, 20), cleanup);
    const b = await logHolding(decisionEvents(1000, 50), cleanup);
    const warnings: string[] = [];
    const f = forwarder(nats, 'noreply', new Map([['a', a], ['b', b]]), warnings); // a first in the walk
    const started = Date.now();
    await f.start();

    await until('b forwarded to backlog 0', () => backlogOf(f, 'b') === 0, PROMPT_MS);
    assert.ok(Date.now() - started < PROMPT_MS, `b's first 50 events took ${Date.now() - started} ms with a waiting for acks (ack timeout ${ACK_TIMEOUT_MS} ms)`);
    // through a's first timeout and at least one probe after it, each of b's new events is prompt
    const { slowest, sent } = await slowestDelivery(f, 'b', b, 1050, 2 * ACK_TIMEOUT_MS + 500);
    assert.ok(slowest < PROMPT_MS, `b's slowest event took ${slowest} ms (of ${sent}); a's publishes wait up to ${ACK_TIMEOUT_MS} ms`);

    await until('a reported', () => errorsOf(f)['a'] !== undefined);
    const failed = errorsOf(f)['a']!;
    assert.equal(failed.code, ErrorCodes.AUDIT_STREAM_UNAVAILABLE);
    assert.equal(failed.details?.['leaf'], 0, 'the event it is stuck on');
    assert.equal(failed.details?.['reason'], 'no_ack');
    assert.match(failed.message, /no acknowledgement/);
    // a goes on being retried (a probe of one event, waiting out the timeout), b unaffected
    await until('a probed again', () => (errorsOf(f)['a']?.attempts ?? 0) >= 2, 3 * ACK_TIMEOUT_MS);
    assert.equal(errorsOf(f)['b'], undefined, 'b is healthy');
    assert.equal(backlogOf(f, 'a'), 20, 'a: nothing skipped, everything waits in its log');
    assert.equal(details(f)['duplicates'], 0, 'the shared connection was kept: nothing of b was re-sent');
    assert.match(f.status().message ?? '', /\ba \(ERR_AUDIT_STREAM_UNAVAILABLE/);
    assert.equal(warnings.filter((w) => w.includes('"tenant":"a"')).length, 1, 'one warning for a, not one per retry');
    assert.ok(!warnings.some((w) => w.includes('"tenant":"b"')), 'nothing blamed on b');
    assert.ok(!warnings.some((w) => /NATS JetStream unavailable/.test(w)), `the connection was never dropped: ${warnings.join('; ')}`);
    assert.deepEqual(await streamed(jsm, 'NOREPLY_DECISIONS', 'noreply.decisions.b'), ids(b), 'b: every event once, in log order');

    // a's subject is acknowledged again: it catches up, and is no longer reported
    await jsm.streams.delete('NOREPLY_BLACKHOLE');
    await jsm.streams.update('NOREPLY_DECISIONS', { subjects: ['noreply.decisions.>'] });
    await until('a caught up', () => backlogOf(f, 'a') === 0, 30_000);
    assert.equal(errorsOf(f)['a'], undefined, 'a is no longer reported once its events are acknowledged');
    await until('status OK', () => f.status().state === 'OK');
    assert.deepEqual(await streamed(jsm, 'NOREPLY_DECISIONS', 'noreply.decisions.a'), ids(a), 'a: every event once, in log order');
    assert.deepEqual(await streamed(jsm, 'NOREPLY_DECISIONS', 'noreply.decisions.b'), ids(b), 'b: every event once, in log order');
    assert.equal(details(f)['duplicates'], 0);
  });

  test('no reply while no other tenant publishes: the connection still answers (a stream-info request after the publish), so the failure is a\'s own and the connection is kept; b, logging later, flows at once', async () => {
    const nats = await server();
    const jsm = await manager(nats);
    await jsm.streams.add({ name: 'ALONE_DECISIONS', subjects: ['alone.decisions.b'] });
    await jsm.streams.add({ name: 'ALONE_BLACKHOLE', subjects: ['alone.decisions.a'], no_ack: true });
    const a = await logHolding(decisionEvents(10_000, 5), cleanup);
    const b = await logHolding([], cleanup);
    const warnings: string[] = [];
    const f = forwarder(nats, 'alone', new Map([['a', a], ['b', b]]), warnings, { ackTimeoutMs: 1000 });
    await f.start();
    await until('a reported', () => (errorsOf(f)['a']?.attempts ?? 0) >= 2);
    assert.equal(errorsOf(f)['a']!.code, ErrorCodes.AUDIT_STREAM_UNAVAILABLE);
    assert.equal(errorsOf(f)['a']!.details?.['reason'], 'no_ack');
    assert.match(errorsOf(f)['a']!.message, /the connection and the stream ALONE_DECISIONS answer/);
    assert.ok(!warnings.some((w) => /NATS JetStream unavailable/.test(w)), `the connection was kept: ${warnings.join('; ')}`);
    const started = Date.now();
    for (const event of decisionEvents(11_000, 10)) await b.append(event);
    await until('b forwarded', () => backlogOf(f, 'b') === 0, PROMPT_MS);
    assert.ok(Date.now() - started < PROMPT_MS, `b took ${Date.now() - started} ms`);
    assert.deepEqual(await streamed(jsm, 'ALONE_DECISIONS', 'alone.decisions.b'), ids(b));
    assert.equal(backlogOf(f, 'a'), 5);
  });

  test('publish denied by permissions (an asynchronous -ERR, no reply): a fails at once (ERR_AUDIT_STREAM_REFUSED), not after the ack timeout, b flows; after a permission reload a catches up, every event of both once and in order', async () => {
    // the users live in a file included by the server's config, rewritten and reloaded (SIGHUP)
    const authDir = await tempDir('pavilion-nats-auth-');
    const authFile = join(authDir, 'auth.conf');
    cleanup.push(() => rm(authDir, { recursive: true, force: true }));
    const users = (deny: readonly string[]): string => `authorization {
  users = [
    { user: admin, password: admin }
    { user: fwd, password: fwd, permissions: { publish: { allow: [">"], deny: ${JSON.stringify(deny)} }, subscribe: { allow: [">"] } } }
  ]
}
`;
    await writeFile(authFile, users(['perm.decisions.a']));
    // include paths are relative to the main config file (in its own temporary directory beside ours)
    const nats = await server(`include "../${basename(dirname(authFile))}/${basename(authFile)}"`);
    const jsm = await manager(nats, { user: 'admin', pass: 'admin' });
    const a = await logHolding(decisionEvents(2000, 10), cleanup);
    const b = await logHolding(decisionEvents(3000, 40), cleanup);
    const warnings: string[] = [];
    const f = forwarder(nats, 'perm', new Map([['a', a], ['b', b]]), warnings, { user: 'fwd', password: 'fwd' });
    const started = Date.now();
    await f.start();

    await until('a reported', () => errorsOf(f)['a'] !== undefined, PROMPT_MS);
    assert.ok(Date.now() - started < PROMPT_MS, `a reported after ${Date.now() - started} ms: the denial is answered at once, not waited out (${ACK_TIMEOUT_MS} ms)`);
    const denied = errorsOf(f)['a']!;
    assert.equal(denied.code, ErrorCodes.AUDIT_STREAM_REFUSED);
    assert.equal(denied.details?.['leaf'], 0);
    assert.equal(denied.details?.['reason'], 'denied');
    assert.match(denied.message, /Permissions Violation for Publish to "perm\.decisions\.a"/);
    await until('b forwarded to backlog 0', () => backlogOf(f, 'b') === 0, PROMPT_MS);
    const { slowest, sent } = await slowestDelivery(f, 'b', b, 3040, 1500);
    assert.ok(slowest < PROMPT_MS, `b's slowest event took ${slowest} ms (of ${sent})`);
    assert.equal(errorsOf(f)['b'], undefined);
    assert.equal(backlogOf(f, 'a'), 10, 'a: nothing skipped');
    assert.equal(details(f)['duplicates'], 0, 'the connection was kept');

    await writeFile(authFile, users([]));
    process.kill(nats.pid!, 'SIGHUP'); // nats-server reloads its configuration
    await until('a caught up after the reload', () => backlogOf(f, 'a') === 0, 30_000);
    assert.equal(errorsOf(f)['a'], undefined);
    assert.deepEqual(await streamed(jsm, 'PERM_DECISIONS', 'perm.decisions.a'), ids(a), 'a: every event once, in log order');
    assert.deepEqual(await streamed(jsm, 'PERM_DECISIONS', 'perm.decisions.b'), ids(b), 'b: every event once, in log order');
  });

  test('no responders (the stream leaves a\'s subject out): a alone is reported (no_responders), b keeps its connection and flows; a catches up once the stream takes its subject', async () => {
    const nats = await server();
    const jsm = await manager(nats);
    await jsm.streams.add({ name: 'NOCOVER_DECISIONS', subjects: ['nocover.decisions.b'] });
    const a = await logHolding(decisionEvents(4000, 10), cleanup);
    const b = await logHolding(decisionEvents(5000, 40), cleanup);
    const warnings: string[] = [];
    const f = forwarder(nats, 'nocover', new Map([['a', a], ['b', b]]), warnings);
    await f.start();
    await until('a reported', () => errorsOf(f)['a'] !== undefined);
    assert.equal(errorsOf(f)['a']!.code, ErrorCodes.AUDIT_STREAM_UNAVAILABLE);
    assert.equal(errorsOf(f)['a']!.details?.['reason'], 'no_responders');
    await until('b forwarded to backlog 0', () => backlogOf(f, 'b') === 0);
    const { slowest } = await slowestDelivery(f, 'b', b, 5040, 1000);
    assert.ok(slowest < PROMPT_MS, `b's slowest event took ${slowest} ms`);
    assert.equal(errorsOf(f)['b'], undefined);
    assert.equal(details(f)['duplicates'], 0, 'the connection was kept');
    await jsm.streams.update('NOCOVER_DECISIONS', { subjects: ['nocover.decisions.>'] });
    await until('a caught up', () => backlogOf(f, 'a') === 0);
    assert.equal(f.status().state, 'OK');
    assert.deepEqual(await streamed(jsm, 'NOCOVER_DECISIONS', 'nocover.decisions.a'), ids(a));
    assert.deepEqual(await streamed(jsm, 'NOCOVER_DECISIONS', 'nocover.decisions.b'), ids(b));
  });

  test('the connection fails (server killed; both tenants keep logging): no tenant is blamed or given a backoff of its own; once the server is back both catch up promptly, every event once and in order', async () => {
    const nats = await server();
    const a = await logHolding(decisionEvents(6000, 200), cleanup);
    const b = await logHolding(decisionEvents(7000, 200), cleanup);
    const warnings: string[] = [];
    const f = forwarder(nats, 'killed', new Map([['a', a], ['b', b]]), warnings, { retryWaitMs: 20 });
    await f.start();
    await until('both forwarded', () => details(f)['backlog'] === 0);
    await nats.kill();
    // both keep logging while the server is away
    for (let i = 0; i < 30; i++) {
      await a.append(decisionEvent(6200 + i));
      await b.append(decisionEvent(7200 + i));
      await sleep(20);
    }
    await until('retrying', () => details(f)['state'] === 'retrying');
    await sleep(300);
    assert.deepEqual(errorsOf(f), {}, 'the connection failed, not a tenant: no tenant_errors');
    assert.equal(f.status().state, 'WARN');
    assert.equal(typeof details(f)['last_error'], 'string');
    assert.ok(!warnings.some((w) => /"tenant":/.test(w)), `no tenant blamed: ${warnings.join('; ')}`);

    await nats.restart();
    const back = Date.now();
    // the connection's own wait is at most 30 x 20 ms (+25 %); no tenant waits on a backoff of its own
    await until('both caught up', () => details(f)['backlog'] === 0);
    assert.ok(Date.now() - back < 5000, `caught up ${Date.now() - back} ms after the server was back`);
    assert.deepEqual(errorsOf(f), {});
    const jsm = await manager(nats);
    assert.deepEqual(await streamed(jsm, 'KILLED_DECISIONS', 'killed.decisions.a'), ids(a), 'a: every event once, in log order');
    assert.deepEqual(await streamed(jsm, 'KILLED_DECISIONS', 'killed.decisions.b'), ids(b), 'b: every event once, in log order');
  });

  test('the stream deleted under the forwarder (no responders for every tenant): the connection is dropped and the stream made again, no tenant blamed', async () => {
    const nats = await server();
    const jsm = await manager(nats);
    const a = await logHolding(decisionEvents(8000, 20), cleanup);
    const b = await logHolding(decisionEvents(9000, 20), cleanup);
    const warnings: string[] = [];
    const f = forwarder(nats, 'deleted', new Map([['a', a], ['b', b]]), warnings, { retryWaitMs: 20 });
    await f.start();
    await until('both forwarded', () => details(f)['backlog'] === 0);
    await jsm.streams.delete('DELETED_DECISIONS');
    for (const event of decisionEvents(8100, 10)) await a.append(event);
    for (const event of decisionEvents(9100, 10)) await b.append(event);
    await until('both forwarded again', () => details(f)['backlog'] === 0);
    assert.deepEqual(errorsOf(f), {});
    assert.ok(!warnings.some((w) => /"tenant":/.test(w)), `no tenant blamed: ${warnings.join('; ')}`);
    assert.deepEqual(await streamed(jsm, 'DELETED_DECISIONS', 'deleted.decisions.a'), ids(a).slice(20), 'a: the events since, once, in order');
    assert.deepEqual(await streamed(jsm, 'DELETED_DECISIONS', 'deleted.decisions.b'), ids(b).slice(20));
  });
});
