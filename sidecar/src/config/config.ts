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

import { TENANT_ID_PATTERN } from '../lib/tenant-id.ts';
import { parseCredentialPolicy, type CredentialPolicy } from '../credentials/index.ts';

export { TENANT_ID_PATTERN };

export interface TenantConfig {
  readonly id: string;
  /** Data path prefix the tenant's bundle may own (default: the id). */
  readonly namespace: string;
}

/** Per-tenant settings of Envoy ext_authz checks (the `extAuthz` section, sidecar/src/extauthz). */
export interface ExtAuthzTenantConfig {
  /** Decision path, e.g. `bank/envoy/authz/allow` (default `<tenant>/envoy/authz/allow`). */
  readonly path: string;
  /** Always allow, but log the real decision. */
  readonly dryRun: boolean;
  /** Leave `parsed_body` and `truncated_body` out of the input document. */
  readonly skipRequestBodyParse: boolean;
  /** Request bodies longer than this are cut to it and marked `truncated_body`. */
  readonly maxRequestBodyBytes: number;
  /** HTTP status Envoy sends downstream when a check fails (error, deadline, unknown tenant). */
  readonly failureStatus: number;
  /** Per-check deadline; a well-formed failure response is sent when it passes. */
  readonly timeoutMs: number;
}

/** Where a check's tenant comes from: never guessed, always one configured place. */
export type ExtAuthzTenantSource =
  | { readonly kind: 'header'; readonly header: string }
  | { readonly kind: 'contextExtension'; readonly key: string }
  | { readonly kind: 'destination'; readonly map: Readonly<Record<string, string>> }
  | { readonly kind: 'fixed'; readonly tenant: string };

export interface ExtAuthzConfig {
  readonly grpc: { readonly enabled: boolean; readonly host: string; readonly port: number; readonly maxReceiveMessageBytes: number };
  readonly http: { readonly enabled: boolean; readonly pathPrefix: string };
  readonly tenantFrom: ExtAuthzTenantSource;
  /** Settings for tenants without an entry in `tenants` (their path is `<tenant>/envoy/authz/allow`). */
  readonly defaults: Omit<ExtAuthzTenantConfig, 'path'>;
  readonly tenants: Readonly<Record<string, ExtAuthzTenantConfig>>;
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
    readonly cache: { readonly enabled: boolean; readonly maxEntries: number; readonly maxBytes: number; readonly maxKeyBytes: number };
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
  /** Envoy ext_authz (gRPC and HTTP service); absent when the section is not configured. */
  readonly extAuthz?: ExtAuthzConfig;
  /** Verifiable credentials (sidecar/src/credentials); absent when the section is not configured. */
  readonly credentials?: CredentialsConfig;
}

/** The `credentials` section: per-tenant credential policies and how requests carry credentials. */
export interface CredentialsConfig {
  /** Worker threads verifying proofs (0: on the event loop). */
  readonly proofWorkers: number;
  readonly proofJobTimeoutMs: number;
  readonly refreshIntervalMs: number;
  readonly maxCredentialsPerRequest: number;
  readonly tenants: readonly CredentialPolicy[];
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
      cache: { enabled: true, maxEntries: 100_000, maxBytes: 8 * MiB, maxKeyBytes: 16 * 1024 },
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
  // typed arrays (credential policies hold file bytes) cannot be frozen; they are copies nobody shares
  if (typeof value === 'object' && value !== null && !ArrayBuffer.isView(value)) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

/** Validate a raw config object (from JSON) on top of the defaults. `baseDir` resolves relative paths. */
export function parseConfig(raw: unknown, baseDir: string = process.cwd(), env: NodeJS.ProcessEnv = {}): PavilionConfig {
  const d = defaultConfig();
  const root = objectAt(raw ?? {}, '$');
  refuseUnknown(root, ['labels', 'http', 'engine', 'bundles', 'decisionLog', 'tenants', 'shutdownTimeoutMs', 'extAuthz', 'credentials'], '$');
  const p = (file: string): string => (isAbsolute(file) ? file : resolve(baseDir, file));

  const labels = section(root, 'labels', '$', ['id', 'version']);
  const http = section(root, 'http', '$', [
    'host', 'port', 'maxBodyBytes', 'maxInputDepth', 'tenantHeader', 'requestTimeoutMs', 'keepAliveTimeoutMs',
  ]);
  const engine = section(root, 'engine', '$', [
    'workers', 'evaluationTimeoutMs', 'maxQueuedEvaluations', 'memoryInitialPages', 'memoryMaxBytes', 'cache',
  ]);
  const cache = section(engine, 'cache', '$.engine', ['enabled', 'maxEntries', 'maxBytes', 'maxKeyBytes']);
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

  // An empty override is unset: `PAVILION_HTTP_HOST=` must not bind every interface.
  const hostOverride = env['PAVILION_HTTP_HOST'] === '' ? undefined : env['PAVILION_HTTP_HOST'];
  const host = hostOverride ?? str(http, 'host', '$.http', d.http.host);
  const portText = env['PAVILION_HTTP_PORT'] === '' ? undefined : env['PAVILION_HTTP_PORT'];
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
        maxBytes: int(cache, 'maxBytes', '$.engine.cache', d.engine.cache.maxBytes, 0, 64 * 1024 * MiB),
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
    ...(root['extAuthz'] === undefined ? {} : { extAuthz: parseExtAuthz(root['extAuthz']) }),
    ...(root['credentials'] === undefined ? {} : { credentials: parseCredentials(root['credentials'], p) }),
  });
}

