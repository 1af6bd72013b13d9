/**
 * Configuration: parsed once, validated, given defaults, frozen. Every number carries its
 * unit in its name. Unknown keys are refused (a typo must not silently fall back to a
 * default). Sources, later ones winning: built-in defaults, the JSON file named by
 * `PAVILION_CONFIG` (or passed explicitly), then the environment overrides of
 * `ENVIRONMENT_OVERRIDES` (`PAVILION_HTTP_PORT`, `PAVILION_NATS_URL`, ...).
 */
import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import { REPO_ROOT } from '../lib/tools.ts';
import { bool, deepFreeze, fail, int, objectAt, refuseUnknown, section, str, type Json } from '../lib/config-fields.ts';

import { TENANT_ID_PATTERN } from '../lib/tenant-id.ts';
import { parseFieldPointer } from '../lib/field-pointer.ts';
import { parseCredentialPolicy, type CredentialPolicy } from '../credentials/gate.ts';

export { TENANT_ID_PATTERN };

/**
 * Default of `bundles.persistDelayMs` (and `TenantManagerOptions.persistDelayMs`). A
 * rollout reaches every sidecar at the same moment; the write of each one's snapshot (four
 * files, three fsyncs) would compete with the activations still running on shared cores.
 * Half a second to a second later they are done; the price is that a crash within that
 * second, followed by a restart with NATS unreachable, serves the previous revision.
 */
export const DEFAULT_PERSIST_DELAY_MS = 500;

export interface TenantConfig {
  readonly id: string;
  /** Data path prefix the tenant's bundle may own (default: the id). */
  readonly namespace: string;
  /** Ids of the keys (from `keys` or the keys directory) this tenant's bundles may be signed with (default: [id]). */
  readonly keys: readonly string[];
  /** The `scope` claim a signature must carry (default: the id). */
  readonly scope: string;
  /** Development only: accept this tenant's bundles without `.signatures.json`. */
  readonly allowUnsigned: boolean;
  /**
   * A file of bearer tokens (one a line) that the tenant's API routes require in
   * `Authorization: Bearer ...` (sidecar/src/api/tenant-tokens.ts); none: no token needed,
   * unless `http.authentication` is 'token'.
   */
  readonly apiTokensFile?: string;
  /**
   * The decision `POST /` answers for this tenant (OPA's `default_decision`, there
   * `/system/main`): a path under the namespace, default `<namespace>/system/main`.
   */
  readonly defaultDecision: string;
}

/** The defaults a tenant found in the bundle source (not listed in `tenants`) gets. */
export function discoveredTenant(id: string): TenantConfig {
  return { id, namespace: id, keys: [id], scope: id, allowUnsigned: false, defaultDecision: `${id}/system/main` };
}

/** A bundle verification key, as in OPA's `keys` config: PEM (or an HMAC secret) inline or in a file. */
export interface KeyConfig {
  readonly algorithm?: string;
  readonly file?: string;
  readonly key?: string;
}

/**
 * Redis for state the replicas of a deployment share: one-time credential challenges and
 * nonces (a presentation accepted by one replica is a replay at the others).
 */
export interface RedisConfig {
  /** redis://, rediss:// (TLS) or unix:// URL. */
  readonly url: string;
  readonly password?: string;
  /** Prefix of every key Pavilion writes (default `pavilion`). */
  readonly keyPrefix: string;
  readonly connectTimeoutMs: number;
  /** A command not answered within this is an error (the presentation is refused). */
  readonly commandTimeoutMs: number;
  /** Live one-time nonces (and, apart, minted challenges) each tenant may hold in Redis (default 100,000). */
  readonly maxEntriesPerTenant: number;
}

/** NATS JetStream bundle distribution (sidecar/src/distribution). */
export interface NatsConfig {
  readonly servers: readonly string[];
  /** Client name (default: the sidecar's label id). */
  readonly name: string;
  readonly user?: string;
  readonly password?: string;
  readonly token?: string;
  /** A NATS credentials file (user JWT + nkey seed), read at connect. */
  readonly credsFile?: string;
  /** KV bucket of tenant pointers (its history is the deploy history). */
  readonly pointerBucket: string;
  /** Object Store bucket per tenant: `<objectBucketPrefix><tenant>`. */
  readonly objectBucketPrefix: string;
  /** Subjects: `<subjectPrefix>.status.<sidecar>` and `<subjectPrefix>.delta.<tenant>`. */
  readonly subjectPrefix: string;
  /** Reply subjects prefix (default `_INBOX`); per-user prefixes let NATS permissions keep replies private. */
  readonly inboxPrefix?: string;
  readonly connectTimeoutMs: number;
  /** Deadline for downloading one bundle; a stalled download fails instead of blocking the tenant. */
  readonly fetchTimeoutMs: number;
  readonly reconnectWaitMs: number;
  readonly reconnectJitterMs: number;
  readonly statusIntervalMs: number;
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
  /**
   * Audit log receipts on check responses (needs `decisionLog.sink: "audit"`): 'on-request'
   * when the checked request carries `x-pavilion-receipt: 1`, 'always' on every check.
   */
  readonly receipts: 'on-request' | 'always';
}

/** Where a check's tenant comes from: never guessed, always one configured place. */
export type ExtAuthzTenantSource =
  | { readonly kind: 'header'; readonly header: string }
  | { readonly kind: 'contextExtension'; readonly key: string }
  | {
      readonly kind: 'destination';
      /** `ip:port` (IPv6 unbracketed, as Envoy's socket address reads) -> tenant: matched against the destination address only. */
      readonly addresses: Readonly<Record<string, string>>;
      /** Host names (lower-cased, with a port when given) -> tenant: matched against the request host only. */
      readonly hosts: Readonly<Record<string, string>>;
    }
  | { readonly kind: 'fixed'; readonly tenant: string };

export interface ExtAuthzConfig {
  readonly grpc: {
    readonly enabled: boolean;
    readonly host: string;
    readonly port: number;
    readonly maxReceiveMessageBytes: number;
    /** Open connections the gRPC listener keeps; past it a new connection is closed at once. */
    readonly maxConnections: number;
    /** A connection whose client has not sent HTTP/2's preface and SETTINGS within this is closed (it would hold a slot of maxConnections for nothing). */
    readonly handshakeTimeoutMs: number;
  };
  readonly http: { readonly enabled: boolean; readonly pathPrefix: string };
  readonly tenantFrom: ExtAuthzTenantSource;
  /** Settings for tenants without an entry in `tenants` (their path is `<tenant>/envoy/authz/allow`). */
  readonly defaults: Omit<ExtAuthzTenantConfig, 'path'>;
  readonly tenants: Readonly<Record<string, ExtAuthzTenantConfig>>;
}

/** Checkpoint signer of the audit log: the embedded software key, or a PKCS#11 token. */
export type AuditSignerConfig =
  | { readonly kind: 'software'; readonly keyFile: string }
  | {
      readonly kind: 'pkcs11';
      readonly modulePath: string;
      readonly tokenLabel: string;
      readonly keyLabel: string;
      readonly pinEnv: string;
      readonly generateKey: boolean;
      /** Accept a key with CKA_NEVER_EXTRACTABLE false (imported); default false. */
      readonly allowImportedKey: boolean;
      /** Each call into the token (the start; a signature, with a session reopen) fails after this. */
      readonly operationTimeoutMs: number;
    };

