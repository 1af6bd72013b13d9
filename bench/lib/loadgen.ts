/**
 * The load generator, run in its own process (`tsx bench/lib/loadgen.ts <spec.json>`) so it
 * never shares an event loop with a server under test. Same generator, same settings for
 * Pavilion and its peer. Prints one JSON line: rps, latency percentiles, errors.
 *
 * spec: {url, connections, durationSeconds, requests: [{path, headers, body}], unique: bool}
 * With `unique`, every request body gets a distinct `input.nonce`, defeating any cache.
 */
import { readFileSync } from 'node:fs';
import autocannon from 'autocannon';

interface Spec {
  readonly url: string;
  readonly connections: number;
  readonly durationSeconds: number;
  readonly requests: ReadonlyArray<{ path: string; headers: Record<string, string>; body: string }>;
  readonly unique: boolean;
  readonly rate?: number;
}

const spec = JSON.parse(readFileSync(process.argv[2] as string, 'utf8')) as Spec;
let counter = 0;
const requests = spec.requests.map((r) => ({
  method: 'POST' as const,
  path: r.path,
  headers: { 'content-type': 'application/json', ...r.headers },
  body: r.body,
  ...(spec.unique
    ? {
        setupRequest: (req: autocannon.Request): autocannon.Request => {
          const parsed = JSON.parse(r.body) as { input: Record<string, unknown> };
          parsed.input = { ...parsed.input, nonce: ++counter };
          return { ...req, body: JSON.stringify(parsed) };
        },
      }
    : {}),
}));

// autocannon's own histogram records whole milliseconds; the 'response' event carries the
// exact duration, so percentiles are computed from those (2xx only, like autocannon).
let latencies = new Float64Array(1 << 20);
let count = 0;
let finish: (result: autocannon.Result) => void = () => undefined;
let fail: (error: unknown) => void = () => undefined;
const done = new Promise<autocannon.Result>((resolve, reject) => {
  finish = resolve;
  fail = reject;
});
const instance = autocannon(
  {
    url: spec.url,
    connections: spec.connections,
    duration: spec.durationSeconds,
    requests,
    ...(spec.rate === undefined ? {} : { overallRate: spec.rate }),
  },
  (error, result) => (error ? fail(error) : finish(result)),
);
instance.on('response', (_client: unknown, statusCode: number, _bytes: number, responseTimeMs: number) => {
  if (statusCode < 200 || statusCode >= 300) return;
  if (count === latencies.length) {
    const grown = new Float64Array(latencies.length * 2);
    grown.set(latencies);
    latencies = grown;
  }
  latencies[count++] = responseTimeMs;
});
const result = await done;
const sorted = latencies.subarray(0, count).sort();
const pct = (p: number): number => (count === 0 ? 0 : Math.round((sorted[Math.min(count - 1, Math.floor((p / 100) * count))] ?? 0) * 1000) / 1000);
const out = {
  rps: result.requests.average,
  requests_total: result.requests.total,
  p50_ms: pct(50),
  p90_ms: pct(90),
  p99_ms: pct(99),
  p999_ms: pct(99.9),
  max_ms: pct(100),
  errors: result.errors + result.timeouts,
  non_2xx: result.non2xx,
};
process.stdout.write(`${JSON.stringify(out)}\n`);
