/**
 * Configuration: parsed once, validated, given defaults, frozen. Every number carries its
 * unit in its name. Unknown keys are refused (a typo must not silently fall back to a
 * default). Sources, later ones winning: built-in defaults, the JSON file named by
 * `PAVILION_CONFIG` (or passed explicitly), then a few environment overrides for the
 * things operators change most (`PAVILION_HTTP_HOST`, `PAVILION_HTTP_PORT`).
 */
import { availableParallelism } from 'node:os';
import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import { REPO_ROOT } from '../lib/tools.ts';

export const TENANT_ID_PATTERN = /^[a-z][a-z0-9_]{0,62}$/;

export interface TenantConfig {
  readonly id: string;
  /** Data path prefix the tenant's bundle may own (default: the id). */
  readonly namespace: string;
}

export interface PavilionConfig {
  readonly labels: { readonly id: string; readonly version: string };
  readonly http: {
    readonly host: string;
    readonly port: number;
    readonly maxBodyBytes: number;
    readonly maxInputDepth: number;
    readonly tenantHeader: string;
    readonly requestTimeoutMs: number;
    readonly keepAliveTimeoutMs: number;
  };
  readonly engine: {
    readonly workers: number;
    readonly evaluationTimeoutMs: number;
    readonly maxQueuedEvaluations: number;
    readonly memoryInitialPages: number;
    readonly memoryMaxBytes: number;
    readonly cache: { readonly enabled: boolean; readonly maxEntries: number; readonly maxKeyBytes: number };
  };
  readonly bundles: {
    readonly directory: string;
    readonly maxCompressedBytes: number;
    readonly maxUncompressedBytes: number;
  };
  readonly decisionLog: {
    readonly sink: 'file' | 'none';
    readonly path: string;
  };
  /** Empty: every tenant found in the bundle directory. */
  readonly tenants: readonly TenantConfig[];
  readonly shutdownTimeoutMs: number;
}

const MiB = 1024 * 1024;

export function defaultConfig(): PavilionConfig {
  return {
    labels: { id: 'pavilion-local', version: '0.1.0' },
    http: {
      host: '127.0.0.1',
      port: 8181,
      maxBodyBytes: 1 * MiB,
      maxInputDepth: 64,
      tenantHeader: 'x-pavilion-tenant',
      requestTimeoutMs: 10_000,
      keepAliveTimeoutMs: 65_000,
    },
    engine: {
      workers: Math.max(1, availableParallelism()),
      evaluationTimeoutMs: 250,
      maxQueuedEvaluations: 10_000,
      memoryInitialPages: 5,
      memoryMaxBytes: 128 * MiB,
      cache: { enabled: true, maxEntries: 100_000, maxKeyBytes: 16 * 1024 },
    },
    bundles: {
      directory: resolve(REPO_ROOT, 'bundles', '.build'),
      maxCompressedBytes: 32 * MiB,
      maxUncompressedBytes: 128 * MiB,
    },
    decisionLog: { sink: 'file', path: resolve(REPO_ROOT, 'var', 'decisions.ndjson') },
    tenants: [],
    shutdownTimeoutMs: 5_000,
  };
}

type Json = Record<string, unknown>;

function fail(path: string, message: string): never {
  throw new PavilionError(ErrorCodes.CONFIG_INVALID, `config ${path}: ${message}`);
}

function objectAt(value: unknown, path: string): Json {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(path, 'must be an object');
  return value as Json;
}

function refuseUnknown(obj: Json, known: readonly string[], path: string): void {
  for (const key of Object.keys(obj)) if (!known.includes(key)) fail(`${path}.${key}`, 'unknown key');
}

function int(obj: Json, key: string, path: string, fallback: number, min: number, max: number): number {
  const value = obj[key];
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    fail(`${path}.${key}`, `must be an integer between ${min} and ${max}`);
  }
  return value;
}

function str(obj: Json, key: string, path: string, fallback: string): string {
  const value = obj[key];
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || value === '') fail(`${path}.${key}`, 'must be a non-empty string');
  return value;
}

function bool(obj: Json, key: string, path: string, fallback: boolean): boolean {
  const value = obj[key];
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') fail(`${path}.${key}`, 'must be a boolean');
  return value;
}

