/**
 * A bounded LRU cache of decisions keyed by tenant + bundle revision + entrypoint +
 * canonical input. Only deterministic policies are cached (see compiled-policy.ts), so a
 * hit is exactly what evaluation would return. A new revision never sees old entries (the
 * revision is part of the key) and activation purges the tenant's old entries.
 *
 * Bounded twice: by entries and by approximate bytes (the key's UTF-16 size plus a fixed
 * allowance per entry), so a stream of unique, large inputs cannot grow the process.
 */
export interface CachedDecision {
  readonly result: unknown;
}

/** Allowance per entry for the result object and the Map's own bookkeeping. */
export const ENTRY_OVERHEAD_BYTES = 256;

export class DecisionCache {
  readonly #maxEntries: number;
  readonly #maxBytes: number;
  readonly #entries = new Map<string, CachedDecision>();
  #bytes = 0;

  constructor(maxEntries: number, maxBytes: number = Number.POSITIVE_INFINITY) {
    this.#maxEntries = maxEntries;
    this.#maxBytes = maxBytes;
  }

  static cost(key: string): number {
    return key.length * 2 + ENTRY_OVERHEAD_BYTES;
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
    return hit;
  }

  set(key: string, decision: CachedDecision): void {
    const cost = DecisionCache.cost(key);
    if (this.#maxEntries <= 0 || cost > this.#maxBytes) return;
    this.#delete(key);
    this.#entries.set(key, decision);
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
    if (this.#entries.delete(key)) this.#bytes -= DecisionCache.cost(key);
  }
}
