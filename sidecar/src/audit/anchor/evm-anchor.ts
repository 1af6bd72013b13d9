/**
 * Anchoring to an EVM chain: each checkpoint the log hands over becomes one call of
 * `PavilionAnchor.anchor(logId, treeSize, root, checkpointSigHash)` (the log already
 * coalesces to the newest waiting checkpoint, so this is one transaction per checkpoint
 * interval, not per decision). `ethers` speaks JSON-RPC and signs; nothing here is crypto.
 *
 * Submission (one at a time per key, so nonces never race):
 *   1. the chain must answer with the configured chain id (a wrong endpoint fails, typed);
 *   2. the call is simulated first (`eth_estimateGas`): a revert - the tree size is not
 *      above the one already anchored for this log, or the key is not an authorised
 *      submitter - fails at once with ERR_AUDIT_ANCHOR_REVERTED and the contract's reason,
 *      spending no gas;
 *   3. the transaction is sent and its receipt awaited for `receiptTimeoutMs`; when none comes
 *      (dropped from the pool, or priced out), it is sent again with the same nonce and fees
 *      raised by `feeBumpPercent` (a replacement), up to `maxAttempts` times; a receipt of
 *      any of the sent versions counts;
 *   4. a mined revert is replayed on the state after its block: when the contract gives a
 *      reason (another anchor of the log got in first, ...) it is ERR_AUDIT_ANCHOR_REVERTED
 *      with that reason; when the call would now succeed (it ran out of gas, ...) a new
 *      transaction is sent once, with twice the gas. A success waits for `confirmations`
 *      blocks (and that the receipt is still there) before the anchor is reported.
 * While the endpoint is unreachable, each step is retried until `submitTimeoutMs` has
 * passed; then ERR_AUDIT_ANCHOR_FAILED. The log keeps deciding throughout (it anchors in the
 * background) and reports the failure as WARN until an anchor succeeds again.
 *
 * Verification (`EvmAnchorVerifier`, fail closed): the record's chain id and contract must
 * be the ones the verifier trusts; the transaction must be mined in the block the record
 * names, successful, sent to that contract, with enough confirmations, and carry an
 * `Anchored` event of that contract whose log id, tree size, root and signature hash are the
 * record's and its checkpoint's; and the contract must still hold that root at that tree size.
 * Any difference is ERR_AUDIT_ANCHOR_MISMATCH saying which; an unreachable chain is
 * ERR_AUDIT_ANCHOR_FAILED (not proof either way).
 *
 * The private key comes from a file or the environment (see evm-anchor-config), never from
 * the config text.
 */
import {
  ContractFactory,
  FetchRequest,
  Interface,
  JsonRpcProvider,
  Network,
  Transaction,
  Wallet,
  getAddress,
  isError,
  type Log,
  type LogDescription,
  type TransactionReceipt,
} from 'ethers';
import { readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { syncPath, writeFileDurably } from '../../lib/durable-file.ts';
import { ErrorCodes, PavilionError, describeThrown, isPavilionError } from '../../lib/errors.ts';
import type { ComponentStatus } from '../../lib/lifecycle.ts';
import type { Anchor, AnchorRecordV1, AnchorVerifier, SignedCheckpointV1 } from '../log/index.ts';
import { checkpointSignatureSha256, logIdOf } from './checkpoint-digests.ts';
import { PAVILION_ANCHOR_ARTIFACT } from './contract/pavilion-anchor-artifact.ts';

export const EVM_ANCHOR_KIND = 'evm';

/** Where an EVM anchor is, as the anchor record's `reference` holds it. */
export interface EvmAnchorReferenceV1 {
  readonly chain_id: number;
  /** Checksummed contract address. */
  readonly contract: string;
  readonly tx_hash: string;
  readonly block_number: number;
  /** SHA-256 of the log's origin, hex (the contract's bytes32 log id). */
  readonly log_id: string;
  /** SHA-256 of the checkpoint's signature, hex. */
  readonly checkpoint_sig_sha256: string;
}

export interface EvmConnectionOptions {
  /** JSON-RPC endpoint, http(s). */
  readonly rpcUrl: string;
  /** The chain the endpoint must be (checked on every submission and verification). */
  readonly chainId: number;
  /** Milliseconds one JSON-RPC request may take. Default 10 000. */
  readonly requestTimeoutMs?: number;
  /** How often receipts and blocks are polled. Default 1000; 10-50 on a local chain. */
  readonly pollingIntervalMs?: number;
}

export interface EvmAnchorOptions extends EvmConnectionOptions {
  /** The PavilionAnchor contract. */
  readonly contract: string;
  /** The submitter's secret key, 0x-prefixed hex (read from a file or the environment). */
  readonly privateKey: string;
  /** Blocks on top of (and including) the one with the transaction. Default 1. */
  readonly confirmations?: number;
  /** Wait this long for a receipt before resending with higher fees. Default 60 000. */
  readonly receiptTimeoutMs?: number;
  /** Give up on one checkpoint (including retries while the chain is away) after this. Default 300 000. */
  readonly submitTimeoutMs?: number;
  /** Sends of one transaction (the first and its replacements). Default 5. */
  readonly maxAttempts?: number;
  /** Fee increase per replacement, percent (nodes require at least 10). Default 20. */
  readonly feeBumpPercent?: number;
  /**
   * The most a transaction may offer per gas, in gwei (max fee; the priority fee stays within
   * it). Replacements compound their bumps, and a chain that takes transactions without
   * mining them for a while would otherwise see fees grow without bound. Default: none.
   */
  readonly maxFeePerGasGwei?: number;
  /** Gas limit of the first send. Default: the simulation's estimate plus 30%. */
  readonly gasLimit?: number;
  /**
   * Where the transaction sent without a receipt yet is recorded (nonce, fees, hashes), before
   * each send: a restarted process replaces it at its nonce instead of queueing behind it.
   * Default: none (kept in memory only).
   */
  readonly pendingFile?: string;
  /** Milliseconds since the epoch (injected for tests). */
  readonly clock?: () => number;
}

/** A transaction sent without a receipt yet: its nonce, its fees and every version's hash. */
interface Unconfirmed {
  readonly nonce: number;
  readonly maxFeePerGas: bigint;
  readonly maxPriorityFeePerGas: bigint;
  readonly txHashes: readonly string[];
}

/** `pendingFile`'s content: the unconfirmed transaction of this submitter on this chain and contract, or none. */
interface PendingFileV1 {
  readonly version: 1;
  readonly chain_id: number;
  readonly contract: string;
  readonly submitter: string;
  readonly pending: { readonly nonce: number; readonly max_fee_per_gas: string; readonly max_priority_fee_per_gas: string; readonly tx_hashes: readonly string[] } | null;
}

const WEI = /^(0|[1-9][0-9]{0,77})$/;

/** The unconfirmed transaction `text` records for this identity; a reason when it cannot be taken. */
function parsePendingFile(text: string, identity: Omit<PendingFileV1, 'version' | 'pending'>): Unconfirmed | undefined | string {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return `not JSON (${describeThrown(error)})`;
  }
  const file = value as Partial<PendingFileV1> | null;
  if (file === null || typeof file !== 'object' || file.version !== 1) return 'not a version 1 pending-transaction record';
  // another key, chain or contract: its transaction is not this submitter's to replace
  if (file.chain_id !== identity.chain_id || file.contract !== identity.contract || file.submitter !== identity.submitter) {
    return `it records submitter ${String(file.submitter)} on chain ${String(file.chain_id)}, contract ${String(file.contract)}, not this anchor's`;
  }
  const pending = file.pending;
  if (pending === null) return undefined;
  if (typeof pending !== 'object' || pending === undefined || !Number.isSafeInteger(pending.nonce) || pending.nonce < 0
    || typeof pending.max_fee_per_gas !== 'string' || !WEI.test(pending.max_fee_per_gas)
    || typeof pending.max_priority_fee_per_gas !== 'string' || !WEI.test(pending.max_priority_fee_per_gas)
    || !Array.isArray(pending.tx_hashes) || pending.tx_hashes.length === 0 || !pending.tx_hashes.every((h) => typeof h === 'string' && TX_HASH.test(h))) {
    return 'its pending transaction is malformed';
  }
  return { nonce: pending.nonce, maxFeePerGas: BigInt(pending.max_fee_per_gas), maxPriorityFeePerGas: BigInt(pending.max_priority_fee_per_gas), txHashes: [...pending.tx_hashes] };
}

