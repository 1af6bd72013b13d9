/**
 * The composition root: builds every component from a validated config, starts them in
 * dependency order and stops them in reverse. Tests and `main.ts` both use it.
 */
import { randomUUID } from 'node:crypto';
import { ApiServer, TenantTokens } from './api/index.ts';
import {
  AuditLogSink,
  DecisionEvents,
  DecisionForwarder,
  FileDecisionSink,
  NullDecisionSink,
  DecisionMasker,
  MaskingDecisionSink,
  PseudonymKeyStore,
  createAnchor,
  createCheckpointSigner,
  parsePseudonymField,
  bothRevisions,
  type DecisionEventV1,
  type DecisionSink,
  type LogPolicy,
  type Pseudonyms,
} from './audit/index.ts';
import { LastKnownGood, LocalDirectoryBundleSource, PushedBundleSource, TrustStore, type BundleSource } from './bundles/index.ts';
import type { PavilionConfig } from './config/index.ts';
import { CredentialGate } from './credentials/gate.ts';
import { PolicyEngine, type LoadedPolicy } from './engine/index.ts';
import { NatsDistribution, buildStatusReport, type StatusReport } from './distribution/index.ts';
import { ExtAuthz } from './extauthz/index.ts';
import { stateOnly, type Component } from './lib/lifecycle.ts';
import { Metrics } from './telemetry/index.ts';
import { DirectoryWatcher, TenantManager, type ShadowPrivacy } from './tenants/index.ts';

export interface PavilionOptions {
  /** Replace the bundle source (default: the configured local directory). */
  readonly source?: BundleSource;
  readonly sink?: DecisionSink;
  readonly log?: (level: 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>) => void;
}

/** The engine's settings from the config (the composition root and tests that wire the parts alike). */
export function engineOptions(config: PavilionConfig): ConstructorParameters<typeof PolicyEngine>[0] {
  return {
    workers: config.engine.workers,
    evaluationTimeoutMs: config.engine.evaluationTimeoutMs,
    maxQueuedEvaluations: config.engine.maxQueuedEvaluations,
    maxPendingInputBytes: config.engine.maxPendingInputBytes,
    maxPendingInputBytesTotal: config.engine.maxPendingInputBytesTotal,
    memoryInitialPages: config.engine.memoryInitialPages,
    memoryMaxBytes: config.engine.memoryMaxBytes,
    maxInputDepth: config.http.maxInputDepth,
    cache: config.engine.cache,
  };
}

/** The configured decision sink: NDJSON file (default), the verifiable audit log, or none. */
function decisionSink(config: PavilionConfig, metrics: Metrics): DecisionSink {
  const { sink, path, audit } = config.decisionLog;
  if (sink === 'file') return new FileDecisionSink(path);
  if (sink === 'audit' && audit !== undefined) {
    const { directory, signer, anchor, stream: _stream, ...settings } = audit;
    return new AuditLogSink({
      directory,
      originPrefix: config.labels.id,
      settings,
      createSigner: () => createCheckpointSigner(signer),
      createAnchor: () => createAnchor(anchor, process.env, directory),
      onRefused: (tenant, code) => metrics.auditEventsRefused.inc({ tenant, code }),
    });
  }
  return new NullDecisionSink();
}

/** The decision log's privacy settings, built once: the audit log's masker and shadow samples share them. */
interface DecisionPrivacy {
  /** The tenant's rules on its active revision; undefined when `privacy.maskPolicy` is off. */
  readonly policy: LogPolicy | undefined;
  /** The same rules on another loaded revision of the tenant (its staged shadow revision). */
  readonly rulesOf: (loaded: LoadedPolicy) => LogPolicy;
  /** Keyed pseudonymisation; undefined when no fields are configured. */
  readonly pseudonyms: Pseudonyms | undefined;
}

/** The decision log's rules a tenant's bundle may have, as `<namespace>/system/log/<rule>`. */
const LOG_RULES = ['drop', 'mask'] as const;
type LogRule = (typeof LOG_RULES)[number];

/**
 * Privacy before any sink: each tenant's `<namespace>.system.log.drop|mask` evaluated by the
 * engine when its bundle has them as entrypoints (as OPA evaluates data.system.log.*), then
 * keyed pseudonymisation of the configured fields.
 */