/**
 * Where checkpoints are anchored (`decisionLog.audit.anchor`): a local hash-chained file (the
 * default), a PavilionAnchor contract on an EVM chain, or nowhere. The EVM submitter key is
 * read from `privateKeyFile` or the variable `privateKeyEnv` names, never from the config.
 */
export type AuditAnchorConfig =
  | { readonly kind: 'none' }
  | { readonly kind: 'file'; readonly path: string }
  | {
      readonly kind: 'evm';
      readonly rpcUrl: string;
      readonly chainId: number;
      readonly contract: string;
      readonly privateKeyFile?: string;
      readonly privateKeyEnv: string;
      readonly confirmations: number;
      readonly receiptTimeoutMs: number;
      readonly submitTimeoutMs: number;
      readonly maxAttempts: number;
      readonly feeBumpPercent: number;
      readonly maxFeePerGasGwei?: number;
      readonly pollingIntervalMs: number;
      readonly requestTimeoutMs: number;
    };

/** `decisionLog.audit` (sidecar/src/audit): per-tenant WAL + Merkle tree + signed checkpoints. */
export interface AuditLogConfig {
  readonly directory: string;
  readonly fsync: 'always' | 'interval' | 'never';
  readonly fsyncIntervalMs: number;
  readonly groupCommitMaxDelayMs: number;
  readonly groupCommitMaxBytes: number;
  /** Per tenant log. */
  readonly maxDiskBytes: number;
  readonly onFull: 'block' | 'refuse';
  readonly blockTimeoutMs: number;
  readonly maxEventBytes: number;
  readonly checkpointEveryEvents: number;
  readonly checkpointIntervalMs: number;
  /**
   * Seal a tenant's live log into an archived epoch once it holds this many bytes, and start
   * the next. Absent, 0 or null: never (archived epochs are kept outside the budget, so the
   * volume must be sized for them; half of maxDiskBytes is the value to choose, see
   * docs/audit-log.md). With `stream.enabled` an epoch is sealed only once JetStream has
   * acknowledged all of it, and the forwarder follows the tenant into the next.
   */
  readonly rotateAtBytes?: number;
  /**
   * Retention of sealed epochs: keep this many archived epochs per tenant whole and prune the
   * older ones to what keeps the chain verifiable (their final signed checkpoint and link, a
   * PRUNED record; docs/audit-log.md, "Retention"). 0, the default: keep every epoch. With
   * `stream.enabled`, an epoch JetStream did not hold all of when it was sealed is never pruned.
   */
  readonly keepArchivedEpochs: number;
  /**
   * Seal a tenant's live epoch once its oldest decision is this old (measured from the first
   * checkpoint that covers it), whatever its size, so that decisions age out of the live log
   * and retention by age can reach them. 0 (the default): never by age.
   */
  readonly rotateAfterMs: number;
  /**
   * Retention by age: prune an archived epoch once its newest decision is this many days old
   * (its final checkpoint's time). With keepArchivedEpochs, whichever prunes first (as
   * Prometheus' retention.time and retention.size). Needs rotateAfterMs, so that every decision
   * reaches the archive; never pruned earlier by age, and normally within rotateAfterMs +
   * checkpointIntervalMs + two minutes after (docs/audit-log.md, "Retention"). 0 (the
   * default): never.
   */
  readonly keepArchivedDays: number;
  readonly signer: AuditSignerConfig;
  /** Forward every logged decision to NATS JetStream (`<nats.subjectPrefix>.decisions.<tenant>`). */
  readonly stream: AuditStreamConfig;
  readonly anchor: AuditAnchorConfig;
}

/** Room left for a streamed event's NATS headers (Nats-Msg-Id and the protocol's own) below max_payload. */
export const STREAM_HEADER_ALLOWANCE_BYTES = 8 * 1024;

/** `decisionLog.audit.stream`: the decision forwarder (uses the `nats` section to connect). */
export interface AuditStreamConfig {
  readonly enabled: boolean;
  /** Publishes awaiting their JetStream ack at once, per tenant. */
  readonly maxInFlight: number;
  /** First wait after a failure; doubles up to 30x while NATS stays away. */
  readonly retryWaitMs: number;
}

/** `decisionLog.privacy`: what happens to an event before any sink sees it. */
export interface DecisionLogPrivacyConfig {
  /** Evaluate each tenant's `<namespace>.system.log.drop` / `.mask` rules as OPA does (when its bundle has them as entrypoints). */
  readonly maskPolicy: boolean;
  /** JSON pointers (under /input or /result; `*` for every element) replaced by keyed pseudonyms. */
  readonly pseudonymiseFields: readonly string[];
  /** Per-tenant lists that replace `pseudonymiseFields` for that tenant. */
  readonly pseudonymiseFieldsByTenant: Readonly<Record<string, readonly string[]>>;
  /** Where the per-tenant pseudonymisation keys live (created on first use, 0600). */
  readonly pseudonymKeyDirectory: string;
}

