/**
 * The credentials component: owns the tenants' CredentialVerifier, loads their initial status
 * lists and accumulator states at start, refreshes status lists on a timer, and turns the
 * credentials a request carries into the policy input's `credentials` (verified facts) and
 * `credential_errors` (typed codes).
 *
 * For a tenant with a credential policy those two input keys always come from Pavilion: any
 * value the client put there is replaced, so a policy can trust `input.credentials` without
 * re-checking anything. For the other tenants the keys are removed (reserved), and the
 * transports remove them too when credentials are not configured at all. Raw credentials never enter the input (nor, therefore, the decision log);
 * only the verified facts, with undisclosed claims absent, do.
 *
 * The verifier (JSON-LD, the Data Integrity suites, BLS12-381) and the proof workers are
 * loaded when the gate starts with at least one tenant policy: a sidecar whose tenants use
 * no credentials does not carry them (about 30 MB of modules, plus the workers).
 */
import { SingleFlight } from '../lib/single-flight.ts';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import { withDeadline, type Component, type ComponentStatus } from '../lib/lifecycle.ts';
import { FileStatusListSource, type StatusListSource } from './bitstring-status-list.ts';
import { HttpStatusListSource, RoutingStatusListSource } from './http-status-list.ts';
import type { CredentialPolicy } from './credential-policy.ts';
import type { CredentialVerifier } from './credential-verifier.ts';
import type { ProofExecutor } from './proof-executor.ts';
import { isObject } from './json.ts';
import type { NonceStore } from './nonce-store.ts';
import type { RedisSharedState } from './redis-shared-state.ts';
import type { RedisConfig } from '../config/index.ts';
import type { CredentialErrorV1, VerifiedFactsV1 } from './verified-facts.ts';
import { embeddedCredentials, isPresentation } from './w3c-credential.ts';

/** What the gate reports per request (implemented by telemetry's Metrics). */
export interface CredentialObserver {
  /** One credential's result: its format when verified, or the refusal code. */
  onCredential(tenant: string, outcome: string): void;
  /** Time spent verifying one request's credentials. */
  onCredentialRequest(tenant: string, seconds: number): void;
}

export interface CredentialGateOptions {
  readonly policies: readonly CredentialPolicy[];
  /** How often status lists past their TTL are refreshed (default source: their configured files). */
  readonly refreshIntervalMs: number;
  /**
   * Most credentials accepted in one request, those inside presentations included (see
   * countCredentials: a presentation counts one, plus one per credential it embeds).
   */
  readonly maxCredentialsPerRequest: number;
  readonly statusListSource?: StatusListSource;
  readonly nonces?: NonceStore;
  /** Share one-time challenges and nonces with the other replicas through Redis (overrides `nonces`). */
  readonly redis?: RedisConfig;
  readonly clock?: () => number;
  readonly observer?: CredentialObserver;
  /** Worker threads for proof verification; 0 runs proofs on the event loop. */
  readonly proofWorkers: number;
  readonly proofJobTimeoutMs: number;
}

export interface CredentialBinding {
  /** The verifier challenge the holder bound its presentation to. */
  readonly challenge?: string;
  /** Accumulator witnesses the holder sent, by revocation handle (base64url). */
  readonly witnesses?: Readonly<Record<string, string>>;
}

/** A status list fetched over HTTPS must arrive within this. */
const STATUS_FETCH_TIMEOUT_MS = 10_000;

/** Compact credentials (VC-JWT, SD-JWT VC) in a header, comma-separated; JSON ones go in a body. */
export const CREDENTIALS_HEADER = 'x-pavilion-credentials';
export const CREDENTIAL_CHALLENGE_HEADER = 'x-pavilion-credential-challenge';
/** Accumulator witnesses in a header: `handle=witness` pairs, comma-separated (base64url both). */
export const CREDENTIAL_WITNESSES_HEADER = 'x-pavilion-credential-witnesses';

