/**
 * The `pavilion` command line.
 *
 *   pavilion bundle build --tenant <id> | --all [--out <dir>] [--target wasm|rego]
 *   pavilion bundle inspect <bundle.tar.gz> [--tenant <id>]
 *   pavilion credential <command> ...   (sample credentials: see credential-commands.ts)
 *   pavilion serve
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import {
  buildTenantBundle,
  definitionPath,
  listDefinitions,
  readBundle,
} from '../bundles/index.ts';
import { compilePolicy } from '../engine/index.ts';
import { describeThrown, isPavilionError } from '../lib/errors.ts';
import { CREDENTIAL_USAGE, credentialCommand } from './credential-commands.ts';

const USAGE = `usage:
  pavilion bundle build --tenant <id> | --all [--out <dir>] [--target wasm|rego]
  pavilion bundle inspect <bundle.tar.gz> [--tenant <id>]
${CREDENTIAL_USAGE}
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

async function main(argv: string[]): Promise<number> {
  const [group, command, ...rest] = argv;
  if (group === 'bundle' && command === 'build') return bundleBuild(rest);
  if (group === 'bundle' && command === 'inspect') return bundleInspect(rest);
  if (group === 'credential') return credentialCommand(command, rest);
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
