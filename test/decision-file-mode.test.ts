/**
 * The NDJSON decision log (`decisionLog.sink: "file"`) holds request inputs, so it is created
 * 0600 (its new directories 0700), as the audit log's files; an existing file keeps its mode,
 * and one that group or others can read is reported (WARN) rather than changed.
 */
import assert from 'node:assert/strict';
import { chmod, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { FileDecisionSink } from '../sidecar/src/audit/index.ts';
import { decisionEvent, tempDir } from './audit/fixtures.ts';

const posix = process.platform !== 'win32';
let dir: string;

before(async () => {
  dir = await tempDir('pavilion-decision-mode-');
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function modeOf(path: string): Promise<number> {
  return (await stat(path)).mode & 0o777;
}

describe('decision log file mode', { skip: posix ? false : 'POSIX file modes' }, () => {
  test('a new decision log is created 0600, in a new directory created 0700', async () => {
    const path = join(dir, 'new', 'nested', 'decisions.ndjson');
    const sink = new FileDecisionSink(path);
    await sink.start();
    sink.write(decisionEvent(1));
    assert.equal(sink.status().state, 'OK', JSON.stringify(sink.status()));
    await sink.stop(5000);
    assert.equal((await modeOf(path)).toString(8), '600');
    assert.equal((await modeOf(join(dir, 'new', 'nested'))).toString(8), '700');
    assert.equal((await modeOf(join(dir, 'new'))).toString(8), '700');
    assert.match(await readFile(path, 'utf8'), /"decision_id":"decision-000001"/);
  });

  test('an existing world-readable log keeps its mode and still takes events, but its status is WARN', async () => {
    const path = join(dir, 'existing.ndjson');
    await writeFile(path, '');
    await chmod(path, 0o644);
    const sink = new FileDecisionSink(path);
    await sink.start();
    sink.write(decisionEvent(2));
    const status = sink.status();
    assert.equal(status.state, 'WARN');
    assert.match(status.message ?? '', /mode 0644.*chmod 600/);
    assert.equal(status.details?.['path'], path);
    await sink.stop(5000);
    assert.equal((await modeOf(path)).toString(8), '644', 'an existing file\'s mode is left alone');
    assert.match(await readFile(path, 'utf8'), /decision-000002/);
  });

  test('an existing 0600 log is OK', async () => {
    const path = join(dir, 'private.ndjson');
    await writeFile(path, '', { mode: 0o600 });
    const sink = new FileDecisionSink(path);
    await sink.start();
    assert.equal(sink.status().state, 'OK');
    await sink.stop(5000);
  });
});
