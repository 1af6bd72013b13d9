/**
 * Status lists fetched from their issuers over HTTPS: the online source beside the file one.
 * Bitstring Status List credentials are JSON; Status List Tokens (draft-ietf-oauth-status-list)
 * are compact JWTs served as `application/statuslist+jwt`.
 * Only the URLs a tenant's policy lists (`statusListUrls`, `tokenStatusListUrls`) are fetched, never one a credential
 * names on its own (a credential must not make the verifier call out to arbitrary hosts).
 * Redirects are refused, the body is capped at MAX_STATUS_LIST_BYTES, a fetch has a deadline,
 * and anything but a 200 with a JSON body is an error: the caller keeps the list it has (until
 * its maximum age) and a list never fetched fails status checks closed.
 */
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import { MAX_STATUS_LIST_BYTES, type StatusListSource } from './bitstring-status-list.ts';

export interface HttpStatusListSourceOptions {
  readonly urls: readonly string[];
  readonly timeoutMs: number;
  readonly maxBytes?: number;
  /** `json` (default): a status list credential, parsed; `jwt`: a Status List Token, as text. */
  readonly format?: 'json' | 'jwt';
}

const ACCEPT = {
  json: 'application/vc+ld+json, application/vc, application/json',
  jwt: 'application/statuslist+jwt, application/jwt',
} as const;

const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

function unavailable(url: string, message: string, cause?: unknown): PavilionError {
  return new PavilionError(ErrorCodes.CREDENTIAL_STATUS_UNAVAILABLE, `status list ${url.slice(0, 200)}: ${message}`, cause === undefined ? {} : { cause });
}

export class HttpStatusListSource implements StatusListSource {
  readonly #urls: ReadonlySet<string>;
  readonly #timeoutMs: number;
  readonly #maxBytes: number;
  readonly #format: 'json' | 'jwt';

  constructor(options: HttpStatusListSourceOptions) {
    this.#urls = new Set(options.urls);
    this.#timeoutMs = options.timeoutMs;
    this.#maxBytes = options.maxBytes ?? MAX_STATUS_LIST_BYTES;
    this.#format = options.format ?? 'json';
  }

  async fetch(url: string, signal: AbortSignal): Promise<unknown> {
    if (!this.#urls.has(url)) throw unavailable(url, 'is not a configured status list URL');
    let response: Response;
    try {
      response = await fetch(url, {
        redirect: 'error',
        signal: AbortSignal.any([signal, AbortSignal.timeout(this.#timeoutMs)]),
        headers: { accept: ACCEPT[this.#format] },
      });
    } catch (error) {
      throw unavailable(url, `cannot be fetched: ${describeThrown(error)}`, error);
    }
    if (response.status !== 200) {
      await response.body?.cancel();
      throw unavailable(url, `answered HTTP ${response.status}`);
    }
    const declared = Number(response.headers.get('content-length') ?? Number.NaN);
    if (declared > this.#maxBytes) {
      await response.body?.cancel();
      throw unavailable(url, `is ${declared} bytes; the limit is ${this.#maxBytes}`);
    }
    const chunks: Uint8Array[] = [];
    let size = 0;
    try {
      for await (const chunk of response.body ?? []) {
        size += chunk.byteLength;
        if (size > this.#maxBytes) throw unavailable(url, `is larger than the limit of ${this.#maxBytes} bytes`);
        chunks.push(chunk);
      }
    } catch (error) {
      await response.body?.cancel().catch(() => undefined);
      throw error instanceof PavilionError ? error : unavailable(url, `reading the answer failed: ${describeThrown(error)}`, error);
    }
    const text = Buffer.concat(chunks).toString('utf8').trim();
    if (this.#format === 'jwt') {
      // verified by the token cache (signature, typ, sub); here only its shape
      if (!COMPACT_JWS.test(text)) throw new PavilionError(ErrorCodes.CREDENTIAL_STATUS_INVALID, `status list ${url.slice(0, 200)} is not a compact JWT`);
      return text;
    }
    try {
      return JSON.parse(text);
    } catch (error) {
      throw new PavilionError(ErrorCodes.CREDENTIAL_STATUS_INVALID, `status list ${url.slice(0, 200)} is not JSON`, { cause: error });
    }
  }
}

/** One source per URL (files for some lists, HTTPS for others); an unknown URL is refused. */
export class RoutingStatusListSource implements StatusListSource {
  readonly #routes: ReadonlyMap<string, StatusListSource>;

  constructor(routes: ReadonlyMap<string, StatusListSource>) {
    this.#routes = routes;
  }

  fetch(url: string, signal: AbortSignal): Promise<unknown> {
    const source = this.#routes.get(url);
    if (source === undefined) return Promise.reject(unavailable(url, 'has no configured source'));
    return source.fetch(url, signal);
  }
}
