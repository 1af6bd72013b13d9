/**
 * OPA-compatible REST API on node:http.
 *
 *   POST|GET /v1/data/{path}                  tenant from the configured header (GET: input from ?input=<json>)
 *   POST|GET /v1/tenants/{tenant}/data/{path} tenant from the path
 *   POST /v0/data/{path}, POST /v0/tenants/{tenant}/data/{path}  OPA's v0 API: the body is the input, the answer the bare value
 *   POST /                                    OPA's default decision (v0): the tenant's defaultDecision
 *   GET /health[?bundles][&plugins][&exclude-plugin=<name>] (OPA's meaning), /health/live, /health/ready (every component)
 *   GET /metrics  GET /v1/tenants
 *   POST /v1/tenants/{tenant}/credentials/challenge   a one-time challenge for a credential holder
 *   GET /v1/tenants/{tenant}/audit/decisions/{decision_id}/proof  inclusion proof (audit log sink)
 *   GET /v1/tenants/{tenant}/audit/checkpoint        the tenant's latest signed checkpoint
 *   GET /v1/tenants/{tenant}/audit/consistency?from=N[&to=M]  consistency proof between two checkpoints
 *
 * node:http rather than Express on this path: measured on the target machine, Express cost
 * about 4-5x in throughput on a small JSON POST (see README, "Why node:http").
 *
 * Request bodies are read as OPA reads them (v1/server/server.go): JSON whatever the
 * Content-Type says (YAML types are refused: there is no YAML parser here), gunzipped when
 * Content-Encoding is gzip, and bounded by http.maxBodyBytes before and after decompression.
 * A number a JS double would change (12345678901234567890, 1e400) is refused, not altered:
 * OPA keeps exact numbers, and the policy and the decision log must see what was sent.
 *
 * Isolation: a request resolves exactly one tenant (never a default), and evaluation only
 * sees that tenant's compiled policy and data; a path that is not one of its entrypoints is
 * refused. When both the header and the path name a tenant they must agree. Proofs and
 * checkpoints come only from the resolved tenant's own log. With API tokens (tenant-tokens.ts)
 * a tenant route is served only with one of that tenant's bearer tokens (401 otherwise).
 *
 * With a durable sink (the audit log) a decision is answered only once its event is durable;
 * a refusal (ERR_AUDIT_LOG_FULL, ...) is answered as an error instead of the decision. Other
 * sinks are written without waiting.
 */
