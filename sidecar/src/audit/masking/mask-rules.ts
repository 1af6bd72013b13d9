/**
 * OPA's decision log masking, reproduced rule for rule from OPA v1 `plugins/logs/mask.go`
 * (https://www.openpolicyagent.org/docs/management-decision-logs#masking-sensitive-data).
 * Pure.
 *
 * `data.system.log.mask` (here: the tenant's `<namespace>.system.log.mask`) evaluates to a
 * set of rules, each either
 *   - a string path such as "/input/password": remove it, recorded in `erased`;
 *   - {"op": "remove", "path": ...}: the same;
 *   - {"op": "upsert", "path": ..., "value": v}: set it (creating missing objects on the way),
 *     recorded in `masked`.
 * Paths start with /input, /result (or /nd_builtin_cache, which Pavilion events lack). Their
 * segments are not JSON-pointer-unescaped: like OPA, each raw segment must be a valid URL path
 * segment and is looked up as Go's `url.PathEscape` of itself. A rule whose target does not
 * exist changes nothing and is not recorded. A malformed rule set is refused as a whole
 * (ERR_AUDIT_MASK_INVALID) - OPA then does not log the event; Pavilion logs it with input and
 * result erased instead (see DecisionMasker).
 */
import { setOwn } from '../../lib/own-property.ts';
import { ErrorCodes, PavilionError } from '../../lib/errors.ts';
import type { DecisionEventV1 } from '../decision-event.ts';
import { rebuildEvent } from './rebuild-event.ts';

/** The members a masked event gets anew. */
const MASKED_MEMBERS: ReadonlySet<string> = new Set(['input', 'result', 'erased', 'masked']);

export interface MaskRule {
  readonly op: 'remove' | 'upsert';
  readonly path: string;
  readonly value: unknown;
  /** Segments after Go's url.PathEscape, including the first ("input" / "result"). */
  readonly parts: readonly string[];
}

type Json = unknown;
type JsonObject = Record<string, Json>;

function invalid(message: string): PavilionError {
  return new PavilionError(ErrorCodes.AUDIT_MASK_INVALID, `mask rule: ${message}`);
}

const isObject = (v: unknown): v is JsonObject => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Go's url.PathUnescape validity: every '%' starts a two-hex-digit escape. */
function checkPathSegment(segment: string): void {
  for (let i = 0; i < segment.length; i++) {
    if (segment[i] === '%') {
      const hex = segment.slice(i + 1, i + 3);
      if (!/^[0-9A-Fa-f]{2}$/.test(hex)) throw invalid(`invalid URL escape ${JSON.stringify(segment.slice(i, i + 3))}`);
      i += 2;
    }
  }
}

/** Go's url.PathEscape (encodePathSegment): keeps unreserved characters and $ & + : = @. */
const UNESCAPED = /^[A-Za-z0-9\-_.~$&+:=@]*$/;

