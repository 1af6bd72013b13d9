/**
 * The ext_authz component: one CheckService shared by the gRPC server (when enabled) and
 * the HTTP service-mode handler (mounted on the API server, when enabled), with the common
 * lifecycle. Constructed from the validated `extAuthz` config section.
 */
import type { DecisionEvents, DecisionSink } from '../audit/index.ts';
import type { ExtAuthzConfig } from '../config/index.ts';
import type { PolicyEngine } from '../engine/index.ts';
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
}

export class ExtAuthz implements Component {
  readonly name = 'ext_authz';
  readonly service: CheckService;
  readonly codec: CheckCodec;
  readonly grpc: ExtAuthzGrpcServer | undefined;
  readonly http: MountedHttpHandler | undefined;
  readonly #config: ExtAuthzConfig;
  #started = false;

  constructor(deps: ExtAuthzDeps) {
    this.#config = deps.config;
    const statuses = [['extAuthz.failureStatus', deps.config.defaults.failureStatus] as const,
      ...Object.entries(deps.config.tenants).map(([id, t]) => [`extAuthz.tenants.${id}.failureStatus`, t.failureStatus] as const)];
    for (const [where, status] of statuses) {
      if (!ENVOY_HTTP_STATUS_CODES.has(status)) {
        throw new PavilionError(ErrorCodes.CONFIG_INVALID, `config $.${where}: ${status} is not an HTTP status Envoy accepts`);
      }
    }
    this.codec = new CheckCodec();
    this.service = new CheckService(deps);
    this.grpc = deps.config.grpc.enabled ? new ExtAuthzGrpcServer(deps.config.grpc, this.service, this.codec) : undefined;
    this.http = deps.config.http.enabled ? createHttpHandler(this.service, deps.config.http.pathPrefix) : undefined;
  }

  async start(): Promise<void> {
    await this.grpc?.start();
    this.#started = true;
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
    };
    return { state: 'OK', details };
  }
}
