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

/**
 * Challenges a verifier minted and not yet used. A tenant that requires minted challenges
 * accepts a presentation only for a challenge taken from here (once, before it expires).
 */
export interface ChallengeStore {
  remember(key: string, expiresAtMs: number): void;
  /** True once for a remembered, unexpired key; false otherwise. */
  take(key: string, nowMs: number): boolean;
}

export class MemoryChallengeStore implements ChallengeStore {
  readonly #open = new Map<string, number>();

  constructor(readonly maxEntries = 100_000) {}

  remember(key: string, expiresAtMs: number): void {
    if (this.#open.size >= this.maxEntries) {
      // the oldest challenge goes first: a holder who waited longest is the one asked to retry
      const oldest = this.#open.keys().next().value;
      if (oldest !== undefined) this.#open.delete(oldest);
    }
    this.#open.set(key, expiresAtMs);
  }

  take(key: string, nowMs: number): boolean {
    const expires = this.#open.get(key);
    if (expires === undefined) return false;
    this.#open.delete(key);
    return expires >= nowMs;
  }
}