/** What the last submission cost, for status and measurements. */
export interface EvmAnchorSubmission {
  readonly treeSize: number;
  readonly txHash: string;
  /** Every version sent (first, then replacements). */
  readonly sentTxHashes: readonly string[];
  readonly gasUsed: number;
  readonly blockNumber: number;
  /** From the first send to the receipt (milliseconds). */
  readonly receiptMs: number;
  /** From the call to the reported anchor, confirmations included. */
  readonly totalMs: number;
}

const ANCHOR_ABI = new Interface(PAVILION_ANCHOR_ARTIFACT.abi);
/** The topic of the contract's Anchored event (the artifact is fixed: it always has one). */
const ANCHORED_TOPIC = ANCHOR_ABI.getEvent('Anchored')?.topicHash;

/** The Anchored events among `logs` that `contract` emitted, decoded, each with its log. */
function anchoredEvents(logs: readonly Log[], contract: string): Array<{ readonly log: Log; readonly event: LogDescription }> {
  const out: Array<{ readonly log: Log; readonly event: LogDescription }> = [];
  for (const log of logs) {
    if (getAddress(log.address) !== contract) continue;
    const event = ANCHOR_ABI.parseLog({ topics: [...log.topics], data: log.data });
    if (event !== null && event.name === 'Anchored') out.push({ log, event });
  }
  return out;
}
const HEX32 = /^[0-9a-f]{64}$/;
const TX_HASH = /^0x[0-9a-f]{64}$/;
/** Versions of one stuck transaction recorded, at most (replacements across give-ups add up). */
const MAX_RECORDED_VERSIONS = 32;
const PRIVATE_KEY = /^0x[0-9a-fA-F]{64}$/;

function failed(message: string, cause?: unknown, details?: Record<string, unknown>): PavilionError {
  return new PavilionError(ErrorCodes.AUDIT_ANCHOR_FAILED, message, { ...(cause === undefined ? {} : { cause }), ...(details === undefined ? {} : { details }) });
}

function mismatch(message: string, details?: Record<string, unknown>): PavilionError {
  return new PavilionError(ErrorCodes.AUDIT_ANCHOR_MISMATCH, message, details === undefined ? {} : { details });
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A JSON-RPC provider tuned for one known chain: no network detection, no batching delay. */
export function evmProvider(options: EvmConnectionOptions): JsonRpcProvider {
  let url: URL;
  try {
    url = new URL(options.rpcUrl);
  } catch (error) {
    throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_CONFIG, `the anchor rpc URL ${JSON.stringify(options.rpcUrl)} is not a URL`, { cause: error });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_CONFIG, 'the anchor rpc URL must be http or https');
  const request = new FetchRequest(options.rpcUrl);
  request.timeout = options.requestTimeoutMs ?? 10_000;
  return new JsonRpcProvider(request, Network.from(options.chainId), {
    staticNetwork: true,
    // No response cache: a nonce read twice within its 250 ms default would be stale.
    cacheTimeout: -1,
    batchStallTime: 0,
    batchMaxCount: 1,
    pollingInterval: options.pollingIntervalMs ?? 1000,
  });
}

/** The endpoint must be the configured chain; ERR_AUDIT_ANCHOR_CONFIG names both. */
async function checkChainId(provider: JsonRpcProvider, expected: number, rpcUrl: string): Promise<void> {
  const answer = (await provider.send('eth_chainId', [])) as string;
  const actual = Number(BigInt(answer));
  if (actual !== expected) {
    throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_CONFIG, `the anchor endpoint ${rpcUrl} is chain ${actual}, the config says ${expected}`, { details: { chainId: actual, expected } });
  }
}

function checksummed(address: string, what: string): string {
  try {
    return getAddress(address);
  } catch (error) {
    throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_CONFIG, `${what} ${JSON.stringify(address)} is not an address`, { cause: error });
  }
}

