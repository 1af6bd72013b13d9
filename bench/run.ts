/**
 * `npm run bench -- <name>`: run one benchmark (or several) and write bench/results/<name>.json.
 */
const BENCHMARKS: Record<string, () => Promise<{ run(): Promise<void> }>> = {
  decision: () => import('./decision.ts'),
  extauthz: () => import('./extauthz.ts'),
  http: () => import('./http.ts'),
  rollout: () => import('./rollout.ts'),
  credentials: () => import('./credentials.ts'),
  audit: () => import('./audit.ts'),
  soak: () => import('./soak.ts'),
};

// flags (e.g. --quick) are for the benchmarks, which read them from process.argv
const names = process.argv.slice(2).filter((a) => !a.startsWith('--'));
if (names.length === 0 || names.some((n) => !(n in BENCHMARKS))) {
  process.stderr.write(`usage: npm run bench -- <${Object.keys(BENCHMARKS).join('|')}> ... [--quick]\n`);
  process.exit(2);
}
for (const name of names) {
  const module = await (BENCHMARKS[name] as () => Promise<{ run(): Promise<void> }>)();
  await module.run();
}
