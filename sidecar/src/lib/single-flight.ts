/**
 * At most one run per key at a time (a tenant's status-list fetch or refresh): `start` runs
 * `work` for a key with none running and returns its promise, or undefined while one runs;
 * the key is free again once that run settles.
 */
export class SingleFlight<K, T> {
  readonly #running = new Map<K, Promise<T>>();

  has(key: K): boolean {
    return this.#running.has(key);
  }

  start(key: K, work: () => Promise<T>): Promise<T> | undefined {
    if (this.#running.has(key)) return undefined;
    const run = work().finally(() => {
      if (this.#running.get(key) === run) this.#running.delete(key);
    });
    this.#running.set(key, run);
    return run;
  }

  /** How many runs are in flight now. */
  get size(): number {
    return this.#running.size;
  }

  /** The runs in flight now. */
  running(): Array<Promise<T>> {
    return [...this.#running.values()];
  }
}
