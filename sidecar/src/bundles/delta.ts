/**
 * Delta data updates with OPA's `patch.json` semantics (docs: management-bundles, "Delta
 * Bundles"; OPA applies them with its storage patch operations):
 *
 *   upsert  - set the value at the path, creating missing parent objects; on an array,
 *             insert at an index (or append with `-`);
 *   remove  - delete the value at the path, which must exist;
 *   replace - overwrite the value at the path, which must exist.
 *
 * Paths are JSON-pointer-like (`/bank/limits/EUR`, `~1` for '/', `~0` for '~'). A delta's
 * roots must equal its snapshot's, and every path must lie under one of them. Operations
 * apply in order to a copy; any failure refuses the whole delta and nothing changes.
 * Pure: no I/O.
 */
import { setOwn } from '../lib/own-property.ts';
import { ErrorCodes, PavilionError } from '../lib/errors.ts';
import { pathWithin } from './archive.ts';

export interface PatchOperation {
  readonly op: 'upsert' | 'remove' | 'replace';
  readonly path: string;
  readonly value?: unknown;
}

/** One delta data update (OPA `patch.json` semantics) on top of a tenant's snapshot, as applied. */
export interface DeltaUpdate {
  /** The deploy (pointer sequence) of the snapshot this delta applies to. */
  readonly base: number;
  /** 1, 2, 3, ... per snapshot: a gap means a delta was lost. */
  readonly sequence: number;
  readonly roots: readonly string[];
  readonly operations: readonly PatchOperation[];
  /** The delta's signatures (`signDelta`); unsigned deltas only for development tenants. */
  readonly signatures?: readonly string[];
}

/**
 * A delta update as published on `<prefix>.delta.<tenant>` and kept with the last known good:
 * OPA's `patch.json` plus the deploy it applies to (`base`, the pointer's KV revision), its
 * place in that deploy's sequence (1, 2, 3, ...) and its signatures (over all of that, as a
 * bundle's cover its files).
 */
export interface DeltaMessageV1 {
  readonly v: 1;
  readonly tenant: string;
  readonly base: number;
  readonly sequence: number;
  readonly roots: readonly string[];
  readonly patch: { readonly data: readonly PatchOperation[] };
  /** OPA's `.signatures.json` list over the delta (`signDelta`); absent when unsigned. */
  readonly signatures?: readonly string[];
}

function invalid(message: string): PavilionError {
  return new PavilionError(ErrorCodes.BUNDLE_DELTA_INVALID, `delta is invalid: ${message}`);
}

function split(path: string): string[] {
  return path.split('/').filter((s) => s !== '');
}

export function parsePatchPath(path: string): string[] {
  const trimmed = path.replace(/^\/+|\/+$/g, '');
  if (trimmed === '') throw invalid('a patch path must not be the data root');
  return trimmed.split('/').map((segment) => {
    if (/~(?![01])/.test(segment)) throw invalid(`bad escape in patch path ${JSON.stringify(path)}`);
    return segment.replaceAll('~1', '/').replaceAll('~0', '~');
  });
}

/** Validate a `patch.json` document: `{"data": [{op, path, value}]}`. */
export function parsePatch(value: unknown): PatchOperation[] {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid('patch must be an object');
  const data = (value as { data?: unknown }).data;
  if (!Array.isArray(data)) throw invalid('patch.data must be an array of operations');
  return data.map((raw: unknown, i): PatchOperation => {
    if (typeof raw !== 'object' || raw === null) throw invalid(`data[${i}] must be an object`);
    const { op, path, value: v } = raw as Record<string, unknown>;
    if (op !== 'upsert' && op !== 'remove' && op !== 'replace') throw invalid(`data[${i}]: bad patch operation ${JSON.stringify(op)}`);
    if (typeof path !== 'string') throw invalid(`data[${i}].path must be a string`);
    if (op !== 'remove' && !Object.hasOwn(raw, 'value')) throw invalid(`data[${i}]: ${op} needs a value`);
    if (!path.isWellFormed()) throw invalid(`data[${i}].path holds an unpaired surrogate`);
    if (op !== 'remove') checkCarried(v, `data[${i}].value`, 0);
    return op === 'remove' ? { op, path } : { op, path, value: v };
  });
}

const MAX_VALUE_DEPTH = 512;

/**
 * A delta's value must be one its signature covers exactly: the signed hash is over canonical
 * JSON, which writes an unpaired surrogate as U+FFFD and an overflowed number (1e400, parsed
 * as Infinity) as null, so such a value would verify as another. Refused, not repaired.
 */
