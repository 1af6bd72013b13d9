/** Telemetry: Prometheus metrics. */
export { Metrics } from './metrics.ts';
