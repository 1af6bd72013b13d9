/**
 * The verifiable decision sink: routes each decision event to its tenant's AuditLog
 * (`<directory>/tenants/<tenant>/audit.wal`; events without a tenant go to `_unrouted`), and
 * publishes the checkpoint signer's public key to `<directory>/keys/` (old keys stay there,
 * so checkpoints from before a rotation keep verifying, and operators can hand the directory
 * to auditors - who should still compare it with keys obtained out of band).
 *
 * `write` (the DecisionSink contract) resolves once the event is durable and rejects with the
 * log's typed error (ERR_AUDIT_LOG_FULL, ...) when it is refused; the rejection is also
 * counted in `status()`, so a caller that does not await it does not lose it silently.
 * `append` returns the decision's receipt. `proveInclusion` / `proveConsistency` are the
 * programmatic API for an HTTP proof endpoint.
 */
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import type { ComponentState, ComponentStatus } from '../lib/lifecycle.ts';
import { TENANT_ID_PATTERN } from '../lib/tenant-id.ts';
import type { DecisionEventV1, DecisionSink } from './decision-event.ts';
import {
  AuditLog,
  Keyring,
  publicKeyPem,
  type Anchor,
  type AuditLogOptions,
  type CheckpointSigner,
  type ConsistencyProofV1,
  type DecisionProofV1,
  type DecisionReceiptV1,
  type SignedCheckpointV1,
} from './log/index.ts';

export const UNROUTED_TENANT = '_unrouted';
/**
 * The `_unrouted` log's own disk budget (or `maxDiskBytes`, if smaller): it holds checks no
 * tenant could be resolved for, which any caller can send, so it must not claim a tenant's
 * budget of the volume (sized as tenants x maxDiskBytes + headroom; the headroom holds it).
 */
export const UNROUTED_MAX_DISK_BYTES = 64 * 1024 * 1024;

export type AuditLogSettings = Omit<AuditLogOptions, 'directory' | 'origin' | 'signer' | 'keyring' | 'onCheckpoint' | 'anchor'>;

export interface AuditLogSinkOptions {
  readonly directory: string;
  /** Prefix of every log's origin: `<originPrefix>/<tenant>` (the sidecar's `labels.id`). */
  readonly originPrefix: string;
  readonly settings: AuditLogSettings;
  /** Called once at start; the sink closes the signer at stop. */
  readonly createSigner: () => Promise<CheckpointSigner>;
  readonly onCheckpoint?: (tenant: string, checkpoint: SignedCheckpointV1) => void;
  /** Publishes each tenant's checkpoints outside (e.g. an EVM contract); none by default. */
  readonly anchor?: Anchor;
  /** Makes the anchor at start (reads its key); wins over `anchor`. The sink closes it at stop. */
  readonly createAnchor?: () => Promise<Anchor | undefined>;
}

const RANK: Record<ComponentState, number> = { OK: 0, NOT_READY: 1, WARN: 2, ERROR: 3 };

export class AuditLogSink implements DecisionSink {
  readonly name = 'decision_log';
  readonly durable = true;
  readonly #options: AuditLogSinkOptions;
  readonly #logs = new Map<string, Promise<AuditLog>>();
  readonly #opened = new Map<string, AuditLog>();
  #signer: CheckpointSigner | undefined;
  #anchor: Anchor | undefined;
  #earlierKeys: Keyring | undefined;
  #refused = 0;
  #lastRefusal: string | undefined;
  #startError: string | undefined;
  #stopped = false;

  constructor(options: AuditLogSinkOptions) {
    if (!/^[A-Za-z0-9._~:-]{1,100}$/.test(options.originPrefix)) {
      throw new PavilionError(ErrorCodes.CONFIG_INVALID, `labels.id ${JSON.stringify(options.originPrefix)} cannot name an audit log (letters, digits, . _ ~ : - only)`);
    }
    this.#options = options;
  }