export function goPathEscape(segment: string): string {
  if (UNESCAPED.test(segment)) return segment;
  let out = '';
  for (const byte of Buffer.from(segment, 'utf8')) {
    const c = String.fromCharCode(byte);
    if (/[A-Za-z0-9\-_.~$&+:=@]/.test(c)) out += c;
    else out += `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** Go's strconv.Atoi for the index checks (optional sign, decimal digits). */
function goAtoi(s: string): number | undefined {
  if (!/^[+-]?[0-9]+$/.test(s)) return undefined;
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : undefined;
}

function newRule(path: string, op: 'remove' | 'upsert', value: unknown): MaskRule {
  if (path.length === 0) throw invalid('mask must be non-empty');
  if (!path.startsWith('/')) throw invalid('mask must be slash-prefixed');
  const raw = path.slice(1).split('/');
  if (!['input', 'result', 'nd_builtin_cache'].includes(raw[0]!)) throw invalid(`mask prefix not allowed: ${raw[0]}`);
  for (const segment of raw) checkPathSegment(segment);
  return { op, path, value, parts: raw.map(goPathEscape) };
}

/**
 * What a refused value is, never the value: the refusal lands in the logged event's error
 * and in health, and a rule's value may hold what it was written to mask.
 */
function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return value === '' ? 'an empty string' : 'a string';
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}

/** OPA's newMaskRuleSet: the value of the mask rule must be an array (a Rego set). */
export function parseMaskRules(value: unknown): MaskRule[] {
  if (!Array.isArray(value)) throw invalid(`unexpected rule format: ${kindOf(value)}, not a set`);
  return value.map((item): MaskRule => {
    if (typeof item === 'string') return newRule(item, 'remove', undefined);
    if (isObject(item)) {
      const op = item['op'];
      if ('op' in item && (typeof op !== 'string' || op === '')) throw invalid(`invalid "op" value: ${kindOf(op)}`);
      const path = item['path'];
      if ('path' in item && (typeof path !== 'string' || path === '')) throw invalid(`invalid "path" value: ${kindOf(path)}`);
      // A missing value is Go's nil: JSON null.
      const rule = newRule(typeof path === 'string' ? path : '', 'remove', Object.hasOwn(item, 'value') ? item['value'] : null);
      if (op !== 'remove' && op !== 'upsert') throw invalid(`mask op is not supported: ${typeof op === 'string' ? op : ''}`);
      return { ...rule, op };
    }
    throw invalid(`invalid mask rule format encountered: ${Array.isArray(item) ? 'array' : typeof item}`);
  });
}

const INVALID = Symbol('invalid object');

/** mask.go removeValue: walk to the parent, delete the key or splice the index. */
function removeValue(path: readonly string[], root: Json, spine: Spine): typeof INVALID | undefined {
  if (path.length === 0) return undefined;
  const target = path[path.length - 1]!;
  let node: Json = root;
  let parent: Json = undefined;
  let parentKey = '';
  for (let i = 0; i < path.length - 1; i++) {
    const key = path[i]!;
    if (isObject(node)) {
      if (!Object.hasOwn(node, key)) return INVALID;
      parent = node;
      parentKey = key;
      node = spine.member(node, key);
    } else if (Array.isArray(node)) {
      const index = goAtoi(key);
      if (index === undefined || index < 0 || index >= node.length) return INVALID;
      parent = node;
      parentKey = key;
      node = spine.element(node, index);
    } else {
      return INVALID;
    }
  }
  if (isObject(node)) {
    if (!Object.hasOwn(node, target)) return INVALID;
    delete node[target];
    return undefined;
  }
  if (Array.isArray(node)) {
    const index = goAtoi(target);
    if (index === undefined || index < 0 || index >= node.length) return INVALID;
    const spliced = spine.adopt([...node.slice(0, index), ...node.slice(index + 1)]);
    if (Array.isArray(parent)) {
      const at = goAtoi(parentKey);
      if (at === undefined) return INVALID;
      parent[at] = spliced;
    } else if (isObject(parent)) {
      setOwn(parent, parentKey, spliced);
    } else {
      return INVALID;
    }
    return undefined;
  }
  return INVALID;
}

/** mask.go mkdirp: create missing objects on the way, then set. */
function mkdirp(root: JsonObject, path: readonly string[], value: Json, spine: Spine): typeof INVALID | undefined {
  if (path.length === 0) return undefined;
  let node: Json = root;
  for (let i = 0; i < path.length - 1; i++) {
    const key = path[i]!;
    if (isObject(node)) {
      if (!Object.hasOwn(node, key)) setOwn(node, key, spine.adopt({}));
      node = spine.member(node, key);
    } else if (Array.isArray(node)) {
      const index = goAtoi(key);
      if (index === undefined || index < 0) return INVALID;
      // Go appends nils to a local copy of the slice: the parent never sees them.
      node = index < node.length ? spine.element(node, index) : null;
    } else {
      return INVALID;
    }
  }
  const last = path[path.length - 1]!;
  if (isObject(node)) {
    setOwn(node, last, value);
    return undefined;
  }
  if (Array.isArray(node)) {
    const index = goAtoi(last);
    if (index === undefined || index < 0 || index >= node.length) return INVALID;
    node[index] = value;
    return undefined;
  }
  return INVALID;
}

/** An array as JSON.parse makes one: Array's prototype, no holes, no extra properties. */
function isPlainArray(value: unknown[]): boolean {
  return Object.getPrototypeOf(value) === Array.prototype && Object.keys(value).length === value.length;
}

/** An object as JSON.parse makes one (or a null-prototype one). */
function isPlainObject(value: object): boolean {
  const prototype = Object.getPrototypeOf(value) as unknown;
  return prototype === Object.prototype || prototype === null;
}

/** Thrown by plainCopy for anything but plain JSON data without shared parts. */
const NOT_PLAIN = Symbol('not plain JSON data');

/**
 * A deep copy of plain JSON data (what a parsed request body is): primitives, arrays without
 * holes or extra properties, objects whose prototype is Object.prototype or null, each object
 * reached once. Anything else throws NOT_PLAIN.
 */
function plainCopy(value: Json, seen: Set<object>): Json {
  if (typeof value !== 'object') {
    if (typeof value === 'symbol' || typeof value === 'function') throw NOT_PLAIN;
    return value;
  }
  if (value === null) return value;
  if (seen.has(value)) throw NOT_PLAIN;
  seen.add(value);
  if (Array.isArray(value)) {
    if (!isPlainArray(value)) throw NOT_PLAIN;
    const out: Json[] = new Array<Json>(value.length);
    for (let i = 0; i < value.length; i++) out[i] = plainCopy(value[i], seen);
    return out;
  }
  if (!isPlainObject(value)) throw NOT_PLAIN;
  const out: JsonObject = {};
  for (const key of Object.keys(value)) {
    const child = plainCopy((value as JsonObject)[key], seen);
    setOwn(out, key, child);
  }
  return out;
}

/**
 * A deep copy, as structuredClone makes it: plain JSON data (every parsed input) is copied
 * directly - structuredClone serialises and deserialises, several times the cost - and
 * anything else (class instances, shared or cyclic parts, holes) goes to structuredClone.
 */
function copy<T>(value: T): T {
  if (value === undefined) return value;
  try {
    return plainCopy(value, new Set()) as T;
  } catch {
    // NOT_PLAIN, a throwing getter, a stack overflow: whatever structuredClone makes of it
    return structuredClone(value);
  }
}

/**
 * The containers one masking may write: each object or array on a rule's path is copied
 * (shallow) the first time a rule walks through it, and put in place of the original in its
 * (already copied) parent. Everything off the rules' paths stays shared with the caller's
 * event and is never written. Copying the whole input instead, as a deep copy, was most of
 * the cost of masking a large input for one field.
 */
class Spine {
  readonly #fresh = new Set<object>();

  /** A container this masking made itself (and so may write): never copied again. */
  adopt<T extends Json>(value: T): T {
    if (typeof value === 'object' && value !== null) this.#fresh.add(value);
    return value;
  }

  /** `value` as a container this masking owns: its shallow copy, made once. */
  own(value: Json): Json {
    if (typeof value !== 'object' || value === null || this.#fresh.has(value)) return value;
    const copied = shallowCopy(value);
    this.#fresh.add(copied as object);
    return copied;
  }

  member(node: JsonObject, key: string): Json {
    const child = node[key];
    const owned = this.own(child);
    if (owned !== child) setOwn(node, key, owned);
    return owned;
  }

  element(node: Json[], index: number): Json {
    const child = node[index];
    const owned = this.own(child);
    if (owned !== child) node[index] = owned;
    return owned;
  }
}

/**
 * One level of a container: a plain array or object is copied member by member; anything
 * else (a class instance, an array with extra properties) is deep-copied as `copy` does.
 * Masking and pseudonymisation both copy along a path with it.
 */
export function shallowCopy(value: object): Json {
  if (Array.isArray(value)) return isPlainArray(value) ? (value.slice() as Json[]) : copy(value as Json);
  if (!isPlainObject(value)) return copy(value as Json);
  const out: JsonObject = {};
  for (const key of Object.keys(value)) setOwn(out, key, (value as JsonObject)[key]);
  return out;
}

/**
 * Apply rules in order to the event without writing any part of it (input and result copied
 * along the rules' paths), appending to `erased` and `masked` as OPA does.
 */
export function applyMaskRules(event: DecisionEventV1, rules: readonly MaskRule[]): DecisionEventV1 {
  if (rules.length === 0) return event;
  const state: { input: Json; result: Json } = { input: event.input, result: event.result };
  const spine = new Spine();
  const own = (part: 'input' | 'result'): Json => (state[part] = spine.own(state[part]));
  const erased = [...(event.erased ?? [])];
  const masked = [...(event.masked ?? [])];
  for (const rule of rules) {
    const part = rule.parts[0];
    if (part !== 'input' && part !== 'result') continue; // nd_builtin_cache: never present
    if (state[part] === undefined) continue;
    const full = rule.parts.length === 1;
    const shown = `/${rule.parts.join('/')}`;
    if (rule.op === 'remove') {
      if (full) state[part] = undefined;
      else if (removeValue(rule.parts.slice(1), own(part), spine) === INVALID) continue;
      erased.push(shown);
    } else {
      if (full) {
        state[part] = spine.adopt(copy(rule.value));
      } else {
        const root = own(part);
        if (!isObject(root)) continue;
        if (mkdirp(root, rule.parts.slice(1), copy(rule.value), spine) === INVALID) continue;
      }
      masked.push(shown);
    }
  }
  return rebuildEvent(event, MASKED_MEMBERS, {
    input: state.input,
    result: state.result,
    erased: erased.length === 0 ? undefined : erased,
    masked: masked.length === 0 ? undefined : masked,
  });
}
