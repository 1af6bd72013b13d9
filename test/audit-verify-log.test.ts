/**
 * `verify-log` against attacks and accidents, case by case: every tampered file fails with
 * its own code and names the first bad position.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { AuditLogSink } from '../sidecar/src/audit/index.ts';
import {
  CHECKPOINT_ALGORITHM,
  Keyring,
  RecordType,
  SoftwareSigner,
  WAL_FILE,
  checkpointMessage,
  epochLinkEvent,
  epochOrigin,
  epochSeal,
  listArchivedEpochs,
  proveFromLogFile,
  publicKeyPem,
  verifyEpochs,
  verifyLogFile,
  type SignedCheckpointV1,
} from '../sidecar/src/audit/log/index.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { decisionEvent, forkOf, liveOf, logOptions, openLog, readRecords, ringOf, tempDir, type FileRecord, walPath, writeRecords } from './audit/fixtures.ts';

const signer = SoftwareSigner.generate();
const ring = ringOf(signer);

/** A log of 20 leaves with checkpoints at 5, 10, 15 and 20 (records: 5 leaves, 1 checkpoint, ...). */
let source: { header: Buffer; records: FileRecord[]; checkpoints: SignedCheckpointV1[]; bytes: Buffer };

before(async () => {
  const dir = await tempDir();
  const log = await openLog(dir, signer, { checkpointEveryEvents: 5 });
  for (let i = 0; i < 20; i++) {
    await log.append(decisionEvent(i));
    if ((i + 1) % 5 === 0) await log.checkpoint();
  }
  await log.stop(5000);
  const { header, records } = await readRecords(dir);
  source = { header, records, checkpoints: [...log.checkpoints], bytes: await readFile(walPath(dir)) };
  assert.deepEqual(records.map((r) => (r.type === RecordType.LEAF ? 'L' : 'C')).join(''), 'LLLLLCLLLLLCLLLLLCLLLLLC');
});

async function fileWith(records: readonly FileRecord[]): Promise<string> {
  const dir = await tempDir();
  await writeRecords(dir, source.header, records);
  return walPath(dir);
}

async function fileOfBytes(bytes: Buffer): Promise<string> {
  const dir = await tempDir();
  await writeFile(walPath(dir), bytes);
  return walPath(dir);
}

async function failsWith(path: string, code: string, position: Record<string, unknown>, options = {}, keys = ring): Promise<void> {
  await assert.rejects(verifyLogFile(path, keys, options), (error: unknown) => {
    assert.ok(isPavilionError(error), String(error));
    assert.equal(error.code, code, error.message);
    for (const [key, value] of Object.entries(position)) assert.equal(error.details?.[key], value, `${key} in ${JSON.stringify(error.details)}`);
    return true;
  });
}

/** Index in `records` of leaf n. */
const recordOfLeaf = (n: number): number => source.records.findIndex((r) => r.type === RecordType.LEAF && r.index === n);

describe('verify-log on an intact log', () => {
  it('recomputes the tree, checks every checkpoint and the consistency between them', async () => {
    const result = await verifyLogFile(await fileOfBytes(source.bytes), ring);
    assert.equal(result.leaves, 20);
    assert.equal(result.checkpoints, 4);
    assert.equal(result.rootHash, source.checkpoints.at(-1)!.root_hash);
    assert.equal(result.origin, 'pavilion-test/bank');
  });
});

