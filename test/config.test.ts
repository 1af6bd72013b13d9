/**
 * Configuration is parsed once: defaults with units, unknown keys and contradictions
 * refused with ERR_CONFIG_INVALID, environment overrides applied, the result frozen.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseConfig } from '../sidecar/src/config/index.ts';
import { ErrorCodes, PavilionError, isPavilionError } from '../sidecar/src/lib/errors.ts';

function invalid(raw: unknown, pattern: RegExp, env: NodeJS.ProcessEnv = {}): void {
  assert.throws(
    () => parseConfig(raw, '/base', env),
    (e: unknown) => e instanceof PavilionError && e.code === ErrorCodes.CONFIG_INVALID && pattern.test(e.message),
  );
}

describe('config', () => {
  test('defaults: loopback on 8181, a per-evaluation deadline, a bounded cache, file decision log', () => {
    const config = parseConfig({});
    assert.equal(config.http.host, '127.0.0.1');
    assert.equal(config.http.port, 8181);
    assert.equal(config.http.maxConnections, 4096);
    assert.equal(config.engine.evaluationTimeoutMs, 250);
    assert.ok(config.engine.workers >= 1);
    assert.equal(config.engine.cache.enabled, true);
    assert.equal(config.engine.maxPendingInputBytes, 32 * 1024 * 1024);
    assert.equal(config.engine.maxPendingInputBytesTotal, 256 * 1024 * 1024);
    // the embedded default is the verifiable audit log with a software signer and a file anchor
    assert.equal(config.decisionLog.sink, 'audit');
    assert.equal(config.decisionLog.audit?.signer.kind, 'software');
    assert.equal(config.decisionLog.audit?.anchor.kind, 'file');
    assert.match(config.decisionLog.audit?.directory ?? '', /[/\\]var[/\\]audit$/);
    assert.deepEqual(config.tenants, []);
  });

  test('decisionLog.audit.rotateAtBytes: absent, 0 or null is off; a size below maxDiskBytes; with streaming too', () => {
    const audit = (a: Record<string, unknown>, extra: Record<string, unknown> = {}) => parseConfig({ decisionLog: { sink: 'audit', audit: a }, ...extra }).decisionLog.audit;
    assert.equal(audit({})?.rotateAtBytes, undefined, 'absent: left out, and the sink does not rotate');
    assert.equal(audit({ rotateAtBytes: 0 })?.rotateAtBytes, 0);
    assert.equal(audit({ rotateAtBytes: null })?.rotateAtBytes, 0);
    assert.equal(audit({ rotateAtBytes: 256 * 1024 * 1024 })?.rotateAtBytes, 256 * 1024 * 1024);
    const nats = { nats: { servers: ['nats://127.0.0.1:4222'] } };
    assert.equal(audit({ stream: { enabled: true } }, nats)?.rotateAtBytes, undefined);
    assert.equal(audit({ stream: { enabled: true }, rotateAtBytes: 1024 * 1024 }, nats)?.rotateAtBytes, 1024 * 1024);
    const path = (a: Record<string, unknown>, extra: Record<string, unknown> = {}): unknown => ({ decisionLog: { sink: 'audit', audit: a }, ...extra });
    invalid(path({ rotateAtBytes: 1024 }), /audit\.rotateAtBytes: must be 0, null, or an integer from 65536/);
    invalid(path({ rotateAtBytes: 1024 * 1024 * 1024 }), /audit\.rotateAtBytes: .*below maxDiskBytes/);
    invalid(path({ rotateAtBytes: '1GiB' }), /audit\.rotateAtBytes/);
  });

  test('bundles.persistDelayMs: 500 by default, 0 to write within the activation, at most a minute', () => {
    assert.equal(parseConfig({}).bundles.persistDelayMs, 500);
    assert.equal(parseConfig({ bundles: { persistDelayMs: 0 } }).bundles.persistDelayMs, 0);
    invalid({ bundles: { persistDelayMs: -1 } }, /\$\.bundles\.persistDelayMs/);
    invalid({ bundles: { persistDelayMs: 60_001 } }, /\$\.bundles\.persistDelayMs/);
  });

  test('the parsed config is deeply frozen', () => {
    const config = parseConfig({ tenants: [{ id: 'bank' }] });
    assert.ok(Object.isFrozen(config.engine.cache));
    assert.ok(Object.isFrozen(config.tenants[0]));
  });

  test('relative paths resolve against the config file folder', () => {
    const config = parseConfig({ bundles: { directory: 'b' }, decisionLog: { path: 'd/x.ndjson' } }, '/base');
    assert.equal(config.bundles.directory, '/base/b');
    assert.equal(config.decisionLog.path, '/base/d/x.ndjson');
  });

  test('an unknown key (a typo) is refused, naming it', () => {
    invalid({ engine: { evaluationTimeout: 100 } }, /\$\.engine\.evaluationTimeout: unknown key/);
    invalid({ htpp: {} }, /\$\.htpp: unknown key/);
  });

  test('out-of-range and mistyped values are refused', () => {
    invalid({ http: { port: 70000 } }, /\$\.http\.port/);
    invalid({ engine: { workers: 0 } }, /\$\.engine\.workers/);
    invalid({ http: { maxConnections: 0 } }, /\$\.http\.maxConnections/);
    invalid({ extAuthz: { tenantFrom: { fixed: 'bank' }, grpc: { maxConnections: 0 } } }, /\$\.extAuthz\.grpc\.maxConnections/);
    invalid({ engine: { maxPendingInputBytes: 100 } }, /\$\.engine\.maxPendingInputBytes/);
    invalid({ engine: { maxPendingInputBytes: 4096, maxPendingInputBytesTotal: 2048 } }, /\$\.engine\.maxPendingInputBytesTotal: must be at least maxPendingInputBytes \(4096\)/);
    invalid({ engine: { cache: { enabled: 'yes' } } }, /\$\.engine\.cache\.enabled: must be a boolean/);
    invalid({ decisionLog: { sink: 'kafka' } }, /\$\.decisionLog\.sink/);
  });

  test('contradictions are refused at parse time', () => {
    invalid({ engine: { memoryInitialPages: 100, memoryMaxBytes: 1024 * 1024 } }, /memoryMaxBytes: is below memoryInitialPages/);
    invalid({ bundles: { maxCompressedBytes: 4096, maxUncompressedBytes: 2048 } }, /maxUncompressedBytes: is below maxCompressedBytes/);
  });

  test('tenant ids must be identifiers and unique', () => {
    invalid({ tenants: [{ id: '../etc' }] }, /\$\.tenants\[0\]\.id/);
    invalid({ tenants: [{ id: 'bank' }, { id: 'bank' }] }, /duplicate tenant bank/);
  });

  test('PAVILION_HTTP_PORT and PAVILION_HTTP_HOST override the file', () => {
    const config = parseConfig({ http: { port: 1 } }, '/base', { PAVILION_HTTP_PORT: '9999', PAVILION_HTTP_HOST: '::1' });
    assert.equal(config.http.port, 9999);
    assert.equal(config.http.host, '::1');
    invalid({}, /PAVILION_HTTP_PORT/, { PAVILION_HTTP_PORT: 'eighty' });
    const empty = parseConfig({}, '/base', { PAVILION_HTTP_HOST: '', PAVILION_HTTP_PORT: '' });
    assert.equal(empty.http.host, '127.0.0.1', 'an empty override does not bind every interface');
    assert.equal(empty.http.port, 8181, 'an empty override does not pick a random port');
  });

  test('an environment override is validated like the file value it replaces, and the caller\'s sections stay as they were', () => {
    invalid({}, /\$\.http\.port: must be an integer between 0 and 65535/, { PAVILION_HTTP_PORT: '70000' });
    invalid({}, /\$\.redis\.url/, { PAVILION_REDIS_URL: 'http://cache.example' });
    invalid({ redis: 'redis://a:6379' }, /\$\.redis: must be an object/, { PAVILION_REDIS_PASSWORD: 'p' });
    const raw = { http: { port: 1 }, redis: { url: 'redis://a:6379' } };
    const config = parseConfig(raw, '/', { PAVILION_HTTP_PORT: '2', PAVILION_REDIS_PASSWORD: 'p' });
    assert.equal(config.http.port, 2);
    assert.equal(config.redis?.password, 'p');
    assert.deepEqual(raw, { http: { port: 1 }, redis: { url: 'redis://a:6379' } });
  });
});

describe('bundle signing keys, tenants and NATS distribution config', () => {
  test('a tenant trusts its own key id and scope by default, and unsigned bundles are refused unless allowed', () => {
    const config = parseConfig({ tenants: [{ id: 'bank' }, { id: 'lab', keys: ['lab-2026'], scope: 'labs', allowUnsigned: true }] });
    assert.deepEqual(config.tenants.map((t) => [t.id, t.keys, t.scope, t.allowUnsigned]), [['bank', ['bank'], 'bank', false], ['lab', ['lab-2026'], 'labs', true]]);
  });

  test('keys: exactly one of file or key, a known algorithm; bad entries -> ERR_CONFIG_INVALID', () => {
    assert.equal(parseConfig({ keys: { k: { key: 'pem', algorithm: 'ES256' } } }).keys['k']?.algorithm, 'ES256');
    for (const bad of [{ k: {} }, { k: { key: 'a', file: 'b' } }, { k: { key: 'a', algorithm: 'none' } }, { k: { key: 'a', extra: 1 } }]) {
      assert.throws(() => parseConfig({ keys: bad }), (e: unknown) => isPavilionError(e, ErrorCodes.CONFIG_INVALID), JSON.stringify(bad));
    }
  });

  test("bundles.source 'nats' needs a nats section with nats:// servers; unknown nats keys are refused", () => {
    assert.throws(() => parseConfig({ bundles: { source: 'nats' } }), (e: unknown) => isPavilionError(e, ErrorCodes.CONFIG_INVALID));
    assert.throws(() => parseConfig({ nats: { servers: ['http://x'] } }), (e: unknown) => isPavilionError(e, ErrorCodes.CONFIG_INVALID));
    assert.throws(() => parseConfig({ nats: { servers: ['nats://127.0.0.1:4222'], sever: 1 } }), (e: unknown) => isPavilionError(e, ErrorCodes.CONFIG_INVALID));
    const config = parseConfig({ bundles: { source: 'nats' }, nats: { servers: ['nats://127.0.0.1:4222'] } });
    assert.equal(config.nats?.pointerBucket, 'pavilion-bundles');
    assert.equal(config.nats?.fetchTimeoutMs, 30_000);
  });

  test('PAVILION_NATS_URL (as the Helm chart sets it) selects NATS unless the config names a source; PAVILION_BUNDLE_KEYS_DIR sets the keys', () => {
    const raw = {};
    const config = parseConfig(raw, '/', { PAVILION_NATS_URL: 'nats://a:4222,nats://b:4222', PAVILION_NATS_CREDS: '/etc/nats/user.creds', PAVILION_BUNDLE_KEYS_DIR: '/etc/pavilion/keys' });
    assert.equal(config.bundles.source, 'nats');
    assert.deepEqual(config.nats?.servers, ['nats://a:4222', 'nats://b:4222']);
    assert.equal(config.nats?.credsFile, '/etc/nats/user.creds');
    assert.equal(config.bundles.keysDirectory, '/etc/pavilion/keys');
    assert.deepEqual(raw, {}, 'the caller\'s object is not modified');
    assert.equal(parseConfig({ bundles: { source: 'directory' } }, '/', { PAVILION_NATS_URL: 'nats://a:4222' }).bundles.source, 'directory');
  });
});
