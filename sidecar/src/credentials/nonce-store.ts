/**
 * One-time use of verifier challenges (presentation `challenge`, KB-JWT `nonce`): a presentation
 * seen once is refused the second time (`ERR_CREDENTIAL_REPLAYED`). The store is an adapter: the
 * in-memory one below suits a single sidecar; several replicas need a shared one (Redis SET NX PX).
 */
export interface NonceStore {
  /** Record `key` until `expiresAtMs`; false if it was already recorded and has not expired. */
  consumeOnce(key: string, expiresAtMs: number, nowMs: number): boolean;
}

/** Bounded in-memory store: when full, the entry closest to expiry is dropped first. */
export class MemoryNonceStore implements NonceStore {
  readonly #seen = new Map<string, number>();

  constructor(readonly maxEntries = 100_000) {}

  consumeOnce(key: string, expiresAtMs: number, nowMs: number): boolean {
    const existing = this.#seen.get(key);
    if (existing !== undefined && existing > nowMs) return false;
    if (this.#seen.size >= this.maxEntries) this.#evict(nowMs);
    this.#seen.set(key, expiresAtMs);
    return true;
  }

  get size(): number {
    return this.#seen.size;
  }

  #evict(nowMs: number): void {
    for (const [key, expires] of this.#seen) if (expires <= nowMs) this.#seen.delete(key);
    if (this.#seen.size < this.maxEntries) return;
    // still full of live entries: drop the one expiring first (a replay of it fails closed later
    // only if the caller also bounds challenge lifetime, which the verifier does)
    let oldestKey: string | undefined;
    let oldest = Infinity;
    for (const [key, expires] of this.#seen) if (expires < oldest) [oldest, oldestKey] = [expires, key];
    if (oldestKey !== undefined) this.#seen.delete(oldestKey);
  }
}
