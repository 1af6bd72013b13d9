/**
 * Lock files (lib/lock-file.ts) as the audit log and the file anchor take them: whole when
 * they exist, held by live processes, taken over when stale, removed only by their owner.
 */
import assert from 'node:assert/strict';
import { readFile, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { removeIfStill, tryLock, unlock } from '../sidecar/src/lib/lock-file.ts';
import { tempDir } from './audit/fixtures.ts';

describe('lock files', () => {
  it('taken whole (pid and token), held against this process again, removed by unlock', async () => {
    const file = join(await tempDir(), 'LOCK');
    assert.deepEqual(await tryLock(file), { taken: true, stalePid: undefined });
    const [pid, token] = (await readFile(file, 'utf8')).trim().split(' ');
    assert.equal(pid, String(process.pid));
    assert.match(token ?? '', /^[0-9a-f-]{36}$/);
    assert.deepEqual(await tryLock(file), { taken: false, pid: process.pid, thisProcess: true });
    await unlock(file);
    await assert.rejects(readFile(file), { code: 'ENOENT' });
  });

  it('a live process\'s lock is held (pid 1 here); unlock leaves another\'s lock alone', async () => {
    const file = join(await tempDir(), 'LOCK');
    await writeFile(file, '1 another-process\n');
    assert.deepEqual(await tryLock(file), { taken: false, pid: 1, thisProcess: false });
    await unlock(file);
    assert.equal(await readFile(file, 'utf8'), '1 another-process\n');
  });

  it('an older build\'s lock (a pid, no token) is held while that process lives', async () => {
    const file = join(await tempDir(), 'LOCK');
    await writeFile(file, '1\n');
    assert.deepEqual(await tryLock(file), { taken: false, pid: 1, thisProcess: false });
    await writeFile(file, '2147483646\n');
    assert.deepEqual(await tryLock(file), { taken: true, stalePid: 2147483646 });
  });

  it('a dead process\'s lock, or this pid with another token (an earlier incarnation), is stale: taken over, naming it', async () => {
    const dir = await tempDir();
    const dead = join(dir, 'dead');
    await writeFile(dead, '2147483646 gone\n');
    assert.deepEqual(await tryLock(dead), { taken: true, stalePid: 2147483646 });
    const earlier = join(dir, 'earlier');
    await writeFile(earlier, `${process.pid} an-earlier-incarnation\n`);
    assert.deepEqual(await tryLock(earlier), { taken: true, stalePid: process.pid });
  });

  it('a lock without a pid and token (torn by an older build) is held while young, stale once 10 s old', async () => {
    const file = join(await tempDir(), 'LOCK');
    await writeFile(file, '');
    assert.deepEqual(await tryLock(file), { taken: false, pid: undefined, thisProcess: false });
    const past = new Date(Date.now() - 20_000);
    await utimes(file, past, past);
    assert.deepEqual(await tryLock(file), { taken: true, stalePid: -1 });
  });

  it('a stale lock is removed only while it is still the one judged stale: a fresh lock made meanwhile stays', async () => {
    const file = join(await tempDir(), 'LOCK');
    await writeFile(file, '2147483645 fresh\n'); // another taker replaced the stale '2147483646 gone' first
    assert.equal(await removeIfStill(file, '2147483646 gone\n'), false);
    assert.equal(await readFile(file, 'utf8'), '2147483645 fresh\n', 'put back');
    assert.equal(await removeIfStill(file, '2147483645 fresh\n'), true);
    await assert.rejects(readFile(file), { code: 'ENOENT' });
    assert.equal(await removeIfStill(file, '2147483645 fresh\n'), false, 'gone already: nothing to remove');
  });

  it('a stale lock is taken over under a guard: while a live process holds the guard, it is left alone; a dead one\'s guard is itself taken over', async () => {
    const file = join(await tempDir(), 'LOCK');
    await writeFile(file, '2147483646 gone\n');
    await writeFile(`${file}.takeover`, '1 another-taker\n');
    assert.deepEqual(await tryLock(file), { taken: false, pid: undefined, thisProcess: false });
    assert.equal(await readFile(file, 'utf8'), '2147483646 gone\n', 'not removed while another taker holds the guard');
    await writeFile(`${file}.takeover`, '2147483645 crashed-taker\n');
    assert.deepEqual(await tryLock(file), { taken: true, stalePid: 2147483646 });
    await assert.rejects(readFile(`${file}.takeover`), { code: 'ENOENT' }, 'the guard is released');
  });

  it('two takers of one stale lock at once: exactly one gets it', async () => {
    const file = join(await tempDir(), 'LOCK');
    await writeFile(file, '2147483646 gone\n');
    const attempts = await Promise.all([tryLock(file), tryLock(file), tryLock(file)]);
    assert.equal(attempts.filter((a) => a.taken).length, 1, JSON.stringify(attempts));
  });
});
