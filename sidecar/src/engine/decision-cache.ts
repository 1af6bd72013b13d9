/**
 * A bounded LRU cache of decisions keyed by tenant + bundle revision + entrypoint +
 * canonical input. Only deterministic policies are cached (see compiled-policy.ts), so a
 * hit is exactly what evaluation would return. A new revision never sees old entries (the
 * revision is part of the key) and activation purges the tenant's old entries.
 */
export interface CachedDecision {
  readonly result: unknown;
}

export class DecisionCache {
  readonly #maxEntries: number;
  readonly #entries = new Map<string, CachedDecision>();

  constructor(maxEntries: number) {
    this.#maxEntries = maxEntries;
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
    if (this.#maxEntries <= 0) return;
    this.#entries.delete(key);
    this.#entries.set(key, decision);
    while (this.#entries.size > this.#maxEntries) {
      const oldest = this.#entries.keys().next();
      if (oldest.done === true) break;
      this.#entries.delete(oldest.value);
    }
  }

  purgeTenant(tenant: string): void {
    const prefix = `${tenant}\u0000`;
    for (const key of this.#entries.keys()) if (key.startsWith(prefix)) this.#entries.delete(key);
  }
}
