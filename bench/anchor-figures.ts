/**
 * What anchoring a checkpoint on an EVM chain costs: gas per anchor (the first anchor of a
 * log creates its storage slots and costs more; later ones update them) and milliseconds per
 * anchor (send + receipt; and the whole call, with the chain id check, the simulation and the
 * confirmation). The audit benchmark calls `measureAnchor`; on its own:
 *
 *   npx tsx bench/anchor-figures.ts [anchors]
 *
 * Runs against the in-process local chain of the test harness (loopback, one block per
 * transaction), so the milliseconds are Pavilion's and the JSON-RPC round trips', not a
 * public chain's block time; the gas is the contract's and holds on any EVM chain.
 */
import { SoftwareSigner, checkpointMessage, CHECKPOINT_ALGORITHM, type SignedCheckpointV1 } from '../sidecar/src/audit/log/index.ts';
import { EvmAnchor, deployAnchorContract } from '../sidecar/src/audit/anchor/index.ts';
import { startEvmChain } from '../test/harness/evm-chain.ts';
import { percentile } from './lib/stats.ts';

export interface AnchorFigures {
  readonly anchors: number;
  /** Gas of the first anchor of a log (creates its slots). */
  readonly gas_first_anchor: number;
  /** Median gas of the later anchors of the same log. */
  readonly gas_per_anchor: number;
  /** Send + receipt, median and 95th percentile, milliseconds. */
  readonly anchor_ms_p50: number;
  readonly anchor_ms_p95: number;
  /** The whole anchor call (chain id, simulation, nonce, fees, send, receipt, confirmation), median. */
  readonly anchor_total_ms_p50: number;
  /** One anchor per minute per log, for a day (1,440 anchors at gas_per_anchor). */
  readonly gas_per_day_at_1_per_min: number;
  readonly contract_deploy_gas: number;
}

export async function measureAnchor(options: { readonly anchors?: number } = {}): Promise<AnchorFigures> {
  const count = Math.max(2, options.anchors ?? 50);
  const chain = await startEvmChain();
  const signer = SoftwareSigner.generate();
  try {
    const key = chain.accounts[0]!.privateKey;
    const deployed = await deployAnchorContract({ rpcUrl: chain.url, chainId: chain.chainId, privateKey: key, pollingIntervalMs: 10 });
    const anchor = new EvmAnchor({ rpcUrl: chain.url, chainId: chain.chainId, contract: deployed.address, privateKey: key, pollingIntervalMs: 10, confirmations: 1 });
    const gas: number[] = [];
    const receiptMs: number[] = [];
    const totalMs: number[] = [];
    try {
      for (let i = 1; i <= count; i++) {
        const body = { origin: 'pavilion-bench/tenant', tree_size: i * 1000, root_hash: Buffer.alloc(32, i % 256).toString('hex'), timestamp: new Date().toISOString(), key_id: signer.keyId };
        const checkpoint: SignedCheckpointV1 = { version: 1, algorithm: CHECKPOINT_ALGORITHM, ...body, signature: (await signer.sign(checkpointMessage(body))).toString('base64') };
        await anchor.anchor(checkpoint);
        const last = anchor.stats().last!;
        gas.push(last.gasUsed);
        receiptMs.push(last.receiptMs);
        totalMs.push(last.totalMs);
      }
    } finally {
      anchor.close();
    }
    const later = gas.slice(1);
    const perAnchor = percentile(later, 50);
    return {
      anchors: count,
      gas_first_anchor: gas[0]!,
      gas_per_anchor: perAnchor,
      anchor_ms_p50: percentile(receiptMs, 50),
      anchor_ms_p95: percentile(receiptMs, 95),
      anchor_total_ms_p50: percentile(totalMs, 50),
      gas_per_day_at_1_per_min: perAnchor * 1440,
      contract_deploy_gas: deployed.gasUsed,
    };
  } finally {
    await chain.stop();
  }
}

if (process.argv[1] !== undefined && import.meta.filename === process.argv[1]) {
  const anchors = process.argv[2] === undefined ? undefined : Number(process.argv[2]);
  process.stdout.write(`${JSON.stringify(await measureAnchor(anchors === undefined ? {} : { anchors }), null, 2)}\n`);
}
