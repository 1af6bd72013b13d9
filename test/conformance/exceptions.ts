/**
 * Applicable OPA conformance cases we knowingly do not match, by test name, with the reason.
 *
 * The conformance test marks a listed case "todo" while it still differs, and fails when a
 * listed case starts matching OPA (so this list cannot go stale) or when an unlisted case
 * differs.
 */

/** Why a case cannot match. */
export const EXCEPTION_REASONS = {
  setsAsArrays:
    'opa-wasm hands Rego sets to host builtins as JSON arrays, so a builtin cannot tell a set operand from an array (OPA addresses set members by value)',
  doublePrecision:
    "a 19-digit nanosecond timestamp reaches a host builtin through opa-wasm's JSON.parse as a double (1670006453141828752 is read back as 1670006453141828900), losing nanoseconds",
  testOnlyBuiltin:
    'the case calls test.sleep, a builtin only registered by OPA\'s Go test harness; `opa build` rejects it',
} as const;

export const CONFORMANCE_EXCEPTIONS: Readonly<Record<string, string>> = {
  'time/time caching': EXCEPTION_REASONS.testOnlyBuiltin,
  'time/format': EXCEPTION_REASONS.doublePrecision,
  'jsonpatch/set-success basic-remove': EXCEPTION_REASONS.setsAsArrays,
  'jsonpatch/set-success basic-add': EXCEPTION_REASONS.setsAsArrays,
  'jsonpatch/set-success basic-move': EXCEPTION_REASONS.setsAsArrays,
  'jsonpatch/set-success add-to-nested-array': EXCEPTION_REASONS.setsAsArrays,
  'netcidrcontainsmatches/sets of strings': EXCEPTION_REASONS.setsAsArrays,
  'netcidrcontainsmatches/sets of tuples': EXCEPTION_REASONS.setsAsArrays,
};
