/**
 * Whether a path still names the file a descriptor holds open: what a log and its lock check
 * before they trust that a write, or a lock, is where a later start will look.
 */
import { fstatSync, statSync } from 'node:fs';

/**
 * - `same`: the path names the open file (or, without `lookAtPath`, the file is still linked);
 * - `removed`: the open file has no name left and nothing is at the path;
 * - `moved`: the open file is still linked elsewhere and nothing is at the path;
 * - `replaced`: another file is at the path.
 */
export type PathHolding = 'same' | 'removed' | 'moved' | 'replaced';

/**
 * Where the file open at `fd` stands against `path`. Always its link count (an fstat: 0 once
 * it was removed, alone or with its directory, or a rename replaced it); the path too (a stat)
 * when `lookAtPath`, or when the link count is 0, to tell which. A file moved away keeps its
 * link count, as does a removed open file on NFS and FUSE: only a look at the path sees those.
 * Throws what the file system throws when either cannot be looked at (but the path's absence).
 */
export function pathHolding(fd: number, path: string, lookAtPath: boolean): PathHolding {
  const open = fstatSync(fd);
  if (open.nlink > 0 && !lookAtPath) return 'same';
  const named = statSync(path, { throwIfNoEntry: false });
  if (named === undefined) return open.nlink === 0 ? 'removed' : 'moved';
  return named.ino === open.ino && named.dev === open.dev ? 'same' : 'replaced';
}
