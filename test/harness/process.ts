/**
 * Child processes for the test harness: start a server and wait for the line that says it is
 * ready (or fail with what it printed), and SIGKILL it. Shared by the nats-server and
 * redis-server starters.
 */
import { spawn, type ChildProcess } from 'node:child_process';

export interface ServerProcess {
  readonly command: string;
  readonly args: readonly string[];
  /** Text the server prints once it accepts connections. */
  readonly readyText: string;
  /** Which output carries that text. */
  readonly readyOn: 'stdout' | 'stderr';
  readonly env?: NodeJS.ProcessEnv;
  readonly timeoutMs?: number;
}

export async function spawnUntilReady(spec: ServerProcess): Promise<ChildProcess> {
  const proc = spawn(spec.command, [...spec.args], { stdio: ['ignore', 'pipe', 'pipe'], ...(spec.env === undefined ? {} : { env: spec.env }) });
  const name = spec.command.split('/').at(-1) ?? spec.command;
  const output = spec.readyOn === 'stdout' ? proc.stdout : proc.stderr;
  await new Promise<void>((resolve, reject) => {
    let log = '';
    const timer = setTimeout(() => reject(new Error(`${name} did not start: ${log}`)), spec.timeoutMs ?? 15_000);
    output?.on('data', (chunk: Buffer) => {
      log += chunk.toString();
      if (log.includes(spec.readyText)) {
        clearTimeout(timer);
        resolve();
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited with ${String(code)}: ${log}`));
    });
  });
  output?.removeAllListeners('data');
  proc.stdout?.resume();
  proc.stderr?.resume();
  return proc;
}

/** SIGKILL `proc` (no goodbye to clients) and wait for it to exit. */
export async function killProcess(proc: ChildProcess | undefined): Promise<void> {
  if (proc === undefined || proc.exitCode !== null) return;
  await new Promise<void>((resolve) => {
    proc.once('exit', () => resolve());
    proc.kill('SIGKILL');
  });
}
