/**
 * A bounded LRU cache of decisions keyed by tenant + bundle revision + entrypoint +
 * canonical input. Only deterministic policies are cached (see compiled-policy.ts), so a
 * hit is exactly what evaluation would return. A new revision never sees old entries (the
 * revision is part of the key) and activation purges the tenant's old entries.
 *
 * Bounded twice: by entries and by approximate bytes (the key's and the result's JSON text
 * as UTF-16, plus a fixed allowance per entry), so neither a stream of unique, large inputs
 * nor small inputs whose results are large can grow the process past the budget.
 *
 * The budget is shared fairly between tenants: each tenant has its own LRU, and when the
 * cache is over budget the entry that leaves is the least recently used one of the tenant
 * holding the most (bytes, or entries when the count is what is over). A tenant flooding
 * the cache with unique inputs therefore evicts its own entries once it holds more than the
 * others, and never empties a quieter tenant's share.
 */
import { tenantOfKey as tenantOf } from '../lib/tenant-id.ts';

export interface CachedDecision {
  readonly result: unknown;
}

/** Allowance per entry for the objects around the result and the Map's own bookkeeping. */
export const ENTRY_OVERHEAD_BYTES = 256;

interface Entry {
  readonly decision: CachedDecision;
  readonly cost: number;
}

/** One tenant's entries, least recently used first (Map iteration is insertion order). */
interface Share {
  readonly tenant: string;
  readonly entries: Map<string, Entry>;
  bytes: number;
}

export class DecisionCache {
  readonly #maxEntries: number;
  readonly #maxBytes: number;
  readonly #shares = new Map<string, Share>();
  #size = 0;
  #bytes = 0;

  constructor(maxEntries: number, maxBytes: number = Number.POSITIVE_INFINITY) {
    this.#maxEntries = maxEntries;
    this.#maxBytes = maxBytes;
  }

  /** Approximate bytes an entry holds: its key and its result (as JSON text), UTF-16. */
  static cost(key: string, result: unknown): number {
    // a boolean or a number (most decisions) costs nothing to size; only objects and strings are measured
    const resultLength = typeof result === 'object' && result !== null ? (JSON.stringify(result)?.length ?? 0) : typeof result === 'string' ? result.length + 2 : 8;
    return (key.length + resultLength) * 2 + ENTRY_OVERHEAD_BYTES;
  }

  /** Approximate bytes held. */
  get bytes(): number {
    return this.#bytes;
  }

  static key(tenant: string, revision: string, path: string, canonicalInput: string): string {
    return `${tenant}\u0000${revision}\u0000${path}\u0000${canonicalInput}`;
  }

  get size(): number {
    return this.#size;
  }

  /** Entries and approximate bytes one tenant holds. */
  held(tenant: string): { entries: number; bytes: number } {
    const share = this.#shares.get(tenant);
    return { entries: share?.entries.size ?? 0, bytes: share?.bytes ?? 0 };
  }

  get(key: string): CachedDecision | undefined {
    const entries = this.#shares.get(tenantOf(key))?.entries;
    const hit = entries?.get(key);
    if (entries !== undefined && hit !== undefined) {
      // Refresh recency: Map iteration order is insertion order.
      entries.delete(key);
      entries.set(key, hit);
    }
    return hit?.decision;
  }

  set(key: string, decision: CachedDecision): void {
    if (this.#maxEntries <= 0) return;
    const cost = DecisionCache.cost(key, decision.result);
    if (cost > this.#maxBytes) return;
    const tenant = tenantOf(key);
    let share = this.#shares.get(tenant);
    if (share === undefined) this.#shares.set(tenant, (share = { tenant, entries: new Map(), bytes: 0 }));
    this.#delete(share, key);
    share.entries.set(key, { decision, cost });
    share.bytes += cost;
    this.#size++;
    this.#bytes += cost;
    while (this.#size > this.#maxEntries || this.#bytes > this.#maxBytes) {
      const victim = this.#largest(this.#size > this.#maxEntries ? 'entries' : 'bytes');
      const oldest = victim?.entries.keys().next();
      if (victim === undefined || oldest === undefined || oldest.done === true) break;
      this.#delete(victim, oldest.value);
      // an emptied share leaves (never the one just written to: it holds the new entry)
      if (victim.entries.size === 0) this.#shares.delete(victim.tenant);
    }
  }

  purgeTenant(tenant: string): void {
    const share = this.#shares.get(tenant);
    if (share === undefined) return;
    this.#shares.delete(tenant);
    this.#size -= share.entries.size;
    this.#bytes -= share.bytes;
  }

  /** The share holding the most, by entry count or by bytes. */
  #largest(by: 'entries' | 'bytes'): Share | undefined {
    let largest: Share | undefined;
    let most = 0;
    for (const share of this.#shares.values()) {
      const held = by === 'entries' ? share.entries.size : share.bytes;
      if (held > most) {
        most = held;
        largest = share;
      }
    }
    return largest;
  }

  #delete(share: Share, key: string): void {
    const entry = share.entries.get(key);
    if (entry === undefined || !share.entries.delete(key)) return;
    share.bytes -= entry.cost;
    this.#size--;
    this.#bytes -= entry.cost;
  }
}