import { randomUUID } from 'node:crypto';
import { STATUS_CODES, createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { AddressInfo } from 'node:net';
import { pipeline, Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { RECEIPT_HEADER, transportReceipt } from '../audit/index.ts';
import type { AuditLogSink, DecisionEvents, DecisionRecord, DecisionSink, EvaluatedLogRules, TransportReceiptV1 } from '../audit/index.ts';
import type { PavilionConfig } from '../config/index.ts';
import { TENANT_ID_PATTERN } from '../config/index.ts';
import type { Decision, DecisionLogRules, PolicyEngine } from '../engine/index.ts';
import { assertDepth } from '../lib/canonical-json.ts';
import type { ConnectionLimit } from '../lib/connection-limit.ts';
import { ErrorCodes, PavilionError, isPavilionError } from '../lib/errors.ts';
import type { Component, ComponentStatus } from '../lib/lifecycle.ts';
import { stateOnly, withDeadline } from '../lib/lifecycle.ts';
import {
  CREDENTIAL_CHALLENGE_HEADER,
  CREDENTIAL_WITNESSES_HEADER,
  CREDENTIALS_HEADER,
  credentialsFromHeader,
  witnessesFromHeader,
  withoutReservedCredentialKeys,
  type CredentialGate,
} from '../credentials/gate.ts';
import type { Metrics } from '../telemetry/index.ts';
import type { TenantManager } from '../tenants/index.ts';
import { toHttpError } from './error-body.ts';
import { tokenRefusal, type TenantAuthorizer } from './tenant-tokens.ts';

export interface ApiServerDeps {
  readonly config: PavilionConfig;
  readonly engine: PolicyEngine;
  readonly tenants: TenantManager;
  readonly sink: DecisionSink;
  /** The verifiable audit log, when it is the sink: proofs, checkpoints and receipts. */
  readonly auditLog?: Pick<AuditLogSink, 'proveInclusion' | 'latestCheckpoint' | 'consistencyProofBetween'>;
  readonly events: DecisionEvents;
  /**
   * The paths of the tenant's decision log rules (`system.log.drop` / `.mask`), evaluated
   * beside each of its decisions (absent: none; the sink evaluates what it needs itself).
   */
  readonly decisionLogRules?: (tenant: string) => readonly string[];
  readonly metrics: Metrics;
  /** Verifies the credentials a request carries into `input.credentials` (absent: not configured). */
  readonly credentials?: CredentialGate;
  /** Bearer tokens per tenant (absent: every tenant route is open, as OPA without --authentication). */
  readonly authorizer?: TenantAuthorizer;
  /** Components whose status makes up /health. */
  readonly components: () => readonly Component[];
  /**
   * This sidecar's report in OPA's Status API shape (`GET /v1/status`). With `visible`, only
   * the tenants it admits, and the components' states without their messages (which may
   * name any tenant).
   */
  readonly statusReport: (visible?: (tenant: string) => boolean) => unknown;
  /** Operator log (connections refused past `http.maxConnections`). */
  readonly log?: (level: 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>) => void;
  /** A handler served under its own path prefix (Envoy ext_authz's HTTP service mode). */
  readonly mounted?: {
    readonly pathPrefix: string;
    handle(req: IncomingMessage, res: ServerResponse): Promise<void>;
  };
}

interface Query {
  /** The decoded query string (names and values percent-decoded, as Go's url.Query does). */
  readonly params: URLSearchParams;
  readonly metrics: boolean;
  readonly provenance: boolean;
  readonly pretty: boolean;
  readonly verbose: boolean;
  readonly receipt: boolean;
}

/** Asks for the decision's audit log receipt in the Data API response (as does `?receipt`). */
export { RECEIPT_HEADER };

/** The receipt in a Data API response: which leaf of which tenant's log holds the decision. */
export type DataApiReceiptV1 = TransportReceiptV1;

const JSON_TYPE = 'application/json';
/** What a Data API request carries besides its input. */
interface RequestCredentials {
  readonly credentials: readonly unknown[];
  readonly challenge?: string;
  /** Accumulator witnesses by revocation handle (base64url). */
  readonly witnesses?: Readonly<Record<string, string>>;
}

/** A Data API request's input (undefined: none given) and what it carries besides. */
interface RequestInput {
  readonly input: unknown;
  /** False makes a v1 POST answer carry OPA's api_usage_warning. */
  readonly hasInput: boolean;
  readonly carried: RequestCredentials;
}

interface DecidedRequest {
  readonly decisionId: string;
  readonly decision: Decision;
  /** What a durable sink returned for the event (the audit log: where the decision is); undefined otherwise. */
  readonly receipt: Awaited<ReturnType<DecisionSink['write']>> | undefined;
}

function headerText(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value.join(',') : value;
}

/** Credentials from the body's `credentials`, `credential_challenge` and `credential_witnesses` fields and the headers. */
function requestCredentials(req: IncomingMessage, body: Record<string, unknown> | undefined, maxDepth: number): RequestCredentials {
  const credentials: unknown[] = [];
  const fromBody = body?.['credentials'];
  if (fromBody !== undefined) {
    if (!Array.isArray(fromBody)) throw new PavilionError(ErrorCodes.REQUEST_INVALID, '"credentials" must be an array of credentials and presentations');
    credentials.push(...fromBody);
  }
  credentials.push(...credentialsFromHeader(headerText(req, CREDENTIALS_HEADER)));
  // bounded as the input is, before the credential gate walks them
  for (const credential of credentials) assertDepth(credential, maxDepth);
  const challenge = body?.['credential_challenge'] ?? headerText(req, CREDENTIAL_CHALLENGE_HEADER);
  if (challenge !== undefined && typeof challenge !== 'string') throw new PavilionError(ErrorCodes.REQUEST_INVALID, '"credential_challenge" must be a string');
  const witnesses = body?.['credential_witnesses'] ?? witnessesFromHeader(headerText(req, CREDENTIAL_WITNESSES_HEADER));
  if (witnesses !== undefined && (typeof witnesses !== 'object' || witnesses === null || Array.isArray(witnesses) || Object.values(witnesses).some((w) => typeof w !== 'string'))) {
    throw new PavilionError(ErrorCodes.REQUEST_INVALID, '"credential_witnesses" must map revocation handles to base64url witnesses');
  }
  return {
    credentials,
    ...(challenge === undefined ? {} : { challenge }),
    ...(witnesses === undefined ? {} : { witnesses: witnesses as Record<string, string> }),
  };
}

/**
 * A boolean query parameter read as OPA's getBoolParam reads it: true when it is given once
 * with no value (`?pretty`), or when any of its values is "true" ignoring case; anything else
 * (`?pretty=false`, `?pretty=0`, `?pretty&pretty=false`) is false.
 */
function boolParam(params: URLSearchParams, name: string): boolean {
  const values = params.getAll(name);
  if (values.length === 1 && values[0] === '') return true;
  return values.some((value) => value.toLowerCase() === 'true');
}

/** Shared by every request without a query string; never mutated. */
const NO_PARAMS = new URLSearchParams();

function parseQuery(search: string): Query {
  const params = search === '' ? NO_PARAMS : new URLSearchParams(search);
  return {
    params,
    // OPA answers ?instrument with its metrics plus finer timers; Wasm evaluation has no finer timers
    metrics: boolParam(params, 'metrics') || boolParam(params, 'instrument'),
    provenance: boolParam(params, 'provenance'),
    pretty: boolParam(params, 'pretty'),
    verbose: boolParam(params, 'verbose'),
    // Pavilion's own parameter: `1` as its header form (x-pavilion-receipt: 1) says, too
    receipt: boolParam(params, 'receipt') || params.getAll('receipt').includes('1'),
  };
}

/**
 * OPA parameters Wasm evaluation cannot honour are refused, not ignored: a caller that asked
 * for an explanation, or for a builtin error to fail the query, must not silently get an
 * answer made without it (opa-wasm records no trace and treats builtin errors as undefined).
 */
function refuseUnsupportedParameters(params: URLSearchParams): void {
  const explain = params.getAll('explain').find((mode) => mode !== 'off');
  if (explain !== undefined) {
    throw new PavilionError(
      ErrorCodes.REQUEST_PARAMETER_UNSUPPORTED,
      `explain=${JSON.stringify(explain.slice(0, 32))} is not supported: Wasm evaluation records no trace to explain (omit explain, or explain=off)`,
      { details: { parameter: 'explain' } },
    );
  }
  if (boolParam(params, 'strict-builtin-errors')) {
    throw new PavilionError(
      ErrorCodes.REQUEST_PARAMETER_UNSUPPORTED,
      'strict-builtin-errors=true is not supported: Wasm evaluation turns a builtin error into an undefined value, so the answer would not be strict',
      { details: { parameter: 'strict-builtin-errors' } },
    );
  }
}

/**
 * Cheap pre-check on raw JSON text: only a run of 16+ digits (a decimal point may sit inside
 * it) or an exponent of 3+ digits can be a number a double does not keep. Anything shorter has
 * at most 15 significant digits and a magnitude between 1e-114 and 1e114, which a double always keeps.
 */
const MAYBE_INEXACT = /\d(?:\.?\d){15}|[eE][+-]?\d{3}/;
const NUMBER_TOKEN = /-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
const DECIMAL_PARTS = /^(-?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/;

/** A decimal's exact value as `<sign><digits>e<exponent>`, digits without leading or trailing zeros: "120.50" and "1.205e2" both give "1205e-1". */
function decimalValue(text: string): string {
  const [, sign = '', whole = '', fraction = '', exponent = '0'] = DECIMAL_PARTS.exec(text) ?? [];
  const digits = whole + fraction;
  const first = digits.search(/[1-9]/);
  if (first === -1) return '0'; // every zero, -0 included (JSON.stringify writes -0 as 0)
  const significant = digits.slice(first).replace(/0+$/, '');
  // BigInt: an exponent such as 1e-99999999999999999999 must not round either
  const power = BigInt(exponent) - BigInt(fraction.length) + BigInt(digits.length - first - significant.length);
  return `${sign}${significant}e${power}`;
}

/** Whether the double nearest `token` prints back as the same value (1.0 and 1e2 do; 12345678901234567890, 1e400 and 1e-400 do not). */
function doubleKeeps(token: string): boolean {
  const value = Number(token);
  return Number.isFinite(value) && decimalValue(String(value)) === decimalValue(token);
}

/** The first number outside strings in valid JSON `text` that a double would change, if any. */
function inexactNumber(text: string): string | undefined {
  if (!MAYBE_INEXACT.test(text)) return undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // skip the string: to its closing quote, stepping over escapes
      for (i++; i < text.length && text.charCodeAt(i) !== 0x22; i++) if (text.charCodeAt(i) === 0x5c) i++;
    } else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      NUMBER_TOKEN.lastIndex = i;
      const token = NUMBER_TOKEN.exec(text)?.[0];
      if (token === undefined) continue; // cannot happen in valid JSON; never refuse on a guess
      if (!doubleKeeps(token)) return token;
      i += token.length - 1;
    }
  }
  return undefined;
}