function section(obj: Json, key: string, path: string, known: readonly string[]): Json {
  const value = obj[key] ?? {};
  const section = objectAt(value, `${path}.${key}`);
  refuseUnknown(section, known, `${path}.${key}`);
  return section;
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

/** Validate a raw config object (from JSON) on top of the defaults. `baseDir` resolves relative paths. */
export function parseConfig(raw: unknown, baseDir: string = process.cwd(), env: NodeJS.ProcessEnv = {}): PavilionConfig {
  const d = defaultConfig();
  const root = objectAt(raw ?? {}, '$');
  refuseUnknown(root, ['labels', 'http', 'engine', 'bundles', 'decisionLog', 'tenants', 'shutdownTimeoutMs'], '$');
  const p = (file: string): string => (isAbsolute(file) ? file : resolve(baseDir, file));

  const labels = section(root, 'labels', '$', ['id', 'version']);
  const http = section(root, 'http', '$', [
    'host', 'port', 'maxBodyBytes', 'maxInputDepth', 'tenantHeader', 'requestTimeoutMs', 'keepAliveTimeoutMs',
  ]);
  const engine = section(root, 'engine', '$', [
    'workers', 'evaluationTimeoutMs', 'maxQueuedEvaluations', 'memoryInitialPages', 'memoryMaxBytes', 'cache',
  ]);
  const cache = section(engine, 'cache', '$.engine', ['enabled', 'maxEntries', 'maxKeyBytes']);
  const bundles = section(root, 'bundles', '$', ['directory', 'maxCompressedBytes', 'maxUncompressedBytes']);
  const decisionLog = section(root, 'decisionLog', '$', ['sink', 'path']);

  const sink = str(decisionLog, 'sink', '$.decisionLog', d.decisionLog.sink);
  if (sink !== 'file' && sink !== 'none') fail('$.decisionLog.sink', "must be 'file' or 'none'");

  const tenantsRaw = root['tenants'] ?? [];
  if (!Array.isArray(tenantsRaw)) fail('$.tenants', 'must be an array');
  const seen = new Set<string>();
  const tenants = tenantsRaw.map((t: unknown, i): TenantConfig => {
    const path = `$.tenants[${i}]`;
    const tenant = objectAt(t, path);
    refuseUnknown(tenant, ['id', 'namespace'], path);
    const id = str(tenant, 'id', path, '');
    if (!TENANT_ID_PATTERN.test(id)) fail(`${path}.id`, `must match ${TENANT_ID_PATTERN.source}`);
    if (seen.has(id)) fail(`${path}.id`, `duplicate tenant ${id}`);
    seen.add(id);
    return { id, namespace: str(tenant, 'namespace', path, id) };
  });

  const host = env['PAVILION_HTTP_HOST'] ?? str(http, 'host', '$.http', d.http.host);
  const portText = env['PAVILION_HTTP_PORT'];
  const port = portText === undefined
    ? int(http, 'port', '$.http', d.http.port, 0, 65535)
    : int({ port: Number(portText) }, 'port', 'PAVILION_HTTP_PORT', d.http.port, 0, 65535);

  const memoryInitialPages = int(engine, 'memoryInitialPages', '$.engine', d.engine.memoryInitialPages, 1, 65536);
  const memoryMaxBytes = int(engine, 'memoryMaxBytes', '$.engine', d.engine.memoryMaxBytes, 1 * MiB, 4096 * MiB);
  if (memoryMaxBytes < memoryInitialPages * 65536) fail('$.engine.memoryMaxBytes', 'is below memoryInitialPages');
  const maxCompressedBytes = int(bundles, 'maxCompressedBytes', '$.bundles', d.bundles.maxCompressedBytes, 1024, 4096 * MiB);
  const maxUncompressedBytes = int(bundles, 'maxUncompressedBytes', '$.bundles', d.bundles.maxUncompressedBytes, 1024, 8192 * MiB);
  if (maxUncompressedBytes < maxCompressedBytes) fail('$.bundles.maxUncompressedBytes', 'is below maxCompressedBytes');

  return deepFreeze({
    labels: { id: str(labels, 'id', '$.labels', d.labels.id), version: str(labels, 'version', '$.labels', d.labels.version) },
    http: {
      host,
      port,
      maxBodyBytes: int(http, 'maxBodyBytes', '$.http', d.http.maxBodyBytes, 1024, 1024 * MiB),
      maxInputDepth: int(http, 'maxInputDepth', '$.http', d.http.maxInputDepth, 2, 10_000),
      tenantHeader: str(http, 'tenantHeader', '$.http', d.http.tenantHeader).toLowerCase(),
      requestTimeoutMs: int(http, 'requestTimeoutMs', '$.http', d.http.requestTimeoutMs, 100, 600_000),
      keepAliveTimeoutMs: int(http, 'keepAliveTimeoutMs', '$.http', d.http.keepAliveTimeoutMs, 100, 600_000),
    },
    engine: {
      workers: int(engine, 'workers', '$.engine', d.engine.workers, 1, 256),
      evaluationTimeoutMs: int(engine, 'evaluationTimeoutMs', '$.engine', d.engine.evaluationTimeoutMs, 5, 60_000),
      maxQueuedEvaluations: int(engine, 'maxQueuedEvaluations', '$.engine', d.engine.maxQueuedEvaluations, 1, 10_000_000),
      memoryInitialPages,
      memoryMaxBytes,
      cache: {
        enabled: bool(cache, 'enabled', '$.engine.cache', d.engine.cache.enabled),
        maxEntries: int(cache, 'maxEntries', '$.engine.cache', d.engine.cache.maxEntries, 0, 100_000_000),
        maxKeyBytes: int(cache, 'maxKeyBytes', '$.engine.cache', d.engine.cache.maxKeyBytes, 0, 64 * MiB),
      },
    },
    bundles: {
      directory: bundles['directory'] === undefined ? d.bundles.directory : p(str(bundles, 'directory', '$.bundles', '')),
      maxCompressedBytes,
      maxUncompressedBytes,
    },
    decisionLog: {
      sink,
      path: decisionLog['path'] === undefined ? d.decisionLog.path : p(str(decisionLog, 'path', '$.decisionLog', '')),
    },
    tenants,
    shutdownTimeoutMs: int(root, 'shutdownTimeoutMs', '$', d.shutdownTimeoutMs, 0, 600_000),
  });
}

/** Load from `PAVILION_CONFIG` (or `file`), apply environment overrides. */
export function loadConfig(file: string | undefined = process.env['PAVILION_CONFIG'], env: NodeJS.ProcessEnv = process.env): PavilionConfig {
  if (file === undefined || file === '') return parseConfig({}, process.cwd(), env);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new PavilionError(ErrorCodes.CONFIG_INVALID, `cannot read config file ${file}: ${describeThrown(error)}`, { cause: error });
  }
  return parseConfig(raw, resolve(file, '..'), env);
}
