/**
 * Lock files between processes that share a PID namespace (one host, or one container):
 * `<pid> <process token>`. A lock is made whole before it exists (written to a file of its
 * own, then hard-linked into place: `link` fails if the lock exists), so nobody ever reads a
 * lock half made. A lock whose process is gone is stale (a crash) and taken over. A lock with
 * this pid but another token was left by an earlier process that had the same pid
 * (containers: every incarnation is pid 1), so it is stale too. Another live pid, or this
 * process's own token, means the lock is held.
 *
 * Taking over a stale lock happens under a guard lock of its own (`<file>.takeover`), one
 * taker at a time, each reading the lock again under the guard and removing it only if it is
 * still the stale one: nobody else removes a lock meanwhile (its owner is gone, and the other
 * takers wait for the guard), and a new lock cannot replace an existing one. A stale guard is
 * taken over by moving it aside (`rename`) and removing it only if unchanged. Processes in
 * other PID namespaces (other containers on a shared volume) cannot be told apart from dead
 * ones: the lock does not exclude them. A crash mid-operation can leave `<file>.*.new` or
 * `<file>.*.stale` beside the lock: they are inert and may be deleted.
 */
import { randomUUID } from 'node:crypto';
import { link, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';

/** This process, in its lock files (a pid alone is reused across container restarts). */
const PROCESS_TOKEN = randomUUID();
const OURS = `${process.pid} ${PROCESS_TOKEN}\n`;
/** A lock whose content is not a pid and token (a torn one an older build left) is stale past this age. */
const UNREADABLE_STALE_MS = 10_000;

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const code = (error: unknown): string | undefined => (error as NodeJS.ErrnoException).code;

export type LockAttempt =
  /** Taken; `stalePid` names the process whose stale lock was taken over (-1: unreadable). */
  | { readonly taken: true; readonly stalePid: number | undefined }
  /**
   * Held by `pid`, a live process (`thisProcess` when that is this very process); `pid` is
   * undefined when others were taking it at the same moment or its content is being replaced.
   */
  | { readonly taken: false; readonly pid: number | undefined; readonly thisProcess: boolean };

/** What `link` fails with on file systems without hard links (SMB/CIFS, some FUSE mounts, vfat). */
const NO_HARD_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EXDEV']);

/** Make the lock, whole, if there is none: false when one exists. */
async function create(file: string): Promise<boolean> {
  const own = `${file}.${randomUUID()}.new`; // one per attempt: attempts of one process may overlap
  try {
    await writeFile(own, OURS, { mode: 0o600 });
    await link(own, file);
    return true;
  } catch (error) {
    if (code(error) === 'EEXIST') return false;
    if (NO_HARD_LINKS.has(code(error) ?? '')) return createInPlace(file);
    throw error;
  } finally {
    await rm(own, { force: true }).catch(() => undefined); // inert if left: never read as a lock
  }
}

/**
 * Without hard links: created exclusively, then written. A taker that reads it in between
 * sees no pid and token, which counts as held for UNREADABLE_STALE_MS.
 */
async function createInPlace(file: string): Promise<boolean> {
  let handle;
  try {
    handle = await open(file, 'wx', 0o600);
  } catch (error) {
    if (code(error) === 'EEXIST') return false;
    throw error;
  }
  try {
    await handle.writeFile(OURS);
  } catch (error) {
    await rm(file, { force: true }).catch(() => undefined); // not left empty, read as held for 10 s
    throw error;
  } finally {
    await handle.close();
  }
  return true;
}

/**
 * Remove `file` if it still holds `text` (true); false when another process moved or replaced
 * it first. How a stale lock is taken over: never a plain remove, which could remove the fresh
 * lock another taker made after the stale one was read.
 */
export async function removeIfStill(file: string, text: string): Promise<boolean> {
  const aside = `${file}.${randomUUID()}.stale`;
  try {
    await rename(file, aside);
  } catch (error) {
    if (code(error) === 'ENOENT') return false;
    throw error;
  }
  try {
    const moved = await readFile(aside, 'utf8').catch(() => undefined);
    if (moved === text) return true;
    // a fresh one made after the stale one was read: put it back (one made by a third process
    // in this instant wins instead)
    await link(aside, file).catch(async (error: unknown) => {
      if (code(error) === 'EEXIST') return;
      if (!NO_HARD_LINKS.has(code(error) ?? '') || moved === undefined) throw error;
      const handle = await open(file, 'wx', 0o600).catch((e: unknown) => (code(e) === 'EEXIST' ? undefined : Promise.reject(e)));
      await handle?.writeFile(moved).finally(() => handle.close());
    });
    return false;
  } finally {
    await rm(aside, { force: true }).catch(() => undefined);
  }
}

/**
 * Take over the stale lock `file` that read `text`: under the guard lock `<file>.takeover`, so
 * takers of one stale lock remove it one at a time, each only if it is still that lock.
 */
async function takeOver(file: string, text: string, guarded: boolean): Promise<boolean> {
  if (!guarded) return removeIfStill(file, text);
  const guard = `${file}.takeover`;
  const turn = await tryLock(guard, false);
  if (!turn.taken) return false; // another taker is at it: this one looks again
  try {
    // under the guard: if it still reads stale, it is the stale lock (see the header)
    const now = await readFile(file, 'utf8').catch((error: unknown) => (code(error) === 'ENOENT' ? undefined : Promise.reject(error)));
    if (now !== text) return false;
    await rm(file, { force: true });
    return true;
  } finally {
    await unlock(guard).catch(() => undefined);
  }
}

/**
 * Try to take `file` (a stale lock is taken over). Throws what the file system throws, but
 * EEXIST. `guarded` false: a stale lock is removed without the guard (the guard's own).
 */
export async function tryLock(file: string, guarded = true): Promise<LockAttempt> {
  let stalePid: number | undefined;
  for (let attempt = 0; attempt < 3; attempt++) {
    if (await create(file)) return { taken: true, stalePid };
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      if (code(error) === 'ENOENT') continue; // released meanwhile
      throw error;
    }
    const holder = await holderOf(file, text);
    if (holder !== undefined) return { taken: false, ...holder };
    const pid = pidOf(text);
    if (await takeOver(file, text, guarded)) stalePid = pid ?? -1;
  }
  return { taken: false, pid: undefined, thisProcess: false };
}

