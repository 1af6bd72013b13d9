/** Starting the servers under test as child processes on free loopback ports. */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export interface Server {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly url: string;
  stop(): Promise<void>;
}

export async function startServer(
  command: string,
  args: readonly string[],
  url: string,
  readyPath: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Server> {
  const child = spawn(command, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4000);
  });
  const deadline = Date.now() + 60_000;
  const giveUp = (message: string): never => {
    child.kill('SIGKILL'); // never leave a half-started server behind
    throw new Error(message);
  };
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${command} exited: ${stderr}`);
    try {
      const response = await fetch(`${url}${readyPath}`);
      if (response.status === 200) break;
    } catch {
      // not yet listening
    }
    if (Date.now() > deadline) giveUp(`${command} did not become ready: ${stderr}`);
    await sleep(100);
  }
  return {
    child,
    pid: child.pid as number,
    url,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await Promise.race([exited, sleep(5000)]);
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}

/**
 * Compile the sidecar to dist/ (as `npm start` runs it). Benchmarks measure the compiled
 * JavaScript: running from TypeScript through tsx adds its transpiler to every thread
 * (about 90 MB of RSS with two workers).
 */
export async function buildSidecar(root: string): Promise<string> {
  await promisify(execFile)(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(root, 'tsconfig.build.json')], { cwd: root });
  return join(root, 'dist', 'sidecar', 'src', 'main.js');
}
