/**
 * Bearer tokens per tenant: OPA's `--authentication=token`, with each token bound to one
 * tenant. A tenant with an `apiTokensFile` answers its API routes (the Data API, its status,
 * proofs, checkpoints, credential challenges) only to requests carrying
 * `Authorization: Bearer <one of its tokens>`; with `http.authentication: 'token'` a tenant
 * without tokens (one the bundle source announced) answers none. The tenant header or path
 * alone reaches nothing then, and another tenant's token is no better than none.
 *
 * A file holds one token a line (blank lines and `#` comments ignored); a token shorter than
 * MIN_TOKEN_CHARS refuses the whole file, so a stray short line never becomes a password.
 * Only the tokens' SHA-256 digests are kept, and a request's token is looked up as its
 * digest: how long a lookup takes says nothing about a token. The files are read again every
 * REREAD_INTERVAL_MS (a Secret rotated in place): the new set replaces the old one at once,
 * so a removed token stops working within that time. A file that cannot be read, or holds a
 * bad line, leaves its tenant with no token at all (every request refused: fail closed) and
 * the component WARN naming it; the other tenants are not affected.
 */
import { readFile } from 'node:fs/promises';
import type { TenantConfig } from '../config/index.ts';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import type { Component, ComponentStatus } from '../lib/lifecycle.ts';
import { sha256Hex } from '../lib/sha256.ts';

/** Shortest token accepted in a file: 128 bits of base64url or hex, at the least. */
export const MIN_TOKEN_CHARS = 22;
/** How often the token files are read again. */
const REREAD_INTERVAL_MS = 5_000;

/** What the API asks before it serves a tenant route (the adapter the API server sees). */
export interface TenantAuthorizer {
  /**
   * Whether every tenant needs a token (`http.authentication: 'token'`): then a request naming
   * an unknown tenant is refused as unauthorized too, so tenant ids cannot be probed.
   */
  readonly required: boolean;
  /** Whether `authorization` carries one of `tenant`'s tokens (or the tenant needs none). */
  permits(tenant: string, authorization: string | undefined): boolean;
  /** Throws ERR_API_UNAUTHORIZED unless it `permits`. */
  authorize(tenant: string, authorization: string | undefined): void;
}

export interface TenantTokensOptions {
  readonly tenants: readonly TenantConfig[];
  /** 'token': a tenant without a tokens file cannot be reached. */
  readonly mode: 'off' | 'token';
  /**
   * Told when a tenant's file becomes unusable and when it is usable again: health shows
   * only this component's state (its message would name tenants to callers without a token).
   */
  readonly log?: (level: 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>) => void;
}

/** The digests of the tokens in a file's text; throws on a line that is not a usable token. */
export function parseTokenFile(text: string): ReadonlySet<string> {
  const digests = new Set<string>();
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.length < MIN_TOKEN_CHARS || /\s/.test(line)) {
      throw new PavilionError(ErrorCodes.CONFIG_INVALID, `line ${i + 1}: a token must be at least ${MIN_TOKEN_CHARS} characters without spaces`);
    }
    digests.add(sha256Hex(line));
  }
  if (digests.size === 0) throw new PavilionError(ErrorCodes.CONFIG_INVALID, 'no token in the file');
  return digests;
}

/** One answer for every refusal (no token, a wrong one, another tenant's, a tenant without tokens or unknown): it tells nothing about the configuration. */
export function tokenRefusal(tenant: string): PavilionError {
  return new PavilionError(ErrorCodes.API_UNAUTHORIZED, `a bearer token of tenant ${JSON.stringify(tenant.slice(0, 64))} is required (Authorization: Bearer ...)`);
}

export class TenantTokens implements Component, TenantAuthorizer {
  readonly name = 'api_tokens';
  readonly #options: TenantTokensOptions;
  /** Configured file per tenant. */
  readonly #files: ReadonlyMap<string, string>;
  /** Token digests per tenant with a file: empty while its file cannot be used. */
  readonly #digests = new Map<string, ReadonlySet<string>>();
  /** Why a tenant's file cannot be used, by tenant. */
  readonly #problems = new Map<string, string>();
  #timer: NodeJS.Timeout | undefined;
  #reading: Promise<void> | undefined;

  get required(): boolean {
    return this.#options.mode === 'token';
  }

  constructor(options: TenantTokensOptions) {
    this.#options = options;
    this.#files = new Map(options.tenants.flatMap((t) => (t.apiTokensFile === undefined ? [] : [[t.id, t.apiTokensFile] as const])));
  }

  async start(): Promise<void> {
    await this.#readAll();
    if (this.#files.size === 0) return;
    this.#timer = setInterval(() => void this.#readAll(), REREAD_INTERVAL_MS);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#reading;
  }

  permits(tenant: string, authorization: string | undefined): boolean {
    const digests = this.#digests.get(tenant);
    if (digests === undefined) return this.#options.mode === 'off';
    const token = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '')?.[1];
    return token !== undefined && digests.has(sha256Hex(token));
  }

  authorize(tenant: string, authorization: string | undefined): void {
    if (!this.permits(tenant, authorization)) throw tokenRefusal(tenant);
  }

  status(): ComponentStatus {
    const details = { mode: this.#options.mode, tenants_with_tokens: [...this.#files.keys()] };
    if (this.#problems.size === 0) return { state: 'OK', details };
    const named = [...this.#problems].map(([tenant, why]) => `${tenant}: ${why}`);
    return {
      state: 'WARN',
      message: `API token files that cannot be used (their tenants refuse every request until fixed): ${named.join('; ')}`,
      details: { ...details, problems: Object.fromEntries(this.#problems) },
    };
  }

  /** Read every file (one pass at a time), replacing each tenant's tokens with what its file holds now. */
  #readAll(): Promise<void> {
    this.#reading ??= Promise.all([...this.#files].map(([tenant, file]) => this.#read(tenant, file))).then(() => {
      this.#reading = undefined;
    });
    return this.#reading;
  }

  async #read(tenant: string, file: string): Promise<void> {
    const before = this.#problems.get(tenant);
    try {
      this.#digests.set(tenant, parseTokenFile(await readFile(file, 'utf8')));
      this.#problems.delete(tenant);
      if (before !== undefined) this.#options.log?.('info', 'API tokens file usable again', { tenant, file });
    } catch (error) {
      this.#digests.set(tenant, new Set()); // fail closed
      const problem = `${file}: ${describeThrown(error)}`;
      this.#problems.set(tenant, problem);
      if (problem !== before) this.#options.log?.('warn', 'API tokens file cannot be used; the tenant refuses every request until it is fixed', { tenant, file, error: describeThrown(error) });
    }
  }
}
