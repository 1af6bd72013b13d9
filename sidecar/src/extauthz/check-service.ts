/**
 * One ext_authz check, whatever the transport: resolve the tenant, build the input document,
 * evaluate the tenant's decision path, map the decision to a CheckResponse, log a decision
 * event and count it. One deadline covers the whole check (credentials, evaluation, the wait
 * for a durable log): past it, the answer is the failure response with
 * ERR_EXTAUTHZ_DEADLINE_EXCEEDED, so Envoy never falls back on `failure_mode_allow`.
 *
 * Every path ends in a well-formed CheckResponse. Where opa-envoy-plugin answers with a gRPC
 * error (evaluation errors, bad decisions, a timed-out check), Pavilion answers
 * PERMISSION_DENIED with a denied response carrying the configured `failureStatus` (default
 * 403), and the error code in the decision event, the metrics, `status.message` and
 * `dynamic_metadata.error_code`. Requests whose path, query or body cannot be parsed get
 * upstream's own answer: PERMISSION_DENIED with a 400 denied response whose body and
 * `status.message` are `request_parse_error: <the parse error>` (internal/errors.go), given
 * before dry run is looked at, so dry run does not turn it into an allow; the code
 * (ERR_EXTAUTHZ_REQUEST_INVALID) is in the decision event, the metrics and
 * `dynamic_metadata.error_code`.
 *
 * With a durable decision sink (the audit log) a check is answered only once its event is
 * durable; a refusal (ERR_AUDIT_LOG_FULL, ...) turns the answer into the failure response
 * (`failureStatus`, the code in `dynamic_metadata.error_code`), so no decision Envoy acts on
 * is missing from the log. Other sinks are written without waiting.
 *
 * Receipts: when the checked request carries `x-pavilion-receipt: 1` (or the tenant's
 * `receipts` is 'always') and the audit log took the event, the receipt is added to the
 * answer as a header and `dynamic_metadata.receipt` (decision.ts `withReceipt`), after
 * everything that decides, so it never changes the decision.
 */
import { randomUUID } from 'node:crypto';
import { validateHeaderName, validateHeaderValue } from 'node:http';
import { Counter, Histogram } from 'prom-client';
import { RECEIPT_HEADER, encodeReceiptHeader, transportReceipt } from '../audit/index.ts';
import type { DecisionEvents, DecisionEventV1, DecisionReceiptV1, DecisionSink } from '../audit/index.ts';
import type { ExtAuthzConfig, ExtAuthzTenantConfig } from '../config/index.ts';
import { TENANT_ID_PATTERN } from '../config/index.ts';
import type { Decision, PolicyEngine } from '../engine/index.ts';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import type { Metrics } from '../telemetry/index.ts';
import type { TenantManager } from '../tenants/index.ts';
import {
  ENVOY_HTTP_STATUS_CODES,
  RpcCode,
  decisionToCheckResponse,
  failureCheckResponse,
  withReceipt,
  type CheckResponse,
  type HeaderValueOption,
} from './decision.ts';
import { checkRequestToInput, type CheckRequestJson, type JsonObject } from './input.ts';
import {
  CREDENTIAL_CHALLENGE_HEADER,
  CREDENTIAL_WITNESSES_HEADER,
  CREDENTIALS_HEADER,
  credentialsFromHeader,
  witnessesFromHeader,
  type CredentialGate,
} from '../credentials/gate.ts';
import { resolveTenant } from './tenant-resolver.ts';

export type Transport = 'grpc' | 'http';

/** Pavilion's EventV1 plus what an ext_authz check adds: Envoy's `x-request-id` and the outcome. */
export interface ExtAuthzDecisionEvent extends DecisionEventV1 {
  /** The `x-request-id` header Envoy sent (the id of the request being authorized). */
  readonly request_id?: string;
  readonly ext_authz: {
    readonly transport: Transport;
    /** What Envoy was told (after dry run). */
    readonly allowed: boolean;
    readonly dry_run: boolean;
    /** The HTTP status of the denied response, when there is one. */
    readonly http_status?: number;
    /**
     * Set on a correction: the decision id whose event recorded an answer Envoy did not get
     * (its durable write finished after the check's deadline, so Envoy got the failure
     * status instead). This event records what Envoy got.
     */
    readonly corrects?: string;
  };
}

/** The decision id of the correction event for `decisionId` (see `ext_authz.corrects`). */
export function correctionDecisionId(decisionId: string): string {
  return `${decisionId}.response`;
}

