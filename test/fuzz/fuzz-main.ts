/**
 * `npm run fuzz -- [target ...] [--seconds N] [--seed S] [--path P]`: run fuzz targets
 * (default: all, 60 s each) and report the cases run; a failure prints its shrunk
 * counterexample and the command that replays it, is saved under var/fuzz/, and makes the
 * exit status 1. `--list` names the targets.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { REPO_ROOT } from '../../sidecar/src/lib/tools.ts';
import { runTarget, type FuzzOutcome } from './fuzz.ts';
import { TARGETS } from './targets.ts';

function option(name: string): string | undefined {
  const at = process.argv.indexOf(`--${name}`);
  return at === -1 ? undefined : process.argv[at + 1];
}

const optionValues = new Set(['--seconds', '--seed', '--path'].flatMap((flag) => {
  const at = process.argv.indexOf(flag);
  return at === -1 ? [] : [process.argv[at + 1]];
}));
const names = process.argv.slice(2).filter((a) => !a.startsWith('--') && !optionValues.has(a));
if (process.argv.includes('--list')) {
  for (const target of TARGETS) process.stdout.write(`${target.name}: ${target.summary}\n`);
  process.exit(0);
}
const unknown = names.filter((n) => !TARGETS.some((t) => t.name === n));
if (unknown.length > 0) {
  process.stderr.write(`unknown fuzz target ${unknown.join(', ')}; targets: ${TARGETS.map((t) => t.name).join(', ')}\n`);
  process.exit(2);
}
const seconds = Number(option('seconds') ?? 60);
const seed = Number(option('seed') ?? Date.now() % 2 ** 31);
const path = option('path');
if (!Number.isFinite(seconds) || seconds <= 0 || !Number.isInteger(seed)) {
  process.stderr.write('--seconds must be a positive number and --seed an integer\n');
  process.exit(2);
}

/** The outcomes, most frequent first, one per line. */
function tally(outcome: FuzzOutcome): string {
  return Object.entries(outcome.outcomes).sort((a, b) => b[1] - a[1]).map(([what, n]) => `    ${String(n).padStart(7)}  ${what}\n`).join('');
}

const chosen = names.length === 0 ? TARGETS : TARGETS.filter((t) => names.includes(t.name));
const outcomes: FuzzOutcome[] = [];
for (const target of chosen) {
  process.stdout.write(`fuzz ${target.name} for ${seconds} s (seed ${seed}): ${target.summary}\n`);
  const outcome = await runTarget(target, { seed, seconds, ...(path === undefined ? {} : { path }) });
  outcomes.push(outcome);
  if (outcome.failure === undefined) {
    process.stdout.write(`  ${outcome.runs} cases in ${outcome.seconds.toFixed(1)} s: the property held\n${tally(outcome)}`);
    continue;
  }
  const dir = join(REPO_ROOT, 'var', 'fuzz');
  await mkdir(dir, { recursive: true });
  const file = join(dir, `${target.name}-${seed}.txt`);
  await writeFile(file, `${outcome.failure.counterexample}\n\n${outcome.failure.error}\n`);
  process.stdout.write([
    `  FAILED after ${outcome.runs} cases: ${outcome.failure.error.split('\n')[0] ?? ''}`,
    `  counterexample (shrunk): ${outcome.failure.counterexample.slice(0, 2000)}`,
    `  replay: npm run fuzz -- ${target.name} --seed ${seed} --path ${outcome.failure.path}`,
    `  saved: ${file}`,
    '',
  ].join('\n'));
}
const failed = outcomes.filter((o) => o.failure !== undefined).length;
process.stdout.write(`${outcomes.length - failed} passed, ${failed} failed (${outcomes.reduce((n, o) => n + o.runs, 0)} cases)\n`);
process.exit(failed === 0 ? 0 : 1);