describe('verify-log names the first bad position', () => {
  it('an edited entry whose CRC was not fixed: ERR_AUDIT_RECORD_CORRUPT at that record', async () => {
    const target = source.records[recordOfLeaf(7)]!;
    const bytes = Buffer.from(source.bytes);
    bytes[target.offset + 30] = bytes[target.offset + 30]! ^ 0x20;
    await failsWith(await fileOfBytes(bytes), ErrorCodes.AUDIT_RECORD_CORRUPT, { leafIndex: 7, byteOffset: target.offset, reason: 'crc_mismatch' });
  });

  it('an edited entry with its CRC fixed: ERR_AUDIT_ROOT_MISMATCH for the checkpoint range that holds it', async () => {
    const records = source.records.map((r) => ({ ...r }));
    const at = recordOfLeaf(7);
    records[at] = { ...records[at]!, payload: Buffer.from(records[at]!.payload.toString('utf8').replace('"cust-7"', '"cust-X"')) };
    await failsWith(await fileWith(records), ErrorCodes.AUDIT_ROOT_MISMATCH, { firstSuspectLeaf: 5, lastSuspectLeaf: 9, treeSize: 10, recordNumber: 11 });
  });

  it('a deleted entry: ERR_AUDIT_SEQUENCE_BROKEN where it is missing', async () => {
    const records = source.records.filter((_, i) => i !== recordOfLeaf(12));
    await failsWith(await fileWith(records), ErrorCodes.AUDIT_SEQUENCE_BROKEN, { leafIndex: 12, found: 13 });
  });

  it('reordered entries: ERR_AUDIT_SEQUENCE_BROKEN at the first one out of place', async () => {
    const records = [...source.records];
    const a = recordOfLeaf(3);
    [records[a], records[a + 1]] = [records[a + 1]!, records[a]!];
    await failsWith(await fileWith(records), ErrorCodes.AUDIT_SEQUENCE_BROKEN, { leafIndex: 3, found: 4 });
  });

  it('reordered entries with renumbered frames: ERR_AUDIT_ROOT_MISMATCH for their range', async () => {
    const records = source.records.map((r) => ({ ...r }));
    const a = recordOfLeaf(16);
    const b = recordOfLeaf(17);
    [records[a]!.payload, records[b]!.payload] = [records[b]!.payload, records[a]!.payload];
    await failsWith(await fileWith(records), ErrorCodes.AUDIT_ROOT_MISMATCH, { firstSuspectLeaf: 15, lastSuspectLeaf: 19 });
  });

  it('a duplicated entry: ERR_AUDIT_SEQUENCE_BROKEN', async () => {
    const at = recordOfLeaf(2);
    const records = [...source.records.slice(0, at + 1), source.records[at]!, ...source.records.slice(at + 1)];
    await failsWith(await fileWith(records), ErrorCodes.AUDIT_SEQUENCE_BROKEN, { leafIndex: 3, found: 2 });
  });

  it('a file cut inside a frame: ERR_AUDIT_RECORD_CORRUPT at the cut frame', async () => {
    const target = source.records[recordOfLeaf(18)]!;
    await failsWith(await fileOfBytes(source.bytes.subarray(0, target.offset + 25)), ErrorCodes.AUDIT_RECORD_CORRUPT, { leafIndex: 18, byteOffset: target.offset, reason: 'short_frame' });
    await failsWith(await fileOfBytes(source.bytes.subarray(0, target.offset + 9)), ErrorCodes.AUDIT_RECORD_CORRUPT, { leafIndex: 18, byteOffset: target.offset, reason: 'short_header' });
  });

  it('a file cut at a frame boundary: ERR_AUDIT_LOG_TRUNCATED against a checkpoint the verifier already holds', async () => {
    const at = recordOfLeaf(13);
    const path = await fileWith(source.records.slice(0, at));
    const ok = await verifyLogFile(path, ring);
    assert.equal(ok.leaves, 13, 'without outside knowledge a clean cut looks like a shorter log');
    await failsWith(path, ErrorCodes.AUDIT_LOG_TRUNCATED, { leafIndex: 13, treeSize: 20 }, { origin: 'pavilion-test/bank', trustedCheckpoints: [source.checkpoints.at(-1)!] });
  });

  it('leaves removed from before a checkpoint: ERR_AUDIT_SEQUENCE_BROKEN naming the gap', async () => {
    const from = recordOfLeaf(8);
    // Leaves 8 and 9 gone, nothing renumbered: leaf 10 follows leaf 7.
    const records = [...source.records.slice(0, from), ...source.records.slice(from).filter((r) => r.type === RecordType.CHECKPOINT || r.index > 9)];
    // the leaves read are numbered 0..7 in order: the two missing may be any of 5..9 (the
    // checkpoint at 5 vouches for 0..4 only)
    await failsWith(await fileWith(records), ErrorCodes.AUDIT_SEQUENCE_BROKEN, { leafIndex: 5, firstSuspectLeaf: 5, lastSuspectLeaf: 9, missingLeaves: 2, treeSize: 10 });
  });

  it('a leaf deleted and the ones after it renumbered: ERR_AUDIT_SEQUENCE_BROKEN naming the range since the last good checkpoint, not the last leaves', async () => {
    // leaf 12 gone, 13 and 14 renumbered 12 and 13 (their CRCs made anew): the checkpoint at 15 follows 14 leaves
    const records = source.records
      .filter((r) => !(r.type === RecordType.LEAF && r.index === 12))
      .map((r) => (r.type === RecordType.LEAF && r.index > 12 && r.index < 15 ? { ...r, index: r.index - 1 } : r));
    await failsWith(await fileWith(records), ErrorCodes.AUDIT_SEQUENCE_BROKEN, { leafIndex: 10, firstSuspectLeaf: 10, lastSuspectLeaf: 14, missingLeaves: 1, treeSize: 15 });
  });

  it('a second checkpoint at the same tree size with another root, validly signed: ERR_AUDIT_ROOT_MISMATCH naming the fork, not a leaf range', async () => {
    const at = source.records.findIndex((r) => r.type === RecordType.CHECKPOINT && r.index === 15);
    const genuine = JSON.parse(source.records[at]!.payload.toString('utf8')) as SignedCheckpointV1;
    const fork = await forkOf(genuine, 'cd'.repeat(32), signer);
    const records = [...source.records.slice(0, at + 1), { type: RecordType.CHECKPOINT, index: 15, payload: Buffer.from(JSON.stringify(fork)), offset: 0 }, ...source.records.slice(at + 1)];
    await assert.rejects(verifyLogFile(await fileWith(records), ring), (error: unknown) => {
      assert.ok(isPavilionError(error, ErrorCodes.AUDIT_ROOT_MISMATCH), String(error));
      assert.equal(error.details?.['forked'], true);
      assert.equal(error.details?.['treeSize'], 15);
      assert.equal(error.details?.['firstSuspectLeaf'], undefined);
      assert.match(error.message, /two roots for one tree \(a fork\)/);
      return true;
    });
  });

  it('a proof from a file damaged before the decision: ERR_AUDIT_RECORD_CORRUPT at the damage, not "not in the file"; a decision before the damage is still proved', async () => {
    const bytes = Buffer.from(source.bytes);
    const target = source.records[recordOfLeaf(7)]!;
    bytes[target.offset + 20] = bytes[target.offset + 20]! ^ 0x01;
    const path = await fileOfBytes(bytes);
    await assert.rejects(proveFromLogFile(path, 'decision-000012'), (error: unknown) =>
      isPavilionError(error, ErrorCodes.AUDIT_RECORD_CORRUPT) && error.details?.['byteOffset'] === target.offset && error.details?.['reason'] === 'crc_mismatch');
    const early = await proveFromLogFile(path, 'decision-000002');
    assert.equal(early.leaf_index, 2);
    assert.equal(early.checkpoint.tree_size, 5);
  });

  it('a forged checkpoint signature: ERR_AUDIT_SIGNATURE_INVALID at that checkpoint', async () => {
    const records = source.records.map((r) => ({ ...r }));
    const at = records.findIndex((r) => r.type === RecordType.CHECKPOINT && r.index === 15);
    const cp = JSON.parse(records[at]!.payload.toString('utf8')) as SignedCheckpointV1;
    const sig = Buffer.from(cp.signature, 'base64');
    sig[5] = sig[5]! ^ 0x01;
    records[at] = { ...records[at]!, payload: Buffer.from(JSON.stringify({ ...cp, signature: sig.toString('base64') })) };
    await failsWith(await fileWith(records), ErrorCodes.AUDIT_SIGNATURE_INVALID, { recordNumber: at, treeSize: 15 });
  });

  it('a checkpoint rewritten to cover edited entries and signed with another key: ERR_AUDIT_KEY_UNKNOWN', async () => {
    const forger = SoftwareSigner.generate();
    const records = source.records.map((r) => ({ ...r }));
    const leaf = recordOfLeaf(1);
    records[leaf] = { ...records[leaf]!, payload: Buffer.from(records[leaf]!.payload.toString('utf8').replace('"cust-1"', '"cust-9"')) };
    const { MerkleTree } = await import('../sidecar/src/audit/merkle/index.ts');
    const tree = new MerkleTree();
    for (const r of records.slice(0, 5)) tree.append(r.payload);
    const body = { origin: 'pavilion-test/bank', tree_size: 5, root_hash: tree.root().toString('hex'), timestamp: source.checkpoints[0]!.timestamp, key_id: forger.keyId };
    const forged: SignedCheckpointV1 = { version: 1, algorithm: CHECKPOINT_ALGORITHM, ...body, signature: (await forger.sign(checkpointMessage(body))).toString('base64') };
    records[5] = { ...records[5]!, payload: Buffer.from(JSON.stringify(forged)) };
    await failsWith(await fileWith(records), ErrorCodes.AUDIT_KEY_UNKNOWN, { recordNumber: 5, keyId: forger.keyId });
    // Claiming the real key id does not help: the signature fails.
    const claimed = { ...body, key_id: signer.keyId };
    records[5] = { ...records[5]!, payload: Buffer.from(JSON.stringify({ ...forged, key_id: signer.keyId, signature: (await forger.sign(checkpointMessage(claimed))).toString('base64') })) };
    await failsWith(await fileWith(records), ErrorCodes.AUDIT_SIGNATURE_INVALID, { recordNumber: 5 });
  });

  it('the wrong public key given to the verifier: ERR_AUDIT_KEY_UNKNOWN at the first checkpoint', async () => {
    const other = new Keyring();
    other.add(SoftwareSigner.generate().publicKeySpki);
    await failsWith(await fileOfBytes(source.bytes), ErrorCodes.AUDIT_KEY_UNKNOWN, { recordNumber: 5, treeSize: 5 }, {}, other);
  });

  it('a checkpoint of another log, moved in: ERR_AUDIT_CHECKPOINT_INVALID', async () => {
    await failsWith(await fileOfBytes(source.bytes), ErrorCodes.AUDIT_CHECKPOINT_INVALID, { recordNumber: 5 }, { origin: 'pavilion-test/hospital' });
  });

  it('a malformed checkpoint record: ERR_AUDIT_CHECKPOINT_INVALID', async () => {
    const records = source.records.map((r) => ({ ...r }));
    records[11] = { ...records[11]!, payload: Buffer.from('{"version":1}') };
    await failsWith(await fileWith(records), ErrorCodes.AUDIT_CHECKPOINT_INVALID, { recordNumber: 11 });
  });

  it('checkpoints moved out of order: the earlier-sized one after the later fails', async () => {
    const records = [...source.records];
    const c10 = records.findIndex((r) => r.type === RecordType.CHECKPOINT && r.index === 10);
    const moved = records.splice(c10, 1)[0]!;
    records.splice(records.findIndex((r) => r.type === RecordType.CHECKPOINT && r.index === 15) + 1, 0, moved);
    await failsWith(await fileWith(records), ErrorCodes.AUDIT_CHECKPOINT_INVALID, { treeSize: 10 });
  });

  it('a damaged file header: ERR_AUDIT_RECORD_CORRUPT at byte 0', async () => {
    const bytes = Buffer.from(source.bytes);
    bytes[2] = 0;
    await failsWith(await fileOfBytes(bytes), ErrorCodes.AUDIT_RECORD_CORRUPT, { byteOffset: 0, leafIndex: 0 });
  });

  it('a trusted checkpoint that contradicts the log: ERR_AUDIT_ROOT_MISMATCH', async () => {
    const records = source.records.map((r) => ({ ...r }));
    const fresh = await tempDir();
    const other = await openLog(fresh, signer);
    for (let i = 0; i < 6; i++) await other.append(decisionEvent(100 + i));
    const foreign = await other.checkpoint();
    await other.stop(5000);
    await failsWith(await fileWith(records), ErrorCodes.AUDIT_ROOT_MISMATCH, { treeSize: 6 }, { origin: 'pavilion-test/bank', trustedCheckpoints: [foreign] });
  });
});

