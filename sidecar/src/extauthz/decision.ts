/**
 * From a policy decision to Envoy's CheckResponse, with opa-envoy-plugin's contract
 * (envoyauth/response.go and the Check handler of internal/internal.go):
 *
 * - The decision is a boolean, or an object whose `allowed` key is required and must be a
 *   boolean. Anything else (a missing `allowed`, a string, an undefined decision) is an
 *   error, never an allow.
 * - `status.code` is google.rpc OK (0) on allow and PERMISSION_DENIED (7) on deny.
 * - A boolean decision sets no `http_response` (Envoy then answers a denial with 403).
 * - An object decision: `headers` (an object, or an array of objects; each value a string or
 *   an array of strings, every string one HeaderValueOption with only `header` set, so
 *   Envoy's default append action APPEND_IF_EXISTS_OR_ADD (0) applies) and
 *   `dynamic_metadata` (an object) on both branches; on allow `request_headers_to_remove`,
 *   `response_headers_to_add`, `query_parameters_to_set` (values strings or string
 *   arrays), `query_parameters_to_remove` go into `ok_response`; on deny `body` (a string)
 *   and `http_status` (an integer Envoy's StatusCode enum knows; default 403) go into
 *   `denied_response`. A field of the wrong type is an error. Fields of the other branch
 *   are not looked at.
 * - Dry run is not applied here: the check service applies it once to whatever it answers
 *   (a decision or a failure), and the real outcome is what gets logged.
 * - `dynamic_metadata.decision_id` is always set to the decision id (it overrides a value
 *   the policy gave).
 *
 * Errors are `ERR_EXTAUTHZ_DECISION_UNDEFINED` / `ERR_EXTAUTHZ_DECISION_INVALID`.
 * Where opa-envoy-plugin answers an error with a gRPC error, Pavilion answers
 * `failureCheckResponse` (see README: the one deliberate difference).
 */
import { ErrorCodes, PavilionError } from '../lib/errors.ts';
import type { JsonObject } from './input.ts';

/** google.rpc.Code values used here. */
export const RpcCode = { OK: 0, PERMISSION_DENIED: 7, RESOURCE_EXHAUSTED: 8, UNIMPLEMENTED: 12, INTERNAL: 13 } as const;

/** `envoy.config.core.v3.HeaderValueOption.HeaderAppendAction`. */
export const HeaderAppendAction = {
  APPEND_IF_EXISTS_OR_ADD: 0,
  ADD_IF_ABSENT: 1,
  OVERWRITE_IF_EXISTS_OR_ADD: 2,
  OVERWRITE_IF_EXISTS: 3,
} as const;

/** Every code of `envoy.type.v3.StatusCode` except Empty (0): the statuses Envoy accepts. */
export const ENVOY_HTTP_STATUS_CODES: ReadonlySet<number> = new Set([
  100, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 307, 308,
  400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 421,
  422, 423, 424, 426, 428, 429, 431, 500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511,
]);

export interface HeaderValueOption {
  readonly header: { readonly key: string; readonly value: string };
  readonly appendAction?: number;
}

export interface QueryParameter {
  readonly key: string;
  readonly value: string;
}

/** `envoy.service.auth.v3.CheckResponse`, field names in protobuf JSON form. */
export interface CheckResponse {
  readonly status: { readonly code: number; readonly message?: string };
  readonly deniedResponse?: {
    readonly status: { readonly code: number };
    readonly headers: readonly HeaderValueOption[];
    readonly body: string;
  };
  readonly okResponse?: {
    readonly headers: readonly HeaderValueOption[];
    readonly headersToRemove: readonly string[];
    readonly responseHeadersToAdd: readonly HeaderValueOption[];
    readonly queryParametersToSet: readonly QueryParameter[];
    readonly queryParametersToRemove: readonly string[];
  };
  readonly dynamicMetadata?: JsonObject;
}

export interface DecisionOptions {
  readonly decisionId: string;
}

export interface MappedDecision {
  readonly response: CheckResponse;
  /** What the policy decided (dry run is applied later, by the check service, to every outcome). */
  readonly allowed: boolean;
}

function invalid(message: string): PavilionError {
  return new PavilionError(ErrorCodes.EXTAUTHZ_DECISION_INVALID, message);
}