/** The witnesses in a `x-pavilion-credential-witnesses` header value (malformed pairs are skipped). */
export function witnessesFromHeader(value: string | undefined): Record<string, string> | undefined {
  if (value === undefined) return undefined;
  const out: Record<string, string> = {};
  for (const pair of value.split(',')) {
    const [handle, witness, extra] = pair.trim().split('=');
    if (handle !== undefined && handle !== '' && witness !== undefined && witness !== '' && extra === undefined) out[handle] = witness;
  }
  return out;
}

/** The credentials in a `x-pavilion-credentials` header value. */
export function credentialsFromHeader(value: string | undefined): string[] {
  return value === undefined ? [] : value.split(',').map((c) => c.trim()).filter((c) => c !== '');
}

/**
 * How many credentials a request carries toward `maxCredentialsPerRequest`, from the raw items
 * before anything is verified, and the index of the item that takes the count past `max` (none
 * when within it). A credential sent on its own counts one. A presentation counts one for itself
 * (its holder proof is verified, as a credential's proof is) plus one per credential it embeds:
 * the limit bounds the signed objects the verifier checks for one request, so neither one
 * presentation carrying many credentials nor many empty presentations gets past it. (A
 * presentation inside a presentation is refused unverified, and counts one.)
 */
export function countCredentials(credentials: readonly unknown[], max: number): { count: number; overAt?: number } {
  let count = 0;
  let overAt: number | undefined;
  for (const [index, item] of credentials.entries()) {
    count += isPresentation(item) ? 1 + embeddedCredentials(item).length : 1;
    if (count > max && overAt === undefined) overAt = index;
  }
  return overAt === undefined ? { count } : { count, overAt };
}

export const CREDENTIALS_INPUT_KEY = 'credentials';
export const CREDENTIAL_ERRORS_INPUT_KEY = 'credential_errors';

/**
 * `input` without the two keys only Pavilion may set. Applied wherever no credential policy
 * governs the tenant (including when credentials are not configured at all), so a policy that
 * reads `input.credentials` can never be fed a client's imitation of verified facts.
 */
export function withoutReservedCredentialKeys(input: unknown): unknown {
  if (!isObject(input) || !(CREDENTIALS_INPUT_KEY in input || CREDENTIAL_ERRORS_INPUT_KEY in input)) return input;
  const { [CREDENTIALS_INPUT_KEY]: _facts, [CREDENTIAL_ERRORS_INPUT_KEY]: _errors, ...rest } = input;
  return rest;
}

export class CredentialGate implements Component {
  readonly name = 'credentials';
  readonly #options: CredentialGateOptions;
  readonly #policies: ReadonlyMap<string, CredentialPolicy>;
  #verifier: CredentialVerifier | undefined;
  #timer: NodeJS.Timeout | undefined;
  #abort = new AbortController();
  #lastRefreshFailures = 0;
  #startError: string | undefined;
  #executor: ProofExecutor | undefined;
  /** Started without any tenant policy: nothing loaded, every tenant's keys are just reserved. */
  #idle = false;
  #shared: RedisSharedState | undefined;
  /** HTTPS status lists and Status List Tokens not fetched yet, by tenant, kind and URL. */
  readonly #unfetched = new Map<string, Unfetched>();
  /**
   * The last fetch error of each list in #unfetched (same keys), oldest first: a list fetched
   * since drops its error, so health names only lists still missing.
   */
  readonly #fetchErrors = new Map<string, string>();
  /** Accumulator states of the tenants' files refused at start, by tenant and index (reported until a restart). */
  readonly #accumulatorErrors = new Map<string, string>();
  /** Tenants whose missing lists are being fetched, and that run: a tick while it runs skips the tenant. */
  readonly #fetching = new SingleFlight<string, void>();
  readonly #sources = new Map<string, StatusListSource | undefined>();

