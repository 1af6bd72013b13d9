/**
 * Building a tenant's bundle from its definition (`bundles/<tenant>/bundle.json`):
 *
 *   stage sources + data + tests -> `opa check` -> `opa test` -> drop tests, write .manifest
 *   -> `opa build -t wasm -b <stage> -e <entrypoints> --revision <rev>` -> bundle.tar.gz
 *
 * The revision is content-addressed (SHA-256 over every staged file's path and bytes), so
 * the same sources always give the same revision and any change gives a new one.
 * The built archive is read back with `readBundle` before the build reports success, so a
 * definition whose roots leave the tenant's namespace fails at build time, not at load time.
 */
import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import { TENANT_ID_PATTERN } from '../lib/tenant-id.ts';
import { findOpa, REPO_ROOT, runTool } from '../lib/tools.ts';
import { readBundle, type Bundle } from './archive.ts';


/** `bundles/<tenant>/bundle.json`, version 1 of the definition format. */
export interface BundleDefinition {
  readonly tenant: string;
  readonly description: string;
  readonly rego: readonly string[];
  readonly data: readonly { readonly path: string; readonly file: string }[];
  readonly entrypoints: readonly string[];
  readonly roots: readonly string[];
  readonly metadata: Readonly<Record<string, unknown>>;
}

export interface BuildResult {
  readonly tenant: string;
  readonly revision: string;
  readonly output: string;
  /** The bundle as the sidecar reads it (undefined for a 'rego' target build). */
  readonly bundle: Bundle | undefined;
  readonly testsPassed: number;
}

function invalid(file: string, message: string): PavilionError {
  return new PavilionError(ErrorCodes.BUNDLE_BUILD_FAILED, `${file}: ${message}`);
}

function stringArray(value: unknown, file: string, field: string): string[] {
  if (!Array.isArray(value) || !value.every((v): v is string => typeof v === 'string')) {
    throw invalid(file, `${field} must be an array of strings`);
  }
  return value;
}

export async function readDefinition(file: string): Promise<BundleDefinition> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, 'utf8'));
  } catch (error) {
    throw invalid(file, `cannot read bundle definition: ${describeThrown(error)}`);
  }
  if (typeof raw !== 'object' || raw === null) throw invalid(file, 'must be an object');
  const d = raw as Record<string, unknown>;
  const tenant = d['tenant'];
  if (typeof tenant !== 'string' || !TENANT_ID_PATTERN.test(tenant)) {
    throw invalid(file, `tenant must match ${TENANT_ID_PATTERN.source}`);
  }
  const data = d['data'] ?? [];
  if (!Array.isArray(data)) throw invalid(file, 'data must be an array');
  const dataEntries = data.map((entry: unknown, i) => {
    const e = entry as Record<string, unknown> | null;
    if (typeof e?.['path'] !== 'string' || typeof e['file'] !== 'string') {
      throw invalid(file, `data[${i}] needs string path and file`);
    }
    return { path: e['path'], file: e['file'] };
  });
  const entrypoints = stringArray(d['entrypoints'], file, 'entrypoints');
  if (entrypoints.length === 0) throw invalid(file, 'at least one entrypoint is required for a wasm bundle');
  const metadata = d['metadata'] ?? {};
  if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata)) {
    throw invalid(file, 'metadata must be an object');
  }
  return {
    tenant,
    description: typeof d['description'] === 'string' ? d['description'] : '',
    rego: stringArray(d['rego'], file, 'rego'),
    data: dataEntries,
    entrypoints,
    roots: stringArray(d['roots'] ?? [tenant], file, 'roots'),
    metadata: metadata as Record<string, unknown>,
  };
}

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await listFiles(path)));
    else if (entry.isFile()) out.push(path);
  }
  return out.sort();
}

/** Where a tenant's definition and built archive live. */
export function definitionPath(tenant: string, root = REPO_ROOT): string {
  return join(root, 'bundles', tenant, 'bundle.json');
}

export function defaultBuildDirectory(root = REPO_ROOT): string {
  return join(root, 'bundles', '.build');
}