function typeName(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function headerMap(headers: JsonObject, out: HeaderValueOption[]): void {
  for (const [key, value] of Object.entries(headers)) {
    if (typeof value === 'string') {
      out.push({ header: { key, value } });
    } else if (Array.isArray(value)) {
      for (const v of value) {
        if (typeof v !== 'string') throw invalid(`invalid value type ${typeName(v)} for header '${key}'`);
        out.push({ header: { key, value: v } });
      }
    } else {
      throw invalid(`type assertion error for header '${key}': expected a string or an array of strings, got ${typeName(value)}`);
    }
  }
}

function headerOptions(decision: JsonObject, field: string): HeaderValueOption[] {
  if (!Object.hasOwn(decision, field)) return [];
  const value = decision[field];
  const out: HeaderValueOption[] = [];
  if (Array.isArray(value)) {
    for (const item of value) {
      if (!isObject(item)) throw invalid(`type assertion error, expected ${field} to be of type 'object' but got '${typeName(item)}'`);
      headerMap(item, out);
    }
  } else if (isObject(value)) {
    headerMap(value, out);
  } else {
    throw invalid(`type assertion error, expected ${field} to be of type 'object' but got '${typeName(value)}'`);
  }
  return out;
}

function stringList(decision: JsonObject, field: string): string[] {
  if (!Object.hasOwn(decision, field)) return [];
  const value = decision[field];
  if (!Array.isArray(value)) throw invalid(`type assertion error, expected ${field} to be of type '[]string' but got '${typeName(value)}'`);
  return value.map((v) => {
    if (typeof v !== 'string') throw invalid(`type assertion error, expected ${field} value to be of type 'string' but got '${typeName(v)}'`);
    return v;
  });
}

function queryParameters(decision: JsonObject): QueryParameter[] {
  if (!Object.hasOwn(decision, 'query_parameters_to_set')) return [];
  const value = decision['query_parameters_to_set'];
  if (!isObject(value)) throw invalid(`type assertion error, expected query_parameters_to_set to be a map but got '${typeName(value)}'`);
  const out: QueryParameter[] = [];
  for (const [key, v] of Object.entries(value)) {
    if (typeof v === 'string') {
      out.push({ key, value: v });
    } else if (Array.isArray(v)) {
      for (const item of v) {
        if (typeof item !== 'string') throw invalid(`type assertion error: expected array element to be string but got '${typeName(item)}'`);
        out.push({ key, value: item });
      }
    } else {
      throw invalid(`type assertion error, expected value to be string or array but got '${typeName(v)}'`);
    }
  }
  return out;
}

function httpStatus(decision: JsonObject): number {
  if (!Object.hasOwn(decision, 'http_status')) return 403;
  const value = decision['http_status'];
  if (typeof value !== 'number') throw invalid(`type assertion error, expected http_status to be of type 'number' but got '${typeName(value)}'`);
  if (!Number.isInteger(value)) throw invalid(`error converting JSON number to int: ${value}`);
  if (!ENVOY_HTTP_STATUS_CODES.has(value)) throw invalid(`invalid HTTP status code ${value}`);
  return value;
}

/** Whether the decision allows, per upstream `IsAllowed`. */
export function isAllowed(result: unknown): boolean {
  if (result === undefined) throw new PavilionError(ErrorCodes.EXTAUTHZ_DECISION_UNDEFINED, 'undefined decision');
  if (typeof result === 'boolean') return result;
  if (isObject(result)) {
    if (!Object.hasOwn(result, 'allowed')) throw invalid('unable to determine evaluation result due to missing "allowed" key');
    const allowed = result['allowed'];
    if (typeof allowed !== 'boolean') throw invalid(`type assertion error, expected allowed to be of type 'boolean' but got '${typeName(allowed)}'`);
    return allowed;
  }
  throw invalid(`illegal value for policy evaluation result: ${typeName(result)}`);
}

/** Map a decision to a CheckResponse; throws the decision errors described above. */
export function decisionToCheckResponse(result: unknown, options: DecisionOptions): MappedDecision {
  const allowed = isAllowed(result);
  let response: CheckResponse = { status: { code: allowed ? RpcCode.OK : RpcCode.PERMISSION_DENIED } };
  if (isObject(result)) {
    const headers = headerOptions(result, 'headers');
    let dynamicMetadata: JsonObject | undefined;
    if (Object.hasOwn(result, 'dynamic_metadata')) {
      const value = result['dynamic_metadata'];
      if (!isObject(value)) throw invalid(`type assertion error, expected dynamic_metadata to be of type 'object' but got '${typeName(value)}'`);
      dynamicMetadata = value;
    }
    if (allowed) {
      response = {
        ...response,
        okResponse: {
          headers,
          headersToRemove: stringList(result, 'request_headers_to_remove'),
          responseHeadersToAdd: headerOptions(result, 'response_headers_to_add'),
          queryParametersToSet: queryParameters(result),
          queryParametersToRemove: stringList(result, 'query_parameters_to_remove'),
        },
      };
    } else {
      const bodyValue = Object.hasOwn(result, 'body') ? result['body'] : '';
      if (typeof bodyValue !== 'string') throw invalid(`type assertion error, expected body to be of type 'string' but got '${typeName(bodyValue)}'`);
      response = { ...response, deniedResponse: { status: { code: httpStatus(result) }, headers, body: bodyValue } };
    }
    if (dynamicMetadata !== undefined) response = { ...response, dynamicMetadata };
  }
  response = { ...response, dynamicMetadata: { ...response.dynamicMetadata, decision_id: options.decisionId } };
  return { response, allowed };
}

export interface FailureOptions {
  readonly decisionId: string;
  /** The HTTP status Envoy sends downstream. */
  readonly httpStatus: number;
  readonly code: string;
  readonly message: string;
  /** Body for the downstream client (empty unless the contract says otherwise). */
  readonly body?: string;
  /** `status.message` in place of `<code>: <message>` (upstream's own text, where it has one). */
  readonly statusMessage?: string;
}

/**
 * The well-formed answer for a check that could not be decided: PERMISSION_DENIED with a
 * denied response carrying the configured status. The error code goes to `status.message`
 * and `dynamic_metadata.error_code` (Envoy logs them; the client does not see them), unless
 * `statusMessage` gives upstream's text for `status.message`.
 */
export function failureCheckResponse(options: FailureOptions): CheckResponse {
  return {
    status: { code: RpcCode.PERMISSION_DENIED, message: options.statusMessage ?? `${options.code}: ${options.message}` },
    deniedResponse: { status: { code: options.httpStatus }, headers: [], body: options.body ?? '' },
    dynamicMetadata: { decision_id: options.decisionId, error_code: options.code },
  };
}

/** Where a receipt goes on a CheckResponse (see `withReceipt`). */
export interface ReceiptAttachment {
  /** The header that carries it (`x-pavilion-receipt`), lower case. */
  readonly header: string;
  /** Its value (base64url of the receipt's JSON). */
  readonly value: string;
  /** The receipt as `dynamic_metadata.receipt`. */
  readonly metadata: JsonObject;
  /**
   * Also add it to `response_headers_to_add` (the downstream client's response) on allow.
   * gRPC only: Envoy's HTTP service mode has one header list, sorted by its own settings.
   */
  readonly toClient: boolean;
}

/**
 * Attach an audit log receipt to a response without changing what it decides: the status,
 * the HTTP status of a denial, the body and every other header stay as they are. On allow the
 * receipt header goes to `ok_response.headers` (added to the upstream request, replacing the
 * `x-pavilion-receipt: 1` the client sent) and, with `toClient`, to
 * `ok_response.response_headers_to_add`; on deny to `denied_response.headers` (a boolean
 * denial gets the denied response Envoy would have sent anyway: 403, no body). Both with
 * OVERWRITE_IF_EXISTS_OR_ADD, and a header of that name the policy set is replaced, so only
 * the sidecar speaks for the log. `dynamic_metadata.receipt` is set (over a policy's value),
 * as `decision_id` is.
 */
export function withReceipt(response: CheckResponse, attachment: ReceiptAttachment): CheckResponse {
  const option: HeaderValueOption = { header: { key: attachment.header, value: attachment.value }, appendAction: HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD };
  const others = (list: readonly HeaderValueOption[]): HeaderValueOption[] => list.filter((h) => h.header.key.toLowerCase() !== attachment.header);
  const dynamicMetadata: JsonObject = { ...response.dynamicMetadata, receipt: attachment.metadata };
  if (response.status.code === RpcCode.OK) {
    const ok = response.okResponse ?? { headers: [], headersToRemove: [], responseHeadersToAdd: [], queryParametersToSet: [], queryParametersToRemove: [] };
    return {
      ...response,
      okResponse: {
        ...ok,
        headers: [...others(ok.headers), option],
        responseHeadersToAdd: attachment.toClient ? [...others(ok.responseHeadersToAdd), option] : ok.responseHeadersToAdd,
      },
      dynamicMetadata,
    };
  }
  const denied = response.deniedResponse ?? { status: { code: 403 }, headers: [], body: '' };
  return { ...response, deniedResponse: { ...denied, headers: [...others(denied.headers), option] }, dynamicMetadata };
}