export interface PavilionConfig {
  readonly labels: { readonly id: string; readonly version: string };
  readonly http: {
    readonly host: string;
    readonly port: number;
    readonly maxBodyBytes: number;
    /** The request line and headers together (a GET's ?input= is in them): Go's and so OPA's 1 MiB, where Node's own is 16 KiB. */
    readonly maxHeaderBytes: number;
    readonly maxInputDepth: number;
    readonly tenantHeader: string;
    readonly requestTimeoutMs: number;
    readonly keepAliveTimeoutMs: number;
    /** Open connections the API listener keeps; past it a new connection is closed at once (sidecar/src/lib/connection-limit.ts). */
    readonly maxConnections: number;
    /**
     * OPA's `--authentication`: 'token' requires every tenant route to carry one of that
     * tenant's bearer tokens (a tenant without `apiTokensFile` cannot be reached); 'off'
     * requires them only of tenants that have an `apiTokensFile`.
     */
    readonly authentication: 'off' | 'token';
  };
  readonly engine: {
    readonly workers: number;
    readonly evaluationTimeoutMs: number;
    readonly maxQueuedEvaluations: number;
    /**
     * Input held by one tenant's evaluations in the worker pool (waiting or being evaluated),
     * at most: the JSON text's length (bytes for ASCII text). Past it, ERR_EVAL_OVERLOADED.
     */
    readonly maxPendingInputBytes: number;
    /**
     * The same for all tenants together (callers that can name any tenant, without API tokens,
     * would otherwise hold tenants x maxPendingInputBytes); past it a tenant holding more than
     * its fair share gets ERR_EVAL_OVERLOADED (worker-pool.ts).
     */
    readonly maxPendingInputBytesTotal: number;
    readonly memoryInitialPages: number;
    readonly memoryMaxBytes: number;
    readonly cache: { readonly enabled: boolean; readonly maxEntries: number; readonly maxBytes: number; readonly maxKeyBytes: number };
  };
  readonly bundles: {
    /** 'directory' (embedded default) or 'nats' (JetStream KV + Object Store, needs `nats`). */
    readonly source: 'directory' | 'nats';
    readonly directory: string;
    readonly maxCompressedBytes: number;
    readonly maxUncompressedBytes: number;
    /** Public keys `<key id>.pub.pem` trusted in addition to `keys` (the sample tenants' dev keys). */
    readonly keysDirectory: string;
    /** Last known good: every activated bundle is kept here and served at start until the source answers. */
    readonly persistDirectory: string;
    /** How long after an activation its bundle is written to persistDirectory (plus up to as much again; 0: within the activation). */
    readonly persistDelayMs: number;
    /** Directory source: how often bundle files are checked for a new build (0: read at start only). */
    readonly watchIntervalMs: number;
  };
  /** Bundle verification keys by key id. */
  readonly keys: Readonly<Record<string, KeyConfig>>;
  readonly nats?: NatsConfig;
  /** Shared state for replicas; absent: in memory (one sidecar). */
  readonly redis?: RedisConfig;
  readonly decisionLog: {
    readonly sink: 'file' | 'none' | 'audit';
    readonly path: string;
    /** The verifiable audit log (`sink: 'audit'`); absent otherwise. */
    readonly audit?: AuditLogConfig;
    readonly privacy: DecisionLogPrivacyConfig;
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
      maxHeaderBytes: 1 * MiB,
      maxInputDepth: 64,
      tenantHeader: 'x-pavilion-tenant',
      requestTimeoutMs: 10_000,
      keepAliveTimeoutMs: 65_000,
      maxConnections: 4096,
      authentication: 'off',
    },
    engine: {
      workers: Math.max(1, availableParallelism()),
      evaluationTimeoutMs: 250,
      maxQueuedEvaluations: 10_000,
      maxPendingInputBytes: 32 * MiB,
      maxPendingInputBytesTotal: 256 * MiB,
      memoryInitialPages: 5,
      memoryMaxBytes: 128 * MiB,
      cache: { enabled: true, maxEntries: 100_000, maxBytes: 8 * MiB, maxKeyBytes: 16 * 1024 },
    },
    bundles: {
      source: 'directory',
      directory: resolve(REPO_ROOT, 'bundles', '.build'),
      maxCompressedBytes: 32 * MiB,
      maxUncompressedBytes: 128 * MiB,
      keysDirectory: resolve(REPO_ROOT, 'bundles', '.build', 'keys'),
      persistDirectory: resolve(REPO_ROOT, 'var', 'bundles'),
      persistDelayMs: DEFAULT_PERSIST_DELAY_MS,
      watchIntervalMs: 1000,
    },
    keys: {},
    decisionLog: {
      // the verifiable audit log (hash-chained WAL, Merkle tree, checkpoints signed with a
      // software key, anchored to a local file); `file` is the NDJSON log without them
      sink: 'audit',
      path: resolve(REPO_ROOT, 'var', 'decisions.ndjson'),
      audit: parseAuditLog({}, (file) => resolve(REPO_ROOT, file)),
      privacy: { maskPolicy: true, pseudonymiseFields: [], pseudonymiseFieldsByTenant: {}, pseudonymKeyDirectory: resolve(REPO_ROOT, 'var', 'pseudonym-keys') },
    },
    tenants: [],
    shutdownTimeoutMs: 5_000,
  };
}

/**
 * An environment variable that overrides one config field (the Helm chart sets these: the HTTP
 * listener, the NATS endpoint and credentials, the mounted bundle keys, Redis). Its value is
 * written into the raw config before parsing, so it is validated like the file's value.
 */
interface EnvironmentOverride {
  readonly name: string;
  readonly section: 'http' | 'nats' | 'redis' | 'bundles';
  readonly key: string;
  /** From the variable's text to the field's JSON value (default: the text). */
  readonly parse?: (text: string, name: string) => unknown;
  /** Only when the config does not set the field itself. */
  readonly unlessConfigured?: boolean;
}

const ENVIRONMENT_OVERRIDES: readonly EnvironmentOverride[] = [
  { name: 'PAVILION_HTTP_HOST', section: 'http', key: 'host' },
  { name: 'PAVILION_HTTP_PORT', section: 'http', key: 'port', parse: integerText },
  { name: 'PAVILION_NATS_URL', section: 'nats', key: 'servers', parse: (text) => text.split(',').map((u) => u.trim()).filter((u) => u !== '') },
  // a NATS endpoint also selects the NATS bundle source, unless the config names a source
  { name: 'PAVILION_NATS_URL', section: 'bundles', key: 'source', parse: () => 'nats', unlessConfigured: true },
  { name: 'PAVILION_NATS_CREDS', section: 'nats', key: 'credsFile' },
  { name: 'PAVILION_BUNDLE_KEYS_DIR', section: 'bundles', key: 'keysDirectory' },
  { name: 'PAVILION_REDIS_URL', section: 'redis', key: 'url' },
  { name: 'PAVILION_REDIS_PASSWORD', section: 'redis', key: 'password' },
];

function integerText(text: string, name: string): number {
  const value = Number(text);
  if (!Number.isInteger(value)) fail(name, 'must be an integer');
  return value;
}

/**
 * Write the set environment overrides into `root` (copying each section it touches). An empty
 * variable is unset: `PAVILION_HTTP_HOST=` must not bind every interface.
 */
function overlayEnvironment(root: Json, env: NodeJS.ProcessEnv): void {
  for (const override of ENVIRONMENT_OVERRIDES) {
    const text = env[override.name];
    if (text === undefined || text === '') continue;
    const path = `$.${override.section}`;
    const target = { ...(root[override.section] === undefined ? {} : objectAt(root[override.section], path)) };
    if (override.unlessConfigured === true && target[override.key] !== undefined) continue;
    target[override.key] = override.parse === undefined ? text : override.parse(text, override.name);
    root[override.section] = target;
  }
}

