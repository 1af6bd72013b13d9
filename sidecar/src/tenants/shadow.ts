/**
 * Shadow mode bookkeeping: what a staged revision evaluated beside the active one has seen
 * (comparisons, differences, errors, and a few samples with the input hashed, never copied).
 * Pure: the tenant manager owns the state, the engine reports the comparisons.
 */
import { createHash } from 'node:crypto';
import type { LoadedPolicy, ShadowComparison } from '../engine/index.ts';
import { canonicalJson } from '../lib/canonical-json.ts';

export interface ShadowState {
  readonly loaded: LoadedPolicy;
  readonly revision: string;
  readonly digest: string;
  readonly since: string;
  readonly sequence: number | undefined;
  evaluations: number;
  differences: number;
  errors: number;
  readonly samples: ShadowSample[];
}

export interface ShadowSample {
  readonly at: string;
  readonly path: string;
  readonly active: unknown;
  readonly shadow: unknown;
  readonly error?: string;
  /** SHA-256 of the input's canonical JSON: correlates with the decision log without copying personal data. */
  readonly input_sha256: string;
}

/** What shadow mode has seen so far, for status. */
export interface ShadowReport {
  readonly revision: string;
  readonly digest: string;
  readonly since: string;
  readonly deploy?: number;
  readonly evaluations: number;
  readonly differences: number;
  readonly errors: number;
  readonly samples: readonly ShadowSample[];
}

const MAX_SHADOW_SAMPLES = 20;

/** Count one comparison (for the same shadow revision only) and keep it as a sample if it differed. */
export function recordComparison(shadow: ShadowState, comparison: ShadowComparison): void {
  if (shadow.digest !== comparison.shadowDigest) return;
  shadow.evaluations++;
  if (comparison.error !== undefined) shadow.errors++;
  else if (!comparison.same) shadow.differences++;
  if ((comparison.error !== undefined || !comparison.same) && shadow.samples.length < MAX_SHADOW_SAMPLES) {
    shadow.samples.push({
      at: new Date().toISOString(),
      path: comparison.path,
      active: comparison.active ?? null,
      shadow: comparison.shadow ?? null,
      ...(comparison.error === undefined ? {} : { error: comparison.error }),
      input_sha256: createHash('sha256').update(comparison.input === undefined ? '' : canonicalJson(comparison.input, 10_000)).digest('hex'),
    });
  }
}

export function shadowReport(shadow: ShadowState): ShadowReport {
  return {
    revision: shadow.revision,
    digest: shadow.digest,
    since: shadow.since,
    ...(shadow.sequence === undefined ? {} : { deploy: shadow.sequence }),
    evaluations: shadow.evaluations,
    differences: shadow.differences,
    errors: shadow.errors,
    samples: [...shadow.samples],
  };
}
