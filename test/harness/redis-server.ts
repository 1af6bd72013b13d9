/**
 * A real redis-server for tests: a random loopback port, no persistence, and the ability to
 * kill it and bring it back on the same port (outage tests). redis-server comes from the
 * system (scripts/install-redis.sh installs it with apt).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { findTool } from '../../sidecar/src/lib/tools.ts';
import { freePort } from './nats-server.ts';

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
    const proc = spawn(findTool('redis-server', 'PAVILION_REDIS_SERVER'), ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
    child = proc;
    await new Promise<void>((resolve, reject) => {
      let log = '';
      const timer = setTimeout(() => reject(new Error(`redis-server did not start: ${log}`)), 15_000);
      proc.stdout?.on('data', (chunk: Buffer) => {
        log += chunk.toString();
        if (log.includes('Ready to accept connections')) {
          clearTimeout(timer);
          resolve();
        }
      });
      proc.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`redis-server exited with ${String(code)}: ${log}`));
      });
    });
    proc.stdout?.removeAllListeners('data');
    proc.stdout?.resume();
    proc.stderr?.resume();
  };
  const kill = async (): Promise<void> => {
    const proc = child;
    child = undefined;
    if (proc === undefined || proc.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      proc.once('exit', () => resolve());
      proc.kill('SIGKILL');
    });
  };
  await launch();
  return { url: `redis://127.0.0.1:${port}`, port, kill, restart: launch, stop: kill };
}
