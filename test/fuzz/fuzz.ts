/**
 * The fuzzing harness: each target turns generated input (mostly valid input with byte
 * edits, see mutations.ts) into a property over the real code, and fast-check runs it,
 * shrinks a failure to its smallest form and names the seed and path that replay it.
 *
 * Run for a while: `npm run fuzz -- [target ...] [--seconds N] [--seed S]` (fuzz-main.ts).
 * The test suite runs every target for a fixed, small number of cases
 * (test/fuzz.test.ts), so each keeps working and what it once found stays found.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { isPavilionError } from '../../sidecar/src/lib/errors.ts';

export interface PreparedTarget<T> {
  readonly arbitrary: fc.Arbitrary<T>;
  /**
   * Throws (an assertion) when the property does not hold for `input`; otherwise names what
   * became of it ('accepted', or the refusal's code), which the run tallies.
   */
  check(input: T): Promise<string>;
  close(): Promise<void>;
}

export interface FuzzTarget {
  readonly name: string;
  /** What it feeds and what must hold. */
  readonly summary: string;
  /** Whether a case that ended so got past the first checks (the archive parse, the JSON parse) into what the target is about. */
  readonly reached: (outcome: string) => boolean;
  prepare(): Promise<PreparedTarget<unknown>>;
}

export interface FuzzOptions {
  readonly seed: number;
  /** Stop after this many cases (default: unbounded, then `seconds` must be given). */
  readonly runs?: number;
  /** Stop after this long (cases already started finish). */
  readonly seconds?: number;
  /** Replay one case: the path fast-check printed with the seed. */
  readonly path?: string;
}

export interface FuzzOutcome {
  readonly target: string;
  readonly runs: number;
  readonly seconds: number;
  readonly seed: number;
  /** How many cases ended each way (the check's names), to see what the inputs reached. */
  readonly outcomes: Readonly<Record<string, number>>;
  readonly failure?: {
    readonly path: string;
    readonly counterexample: string;
    readonly error: string;
  };
}

export async function runTarget(target: FuzzTarget, options: FuzzOptions): Promise<FuzzOutcome> {
  const prepared = await target.prepare();
  const started = performance.now();
  const outcomes: Record<string, number> = {};
  try {
    const details = await fc.check(fc.asyncProperty(prepared.arbitrary, async (input) => {
      const outcome = await prepared.check(input);
      outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
    }), {
      seed: options.seed,
      numRuns: options.runs ?? Number.MAX_SAFE_INTEGER,
      ...(options.seconds === undefined ? {} : { interruptAfterTimeLimit: options.seconds * 1000, markInterruptAsFailure: false }),
      ...(options.path === undefined ? {} : { path: options.path }),
    });
    const seconds = (performance.now() - started) / 1000;
    if (!details.failed) return { target: target.name, runs: details.numRuns, seconds, seed: options.seed, outcomes };
    return {
      target: target.name,
      runs: details.numRuns,
      seconds,
      seed: options.seed,
      outcomes,
      failure: {
        path: details.counterexamplePath ?? '',
        counterexample: fc.stringify(details.counterexample),
        error: details.errorInstance instanceof Error ? (details.errorInstance.stack ?? details.errorInstance.message) : String(details.errorInstance),
      },
    };
  } finally {
    await prepared.close();
  }
}

/** The property every refusal must meet: a PavilionError whose code is one of `codes` (what each bad input gets); returns the code. */
export function assertRefusal(error: unknown, codes: ReadonlySet<string>, what: string): string {
  if (!isPavilionError(error)) {
    assert.fail(`${what}: refused with an untyped error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  }
  assert.ok(codes.has(error.code), `${what}: refused with ${error.code} (${error.message}), not one of ${[...codes].join(', ')}`);
  return error.code;
}