/**
 * A JSON document from the request: parsed, and refused when it holds a number a double would
 * change. `text` must be the whole document (the number scan relies on it being valid JSON).
 */
function parseJsonDocument(text: string, what: string): unknown {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new PavilionError(ErrorCodes.REQUEST_MALFORMED_JSON, `${what} is not valid JSON: ${(error as Error).message}`);
  }
  const inexact = inexactNumber(text);
  if (inexact !== undefined) {
    const shown = inexact.length > 64 ? `${inexact.slice(0, 64)}...` : inexact;
    throw new PavilionError(
      ErrorCodes.REQUEST_NUMBER_INEXACT,
      `${what} holds the number ${shown}, which cannot be kept exactly (a 64-bit float would change it); send it as a string`,
      { details: { number: shown } },
    );
  }
  return parsed;
}

function tooLarge(limit: number, what: string): PavilionError {
  return new PavilionError(ErrorCodes.REQUEST_TOO_LARGE, `${what} exceeds the limit of ${limit} bytes`, { details: { maxBodyBytes: limit } });
}

/** `chunks`, refused with ERR_REQUEST_TOO_LARGE as soon as they pass `limit` bytes in all. */
async function* limited(chunks: AsyncIterable<Buffer>, limit: number, what: string): AsyncGenerator<Buffer> {
  let size = 0;
  for await (const chunk of chunks) {
    size += chunk.length;
    if (size > limit) throw tooLarge(limit, what);
    yield chunk;
  }
}

async function collect(chunks: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of chunks) {
    parts.push(chunk);
    size += chunk.length;
  }
  return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, size);
}

/**
 * Gunzip `compressed` as it arrives (the caller bounds the output, so a gzip bomb stops at the
 * limit). On early exit the zlib stream is destroyed and, through `pipeline`, `compressed` is
 * returned: the request itself is left for the caller to drain.
 */
function gunzipped(compressed: AsyncIterable<Buffer>): AsyncIterable<Buffer> {
  return pipeline(Readable.from(compressed), createGunzip(), () => {
    // errors reach the consumer through the zlib stream's iterator
  });
}

function isZlibError(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('Z_');
}

/**
 * Whether the body is gzip-encoded (OPA decompresses gzip and nothing else). A zero-length
 * body has nothing to decompress; any other coding is refused.
 */
function gzipEncoded(req: IncomingMessage): boolean {
  const coding = headerText(req, 'content-encoding')?.trim().toLowerCase();
  if (coding === undefined || coding === '' || coding === 'identity') return false;
  if (coding !== 'gzip' && coding !== 'x-gzip') {
    throw new PavilionError(ErrorCodes.REQUEST_UNSUPPORTED_MEDIA_TYPE, `content-encoding ${coding} is not supported; send gzip or identity`);
  }
  return req.headers['content-length'] !== '0';
}

/** The path as an OPA data reference (`data.bank.authz.allow`), for v0's undefined_document message. */
function dataRef(path: string): string {
  let ref = 'data';
  for (const segment of path.split('/')) {
    if (segment === '') continue;
    if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(segment)) ref += `.${segment}`;
    else ref += /^\d+$/.test(segment) ? `[${segment}]` : `[${JSON.stringify(segment)}]`;
  }
  return ref;
}

/** `pathname` is `prefix` or below it. */
function isUnder(pathname: string, prefix: string): boolean {
  return pathname.startsWith(prefix) && (pathname.length === prefix.length || pathname[prefix.length] === '/');
}

/** `/v?/tenants/{tenant}{after}`: the tenant named in the path, and the rest of it. */
function tenantRoute(pathname: string, prefix: string): { tenant: string; after: string } {
  const rest = pathname.slice(prefix.length);
  const slash = rest.indexOf('/');
  return {
    tenant: decodeSegments(slash === -1 ? rest : rest.slice(0, slash))[0] ?? '',
    after: slash === -1 ? '' : rest.slice(slash),
  };
}

/** A tree size in the query: absent, or exactly one decimal integer (its range is the log's to check). */
function treeSizeParameter(params: URLSearchParams, name: 'from' | 'to'): number | undefined {
  const values = params.getAll(name);
  if (values.length === 0) return undefined;
  const [text] = values;
  if (values.length > 1 || text === undefined || !/^[0-9]{1,15}$/.test(text)) {
    throw new PavilionError(ErrorCodes.AUDIT_RANGE_INVALID, `${name} must be a tree size, a decimal integer given once (got ${JSON.stringify(values.join(',').slice(0, 32))})`, {
      details: { parameter: name },
    });
  }
  return Number(text);
}

function decodeSegments(raw: string): string[] {
  const segments: string[] = [];
  for (const segment of raw.split('/')) {
    if (segment === '') continue;
    let decoded: string;
    try {
      decoded = decodeURIComponent(segment);
    } catch {
      throw new PavilionError(ErrorCodes.REQUEST_INVALID, `path segment ${JSON.stringify(segment)} is not valid percent-encoding`);
    }
    if (decoded.includes('/') || decoded.includes('\0')) {
      throw new PavilionError(ErrorCodes.REQUEST_INVALID, `path segment ${JSON.stringify(decoded)} is not allowed`);
    }
    segments.push(decoded);
  }
  return segments;
}