function checkCarried(value: unknown, where: string, depth: number): void {
  if (typeof value === 'string') {
    if (!value.isWellFormed()) throw invalid(`${where} holds an unpaired surrogate`);
    return;
  }
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw invalid(`${where} holds a number JSON cannot carry (it overflows)`);
    return;
  }
  if (typeof value !== 'object' || value === null) return;
  if (depth >= MAX_VALUE_DEPTH) throw invalid(`${where} is nested deeper than ${MAX_VALUE_DEPTH} levels`);
  if (Array.isArray(value)) {
    value.forEach((item, i) => checkCarried(item, `${where}[${i}]`, depth + 1));
    return;
  }
  for (const [key, child] of Object.entries(value)) {
    if (!key.isWellFormed()) throw invalid(`${where} has a key with an unpaired surrogate`);
    checkCarried(child, `${where}.${key}`, depth + 1);
  }
}

/** A delta's roots must be its snapshot's (same set). */
export function checkDeltaRoots(deltaRoots: readonly string[], snapshotRoots: readonly string[]): void {
  const a = [...new Set(deltaRoots.map((r) => split(r).join('/')))].sort();
  const b = [...new Set(snapshotRoots.map((r) => split(r).join('/')))].sort();
  if (a.length !== b.length || a.some((r, i) => r !== b[i])) {
    throw new PavilionError(ErrorCodes.BUNDLE_DELTA_ROOTS, `delta roots ${JSON.stringify(deltaRoots)} differ from the snapshot's ${JSON.stringify(snapshotRoots)}`);
  }
}

type Container = Record<string, unknown> | unknown[];

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * An array position as OPA's storage reads one (Go's strconv.Atoi: optional sign, decimal
 * digits, so "01" and "+1" are 1), or undefined when `key` is not one. The same rule for the
 * positions a path walks through and for its last one.
 */
function arrayPosition(key: string): number | undefined {
  return /^[+-]?\d+$/.test(key) ? Number(key) : undefined;
}

function child(container: unknown, key: string): unknown {
  if (Array.isArray(container)) {
    const index = arrayPosition(key);
    return index === undefined || index < 0 ? undefined : container[index];
  }
  if (isObject(container)) return Object.hasOwn(container, key) ? container[key] : undefined;
  return undefined;
}

/** The position `key` names in `array`; with `allowEnd` (an upsert), `-` or the length itself spelled plainly append, as in OPA. */
function arrayIndex(array: unknown[], key: string, allowEnd: boolean, path: string): number {
  if (allowEnd && (key === '-' || key === String(array.length))) return array.length;
  const index = arrayPosition(key);
  if (index === undefined) throw invalid(`${path}: ${JSON.stringify(key)} is not an array index`);
  if (index < 0 || index >= array.length) throw invalid(`${path}: index ${index} is out of range`);
  return index;
}

/** Apply operations to a copy of `data`; `roots` confine every path. */
export function applyPatch(data: Record<string, unknown>, operations: readonly PatchOperation[], roots: readonly string[]): Record<string, unknown> {
  const result = structuredClone(data);
  const rootPaths = roots.map(split);
  for (const { op, path, value } of operations) {
    const segments = parsePatchPath(path);
    if (!rootPaths.some((root) => pathWithin(segments, root))) {
      throw new PavilionError(ErrorCodes.BUNDLE_DELTA_ROOTS, `delta path ${path} is outside the bundle's roots ${JSON.stringify(roots)}`);
    }
    const parentPath = segments.slice(0, -1);
    const key = segments.at(-1) as string;
    let parent: unknown = result;
    for (let i = 0; i < parentPath.length; i++) {
      const segment = parentPath[i] as string;
      let next = child(parent, segment);
      if (next === undefined && op === 'upsert' && isObject(parent)) {
        next = {};
        setOwn(parent, segment, next);
      }
      if (typeof next !== 'object' || next === null) throw invalid(`${op} ${path}: document missing at /${parentPath.slice(0, i + 1).join('/')}`);
      parent = next;
    }
    const container = parent as Container;
    if (Array.isArray(container)) {
      if (op === 'upsert') container.splice(arrayIndex(container, key, true, path), 0, structuredClone(value));
      else if (op === 'remove') container.splice(arrayIndex(container, key, false, path), 1);
      else container[arrayIndex(container, key, false, path)] = structuredClone(value);
      continue;
    }
    const exists = Object.hasOwn(container, key);
    if (op !== 'upsert' && !exists) throw invalid(`${op} ${path}: document missing`);
    if (op === 'remove') delete container[key];
    else setOwn(container, key, structuredClone(value));
  }
  return result;
}
