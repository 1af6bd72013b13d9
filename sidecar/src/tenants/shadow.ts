/**
 * Shadow mode bookkeeping: what a staged revision evaluated beside the active one has seen
 * (comparisons, differences, errors, and a few samples with the input hashed, never copied).
 * The tenant manager owns the state, the engine reports the comparisons.
 *
 * A sample shows the two results of one decision the revisions disagreed on. Those results
 * may echo personal data (a reason naming a customer), so when the sidecar has decision-log
 * privacy configured they pass the tenant's decision-log privacy first (`ShadowPrivacy`: the
 * audit log's DecisionMasker, adapted by the composition root): each result is masked as the
 * decision log would mask a decision event with that result, and only the masked values are
 * kept. Masking evaluates policy, so it is asynchronous: the counters are exact and updated at
 * once, a sample's slot is taken at once (the bound holds however many maskings are in
 * flight), and the sample appears in reports once masked. The unmasked results are never put
 * in the state: they live only in the masking's closure.
 */
import type { LoadedPolicy, ShadowComparison } from '../engine/index.ts';
import { LOGGED_DOCUMENT_MAX_DEPTH, canonicalJson } from '../lib/canonical-json.ts';
import { describeThrown } from '../lib/errors.ts';
import { sha256Hex } from '../lib/sha256.ts';

export interface ShadowState {
  readonly loaded: LoadedPolicy;
  readonly revision: string;
  readonly digest: string;
  readonly since: string;
  readonly sequence: number | undefined;
  evaluations: number;
  differences: number;
  errors: number;
  /**
   * The samples in the order their comparisons came; `undefined` is a slot taken by a sample
   * still being masked (never reported).
   */
  readonly samples: Array<ShadowSample | undefined>;
}

export interface ShadowSample {
  readonly at: string;
  readonly path: string;
  /** The active revision's result (null: undefined document, or erased). */
  readonly active: unknown;
  /** The shadow revision's result (null: undefined document, failed evaluation, or erased). */
  readonly shadow: unknown;
  readonly error?: string;
  /**
   * SHA-256 of the input's canonical JSON as the sample masks it - with the log's
   * pseudonyms, under both revisions' mask rules (the audit receipt's `input_sha256` of the
   * same decision unless the staged revision masks more of the input): correlates with the
   * log without copying personal data, and tells no more than the log does. Absent when the
   * decision log drops the decision or its masking fails.
   */
  readonly input_sha256?: string;
  /**
   * Where the tenant's decision-log privacy hid something, as paths into this sample
   * (`/active/...`, `/shadow/...`, each written as the decision log writes its `/result/...`
   * paths): what `system.log.mask` removed (as OPA's `erased`; also
   * both values when `values_erased` says why), what it replaced (`masked`), what was replaced
   * by keyed pseudonyms (`pseudonymised`). Each result was masked as the decision log masks a
   * decision event whose `result` it is (its `/result/...` paths are shown here under the side).
   */
  readonly erased?: readonly string[];
  readonly masked?: readonly string[];
  readonly pseudonymised?: readonly string[];
  /**
   * Both values are erased whatever they were, failing closed: the tenant's `system.log.drop`
   * drops this decision from the decision log (`dropped_by_policy`), or masking failed
   * (`mask_failed`, with the failure as the decision log reports it).
   */
  readonly values_erased?: { readonly reason: 'dropped_by_policy' | 'mask_failed'; readonly message: string };
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
  /** Samples taken but still being masked (they appear in `samples` once masked). */
  readonly samples_pending?: number;
}

/** One result a shadow sample would show, as a decision the decision log would hold. */
export interface ShadowDecision {
  readonly tenant: string;
  readonly path: string;
  readonly input: unknown;
  /** undefined: undefined document (or the shadow evaluation failed). */
  readonly result: unknown;
  /** Which revision gave `result`. */
  readonly side: 'active' | 'shadow';
  /** The tenant's staged revision (its own decision-log rules concern its results too). */
  readonly shadow: LoadedPolicy;
  /** When the comparison was recorded (RFC 3339). */
  readonly at: string;
}

/** The decision log's privacy applied to one `ShadowDecision`. */
export type ShadowPrivacyOutcome =
  /** The tenant's system.log.drop drops this decision from the decision log. */
  | { readonly kind: 'drop' }
  /** Masking failed (the decision log would log the event erased, with this reason). */
  | { readonly kind: 'failed'; readonly reason: string }
  /** The input and result as the decision log would hold them, and OPA's lists of what was hidden (`/result/...`, `/input/...`). */
  | {
      readonly kind: 'masked';
      readonly input: unknown;
      readonly result: unknown;
      readonly erased?: readonly string[];
      readonly masked?: readonly string[];
      readonly pseudonymised?: readonly string[];
    };

/**
 * The tenant's decision-log privacy (system.log.drop / .mask, keyed pseudonymisation), as the
 * audit log applies it; provided by the composition root. Absent when no decision-log
 * privacy is configured at all: samples then show the results as they are.
 */
export interface ShadowPrivacy {
  mask(decision: ShadowDecision): Promise<ShadowPrivacyOutcome>;
}

const MAX_SHADOW_SAMPLES = 20;

type SampleBase = Pick<ShadowSample, 'at' | 'path' | 'error' | 'input_sha256'>;