/** The `credentials` section (see README, "Verifiable credentials"); files resolve like other paths. */
function parseCredentials(raw: unknown, resolvePath: (file: string) => string): CredentialsConfig {
  const root = objectAt(raw, '$.credentials');
  refuseUnknown(root, ['proofWorkers', 'proofJobTimeoutMs', 'refreshIntervalMs', 'maxCredentialsPerRequest', 'tenants'], '$.credentials');
  const tenantsRaw = objectAt(root['tenants'] ?? {}, '$.credentials.tenants');
  const tenants: CredentialPolicy[] = [];
  for (const [id, policy] of Object.entries(tenantsRaw)) {
    if (!TENANT_ID_PATTERN.test(id)) fail(`$.credentials.tenants.${id}`, `tenant ids must match ${TENANT_ID_PATTERN.source}`);
    tenants.push(parseCredentialPolicy(id, policy, (file) => new Uint8Array(readFileSync(resolvePath(file))), resolvePath));
  }
  return {
    proofWorkers: int(root, 'proofWorkers', '$.credentials', 1, 0, 64),
    proofJobTimeoutMs: int(root, 'proofJobTimeoutMs', '$.credentials', 2_000, 10, 60_000),
    refreshIntervalMs: int(root, 'refreshIntervalMs', '$.credentials', 30_000, 1_000, 3_600_000),
    maxCredentialsPerRequest: int(root, 'maxCredentialsPerRequest', '$.credentials', 8, 1, 256),
    tenants,
  };
}

