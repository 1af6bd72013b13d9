/**
 * OPA conformance for the host builtins: every applicable case from OPA's own test suite
 * (see test/conformance/cases.ts) is compiled with `opa build -t wasm`, evaluated through
 * opa-wasm with createHostBuiltins, and compared with OPA's expected result.
 *
 * Results are read as Rego values (sets stay sets, numbers exact) and compared with
 * want_result rows (sort_bindings compares top-level arrays as sets; undefined equals an empty
 * want_result), want_defined, and want_error/want_error_code. Errors that only
 * exist in OPA's strict builtin-error mode (strict_error: true) are expected to be undefined,
 * because Wasm evaluation runs in OPA's default non-strict mode (OPA's own Wasm SDK test suite
 * checks them the same way); other errors must make the build fail (compile-time codes) or
 * the evaluation throw.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { compareValues } from '../sidecar/src/engine/builtins/common.ts';
import { findOpa } from '../sidecar/src/lib/tools.ts';
import { type ConformanceCase, loadConformanceCases } from './conformance/cases.ts';
import { CONFORMANCE_EXCEPTIONS } from './conformance/exceptions.ts';
import { type EvalOutcome, RegoNumber, RegoSet, buildCase, evaluateCase } from './conformance/runner.ts';

const COMPILE_ERROR_CODES = new Set([
  'rego_compile_error',
  'rego_parse_error',
  'rego_recursion_error',
  'rego_type_error',
  'rego_unsafe_var_error',
]);

const startedAt = performance.now();
const opa = findOpa();
const nowNs = BigInt(Date.now()) * 1_000_000n;
const allCases = loadConformanceCases();
const applicable = allCases.filter((c) => c.bindings !== undefined);

const tally = { passed: 0, failed: 0, strictAsUndefined: 0 };
const exceptionsByReason = new Map<string, string[]>();

/** An exact integer as bigint, other numbers as number. */
function normaliseNumber(text: string): number | bigint {
  const match = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(text);
  if (match === null) return Number(text);
  const [, sign = '', int = '', frac = '', exp = '0'] = match;
  const digits = (int + frac).replace(/^0+(?=\d)/, '');
  const shift = Number(exp) - frac.length;
  if (Math.abs(shift) > 400) return Number(text);
  if (shift >= 0) return BigInt(`${sign}${digits}${'0'.repeat(shift)}`);
  const cut = digits.length + shift;
  const tail = cut <= 0 ? digits : digits.slice(cut);
  if (/^0*$/.test(tail)) return BigInt(`${sign}${cut <= 0 ? '0' : digits.slice(0, cut)}`);
  return Number(text);
}

/**
 * A result or expectation in one comparable form: sets become arrays sorted in Rego order
 * (OPA marshals sets sorted), integers become bigints, object keys strings.
 */
function normalise(value: unknown): unknown {
  if (value instanceof RegoNumber) return normaliseNumber(value.text);
  if (typeof value === 'number') return Number.isInteger(value) ? normaliseNumber(String(value)) : value;
  if (value instanceof RegoSet) return value.items.map(normalise).sort(compareValues);
  if (Array.isArray(value)) return value.map(normalise);
  if (value instanceof Map) {
    const out: Record<string, unknown> = {};
    for (const [key, item] of value) out[typeof key === 'string' ? key : canonical(normalise(key))] = normalise(item);
    return out;
  }
  if (typeof value === 'object' && value !== null) {
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) out[key] = normalise(item);
    return out;
  }
  return value;
}

