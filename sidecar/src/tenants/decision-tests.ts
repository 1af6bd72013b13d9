/**
 * Decision test vectors: `[{name, path, input, expect}]` in a bundle's manifest metadata
 * (`decision_tests`), evaluated on a new revision before it may serve. `expect` absent means
 * the document must be undefined. Any difference refuses the revision with
 * ERR_BUNDLE_TESTS_FAILED, listing the failing vectors.
 */
import { DECISION_TESTS_METADATA_KEY, type Bundle } from '../bundles/index.ts';
import type { LoadedPolicy, PolicyEngine } from '../engine/index.ts';
import { sameCanonicalJson } from '../lib/canonical-json.ts';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';

export interface DecisionTest {
  readonly name: string;
  readonly path: string;
  readonly input?: unknown;
  readonly expect?: unknown;
}

const DEFAULT_MAX_DECISION_TESTS = 1_000;

/** Read the bundle's test vectors from its manifest metadata (validated; none is fine). */
export function decisionTests(bundle: Bundle, max: number = DEFAULT_MAX_DECISION_TESTS): DecisionTest[] {
  const raw = bundle.manifest.metadata[DECISION_TESTS_METADATA_KEY];
  if (raw === undefined) return [];
  const invalid = (message: string): PavilionError =>
    new PavilionError(ErrorCodes.BUNDLE_MANIFEST_INVALID, `bundle .manifest metadata.${DECISION_TESTS_METADATA_KEY} is invalid: ${message}`);
  if (!Array.isArray(raw)) throw invalid('must be an array');
  if (raw.length > max) throw invalid(`has ${raw.length} vectors; at most ${max} are run`);
  return raw.map((value: unknown, i): DecisionTest => {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid(`[${i}] must be an object`);
    const t = value as Record<string, unknown>;
    if (typeof t['path'] !== 'string') throw invalid(`[${i}].path must be a string`);
    return {
      name: typeof t['name'] === 'string' ? t['name'] : `#${i}`,
      path: t['path'].split('/').filter((s) => s !== '').join('/'),
      ...(Object.hasOwn(t, 'input') ? { input: t['input'] } : {}),
      ...(Object.hasOwn(t, 'expect') ? { expect: t['expect'] } : {}),
    };
  });
}

export async function runDecisionTests(engine: PolicyEngine, loaded: LoadedPolicy, tests: readonly DecisionTest[]): Promise<void> {
  const failed: Array<Record<string, unknown>> = [];
  for (const t of tests) {
    let actual: unknown;
    try {
      actual = (await engine.evaluateLoaded(loaded, t.path, t.input)).result;
    } catch (error) {
      // the code tells a vector that could not run now (overload) from one that fails every time
      failed.push({ name: t.name, path: t.path, error: describeThrown(error), ...(error instanceof PavilionError ? { code: error.code } : {}) });
      continue;
    }
    if (!sameCanonicalJson(actual, t.expect, 10_000)) failed.push({ name: t.name, path: t.path, expected: t.expect ?? null, actual: actual ?? null });
  }
  if (failed.length > 0) {
    throw new PavilionError(
      ErrorCodes.BUNDLE_TESTS_FAILED,
      `${failed.length} of ${tests.length} decision test vectors failed on revision ${loaded.info.revision}: ${failed.slice(0, 3).map((f) => String(f['name'])).join(', ')}`,
      { details: { failed: failed.slice(0, 10), total: tests.length } },
    );
  }
}
