/**
 * A real local EVM chain for tests and benchmarks: the Hardhat EVM (`@nomicfoundation/edr`,
 * the Rust engine behind `hardhat node`) run in this process and served as HTTP JSON-RPC on
 * a random loopback port. In-process rather than `hardhat node` as a child: it starts in
 * milliseconds, needs no Hardhat project on disk, and the chain outlives its HTTP endpoint,
 * so `pause()` / `resume()` take the endpoint away and bring it back on the same port with
 * the same state (outage tests). The funded accounts are random keys made per chain.
 *
 * `rpc()` talks to the engine directly, for test controls the endpoint also serves
 * (`evm_setAutomine`, `evm_mine`, `hardhat_dropTransaction`, `txpool_content`).
 */
import { createServer, type Server, type Socket } from 'node:net';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import {
  EdrContext,
  ContractDecoder,
  L1_CHAIN_TYPE,
  MineOrdering,
  l1GenesisState,
  l1HardforkFromString,
  l1ProviderFactory,
  type Provider,
} from '@nomicfoundation/edr';
import { Wallet } from 'ethers';

export interface EvmAccount {
  readonly address: string;
  /** 0x-prefixed hex secret key. */
  readonly privateKey: string;
}

export interface RunningEvmChain {
  readonly url: string;
  readonly port: number;
  readonly chainId: number;
  /** Funded accounts (100 ETH each). */
  readonly accounts: readonly EvmAccount[];
  /** Call the engine directly (not through HTTP); throws the JSON-RPC error message. */
  rpc(method: string, params?: readonly unknown[]): Promise<unknown>;
  /** Take the HTTP endpoint away (connections are cut); the chain keeps its state. */
  pause(): Promise<void>;
  /** Serve the same chain again on the same port. */
  resume(): Promise<void>;
  stop(): Promise<void>;
}

export interface EvmChainOptions {
  readonly chainId?: number;
  readonly accounts?: number;
}

const HARDFORK = 'prague';
let context: EdrContext | undefined;

/** One EdrContext per process (the engine says so); providers are per chain. */
async function edrContext(): Promise<EdrContext> {
  if (context === undefined) {
    const created = new EdrContext();
    await created.registerProviderFactory(L1_CHAIN_TYPE, l1ProviderFactory());
    context = created;
  }
  return context;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server: Server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address !== null ? address.port : 0));
    });
  });
}

async function readBody(request: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export async function startEvmChain(options: EvmChainOptions = {}): Promise<RunningEvmChain> {
  const chainId = options.chainId ?? 31_337;
  const accounts: EvmAccount[] = Array.from({ length: options.accounts ?? 3 }, () => {
    const wallet = new Wallet(`0x${randomBytes(32).toString('hex')}`);
    return { address: wallet.address, privateKey: wallet.privateKey };
  });
  const hardfork = l1HardforkFromString(HARDFORK);
  const edr = await edrContext();
  const provider: Provider = await edr.createProvider(
    L1_CHAIN_TYPE,
    {
      allowBlocksWithSameTimestamp: false,
      allowUnlimitedContractSize: false,
      bailOnCallFailure: true,
      bailOnTransactionFailure: false,
      chainId: BigInt(chainId),
      coinbase: Buffer.alloc(20, 0xc0),
      defaultTransactionGasLimit: 30_000_000n,
      genesisState: [
        ...l1GenesisState(hardfork),
        ...accounts.map((a) => ({ address: Buffer.from(a.address.slice(2), 'hex'), balance: 100n * 10n ** 18n })),
      ],
      hardfork: HARDFORK,
      initialBaseFeePerGas: 1_000_000_000n,
      minGasPrice: 0n,
      mining: { autoMine: true, blockGasLimit: 30_000_000n, memPool: { order: MineOrdering.Priority } },
      network: { genesisBlockGasLimit: 30_000_000n },
      networkId: BigInt(chainId),
      observability: {},
      ownedAccounts: [],
      precompileOverrides: [],
    },
    { enable: false, decodeConsoleLogInputsCallback: () => [], printLineCallback: () => undefined },
    { subscriptionCallback: () => undefined },
    new ContractDecoder(),
  );

  // The engine answers one request at a time and leaves out `jsonrpc` and `id`: the
  // endpoint adds them and splits batches, as a JSON-RPC 2.0 server must.
  const one = async (request: unknown): Promise<Record<string, unknown>> => {
    const id = typeof request === 'object' && request !== null ? (request as { id?: unknown }).id ?? null : null;
    const response = await provider.handleRequest(JSON.stringify(request));
    const data: unknown = response.data;
    const answer = (typeof data === 'string' ? JSON.parse(data) : data) as Record<string, unknown>;
    return { ...answer, jsonrpc: '2.0', id };
  };
  const handle = async (body: string): Promise<string> => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      return JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'parse error' } });
    }
    return JSON.stringify(Array.isArray(parsed) ? await Promise.all(parsed.map(one)) : await one(parsed));
  };

  const port = await freePort();
  const sockets = new Set<Socket>();
  const http = createHttpServer((request: IncomingMessage, response: ServerResponse) => {
    if (request.method !== 'POST') {
      response.writeHead(405).end();
      return;
    }
    readBody(request)
      .then(handle)
      .then((text) => response.writeHead(200, { 'content-type': 'application/json' }).end(text))
      .catch((error: unknown) => response.writeHead(500).end(String(error)));
  });
  http.keepAliveTimeout = 1000;
  http.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  const listen = (): Promise<void> =>
    new Promise((resolve, reject) => {
      http.once('error', reject);
      http.listen(port, '127.0.0.1', () => {
        http.off('error', reject);
        resolve();
      });
    });
  let listening = false;
  const pause = async (): Promise<void> => {
    if (!listening) return;
    listening = false;
    const closed = new Promise<void>((resolve) => http.close(() => resolve()));
    for (const socket of sockets) socket.destroy();
    await closed;
  };
  await listen();
  listening = true;

  let id = 0;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    chainId,
    accounts,
    async rpc(method, params = []) {
      const answer = JSON.parse(await handle(JSON.stringify({ jsonrpc: '2.0', id: ++id, method, params }))) as { result?: unknown; error?: { message: string } };
      if (answer.error !== undefined) throw new Error(`${method}: ${answer.error.message}`);
      return answer.result;
    },
    pause,
    async resume() {
      if (listening) return;
      await listen();
      listening = true;
    },
    stop: pause,
  };
}