describe('consistency between two checkpoints, offline', () => {
  it('a log that only grew proves it from any earlier checkpoint; each bad proof fails with its code', async () => {
    const { proveConsistencyFromLogFile, verifyConsistencyProof } = await import('../sidecar/src/audit/log/index.ts');
    const path = await fileOfBytes(source.bytes);
    for (const old of source.checkpoints) {
      const proof = await proveConsistencyFromLogFile(path, old);
      const ok = verifyConsistencyProof(JSON.parse(JSON.stringify(proof)), ring);
      assert.equal(ok.oldSize, old.tree_size);
      assert.equal(ok.newSize, 20);
    }
    const proof = await proveConsistencyFromLogFile(path, source.checkpoints[1]!);
    const fails = (value: unknown, code: string): void => {
      assert.throws(() => verifyConsistencyProof(value, ring), (e: unknown) => isPavilionError(e) && e.code === code, code);
    };
    fails({ ...proof, consistency_path: proof.consistency_path.slice(1) }, ErrorCodes.AUDIT_PROOF_INVALID);
    fails({ ...proof, consistency_path: [...proof.consistency_path].reverse() }, ErrorCodes.AUDIT_PROOF_INVALID);
    fails({ ...proof, consistency_path: 'x' }, ErrorCodes.AUDIT_PROOF_INVALID);
    fails({ ...proof, version: 9 }, ErrorCodes.AUDIT_PROOF_INVALID);
    fails({ ...proof, old_checkpoint: proof.new_checkpoint, new_checkpoint: proof.old_checkpoint }, ErrorCodes.AUDIT_MERKLE_RANGE);
    fails({ ...proof, old_checkpoint: { ...proof.old_checkpoint, root_hash: '11'.repeat(32) } }, ErrorCodes.AUDIT_SIGNATURE_INVALID);
    fails({ ...proof, old_checkpoint: { ...proof.old_checkpoint, key_id: 'p256:00000000000000000000000000000000' } }, ErrorCodes.AUDIT_KEY_UNKNOWN);

    // Pinned: a valid proof from a checkpoint other than the one the caller kept, or of another log, does not pass.
    const pinned = (expect: Parameters<typeof verifyConsistencyProof>[2], code: string): void => {
      assert.throws(() => verifyConsistencyProof(proof, ring, expect), (e: unknown) => isPavilionError(e) && e.code === code, code);
    };
    assert.equal(verifyConsistencyProof(proof, ring, { old: source.checkpoints[1]!, origin: 'pavilion-test/bank' }).oldSize, 10);
    pinned({ old: source.checkpoints[0]! }, ErrorCodes.AUDIT_ROOT_MISMATCH);
    pinned({ origin: 'pavilion-test/hospital' }, ErrorCodes.AUDIT_CHECKPOINT_INVALID);

    // A rewritten history: the log's leaves no longer give the old checkpoint's root.
    const records = source.records.map((r) => ({ ...r }));
    const at = recordOfLeaf(2);
    records[at] = { ...records[at]!, payload: Buffer.from(records[at]!.payload.toString('utf8').replace('"cust-2"', '"cust-Z"')) };
    await assert.rejects(proveConsistencyFromLogFile(await fileWith(records), source.checkpoints[0]!), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_ROOT_MISMATCH));
    // A log cut below the old checkpoint.
    const cut = source.records.slice(0, source.records.findIndex((r) => r.type === RecordType.CHECKPOINT && r.index === 10) + 1);
    await assert.rejects(proveConsistencyFromLogFile(await fileWith(cut), source.checkpoints[3]!), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_LOG_TRUNCATED));
  });

  it('the running log proves consistency from a checkpoint taken before a restart', async () => {
    const dir = await tempDir();
    const log = await openLog(dir, signer);
    for (let i = 0; i < 3; i++) await log.append(decisionEvent(i));
    const held = await log.checkpoint();
    await log.stop(5000);
    const again = await openLog(dir, signer);
    for (let i = 3; i < 9; i++) await again.append(decisionEvent(i));
    await again.checkpoint();
    const { verifyConsistencyProof } = await import('../sidecar/src/audit/log/index.ts');
    assert.equal(verifyConsistencyProof(again.consistencyProofFrom(held), ring).newSize, 9);
    assert.throws(() => again.consistencyProofFrom({ ...held, origin: 'other/log' }), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_CHECKPOINT_INVALID));
    await again.stop(5000);
  });
});

