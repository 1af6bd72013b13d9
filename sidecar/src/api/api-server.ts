/**
 * OPA-compatible REST API on node:http.
 *
 *   POST|GET /v1/data/{path}                  tenant from the configured header
 *   POST|GET /v1/tenants/{tenant}/data/{path} tenant from the path
 *   GET /health (/health/live, /health/ready) GET /metrics  GET /v1/tenants
 *   POST /v1/tenants/{tenant}/credentials/challenge   a one-time challenge for a credential holder
 *   GET /v1/tenants/{tenant}/audit/decisions/{decision_id}/proof  inclusion proof (audit log sink)
 *   GET /v1/tenants/{tenant}/audit/checkpoint        the tenant's latest signed checkpoint
 *   GET /v1/tenants/{tenant}/audit/consistency?from=N[&to=M]  consistency proof between two checkpoints
 *
 * node:http rather than Express on this path: measured on the target machine, Express cost
 * about 4-5x in throughput on a small JSON POST (see README, "Why node:http").
 *
 * Isolation: a request resolves exactly one tenant (never a default), and evaluation only
 * sees that tenant's compiled policy and data; a path that is not one of its entrypoints is
 * refused. When both the header and the path name a tenant they must agree. Proofs and
 * checkpoints come only from the resolved tenant's own log.
 *
 * With a durable sink (the audit log) a decision is answered only once its event is durable;
 * a refusal (ERR_AUDIT_LOG_FULL, ...) is answered as an error instead of the decision. Other
 * sinks are written without waiting.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { RECEIPT_HEADER, transportReceipt } from '../audit/index.ts';
import type { AuditLogSink, DecisionEvents, DecisionRecord, DecisionSink, TransportReceiptV1 } from '../audit/index.ts';
import type { PavilionConfig } from '../config/index.ts';
import { TENANT_ID_PATTERN } from '../config/index.ts';
import type { PolicyEngine } from '../engine/index.ts';
import { assertDepth } from '../lib/canonical-json.ts';
import { ErrorCodes, PavilionError } from '../lib/errors.ts';
import type { Component, ComponentStatus } from '../lib/lifecycle.ts';
import { withDeadline } from '../lib/lifecycle.ts';
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

export interface ApiServerDeps {
  readonly config: PavilionConfig;
  readonly engine: PolicyEngine;
  readonly tenants: TenantManager;
  readonly sink: DecisionSink;
  /** The verifiable audit log, when it is the sink: proofs, checkpoints and receipts. */
  readonly auditLog?: Pick<AuditLogSink, 'proveInclusion' | 'latestCheckpoint' | 'consistencyProofBetween'>;
  readonly events: DecisionEvents;
  readonly metrics: Metrics;
  /** Verifies the credentials a request carries into `input.credentials` (absent: not configured). */
  readonly credentials?: CredentialGate;
  /** Components whose status makes up /health. */
  readonly components: () => readonly Component[];
  /** This sidecar's report in OPA's Status API shape (`GET /v1/status`). */
  readonly statusReport: () => unknown;
  /** A handler served under its own path prefix (Envoy ext_authz's HTTP service mode). */
  readonly mounted?: {
    readonly pathPrefix: string;
    handle(req: IncomingMessage, res: ServerResponse): Promise<void>;
  };
}

