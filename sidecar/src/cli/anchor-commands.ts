/**
 * `pavilion audit anchor ...`: set up the PavilionAnchor contract, and the options that let
 * `pavilion audit verify-log` / `verify` check anchors with their outside systems.
 *
 *   pavilion audit anchor deploy --rpc <url> --chain-id <n> --key-file <f> [--confirmations N]
 *   pavilion audit anchor allow  --rpc <url> --chain-id <n> --key-file <f> --contract <addr> --submitter <addr> [--revoke]
 *
 * The key file holds the deployer's (owner's) secret key as hex; it is never a flag.
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { FileAnchorVerifier } from '../audit/index.ts';
import { EvmAnchorVerifier, deployAnchorContract, parseEvmPrivateKey, setAnchorSubmitter } from '../audit/anchor/index.ts';
import type { AnchorVerifier } from '../audit/index.ts';
import { ErrorCodes, PavilionError } from '../lib/errors.ts';

export const ANCHOR_USAGE = `  pavilion audit anchor deploy --rpc <url> --chain-id <n> --key-file <f> [--confirmations N]
  pavilion audit anchor allow  --rpc <url> --chain-id <n> --key-file <f> --contract <addr> --submitter <addr> [--revoke]
anchor checks for verify-log / verify (need --origin): --rpc <url> --chain-id <n> --contract <addr> [--confirmations N] [--from-block N] (evm), --anchor-file <path> (file)`;

/** The parseArgs options the verify commands add for anchors. */
export const ANCHOR_VERIFY_OPTIONS = {
  rpc: { type: 'string' },
  'chain-id': { type: 'string' },
  contract: { type: 'string' },
  confirmations: { type: 'string' },
  /** The contract's deployment block: where verify-log starts reading its Anchored events. */
  'from-block': { type: 'string' },
  'anchor-file': { type: 'string' },
} as const;

function positiveInt(text: string | undefined, flag: string, fallback?: number): number {
  if (text === undefined) {
    if (fallback !== undefined) return fallback;
    throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_CONFIG, `${flag} is required`);
  }
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 1) throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_CONFIG, `${flag} must be a positive integer`);
  return value;
}

/** Verifiers for the anchors the flags name: `--rpc` needs `--chain-id` and `--contract` (trust is never taken from the log). */
export function anchorVerifiersFrom(values: { rpc?: string | undefined; 'chain-id'?: string | undefined; contract?: string | undefined; confirmations?: string | undefined; 'from-block'?: string | undefined; 'anchor-file'?: string | undefined }): AnchorVerifier[] {
  const verifiers: AnchorVerifier[] = [];
  const fromBlock = values['from-block'] === undefined ? 0 : Number(values['from-block']);
  if (!Number.isSafeInteger(fromBlock) || fromBlock < 0) throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_CONFIG, '--from-block must be a non-negative integer');
  if (values.rpc !== undefined) {
    if (values.contract === undefined) throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_CONFIG, '--rpc needs --contract: the anchor contract you trust, obtained out of band');
    verifiers.push(new EvmAnchorVerifier({
      rpcUrl: values.rpc,
      chainId: positiveInt(values['chain-id'], '--chain-id'),
      contract: values.contract,
      confirmations: positiveInt(values.confirmations, '--confirmations', 1),
      fromBlock,
    }));
  }
  if (values['anchor-file'] !== undefined) verifiers.push(new FileAnchorVerifier({ path: values['anchor-file'] }));
  return verifiers;
}

export function closeVerifiers(verifiers: readonly AnchorVerifier[]): void {
  for (const verifier of verifiers) if (verifier instanceof EvmAnchorVerifier) verifier.close();
}

export async function anchorCommand(command: string | undefined, args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      rpc: { type: 'string' },
      'chain-id': { type: 'string' },
      'key-file': { type: 'string' },
      contract: { type: 'string' },
      submitter: { type: 'string' },
      revoke: { type: 'boolean', default: false },
      confirmations: { type: 'string' },
    },
  });
  if ((command !== 'deploy' && command !== 'allow') || values.rpc === undefined || values['key-file'] === undefined) return -2;
  const privateKey = parseEvmPrivateKey(await readFile(values['key-file'], 'utf8'), `the key file ${values['key-file']}`);
  const connection = { rpcUrl: values.rpc, chainId: positiveInt(values['chain-id'], '--chain-id'), privateKey, pollingIntervalMs: 200 };
  if (command === 'deploy') {
    const deployed = await deployAnchorContract({ ...connection, confirmations: positiveInt(values.confirmations, '--confirmations', 1) });
    process.stdout.write(`${JSON.stringify({ ok: true, chain_id: connection.chainId, contract: deployed.address, tx_hash: deployed.txHash, block_number: deployed.blockNumber, gas_used: deployed.gasUsed, owner: deployed.owner }, null, 2)}\n`);
    return 0;
  }
  if (values.contract === undefined || values.submitter === undefined) return -2;
  const txHash = await setAnchorSubmitter({ ...connection, contract: values.contract, submitter: values.submitter, allowed: !values.revoke });
  process.stdout.write(`${JSON.stringify({ ok: true, submitter: values.submitter, allowed: !values.revoke, tx_hash: txHash }, null, 2)}\n`);
  return 0;
}