  get keysDirectory(): string {
    return join(this.#options.directory, 'keys');
  }

  async start(): Promise<void> {
    try {
      this.#signer = await this.#options.createSigner();
      this.#anchor = this.#options.createAnchor === undefined ? this.#options.anchor : await this.#options.createAnchor();
      await mkdir(this.keysDirectory, { recursive: true, mode: 0o700 });
      const file = join(this.keysDirectory, `${this.#signer.keyId.replace(':', '_')}.pem`);
      await writeFile(file, publicKeyPem(this.#signer.publicKeySpki), { flag: 'w', mode: 0o644 });
      this.#earlierKeys = Keyring.load(this.keysDirectory);
      const tenantsDir = join(this.#options.directory, 'tenants');
      await mkdir(tenantsDir, { recursive: true, mode: 0o700 });
      // Open (and so recover) every existing log now, so a torn tail is reported at boot.
      for (const entry of await readdir(tenantsDir, { withFileTypes: true })) {
        if (entry.isDirectory() && (TENANT_ID_PATTERN.test(entry.name) || entry.name === UNROUTED_TENANT)) await this.#log(entry.name);
      }
    } catch (error) {
      this.#startError = describeThrown(error);
      // Release what was opened before the failure: the logs (their locks), the anchor, and the
      // signer (a PKCS#11 session and C_Initialize, which a later start in this process needs).
      const logs = await Promise.allSettled([...this.#logs.values()]);
      await Promise.allSettled(logs.map((r) => (r.status === 'fulfilled' ? r.value.stop(5000) : undefined)));
      this.#logs.clear();
      this.#opened.clear();
      if (this.#options.createAnchor !== undefined) await Promise.resolve().then(() => this.#anchor?.close?.()).catch(() => undefined);
      await this.#signer?.close().catch(() => undefined);
      this.#anchor = undefined;
      this.#signer = undefined;
      throw error;
    }
  }

  #log(tenant: string): Promise<AuditLog> {
    const existing = this.#logs.get(tenant);
    if (existing !== undefined) return existing;
    const signer = this.#signer;
    if (signer === undefined || this.#stopped) return Promise.reject(new PavilionError(ErrorCodes.AUDIT_LOG_CLOSED, 'the audit log sink is not running'));
    const log = new AuditLog({
      ...this.#options.settings,
      ...(tenant === UNROUTED_TENANT ? { maxDiskBytes: Math.min(this.#options.settings.maxDiskBytes, UNROUTED_MAX_DISK_BYTES) } : {}),
      directory: join(this.#options.directory, 'tenants', tenant),
      origin: `${this.#options.originPrefix}/${tenant}`,
      signer,
      ...(this.#earlierKeys === undefined ? {} : { keyring: this.#earlierKeys }),
      onCheckpoint: (checkpoint) => this.#options.onCheckpoint?.(tenant, checkpoint),
      ...(this.#anchor === undefined ? {} : { anchor: this.#anchor }),
    });
    const opening = log.start().then(() => {
      this.#opened.set(tenant, log);
      return log;
    });
    this.#logs.set(tenant, opening);
    opening.catch(() => this.#logs.delete(tenant));
    return opening;
  }

  static tenantOf(event: DecisionEventV1): string {
    return TENANT_ID_PATTERN.test(event.tenant) ? event.tenant : UNROUTED_TENANT;
  }

  /** Log one event; resolves with its receipt once durable. */
  async append(event: DecisionEventV1): Promise<DecisionReceiptV1> {
    try {
      const log = await this.#log(AuditLogSink.tenantOf(event));
      return await log.append(event);
    } catch (error) {
      this.#refused++;
      this.#lastRefusal = describeThrown(error);
      throw error;
    }
  }

  write(event: DecisionEventV1): Promise<DecisionReceiptV1> {
    const durable = this.append(event);
    // Counted in status() by append; marking it handled keeps a caller that does not await
    // it from turning a refusal into an unhandled rejection. Callers that await still see it.
    durable.catch(() => undefined);
    return durable;
  }

  /** See AuditLog.proveInclusion; only ever looks in `tenant`'s own log. */
  async proveInclusion(tenant: string, decisionId: string, options: { readonly signNow?: boolean } = {}): Promise<DecisionProofV1> {
    const log = this.#opened.get(tenant);
    if (log === undefined) throw new PavilionError(ErrorCodes.AUDIT_DECISION_UNKNOWN, `no audit log for tenant ${JSON.stringify(tenant)}`, { details: { tenant, decisionId } });
    return log.proveInclusion(decisionId, options);
  }

  proveConsistency(tenant: string, oldSize: number, newSize: number): string[] {
    const log = this.#opened.get(tenant);
    if (log === undefined) throw new PavilionError(ErrorCodes.AUDIT_MERKLE_RANGE, `no audit log for tenant ${JSON.stringify(tenant)}`, { details: { tenant } });
    return log.proveConsistency(oldSize, newSize);
  }

  /** Proof that the tenant's log only grew since `old`, up to its latest checkpoint. */
  consistencyProofFrom(tenant: string, old: SignedCheckpointV1): ConsistencyProofV1 {
    const log = this.#opened.get(tenant);
    if (log === undefined) throw new PavilionError(ErrorCodes.AUDIT_DECISION_UNKNOWN, `no audit log for tenant ${JSON.stringify(tenant)}`, { details: { tenant } });
    return log.consistencyProofFrom(old);
  }

  /**
   * See AuditLog.consistencyProofBetween; only ever looks in `tenant`'s own log. A tenant
   * whose log is not open has no checkpoint: ERR_AUDIT_NOT_CHECKPOINTED.
   */
  consistencyProofBetween(tenant: string, oldSize: number, newSize?: number): ConsistencyProofV1 {
    const log = this.#opened.get(tenant);
    if (log === undefined) {
      throw new PavilionError(ErrorCodes.AUDIT_NOT_CHECKPOINTED, `the audit log of tenant ${tenant} has no signed checkpoint yet`, { details: { tenant } });
    }
    return log.consistencyProofBetween(oldSize, newSize);
  }

  /** The tenant logs open now (a tenant's log opens at start or with its first event). */
  openLogs(): ReadonlyMap<string, AuditLog> {
    return this.#opened;
  }

  latestCheckpoint(tenant: string): SignedCheckpointV1 | undefined {
    return this.#opened.get(tenant)?.latestCheckpoint;
  }

  status(): ComponentStatus {
    if (this.#startError !== undefined) return { state: 'ERROR', message: `audit log failed to start: ${this.#startError}` };
    if (this.#signer === undefined) return { state: 'NOT_READY', message: 'audit log not started' };
    const tenants: Record<string, ComponentStatus> = {};
    let state: ComponentState = 'OK';
    let message: string | undefined;
    for (const [tenant, log] of this.#opened) {
      const s = log.status();
      tenants[tenant] = s;
      if (RANK[s.state] > RANK[state]) {
        state = s.state;
        message = `${tenant}: ${s.message ?? s.state}`;
      }
    }
    const anchor = this.#anchor?.status?.();
    if (anchor !== undefined && RANK[anchor.state] > RANK[state]) {
      state = anchor.state;
      message = `anchor: ${anchor.message ?? anchor.state}`;
    }
    if (this.#refused > 0 && RANK[state] < RANK.WARN) {
      state = 'WARN';
      message = `${this.#refused} decision events refused; last: ${this.#lastRefusal ?? ''}`;
    }
    const details = { key_id: this.#signer.keyId, refused_events: this.#refused, tenants, ...(anchor === undefined ? {} : { anchor }) };
    return message === undefined ? { state, details } : { state, message, details };
  }

  async stop(deadlineMs: number): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    const logs = await Promise.allSettled([...this.#logs.values()]);
    await Promise.all(logs.map((r) => (r.status === 'fulfilled' ? r.value.stop(deadlineMs) : undefined)));
    if (this.#options.createAnchor !== undefined) await this.#anchor?.close?.();
    await this.#signer?.close();
  }
}
