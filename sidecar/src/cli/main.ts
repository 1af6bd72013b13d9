/**
 * The `pavilion` command line.
 *
 *   pavilion bundle build --tenant <id> | --all [--out <dir>] [--target wasm|rego]
 *   pavilion bundle inspect <bundle.tar.gz> [--tenant <id>]
 *   pavilion audit verify-log --log <dir|file> --keys <pem|dir> [--origin <o>] [--trusted-checkpoint <file>]...
 *   pavilion audit verify --decision <id> (--proof <file> | --log <dir|file>) --keys <pem|dir> [--origin <o>]
 *   pavilion audit prove --decision <id> --log <dir|file>
 *   pavilion audit prove-consistency --from <checkpoint.json> --log <dir|file>
 *   pavilion audit verify-consistency --proof <file> --keys <pem|dir>
 *   pavilion serve
 */
import { statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  Keyring,
  WAL_FILE,
  decodeCheckpoint,
  proveConsistencyFromLogFile,
  proveFromLogFile,
  verifyConsistencyProof,
  verifyDecisionProof,
  verifyLogFile,
} from '../audit/index.ts';
import {
  buildTenantBundle,
  definitionPath,
  listDefinitions,
  readBundle,
} from '../bundles/index.ts';
import { compilePolicy } from '../engine/index.ts';
import { ErrorCodes, PavilionError, describeThrown, isPavilionError } from '../lib/errors.ts';

const USAGE = `usage:
  pavilion bundle build --tenant <id> | --all [--out <dir>] [--target wasm|rego]
  pavilion bundle inspect <bundle.tar.gz> [--tenant <id>]
  pavilion audit verify-log --log <dir|file> --keys <pem|dir> [--origin <o>] [--trusted-checkpoint <file>]...
  pavilion audit verify --decision <id> (--proof <file> | --log <dir|file>) --keys <pem|dir> [--origin <o>]
  pavilion audit prove --decision <id> --log <dir|file>
  pavilion audit prove-consistency --from <checkpoint.json> --log <dir|file>
  pavilion audit verify-consistency --proof <file> --keys <pem|dir>
  pavilion serve`;

async function bundleBuild(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      tenant: { type: 'string', multiple: true },
      all: { type: 'boolean' },
      out: { type: 'string' },
      target: { type: 'string', default: 'wasm' },
    },
  });
  if (values.target !== 'wasm' && values.target !== 'rego') {
    process.stderr.write('--target must be wasm or rego\n');
    return 2;
  }
  const target = values.target;
  const tenants = values.all === true ? await listDefinitions() : values.tenant ?? [];
  if (tenants.length === 0) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  let failed = 0;
  for (const tenant of tenants) {
    const started = performance.now();
    try {
      const result = await buildTenantBundle(definitionPath(tenant), {
        target,
        ...(values.out === undefined ? {} : { outputDirectory: values.out }),
      });
      const ms = Math.round(performance.now() - started);
      const entrypoints = result.bundle?.entrypoints.join(', ') ?? '(rego target)';
      process.stdout.write(
        `built ${tenant} (${target}): revision ${result.revision}, ${result.testsPassed} opa tests passed, ` +
          `entrypoints ${entrypoints} -> ${result.output} (${ms} ms)\n`,
      );
    } catch (error) {
      failed++;
      process.stderr.write(`failed ${tenant}: ${isPavilionError(error) ? `[${error.code}] ` : ''}${describeThrown(error)}\n`);
    }
  }
  return failed === 0 ? 0 : 1;
}

async function bundleInspect(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { tenant: { type: 'string' } } });
  const file = positionals[0];
  if (file === undefined) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  const archive = await readFile(file);
  const manifestTenant = values.tenant;
  // Without --tenant, take the namespace from the first root so a bundle can be inspected on its own.
  const probe = manifestTenant ?? 'inspect';
  const bundle = await readBundle(archive, {
    tenant: probe,
    namespace: manifestTenant ?? '',
  });
  const compiled = await compilePolicy(bundle, { initialMemoryPages: 5 });
  process.stdout.write(
    `${JSON.stringify(
      {
        revision: bundle.revision,
        roots: bundle.manifest.roots,
        entrypoints: bundle.entrypoints,
        metadata: bundle.manifest.metadata,
        files: [...bundle.files.keys()],
        required_builtins: compiled.requiredBuiltins,
        deterministic: compiled.deterministic,
        sha256: bundle.digest,
        size_bytes: bundle.sizeBytes,
      },
      null,
      2,
    )}\n`,
  );
  return 0;
}