/**
 * Count one comparison (for the same shadow revision only) and keep it as a sample if it
 * differed: at once without `privacy`, else once masked (its slot taken now).
 */
export function recordComparison(shadow: ShadowState, comparison: ShadowComparison, privacy?: ShadowPrivacy): void {
  if (shadow.digest !== comparison.shadowDigest) return;
  shadow.evaluations++;
  if (comparison.error !== undefined) shadow.errors++;
  else if (!comparison.same) shadow.differences++;
  if ((comparison.error !== undefined || !comparison.same) && shadow.samples.length < MAX_SHADOW_SAMPLES) {
    const base: SampleBase = {
      at: new Date().toISOString(),
      path: comparison.path,
      ...(comparison.error === undefined ? {} : { error: comparison.error }),
    };
    if (privacy === undefined) {
      shadow.samples.push(sampleOf(hashed(base, comparison.input), comparison.active ?? null, comparison.shadow ?? null));
      return;
    }
    const slot = shadow.samples.push(undefined) - 1;
    void maskedSample(privacy, shadow.loaded, comparison, base).then((sample) => {
      shadow.samples[slot] = sample;
    });
  }
}

/** `base` with the input's hash as the audit log's receipt has it: none without an input, or for one nested too deep to be logged. */
function hashed(base: SampleBase, input: unknown): SampleBase {
  if (input === undefined) return base;
  try {
    return { ...base, input_sha256: sha256Hex(canonicalJson(input, LOGGED_DOCUMENT_MAX_DEPTH)) };
  } catch {
    return base;
  }
}

/** The sample's members in the order they have always been shown. */
function sampleOf(base: SampleBase, active: unknown, shadow: unknown, hidden: Omit<ShadowSample, keyof SampleBase | 'active' | 'shadow'> = {}): ShadowSample {
  return {
    at: base.at,
    path: base.path,
    active,
    shadow,
    ...(base.error === undefined ? {} : { error: base.error }),
    ...(base.input_sha256 === undefined ? {} : { input_sha256: base.input_sha256 }),
    ...hidden,
  };
}

function erasedSample(base: SampleBase, reason: 'dropped_by_policy' | 'mask_failed', message: string): ShadowSample {
  return sampleOf(base, null, null, { erased: ['/active', '/shadow'], values_erased: { reason, message } });
}

/** The `/result` paths of an outcome's list, as pointers into the sample's `side`. */
function onSide(paths: readonly string[] | undefined, side: 'active' | 'shadow'): string[] {
  return (paths ?? []).filter((p) => p === '/result' || p.startsWith('/result/')).map((p) => `/${side}${p.slice('/result'.length)}`);
}

/** Both results masked as the decision log masks them; never rejects (a failure erases both). */
async function maskedSample(privacy: ShadowPrivacy, loaded: LoadedPolicy, comparison: ShadowComparison, base: SampleBase): Promise<ShadowSample> {
  // Two decisions, not one carrying both results: the tenant's rules are written for a
  // decision event (`/result/...` paths, `input.result` in drop and mask), so each result is
  // masked as the decision event it would be.
  const decision = (side: 'active' | 'shadow', result: unknown): ShadowDecision => ({
    tenant: comparison.tenant, path: comparison.path, input: comparison.input, result, side, shadow: loaded, at: base.at,
  });
  let outcomes: [ShadowPrivacyOutcome, ShadowPrivacyOutcome];
  try {
    outcomes = await Promise.all([privacy.mask(decision('active', comparison.active)), privacy.mask(decision('shadow', comparison.shadow))]);
  } catch (error) {
    return erasedSample(base, 'mask_failed', describeThrown(error));
  }
  const [active, shadow] = outcomes;
  if (active.kind === 'failed') return erasedSample(base, 'mask_failed', active.reason);
  if (shadow.kind === 'failed') return erasedSample(base, 'mask_failed', shadow.reason);
  if (active.kind === 'drop' || shadow.kind === 'drop') {
    return erasedSample(base, 'dropped_by_policy', "the tenant's system.log.drop drops this decision from the decision log");
  }
  const list = (member: 'erased' | 'masked' | 'pseudonymised'): string[] => [...onSide(active[member], 'active'), ...onSide(shadow[member], 'shadow')];
  const [erased, masked, pseudonymised] = [list('erased'), list('masked'), list('pseudonymised')];
  // both sides mask the same input under the same rules (both revisions'): either side's will do
  return sampleOf(hashed(base, active.input), active.result ?? null, shadow.result ?? null, {
    ...(erased.length === 0 ? {} : { erased }),
    ...(masked.length === 0 ? {} : { masked }),
    ...(pseudonymised.length === 0 ? {} : { pseudonymised }),
  });
}

export function shadowReport(shadow: ShadowState): ShadowReport {
  const samples = shadow.samples.filter((s): s is ShadowSample => s !== undefined);
  const pending = shadow.samples.length - samples.length;
  return {
    revision: shadow.revision,
    digest: shadow.digest,
    since: shadow.since,
    ...(shadow.sequence === undefined ? {} : { deploy: shadow.sequence }),
    evaluations: shadow.evaluations,
    differences: shadow.differences,
    errors: shadow.errors,
    samples,
    ...(pending === 0 ? {} : { samples_pending: pending }),
  };
}
