/**
 * Locating the external tools Pavilion drives (the `opa` CLI), and running them.
 *
 * Resolution order for a tool: an explicit environment variable (`PAVILION_OPA`), the
 * project-local tools folder that `scripts/bootstrap.sh` installs into (`.tools/bin`),
 * then `PATH`. A missing tool is a typed `ERR_TOOL_MISSING` error that says how to get it.
 */
import { execFile } from 'node:child_process';
import { accessSync, constants, existsSync } from 'node:fs';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCodes, PavilionError } from './errors.ts';

/**
 * Repository root: the nearest folder above this file with a package.json. Found by walking
 * up rather than by a fixed depth, because this file runs both from sidecar/src/lib (tsx)
 * and from dist/sidecar/src/lib (compiled).
 */
function findRepoRoot(start: string): string {
  let dir = start;
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'bundles'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) return resolve(start, '..', '..', '..');
    dir = parent;
  }
}

export const REPO_ROOT = findRepoRoot(dirname(fileURLToPath(import.meta.url)));

export const OPA_VERSION = 'v1.22.3';

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The tool's absolute path: callers run it from other working directories (opa build runs in its staging directory). */
export function findTool(name: string, envVar: string, install = 'npm run bootstrap'): string {
  const explicit = process.env[envVar];
  if (explicit !== undefined && explicit !== '') {
    if (isExecutable(explicit)) return resolve(explicit);
    throw new PavilionError(ErrorCodes.TOOL_MISSING, `${envVar}=${explicit} is not an executable file`);
  }
  const local = join(REPO_ROOT, '.tools', 'bin', name);
  if (isExecutable(local)) return local;
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, name);
    if (isExecutable(candidate)) return resolve(candidate);
  }
  throw new PavilionError(
    ErrorCodes.TOOL_MISSING,
    `'${name}' was not found (looked at $${envVar}, .tools/bin and PATH); run '${install}' to install it`,
  );
}

export function findOpa(): string {
  return findTool('opa', 'PAVILION_OPA');
}

export interface ToolResult {
  readonly stdout: string;
  readonly stderr: string;
}

/** Run a tool; a non-zero exit becomes a PavilionError carrying stderr. */
export function runTool(
  binary: string,
  args: readonly string[],
  options: { readonly cwd?: string; readonly timeoutMs?: number; readonly failureCode?: PavilionError['code'] } = {},
): Promise<ToolResult> {
  return new Promise((resolvePromise, reject) => {
    execFile(
      binary,
      args,
      { cwd: options.cwd, timeout: options.timeoutMs ?? 120_000, maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error) {
          const code = options.failureCode ?? ErrorCodes.INTERNAL;
          const text = `${stdout}\n${stderr}`.trim();
          reject(
            new PavilionError(code, `${binary.split('/').pop()} ${args[0] ?? ''} failed: ${text || error.message}`, {
              cause: error,
            }),
          );
          return;
        }
        resolvePromise({ stdout, stderr });
      },
    );
  });
}
