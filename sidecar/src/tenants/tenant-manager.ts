/**
 * Tenants: which tenants exist, and moving each one's bundle from its source into the
 * engine. A bundle that fails any check is refused with its code and the tenant keeps
 * serving its previous revision; the failure is kept for health and status.
 */
import { readBundle, type BundleLimits, type BundleSource } from '../bundles/index.ts';
import { compilePolicy, type ActivePolicy, type PolicyEngine } from '../engine/index.ts';
import type { TenantConfig } from '../config/index.ts';
import { TENANT_ID_PATTERN } from '../config/index.ts';
import { ErrorCodes, PavilionError, wrapError, type ErrorCode } from '../lib/errors.ts';
import type { Component, ComponentState, ComponentStatus } from '../lib/lifecycle.ts';

export interface TenantError {
  readonly code: ErrorCode;
  readonly message: string;
  readonly at: string;
}

export interface TenantStatus {
  readonly id: string;
  readonly namespace: string;
  readonly state: ComponentState;
  readonly active: ActivePolicy | undefined;
  readonly lastError: TenantError | undefined;
}

export interface TenantManagerOptions {
  /** Configured tenants; empty means every tenant the source has. */
  readonly tenants: readonly TenantConfig[];
  readonly source: BundleSource;
  readonly engine: PolicyEngine;
  readonly limits: BundleLimits;
  readonly memoryInitialPages: number;
  readonly onActivation?: (tenant: string, outcome: 'ok' | ErrorCode) => void;
}

interface TenantEntry {
  readonly config: TenantConfig;
  lastError: TenantError | undefined;
}

export class TenantManager implements Component {
  readonly name = 'tenants';
  readonly #options: TenantManagerOptions;
  readonly #tenants = new Map<string, TenantEntry>();
  #started = false;

  constructor(options: TenantManagerOptions) {
    this.#options = options;
  }

  async start(): Promise<void> {
    const configured = this.#options.tenants.length > 0
      ? this.#options.tenants
      : (await this.#options.source.listTenants())
          .filter((id) => TENANT_ID_PATTERN.test(id))
          .map((id) => ({ id, namespace: id }));
    for (const config of configured) this.#tenants.set(config.id, { config, lastError: undefined });
    await Promise.all(configured.map((config) => this.reload(config.id).catch(() => undefined)));
    this.#started = true;
  }

  async stop(): Promise<void> {
    this.#started = false;
  }

  has(tenant: string): boolean {
    return this.#tenants.has(tenant);
  }

  ids(): string[] {
    return [...this.#tenants.keys()].sort();
  }

  /** Fetch the tenant's bundle from the source and activate it. */
  async reload(tenant: string): Promise<ActivePolicy> {
    const archive = await this.#options.source.fetch(tenant).catch((error: unknown) => {
      throw this.#recordFailure(tenant, wrapError(error, ErrorCodes.BUNDLE_CORRUPT, 'fetching bundle'));
    });
    if (archive === undefined) {
      throw this.#recordFailure(
        tenant,
        new PavilionError(ErrorCodes.TENANT_NOT_READY, `no bundle found for tenant ${tenant} in the ${this.#options.source.kind} source`),
      );
    }
    return this.activate(tenant, archive);
  }

  /** Validate, compile and activate an archive for a tenant; the old revision stays on failure. */
  async activate(tenant: string, archive: Buffer): Promise<ActivePolicy> {
    const entry = this.#tenants.get(tenant);
    if (entry === undefined) throw new PavilionError(ErrorCodes.TENANT_UNKNOWN, `unknown tenant ${tenant}`);
    try {
      const bundle = await readBundle(archive, {
        tenant,
        namespace: entry.config.namespace,
        limits: this.#options.limits,
      });
      const compiled = await compilePolicy(bundle, { initialMemoryPages: this.#options.memoryInitialPages });
      const active = await this.#options.engine.activate(compiled);
      entry.lastError = undefined;
      this.#options.onActivation?.(tenant, 'ok');
      return active;
    } catch (error) {
      throw this.#recordFailure(tenant, wrapError(error, ErrorCodes.BUNDLE_WASM_INVALID, 'activating bundle'));
    }
  }

  #recordFailure(tenant: string, error: PavilionError): PavilionError {
    const entry = this.#tenants.get(tenant);
    if (entry !== undefined) entry.lastError = { code: error.code, message: error.message, at: new Date().toISOString() };
    this.#options.onActivation?.(tenant, error.code);
    return error;
  }

  tenant(id: string): TenantStatus | undefined {
    const entry = this.#tenants.get(id);
    if (entry === undefined) return undefined;
    const active = this.#options.engine.active(id);
    const state: ComponentState = active === undefined
      ? (entry.lastError === undefined ? 'NOT_READY' : 'ERROR')
      : (entry.lastError === undefined ? 'OK' : 'WARN');
    return { id, namespace: entry.config.namespace, state, active, lastError: entry.lastError };
  }

  list(): TenantStatus[] {
    return this.ids().map((id) => this.tenant(id) as TenantStatus);
  }

  status(): ComponentStatus {
    if (!this.#started) return { state: 'NOT_READY', message: 'tenants not loaded yet' };
    const tenants = this.list();
    const details = Object.fromEntries(tenants.map((t) => [t.id, { state: t.state, revision: t.active?.revision, error: t.lastError?.code }]));
    if (tenants.length === 0) return { state: 'ERROR', message: 'no tenants configured or found', details };
    const inactive = tenants.filter((t) => t.active === undefined);
    if (inactive.length > 0) {
      return { state: 'ERROR', message: `tenants without an active policy: ${inactive.map((t) => t.id).join(', ')}`, details };
    }
    const warned = tenants.filter((t) => t.state === 'WARN');
    if (warned.length > 0) {
      return { state: 'WARN', message: `tenants whose last bundle was refused: ${warned.map((t) => t.id).join(', ')}`, details };
    }
    return { state: 'OK', details };
  }
}
