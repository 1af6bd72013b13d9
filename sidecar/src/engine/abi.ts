/**
 * The OPA Wasm ABI, typed in one place (https://www.openpolicyagent.org/docs/wasm).
 *
 * A policy module imports `env.memory`, `env.opa_abort`, `env.opa_println` and
 * `env.opa_builtin0..4`, and exports (among others) `builtins()` and `entrypoints()` which
 * return addresses of JSON values, `opa_json_dump` to serialise a value to a NUL-terminated
 * string, and the ABI version globals. opa-wasm does not expose which host builtins a
 * module needs until one is called; `compileAndInspectWasm` reads that list up front, so a module
 * that needs a builtin Pavilion does not provide is refused at load time, not mid-request.
 */
import { hash } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { DROPPED_MAX_BYTES, DROPPED_MAX_INSTANCES, exposeGcToWorkers } from '../lib/collect-garbage.ts';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';

export const SUPPORTED_ABI_MAJOR = 1;
/** ABI 1.2 added the single-call `opa_eval` fast path that keeps the heap from growing. */
export const MIN_ABI_MINOR = 2;


export interface WasmInspection {
  readonly abiVersion: number;
  readonly abiMinorVersion: number;
  /** Builtins the module calls on the host (not compiled into the module). */
  readonly requiredBuiltins: readonly string[];
  /** Entrypoint name -> id, as compiled. */
  readonly entrypoints: Readonly<Record<string, number>>;
}




/**
 * The inspection, as a self-contained CommonJS script for a sandbox worker. The module is
 * untrusted until it has passed: it is compiled there (when given as bytes) and its start
 * function and exports run there, under a deadline and a memory maximum, never on the event
 * loop. Compiling in the same round trip as the inspection, synchronously on that thread,
 * costs less CPU than an asynchronous compile on the main thread (which hands the work to
 * V8's background threads and back) followed by a second hop to the sandbox; the compiled
 * module comes back to the caller (it is shared, not copied). The worker is kept between
 * inspections (spawning one costs tens of milliseconds of every rollout) and replaced
 * whenever an inspection overruns its deadline or the worker dies.
 */
const INSPECTION_SCRIPT = `
const { parentPort } = require('node:worker_threads');
// each inspection leaves an instance and its memory behind: collected once they add up, as in
// the evaluation workers (see lib/collect-garbage.ts for why a worker must ask; the main
// thread exposes gc before the start). A collection on every inspection cost a third more CPU
// per activation in the rollout benchmark.
const collect = typeof globalThis.gc === 'function' ? globalThis.gc : () => undefined;
const dropped = { instances: 0, bytes: 0 };
const drop = (memory) => {
  dropped.instances += 1;
  dropped.bytes += memory === undefined ? 0 : memory.buffer.byteLength;
  if (dropped.instances < ${DROPPED_MAX_INSTANCES} && dropped.bytes < ${DROPPED_MAX_BYTES}) return;
  dropped.instances = 0;
  dropped.bytes = 0;
  setImmediate(collect);
};
const refuse = () => { throw new Error('policy module called the host during inspection'); };
const value = (g) => (g === undefined ? undefined : typeof g === 'number' ? g : Number(g.value));
const text = (error) => String(error && error.message || error);
parentPort.on('message', ({ id, bytes, initialPages, maximumPages }) => {
  let module;
  try {
    module = new WebAssembly.Module(bytes);
  } catch (error) {
    parentPort.postMessage({ id, ok: false, stage: 'compile', message: text(error) });
    return;
  }
  let memory;
  try {
    memory = new WebAssembly.Memory({ initial: initialPages, maximum: maximumPages });
    const instance = new WebAssembly.Instance(module, { env: {
      memory, opa_abort: refuse, opa_println: () => undefined,
      opa_builtin0: refuse, opa_builtin1: refuse, opa_builtin2: refuse, opa_builtin3: refuse, opa_builtin4: refuse,
    } });
    const e = instance.exports;
    const dump = (addr) => {
      const bytes = new Uint8Array(memory.buffer);
      const start = e.opa_json_dump(addr);
      let end = start;
      while (end < bytes.length && bytes[end] !== 0) end++;
      return new TextDecoder().decode(bytes.subarray(start, end));
    };
    const facts = { abiVersion: value(e.opa_wasm_abi_version), abiMinorVersion: value(e.opa_wasm_abi_minor_version) };
    if (typeof e.builtins === 'function' && typeof e.entrypoints === 'function' && typeof e.opa_json_dump === 'function'
        && facts.abiVersion === ${SUPPORTED_ABI_MAJOR} && facts.abiMinorVersion >= ${MIN_ABI_MINOR}) {
      facts.builtins = dump(e.builtins());
      facts.entrypoints = dump(e.entrypoints());
    }
    parentPort.postMessage({ id, ok: true, facts, module });
  } catch (error) {
    parentPort.postMessage({ id, ok: false, stage: 'inspect', message: text(error) });
  }
  drop(memory);
});
`;

