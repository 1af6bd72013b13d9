/** Small statistics the benchmarks share. */

/** The `p`th percentile of `values` (nearest rank, unsorted input), 0 for none. */
export function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}