export interface CheckServiceDeps {
  readonly config: ExtAuthzConfig;
  /** Verifies credentials in the checked request's headers into `input.credentials`. */
  readonly credentials?: CredentialGate;
  readonly events: DecisionEvents;
  readonly engine: Pick<PolicyEngine, 'evaluate' | 'active'>;
  readonly tenants: Pick<TenantManager, 'has'>;
  readonly sink: DecisionSink;
  readonly metrics: Metrics;
}

export interface CheckContext {
  readonly transport: Transport;
  /** Peer address of the caller (Envoy). */
  readonly requestedBy: string;
  /** Milliseconds the caller still waits (a gRPC deadline), if it said. */
  readonly callerBudgetMs?: number;
  /** Fix time.now_ns for this check (tests, replays). */
  readonly nowNs?: bigint;
}

export interface CheckResult {
  readonly response: CheckResponse;
  readonly decisionId: string;
  readonly tenant: string | undefined;
  /** The error code when the check could not be decided normally. */
  readonly code: string | undefined;
}

interface Outcome {
  response: CheckResponse;
  code: string | undefined;
  message: string | undefined;
  policyAllowed: boolean | undefined;
  decision: Decision | undefined;
  input: unknown;
  /**
   * Upstream's answer to a request it cannot parse (the 400), which it gives before its dry
   * run override, so dry run leaves it as it is.
   */
  requestParseError?: true;
}

/** Upstream's code for a request it cannot turn into an input document (internal/errors.go RequestParseErr). */
const REQUEST_PARSE_ERROR = 'request_parse_error';

const UNKNOWN = '(unknown)';

/**
 * Verify the credentials in the checked request's `x-pavilion-credentials` header into
 * `input.credentials` / `input.credential_errors`, and take the raw credential and witness
 * headers out of the input's `attributes` (and so out of the decision log): the policy sees
 * verified facts only.
 */
async function withCredentials(gate: CredentialGate, tenant: string, input: JsonObject): Promise<JsonObject> {
  const attributes = input['attributes'] as { request?: { http?: { headers?: Record<string, string>; headerMap?: { headers?: Array<{ key?: string }> } } } } | undefined;
  const http = attributes?.request?.http;
  const headers = http?.headers ?? {};
  const credentials = credentialsFromHeader(headers[CREDENTIALS_HEADER]);
  const challenge = headers[CREDENTIAL_CHALLENGE_HEADER];
  const witnesses = witnessesFromHeader(headers[CREDENTIAL_WITNESSES_HEADER]);
  if (http !== undefined) {
    // the witness is as linkable as the credential: neither stays in the input
    if (http.headers !== undefined) {
      const { [CREDENTIALS_HEADER]: _credentials, [CREDENTIAL_WITNESSES_HEADER]: _witnesses, ...rest } = http.headers;
      http.headers = rest;
    }
    const removed = new Set([CREDENTIALS_HEADER, CREDENTIAL_WITNESSES_HEADER]);
    if (http.headerMap?.headers !== undefined) http.headerMap.headers = http.headerMap.headers.filter((h) => !removed.has(h.key?.toLowerCase() ?? ''));
  }
  const prepared = await gate.prepareInput(tenant, input, credentials, {
    ...(challenge === undefined ? {} : { challenge }),
    ...(witnesses === undefined ? {} : { witnesses }),
  });
  return prepared as JsonObject;
}

export class CheckService {
  readonly #deps: CheckServiceDeps;
  readonly #checks: Counter<'transport' | 'tenant' | 'result'>;
  readonly #duration: Histogram<'transport'>;