/**
 * `?metrics` (and `?instrument`) in OPA's names. A cached answer was not evaluated: it reports
 * no eval timer (a 0 would read as a measured evaluation) but a cache-hit counter instead.
 */
function responseMetrics(decision: Decision, handlerNs: number): Record<string, number> {
  return decision.cached
    ? { counter_pavilion_decision_cache_hit: 1, timer_server_handler_ns: handlerNs }
    : { timer_rego_query_eval_ns: decision.evalNs, timer_server_handler_ns: handlerNs };
}

function outcomeOf(result: unknown): string {
  if (result === undefined) return 'undefined';
  if (result === true) return 'allow';
  if (result === false) return 'deny';
  if (typeof result === 'object' && result !== null) {
    const r = result as Record<string, unknown>;
    const verdict = r['allow'] ?? r['allowed'];
    if (verdict === true) return 'allow';
    if (verdict === false) return 'deny';
  }
  return 'defined';
}

/** `?plugins`: a component (OPA: plugin) not OK or WARN, unless named by an `exclude-plugin` parameter. */
function pluginsProblem(components: Readonly<Record<string, ComponentStatus>>, params: URLSearchParams): string | undefined {
  const excluded = new Set(params.getAll('exclude-plugin'));
  const down = Object.entries(components).filter(([name, s]) => !excluded.has(name) && s.state !== 'OK' && s.state !== 'WARN');
  if (down.length === 0) return undefined;
  return `one or more plugins are not up: ${down.map(([name, s]) => `${name}: ${s.message ?? s.state}`).join('; ')}`;
}

/** The typed refusal for an error of Node's HTTP parser (the status Node itself would answer, with a body). */
function parserRefusal(error: NodeJS.ErrnoException): PavilionError {
  switch (error.code) {
    case 'HPE_HEADER_OVERFLOW':
      return new PavilionError(ErrorCodes.REQUEST_HEADERS_TOO_LARGE, 'the request line and headers are over http.maxHeaderBytes');
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return new PavilionError(ErrorCodes.REQUEST_TOO_LARGE, "the chunk extensions of the request body are over the HTTP parser's limit");
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new PavilionError(ErrorCodes.REQUEST_TIMEOUT, 'the request did not arrive whole within http.requestTimeoutMs');
    default:
      return new PavilionError(ErrorCodes.REQUEST_MALFORMED_HTTP, `the request is not valid HTTP/1.1 (${error.code ?? 'parse error'}: ${error.message})`);
  }
}

/**
 * What Node's HTTP parser refuses before any route sees it (a bad request line, header or
 * chunk; headers over `http.maxHeaderBytes`; a request not whole within `requestTimeoutMs`)
 * gets the OPA error body every other refusal gets, with its own code, where Node would
 * answer a bare 400, 413, 431 or 408. As in Node, nothing is written into a response already
 * started (a body that breaks HTTP after its route began to answer; this looks at whether the
 * route set its headers, where Node looks at whether they were written, so a route that set
 * them and wrote nothing yet gets no answer from here), and the connection closes once the
 * answer is out.
 */
