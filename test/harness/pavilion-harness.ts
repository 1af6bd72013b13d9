/**
 * The shared harness for integration tests: starts a real Pavilion (HTTP server, worker
 * threads, Wasm) on a random loopback port with its own temp directories, and stops it.
 */
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseConfig, type PavilionConfig } from '../../sidecar/src/config/index.ts';
import { defaultBuildDirectory, developmentKey, signBundle, type SignOptions } from '../../sidecar/src/bundles/index.ts';
import type { DecisionSink } from '../../sidecar/src/audit/index.ts';
import { Pavilion, type PavilionOptions } from '../../sidecar/src/pavilion.ts';

/**
 * The lines of `text` that a newline ends: text another process is still writing (a log file,
 * a child's stderr read in chunks) may end inside a line, which is left for the next read.
 */
export function wholeLines(text: string): string[] {
  return text.split('\n').slice(0, -1);
}

export interface RunningPavilion {
  readonly url: string;
  readonly pavilion: Pavilion;
  readonly config: PavilionConfig;
  readonly dir: string;
  /** Decision events written so far. */
  decisions(): Promise<Array<Record<string, unknown>>>;
  stop(): Promise<void>;
}

export interface HarnessOptions {
  /** Raw config on top of the test defaults (http.port 0, temp decision log). */
  readonly config?: Record<string, unknown>;
  /** Bundles to serve, tenant -> archive. Default: the built sample bundles. */
  readonly bundles?: Readonly<Record<string, Buffer>>;
  /**
   * Sign each of `bundles` with a per-tenant test key the sidecar trusts (default true), so
   * tests exercise signature verification. Archives that cannot be read are passed as given.
   */
  readonly signBundles?: boolean;
  /** Replace the configured decision sink (masking still runs in front of it). */
  readonly sink?: DecisionSink;
  /** The sidecar's log lines (default: none). */
  readonly log?: PavilionOptions['log'];
}

/** Sign an archive with the tenant's test key in `keysDirectory` (created on first use). */
export async function signForTest(tenant: string, archive: Buffer, keysDirectory: string): Promise<Buffer> {
  const key = await developmentKey(tenant, dirname(keysDirectory));
  try {
    return await signBundle(archive, { key: key.keyPem, algorithm: key.algorithm, keyId: key.keyId, scope: tenant });
  } catch {
    return archive; // malformed on purpose: the test wants the structural refusal
  }
}

/** How a test signs a tenant's deltas: the development key `signForTest` signs its bundles with. */
export async function deltaSigning(tenant: string, keysDirectory: string): Promise<SignOptions> {
  const key = await developmentKey(tenant, dirname(keysDirectory));
  return { key: key.keyPem, algorithm: key.algorithm, keyId: key.keyId, scope: tenant };
}

export async function startPavilion(options: HarnessOptions = {}): Promise<RunningPavilion> {
  const dir = await mkdtemp(join(tmpdir(), 'pavilion-test-'));
  let bundleDir = defaultBuildDirectory();
  let keysDirectory = join(bundleDir, 'keys');
  if (options.bundles !== undefined) {
    bundleDir = join(dir, 'bundles');
    keysDirectory = join(dir, 'keys');
    for (const [tenant, archive] of Object.entries(options.bundles)) {
      await mkdir(join(bundleDir, tenant), { recursive: true });
      await writeFile(join(bundleDir, tenant, 'bundle.tar.gz'), options.signBundles === false ? archive : await signForTest(tenant, archive, keysDirectory));
    }
  }
  const raw = options.config ?? {};
  const config = parseConfig({
    ...raw,
    http: { host: '127.0.0.1', port: 0, ...(raw['http'] as object | undefined) },
    engine: { workers: 2, ...(raw['engine'] as object | undefined) },
    // no directory watching unless a test asks for it (tests swap bundle files themselves)
    bundles: { directory: bundleDir, keysDirectory, persistDirectory: join(dir, 'persisted'), watchIntervalMs: 0, ...(raw['bundles'] as object | undefined) },
    decisionLog: { sink: 'file', path: join(dir, 'decisions.ndjson'), ...(raw['decisionLog'] as object | undefined) },
  });
  const pavilion = new Pavilion(config, { ...(options.sink === undefined ? {} : { sink: options.sink }), ...(options.log === undefined ? {} : { log: options.log }) });
  await pavilion.start();
  const { port } = pavilion.api.address();
  let stopped = false;
  return {
    url: `http://127.0.0.1:${port}`,
    pavilion,
    config,
    dir,
    async decisions() {
      let text = '';
      try {
        text = await readFile(config.decisionLog.path, 'utf8');
      } catch {
        return [];
      }
      // the sink may be appending while this reads
      return wholeLines(text).filter((line) => line !== '').map((line) => JSON.parse(line) as Record<string, unknown>);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await pavilion.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface JsonResponse {
  readonly status: number;
  readonly headers: Headers;
  readonly body: Record<string, unknown>;
}

/** POST JSON (or a raw string body) and parse the JSON answer. */
export async function post(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<JsonResponse> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: text === '' ? {} : JSON.parse(text) };
}

export async function get(url: string, headers: Record<string, string> = {}): Promise<JsonResponse> {
  const response = await fetch(url, { headers });
  const text = await response.text();
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(text);
  } catch {
    body = { text };
  }
  return { status: response.status, headers: response.headers, body };
}
