/**
 * Prometheus metrics, on a registry owned by this object (no global registry).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type Metric } from 'prom-client';
import type { AuditLogFigures } from '../audit/index.ts';
import type { CredentialObserver } from '../credentials/gate.ts';
import type { EngineObserver } from '../engine/index.ts';
import { ConnectionLimit, type ConnectionLimitOptions } from '../lib/connection-limit.ts';

/**
 * How often the event-loop delay histogram (pavilion_nodejs_eventloop_lag_*) samples.
 * prom-client's default, 10 ms, wakes an idle sidecar 100 times a second, about 4 ms of
 * CPU per second per process: a tenth of a core across thirty sidecars on one host, which
 * a rollout then waits for. At 100 ms the lag figures keep their meaning with fewer samples.
 */
const EVENT_LOOP_SAMPLE_INTERVAL_MS = 100;

/** The states a component (here a tenant's audit log) reports; pavilion_audit_log_state has one series each. */
const STATES = ['OK', 'WARN', 'ERROR', 'NOT_READY'] as const;

/** The pavilion_audit_log_* gauges read from the audit log's figures at each scrape: name, help, the figure. */
const AUDIT_LOG_GAUGES = [
  ['pavilion_audit_log_bytes', "Bytes of the tenant's live audit log epoch on disk (its disk budget: pavilion_audit_log_max_bytes).", (f) => f.bytes],
  ['pavilion_audit_log_max_bytes', "The disk budget of the tenant's live audit log epoch (decisionLog.audit.maxDiskBytes); past it, onFull applies.", (f) => f.maxBytes],
  ['pavilion_audit_log_leaves', "Leaves (logged decisions and the epoch's link) of the tenant's live audit log epoch.", (f) => f.leaves],
  ['pavilion_audit_log_checkpointed_leaves', "Leaves of the tenant's live epoch under its latest signed checkpoint.", (f) => f.checkpointedLeaves],
  ['pavilion_audit_log_anchored_leaves', "Leaves of the tenant's live epoch under its latest anchored checkpoint.", (f) => f.anchoredLeaves],
  ['pavilion_audit_log_epoch', "The number of the tenant's live audit log epoch (rotation).", (f) => f.epoch],
  ['pavilion_audit_log_archived_bytes', "Bytes of the tenant's archived (sealed) audit log epochs.", (f) => f.archivedBytes],
  ['pavilion_audit_log_blocked_writers', "Decision events of the tenant waiting for disk budget (onFull \"block\").", (f) => f.blockedWriters],
  ['pavilion_audit_log_last_checkpoint_timestamp_seconds', "The signed time of the tenant's latest checkpoint, seconds since the Unix epoch.", (f) => (f.checkpointTimestampMs === undefined ? undefined : f.checkpointTimestampMs / 1000)],
] as const satisfies ReadonlyArray<readonly [string, string, (figures: AuditLogFigures) => number | undefined]>;

/** The pavilion_connections_* gauges read from each listener's bound at each scrape: name, help, the figure. */
const CONNECTION_GAUGES = [
  ['pavilion_connections_open', 'Connections open on the listener (http, grpc).', (l) => l.open],
  ['pavilion_connections_max', 'The bound on open connections of the listener (http.maxConnections, extAuthz.grpc.maxConnections).', (l) => l.maxConnections],
] as const satisfies ReadonlyArray<readonly [string, string, (limit: ConnectionLimit) => number]>;

/** How long one reading of the audit log's figures serves the gauges of a scrape. */
const AUDIT_FIGURES_FRESH_MS = 250;