/** Validate a raw config object (from JSON) on top of the defaults. `baseDir` resolves relative paths. */
export function parseConfig(raw: unknown, baseDir: string = process.cwd(), env: NodeJS.ProcessEnv = {}): PavilionConfig {
  const d = defaultConfig();
  const root = { ...objectAt(raw ?? {}, '$') };
  refuseUnknown(root, ['labels', 'http', 'engine', 'bundles', 'decisionLog', 'tenants', 'shutdownTimeoutMs', 'extAuthz', 'keys', 'nats', 'credentials', 'redis'], '$');
  const p = (file: string): string => (isAbsolute(file) ? file : resolve(baseDir, file));
  overlayEnvironment(root, env);

  const labels = section(root, 'labels', '$', ['id', 'version']);
  const http = section(root, 'http', '$', [
    'host', 'port', 'maxBodyBytes', 'maxHeaderBytes', 'maxInputDepth', 'tenantHeader', 'requestTimeoutMs', 'keepAliveTimeoutMs', 'maxConnections', 'authentication',
  ]);
  const engine = section(root, 'engine', '$', [
    'workers', 'evaluationTimeoutMs', 'maxQueuedEvaluations', 'maxPendingInputBytes', 'maxPendingInputBytesTotal', 'memoryInitialPages', 'memoryMaxBytes', 'cache',
  ]);
  const cache = section(engine, 'cache', '$.engine', ['enabled', 'maxEntries', 'maxBytes', 'maxKeyBytes']);
  const bundles = section(root, 'bundles', '$', ['source', 'directory', 'maxCompressedBytes', 'maxUncompressedBytes', 'keysDirectory', 'persistDirectory', 'persistDelayMs', 'watchIntervalMs']);
  const bundleSource = str(bundles, 'source', '$.bundles', d.bundles.source);
  if (bundleSource !== 'directory' && bundleSource !== 'nats') fail('$.bundles.source', "must be 'directory' or 'nats'");
  if (bundleSource === 'nats' && root['nats'] === undefined) fail('$.bundles.source', "is 'nats' but there is no nats section");
  const keys = parseKeys(root['keys'] ?? {}, p);
  const decisionLog = section(root, 'decisionLog', '$', ['sink', 'path', 'audit', 'privacy']);
  const privacy = parsePrivacy(decisionLog['privacy'] ?? {}, p);

  const sink = str(decisionLog, 'sink', '$.decisionLog', d.decisionLog.sink);
  if (sink !== 'file' && sink !== 'none' && sink !== 'audit') fail('$.decisionLog.sink', "must be 'file', 'none' or 'audit'");
  if (decisionLog['audit'] !== undefined && sink !== 'audit') fail('$.decisionLog.audit', "is only used with sink 'audit'");
  const audit = sink === 'audit' ? parseAuditLog(decisionLog['audit'] ?? {}, p) : undefined;
  if (audit?.stream.enabled === true && root['nats'] === undefined) fail('$.decisionLog.audit.stream.enabled', 'is true but there is no nats section');

  const extAuthz = root['extAuthz'] === undefined ? undefined : parseExtAuthz(root['extAuthz']);
  if (extAuthz !== undefined && sink !== 'audit') {
    // receipts come from the audit log: 'always' without it is a contradiction
    const always = [['$.extAuthz.receipts', extAuthz.defaults.receipts], ...Object.entries(extAuthz.tenants).map(([id, t]) => [`$.extAuthz.tenants.${id}.receipts`, t.receipts])].find(([, r]) => r === 'always');
    if (always !== undefined) fail(always[0] as string, "is 'always' but decisionLog.sink is not 'audit' (receipts come from the audit log)");
  }

  const tenantsRaw = root['tenants'] ?? [];
  if (!Array.isArray(tenantsRaw)) fail('$.tenants', 'must be an array');
  const seen = new Set<string>();
  const tenants = tenantsRaw.map((t: unknown, i): TenantConfig => {
    const path = `$.tenants[${i}]`;
    const tenant = objectAt(t, path);
    refuseUnknown(tenant, ['id', 'namespace', 'keys', 'scope', 'allowUnsigned', 'apiTokensFile', 'defaultDecision'], path);
    const id = str(tenant, 'id', path, '');
    if (!TENANT_ID_PATTERN.test(id)) fail(`${path}.id`, `must match ${TENANT_ID_PATTERN.source}`);
    if (seen.has(id)) fail(`${path}.id`, `duplicate tenant ${id}`);
    seen.add(id);
    const trusted = tenant['keys'] ?? [id];
    if (!Array.isArray(trusted) || !trusted.every((k): k is string => typeof k === 'string' && k !== '')) {
      fail(`${path}.keys`, 'must be an array of key ids');
    }
    const namespace = str(tenant, 'namespace', path, id);
    const bare = (p: string): string => p.replace(/^\/+|\/+$/g, ''); // as OPA's default_decision: a leading slash or none
    const defaultDecision = bare(str(tenant, 'defaultDecision', path, `${bare(namespace)}/system/main`));
    if (defaultDecision.split('/').some((segment) => segment === '') || !`${defaultDecision}/`.startsWith(`${bare(namespace)}/`)) {
      fail(`${path}.defaultDecision`, `must be a slash-separated decision path under the tenant's namespace ${namespace}`);
    }
    return {
      id,
      namespace,
      defaultDecision,
      keys: trusted,
      scope: str(tenant, 'scope', path, id),
      allowUnsigned: bool(tenant, 'allowUnsigned', path, false),
      ...(tenant['apiTokensFile'] === undefined ? {} : { apiTokensFile: p(str(tenant, 'apiTokensFile', path)) }),
    };
  });
  const authentication = oneOf(http, 'authentication', '$.http', d.http.authentication, ['off', 'token'] as const);
  if (authentication === 'token') {
    const without = tenants.findIndex((t) => t.apiTokensFile === undefined);
    if (without >= 0) fail(`$.tenants[${without}].apiTokensFile`, "is required when http.authentication is 'token'");
  }

  const host = str(http, 'host', '$.http', d.http.host);
  const port = int(http, 'port', '$.http', d.http.port, 0, 65535);

  const memoryInitialPages = int(engine, 'memoryInitialPages', '$.engine', d.engine.memoryInitialPages, 1, 65536);
  const memoryMaxBytes = int(engine, 'memoryMaxBytes', '$.engine', d.engine.memoryMaxBytes, 1 * MiB, 4096 * MiB);
  const maxPendingInputBytes = int(engine, 'maxPendingInputBytes', '$.engine', d.engine.maxPendingInputBytes, 1024, 64 * 1024 * MiB);
  // the default total is at least one tenant's bound, so a config that raises only the latter still parses
  const maxPendingInputBytesTotal = int(engine, 'maxPendingInputBytesTotal', '$.engine', Math.max(d.engine.maxPendingInputBytesTotal, maxPendingInputBytes), 1024, 256 * 1024 * MiB);
  if (maxPendingInputBytesTotal < maxPendingInputBytes) fail('$.engine.maxPendingInputBytesTotal', `must be at least maxPendingInputBytes (${maxPendingInputBytes})`);
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
      maxHeaderBytes: int(http, 'maxHeaderBytes', '$.http', d.http.maxHeaderBytes, 16 * 1024, 64 * MiB),
      maxInputDepth: int(http, 'maxInputDepth', '$.http', d.http.maxInputDepth, 2, 10_000),
      tenantHeader: str(http, 'tenantHeader', '$.http', d.http.tenantHeader).toLowerCase(),
      requestTimeoutMs: int(http, 'requestTimeoutMs', '$.http', d.http.requestTimeoutMs, 100, 600_000),
      keepAliveTimeoutMs: int(http, 'keepAliveTimeoutMs', '$.http', d.http.keepAliveTimeoutMs, 100, 600_000),
      maxConnections: int(http, 'maxConnections', '$.http', d.http.maxConnections, 1, 1_000_000),
      authentication,
    },
    engine: {
      workers: int(engine, 'workers', '$.engine', d.engine.workers, 1, 256),
      evaluationTimeoutMs: int(engine, 'evaluationTimeoutMs', '$.engine', d.engine.evaluationTimeoutMs, 5, 60_000),
      maxQueuedEvaluations: int(engine, 'maxQueuedEvaluations', '$.engine', d.engine.maxQueuedEvaluations, 1, 10_000_000),
      maxPendingInputBytes,
      maxPendingInputBytesTotal,
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
      source: bundleSource,
      directory: bundles['directory'] === undefined ? d.bundles.directory : p(str(bundles, 'directory', '$.bundles', '')),
      maxCompressedBytes,
      maxUncompressedBytes,
      keysDirectory: bundles['keysDirectory'] === undefined ? d.bundles.keysDirectory : p(str(bundles, 'keysDirectory', '$.bundles', '')),
      persistDirectory: bundles['persistDirectory'] === undefined ? d.bundles.persistDirectory : p(str(bundles, 'persistDirectory', '$.bundles', '')),
      persistDelayMs: int(bundles, 'persistDelayMs', '$.bundles', d.bundles.persistDelayMs, 0, 60_000),
      watchIntervalMs: int(bundles, 'watchIntervalMs', '$.bundles', d.bundles.watchIntervalMs, 0, 3_600_000),
    },
    keys,
    ...(root['nats'] === undefined ? {} : { nats: parseNats(root['nats'], str(labels, 'id', '$.labels', d.labels.id), p) }),
    ...(root['redis'] === undefined ? {} : { redis: parseRedis(root['redis']) }),
    decisionLog: {
      sink,
      path: decisionLog['path'] === undefined ? d.decisionLog.path : p(str(decisionLog, 'path', '$.decisionLog', '')),
      ...(audit === undefined ? {} : { audit }),
      privacy,
    },
    tenants,
    shutdownTimeoutMs: int(root, 'shutdownTimeoutMs', '$', d.shutdownTimeoutMs, 0, 600_000),
    ...(extAuthz === undefined ? {} : { extAuthz }),
    ...credentialsSection(root['credentials'], bundleSource, p),
  });
}

