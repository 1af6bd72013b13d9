/**
 * A real nats-server with JetStream for tests and benchmarks: a random loopback port, a
 * temporary store directory, optional extra config (accounts and permissions), and the
 * ability to kill it and bring it back on the same port and store (outage tests).
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findTool } from '../../sidecar/src/lib/tools.ts';
import { killProcess, spawnUntilReady } from './process.ts';

export interface RunningNats {
  readonly url: string;
  readonly port: number;
  /** The server's process id while it runs (benchmarks read its CPU time). */
  readonly pid: number | undefined;
  /** SIGKILL the server (no goodbye to clients). */
  kill(): Promise<void>;
  /** Start it again on the same port and store. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export interface NatsOptions {
  /** Extra nats-server config text (accounts, authorization), appended to the generated file. */
  readonly extraConfig?: string;
  /** Environment for the server (nats-server config files may read `$VARIABLES`). */
  readonly env?: Readonly<Record<string, string>>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address !== null ? address.port : 0));
    });
  });
}

export function findNatsServer(): string {
  return findTool('nats-server', 'PAVILION_NATS_SERVER', 'bash scripts/install-nats.sh');
}

export async function startNats(options: NatsOptions = {}): Promise<RunningNats> {
  const dir = await mkdtemp(join(tmpdir(), 'pavilion-nats-'));
  const port = await freePort();
  const configFile = join(dir, 'nats.conf');
  await writeFile(configFile, [
    'host: 127.0.0.1',
    `port: ${port}`,
    `jetstream { store_dir: "${join(dir, 'js')}", max_memory_store: 64MB, max_file_store: 1GB }`,
    options.extraConfig ?? '',
  ].join('\n'));
  let child: ChildProcess | undefined;

  const launch = async (): Promise<void> => {
    child = await spawnUntilReady({
      command: findNatsServer(), args: ['-c', configFile], readyText: 'Server is ready', readyOn: 'stderr', env: { ...process.env, ...options.env },
    });
  };

  const kill = async (): Promise<void> => {
    const proc = child;
    child = undefined;
    await killProcess(proc);
  };

  await launch();
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    get pid() {
      return child?.pid;
    },
    kill,
    restart: launch,
    async stop() {
      await kill();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
