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
}

export class DecisionEvents {
  readonly #labels: Readonly<Record<string, string>>;
  #requests = 0;

  constructor(labels: { readonly id: string; readonly version: string }) {
    this.#labels = Object.freeze({ id: labels.id, version: labels.version });
  }

  create(record: DecisionRecord): DecisionEventV1 {
    return {
      labels: this.#labels,
      decision_id: record.decisionId,
      tenant: record.tenant,
      bundles: record.revision === undefined || record.tenant === '' ? {} : { [record.tenant]: { revision: record.revision } },
      path: record.path,
      ...(record.input === undefined ? {} : { input: record.input }),
      ...(record.result === undefined ? {} : { result: record.result }),
      ...(record.error === undefined ? {} : { error: record.error }),
      requested_by: record.requestedBy,
      timestamp: record.timestamp,
      metrics: { timer_rego_query_eval_ns: record.evalNs, timer_server_handler_ns: record.handlerNs },
      req_id: ++this.#requests,
    };
  }
}
