/**
 * Set `key` on `target` as an own, enumerable data property. For JSON data `__proto__` is a
 * member name like any other (JSON.parse makes it one), but a plain assignment
 * `target['__proto__'] = value` changes the object's prototype instead and the member is lost.
 */
export function setOwn(target: Record<string, unknown>, key: string, value: unknown): void {
  if (key === '__proto__') Object.defineProperty(target, key, { value, writable: true, enumerable: true, configurable: true });
  else target[key] = value;
}
