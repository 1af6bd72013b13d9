/**
 * Growing a packed array (a typed array or a Buffer used as one): the audit log's tree levels,
 * leaf offsets and decision ids each keep one. Pure.
 */

type Packed = Buffer | Float64Array | Int32Array | Uint32Array;

/**
 * `array` when it holds `needed` elements, else a new one of the next doubling that does, made
 * by `make` (zero-filled), with the first `used` elements copied over.
 */
export function withRoom<T extends Packed>(array: T, needed: number, used: number, make: (length: number) => T): T {
  if (needed <= array.length) return array;
  let length = Math.max(1, array.length) * 2;
  while (length < needed) length *= 2;
  const grown = make(length);
  grown.set(array.subarray(0, used));
  return grown;
}