function pidOf(text: string): number | undefined {
  const pidText = text.trim().split(' ')[0] ?? '';
  return /^[1-9][0-9]*$/.test(pidText) ? Number(pidText) : undefined;
}

/** Who holds the lock `file` that read `text`; undefined when it is stale (its process is gone). */
async function holderOf(file: string, text: string): Promise<{ pid: number | undefined; thisProcess: boolean } | undefined> {
  const token = text.trim().split(' ')[1] ?? '';
  const pid = pidOf(text);
  if (pid === undefined) {
    const age = await stat(file).then((s) => Date.now() - s.mtimeMs, () => 0);
    return age < UNREADABLE_STALE_MS ? { pid: undefined, thisProcess: false } : undefined;
  }
  if (pid === process.pid && token === PROCESS_TOKEN) return { pid, thisProcess: true };
  // a pid without a token (an older build's lock) is held while that process lives
  if (pid !== process.pid && pidAlive(pid)) return { pid, thisProcess: false };
  return undefined;
}

/** Whether `file` is a lock held now (by this process or a live one), looking only: nothing is taken or removed. */
export async function lockHeld(file: string): Promise<boolean> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if (code(error) === 'ENOENT') return false;
    throw error;
  }
  return (await holderOf(file, text)) !== undefined;
}

/** Whether `file` is this process's lock now (false when it is gone, or another's); throws what reading it throws but ENOENT. */
export async function lockIsOurs(file: string): Promise<boolean> {
  try {
    return (await readFile(file, 'utf8')) === OURS;
  } catch (error) {
    if (code(error) === 'ENOENT') return false;
    throw error;
  }
}

/** Remove `file` if it is this process's lock (one taken over meanwhile as stale is not touched). */
export async function unlock(file: string): Promise<void> {
  const text = await readFile(file, 'utf8').catch(() => undefined);
  // only this process removes its own lock, and nobody takes over the lock of a live process
  if (text === OURS) await rm(file, { force: true });
}
