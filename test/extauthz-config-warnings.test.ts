/**
 * ext_authz configured with a decision path that is not an entrypoint of the tenant's bundle
 * used to answer every check with the failure status (or, with dryRun, allow everything)
 * while /health and the ext_authz component said OK. Now the component is WARN naming each
 * such tenant (checked against the engine's active policy, so it follows activations), one
 * warning line is logged per tenant and revision, and the start log says where the ext_authz
 * gRPC listener and HTTP prefix are.
 *
 * Real sidecars throughout: startPavilion (directory source, signed fixture bundles), one
 * Pavilion built here so its log can be read, and `npm start`'s entry point (main.ts) as a
 * child process for the start log.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseConfig } from '../sidecar/src/config/index.ts';
import { Pavilion } from '../sidecar/src/pavilion.ts';
import { buildFixtureBundle } from './harness/fixtures.ts';
import { get, signForTest, startPavilion, wholeLines, type RunningPavilion } from './harness/pavilion-harness.ts';
import { until } from './harness/wait.ts';

interface ComponentJson {
  readonly state: string;
  readonly message?: string;
  readonly details?: Record<string, unknown>;
}

interface UnknownPath {
  readonly path: string;
  readonly revision: string;
  readonly configured: boolean;
  readonly dryRun: boolean;
}

/** A bundle for `tenant` whose only entrypoint is `<tenant>/authz/allow` (no Envoy path). */
function withoutEnvoyPath(tenant: string, revision = 'r1'): Promise<Buffer> {
  return buildFixtureBundle({
    modules: { 'authz.rego': `package ${tenant}.authz\n\nallow if input.user == "alice"\n` },
    entrypoints: [`${tenant}/authz/allow`],
    roots: [tenant],
    revision,
  });
}

/** A bundle for `tenant` with the default ext_authz path `<tenant>/envoy/authz/allow` (allows everything). */
function withEnvoyPath(tenant: string, revision = 'r1'): Promise<Buffer> {
  return buildFixtureBundle({
    modules: { 'envoy.rego': `package ${tenant}.envoy.authz\n\nallow := true\n` },
    entrypoints: [`${tenant}/envoy/authz/allow`],
    roots: [tenant],
    revision,
  });
}

async function extAuthzStatus(url: string): Promise<{ status: number; component: ComponentJson }> {
  const health = await get(`${url}/health?verbose`);
  const components = health.body['components'] as Record<string, ComponentJson> | undefined;
  const component = components?.['ext_authz'];
  assert.ok(component !== undefined, `no ext_authz component in ${JSON.stringify(health.body)}`);
  return { status: health.status, component };
}

function unknownPaths(component: ComponentJson): Record<string, UnknownPath> {
  return (component.details?.['unknownPaths'] ?? {}) as Record<string, UnknownPath>;
}

/** Replace a tenant's bundle file in the harness's bundle directory (signed with its test key) and reload it. */
async function deploy(app: RunningPavilion, tenant: string, archive: Buffer): Promise<void> {
  const signed = await signForTest(tenant, archive, join(app.dir, 'keys'));
  await writeFile(join(app.dir, 'bundles', tenant, 'bundle.tar.gz'), signed);
  await app.pavilion.tenants.reload(tenant);
}