const EXTAUTHZ_TENANT_KEYS = ['path', 'dryRun', 'skipRequestBodyParse', 'maxRequestBodyBytes', 'failureStatus', 'timeoutMs'] as const;
const HTTP_HEADER_NAME = /^[!#$%&'*+.^_`|~0-9a-z-]+$/;
const RESERVED_PREFIXES = ['/v1', '/health', '/metrics'];

function extAuthzTenantSettings(obj: Json, path: string, fallback: Omit<ExtAuthzTenantConfig, 'path'>): Omit<ExtAuthzTenantConfig, 'path'> {
  return {
    dryRun: bool(obj, 'dryRun', path, fallback.dryRun),
    skipRequestBodyParse: bool(obj, 'skipRequestBodyParse', path, fallback.skipRequestBodyParse),
    maxRequestBodyBytes: int(obj, 'maxRequestBodyBytes', path, fallback.maxRequestBodyBytes, 0, 1024 * MiB),
    failureStatus: int(obj, 'failureStatus', path, fallback.failureStatus, 400, 599),
    timeoutMs: int(obj, 'timeoutMs', path, fallback.timeoutMs, 1, 60_000),
  };
}

/** The `extAuthz` section (see README, "Envoy / Istio ext_authz"). */
function parseExtAuthz(raw: unknown): ExtAuthzConfig {
  const root = objectAt(raw, '$.extAuthz');
  refuseUnknown(root, ['grpc', 'http', 'tenantFrom', 'tenants', ...EXTAUTHZ_TENANT_KEYS.filter((k) => k !== 'path')], '$.extAuthz');
  const grpc = section(root, 'grpc', '$.extAuthz', ['enabled', 'host', 'port', 'maxReceiveMessageBytes']);
  const http = section(root, 'http', '$.extAuthz', ['enabled', 'pathPrefix']);
  const pathPrefix = str(http, 'pathPrefix', '$.extAuthz.http', '/ext_authz');
  if (!/^(\/[A-Za-z0-9._~-]+)+$/.test(pathPrefix)) fail('$.extAuthz.http.pathPrefix', "must look like '/ext_authz' (segments, no trailing slash)");
  if (RESERVED_PREFIXES.some((r) => pathPrefix === r || pathPrefix.startsWith(`${r}/`))) {
    fail('$.extAuthz.http.pathPrefix', `must not shadow the API's own routes (${RESERVED_PREFIXES.join(', ')})`);
  }

  if (root['tenantFrom'] === undefined) {
    fail('$.extAuthz.tenantFrom', 'is required: {"header": ...}, {"contextExtension": ...}, {"destination": {...}} or {"fixed": ...}');
  }
  const from = objectAt(root['tenantFrom'], '$.extAuthz.tenantFrom');
  const kinds = Object.keys(from);
  if (kinds.length !== 1) fail('$.extAuthz.tenantFrom', 'must name exactly one of header, contextExtension, destination, fixed');
  let tenantFrom: ExtAuthzTenantSource;
  switch (kinds[0]) {
    case 'header': {
      const header = str(from, 'header', '$.extAuthz.tenantFrom', '').toLowerCase();
      if (!HTTP_HEADER_NAME.test(header)) fail('$.extAuthz.tenantFrom.header', 'must be an HTTP header name');
      tenantFrom = { kind: 'header', header };
      break;
    }
    case 'contextExtension':
      tenantFrom = { kind: 'contextExtension', key: str(from, 'contextExtension', '$.extAuthz.tenantFrom', '') };
      break;
    case 'destination': {
      const map = objectAt(from['destination'], '$.extAuthz.tenantFrom.destination');
      if (Object.keys(map).length === 0) fail('$.extAuthz.tenantFrom.destination', 'must map at least one address or host to a tenant');
      const out: Record<string, string> = {};
      for (const [key, value] of Object.entries(map)) {
        if (typeof value !== 'string' || !TENANT_ID_PATTERN.test(value)) {
          fail(`$.extAuthz.tenantFrom.destination.${key}`, `must be a tenant id matching ${TENANT_ID_PATTERN.source}`);
        }
        out[key.toLowerCase()] = value;
      }
      tenantFrom = { kind: 'destination', map: out };
      break;
    }
    case 'fixed': {
      const tenant = str(from, 'fixed', '$.extAuthz.tenantFrom', '');
      if (!TENANT_ID_PATTERN.test(tenant)) fail('$.extAuthz.tenantFrom.fixed', `must match ${TENANT_ID_PATTERN.source}`);
      tenantFrom = { kind: 'fixed', tenant };
      break;
    }
    default:
      fail(`$.extAuthz.tenantFrom.${kinds[0] ?? ''}`, 'unknown key; use header, contextExtension, destination or fixed');
  }

  const defaults = extAuthzTenantSettings(root, '$.extAuthz', {
    dryRun: false,
    skipRequestBodyParse: false,
    maxRequestBodyBytes: 1 * MiB,
    failureStatus: 403,
    timeoutMs: 200,
  });
  const tenantsRaw = objectAt(root['tenants'] ?? {}, '$.extAuthz.tenants');
  const tenants: Record<string, ExtAuthzTenantConfig> = {};
  for (const [id, value] of Object.entries(tenantsRaw)) {
    const path = `$.extAuthz.tenants.${id}`;
    if (!TENANT_ID_PATTERN.test(id)) fail(path, `tenant ids must match ${TENANT_ID_PATTERN.source}`);
    const t = objectAt(value, path);
    refuseUnknown(t, EXTAUTHZ_TENANT_KEYS, path);
    const decisionPath = str(t, 'path', path, `${id}/envoy/authz/allow`).replace(/^\/+|\/+$/g, '');
    if (decisionPath === '' || decisionPath.split('/').some((s) => s === '')) fail(`${path}.path`, 'must be a slash-separated decision path');
    tenants[id] = { path: decisionPath, ...extAuthzTenantSettings(t, path, defaults) };
  }

  return {
    grpc: {
      enabled: bool(grpc, 'enabled', '$.extAuthz.grpc', true),
      host: str(grpc, 'host', '$.extAuthz.grpc', '127.0.0.1'),
      port: int(grpc, 'port', '$.extAuthz.grpc', 9191, 0, 65535),
      maxReceiveMessageBytes: int(grpc, 'maxReceiveMessageBytes', '$.extAuthz.grpc', 16 * MiB, 1024, 1024 * MiB),
    },
    http: { enabled: bool(http, 'enabled', '$.extAuthz.http', true), pathPrefix },
    tenantFrom,
    defaults,
    tenants,
  };
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
