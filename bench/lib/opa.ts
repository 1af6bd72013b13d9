/** The peer most benchmarks measure against: `opa run --server` as a child process. */
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { findOpa } from '../../sidecar/src/lib/tools.ts';
import { freePort, startServer, type Server } from './servers.ts';

export interface OpaOptions {
  /** OPA configuration (services, decision_logs, ...), written as a JSON file into `workDir`. */
  readonly config?: Record<string, unknown>;
  /** Extra command-line arguments (e.g. `--set decision_logs.console=true`). */
  readonly args?: readonly string[];
  /** Where the configuration file goes (required with `config`). */
  readonly workDir?: string;
}

/** `opa run --server` on a free loopback port serving `bundles`, ready once its bundles are activated. */
export async function startOpa(bundles: readonly string[], options: OpaOptions = {}): Promise<Server> {
  const port = await freePort();
  const args = ['run', '--server', '--addr', `127.0.0.1:${port}`, '--log-level', 'error'];
  if (options.config !== undefined) {
    if (options.workDir === undefined) throw new Error('startOpa: a config needs a workDir');
    const file = join(options.workDir, `opa-${port}.json`);
    await writeFile(file, JSON.stringify(options.config)); // JSON is YAML: OPA reads it as is
    args.push('--config-file', file);
  }
  args.push(...(options.args ?? []), ...bundles);
  return startServer(findOpa(), args, `http://127.0.0.1:${port}`, '/health?bundles');
}

/** `opa run --server v<version>`, the peer's name in results. */
export async function opaName(): Promise<string> {
  const { stdout } = await promisify(execFile)(findOpa(), ['version']);
  const version = /^Version:\s*(\S+)/m.exec(stdout)?.[1] ?? 'unknown';
  return `opa run --server v${version}`;
}
