/**
 * The composition root: builds every component from a validated config, starts them in
 * dependency order and stops them in reverse. Tests and `main.ts` both use it.
 */
import { ApiServer } from './api/index.ts';
import { DecisionEvents, FileDecisionSink, NullDecisionSink, type DecisionSink } from './audit/index.ts';
import { LocalDirectoryBundleSource, type BundleSource } from './bundles/index.ts';
import type { PavilionConfig } from './config/index.ts';
import { CredentialGate } from './credentials/index.ts';
import { PolicyEngine } from './engine/index.ts';
import { ExtAuthz } from './extauthz/index.ts';
import type { Component } from './lib/lifecycle.ts';
import { Metrics } from './telemetry/index.ts';
import { TenantManager } from './tenants/index.ts';

export interface PavilionOptions {
  /** Replace the bundle source (default: the configured local directory). */
  readonly source?: BundleSource;
  readonly sink?: DecisionSink;
}

export class Pavilion {
  readonly config: PavilionConfig;
  readonly metrics = new Metrics();
  readonly engine: PolicyEngine;
  readonly tenants: TenantManager;
  readonly sink: DecisionSink;
  /** One event builder (and req_id sequence) for every transport. */
  readonly events: DecisionEvents;
  readonly api: ApiServer;
  /** Envoy ext_authz (gRPC server and HTTP service mode); undefined unless configured. */
  readonly extAuthz: ExtAuthz | undefined;
  /** Verifiable credentials into `input.credentials`; undefined unless configured. */
  readonly credentials: CredentialGate | undefined;
  #started: Component[] = [];

  constructor(config: PavilionConfig, options: PavilionOptions = {}) {
    this.config = config;
    this.engine = new PolicyEngine(
      {
        workers: config.engine.workers,
        evaluationTimeoutMs: config.engine.evaluationTimeoutMs,
        maxQueuedEvaluations: config.engine.maxQueuedEvaluations,
        memoryInitialPages: config.engine.memoryInitialPages,
        memoryMaxBytes: config.engine.memoryMaxBytes,
        maxInputDepth: config.http.maxInputDepth,
        cache: config.engine.cache,
      },
      this.metrics,
    );
    const limits = {
      maxCompressedBytes: config.bundles.maxCompressedBytes,
      maxUncompressedBytes: config.bundles.maxUncompressedBytes,
    };
    this.tenants = new TenantManager({
      tenants: config.tenants,
      source: options.source ?? new LocalDirectoryBundleSource(config.bundles.directory, limits),
      engine: this.engine,
      limits,
      memoryInitialPages: config.engine.memoryInitialPages,
      onActivation: (tenant, outcome) => {
        this.metrics.onActivation(tenant, outcome);
        const active = this.engine.active(tenant);
        if (outcome === 'ok' && active !== undefined) this.metrics.setActiveRevision(tenant, active.revision);
      },
    });
    this.events = new DecisionEvents(config.labels);
    this.sink = options.sink ?? (config.decisionLog.sink === 'file'
      ? new FileDecisionSink(config.decisionLog.path)
      : new NullDecisionSink());
    this.credentials = config.credentials === undefined
      ? undefined
      : new CredentialGate({
          policies: config.credentials.tenants,
          refreshIntervalMs: config.credentials.refreshIntervalMs,
          maxCredentialsPerRequest: config.credentials.maxCredentialsPerRequest,
          observer: this.metrics,
          proofWorkers: config.credentials.proofWorkers,
          proofJobTimeoutMs: config.credentials.proofJobTimeoutMs,
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
        });
    const mounted = this.extAuthz?.http;
    this.api = new ApiServer({
      config,
      engine: this.engine,
      tenants: this.tenants,
      sink: this.sink,
      events: this.events,
      metrics: this.metrics,
      ...(mounted === undefined ? {} : { mounted }),
      ...(this.credentials === undefined ? {} : { credentials: this.credentials }),
      components: () => [
        this.engine, this.tenants, this.sink, this.api,
        ...(this.extAuthz === undefined ? [] : [this.extAuthz]),
        ...(this.credentials === undefined ? [] : [this.credentials]),
      ],
    });
  }

  async start(): Promise<void> {
    const components: Component[] = [this.sink, this.engine, this.tenants];
    if (this.credentials !== undefined) components.push(this.credentials);
    components.push(this.api);
    if (this.extAuthz !== undefined) components.push(this.extAuthz);
    for (const component of components) {
      await component.start();
      this.#started.push(component);
    }
  }

  async stop(): Promise<void> {
    const deadline = this.config.shutdownTimeoutMs;
    for (const component of this.#started.reverse()) await component.stop(deadline);
    this.#started = [];
  }
}