export class Metrics implements EngineObserver, CredentialObserver {
  readonly registry = new Registry();
  readonly decisions: Counter<'tenant' | 'path' | 'outcome'>;
  readonly evaluationSeconds: Histogram<'tenant'>;
  readonly cacheLookups: Counter<'tenant' | 'result'>;
  readonly workerRestarts: Counter<'reason'>;
  readonly bundleActivations: Counter<'tenant' | 'outcome'>;
  readonly httpRequestSeconds: Histogram<'route'>;
  readonly tenantRevision: Gauge<'tenant' | 'revision'>;
  readonly credentials: Counter<'tenant' | 'outcome'>;
  readonly credentialSeconds: Histogram<'tenant'>;
  readonly distributionConnected: Gauge;
  readonly distributionReconnects: Counter;
  readonly distributionUpdates: Counter<'tenant' | 'outcome'>;
  readonly rolloutSeconds: Histogram;
  readonly shadowComparisons: Counter<'tenant' | 'outcome'>;
  readonly activationPhaseSeconds: Histogram<'phase'>;
  readonly auditStreamBacklog: Gauge<'tenant'>;
  readonly auditStreamPublished: Counter<'tenant'>;
  readonly auditEventsRefused: Counter<'tenant' | 'code'>;
  readonly #connectionsRefused: Counter<'listener'>;
  readonly #connectionLimits = new Map<string, ConnectionLimit>();
  /** The pavilion_audit_log_* gauges; exported once registerAuditLogMetrics names their source. */
  readonly #auditLogGauges: Gauge<'tenant'>[] = [];
  readonly #auditLogState: Gauge<'tenant' | 'state'>;
  #auditLogSource: (() => ReadonlyMap<string, AuditLogFigures>) | undefined;
  #auditFigures: { readonly at: number; readonly figures: ReadonlyMap<string, AuditLogFigures> } | undefined;
  #auditStreamBacklogSource: (() => Readonly<Record<string, number>>) | undefined;
  readonly #revisions = new Map<string, string>();

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'pavilion_', eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_INTERVAL_MS });
    this.decisions = new Counter({
      name: 'pavilion_decisions_total',
      help: 'Policy decisions by tenant, decision path and outcome (allow/deny/defined/undefined/error code).',
      labelNames: ['tenant', 'path', 'outcome'],
      registers: [this.registry],
    });
    this.evaluationSeconds = new Histogram({
      name: 'pavilion_evaluation_duration_seconds',
      help: 'Wasm evaluation time per decision (cache hits excluded).',
      labelNames: ['tenant'],
      buckets: [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.25],
      registers: [this.registry],
    });
    this.httpRequestSeconds = new Histogram({
      name: 'pavilion_http_request_duration_seconds',
      help: 'Server-side handling time of API requests.',
      labelNames: ['route'],
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [this.registry],
    });
    this.cacheLookups = new Counter({
      name: 'pavilion_decision_cache_lookups_total',
      help: 'Decision cache lookups by result (hit/miss).',
      labelNames: ['tenant', 'result'],
      registers: [this.registry],
    });
    this.workerRestarts = new Counter({
      name: 'pavilion_engine_worker_restarts_total',
      help: 'Evaluation workers replaced, by reason (timeout/crash).',
      labelNames: ['reason'],
      registers: [this.registry],
    });
    this.bundleActivations = new Counter({
      name: 'pavilion_bundle_activations_total',
      help: 'Bundle activation attempts by tenant and outcome (ok or error code).',
      labelNames: ['tenant', 'outcome'],
      registers: [this.registry],
    });
    this.credentials = new Counter({
      name: 'pavilion_credentials_total',
      help: 'Credentials received with requests, by tenant and outcome (the verified format, or the ERR_CREDENTIAL_* code).',
      labelNames: ['tenant', 'outcome'],
      registers: [this.registry],
    });
    this.credentialSeconds = new Histogram({
      name: 'pavilion_credential_verification_duration_seconds',
      help: "Time spent verifying one request's credentials (proofs, trust, status).",
      labelNames: ['tenant'],
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers: [this.registry],
    });
    this.tenantRevision = new Gauge({
      name: 'pavilion_tenant_active_revision_info',
      help: 'Active bundle revision per tenant (value 1).',
      labelNames: ['tenant', 'revision'],
      registers: [this.registry],
    });
    // NATS bundle distribution only: created unregistered, exported once the distribution
    // component exists (`registerDistributionMetrics`). A directory-source sidecar has no
    // connection to report, and a `pavilion_distribution_connected 0` there would fire every
    // "distribution disconnected" alert.
    this.distributionConnected = new Gauge({
      name: 'pavilion_distribution_connected',
      help: '1 while connected to the bundle distribution (NATS), else 0. Exported only with bundles.source "nats".',
      registers: [],
    });
    this.distributionReconnects = new Counter({
      name: 'pavilion_distribution_reconnects_total',
      help: 'Reconnections to the bundle distribution (NATS; each followed by a resync of every pointer).',
      registers: [],
    });
    this.distributionUpdates = new Counter({
      name: 'pavilion_distribution_pointer_updates_total',
      help: 'Pointer updates received from the bundle distribution (NATS), by tenant and outcome (ok, stale, or error code).',
      labelNames: ['tenant', 'outcome'],
      registers: [],
    });
    this.shadowComparisons = new Counter({
      name: 'pavilion_shadow_comparisons_total',
      help: 'Live decisions also evaluated on a tenant\'s shadow revision, by outcome (same/different/error).',
      labelNames: ['tenant', 'outcome'],
      registers: [this.registry],
    });
    this.activationPhaseSeconds = new Histogram({
      name: 'pavilion_bundle_activation_phase_seconds',
      help: 'Time in each step of a bundle activation: fetch (download), read, verify, compile, load, test, swap; and persist, the last known good write shortly after.',
      labelNames: ['phase'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
      registers: [this.registry],
    });
    this.auditStreamBacklog = new Gauge({
      name: 'pavilion_audit_stream_backlog',
      help: 'Logged decisions not yet acknowledged by NATS JetStream, by tenant.',
      labelNames: ['tenant'],
      registers: [], // exported by registerAuditStreamMetrics, with streaming on
      collect: () => {
        const source = this.#auditStreamBacklogSource;
        this.auditStreamBacklog.reset(); // a tenant gone has no series left
        if (source === undefined) return;
        for (const [tenant, backlog] of Object.entries(source())) this.auditStreamBacklog.set({ tenant }, backlog);
      },
    });
    this.auditStreamPublished = new Counter({
      name: 'pavilion_audit_stream_published_total',
      help: 'Logged decisions acknowledged by NATS JetStream (re-sends after a failure included), by tenant.',
      labelNames: ['tenant'],
      registers: [],
    });
    // the audit log's metrics: created unregistered, exported by registerAuditLogMetrics
    this.auditEventsRefused = new Counter({
      name: 'pavilion_audit_events_refused_total',
      help: 'Decision events the audit log refused (their decisions were refused too), by tenant and code (ERR_AUDIT_LOG_FULL, ERR_AUDIT_DISK_FULL, ...).',
      labelNames: ['tenant', 'code'],
      registers: [],
    });
    this.#auditLogState = new Gauge({
      name: 'pavilion_audit_log_state',
      help: "1 for the state of the tenant's audit log (OK, WARN, ERROR, NOT_READY; as in /health?verbose), 0 for the others.",
      labelNames: ['tenant', 'state'],
      registers: [],
      collect: () => {
        this.#auditLogState.reset();
        for (const [tenant, f] of this.#readAuditFigures()) for (const state of STATES) this.#auditLogState.set({ tenant, state }, f.state === state ? 1 : 0);
      },
    });
    for (const [name, help, figure] of AUDIT_LOG_GAUGES) {
      const gauge: Gauge<'tenant'> = new Gauge({
        name,
        help,
        labelNames: ['tenant'],
        registers: [],
        collect: () => {
          gauge.reset(); // a tenant gone, or refused, has no series
          for (const [tenant, f] of this.#readAuditFigures()) {
            const value = figure(f);
            if (value !== undefined) gauge.set({ tenant }, value);
          }
        },
      });
      this.#auditLogGauges.push(gauge);
    }
    this.#connectionsRefused = new Counter({
      name: 'pavilion_connections_refused_total',
      help: 'Connections closed as soon as accepted because the listener (http, grpc) held its maxConnections.',
      labelNames: ['listener'],
      registers: [this.registry],
    });
    for (const [name, help, figure] of CONNECTION_GAUGES) {
      const gauge: Gauge<'listener'> = new Gauge({
        name,
        help,
        labelNames: ['listener'],
        registers: [this.registry],
        collect: () => {
          for (const limit of this.#connectionLimits.values()) gauge.set({ listener: limit.listener }, figure(limit));
        },
      });
    }
    this.rolloutSeconds = new Histogram({
      name: 'pavilion_bundle_rollout_seconds',
      help: 'From a pointer move (pushed_at, NATS distribution) to this sidecar serving it; includes clock skew between hosts.',
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [], // NATS distribution only, like the distribution metrics above
    });
  }

  /**
   * Export the NATS bundle distribution metrics (pavilion_distribution_connected,
   * pavilion_distribution_reconnects_total, pavilion_distribution_pointer_updates_total,
   * pavilion_bundle_rollout_seconds). Called by the distribution component when it is
   * constructed, so only a sidecar with `bundles.source: "nats"` has them. Idempotent.
   */
  registerDistributionMetrics(): void {
    this.#register([this.distributionConnected, this.distributionReconnects, this.distributionUpdates, this.rolloutSeconds]);
  }

  /** Export metrics created unregistered (the registry takes the same metric object again as a no-op). */
  #register(metrics: readonly Metric[]): void {
    for (const metric of metrics) this.registry.registerMetric(metric);
  }

  /**
   * Export the decision stream's metrics (pavilion_audit_stream_backlog read from `backlog` at
   * each scrape, pavilion_audit_stream_published_total). Called by the decision forwarder, so
   * only a sidecar streaming to JetStream has them. Idempotent.
   */
  registerAuditStreamMetrics(backlog: () => Readonly<Record<string, number>>): void {
    this.#auditStreamBacklogSource = backlog;
    this.#register([this.auditStreamBacklog, this.auditStreamPublished]);
  }

  /**
   * Export the audit log's metrics (pavilion_audit_log_* read from `source` at each scrape,
   * pavilion_audit_events_refused_total). Called when the audit log is the decision sink, so a
   * sidecar without it does not export them. Idempotent.
   */
  registerAuditLogMetrics(source: () => ReadonlyMap<string, AuditLogFigures>): void {
    this.#auditLogSource = source;
    this.#register([this.auditEventsRefused, this.#auditLogState, ...this.#auditLogGauges]);
  }

  /**
   * A listener's bound on open connections, its refusals counted
   * (pavilion_connections_refused_total) and its figures read at each scrape
   * (pavilion_connections_open, _max).
   */
  connectionLimit(options: Omit<ConnectionLimitOptions, 'onRefused'>): ConnectionLimit {
    const limit = new ConnectionLimit({ ...options, onRefused: (listener) => this.#connectionsRefused.inc({ listener }) });
    this.#connectionLimits.set(limit.listener, limit);
    return limit;
  }

  /** The audit log's figures, read once for all the gauges of one scrape. */
  #readAuditFigures(): ReadonlyMap<string, AuditLogFigures> {
    const now = performance.now();
    if (this.#auditFigures === undefined || now - this.#auditFigures.at > AUDIT_FIGURES_FRESH_MS) {
      let figures: ReadonlyMap<string, AuditLogFigures>;
      try {
        figures = this.#auditLogSource?.() ?? new Map();
      } catch {
        // the log's status in the scrape, not a failed scrape: every other metric still answers
        figures = new Map();
      }
      this.#auditFigures = { at: now, figures };
    }
    return this.#auditFigures.figures;
  }

  onCredential(tenant: string, outcome: string): void {
    this.credentials.inc({ tenant, outcome });
  }

  onCredentialRequest(tenant: string, seconds: number): void {
    this.credentialSeconds.observe({ tenant }, seconds);
  }

  onCacheLookup(tenant: string, hit: boolean): void {
    this.cacheLookups.inc({ tenant, result: hit ? 'hit' : 'miss' });
  }

  onWorkerRestart(reason: 'timeout' | 'crash'): void {
    this.workerRestarts.inc({ reason });
  }

  countShadowComparison(tenant: string, outcome: 'same' | 'different' | 'error'): void {
    this.shadowComparisons.inc({ tenant, outcome });
  }

  onActivation(tenant: string, outcome: string): void {
    this.bundleActivations.inc({ tenant, outcome });
  }

  setActiveRevision(tenant: string, revision: string): void {
    const previous = this.#revisions.get(tenant);
    if (previous !== undefined && previous !== revision) this.tenantRevision.remove({ tenant, revision: previous });
    this.#revisions.set(tenant, revision);
    this.tenantRevision.set({ tenant, revision }, 1);
  }
}