describe('verify-log over the epochs of a rotated log', () => {
  const CLI = join(import.meta.dirname, '..', 'sidecar', 'src', 'cli', 'main.ts');
  const BASE = 'pavilion-test/bank';

  /** A sink directory whose tenant bank was rotated into at least `epochs` archived epochs. */
  async function rotated(epochs: number, from = 0, after = 0): Promise<string> {
    const dir = await tempDir();
    const { directory: _directory, origin: _origin, signer: _signer, ...settings } = logOptions(dir, signer);
    const sink = new AuditLogSink({
      directory: dir,
      originPrefix: 'pavilion-test',
      settings: { ...settings, maxDiskBytes: 16 * 1024, maxEventBytes: 4096, rotateAtBytes: 4096 },
      createSigner: () => Promise.resolve(signer),
    });
    await sink.start();
    let i = from;
    for (; (await listArchivedEpochs(join(dir, 'archive', 'bank'))).length < epochs; i++) await sink.append(decisionEvent(i));
    for (const end = i + after; i < end; i++) await sink.append(decisionEvent(i));
    await sink.stop(5000);
    return dir;
  }
  const archive = (dir: string): string => join(dir, 'archive', 'bank');
  const live = (dir: string): string => join(dir, 'tenants', 'bank', WAL_FILE);
  const epochFile = (dir: string, epoch: number): string => join(archive(dir), String(epoch), WAL_FILE);

  async function linkBroken(dir: string, details: Record<string, unknown>): Promise<void> {
    await assert.rejects(verifyEpochs(archive(dir), live(dir), ring, { origin: BASE }), (error: unknown) => {
      assert.ok(isPavilionError(error, ErrorCodes.AUDIT_EPOCH_LINK_BROKEN), String(error));
      for (const [key, value] of Object.entries(details)) assert.equal(error.details?.[key], value, `${key} in ${JSON.stringify(error.details)}`);
      return true;
    });
  }

  /** A log of epoch `epoch` signed with the trusted key whose first leaf is `first`. */
  async function forgedEpoch(epoch: number, first: ReturnType<typeof decisionEvent>): Promise<string> {
    const dir = await tempDir();
    const log = await openLog(dir, signer, { origin: epochOrigin(BASE, epoch) });
    await log.append(first);
    await log.append(decisionEvent(9000));
    await log.stop(5000);
    return walPath(dir);
  }

  it('checks every epoch and each link against the final checkpoint before it, also from the CLI', async () => {
    const dir = await rotated(3);
    const verified = await verifyEpochs(archive(dir), live(dir), ring, { origin: BASE });
    assert.deepEqual(verified.epochs.map((e) => e.epoch), [0, 1, 2, 3]);
    assert.equal(verified.linksChecked, 3);
    assert.deepEqual(verified.epochs.map((e) => e.origin), [BASE, `${BASE}/e1`, `${BASE}/e2`, `${BASE}/e3`]);
    assert.equal((await verifyEpochs(archive(dir), undefined, ring)).linksChecked, 2, 'the archive alone, epoch 0 naming the origin');

    const keys = join(dir, 'trusted.pem');
    await writeFile(keys, publicKeyPem(signer.publicKeySpki));
    const run = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', CLI, 'audit', 'verify-log', ...args, '--keys', keys], { encoding: 'utf8' });
    const ok = run('--archive', archive(dir), '--log', join(dir, 'tenants', 'bank'), '--origin', BASE);
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal((JSON.parse(ok.stdout) as { linksChecked: number }).linksChecked, 3);

    await rename(join(archive(dir), '1'), join(dir, 'epoch-1-moved-away'));
    const broken = run('--archive', archive(dir), '--log', join(dir, 'tenants', 'bank'));
    assert.equal(broken.status, 1);
    const report = JSON.parse(broken.stdout) as { ok: boolean; code: string; position: Record<string, unknown> };
    assert.equal(report.code, ErrorCodes.AUDIT_EPOCH_LINK_BROKEN);
  });

  it("an epoch's checkpoints stripped but the one over its link: ERR_AUDIT_NOT_CHECKPOINTED (no decision is signed), as for epoch 0 with none", async () => {
    const dir = await rotated(1, 0, 3);
    const liveDir = liveOf(dir);
    const { header, records } = await readRecords(liveDir);
    assert.ok(records.filter((r) => r.type === RecordType.LEAF).length > 2, 'the live epoch holds decisions after its link');
    await writeRecords(liveDir, header, records.filter((r) => r.type === RecordType.LEAF || r.index <= 1));
    await assert.rejects(verifyLogFile(live(dir), ring), (error: unknown) =>
      isPavilionError(error, ErrorCodes.AUDIT_NOT_CHECKPOINTED) && error.details?.['leafIndex'] === 1 && error.details?.['firstSuspectLeaf'] === 1);
  });

  it('a missing epoch: ERR_AUDIT_EPOCH_LINK_BROKEN at the epoch after the gap', async () => {
    const dir = await rotated(3);
    await rename(join(archive(dir), '1'), join(dir, 'moved-away'));
    await linkBroken(dir, { epoch: 2, field: 'epoch' });
    // the newest archived epoch missing: the live epoch's own link names the gap
    await rename(join(dir, 'moved-away'), join(archive(dir), '1'));
    await rename(join(archive(dir), '2'), join(dir, 'moved-away'));
    await linkBroken(dir, { epoch: 3, field: 'epoch' });
  });

  it('an archived epoch replaced by another history signed with the same key: the link after it names it', async () => {
    const dir = await rotated(2);
    const other = await rotated(1, 5000);
    await writeFile(epochFile(dir, 0), await readFile(epochFile(other, 0)));
    await linkBroken(dir, { epoch: 1, previousEpoch: 0 });
  });

  it('leaves appended to a sealed epoch after its final checkpoint: the link after it breaks', async () => {
    const dir = await rotated(2);
    const sealed = join(archive(dir), '0');
    const { header, records } = await readRecords(sealed);
    const leaves = records.filter((r) => r.type === RecordType.LEAF).length;
    await writeRecords(sealed, header, [...records, { type: RecordType.LEAF, index: leaves, payload: Buffer.from(JSON.stringify(decisionEvent(7000))), offset: 0 }]);
    await linkBroken(dir, { epoch: 1, field: 'tree_size' });
  });

  it('an epoch that does not open with a link, or a link to another root, though signed: broken at that epoch', async () => {
    const dir = await rotated(2);
    const seal = epochSeal(0, (await verifyEpochs(archive(dir), undefined, ring)).epochs[0]!.lastCheckpoint!);
    await writeFile(epochFile(dir, 1), await readFile(await forgedEpoch(1, decisionEvent(8000))));
    await linkBroken(dir, { epoch: 1, field: 'link' });

    const forgedLink = epochLinkEvent({ version: 1, epoch: 1, previous: { ...seal, root_hash: 'ab'.repeat(32) } }, 'bank', `${BASE}/e1`, '2026-11-28T12:00:00.000Z');
    await writeFile(epochFile(dir, 1), await readFile(await forgedEpoch(1, forgedLink)));
    await linkBroken(dir, { epoch: 1, field: 'root_hash', found: 'ab'.repeat(32) });
  });

  it('a cut archive: the oldest epochs gone, the last archived epoch grown past its seal, or the epoch a trusted checkpoint names gone: each refused', async () => {
    const dir = await rotated(3);
    const trusted = (await verifyEpochs(archive(dir), undefined, ring, { origin: BASE })).epochs[2]!.lastCheckpoint!;
    // the archive alone, its newest epoch gone: the trusted checkpoint of epoch 2 matches nothing
    await rename(join(archive(dir), '2'), join(dir, 'epoch-2-away'));
    await assert.rejects(verifyEpochs(archive(dir), undefined, ring, { origin: BASE, trustedCheckpoints: [trusted] }), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_LOG_TRUNCATED) && /e2/.test(e.message));
    await assert.rejects(verifyEpochs(archive(dir), undefined, ring, { trustedCheckpoints: [trusted] }), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_CHECKPOINT_UNKNOWN), 'trusted checkpoints need the origin');
    await rename(join(dir, 'epoch-2-away'), join(archive(dir), '2'));
    // the last archived epoch, checked without the live one after it, with a leaf past its seal
    const sealed = join(archive(dir), '2');
    const { header, records } = await readRecords(sealed);
    await writeRecords(sealed, header, [...records, { type: RecordType.LEAF, index: records.filter((r) => r.type === RecordType.LEAF).length, payload: Buffer.from(JSON.stringify(decisionEvent(7100))), offset: 0 }]);
    await assert.rejects(verifyEpochs(archive(dir), undefined, ring, { origin: BASE }), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_EPOCH_LINK_BROKEN) && e.details?.['epoch'] === 2);
    // the oldest epochs gone: the archive must start at epoch 0
    await rename(join(archive(dir), '0'), join(dir, 'epoch-0-away'));
    await linkBroken(dir, { epoch: 1, field: 'epoch' });
  });
});