function decisionPrivacy(config: PavilionConfig, engine: PolicyEngine): DecisionPrivacy {
  const { privacy } = config.decisionLog;
  // asked for every decision: the configured namespaces looked up in a map, not a list
  const namespaces = new Map(config.tenants.map((t) => [t.id, t.namespace]));
  const pathsByTenant = new Map<string, readonly string[]>();
  /** The paths of the tenant's `system.log.drop` and `.mask`, in LOG_RULES' order (built once per tenant). */
  const pathsOf = (tenant: string): readonly string[] => {
    let paths = pathsByTenant.get(tenant);
    if (paths === undefined) {
      paths = Object.freeze(LOG_RULES.map((rule) => `${namespaces.get(tenant) ?? tenant}/system/log/${rule}`));
      pathsByTenant.set(tenant, paths);
    }
    return paths;
  };
  /** The tenant's rules among `entrypoints`, with their paths. */
  const present = (tenant: string, entrypoints: readonly string[]): Array<{ readonly rule: LogRule; readonly path: string }> =>
    LOG_RULES.flatMap((rule, i) => {
      const path = pathsOf(tenant)[i] as string;
      return entrypoints.includes(path) ? [{ rule, path }] : [];
    });
  const policy: LogPolicy = {
    async evaluate(tenant, input, evaluated) {
      if (evaluated !== undefined) {
        // evaluated beside the decision, on the revision that answered it: the rules it has
        const paths = pathsOf(tenant);
        return Object.fromEntries(LOG_RULES.flatMap((rule, i) => {
          const outcome = evaluated.get(paths[i] as string);
          return outcome === undefined ? [] : [[rule, outcome]];
        }));
      }
      const rules = present(tenant, engine.active(tenant)?.entrypoints ?? []);
      if (rules.length === 0) return {};
      try {
        const outcomes = await engine.evaluateEach(tenant, rules.map((r) => r.path), input);
        return Object.fromEntries(rules.map((r, i) => [r.rule, outcomes[i]]));
      } catch (error) {
        // the whole round failed (input too deep, tenant not ready): each rule present failed
        return Object.fromEntries(rules.map((r) => [r.rule, { ok: false, error }]));
      }
    },
    paths: pathsOf,
  };
  // a shadow sample's (rare): one evaluation per rule, on the revision given
  const rulesOf = (loaded: LoadedPolicy): LogPolicy => ({
    async evaluate(tenant, input) {
      const rules = present(tenant, loaded.info.entrypoints);
      const outcomes = await Promise.all(rules.map((r) => engine.evaluateLoaded(loaded, r.path, input).then(
        (decision) => ({ ok: true as const, result: decision.result }),
        (error: unknown) => ({ ok: false as const, error }),
      )));
      return Object.fromEntries(rules.map((r, i) => [r.rule, outcomes[i]]));
    },
  });
  const byTenant = new Map(Object.entries(privacy.pseudonymiseFieldsByTenant).map(([t, list]) => [t, list.map(parsePseudonymField)]));
  const defaults = privacy.pseudonymiseFields.map(parsePseudonymField);
  const anyFields = defaults.length > 0 || byTenant.size > 0;
  const keys = new PseudonymKeyStore(privacy.pseudonymKeyDirectory);
  return {
    policy: privacy.maskPolicy ? policy : undefined,
    rulesOf,
    pseudonyms: anyFields
      ? { fields: (tenant: string) => byTenant.get(tenant) ?? defaults, key: (tenant: string) => keys.key(tenant === '' ? '_unrouted' : tenant) }
      : undefined,
  };
}

function decisionMasker({ policy, pseudonyms }: Pick<DecisionPrivacy, 'policy' | 'pseudonyms'>): DecisionMasker {
  return new DecisionMasker({ ...(policy === undefined ? {} : { policy }), ...(pseudonyms === undefined ? {} : { pseudonyms }) });
}

/**
 * Shadow samples show two results of a live decision through the tenant API and status
 * reports: each passes the same privacy as the decision log, as a decision event with that
 * result (the audit log's DecisionMasker: drop, mask, pseudonymise; failures fail closed).
 * A staged revision's results are its own: they are masked by the rules of both revisions,
 * so a field the candidate adds with its own mask rule is hidden, and so is one whose mask
 * rule the candidate lost. Undefined when no decision-log privacy is configured at all.
 */
