/**
 * A full garbage collection of the calling thread's heap, for threads that drop policy
 * instances (the evaluation workers count them: engine/protocol.ts, DROPPED_MAX_INSTANCES).
 *
 * A dropped opa-wasm instance keeps its WebAssembly.Memory until V8 collects it, and V8
 * collects when the JavaScript heap asks for it - which a worker that evaluates policies
 * seldom does, since its allocations are small and short-lived. Meanwhile each dead memory
 * holds the pages it touched and, on 64-bit Linux, a reservation of about 10 GiB of address
 * space (V8 caps a process's Wasm reservations at about 1 TiB). Measured before this: every
 * bundle swap left three memories behind (two evaluation workers and the inspection
 * sandbox), never collected during a run of 80 swaps, and the process's resident memory grew
 * by about 0.75 MB a swap; with collections it levels off.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * V8's `gc` without starting Node with --expose-gc: the flag is on only while one new
 * context is made, so the contexts of code that runs later do not get a global `gc`.
 */
function exposedGc(): () => void {
  const existing = (globalThis as { gc?: () => void }).gc;
  if (typeof existing === 'function') return existing;
  setFlagsFromString('--expose-gc');
  try {
    return runInNewContext('gc') as () => void;
  } finally {
    setFlagsFromString('--no-expose-gc');
  }
}

const gc = exposedGc();
let due = false;

/** Collect now, synchronously (the caller is charged the pause). */
export function collectGarbage(): void {
  gc();
}

/**
 * Collect once, `afterMs` from now or on the next turn of this thread's event loop: drops in
 * one burst (a batch of unloads) share one collection, and the message that dropped the
 * instance is handled first. A collection already due keeps its time.
 */
export function collectSoon(afterMs = 0): void {
  if (due) return;
  due = true;
  const collect = (): void => {
    due = false;
    gc();
  };
  if (afterMs > 0) setTimeout(collect, afterMs);
  else setImmediate(collect);
}
