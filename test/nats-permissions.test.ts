/**
 * Tenant isolation over NATS: a real nats-server runs docs/nats-permissions.conf (the
 * shipped accounts and permissions layout), an admin provisions the buckets, and each
 * user is held to its grants. A policy team pushes, rolls back and reads history for its
 * own tenant only; the sidecar reads every pointer and bundle but cannot move a pointer;
 * each refused action says what the server answers. Every user receives on an inbox prefix of
 * its own (`_INBOX_<user>`, sidecar config nats.inboxPrefix) and cannot subscribe to another's.
 * A team publishes delta updates of its own tenant only, and a sidecar on the sidecar grants
 * applies them (its delta consumer is created with the filter in the API subject).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Kvm } from '@nats-io/kv';
import { Objm } from '@nats-io/obj';
import { jetstreamManager } from '@nats-io/jetstream';
import { parseConfig, type NatsConfig } from '../sidecar/src/config/index.ts';
import { DEPLOY_HISTORY, NatsBundleStore, connectNats, sha256Hex } from '../sidecar/src/distribution/index.ts';
import { ErrorCodes, PavilionError } from '../sidecar/src/lib/errors.ts';
import { buildFixtureBundle } from './harness/fixtures.ts';
import { startNats, type RunningNats } from './harness/nats-server.ts';
import { until } from './harness/wait.ts';
import { deltaSigning, post, signForTest, startPavilion, type RunningPavilion } from './harness/pavilion-harness.ts';

const execFileAsync = promisify(execFile);

const PASSWORDS = {
  admin: 'admin-secret',
  sidecar: 'sidecar-secret',
  team_bank: 'bank-secret',
  team_hospital: 'hospital-secret',
  team_agency: 'agency-secret',
} as const;
type User = keyof typeof PASSWORDS;

/** The inbox prefix each user may subscribe under (docs/nats-permissions.conf, "Inboxes"). */
function inboxPrefix(user: User): string {
  return `_INBOX_${user}`;
}

/** A refusal by the server's permissions, naming the subject it refused. */
function violation(subject: string): RegExp {
  return new RegExp(`Permissions Violation for Publish to "${subject.replace(/[.$*>]/g, (c) => `\\${c}`)}"`);
}

/** The store's typed refusal: ERR_DISTRIBUTION_PERMISSION, with the refused subject in the message. */
function permissionError(subject: string): (error: unknown) => boolean {
  return (error: unknown) => {
    assert.ok(error instanceof PavilionError, `expected a PavilionError, got ${String(error)}`);
    assert.equal(error.code, ErrorCodes.DISTRIBUTION_PERMISSION);
    assert.match(error.message, violation(subject));
    return true;
  };
}

/** A history read refused: the consumer over the tenant's key (its name is random). */
function historyRefused(tenant: string): (error: unknown) => boolean {
  return (error: unknown) => {
    assert.ok(error instanceof PavilionError, `expected a PavilionError, got ${String(error)}`);
    assert.equal(error.code, ErrorCodes.DISTRIBUTION_PERMISSION);
    assert.match(error.message, new RegExp(`Permissions Violation for Publish to "\\$JS\\.API\\.CONSUMER\\.CREATE\\.KV_pavilion-bundles\\.[^.]+\\.\\$KV\\.pavilion-bundles\\.${tenant}"`));
    return true;
  };
}

function moduleFor(tenant: string, rev: string): string {
  return `package ${tenant}.authz\n\nallow if input.user == "alice"\n\nrev := "${rev}"\n\nlimit := data.${tenant}.limits.max\n`;
}

let nats: RunningNats;
let dir: string;
let keys: string;
let admin: NatsConnection;
const stores = new Map<User, NatsBundleStore>();
const signed = new Map<string, Buffer>();

function natsConfig(user: User, password: string = PASSWORDS[user]): NatsConfig {
  return parseConfig({ nats: { servers: [nats.url], user, password, name: `test-${user}`, inboxPrefix: inboxPrefix(user) } }).nats as NatsConfig;
}

