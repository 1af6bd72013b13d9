/**
 * A DecisionSink in front of another: every event passes the DecisionMasker (drop, mask,
 * pseudonymise) before the inner sink sees it. Counts in `status()` what policy dropped and
 * what had to be erased because masking failed.
 */
import { withDeadline, type ComponentStatus } from '../../lib/lifecycle.ts';
import type { DecisionEventV1, DecisionSink, EvaluatedLogRules } from '../decision-event.ts';
import type { DecisionReceiptV1 } from '../log/index.ts';
import type { DecisionMasker } from './decision-masker.ts';

export class MaskingDecisionSink implements DecisionSink {
  readonly name: string;
  readonly durable: boolean;
  readonly #inner: DecisionSink;
  readonly #masker: DecisionMasker;
  #dropped = 0;
  #maskFailures = 0;
  #lastFailure: string | undefined;
  readonly #inFlight = new Set<Promise<void>>();

  constructor(inner: DecisionSink, masker: DecisionMasker) {
    this.#inner = inner;
    this.#masker = masker;
    this.name = inner.name;
    this.durable = inner.durable === true;
  }

  get inner(): DecisionSink {
    return this.#inner;
  }

  start(): Promise<void> {
    return this.#inner.start();
  }

  write(event: DecisionEventV1, rules?: EvaluatedLogRules): Promise<DecisionReceiptV1 | undefined> {
    const written = this.#masker.process(event, rules).then(async (outcome) => {
      if (outcome.kind === 'drop') {
        this.#dropped++;
        return undefined;
      }
      if (outcome.failure !== undefined) {
        this.#maskFailures++;
        this.#lastFailure = outcome.failure;
      }
      return (await this.#inner.write(outcome.event)) ?? undefined;
    });
    // As the inner sinks do: a caller that does not await must not get an unhandled rejection.
    const settled = written.then(() => undefined, () => undefined);
    this.#inFlight.add(settled);
    void settled.then(() => this.#inFlight.delete(settled));
    return written;
  }

  /** Let events still being masked reach the inner sink, then stop it. */
  async stop(deadlineMs: number): Promise<void> {
    const started = Date.now();
    await withDeadline(Promise.all([...this.#inFlight]), deadlineMs);
    await this.#inner.stop(Math.max(0, deadlineMs - (Date.now() - started)));
  }

  status(): ComponentStatus {
    const inner = this.#inner.status();
    const details = { ...(inner.details ?? {}), dropped_by_policy: this.#dropped, mask_failures: this.#maskFailures };
    if (this.#maskFailures > 0 && (inner.state === 'OK' || inner.state === 'NOT_READY')) {
      return { state: inner.state === 'OK' ? 'WARN' : inner.state, message: `${this.#maskFailures} events logged erased because masking failed; last: ${this.#lastFailure ?? ''}`, details };
    }
    return { ...inner, details };
  }
}
