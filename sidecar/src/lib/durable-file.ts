/**
 * Files that must survive a crash whole: written through a temporary file that is fsync'ed
 * and then renamed over the target (a reader sees the old content or the new, never part),
 * and directory entries made durable with an fsync of the directory, as POSIX requires.
 */
import { open, rename } from 'node:fs/promises';

/** Replace `file` with `data`: temporary file, fsync, rename. Call syncDirectory after for the rename to be durable. */
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

/** Make the entries of `directory` (a new file, a rename) durable. */
export async function syncDirectory(directory: string): Promise<void> {
  const handle = await open(directory, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