function shadowPrivacy(config: PavilionConfig, engine: PolicyEngine, privacy: DecisionPrivacy): ShadowPrivacy | undefined {
  const { policy, rulesOf, pseudonyms } = privacy;
  if (policy === undefined && pseudonyms === undefined) return undefined;
  const labels = Object.freeze({ id: config.labels.id, version: config.labels.version });
  return {
    async mask(decision) {
      const both = policy === undefined ? undefined : bothRevisions(policy, rulesOf(decision.shadow));
      // a masker per sample (at most 20 per staged revision), since the rules depend on the
      // staged revision; the pseudonym keys are the decision log's
      const masker = decisionMasker({ policy: both, pseudonyms });
      const { tenant, path, input, result } = decision;
      const revision = decision.side === 'shadow' ? decision.shadow.info.revision : engine.active(tenant)?.revision;
      const event: DecisionEventV1 = {
        labels,
        decision_id: `shadow-sample-${randomUUID()}`,
        tenant,
        bundles: revision === undefined ? {} : { [tenant]: { revision } },
        path,
        ...(input === undefined ? {} : { input }),
        ...(result === undefined ? {} : { result }),
        requested_by: '',
        timestamp: decision.at,
        metrics: {},
        req_id: 0,
      };
      const outcome = await masker.process(event);
      if (outcome.kind === 'drop') return { kind: 'drop' };
      if (outcome.failure !== undefined) return { kind: 'failed', reason: outcome.failure };
      const { erased, masked, pseudonymised } = outcome.event;
      return {
        kind: 'masked',
        input: outcome.event.input,
        result: outcome.event.result,
        ...(erased === undefined ? {} : { erased }),
        ...(masked === undefined ? {} : { masked }),
        ...(pseudonymised === undefined ? {} : { pseudonymised }),
      };
    },
  };
}

export class Pavilion {
  readonly config: PavilionConfig;
  readonly metrics = new Metrics();
  readonly engine: PolicyEngine;
  readonly tenants: TenantManager;
  /** Every decision event goes here: masking first, then the configured sink. */
  readonly sink: DecisionSink;
  /** The verifiable audit log when `decisionLog.sink` is 'audit' (proofs, receipts, checkpoints). */
  readonly auditLog: AuditLogSink | undefined;
  /** Streams every logged decision to NATS JetStream when `decisionLog.audit.stream.enabled`. */
  readonly decisionStream: DecisionForwarder | undefined;
  /** One event builder (and req_id sequence) for every transport. */
  readonly events: DecisionEvents;
  readonly api: ApiServer;
  /** Envoy ext_authz (gRPC server and HTTP service mode); undefined unless configured. */
  readonly extAuthz: ExtAuthz | undefined;
  /** NATS JetStream bundle distribution; undefined with the directory source. */
  readonly distribution: NatsDistribution | undefined;
  /** Directory source: reloads a tenant when its bundle file changes (`bundles.watchIntervalMs`). */
  readonly bundleWatch: DirectoryWatcher | undefined;
  /** Verifiable credentials into `input.credentials`; undefined unless configured. */
  readonly credentials: CredentialGate | undefined;
  /** Bearer tokens per tenant for the API (absent: no tenant has a tokens file and authentication is off). */
  readonly apiTokens: TenantTokens | undefined;
  #started: Component[] = [];

