/**
 * Building decision events: one place for the EventV1 shape, shared by every transport
 * (Data API, ext_authz gRPC and HTTP), with one `req_id` sequence per process.
 */
import type { DecisionEventV1 } from './decision-event.ts';

export interface DecisionRecord {
  readonly decisionId: string;
  readonly tenant: string;
  readonly path: string;
  /** The tenant's bundle revision that answered (or was active), if any. */
  readonly revision: string | undefined;
  readonly input?: unknown;
  readonly result?: unknown;
  readonly error?: { readonly code: string; readonly message: string } | undefined;
  readonly requestedBy: string;
  /** RFC 3339 time the request arrived. */
  readonly timestamp: string;
  readonly evalNs: number;
  readonly handlerNs: number;
  /** The event's req_id when it was taken before (`nextRequestId`, for `known`); otherwise the next. */
  readonly reqId?: number;
}

/** What `known` takes: a record's fields that exist before its evaluation, and its req_id. */
export type KnownRecord = Pick<DecisionRecord, 'decisionId' | 'tenant' | 'path' | 'revision' | 'requestedBy' | 'timestamp'> & { readonly reqId: number };

export class DecisionEvents {
  readonly #labels: Readonly<Record<string, string>>;
  #requests = 0;

  constructor(labels: { readonly id: string; readonly version: string }) {
    this.#labels = Object.freeze({ id: labels.id, version: labels.version });
  }

  /** A req_id taken before the event is created (for `known`; give it to `create` as `reqId`). */
  nextRequestId(): number {
    return ++this.#requests;
  }

  /**
   * The fields of a decision's event that exist before its evaluation: every field but input,
   * result, error and metrics, as `create` gives them for the same record and req_id. The
   * engine completes them (completeLogEvent) into the event the decision log's rules see
   * when it evaluates those beside the decision.
   */
  known(record: KnownRecord): Record<string, unknown> {
    return { ...this.#head(record), requested_by: record.requestedBy, timestamp: record.timestamp, req_id: record.reqId };
  }

  create(record: DecisionRecord): DecisionEventV1 {
    return {
      ...this.#head(record),
      ...(record.input === undefined ? {} : { input: record.input }),
      ...(record.result === undefined ? {} : { result: record.result }),
      ...(record.error === undefined ? {} : { error: record.error }),
      requested_by: record.requestedBy,
      timestamp: record.timestamp,
      metrics: { timer_rego_query_eval_ns: record.evalNs, timer_server_handler_ns: record.handlerNs },
      req_id: record.reqId ?? this.nextRequestId(),
    };
  }

  /** The event's first fields, in OPA's order: the same in `known` and `create`. */
  #head(record: Pick<DecisionRecord, 'decisionId' | 'tenant' | 'path' | 'revision'>): Pick<DecisionEventV1, 'labels' | 'decision_id' | 'tenant' | 'bundles' | 'path'> {
    return {
      labels: this.#labels,
      decision_id: record.decisionId,
      tenant: record.tenant,
      bundles: record.revision === undefined || record.tenant === '' ? {} : { [record.tenant]: { revision: record.revision } },
      path: record.path,
    };
  }
}