/**
 * The `credentials` section as configured; without one, and with the embedded directory bundle
 * source, the sample tenants' credential policies (`sampleCredentialsConfig`). A configured
 * section, even `{"tenants": {}}`, replaces the samples entirely; a NATS source never gets them.
 */
function credentialsSection(raw: unknown, bundleSource: 'directory' | 'nats', resolvePath: (file: string) => string): { credentials?: CredentialsConfig } {
  if (raw !== undefined) return { credentials: parseCredentials(raw, resolvePath) };
  const samples = bundleSource === 'directory' ? sampleCredentialsConfig() : undefined;
  return samples === undefined ? {} : { credentials: samples };
}

/** Where the sample tenants' bundle sources live, each with its `credentials/policy.json`. */
export const SAMPLE_BUNDLE_SOURCES_DIRECTORY = resolve(REPO_ROOT, 'bundles');

/**
 * The embedded credentials defaults: for every tenant `<t>` with a committed
 * `bundles/<t>/credentials/policy.json` (what `pavilion credential policy --tenant <t>` prints,
 * beside the context it pins), that policy, files resolved against that folder. The sample
 * issuers' keys derive from public labels: these policies are for the demo only. Undefined when
 * no such file exists (a container image ships no bundle sources).
 */
export function sampleCredentialsConfig(directory: string = SAMPLE_BUNDLE_SOURCES_DIRECTORY): CredentialsConfig | undefined {
  if (!existsSync(directory)) return undefined;
  const tenants: Record<string, unknown> = {};
  for (const tenant of readdirSync(directory).sort()) {
    const file = resolve(directory, tenant, 'credentials', 'policy.json');
    if (!TENANT_ID_PATTERN.test(tenant) || !existsSync(file)) continue;
    try {
      tenants[tenant] = JSON.parse(readFileSync(file, 'utf8'));
    } catch (error) {
      throw new PavilionError(ErrorCodes.CONFIG_INVALID, `cannot read the sample credential policy ${file}: ${describeThrown(error)}`, { cause: error });
    }
  }
  if (Object.keys(tenants).length === 0) return undefined;
  const parsed = parseCredentials({ tenants: {} }, (file) => file);
  return {
    ...parsed,
    tenants: Object.entries(tenants).map(([tenant, policy]) => {
      const folder = resolve(directory, tenant, 'credentials');
      const at = (file: string): string => (isAbsolute(file) ? file : resolve(folder, file));
      return parseCredentialPolicy(tenant, policy, (file) => new Uint8Array(readFileSync(at(file))), at);
    }),
  };
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

function pointerList(value: unknown, path: string): string[] {
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) fail(path, 'must be an array of JSON pointers');
  const list = value as string[];
  list.forEach((pointer, i) => {
    try {
      parseFieldPointer(pointer);
    } catch (error) {
      fail(`${path}[${i}]`, describeThrown(error));
    }
  });
  return [...list];
}

/** The `decisionLog.privacy` section. */
function parsePrivacy(raw: unknown, p: (file: string) => string): DecisionLogPrivacyConfig {
  const path = '$.decisionLog.privacy';
  const o = objectAt(raw, path);
  refuseUnknown(o, ['maskPolicy', 'pseudonymiseFields', 'pseudonymiseFieldsByTenant', 'pseudonymKeyDirectory'], path);
  const byTenantRaw = objectAt(o['pseudonymiseFieldsByTenant'] ?? {}, `${path}.pseudonymiseFieldsByTenant`);
  const byTenant: Record<string, string[]> = {};
  for (const [tenant, list] of Object.entries(byTenantRaw)) {
    if (!TENANT_ID_PATTERN.test(tenant)) fail(`${path}.pseudonymiseFieldsByTenant.${tenant}`, `tenant ids must match ${TENANT_ID_PATTERN.source}`);
    byTenant[tenant] = pointerList(list, `${path}.pseudonymiseFieldsByTenant.${tenant}`);
  }
  return {
    maskPolicy: bool(o, 'maskPolicy', path, true),
    pseudonymiseFields: o['pseudonymiseFields'] === undefined ? [] : pointerList(o['pseudonymiseFields'], `${path}.pseudonymiseFields`),
    pseudonymiseFieldsByTenant: byTenant,
    pseudonymKeyDirectory: o['pseudonymKeyDirectory'] === undefined
      ? resolve(REPO_ROOT, 'var', 'pseudonym-keys')
      : p(str(o, 'pseudonymKeyDirectory', path, '')),
  };
}

function oneOf<T extends string>(obj: Json, key: string, path: string, fallback: T, allowed: readonly T[]): T {
  const value = str(obj, key, path, fallback);
  if (!(allowed as readonly string[]).includes(value)) fail(`${path}.${key}`, `must be one of ${allowed.map((a) => `'${a}'`).join(', ')}`);
  return value as T;
}