describe('ext_authz: a decision path that is not an entrypoint of the active bundle', () => {
  let app: RunningPavilion;

  before(async () => {
    app = await startPavilion({
      bundles: {
        bank: await withoutEnvoyPath('bank'),
        shop: await withEnvoyPath('shop'),
        plain: await withoutEnvoyPath('plain'),
        dry: await withoutEnvoyPath('dry'),
      },
      config: {
        tenants: [{ id: 'bank' }, { id: 'shop' }, { id: 'plain' }, { id: 'dry' }],
        extAuthz: {
          grpc: { port: 0 },
          tenantFrom: { header: 'x-pavilion-tenant' },
          tenants: { bank: { path: 'bank/envoy/authz/allow' }, dry: { dryRun: true } },
        },
      },
    });
  });

  after(async () => {
    await app?.stop();
  });

  test('/health?verbose: ext_authz is WARN naming each configured tenant whose path is not an entrypoint (with header tenantFrom, an unconfigured tenant may be Data-API-only: not reported); the sidecar stays ready', async () => {
    const { status, component } = await extAuthzStatus(app.url);
    assert.equal(status, 200, 'WARN does not make the sidecar unready');
    assert.equal(component.state, 'WARN', JSON.stringify(component));
    const unknown = unknownPaths(component);
    // header tenantFrom: the tenants configured under extAuthz.tenants (plain is not: it may
    // serve the Data API only, and would otherwise keep the component WARN for good)
    assert.deepEqual(Object.keys(unknown).sort(), ['bank', 'dry']);
    assert.deepEqual(unknown['bank'], { path: 'bank/envoy/authz/allow', revision: 'r1', configured: true, dryRun: false });
    assert.deepEqual(unknown['dry'], { path: 'dry/envoy/authz/allow', revision: 'r1', configured: true, dryRun: true });
    for (const tenant of ['bank', 'dry']) assert.match(component.message ?? '', new RegExp(`\\b${tenant} \\(${tenant}/envoy/authz/allow `));
    assert.doesNotMatch(component.message ?? '', /\b(shop|plain)\b/);
    assert.match(component.message ?? '', /ERR_ENTRYPOINT_UNKNOWN/);
    assert.match(component.message ?? '', /dry run: every check is allowed/);
  });

  test('what it warns about is real: those checks fail with ERR_ENTRYPOINT_UNKNOWN (dry run: allowed), the served tenant decides', async () => {
    const check = async (tenant: string): Promise<number> => (await fetch(`${app.url}/ext_authz/orders`, { headers: { 'x-pavilion-tenant': tenant } })).status;
    assert.equal(await check('bank'), 403);
    assert.equal(await check('plain'), 403);
    assert.equal(await check('dry'), 200);
    assert.equal(await check('shop'), 200);
    await until('the decision events', async () => (await app.decisions()).length >= 4);
    const codes = Object.fromEntries((await app.decisions()).map((e) => [e['tenant'], (e['error'] as { code?: string } | undefined)?.code]));
    assert.deepEqual(codes, { bank: 'ERR_ENTRYPOINT_UNKNOWN', plain: 'ERR_ENTRYPOINT_UNKNOWN', dry: 'ERR_ENTRYPOINT_UNKNOWN', shop: undefined });
  });

  test('it follows activations: a revision with the path clears the warning for that tenant, a later one without it brings it back', async () => {
    await deploy(app, 'bank', await withEnvoyPath('bank', 'r2'));
    let unknown = unknownPaths((await extAuthzStatus(app.url)).component);
    assert.deepEqual(Object.keys(unknown).sort(), ['dry']);
    await deploy(app, 'bank', await withoutEnvoyPath('bank', 'r3'));
    unknown = unknownPaths((await extAuthzStatus(app.url)).component);
    assert.deepEqual(Object.keys(unknown).sort(), ['bank', 'dry']);
    assert.equal(unknown['bank']?.revision, 'r3');
  });
});

describe('ext_authz: only the tenants tenantFrom can name, and those configured under extAuthz.tenants, are checked', () => {
  let bundles: Record<string, Buffer>;

  before(async () => {
    bundles = { bank: await withoutEnvoyPath('bank'), shop: await withEnvoyPath('shop'), plain: await withoutEnvoyPath('plain') };
  });

  test('fixed: a tenant no check can reach is not reported', async () => {
    const app = await startPavilion({
      bundles,
      config: { tenants: [{ id: 'bank' }, { id: 'shop' }, { id: 'plain' }], extAuthz: { grpc: { enabled: false }, tenantFrom: { fixed: 'shop' } } },
    });
    try {
      const { component } = await extAuthzStatus(app.url);
      assert.equal(component.state, 'OK', JSON.stringify(component));
    } finally {
      await app.stop();
    }
  });

  test('destination: the mapped tenants, plus a configured entry whatever tenantFrom says', async () => {
    const app = await startPavilion({
      bundles,
      config: {
        tenants: [{ id: 'bank' }, { id: 'shop' }, { id: 'plain' }],
        extAuthz: {
          grpc: { enabled: false },
          tenantFrom: { destination: { 'bank.example': 'bank', 'shop.example': 'shop' } },
          tenants: { plain: { path: 'plain/envoy/allow' } },
        },
      },
    });
    try {
      const { component } = await extAuthzStatus(app.url);
      assert.equal(component.state, 'WARN', JSON.stringify(component));
      assert.deepEqual(Object.keys(unknownPaths(component)).sort(), ['bank', 'plain']);
      assert.equal(unknownPaths(component)['plain']?.path, 'plain/envoy/allow');
    } finally {
      await app.stop();
    }
  });
});