function store(user: User): NatsBundleStore {
  const found = stores.get(user);
  assert.ok(found !== undefined, `no store for ${user}`);
  return found;
}

async function bundle(tenant: string, rev: string): Promise<Buffer> {
  const id = `${tenant}/${rev}`;
  let archive = signed.get(id);
  if (archive === undefined) {
    archive = await signForTest(tenant, await buildFixtureBundle({
      modules: { [`${tenant}/authz.rego`]: moduleFor(tenant, rev) },
      entrypoints: [`${tenant}/authz/allow`, `${tenant}/authz/rev`, `${tenant}/authz/limit`],
      roots: [tenant],
      revision: rev,
    }), keys);
    signed.set(id, archive);
  }
  return archive;
}

/** The pointer as the admin sees it (sequence and revision), whatever the users tried. */
async function adminPointer(tenant: string): Promise<{ sequence: number; revision: string } | undefined> {
  const entry = await (await new Kvm(admin).open('pavilion-bundles')).get(tenant);
  if (entry === null || entry.operation !== 'PUT') return undefined;
  return { sequence: entry.revision, revision: (JSON.parse(entry.string()) as { revision: string }).revision };
}

before(async () => {
  const layout = await readFile(new URL('../docs/nats-permissions.conf', import.meta.url), 'utf8');
  nats = await startNats({
    extraConfig: layout,
    env: {
      PAVILION_NATS_ADMIN_PASSWORD: PASSWORDS.admin,
      PAVILION_NATS_SIDECAR_PASSWORD: PASSWORDS.sidecar,
      PAVILION_NATS_TEAM_BANK_PASSWORD: PASSWORDS.team_bank,
      PAVILION_NATS_TEAM_HOSPITAL_PASSWORD: PASSWORDS.team_hospital,
      PAVILION_NATS_TEAM_AGENCY_PASSWORD: PASSWORDS.team_agency,
    },
  });
  dir = await mkdtemp(join(tmpdir(), 'pavilion-nats-permissions-'));
  keys = join(dir, 'keys');

  // The admin provisions every bucket; no other user may create one.
  admin = await connect({ servers: [nats.url], user: 'admin', pass: PASSWORDS.admin, name: 'test-admin' });
  const kvm = new Kvm(admin);
  await kvm.create('pavilion-bundles', { history: DEPLOY_HISTORY });
  await kvm.create('pavilion-bundles-status', { history: 1 });
  const objm = new Objm(admin);
  await objm.create('pavilion-bundle-bank');
  await objm.create('pavilion-bundle-hospital');
  await objm.create('pavilion-bundle-agency');
  // the delta stream, as the layout's header says: no age limit, direct gets allowed
  await (await jetstreamManager(admin)).streams.add({ name: 'PAVILION_DELTAS', subjects: ['pavilion.delta.>'], allow_direct: true, duplicate_window: 120 * 1_000_000_000 });

  for (const user of ['sidecar', 'team_bank', 'team_hospital', 'team_agency'] as const) {
    const config = natsConfig(user);
    stores.set(user, new NatsBundleStore(await connectNats(config), config));
  }
  // hospital's own team deploys hospital, so there is something to protect
  await store('team_hospital').push('hospital', await bundle('hospital', 'h1'), { revision: 'h1', pushedBy: 'hospital-ci' });
});

