/**
 * RFC 6901 JSON pointers naming a field inside a decision's input or result
 * (`/input/subject/id`, `/result/0/owner`), as configuration uses them. A segment `*` is kept
 * as is (callers give it the meaning "every element").
 */
import { ErrorCodes, PavilionError } from './errors.ts';

export interface FieldPointer {
  readonly pointer: string;
  readonly root: 'input' | 'result';
  readonly segments: readonly string[];
}

/** Parse and check a pointer. Throws ERR_CONFIG_INVALID. */
export function parseFieldPointer(pointer: string): FieldPointer {
  const fail = (why: string): never => {
    throw new PavilionError(ErrorCodes.CONFIG_INVALID, `field ${JSON.stringify(pointer)}: ${why}`);
  };
  if (!pointer.startsWith('/')) fail('must be a JSON pointer starting with /input/ or /result/');
  const segments = pointer.slice(1).split('/').map((s) => {
    if (/~[^01]|~$/.test(s)) fail('has a "~" that is not ~0 or ~1');
    return s.replaceAll('~1', '/').replaceAll('~0', '~');
  });
  const root = segments.shift();
  if (root !== 'input' && root !== 'result') fail('must start with /input/ or /result/');
  if (segments.length === 0) fail('must name a field inside input or result, not all of it');
  return { pointer, root: root as 'input' | 'result', segments };
}