  constructor(deps: CheckServiceDeps) {
    this.#deps = deps;
    this.#checks = new Counter({
      name: 'pavilion_extauthz_checks_total',
      help: 'Envoy ext_authz checks by transport (grpc/http), tenant and result (allow/deny or the error code).',
      labelNames: ['transport', 'tenant', 'result'],
      registers: [deps.metrics.registry],
    });
    this.#duration = new Histogram({
      name: 'pavilion_extauthz_check_duration_seconds',
      help: 'Time from receiving an ext_authz check to having its response, by transport.',
      labelNames: ['transport'],
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5],
      registers: [deps.metrics.registry],
    });
  }

  /** The settings for a tenant (configured entry, else the defaults with `<tenant>/envoy/authz/allow`). */
  settingsFor(tenant: string): ExtAuthzTenantConfig {
    const { tenants, defaults } = this.#deps.config;
    return Object.hasOwn(tenants, tenant) ? (tenants[tenant] as ExtAuthzTenantConfig) : { path: `${tenant}/envoy/authz/allow`, ...defaults };
  }

  /** The tenant a request belongs to, or the error that says why there is none. */
  tenantOf(request: CheckRequestJson): { tenant: string } | { error: PavilionError; claimed: string | undefined } {
    let claimed: string;
    try {
      claimed = resolveTenant(this.#deps.config.tenantFrom, request);
    } catch (error) {
      return { error: error instanceof PavilionError ? error : new PavilionError(ErrorCodes.INTERNAL, describeThrown(error)), claimed: undefined };
    }
    if (!TENANT_ID_PATTERN.test(claimed) || !this.#deps.tenants.has(claimed)) {
      return { error: new PavilionError(ErrorCodes.TENANT_UNKNOWN, `unknown tenant ${JSON.stringify(claimed.slice(0, 64))}`), claimed };
    }
    return { tenant: claimed };
  }

  /** Answer one check; never throws, always a well-formed CheckResponse. */
  async check(request: CheckRequestJson | PavilionError, context: CheckContext): Promise<CheckResult> {
    const started = process.hrtime.bigint();
    const decisionId = randomUUID();
    const timestamp = new Date().toISOString();
    const defaults = this.#deps.config.defaults;
    let tenant: string | undefined;
    let settings: ExtAuthzTenantConfig | undefined;
    let deadline: CheckDeadline | undefined;
    const built: { input?: JsonObject } = {};
    let outcome: Outcome;
    try {
      if (request instanceof PavilionError) throw request;
      const owner = this.tenantOf(request);
      if ('error' in owner) throw owner.error;
      tenant = owner.tenant;
      settings = this.settingsFor(tenant);
      deadline = new CheckDeadline(Math.max(0, Math.min(settings.timeoutMs, context.callerBudgetMs ?? Number.POSITIVE_INFINITY)));
      outcome = await deadline.race(this.#decide(request, tenant, settings, decisionId, context, built));
    } catch (error) {
      const failure = error instanceof PavilionError ? error : new PavilionError(ErrorCodes.INTERNAL, describeThrown(error), { cause: error });
      // past the deadline the event still carries the input document, when it was built
      outcome = this.#failure(decisionId, settings?.failureStatus ?? defaults.failureStatus, failure, built.input);
    }
    if (settings?.dryRun === true && outcome.requestParseError !== true) outcome.response = dryRunResponse(outcome.response);
    const written = this.#record(request, context, tenant, settings, decisionId, timestamp, started, outcome);
    let receipt: DecisionReceiptV1 | undefined;
    if (this.#deps.sink.durable === true) {
      try {
        const logged = await (deadline === undefined ? written : deadline.race(Promise.resolve(written)));
        if (typeof logged === 'object') receipt = logged;
      } catch (error) {
        // Not in the log (refused), or not yet when the deadline came: either way not the
        // answer Envoy gets.
        const refusal = error instanceof PavilionError ? error : new PavilionError(ErrorCodes.INTERNAL, describeThrown(error), { cause: error });
        const recorded = outcome.response;
        outcome = this.#failure(decisionId, settings?.failureStatus ?? defaults.failureStatus, refusal, outcome.input);
        if (settings?.dryRun === true) outcome.response = dryRunResponse(outcome.response);
        // Past the deadline the event, already submitted, keeps the policy's answer and may
        // still become durable: log what Envoy got beside it, so the audit trail never
        // shows only an answer that was not given. (A refused event is not in the log, and a
        // write refused at once would refuse this one too.)
        if (refusal.code === ErrorCodes.EXTAUTHZ_DEADLINE_EXCEEDED && answerDiffers(recorded, outcome.response)) {
          const correction = this.#record(request, context, tenant, settings, correctionDecisionId(decisionId), new Date().toISOString(), started, { ...outcome, input: undefined }, decisionId);
          if (correction instanceof Promise) correction.catch(() => undefined); // the sink reports refusals in its status
        }
      }
    }
    deadline?.clear();
    if (receipt !== undefined && tenant !== undefined && wantsReceipt(request, settings)) {
      // after everything that decides: the receipt only ever adds to the answer
      const body = transportReceipt(tenant, receipt);
      outcome.response = withReceipt(outcome.response, {
        header: RECEIPT_HEADER,
        value: encodeReceiptHeader(body),
        metadata: body as unknown as JsonObject,
        toClient: context.transport === 'grpc',
      });
    }
    this.#count(context, tenant, settings, started, outcome);
    return { response: outcome.response, decisionId, tenant, code: outcome.code };
  }

  async #decide(
    request: CheckRequestJson,
    tenant: string,
    settings: ExtAuthzTenantConfig,
    decisionId: string,
    context: CheckContext,
    built: { input?: JsonObject },
  ): Promise<Outcome> {
    let input: JsonObject;
    try {
      input = checkRequestToInput(request, settings).input;
      built.input = input;
    } catch (error) {
      if (error instanceof PavilionError && error.code === ErrorCodes.EXTAUTHZ_REQUEST_INVALID) {
        // upstream's answer to a request it cannot turn into an input document: body and
        // status message `request_parse_error: <error>` (its internal.Error's text)
        const text = `${REQUEST_PARSE_ERROR}: ${error.message}`;
        return { ...this.#failure(decisionId, 400, error, undefined, text, text), requestParseError: true };
      }
      throw error;
    }
    const gate = this.#deps.credentials;
    if (gate !== undefined && gate.governs(tenant)) {
      input = await withCredentials(gate, tenant, input);
      built.input = input; // verified facts in place of the raw credential headers
    }
    let decision: Decision;
    try {
      decision = await this.#deps.engine.evaluate(tenant, settings.path, input, context.nowNs === undefined ? {} : { nowNs: context.nowNs });
    } catch (error) {
      const failure = error instanceof PavilionError ? error : new PavilionError(ErrorCodes.INTERNAL, describeThrown(error), { cause: error });
      return this.#failure(decisionId, settings.failureStatus, failure, input);
    }
    try {
      const mapped = decisionToCheckResponse(decision.result, { decisionId });
      if (context.transport === 'http') assertHttpExpressible(mapped.response);
      return { response: mapped.response, code: undefined, message: undefined, policyAllowed: mapped.allowed, decision, input };
    } catch (error) {
      const failure = error instanceof PavilionError ? error : new PavilionError(ErrorCodes.INTERNAL, describeThrown(error), { cause: error });
      return { ...this.#failure(decisionId, settings.failureStatus, failure, input), decision };
    }
  }

  #failure(decisionId: string, httpStatus: number, error: PavilionError, input: unknown, body?: string, statusMessage?: string): Outcome {
    return {
      response: failureCheckResponse({
        decisionId,
        httpStatus,
        code: error.code,
        message: error.message,
        ...(body === undefined ? {} : { body }),
        ...(statusMessage === undefined ? {} : { statusMessage }),
      }),
      code: error.code,
      message: error.message,
      policyAllowed: undefined,
      decision: undefined,
      input,
    };
  }

  #record(
    request: CheckRequestJson | PavilionError,
    context: CheckContext,
    tenant: string | undefined,
    settings: ExtAuthzTenantConfig | undefined,
    decisionId: string,
    timestamp: string,
    started: bigint,
    outcome: Outcome,
    corrects?: string,
  ): ReturnType<DecisionSink['write']> {
    const { sink, events } = this.#deps;
    const handlerNs = Number(process.hrtime.bigint() - started);
    const requestId = request instanceof PavilionError ? undefined : request.attributes?.request?.http?.headers?.['x-request-id'];
    const revision = outcome.decision?.revision ?? (tenant === undefined ? undefined : this.#deps.engine.active(tenant)?.revision);
    const denied = outcome.response.deniedResponse;
    const event: ExtAuthzDecisionEvent = {
      ...events.create({
        decisionId,
        tenant: tenant ?? '',
        path: settings?.path ?? '',
        revision,
        input: outcome.input,
        result: outcome.decision?.result,
        error: outcome.code === undefined ? undefined : { code: outcome.code, message: outcome.message ?? '' },
        requestedBy: context.requestedBy,
        timestamp,
        evalNs: outcome.decision?.evalNs ?? 0,
        handlerNs,
      }),
      ...(typeof requestId === 'string' && requestId !== '' ? { request_id: requestId } : {}),
      ext_authz: {
        transport: context.transport,
        allowed: outcome.response.status.code === RpcCode.OK,
        dry_run: settings?.dryRun ?? false,
        ...(denied === undefined ? {} : { http_status: denied.status.code }),
        ...(corrects === undefined ? {} : { corrects }),
      },
    };
    return sink.write(event);
  }

  /** Metrics for the answer Envoy gets (after a refused event: the refusal's code). */
  #count(context: CheckContext, tenant: string | undefined, settings: ExtAuthzTenantConfig | undefined, started: bigint, outcome: Outcome): void {
    const { metrics } = this.#deps;
    const result = outcome.code ?? (outcome.policyAllowed === true ? 'allow' : 'deny');
    this.#checks.inc({ transport: context.transport, tenant: tenant ?? UNKNOWN, result });
    this.#duration.observe({ transport: context.transport }, Number(process.hrtime.bigint() - started) / 1e9);
    if (tenant !== undefined && settings !== undefined) {
      metrics.decisions.inc({ tenant, path: settings.path, outcome: result });
      if (outcome.decision !== undefined && !outcome.decision.cached) {
        metrics.evaluationSeconds.observe({ tenant }, outcome.decision.evalNs / 1e9);
      }
    }
  }
}

