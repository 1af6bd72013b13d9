/**
 * rand.intn, following OPA's v1/topdown/numbers.go: rand.intn(str, n) is a random integer in
 * [0, |n|) (0 when n is 0), the same for the same (str, n) throughout an evaluation, as OPA
 * caches it per query. Randomness comes from node:crypto.
 *
 * Known limits: memoisation is per EvaluationContext object (the engine hands each evaluation a
 * fresh one); OPA can seed its generator for reproducible runs, we cannot.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { type BuiltinFamily, type ContextProvider, intOperand, isString, memoize } from './common.ts';

const RANDOM_INT_LIMIT = 2 ** 48 - 1;

function uniformBelow(n: number): number {
  if (n <= RANDOM_INT_LIMIT) return randomInt(n);
  const bound = BigInt(n);
  return Number(randomBytes(16).readBigUInt64BE(0) % bound);
}

export function randomBuiltins(context: ContextProvider): BuiltinFamily {
  return {
    'rand.intn': (str, nValue) => {
      const n = intOperand(nValue);
      if (!isString(str) || n === undefined) return undefined;
      if (n === 0) return 0;
      const bound = Math.abs(n);
      return memoize(context(), `rand.intn:${str}-${bound}`, () => uniformBelow(bound));
    },
  };
}
