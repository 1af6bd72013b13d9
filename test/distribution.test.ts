/**
 * Bundle distribution over a real nats-server with JetStream: push, watch, hot swap,
 * rollback, history, status, refusals (each with its code, the old revision serving), a
 * NATS outage under load, and a restart without NATS serving the last known good.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync, gzipSync } from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import { developmentKey, signBundle, signDelta, type PatchOperation } from '../sidecar/src/bundles/index.ts';
import { parseConfig, type NatsConfig } from '../sidecar/src/config/index.ts';
import { NatsBundleStore, connectNats, encodePointer, sha256Hex, type BundlePointer } from '../sidecar/src/distribution/index.ts';
import { abiVersionWasm, buildFixtureBundle, hostileWasm, makeTarGz, unpackFixture, type RawTarEntry } from './harness/fixtures.ts';
import { startNats, type RunningNats } from './harness/nats-server.ts';
import { until } from './harness/wait.ts';
import { deltaSigning, get, post, signForTest, startPavilion, type RunningPavilion } from './harness/pavilion-harness.ts';

const run = promisify(execFile);

function moduleFor(rev: string): string {
  return `package bank.authz\n\nallow if input.user == "alice"\n\nrev := "${rev}"\n`;
}

async function bankBundle(rev: string, metadata?: Record<string, unknown>): Promise<Buffer> {
  return buildFixtureBundle({
    modules: { 'bank/authz.rego': moduleFor(rev) },
    entrypoints: ['bank/authz/allow', 'bank/authz/rev'],
    roots: ['bank'],
    revision: rev,
    ...(metadata === undefined ? {} : { metadata }),
  });
}

let nats: RunningNats;
let dir: string;
let keys: string;
let natsConfig: NatsConfig;
let store: NatsBundleStore;
const signed = new Map<string, Buffer>();

async function signedBank(rev: string): Promise<Buffer> {
  let archive = signed.get(rev);
  if (archive === undefined) {
    archive = await signForTest('bank', await bankBundle(rev), keys);
    signed.set(rev, archive);
  }
  return archive;
}

/** Bank revision `rev` signed with the development key at `issuedAt` (seconds): the replay tests choose its iat. */
async function signedBankAt(rev: string, issuedAt: number): Promise<Buffer> {
  return signBundle(await bankBundle(rev), { ...(await deltaSigning('bank', keys)), issuedAt });
}

function sidecarConfig(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    labels: { id: `sidecar-${Math.random().toString(36).slice(2, 8)}` },
    tenants: [{ id: 'bank' }],
    bundles: { source: 'nats', keysDirectory: keys, ...(extra['bundles'] as object | undefined) },
    nats: { servers: [nats.url], connectTimeoutMs: 3_000, reconnectWaitMs: 50, reconnectJitterMs: 50, statusIntervalMs: 200 },
    ...Object.fromEntries(Object.entries(extra).filter(([k]) => k !== 'bundles')),
  };
}

async function revisionOf(sidecar: RunningPavilion): Promise<string | undefined> {
  const res = await post(`${sidecar.url}/v1/data/bank/authz/rev`, { input: {} }, { 'x-pavilion-tenant': 'bank' });
  return res.status === 200 ? (res.body['result'] as string | undefined) : undefined;
}