/**
 * One deadline for a whole check (the tenant's `timeoutMs`, or less when the caller's gRPC
 * deadline is nearer): the credential checks, the evaluation and the wait for the audit log
 * are all raced against it, so Envoy always has an answer before it gives up and applies
 * its own `failure_mode_allow`. Work that loses the race finishes unobserved.
 */
class CheckDeadline {
  readonly #expired: Promise<never>;
  #timer: NodeJS.Timeout | undefined;

  constructor(budgetMs: number) {
    this.#expired = new Promise<never>((_resolve, reject) => {
      this.#timer = setTimeout(
        () => reject(new PavilionError(ErrorCodes.EXTAUTHZ_DEADLINE_EXCEEDED, `no answer within the check's ${budgetMs} ms deadline`)),
        budgetMs,
      );
    });
    this.#expired.catch(() => undefined);
  }

  race<T>(work: Promise<T>): Promise<T> {
    work.catch(() => undefined); // a loser's failure is not unhandled
    return Promise.race([work, this.#expired]);
  }

  clear(): void {
    clearTimeout(this.#timer);
  }
}

/** Whether Envoy acts differently on `b` than on `a`: allowed or not, or another denial status. */
function answerDiffers(a: CheckResponse, b: CheckResponse): boolean {
  return (a.status.code === RpcCode.OK) !== (b.status.code === RpcCode.OK) || a.deniedResponse?.status.code !== b.deniedResponse?.status.code;
}

/** A receipt was asked for: by the tenant's settings, or by the checked request's `x-pavilion-receipt: 1`. */
function wantsReceipt(request: CheckRequestJson | PavilionError, settings: ExtAuthzTenantConfig | undefined): boolean {
  if (settings?.receipts === 'always') return true;
  if (request instanceof PavilionError) return false;
  const http = request.attributes?.request?.http;
  if (http?.headers?.[RECEIPT_HEADER] === '1') return true;
  // Envoy's header_map form (raw values are bytes, base64 in protobuf JSON)
  return http?.headerMap?.headers?.some((h) => h.key?.toLowerCase() === RECEIPT_HEADER && (h.value === '1' || (h.rawValue !== undefined && Buffer.from(h.rawValue, 'base64').toString('latin1') === '1'))) === true;
}

/**
 * Dry run: Envoy lets the request through whatever the outcome (the outcome stays in the
 * event), except upstream's 400 for a request it cannot parse, which the caller leaves as it is.
 */
function dryRunResponse(response: CheckResponse): CheckResponse {
  if (response.status.code === RpcCode.OK) return response;
  return {
    status: { code: RpcCode.OK },
    okResponse: { headers: [], headersToRemove: [], responseHeadersToAdd: [], queryParametersToSet: [], queryParametersToRemove: [] },
    ...(response.dynamicMetadata === undefined ? {} : { dynamicMetadata: response.dynamicMetadata }),
  };
}

/**
 * Envoy's HTTP service mode can only carry valid HTTP headers, and reads a 200 as "allow":
 * a decision that cannot be expressed there is refused rather than half applied.
 */
function assertHttpExpressible(response: CheckResponse): void {
  const check = (list: readonly HeaderValueOption[]): void => {
    for (const { header } of list) {
      try {
        validateHeaderName(header.key);
        validateHeaderValue(header.key, header.value);
      } catch (error) {
        throw new PavilionError(ErrorCodes.EXTAUTHZ_DECISION_INVALID, `header ${JSON.stringify(header.key)} cannot be sent over HTTP: ${describeThrown(error)}`);
      }
    }
  };
  if (response.okResponse !== undefined) {
    check(response.okResponse.headers);
    check(response.okResponse.responseHeadersToAdd);
    check(response.okResponse.headersToRemove.map((key) => ({ header: { key, value: '' } })));
  }
  if (response.deniedResponse !== undefined) {
    check(response.deniedResponse.headers);
    const status = response.deniedResponse.status.code;
    // 200 reads as "allow", and a 1xx is informational: Envoy would wait on for a final answer
    if (status <= 200 || !ENVOY_HTTP_STATUS_CODES.has(status)) {
      throw new PavilionError(ErrorCodes.EXTAUTHZ_DECISION_INVALID, `http_status ${status} cannot deny a request in Envoy's HTTP service mode`);
    }
  }
}
