/**
 * The embedded anchor (a hash-chained JSON-lines file) and the `decisionLog.audit.anchor`
 * config: the default with sink 'audit' records anchors in a local file, an edited file is
 * caught at the first bad line, and every bad anchor setting is refused at parse time.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { appendFile, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { SoftwareSigner, verifyLogFile, type SignedCheckpointV1 } from '../sidecar/src/audit/log/index.ts';
import { FileAnchor, FileAnchorVerifier, createAnchor, type FileAnchorEntryV1 } from '../sidecar/src/audit/anchor/index.ts';
import { parseConfig } from '../sidecar/src/config/index.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { decisionEvent, openLog, readRecords, ringOf, tempDir, walPath, writeRecords } from './audit/fixtures.ts';
import { RecordType } from '../sidecar/src/audit/log/index.ts';
import { get, startPavilion } from './harness/pavilion-harness.ts';

const signer = SoftwareSigner.generate();
const ring = ringOf(signer);

const failsWith = async (promise: Promise<unknown>, code: string, message?: RegExp): Promise<void> => {
  await assert.rejects(promise, (e: unknown) => {
    assert.ok(isPavilionError(e), String(e));
    assert.equal(e.code, code, e.message);
    if (message !== undefined) assert.match(e.message, message);
    return true;
  });
};

const BANK = 'pavilion-test/bank';

/** A checkpoint as the anchor takes it (the anchor checks no signature). */
const checkpointOf = (origin: string, treeSize: number): SignedCheckpointV1 => ({
  version: 1, algorithm: 'ecdsa-p256-sha256', origin, tree_size: treeSize, root_hash: 'ab'.repeat(32), timestamp: new Date().toISOString(), key_id: signer.keyId, signature: Buffer.alloc(64, 1).toString('base64'),
});
/** The origin of a log `anchoredLogs` made, from its directory. */
const originOf = (dir: string): string => (dir.endsWith('bank') ? BANK : 'pavilion-test/hospital');

/** Two tenants' logs anchored to one file; returns the file and the log directories. */
async function anchoredLogs(): Promise<{ file: string; dirs: string[] }> {
  const root = await tempDir();
  const file = join(root, 'anchors.jsonl');
  const anchor = new FileAnchor({ path: file });
  const dirs = [join(root, 'bank'), join(root, 'hospital')];
  const logs = await Promise.all(dirs.map((dir) => openLog(dir, signer, { origin: originOf(dir), anchor, checkpointEveryEvents: 4 })));
  for (let i = 0; i < 10; i++) await Promise.all(logs.map((log) => log.append(decisionEvent(i))));
  await Promise.all(logs.map((log) => log.stop(5000)));
  return { file, dirs };
}

