/**
 * One-time use of verifier challenges (presentation `challenge`, KB-JWT `nonce`): a presentation
 * seen once is refused the second time (`ERR_CREDENTIAL_REPLAYED`). The stores are adapters: the
 * in-memory ones below suit a single sidecar; replicas share Redis ones (redis-shared-state.ts),
 * so a presentation accepted by one replica is a replay at every other. A store that cannot
 * answer throws (`ERR_CREDENTIAL_STATE_UNAVAILABLE`): the presentation is refused, never
 * accepted unchecked.
 */
import { ErrorCodes, PavilionError } from '../lib/errors.ts';
import { tenantOfKey as tenantOf } from '../lib/tenant-id.ts';

export interface NonceStore {
  /** Record `key` until `expiresAtMs`; false if it was already recorded and has not expired. */
  consumeOnce(key: string, expiresAtMs: number, nowMs: number): Promise<boolean>;
  /** Whether `key` is recorded and unexpired, recording nothing. */
  seen(key: string, nowMs: number): Promise<boolean>;
}

/**
 * Bounded in-memory store. When a tenant's share is full of live entries it refuses new ones
 * (`ERR_CREDENTIAL_STATE_UNAVAILABLE`) rather than evicting any: an evicted entry would let its
 * presentation be replayed. The bound is per tenant (a key's text up to its first NUL, as the
 * verifier writes them), so a flood of presentations to one tenant cannot refuse another's.
 * Expired entries leave from a min-heap on expiry, so each insert is O(log n) however full
 * the store is.
 */
export class MemoryNonceStore implements NonceStore {
  readonly #seen = new Map<string, number>();
  /** Live entries per tenant. */
  readonly #perTenant = new Map<string, number>();
  /** [expiresAtMs, key], earliest first; an entry whose key was re-recorded since is stale. */
  readonly #expiries: Array<readonly [number, string]> = [];

  constructor(readonly maxEntriesPerTenant = 100_000) {}

  async consumeOnce(key: string, expiresAtMs: number, nowMs: number): Promise<boolean> {
    this.#expire(nowMs);
    const existing = this.#seen.get(key);
    if (existing !== undefined && existing > nowMs) return false;
    const tenant = tenantOf(key);
    if (existing === undefined) {
      const live = this.#perTenant.get(tenant) ?? 0;
      if (live >= this.maxEntriesPerTenant) {
        throw new PavilionError(ErrorCodes.CREDENTIAL_STATE_UNAVAILABLE, `the one-time challenge store of this tenant is full (${this.maxEntriesPerTenant} live entries); the presentation is refused`);
      }
      this.#perTenant.set(tenant, live + 1);
    }
    this.#seen.set(key, expiresAtMs);
    this.#push([expiresAtMs, key]);
    return true;
  }

  async seen(key: string, nowMs: number): Promise<boolean> {
    return (this.#seen.get(key) ?? 0) > nowMs;
  }

  get size(): number {
    return this.#seen.size;
  }

  #expire(nowMs: number): void {
    for (let top = this.#expiries[0]; top !== undefined && top[0] <= nowMs; top = this.#expiries[0]) {
      this.#pop();
      // a key recorded again after it expired has a later entry of its own: keep it
      if (this.#seen.get(top[1]) === top[0]) {
        this.#seen.delete(top[1]);
        const tenant = tenantOf(top[1]);
        const live = (this.#perTenant.get(tenant) ?? 1) - 1;
        if (live > 0) this.#perTenant.set(tenant, live);
        else this.#perTenant.delete(tenant);
      }
    }
  }

  #push(entry: readonly [number, string]): void {
    const heap = this.#expiries;
    heap.push(entry);
    for (let i = heap.length - 1; i > 0;) {
      const parent = (i - 1) >> 1;
      if (heap[parent]![0] <= heap[i]![0]) break;
      [heap[parent], heap[i]] = [heap[i]!, heap[parent]!];
      i = parent;
    }
  }

  #pop(): void {
    const heap = this.#expiries;
    const last = heap.pop();
    if (last === undefined || heap.length === 0) return;
    heap[0] = last;
    for (let i = 0; ;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let least = i;
      if (left < heap.length && heap[left]![0] < heap[least]![0]) least = left;
      if (right < heap.length && heap[right]![0] < heap[least]![0]) least = right;
      if (least === i) return;
      [heap[least], heap[i]] = [heap[i]!, heap[least]!];
      i = least;
    }
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

/**
 * Bounded in-memory store of minted challenges, per tenant (a key's text up to its first NUL,
 * as the verifier writes them) and in total. When a tenant's share is full its own oldest
 * challenge goes first (the holder who waited longest is the one asked to retry), so a flood
 * of minting for one tenant never drops another tenant's challenges; when all tenants
 * together hold `maxEntries`, the oldest challenge of the tenant holding the most goes.
 * Expired challenges leave when they reach the front of their tenant's share or are taken.
 */
export class MemoryChallengeStore implements ChallengeStore {
  /** Open challenges per tenant, in minting order, with their expiry. */
  readonly #open = new Map<string, Map<string, number>>();
  #size = 0;

  constructor(readonly maxEntriesPerTenant = 100_000, readonly maxEntries = 1_000_000) {}

  async remember(key: string, expiresAtMs: number, nowMs: number): Promise<void> {
    const tenant = tenantOf(key);
    let open = this.#open.get(tenant);
    if (open === undefined) this.#open.set(tenant, (open = new Map()));
    for (const [oldest, expires] of open) {
      if (expires >= nowMs && open.size < this.maxEntriesPerTenant) break;
      open.delete(oldest);
      this.#size--;
    }
    if (this.#size >= this.maxEntries) this.#dropFromLargest(tenant);
    if (!open.has(key)) this.#size++;
    open.set(key, expiresAtMs);
  }

  async take(key: string, nowMs: number): Promise<boolean> {
    const tenant = tenantOf(key);
    const open = this.#open.get(tenant);
    const expires = open?.get(key);
    if (open === undefined || expires === undefined) return false;
    open.delete(key);
    this.#size--;
    if (open.size === 0) this.#open.delete(tenant);
    return expires >= nowMs;
  }

  /** The oldest challenge of the tenant holding the most (`tenant`'s own share is kept even if empty). */
  #dropFromLargest(tenant: string): void {
    let largest: [string, Map<string, number>] | undefined;
    for (const entry of this.#open) if (largest === undefined || entry[1].size > largest[1].size) largest = entry;
    const oldest = largest?.[1].keys().next();
    if (largest === undefined || oldest === undefined || oldest.done === true) return;
    largest[1].delete(oldest.value);
    this.#size--;
    if (largest[1].size === 0 && largest[0] !== tenant) this.#open.delete(largest[0]);
  }
}
