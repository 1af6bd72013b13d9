/**
 * Files that must survive a crash whole: written through a temporary file that is fsync'ed
 * and then renamed over the target (a reader sees the old content or the new, never part),
 * and directory entries made durable with an fsync of the directory, as POSIX requires
 * (syncPath). Also whether such a file is there (pathExists).
 */
import { open, rename, stat } from 'node:fs/promises';

/** Replace `file` with `data`: temporary file, fsync, rename. Call syncPath on its directory after, for the rename to be durable. */
export async function writeFileDurably(file: string, data: Buffer | string, mode = 0o600): Promise<void> {
  const temporary = `${file}.${process.pid}.tmp`;
  const handle = await open(temporary, 'w', mode);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(temporary, file);
}

/** fsync `path`: a directory's entries (a new file, a rename), or a file's content, made durable. */
export async function syncPath(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Whether `path` exists: false only when it does not (ENOENT); any other failure is thrown. */
export async function pathExists(path: string): Promise<boolean> {
  return stat(path).then(() => true, (error: unknown) => {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  });
}