export async function listDefinitions(root = REPO_ROOT): Promise<string[]> {
  const dir = join(root, 'bundles');
  const tenants: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (!entry.isDirectory() || entry.name.startsWith('.')) continue;
    try {
      await readFile(join(dir, entry.name, 'bundle.json'));
      tenants.push(entry.name);
    } catch {
      // a folder without a definition is not a tenant
    }
  }
  return tenants.sort();
}

export interface BuildOptions {
  readonly root?: string;
  readonly outputDirectory?: string;
  /** Skip `opa test` (never for release builds; used for deliberately broken fixtures). */
  readonly skipTests?: boolean;
  /**
   * 'wasm' (default) is what the sidecar loads. 'rego' builds the same staged sources as a
   * plain bundle for OPA's own evaluator, so benchmarks can run the peer on identical policy.
   */
  readonly target?: 'wasm' | 'rego';
}

export async function buildTenantBundle(definitionFile: string, options: BuildOptions = {}): Promise<BuildResult> {
  const root = options.root ?? REPO_ROOT;
  const definition = await readDefinition(definitionFile);
  const opa = findOpa();
  const stage = await mkdtemp(join(tmpdir(), `pavilion-build-${definition.tenant}-`));
  try {
    const sources = join(stage, 'src');
    // 1. stage rego (tests included) and data at their paths
    for (const dir of definition.rego) {
      const abs = resolve(root, dir);
      for (const file of await listFiles(abs)) {
        if (!file.endsWith('.rego')) continue;
        const target = join(sources, relative(abs, file));
        await mkdir(dirname(target), { recursive: true });
        await copyFile(file, target);
      }
    }
    for (const { path, file } of definition.data) {
      const target = join(sources, ...path.split('/').filter((s) => s !== ''), 'data.json');
      await mkdir(dirname(target), { recursive: true });
      await writeFile(target, JSON.stringify(JSON.parse(await readFile(resolve(root, file), 'utf8'))));
    }
    // 2. check and test
    await runTool(opa, ['check', sources], { failureCode: ErrorCodes.BUNDLE_BUILD_FAILED });
    let testsPassed = 0;
    if (options.skipTests !== true) {
      const { stdout } = await runTool(opa, ['test', sources, '--format', 'json'], {
        failureCode: ErrorCodes.BUNDLE_BUILD_FAILED,
        timeoutMs: 300_000,
      });
      const results = JSON.parse(stdout === '' ? '[]' : stdout) as Array<{ fail?: boolean; error?: unknown }>;
      testsPassed = results.filter((r) => r.fail !== true && r.error === undefined).length;
      if (testsPassed === 0) throw invalid(definitionFile, 'opa test found no tests; every tenant ships tests');
    }
    // 3. drop tests, compute the revision, write the manifest
    const files = await listFiles(sources);
    for (const file of files) if (file.endsWith('_test.rego')) await rm(file);
    const hash = createHash('sha256');
    for (const file of await listFiles(sources)) {
      hash.update(relative(sources, file)).update('\0').update(await readFile(file)).update('\0');
    }
    hash.update(JSON.stringify({ roots: definition.roots, entrypoints: definition.entrypoints, metadata: definition.metadata }));
    const revision = hash.digest('hex').slice(0, 16);
    await writeFile(
      join(sources, '.manifest'),
      JSON.stringify({ revision, roots: definition.roots, metadata: { ...definition.metadata, tenant: definition.tenant } }),
    );
    // 4. build
    const outDir = join(options.outputDirectory ?? defaultBuildDirectory(root), definition.tenant);
    await mkdir(outDir, { recursive: true });
    const output = join(outDir, 'bundle.tar.gz');
    const target = options.target ?? 'wasm';
    await runTool(
      opa,
      ['build', '-t', target, '-b', sources, '--revision', revision, '-o', output,
        ...definition.entrypoints.flatMap((e) => ['-e', e])],
      { failureCode: ErrorCodes.BUNDLE_BUILD_FAILED, timeoutMs: 300_000 },
    );
    // 5. read it back with the sidecar's own loader (a rego bundle has no Wasm to load)
    if (target === 'rego') {
      return { tenant: definition.tenant, revision, output, bundle: undefined, testsPassed };
    }
    const bundle = await readBundle(await readFile(output), { tenant: definition.tenant, namespace: definition.tenant });
    return { tenant: definition.tenant, revision, output, bundle, testsPassed };
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
}