function answerClientError(error: NodeJS.ErrnoException & { rawPacket?: Buffer }, socket: Duplex): void {
  const inFlight = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (error.code === 'ECONNRESET' || !socket.writable || inFlight?.headersSent === true) {
    socket.destroy();
    return;
  }
  const refusal = parserRefusal(error);
  const { status, body } = toHttpError(refusal);
  const text = JSON.stringify(body);
  // A HEAD is answered without a body. What the parser was reading shows it only when those
  // bytes begin the request: a HEAD refused in a later packet, or one that timed out, gets
  // the body, which its client may read as the start of a next answer (on a connection the
  // answer closes).
  const head = error.rawPacket?.subarray(0, 5).toString('latin1') === 'HEAD ';
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\ncontent-type: ${JSON_TYPE}\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${head ? '' : text}`,
    () => socket.destroy(),
  );
}

export class ApiServer implements Component {
  readonly name = 'http';
  readonly #deps: ApiServerDeps;
  readonly #server: Server;
  readonly #connections: ConnectionLimit;
  #listening = false;

  constructor(deps: ApiServerDeps) {
    this.#deps = deps;
    const headersTimeoutMs = Math.min(deps.config.http.requestTimeoutMs, 60_000);
    this.#server = createServer({
      maxHeaderSize: deps.config.http.maxHeaderBytes,
      // how often Node looks for requests past their timeouts (its default, 30 s, would let a
      // request that stalls linger up to 30 s past requestTimeoutMs)
      connectionsCheckingInterval: Math.max(50, Math.min(30_000, Math.floor(headersTimeoutMs / 2))),
    }, (req, res) => {
      this.#handle(req, res).catch((error: unknown) => {
        // #handle answers every error itself; reaching here is a bug. Never crash the
        // process over one request, and never leave it hanging.
        process.stderr.write(`${JSON.stringify({ level: 'error', msg: 'request handler failed', error: String(error) })}\n`);
        if (!res.headersSent) res.writeHead(500, { 'content-type': JSON_TYPE });
        res.end();
      });
    });
    this.#server.requestTimeout = deps.config.http.requestTimeoutMs;
    this.#server.headersTimeout = headersTimeoutMs;
    this.#server.keepAliveTimeout = deps.config.http.keepAliveTimeoutMs;
    this.#server.on('clientError', answerClientError);
    this.#connections = deps.metrics.connectionLimit({
      listener: 'http',
      maxConnections: deps.config.http.maxConnections,
      ...(deps.log === undefined ? {} : { log: deps.log }),
    });
    this.#connections.apply(this.#server);
  }

  async start(): Promise<void> {
    const { host, port } = this.#deps.config.http;
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(port, host, () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
    this.#listening = true;
  }

  address(): AddressInfo {
    return this.#server.address() as AddressInfo;
  }

  async stop(deadlineMs: number): Promise<void> {
    if (!this.#listening) return;
    this.#listening = false;
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.#server.closeIdleConnections();
    if (!(await withDeadline(closed, deadlineMs))) this.#server.closeAllConnections();
  }

  status(): ComponentStatus {
    if (!this.#listening) return { state: 'NOT_READY', message: 'not listening' };
    const details = this.#connections.details();
    const warning = this.#connections.warning();
    return warning === undefined ? { state: 'OK', details } : { state: 'WARN', message: warning, details };
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = process.hrtime.bigint();
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const pathname = q === -1 ? url : url.slice(0, q);
    const query = parseQuery(q === -1 ? '' : url.slice(q + 1));
    let route = 'other';
    const mounted = this.#deps.mounted;
    try {
      if (mounted !== undefined && isUnder(pathname, mounted.pathPrefix)) {
        route = 'ext_authz';
        await mounted.handle(req, res);
      } else if (isUnder(pathname, '/v1/data')) {
        route = 'data';
        await this.#data(req, res, undefined, pathname.slice(8), query, started);
      } else if (isUnder(pathname, '/v0/data')) {
        route = 'data';
        await this.#dataV0(req, res, undefined, pathname.slice(8), query, started);
      } else if (pathname === '/') {
        // OPA's default decision: v0's answer, for the tenant's defaultDecision
        route = 'data';
        await this.#dataV0(req, res, undefined, undefined, query, started);
      } else if (pathname.startsWith('/v0/tenants/')) {
        // the v1 tenant-in-path form, for v0 too
        const { tenant, after } = tenantRoute(pathname, '/v0/tenants/');
        if (!isUnder(after, '/data')) throw new PavilionError(ErrorCodes.ROUTE_NOT_FOUND, `no route for ${pathname}`);
        route = 'data';
        await this.#dataV0(req, res, tenant, after.slice(5), query, started);
      } else if (pathname.startsWith('/v1/tenants/')) {
        const { tenant, after } = tenantRoute(pathname, '/v1/tenants/');
        if (isUnder(after, '/data')) {
          route = 'data';
          await this.#data(req, res, tenant, after.slice(5), query, started);
        } else if (after === '/audit/checkpoint') {
          route = 'audit';
          this.#checkpoint(req, res, tenant, query);
        } else if (after === '/audit/consistency') {
          route = 'audit';
          this.#consistency(req, res, tenant, q === -1 ? '' : url.slice(q + 1), query);
        } else if (after.startsWith('/audit/decisions/') && after.endsWith('/proof')) {
          route = 'audit';
          const [decisionId, ...extra] = decodeSegments(after.slice('/audit/decisions/'.length, -'/proof'.length));
          if (decisionId === undefined || extra.length > 0) throw new PavilionError(ErrorCodes.ROUTE_NOT_FOUND, `no route for ${pathname}`);
          await this.#proof(req, res, tenant, decisionId, query);
        } else if (after === '/credentials/challenge') {
          route = 'credentials';
          await this.#challenge(req, res, tenant, query);
        } else if (after === '' || after === '/') {
          route = 'tenants';
          this.#onlyGet(req);
          const status = this.#deps.tenants.tenant(this.#resolveTenant(req, tenant));
          if (status === undefined) throw new PavilionError(ErrorCodes.TENANT_UNKNOWN, `unknown tenant ${tenant}`);
          this.#json(res, 200, { result: status }, query.pretty);
        } else {
          throw new PavilionError(ErrorCodes.ROUTE_NOT_FOUND, `no route for ${pathname}`);
        }
      } else if (pathname === '/v1/status') {
        route = 'status';
        this.#onlyGet(req);
        this.#json(res, 200, { result: this.#deps.statusReport(this.#visibleTo(req)) }, query.pretty);
      } else if (pathname === '/v1/tenants') {
        route = 'tenants';
        this.#onlyGet(req);
        this.#json(res, 200, { result: this.#visibleTenants(req) }, query.pretty);
      } else if (pathname === '/health') {
        route = 'health';
        this.#onlyGet(req);
        this.#health(res, query);
      } else if (pathname === '/health/ready') {
        route = 'health';
        this.#onlyGet(req);
        this.#ready(res, query);
      } else if (pathname === '/health/live') {
        route = 'health';
        this.#onlyGet(req);
        this.#json(res, 200, {}, false);
      } else if (pathname === '/metrics') {
        route = 'metrics';
        this.#onlyGet(req);
        const text = await this.#deps.metrics.registry.metrics();
        res.writeHead(200, { 'content-type': this.#deps.metrics.registry.contentType });
        res.end(text);
      } else {
        throw new PavilionError(ErrorCodes.ROUTE_NOT_FOUND, `no route for ${pathname}`);
      }
    } catch (error) {
      const { status, body } = toHttpError(error);
      if (status === 413) res.setHeader('connection', 'close');
      this.#json(res, status, body, query.pretty);
    } finally {
      this.#deps.metrics.httpRequestSeconds.observe({ route }, Number(process.hrtime.bigint() - started) / 1e9);
    }
  }

  async #challenge(req: IncomingMessage, res: ServerResponse, tenantFromPath: string, query: Query): Promise<void> {
    if (req.method !== 'POST') throw new PavilionError(ErrorCodes.METHOD_NOT_ALLOWED, `${req.method ?? ''} is not allowed here; use POST`);
    const tenant = this.#resolveTenant(req, tenantFromPath); // as every tenant route: path and header must agree
    const gate = this.#deps.credentials;
    if (gate === undefined || !gate.governs(tenant)) {
      throw new PavilionError(ErrorCodes.ROUTE_NOT_FOUND, `tenant ${JSON.stringify(tenant.slice(0, 64))} has no credential policy`);
    }
    req.resume();
    this.#json(res, 200, { result: await gate.issueChallenge(tenant) }, query.pretty);
  }

  #auditLog(): NonNullable<ApiServerDeps['auditLog']> {
    const log = this.#deps.auditLog;
    if (log === undefined) throw new PavilionError(ErrorCodes.AUDIT_LOG_DISABLED, "the verifiable audit log is not configured (decisionLog.sink 'audit')");
    return log;
  }

  async #proof(req: IncomingMessage, res: ServerResponse, tenantFromPath: string, decisionId: string, query: Query): Promise<void> {
    this.#onlyGet(req);
    const tenant = this.#resolveTenant(req, tenantFromPath);
    // never signs on demand for a network caller: not yet covered -> ERR_AUDIT_NOT_CHECKPOINTED
    const proof = await this.#auditLog().proveInclusion(tenant, decisionId, { signNow: false });
    this.#json(res, 200, { result: proof }, query.pretty);
  }

  #checkpoint(req: IncomingMessage, res: ServerResponse, tenantFromPath: string, query: Query): void {
    this.#onlyGet(req);
    const tenant = this.#resolveTenant(req, tenantFromPath);
    const checkpoint = this.#auditLog().latestCheckpoint(tenant);
    if (checkpoint === undefined) throw new PavilionError(ErrorCodes.AUDIT_NOT_CHECKPOINTED, `the audit log of tenant ${tenant} has no signed checkpoint yet`);
    this.#json(res, 200, { result: checkpoint }, query.pretty);
  }

  /**
   * `?from=<tree size>[&to=<tree size>]`: the consistency proof between the tenant's signed
   * checkpoints at those sizes (`to` default: the latest), a ConsistencyProofV1 that
   * `verifyConsistencyProof` (and `pavilion audit verify-consistency`) checks offline.
   */
  #consistency(req: IncomingMessage, res: ServerResponse, tenantFromPath: string, search: string, query: Query): void {
    this.#onlyGet(req);
    const tenant = this.#resolveTenant(req, tenantFromPath);
    const log = this.#auditLog();
    const params = new URLSearchParams(search);
    const from = treeSizeParameter(params, 'from');
    if (from === undefined) throw new PavilionError(ErrorCodes.AUDIT_RANGE_INVALID, 'the query parameter from=<tree size> is required', { details: { parameter: 'from' } });
    const to = treeSizeParameter(params, 'to');
    // only the syntax is checked here; the range (>= 1, from <= to <= the log's size) is the log's
    const proof = log.consistencyProofBetween(tenant, from, to);
    this.#json(res, 200, { result: proof }, query.pretty);
  }

  #onlyGet(req: IncomingMessage): void {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      throw new PavilionError(ErrorCodes.METHOD_NOT_ALLOWED, `${req.method ?? ''} is not allowed here; use GET`);
    }
  }

  #json(res: ServerResponse, status: number, body: unknown, pretty: boolean): void {
    if (res.headersSent) {
      res.end();
      return;
    }
    const text = pretty ? JSON.stringify(body, null, 2) : JSON.stringify(body);
    res.writeHead(status, { 'content-type': JSON_TYPE, 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  /**
   * The components' status for /health and /health/ready. With API tokens, their states
   * only: these endpoints answer without a token (probes), and a component's message or
   * details may name any tenant and its errors (a tenant's own are in /v1/status with its token).
   */
  #componentStatuses(): Record<string, ComponentStatus> {
    const components: Record<string, ComponentStatus> = {};
    const redact = this.#deps.authorizer !== undefined;
    for (const component of this.#deps.components()) {
      const status = component.status();
      components[component.name] = redact ? stateOnly(status) : status;
    }
    return components;
  }

  /** /health/ready (the Helm chart's readiness probe): ready only when no component is ERROR or NOT_READY. */
  #ready(res: ServerResponse, query: Query): void {
    const components = this.#componentStatuses();
    const failing = Object.entries(components).filter(([, s]) => s.state === 'ERROR' || s.state === 'NOT_READY');
    if (failing.length === 0) {
      this.#json(res, 200, query.verbose ? { components } : {}, query.pretty);
      return;
    }
    const error = failing.map(([name, s]) => `${name}: ${s.message ?? s.state}`).join('; ');
    this.#json(res, 500, { error, components }, query.pretty);
  }

  /**
   * /health as OPA means it: the server can evaluate (here: an evaluation worker is ready).
   * `?bundles` (or OPA's older `?bundle`) adds every tenant having an active policy; `?plugins`
   * adds every component being OK or WARN, except those named by `exclude-plugin`.
   */
  #health(res: ServerResponse, query: Query): void {
    const components = this.#componentStatuses();
    const { params } = query;
    const error = this.#evaluationProblem()
      ?? (boolParam(params, 'bundles') || boolParam(params, 'bundle') ? this.#bundlesProblem() : undefined)
      ?? (boolParam(params, 'plugins') ? pluginsProblem(components, params) : undefined);
    if (error === undefined) this.#json(res, 200, query.verbose ? { components } : {}, query.pretty);
    else this.#json(res, 500, { error, components }, query.pretty);
  }

  #evaluationProblem(): string | undefined {
    const engine = this.#deps.engine.status();
    if (engine.state === 'OK' || engine.state === 'WARN') return undefined;
    return `unable to perform evaluation: ${engine.message ?? engine.state}`;
  }

  #bundlesProblem(): string | undefined {
    const tenants = this.#deps.tenants.list();
    // OPA with no bundle configured is ready; a sidecar with no tenant has nothing to serve
    if (tenants.length === 0) return 'one or more bundles are not activated: no tenants configured or found';
    const inactive = tenants.filter((t) => t.active === undefined);
    if (inactive.length === 0) return undefined;
    // with API tokens, no tenant is named to a caller without its token (see #componentStatuses)
    if (this.#deps.authorizer !== undefined) return `one or more bundles are not activated: ${inactive.length} of ${tenants.length} tenants`;
    const named = inactive.map((t) => (t.lastError === undefined ? t.id : `${t.id} (${t.lastError.code})`));
    return `one or more bundles are not activated: ${named.join(', ')}`;
  }

  /** The tenants' status for `GET /v1/tenants`: with API tokens, only those the request's token (or no token) may see. */
  #visibleTenants(req: IncomingMessage): unknown[] {
    const all = this.#deps.tenants.list();
    const visible = this.#visibleTo(req);
    return visible === undefined ? all : all.filter((t) => visible(t.id));
  }

  /** With API tokens, which tenants the request's token (or no token) may see (`/v1/tenants`, `/v1/status`); undefined: all. */
  #visibleTo(req: IncomingMessage): ((tenant: string) => boolean) | undefined {
    const authorizer = this.#deps.authorizer;
    if (authorizer === undefined) return undefined;
    const authorization = headerText(req, 'authorization');
    return (tenant) => authorizer.permits(tenant, authorization);
  }

  #resolveTenant(req: IncomingMessage, fromPath: string | undefined): string {
    const header = req.headers[this.#deps.config.http.tenantHeader];
    const fromHeader = Array.isArray(header) ? header.join(',') : header;
    if (fromPath !== undefined && fromHeader !== undefined && fromHeader !== fromPath) {
      throw new PavilionError(
        ErrorCodes.REQUEST_INVALID,
        `tenant in the path (${fromPath}) and in ${this.#deps.config.http.tenantHeader} (${fromHeader}) differ`,
      );
    }
    const tenant = fromPath ?? fromHeader;
    const authorizer = this.#deps.authorizer;
    if (tenant === undefined || tenant === '') {
      throw new PavilionError(
        ErrorCodes.TENANT_REQUIRED,
        `no tenant: send the ${this.#deps.config.http.tenantHeader} header or use /v1/tenants/{tenant}/data/{path}`,
      );
    }
    // every tenant route comes through here: none is served without the tenant's token, and
    // when every tenant needs one, an unknown tenant gets the same 401 (ids cannot be probed)
    if (authorizer?.required === true) authorizer.authorize(tenant, headerText(req, 'authorization'));
    if (!TENANT_ID_PATTERN.test(tenant) || !this.#deps.tenants.has(tenant)) {
      // once any tenant has tokens, an unknown tenant gets their refusal, not a 404: a caller
      // without a token cannot tell which ids exist behind tokens
      if (authorizer !== undefined) throw tokenRefusal(tenant);
      throw new PavilionError(ErrorCodes.TENANT_UNKNOWN, `unknown tenant ${JSON.stringify(tenant.slice(0, 64))}`);
    }
    if (authorizer?.required === false) authorizer.authorize(tenant, headerText(req, 'authorization'));
    return tenant;
  }

  /**
   * The request body as text ('' when empty): gunzipped when so encoded, with
   * http.maxBodyBytes applied to the bytes received and, for gzip, to the bytes they inflate to
   * (a gzip bomb is cut off at the limit). Any Content-Type but YAML is read as JSON, as OPA does.
   */
  async #bodyText(req: IncomingMessage): Promise<string> {
    const type = headerText(req, 'content-type');
    if (type !== undefined && type.toLowerCase().includes('yaml')) {
      // OPA parses these as YAML; a JSON parse would give the wrong error or, worse, the wrong input
      throw new PavilionError(ErrorCodes.REQUEST_UNSUPPORTED_MEDIA_TYPE, `content-type ${type} is not supported: YAML bodies are not supported here; send JSON`);
    }
    const gzip = gzipEncoded(req);
    const limit = this.#deps.config.http.maxBodyBytes;
    const declared = Number(req.headers['content-length'] ?? '0');
    if (declared > limit) {
      req.resume();
      throw new PavilionError(ErrorCodes.REQUEST_TOO_LARGE, `request body is ${declared} bytes; the limit is ${limit}`, {
        details: { maxBodyBytes: limit },
      });
    }
    // not destroyed when reading stops early, so the refusal can still be answered
    const received = limited(req.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>, limit, 'request body');
    try {
      const body = await collect(gzip ? limited(gunzipped(received), limit, 'decompressed request body') : received);
      return body.toString('utf8');
    } catch (error) {
      req.resume(); // discard the rest
      if (isZlibError(error)) {
        throw new PavilionError(ErrorCodes.REQUEST_GZIP_INVALID, `request body is not valid gzip: ${(error as Error).message}`, { cause: error });
      }
      throw error;
    }
  }

  /** The credentials a request carries (body and header), bounded in depth as its input is. */
  #carried(req: IncomingMessage, body: Record<string, unknown> | undefined): RequestCredentials {
    return requestCredentials(req, body, this.#deps.config.http.maxInputDepth);
  }

  /** v1's input: GET/HEAD from the last `?input=<json>` (as OPA), POST from the body's `input` key. */
  async #readInput(req: IncomingMessage, query: Query): Promise<RequestInput> {
    if (req.method === 'GET' || req.method === 'HEAD') return this.#queryInput(req, query);
    if (req.method !== 'POST') {
      throw new PavilionError(ErrorCodes.METHOD_NOT_ALLOWED, `${req.method ?? ''} is not allowed on the data API; use POST or GET`);
    }
    const text = await this.#bodyText(req);
    if (text === '') return { input: undefined, hasInput: false, carried: this.#carried(req, undefined) };
    const parsed = parseJsonDocument(text, 'request body');
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new PavilionError(ErrorCodes.REQUEST_INVALID, 'request body must be a JSON object like {"input": ...}');
    }
    // {"input": null} is no input, as in OPA (its *any field stays nil): undefined, and the usage warning
    const input = (parsed as { input?: unknown }).input ?? undefined;
    // Bound the depth here, before anything (evaluation, logging, metrics) walks the input.
    assertDepth(input, this.#deps.config.http.maxInputDepth);
    return { input, hasInput: input !== undefined, carried: this.#carried(req, parsed as Record<string, unknown>) };
  }

  #queryInput(req: IncomingMessage, query: Query): RequestInput {
    const carried = this.#carried(req, undefined);
    const texts = query.params.getAll('input');
    const text = texts[texts.length - 1];
    if (text === undefined) return { input: undefined, hasInput: false, carried };
    // `?input=null` is a null input here, as in OPA's v1DataGet (only the POST body's null means none)
    const input = parseJsonDocument(text, 'the input parameter');
    assertDepth(input, this.#deps.config.http.maxInputDepth);
    return { input, hasInput: true, carried };
  }

  /** v0's input: the whole body; an empty body is a null input, as in OPA's readInputV0. */
  async #readWholeInput(req: IncomingMessage): Promise<RequestInput> {
    const text = await this.#bodyText(req);
    const input = text === '' ? null : parseJsonDocument(text, 'request body');
    assertDepth(input, this.#deps.config.http.maxInputDepth);
    return { input, hasInput: true, carried: this.#carried(req, undefined) };
  }

  async #data(
    req: IncomingMessage,
    res: ServerResponse,
    tenantFromPath: string | undefined,
    rawPath: string,
    query: Query,
    started: bigint,
  ): Promise<void> {
    const tenant = this.#resolveTenant(req, tenantFromPath);
    const path = decodeSegments(rawPath).join('/');
    refuseUnsupportedParameters(query.params);
    const wantsReceipt = query.receipt || headerText(req, RECEIPT_HEADER) === '1';
    if (wantsReceipt) this.#auditLog();
    const read = await this.#readInput(req, query);
    const { decisionId, decision, receipt } = await this.#decide(req, tenant, path, read, started);
    const handlerNs = Number(process.hrtime.bigint() - started);

    const body: Record<string, unknown> = { decision_id: decisionId };
    if (decision.result !== undefined) body['result'] = decision.result;
    if (query.metrics) body['metrics'] = responseMetrics(decision, handlerNs);
    if (query.provenance) {
      body['provenance'] = { version: this.#deps.config.labels.version, bundles: { [tenant]: { revision: decision.revision } } };
    }
    if (wantsReceipt) body['receipt'] = typeof receipt === 'object' ? transportReceipt(tenant, receipt) : null;
    if (!read.hasInput && req.method === 'POST') {
      body['warning'] = { code: 'api_usage_warning', message: "'input' key missing from the request" };
    }
    res.setHeader('x-pavilion-bundle-revision', decision.revision);
    this.#json(res, 200, body, query.pretty);
  }

  /**
   * OPA's v0 Data API: POST only, the whole body is the input and the answer is the bare value;
   * an undefined decision is 404 undefined_document. OPA reads only `?pretty` here, so the v1
   * parameters (metrics, explain, receipt, ...) are ignored, as OPA ignores them.
   */
  async #dataV0(
    req: IncomingMessage,
    res: ServerResponse,
    tenantFromPath: string | undefined,
    /** undefined: `POST /`, the tenant's default decision */
    rawPath: string | undefined,
    query: Query,
    started: bigint,
  ): Promise<void> {
    if (req.method !== 'POST') throw new PavilionError(ErrorCodes.METHOD_NOT_ALLOWED, `${req.method ?? ''} is not allowed on the v0 data API; use POST`);
    const tenant = this.#resolveTenant(req, tenantFromPath);
    const path = rawPath === undefined ? this.#deps.tenants.defaultDecision(tenant) : decodeSegments(rawPath).join('/');
    const read = await this.#readWholeInput(req);
    const { decision } = await this.#decide(req, tenant, path, read, started).catch((error: unknown) => {
      // OPA's v0 answers a path no rule defines as an undefined document too ("document missing")
      if (isPavilionError(error, ErrorCodes.ENTRYPOINT_UNKNOWN)) throw new PavilionError(ErrorCodes.DOCUMENT_UNDEFINED, `document missing: ${dataRef(path)}`, { cause: error });
      throw error;
    });
    res.setHeader('x-pavilion-bundle-revision', decision.revision);
    if (decision.result === undefined) {
      // logged above as an undefined decision (as v1 logs it); OPA's message for rules that exist but did not apply
      throw new PavilionError(ErrorCodes.DOCUMENT_UNDEFINED, `document undefined: ${dataRef(path)}`);
    }
    this.#json(res, 200, decision.result, query.pretty);
  }

  /**
   * One decision, for either API version: verified credentials into the input, evaluation, the
   * decision log (awaited with a durable sink: a refusal becomes the answer) and the metrics.
   */
  async #decide(req: IncomingMessage, tenant: string, path: string, read: RequestInput, started: bigint): Promise<DecidedRequest> {
    // verified facts replace whatever the client put in input.credentials (see CredentialGate)
    const input = this.#deps.credentials === undefined
      ? withoutReservedCredentialKeys(read.input)
      : await this.#deps.credentials.prepareInput(tenant, read.input, read.carried.credentials, read.carried);
    const decisionId = randomUUID();
    const timestamp = new Date().toISOString();
    const { metrics, events } = this.#deps;
    const requestedBy = `${req.socket.remoteAddress ?? ''}:${req.socket.remotePort ?? ''}`;
    const reqId = events.nextRequestId();
    const logPaths = this.#deps.decisionLogRules?.(tenant);
    // the decision log's rules in the decision's own worker turn, on the event it will have
    const log: DecisionLogRules | undefined = logPaths === undefined ? undefined : {
      paths: logPaths,
      startedNs: started,
      event: (revision) => events.known({ decisionId, tenant, path, revision, requestedBy, timestamp, reqId }),
    };
    let decision: Decision;
    try {
      decision = await this.#deps.engine.evaluate(tenant, path, input, log === undefined ? {} : { log });
    } catch (error) {
      const code = error instanceof PavilionError ? error.code : ErrorCodes.INTERNAL;
      metrics.decisions.inc({ tenant, path: this.#knownPath(tenant, path), outcome: code });
      if (code !== ErrorCodes.ENTRYPOINT_UNKNOWN) {
        void this.#log(started, {
          decisionId, tenant, path, timestamp, input, evalNs: 0, requestedBy, reqId,
          revision: this.#deps.engine.active(tenant)?.revision,
          error: { code, message: (error as Error).message },
        });
      }
      throw error;
    }
    if (!decision.cached) metrics.evaluationSeconds.observe({ tenant }, decision.evalNs / 1e9);
    const written = this.#log(started, {
      decisionId, tenant, path, timestamp, input, result: decision.result, evalNs: decision.evalNs, revision: decision.revision, requestedBy, reqId,
      ...(decision.log === undefined ? {} : { handlerNs: decision.log.handlerNs }),
    }, decision.log?.rules);
    // a durable sink: answer only once the event is logged; a refusal becomes the error answer
    let receipt: Awaited<typeof written> | undefined;
    if (this.#deps.sink.durable === true) {
      try {
        receipt = await written;
      } catch (error) {
        metrics.decisions.inc({ tenant, path, outcome: error instanceof PavilionError ? error.code : ErrorCodes.INTERNAL });
        throw error;
      }
    }
    metrics.decisions.inc({ tenant, path, outcome: outcomeOf(decision.result) });
    return { decisionId, decision, receipt };
  }

  #knownPath(tenant: string, path: string): string {
    return this.#deps.engine.active(tenant)?.entrypoints.includes(path) === true ? path : '(unknown)';
  }

  /** The decision's event to the sink; its handler time up to now unless the engine's log rules timed it (see Decision.log). */
  #log(started: bigint, record: Omit<DecisionRecord, 'handlerNs'> & { readonly handlerNs?: number }, rules?: EvaluatedLogRules): ReturnType<DecisionSink['write']> {
    return this.#deps.sink.write(this.#deps.events.create({ ...record, handlerNs: record.handlerNs ?? Number(process.hrtime.bigint() - started) }), rules);
  }

}
