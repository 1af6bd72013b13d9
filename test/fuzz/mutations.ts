/**
 * Byte-level mutations of a valid input (a signed bundle, a log file, a protobuf message),
 * as fast-check arbitraries, so a failing case shrinks to the fewest and smallest edits.
 * Positions are drawn as plain integers and taken modulo the length at the moment each edit
 * applies, so a shrunk list stays meaningful whatever the edits before it did.
 */
import fc from 'fast-check';

export type Mutation =
  | { readonly kind: 'flip'; readonly at: number; readonly bit: number }
  | { readonly kind: 'set'; readonly at: number; readonly value: number }
  | { readonly kind: 'cut'; readonly at: number }
  | { readonly kind: 'insert'; readonly at: number; readonly bytes: Uint8Array }
  | { readonly kind: 'delete'; readonly at: number; readonly length: number }
  | { readonly kind: 'duplicate'; readonly at: number; readonly length: number; readonly to: number };

const position = fc.nat({ max: 0x7fffffff });

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('flip' as const), at: position, bit: fc.nat({ max: 7 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('set' as const), at: position, value: fc.constantFrom(0x00, 0xff, 0x7f, 0x80, 0x22, 0x2f, 0x5c, 0x2e) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('cut' as const), at: position }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('insert' as const), at: position, bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('delete' as const), at: position, length: fc.integer({ min: 1, max: 512 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('duplicate' as const), at: position, length: fc.integer({ min: 1, max: 512 }), to: position }) },
);

/** One to `maxEdits` edits. */
export function mutations(maxEdits = 4): fc.Arbitrary<Mutation[]> {
  return fc.array(mutation, { minLength: 1, maxLength: maxEdits });
}

/** `bytes` with the edits applied in order (the input is not changed). */
export function applyMutations(bytes: Uint8Array, edits: readonly Mutation[]): Buffer {
  let out = Buffer.from(bytes);
  for (const edit of edits) {
    if (out.length === 0) {
      if (edit.kind === 'insert') out = Buffer.from(edit.bytes);
      continue;
    }
    const at = edit.at % out.length;
    switch (edit.kind) {
      case 'flip':
        out[at] = (out[at] as number) ^ (1 << edit.bit);
        break;
      case 'set':
        out[at] = edit.value;
        break;
      case 'cut':
        out = out.subarray(0, at);
        break;
      case 'insert':
        out = Buffer.concat([out.subarray(0, at), edit.bytes, out.subarray(at)]);
        break;
      case 'delete':
        out = Buffer.concat([out.subarray(0, at), out.subarray(at + edit.length)]);
        break;
      case 'duplicate': {
        const piece = out.subarray(at, at + edit.length);
        const to = edit.to % (out.length + 1);
        out = Buffer.concat([out.subarray(0, to), piece, out.subarray(to)]);
        break;
      }
    }
  }
  return Buffer.from(out);
}

