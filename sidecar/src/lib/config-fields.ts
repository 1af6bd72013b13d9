/**
 * Fields of configuration JSON, validated: each helper returns the value (or its default) or
 * throws ERR_CONFIG_INVALID naming the JSON path. Shared by the sidecar config and the
 * credential policies it holds, so both refuse the same things in the same words.
 */
import { ErrorCodes, PavilionError } from './errors.ts';

export type Json = Record<string, unknown>;

export function fail(path: string, message: string, cause?: unknown): never {
  throw new PavilionError(ErrorCodes.CONFIG_INVALID, `config ${path}: ${message}`, cause === undefined ? {} : { cause });
}

export function objectAt(value: unknown, path: string): Json {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(path, 'must be an object');
  return value as Json;
}

export function refuseUnknown(obj: Json, known: readonly string[], path: string): void {
  for (const key of Object.keys(obj)) if (!known.includes(key)) fail(`${path}.${key}`, 'unknown key');
}

export function int(obj: Json, key: string, path: string, fallback: number, min: number, max: number): number {
  const value = obj[key];
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    fail(`${path}.${key}`, `must be an integer between ${min} and ${max}`);
  }
  return value;
}

/** A non-empty string; without a `fallback` the field is required. */
export function str(obj: Json, key: string, path: string, fallback?: string): string {
  const value = obj[key];
  if (value === undefined && fallback !== undefined) return fallback;
  if (typeof value !== 'string' || value === '') fail(`${path}.${key}`, 'must be a non-empty string');
  return value;
}

export function bool(obj: Json, key: string, path: string, fallback: boolean): boolean {
  const value = obj[key];
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') fail(`${path}.${key}`, 'must be a boolean');
  return value;
}

/** A nested object (absent: empty) with only the `known` keys. */
export function section(obj: Json, key: string, path: string, known: readonly string[]): Json {
  const value = obj[key] ?? {};
  const section = objectAt(value, `${path}.${key}`);
  refuseUnknown(section, known, `${path}.${key}`);
  return section;
}

export function deepFreeze<T>(value: T): T {
  // typed arrays (credential policies hold file bytes) cannot be frozen; they are copies nobody shares
  if (typeof value === 'object' && value !== null && !ArrayBuffer.isView(value)) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}
