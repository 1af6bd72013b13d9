/**
 * Hot swap for the local-directory bundle source: every `intervalMs` the watcher looks at each
 * `<directory>/<tenant>/bundle.tar.gz` (size, modification time, inode) and, once a changed
 * file has stayed the same for one more interval (a build still writing it is not read
 * half-done), reloads the tenant through the full activation gate. A refused build keeps the
 * running revision and is reported like any refusal (`/v1/tenants`, metrics). With no tenants
 * configured, a tenant folder that appears is discovered and activated the same way.
 *
 * Polling rather than fs.watch: it behaves the same on every file system, including the
 * volume mounts a pod gets, and costs one stat per tenant per interval.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describeThrown } from '../lib/errors.ts';
import type { Component, ComponentStatus } from '../lib/lifecycle.ts';
import type { TenantManager } from './tenant-manager.ts';

export interface DirectoryWatcherOptions {
  readonly directory: string;
  readonly intervalMs: number;
  readonly tenants: TenantManager;
  /** Tenant folders in the directory; given only when tenants may be discovered (none configured). */
  readonly listTenants?: () => Promise<string[]>;
  readonly log?: (level: 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>) => void;
}

interface Seen {
  readonly signature: string;
  /** A changed signature waiting one more interval before the reload. */
  pending?: string;
}

export class DirectoryWatcher implements Component {
  readonly name = 'bundle_watch';
  readonly #options: DirectoryWatcherOptions;
  readonly #seen = new Map<string, Seen>();
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #reloads = 0;
  #lastError: string | undefined;

  constructor(options: DirectoryWatcherOptions) {
    this.#options = options;
  }

  async start(): Promise<void> {
    // what the tenant manager read at start is the baseline
    for (const tenant of this.#options.tenants.ids()) {
      const signature = await this.#signature(tenant);
      if (signature !== undefined) this.#seen.set(tenant, { signature });
    }
    this.#timer = setInterval(() => {
      this.#running ??= this.#poll().finally(() => {
        this.#running = undefined;
      });
    }, this.#options.intervalMs);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#running;
  }

  status(): ComponentStatus {
    const details = { directory: this.#options.directory, intervalMs: this.#options.intervalMs, reloads: this.#reloads };
    if (this.#lastError !== undefined) return { state: 'WARN', message: `watching the bundle directory: ${this.#lastError}`, details };
    return { state: 'OK', details };
  }

  async #signature(tenant: string): Promise<string | undefined> {
    try {
      const s = await stat(join(this.#options.directory, tenant, 'bundle.tar.gz'));
      return `${s.size}:${s.mtimeMs}:${s.ino}`;
    } catch {
      return undefined;
    }
  }

  async #poll(): Promise<void> {
    try {
      const tenants = new Set([...this.#options.tenants.ids(), ...((await this.#options.listTenants?.()) ?? [])]);
      let trustRefreshed = false;
      for (const tenant of tenants) {
        const signature = await this.#signature(tenant);
        if (signature === undefined) continue;
        const seen = this.#seen.get(tenant);
        if (seen !== undefined && seen.signature === signature) {
          delete seen.pending;
          continue;
        }
        if (seen?.pending !== signature) {
          // changed (or new): wait until it has stayed the same for one interval
          this.#seen.set(tenant, { signature: seen?.signature ?? '', pending: signature });
          continue;
        }
        // unchanged for one interval: reload it
        this.#seen.set(tenant, { signature });
        if (!this.#options.tenants.discover(tenant)) continue;
        try {
          // a new build may come with a new key (a new tenant's, a rotation): the keys
          // directory is read once per poll, however many tenants changed in it
          if (!trustRefreshed) {
            await this.#options.tenants.refreshTrust();
            trustRefreshed = true;
          }
          const active = await this.#options.tenants.reload(tenant);
          this.#reloads++;
          this.#options.log?.('info', 'bundle reloaded from the directory', { tenant, revision: active.revision });
        } catch (error) {
          this.#options.log?.('warn', 'a new bundle in the directory was refused; the running revision stays', { tenant, error: describeThrown(error) });
        }
      }
      this.#lastError = undefined;
    } catch (error) {
      this.#lastError = describeThrown(error);
    }
  }
}
