/**
 * Full garbage collections on demand, for the worker threads that drop policy instances: the
 * evaluation workers and the inspection sandbox count their drops and collect once they add
 * up (DROPPED_MAX_INSTANCES).
 *
 * A dropped opa-wasm instance keeps its WebAssembly.Memory until V8 collects it, and V8
 * collects when the JavaScript heap asks for it - which a worker that evaluates policies
 * seldom does, since its allocations are small and short-lived. Meanwhile each dead memory
 * holds the pages it touched and, on 64-bit Linux, a reservation of about 10 GiB of address
 * space (V8 caps a process's Wasm reservations at about 1 TiB). Measured before this: every
 * bundle swap left three memories behind (two evaluation workers and the inspection
 * sandbox), never collected during a run of 80 swaps, and the process's resident memory grew
 * by about 0.75 MB a swap; with collections it levels off.
 *
 * V8's `gc` function exists only in contexts made while its flag (--expose-gc) is on, and
 * V8's flags belong to the whole process. So the main thread turns the flag on once, before
 * it starts such a worker (`exposeGcToWorkers`), and never off: threads toggling it could
 * race, one turning it off while another makes its context. Each worker takes the function
 * from its global scope (`garbageCollector`); V8 makes that property non-configurable, so it
 * stays there, in a worker that runs only Pavilion's code.
 */
import { setFlagsFromString } from 'node:v8';

/**
 * A worker collects once it has dropped this many policy instances (unloaded, replaced after
 * a failed evaluation, or a failed load) since its last collection, or instances whose
 * memories hold DROPPED_MAX_BYTES together, whichever comes first. A dropped instance keeps
 * its WebAssembly.Memory until then: the pages it touched and, on 64-bit Linux, a
 * reservation of about 10 GiB of address space. A collection pauses the worker for some
 * 5-20 ms, so it is not spent on every swap of a small policy.
 */
export const DROPPED_MAX_INSTANCES = 8;
export const DROPPED_MAX_BYTES = 32 * 1024 * 1024;

let exposed = false;

/** Main thread, before starting a worker that will call `garbageCollector`: contexts made from now on have `gc`. */
export function exposeGcToWorkers(): void {
  if (exposed) return;
  setFlagsFromString('--expose-gc');
  exposed = true;
}

export interface GarbageCollector {
  /**
   * Count an instance this thread no longer references, holding `bytes` of memory. When the
   * drops add up (DROPPED_MAX_INSTANCES, DROPPED_MAX_BYTES), collect once, `afterMs` from now
   * or on the next turn of the event loop (the message or batch that dropped it is done with
   * it first), and count again from zero. A collection already due keeps its time.
   */
  dropped(bytes: number, afterMs?: number): void;
}

/**
 * In a worker, once at its start: V8's `gc`, from the global scope. Without
 * `exposeGcToWorkers` first, its collections do nothing (memory is then collected only when
 * V8 decides, as before).
 */
export function garbageCollector(): GarbageCollector {
  const gc = (globalThis as { gc?: () => void }).gc;
  let due = false;
  let instances = 0;
  let total = 0;
  return {
    dropped(bytes, afterMs = 0): void {
      instances += 1;
      total += bytes;
      if (instances < DROPPED_MAX_INSTANCES && total < DROPPED_MAX_BYTES) return;
      instances = 0;
      total = 0;
      if (due || typeof gc !== 'function') return;
      due = true;
      const collect = (): void => {
        due = false;
        gc();
      };
      if (afterMs > 0) setTimeout(collect, afterMs);
      else setImmediate(collect);
    },
  };
}
