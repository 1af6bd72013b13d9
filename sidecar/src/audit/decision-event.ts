import type { DecisionReceiptV1 } from './log/index.ts';

/**
 * Decision log events in OPA's `EventV1` shape
 * (https://www.openpolicyagent.org/docs/management-decision-logs), so existing decision-log
 * consumers read Pavilion's events unchanged. `tenant` is Pavilion's addition.
 */
export interface DecisionEventV1 {
  readonly labels: Readonly<Record<string, string>>;
  readonly decision_id: string;
  readonly tenant: string;
  readonly bundles: Readonly<Record<string, { readonly revision: string }>>;
  readonly path: string;
  readonly input?: unknown;
  readonly result?: unknown;
  readonly erased?: readonly string[];
  readonly masked?: readonly string[];
  /** Pavilion's addition: fields replaced by keyed pseudonyms (sidecar/src/audit/masking). */
  readonly pseudonymised?: readonly string[];
  readonly error?: { readonly code: string; readonly message: string };
  readonly requested_by: string;
  /** RFC 3339 with nanoseconds where available. */
  readonly timestamp: string;
  readonly metrics: Readonly<Record<string, number>>;
  readonly req_id: number;
  readonly trace_id?: string;
  readonly span_id?: string;
}

/** One decision log rule's value (`system.log.drop`, `.mask`), or why it could not be evaluated. */
export type LogRuleOutcome = { readonly ok: true; readonly result: unknown } | { readonly ok: false; readonly error: unknown };

/**
 * The decision log's rules already evaluated on an event, by rule path (beside its decision,
 * in the same worker turn; the engine's `Decision.log`): a sink that masks takes these instead
 * of evaluating the rules again. A path absent: the revision that answered has no such rule.
 */
export type EvaluatedLogRules = ReadonlyMap<string, LogRuleOutcome>;

/** Where decision events go. Implementations must not lose an event they accepted. */
export interface DecisionSink {
  readonly name: string;
  /**
   * True when `write`'s promise means the event is durable (the audit log), so a transport
   * awaits it before answering and turns a refusal into an error response. Sinks without it
   * (the NDJSON file, none) are written without waiting, keeping the hot path as it was.
   */
  readonly durable?: boolean;
  start(): Promise<void>;
  /**
   * Accept one event. May apply backpressure by returning a promise, which resolves once the
   * sink has the event as it promises (the audit log: durable per its fsync policy) and rejects
   * with a typed error when the sink refuses it (ERR_AUDIT_LOG_FULL, ...). A caller that
   * acknowledges decisions only once logged awaits it; a sink keeps refusals visible in
   * status() and never lets an unawaited rejection go unhandled. A durable sink resolves with
   * the decision's receipt, or undefined when nothing was logged (dropped by policy).
   * `rules`: the decision log's rules as already evaluated on this event, if they were.
   */
  write(event: DecisionEventV1, rules?: EvaluatedLogRules): void | Promise<DecisionReceiptV1 | undefined | void>;
  stop(deadlineMs: number): Promise<void>;
  status(): import('../lib/lifecycle.ts').ComponentStatus;
}