/** Ask `sidecar` for decisions back to back until stopped; count the answers that are not `ok`. */
function keepDeciding(sidecar: RunningPavilion, ok: (status: number, result: unknown) => boolean): { stop(): Promise<{ answered: number; failures: number }> } {
  let stopped = false;
  let answered = 0;
  let failures = 0;
  const loop = (async () => {
    while (!stopped) {
      const res = await post(`${sidecar.url}/v1/data/bank/authz/allow`, { input: { user: 'alice' } }, { 'x-pavilion-tenant': 'bank' });
      answered++;
      if (!ok(res.status, res.body['result'])) failures++;
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return { answered, failures };
    },
  };
}

async function refusalCode(sidecar: RunningPavilion): Promise<string | undefined> {
  return sidecar.pavilion.tenants.tenant('bank')?.lastError?.code;
}

before(async () => {
  nats = await startNats();
  dir = await mkdtemp(join(tmpdir(), 'pavilion-distribution-'));
  keys = join(dir, 'keys');
  natsConfig = parseConfig({ nats: { servers: [nats.url], name: 'test-publisher' } }).nats as NatsConfig;
  store = new NatsBundleStore(await connectNats(natsConfig), natsConfig);
});

after(async () => {
  await store?.close();
  await nats?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('push, hot swap, history, rollback', () => {
  let sidecar: RunningPavilion;

  before(async () => {
    await store.push('bank', await signedBank('r1'), { revision: 'r1', pushedBy: 'alice' });
    sidecar = await startPavilion({ config: sidecarConfig() });
  });

  after(async () => {
    await sidecar?.stop();
  });

  test('at start the sidecar reads the tenant pointer and serves that revision', async () => {
    await until('r1 served', async () => (await revisionOf(sidecar)) === 'r1');
  });

  test('a push is served without restarting; every request during the swap succeeds', async () => {
    const load = keepDeciding(sidecar, (status, result) => status === 200 && result === true);
    await store.push('bank', await signedBank('r2'), { revision: 'r2', pushedBy: 'bob', note: 'second' });
    await until('r2 served', async () => (await revisionOf(sidecar)) === 'r2');
    const { answered, failures } = await load.stop();
    assert.ok(answered > 0);
    assert.equal(failures, 0, `${failures} of ${answered} requests failed during the swap`);
  });

  test('history lists every deploy with who pushed and when', async () => {
    const history = await store.history('bank');
    assert.deepEqual(history.map((e) => [e.pointer.revision, e.pointer.action, e.pointer.pushed_by]), [['r1', 'push', 'alice'], ['r2', 'push', 'bob']]);
    assert.equal(history[1]?.pointer.note, 'second');
    assert.ok(history.every((e) => !Number.isNaN(Date.parse(e.pointer.pushed_at))));
  });

  test('rollback moves the pointer back and the sidecar follows; --to picks a deploy', async () => {
    const back = await store.rollback('bank', { pushedBy: 'carol' });
    assert.equal(back.pointer.revision, 'r1');
    assert.equal(back.pointer.action, 'rollback');
    await until('r1 served again', async () => (await revisionOf(sidecar)) === 'r1');
    const history = await store.history('bank');
    const r2deploy = history.find((e) => e.pointer.revision === 'r2' && e.pointer.action === 'push')?.sequence;
    await store.rollback('bank', { pushedBy: 'carol', to: r2deploy as number });
    await until('r2 served again', async () => (await revisionOf(sidecar)) === 'r2');
    await assert.rejects(store.rollback('bank', { pushedBy: 'carol', to: 99_999 }), /ERR_BUNDLE_REVISION_UNKNOWN|not in/);
  });

  test('GET /v1/status has OPA\'s Status API shape, and the report reaches the status bucket', async () => {
    const res = await get(`${sidecar.url}/v1/status`);
    assert.equal(res.status, 200);
    const report = res.body['result'] as { bundles: Record<string, Record<string, unknown>>; plugins: Record<string, { state: string }>; labels: Record<string, string> };
    assert.equal(report.bundles['bank']?.['active_revision'], 'r2');
    assert.equal(typeof report.bundles['bank']?.['last_successful_activation'], 'string');
    assert.equal(typeof report.bundles['bank']?.['last_successful_download'], 'string');
    assert.equal(report.plugins['distribution']?.state, 'OK');
    assert.equal(report.labels['id'], sidecar.config.labels.id);
    await until('status published', async () => {
      const entry = await (await store.statusBucket()).get(sidecar.config.labels.id);
      if (entry === null) return false;
      const published = JSON.parse(Buffer.from(entry.value).toString()) as { bundles: Record<string, { active_revision?: string }> };
      return published.bundles['bank']?.active_revision === 'r2';
    });
  });

  test('the CLI pushes, lists history and shows every sidecar\'s revision', async () => {
    const env = { ...process.env, PAVILION_NATS_URL: nats.url };
    const file = join(dir, 'r3.tar.gz');
    const { writeFile } = await import('node:fs/promises');
    await writeFile(file, await signedBank('r3'));
    const cli = ['--import', 'tsx', 'sidecar/src/cli/main.ts', 'bundle'];
    const pushed = await run(process.execPath, [...cli, 'push', '--tenant', 'bank', '--file', file, '--by', 'ci'], { env });
    assert.match(pushed.stdout, /pushed bank revision r3 as deploy \d+/);
    await until('r3 served', async () => (await revisionOf(sidecar)) === 'r3');
    const history = await run(process.execPath, [...cli, 'history', '--tenant', 'bank'], { env });
    assert.match(history.stdout, /r3 .* ci/);
    assert.match(history.stdout, /rollback\(\d+\)/);
    await sidecar.pavilion.distribution?.publishStatus();
    const status = await run(process.execPath, [...cli, 'status'], { env });
    assert.match(status.stdout, new RegExp(`${sidecar.config.labels.id}\\s+bank\\s+r3\\s+OK`));
  });
});

describe('refused pushes: a typed code in status, the previous revision keeps serving', () => {
  let sidecar: RunningPavilion;

  before(async () => {
    sidecar = await startPavilion({ config: sidecarConfig() });
    await store.push('bank', await signedBank('r5'), { revision: 'r5', pushedBy: 'alice' });
    await until('r5 served', async () => (await revisionOf(sidecar)) === 'r5');
  });

  after(async () => {
    await sidecar?.stop();
  });

  async function refused(push: () => Promise<unknown>, code: string): Promise<void> {
    const before = await revisionOf(sidecar);
    await push();
    await until(`refusal ${code}`, async () => (await refusalCode(sidecar)) === code);
    assert.equal(await revisionOf(sidecar), before, 'the previous revision keeps serving');
    const report = (await get(`${sidecar.url}/v1/status`)).body['result'] as { bundles: Record<string, { code?: string; active_revision?: string }> };
    assert.equal(report.bundles['bank']?.code, code);
    assert.equal(report.bundles['bank']?.active_revision, before);
  }

  test('an unsigned bundle -> ERR_BUNDLE_SIGNATURE_MISSING', async () => {
    await refused(async () => store.push('bank', await bankBundle('unsigned'), { revision: 'unsigned', pushedBy: 'mallory' }), 'ERR_BUNDLE_SIGNATURE_MISSING');
  });

  test("a bundle signed with another tenant's key -> ERR_BUNDLE_SIGNATURE_KEY_UNKNOWN", async () => {
    const other = await developmentKey('hospital', dir);
    const archive = await signBundle(await bankBundle('foreign-key'), { key: other.keyPem, algorithm: 'ES256', keyId: 'hospital', scope: 'bank' });
    await refused(() => store.push('bank', archive, { revision: 'foreign-key', pushedBy: 'mallory' }), 'ERR_BUNDLE_SIGNATURE_KEY_UNKNOWN');
  });

  test('a bundle whose decision test vectors fail -> ERR_BUNDLE_TESTS_FAILED', async () => {
    const archive = await signForTest('bank', await bankBundle('bad-tests', {
      decision_tests: [{ name: 'alice may', path: 'bank/authz/allow', input: { user: 'alice' }, expect: false }],
    }), keys);
    await refused(() => store.push('bank', archive, { revision: 'bad-tests', pushedBy: 'dave' }), 'ERR_BUNDLE_TESTS_FAILED');
    const details = sidecar.pavilion.tenants.tenant('bank')?.lastError?.details as { failed: Array<{ name: string; actual: unknown }> };
    assert.deepEqual(details.failed.map((f) => [f.name, f.actual]), [['alice may', true]]);
  });

  test('a bundle whose test vectors pass is activated, and status says how many passed', async () => {
    const archive = await signForTest('bank', await bankBundle('good-tests', {
      decision_tests: [
        { name: 'alice may', path: 'bank/authz/allow', input: { user: 'alice' }, expect: true },
        { name: 'bob may not (undefined)', path: 'bank/authz/allow', input: { user: 'bob' } },
      ],
    }), keys);
    await store.push('bank', archive, { revision: 'good-tests', pushedBy: 'dave' });
    await until('good-tests served', async () => (await revisionOf(sidecar)) === 'good-tests');
    assert.equal(sidecar.pavilion.tenants.tenant('bank')?.testsPassed, 2);
    // back to r5 for the next cases, through a rollback (a push of r5 would be a replay);
    // the deploy just before is a refused one, so name r5's deploy
    const r5 = (await store.history('bank')).find((e) => e.pointer.revision === 'r5')?.sequence as number;
    await store.rollback('bank', { pushedBy: 'dave', to: r5 });
    await until('r5 again', async () => (await revisionOf(sidecar)) === 'r5');
  });

  test('a replayed older revision pushed as new -> ERR_BUNDLE_REPLAYED', async () => {
    await refused(async () => store.push('bank', await signedBank('r1'), { revision: 'r1', pushedBy: 'mallory' }), 'ERR_BUNDLE_REPLAYED');
  });

  test('a corrupt archive -> ERR_BUNDLE_CORRUPT', async () => {
    await refused(() => store.push('bank', Buffer.from('not gzip at all'), { revision: 'x', pushedBy: 'mallory' }), 'ERR_BUNDLE_CORRUPT');
  });

  test('a decompression bomb -> ERR_BUNDLE_TOO_LARGE', async () => {
    await refused(() => store.push('bank', gzipSync(Buffer.alloc(200 * 1024 * 1024)), { revision: 'bomb', pushedBy: 'mallory' }), 'ERR_BUNDLE_TOO_LARGE');
  });

  test('a pointer whose digest does not match the object -> ERR_BUNDLE_DIGEST_MISMATCH', async () => {
    const archive = await signedBank('r6');
    const good = await store.push('bank', archive, { revision: 'r6', pushedBy: 'alice' });
    await until('r6 served', async () => (await revisionOf(sidecar)) === 'r6');
    assert.ok(good.pointer.object_nuid !== undefined, 'a one-chunk bundle: the pointer names its chunk');
    // through the chunk named in the pointer: the bytes are r6's, the pointer claims r5's digest
    const forgedDigest: BundlePointer = { ...good.pointer, digest: sha256Hex(await signedBank('r5')), revision: 'forged' };
    await (await store.pointers()).put('bank', encodePointer(forgedDigest));
    await until('digest refusal', async () => (await refusalCode(sidecar)) === 'ERR_BUNDLE_DIGEST_MISMATCH');
    assert.equal(await revisionOf(sidecar), 'r6');
    // through the object name (no chunk in the pointer): the object is r5's, the digest r6's
    await until('refusal cleared', async () => {
      await store.push('bank', await signedBank('r6'), { revision: 'r6', pushedBy: 'alice' });
      return (await refusalCode(sidecar)) === undefined;
    });
    const { object_nuid: _nuid, ...byName } = { ...good.pointer, object: sha256Hex(await signedBank('r5')), revision: 'forged-by-name' };
    await (await store.pointers()).put('bank', encodePointer(byName));
    await until('digest refusal by name', async () => (await refusalCode(sidecar)) === 'ERR_BUNDLE_DIGEST_MISMATCH');
    assert.equal(await revisionOf(sidecar), 'r6');
  });

  test('a malformed pointer, or one naming another tenant -> ERR_BUNDLE_POINTER_INVALID', async () => {
    await (await store.pointers()).put('bank', Buffer.from('{"v":1,"tenant":"hospital"}'));
    await until('pointer refusal', async () => (await refusalCode(sidecar)) === 'ERR_BUNDLE_POINTER_INVALID');
    await (await store.pointers()).put('bank', Buffer.from('not json'));
    await until('pointer refusal 2', async () => (await sidecar.pavilion.tenants.tenant('bank')?.lastError?.message ?? '').includes('not JSON'));
    assert.equal(await revisionOf(sidecar), 'r6');
  });

  // The structural refusals, each pushed over NATS and signed like a real bundle (the
  // archive checks run before the signature, so these are what a compromised build or a
  // bug would produce).
  const hostile: Array<[string, (entries: RawTarEntry[]) => RawTarEntry[], string]> = [
    ['path traversal (../)', (e) => [...e, { name: '../../etc/cron.d/x/data.json', data: '{}' }], 'ERR_BUNDLE_PATH_TRAVERSAL'],
    ['no .manifest', (e) => e.filter((x) => x.name !== '.manifest'), 'ERR_BUNDLE_MANIFEST_MISSING'],
    ['overlapping roots', (e) => e.map((x) => (x.name === '.manifest' ? { name: x.name, data: JSON.stringify({ revision: 'o', roots: ['bank', 'bank/authz'], wasm: [{ entrypoint: 'bank/authz/allow', module: '/policy.wasm' }] }) } : x)), 'ERR_BUNDLE_ROOTS_OVERLAP'],
    ['foreign roots (another tenant\'s namespace)', (e) => e.map((x) => (x.name === '.manifest' ? { name: x.name, data: JSON.stringify({ revision: 'f', roots: ['bank', 'hospital'], wasm: [{ entrypoint: 'bank/authz/allow', module: '/policy.wasm' }] }) } : x)), 'ERR_BUNDLE_ROOTS_FOREIGN'],
    ['Wasm whose start function never returns (fails to instantiate)', (e) => e.map((x) => (x.name === 'policy.wasm' ? { name: x.name, data: hostileWasm('start') } : x)), 'ERR_BUNDLE_WASM_INVALID'],
    ['Wasm of another OPA ABI (2.0)', (e) => e.map((x) => (x.name === 'policy.wasm' ? { name: x.name, data: abiVersionWasm(2, 0) } : x)), 'ERR_BUNDLE_ABI_UNSUPPORTED'],
  ];
  for (const [what, change, code] of hostile) {
    test(`${what} -> ${code}`, async () => {
      const archive = await signForTest('bank', makeTarGz(change(await unpackFixture(await bankBundle(`hostile-${code}`)))), keys);
      await refused(() => store.push('bank', archive, { revision: `hostile-${code}`, pushedBy: 'mallory' }), code);
    });
  }

  test('a pointer to a bundle over the size limit -> ERR_BUNDLE_TOO_LARGE before download', async () => {
    const archive = await signedBank('r6');
    const pointer: BundlePointer = {
      v: 1, tenant: 'bank', revision: 'huge', object: sha256Hex(archive), digest: sha256Hex(archive), size_bytes: 10 * 1024 * 1024 * 1024,
      action: 'push', pushed_by: 'mallory', pushed_at: new Date().toISOString(),
    };
    await (await store.pointers()).put('bank', encodePointer(pointer));
    await until('size refusal', async () => (await refusalCode(sidecar)) === 'ERR_BUNDLE_TOO_LARGE');
    assert.equal(await revisionOf(sidecar), 'r6');
  });
});

describe('replay guard: keyed on the signed content, not the gzip bytes', () => {
  test('a replaced revision re-gzipped at another compression level -> ERR_BUNDLE_REPLAYED, the active revision keeps serving', async () => {
    // the same iat for both, so only the replaced-revision record can refuse the replay
    const issuedAt = Math.floor(Date.now() / 1000) - 60;
    const sign = (rev: string): Promise<Buffer> => signedBankAt(rev, issuedAt);
    const first = await sign('replay-a');
    await store.push('bank', first, { revision: 'replay-a', pushedBy: 'alice' });
    const sidecar = await startPavilion({ config: sidecarConfig() });
    try {
      await until('replay-a served', async () => (await revisionOf(sidecar)) === 'replay-a');
      await store.push('bank', await sign('replay-b'), { revision: 'replay-b', pushedBy: 'alice' });
      await until('replay-b served', async () => (await revisionOf(sidecar)) === 'replay-b');
      const repacked = gzipSync(gunzipSync(first), { level: 1 });
      assert.notEqual(sha256Hex(repacked), sha256Hex(first), 'other gzip bytes, other digest');
      await store.push('bank', repacked, { revision: 'replay-a', pushedBy: 'mallory' });
      await until('replay refusal', async () => (await refusalCode(sidecar)) === 'ERR_BUNDLE_REPLAYED');
      assert.equal(await revisionOf(sidecar), 'replay-b');
    } finally {
      await sidecar.stop();
    }
  });
});

describe('replay guard across a restart', () => {
  test('a revision replaced before the sidecar restarted, pushed again after -> ERR_BUNDLE_REPLAYED (remembered with the last known good), the active revision keeps serving', async () => {
    const issuedAt = Math.floor(Date.now() / 1000) - 60; // one iat for both: only the memory can refuse
    const sign = (rev: string): Promise<Buffer> => signedBankAt(rev, issuedAt);
    const old = await sign('restart-a');
    const persistDirectory = join(dir, 'restart-lkg');
    const config = sidecarConfig({ bundles: { persistDirectory, persistDelayMs: 0 } });
    const pushedOld = await store.push('bank', old, { revision: 'restart-a', pushedBy: 'alice' });
    const first = await startPavilion({ config });
    let contentOfOld: string | undefined;
    try {
      await until('restart-a served', async () => (await revisionOf(first)) === 'restart-a');
      contentOfOld = first.pavilion.tenants.tenant('bank')?.signature?.contentSha256;
      await store.push('bank', await sign('restart-b'), { revision: 'restart-b', pushedBy: 'alice' });
      await until('restart-b served', async () => (await revisionOf(first)) === 'restart-b');
    } finally {
      await first.stop();
    }
    const meta = JSON.parse(await readFile(join(persistDirectory, 'bank', 'meta.json'), 'utf8')) as { revision: string; replaced?: string[] };
    assert.equal(meta.revision, 'restart-b');
    assert.match(contentOfOld ?? '', /^[0-9a-f]{64}$/);
    assert.deepEqual(meta.replaced, [contentOfOld], 'restart-a is remembered as replaced, by its signed content');
    const second = await startPavilion({ config });
    try {
      await until('restart-b served after the restart', async () => (await revisionOf(second)) === 'restart-b' && second.pavilion.tenants.tenant('bank')?.origin?.kind !== 'persisted');
      await store.push('bank', old, { revision: 'restart-a', pushedBy: 'mallory' });
      await until('replay refusal', async () => (await refusalCode(second)) === 'ERR_BUNDLE_REPLAYED');
      assert.equal(await revisionOf(second), 'restart-b');
      // pushed again at once: the deploy before it names the same bytes, but no rollback brought them back
      const firstRefusal = second.pavilion.tenants.tenant('bank')?.lastError?.at;
      await store.push('bank', old, { revision: 'restart-a', pushedBy: 'mallory' });
      await until('the second push refused too', async () => {
        const error = second.pavilion.tenants.tenant('bank')?.lastError;
        return error?.code === 'ERR_BUNDLE_REPLAYED' && error.at !== firstRefusal;
      });
      assert.equal(await revisionOf(second), 'restart-b');
      // what a rollback is for: it brings restart-a back, remembered or not
      await store.rollback('bank', { to: pushedOld.sequence, pushedBy: 'oncall' });
      await until('restart-a served after the rollback', async () => (await revisionOf(second)) === 'restart-a');
    } finally {
      await second.stop();
    }
  });

  for (const sawOld of [true, false]) {
    const refusal = sawOld ? 'the replay memory (it served the old revision before)' : "the older iat (it never served the old revision)";
    test(`a rollback and a re-push of the same bytes made while a sidecar was down: it follows them at start like the fleet, though ${refusal} would refuse the push`, async () => {
      const now = Math.floor(Date.now() / 1000);
      const rev = (name: string): string => `missed-${sawOld ? 'seen' : 'unseen'}-${name}`;
      const sign = (name: string, issuedAt: number): Promise<Buffer> => signedBankAt(rev(name), issuedAt);
      const old = await sign('a', now - 120);
      const config = sidecarConfig({ bundles: { persistDirectory: join(dir, `lkg-${rev('')}`), persistDelayMs: 0 } });
      const a = await store.push('bank', old, { revision: rev('a'), pushedBy: 'alice' });
      if (!sawOld) await store.push('bank', await sign('b', now - 60), { revision: rev('b'), pushedBy: 'alice' });
      const first = await startPavilion({ config });
      try {
        if (sawOld) {
          await until('a served', async () => (await revisionOf(first)) === rev('a'));
          await store.push('bank', await sign('b', now - 60), { revision: rev('b'), pushedBy: 'alice' });
        }
        await until('b served', async () => (await revisionOf(first)) === rev('b'));
      } finally {
        await first.stop();
      }
      // while it is down: back to a, then CI pushes a's bytes again
      await store.rollback('bank', { to: a.sequence, pushedBy: 'oncall' });
      await store.push('bank', old, { revision: rev('a'), pushedBy: 'ci' });
      const second = await startPavilion({ config });
      try {
        await until('a served after the restart', async () => (await revisionOf(second)) === rev('a') && second.pavilion.tenants.tenant('bank')?.origin?.kind === 'push');
        assert.equal(second.pavilion.tenants.tenant('bank')?.lastError, undefined);
      } finally {
        await second.stop();
      }
    });
  }
});

describe('NATS outages', () => {
  test('killing nats-server mid-load: every request still succeeds, and the sidecar catches up when it returns', async () => {
    await store.push('bank', await signedBank('r7'), { revision: 'r7', pushedBy: 'alice' });
    const sidecar = await startPavilion({ config: sidecarConfig() });
    try {
      await until('r7 served', async () => (await revisionOf(sidecar)) === 'r7');
      const load = keepDeciding(sidecar, (status) => status === 200);
      await nats.kill();
      await until('distribution reports the outage', () => sidecar.pavilion.distribution?.status().state === 'WARN');
      const health = await get(`${sidecar.url}/health?verbose`);
      assert.equal(health.status, 200, 'still ready: it serves its active revisions');
      assert.match(JSON.stringify(health.body), /disconnected/);
      await new Promise((resolve) => setTimeout(resolve, 300));
      await nats.restart();
      // a deploy made by a publisher while the sidecar is still reconnecting
      const publisher = new NatsBundleStore(await connectNats(natsConfig), natsConfig);
      await publisher.push('bank', await signedBank('r8'), { revision: 'r8', pushedBy: 'alice' });
      await publisher.close();
      await until('r8 served after the outage', async () => (await revisionOf(sidecar)) === 'r8', 20_000);
      const { answered, failures } = await load.stop();
      assert.equal(failures, 0, `${failures} of ${answered} requests failed during the outage`);
      // OK again once its watches run on the new connection: the live delta consumer a server
      // restart lost is made again (WARN with its code meanwhile)
      await until('distribution OK again', () => sidecar.pavilion.distribution?.status().state === 'OK', 30_000);
    } finally {
      await sidecar.stop();
    }
  });

  test('a restart while NATS is unreachable serves the persisted revision and says so in health', async () => {
    const persistDirectory = join(dir, 'lkg');
    const first = await startPavilion({ config: sidecarConfig({ bundles: { persistDirectory } }) });
    await until('current revision served', async () => (await revisionOf(first)) === 'r8');
    await first.stop();
    await nats.kill();
    try {
      const second = await startPavilion({ config: sidecarConfig({ bundles: { persistDirectory }, nats: { servers: [nats.url], connectTimeoutMs: 200, reconnectWaitMs: 50 } }) });
      try {
        assert.equal(await revisionOf(second), 'r8');
        const health = await get(`${second.url}/health?verbose`);
        assert.equal(health.status, 200);
        assert.match(JSON.stringify(health.body), /persisted \(last known good\)/);
        assert.match(JSON.stringify(health.body), /not reachable/);
        const report = (await get(`${second.url}/v1/status`)).body['result'] as { bundles: Record<string, { pavilion: { origin: string }; last_successful_download?: string; last_successful_activation?: string }> };
        assert.equal(report.bundles['bank']?.pavilion.origin, 'persisted');
        assert.equal(typeof report.bundles['bank']?.last_successful_activation, 'string');
        assert.equal(report.bundles['bank']?.last_successful_download, undefined, 'read back from disk, not downloaded');
      } finally {
        await second.stop();
      }
    } finally {
      await nats.restart();
    }
  });
});

describe('delta data updates (patch.json semantics, sequence guard)', () => {
  let sidecar: RunningPavilion;
  const limitModule = 'package bank.authz\n\nallow if input.amount <= data.bank.limits.max\n\nrev := "limits"\n';

  async function allows(target: RunningPavilion, amount: number): Promise<boolean> {
    const res = await post(`${target.url}/v1/data/bank/authz/allow`, { input: { amount } }, { 'x-pavilion-tenant': 'bank' });
    return res.body['result'] === true;
  }

  /** Publish a delta as given (any sequence, any roots), signed with the bank key unless `signing` says otherwise. */
  async function publishRaw(message: { base: unknown; sequence: number; roots: string[]; patch: { data: PatchOperation[] } } & Record<string, unknown>, signing: 'bank' | 'none' = 'bank'): Promise<void> {
    const { jetstream } = await import('@nats-io/jetstream');
    await store.ensureDeltaStream();
    const signatures = signing === 'none'
      ? undefined
      : await signDelta({ tenant: 'bank', base: message.base as number, sequence: message.sequence, roots: message.roots, operations: message.patch.data }, await deltaSigning('bank', keys));
    await jetstream(store.nc).publish(store.deltaSubject('bank'), Buffer.from(JSON.stringify({ ...message, ...(signatures === undefined ? {} : { signatures }) })));
  }

  before(async () => {
    // the publisher's connection lived through the outage tests: wait for its reconnect
    await until('publisher reconnected', async () => store.nc.flush().then(() => true, () => false));
    const archive = await signForTest('bank', await buildFixtureBundle({
      modules: { 'bank/authz.rego': limitModule },
      entrypoints: ['bank/authz/allow', 'bank/authz/rev'],
      roots: ['bank'],
      revision: 'limits',
      data: { 'bank/limits': { max: 10 } },
    }), keys);
    await store.push('bank', archive, { revision: 'limits', pushedBy: 'alice' });
    sidecar = await startPavilion({ config: sidecarConfig() });
    await until('limits served', async () => (await revisionOf(sidecar)) === 'limits');
  });

  after(async () => {
    await sidecar?.stop();
  });

  test('an upsert changes the data without recompiling or a new revision', async () => {
    assert.equal(await allows(sidecar, 15), false);
    const digest = sidecar.pavilion.engine.active('bank')?.bundleDigest;
    const delta = await store.publishDelta('bank', { data: [{ op: 'upsert', path: '/bank/limits/max', value: 20 }] }, ['bank'], await deltaSigning('bank', keys));
    assert.equal(delta.sequence, 1);
    await until('delta 1 applied', async () => allows(sidecar, 15));
    assert.equal(sidecar.pavilion.engine.active('bank')?.bundleDigest, digest, 'same bundle, same compiled module');
    assert.equal(await revisionOf(sidecar), 'limits');
    assert.deepEqual(sidecar.pavilion.tenants.deltaState('bank')?.sequence, 1);
  });

  test('a lost delta is detected, and the data is rebuilt from the snapshot once it arrives', async () => {
    const base = sidecar.pavilion.tenants.deltaState('bank')?.base;
    await publishRaw({ v: 1, tenant: 'bank', base, sequence: 3, roots: ['bank'], patch: { data: [{ op: 'replace', path: '/bank/limits/max', value: 40 }] } });
    await until('gap detected', async () => (await refusalCode(sidecar)) === 'ERR_BUNDLE_DELTA_SEQUENCE');
    assert.equal(await allows(sidecar, 35), false, 'nothing after the gap is applied');
    await publishRaw({ v: 1, tenant: 'bank', base, sequence: 2, roots: ['bank'], patch: { data: [{ op: 'upsert', path: '/bank/limits/currency', value: 'EUR' }] } });
    await until('rebuilt through delta 3', async () => sidecar.pavilion.tenants.deltaState('bank')?.sequence === 3, 10_000);
    assert.equal(await allows(sidecar, 35), true);
  });

  test('a sidecar started later replays the deploy\'s deltas from the stream', async () => {
    const late = await startPavilion({ config: sidecarConfig() });
    try {
      await until('late sidecar caught up', async () => late.pavilion.tenants.deltaState('bank')?.sequence === 3, 10_000);
      assert.equal(await allows(late, 35), true);
    } finally {
      await late.stop();
    }
  });

  test('remove and replace need an existing path: a remove of a missing one -> ERR_BUNDLE_DELTA_INVALID, data unchanged', async () => {
    const delta = await store.publishDelta('bank', { data: [{ op: 'remove', path: '/bank/limits/nope' }] }, ['bank'], await deltaSigning('bank', keys));
    assert.equal(delta.sequence, 4);
    await until('delta refusal', async () => (await refusalCode(sidecar)) === 'ERR_BUNDLE_DELTA_INVALID');
    assert.equal(await allows(sidecar, 35), true);
    assert.equal(sidecar.pavilion.tenants.deltaState('bank')?.sequence, 3, 'a refused delta stops the sequence until the next deploy');
  });

  test('a new deploy starts from its own data: the old deploy\'s deltas no longer apply', async () => {
    const archive = await signForTest('bank', await buildFixtureBundle({
      modules: { 'bank/authz.rego': limitModule.replace('"limits"', '"limits2"') },
      entrypoints: ['bank/authz/allow', 'bank/authz/rev'],
      roots: ['bank'],
      revision: 'limits2',
      data: { 'bank/limits': { max: 10 } },
    }), keys);
    await store.push('bank', archive, { revision: 'limits2', pushedBy: 'alice' });
    await until('limits2 served', async () => (await revisionOf(sidecar)) === 'limits2');
    assert.equal(await allows(sidecar, 15), false);
    assert.equal(sidecar.pavilion.tenants.deltaState('bank')?.sequence, 0);
    const next = await store.publishDelta('bank', { data: [{ op: 'upsert', path: '/bank/limits/max', value: 100 }] }, ['bank'], await deltaSigning('bank', keys));
    assert.equal(next.sequence, 1, 'a new deploy numbers its deltas from 1');
    await until('delta on new deploy', async () => allows(sidecar, 99));
  });

  test('a delta with other roots than its snapshot -> ERR_BUNDLE_DELTA_ROOTS', async () => {
    const base = sidecar.pavilion.tenants.deltaState('bank')?.base;
    await publishRaw({ v: 1, tenant: 'bank', base, sequence: 2, roots: ['hospital'], patch: { data: [] } });
    await until('roots refusal', async () => (await refusalCode(sidecar)) === 'ERR_BUNDLE_DELTA_ROOTS');
    assert.equal(await allows(sidecar, 99), true);
  });

  test('deltas are signed like bundles: unsigned, signed by another key, or moved to another place in the sequence -> refused with the signature code, data unchanged', async () => {
    const state = sidecar.pavilion.tenants.deltaState('bank');
    const base = state?.base;
    const next = (state?.sequence ?? 0) + 1;
    const raise = { data: [{ op: 'upsert' as const, path: '/bank/limits/max', value: 1_000_000 }] };
    await publishRaw({ v: 1, tenant: 'bank', base, sequence: next, roots: ['bank'], patch: raise }, 'none');
    await until('unsigned refused', async () => (await refusalCode(sidecar)) === 'ERR_BUNDLE_SIGNATURE_MISSING');
    assert.equal(await allows(sidecar, 500_000), false);
    const other = await developmentKey('hospital', dir);
    const foreign = await signDelta({ tenant: 'bank', base: base as number, sequence: next, roots: ['bank'], operations: raise.data }, { key: other.keyPem, algorithm: 'ES256', keyId: 'hospital', scope: 'bank' });
    await publishRaw({ v: 1, tenant: 'bank', base, sequence: next, roots: ['bank'], patch: raise, signatures: foreign }, 'none');
    await until('foreign key refused', async () => (await refusalCode(sidecar)) === 'ERR_BUNDLE_SIGNATURE_KEY_UNKNOWN');
    // a genuine signature, made for another place in the sequence
    const elsewhere = await signDelta({ tenant: 'bank', base: base as number, sequence: next + 5, roots: ['bank'], operations: raise.data }, await deltaSigning('bank', keys));
    await publishRaw({ v: 1, tenant: 'bank', base, sequence: next, roots: ['bank'], patch: raise, signatures: elsewhere }, 'none');
    await until('moved signature refused', async () => (await refusalCode(sidecar)) === 'ERR_BUNDLE_SIGNATURE_FILES');
    assert.equal(await allows(sidecar, 500_000), false);
    assert.equal(sidecar.pavilion.tenants.deltaState('bank')?.sequence, next - 1, 'nothing was applied');
    // the same delta, signed for its place, is applied
    await publishRaw({ v: 1, tenant: 'bank', base, sequence: next, roots: ['bank'], patch: raise });
    await until('signed delta applied', async () => allows(sidecar, 500_000));
  });
});

describe('shadow mode: a staged revision evaluated on live traffic beside the active one', () => {
  let sidecar: RunningPavilion;
  const active = 'package bank.authz\n\nallow if input.user == "alice"\n\nrev := "shadow-active"\n';
  const candidate = 'package bank.authz\n\nallow if input.user in {"alice", "bob"}\n\nrev := "shadow-candidate"\n';

  async function bundleOf(module: string, rev: string, metadata?: Record<string, unknown>): Promise<Buffer> {
    return signForTest('bank', await buildFixtureBundle({
      modules: { 'bank/authz.rego': module }, entrypoints: ['bank/authz/allow', 'bank/authz/rev'], roots: ['bank'], revision: rev,
      ...(metadata === undefined ? {} : { metadata }),
    }), keys);
  }

  async function decide(user: string): Promise<unknown> {
    return (await post(`${sidecar.url}/v1/data/bank/authz/allow`, { input: { user } }, { 'x-pavilion-tenant': 'bank' })).body['result'];
  }

  function shadowReport(): { revision: string; evaluations: number; differences: number; errors: number; samples: Array<Record<string, unknown>> } | undefined {
    return sidecar.pavilion.tenants.tenant('bank')?.shadow as never;
  }

  /** Why the last revision staged as a shadow was refused (not the active revision's lastError). */
  function shadowRefusal(): string | undefined {
    return sidecar.pavilion.tenants.tenant('bank')?.shadowError?.code;
  }

  before(async () => {
    await until('publisher connected', async () => store.nc.flush().then(() => true, () => false));
    await store.push('bank', await bundleOf(active, 'shadow-active'), { revision: 'shadow-active', pushedBy: 'alice' });
    sidecar = await startPavilion({ config: sidecarConfig() });
    await until('active served', async () => (await revisionOf(sidecar)) === 'shadow-active');
  });

  after(async () => {
    await sidecar?.stop();
  });

  test('live decisions are answered by the active revision and compared on the shadow one', async () => {
    await store.pushShadow('bank', await bundleOf(candidate, 'shadow-candidate'), { revision: 'shadow-candidate', pushedBy: 'carol' });
    await until('shadow staged', () => shadowReport()?.revision === 'shadow-candidate');
    assert.equal(await decide('alice'), true);
    assert.equal(await decide('bob'), undefined, 'answers still come from the active revision');
    await until('two comparisons', () => (shadowReport()?.evaluations ?? 0) >= 2);
    const report = shadowReport();
    assert.equal(report?.differences, 1);
    assert.equal(report?.errors, 0);
    const sample = report?.samples[0];
    assert.equal(sample?.['path'], 'bank/authz/allow');
    assert.equal(sample?.['active'], null);
    assert.equal(sample?.['shadow'], true);
    assert.match(String(sample?.['input_sha256']), /^[0-9a-f]{64}$/);
    assert.equal(JSON.stringify(sample).includes('bob'), false, 'samples carry an input hash, not the input');
    const status = (await get(`${sidecar.url}/v1/status`)).body['result'] as { bundles: Record<string, { active_revision: string; pavilion: { shadow?: { differences: number } } }> };
    assert.equal(status.bundles['bank']?.active_revision, 'shadow-active');
    assert.equal(status.bundles['bank']?.pavilion.shadow?.differences, 1);
  });

  test('a shadow revision that fails its test vectors is refused and never evaluated', async () => {
    await store.pushShadow('bank', await bundleOf(candidate.replace('shadow-candidate', 'shadow-bad'), 'shadow-bad', {
      decision_tests: [{ name: 'bob is denied', path: 'bank/authz/allow', input: { user: 'bob' } }],
    }), { revision: 'shadow-bad', pushedBy: 'carol' });
    await until('shadow refusal', () => shadowRefusal() === 'ERR_BUNDLE_TESTS_FAILED');
    assert.equal(shadowReport()?.revision, 'shadow-candidate', 'the previous shadow stays');
    assert.equal(await refusalCode(sidecar), undefined, 'the active revision is not the one refused');
    assert.equal(sidecar.pavilion.tenants.tenant('bank')?.state, 'OK');
    const status = (await get(`${sidecar.url}/v1/status`)).body['result'] as { bundles: Record<string, { code?: string; pavilion: { shadow_error?: { code: string } } }> };
    assert.equal(status.bundles['bank']?.code, undefined);
    assert.equal(status.bundles['bank']?.pavilion.shadow_error?.code, 'ERR_BUNDLE_TESTS_FAILED');
  });

  test('a shadow revision passes the activation gate: an unsigned one is refused before it is loaded', async () => {
    const unsigned = await buildFixtureBundle({
      modules: { 'bank/authz.rego': candidate.replace('shadow-candidate', 'shadow-unsigned') }, entrypoints: ['bank/authz/allow', 'bank/authz/rev'], roots: ['bank'], revision: 'shadow-unsigned',
    });
    await store.pushShadow('bank', unsigned, { revision: 'shadow-unsigned', pushedBy: 'carol' });
    await until('shadow refusal', () => shadowRefusal() === 'ERR_BUNDLE_SIGNATURE_MISSING');
    assert.equal(shadowReport()?.revision, 'shadow-candidate', 'the previous shadow stays');
    assert.equal(await refusalCode(sidecar), undefined, 'the active revision is not the one refused');
  });

  test('promote deploys the shadow revision and ends shadow mode; end-shadow stops it without deploying', async () => {
    await store.pushShadow('bank', await bundleOf(candidate, 'shadow-candidate'), { revision: 'shadow-candidate', pushedBy: 'carol' });
    await store.promoteShadow('bank', { pushedBy: 'carol' });
    await until('candidate served', async () => (await revisionOf(sidecar)) === 'shadow-candidate');
    await until('shadow ended', () => shadowReport() === undefined);
    assert.equal(await decide('bob'), true);
    await store.pushShadow('bank', await bundleOf(active.replace('shadow-active', 'shadow-third'), 'shadow-third'), { revision: 'shadow-third', pushedBy: 'carol' });
    await until('third staged', () => shadowReport()?.revision === 'shadow-third');
    await store.endShadow('bank');
    await until('third ended', () => shadowReport() === undefined);
    assert.equal(await revisionOf(sidecar), 'shadow-candidate');
  });

  test('an ending of a shadow revision that throws leaves the sidecar up and its shadow chain working', async () => {
    await store.pushShadow('bank', await bundleOf(active.replace('shadow-active', 'shadow-fourth'), 'shadow-fourth'), { revision: 'shadow-fourth', pushedBy: 'carol' });
    await until('fourth staged', () => shadowReport()?.revision === 'shadow-fourth');
    const tenants = sidecar.pavilion.tenants;
    const endShadow = tenants.endShadow.bind(tenants);
    let calls = 0;
    tenants.endShadow = (tenant: string) => {
      if (calls++ === 0) throw new Error('the shadow revision could not be discarded');
      endShadow(tenant);
    };
    try {
      await store.endShadow('bank');
      await until('the ending threw', () => calls === 1);
      // staged after it, in the same chain: a rejection left in the chain would skip it
      await store.pushShadow('bank', await bundleOf(active.replace('shadow-active', 'shadow-fifth'), 'shadow-fifth'), { revision: 'shadow-fifth', pushedBy: 'carol' });
      await until('fifth staged', () => shadowReport()?.revision === 'shadow-fifth');
      await store.endShadow('bank');
      await until('fifth ended', () => shadowReport() === undefined);
      assert.equal(await revisionOf(sidecar), 'shadow-candidate');
    } finally {
      tenants.endShadow = endShadow;
    }
  });
});
