/**
 * The ext_authz component: one CheckService shared by the gRPC server (when enabled) and
 * the HTTP service-mode handler (mounted on the API server, when enabled), with the common
 * lifecycle. Constructed from the validated `extAuthz` config section.
 */
import type { DecisionEvents, DecisionSink } from '../audit/index.ts';
import type { ExtAuthzConfig } from '../config/index.ts';
import type { PolicyEngine } from '../engine/index.ts';
import type { ConnectionLimit } from '../lib/connection-limit.ts';
import { ErrorCodes, PavilionError } from '../lib/errors.ts';
import type { Component, ComponentStatus } from '../lib/lifecycle.ts';
import type { CredentialGate } from '../credentials/gate.ts';
import type { Metrics } from '../telemetry/index.ts';
import type { TenantManager } from '../tenants/index.ts';
import { CheckService } from './check-service.ts';
import { ENVOY_HTTP_STATUS_CODES } from './decision.ts';
import { ExtAuthzGrpcServer } from './grpc-server.ts';
import { createHttpHandler, type MountedHttpHandler } from './http-handler.ts';
import { CheckCodec } from './proto-codec.ts';

export interface ExtAuthzDeps {
  readonly config: ExtAuthzConfig;
  readonly events: DecisionEvents;
  readonly engine: PolicyEngine;
  readonly tenants: TenantManager;
  readonly sink: DecisionSink;
  readonly metrics: Metrics;
  /** Verifies credentials carried in checked requests' headers (absent: not configured). */
  readonly credentials?: CredentialGate;
  /** Operator log (one warning per tenant and revision whose decision path is not an entrypoint). */
  readonly log?: (level: 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>) => void;
}

/** A tenant ext_authz serves whose decision path is not an entrypoint of its active policy. */
export interface UnservablePath {
  readonly tenant: string;
  readonly path: string;
  readonly revision: string;
  /**
   * Whether the tenant has an entry in `extAuthz.tenants` (its path is then the entry's
   * `path`, itself defaulting to `<id>/envoy/authz/allow`); false: the default settings.
   */
  readonly configured: boolean;
  /** The tenant is in dry run: every check is allowed. */
  readonly dryRun: boolean;
}

export class ExtAuthz implements Component {
  readonly name = 'ext_authz';
  readonly service: CheckService;
  readonly codec: CheckCodec;
  readonly grpc: ExtAuthzGrpcServer | undefined;
  readonly http: MountedHttpHandler | undefined;
  readonly #config: ExtAuthzConfig;
  readonly #deps: ExtAuthzDeps;
  readonly #connections: ConnectionLimit | undefined;
  /** `tenant\0revision\0path` already warned about in the log. */
  readonly #warned = new Set<string>();
  #started = false;

  constructor(deps: ExtAuthzDeps) {
    this.#config = deps.config;
    this.#deps = deps;
    const statuses = [['extAuthz.failureStatus', deps.config.defaults.failureStatus] as const,
      ...Object.entries(deps.config.tenants).map(([id, t]) => [`extAuthz.tenants.${id}.failureStatus`, t.failureStatus] as const)];
    for (const [where, status] of statuses) {
      if (!ENVOY_HTTP_STATUS_CODES.has(status)) {
        throw new PavilionError(ErrorCodes.CONFIG_INVALID, `config $.${where}: ${status} is not an HTTP status Envoy accepts`);
      }
    }
    this.codec = new CheckCodec();
    this.service = new CheckService(deps);
    if (deps.config.grpc.enabled) {
      this.#connections = deps.metrics.connectionLimit({
        listener: 'grpc',
        maxConnections: deps.config.grpc.maxConnections,
        ...(deps.log === undefined ? {} : { log: deps.log }),
      });
      this.grpc = new ExtAuthzGrpcServer({ ...deps.config.grpc, connections: this.#connections }, this.service, this.codec);
    } else {
      this.grpc = undefined;
    }
    this.http = deps.config.http.enabled ? createHttpHandler(this.service, deps.config.http.pathPrefix) : undefined;
  }

  async start(): Promise<void> {
    await this.grpc?.start();
    this.#started = true;
    // the tenants started before this component: say at once what cannot be served
    this.checkDecisionPaths();
  }

