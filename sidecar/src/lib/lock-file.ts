/**
 * Lock files between processes on one host: `<pid> <process token>`, created exclusively.
 * A lock whose process is gone is stale (a crash) and taken over. A lock with this pid but
 * another token was left by an earlier process that had the same pid (containers: every
 * incarnation is pid 1), so it is stale too. Another live pid, or this process's own token,
 * means the lock is held.
 */
import { randomUUID } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';

/** This process, in its lock files (a pid alone is reused across container restarts). */
const PROCESS_TOKEN = randomUUID();

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export type LockAttempt =
  /** Taken; `stalePid` names the process whose stale lock was taken over (-1: unreadable). */
  | { readonly taken: true; readonly stalePid: number | undefined }
  /** Held by `pid`, a live process; `thisProcess` when that is this very process. */
  | { readonly taken: false; readonly pid: number; readonly thisProcess: boolean };

/** Try to take `file` (a stale lock is taken over). Throws what the file system throws, but EEXIST. */
export async function tryLock(file: string): Promise<LockAttempt> {
  let stalePid: number | undefined;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await writeFile(file, `${process.pid} ${PROCESS_TOKEN}\n`, { flag: 'wx', mode: 0o600 });
      return { taken: true, stalePid };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const [pidText = '', token = ''] = (await readFile(file, 'utf8').catch(() => '')).trim().split(' ');
      const pid = Number.parseInt(pidText, 10);
      const samePid = pid === process.pid;
      if (samePid && token === PROCESS_TOKEN) return { taken: false, pid, thisProcess: true };
      if (!samePid && Number.isInteger(pid) && pid > 0 && pidAlive(pid)) return { taken: false, pid, thisProcess: false };
      stalePid = Number.isInteger(pid) ? pid : -1;
      await rm(file, { force: true });
    }
  }
  // another process took it between the removal and the second try
  const [pidText = ''] = (await readFile(file, 'utf8').catch(() => '')).trim().split(' ');
  return { taken: false, pid: Number.parseInt(pidText, 10), thisProcess: false };
}

export async function unlock(file: string): Promise<void> {
  await rm(file, { force: true });
}