/** The contract's revert reason from ethers' error (revert data), when it has one. */
function revertReason(error: unknown): string | undefined {
  // ethers puts revert data in `data`; nodes that answer with `{data: {data: "0x..."}}` leave
  // it in the raw JSON-RPC error.
  const raw = (error as { info?: { error?: { data?: unknown } } }).info?.error?.data;
  const data = (error as { data?: unknown }).data ?? (typeof raw === 'string' ? raw : (raw as { data?: unknown } | undefined)?.data);
  if (typeof data !== 'string' || data.length < 10) return undefined;
  try {
    const parsed = ANCHOR_ABI.parseError(data);
    if (parsed === null) return undefined;
    return `${parsed.name}(${parsed.args.map((a: unknown) => String(a)).join(', ')})`;
  } catch {
    return undefined;
  }
}

const NOT_RETRYABLE = ['CALL_EXCEPTION', 'INSUFFICIENT_FUNDS', 'INVALID_ARGUMENT', 'NONCE_EXPIRED', 'REPLACEMENT_UNDERPRICED', 'TRANSACTION_REPLACED', 'ACTION_REJECTED'] as const;

/** Errors worth retrying while `submitTimeoutMs` lasts: the endpoint away or failing, not our request being wrong. */
function retryable(error: unknown): boolean {
  if (isPavilionError(error)) return false;
  return !NOT_RETRYABLE.some((code) => isError(error, code));
}

/**
 * A send the node refuses because it already has this transaction ("already known" from geth,
 * "Known transaction" from Hardhat/EDR): an earlier send of it got through, its reply did not.
 */
function alreadyKnown(error: unknown): boolean {
  const message = `${(error as { message?: unknown }).message ?? ''} ${(error as { error?: { message?: unknown } }).error?.message ?? ''} ${JSON.stringify((error as { info?: unknown }).info ?? null)}`;
  return /already known|known transaction/i.test(message);
}

/** Read a submitter key: 0x-prefixed (or bare) 32-byte hex, surrounding whitespace ignored. */
export function parseEvmPrivateKey(text: string, from: string): string {
  const trimmed = text.trim();
  const key = trimmed.startsWith('0x') ? trimmed : `0x${trimmed}`;
  if (!PRIVATE_KEY.test(key)) throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_CONFIG, `${from} does not hold a 32-byte hex secret key`);
  return key;
}

export class EvmAnchor implements Anchor {
  readonly kind = EVM_ANCHOR_KIND;
  readonly #options: EvmAnchorOptions;
  readonly #provider: JsonRpcProvider;
  readonly #wallet: Wallet;
  readonly #contract: string;
  readonly #clock: () => number;
  #queue: Promise<unknown> = Promise.resolve();
  #last: EvmAnchorSubmission | undefined;
  #submissions = 0;
  #resubmissions = 0;
  /**
   * The nonce of the last transaction sent without a receipt (a submission that gave up: fee
   * spike, endpoint away), with its fees and hashes. It may still sit in the pool, so the next
   * submission replaces it (same nonce, higher fees; it anchors a newer checkpoint) instead of
   * queueing behind it.
   */
  #unconfirmed: Unconfirmed | undefined;
  /** Read from `pendingFile` before the first submission. */
  #loaded: Promise<void> | undefined;
  /** Why `pendingFile` was not taken at start, if it was not. */
  #pendingFileIgnored: string | undefined;

