/**
 * The policy's input document for a Check, exactly as opa-envoy-plugin builds it
 * (envoyauth/request.go `RequestToInput` and envoyauth/protomap.go, v1.x, 2025):
 *
 *   {
 *     "attributes": {...},          // the CheckRequest, field names in protobuf JSON form
 *                                   //   (socketAddress, portValue, contextExtensions, ...),
 *                                   //   only populated fields, int64 `size` as a number,
 *                                   //   bytes as base64, enums as numbers, Timestamps as
 *                                   //   {seconds, nanos}, Structs as plain objects
 *     "version": {"ext_authz": "v3", "encoding": "protojson"},
 *     "parsed_path": ["api", "v1"],  // path before '?', percent-decoded, split on '/'
 *     "parsed_query": {"a": ["1", "2"]},
 *     "parsed_body": ... | null,     // absent with skipRequestBodyParse
 *     "truncated_body": false,       // absent with skipRequestBodyParse
 *     "source_principal": "spiffe://..."   // only when attributes.source.principal is set
 *   }
 *
 * The `attributes` part is produced from the wire by `proto-codec.ts` (the `CheckRequestJson`
 * shape); the HTTP service mode builds the same shape from the HTTP request. Everything here
 * is pure: no I/O, no clock.
 *
 * Body rules (upstream `getParsedBody`): `x-envoy-auth-partial-body: true` -> truncated;
 * then by the `content-type` header: `application/json` (body, else raw_body; a
 * `content-length` larger than the body -> truncated, no parsed body), form-urlencoded
 * (same, values as lists), `multipart/form-data`, `application/grpc` (needs a descriptor
 * set upstream; Pavilion has none, so `null` as upstream without one), anything else `null`.
 * Malformed bodies, paths, queries and content-lengths are request errors
 * (`ERR_EXTAUTHZ_REQUEST_INVALID`), which upstream answers with a 400 denied response. Their
 * message is the error text upstream's `RequestToInput` returns (Go's, unwrapped: `invalid
 * URL escape "%zz"`, `invalid semicolon separator in query`, `strconv.ParseInt: parsing
 * "abc": invalid syntax`, `mime: ...`), which the check service sends as
 * `request_parse_error: <message>`. Exception: JSON syntax errors carry V8's wording, not
 * Go's (`encoding/json` behind OPA's `util.UnmarshalJSON` words them its own way).
 *
 * The truncation check compares `content-length` with the byte length of what is parsed:
 * the UTF-8 bytes of `body`, or `raw_body`'s own bytes, as Go's `len()` counts them.
 *
 * Pavilion's addition: a body longer than `maxRequestBodyBytes` is cut to that length (in
 * `body` and `rawBody` alike) and the request is treated as truncated, so a policy never
 * sees more than the configured amount and never parses a partial document.
 */
import { ErrorCodes, PavilionError } from '../lib/errors.ts';
import { parseInt64, parseQuery, pathUnescape } from './go-url.ts';
import { parseMediaType, parseMultipartForm } from './multipart.ts';

export type JsonObject = { [key: string]: unknown };

/** `envoy.service.auth.v3.CheckRequest` in the protomap form (see file header). */
export interface CheckRequestJson {
  readonly attributes?: {
    readonly source?: PeerJson;
    readonly destination?: PeerJson;
    readonly request?: {
      readonly time?: { readonly seconds?: number; readonly nanos?: number };
      readonly http?: HttpRequestJson;
    };
    readonly contextExtensions?: Readonly<Record<string, string>>;
    readonly metadataContext?: JsonObject;
    readonly routeMetadataContext?: JsonObject;
    readonly tlsSession?: { readonly sni?: string };
  };
}

export interface PeerJson {
  readonly address?: {
    readonly socketAddress?: { readonly address?: string; readonly portValue?: number; readonly namedPort?: string; readonly protocol?: number };
    readonly pipe?: { readonly path?: string; readonly mode?: number };
  };
  readonly service?: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly principal?: string;
  readonly certificate?: string;
}

export interface HttpRequestJson {
  readonly id?: string;
  readonly method?: string;
  readonly headers?: Readonly<Record<string, string>>;
  readonly headerMap?: { readonly headers?: ReadonlyArray<{ readonly key?: string; readonly value?: string; readonly rawValue?: string }> };
  readonly path?: string;
  readonly host?: string;
  readonly scheme?: string;
  readonly query?: string;
  readonly fragment?: string;
  readonly size?: number;
  readonly protocol?: string;
  readonly body?: string;
  /** base64, as Go's JSON renders bytes. */
  readonly rawBody?: string;
}

export interface InputOptions {
  readonly skipRequestBodyParse: boolean;
  readonly maxRequestBodyBytes: number;
}

export interface InputDocument {
  readonly input: JsonObject;
  /** The body was longer than maxRequestBodyBytes and was cut (Pavilion's limit, not Envoy's). */
  readonly bodyCut: boolean;
}

export const INPUT_VERSION = Object.freeze({ ext_authz: 'v3', encoding: 'protojson' });

function invalid(message: string, cause?: unknown): PavilionError {
  return new PavilionError(ErrorCodes.EXTAUTHZ_REQUEST_INVALID, message, cause === undefined ? {} : { cause });
}