/** The `decisionLog.audit` section (see README, "Audit log"). Relative paths resolve like the rest. */
function parseAuditLog(raw: unknown, p: (file: string) => string): AuditLogConfig {
  const path = '$.decisionLog.audit';
  const a = objectAt(raw, path);
  refuseUnknown(a, [
    'directory', 'fsync', 'fsyncIntervalMs', 'groupCommitMaxDelayMs', 'groupCommitMaxBytes', 'maxDiskBytes', 'onFull',
    'blockTimeoutMs', 'maxEventBytes', 'checkpointEveryEvents', 'checkpointIntervalMs', 'rotateAtBytes', 'keepArchivedEpochs', 'rotateAfterMs', 'keepArchivedDays', 'signer', 'stream',
    'anchor',
  ], path);
  const streamRaw = objectAt(a['stream'] ?? {}, `${path}.stream`);
  refuseUnknown(streamRaw, ['enabled', 'maxInFlight', 'retryWaitMs'], `${path}.stream`);
  const stream: AuditStreamConfig = {
    enabled: bool(streamRaw, 'enabled', `${path}.stream`, false),
    maxInFlight: int(streamRaw, 'maxInFlight', `${path}.stream`, 256, 1, 65_536),
    retryWaitMs: int(streamRaw, 'retryWaitMs', `${path}.stream`, 250, 10, 600_000),
  };
  const directory = a['directory'] === undefined ? resolve(REPO_ROOT, 'var', 'audit') : p(str(a, 'directory', path, ''));
  const maxDiskBytes = int(a, 'maxDiskBytes', path, 1024 * MiB, 64 * 1024, Number.MAX_SAFE_INTEGER);
  // Streamed, an event must fit NATS's default max_payload (1 MiB) with its headers, or it
  // could be logged and never published: the default leaves STREAM_HEADER_ALLOWANCE_BYTES.
  const maxEventBytes = int(a, 'maxEventBytes', path, stream.enabled ? 1 * MiB - STREAM_HEADER_ALLOWANCE_BYTES : 1 * MiB, 1024, 64 * MiB);
  const groupCommitMaxBytes = int(a, 'groupCommitMaxBytes', path, 1 * MiB, 4096, 256 * MiB);
  if (maxEventBytes >= maxDiskBytes) fail(`${path}.maxEventBytes`, 'must be below maxDiskBytes');
  const rotateAtBytes = parseRotateAtBytes(a['rotateAtBytes'], maxDiskBytes, path);
  const rotateAfterMs = int(a, 'rotateAfterMs', path, 0, 0, MAX_ROTATE_AFTER_MS);
  if (rotateAfterMs > 0 && rotateAfterMs < MIN_ROTATE_AFTER_MS) fail(`${path}.rotateAfterMs`, `must be 0 (never by age) or at least ${MIN_ROTATE_AFTER_MS} (a minute)`);
  const keepArchivedDays = int(a, 'keepArchivedDays', path, 0, 0, 36_500);
  if (keepArchivedDays > 0 && rotateAfterMs === 0) {
    fail(`${path}.keepArchivedDays`, 'needs rotateAfterMs: without it a decision can stay in the live epoch, out of retention\'s reach, for as long as the epoch is under rotateAtBytes');
  }

  const signerRaw = objectAt(a['signer'] ?? { kind: 'software' }, `${path}.signer`);
  const kind = oneOf(signerRaw, 'kind', `${path}.signer`, 'software', ['software', 'pkcs11'] as const);
  let signer: AuditSignerConfig;
  if (kind === 'software') {
    refuseUnknown(signerRaw, ['kind', 'keyFile'], `${path}.signer`);
    signer = {
      kind,
      keyFile: signerRaw['keyFile'] === undefined ? resolve(directory, 'checkpoint-key.pem') : p(str(signerRaw, 'keyFile', `${path}.signer`, '')),
    };
  } else {
    refuseUnknown(signerRaw, ['kind', 'modulePath', 'tokenLabel', 'keyLabel', 'pinEnv', 'generateKey', 'allowImportedKey', 'operationTimeoutMs'], `${path}.signer`);
    for (const required of ['modulePath', 'tokenLabel', 'keyLabel']) {
      if (signerRaw[required] === undefined) fail(`${path}.signer.${required}`, "is required for kind 'pkcs11'");
    }
    const pinEnv = str(signerRaw, 'pinEnv', `${path}.signer`, 'PAVILION_PKCS11_PIN');
    if (!/^[A-Z_][A-Z0-9_]*$/.test(pinEnv)) fail(`${path}.signer.pinEnv`, 'must be an environment variable name (the PIN itself never goes in the config)');
    signer = {
      kind,
      modulePath: str(signerRaw, 'modulePath', `${path}.signer`, ''),
      tokenLabel: str(signerRaw, 'tokenLabel', `${path}.signer`, ''),
      keyLabel: str(signerRaw, 'keyLabel', `${path}.signer`, ''),
      pinEnv,
      generateKey: bool(signerRaw, 'generateKey', `${path}.signer`, false),
      allowImportedKey: bool(signerRaw, 'allowImportedKey', `${path}.signer`, false),
      operationTimeoutMs: int(signerRaw, 'operationTimeoutMs', `${path}.signer`, 10_000, 100, 600_000),
    };
  }
  return {
    directory,
    fsync: oneOf(a, 'fsync', path, 'always', ['always', 'interval', 'never'] as const),
    fsyncIntervalMs: int(a, 'fsyncIntervalMs', path, 100, 1, 60_000),
    groupCommitMaxDelayMs: int(a, 'groupCommitMaxDelayMs', path, 0, 0, 1000),
    groupCommitMaxBytes,
    maxDiskBytes,
    onFull: oneOf(a, 'onFull', path, 'refuse', ['block', 'refuse'] as const),
    blockTimeoutMs: int(a, 'blockTimeoutMs', path, 1000, 1, 600_000),
    maxEventBytes,
    checkpointEveryEvents: int(a, 'checkpointEveryEvents', path, 1000, 1, 100_000_000),
    checkpointIntervalMs: int(a, 'checkpointIntervalMs', path, 10_000, 10, 86_400_000),
    ...(rotateAtBytes === undefined ? {} : { rotateAtBytes }),
    keepArchivedEpochs: int(a, 'keepArchivedEpochs', path, 0, 0, 1_000_000),
    rotateAfterMs,
    keepArchivedDays,
    signer,
    stream,
    anchor: parseAuditAnchor(a['anchor'], directory, p),
  };
}

/** `decisionLog.audit.rotateAfterMs` bounds: a minute (each rotation signs, syncs and renames) to ten years. */
const MIN_ROTATE_AFTER_MS = 60_000;
const MAX_ROTATE_AFTER_MS = 3650 * 86_400_000;

/**
 * `decisionLog.audit.rotateAtBytes`: absent (left out of the parsed section), 0 or null never
 * rotates; otherwise at least 64 KiB and below maxDiskBytes (rotation must come before the
 * budget is spent).
 */
function parseRotateAtBytes(raw: unknown, maxDiskBytes: number, path: string): number | undefined {
  if (raw === undefined) return undefined;
  if (raw === null || raw === 0) return 0;
  if (typeof raw !== 'number' || !Number.isSafeInteger(raw) || raw < 64 * 1024 || raw >= maxDiskBytes) {
    fail(`${path}.rotateAtBytes`, `must be 0, null, or an integer from 65536 to below maxDiskBytes (${maxDiskBytes})`);
  }
  return raw;
}

