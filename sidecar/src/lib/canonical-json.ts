/**
 * Canonical JSON for cache keys: object keys sorted recursively (by UTF-16 code units,
 * as RFC 8785 does), no whitespace. Numbers and strings use JSON.stringify's forms.
 * Also enforces a nesting-depth bound, so a hostile input cannot exhaust the stack of any
 * later recursive walk.
 */
import { ErrorCodes, PavilionError } from './errors.ts';

function tooDeep(maxDepth: number): PavilionError {
  return new PavilionError(ErrorCodes.REQUEST_TOO_DEEP, `input is nested deeper than ${maxDepth} levels`, {
    details: { maxDepth },
  });
}

/** A string JSON.stringify would escape: a quote, a backslash, a control character or a surrogate. */
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

/** JSON.stringify of a string, without calling it for the common strings it would only quote. */
function quote(text: string): string {
  return NEEDS_ESCAPE.test(text) ? JSON.stringify(text) : `"${text}"`;
}

function write(value: unknown, depth: number, maxDepth: number): string {
  // the same text as JSON.stringify for every primitive (numbers: ToString of a finite one)
  if (value === null) return 'null';
  switch (typeof value) {
    case 'string':
      return quote(value);
    case 'number':
      return Number.isFinite(value) ? String(value) : 'null';
    case 'boolean':
      return value ? 'true' : 'false';
    case 'object':
      break;
    default:
      return JSON.stringify(value) ?? 'null';
  }
  if (depth >= maxDepth) throw tooDeep(maxDepth);
  if (Array.isArray(value)) {
    let out = '[';
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out += ',';
      out += write(value[i], depth + 1, maxDepth);
    }
    return `${out}]`;
  }
  const keys = Object.keys(value).sort();
  let out = '{';
  let first = true;
  for (const key of keys) {
    const child = (value as Record<string, unknown>)[key];
    if (child === undefined) continue;
    if (!first) out += ',';
    first = false;
    out += `${quote(key)}:${write(child, depth + 1, maxDepth)}`;
  }
  return `${out}}`;
}

export function canonicalJson(value: unknown, maxDepth = 64): string {
  return write(value, 0, maxDepth);
}

/**
 * The canonical JSON of the object `value`, taking the members named in `serialised` as
 * already-canonical text (what `canonicalJson` gave for them): an encoder that also needs those
 * members on their own serialises them once.
 */
export function canonicalJsonWith(value: Readonly<Record<string, unknown>>, serialised: Readonly<Record<string, string>>, maxDepth = 64): string {
  const keys = Object.keys(value).sort();
  let out = '{';
  let first = true;
  for (const key of keys) {
    const child = value[key];
    if (child === undefined) continue;
    if (!first) out += ',';
    first = false;
    out += `${quote(key)}:${Object.hasOwn(serialised, key) ? serialised[key] : write(child, 1, maxDepth)}`;
  }
  return `${out}}`;
}

/** Whether two JSON values are equal as canonical JSON (undefined equals only undefined). */
export function sameCanonicalJson(a: unknown, b: unknown, maxDepth = 64): boolean {
  if (a === undefined || b === undefined) return a === b;
  return canonicalJson(a, maxDepth) === canonicalJson(b, maxDepth);
}

/** Throws ERR_REQUEST_TOO_DEEP when `value` nests deeper than `maxDepth`. */
export function assertDepth(value: unknown, maxDepth: number): void {
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop() as [unknown, number];
    if (node === null || typeof node !== 'object') continue;
    if (depth >= maxDepth) throw tooDeep(maxDepth);
    const children = Array.isArray(node) ? node : Object.values(node);
    for (const child of children) if (child !== null && typeof child === 'object') stack.push([child, depth + 1]);
  }
}

/** How deep a logged decision's input or result may nest to be encoded (the audit log's leaves). */
export const LOGGED_DOCUMENT_MAX_DEPTH = 256;