/** Canonical JSON (sorted keys, exact integers) of a normalised value. */
function canonical(value: unknown): string {
  if (typeof value === 'bigint') return value.toString();
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (typeof value === 'object' && value !== null) {
    const record = value as Record<string, unknown>;
    return `{${Object.keys(record)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(record[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value) ?? 'undefined';
}

function normaliseRows(rows: ReadonlyArray<Readonly<Record<string, unknown>>>, sortBindings: boolean): string[] {
  return rows
    .map((row) => {
      const out: Record<string, unknown> = {};
      for (const [key, raw] of Object.entries(row)) {
        const value = normalise(raw);
        out[key] = sortBindings && Array.isArray(value) ? [...value].sort(compareValues) : value;
      }
      return canonical(out);
    })
    .sort();
}

/** How the outcome differs from OPA's expectation, or undefined when it matches. */
function mismatch(testCase: ConformanceCase, outcome: EvalOutcome): string | undefined {
  const wantsError = testCase.wantError !== undefined || testCase.wantErrorCode !== undefined;
  if (wantsError && testCase.strictError) {
    if (outcome.kind !== 'result') return `expected undefined (non-strict builtin error), got ${outcome.kind}: ${outcome.message}`;
    return outcome.rows.length === 0 ? undefined : `expected undefined (non-strict builtin error), got ${normaliseRows(outcome.rows, false).join(' | ')}`;
  }
  if (wantsError) {
    const code = testCase.wantErrorCode ?? '';
    if (outcome.kind === 'build-error') {
      return COMPILE_ERROR_CODES.has(code) ? undefined : `expected ${code} at evaluation, build failed: ${outcome.message}`;
    }
    if (outcome.kind === 'error') return COMPILE_ERROR_CODES.has(code) ? `expected compile error ${code}, evaluation threw` : undefined;
    return `expected error ${code} (${testCase.wantError ?? ''}), got ${normaliseRows(outcome.rows, false).join(' | ') || '(undefined)'}`;
  }
  if (outcome.kind !== 'result') return `${outcome.kind}: ${outcome.message}`;
  if (testCase.wantResult !== undefined) {
    const want = normaliseRows(testCase.wantResult, testCase.sortBindings);
    const got = normaliseRows(outcome.rows, testCase.sortBindings);
    return canonical(want) === canonical(got) ? undefined : `want ${want.join(' | ') || '(undefined)'}\n got  ${got.join(' | ') || '(undefined)'}`;
  }
  if (testCase.wantDefined !== undefined) {
    const defined = outcome.rows.length > 0;
    return defined === testCase.wantDefined ? undefined : `expected ${testCase.wantDefined ? 'defined' : 'undefined'}`;
  }
  return undefined;
}

async function runCase(testCase: ConformanceCase): Promise<EvalOutcome> {
  const bindings = testCase.bindings ?? [];
  const build = await buildCase(opa, testCase, bindings);
  if (!build.ok) return { kind: 'build-error', message: build.message };
  return evaluateCase(build.wasm, testCase, bindings, nowNs);
}

describe('OPA conformance of the host builtins', { concurrency: 2 }, () => {
  for (const testCase of applicable) {
    test(testCase.name, async (t) => {
      const outcome = await runCase(testCase);
      const problem = mismatch(testCase, outcome);
      const reason = CONFORMANCE_EXCEPTIONS[testCase.name];
      if (reason !== undefined) {
        if (problem === undefined) {
          tally.failed++;
          assert.fail(`listed as an exception (${reason}) but now matches OPA; remove it from exceptions.ts`);
        }
        exceptionsByReason.set(reason, [...(exceptionsByReason.get(reason) ?? []), testCase.name]);
        t.todo(reason);
        return;
      }
      if (problem !== undefined) {
        tally.failed++;
        assert.fail(`${testCase.directory}/${testCase.file}: ${problem}`);
      }
      tally.passed++;
      if (testCase.strictError) tally.strictAsUndefined++;
    });
  }

  after(() => {
    const seconds = ((performance.now() - startedAt) / 1000).toFixed(1);
    const lines = [
      `OPA conformance: ${applicable.length} applicable cases (of ${allCases.length} in ${new Set(allCases.map((c) => c.directory)).size} directories; ${allCases.length - applicable.length} have other query shapes)`,
      `  passed: ${tally.passed} (including ${tally.strictAsUndefined} strict-mode-only errors checked as undefined)`,
      `  failed: ${tally.failed}`,
      `  exceptions: ${[...exceptionsByReason.values()].reduce((n, names) => n + names.length, 0)}`,
      ...[...exceptionsByReason.entries()].map(([reason, names]) => `    ${names.length} x ${reason}\n      ${names.join('\n      ')}`),
      `  time: ${seconds}s`,
    ];
    console.log(lines.join('\n'));
  });
});
