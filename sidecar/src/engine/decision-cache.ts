/**
 * A bounded LRU cache of decisions keyed by tenant + bundle revision + entrypoint +
 * canonical input. Only deterministic policies are cached (see compiled-policy.ts), so a
 * hit is exactly what evaluation would return. A new revision never sees old entries (the
 * revision is part of the key) and activation purges the tenant's old entries.
 *
 * Bounded twice: by entries and by approximate bytes (the key's and the result's JSON text
 * as UTF-16, plus a fixed allowance per entry), so neither a stream of unique, large inputs
 * nor small inputs whose results are large can grow the process past the budget.
 */
export interface CachedDecision {
  readonly result: unknown;
}

/** Allowance per entry for the objects around the result and the Map's own bookkeeping. */
export const ENTRY_OVERHEAD_BYTES = 256;

interface Entry {
  readonly decision: CachedDecision;
  readonly cost: number;
}

export class DecisionCache {
  readonly #maxEntries: number;
  readonly #maxBytes: number;
  readonly #entries = new Map<string, Entry>();
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
    return this.#entries.size;
  }

  get(key: string): CachedDecision | undefined {
    const hit = this.#entries.get(key);
    if (hit !== undefined) {
      // Refresh recency: Map iteration order is insertion order.
      this.#entries.delete(key);
      this.#entries.set(key, hit);
    }
    return hit?.decision;
  }

  set(key: string, decision: CachedDecision): void {
    if (this.#maxEntries <= 0) return;
    const cost = DecisionCache.cost(key, decision.result);
    if (cost > this.#maxBytes) return;
    this.#delete(key);
    this.#entries.set(key, { decision, cost });
    this.#bytes += cost;
    while (this.#entries.size > this.#maxEntries || this.#bytes > this.#maxBytes) {
      const oldest = this.#entries.keys().next();
      if (oldest.done === true) break;
      this.#delete(oldest.value);
    }
  }

  purgeTenant(tenant: string): void {
    const prefix = `${tenant}\u0000`;
    for (const key of this.#entries.keys()) if (key.startsWith(prefix)) this.#delete(key);
  }

  #delete(key: string): void {
    const entry = this.#entries.get(key);
    if (entry !== undefined && this.#entries.delete(key)) this.#bytes -= entry.cost;
  }
}
