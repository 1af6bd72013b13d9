/**
 * Temporary directories for tests, removed when the test process exits, whether its tests
 * passed or failed. (A process killed outright leaves them; the test command runs every file
 * under a temporary directory of its own, removed when the run ends.)
 */
import { rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const made = new Set<string>();

process.once('exit', () => {
  for (const dir of made) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // best effort: a directory still in use by a child process that outlived its test
    }
  }
});

export async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  made.add(dir);
  return dir;
}
