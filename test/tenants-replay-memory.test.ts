/**
 * The replay check's memory is bounded: a tenant remembers the content of the 64 revisions it
 * replaced last (as many deploys as the history keeps), in memory and in the last known
 * good's meta.json. A push of one of those is refused; the 65th replaced back is forgotten and
 * may be pushed again, in the running sidecar and after a restart alike.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LastKnownGood } from '../sidecar/src/bundles/index.ts';
import { parseConfig } from '../sidecar/src/config/index.ts';
import { PolicyEngine } from '../sidecar/src/engine/index.ts';
import { isPavilionError } from '../sidecar/src/lib/errors.ts';
import { engineOptions } from '../sidecar/src/pavilion.ts';
import { TenantManager } from '../sidecar/src/tenants/index.ts';
import { buildFixtureBundle, makeTarGz, unpackFixture, type RawTarEntry } from './harness/fixtures.ts';
import { tempDir } from './harness/temp-dir.ts';
import { pushedTenantOptions } from './harness/tenants.ts';

const REMEMBERED = 64;
/** Revisions v0..v65: each push replaces the one before, so v0..v64 have been replaced. */
const PUSHED = REMEMBERED + 2;

let dir: string;
let entries: RawTarEntry[];

/** Revision `i`: the same policy (the module compiled once) with its own data. */
function revision(i: number): Buffer {
  return makeTarGz(entries.map((e) => {
    if (e.name === 'data.json') return { name: e.name, data: JSON.stringify({ bank: { version: i } }) };
    if (e.name === '.manifest') return { name: e.name, data: JSON.stringify({ ...JSON.parse(String(e.data)), revision: `v${i}` }) };
    return e;
  }));
}

interface Sidecar {
  readonly tenants: TenantManager;
  readonly store: LastKnownGood;
  stop(): Promise<void>;
}

/** An unsigned development tenant 'bank' fed by pushes, its last known good written within each activation. */
async function sidecar(): Promise<Sidecar> {
  const config = parseConfig({
    tenants: [{ id: 'bank', keys: [], allowUnsigned: true }],
    bundles: { source: 'nats', keysDirectory: join(dir, 'keys'), persistDirectory: join(dir, 'lkg') },
    nats: { servers: ['nats://127.0.0.1:4222'] },
    engine: { workers: 1 },
    decisionLog: { sink: 'none' },
  });
  const engine = new PolicyEngine(engineOptions(config));
  const store = new LastKnownGood(join(dir, 'lkg'));
  const tenants = new TenantManager({ ...pushedTenantOptions(config, engine), persisted: store, persistDelayMs: 0 });
  await engine.start();
  await tenants.start();
  return {
    tenants,
    store,
    async stop() {
      await tenants.stop(5_000);
      await engine.stop();
    },
  };
}

async function push(car: Sidecar, i: number, sequence: number): Promise<string | undefined> {
  try {
    return (await car.tenants.activate('bank', revision(i), { kind: 'push', sequence })).revision;
  } catch (error) {
    if (isPavilionError(error)) return error.code;
    throw error;
  }
}

before(async () => {
  dir = await tempDir('pavilion-replay-memory-');
  entries = await unpackFixture(await buildFixtureBundle({
    modules: { 'bank/authz.rego': 'package bank.authz\n\nversion := data.bank.version\n' },
    entrypoints: ['bank/authz/version'],
    roots: ['bank'],
    data: { bank: { version: 0 } },
  }));
});

describe('replay memory: the 64 revisions replaced last', () => {
  let car: Sidecar;
  after(async () => car?.stop());

  test(`after ${PUSHED} pushes, the replaced revisions v1..v64 are refused and v0, the 65th back, is taken again`, async () => {
    car = await sidecar();
    for (let i = 0; i < PUSHED; i++) assert.equal(await push(car, i, i + 1), `v${i}`);
    const meta = (await car.store.load('bank'))?.meta;
    assert.equal(meta?.replaced?.length, REMEMBERED, 'meta.json keeps the same 64');
    assert.equal(await push(car, 1, PUSHED + 1), 'ERR_BUNDLE_REPLAYED', 'the oldest remembered');
    assert.equal(await push(car, REMEMBERED, PUSHED + 2), 'ERR_BUNDLE_REPLAYED', 'the newest replaced');
    assert.equal(car.tenants.tenant('bank')?.active?.revision, `v${PUSHED - 1}`, 'the refusals left the active revision serving');
    assert.equal(await push(car, 0, PUSHED + 3), 'v0', 'forgotten: a push of it is taken');
  });

  test('after a restart the memory read back from the last known good is the same 64', async () => {
    await car.stop();
    car = await sidecar();
    // taking v0 back replaced v65, which pushed v1 out: remembered now are v2..v65
    assert.equal(car.tenants.tenant('bank')?.active?.revision, 'v0', 'restored from the last known good');
    assert.equal(await push(car, 2, PUSHED + 4), 'ERR_BUNDLE_REPLAYED', 'the oldest remembered');
    assert.equal(await push(car, PUSHED - 1, PUSHED + 5), 'ERR_BUNDLE_REPLAYED', 'the newest replaced');
    assert.equal(await push(car, 1, PUSHED + 6), 'v1', 'forgotten before the restart: a push of it is taken');
  });
});
