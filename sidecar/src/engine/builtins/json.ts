/**
 * json.patch, following OPA's v1/topdown/json.go (applyPatches over internal/edittree):
 * RFC 6902 operations add, remove, replace, move, copy and test, applied in order; a path is a
 * JSON pointer string ("" is the document; leading slashes are trimmed; ~1 and ~0 unescaped)
 * or an array of segments; array indices are integers without leading zeros, "-" appends;
 * any failing operation makes the whole call undefined.
 *
 * Known limits: Rego sets reach the host as arrays, so patching a set behaves like patching an
 * array (OPA addresses set members by value).
 */
import { isPavilionError } from '../../lib/errors.ts';
import { type BuiltinFamily, builtinFailure, isObject, isString, valuesEqual } from './common.ts';

const DELETED = Symbol('deleted');

function fail(message: string): never {
  throw builtinFailure(`json.patch: ${message}`);
}

function parsePath(path: unknown): unknown[] {
  if (isString(path)) {
    if (path === '') return [];
    return path
      .replace(/^\/+/, '')
      .split('/')
      .map((part) => part.replaceAll('~1', '/').replaceAll('~0', '~'));
  }
  if (Array.isArray(path)) return [...path];
  return fail('path must be a string or an array');
}

function toIndex(length: number, key: unknown): number {
  if (typeof key === 'number') {
    if (!Number.isInteger(key)) fail('invalid number type for indexing');
    return key;
  }
  if (isString(key)) {
    if (key === '-') return length;
    // OPA's util.Atoi64: optional sign, digits, optionally '.' followed by zeros only.
    const body = key.replace(/^[+-]/, '');
    if (body.length === 0 || body.length > 19 || !/^\d*(\.0*)?$/.test(body)) fail('invalid string for indexing');
    if (key !== '0' && key.startsWith('0')) fail('leading zeros are not allowed in JSON paths');
    return Number(key.replace(/\.0*$/, '')) || 0;
  }
  return fail('invalid type for indexing');
}

function child(node: unknown, key: unknown): unknown {
  if (Array.isArray(node)) {
    const index = toIndex(node.length, key);
    if (index < 0 || index >= node.length) fail('index out of bounds');
    return node[index];
  }
  if (isObject(node)) {
    if (!isString(key) || !Object.prototype.hasOwnProperty.call(node, key)) fail('path does not exist');
    return node[key];
  }
  return fail('expected a composite value');
}

function navigate(doc: unknown, path: readonly unknown[]): unknown {
  if (doc === DELETED) fail('deleted node encountered');
  let node = doc;
  for (const key of path) node = child(node, key);
  return node;
}

function insert(doc: unknown, path: readonly unknown[], value: unknown): unknown {
  if (path.length === 0) return structuredClone(value);
  const parent = navigate(doc, path.slice(0, -1));
  const key = path[path.length - 1];
  if (Array.isArray(parent)) {
    const index = toIndex(parent.length, key);
    if (index < 0 || index > parent.length) fail('index for array insertion out of bounds');
    parent.splice(index, 0, structuredClone(value));
  } else if (isObject(parent)) {
    if (!isString(key)) fail('object keys must be strings');
    Object.defineProperty(parent, key, {
      value: structuredClone(value),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  } else {
    fail('expected a composite value');
  }
  return doc;
}

function remove(doc: unknown, path: readonly unknown[]): unknown {
  if (path.length === 0) {
    if (doc === DELETED) fail('deleted node encountered');
    return DELETED;
  }
  const parent = navigate(doc, path.slice(0, -1));
  const key = path[path.length - 1];
  if (Array.isArray(parent)) {
    const index = toIndex(parent.length, key);
    if (index < 0 || index > parent.length - 1) fail('index for array delete out of bounds');
    parent.splice(index, 1);
  } else if (isObject(parent)) {
    if (!isString(key) || !Object.prototype.hasOwnProperty.call(parent, key)) fail('cannot delete missing key');
    delete parent[key];
  } else {
    fail('expected a composite value');
  }
  return doc;
}

function required(operation: Record<string, unknown>, name: string): unknown {
  if (!Object.prototype.hasOwnProperty.call(operation, name)) fail(`missing required attribute '${name}'`);
  return operation[name];
}

function applyPatch(source: unknown, operations: unknown): unknown {
  if (!Array.isArray(operations)) return undefined;
  let doc: unknown = structuredClone(source);
  try {
    for (const operation of operations) {
      if (!isObject(operation)) fail('must be an array of JSON-Patch objects');
      const rawPath = required(operation, 'path');
      const op = required(operation, 'op');
      if (!isString(op)) fail("attribute 'op' must be a string");
      const path = parsePath(rawPath);
      switch (op) {
        case 'add':
          doc = insert(doc, path, required(operation, 'value'));
          break;
        case 'remove':
          doc = remove(doc, path);
          break;
        case 'replace':
          doc = remove(doc, path);
          doc = insert(doc, path, required(operation, 'value'));
          break;
        case 'move': {
          const from = parsePath(required(operation, 'from'));
          const chunk = structuredClone(navigate(doc, from));
          doc = remove(doc, from);
          doc = insert(doc, path, chunk);
          break;
        }
        case 'copy': {
          const from = parsePath(required(operation, 'from'));
          doc = insert(doc, path, navigate(doc, from));
          break;
        }
        case 'test': {
          const chunk = navigate(doc, path);
          if (!valuesEqual(chunk, required(operation, 'value'))) fail('test failed');
          break;
        }
        default:
          fail(`unrecognized op: '${op}'`);
      }
    }
  } catch (error) {
    if (isPavilionError(error)) return undefined;
    throw error;
  }
  return doc === DELETED ? undefined : doc;
}

export function jsonBuiltins(): BuiltinFamily {
  return {
    'json.patch': (source, operations) => applyPatch(source, operations),
  };
}