describe('file anchor (the embedded default)', () => {
  it('anchors every tenant log to one hash-chained file and verifies against it', async () => {
    const { file, dirs } = await anchoredLogs();
    const lines = (await readFile(file, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as FileAnchorEntryV1);
    assert.deepEqual(lines.map((l) => l.line), lines.map((_, i) => i));
    assert.equal(new Set(lines.map((l) => l.origin)).size, 2);
    for (const dir of dirs) {
      const result = await verifyLogFile(walPath(dir), ring, { origin: originOf(dir), anchorVerifiers: [new FileAnchorVerifier({ path: file })] });
      assert.ok(result.anchors >= 1);
      assert.equal(result.anchorsVerified, result.anchors);
      assert.equal(result.anchoredSize, 10);
    }
  });

  it('a line edited in the anchor file (root changed): ERR_AUDIT_ANCHOR_MISMATCH naming the line', async () => {
    const { file, dirs } = await anchoredLogs();
    const lines = (await readFile(file, 'utf8')).trim().split('\n');
    const entry = JSON.parse(lines[0]!) as FileAnchorEntryV1;
    lines[0] = JSON.stringify({ ...entry, root_hash: 'ee'.repeat(32) });
    await writeFile(file, `${lines.join('\n')}\n`);
    // Every later line's chain link now fails too; the first bad line is named.
    await failsWith(new FileAnchorVerifier({ path: file }).verify({ version: 1, kind: 'file', tree_size: entry.tree_size, root_hash: entry.root_hash, reference: { file: 'anchors.jsonl', line: 1, entry_sha256: 'ab'.repeat(32) } }), ErrorCodes.AUDIT_ANCHOR_MISMATCH, /line 1: does not chain/);
    const bank = dirs[0]!;
    await failsWith(verifyLogFile(walPath(bank), ring, { origin: BANK, anchorVerifiers: [new FileAnchorVerifier({ path: file })] }), ErrorCodes.AUDIT_ANCHOR_MISMATCH, /line [01]/);
  });

  it('a line removed from the anchor file, or the file lost: refused, never passed', async () => {
    const { file, dirs } = await anchoredLogs();
    const lines = (await readFile(file, 'utf8')).trim().split('\n');
    await writeFile(file, `${lines.slice(1).join('\n')}\n`);
    await failsWith(verifyLogFile(walPath(dirs[0]!), ring, { origin: BANK, anchorVerifiers: [new FileAnchorVerifier({ path: file })] }), ErrorCodes.AUDIT_ANCHOR_MISMATCH, /line 0: numbered 1/);
    await failsWith(verifyLogFile(walPath(dirs[0]!), ring, { origin: BANK, anchorVerifiers: [new FileAnchorVerifier({ path: join(file, 'missing') })] }), ErrorCodes.AUDIT_ANCHOR_FAILED, /could not be checked/);
  });

  it('a log cut after its last anchor, anchor records and all: ERR_AUDIT_LOG_TRUNCATED from the file', async () => {
    const { file, dirs } = await anchoredLogs();
    const bank = dirs[0]!;
    const { header, records } = await readRecords(bank);
    await writeRecords(bank, header, records.filter((r) => (r.type === RecordType.LEAF ? r.index < 8 : r.index <= 8)));
    assert.equal((await verifyLogFile(walPath(bank), ring)).leaves, 8);
    await assert.rejects(verifyLogFile(walPath(bank), ring, { origin: BANK, anchorVerifiers: [new FileAnchorVerifier({ path: file })] }), (e: unknown) => {
      assert.ok(isPavilionError(e, ErrorCodes.AUDIT_LOG_TRUNCATED), String(e));
      assert.equal(e.details?.['treeSize'], 10);
      assert.equal(e.details?.['leafIndex'], 8);
      return true;
    });
  });

  it('a tree size that does not grow for its log: ERR_AUDIT_ANCHOR_REVERTED, across restarts of the anchor', async () => {
    const { file } = await anchoredLogs();
    const body = { version: 1 as const, algorithm: 'ecdsa-p256-sha256' as const, origin: 'pavilion-test/bank', tree_size: 10, root_hash: 'ab'.repeat(32), timestamp: new Date().toISOString(), key_id: signer.keyId, signature: Buffer.alloc(64, 1).toString('base64') };
    await failsWith(new FileAnchor({ path: file }).anchor(body), ErrorCodes.AUDIT_ANCHOR_REVERTED, /already holds tree size 10 of pavilion-test\/bank/);
    const reference = await new FileAnchor({ path: file }).anchor({ ...body, tree_size: 11 });
    assert.equal(reference['file'], 'anchors.jsonl');
  });

  it('an anchor file removed or cut short under a running anchor: WARN in its status saying so; anchoring goes on from what is there, a new chain when it is gone', async () => {
    const file = join(await tempDir(), 'anchors.jsonl');
    const anchor = new FileAnchor({ path: file });
    await anchor.anchor(checkpointOf(BANK, 1));
    await anchor.anchor(checkpointOf(BANK, 2));
    assert.equal(anchor.status().state, 'OK');
    await rm(file);
    const first = await anchor.anchor(checkpointOf(BANK, 3));
    assert.equal(first['line'], 0, 'a new chain from line 0');
    const removed = anchor.status();
    assert.equal(removed.state, 'WARN');
    assert.match(removed.message ?? '', /removed or emptied under the running sidecar/);
    const lines = (await readFile(file, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as FileAnchorEntryV1);
    assert.deepEqual(lines.map((l) => [l.line, l.tree_size, l.prev_sha256]), [[0, 3, '0'.repeat(64)]]);

    const cut = join(await tempDir(), 'anchors.jsonl');
    const other = new FileAnchor({ path: cut });
    for (const size of [1, 2, 3]) await other.anchor(checkpointOf(BANK, size));
    const text = await readFile(cut, 'utf8');
    await writeFile(cut, `${text.split('\n')[0]}\n`); // only the first line left
    const next = await other.anchor(checkpointOf(BANK, 4));
    assert.equal(next['line'], 1, 'numbered after what is there');
    assert.match(other.status().message ?? '', /cut short or replaced under the running sidecar/);
    await Promise.all([anchor.close(), other.close()]);
  });

  it('two anchors of one process on one file take turns: every line numbered and chained after the other\'s; the file\'s lock is held until both are closed', async () => {
    const file = join(await tempDir(), 'anchors.jsonl');
    const [a, b] = [new FileAnchor({ path: file }), new FileAnchor({ path: file })];
    const references: Array<Readonly<Record<string, unknown>>> = [];
    // in turn: each finds the file grown by the other since it last wrote
    for (const size of [1, 2, 3]) {
      references.push(await a.anchor(checkpointOf('pavilion-test/a', size)));
      references.push(await b.anchor(checkpointOf('pavilion-test/b', size)));
    }
    // at once: anchors of one process on one file take turns
    references.push(...await Promise.all([4, 5].flatMap((size) => [a.anchor(checkpointOf('pavilion-test/a', size)), b.anchor(checkpointOf('pavilion-test/b', size))])));
    const lines = (await readFile(file, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as FileAnchorEntryV1);
    assert.deepEqual(lines.map((l) => l.line), [...Array(10).keys()], 'one line per anchor, numbered in file order');
    assert.deepEqual(references.map((r) => r['line']).sort((x, y) => Number(x) - Number(y)), [...Array(10).keys()]);
    const verifier = new FileAnchorVerifier({ path: file });
    assert.deepEqual(await verifier.latestAnchor('pavilion-test/a'), { treeSize: 5, rootHash: 'ab'.repeat(32) }, 'the chain reads whole');
    await a.close();
    assert.ok((await readFile(`${file}.lock`, 'utf8')).startsWith(`${process.pid} `), 'held while an anchor of this process is open');
    await b.close();
    await assert.rejects(readFile(`${file}.lock`), { code: 'ENOENT' });
  });

  it('an anchor opened on the file while the last one before it closes: the lock is removed and taken afresh, never left removed under the new one', async () => {
    const file = join(await tempDir(), 'anchors.jsonl');
    const first = new FileAnchor({ path: file });
    await first.anchor(checkpointOf(BANK, 1));
    const closing = first.close();
    // let close() get past its last reference to the removal (which waits on I/O) first
    for (let i = 0; i < 10; i++) await Promise.resolve();
    const next = new FileAnchor({ path: file });
    const reference = await next.anchor(checkpointOf(BANK, 2));
    await closing;
    assert.equal(reference['line'], 1);
    assert.ok((await readFile(`${file}.lock`, 'utf8')).startsWith(`${process.pid} `), 'the new anchor holds the lock after the old one closed');
    await next.close();
    await assert.rejects(readFile(`${file}.lock`), { code: 'ENOENT' });
  });

  it('one file under two spellings (a symlinked directory) is one file to the anchors of a process: they take turns, and its lock stays while either is open', async () => {
    const dir = await tempDir();
    await mkdir(join(dir, 'real'));
    await symlink(join(dir, 'real'), join(dir, 'link'));
    const a = new FileAnchor({ path: join(dir, 'real', 'anchors.jsonl') });
    const b = new FileAnchor({ path: join(dir, 'link', 'anchors.jsonl') });
    await Promise.all([1, 2, 3].flatMap((size) => [a.anchor(checkpointOf('pavilion-test/a', size)), b.anchor(checkpointOf('pavilion-test/b', size))]));
    const file = join(dir, 'real', 'anchors.jsonl');
    const lines = (await readFile(file, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as FileAnchorEntryV1);
    assert.deepEqual(lines.map((l) => l.line), [...Array(6).keys()]);
    await a.close();
    assert.ok((await readFile(`${file}.lock`, 'utf8')).startsWith(`${process.pid} `), 'still held: the other spelling is open');
    await b.close();
    await assert.rejects(readFile(`${file}.lock`), { code: 'ENOENT' });
  });

  it('an anchor file another process holds: ERR_AUDIT_ANCHOR_CONFIG naming that process; once it is gone (SIGKILL) its lock is stale, taken over, and the lines go on after its own', async () => {
    const dir = await tempDir();
    const file = join(dir, 'anchors.jsonl');
    const script = join(dir, 'holder.mts');
    const anchorModule = JSON.stringify(new URL('../sidecar/src/audit/anchor/index.ts', import.meta.url).href);
    await writeFile(script, `
      import { FileAnchor } from ${anchorModule};
      const anchor = new FileAnchor({ path: process.argv[2] });
      await anchor.anchor(${JSON.stringify(checkpointOf('pavilion-test/holder', 1))});
      console.log('holding');
      setInterval(() => undefined, 1000);`);
    const holder = spawn(process.execPath, ['--import', 'tsx', script, file], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout.on('data', (chunk: Buffer) => chunk.toString().includes('holding') && resolve());
        holder.once('exit', (code) => reject(new Error(`the holder exited with ${String(code)}`)));
      });
      const anchor = new FileAnchor({ path: file });
      await failsWith(anchor.anchor(checkpointOf(BANK, 1)), ErrorCodes.AUDIT_ANCHOR_CONFIG, new RegExp(`the anchor file .*anchors\\.jsonl is in use by process ${holder.pid} \\(.*anchors\\.jsonl\\.lock\\); each sidecar needs an anchor file of its own`));
      assert.equal(anchor.status().state, 'WARN', 'shown in status until the lock is taken');
      assert.match(anchor.status().message ?? '', new RegExp(`in use by process ${holder.pid}`));
      holder.kill('SIGKILL');
      await once(holder, 'exit');
      const reference = await anchor.anchor(checkpointOf(BANK, 2));
      assert.equal(reference['line'], 1, 'after the line the holder wrote');
      assert.equal(anchor.status().state, 'OK');
      assert.equal((await readFile(`${file}.lock`, 'utf8')).split(' ')[0], String(process.pid), 'the lock is this process\'s now');
      await anchor.close();
      await assert.rejects(readFile(`${file}.lock`), { code: 'ENOENT' }, 'removed when the last anchor on the file closed');
    } finally {
      holder.kill('SIGKILL');
    }
  });

  it('a torn last line (a crash mid-write) is set aside on load: earlier anchors still verify and anchoring continues after the whole lines', async () => {
    const { file, dirs } = await anchoredLogs();
    const whole = await readFile(file, 'utf8');
    const torn = '{"version":1,"line":';
    await appendFile(file, torn);
    // The verifier counts whole lines only: every earlier anchor still verifies.
    for (const dir of dirs) {
      const result = await verifyLogFile(walPath(dir), ring, { origin: originOf(dir), anchorVerifiers: [new FileAnchorVerifier({ path: file })] });
      assert.equal(result.anchorsVerified, result.anchors);
    }
    const reported: unknown[] = [];
    const anchor = new FileAnchor({ path: file, onTornTail: (tail) => reported.push(tail) });
    const body = { version: 1 as const, algorithm: 'ecdsa-p256-sha256' as const, origin: 'pavilion-test/third', tree_size: 11, root_hash: 'ab'.repeat(32), timestamp: new Date().toISOString(), key_id: signer.keyId, signature: Buffer.alloc(64, 1).toString('base64') };
    const reference = await anchor.anchor(body);
    const tail = anchor.tornTail;
    assert.ok(tail !== undefined);
    assert.deepEqual(reported, [tail]);
    assert.equal(tail.offset, Buffer.byteLength(whole));
    assert.equal(tail.bytesRemoved, torn.length);
    assert.equal(await readFile(tail.savedAs, 'utf8'), torn, 'the torn bytes are kept beside the file');
    const after = (await readFile(file, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as FileAnchorEntryV1);
    assert.equal(reference['line'], after.length - 1);
    assert.equal(after.at(-1)?.tree_size, 11);
    assert.ok((await readFile(file, 'utf8')).startsWith(whole));
    for (const dir of dirs) {
      const result = await verifyLogFile(walPath(dir), ring, { origin: originOf(dir), anchorVerifiers: [new FileAnchorVerifier({ path: file })] });
      assert.equal(result.anchorsVerified, result.anchors);
    }
  });
});

describe("the anchor's torn last line in the sidecar's health", () => {
  it('a sidecar started on an anchor file with a torn last line reports it (WARN, where the bytes went) from start, before any checkpoint', async () => {
    const { file } = await anchoredLogs();
    const torn = '{"version":1,"li';
    await appendFile(file, torn);
    const app = await startPavilion({ config: { decisionLog: { sink: 'audit', audit: { directory: await tempDir(), anchor: { kind: 'file', path: file }, checkpointIntervalMs: 600_000 } } } });
    try {
      const health = await get(`${app.url}/health?verbose`);
      assert.equal(health.status, 200, 'a repaired anchor file is a warning, not a failure');
      const log = (health.body as { components: Record<string, { state: string; message?: string; details?: { anchor?: { details?: { torn_tail?: { bytesRemoved: number; savedAs: string } } } } }> }).components['decision_log'];
      assert.ok(log !== undefined, JSON.stringify(health.body));
      assert.equal(log.state, 'WARN');
      assert.match(log.message ?? '', /^anchor: a torn last line of \d+ bytes was removed/);
      const tail = log.details?.anchor?.details?.torn_tail;
      assert.equal(tail?.bytesRemoved, torn.length);
      assert.equal(await readFile(tail.savedAs, 'utf8'), torn);
    } finally {
      await app.stop();
    }
  });
});

describe('decisionLog.audit.anchor config', () => {
  it("defaults to the local anchor file; 'evm' needs rpcUrl, chainId and contract and reads its key from a file or the environment", async () => {
    const audit = (anchor?: unknown): unknown => ({ decisionLog: { sink: 'audit', audit: { directory: 'var/audit', ...(anchor === undefined ? {} : { anchor }) } } });
    assert.deepEqual(parseConfig(audit(), '/base').decisionLog.audit?.anchor, { kind: 'file', path: '/base/var/audit/anchors.jsonl' });
    assert.deepEqual(parseConfig(audit({ kind: 'none' })).decisionLog.audit?.anchor, { kind: 'none' });
    const evm = parseConfig(audit({ kind: 'evm', rpcUrl: 'http://127.0.0.1:8545', chainId: 31337, contract: `0x${'12'.repeat(20)}`, privateKeyFile: 'anchor.key' }), '/base').decisionLog.audit?.anchor;
    assert.deepEqual(evm, {
      kind: 'evm', rpcUrl: 'http://127.0.0.1:8545', chainId: 31337, contract: `0x${'12'.repeat(20)}`, privateKeyFile: '/base/anchor.key', privateKeyEnv: 'PAVILION_ANCHOR_PRIVATE_KEY',
      confirmations: 2, receiptTimeoutMs: 60_000, submitTimeoutMs: 300_000, maxAttempts: 5, feeBumpPercent: 20, pollingIntervalMs: 1000, requestTimeoutMs: 10_000,
    });
    const bad = (anchor: unknown, message: RegExp): void => {
      assert.throws(() => parseConfig(audit(anchor)), (e: unknown) => isPavilionError(e, ErrorCodes.CONFIG_INVALID) && message.test(e.message));
    };
    bad({ kind: 'chain' }, /anchor\.kind: must be one of 'file', 'evm', 'none'/);
    bad({ kind: 'evm', chainId: 1, contract: `0x${'12'.repeat(20)}` }, /anchor\.rpcUrl: is required/);
    bad({ kind: 'evm', rpcUrl: 'ws://x', chainId: 1, contract: `0x${'12'.repeat(20)}` }, /anchor\.rpcUrl: must be an http\(s\)/);
    bad({ kind: 'evm', rpcUrl: 'http://x', chainId: 1, contract: '0x12' }, /anchor\.contract: must be a 0x-prefixed 20-byte address/);
    bad({ kind: 'evm', rpcUrl: 'http://x', chainId: 1, contract: `0x${'12'.repeat(20)}`, privateKey: '0x00' }, /anchor\.privateKey: unknown key/);
    bad({ kind: 'evm', rpcUrl: 'http://x', chainId: 1, contract: `0x${'12'.repeat(20)}`, privateKeyEnv: '0xabc' }, /privateKeyEnv: must be an environment variable name/);
    bad({ kind: 'evm', rpcUrl: 'http://x', chainId: 1, contract: `0x${'12'.repeat(20)}`, feeBumpPercent: 5 }, /feeBumpPercent/);
    for (const maxFeePerGasGwei of [0, -1, '5', Number.POSITIVE_INFINITY]) bad({ kind: 'evm', rpcUrl: 'http://x', chainId: 1, contract: `0x${'12'.repeat(20)}`, maxFeePerGasGwei }, /maxFeePerGasGwei: must be a positive number of gwei/);
    const capped = parseConfig(audit({ kind: 'evm', rpcUrl: 'http://x', chainId: 1, contract: `0x${'12'.repeat(20)}`, maxFeePerGasGwei: 0.5 })).decisionLog.audit?.anchor;
    assert.equal(capped?.kind === 'evm' ? capped.maxFeePerGasGwei : undefined, 0.5);
    bad({ kind: 'evm', rpcUrl: 'http://x', chainId: 1, contract: `0x${'12'.repeat(20)}`, receiptTimeoutMs: 5000, submitTimeoutMs: 2000 }, /submitTimeoutMs: must be at least receiptTimeoutMs/);
    bad({ kind: 'file', rpcUrl: 'http://x' }, /anchor\.rpcUrl: unknown key/);

    const settings = evm!;
    await failsWith(createAnchor({ ...settings, privateKeyFile: '/nonexistent/anchor.key' } as typeof settings), ErrorCodes.AUDIT_ANCHOR_CONFIG, /cannot read the anchor key file/);
    const { privateKeyFile: _file, ...fromEnv } = settings as typeof settings & { privateKeyFile?: string };
    await failsWith(createAnchor(fromEnv as typeof settings, {}), ErrorCodes.AUDIT_ANCHOR_CONFIG, /PAVILION_ANCHOR_PRIVATE_KEY is not set/);
    await failsWith(createAnchor(fromEnv as typeof settings, { PAVILION_ANCHOR_PRIVATE_KEY: 'not-a-key' }), ErrorCodes.AUDIT_ANCHOR_CONFIG, /does not hold a 32-byte hex secret key/);
    const anchor = await createAnchor(fromEnv as typeof settings, { PAVILION_ANCHOR_PRIVATE_KEY: `0x${'11'.repeat(32)}` });
    assert.equal(anchor?.kind, 'evm');
    await anchor?.close?.();
  });
});