const ANCHOR_RPC_URL = /^https?:\/\/[^\s]+$/;
const EVM_ADDRESS = /^0x[0-9a-fA-F]{40}$/;

/** `decisionLog.audit.anchor`; absent means the local anchor file `<directory>/anchors.jsonl`. */
function parseAuditAnchor(raw: unknown, directory: string, p: (file: string) => string): AuditAnchorConfig {
  const path = '$.decisionLog.audit.anchor';
  const a = objectAt(raw ?? { kind: 'file' }, path);
  const kind = oneOf(a, 'kind', path, 'file', ['file', 'evm', 'none'] as const);
  if (kind === 'none') {
    refuseUnknown(a, ['kind'], path);
    return { kind };
  }
  if (kind === 'file') {
    refuseUnknown(a, ['kind', 'path'], path);
    return { kind, path: a['path'] === undefined ? resolve(directory, 'anchors.jsonl') : p(str(a, 'path', path, '')) };
  }
  refuseUnknown(a, [
    'kind', 'rpcUrl', 'chainId', 'contract', 'privateKeyFile', 'privateKeyEnv', 'confirmations', 'receiptTimeoutMs',
    'submitTimeoutMs', 'maxAttempts', 'feeBumpPercent', 'maxFeePerGasGwei', 'pollingIntervalMs', 'requestTimeoutMs',
  ], path);
  const cap = a['maxFeePerGasGwei'];
  if (cap !== undefined && (typeof cap !== 'number' || !Number.isFinite(cap) || cap <= 0 || cap > 1e9)) fail(`${path}.maxFeePerGasGwei`, 'must be a positive number of gwei');
  for (const required of ['rpcUrl', 'chainId', 'contract']) if (a[required] === undefined) fail(`${path}.${required}`, "is required for kind 'evm'");
  const rpcUrl = str(a, 'rpcUrl', path, '');
  if (!ANCHOR_RPC_URL.test(rpcUrl)) fail(`${path}.rpcUrl`, 'must be an http(s) JSON-RPC URL');
  const contract = str(a, 'contract', path, '');
  if (!EVM_ADDRESS.test(contract)) fail(`${path}.contract`, 'must be a 0x-prefixed 20-byte address');
  const privateKeyEnv = str(a, 'privateKeyEnv', path, 'PAVILION_ANCHOR_PRIVATE_KEY');
  if (!/^[A-Z_][A-Z0-9_]*$/.test(privateKeyEnv)) fail(`${path}.privateKeyEnv`, 'must be an environment variable name (the key itself never goes in the config)');
  const receiptTimeoutMs = int(a, 'receiptTimeoutMs', path, 60_000, 100, 3_600_000);
  const submitTimeoutMs = int(a, 'submitTimeoutMs', path, 300_000, 1000, 86_400_000);
  if (submitTimeoutMs < receiptTimeoutMs) fail(`${path}.submitTimeoutMs`, 'must be at least receiptTimeoutMs');
  return {
    kind,
    rpcUrl,
    chainId: int(a, 'chainId', path, 0, 1, Number.MAX_SAFE_INTEGER),
    contract,
    ...(a['privateKeyFile'] === undefined ? {} : { privateKeyFile: p(str(a, 'privateKeyFile', path, '')) }),
    privateKeyEnv,
    confirmations: int(a, 'confirmations', path, 2, 1, 1000),
    receiptTimeoutMs,
    submitTimeoutMs,
    maxAttempts: int(a, 'maxAttempts', path, 5, 1, 100),
    feeBumpPercent: int(a, 'feeBumpPercent', path, 20, 10, 1000),
    ...(cap === undefined ? {} : { maxFeePerGasGwei: cap as number }),
    pollingIntervalMs: int(a, 'pollingIntervalMs', path, 1000, 5, 60_000),
    requestTimeoutMs: int(a, 'requestTimeoutMs', path, 10_000, 100, 600_000),
  };
}

const KEY_ALGORITHMS = ['ES256', 'ES384', 'ES512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'EdDSA', 'HS256', 'HS384', 'HS512'];

function parseKeys(raw: unknown, p: (file: string) => string): Record<string, KeyConfig> {
  const keys: Record<string, KeyConfig> = {};
  for (const [id, value] of Object.entries(objectAt(raw, '$.keys'))) {
    const path = `$.keys.${id}`;
    const key = objectAt(value, path);
    refuseUnknown(key, ['algorithm', 'file', 'key'], path);
    const algorithm = key['algorithm'];
    if (algorithm !== undefined && (typeof algorithm !== 'string' || !KEY_ALGORITHMS.includes(algorithm))) {
      fail(`${path}.algorithm`, `must be one of ${KEY_ALGORITHMS.join(', ')}`);
    }
    if ((key['file'] === undefined) === (key['key'] === undefined)) fail(path, 'needs exactly one of file or key');
    keys[id] = {
      ...(algorithm === undefined ? {} : { algorithm }),
      ...(key['file'] === undefined ? {} : { file: p(str(key, 'file', path, '')) }),
      ...(key['key'] === undefined ? {} : { key: str(key, 'key', path, '') }),
    };
  }
  return keys;
}

const NATS_URL = /^(nats|tls|ws|wss):\/\/[^\s]+$/;
const BUCKET_NAME = /^[A-Za-z0-9_-]+$/;
const SUBJECT_PREFIX = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;

const REDIS_URL = /^(redis|rediss):\/\/[^\s]+$|^unix:\/\/\/[^\s]+$/;

function parseRedis(raw: unknown): RedisConfig {
  const root = objectAt(raw, '$.redis');
  refuseUnknown(root, ['url', 'password', 'keyPrefix', 'connectTimeoutMs', 'commandTimeoutMs', 'maxEntriesPerTenant'], '$.redis');
  const url = str(root, 'url', '$.redis', '');
  if (!REDIS_URL.test(url)) fail('$.redis.url', 'must be a redis://, rediss:// or unix:/// URL');
  const keyPrefix = str(root, 'keyPrefix', '$.redis', 'pavilion');
  if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(keyPrefix)) fail('$.redis.keyPrefix', 'must be 1-64 letters, digits, _ . : -');
  return {
    url,
    ...(root['password'] === undefined ? {} : { password: str(root, 'password', '$.redis', '') }),
    keyPrefix,
    connectTimeoutMs: int(root, 'connectTimeoutMs', '$.redis', 2000, 10, 60_000),
    commandTimeoutMs: int(root, 'commandTimeoutMs', '$.redis', 500, 1, 60_000),
    maxEntriesPerTenant: int(root, 'maxEntriesPerTenant', '$.redis', 100_000, 1, 100_000_000),
  };
}