/** Upstream `getParsedPathAndQuery`: cut at the first '?', unescape the path, split it. */
export function parsePathAndQuery(path: string): { parsedPath: string[]; parsedQuery: Record<string, string[]> } {
  const q = path.indexOf('?');
  const rawPath = q === -1 ? path : path.slice(0, q);
  const rawQuery = q === -1 ? '' : path.slice(q + 1);
  let decoded: string;
  let parsedQuery: Record<string, string[]>;
  try {
    decoded = pathUnescape(rawPath);
    parsedQuery = parseQuery(rawQuery);
  } catch (error) {
    // upstream returns url.PathUnescape's / url.ParseQuery's error as it is
    throw invalid((error as Error).message, error);
  }
  return { parsedPath: decoded.replace(/^\/+/, '').split('/'), parsedQuery };
}

/** Upstream `checkIfHTTPBodyTruncated`. */
function truncatedByContentLength(contentLength: string | undefined, bodyBytes: number): boolean {
  if (contentLength === undefined) return false;
  const declared = parseInt64(contentLength);
  return declared !== -1n && declared > BigInt(bodyBytes);
}

function parseJsonBody(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw invalid((error as Error).message, error);
  }
}

/** Upstream `getParsedBody`: [parsed body or null, truncated]. */
export function parseBody(headers: Readonly<Record<string, string>>, body: string, rawBody: Buffer): [unknown, boolean] {
  if (headers['x-envoy-auth-partial-body'] === 'true') return [null, true];
  const contentType = headers['content-type'];
  if (contentType === undefined) return [null, false];
  const isJson = contentType.includes('application/json');
  const isForm = !isJson && !contentType.includes('application/grpc') && contentType.includes('application/x-www-form-urlencoded');
  const isMultipart = !isJson && !isForm && !contentType.includes('application/grpc') && contentType.includes('multipart/form-data');
  if (!isJson && !isForm && !isMultipart) return [null, false];
  if (body === '' && rawBody.length === 0) return [null, false];
  // Go's len(): the bytes of the string upstream parses (raw_body's own bytes, not their
  // UTF-8 decoding, where each bad byte would count as the 3 bytes of a U+FFFD)
  const payloadBytes = body !== '' ? Buffer.byteLength(body, 'utf8') : rawBody.length;
  if (truncatedByContentLength(headers['content-length'], payloadBytes)) return [null, true];
  if (isMultipart) {
    const boundary = parseMediaType(contentType).params['boundary'];
    if (boundary === undefined) return [null, false];
    // raw_body's own bytes, as Go's reader sees them (a bad byte quoted as \xff in its errors)
    return [parseMultipartForm(body !== '' ? body : rawBody, boundary), false];
  }
  const payload = body !== '' ? body : rawBody.toString('utf8');
  if (isJson) return [parseJsonBody(payload), false];
  return [parseQuery(payload), false];
}

/** Cut a UTF-8 string to at most `maxBytes` bytes without splitting a character. */
function cutUtf8(text: string, maxBytes: number): string {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= maxBytes) return text;
  let end = maxBytes;
  while (end > 0 && ((bytes[end] as number) & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end).toString('utf8');
}

/**
 * Build the input document for a CheckRequest (protomap form). Throws
 * `ERR_EXTAUTHZ_REQUEST_INVALID` where upstream's RequestToInput fails.
 */
export function checkRequestToInput(request: CheckRequestJson, options: InputOptions): InputDocument {
  const http = request.attributes?.request?.http;
  let body = http?.body ?? '';
  let rawBody = http?.rawBody === undefined ? Buffer.alloc(0) : Buffer.from(http.rawBody, 'base64');
  let bodyCut = false;
  let attributes = request.attributes;
  if (http !== undefined && (Buffer.byteLength(body, 'utf8') > options.maxRequestBodyBytes || rawBody.length > options.maxRequestBodyBytes)) {
    bodyCut = true;
    body = cutUtf8(body, options.maxRequestBodyBytes);
    rawBody = rawBody.subarray(0, options.maxRequestBodyBytes);
    const cut: Record<string, unknown> = { ...http };
    if (http.body !== undefined) cut['body'] = body;
    if (http.rawBody !== undefined) cut['rawBody'] = rawBody.toString('base64');
    attributes = { ...attributes, request: { ...attributes?.request, http: cut as HttpRequestJson } };
  }
  const input: JsonObject = attributes === undefined ? {} : { attributes };
  input['version'] = INPUT_VERSION;
  const { parsedPath, parsedQuery } = parsePathAndQuery(http?.path ?? '');
  input['parsed_path'] = parsedPath;
  input['parsed_query'] = parsedQuery;
  if (!options.skipRequestBodyParse) {
    const headers = http?.headers ?? {};
    let parsed: [unknown, boolean];
    if (bodyCut) {
      parsed = [null, true];
    } else {
      try {
        parsed = parseBody(headers, body, rawBody);
      } catch (error) {
        if (error instanceof PavilionError) throw error;
        throw invalid((error as Error).message, error);
      }
    }
    input['parsed_body'] = parsed[0];
    input['truncated_body'] = parsed[1];
  }
  const principal = request.attributes?.source?.principal;
  if (principal !== undefined && principal !== '') input['source_principal'] = principal;
  return { input, bodyCut };
}