  /**
   * The tenants ext_authz would serve:
   * - `fixed` and `destination` name their tenants in the config, so exactly those;
   * - `header` and `contextExtension` let each check name any tenant of this sidecar, but
   *   most tenants of a sidecar that also answers the Data API never see a check: only the
   *   tenants with an entry in `extAuthz.tenants` are checked there (warning about every
   *   Data-API-only tenant would leave the component WARN for good);
   * - in every case, the tenants with an entry in `extAuthz.tenants`: an entry is a
   *   statement that the tenant is meant to be checked, and a wrong path in it is a
   *   configuration mistake worth reporting even where tenantFrom cannot reach it.
   * Tenants the tenant manager does not know, or that have no active policy, are left out:
   * there is no bundle to check the path against.
   */
  #servedTenants(): string[] {
    const from = this.#config.tenantFrom;
    const named = new Set(Object.keys(this.#config.tenants));
    if (from.kind === 'fixed') named.add(from.tenant);
    else if (from.kind === 'destination') for (const tenant of [...Object.values(from.addresses), ...Object.values(from.hosts)]) named.add(tenant);
    return [...named].filter((tenant) => this.#deps.tenants.has(tenant)).sort();
  }

  /**
   * Served tenants whose decision path (configured, or the default `<tenant>/envoy/authz/allow`)
   * is not an entrypoint of their ACTIVE policy: every check for them would be answered with
   * the failure status (with dryRun: allowed). Read from the engine each time, so it follows
   * activations.
   */
  unservablePaths(): UnservablePath[] {
    const out: UnservablePath[] = [];
    for (const tenant of this.#servedTenants()) {
      const active = this.#deps.engine.active(tenant);
      if (active === undefined) continue;
      const { path, dryRun } = this.service.settingsFor(tenant);
      if (!active.entrypoints.includes(path)) {
        out.push({ tenant, path, revision: active.revision, configured: Object.hasOwn(this.#config.tenants, tenant), dryRun });
      }
    }
    return out;
  }

  /**
   * Log one warning for each tenant and revision (and path) first seen with a decision path
   * that is not an entrypoint; returns them all. Called at start, on every activation (by
   * the composition root) and whenever the status is asked.
   */
  checkDecisionPaths(): UnservablePath[] {
    const found = this.unservablePaths();
    for (const u of found) {
      const key = `${u.tenant}\0${u.revision}\0${u.path}`;
      if (this.#warned.has(key)) continue;
      this.#warned.add(key);
      this.#deps.log?.('warn', 'ext_authz decision path is not an entrypoint of the tenant\'s active bundle: every check for the tenant fails (the failure status; allowed with dryRun)', {
        tenant: u.tenant,
        path: u.path,
        revision: u.revision,
        configured: u.configured,
        code: ErrorCodes.ENTRYPOINT_UNKNOWN,
        ...(u.dryRun ? { dry_run: true } : {}),
      });
    }
    return found;
  }

  async stop(deadlineMs: number): Promise<void> {
    this.#started = false;
    await this.grpc?.stop(deadlineMs);
  }

  /** The gRPC server's bound address. */
  grpcAddress(): { host: string; port: number } {
    if (this.grpc === undefined) throw new PavilionError(ErrorCodes.INTERNAL, 'the ext_authz gRPC server is disabled');
    return this.grpc.address();
  }

  status(): ComponentStatus {
    if (!this.#started) return { state: 'NOT_READY', message: 'ext_authz not started' };
    if (this.grpc !== undefined && !this.grpc.listening) return { state: 'ERROR', message: 'ext_authz gRPC server is not listening' };
    const details = {
      grpc: this.grpc === undefined ? 'disabled' : `${this.grpc.address().host}:${this.grpc.address().port}`,
      http: this.http === undefined ? 'disabled' : this.#config.http.pathPrefix,
      tenantFrom: this.#config.tenantFrom.kind,
      ...(this.#connections === undefined ? {} : { grpcConnections: this.#connections.details() }),
    };
    const unservable = this.checkDecisionPaths();
    if (unservable.length > 0) {
      const list = unservable
        .map((u) => `${u.tenant} (${u.path} is not an entrypoint of revision ${u.revision}${u.dryRun ? '; dry run: every check is allowed' : ''})`)
        .join(', ');
      return {
        state: 'WARN',
        message: `ext_authz cannot decide for tenant${unservable.length === 1 ? '' : 's'} ${list}: every check fails with ${ErrorCodes.ENTRYPOINT_UNKNOWN}; set extAuthz.tenants.<id>.path to one of the bundle's entrypoints`,
        details: {
          ...details,
          unknownPaths: Object.fromEntries(unservable.map((u) => [u.tenant, { path: u.path, revision: u.revision, configured: u.configured, dryRun: u.dryRun }])),
        },
      };
    }
    const refusing = this.#connections?.warning();
    return refusing === undefined ? { state: 'OK', details } : { state: 'WARN', message: refusing, details };
  }
}