  constructor(config: PavilionConfig, options: PavilionOptions = {}) {
    this.config = config;
    this.engine = new PolicyEngine(
      engineOptions(config),
      {
        onCacheLookup: (tenant, hit) => this.metrics.onCacheLookup(tenant, hit),
        onWorkerRestart: (reason) => this.metrics.onWorkerRestart(reason),
        onShadowComparison: (comparison) => {
          this.metrics.countShadowComparison(comparison.tenant, comparison.error !== undefined ? 'error' : comparison.same ? 'same' : 'different');
          this.tenants.recordShadow(comparison);
        },
      },
    );
    const limits = {
      maxCompressedBytes: config.bundles.maxCompressedBytes,
      maxUncompressedBytes: config.bundles.maxUncompressedBytes,
    };
    const privacy = decisionPrivacy(config, this.engine);
    const samplePrivacy = shadowPrivacy(config, this.engine, privacy);
    const directorySource = options.source === undefined && config.bundles.source === 'directory'
      ? new LocalDirectoryBundleSource(config.bundles.directory, limits)
      : undefined;
    this.tenants = new TenantManager({
      tenants: config.tenants,
      source: options.source ?? directorySource ?? new PushedBundleSource('nats'),
      engine: this.engine,
      limits,
      memoryInitialPages: config.engine.memoryInitialPages,
      loadTrust: () => TrustStore.load(config.keys, config.bundles.keysDirectory),
      // Last known good is for a source that can be unreachable; the directory source is
      // already on local disk, and copying each of its bundles at start would be wasted I/O.
      ...(config.bundles.source === 'nats' ? { persisted: new LastKnownGood(config.bundles.persistDirectory), persistDelayMs: config.bundles.persistDelayMs } : {}),
      onPhase: (phase, seconds) => this.metrics.activationPhaseSeconds.observe({ phase }, seconds),
      ...(samplePrivacy === undefined ? {} : { shadowPrivacy: samplePrivacy }),
      onActivation: (tenant, outcome) => {
        this.metrics.onActivation(tenant, outcome);
        const active = this.engine.active(tenant);
        if (outcome === 'ok' && active !== undefined) this.metrics.setActiveRevision(tenant, active.revision);
        // a new revision may have lost (or gained) the tenant's ext_authz decision path: warn now,
        // not only when someone asks /health (advisory: never fails the activation)
        if (outcome === 'ok') {
          try {
            this.extAuthz?.checkDecisionPaths();
          } catch {
            // the ext_authz status reports it anyway
          }
        }
      },
    });
    this.bundleWatch = directorySource !== undefined && config.bundles.watchIntervalMs > 0
      ? new DirectoryWatcher({
          directory: config.bundles.directory,
          intervalMs: config.bundles.watchIntervalMs,
          tenants: this.tenants,
          // a configured tenant list admits no newcomers: no directory listing then
          ...(config.tenants.length === 0 ? { listTenants: () => directorySource.listTenants() } : {}),
          ...(options.log === undefined ? {} : { log: options.log }),
        })
      : undefined;
    this.distribution = config.bundles.source === 'nats' && config.nats !== undefined
      ? new NatsDistribution({
          config: config.nats,
          tenants: this.tenants,
          maxBundleBytes: limits.maxCompressedBytes,
          sidecarId: config.labels.id,
          statusReport: () => this.statusReport(),
          metrics: this.metrics,
          ...(options.log === undefined ? {} : { log: options.log }),
        })
      : undefined;
    this.events = new DecisionEvents(config.labels);
    const sink = options.sink ?? decisionSink(config, this.metrics);
    this.auditLog = sink instanceof AuditLogSink ? sink : undefined;
    // nothing is written with sink none: masking (two rule evaluations per decision) would be wasted
    this.sink = sink instanceof NullDecisionSink ? sink : new MaskingDecisionSink(sink, decisionMasker(privacy));
    // the masker's rules evaluated beside each decision, in its worker turn, rather than apart
    const logRulePaths = sink instanceof NullDecisionSink ? undefined : privacy.policy?.paths;
    const audit = config.decisionLog.audit;
    const auditLog = this.auditLog;
    if (auditLog !== undefined) this.metrics.registerAuditLogMetrics(() => auditLog.figures());
    this.decisionStream = audit?.stream.enabled === true && config.nats !== undefined && auditLog !== undefined
      ? new DecisionForwarder({
          nats: config.nats,
          logs: () => auditLog.openLogs(),
          maxInFlight: audit.stream.maxInFlight,
          maxEventBytes: audit.maxEventBytes,
          retryWaitMs: audit.stream.retryWaitMs,
          metrics: this.metrics,
          ...(options.log === undefined ? {} : { log: options.log }),
        })
      : undefined;
    // an epoch of a tenant's log is sealed only once JetStream acknowledged all of it
    if (this.decisionStream !== undefined) auditLog?.useStreamProgress(this.decisionStream);
    this.credentials = config.credentials === undefined
      ? undefined
      : new CredentialGate({
          policies: config.credentials.tenants,
          refreshIntervalMs: config.credentials.refreshIntervalMs,
          maxCredentialsPerRequest: config.credentials.maxCredentialsPerRequest,
          observer: this.metrics,
          proofWorkers: config.credentials.proofWorkers,
          proofJobTimeoutMs: config.credentials.proofJobTimeoutMs,
          ...(config.redis === undefined ? {} : { redis: config.redis }),
        });
    this.extAuthz = config.extAuthz === undefined
      ? undefined
      : new ExtAuthz({
          config: config.extAuthz,
          events: this.events,
          engine: this.engine,
          tenants: this.tenants,
          sink: this.sink,
          metrics: this.metrics,
          ...(this.credentials === undefined ? {} : { credentials: this.credentials }),
          ...(options.log === undefined ? {} : { log: options.log }),
        });
    const mounted = this.extAuthz?.http;
    this.apiTokens = config.http.authentication === 'token' || config.tenants.some((t) => t.apiTokensFile !== undefined)
      ? new TenantTokens({ tenants: config.tenants, mode: config.http.authentication, ...(options.log === undefined ? {} : { log: options.log }) })
      : undefined;
    this.api = new ApiServer({
      config,
      engine: this.engine,
      tenants: this.tenants,
      sink: this.sink,
      ...(this.auditLog === undefined ? {} : { auditLog: this.auditLog }),
      events: this.events,
      ...(logRulePaths === undefined ? {} : { decisionLogRules: logRulePaths }),
      metrics: this.metrics,
      ...(mounted === undefined ? {} : { mounted }),
      ...(this.credentials === undefined ? {} : { credentials: this.credentials }),
      ...(this.apiTokens === undefined ? {} : { authorizer: this.apiTokens }),
      components: () => this.#components(),
      statusReport: (visible) => this.statusReport(visible),
      ...(options.log === undefined ? {} : { log: options.log }),
    });
  }