after(async () => {
  for (const s of stores.values()) await s.close();
  await admin?.close().catch(() => undefined);
  await nats?.stop();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

describe('authentication', () => {
  test('a client without credentials, or with a wrong password -> ERR_DISTRIBUTION_PERMISSION (Authorization Violation)', async () => {
    const anonymous = parseConfig({ nats: { servers: [nats.url] } }).nats as NatsConfig;
    await assert.rejects(connectNats(anonymous), (error: unknown) => {
      assert.ok(error instanceof PavilionError);
      assert.equal(error.code, ErrorCodes.DISTRIBUTION_PERMISSION);
      assert.match(error.message, /Authorization Violation/);
      return true;
    });
    await assert.rejects(connectNats(natsConfig('team_bank', 'not-the-password')), /Authorization Violation/);
  });
});

describe('a policy team works on its own tenant', () => {
  test('team_bank pushes bank, reads its history and rolls it back', async () => {
    const bank = store('team_bank');
    const r1 = await bank.push('bank', await bundle('bank', 'r1'), { revision: 'r1', pushedBy: 'bank-ci' });
    const r2 = await bank.push('bank', await bundle('bank', 'r2'), { revision: 'r2', pushedBy: 'bank-ci' });
    assert.ok(r2.sequence > r1.sequence);
    const history = await bank.history('bank');
    assert.deepEqual(history.map((e) => [e.pointer.revision, e.pointer.action]), [['r1', 'push'], ['r2', 'push']]);
    const back = await bank.rollback('bank', { pushedBy: 'bank-oncall' });
    assert.equal(back.pointer.revision, 'r1');
    assert.equal(back.pointer.action, 'rollback');
    assert.equal(back.pointer.restores, r1.sequence);
    assert.deepEqual(await adminPointer('bank'), { sequence: back.sequence, revision: 'r1' });
  });

  test("team_hospital's CLI on its own inbox prefix (--inbox-prefix, or PAVILION_NATS_INBOX_PREFIX with the credentials from the environment) reads hospital's history; left on _INBOX it fails naming the Permissions Violation", async () => {
    const cli = ['--import', 'tsx', 'sidecar/src/cli/main.ts', 'bundle', 'history', '--tenant', 'hospital', '--nats', nats.url];
    const withFlags = await execFileAsync(process.execPath, [...cli, '--user', 'team_hospital', '--password', PASSWORDS.team_hospital, '--inbox-prefix', inboxPrefix('team_hospital')], { timeout: 60_000 });
    assert.match(withFlags.stdout, /h1 .*hospital-ci/);
    const fromEnvironment = await execFileAsync(process.execPath, cli, {
      timeout: 60_000,
      env: { ...process.env, PAVILION_NATS_USER: 'team_hospital', PAVILION_NATS_PASSWORD: PASSWORDS.team_hospital, PAVILION_NATS_INBOX_PREFIX: inboxPrefix('team_hospital') },
    });
    assert.equal(fromEnvironment.stdout, withFlags.stdout);
    await assert.rejects(
      execFileAsync(process.execPath, [...cli, '--user', 'team_hospital', '--password', PASSWORDS.team_hospital], { timeout: 60_000 }),
      (error: { code?: unknown; stderr?: string }) => {
        assert.equal(error.code, 1);
        assert.match(String(error.stderr), /Permissions Violation for Subscription to "_INBOX\./);
        return true;
      },
    );
  });

  test('team_hospital pushes hospital the same way', async () => {
    const entry = await store('team_hospital').push('hospital', await bundle('hospital', 'h2'), { revision: 'h2', pushedBy: 'hospital-ci' });
    assert.deepEqual(await adminPointer('hospital'), { sequence: entry.sequence, revision: 'h2' });
    assert.deepEqual((await store('team_hospital').history('hospital')).map((e) => e.pointer.revision), ['h1', 'h2']);
  });
});

describe("a policy team cannot touch another tenant's pointer or bundles", () => {
  test("team_bank pushing to hospital -> ERR_DISTRIBUTION_PERMISSION (hospital's object bucket cannot even be opened); hospital's pointer stays", async () => {
    const before = await adminPointer('hospital');
    await assert.rejects(
      store('team_bank').push('hospital', await bundle('bank', 'r1'), { revision: 'evil', pushedBy: 'mallory' }),
      permissionError('$JS.API.STREAM.INFO.OBJ_pavilion-bundle-hospital'),
    );
    assert.deepEqual(await adminPointer('hospital'), before);
  });

  test("team_bank rolling hospital back -> ERR_DISTRIBUTION_PERMISSION (hospital's history cannot be read)", async () => {
    const before = await adminPointer('hospital');
    await assert.rejects(store('team_bank').rollback('hospital', { pushedBy: 'mallory' }), historyRefused('hospital'));
    assert.deepEqual(await adminPointer('hospital'), before);
  });

  test('team_bank putting the hospital pointer directly (kv.put) -> Permissions Violation on $KV.pavilion-bundles.hospital', async () => {
    const before = await adminPointer('hospital');
    const forged = Buffer.from(JSON.stringify({ v: 1, tenant: 'hospital', revision: 'forged' }));
    await assert.rejects((await store('team_bank').pointers()).put('hospital', forged), violation('$KV.pavilion-bundles.hospital'));
    await assert.rejects(store('team_bank').nc.request('$KV.pavilion-bundles.hospital', forged), violation('$KV.pavilion-bundles.hospital'));
    assert.deepEqual(await adminPointer('hospital'), before);
  });

  test('a fire-and-forget publish to the hospital pointer is dropped by the server and reported as a permission error', async () => {
    const before = await adminPointer('hospital');
    const nc = store('team_bank').nc;
    const reported = (async () => {
      for await (const event of nc.status()) {
        if (event.type === 'error' && /Permissions Violation for Publish to "\$KV\.pavilion-bundles\.hospital"/.test(String(event.error.message))) return true;
      }
      return false;
    })();
    nc.publish('$KV.pavilion-bundles.hospital', Buffer.from('{"v":1,"tenant":"hospital","revision":"forged"}'));
    await nc.flush();
    assert.equal(await Promise.race([reported, new Promise<false>((resolve) => setTimeout(() => resolve(false), 5_000).unref())]), true);
    assert.deepEqual(await adminPointer('hospital'), before);
  });

  test("team_bank writing into hospital's object bucket -> Permissions Violation on $O.pavilion-bundle-hospital.*", async () => {
    await assert.rejects(store('team_bank').nc.request('$O.pavilion-bundle-hospital.C.chunk', Buffer.from('x')), violation('$O.pavilion-bundle-hospital.C.chunk'));
    await assert.rejects(store('team_bank').nc.request('$O.pavilion-bundle-hospital.M.meta', Buffer.from('{}')), violation('$O.pavilion-bundle-hospital.M.meta'));
  });

  test("team_bank reading hospital's history -> ERR_DISTRIBUTION_PERMISSION (a consumer over hospital's key is refused)", async () => {
    await assert.rejects(store('team_bank').history('hospital'), historyRefused('hospital'));
  });

  test("a consumer request naming bank in its subject but hospital in its body -> JetStream error 10131; with filter_subjects -> 10137", async () => {
    const nc = store('team_bank').nc;
    const subject = '$JS.API.CONSUMER.CREATE.KV_pavilion-bundles.sneaky.$KV.pavilion-bundles.bank';
    const one = await nc.request(subject, JSON.stringify({ stream_name: 'KV_pavilion-bundles', config: { name: 'sneaky', filter_subject: '$KV.pavilion-bundles.hospital', ack_policy: 'none' } }));
    assert.equal((one.json() as { error?: { err_code: number } }).error?.err_code, 10131, one.string());
    const many = await nc.request(subject, JSON.stringify({ stream_name: 'KV_pavilion-bundles', config: { name: 'sneaky', filter_subjects: ['$KV.pavilion-bundles.hospital'], ack_policy: 'none' } }));
    assert.equal((many.json() as { error?: { err_code: number } }).error?.err_code, 10137, many.string());
  });

  test('team_bank reading any pointer by message get (it would reach every key) -> ERR_DISTRIBUTION_PERMISSION', async () => {
    await assert.rejects(store('team_bank').current('hospital'), permissionError('$JS.API.STREAM.MSG.GET.KV_pavilion-bundles'));
  });

  test("team_bank purging or deleting the pointer stream, hospital's bucket or a consumer, or creating a bucket -> Permissions Violation", async () => {
    const nc = store('team_bank').nc;
    await assert.rejects(nc.request('$JS.API.STREAM.PURGE.KV_pavilion-bundles', JSON.stringify({ filter: '$KV.pavilion-bundles.hospital' })), violation('$JS.API.STREAM.PURGE.KV_pavilion-bundles'));
    await assert.rejects(nc.request('$JS.API.STREAM.PURGE.OBJ_pavilion-bundle-hospital', JSON.stringify({})), violation('$JS.API.STREAM.PURGE.OBJ_pavilion-bundle-hospital'));
    await assert.rejects(nc.request('$JS.API.STREAM.DELETE.OBJ_pavilion-bundle-hospital', ''), violation('$JS.API.STREAM.DELETE.OBJ_pavilion-bundle-hospital'));
    await assert.rejects(nc.request('$JS.API.CONSUMER.DELETE.KV_pavilion-bundles.any', ''), violation('$JS.API.CONSUMER.DELETE.KV_pavilion-bundles.any'));
    await assert.rejects(nc.request('$JS.API.STREAM.MSG.DELETE.KV_pavilion-bundles', JSON.stringify({ seq: 1 })), violation('$JS.API.STREAM.MSG.DELETE.KV_pavilion-bundles'));
    await assert.rejects(new Objm(nc).create('pavilion-bundle-other'), /Permissions Violation for Publish to "\$JS\.API\.STREAM\.(INFO|CREATE)\.OBJ_pavilion-bundle-other"/);
  });

  test('team_hospital pushing to bank -> ERR_DISTRIBUTION_PERMISSION; bank\'s pointer stays', async () => {
    const before = await adminPointer('bank');
    await assert.rejects(
      store('team_hospital').push('bank', await bundle('hospital', 'h1'), { revision: 'evil', pushedBy: 'mallory' }),
      permissionError('$JS.API.STREAM.INFO.OBJ_pavilion-bundle-bank'),
    );
    await assert.rejects((await store('team_hospital').pointers()).put('bank', Buffer.from('{}')), violation('$KV.pavilion-bundles.bank'));
    assert.deepEqual(await adminPointer('bank'), before);
  });
});

describe("each user receives on its own inbox prefix: no one reads another user's replies or deliveries", () => {
  /** Subscribe as `user`; the server's refusal closes the subscription with this error. */
  async function subscribeRefusal(user: User, subject: string): Promise<string> {
    const sub = store(user).nc.subscribe(subject, { callback: () => undefined });
    const closed = await Promise.race([
      sub.closed,
      new Promise<string>((resolve) => setTimeout(() => resolve('still subscribed'), 5_000).unref()),
    ]);
    if (!sub.isClosed()) sub.unsubscribe();
    return String(closed);
  }

  test("team_bank subscribing to the sidecar's inbox, another team's, or every inbox -> Permissions Violation for Subscription", async () => {
    for (const subject of ['_INBOX_sidecar.>', '_INBOX_team_hospital.>', '_INBOX.>', '>']) {
      const escaped = subject.replace(/[.$*>]/g, (c) => `\\${c}`);
      assert.match(await subscribeRefusal('team_bank', subject), new RegExp(`Permissions Violation for Subscription to "${escaped}"`), subject);
    }
  });

  test("the sidecar cannot subscribe to a team's inbox either; its own prefix it can", async () => {
    assert.match(await subscribeRefusal('sidecar', '_INBOX_team_bank.>'), /Permissions Violation for Subscription to "_INBOX_team_bank\.>"/);
    assert.equal(await subscribeRefusal('sidecar', `${inboxPrefix('sidecar')}.probe`), 'still subscribed');
  });

  test('a request from a client left on the default _INBOX prefix gets no reply (it may not subscribe there)', async () => {
    const config = parseConfig({ nats: { servers: [nats.url], user: 'team_bank', password: PASSWORDS.team_bank, name: 'test-default-inbox' } }).nats as NatsConfig;
    const nc = await connectNats(config);
    try {
      await assert.rejects(nc.request('$JS.API.INFO', '', { timeout: 2_000 }), /Permissions Violation for Subscription to "_INBOX\./);
    } finally {
      await nc.close();
    }
  });
});

describe('the sidecar user reads everything and moves nothing', () => {
  test('it lists tenants, reads both pointers and downloads both bundles', async () => {
    const sidecar = store('sidecar');
    assert.deepEqual(await sidecar.tenants(), ['bank', 'hospital']);
    const bank = await sidecar.current('bank');
    const hospital = await sidecar.current('hospital');
    assert.equal(bank?.pointer.revision, 'r1');
    assert.equal(hospital?.pointer.revision, 'h2');
    assert.deepEqual(await sidecar.fetch(bank!.pointer, 10 * 1024 * 1024), await bundle('bank', 'r1'));
    assert.deepEqual(await sidecar.fetch(hospital!.pointer, 10 * 1024 * 1024), await bundle('hospital', 'h2'));
    assert.deepEqual((await sidecar.history('hospital')).map((e) => e.pointer.revision), ['h1', 'h2']);
  });

  test('team_agency pushes agency (a tenant of values-production.yaml) and the sidecar downloads it', async () => {
    const pushed = await store('team_agency').push('agency', await bundle('agency', 'a1'), { revision: 'a1', pushedBy: 'agency-ci' });
    const agency = await store('sidecar').current('agency');
    assert.equal(agency?.sequence, pushed.sequence);
    assert.deepEqual(await store('sidecar').fetch(agency!.pointer, 10 * 1024 * 1024), await bundle('agency', 'a1'));
    await assert.rejects(
      store('team_agency').push('bank', await bundle('agency', 'a1'), { revision: 'evil', pushedBy: 'mallory' }),
      permissionError('$JS.API.STREAM.INFO.OBJ_pavilion-bundle-bank'),
    );
  });

  // without the $JS.FC grant this download stalls instead of failing: hence the timeout
  test('it downloads a bundle of several MB (flow control replies are granted)', { timeout: 30_000 }, async () => {
    const archive = Buffer.alloc(6 * 1024 * 1024, 0x5a);
    const digest = sha256Hex(archive);
    await (await new Objm(admin).open('pavilion-bundle-bank')).putBlob({ name: digest }, archive);
    // a pointer to that object by name (no one-chunk shortcut: the object has several chunks)
    const { object_nuid: _chunk, ...current } = (await store('sidecar').current('bank'))!.pointer;
    const pointer = { ...current, object: digest, digest, size_bytes: archive.length };
    assert.equal((await store('sidecar').fetch(pointer, 16 * 1024 * 1024)).length, archive.length);
  });

  test('putting a pointer -> Permissions Violation on $KV.pavilion-bundles.bank; a push -> ERR_DISTRIBUTION_PERMISSION (its chunk upload is refused, then the client\'s cleanup purge, which is the error reported)', async () => {
    const before = await adminPointer('bank');
    await assert.rejects((await store('sidecar').pointers()).put('bank', Buffer.from('{}')), violation('$KV.pavilion-bundles.bank'));
    await assert.rejects(store('sidecar').push('bank', await bundle('bank', 'r9'), { revision: 'r9', pushedBy: 'sidecar' }), (error: unknown) => {
      assert.ok(error instanceof PavilionError);
      assert.equal(error.code, ErrorCodes.DISTRIBUTION_PERMISSION);
      assert.match(error.message, violation('$JS.API.STREAM.PURGE.OBJ_pavilion-bundle-bank'));
      return true;
    });
    assert.deepEqual(await adminPointer('bank'), before);
  });

  test('it writes its status report into the status bucket', async () => {
    const revision = await (await store('sidecar').statusBucket()).put('sidecar-probe', Buffer.from('{"ok":true}'));
    assert.ok(revision > 0);
  });
});

describe('a sidecar running with the sidecar credentials', () => {
  let sidecar: RunningPavilion;

  async function revisionOf(): Promise<string | undefined> {
    const res = await post(`${sidecar.url}/v1/data/bank/authz/rev`, { input: {} }, { 'x-pavilion-tenant': 'bank' });
    return res.status === 200 ? (res.body['result'] as string | undefined) : undefined;
  }

  let auditDir: string;

  before(async () => {
    // back to a real bank bundle after the large-object probe above
    await store('team_bank').push('bank', await bundle('bank', 'r3'), { revision: 'r3', pushedBy: 'bank-ci' });
    // the operator provisions the decision stream; the sidecar may only look it up and publish
    await (await jetstreamManager(admin)).streams.add({ name: 'PAVILION_DECISIONS', subjects: ['pavilion.decisions.>'], duplicate_window: 10 * 60 * 1_000_000_000 });
    auditDir = await mkdtemp(join(tmpdir(), 'pavilion-permissions-audit-'));
    sidecar = await startPavilion({
      config: {
        labels: { id: 'sidecar-permissions' },
        tenants: [{ id: 'bank' }],
        decisionLog: { sink: 'audit', audit: { directory: auditDir, stream: { enabled: true, retryWaitMs: 50 } } },
        bundles: { source: 'nats', keysDirectory: keys },
        nats: {
          servers: [nats.url], user: 'sidecar', password: PASSWORDS.sidecar, inboxPrefix: inboxPrefix('sidecar'),
          connectTimeoutMs: 3_000, reconnectWaitMs: 50, reconnectJitterMs: 50, statusIntervalMs: 200,
        },
      },
    });
  });

  after(async () => {
    await sidecar?.stop();
    await rm(auditDir, { recursive: true, force: true });
  });

  test('serves the bank bundle team_bank pushed, then follows team_bank\'s next push and rollback', async () => {
    await until('r3 served', async () => (await revisionOf()) === 'r3');
    await store('team_bank').push('bank', await bundle('bank', 'r4'), { revision: 'r4', pushedBy: 'bank-ci' });
    await until('r4 served', async () => (await revisionOf()) === 'r4');
    await store('team_bank').rollback('bank', { pushedBy: 'bank-oncall' });
    await until('r3 served again', async () => (await revisionOf()) === 'r3');
    assert.equal(sidecar.pavilion.distribution?.status().state, 'OK');
  });

  test('team_bank publishes deltas of bank on its own grants, and the sidecar applies them on the sidecar grants; its status stays OK', async () => {
    await until('r3 served', async () => (await revisionOf()) === 'r3');
    const deploy = (await adminPointer('bank'))?.sequence;
    const limitOf = async (): Promise<unknown> => (await post(`${sidecar.url}/v1/data/bank/authz/limit`, { input: {} }, { 'x-pavilion-tenant': 'bank' })).body['result'];
    assert.equal(await limitOf(), undefined, 'the snapshot has no limit');
    const signing = await deltaSigning('bank', keys);
    const first = await store('team_bank').publishDelta('bank', { data: [{ op: 'upsert', path: '/bank/limits/max', value: 42 }] }, ['bank'], signing);
    assert.deepEqual([first.base, first.sequence], [deploy, 1]);
    await until('delta 1 applied by the sidecar', async () => (await limitOf()) === 42);
    const second = await store('team_bank').publishDelta('bank', { data: [{ op: 'upsert', path: '/bank/limits/max', value: 43 }] }, ['bank'], signing);
    assert.equal(second.sequence, 2);
    await until('delta 2 applied by the sidecar', async () => (await limitOf()) === 43);
    assert.equal(sidecar.pavilion.tenants.tenant('bank')?.lastError, undefined);
    const status = sidecar.pavilion.distribution?.status();
    assert.equal(status?.state, 'OK', JSON.stringify(status));
    assert.equal(status?.details?.['lastError'], undefined, JSON.stringify(status));
    // they came through its live delta consumer (one filter, in the API subject), not by
    // re-reading every pointer and the stream again and again after a refused consumer
    const jsm = await jetstreamManager(admin);
    const live = [];
    for await (const info of jsm.consumers.list('PAVILION_DELTAS')) {
      if (info.config.filter_subject === 'pavilion.delta.>' && info.config.deliver_policy === 'new') live.push(info.name);
    }
    assert.equal(live.length, 1, `live delta consumers: ${live.join(', ')}`);
    let pointerReads = 0;
    const spy = admin.subscribe('$JS.API.STREAM.MSG.GET.KV_pavilion-bundles', { callback: () => void pointerReads++ });
    await admin.flush();
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    spy.unsubscribe();
    assert.ok(pointerReads <= 2, `${pointerReads} pointer reads in a quiet second`);
  });

  test("team_bank publishing a delta of hospital -> ERR_DISTRIBUTION_PERMISSION; nothing reaches hospital's delta subject or record", async () => {
    await assert.rejects(
      store('team_bank').publishDelta('hospital', { data: [{ op: 'upsert', path: '/hospital/limits/max', value: 1 }] }, ['hospital']),
      (error: unknown) => error instanceof PavilionError && error.code === ErrorCodes.DISTRIBUTION_PERMISSION,
    );
    const nc = store('team_bank').nc;
    await assert.rejects(nc.request('pavilion.delta.hospital', Buffer.from('{}')), violation('pavilion.delta.hospital'));
    await assert.rejects(nc.request('$KV.pavilion-bundles.hospital.deltas', Buffer.from('{}')), violation('$KV.pavilion-bundles.hospital.deltas'));
    const jsm = await jetstreamManager(admin);
    const onHospital = await jsm.streams.getMessage('PAVILION_DELTAS', { last_by_subj: 'pavilion.delta.hospital' }).catch(() => null);
    assert.equal(onHospital, null);
    // and team_bank's own deltas still go through afterwards (a refusal on hospital's subjects is not remembered)
    const next = await store('team_bank').publishDelta('bank', { data: [{ op: 'upsert', path: '/bank/limits/max', value: 44 }] }, ['bank'], await deltaSigning('bank', keys));
    assert.equal(next.sequence, 3);
  });

  test('its decisions reach the decision stream with the sidecar grants (publish, stream info, acks on its inbox)', async () => {
    await until('r3 served', async () => (await revisionOf()) === 'r3');
    const answer = await post(`${sidecar.url}/v1/data/bank/authz/rev`, { input: { probe: 'stream' } }, { 'x-pavilion-tenant': 'bank' });
    const decisionId = answer.body['decision_id'] as string;
    assert.ok(decisionId);
    const jsm = await jetstreamManager(admin);
    await until('the decision is in the stream', async () => {
      try {
        const message = await jsm.streams.getMessage('PAVILION_DECISIONS', { last_by_subj: 'pavilion.decisions.bank' });
        return message !== null && (JSON.parse(message.string()) as { decision_id?: string }).decision_id === decisionId;
      } catch {
        return false;
      }
    });
    await until('every logged decision acknowledged', () => {
      const details = sidecar.pavilion.decisionStream?.status().details as { backlog?: number; state?: string } | undefined;
      return details?.backlog === 0 && details.state === 'forwarding';
    });
    assert.equal(sidecar.pavilion.decisionStream?.status().state, 'OK');
  });

  test('its status report reaches the status bucket', async () => {
    await until('status published', async () => {
      const entry = await (await new Kvm(admin).open('pavilion-bundles-status')).get('sidecar-permissions');
      if (entry === null) return false;
      const report = JSON.parse(entry.string()) as { bundles: Record<string, { active_revision?: string }> };
      return report.bundles['bank']?.active_revision === 'r3';
    });
  });
});
