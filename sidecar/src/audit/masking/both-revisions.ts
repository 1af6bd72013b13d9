/**
 * One decision's privacy rules from two revisions of a tenant's policy (its active revision
 * and a staged shadow revision), for what shows results of both: dropped if either drops it;
 * the mask rules of both applied (the active revision's first, a rule both have once); a rule
 * that failed on either revision failed (the masker then fails closed).
 */
import { canonicalJson } from '../../lib/canonical-json.ts';
import type { LogPolicy, LogRules } from './decision-masker.ts';

/** Both policies' rules, evaluated side by side and combined as the header says. */
export function bothRevisions(active: LogPolicy, staged: LogPolicy): LogPolicy {
  return {
    async evaluate(tenant, input) {
      const [a, b] = await Promise.all([active.evaluate(tenant, input), staged.evaluate(tenant, input)]);
      return eitherRevision(a, b);
    },
  };
}

/**
 * Both revisions' rules for one event: dropped if either drops it; the mask rules of both
 * applied (the active revision's first); a rule that failed on either revision failed.
 */
function eitherRevision(a: LogRules, b: LogRules): LogRules {
  const out: { drop?: NonNullable<LogRules['drop']>; mask?: NonNullable<LogRules['mask']> } = {};
  for (const rule of ['drop', 'mask'] as const) {
    const [x, y] = [a[rule], b[rule]];
    if (x === undefined || y === undefined) {
      const only = x ?? y;
      if (only !== undefined) out[rule] = only;
    } else if (!x.ok) {
      out[rule] = x;
    } else if (!y.ok) {
      out[rule] = y;
    } else if (rule === 'drop') {
      out.drop = { ok: true, result: x.result === true || y.result === true };
    } else {
      out.mask = { ok: true, result: bothMasks(x.result, y.result) };
    }
  }
  return out;
}

/**
 * Two revisions' mask rule sets as one (a set union, as Rego's sets are: a rule both have is
 * applied once); a value that is not a rule set is kept for the masker to refuse (fail closed).
 */
function bothMasks(x: unknown, y: unknown): unknown {
  if (x === undefined) return y;
  if (y === undefined || !Array.isArray(x)) return x;
  if (!Array.isArray(y)) return y;
  const seen = new Set(x.map((rule) => canonicalJson(rule, 10_000)));
  return [...(x as unknown[]), ...(y as unknown[]).filter((rule) => !seen.has(canonicalJson(rule, 10_000)))];
}
