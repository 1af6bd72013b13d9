/**
 * The local-directory source hot-swaps: a new build of a tenant's bundle file is activated
 * through the full gate once the file has stopped changing, a refused build (unsigned here)
 * keeps the running revision and is reported, a tenant folder that appears is discovered, and
 * with `bundles.watchIntervalMs: 0` nothing is watched.
 */
import assert from 'node:assert/strict';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { buildFixtureBundle } from './harness/fixtures.ts';
import { get, post, signForTest, startPavilion, type RunningPavilion } from './harness/pavilion-harness.ts';
import { until } from './harness/wait.ts';

function policy(tenant: string, answer: string): Promise<Buffer> {
  return buildFixtureBundle({
    modules: { 'policy.rego': `package ${tenant}.authz\n\nanswer := ${JSON.stringify(answer)}\n` },
    entrypoints: [`${tenant}/authz/answer`],
    roots: [tenant],
  });
}

async function answer(app: RunningPavilion, tenant: string): Promise<unknown> {
  const response = await post(`${app.url}/v1/data/${tenant}/authz/answer`, { input: {} }, { 'x-pavilion-tenant': tenant });
  return response.body['result'];
}

/** Write a bundle file the way a build tool does at the end: into place by rename. */
async function install(app: RunningPavilion, tenant: string, archive: Buffer): Promise<void> {
  const folder = join(app.dir, 'bundles', tenant);
  await mkdir(folder, { recursive: true });
  await writeFile(join(folder, 'bundle.tar.gz.tmp'), archive);
  await rename(join(folder, 'bundle.tar.gz.tmp'), join(folder, 'bundle.tar.gz'));
}

describe('directory source: hot swap on a new build', () => {
  let app: RunningPavilion;

  before(async () => {
    app = await startPavilion({ bundles: { watched: await policy('watched', 'first') }, config: { bundles: { watchIntervalMs: 40 } } });
  });

  after(async () => {
    await app?.stop();
  });

  test('a new signed build is served without a restart', async () => {
    assert.equal(await answer(app, 'watched'), 'first');
    await install(app, 'watched', await signForTest('watched', await policy('watched', 'second'), join(app.dir, 'keys')));
    await until('the second build serves', async () => (await answer(app, 'watched')) === 'second', 10_000);
  });

  test('a build the gate refuses (unsigned) keeps the running revision, and the refusal is reported', async () => {
    await install(app, 'watched', await policy('watched', 'unsigned'));
    await until('the refusal is recorded', async () => {
      const tenants = (await get(`${app.url}/v1/tenants`)).body['result'] as Array<{ id: string; lastError?: { code?: string } }>;
      return tenants.find((t) => t.id === 'watched')?.lastError?.code === 'ERR_BUNDLE_SIGNATURE_MISSING';
    }, 10_000);
    assert.equal(await answer(app, 'watched'), 'second');
  });

  test('a tenant folder that appears is discovered and served', async () => {
    await install(app, 'newcomer', await signForTest('newcomer', await policy('newcomer', 'hello'), join(app.dir, 'keys')));
    await until('the new tenant serves', async () => (await answer(app, 'newcomer')) === 'hello', 10_000);
    const health = (await get(`${app.url}/health?verbose`)).body as { components?: Record<string, { state?: string; details?: { reloads?: number } }> };
    assert.equal(health.components?.['bundle_watch']?.state, 'OK');
    assert.ok((health.components?.['bundle_watch']?.details?.reloads ?? 0) >= 2);
  });
});

describe('directory source with watchIntervalMs 0', () => {
  test('a new build is not picked up until a restart', async () => {
    const app = await startPavilion({ bundles: { still: await policy('still', 'first') } });
    try {
      await install(app, 'still', await signForTest('still', await policy('still', 'second'), join(app.dir, 'keys')));
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(await answer(app, 'still'), 'first');
      assert.equal(app.pavilion.bundleWatch, undefined);
    } finally {
      await app.stop();
    }
  });
});
