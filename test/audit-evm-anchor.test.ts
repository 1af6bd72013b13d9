/**
 * Issue 6 item 4 (anchoring), item 6 (a decision verifies offline from its proof, the key and
 * the anchor transaction) and item 8 (an anchor that does not match fails, naming the first
 * bad position), against a real EVM (the Hardhat EVM served on a loopback port by the shared
 * harness) and the PavilionAnchor contract deployed from the committed artifact. No mocks:
 * every check reads receipts, events and contract state from the chain.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Interface, JsonRpcProvider, Transaction, Wallet, toQuantity } from 'ethers';
import {
  Keyring,
  RecordType,
  SoftwareSigner,
  proveFromLogFile,
  verifyDecisionAnchor,
  verifyDecisionProof,
  verifyLogFile,
  type AnchorRecordV1,
  type SignedCheckpointV1,
} from '../sidecar/src/audit/log/index.ts';
import { CHECKPOINT_ALGORITHM, checkpointMessage } from '../sidecar/src/audit/log/checkpoint.ts';
import {
  EvmAnchor,
  EvmAnchorVerifier,
  PAVILION_ANCHOR_ARTIFACT,
  checkpointSignatureSha256,
  deployAnchorContract,
  logIdOf,
  setAnchorSubmitter,
  type EvmAnchorOptions,
} from '../sidecar/src/audit/anchor/index.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { startEvmChain, type RunningEvmChain } from './harness/evm-chain.ts';
import { until } from './harness/wait.ts';
import { post, startPavilion } from './harness/pavilion-harness.ts';
import { decisionEvent, openLog, readRecords, ringOf, tempDir, walPath, writeRecords } from './audit/fixtures.ts';

let chain: RunningEvmChain;
let contract: string;
let deployment: { txHash: string; blockNumber: number };
const signer = SoftwareSigner.generate();
const ring = ringOf(signer);
const anchors: EvmAnchor[] = [];
const verifiers: EvmAnchorVerifier[] = [];

before(async () => {
  chain = await startEvmChain();
  const deployed = await deployAnchorContract({ rpcUrl: chain.url, chainId: chain.chainId, privateKey: chain.accounts[0]!.privateKey, pollingIntervalMs: 10 });
  contract = deployed.address;
  deployment = deployed;
});

after(async () => {
  for (const a of anchors) a.close();
  for (const v of verifiers) v.close();
  await chain.stop();
});

function evmAnchor(overrides: Partial<EvmAnchorOptions> = {}): EvmAnchor {
  const anchor = new EvmAnchor({
    rpcUrl: chain.url, chainId: chain.chainId, contract, privateKey: chain.accounts[0]!.privateKey,
    pollingIntervalMs: 10, receiptTimeoutMs: 2000, submitTimeoutMs: 10_000, requestTimeoutMs: 1000, ...overrides,
  });
  anchors.push(anchor);
  return anchor;
}

function chainVerifier(overrides: { contract?: string; confirmations?: number } = {}): EvmAnchorVerifier {
  const verifier = new EvmAnchorVerifier({ rpcUrl: chain.url, chainId: chain.chainId, contract: overrides.contract ?? contract, pollingIntervalMs: 10, ...(overrides.confirmations === undefined ? {} : { confirmations: overrides.confirmations }) });
  verifiers.push(verifier);
  return verifier;
}

/** A log of `events` decisions, checkpoints every 5, anchored with `anchor`; stopped. */
async function anchoredLog(anchor: EvmAnchor, origin: string, events = 12, result: unknown = true): Promise<string> {
  const dir = await tempDir();
  const log = await openLog(dir, signer, { origin, anchor, checkpointEveryEvents: 5 });
  for (let i = 0; i < events; i++) await log.append(decisionEvent(i, { result }));
  await log.stop(10_000);
  assert.equal(log.anchors.at(-1)?.tree_size, events, 'the final checkpoint is anchored before stop');
  return dir;
}

async function signedCheckpoint(origin: string, treeSize: number, root = 'cd'.repeat(32)): Promise<SignedCheckpointV1> {
  const body = { origin, tree_size: treeSize, root_hash: root, timestamp: new Date().toISOString(), key_id: signer.keyId };
  return { version: 1, algorithm: CHECKPOINT_ALGORITHM, ...body, signature: (await signer.sign(checkpointMessage(body))).toString('base64') };
}

async function anchorRecords(dir: string): Promise<Array<{ at: number; record: AnchorRecordV1 }>> {
  const { records } = await readRecords(dir);
  return records.flatMap((r, at) => (r.type === RecordType.ANCHOR ? [{ at, record: JSON.parse(r.payload.toString('utf8')) as AnchorRecordV1 }] : []));
}

/**
 * A JSON-RPC relay in front of the chain that passes every request on, but for the first
 * `swallowSends` eth_sendRawTransaction requests never answers (after the chain took them):
 * a reply lost on the way back, so the sender times out although the node has the transaction.
 */
