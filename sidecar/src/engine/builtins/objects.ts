/**
 * object.keys, following OPA's v1/topdown/object.go: the set of an object's keys.
 *
 * OPA's Wasm compiler implements object.keys natively, so this host version only runs if a
 * module imports it from the host; it is provided so the host table is complete.
 *
 * Known limits: the set is returned as a sorted array (opa-wasm cannot carry sets back).
 */
import { type BuiltinFamily, isObject, toSortedSet } from './common.ts';

export function objectBuiltins(): BuiltinFamily {
  return {
    'object.keys': (value) => (isObject(value) ? toSortedSet(Object.keys(value)) : undefined),
  };
}
