/**
 * The OPA Wasm ABI, typed in one place (https://www.openpolicyagent.org/docs/wasm).
 *
 * A policy module imports `env.memory`, `env.opa_abort`, `env.opa_println` and
 * `env.opa_builtin0..4`, and exports (among others) `builtins()` and `entrypoints()` which
 * return addresses of JSON values, `opa_json_dump` to serialise a value to a NUL-terminated
 * string, and the ABI version globals. opa-wasm does not expose which host builtins a
 * module needs until one is called; `inspectWasm` reads that list up front, so a module
 * that needs a builtin Pavilion does not provide is refused at load time, not mid-request.
 */
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';

export const SUPPORTED_ABI_MAJOR = 1;
/** ABI 1.2 added the single-call `opa_eval` fast path that keeps the heap from growing. */
export const MIN_ABI_MINOR = 2;
export const WASM_PAGE_BYTES = 64 * 1024;

interface OpaExports {
  readonly builtins: () => number;
  readonly entrypoints: () => number;
  readonly opa_json_dump: (addr: number) => number;
  readonly opa_wasm_abi_version?: WebAssembly.Global | number;
  readonly opa_wasm_abi_minor_version?: WebAssembly.Global | number;
}

export interface WasmInspection {
  readonly abiVersion: number;
  readonly abiMinorVersion: number;
  /** Builtins the module calls on the host (not compiled into the module). */
  readonly requiredBuiltins: readonly string[];
  /** Entrypoint name -> id, as compiled. */
  readonly entrypoints: Readonly<Record<string, number>>;
}

function globalValue(value: WebAssembly.Global | number | undefined): number | undefined {
  if (value === undefined) return undefined;
  return typeof value === 'number' ? value : Number(value.value);
}

function readCString(memory: WebAssembly.Memory, addr: number): string {
  const bytes = new Uint8Array(memory.buffer);
  let end = addr;
  while (end < bytes.length && bytes[end] !== 0) end++;
  return new TextDecoder().decode(bytes.subarray(addr, end));
}

function dumpJson(exports: OpaExports, memory: WebAssembly.Memory, addr: number): unknown {
  return JSON.parse(readCString(memory, exports.opa_json_dump(addr)));
}

export function compileWasm(bytes: Uint8Array): WebAssembly.Module {
  try {
    return new WebAssembly.Module(bytes);
  } catch (error) {
    throw new PavilionError(ErrorCodes.BUNDLE_WASM_INVALID, `policy.wasm does not compile: ${describeThrown(error)}`, {
      cause: error,
    });
  }
}

/** Instantiate the module once with inert imports and read its ABI facts. */
export function inspectWasm(module: WebAssembly.Module, initialPages: number): WasmInspection {
  const memory = new WebAssembly.Memory({ initial: initialPages });
  const refuse = (): never => {
    throw new PavilionError(ErrorCodes.BUNDLE_WASM_INVALID, 'policy module called the host during inspection');
  };
  let instance: WebAssembly.Instance;
  try {
    instance = new WebAssembly.Instance(module, {
      env: {
        memory,
        opa_abort: refuse,
        opa_println: () => undefined,
        opa_builtin0: refuse,
        opa_builtin1: refuse,
        opa_builtin2: refuse,
        opa_builtin3: refuse,
        opa_builtin4: refuse,
      },
    });
  } catch (error) {
    throw new PavilionError(
      ErrorCodes.BUNDLE_WASM_INVALID,
      `policy.wasm does not instantiate as an OPA policy: ${describeThrown(error)}`,
      { cause: error },
    );
  }
  const exports = instance.exports as unknown as OpaExports;
  const abiVersion = globalValue(exports.opa_wasm_abi_version);
  const abiMinorVersion = globalValue(exports.opa_wasm_abi_minor_version);
  if (abiVersion !== SUPPORTED_ABI_MAJOR || abiMinorVersion === undefined || abiMinorVersion < MIN_ABI_MINOR) {
    throw new PavilionError(
      ErrorCodes.BUNDLE_ABI_UNSUPPORTED,
      `policy.wasm has OPA Wasm ABI ${abiVersion ?? '?'}.${abiMinorVersion ?? '?'}; ` +
        `Pavilion supports ${SUPPORTED_ABI_MAJOR}.${MIN_ABI_MINOR} and later minors`,
      { details: { abiVersion, abiMinorVersion } },
    );
  }
  if (typeof exports.builtins !== 'function' || typeof exports.entrypoints !== 'function') {
    throw new PavilionError(ErrorCodes.BUNDLE_WASM_INVALID, 'policy.wasm lacks the builtins/entrypoints exports');
  }
  const builtins = dumpJson(exports, memory, exports.builtins()) as Record<string, number>;
  const entrypoints = dumpJson(exports, memory, exports.entrypoints()) as Record<string, number>;
  return {
    abiVersion,
    abiMinorVersion,
    requiredBuiltins: Object.keys(builtins).sort(),
    entrypoints,
  };
}