  #components(): Component[] {
    return [
      // before the sink: its masking evaluates the tenants' system.log rules, so the engine
      // must outlive the sink's last writes at shutdown
      this.engine,
      this.sink,
      // after the sink (it reads the tenant logs), so stopped before it
      ...(this.decisionStream === undefined ? [] : [this.decisionStream]),
      this.tenants,
      ...(this.distribution === undefined ? [] : [this.distribution]),
      ...(this.bundleWatch === undefined ? [] : [this.bundleWatch]),
      // before the API: requests carrying credentials need the verifier ready
      ...(this.credentials === undefined ? [] : [this.credentials]),
      // before the API: its tenant routes need the tokens read
      ...(this.apiTokens === undefined ? [] : [this.apiTokens]),
      this.api,
      ...(this.extAuthz === undefined ? [] : [this.extAuthz]),
    ];
  }

  /**
   * OPA Status API shape: served at GET /v1/status and published to the status bucket. With
   * `visible`, only the tenants it admits, and the components' states without their
   * messages (which may name any tenant).
   */
  statusReport(visible?: (tenant: string) => boolean): StatusReport {
    const components = this.#components().map((c) => ({ name: c.name, status: c.status() }));
    return buildStatusReport(
      { id: this.config.labels.id, version: this.config.labels.version },
      visible === undefined ? this.tenants.list() : this.tenants.list().filter((t) => visible(t.id)),
      visible === undefined ? components : components.map(({ name, status }) => ({ name, status: stateOnly(status) })),
    );
  }

  async start(): Promise<void> {
    for (const component of this.#components()) {
      await component.start();
      this.#started.push(component);
    }
  }

  /**
   * Stop in reverse start order; `shutdownTimeoutMs` bounds the whole shutdown, not each step.
   * The decision log and the engine (stopped last) keep a share of it for themselves, so a slow
   * component before them (the forwarder waiting on JetStream) cannot leave the log without its
   * final checkpoint; the forwarder resends from its cursor after a restart anyway.
   */
  async stop(): Promise<void> {
    const budgetMs = this.config.shutdownTimeoutMs;
    const end = performance.now() + budgetMs;
    const reservedMs = Math.min(budgetMs / 2, 2_000);
    for (const component of this.#started.reverse()) {
      const last = component === this.sink || component === this.engine;
      await component.stop(Math.max(0, Math.round(end - (last ? 0 : reservedMs) - performance.now())));
    }
    this.#started = [];
  }
}
