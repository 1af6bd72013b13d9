/**
 * A real redis-server for tests: a random loopback port, no persistence, and the ability to
 * kill it and bring it back on the same port (outage tests). redis-server comes from the
 * system (scripts/install-redis.sh installs it with apt).
 */
import type { ChildProcess } from 'node:child_process';
import { findTool } from '../../sidecar/src/lib/tools.ts';
import { freePort } from './nats-server.ts';
import { killProcess, spawnUntilReady } from './process.ts';

export interface RunningRedis {
  readonly url: string;
  readonly port: number;
  /** SIGKILL the server. */
  kill(): Promise<void>;
  /** Start it again on the same port (empty: nothing was persisted). */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export async function startRedis(): Promise<RunningRedis> {
  const port = await freePort();
  let child: ChildProcess | undefined;
  const launch = async (): Promise<void> => {
    child = await spawnUntilReady({
      command: findTool('redis-server', 'PAVILION_REDIS_SERVER', 'bash scripts/install-redis.sh'),
      args: ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no'],
      readyText: 'Ready to accept connections',
      readyOn: 'stdout',
    });
  };
  const kill = async (): Promise<void> => {
    const proc = child;
    child = undefined;
    await killProcess(proc);
  };
  await launch();
  return { url: `redis://127.0.0.1:${port}`, port, kill, restart: launch, stop: kill };
}