interface InspectionFacts {
  readonly abiVersion?: number;
  readonly abiMinorVersion?: number;
  readonly builtins?: string;
  readonly entrypoints?: string;
}

export interface InspectionLimits {
  readonly initialPages: number;
  /** Memory the module may grow to while being inspected. */
  readonly maximumPages: number;
  readonly timeoutMs: number;
}

type InspectionReply = { id: number; ok: boolean; facts?: InspectionFacts; module?: WebAssembly.Module; stage?: 'compile' | 'inspect'; message?: string };

interface InspectionResult {
  readonly facts: InspectionFacts;
  readonly module: WebAssembly.Module;
}

/** The sandbox worker, one inspection at a time. */
class Inspector {
  #worker: Worker | undefined;
  #nextId = 1;
  #queue: Promise<unknown> = Promise.resolve();

  inspect(bytes: Uint8Array, limits: InspectionLimits): Promise<InspectionResult> {
    const run = this.#queue.then(() => this.#run(bytes, limits));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  #spawn(): Worker {
    exposeGcToWorkers();
    const worker = new Worker(INSPECTION_SCRIPT, {
      eval: true,
      resourceLimits: { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 8 },
    });
    worker.unref();
    worker.on('error', () => undefined); // reported through the pending inspection below
    worker.once('exit', () => {
      if (this.#worker === worker) this.#worker = undefined;
    });
    this.#worker = worker;
    return worker;
  }

  #run(bytes: Uint8Array, limits: InspectionLimits): Promise<InspectionResult> {
    const worker = this.#worker ?? this.#spawn();
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const cleanup = (): void => {
        clearTimeout(timer);
        worker.off('message', onMessage);
        worker.off('error', onError);
        worker.off('exit', onExit);
      };
      const replace = (): void => {
        if (this.#worker === worker) this.#worker = undefined;
        void worker.terminate();
      };
      const timer = setTimeout(() => {
        cleanup();
        replace();
        reject(new PavilionError(
          ErrorCodes.BUNDLE_WASM_INVALID,
          `policy.wasm did not finish instantiating within ${limits.timeoutMs} ms (a start function or export that does not return)`,
        ));
      }, limits.timeoutMs);
      const onMessage = (message: InspectionReply): void => {
        if (message.id !== id) return;
        cleanup();
        const module = message.module;
        if (message.ok && message.facts !== undefined && module !== undefined) resolve({ facts: message.facts, module });
        else if (message.stage === 'compile') reject(new PavilionError(ErrorCodes.BUNDLE_WASM_INVALID, `policy.wasm does not compile: ${message.message ?? 'unknown error'}`));
        else reject(new PavilionError(ErrorCodes.BUNDLE_WASM_INVALID, `policy.wasm does not instantiate as an OPA policy: ${message.message ?? 'unknown error'}`));
      };
      const onError = (error: Error): void => {
        cleanup();
        replace();
        reject(new PavilionError(ErrorCodes.BUNDLE_WASM_INVALID, `policy.wasm inspection failed: ${describeThrown(error)}`, { cause: error }));
      };
      const onExit = (): void => {
        cleanup();
        reject(new PavilionError(ErrorCodes.BUNDLE_WASM_INVALID, 'policy.wasm inspection failed: the sandbox worker exited'));
      };
      worker.on('message', onMessage);
      worker.once('error', onError);
      worker.once('exit', onExit);
      worker.postMessage({ id, bytes, initialPages: limits.initialPages, maximumPages: limits.maximumPages });
    });
  }
}

