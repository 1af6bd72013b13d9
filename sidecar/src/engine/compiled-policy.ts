/**
 * Turning a validated `Bundle` into a `CompiledPolicy` the engine can load into workers:
 * compile the Wasm once, read its ABI facts, and refuse it when it needs a builtin that
 * neither opa-wasm nor Pavilion's host builtins provide.
 */
import type { Bundle } from '../bundles/index.ts';
import { ErrorCodes, PavilionError } from '../lib/errors.ts';
import { compileAndInspectWasm } from './abi.ts';
import { HOST_BUILTIN_NAMES, NON_DETERMINISTIC_BUILTINS } from './builtins/index.ts';

/** Builtins the opa-wasm SDK itself supplies to modules (src/builtins in the SDK). */
export const SDK_BUILTIN_NAMES: ReadonlySet<string> = new Set([
  'sprintf',
  'json.is_valid',
  'regex.split',
  'yaml.is_valid',
  'yaml.marshal',
  'yaml.unmarshal',
]);

export interface CompiledPolicy {
  readonly tenant: string;
  readonly revision: string;
  readonly module: WebAssembly.Module;
  readonly data: Record<string, unknown>;
  /** Entrypoint path (e.g. 'bank/authz/allow') -> compiled entrypoint id. */
  readonly entrypoints: ReadonlyMap<string, number>;
  readonly requiredBuiltins: readonly string[];
  /** False when the module calls a builtin whose result may change between evaluations. */
  readonly deterministic: boolean;
  readonly bundleDigest: string;
  readonly manifestMetadata: Readonly<Record<string, unknown>>;
  /** Set when `data` is the bundle's data with deltas applied (same module, new data). */
  readonly variant?: string;
}

export interface CompileOptions {
  readonly initialMemoryPages: number;
  /** Memory the module may use while inspected (default 1,024 pages = 64 MiB). */
  readonly maximumMemoryPages?: number;
  /** Deadline for instantiating the untrusted module (default 5,000 ms). */
  readonly inspectionTimeoutMs?: number;
}

export async function compilePolicy(bundle: Bundle, options: CompileOptions): Promise<CompiledPolicy> {
  const { module, inspection } = await compileAndInspectWasm(bundle.wasm, {
    initialPages: options.initialMemoryPages,
    maximumPages: Math.max(options.initialMemoryPages, options.maximumMemoryPages ?? 1024),
    timeoutMs: options.inspectionTimeoutMs ?? 5_000,
  });
  const missing = inspection.requiredBuiltins.filter(
    (name) => !SDK_BUILTIN_NAMES.has(name) && !HOST_BUILTIN_NAMES.has(name),
  );
  if (missing.length > 0) {
    throw new PavilionError(
      ErrorCodes.BUNDLE_BUILTIN_MISSING,
      `policy for tenant ${bundle.tenant} needs builtin${missing.length > 1 ? 's' : ''} that Pavilion does not provide: ${missing.join(', ')}`,
      { details: { missing } },
    );
  }
  const entrypoints = new Map<string, number>();
  for (const path of bundle.entrypoints) {
    const id = inspection.entrypoints[path];
    if (id === undefined) {
      throw new PavilionError(
        ErrorCodes.BUNDLE_MANIFEST_INVALID,
        `manifest entrypoint ${path} is not compiled into policy.wasm`,
      );
    }
    entrypoints.set(path, id);
  }
  return {
    tenant: bundle.tenant,
    revision: bundle.revision,
    module,
    data: bundle.data,
    entrypoints,
    requiredBuiltins: inspection.requiredBuiltins,
    deterministic: !inspection.requiredBuiltins.some((name) => NON_DETERMINISTIC_BUILTINS.has(name)),
    bundleDigest: bundle.digest,
    manifestMetadata: bundle.manifest.metadata,
  };
}
