/**
 * `pavilion audit anchor deploy|allow` and `verify-log` / `verify --decision` with `--rpc`,
 * end to end in child processes against the local chain of the shared harness.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { RecordType, SoftwareSigner, publicKeyPem, type AnchorRecordV1 } from '../sidecar/src/audit/log/index.ts';
import { EvmAnchor, deployAnchorContract } from '../sidecar/src/audit/anchor/index.ts';
import { anchorVerifiersFrom } from '../sidecar/src/cli/anchor-commands.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { startEvmChain, type RunningEvmChain } from './harness/evm-chain.ts';
import { decisionEvent, openLog, readRecords, tempDir, walPath } from './audit/fixtures.ts';
import { proveFromLogFile } from '../sidecar/src/audit/index.ts';

let chain: RunningEvmChain;
let contract: string;
const signer = SoftwareSigner.generate();

before(async () => {
  chain = await startEvmChain();
  contract = (await deployAnchorContract({ rpcUrl: chain.url, chainId: chain.chainId, privateKey: chain.accounts[0]!.privateKey, pollingIntervalMs: 10 })).address;
});

after(async () => {
  await chain.stop();
});

/** A log of 12 decisions, checkpoints every 5, anchored to `address` by `privateKey`; stopped. */
async function anchoredLog(address: string, privateKey: string, origin: string): Promise<string> {
  const anchor = new EvmAnchor({ rpcUrl: chain.url, chainId: chain.chainId, contract: address, privateKey, pollingIntervalMs: 10, receiptTimeoutMs: 2000, submitTimeoutMs: 10_000 });
  const dir = await tempDir();
  try {
    const log = await openLog(dir, signer, { origin, anchor, checkpointEveryEvents: 5 });
    for (let i = 0; i < 12; i++) await log.append(decisionEvent(i));
    await log.stop(10_000);
  } finally {
    anchor.close();
  }
  return dir;
}

async function anchorRecords(dir: string): Promise<Array<{ at: number; record: AnchorRecordV1 }>> {
  const { records } = await readRecords(dir);
  return records.flatMap((r, at) => (r.type === RecordType.ANCHOR ? [{ at, record: JSON.parse(r.payload.toString('utf8')) as AnchorRecordV1 }] : []));
}

const CLI = join(import.meta.dirname, '..', 'sidecar', 'src', 'cli', 'main.ts');

/** The CLI in a child process (asynchronously: the chain is served from this process). */
async function pavilion(...args: string[]): Promise<{ status: number; json: Record<string, unknown>; stderr: string }> {
  const run = await promisify(execFile)(process.execPath, ['--import', 'tsx', CLI, 'audit', ...args], { encoding: 'utf8' }).then(
    (r) => ({ status: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code?: number; stdout?: string; stderr?: string }) => ({ status: e.code ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' }),
  );
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(run.stdout) as Record<string, unknown>;
  } catch {
    // usage errors print nothing on stdout
  }
  return { status: run.status, json, stderr: run.stderr };
}

describe('pavilion audit anchor / verify --rpc', () => {
  it('deploys the contract, authorises a submitter, and checks a log and a decision against the chain', async () => {
    const dir = await tempDir();
    const ownerKey = join(dir, 'owner.key');
    await writeFile(ownerKey, `${chain.accounts[2]!.privateKey}\n`, { mode: 0o600 });
    const keys = join(dir, 'trusted.pem');
    await writeFile(keys, publicKeyPem(signer.publicKeySpki));
    const rpc = ['--rpc', chain.url, '--chain-id', String(chain.chainId)];

    const deployed = await pavilion('anchor', 'deploy', ...rpc, '--key-file', ownerKey);
    assert.equal(deployed.status, 0, deployed.stderr);
    const address = String(deployed.json['contract']);
    assert.match(address, /^0x[0-9a-fA-F]{40}$/);
    assert.equal(deployed.json['owner'], chain.accounts[2]!.address);
    const allowed = await pavilion('anchor', 'allow', ...rpc, '--key-file', ownerKey, '--contract', address, '--submitter', chain.accounts[1]!.address);
    assert.equal(allowed.status, 0, allowed.stderr);

    const logDir = await anchoredLog(address, chain.accounts[1]!.privateKey, 'pavilion-test/cli');
    // A proof with no anchor, for the refusal below.
    const plain = await tempDir();
    const unanchored = await openLog(plain, signer, { origin: 'pavilion-test/plain', checkpointEveryEvents: 2 });
    for (let i = 0; i < 2; i++) await unanchored.append(decisionEvent(i));
    await unanchored.stop(5000);
    const proofFile = join(plain, 'proof.json');
    await writeFile(proofFile, JSON.stringify(await proveFromLogFile(walPath(plain), 'decision-000001')));
    const first = (await anchorRecords(logDir))[0]!;

    // Independent runs, in parallel to keep the file short.
    const [offline, online, decision, missing, wrong] = await Promise.all([
      pavilion('verify-log', '--log', logDir, '--keys', keys),
      pavilion('verify-log', '--log', logDir, '--keys', keys, '--origin', 'pavilion-test/cli', ...rpc, '--contract', address),
      pavilion('verify', '--decision', 'decision-000002', '--log', logDir, '--keys', keys, '--origin', 'pavilion-test/cli', ...rpc, '--contract', address),
      pavilion('verify', '--decision', 'decision-000001', '--proof', proofFile, '--keys', keys, '--origin', 'pavilion-test/plain', ...rpc, '--contract', address),
      // Trusting another contract (the one deployed in before()).
      pavilion('verify-log', '--log', logDir, '--keys', keys, '--origin', 'pavilion-test/cli', ...rpc, '--contract', contract),
    ]);
    assert.equal(offline.status, 0, offline.stderr);
    assert.equal(offline.json['anchorsVerified'], 0);
    assert.match(offline.stderr, /the chain \(or anchor file\) was not consulted/);

    assert.equal(online.status, 0, online.stderr);
    assert.ok((online.json['anchorsVerified'] as number) >= 2);
    assert.equal(online.json['anchorsVerified'], online.json['anchors']);

    assert.equal(decision.status, 0, decision.stderr);
    assert.equal((decision.json['anchor'] as Record<string, unknown>)['verified'], true);

    // Asked to check the anchor of a proof that has none: refused, not passed unchecked.
    assert.equal(missing.status, 1);
    assert.equal(missing.json['code'], 'ERR_AUDIT_ANCHOR_MISMATCH');
    assert.match(String(missing.json['message']), /carries no anchor/);

    // The first anchor record is named.
    assert.equal(wrong.status, 1);
    assert.equal(wrong.json['code'], 'ERR_AUDIT_ANCHOR_MISMATCH');
    assert.equal((wrong.json['position'] as Record<string, unknown>)['recordNumber'], first.at);
    assert.throws(() => anchorVerifiersFrom({ rpc: chain.url, 'chain-id': String(chain.chainId) }), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_ANCHOR_CONFIG) && /--rpc needs --contract/.test(e.message), 'the contract to trust is never taken from the log');
  });
});
