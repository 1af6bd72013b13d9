/**
 * One-time use of verifier challenges (presentation `challenge`, KB-JWT `nonce`): a presentation
 * seen once is refused the second time (`ERR_CREDENTIAL_REPLAYED`). The stores are adapters: the
 * in-memory ones below suit a single sidecar; replicas share Redis ones (redis-shared-state.ts),
 * so a presentation accepted by one replica is a replay at every other. A store that cannot
 * answer throws (`ERR_CREDENTIAL_STATE_UNAVAILABLE`): the presentation is refused, never
 * accepted unchecked.
 */
export interface NonceStore {
  /** Record `key` until `expiresAtMs`; false if it was already recorded and has not expired. */
  consumeOnce(key: string, expiresAtMs: number, nowMs: number): Promise<boolean>;
}

/** Bounded in-memory store: when full, the entry closest to expiry is dropped first. */
export class MemoryNonceStore implements NonceStore {
  readonly #seen = new Map<string, number>();

  constructor(readonly maxEntries = 100_000) {}

  async consumeOnce(key: string, expiresAtMs: number, nowMs: number): Promise<boolean> {
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
  remember(key: string, expiresAtMs: number, nowMs: number): Promise<void>;
  /** True once for a remembered, unexpired key; false otherwise. */
  take(key: string, nowMs: number): Promise<boolean>;
}

export class MemoryChallengeStore implements ChallengeStore {
  readonly #open = new Map<string, number>();

  constructor(readonly maxEntries = 100_000) {}

  async remember(key: string, expiresAtMs: number, _nowMs: number): Promise<void> {
    if (this.#open.size >= this.maxEntries) {
      // the oldest challenge goes first: a holder who waited longest is the one asked to retry
      const oldest = this.#open.keys().next().value;
      if (oldest !== undefined) this.#open.delete(oldest);
    }
    this.#open.set(key, expiresAtMs);
  }

  async take(key: string, nowMs: number): Promise<boolean> {
    const expires = this.#open.get(key);
    if (expires === undefined) return false;
    this.#open.delete(key);
    return expires >= nowMs;
  }
}