/** A tenant's log directory or the log file itself. */
function logFile(path: string): string {
  try {
    return statSync(path).isDirectory() ? join(path, WAL_FILE) : path;
  } catch {
    return path;
  }
}

/** Print a verification failure (code, message, the first bad position) and return exit code 1. */
function reportFailure(error: unknown): number {
  if (!isPavilionError(error)) throw error;
  process.stdout.write(`${JSON.stringify({ ok: false, code: error.code, message: error.message, position: error.details ?? {} }, null, 2)}\n`);
  process.stderr.write(`verification FAILED [${error.code}] ${error.message}\n`);
  return 1;
}

function parseProofFile(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new PavilionError(ErrorCodes.AUDIT_PROOF_INVALID, 'the proof file is not JSON', { cause: error, details: { reason: 'malformed' } });
  }
}

async function auditCommand(command: string | undefined, args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      log: { type: 'string' },
      keys: { type: 'string' },
      origin: { type: 'string' },
      decision: { type: 'string' },
      proof: { type: 'string' },
      'trusted-checkpoint': { type: 'string', multiple: true },
      from: { type: 'string' },
    },
  });
  const usage = (): number => {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  };
  if (command === 'prove') {
    if (values.decision === undefined || values.log === undefined) return usage();
    const proof = await proveFromLogFile(logFile(values.log), values.decision);
    process.stdout.write(`${JSON.stringify(proof, null, 2)}\n`);
    return 0;
  }
  if (command === 'prove-consistency') {
    if (values.from === undefined || values.log === undefined) return usage();
    const proof = await proveConsistencyFromLogFile(logFile(values.log), decodeCheckpoint(await readFile(values.from, 'utf8')));
    process.stdout.write(`${JSON.stringify(proof, null, 2)}\n`);
    return 0;
  }
  if (command !== 'verify-log' && command !== 'verify' && command !== 'verify-consistency') return usage();
  // Trust comes from keys obtained out of band; never from the log directory by default.
  if (values.keys === undefined) return usage();
  const keyring = Keyring.load(values.keys);
  const origin = values.origin === undefined ? {} : { origin: values.origin };
  try {
    if (command === 'verify-log') {
      if (values.log === undefined) return usage();
      const trustedCheckpoints = await Promise.all((values['trusted-checkpoint'] ?? []).map(async (file) => decodeCheckpoint(await readFile(file, 'utf8'))));
      const result = await verifyLogFile(logFile(values.log), keyring, { ...origin, trustedCheckpoints });
      process.stdout.write(`${JSON.stringify({ ok: true, ...result }, null, 2)}\n`);
      if (result.unsignedLeaves > 0) process.stderr.write(`note: ${result.unsignedLeaves} leaves after the last checkpoint are intact but not yet signed\n`);
      return 0;
    }
    if (command === 'verify-consistency') {
      if (values.proof === undefined) return usage();
      const result = verifyConsistencyProof(parseProofFile(await readFile(values.proof, 'utf8')), keyring);
      process.stdout.write(`${JSON.stringify({ ok: true, ...result }, null, 2)}\n`);
      return 0;
    }
    if (values.decision === undefined || (values.proof === undefined) === (values.log === undefined)) return usage();
    const proof: unknown = values.proof !== undefined
      ? parseProofFile(await readFile(values.proof, 'utf8'))
      : await proveFromLogFile(logFile(values.log ?? ''), values.decision);
    const result = verifyDecisionProof(proof, keyring, { decisionId: values.decision, ...origin });
    process.stdout.write(`${JSON.stringify({ ok: true, ...result }, null, 2)}\n`);
    return 0;
  } catch (error) {
    return reportFailure(error);
  }
}

async function main(argv: string[]): Promise<number> {
  const [group, command, ...rest] = argv;
  if (group === 'bundle' && command === 'build') return bundleBuild(rest);
  if (group === 'bundle' && command === 'inspect') return bundleInspect(rest);
  if (group === 'audit') return auditCommand(command, rest);
  if (group === 'serve') {
    await import('../main.ts');
    return -1;
  }
  process.stderr.write(`${USAGE}\n`);
  return 2;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`${isPavilionError(error) ? `[${error.code}] ` : ''}${describeThrown(error)}\n`);
    process.exitCode = 1;
  },
);