  constructor(options: EvmAnchorOptions) {
    const confirmations = options.confirmations ?? 1;
    if (!Number.isInteger(confirmations) || confirmations < 1) throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_CONFIG, 'confirmations must be an integer of at least 1');
    if ((options.feeBumpPercent ?? 20) < 10) throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_CONFIG, 'feeBumpPercent must be at least 10 (nodes refuse smaller replacements)');
    const cap = options.maxFeePerGasGwei;
    if (cap !== undefined && !(Number.isFinite(cap) && cap > 0)) throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_CONFIG, 'maxFeePerGasGwei must be a positive number');
    if (!PRIVATE_KEY.test(options.privateKey)) throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_CONFIG, 'the anchor private key must be 32 bytes of 0x-prefixed hex');
    this.#options = options;
    this.#contract = checksummed(options.contract, 'the anchor contract');
    this.#provider = evmProvider(options);
    this.#wallet = new Wallet(options.privateKey, this.#provider);
    this.#clock = options.clock ?? Date.now;
  }

  /** The submitter's address (authorise it with the contract owner's `setSubmitter`). */
  get address(): string {
    return this.#wallet.address;
  }

  get contract(): string {
    return this.#contract;
  }

  /**
   * The last successful submission, counts since start, the nonce of a transaction sent
   * without a receipt yet (replaced by the next submission), and why `pendingFile` was not
   * taken at start, if it was not.
   */
  stats(): { readonly last: EvmAnchorSubmission | undefined; readonly submissions: number; readonly resubmissions: number; readonly unconfirmedNonce: number | undefined; readonly pendingFileIgnored: string | undefined } {
    return { last: this.#last, submissions: this.#submissions, resubmissions: this.#resubmissions, unconfirmedNonce: this.#unconfirmed?.nonce, pendingFileIgnored: this.#pendingFileIgnored };
  }

  /**
   * WARN (until restart) when `pendingFile` could not be taken at start: a transaction it
   * recorded, if still in the pool, holds its nonce and the next submission queues behind it.
   */
  status(): ComponentStatus {
    const details = { submitter: this.#wallet.address, contract: this.#contract, unconfirmed_nonce: this.#unconfirmed?.nonce ?? null };
    if (this.#pendingFileIgnored === undefined) return { state: 'OK', details };
    return { state: 'WARN', message: `${this.#pendingFileIgnored}; a transaction it recorded, if still in the pool, holds its nonce`, details };
  }

  #identity(): Omit<PendingFileV1, 'version' | 'pending'> {
    return { chain_id: this.#options.chainId, contract: this.#contract, submitter: this.#wallet.address };
  }

  /** Read `pendingFile` now rather than at the first submission, so status() tells from start when it cannot be taken. */
  async open(): Promise<void> {
    await this.#loadPending();
  }

  /** The unconfirmed transaction an earlier process recorded (once, before the first submission). */
  #loadPending(): Promise<void> {
    this.#loaded ??= this.#readPending(); // once: open() and the first submission share the read
    return this.#loaded;
  }

  async #readPending(): Promise<void> {
    const file = this.#options.pendingFile;
    if (file === undefined) return;
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') this.#pendingFileIgnored = `cannot read ${file}: ${describeThrown(error)}`;
      return;
    }
    const parsed = parsePendingFile(text, this.#identity());
    if (typeof parsed === 'string') this.#pendingFileIgnored = `${file} was not taken: ${parsed}`;
    else this.#unconfirmed = parsed;
  }

  /** Record `#unconfirmed` in `pendingFile` (durably: before a send, a crash must not lose it). */
  async #savePending(): Promise<void> {
    const file = this.#options.pendingFile;
    if (file === undefined) return;
    const u = this.#unconfirmed;
    const record: PendingFileV1 = {
      version: 1,
      ...this.#identity(),
      pending: u === undefined ? null : { nonce: u.nonce, max_fee_per_gas: u.maxFeePerGas.toString(), max_priority_fee_per_gas: u.maxPriorityFeePerGas.toString(), tx_hashes: u.txHashes },
    };
    await writeFileDurably(file, `${JSON.stringify(record)}\n`);
    await syncPath(dirname(file));
  }

  anchor(checkpoint: SignedCheckpointV1): Promise<Readonly<Record<string, unknown>>> {
    const run = this.#queue.then(() => this.#submit(checkpoint));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /** Stop polling (the provider's timers). Submissions in flight fail. */
  close(): void {
    this.#provider.destroy();
  }

  async #submit(checkpoint: SignedCheckpointV1): Promise<Readonly<Record<string, unknown>>> {
    await this.#loadPending();
    try {
      return await this.#send(checkpoint);
    } finally {
      // What is left unconfirmed for the next submission (or a restart). A stale record is
      // harmless (a nonce found mined is forgotten), so a failure here fails nothing.
      await this.#savePending().catch(() => undefined);
    }
  }

  async #send(checkpoint: SignedCheckpointV1): Promise<Readonly<Record<string, unknown>>> {
    const started = this.#clock();
    const deadline = started + (this.#options.submitTimeoutMs ?? 300_000);
    const poll = this.#options.pollingIntervalMs ?? 1000;
    const logId = logIdOf(checkpoint.origin);
    const sigHash = checkpointSignatureSha256(checkpoint);
    const data = ANCHOR_ABI.encodeFunctionData('anchor', [`0x${logId}`, checkpoint.tree_size, `0x${checkpoint.root_hash}`, `0x${sigHash}`]);
    const where = { treeSize: checkpoint.tree_size, origin: checkpoint.origin };

    /** Run one step, retrying while the endpoint is away and time is left. */
    const step = async <T>(what: string, run: () => Promise<T>): Promise<T> => {
      for (;;) {
        try {
          return await run();
        } catch (error) {
          if (!retryable(error) || this.#clock() + poll >= deadline) {
            if (isPavilionError(error)) throw error;
            throw failed(`anchoring tree size ${checkpoint.tree_size} on chain ${this.#options.chainId}: ${what} failed: ${describeThrown(error)}`, error, where);
          }
          await sleep(Math.min(poll * 10, 1000));
        }
      }
    };

    await step('checking the chain id', () => checkChainId(this.#provider, this.#options.chainId, this.#options.rpcUrl));
    const estimate = await step('simulating the call', async () => {
      try {
        return await this.#provider.estimateGas({ from: this.#wallet.address, to: this.#contract, data });
      } catch (error) {
        if (isError(error, 'CALL_EXCEPTION')) {
          // Some nodes leave the revert data out of eth_estimateGas errors; eth_call has it.
          const replayed = revertReason(error) ?? await this.#provider.call({ from: this.#wallet.address, to: this.#contract, data }).then(() => undefined, (e: unknown) => revertReason(e));
          const reason = replayed ?? error.shortMessage;
          throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_REVERTED, `the anchor contract ${this.#contract} refuses tree size ${checkpoint.tree_size} of ${checkpoint.origin}: ${reason}`, { cause: error, details: { ...where, reason } });
        }
        throw error;
      }
    });
    let gasLimit = this.#options.gasLimit === undefined ? (estimate * 13n) / 10n : BigInt(this.#options.gasLimit);
    let nonce = await step('reading the nonce', () => this.#provider.getTransactionCount(this.#wallet.address, 'pending'));
    const fees = await step('reading fees', () => this.#provider.getFeeData());
    let maxPriorityFeePerGas = fees.maxPriorityFeePerGas ?? 1_000_000_000n;
    let maxFeePerGas = fees.maxFeePerGas ?? (fees.gasPrice ?? 1_000_000_000n) * 2n;
    const bump = BigInt(100 + (this.#options.feeBumpPercent ?? 20));
    const bumped = (fee: bigint): bigint => (fee * bump) / 100n + 1n;
    const capWei = this.#options.maxFeePerGasGwei === undefined ? undefined : BigInt(Math.round(this.#options.maxFeePerGasGwei * 1e9));
    /** What may be offered: within the ceiling (a send at the ceiling again is the same transaction, or refused as underpriced: the receipts decide). */
    const withinCap = (): void => {
      if (capWei === undefined) return;
      if (maxFeePerGas > capWei) maxFeePerGas = capWei;
      if (maxPriorityFeePerGas > maxFeePerGas) maxPriorityFeePerGas = maxFeePerGas;
    };
    // A transaction of an earlier submission that never got a receipt holds its nonce while it
    // is not mined: 'pending' would put this one behind it (or refuse it as an underpriced
    // replacement). Replace it instead, with fees above its own.
    const stuck = this.#unconfirmed;
    /** The stuck transaction's hashes while this submission replaces it at its nonce. */
    let replacing: readonly string[] = [];
    if (stuck !== undefined) {
      const mined = await step('reading the nonce', () => this.#provider.getTransactionCount(this.#wallet.address, 'latest'));
      if (mined <= stuck.nonce) {
        nonce = stuck.nonce;
        replacing = stuck.txHashes;
        const priorityFloor = bumped(stuck.maxPriorityFeePerGas);
        const feeFloor = bumped(stuck.maxFeePerGas);
        if (maxPriorityFeePerGas < priorityFloor) maxPriorityFeePerGas = priorityFloor;
        if (maxFeePerGas < feeFloor) maxFeePerGas = feeFloor;
        if (maxPriorityFeePerGas > maxFeePerGas) maxFeePerGas = maxPriorityFeePerGas;
      } else {
        this.#unconfirmed = undefined;
      }
    }
    withinCap();

    let sent: string[] = [];
    const everySent: string[] = [];
    /** The last version sent never went out, or the nonce it used went to another sender. */
    const unsend = (): void => {
      sent.pop();
      everySent.pop();
    };
    /** The nonce went elsewhere: send the next version at a fresh one, replacing nothing. */
    const freshNonce = async (): Promise<void> => {
      nonce = await step('reading the nonce', () => this.#provider.getTransactionCount(this.#wallet.address, 'pending'));
      sent = [];
      replacing = [];
    };
    let revertedOnce = false;
    let firstSent = 0;
    const attempts = this.#options.maxAttempts ?? 5;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      if (attempt > 1) {
        this.#resubmissions++;
        maxPriorityFeePerGas = bumped(maxPriorityFeePerGas);
        maxFeePerGas = bumped(maxFeePerGas);
        const now = await this.#provider.getFeeData().catch(() => undefined);
        if (now?.maxFeePerGas != null && now.maxFeePerGas > maxFeePerGas) maxFeePerGas = now.maxFeePerGas;
        if (maxPriorityFeePerGas > maxFeePerGas) maxFeePerGas = maxPriorityFeePerGas;
        withinCap();
      }
      const signed = await this.#wallet.signTransaction({
        type: 2, chainId: this.#options.chainId, nonce, to: this.#contract, data, gasLimit, maxFeePerGas, maxPriorityFeePerGas,
      });
      // The hash is the signed transaction's own (computed here, not taken from the node's
      // reply) and recorded as sent before it is sent: a send whose reply is lost (a timeout)
      // may still have reached the node, and its receipt is then looked for like any other.
      const hash = Transaction.from(signed).hash!.toLowerCase();
      if (firstSent === 0) firstSent = this.#clock();
      sent.push(hash);
      everySent.push(hash);
      const previous = this.#unconfirmed;
      // every version at this nonce, the stuck one's it replaces included: any of them may be
      // mined (the newest MAX_RECORDED_VERSIONS: a pool keeps only the dearest of them anyway)
      this.#unconfirmed = { nonce, maxFeePerGas, maxPriorityFeePerGas, txHashes: [...new Set([...replacing, ...sent])].slice(-MAX_RECORDED_VERSIONS) };
      try {
        await this.#savePending();
      } catch (error) {
        // never a transaction out that a restart would not know of
        unsend();
        this.#unconfirmed = previous;
        throw failed(`anchoring tree size ${checkpoint.tree_size}: cannot record the transaction before sending it in ${this.#options.pendingFile}: ${describeThrown(error)}`, error, where);
      }
      let nonceUsed = false;
      try {
        await step('sending the transaction', async () => {
          try {
            await this.#provider.send('eth_sendRawTransaction', [signed]);
          } catch (error) {
            // Refusals that mean "a version of ours may be there already": the nonce mined
            // (nonce too low), this very transaction in the pool (already known), an earlier
            // version pending (replacement underpriced). The receipts tell; never a new nonce.
            if (isError(error, 'NONCE_EXPIRED')) nonceUsed = true;
            else if (!isError(error, 'REPLACEMENT_UNDERPRICED') && !alreadyKnown(error)) throw error;
          }
        });
      } catch (error) {
        const cause = isPavilionError(error) ? error.cause : error;
        const refused = cause !== undefined && !retryable(cause);
        if (refused) {
          // Refused for good (insufficient funds, ...): this version never went out.
          unsend();
          this.#unconfirmed = previous;
        }
        if (sent.length === 0 || !refused) {
          throw isPavilionError(error) ? error : failed(`anchoring tree size ${checkpoint.tree_size}: sending failed: ${describeThrown(error)}`, error, where);
        }
        // an earlier version is out: fall through to the receipts
      }
      if (nonceUsed) {
        // The nonce is mined. By one of ours (a send that timed out but got through)? Its
        // receipt is there. If not, another sender with this key (or an earlier submission's
        // transaction) took it: start over with a fresh nonce.
        let ours: TransactionReceipt | null = null;
        for (const h of sent) {
          ours = await step('reading a receipt', () => this.#provider.getTransactionReceipt(h));
          if (ours !== null) break;
        }
        if (ours === null) {
          unsend();
          if (sent.length === 0) {
            this.#unconfirmed = previous?.nonce === nonce ? undefined : previous;
            if (attempt >= attempts) throw failed(`anchoring tree size ${checkpoint.tree_size}: nonce ${nonce} was used by a transaction this submission did not send`, undefined, where);
            await freshNonce();
            continue;
          }
        }
      }
      const receipt = await this.#awaitReceipt(sent, nonce, this.#clock() + (this.#options.receiptTimeoutMs ?? 60_000), deadline, where, replacing);
      if (receipt === undefined) continue;
      if (receipt === 'replaced-earlier') {
        // the stuck transaction this one replaced was mined instead: its nonce is spent
        this.#unconfirmed = undefined;
        await freshNonce();
        continue;
      }
      // The nonce is spent (mined, reverted or not).
      this.#unconfirmed = undefined;
      const receiptMs = this.#clock() - firstSent;
      if (receipt.status !== 1) {
        // Replayed on the state after that block: what made it revert got there first.
        const replay = await this.#provider.call({ from: this.#wallet.address, to: this.#contract, data, blockTag: receipt.blockNumber }).then(
          () => ({ succeeds: true, reason: undefined }),
          (error: unknown) => ({ succeeds: false, reason: revertReason(error) }),
        );
        // The contract has no objection now (out of gas, a transient condition): send a new
        // transaction, once, with twice the gas. A reason from the contract is final.
        if (replay.succeeds && !revertedOnce && attempt < attempts) {
          revertedOnce = true;
          gasLimit = ((estimate * 13n) / 10n > gasLimit ? (estimate * 13n) / 10n : gasLimit) * 2n;
          await freshNonce();
          continue;
        }
        const reason = replay.reason;
        throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_REVERTED, `the anchor transaction ${receipt.hash} for tree size ${checkpoint.tree_size} of ${checkpoint.origin} reverted in block ${receipt.blockNumber}${reason === undefined ? '' : `: ${reason}`}`, {
          details: { ...where, txHash: receipt.hash, blockNumber: receipt.blockNumber, ...(reason === undefined ? {} : { reason }) },
        });
      }
      await this.#awaitConfirmations(receipt, deadline, where);
      this.#submissions++;
      this.#last = {
        treeSize: checkpoint.tree_size, txHash: receipt.hash, sentTxHashes: everySent, gasUsed: Number(receipt.gasUsed),
        blockNumber: receipt.blockNumber, receiptMs, totalMs: this.#clock() - started,
      };
      const reference: EvmAnchorReferenceV1 = {
        chain_id: this.#options.chainId,
        contract: this.#contract,
        tx_hash: receipt.hash.toLowerCase(),
        block_number: receipt.blockNumber,
        log_id: logId,
        checkpoint_sig_sha256: sigHash,
      };
      return reference as unknown as Readonly<Record<string, unknown>>;
    }
    throw failed(`anchoring tree size ${checkpoint.tree_size} of ${checkpoint.origin}: no receipt after ${attempts} sends (${everySent.join(', ')})`, undefined, { ...where, txHashes: everySent });
  }

  /** A receipt of any version sent, or undefined when `until` passes first. */
  /**
   * The receipt of one of `sent`; undefined past `until` (send again), or 'replaced-earlier'
   * when the nonce went to `earlier` (the stuck transaction of an earlier submission that this
   * one was replacing got mined after all: send again at a fresh nonce).
   */
  async #awaitReceipt(sent: readonly string[], nonce: number, until: number, deadline: number, where: Record<string, unknown>, earlier: readonly string[] = []): Promise<TransactionReceipt | 'replaced-earlier' | undefined> {
    const poll = this.#options.pollingIntervalMs ?? 1000;
    while (this.#clock() < Math.min(until, deadline)) {
      try {
        for (const hash of sent) {
          const receipt = await this.#provider.getTransactionReceipt(hash);
          if (receipt !== null) return receipt;
        }
        // Our nonce used by a transaction we did not send: another process has this key.
        const mined = await this.#provider.getTransactionCount(this.#wallet.address, 'latest');
        if (mined > nonce) {
          for (const hash of sent) {
            const receipt = await this.#provider.getTransactionReceipt(hash);
            if (receipt !== null) return receipt;
          }
          for (const hash of earlier) {
            if ((await this.#provider.getTransactionReceipt(hash)) !== null) return 'replaced-earlier';
          }
          throw failed(`the submitter's nonce ${nonce} was used by a transaction this anchor did not send; is the key shared?`, undefined, where);
        }
      } catch (error) {
        if (!retryable(error)) throw error;
      }
      await sleep(poll);
    }
    if (this.#clock() >= deadline) throw failed(`anchoring timed out after ${this.#options.submitTimeoutMs ?? 300_000} ms (sent ${sent.join(', ')})`, undefined, { ...where, txHashes: sent });
    return undefined;
  }

  async #awaitConfirmations(receipt: TransactionReceipt, deadline: number, where: Record<string, unknown>): Promise<void> {
    const needed = this.#options.confirmations ?? 1;
    const poll = this.#options.pollingIntervalMs ?? 1000;
    for (;;) {
      try {
        const head = await this.#provider.getBlockNumber();
        if (head - receipt.blockNumber + 1 >= needed) {
          const still = await this.#provider.getTransactionReceipt(receipt.hash);
          if (still === null || still.blockHash !== receipt.blockHash) throw failed(`the anchor transaction ${receipt.hash} left block ${receipt.blockNumber} (a reorganisation); the next checkpoint is anchored anew`, undefined, where);
          return;
        }
      } catch (error) {
        if (!retryable(error)) throw error;
      }
      if (this.#clock() >= deadline) throw failed(`the anchor transaction ${receipt.hash} did not reach ${needed} confirmations in time`, undefined, { ...where, txHash: receipt.hash });
      await sleep(poll);
    }
  }
}

export interface EvmAnchorVerifierOptions extends EvmConnectionOptions {
  /** The contract the verifier trusts; an anchor in any other contract is refused. */
  readonly contract: string;
  /** Confirmations an anchor needs to count. Default 1. */
  readonly confirmations?: number;
  /** Where `anchorsOf` starts reading `Anchored` events: the contract's deployment block. Default 0. */
  readonly fromBlock?: number;
  /** Blocks per `eth_getLogs` request (nodes cap the range). Default 10 000. */
  readonly logsPageBlocks?: number;
}

/** One `Anchored` event of the trusted contract, as `EvmAnchorVerifier.anchorsOf` lists it. */
export interface EvmAnchoredEvent {
  readonly treeSize: number;
  readonly rootHash: string;
  /** SHA-256 of the anchored checkpoint's signature, hex. */
  readonly checkpointSigSha256: string;
  /** Where the event is, for reports. */
  readonly where: { readonly txHash: string; readonly blockNumber: number };
}

/** Checks EVM anchor records against the chain. See the file comment for what it checks. */
export class EvmAnchorVerifier implements AnchorVerifier {
  readonly kind = EVM_ANCHOR_KIND;
  readonly #options: EvmAnchorVerifierOptions;
  readonly #contract: string;
  #provider: JsonRpcProvider | undefined;

  constructor(options: EvmAnchorVerifierOptions) {
    const fromBlock = options.fromBlock ?? 0;
    if (!Number.isSafeInteger(fromBlock) || fromBlock < 0) throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_CONFIG, 'fromBlock must be a non-negative integer');
    const page = options.logsPageBlocks ?? 10_000;
    if (!Number.isSafeInteger(page) || page < 1) throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_CONFIG, 'logsPageBlocks must be a positive integer');
    this.#options = options;
    this.#contract = checksummed(options.contract, 'the trusted anchor contract');
  }

  #connect(): JsonRpcProvider {
    this.#provider ??= evmProvider(this.#options);
    return this.#provider;
  }

  close(): void {
    this.#provider?.destroy();
    this.#provider = undefined;
  }

  /** The contract's latest anchor for the log (its `latestTreeSize` and the root there). */
  async latestAnchor(origin: string): Promise<{ readonly treeSize: number; readonly rootHash: string } | undefined> {
    const provider = this.#connect();
    const logId = `0x${logIdOf(origin)}`;
    try {
      await checkChainId(provider, this.#options.chainId, this.#options.rpcUrl);
      const [size] = ANCHOR_ABI.decodeFunctionResult('latestTreeSize', await provider.call({ to: this.#contract, data: ANCHOR_ABI.encodeFunctionData('latestTreeSize', [logId]) }));
      const treeSize = Number(size as bigint);
      if (treeSize === 0) return undefined;
      const [root] = ANCHOR_ABI.decodeFunctionResult('anchorOf', await provider.call({ to: this.#contract, data: ANCHOR_ABI.encodeFunctionData('anchorOf', [logId, treeSize]) }));
      return { treeSize, rootHash: hex32(root) };
    } catch (error) {
      throw failed(`cannot read the latest anchor of ${origin} from ${this.#contract} on ${this.#options.rpcUrl}: ${describeThrown(error)}`, error);
    }
  }

  /**
   * Every anchor of the log the contract recorded, oldest first: its `Anchored` events
   * (filtered on the indexed log id) from `fromBlock` to the head, read in pages of
   * `logsPageBlocks` blocks. The contract only makes tree sizes grow, not roots extend one
   * another, so verify-log checks each of these against the log, not just the latest.
   * ERR_AUDIT_ANCHOR_FAILED when the chain cannot be read.
   */
  async anchorsOf(origin: string): Promise<readonly EvmAnchoredEvent[]> {
    const provider = this.#connect();
    const logId = `0x${logIdOf(origin)}`;
    const topic = ANCHORED_TOPIC;
    if (topic === undefined) throw failed('the anchor contract ABI has no Anchored event');
    const page = this.#options.logsPageBlocks ?? 10_000;
    const found: Array<EvmAnchoredEvent & { readonly index: number }> = [];
    try {
      await checkChainId(provider, this.#options.chainId, this.#options.rpcUrl);
      const head = await provider.getBlockNumber();
      for (let from = this.#options.fromBlock ?? 0; from <= head; from += page) {
        const logs = await provider.getLogs({ address: this.#contract, topics: [topic, logId], fromBlock: from, toBlock: Math.min(head, from + page - 1) });
        for (const { log, event } of anchoredEvents(logs.filter((l) => !l.removed), this.#contract)) {
          if (`0x${hex32(event.args[0])}` !== logId) continue;
          found.push({
            treeSize: Number(event.args[1] as bigint),
            rootHash: hex32(event.args[2]),
            checkpointSigSha256: hex32(event.args[3]),
            where: { txHash: log.transactionHash, blockNumber: log.blockNumber },
            index: log.index,
          });
        }
      }
    } catch (error) {
      if (isPavilionError(error, ErrorCodes.AUDIT_ANCHOR_CONFIG)) throw failed(error.message, error);
      if (isPavilionError(error)) throw error;
      throw failed(`cannot read the anchors of ${origin} from ${this.#contract} on ${this.#options.rpcUrl}: ${describeThrown(error)}`, error);
    }
    found.sort((a, b) => a.where.blockNumber - b.where.blockNumber || a.index - b.index);
    return found.map(({ index: _index, ...event }) => event);
  }

  async verify(record: AnchorRecordV1, checkpoint?: SignedCheckpointV1): Promise<void> {
    const ref = parseEvmReference(record);
    const where = { treeSize: record.tree_size, txHash: ref.tx_hash };
    if (ref.chain_id !== this.#options.chainId) throw mismatch(`the anchor names chain ${ref.chain_id}, the verifier trusts chain ${this.#options.chainId}`, where);
    if (ref.contract !== this.#contract) throw mismatch(`the anchor names contract ${ref.contract}, the verifier trusts ${this.#contract}`, where);
    if (checkpoint !== undefined) {
      if (checkpoint.tree_size !== record.tree_size || checkpoint.root_hash !== record.root_hash) throw mismatch('the anchor record is not of the checkpoint given', where);
      if (ref.log_id !== logIdOf(checkpoint.origin)) throw mismatch(`the anchor's log id ${ref.log_id} is not that of ${checkpoint.origin}`, where);
      if (ref.checkpoint_sig_sha256 !== checkpointSignatureSha256(checkpoint)) throw mismatch(`the anchor's signature hash ${ref.checkpoint_sig_sha256} is not that of the checkpoint at tree size ${checkpoint.tree_size}`, where);
    }
    const provider = this.#connect();
    const ask = async <T>(what: string, run: () => Promise<T>): Promise<T> => {
      try {
        return await run();
      } catch (error) {
        if (isPavilionError(error)) throw error;
        throw failed(`cannot check the anchor on ${this.#options.rpcUrl}: ${what}: ${describeThrown(error)}`, error, where);
      }
    };
    await ask('chain id', () => checkChainId(provider, this.#options.chainId, this.#options.rpcUrl)).catch((error: unknown) => {
      if (isPavilionError(error, ErrorCodes.AUDIT_ANCHOR_CONFIG)) throw failed(error.message, error, where);
      throw error;
    });
    /** What the contract holds for the log at this tree size: its root and signature hash. */
    const held = (): Promise<{ root: string; sig: string }> => ask('contract state', async () => {
      const data = await provider.call({ to: this.#contract, data: ANCHOR_ABI.encodeFunctionData('anchorOf', [`0x${ref.log_id}`, record.tree_size]) });
      const [root, sig] = ANCHOR_ABI.decodeFunctionResult('anchorOf', data);
      return { root: hex32(root), sig: hex32(sig) };
    });
    const holds = ({ root, sig }: { root: string; sig: string }): boolean => root === record.root_hash && sig === ref.checkpoint_sig_sha256;
    const receipt = await ask('receipt', () => provider.getTransactionReceipt(ref.tx_hash));
    if (receipt === null) {
      // A reorg can drop a transaction after its anchor was recorded: say so when the contract
      // holds the same values (another transaction anchored them), but the named one proves nothing
      // (only a note: a contract that cannot be asked now leaves the refusal as it is)
      const note = await held().then(holds, () => false) ? `; the contract holds this root and signature hash for log ${ref.log_id} at tree size ${record.tree_size} from another transaction (a reorg may have dropped this one)` : '';
      throw mismatch(`transaction ${ref.tx_hash} is not on chain ${ref.chain_id}${note}`, where);
    }
    // The block is where the anchor saw it mined; a reorg may have mined the same transaction
    // (the same hash: the same signed bytes) in another block since, which anchors the same.
    // Everything that proves the anchor is checked below against the receipt it has now.
    if (receipt.status !== 1) throw mismatch(`transaction ${ref.tx_hash} reverted`, where);
    if (receipt.to === null || getAddress(receipt.to) !== this.#contract) throw mismatch(`transaction ${ref.tx_hash} was sent to ${receipt.to ?? 'no contract (a deployment)'}, not the anchor contract ${this.#contract}`, where);
    const event = anchoredEvents(receipt.logs, this.#contract)
      .map((found) => found.event)
      .find((e) => BigInt(e.args[1] as bigint) === BigInt(record.tree_size) && hex32(e.args[0]) === ref.log_id);
    if (event === undefined) throw mismatch(`transaction ${ref.tx_hash} anchored no checkpoint of log ${ref.log_id} at tree size ${record.tree_size}`, where);
    if (hex32(event.args[2]) !== record.root_hash) throw mismatch(`transaction ${ref.tx_hash} anchored root ${hex32(event.args[2])} at tree size ${record.tree_size}, the record says ${record.root_hash}`, where);
    if (hex32(event.args[3]) !== ref.checkpoint_sig_sha256) throw mismatch(`transaction ${ref.tx_hash} anchored signature hash ${hex32(event.args[3])}, the record says ${ref.checkpoint_sig_sha256}`, where);
    const head = await ask('block number', () => provider.getBlockNumber());
    const needed = this.#options.confirmations ?? 1;
    if (head - receipt.blockNumber + 1 < needed) throw mismatch(`transaction ${ref.tx_hash} has ${head - receipt.blockNumber + 1} confirmations, fewer than ${needed}`, where);
    const state = await held();
    if (!holds(state)) {
      throw mismatch(`contract ${this.#contract} holds root ${state.root} for log ${ref.log_id} at tree size ${record.tree_size}, the record says ${record.root_hash}`, where);
    }
  }
}

function hex32(value: unknown): string {
  return typeof value === 'string' ? value.replace(/^0x/, '').toLowerCase() : '';
}

/** The reference of an EVM anchor record; ERR_AUDIT_ANCHOR_MISMATCH when it is malformed. */
export function parseEvmReference(record: AnchorRecordV1): EvmAnchorReferenceV1 {
  const r = record.reference;
  const bad = (field: string): PavilionError => mismatch(`evm anchor reference: ${field} is missing or malformed`, { treeSize: record.tree_size, field });
  const chainId = r['chain_id'];
  if (typeof chainId !== 'number' || !Number.isSafeInteger(chainId) || chainId < 1) throw bad('chain_id');
  const contract = r['contract'];
  if (typeof contract !== 'string') throw bad('contract');
  let address: string;
  try {
    address = getAddress(contract);
  } catch {
    throw bad('contract');
  }
  const txHash = r['tx_hash'];
  if (typeof txHash !== 'string' || !TX_HASH.test(txHash)) throw bad('tx_hash');
  const block = r['block_number'];
  if (typeof block !== 'number' || !Number.isSafeInteger(block) || block < 0) throw bad('block_number');
  const logId = r['log_id'];
  if (typeof logId !== 'string' || !HEX32.test(logId)) throw bad('log_id');
  const sig = r['checkpoint_sig_sha256'];
  if (typeof sig !== 'string' || !HEX32.test(sig)) throw bad('checkpoint_sig_sha256');
  return { chain_id: chainId, contract: address, tx_hash: txHash, block_number: block, log_id: logId, checkpoint_sig_sha256: sig };
}

export interface DeployedAnchorContract {
  readonly address: string;
  readonly txHash: string;
  readonly blockNumber: number;
  readonly gasUsed: number;
  /** The deployer: the owner, and the first authorised submitter. */
  readonly owner: string;
}

/** Deploy PavilionAnchor from the committed artifact; the key becomes its owner and first submitter. */
export async function deployAnchorContract(options: EvmConnectionOptions & { readonly privateKey: string; readonly confirmations?: number }): Promise<DeployedAnchorContract> {
  const provider = evmProvider(options);
  try {
    await checkChainId(provider, options.chainId, options.rpcUrl);
    const wallet = new Wallet(options.privateKey, provider);
    const factory = new ContractFactory(PAVILION_ANCHOR_ARTIFACT.abi, PAVILION_ANCHOR_ARTIFACT.bytecode, wallet);
    const contract = await factory.deploy();
    const tx = contract.deploymentTransaction();
    const receipt = await tx?.wait(options.confirmations ?? 1);
    if (receipt === null || receipt === undefined || receipt.status !== 1) throw failed('the anchor contract deployment did not succeed');
    return { address: getAddress(await contract.getAddress()), txHash: receipt.hash, blockNumber: receipt.blockNumber, gasUsed: Number(receipt.gasUsed), owner: wallet.address };
  } catch (error) {
    if (isPavilionError(error)) throw error;
    throw failed(`deploying the anchor contract: ${describeThrown(error)}`, error);
  } finally {
    provider.destroy();
  }
}

/** Allow (or stop) another key submitting anchors; only the contract's owner may. */
export async function setAnchorSubmitter(options: EvmConnectionOptions & { readonly privateKey: string; readonly contract: string; readonly submitter: string; readonly allowed: boolean }): Promise<string> {
  const provider = evmProvider(options);
  try {
    await checkChainId(provider, options.chainId, options.rpcUrl);
    const wallet = new Wallet(options.privateKey, provider);
    const tx = await wallet.sendTransaction({ to: checksummed(options.contract, 'the anchor contract'), data: ANCHOR_ABI.encodeFunctionData('setSubmitter', [checksummed(options.submitter, 'the submitter'), options.allowed]) });
    const receipt = await tx.wait(1);
    if (receipt === null || receipt.status !== 1) throw failed('setSubmitter did not succeed');
    return receipt.hash;
  } catch (error) {
    if (isPavilionError(error)) throw error;
    const reason = revertReason(error);
    if (reason !== undefined) throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_REVERTED, `setSubmitter reverted: ${reason}`, { cause: error });
    throw failed(`setSubmitter: ${describeThrown(error)}`, error);
  } finally {
    provider.destroy();
  }
}