function parseNats(raw: unknown, labelId: string, p: (file: string) => string): NatsConfig {
  const root = objectAt(raw, '$.nats');
  refuseUnknown(root, [
    'servers', 'name', 'user', 'password', 'token', 'credsFile', 'pointerBucket', 'objectBucketPrefix', 'subjectPrefix', 'inboxPrefix',
    'connectTimeoutMs', 'fetchTimeoutMs', 'reconnectWaitMs', 'reconnectJitterMs', 'statusIntervalMs',
  ], '$.nats');
  const servers = root['servers'];
  if (!Array.isArray(servers) || servers.length === 0 || !servers.every((s): s is string => typeof s === 'string' && NATS_URL.test(s))) {
    fail('$.nats.servers', 'must be a non-empty array of nats:// (or tls://, ws://, wss://) URLs');
  }
  const pointerBucket = str(root, 'pointerBucket', '$.nats', 'pavilion-bundles');
  const objectBucketPrefix = str(root, 'objectBucketPrefix', '$.nats', 'pavilion-bundle-');
  if (!BUCKET_NAME.test(pointerBucket)) fail('$.nats.pointerBucket', 'may hold only letters, digits, - and _');
  if (!BUCKET_NAME.test(objectBucketPrefix)) fail('$.nats.objectBucketPrefix', 'may hold only letters, digits, - and _');
  const subjectPrefix = str(root, 'subjectPrefix', '$.nats', 'pavilion');
  if (!SUBJECT_PREFIX.test(subjectPrefix)) fail('$.nats.subjectPrefix', 'must be dot-separated tokens without wildcards');
  if (root['inboxPrefix'] !== undefined && !SUBJECT_PREFIX.test(str(root, 'inboxPrefix', '$.nats', ''))) fail('$.nats.inboxPrefix', 'must be dot-separated tokens without wildcards');
  const optional = (key: string): Record<string, string> => (root[key] === undefined ? {} : { [key]: str(root, key, '$.nats', '') });
  return {
    servers,
    name: str(root, 'name', '$.nats', labelId),
    ...optional('user'),
    ...optional('password'),
    ...optional('token'),
    ...optional('inboxPrefix'),
    ...(root['credsFile'] === undefined ? {} : { credsFile: p(str(root, 'credsFile', '$.nats', '')) }),
    pointerBucket,
    objectBucketPrefix,
    subjectPrefix,
    connectTimeoutMs: int(root, 'connectTimeoutMs', '$.nats', 2_000, 50, 600_000),
    fetchTimeoutMs: int(root, 'fetchTimeoutMs', '$.nats', 30_000, 100, 3_600_000),
    reconnectWaitMs: int(root, 'reconnectWaitMs', '$.nats', 250, 10, 600_000),
    reconnectJitterMs: int(root, 'reconnectJitterMs', '$.nats', 250, 0, 600_000),
    statusIntervalMs: int(root, 'statusIntervalMs', '$.nats', 10_000, 100, 3_600_000),
  };
}

const EXTAUTHZ_TENANT_KEYS = ['path', 'dryRun', 'skipRequestBodyParse', 'maxRequestBodyBytes', 'failureStatus', 'timeoutMs', 'receipts'] as const;
const HTTP_HEADER_NAME = /^[!#$%&'*+.^_`|~0-9a-z-]+$/;
const RESERVED_PREFIXES = ['/v0', '/v1', '/health', '/metrics'];

function extAuthzTenantSettings(obj: Json, path: string, fallback: Omit<ExtAuthzTenantConfig, 'path'>): Omit<ExtAuthzTenantConfig, 'path'> {
  return {
    dryRun: bool(obj, 'dryRun', path, fallback.dryRun),
    skipRequestBodyParse: bool(obj, 'skipRequestBodyParse', path, fallback.skipRequestBodyParse),
    maxRequestBodyBytes: int(obj, 'maxRequestBodyBytes', path, fallback.maxRequestBodyBytes, 0, 1024 * MiB),
    failureStatus: int(obj, 'failureStatus', path, fallback.failureStatus, 400, 599),
    timeoutMs: int(obj, 'timeoutMs', path, fallback.timeoutMs, 1, 60_000),
    receipts: oneOf(obj, 'receipts', path, fallback.receipts, ['on-request', 'always'] as const),
  };
}

/**
 * A destination key that names an address: `ipv4:port` or `[ipv6]:port` (a port number, or
 * a named port as Envoy's socket address may carry), returned as the `ip:port` the resolver
 * builds from Envoy's socket address (IPv6 unbracketed, lower-cased); undefined for a host
 * key. Any other key that starts with an IP is refused, never taken as a host key: a host key
 * is matched against the Host the client sends.
 */
function destinationAddress(key: string): string | undefined {
  const at = `$.extAuthz.tenantFrom.destination.${key}`;
  const validPort = (text: string): boolean => (/^[1-9]\d{0,4}$/.test(text) && Number(text) <= 65_535) || /^[A-Za-z][A-Za-z0-9_-]*$/.test(text);
  const bracketed = /^\[([^\]]*)\](?::(.*))?$/.exec(key);
  if (bracketed !== null) {
    const [, address = '', port] = bracketed;
    if (isIP(address) !== 6 || port === undefined || !validPort(port)) fail(at, 'an IPv6 address key is [address]:port');
    return `${address}:${port}`.toLowerCase();
  }
  const refuse = (): never => fail(at, 'an address key needs its port: address:port, IPv6 as [address]:port');
  // an IP, an IPv6 address unbracketed (a host name has one colon at most), or a dotted quad
  // Node does not read as IPv4 (010.0.0.1): never a host key
  const head = key.split(':')[0] as string;
  if (isIP(key) !== 0 || key.split(':').length > 2 || (/^\d+(?:\.\d+){3}$/.test(head) && isIP(head) !== 4)) refuse();
  if (isIP(head) !== 4) return undefined;
  if (!validPort(key.slice(head.length + 1))) refuse();
  return key.toLowerCase();
}

function parseExtAuthz(raw: unknown): ExtAuthzConfig {
  const root = objectAt(raw, '$.extAuthz');
  refuseUnknown(root, ['grpc', 'http', 'tenantFrom', 'tenants', ...EXTAUTHZ_TENANT_KEYS.filter((k) => k !== 'path')], '$.extAuthz');
  const grpc = section(root, 'grpc', '$.extAuthz', ['enabled', 'host', 'port', 'maxReceiveMessageBytes', 'maxConnections', 'handshakeTimeoutMs']);
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
      const addresses: Record<string, string> = {};
      const hosts: Record<string, string> = {};
      for (const [key, value] of Object.entries(map)) {
        if (typeof value !== 'string' || !TENANT_ID_PATTERN.test(value)) {
          fail(`$.extAuthz.tenantFrom.destination.${key}`, `must be a tenant id matching ${TENANT_ID_PATTERN.source}`);
        }
        // Kept apart: the host comes from the client (:authority), so an address key must
        // never be reachable by sending that address as the Host.
        const address = destinationAddress(key);
        if (address === undefined) hosts[key.toLowerCase()] = value;
        else addresses[address] = value;
      }
      tenantFrom = { kind: 'destination', addresses, hosts };
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
    receipts: 'on-request',
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
      maxConnections: int(grpc, 'maxConnections', '$.extAuthz.grpc', 4096, 1, 1_000_000),
      handshakeTimeoutMs: int(grpc, 'handshakeTimeoutMs', '$.extAuthz.grpc', 10_000, 100, 600_000),
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