const inspector = new Inspector();

export interface InspectedModule {
  readonly module: WebAssembly.Module;
  readonly inspection: WasmInspection;
}

/**
 * Modules that passed, by the SHA-256 of their bytes and the memory they were inspected
 * with. Compiling and inspecting the same bytes again gives the same answer, so a rollback,
 * or a revision that changes only data, reuses the module (and skips the sandbox worker,
 * most of an activation's CPU) instead of compiling it again. Failures are not kept.
 */
const inspected = new Map<string, InspectedModule>();
const INSPECTED_MAX_ENTRIES = 8;

/**
 * Compile untrusted bytes in the sandbox worker and inspect the module there, in one round
 * trip (the deadline covers both); the compiled module and its ABI facts, or a typed error.
 */
export async function compileAndInspectWasm(bytes: Uint8Array, limits: InspectionLimits): Promise<InspectedModule> {
  const key = `${hash('sha256', bytes, 'hex')}:${limits.initialPages}:${limits.maximumPages}`;
  const known = inspected.get(key);
  if (known !== undefined) {
    inspected.delete(key); // most recently used last
    inspected.set(key, known);
    return known;
  }
  const { facts, module } = await inspector.inspect(bytes, limits);
  const inspection = checkFacts(facts);
  Object.freeze(inspection.requiredBuiltins);
  Object.freeze(inspection.entrypoints);
  const passed: InspectedModule = Object.freeze({ module, inspection: Object.freeze(inspection) });
  inspected.set(key, passed);
  if (inspected.size > INSPECTED_MAX_ENTRIES) inspected.delete(inspected.keys().next().value as string);
  return passed;
}

function checkFacts(facts: InspectionFacts): WasmInspection {
  const { abiVersion, abiMinorVersion } = facts;
  if (abiVersion !== SUPPORTED_ABI_MAJOR || abiMinorVersion === undefined || abiMinorVersion < MIN_ABI_MINOR) {
    throw new PavilionError(
      ErrorCodes.BUNDLE_ABI_UNSUPPORTED,
      `policy.wasm has OPA Wasm ABI ${abiVersion ?? '?'}.${abiMinorVersion ?? '?'}; ` +
        `Pavilion supports ${SUPPORTED_ABI_MAJOR}.${MIN_ABI_MINOR} and later minors`,
      { details: { abiVersion, abiMinorVersion } },
    );
  }
  if (facts.builtins === undefined || facts.entrypoints === undefined) {
    throw new PavilionError(ErrorCodes.BUNDLE_WASM_INVALID, 'policy.wasm lacks the builtins/entrypoints exports');
  }
  let builtins: Record<string, number>;
  let entrypoints: Record<string, number>;
  try {
    builtins = JSON.parse(facts.builtins) as Record<string, number>;
    entrypoints = JSON.parse(facts.entrypoints) as Record<string, number>;
  } catch (error) {
    throw new PavilionError(ErrorCodes.BUNDLE_WASM_INVALID, `policy.wasm reported unreadable builtins or entrypoints: ${describeThrown(error)}`);
  }
  return {
    abiVersion,
    abiMinorVersion,
    requiredBuiltins: Object.keys(builtins).sort(),
    entrypoints,
  };
}