interface Query {
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

function headerText(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value.join(',') : value;
}

/** Credentials from the body's `credentials`, `credential_challenge` and `credential_witnesses` fields and the headers. */
function requestCredentials(req: IncomingMessage, body: Record<string, unknown> | undefined): RequestCredentials {
  const credentials: unknown[] = [];
  const fromBody = body?.['credentials'];
  if (fromBody !== undefined) {
    if (!Array.isArray(fromBody)) throw new PavilionError(ErrorCodes.REQUEST_INVALID, '"credentials" must be an array of credentials and presentations');
    credentials.push(...fromBody);
  }
  credentials.push(...credentialsFromHeader(headerText(req, CREDENTIALS_HEADER)));
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

function parseQuery(search: string): Query {
  const flags = new Set<string>();
  if (search !== '') {
    for (const part of search.split('&')) {
      const [key, value] = part.split('=');
      if (key !== undefined && key !== '' && value !== 'false') flags.add(key);
    }
  }
  return {
    metrics: flags.has('metrics'),
    provenance: flags.has('provenance'),
    pretty: flags.has('pretty'),
    verbose: flags.has('verbose'),
    receipt: flags.has('receipt'),
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

export class ApiServer implements Component {
  readonly name = 'http';
  readonly #deps: ApiServerDeps;
  readonly #server: Server;
  #listening = false;

  constructor(deps: ApiServerDeps) {
    this.#deps = deps;
    this.#server = createServer((req, res) => {
      this.#handle(req, res).catch((error: unknown) => {
        // #handle answers every error itself; reaching here is a bug. Never crash the
        // process over one request, and never leave it hanging.
        process.stderr.write(`${JSON.stringify({ level: 'error', msg: 'request handler failed', error: String(error) })}\n`);
        if (!res.headersSent) res.writeHead(500, { 'content-type': JSON_TYPE });
        res.end();
      });
    });
    this.#server.requestTimeout = deps.config.http.requestTimeoutMs;
    this.#server.headersTimeout = Math.min(deps.config.http.requestTimeoutMs, 60_000);
    this.#server.keepAliveTimeout = deps.config.http.keepAliveTimeoutMs;
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
    return this.#listening ? { state: 'OK' } : { state: 'NOT_READY', message: 'not listening' };
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
      if (mounted !== undefined && (pathname === mounted.pathPrefix || pathname.startsWith(`${mounted.pathPrefix}/`))) {
        route = 'ext_authz';
        await mounted.handle(req, res);
      } else if (pathname.startsWith('/v1/data') && (pathname.length === 8 || pathname[8] === '/')) {
        route = 'data';
        await this.#data(req, res, undefined, pathname.slice(8), query, started);
      } else if (pathname.startsWith('/v1/tenants/')) {
        const rest = pathname.slice('/v1/tenants/'.length);
        const slash = rest.indexOf('/');
        const tenant = decodeSegments(slash === -1 ? rest : rest.slice(0, slash))[0] ?? '';
        const after = slash === -1 ? '' : rest.slice(slash);
        if (after.startsWith('/data') && (after.length === 5 || after[5] === '/')) {
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
          const status = this.#deps.tenants.tenant(tenant);
          if (status === undefined) throw new PavilionError(ErrorCodes.TENANT_UNKNOWN, `unknown tenant ${tenant}`);
          this.#json(res, 200, { result: status }, query.pretty);
        } else {
          throw new PavilionError(ErrorCodes.ROUTE_NOT_FOUND, `no route for ${pathname}`);
        }
      } else if (pathname === '/v1/status') {
        route = 'status';
        this.#onlyGet(req);
        this.#json(res, 200, { result: this.#deps.statusReport() }, query.pretty);
      } else if (pathname === '/v1/tenants') {
        route = 'tenants';
        this.#onlyGet(req);
        this.#json(res, 200, { result: this.#deps.tenants.list() }, query.pretty);
      } else if (pathname === '/health' || pathname === '/health/ready') {
        route = 'health';
        this.#onlyGet(req);
        this.#health(res, query);
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

  #health(res: ServerResponse, query: Query): void {
    const components: Record<string, ComponentStatus> = {};
    for (const component of this.#deps.components()) components[component.name] = component.status();
    const failing = Object.entries(components).filter(([, s]) => s.state === 'ERROR' || s.state === 'NOT_READY');
    if (failing.length === 0) {
      this.#json(res, 200, query.verbose ? { components } : {}, query.pretty);
      return;
    }
    const error = failing.map(([name, s]) => `${name}: ${s.message ?? s.state}`).join('; ');
    this.#json(res, 500, { error, components }, query.pretty);
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
    if (tenant === undefined || tenant === '') {
      throw new PavilionError(
        ErrorCodes.TENANT_REQUIRED,
        `no tenant: send the ${this.#deps.config.http.tenantHeader} header or use /v1/tenants/{tenant}/data/{path}`,
      );
    }
    if (!TENANT_ID_PATTERN.test(tenant) || !this.#deps.tenants.has(tenant)) {
      throw new PavilionError(ErrorCodes.TENANT_UNKNOWN, `unknown tenant ${JSON.stringify(tenant.slice(0, 64))}`);
    }
    return tenant;
  }

  async #readBody(req: IncomingMessage): Promise<Buffer> {
    const limit = this.#deps.config.http.maxBodyBytes;
    const declared = Number(req.headers['content-length'] ?? '0');
    if (declared > limit) {
      req.resume();
      throw new PavilionError(ErrorCodes.REQUEST_TOO_LARGE, `request body is ${declared} bytes; the limit is ${limit}`, {
        details: { maxBodyBytes: limit },
      });
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > limit) {
        req.resume();
        throw new PavilionError(ErrorCodes.REQUEST_TOO_LARGE, `request body exceeds the limit of ${limit} bytes`, {
          details: { maxBodyBytes: limit },
        });
      }
      chunks.push(chunk);
    }
    return chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size);
  }

  async #readInput(req: IncomingMessage): Promise<{ input: unknown; hasInput: boolean; carried: RequestCredentials }> {
    if (req.method === 'GET' || req.method === 'HEAD') return { input: undefined, hasInput: false, carried: requestCredentials(req, undefined) };
    if (req.method !== 'POST') {
      throw new PavilionError(ErrorCodes.METHOD_NOT_ALLOWED, `${req.method ?? ''} is not allowed on the data API; use POST or GET`);
    }
    const type = req.headers['content-type'];
    if (type !== undefined && type.split(';')[0]?.trim().toLowerCase() !== JSON_TYPE) {
      throw new PavilionError(ErrorCodes.REQUEST_UNSUPPORTED_MEDIA_TYPE, `content-type ${type} is not supported; send ${JSON_TYPE}`);
    }
    if (req.headers['content-encoding'] !== undefined && req.headers['content-encoding'] !== 'identity') {
      throw new PavilionError(ErrorCodes.REQUEST_UNSUPPORTED_MEDIA_TYPE, `content-encoding ${req.headers['content-encoding']} is not supported`);
    }
    const body = await this.#readBody(req);
    if (body.length === 0) return { input: undefined, hasInput: false, carried: requestCredentials(req, undefined) };
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch (error) {
      throw new PavilionError(ErrorCodes.REQUEST_MALFORMED_JSON, `request body is not valid JSON: ${(error as Error).message}`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new PavilionError(ErrorCodes.REQUEST_INVALID, 'request body must be a JSON object like {"input": ...}');
    }
    const hasInput = Object.hasOwn(parsed, 'input');
    const input = (parsed as { input?: unknown }).input;
    // Bound the depth here, before anything (evaluation, logging, metrics) walks the input.
    assertDepth(input, this.#deps.config.http.maxInputDepth);
    return { input, hasInput, carried: requestCredentials(req, parsed as Record<string, unknown>) };
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
    const wantsReceipt = query.receipt || headerText(req, RECEIPT_HEADER) === '1';
    if (wantsReceipt) this.#auditLog();
    const read = await this.#readInput(req);
    const { hasInput } = read;
    // verified facts replace whatever the client put in input.credentials (see CredentialGate)
    const input = this.#deps.credentials === undefined
      ? withoutReservedCredentialKeys(read.input)
      : await this.#deps.credentials.prepareInput(tenant, read.input, read.carried.credentials, read.carried);
    const decisionId = randomUUID();
    const timestamp = new Date().toISOString();
    const { metrics } = this.#deps;
    let decision;
    try {
      decision = await this.#deps.engine.evaluate(tenant, path, input);
    } catch (error) {
      const code = error instanceof PavilionError ? error.code : ErrorCodes.INTERNAL;
      metrics.decisions.inc({ tenant, path: this.#knownPath(tenant, path), outcome: code });
      if (code !== ErrorCodes.ENTRYPOINT_UNKNOWN) {
        void this.#log(req, started, {
          decisionId, tenant, path, timestamp, input, evalNs: 0,
          revision: this.#deps.engine.active(tenant)?.revision,
          error: { code, message: (error as Error).message },
        });
      }
      throw error;
    }
    const handlerNs = Number(process.hrtime.bigint() - started);
    if (!decision.cached) metrics.evaluationSeconds.observe({ tenant }, decision.evalNs / 1e9);
    const written = this.#log(req, started, {
      decisionId, tenant, path, timestamp, input, result: decision.result, evalNs: decision.evalNs, revision: decision.revision,
    });
    // a durable sink: answer only once the event is logged; a refusal becomes the error answer
    let receipt: Awaited<typeof written>;
    if (this.#deps.sink.durable === true) {
      try {
        receipt = await written;
      } catch (error) {
        metrics.decisions.inc({ tenant, path, outcome: error instanceof PavilionError ? error.code : ErrorCodes.INTERNAL });
        throw error;
      }
    }
    metrics.decisions.inc({ tenant, path, outcome: outcomeOf(decision.result) });

    const body: Record<string, unknown> = { decision_id: decisionId };
    if (decision.result !== undefined) body['result'] = decision.result;
    if (query.metrics) body['metrics'] = { timer_rego_query_eval_ns: decision.evalNs, timer_server_handler_ns: handlerNs };
    if (query.provenance) {
      body['provenance'] = { version: this.#deps.config.labels.version, bundles: { [tenant]: { revision: decision.revision } } };
    }
    if (wantsReceipt) body['receipt'] = typeof receipt === 'object' ? transportReceipt(tenant, receipt) : null;
    if (!hasInput && req.method === 'POST') {
      body['warning'] = { code: 'api_usage_warning', message: "'input' key missing from the request" };
    }
    res.setHeader('x-pavilion-bundle-revision', decision.revision);
    this.#json(res, 200, body, query.pretty);
  }

  #knownPath(tenant: string, path: string): string {
    return this.#deps.engine.active(tenant)?.entrypoints.includes(path) === true ? path : '(unknown)';
  }

  #log(req: IncomingMessage, started: bigint, record: Omit<DecisionRecord, 'requestedBy' | 'handlerNs'>): ReturnType<DecisionSink['write']> {
    return this.#deps.sink.write(this.#deps.events.create({
      ...record,
      requestedBy: `${req.socket.remoteAddress ?? ''}:${req.socket.remotePort ?? ''}`,
      handlerNs: Number(process.hrtime.bigint() - started),
    }));
  }

}