  constructor(options: CredentialGateOptions) {
    this.#options = options;
    this.#policies = new Map(options.policies.map((p) => [p.tenantId, p]));
  }

  async start(): Promise<void> {
    if (this.#policies.size === 0) {
      this.#idle = true;
      return;
    }
    // One controller for this start, made first: a stop() during any await below aborts it, and
    // start() then releases what it opened instead of setting up a gate that was stopped.
    const abort = new AbortController();
    this.#abort = abort;
    const stopped = async (): Promise<boolean> => {
      if (!abort.signal.aborted) return false;
      await this.#release();
      return true;
    };
    try {
      if (this.#options.proofWorkers > 0) {
        const { WorkerProofExecutor } = await import('./worker-proof-executor.ts');
        this.#executor = await WorkerProofExecutor.start({ workers: this.#options.proofWorkers, jobTimeoutMs: this.#options.proofJobTimeoutMs });
        if (await stopped()) return;
      }
      if (this.#options.redis !== undefined) {
        const { RedisSharedState } = await import('./redis-shared-state.ts');
        this.#shared = new RedisSharedState(this.#options.redis);
        await this.#shared.start();
        if (await stopped()) return;
      }
      const shared = this.#shared;
      const { CredentialVerifier } = await import('./credential-verifier.ts');
      const verifier = await CredentialVerifier.create(this.#options.policies, {
        ...(this.#executor === undefined ? {} : { executor: this.#executor }),
        ...(this.#options.clock === undefined ? {} : { clock: this.#options.clock }),
        ...(shared !== undefined
          ? { nonces: shared.nonces, challenges: shared.challenges }
          : this.#options.nonces === undefined ? {} : { nonces: this.#options.nonces }),
        statusListSource: this.#options.statusListSource ?? ((tenantId: string) => this.#sourceFor(tenantId)),
      });
      for (const policy of this.#options.policies) {
        const want = (kind: 'list' | 'token', url: string): void => {
          this.#unfetched.set(`${policy.tenantId} ${kind} ${url}`, { tenantId: policy.tenantId, kind, url });
        };
        // A tenant's own files, refused here (expired, badly signed, not JSON), are that tenant's
        // alone: a list or token is read from its file again with the missing HTTPS ones (WARN
        // meanwhile; credentials that need it are refused until it is admitted), an accumulator
        // state is reported (its credentials refused, ERR_CREDENTIAL_STATUS_UNAVAILABLE).
        const missing = (kind: 'list' | 'token', url: string, error: unknown): void => {
          want(kind, url);
          this.#fetchErrors.set(`${policy.tenantId} ${kind} ${url}`, `${policy.tenantId}: ${describeThrown(error)}`);
        };
        for (const list of policy.initialStatusLists) {
          try {
            let credential: unknown;
            try {
              credential = JSON.parse(Buffer.from(list.bytes).toString('utf8'));
            } catch (error) {
              throw new PavilionError(ErrorCodes.CREDENTIAL_STATUS_INVALID, `status list file for ${list.url} is not JSON`, { cause: error });
            }
            await verifier.admitStatusList(policy.tenantId, list.url, credential);
          } catch (error) {
            missing('list', list.url, error);
          }
        }
        for (const token of policy.initialTokenStatusLists) {
          await verifier.admitTokenStatusList(policy.tenantId, token.uri, token.jwt).catch((error: unknown) => missing('token', token.uri, error));
        }
        for (const [index, state] of policy.initialAccumulatorStates.entries()) {
          await verifier.admitAccumulatorState(policy.tenantId, state).catch((error: unknown) => {
            this.#accumulatorErrors.set(`${policy.tenantId} ${index}`, `${policy.tenantId}: accumulatorStateFiles[${index}] refused: ${describeThrown(error)}`);
          });
        }
        for (const url of policy.statusListUrls) want('list', url);
        for (const url of policy.tokenStatusListUrls) want('token', url);
      }
      if (await stopped()) return;
      this.#verifier = verifier;
      // lists fetched over HTTPS: a failure here is not fatal (checks against them fail closed
      // and health says WARN until a refresh gets them); stop() meanwhile aborts this round
      await this.#fetchMissing(verifier);
    } catch (error) {
      this.#startError = describeThrown(error);
      await this.#release();
      throw error;
    }
    if (abort.signal.aborted) return; // stopped during the first round: no timer
    this.#timer = setInterval(() => void this.#refresh(), this.#options.refreshIntervalMs);
    this.#timer.unref();
  }

  async stop(deadlineMs = STATUS_FETCH_TIMEOUT_MS): Promise<void> {
    this.#idle = false;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#abort.abort();
    this.#verifier = undefined;
    // the aborted fetches end at once; wait for them so none admits a list or touches health after stop()
    await withDeadline(Promise.all(this.#fetching.running()), deadlineMs);
    await this.#release();
  }

  /** Close the proof workers and the shared state this gate opened. */
  async #release(): Promise<void> {
    await this.#executor?.close();
    this.#executor = undefined;
    await this.#shared?.stop();
    this.#shared = undefined;
  }

  status(): ComponentStatus {
    if (this.#idle) return { state: 'OK', message: 'no tenant has a credential policy', details: { tenants: [], proofWorkers: 0 } };
    if (this.#verifier === undefined) return { state: this.#startError === undefined ? 'NOT_READY' : 'ERROR', message: this.#startError ?? 'not started' };
    const missing = [
      ...(this.#unfetched.size > 0 ? [`${this.#unfetched.size} status lists could not be fetched yet; credentials that need them are refused (${this.#lastFetchError() ?? ''})`] : []),
      ...(this.#accumulatorErrors.size > 0 ? [`${this.#accumulatorErrors.size} accumulator states were refused at start; credentials that need them are refused (${[...this.#accumulatorErrors.values()].join('; ')})`] : []),
    ];
    if (missing.length > 0) return { state: 'WARN', message: missing.join('; ') };
    if (this.#lastRefreshFailures > 0) return { state: 'WARN', message: `${this.#lastRefreshFailures} status list refreshes failed; lists are used until their max age` };
    const shared = this.#shared?.status();
    if (shared !== undefined && shared.state !== 'OK') return shared;
    return { state: 'OK', details: { tenants: [...this.#policies.keys()], proofWorkers: this.#options.proofWorkers, oneTimeState: this.#shared === undefined ? 'memory' : 'redis' } };
  }

  /** Whether `tenant` has a credential policy (and so owns `input.credentials`). */
  governs(tenant: string): boolean {
    return this.#policies.has(tenant);
  }

  /** Mint a one-time challenge for a holder of `tenant` (see CredentialVerifier.issueChallenge). */
  async issueChallenge(tenant: string): Promise<{ challenge: string; domain?: string; expires_at: string }> {
    if (!this.governs(tenant)) throw new PavilionError(ErrorCodes.CREDENTIAL_TENANT_UNKNOWN, `tenant ${tenant.slice(0, 64)} has no credential policy`);
    const { challenge, domain, expiresAtMs } = await this.verifier.issueChallenge(tenant);
    return { challenge, ...(domain === undefined ? {} : { domain }), expires_at: new Date(expiresAtMs).toISOString() };
  }

  /** The verifier, for admin paths (admitting status lists, accumulator states). */
  get verifier(): CredentialVerifier {
    if (this.#idle) throw new PavilionError(ErrorCodes.CREDENTIAL_TENANT_UNKNOWN, 'no tenant has a credential policy');
    if (this.#verifier === undefined) throw new PavilionError(ErrorCodes.TENANT_NOT_READY, 'credential verification is not started');
    return this.#verifier;
  }

  /**
   * The input the policy sees: `input` with `credentials` and `credential_errors` set from the
   * verification of `credentials`. A non-object input gets the two keys only when credentials
   * were sent (an object input is required to carry them).
   */
  async prepareInput(tenant: string, input: unknown, credentials: readonly unknown[], binding: CredentialBinding): Promise<unknown> {
    // a tenant without a policy gets neither facts nor a client's imitation of them
    if (!this.governs(tenant)) return withoutReservedCredentialKeys(input);
    if (credentials.length === 0 && !isObject(input)) return input;
    if (!isObject(input) && input !== undefined) {
      throw new PavilionError(ErrorCodes.REQUEST_INVALID, 'credentials can only accompany an object input');
    }
    let facts: VerifiedFactsV1[] = [];
    let errors: CredentialErrorV1[] = [];
    const max = this.#options.maxCredentialsPerRequest;
    // counted before anything is verified: a request over the limit costs no proof check at all
    const { count, overAt } = countCredentials(credentials, max);
    if (overAt !== undefined) {
      errors = [{ version: 1, index: overAt, code: ErrorCodes.CREDENTIAL_TOO_LARGE, message: `the request carries ${count} credentials (a presentation counts one, plus one per credential in it); at most ${max} per request` }];
    } else if (credentials.length > 0) {
      const policy = this.#policies.get(tenant)!;
      const started = performance.now();
      const deadline = requestDeadline(policy.verifyTimeoutMs);
      try {
        ({ credentials: facts, errors } = await this.verifier.verifyEach(tenant, credentials, {
          ...(binding.challenge === undefined ? {} : { challenge: binding.challenge }),
          ...(binding.witnesses === undefined ? {} : { witnesses: binding.witnesses }),
          ...(policy.domain === undefined ? {} : { domain: policy.domain }),
          signal: deadline.signal,
        }));
      } finally {
        deadline.clear();
      }
      const observer = this.#options.observer;
      if (observer !== undefined) {
        observer.onCredentialRequest(tenant, (performance.now() - started) / 1000);
        for (const fact of facts) observer.onCredential(tenant, fact.format);
        for (const error of errors) observer.onCredential(tenant, error.code);
      }
    }
    return { ...(input ?? {}), [CREDENTIALS_INPUT_KEY]: facts, [CREDENTIAL_ERRORS_INPUT_KEY]: errors };
  }

  async #refresh(): Promise<void> {
    const verifier = this.#verifier;
    if (verifier === undefined) return;
    // side by side: the lists held are refreshed while the missing ones are fetched, so a tenant
    // whose refresh waits on a host that does not answer delays no other tenant's first fetch
    const fetching = this.#fetchMissing(verifier);
    try {
      const failures = await verifier.refreshStatusLists(this.#abort.signal);
      this.#lastRefreshFailures = failures.length;
    } catch {
      this.#lastRefreshFailures++;
    }
    await fetching;
  }

  /** Where a tenant's status lists are refreshed from: files and HTTPS URLs, by URL (built once). */
  #sourceFor(tenantId: string): StatusListSource | undefined {
    if (this.#sources.has(tenantId)) return this.#sources.get(tenantId);
    const source = this.#buildSource(tenantId);
    this.#sources.set(tenantId, source);
    return source;
  }

  #buildSource(tenantId: string): StatusListSource | undefined {
    const policy = this.#policies.get(tenantId);
    if (policy === undefined) return undefined;
    const files = [
      ...policy.initialStatusLists,
      ...policy.initialTokenStatusLists.map((t) => ({ url: t.uri, path: t.path })),
    ];
    const routes = new Map<string, StatusListSource>();
    if (files.length > 0) {
      const fileSource = new FileStatusListSource(files);
      for (const file of files) routes.set(file.url, fileSource);
    }
    if (policy.statusListUrls.length > 0) {
      const http = new HttpStatusListSource({ urls: policy.statusListUrls, timeoutMs: STATUS_FETCH_TIMEOUT_MS });
      for (const url of policy.statusListUrls) routes.set(url, http);
    }
    if (policy.tokenStatusListUrls.length > 0) {
      const http = new HttpStatusListSource({ urls: policy.tokenStatusListUrls, timeoutMs: STATUS_FETCH_TIMEOUT_MS, format: 'jwt' });
      for (const url of policy.tokenStatusListUrls) routes.set(url, http);
    }
    return routes.size === 0 ? undefined : new RoutingStatusListSource(routes);
  }

  /**
   * Fetch and admit every HTTPS status list and token not held yet (those left say WARN in
   * status). Tenants are fetched side by side, each tenant's lists one after another, so a host
   * that does not answer (up to STATUS_FETCH_TIMEOUT_MS a list) holds up only its own tenant. A
   * tenant whose previous run is still going is skipped: it is never fetched twice at once.
   * Resolves when the runs this call started have ended; never rejects.
   */
  async #fetchMissing(verifier: CredentialVerifier): Promise<void> {
    const signal = this.#abort.signal;
    if (signal.aborted) return;
    const byTenant = new Map<string, Array<[string, Unfetched]>>();
    for (const [key, want] of this.#unfetched) {
      if (this.#fetching.has(want.tenantId)) continue;
      let wanted = byTenant.get(want.tenantId);
      if (wanted === undefined) byTenant.set(want.tenantId, (wanted = []));
      wanted.push([key, want]);
    }
    const started: Array<Promise<void>> = [];
    for (const [tenantId, wanted] of byTenant) {
      const run = this.#fetching.start(tenantId, () => this.#fetchTenant(verifier, tenantId, wanted, signal));
      if (run !== undefined) started.push(run);
    }
    await Promise.all(started);
  }

  /** One tenant's missing lists, one after another (each failure is kept for health, never thrown). */
  async #fetchTenant(verifier: CredentialVerifier, tenantId: string, wanted: ReadonlyArray<[string, Unfetched]>, signal: AbortSignal): Promise<void> {
    for (const [key, { kind, url }] of wanted) {
      if (!this.#unfetched.has(key)) continue;
      try {
        const source = this.#sourceFor(tenantId);
        if (source === undefined) throw new Error('no source');
        const fetched = await source.fetch(url, signal);
        if (kind === 'token') await verifier.admitTokenStatusList(tenantId, url, fetched as string);
        else await verifier.admitStatusList(tenantId, url, fetched);
        this.#unfetched.delete(key);
        this.#fetchErrors.delete(key);
      } catch (error) {
        // re-inserted so the map stays oldest first
        this.#fetchErrors.delete(key);
        if (this.#unfetched.has(key)) this.#fetchErrors.set(key, `${tenantId}: ${describeThrown(error)}`);
      }
    }
  }

  /** The latest fetch error of a list still missing. */
  #lastFetchError(): string | undefined {
    let last: string | undefined;
    for (const message of this.#fetchErrors.values()) last = message;
    return last;
  }
}

/**
 * One deadline for the verification of one request's credentials: each step has its own timeout
 * (a proof job, its wait for a worker, a Redis command), and without this a request carrying
 * many credentials could wait for the sum of them all. Aborted with the refusal the credentials
 * not answered in time get; cleared once the request has its answer, so no timer outlives it.
 */
function requestDeadline(timeoutMs: number): { readonly signal: AbortSignal; clear(): void } {
  const controller = new AbortController();
  const timer = setTimeout(() => {
    controller.abort(new PavilionError(ErrorCodes.CREDENTIAL_DEADLINE_EXCEEDED, `not verified within the tenant's verifyTimeoutMs (${timeoutMs} ms) for all the credentials of this request`));
  }, timeoutMs);
  return { signal: controller.signal, clear: () => clearTimeout(timer) };
}

interface Unfetched {
  readonly tenantId: string;
  readonly kind: 'list' | 'token';
  readonly url: string;
}