describe('ext_authz: one warning line per tenant and revision', () => {
  interface Line {
    readonly level: string;
    readonly message: string;
    readonly fields: Record<string, unknown>;
  }
  let dir: string;
  let pavilion: Pavilion;
  let url: string;
  const lines: Line[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pavilion-extauthz-warn-'));
    const keysDirectory = join(dir, 'keys');
    for (const [tenant, archive] of Object.entries({ bank: await withoutEnvoyPath('bank'), shop: await withEnvoyPath('shop') })) {
      await mkdir(join(dir, 'bundles', tenant), { recursive: true });
      await writeFile(join(dir, 'bundles', tenant, 'bundle.tar.gz'), await signForTest(tenant, archive, keysDirectory));
    }
    const config = parseConfig({
      http: { host: '127.0.0.1', port: 0 },
      engine: { workers: 1 },
      tenants: [{ id: 'bank' }, { id: 'shop' }],
      bundles: { directory: join(dir, 'bundles'), keysDirectory, persistDirectory: join(dir, 'persisted'), watchIntervalMs: 0 },
      decisionLog: { sink: 'none' },
      extAuthz: { grpc: { enabled: false }, tenantFrom: { header: 'x-pavilion-tenant' }, tenants: { bank: { path: 'bank/envoy/authz/allow' } } },
    });
    pavilion = new Pavilion(config, { log: (level, message, fields = {}) => lines.push({ level, message, fields }) });
    await pavilion.start();
    url = `http://127.0.0.1:${pavilion.api.address().port}`;
  });

  after(async () => {
    await pavilion?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const warnings = (): Line[] => lines.filter((l) => l.level === 'warn' && l.message.startsWith('ext_authz decision path is not an entrypoint'));

  test('logged once at start, not again each time the status is asked; again for a new revision without the path', async () => {
    assert.equal(warnings().length, 1, JSON.stringify(lines));
    assert.deepEqual(warnings()[0]?.fields, { tenant: 'bank', path: 'bank/envoy/authz/allow', revision: 'r1', configured: true, code: 'ERR_ENTRYPOINT_UNKNOWN' });
    for (let i = 0; i < 3; i++) assert.equal((await extAuthzStatus(url)).component.state, 'WARN');
    assert.equal(warnings().length, 1);
    // a new revision, still without the path: warned at its activation, without waiting for /health
    const archive = await signForTest('bank', await withoutEnvoyPath('bank', 'r2'), join(dir, 'keys'));
    await writeFile(join(dir, 'bundles', 'bank', 'bundle.tar.gz'), archive);
    await pavilion.tenants.reload('bank');
    assert.equal(warnings().length, 2);
    assert.equal(warnings()[1]?.fields['revision'], 'r2');
    assert.equal((await extAuthzStatus(url)).component.state, 'WARN');
    assert.equal(warnings().length, 2);
  });
});

describe('the start log (npm start: sidecar/src/main.ts)', () => {
  test('names the ext_authz gRPC listener and the HTTP prefix, and warns about a path that is not an entrypoint', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pavilion-extauthz-start-'));
    const keysDirectory = join(dir, 'keys');
    await mkdir(join(dir, 'bundles', 'bank'), { recursive: true });
    await writeFile(join(dir, 'bundles', 'bank', 'bundle.tar.gz'), await signForTest('bank', await withoutEnvoyPath('bank'), keysDirectory));
    const configFile = join(dir, 'pavilion.json');
    await writeFile(configFile, JSON.stringify({
      http: { host: '127.0.0.1', port: 0 },
      engine: { workers: 1 },
      tenants: [{ id: 'bank' }],
      bundles: { directory: join(dir, 'bundles'), keysDirectory, persistDirectory: join(dir, 'persisted'), watchIntervalMs: 0 },
      decisionLog: { sink: 'none' },
      extAuthz: { grpc: { host: '127.0.0.1', port: 0 }, http: { pathPrefix: '/authz' }, tenantFrom: { fixed: 'bank' } },
    }));
    const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '..', 'sidecar', 'src', 'main.ts')], {
      env: { ...process.env, PAVILION_CONFIG: configFile },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      const logged = (): Array<Record<string, unknown>> => wholeLines(stderr).filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
      await until('the start log', () => logged().some((l) => l['msg'] === 'pavilion listening') || child.exitCode !== null, 60_000);
      await new Promise((resolve) => setTimeout(resolve, 200)); // the lines right after it
      const lines = logged();
      const listening = lines.find((l) => l['msg'] === 'pavilion listening');
      assert.ok(listening !== undefined, stderr);
      const extAuthz = lines.find((l) => l['msg'] === 'ext_authz listening');
      assert.ok(extAuthz !== undefined, `no ext_authz line in the start log:\n${stderr}`);
      assert.equal(extAuthz['level'], 'info');
      assert.match(String(extAuthz['grpc']), /^127\.0\.0\.1:[1-9]\d*$/);
      assert.equal(extAuthz['http'], `${String(listening['url'])}/authz`);
      assert.equal(extAuthz['tenant_from'], 'fixed');
      // the gRPC address logged is where the server listens
      const port = Number(String(extAuthz['grpc']).split(':')[1]);
      await new Promise<void>((resolve, reject) => {
        const socket = connect(port, '127.0.0.1', () => {
          socket.end();
          resolve();
        });
        socket.once('error', reject);
      });
      const warning = lines.find((l) => l['level'] === 'warn' && String(l['msg']).startsWith('ext_authz decision path is not an entrypoint'));
      assert.ok(warning !== undefined, stderr);
      assert.equal(warning['tenant'], 'bank');
      assert.equal(warning['path'], 'bank/envoy/authz/allow');
    } finally {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
      await rm(dir, { recursive: true, force: true });
    }
  });
});
