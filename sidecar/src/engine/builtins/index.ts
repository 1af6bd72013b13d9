/**
 * Host builtins for opa-wasm: the OPA builtins that OPA's Wasm compiler does not implement
 * natively, written in TypeScript against OPA's reference semantics (v1/topdown/*.go in
 * OPA v1.22.3), one module per family.
 *
 * Every builtin is synchronous (opa-wasm calls them from inside Wasm). A builtin whose
 * arguments are invalid returns undefined, which makes the call undefined in Rego, matching
 * OPA's default non-strict treatment of builtin errors; an unexpected exception inside a
 * builtin is treated the same way. Results that must stay exact (integers beyond 2^53) are
 * returned as raw JSON text in an ArrayBuffer, which opa-wasm passes through unchanged.
 */
import { type BuiltinFamily, type ContextProvider, type EvaluationContext, type HostBuiltin, hostResult } from './common.ts';
import { cryptoBuiltins } from './crypto.ts';
import { encodingBuiltins } from './encoding.ts';
import { jsonBuiltins } from './json.ts';
import { jwtBuiltins } from './jwt.ts';
import { netBuiltins } from './net.ts';
import { objectBuiltins } from './objects.ts';
import { randomBuiltins } from './random.ts';
import { regexBuiltins } from './regex.ts';
import { semverBuiltins } from './semver.ts';
import { timeBuiltins } from './time.ts';
import { unitsBuiltins } from './units.ts';
import { uuidBuiltins } from './uuid.ts';

export type { EvaluationContext, HostBuiltin } from './common.ts';

function families(context: ContextProvider): BuiltinFamily[] {
  return [
    timeBuiltins(context),
    jwtBuiltins(context),
    cryptoBuiltins(),
    encodingBuiltins(),
    jsonBuiltins(),
    objectBuiltins(),
    semverBuiltins(),
    unitsBuiltins(),
    netBuiltins(),
    regexBuiltins(),
    uuidBuiltins(context),
    randomBuiltins(context),
  ];
}

function guarded(name: string, impl: HostBuiltin): HostBuiltin {
  const wrapped = (...args: unknown[]): unknown => {
    try {
      return hostResult(impl(...args));
    } catch {
      // A failing builtin is undefined in Rego (OPA's non-strict builtin errors).
      return undefined;
    }
  };
  Object.defineProperty(wrapped, 'name', { value: name });
  return wrapped;
}

/** `context()` is called at each builtin invocation and returns the current evaluation's context. */
export function createHostBuiltins(context: () => EvaluationContext): Readonly<Record<string, HostBuiltin>> {
  const table: Record<string, HostBuiltin> = {};
  for (const family of families(context)) {
    for (const [name, impl] of Object.entries(family)) table[name] = guarded(name, impl);
  }
  return Object.freeze(table);
}

/**
 * Names of builtins whose result can differ between two evaluations of the same input (time.now_ns, io.jwt.decode_verify without an explicit time, uuid.rfc4122, rand.intn, http.send, opa.runtime, net.lookup_ip_addr, ...): a decision cache must be skipped for policies that use any of them.
 *
 * This is OPA's own list (builtins declared Nondeterministic in v1/ast/builtins.go) plus the
 * certificate-chain verifiers, whose outcome depends on the current time.
 */
export const NON_DETERMINISTIC_BUILTINS: ReadonlySet<string> = new Set([
  'time.now_ns',
  'io.jwt.decode_verify',
  'io.jwt.encode_sign',
  'io.jwt.encode_sign_raw',
  'uuid.rfc4122',
  'rand.intn',
  'http.send',
  'opa.runtime',
  'net.lookup_ip_addr',
  'json.verify_schema',
  'json.match_schema',
  'crypto.x509.parse_and_verify_certificates',
  'crypto.x509.parse_and_verify_certificates_with_options',
]);

/** Names createHostBuiltins provides (for load-time checks). */
export const HOST_BUILTIN_NAMES: ReadonlySet<string> = new Set(
  families(() => ({ nowNs: 0n })).flatMap((family) => Object.keys(family)),
);