async function lossyRelay(swallowSends: number): Promise<{ url: string; sends: string[]; close(): Promise<void> }> {
  const sends: string[] = [];
  const held: ServerResponse[] = [];
  let swallow = swallowSends;
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    void (async () => {
      const chunks: Buffer[] = [];
      for await (const chunk of request) chunks.push(chunk as Buffer);
      const body = Buffer.concat(chunks).toString('utf8');
      const parsed = JSON.parse(body) as { method?: string; params?: unknown[] };
      const answer = await fetch(chain.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body }).then((r) => r.text());
      if (parsed.method === 'eth_sendRawTransaction') {
        sends.push(String(parsed.params?.[0]));
        if (swallow > 0) {
          swallow--;
          held.push(response);
          return;
        }
      }
      response.writeHead(200, { 'content-type': 'application/json' }).end(answer);
    })().catch(() => response.writeHead(500).end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    sends,
    async close() {
      for (const r of held) r.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const failsWith = async (promise: Promise<unknown>, code: string, details: Record<string, unknown> = {}, message?: RegExp): Promise<void> => {
  await assert.rejects(promise, (e: unknown) => {
    assert.ok(isPavilionError(e), String(e));
    assert.equal(e.code, code, e.message);
    for (const [k, v] of Object.entries(details)) assert.equal(e.details?.[k], v, `${k} in ${JSON.stringify(e.details)}`);
    if (message !== undefined) assert.match(e.message, message);
    return true;
  });
};

/**
 * A submitter account of its own (a transaction left in the pool must not hold up the other
 * tests), funded and authorised, with automine off: `spike` makes the next block's base fee
 * jump above what a transaction offers, `keepMining` spikes every 50 ms. Everything is put
 * back after `run`.
 */
async function withStuckPool(run: (pool: { submitter: { readonly address: string; readonly privateKey: string }; spike(): Promise<void>; nonceOf(tag: string): Promise<number>; keepMining(): void }) => Promise<void>): Promise<void> {
  const owner = new Wallet(chain.accounts[0]!.privateKey, new JsonRpcProvider(chain.url, chain.chainId, { staticNetwork: true, batchMaxCount: 1 }));
  const submitter = Wallet.createRandom();
  await (await owner.sendTransaction({ to: submitter.address, value: 10n ** 18n })).wait();
  await setAnchorSubmitter({ rpcUrl: chain.url, chainId: chain.chainId, privateKey: chain.accounts[0]!.privateKey, contract, submitter: submitter.address, allowed: true, pollingIntervalMs: 10 });
  const spike = async (): Promise<void> => {
    await chain.rpc('hardhat_setNextBlockBaseFeePerGas', [toQuantity(100_000_000_000n)]);
    await chain.rpc('evm_mine');
  };
  const nonceOf = async (tag: string): Promise<number> => Number(BigInt((await chain.rpc('eth_getTransactionCount', [submitter.address, tag])) as string));
  await chain.rpc('evm_setAutomine', [false]);
  let miner: NodeJS.Timeout | undefined;
  try {
    await run({ submitter, spike, nonceOf, keepMining: () => (miner = setInterval(() => void spike().catch(() => undefined), 50)) });
  } finally {
    clearInterval(miner);
    await chain.rpc('hardhat_setNextBlockBaseFeePerGas', [toQuantity(1_000_000_000n)]);
    await chain.rpc('evm_mine');
    await chain.rpc('evm_setAutomine', [true]);
    owner.provider!.destroy();
  }
}

describe('EVM anchoring (PavilionAnchor on a local chain)', () => {
  it('anchors each checkpoint in one transaction; verify-log confirms every anchor on the chain; figures', async () => {
    const anchor = evmAnchor();
    const dir = await anchoredLog(anchor, 'pavilion-test/bank');
    const result = await verifyLogFile(walPath(dir), ring, { origin: 'pavilion-test/bank', anchorVerifiers: [chainVerifier()] });
    assert.ok(result.anchors >= 2, `anchors: ${result.anchors}`);
    assert.equal(result.anchorsVerified, result.anchors);
    assert.equal(result.anchoredSize, 12);
    assert.equal(anchor.stats().submissions, result.anchors, 'one transaction per anchored checkpoint, none per decision');
    const { last } = anchor.stats();
    assert.ok(last !== undefined);
    // Figures for the record (a repeat anchor of a log updates its slots, the first creates them).
    process.stdout.write(`# evm anchor: gas ${last.gasUsed} per anchor, send+receipt ${last.receiptMs} ms, with checks and confirmation ${last.totalMs} ms\n`);
    assert.ok(last.gasUsed > 21_000 && last.gasUsed < 150_000, `gas ${last.gasUsed}`);
  });

  it('a decision verifies offline from its proof and the public key, and against the anchor transaction', async () => {
    const dir = await anchoredLog(evmAnchor(), 'pavilion-test/hospital');
    const proof = await proveFromLogFile(walPath(dir), 'decision-000003');
    assert.ok(proof.anchor !== undefined, 'the prover picks an anchored checkpoint');
    const verified = verifyDecisionProof(JSON.parse(JSON.stringify(proof)), ring, { decisionId: 'decision-000003' });
    assert.equal(verified.anchor?.kind, 'evm');
    assert.equal(await verifyDecisionAnchor(verified, []), false, 'offline: consistent, but the chain was not consulted');
    assert.equal(await verifyDecisionAnchor(verified, [chainVerifier()]), true);
    // The same proof with its anchor's transaction pointing elsewhere fails, on the chain.
    const elsewhere = { ...proof, anchor: { ...proof.anchor, reference: { ...proof.anchor.reference, tx_hash: deployment.txHash } } };
    await failsWith(verifyDecisionAnchor(verifyDecisionProof(elsewhere, ring), [chainVerifier()]), ErrorCodes.AUDIT_ANCHOR_MISMATCH, {}, /was sent to no contract/);
    // Its block is where the anchor saw the transaction mined, not what proves it (a reorg may
    // move it, see below): another block number still verifies, on the transaction itself.
    const moved = { ...proof, anchor: { ...proof.anchor, reference: { ...proof.anchor.reference, block_number: 1 } } };
    assert.equal(await verifyDecisionAnchor(verifyDecisionProof(moved, ring), [chainVerifier()]), true);
  });

  it('a history rewritten by the key holder, anchors edited to match: the chain refuses, naming the first anchor record', async () => {
    const origin = 'pavilion-test/agency';
    const honest = await anchoredLog(evmAnchor(), origin);
    // The operator, holding the signing key, writes another history with the same origin
    // and sizes, and copies the honest log's anchor references over, with its own roots
    // and signature hashes so that everything inside the file agrees.
    const forged = await tempDir();
    const forger = await openLog(forged, signer, { origin, checkpointEveryEvents: 5 });
    for (let i = 0; i < 12; i++) await forger.append(decisionEvent(i, { result: false }));
    await forger.stop(5000);
    const { header, records } = await readRecords(forged);
    const honestAnchors = await anchorRecords(honest);
    const out = [];
    let firstAnchorAt = -1;
    for (const r of records) {
      out.push(r);
      if (r.type !== RecordType.CHECKPOINT) continue;
      const checkpoint = JSON.parse(r.payload.toString('utf8')) as SignedCheckpointV1;
      const copied = honestAnchors.find((a) => a.record.tree_size === checkpoint.tree_size);
      if (copied === undefined) continue;
      if (firstAnchorAt < 0) firstAnchorAt = out.length;
      const record = { ...copied.record, root_hash: checkpoint.root_hash, reference: { ...copied.record.reference, checkpoint_sig_sha256: checkpointSignatureSha256(checkpoint) } };
      out.push({ type: RecordType.ANCHOR, index: checkpoint.tree_size, payload: Buffer.from(JSON.stringify(record)), offset: 0 });
    }
    await writeRecords(forged, header, out);
    assert.equal((await verifyLogFile(walPath(forged), ring)).anchors, honestAnchors.length, 'offline, the forgery is consistent');
    await failsWith(verifyLogFile(walPath(forged), ring, { origin, anchorVerifiers: [chainVerifier()] }), ErrorCodes.AUDIT_ANCHOR_MISMATCH, { recordNumber: firstAnchorAt }, /anchored root [0-9a-f]{64} at tree size \d+, the record says/);

    // Dropping the anchor records instead does not help: every anchor of the log on chain
    // must still be reached, with its root; the first (tree size 5) fails first.
    await writeRecords(forged, header, records);
    assert.equal((await verifyLogFile(walPath(forged), ring)).anchors, 0);
    await failsWith(verifyLogFile(walPath(forged), ring, { origin, anchorVerifiers: [chainVerifier()] }), ErrorCodes.AUDIT_ROOT_MISMATCH, { treeSize: 5, firstSuspectLeaf: 0, lastSuspectLeaf: 4 }, /rewritten after it was anchored/);
    const intact = await verifyLogFile(walPath(honest), ring, { origin, anchorVerifiers: [chainVerifier()] });
    assert.equal(intact.anchoredOutsideSize, 12);
  });

  it('a history forked after an anchor, re-signed, anchored again at a larger size, the old anchor record dropped: ERR_AUDIT_ROOT_MISMATCH at the first anchored size it contradicts', async () => {
    const origin = 'pavilion-test/fork';
    // Size 5 anchored with the true root.
    const honest = await anchoredLog(evmAnchor(), origin, 5);
    const honestAnchor = (await anchorRecords(honest))[0]!.record;
    // The operator (checkpoint key and submitter key) rewrites leaf 2, re-signs, and anchors
    // size 10 with the forked root (the contract only wants sizes to grow; size 5 is refused).
    const forged = await tempDir();
    const forger = await openLog(forged, signer, { origin, anchor: evmAnchor(), checkpointEveryEvents: 5 });
    for (let i = 0; i < 10; i++) await forger.append(decisionEvent(i, i === 2 ? { result: false } : {}));
    await forger.stop(10_000);
    assert.deepEqual(forger.anchors.map((a) => a.tree_size), [10], 'only the larger size got in');
    assert.notEqual(forger.checkpoints[0]!.root_hash, honestAnchor.root_hash);
    // Everything in the file, and the contract's latest anchor, agree with the forgery.
    const latest = await chainVerifier().latestAnchor(origin);
    assert.equal(latest?.treeSize, 10);
    const events = await chainVerifier().anchorsOf(origin);
    assert.deepEqual(events.map((e) => [e.treeSize, e.rootHash]), [[5, honestAnchor.root_hash], [10, forger.anchors[0]!.root_hash]]);
    await failsWith(verifyLogFile(walPath(forged), ring, { origin, anchorVerifiers: [chainVerifier()] }), ErrorCodes.AUDIT_ROOT_MISMATCH, {
      treeSize: 5, leafIndex: 0, firstSuspectLeaf: 0, lastSuspectLeaf: 4, txHash: honestAnchor.reference['tx_hash'], blockNumber: honestAnchor.reference['block_number'],
    }, /anchor holds root [0-9a-f]{64} for the first 5 leaves of pavilion-test\/fork; .* leaves 0\.\.4 was rewritten after it was anchored/);
  });

  it('an anchored checkpoint removed from the log, or re-signed, with its anchor record dropped: ERR_AUDIT_ANCHOR_MISMATCH at that tree size', async () => {
    const origin = 'pavilion-test/dropped-checkpoint';
    const dir = await anchoredLog(evmAnchor(), origin);
    const { header, records } = await readRecords(dir);
    const at5 = (r: { type: number; index: number }): boolean => r.type !== RecordType.LEAF && r.index === 5;
    const anchored5 = (await anchorRecords(dir)).find((a) => a.record.tree_size === 5)!.record;
    // Removed: the remaining checkpoints (10, 12) are consistent, and the latest anchor matches.
    await writeRecords(dir, header, records.filter((r) => !at5(r)));
    assert.equal((await verifyLogFile(walPath(dir), ring)).checkpoints, 2, 'offline, the log looks intact');
    await failsWith(verifyLogFile(walPath(dir), ring, { origin, anchorVerifiers: [chainVerifier()] }), ErrorCodes.AUDIT_ANCHOR_MISMATCH, { treeSize: 5, txHash: anchored5.reference['tx_hash'] }, /no checkpoint at that size/);
    // Re-signed: the same tree size and root under another signature.
    const original = JSON.parse(records.find((r) => r.type === RecordType.CHECKPOINT && r.index === 5)!.payload.toString('utf8')) as SignedCheckpointV1;
    const body = { origin, tree_size: 5, root_hash: original.root_hash, timestamp: new Date(Date.parse(original.timestamp) - 1).toISOString(), key_id: signer.keyId };
    const resigned = { version: 1, algorithm: CHECKPOINT_ALGORITHM, ...body, signature: (await signer.sign(checkpointMessage(body))).toString('base64') };
    await writeRecords(dir, header, records.flatMap((r) => (!at5(r) ? [r] : r.type === RecordType.CHECKPOINT ? [{ ...r, payload: Buffer.from(JSON.stringify(resigned)) }] : [])));
    assert.equal((await verifyLogFile(walPath(dir), ring)).checkpoints, 3, 'offline, the re-signed checkpoint verifies');
    await failsWith(verifyLogFile(walPath(dir), ring, { origin, anchorVerifiers: [chainVerifier()] }), ErrorCodes.AUDIT_ANCHOR_MISMATCH, { treeSize: 5 }, /signature hash [0-9a-f]{64}, which no checkpoint of the log at that size has/);
  });

  it('a log cut after its last anchor (records and all): ERR_AUDIT_LOG_TRUNCATED from the contract\'s latest tree size', async () => {
    const origin = 'pavilion-test/cut';
    const dir = await anchoredLog(evmAnchor(), origin);
    const { header, records } = await readRecords(dir);
    // Keep everything up to (and including) the records of tree size 10: a clean cut at a frame boundary.
    const cut = records.filter((r) => (r.type === RecordType.LEAF ? r.index < 10 : r.index <= 10));
    await writeRecords(dir, header, cut);
    assert.equal((await verifyLogFile(walPath(dir), ring)).leaves, 10, 'offline, a shorter log looks intact');
    await failsWith(verifyLogFile(walPath(dir), ring, { origin, anchorVerifiers: [chainVerifier()] }), ErrorCodes.AUDIT_LOG_TRUNCATED, { leafIndex: 10, treeSize: 12 });
  });

  it('an anchor whose transaction hash points at another transaction: ERR_AUDIT_ANCHOR_MISMATCH at that record', async () => {
    const origin = 'pavilion-test/tx-swap';
    const dir = await anchoredLog(evmAnchor(), origin);
    const { header, records } = await readRecords(dir);
    const found = await anchorRecords(dir);
    assert.ok(found.length >= 2);
    const [first, second] = [found[0]!, found[1]!];
    // The other anchor transaction of the same log (same contract, a valid Anchored event).
    const swapped = { ...first.record, reference: { ...first.record.reference, tx_hash: second.record.reference['tx_hash'], block_number: second.record.reference['block_number'] } };
    await writeRecords(dir, header, records.map((r, i) => (i === first.at ? { ...r, payload: Buffer.from(JSON.stringify(swapped)) } : r)));
    await failsWith(verifyLogFile(walPath(dir), ring, { origin, anchorVerifiers: [chainVerifier()] }), ErrorCodes.AUDIT_ANCHOR_MISMATCH, { recordNumber: first.at }, /anchored no checkpoint of log [0-9a-f]{64} at tree size/);
    // A transaction that is no anchor at all (the contract's deployment).
    const unrelated = { ...first.record, reference: { ...first.record.reference, tx_hash: deployment.txHash, block_number: deployment.blockNumber } };
    await writeRecords(dir, header, records.map((r, i) => (i === first.at ? { ...r, payload: Buffer.from(JSON.stringify(unrelated)) } : r)));
    await failsWith(verifyLogFile(walPath(dir), ring, { origin, anchorVerifiers: [chainVerifier()] }), ErrorCodes.AUDIT_ANCHOR_MISMATCH, { recordNumber: first.at }, /was sent to no contract \(a deployment\)/);
  });

  it('anchors in a contract at another address: refused by a verifier that trusts the deployed one', async () => {
    const own = await deployAnchorContract({ rpcUrl: chain.url, chainId: chain.chainId, privateKey: chain.accounts[1]!.privateKey, pollingIntervalMs: 10 });
    const origin = 'pavilion-test/other-contract';
    const dir = await anchoredLog(evmAnchor({ contract: own.address, privateKey: chain.accounts[1]!.privateKey }), origin);
    const found = await anchorRecords(dir);
    await failsWith(verifyLogFile(walPath(dir), ring, { origin, anchorVerifiers: [chainVerifier()] }), ErrorCodes.AUDIT_ANCHOR_MISMATCH, { recordNumber: found[0]!.at }, /names contract 0x[0-9a-fA-F]{40}, the verifier trusts/);
    // Only trust decides: pointed at the other contract, the same anchors verify.
    assert.equal((await verifyLogFile(walPath(dir), ring, { origin, anchorVerifiers: [chainVerifier({ contract: own.address })] })).anchorsVerified, found.length);
  });

  it('a tree size that does not grow, or a submitter not authorised: ERR_AUDIT_ANCHOR_REVERTED; the log stays WARN and keeps deciding', async () => {
    const origin = 'pavilion-test/revert';
    const anchor = evmAnchor();
    await anchor.anchor(await signedCheckpoint(origin, 1000));
    const before = anchor.stats().submissions;
    await failsWith(anchor.anchor(await signedCheckpoint(origin, 1000)), ErrorCodes.AUDIT_ANCHOR_REVERTED, { treeSize: 1000 }, /TreeSizeNotGrowing\(0x[0-9a-f]{64}, 1000, 1000\)/);
    await failsWith(evmAnchor({ privateKey: chain.accounts[2]!.privateKey }).anchor(await signedCheckpoint('pavilion-test/x', 1)), ErrorCodes.AUDIT_ANCHOR_REVERTED, {}, /NotAuthorised\(0x[0-9a-fA-F]{40}\)/);
    assert.equal(anchor.stats().submissions, before, 'a refused anchor is not sent');

    const dir = await tempDir();
    const log = await openLog(dir, signer, { origin, anchor, checkpointEveryEvents: 5 });
    for (let i = 0; i < 10; i++) await log.append(decisionEvent(i));
    await until('the anchor failure to show', () => /anchoring the checkpoint at tree size \d+ failed: .*TreeSizeNotGrowing/.test(log.status().message ?? ''));
    assert.equal(log.status().state, 'WARN');
    await log.append(decisionEvent(10));
    assert.equal(log.size, 11, 'decisions continue');
    assert.equal(log.anchors.length, 0);
    await log.stop(5000);
  });

  it('a transaction that reverts once mined (another anchor of the log got in first): ERR_AUDIT_ANCHOR_REVERTED with the reason', async () => {
    const origin = 'pavilion-test/mined-revert';
    // A contract with two submitters: ours, and a rival whose transaction is priced to be mined first.
    const own = await deployAnchorContract({ rpcUrl: chain.url, chainId: chain.chainId, privateKey: chain.accounts[1]!.privateKey, pollingIntervalMs: 10 });
    await setAnchorSubmitter({ rpcUrl: chain.url, chainId: chain.chainId, privateKey: chain.accounts[1]!.privateKey, contract: own.address, submitter: chain.accounts[2]!.address, allowed: true, pollingIntervalMs: 10 });
    const anchor = evmAnchor({ contract: own.address, privateKey: chain.accounts[2]!.privateKey });
    const provider = new JsonRpcProvider(chain.url, chain.chainId, { staticNetwork: true, batchMaxCount: 1 });
    const rival = new Wallet(chain.accounts[1]!.privateKey, provider);
    await chain.rpc('evm_setAutomine', [false]);
    try {
      const anchoring = anchor.anchor(await signedCheckpoint(origin, 8));
      await until('our transaction in the pool', async () => ((await chain.rpc('eth_getBlockByNumber', ['pending', false])) as { transactions: string[] }).transactions.length === 1);
      const data = new Interface(PAVILION_ANCHOR_ARTIFACT.abi).encodeFunctionData('anchor', [`0x${logIdOf(origin)}`, 10, `0x${'ef'.repeat(32)}`, `0x${'ef'.repeat(32)}`]);
      await rival.sendTransaction({ to: own.address, data, gasLimit: 200_000, maxPriorityFeePerGas: 50_000_000_000n, maxFeePerGas: 100_000_000_000n });
      await chain.rpc('evm_mine');
      await failsWith(anchoring, ErrorCodes.AUDIT_ANCHOR_REVERTED, { treeSize: 8 }, /reverted in block \d+: TreeSizeNotGrowing\(0x[0-9a-f]{64}, 8, 10\)/);
    } finally {
      await chain.rpc('evm_setAutomine', [true]);
      provider.destroy();
    }
  });

  it('a transaction that reverts for want of gas is sent again, once, with more, and lands', async () => {
    const anchor = evmAnchor({ gasLimit: 30_000 });
    const checkpoint = await signedCheckpoint('pavilion-test/out-of-gas', 3);
    const reference = await anchor.anchor(checkpoint);
    const { last, resubmissions } = anchor.stats();
    assert.ok(last !== undefined);
    assert.equal(last.sentTxHashes.length, 2, 'the reverted transaction, then the new one');
    assert.equal(resubmissions, 1);
    const first = (await chain.rpc('eth_getTransactionReceipt', [last.sentTxHashes[0]])) as { status: string };
    assert.equal(first.status, '0x0', 'the first one was mined and reverted');
    assert.equal(reference['tx_hash'], last.sentTxHashes[1]);
    await chainVerifier().verify({ version: 1, kind: 'evm', tree_size: 3, root_hash: checkpoint.root_hash, reference }, checkpoint);
  });

  it('a dropped transaction is sent again with higher fees and the anchor still lands', async () => {
    const anchor = evmAnchor({ receiptTimeoutMs: 300 });
    await chain.rpc('evm_setAutomine', [false]);
    let dropped: string | undefined;
    try {
      const anchoring = anchor.anchor(await signedCheckpoint('pavilion-test/dropped', 5));
      await until('the transaction to reach the pool', async () => {
        const pending = (await chain.rpc('eth_getBlockByNumber', ['pending', false])) as { transactions: string[] };
        dropped = pending.transactions[0];
        return dropped !== undefined;
      });
      assert.equal(await chain.rpc('hardhat_dropTransaction', [dropped]), true);
      await chain.rpc('evm_setAutomine', [true]);
      const reference = await anchoring;
      const { last } = anchor.stats();
      assert.ok(last !== undefined && last.sentTxHashes.length >= 2, `sent: ${JSON.stringify(last?.sentTxHashes)}`);
      assert.notEqual(reference['tx_hash'], dropped);
      assert.equal(last.sentTxHashes[0], dropped);
      assert.ok(anchor.stats().resubmissions >= 1);
    } finally {
      await chain.rpc('evm_setAutomine', [true]);
    }
  });

  it('maxFeePerGasGwei caps what a resend may offer: a dropped transaction is sent again within the ceiling and lands', async () => {
    const provider = new JsonRpcProvider(chain.url, chain.chainId, { staticNetwork: true });
    try {
      const offered = (await provider.getFeeData()).maxFeePerGas;
      assert.ok(offered !== null);
      // the ceiling at what the first send offers: no bump may go past it
      const capGwei = Number(offered) / 1e9;
      const capWei = BigInt(Math.round(capGwei * 1e9));
      const anchor = evmAnchor({ receiptTimeoutMs: 300, maxFeePerGasGwei: capGwei });
      await chain.rpc('evm_setAutomine', [false]);
      try {
        const anchoring = anchor.anchor(await signedCheckpoint('pavilion-test/fee-cap', 5));
        let dropped: string | undefined;
        await until('the transaction to reach the pool', async () => {
          dropped = ((await chain.rpc('eth_getBlockByNumber', ['pending', false])) as { transactions: string[] }).transactions[0];
          return dropped !== undefined;
        });
        assert.equal(await chain.rpc('hardhat_dropTransaction', [dropped]), true);
        await chain.rpc('evm_setAutomine', [true]);
        const reference = await anchoring;
        assert.ok(anchor.stats().resubmissions >= 1, 'sent again after the drop');
        const mined = await provider.getTransaction(reference['tx_hash'] as string);
        assert.ok(mined?.maxFeePerGas != null && mined.maxFeePerGas <= capWei, `offered ${String(mined?.maxFeePerGas)} wei, the ceiling is ${capWei}`);
        assert.ok(mined.maxPriorityFeePerGas != null && mined.maxPriorityFeePerGas <= mined.maxFeePerGas);
      } finally {
        await chain.rpc('evm_setAutomine', [true]);
      }
    } finally {
      provider.destroy();
    }
    assert.throws(() => evmAnchor({ maxFeePerGasGwei: 0 }), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_ANCHOR_CONFIG));
  });

  it('a send whose reply is lost after the node mined it: the retry\'s "nonce too low" finds the receipt by the locally computed hash; no second transaction', async () => {
    const relay = await lossyRelay(1);
    const nonceOf = async (address: string): Promise<number> => Number(BigInt((await chain.rpc('eth_getTransactionCount', [address, 'latest'])) as string));
    try {
      const anchor = evmAnchor({ rpcUrl: relay.url, requestTimeoutMs: 500 });
      const before = await nonceOf(anchor.address);
      const checkpoint = await signedCheckpoint('pavilion-test/lost-reply-mined', 4);
      const reference = await anchor.anchor(checkpoint);
      assert.ok(relay.sends.length >= 2, 'the send was retried after the timeout');
      const first = Transaction.from(relay.sends[0]!).hash!.toLowerCase();
      assert.equal(reference['tx_hash'], first, 'the anchor is the transaction whose reply was lost');
      assert.deepEqual(anchor.stats().last?.sentTxHashes, [first]);
      assert.equal(await nonceOf(anchor.address), before + 1, 'one transaction for the checkpoint, gas paid once');
      await chainVerifier().verify({ version: 1, kind: 'evm', tree_size: 4, root_hash: checkpoint.root_hash, reference }, checkpoint);
    } finally {
      await relay.close();
    }
  });

  it('a send whose reply is lost while the transaction waits in the pool: the retry\'s "already known" is not retried; the anchor lands when it is mined', async () => {
    const relay = await lossyRelay(1);
    await chain.rpc('evm_setAutomine', [false]);
    try {
      const anchor = evmAnchor({ rpcUrl: relay.url, requestTimeoutMs: 500, receiptTimeoutMs: 5000 });
      const checkpoint = await signedCheckpoint('pavilion-test/lost-reply-pool', 6);
      const anchoring = anchor.anchor(checkpoint);
      await until('the retried send', () => relay.sends.length >= 2);
      // Long enough for a client that retries "already known" to send again several times.
      await new Promise((r) => setTimeout(r, 400));
      assert.equal(relay.sends.length, 2, 'the node already has it: no more sends');
      await chain.rpc('evm_mine');
      const reference = await anchoring;
      const first = Transaction.from(relay.sends[0]!).hash!.toLowerCase();
      assert.equal(reference['tx_hash'], first);
      assert.deepEqual(anchor.stats().last?.sentTxHashes, [first]);
    } finally {
      await chain.rpc('evm_setAutomine', [true]);
      await relay.close();
    }
  });

  it('a transaction left underpriced in the pool by a give-up (fee spike) is replaced at its nonce by the next checkpoint, with higher fees, which lands', async () => {
    await withStuckPool(async ({ submitter, spike, nonceOf, keepMining }) => {
      const anchor = evmAnchor({ privateKey: submitter.privateKey, maxAttempts: 1, receiptTimeoutMs: 400 });
      const origin = 'pavilion-test/stuck-nonce';
      const first = anchor.anchor(await signedCheckpoint(origin, 5));
      await until('the first transaction in the pool', async () => ((await chain.rpc('eth_getBlockByNumber', ['pending', false])) as { transactions: string[] }).transactions.length === 1);
      await spike(); // the base fee jumps above what the transaction offers: it stays in the pool
      await failsWith(first, ErrorCodes.AUDIT_ANCHOR_FAILED, {}, /no receipt after 1 sends/);
      const stuckNonce = await nonceOf('latest');
      keepMining();
      const reference = await anchor.anchor(await signedCheckpoint(origin, 10));
      const tx = (await chain.rpc('eth_getTransactionByHash', [reference['tx_hash']])) as { nonce: string };
      assert.equal(Number(BigInt(tx.nonce)), stuckNonce, 'the stuck nonce was reused');
      assert.equal(await nonceOf('latest'), stuckNonce + 1, 'the stuck transaction was replaced, nothing queues behind it');
    });
  });

  it('a transaction left underpriced when the process stops is replaced at its nonce by the next process, which reads it from pendingFile', async () => {
    await withStuckPool(async ({ submitter, spike, nonceOf, keepMining }) => {
      const pendingFile = join(await tempDir(), 'anchor-evm-pending.json');
      const origin = 'pavilion-test/stuck-across-restart';
      const before = evmAnchor({ privateKey: submitter.privateKey, maxAttempts: 1, receiptTimeoutMs: 400, pendingFile });
      const first = before.anchor(await signedCheckpoint(origin, 5));
      await until('the first transaction in the pool', async () => ((await chain.rpc('eth_getBlockByNumber', ['pending', false])) as { transactions: string[] }).transactions.length === 1);
      await spike();
      await failsWith(first, ErrorCodes.AUDIT_ANCHOR_FAILED, {}, /no receipt after 1 sends/);
      const stuckNonce = await nonceOf('latest');
      assert.equal(before.stats().unconfirmedNonce, stuckNonce);
      const recorded = JSON.parse(await readFile(pendingFile, 'utf8')) as { submitter: string; pending: { nonce: number; tx_hashes: string[] } };
      assert.equal(recorded.submitter, submitter.address);
      assert.equal(recorded.pending.nonce, stuckNonce, 'recorded before the send, kept after the give-up');
      before.close(); // the process stops; its transaction stays in the pool
      const after = evmAnchor({ privateKey: submitter.privateKey, maxAttempts: 3, receiptTimeoutMs: 400, pendingFile });
      keepMining();
      const reference = await after.anchor(await signedCheckpoint(origin, 10));
      const tx = (await chain.rpc('eth_getTransactionByHash', [reference['tx_hash']])) as { nonce: string };
      assert.equal(Number(BigInt(tx.nonce)), stuckNonce, 'the stuck nonce was reused by the new process');
      assert.equal(await nonceOf('latest'), stuckNonce + 1, 'nothing queues behind the stuck transaction');
      assert.equal(after.stats().pendingFileIgnored, undefined);
      assert.equal((JSON.parse(await readFile(pendingFile, 'utf8')) as { pending: unknown }).pending, null, 'nothing left pending once it landed');
    });
  });

  it('a pendingFile of another submitter or not readable is not taken (WARN in status, from start); one that cannot be written sends nothing (ERR_AUDIT_ANCHOR_FAILED)', async () => {
    const dir = await tempDir();
    const other = join(dir, 'other.json');
    await writeFile(other, JSON.stringify({ version: 1, chain_id: chain.chainId, contract, submitter: Wallet.createRandom().address, pending: { nonce: 0, max_fee_per_gas: '1', max_priority_fee_per_gas: '1', tx_hashes: [`0x${'ab'.repeat(32)}`] } }));
    const origin = 'pavilion-test/pending-file';
    const a = evmAnchor({ pendingFile: other });
    await a.anchor(await signedCheckpoint(origin, 3));
    assert.match(a.stats().pendingFileIgnored ?? '', /other\.json was not taken: it records submitter 0x[0-9a-fA-F]{40} on chain \d+, contract 0x[0-9a-fA-F]{40}, not this anchor's/);
    assert.equal(a.status().state, 'WARN');
    assert.equal(evmAnchor().status().state, 'OK', 'an anchor without a pending file');
    const torn = join(dir, 'torn.json');
    await writeFile(torn, '{"version":1,"chain');
    const b = evmAnchor({ pendingFile: torn });
    await b.open();
    assert.equal(b.status().state, 'WARN', 'from start, before any anchor');
    assert.match(b.status().message ?? '', /torn\.json was not taken: not JSON .*; a transaction it recorded, if still in the pool, holds its nonce/);
    await b.anchor(await signedCheckpoint(origin, 4));
    assert.match(b.stats().pendingFileIgnored ?? '', /torn\.json was not taken: not JSON/);
    assert.equal((JSON.parse(await readFile(torn, 'utf8')) as { pending: unknown }).pending, null, 'rewritten whole after the anchor');
    const provider = new JsonRpcProvider(chain.url, chain.chainId, { staticNetwork: true });
    try {
      const nonceBefore = await provider.getTransactionCount(chain.accounts[0]!.address, 'pending');
      const c = evmAnchor({ pendingFile: join(dir, 'no-such-directory', 'pending.json') });
      await failsWith(c.anchor(await signedCheckpoint(origin, 5)), ErrorCodes.AUDIT_ANCHOR_FAILED, { treeSize: 5 }, /cannot record the transaction before sending it in .*no-such-directory.*ENOENT/);
      assert.equal(await provider.getTransactionCount(chain.accounts[0]!.address, 'pending'), nonceBefore, 'no transaction went out');
      assert.equal(c.stats().unconfirmedNonce, undefined);
    } finally {
      provider.destroy();
    }
  });

  it('waits for the configured confirmations; a verifier wanting more refuses', async () => {
    const anchor = evmAnchor({ confirmations: 3 });
    const origin = 'pavilion-test/confirmations';
    const checkpoint = await signedCheckpoint(origin, 7);
    let mined = 0;
    const miner = setInterval(() => {
      void chain.rpc('evm_mine').then(() => mined++);
    }, 30);
    let reference: Readonly<Record<string, unknown>>;
    try {
      reference = await anchor.anchor(checkpoint);
    } finally {
      clearInterval(miner);
    }
    const head = Number(BigInt((await chain.rpc('eth_blockNumber')) as string));
    assert.ok(head - (reference['block_number'] as number) + 1 >= 3, `head ${head}, anchored in ${String(reference['block_number'])}`);
    assert.ok(mined >= 2);
    const record: AnchorRecordV1 = { version: 1, kind: 'evm', tree_size: 7, root_hash: checkpoint.root_hash, reference };
    await chainVerifier({ confirmations: 3 }).verify(record, checkpoint);
    await failsWith(chainVerifier({ confirmations: 1000 }).verify(record, checkpoint), ErrorCodes.AUDIT_ANCHOR_MISMATCH, {}, /fewer than 1000/);
    // The record bound to another checkpoint (same size and root, another signature) is refused.
    const other = await signedCheckpoint(origin, 7);
    await failsWith(chainVerifier().verify(record, other), ErrorCodes.AUDIT_ANCHOR_MISMATCH, {}, /signature hash/);
  });

  it('a reorg after the anchor was recorded: the same transaction mined again in another block still verifies; dropped from the chain, it is refused, naming the reorg when the contract holds the values', async () => {
    const origin = 'pavilion-test/reorg';
    const checkpoint = await signedCheckpoint(origin, 9);
    const before = (await chain.rpc('evm_snapshot')) as string;
    const reference = await evmAnchor().anchor(checkpoint);
    const record: AnchorRecordV1 = { version: 1, kind: 'evm', tree_size: 9, root_hash: checkpoint.root_hash, reference };
    await chainVerifier().verify(record, checkpoint);
    const provider = new JsonRpcProvider(chain.url, chain.chainId, { staticNetwork: true });
    try {
      const txHash = reference['tx_hash'] as string;
      const sent = await provider.getTransaction(txHash);
      assert.ok(sent !== null);
      const raw = Transaction.from(sent).serialized;
      // the blocks since the snapshot are gone, and the transaction with them
      assert.equal(await chain.rpc('evm_revert', [before]), true);
      const beforeAgain = (await chain.rpc('evm_snapshot')) as string; // a snapshot is reverted to once
      await failsWith(chainVerifier().verify(record, checkpoint), ErrorCodes.AUDIT_ANCHOR_MISMATCH, {}, /is not on chain \d+$/);
      // mined again (the same signed bytes, the same hash), a block later than before
      await chain.rpc('evm_mine');
      await chain.rpc('eth_sendRawTransaction', [raw]);
      const moved = await provider.getTransactionReceipt(txHash);
      assert.ok(moved !== null && moved.blockNumber !== reference['block_number'], `mined in block ${String(moved?.blockNumber)}, recorded in ${String(reference['block_number'])}`);
      await chainVerifier().verify(record, checkpoint);
      // dropped again, and the same values anchored by another transaction: still refused (the named one proves nothing), saying so
      assert.equal(await chain.rpc('evm_revert', [beforeAgain]), true);
      await chain.rpc('evm_mine');
      await evmAnchor().anchor(checkpoint);
      await failsWith(chainVerifier().verify(record, checkpoint), ErrorCodes.AUDIT_ANCHOR_MISMATCH, {}, /is not on chain \d+; the contract holds this root and signature hash .* from another transaction \(a reorg may have dropped this one\)/);
    } finally {
      provider.destroy();
    }
  });

  it('a transaction gone from the chain while the contract cannot be asked: still ERR_AUDIT_ANCHOR_MISMATCH, without the reorg note (a note is never guessed)', async () => {
    const origin = 'pavilion-test/gone-no-contract';
    const checkpoint = await signedCheckpoint(origin, 4);
    const reference = await evmAnchor().anchor(checkpoint);
    const record: AnchorRecordV1 = { version: 1, kind: 'evm', tree_size: 4, root_hash: checkpoint.root_hash, reference };
    // a node that has lost the transaction and fails every eth_call
    const server = createServer((request: IncomingMessage, response: ServerResponse) => {
      void (async () => {
        const chunks: Buffer[] = [];
        for await (const chunk of request) chunks.push(chunk as Buffer);
        const body = Buffer.concat(chunks).toString('utf8');
        const parsed = JSON.parse(body) as { id?: unknown; method?: string };
        const reply = (payload: Record<string, unknown>): void => void response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: parsed.id, ...payload }));
        if (parsed.method === 'eth_getTransactionReceipt') return reply({ result: null });
        if (parsed.method === 'eth_call') return reply({ error: { code: -32000, message: 'state unavailable' } });
        response.writeHead(200, { 'content-type': 'application/json' }).end(await fetch(chain.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body }).then((r) => r.text()));
      })().catch(() => response.writeHead(500).end());
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const verifier = new EvmAnchorVerifier({ rpcUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, chainId: chain.chainId, contract, pollingIntervalMs: 10 });
    try {
      await failsWith(verifier.verify(record, checkpoint), ErrorCodes.AUDIT_ANCHOR_MISMATCH, { treeSize: 4 }, /is not on chain \d+$/);
    } finally {
      verifier.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('the chain goes away mid-run: decisions continue, the anchor is retried and lands when it returns', async () => {
    const anchor = evmAnchor({ submitTimeoutMs: 20_000 });
    const dir = await tempDir();
    const log = await openLog(dir, signer, { origin: 'pavilion-test/outage', anchor, checkpointEveryEvents: 5 });
    for (let i = 0; i < 5; i++) await log.append(decisionEvent(i));
    await until('the first anchor', () => log.anchors.length === 1);
    await chain.pause();
    try {
      const started = Date.now();
      for (let i = 5; i < 10; i++) await log.append(decisionEvent(i));
      assert.ok(Date.now() - started < 1000, 'decisions are not held up by the anchor');
      assert.equal(log.latestCheckpoint?.tree_size, 10);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(log.anchors.length, 1, 'nothing anchored while the chain is away');
    } finally {
      await chain.resume();
    }
    await until('the retried anchor', () => log.anchors.at(-1)?.tree_size === 10);
    assert.equal(log.status().state, 'OK', JSON.stringify(log.status()));
    await log.stop(5000);
    const result = await verifyLogFile(walPath(dir), ring, { origin: 'pavilion-test/outage', anchorVerifiers: [chainVerifier()] });
    assert.equal(result.anchorsVerified, result.anchors);
  });

  it('away longer than submitTimeoutMs: WARN with ERR_AUDIT_ANCHOR_FAILED text, cleared by the next anchor; verification says the chain could not be asked', async () => {
    const anchor = evmAnchor({ submitTimeoutMs: 1000, receiptTimeoutMs: 500 });
    const dir = await tempDir();
    const log = await openLog(dir, signer, { origin: 'pavilion-test/long-outage', anchor, checkpointEveryEvents: 5 });
    await chain.pause();
    try {
      for (let i = 0; i < 5; i++) await log.append(decisionEvent(i));
      await until('the anchor to give up', () => /anchoring the checkpoint at tree size 5 failed/.test(log.status().message ?? ''), 5000);
      assert.equal(log.status().state, 'WARN');
      await failsWith(chainVerifier().verify({ version: 1, kind: 'evm', tree_size: 1, root_hash: 'ab'.repeat(32), reference: { chain_id: chain.chainId, contract, tx_hash: `0x${'11'.repeat(32)}`, block_number: 1, log_id: 'ab'.repeat(32), checkpoint_sig_sha256: 'ab'.repeat(32) } }), ErrorCodes.AUDIT_ANCHOR_FAILED);
    } finally {
      await chain.resume();
    }
    for (let i = 5; i < 10; i++) await log.append(decisionEvent(i));
    await until('the next anchor', () => log.anchors.at(-1)?.tree_size === 10);
    assert.equal(log.status().state, 'OK', 'an anchor that lands clears the warning');
    await log.stop(5000);
  });

  it('an endpoint of another chain id is refused (ERR_AUDIT_ANCHOR_CONFIG), and so is a malformed reference', async () => {
    await failsWith(evmAnchor({ chainId: 1 }).anchor(await signedCheckpoint('pavilion-test/chain', 1)), ErrorCodes.AUDIT_ANCHOR_CONFIG, {}, /is chain 31337, the config says 1/);
    await failsWith(chainVerifier().verify({ version: 1, kind: 'evm', tree_size: 1, root_hash: 'ab'.repeat(32), reference: { chain_id: chain.chainId, contract, tx_hash: 'nope' } }), ErrorCodes.AUDIT_ANCHOR_MISMATCH, { field: 'tx_hash' });
  });
});

describe("the sidecar with decisionLog.audit.anchor kind 'evm'", () => {
  it('anchors its checkpoints to the contract with the key from its key file; the log verifies against the chain', async () => {
    const auditDir = await tempDir();
    const keyFile = join(auditDir, 'anchor.key');
    await writeFile(keyFile, chain.accounts[0]!.privateKey, { mode: 0o600 });
    const app = await startPavilion({
      config: {
        decisionLog: {
          sink: 'audit',
          audit: {
            directory: auditDir, checkpointEveryEvents: 2,
            anchor: { kind: 'evm', rpcUrl: chain.url, chainId: chain.chainId, contract, privateKeyFile: keyFile, confirmations: 1, pollingIntervalMs: 10 },
          },
        },
      },
    });
    try {
      for (let i = 0; i < 4; i++) {
        const response = await post(`${app.url}/v1/data/bank/authz/allow`, { input: { subject: { id: `c${i}` } } }, { 'x-pavilion-tenant': 'bank' });
        assert.equal(response.status, 200);
      }
    } finally {
      await app.stop();
    }
    const verifier = new EvmAnchorVerifier({ rpcUrl: chain.url, chainId: chain.chainId, contract });
    try {
      const log = await verifyLogFile(join(auditDir, 'tenants', 'bank', 'audit.wal'), Keyring.load(join(auditDir, 'keys')), { origin: `${app.pavilion.config.labels.id}/bank`, anchorVerifiers: [verifier] });
      assert.equal(log.anchoredSize, 4, 'the final checkpoint was anchored on the chain before stop');
      assert.equal(log.anchorsVerified, log.anchors);
    } finally {
      verifier.close();
    }
  });
});
