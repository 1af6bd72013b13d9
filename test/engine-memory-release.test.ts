/**
 * A replaced revision gives its memory back. Each opa-wasm instance owns a WebAssembly.Memory,
 * which V8 backs on 64-bit Linux with an anonymous reservation of about 10 GiB of address
 * space; a worker that drops an instance must also collect it, or the memory stays (the
 * soak benchmark's growth of about 0.75 MB a swap). Counted here from /proc/self/maps: the
 * reservations alive after 16 swaps, each revision with new module bytes (so the inspection
 * sandbox instantiates each one too), against those before. Without the collections each
 * swap left one behind in each busy worker and one in the sandbox; with them each holds
 * fewer than DROPPED_MAX_INSTANCES dropped instances.
 *
 * Not tested here: the instances a worker replaces after a failed evaluation are counted
 * the same way, but the only failure a test can cause on purpose (running out of memory)
 * grows the memory, and V8 collects a grown memory on its own: a test could not tell.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { readBundle } from '../sidecar/src/bundles/index.ts';
import { parseConfig } from '../sidecar/src/config/index.ts';
import { compileAndInspectWasm } from '../sidecar/src/engine/abi.ts';
import { compilePolicy, PolicyEngine } from '../sidecar/src/engine/index.ts';
import { DROPPED_MAX_INSTANCES } from '../sidecar/src/lib/collect-garbage.ts';
import { engineOptions } from '../sidecar/src/pavilion.ts';
import { buildFixtureBundle } from './harness/fixtures.ts';

const GIB = 1024 ** 3;
/**
 * A multiple of DROPPED_MAX_INSTANCES, so that each worker ends on a collection and holds no
 * dropped instance (the sandbox, which also inspected the first revision, may hold up to
 * DROPPED_MAX_INSTANCES - 1); few enough that what is left without the collections (one a
 * swap in each busy worker) stays below V8's cap of about 100 reservations a process, where
 * it collects on its own and would hide the leak.
 */
const SWAPS = 2 * DROPPED_MAX_INSTANCES;
const INSPECTIONS = 60;
const WORKERS = 2;

/** Anonymous inaccessible mappings of 4 GiB or more: the guard regions of Wasm memories. */
function wasmReservations(): number {
  let count = 0;
  for (const line of readFileSync('/proc/self/maps', 'utf8').split('\n')) {
    const [range, perms, , , , path] = line.split(/\s+/);
    if (range === undefined || perms !== '---p' || (path ?? '') !== '') continue;
    const [start, end] = range.split('-').map((hex) => BigInt(`0x${hex}`));
    if (start !== undefined && end !== undefined && end - start >= BigInt(4 * GIB)) count++;
  }
  return count;
}

/** `wasm` with a custom section named `pavilion-test` holding `n`: new bytes, the same module. */
function withCustomSection(wasm: Buffer, n: number): Buffer {
  const name = Buffer.from('pavilion-test');
  const payload = Buffer.from(String(n));
  const body = Buffer.concat([Buffer.from([name.length]), name, payload]);
  return Buffer.concat([wasm, Buffer.from([0, body.length]), body]);
}

/** The fewest reservations seen over `ms`, read every 100 ms until there are at most `target`. */
async function settle(target: number, ms: number): Promise<number> {
  let least = wasmReservations();
  for (const deadline = Date.now() + ms; least > target && Date.now() < deadline;) {
    await sleep(100);
    least = Math.min(least, wasmReservations());
  }
  return least;
}

describe('memory of replaced revisions', { skip: process.platform !== 'linux' && 'reads /proc/self/maps' }, () => {
  // an unload is due max(1 s, 4 x the deadline) after a swap: 2 s; a deadline a busy machine does not overrun
  const engine = new PolicyEngine(engineOptions(parseConfig({ engine: { workers: WORKERS, evaluationTimeoutMs: 500 } })));
  after(async () => engine.stop());

  test(`${SWAPS} swaps leave no dropped Wasm memory in the workers, fewer than ${DROPPED_MAX_INSTANCES} in the sandbox`, async () => {
    await engine.start();
    const bundle = await readBundle(await buildFixtureBundle({
      modules: { 'p.rego': 'package t\n\nallow if input.user == "alice"\n' },
      entrypoints: ['t/allow'],
      roots: ['t'],
    }), { tenant: 't', namespace: 't' });
    const revision = async (n: number) => compilePolicy(
      { ...bundle, wasm: withCustomSection(bundle.wasm, n), digest: `${bundle.digest}-${n}`, revision: `r${n}` },
      { initialMemoryPages: 5 },
    );
    await engine.activate(await revision(0));
    // decisions all along, as a serving sidecar has (an idle worker's heap is collected by V8 anyway)
    let serving = true;
    let answered = 0;
    const load = (async () => {
      for (let i = 0; serving; i++) {
        assert.equal((await engine.evaluate('t', 't/allow', { user: 'alice', i })).result, true);
        answered++;
        await sleep(2);
      }
    })();
    await sleep(2_500);
    const before = await settle(0, 1_000);

    let most = before;
    for (let n = 1; n <= SWAPS; n++) {
      await engine.activate(await revision(n));
      most = Math.max(most, wasmReservations());
      assert.equal((await engine.evaluate('t', 't/allow', { user: 'alice', n })).result, true);
      assert.equal(engine.active('t')?.revision, `r${n}`);
    }
    // the count can see a revision's memories: the previous revision's are still there when the next is loaded
    assert.ok(most >= before + 2, `reservations before ${before}, at most ${most} during the swaps`);

    const bound = before + DROPPED_MAX_INSTANCES - 1;
    const left = await settle(bound, 8_000);
    serving = false;
    await load;
    assert.ok(answered > 100, `${answered} decisions beside the swaps`);
    assert.ok(left <= bound, `reservations before the swaps ${before}, after ${SWAPS} swaps and their unloads ${left}`);
  });
});

describe('memory of inspected modules', { skip: process.platform !== 'linux' && 'reads /proc/self/maps' }, () => {
  test(`${INSPECTIONS} inspections of new module bytes leave fewer than ${DROPPED_MAX_INSTANCES} Wasm memories behind in the sandbox`, async () => {
    const bundle = await readBundle(await buildFixtureBundle({
      modules: { 'p.rego': 'package t\n\nallow := true\n' },
      entrypoints: ['t/allow'],
      roots: ['t'],
    }), { tenant: 't', namespace: 't' });
    await compileAndInspectWasm(withCustomSection(bundle.wasm, -1), { initialPages: 5, maximumPages: 1024, timeoutMs: 5_000 });
    const before = await settle(0, 500);
    for (let n = 0; n < INSPECTIONS; n++) {
      const { inspection } = await compileAndInspectWasm(withCustomSection(bundle.wasm, n), { initialPages: 5, maximumPages: 1024, timeoutMs: 5_000 });
      assert.ok('t/allow' in inspection.entrypoints);
    }
    const bound = before + DROPPED_MAX_INSTANCES - 1;
    const left = await settle(bound, 2_000);
    assert.ok(left <= bound, `reservations before ${before}, after ${INSPECTIONS} inspections ${left}`);
  });
});
