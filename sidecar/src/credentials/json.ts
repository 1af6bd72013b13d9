/** Small helpers for untrusted JSON: narrow `unknown` without casting blindly. */
export type JsonObject = Record<string, unknown>;

export function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** JSON-LD style "one or many": a value or an array of values, as an array. */
export function asArray(value: unknown): unknown[] {
  if (value === undefined || value === null) return [];
  return Array.isArray(value) ? value : [value];
}

/** `id` of a JSON-LD node given as a string or as an object with an `id`. */
export function nodeId(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (isObject(value) && typeof value['id'] === 'string') return value['id'];
  return undefined;
}

export function stringsOf(value: unknown): string[] {
  return asArray(value).filter((v): v is string => typeof v === 'string');
}
