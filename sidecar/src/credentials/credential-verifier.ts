/**
 * The credential verifier: one entry point per tenant for every accepted format, returning
 * verified facts or throwing a `PavilionError` with an `ERR_CREDENTIAL_*` code. Nothing is
 * fetched: contexts, DIDs, status lists and accumulator states come from the tenant's pinned
 * material and caches, which their owners fill through `admit*`.
 *
 * Pipeline for one credential: size -> format -> issuer trust on what the credential claims,
 * before any proof work -> proof -> freshness -> issuer trust -> status. The early trust check
 * refuses only what the full one would refuse whatever the proof says: for Data Integrity (after
 * freshness, as the library refuses stale credentials with untyped errors) the full trust
 * question, which needs nothing the proof establishes; for a VC-JWT the same, on the claims its
 * signature covers (read before its key is resolved: an expired or untrusted one costs no key
 * resolution and no signature); for an SD-JWT VC an issuer the tenant's trust policy does not
 * name at all, its stated time, and its KB-JWT's claims (sd-jwt-vc.ts; its disclosed claims are
 * known only after its signature). It only ever refuses: everything it lets through is
 * proof-checked, then trust-checked again on the verified facts. Whichever check refuses first,
 * the code names something the presenter sent or could know (a time, an issuer, a challenge),
 * never whether a signature would have verified. The proof outcome is cached by
 * the SHA-256 of the credential as received, once the trust check passed (a credential from an
 * issuer the tenant does not trust costs neither proof work nor a cache entry); every other step
 * runs on each call, so a cached credential is still re-checked for time, trust and status.
 * A VC-JWT or SD-JWT VC is decoded once: the early check reads that decoding, and the proof
 * check verifies the signature over the very text it was decoded from.
 *
 * Pipeline for a presentation: the same ordering, one level up. Everything that needs no
 * signature comes first (the proof's claimed challenge, domain and purpose, its age, and each
 * embedded credential's early refusals above, then whether its challenge was used already),
 * then the holder's proof, then each credential's proof and the rest. A presentation all of
 * whose credentials are refused for good before any proof work is refused without its holder
 * proof being checked.
 *
 * A request's verification may be given a deadline (`VerifyOptions.signal`, the gate's
 * `verifyTimeoutMs`): once it has passed, every credential not yet answered is refused with
 * ERR_CREDENTIAL_DEADLINE_EXCEEDED at once, and the one being verified starts no further step
 * (no proof job, no status or challenge look-up; a challenge whose use had begun may still be
 * used up).
 */
import { createHash, randomBytes } from 'node:crypto';
import { ErrorCodes, PavilionError, describeThrown, isPavilionError } from '../lib/errors.ts';
import { sha256Hex } from '../lib/sha256.ts';
import { SingleFlight } from '../lib/single-flight.ts';
import { AccumulatorRegistry, ACCUMULATOR_ENTRY_TYPE, readAccumulatorEntry } from './accumulator-registry.ts';
import { decodeStatusListCredential, readStatusListEntry, StatusListCache, type DecodedStatusList, type StatusListSource } from './bitstring-status-list.ts';
import type { CredentialPolicy } from './credential-policy.ts';
import { DidResolver } from './did-resolver.ts';
import { createDocumentLoader, type DocumentLoader } from './document-loader.ts';
import { checkFreshness, isoValidity, type ValidityWindow } from './freshness.ts';
import { establishTrust, type Accreditation, type TrustPolicy, type TrustQuestion } from './issuer-trust.ts';
import { asArray, isObject, nodeId, stringsOf, type JsonObject } from './json.ts';
import { decodeCompactJws, type CompactJws } from './jwt-parts.ts';
import { MemoryChallengeStore, MemoryNonceStore, type ChallengeStore, type NonceStore } from './nonce-store.ts';
import { pinContexts } from './pinned-contexts.ts';
import { dataIntegrity, InlineProofExecutor, type ProofExecutor } from './proof-executor.ts';
import { checkPresentationBinding } from './proof-shape.ts';
import { sdJwtWindow, verifySdJwtVc } from './sd-jwt-vc.ts';
import { TokenStatusListCache, type TokenStatusReference } from './token-status-list.ts';
import type { CredentialErrorV1, CredentialFormat, StatusCheckV1, VerifiedFactsV1 } from './verified-facts.ts';
import { readVcJwt, verifyVcJwt } from './vc-jwt.ts';
import { embeddedCredentials, isPresentation, readW3cCredential, type W3cCredentialView } from './w3c-credential.ts';

export interface VerifyOptions {
  /** The verifier's one-time challenge (presentation `challenge`, KB-JWT `nonce`). */
  readonly challenge?: string;
  /** The verifier's domain (presentation `domain`, KB-JWT `aud`). */
  readonly domain?: string;
  /** Verification time; defaults to the verifier's clock. */
  readonly nowMs?: number;
  /** Accumulator witnesses by revocation handle (base64url). */
  readonly witnesses?: Readonly<Record<string, string>>;
  /**
   * The request's deadline: once aborted, no further step starts, and what is not answered yet is
   * refused with the PavilionError it was aborted with (else ERR_CREDENTIAL_DEADLINE_EXCEEDED).
   */
  readonly signal?: AbortSignal;
}

export interface PresentationResultV1 {
  readonly version: 1;
  readonly holder: string;
  readonly credentials: readonly VerifiedFactsV1[];
  readonly errors: readonly CredentialErrorV1[];
}

export interface CredentialVerifierOptions {
  readonly clock?: () => number;
  readonly nonces?: NonceStore;
  /** Challenges minted by issueChallenge and not yet used (default: in memory). */
  readonly challenges?: ChallengeStore;
  /** Randomness for challenges (default: node:crypto randomBytes). */
  readonly random?: (bytes: number) => Uint8Array;
  /**
   * Where status lists are refreshed from in the background (none: only `admitStatusList`):
   * one source for every tenant, or one per tenant.
   */
  readonly statusListSource?: StatusListSource | ((tenantId: string) => StatusListSource | undefined);
  readonly proofCacheEntries?: number;
  /** Where Data Integrity proofs and accumulator pairings run (default: inline, this thread). */
  readonly executor?: ProofExecutor;
}

/** What a proof check establishes, before freshness, trust and status. */
interface ProofOutcome {
  readonly format: CredentialFormat;
  readonly issuer: string;
  readonly types: readonly string[];
  readonly subject?: string;
  readonly claims: JsonObject;
  readonly window: ValidityWindow;
  readonly validity: VerifiedFactsV1['validity'];
  readonly statusEntries: readonly JsonObject[];
  readonly proofType: string;
  readonly holder?: string;
  /** The KB-JWT's challenge (key-bound SD-JWT VC), used up once everything else passed. */
  readonly nonce?: string;
  /** SD-JWT VC status (Token Status List). */
  readonly tokenStatus?: TokenStatusReference;
}

/**
 * A credential past the refusals that need no proof work (#screen), with what its proof check
 * needs: the outcome cached for it, the JWT decoded once, or a Data Integrity credential's view.
 */
type Screened =
  | { readonly kind: 'cached'; readonly proof: ProofOutcome }
  | { readonly kind: 'sd-jwt'; readonly compact: string; readonly issuerJws: CompactJws }
  | { readonly kind: 'vc-jwt'; readonly jws: CompactJws; readonly view: W3cCredentialView }
  | { readonly kind: 'data-integrity'; readonly credential: JsonObject; readonly view: W3cCredentialView };

/** A credential admitted to proof work: its proof cache key and its screening. */
interface Candidate {
  readonly hash: string;
  readonly screened: Screened;
}

/**
 * A presentation's outcome: accepted with its result, or refused with each credential's code
 * (a refused one may not have had its holder proof checked: it has no established holder).
 */
type PresentationOutcome =
  | { readonly accepted: true; readonly result: PresentationResultV1 }
  | { readonly accepted: false; readonly errors: readonly CredentialErrorV1[] };

interface TenantRuntime {
  readonly policy: CredentialPolicy;
  /** Every issuer the trust policy names (anchors, accredited subjects): any other is untrusted for everything. */
  readonly knownIssuers: ReadonlySet<string>;
  readonly dids: DidResolver;
  readonly loader: DocumentLoader;
  readonly trust: TrustPolicy;
  readonly statusLists: StatusListCache;
  readonly tokenStatusLists: TokenStatusListCache;
  readonly accumulators: AccumulatorRegistry;
}


/** The trust question a credential's facts ask (the same before and after its proof is checked). */
function trustQuestion(facts: Pick<ProofOutcome, 'issuer' | 'types' | 'claims' | 'window'>): TrustQuestion {
  const validFromMs = facts.window.validFromMs ?? facts.window.issuedAtMs;
  return {
    issuer: facts.issuer,
    types: facts.types,
    claimNames: Object.keys(facts.claims),
    ...(validFromMs === undefined ? {} : { validFromMs }),
    ...(facts.window.validUntilMs === undefined ? {} : { validUntilMs: facts.window.validUntilMs }),
  };
}

/**
 * One failure of a tenant's status refresh: a list or token (`url`) that could not be refreshed,
 * or, without `url`, a refresh step (all its lists, or all its tokens) that threw instead of
 * reporting its lists' failures.
 */
type RefreshFailure = { tenantId: string; url?: string; error: PavilionError };

export class CredentialVerifier {
  readonly #tenants: ReadonlyMap<string, TenantRuntime>;
  readonly #clock: () => number;
  readonly #nonces: NonceStore;
  readonly #challenges: ChallengeStore;
  readonly #random: (bytes: number) => Uint8Array;
  readonly #proofCache = new Map<string, ProofOutcome>();
  readonly #proofCacheEntries: number;
  readonly #executor: ProofExecutor;
  /** Per tenant: the status refresh still running, and the failures of its last finished one. */
  readonly #refreshing = new SingleFlight<string, RefreshFailure[]>();
  readonly #lastRefreshFailures = new Map<string, RefreshFailure[]>();

  private constructor(tenants: Map<string, TenantRuntime>, options: CredentialVerifierOptions) {
    this.#tenants = tenants;
    this.#executor = options.executor ?? new InlineProofExecutor();
    this.#clock = options.clock ?? Date.now;
    this.#nonces = options.nonces ?? new MemoryNonceStore();
    this.#challenges = options.challenges ?? new MemoryChallengeStore();
    this.#random = options.random ?? randomBytes;
    this.#proofCacheEntries = options.proofCacheEntries ?? 10_000;
  }

  /** Build every tenant's runtime: pins checked, accreditations verified. Throws on bad config. */
  static async create(policies: readonly CredentialPolicy[], options: CredentialVerifierOptions = {}): Promise<CredentialVerifier> {
    const tenants = new Map<string, TenantRuntime>();
    const verifier = new CredentialVerifier(tenants, options);
    for (const policy of policies) {
      if (tenants.has(policy.tenantId)) throw new PavilionError(ErrorCodes.CONFIG_INVALID, `credentials: tenant ${policy.tenantId} configured twice`);
      const dids = new DidResolver(policy.didWeb);
      const loader = createDocumentLoader({ contexts: pinContexts(policy.contexts), dids });
      const verifyList = async (credential: unknown, url: string, nowMs: number): Promise<DecodedStatusList> =>
        verifier.#verifyStatusListCredential(loader, policy, credential, url, nowMs);
      const source = typeof options.statusListSource === 'function' ? options.statusListSource(policy.tenantId) : options.statusListSource;
      const statusLists = new StatusListCache({ ttlMs: policy.statusLists.ttlMs, maxAgeMs: policy.statusLists.maxAgeMs }, verifyList, source);
      await verifier.#executor.addTenant({ tenantId: policy.tenantId, contexts: policy.contexts, didWeb: policy.didWeb });
      const accumulators = new AccumulatorRegistry(
        policy.accumulators,
        policy.accumulatorMaxAgeMs,
        (kid) => dids.verificationMethod(kid),
        // named by tenant: its jobs wait in its own share of a worker executor's queue
        (value, publicKey, element, witness) => verifier.#executor.verifyMembership(value, publicKey, element, witness, policy.tenantId),
      );
      const tokenStatusLists = new TokenStatusListCache(policy.statusLists.maxAgeMs, dids, policy.statusLists.ttlMs, source);
      const runtime: TenantRuntime = { policy, knownIssuers: new Set(), dids, loader, trust: { anchors: policy.trustAnchors, accreditations: [], maxChainDepth: policy.maxChainDepth }, statusLists, tokenStatusLists, accumulators };
      const accreditations: Accreditation[] = [];
      for (const [i, raw] of policy.accreditations.entries()) {
        try {
          accreditations.push(await verifier.#readAccreditation(runtime, raw, i));
        } catch (error) {
          throw new PavilionError(ErrorCodes.CONFIG_INVALID, `credentials ${policy.tenantId}: accreditation ${i} does not verify: ${describeThrown(error)}`, { cause: error });
        }
      }
      const knownIssuers = new Set([...policy.trustAnchors.map((a) => a.issuer), ...accreditations.map((a) => a.subject)]);
      tenants.set(policy.tenantId, { ...runtime, knownIssuers, trust: { ...runtime.trust, accreditations } });
    }
    return verifier;
  }

  /** Verify one credential (Data Integrity JSON, VC-JWT or SD-JWT VC string). */
  async verify(tenantId: string, credential: unknown, options: VerifyOptions = {}): Promise<VerifiedFactsV1> {
    return this.#verifyOne(tenantId, credential, options, new Set());
  }

  /**
   * `consumed`: the challenges this request already used. Several credentials answering one
   * challenge (one KB-JWT nonce per SD-JWT, a presentation and an SD-JWT) are one use of it; a
   * later request with the same challenge is a replay.
   */
  async #verifyOne(tenantId: string, credential: unknown, options: VerifyOptions, consumed: Set<string>): Promise<VerifiedFactsV1> {
    const tenant = this.#tenant(tenantId);
    const nowMs = options.nowMs ?? this.#clock();
    return this.#verifyCandidate(tenant, this.#candidate(tenant, credential, nowMs), options, nowMs, consumed);
  }

  /**
   * A credential's refusals that need no proof work: its size and format, then #screen (issuer
   * trust on what it claims, a Data Integrity credential's time). Throws what it refuses.
   */
  #candidate(tenant: TenantRuntime, credential: unknown, nowMs: number): Candidate {
    // the proof cache key, per credential: a presentation's credentials each get their own
    const hash = sha256Hex(this.#measure(tenant, credential));
    if (isPresentation(credential)) {
      throw new PavilionError(ErrorCodes.CREDENTIAL_FORMAT_UNSUPPORTED, 'a presentation: use verifyPresentation');
    }
    return { hash, screened: this.#screen(tenant, credential, hash, nowMs) };
  }

  async #verifyCandidate(tenant: TenantRuntime, candidate: Candidate, options: VerifyOptions, nowMs: number, consumed: Set<string>): Promise<VerifiedFactsV1> {
    stopIfAbandoned(options.signal);
    const { proof, remember } = await this.#prove(tenant, candidate, options, nowMs);
    stopIfAbandoned(options.signal);
    return await this.#finish(tenant, proof, candidate.hash, options, nowMs, consumed, remember);
  }

  /**
   * Verify a presentation: what it claims is checked before any signature work (its proof's
   * binding to this verifier's challenge and domain, its age, and each embedded credential's
   * refusals that need no proof: issuer trust, a Data Integrity credential's time), then the
   * holder's proof (once only), then each embedded credential on its own. A bad presentation
   * throws; a bad credential inside a good presentation is reported in `errors`. A presentation
   * none of whose credentials verifies is refused: it throws the first one's code (all of them in
   * `details.errors`).
   */
  async verifyPresentation(tenantId: string, presentation: unknown, options: VerifyOptions): Promise<PresentationResultV1> {
    const outcome = await this.#verifyPresentation(tenantId, presentation, options, new Set(), true);
    if (outcome.accepted) return outcome.result;
    // refused, so not bare (holderAuthenticates accepts a bare one): one error per credential in it
    const first = outcome.errors[0]!;
    throw new PavilionError(first.code, `no credential in the presentation verifies (credential ${first.index}: ${first.message})`, {
      details: { errors: outcome.errors.map(({ index, code }) => ({ index, code })) },
    });
  }

  /**
   * The challenge is used up last, atomically, and only when that matters. A presentation is
   * accepted when its holder proof, holder and age verify and it yields at least one verified
   * credential, or, where the holder's authentication itself is the answer
   * (`holderAuthenticates`: verifyPresentation), when it carries none; an accepted presentation
   * uses the challenge up, or a captured copy would yield the same again. A refused one leaves
   * the challenge to the honest holder when every refusal would recur for a copy shown later
   * (a bad signature, an untrusted issuer, an expired credential: see REFUSED_FOR_GOOD), since
   * the copy gains nothing; one refused for a reason that can pass later (a status list not
   * fetched yet, a credential not yet valid, shared state away) uses it up, so a copy cannot
   * succeed once the reason is gone. A bare presentation through the gate (verifyEach) yields
   * nothing and uses nothing: whoever sees a challenge cannot burn it without a credential.
   * Of two requests racing with one presentation, the store's check-and-set lets exactly one
   * through; the other is REPLAYED and yields nothing.
   *
   * Signature work comes last: the presentation's claimed binding and age, each credential's
   * screening (#candidate), and a read-only look for a used challenge (a replay) come before the
   * holder's proof. When every embedded credential is refused there for good, the presentation
   * is refused without its holder proof: it could yield nothing, whoever signed it, and uses
   * nothing. When one refusal can pass later, the
   * holder proof is still checked, since only a verified holder may use the challenge up.
   */
  async #verifyPresentation(tenantId: string, presentation: unknown, options: VerifyOptions, consumed: Set<string>, holderAuthenticates: boolean): Promise<PresentationOutcome> {
    const tenant = this.#tenant(tenantId);
    const nowMs = options.nowMs ?? this.#clock();
    this.#measure(tenant, presentation); // size only: a presentation is not cached, so not hashed
    if (!isPresentation(presentation)) {
      throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, 'not a VerifiablePresentation');
    }
    const { challenge, domain } = options;
    if (challenge === undefined || challenge === '') throw new PavilionError(ErrorCodes.CREDENTIAL_CHALLENGE_MISMATCH, 'a presentation is verified against a challenge, and none was given');
    if (domain === undefined || domain === '') throw new PavilionError(ErrorCodes.CREDENTIAL_DOMAIN_MISMATCH, 'a presentation is verified against a domain, and none was given');
    // what the presentation's proof claims, before its signature is checked (which makes it true)
    checkPresentationBinding(presentation, challenge, domain);
    checkPresentationAge(presentation, tenant.policy, nowMs);

    const embedded = embeddedCredentials(presentation);
    const screened = embedded.map((credential, index): Candidate | CredentialErrorV1 => {
      try {
        return this.#candidate(tenant, credential, nowMs);
      } catch (error) {
        return toCredentialError(index, error);
      }
    });
    const refused = screened.filter((s): s is CredentialErrorV1 => !('screened' in s));
    if (embedded.length > 0 && refused.length === embedded.length && refused.every((e) => REFUSED_FOR_GOOD.has(e.code))) {
      return { accepted: false, errors: refused };
    }
    stopIfAbandoned(options.signal);
    const key = challengeKey(tenantId, challenge, domain);
    // a replay is refused before any signature work: this look records nothing, so whoever sends
    // it (a forger too) learns only what any did:key holder could learn with a proof of their
    // own; the use that counts is #consumeChallenge's check-and-set, last, by a verified holder
    if (!consumed.has(key) && (await this.#nonces.seen(key, nowMs))) {
      throw new PavilionError(ErrorCodes.CREDENTIAL_REPLAYED, 'this challenge was already used: presentations are accepted once');
    }
    stopIfAbandoned(options.signal);

    const { holderKey } = await this.#executor.verifyPresentationProof(tenantId, presentation, {
      nowMs,
      clockSkewMs: tenant.policy.freshness.clockSkewMs,
      challenge,
      domain,
    });
    const method = await tenant.dids.verificationMethod(holderKey);
    const holder = nodeId(presentation['holder']);
    if (holder === undefined || holder !== method.controller) {
      throw new PavilionError(ErrorCodes.CREDENTIAL_HOLDER_MISMATCH, 'the presentation is not signed by its holder');
    }

    // the credentials answer the presentation's challenge (a KB-JWT nonce is checked against it):
    // marked as answered for them, so that none uses it up on its own before the presentation is
    // accepted; the presentation uses it up for all of them below
    const answered = new Set([...consumed, key]);
    const credentials: VerifiedFactsV1[] = [];
    const errors: CredentialErrorV1[] = [];
    for (const [index, candidate] of screened.entries()) {
      if (!('screened' in candidate)) {
        errors.push(candidate);
        continue;
      }
      try {
        const facts = await this.#verifyCandidate(tenant, candidate, { ...options, nowMs }, nowMs, answered);
        if (facts.subject !== undefined && facts.subject !== holder) {
          throw new PavilionError(ErrorCodes.CREDENTIAL_HOLDER_MISMATCH, 'the credential subject is not the presentation holder');
        }
        credentials.push({ ...facts, holder });
      } catch (error) {
        errors.push(toCredentialError(index, error));
      }
    }
    const accepted = credentials.length > 0 || (embedded.length === 0 && holderAuthenticates);
    const refusedForGood = embedded.length === 0 || errors.every((e) => REFUSED_FOR_GOOD.has(e.code));
    if (accepted || !refusedForGood) {
      // past the deadline the request has its answer already: nothing is used up for it
      stopIfAbandoned(options.signal);
      await this.#consumeChallenge(tenant, challenge, domain, nowMs, consumed);
    }
    return accepted ? { accepted, result: { version: 1, holder, credentials, errors } } : { accepted, errors };
  }

  /**
   * For the decision input: every credential verified, facts and typed errors side by side. With
   * `options.signal`, one deadline for them all: once it has passed, the credential being
   * verified and every one after it are refused at once (see beforeDeadline), each at its index.
   */
  async verifyEach(tenantId: string, credentials: readonly unknown[], options: VerifyOptions = {}): Promise<{ credentials: VerifiedFactsV1[]; errors: CredentialErrorV1[] }> {
    const facts: VerifiedFactsV1[] = [];
    const errors: CredentialErrorV1[] = [];
    const consumed = new Set<string>();
    const { signal } = options;
    for (const [index, credential] of credentials.entries()) {
      try {
        stopIfAbandoned(signal);
        if (isPresentation(credential)) {
          // a refused presentation yields no facts, only its credentials' codes
          const outcome = await beforeDeadline(this.#verifyPresentation(tenantId, credential, options, consumed, false), signal);
          const refusals = outcome.accepted ? outcome.result.errors : outcome.errors;
          if (outcome.accepted) facts.push(...outcome.result.credentials);
          errors.push(...refusals.map((e) => ({ ...e, index })));
        } else {
          facts.push(await beforeDeadline(this.#verifyOne(tenantId, credential, options, consumed), signal));
        }
      } catch (error) {
        errors.push(toCredentialError(index, error));
      }
    }
    return { credentials: facts, errors };
  }

  /** Verify and hold a status list credential for `tenantId` (from config, a file or a refresh). */
  async admitStatusList(tenantId: string, url: string, credential: unknown, nowMs = this.#clock()): Promise<void> {
    await this.#tenant(tenantId).statusLists.admit(url, credential, nowMs);
  }

  /**
   * Mint a one-time challenge for a holder to bind a presentation (or KB-JWT nonce) to; with
   * `presentations.requireIssuedChallenge` only such challenges are accepted, once, in time.
   */
  async issueChallenge(tenantId: string, nowMs = this.#clock()): Promise<{ challenge: string; domain?: string; expiresAtMs: number }> {
    const tenant = this.#tenant(tenantId);
    const challenge = Buffer.from(this.#random(16)).toString('base64url');
    const expiresAtMs = nowMs + tenant.policy.presentations.challengeLifetimeMs;
    await this.#challenges.remember(`${tenantId}\u0000${challenge}`, expiresAtMs, nowMs);
    return { challenge, ...(tenant.policy.domain === undefined ? {} : { domain: tenant.policy.domain }), expiresAtMs };
  }

  /** Verify and hold a Status List Token (SD-JWT VC status) for `uri`. */
  async admitTokenStatusList(tenantId: string, uri: string, jwt: string, nowMs = this.#clock()): Promise<void> {
    await this.#tenant(tenantId).tokenStatusLists.admit(uri, jwt, nowMs);
  }

  /** Verify and hold a signed accumulator state; returns its epoch. */
  async admitAccumulatorState(tenantId: string, jws: string, nowMs = this.#clock()): Promise<number> {
    return this.#tenant(tenantId).accumulators.admit(jws, nowMs);
  }

  /**
   * Refresh status lists and tokens past their TTL (call from a timer; failures keep old ones
   * until max age). Tenants are refreshed side by side, each one's lists in turn: an issuer host
   * that does not answer holds up only its own tenant. A tenant's refresh runs once at a time: a
   * call while it still runs (a timer tick that came round first) skips that tenant, reporting the
   * failures of its last finished refresh, and refreshes the others. Resolves when the refreshes
   * this call started have ended (aborting `signal` ends them), with every tenant's failures, in
   * tenant order; never rejects: what goes wrong in one tenant's refresh is that tenant's failure.
   */
  async refreshStatusLists(signal: AbortSignal, nowMs = this.#clock()): Promise<RefreshFailure[]> {
    const tenantIds: string[] = [];
    const runs: Array<Promise<RefreshFailure[]> | undefined> = [];
    for (const [tenantId, tenant] of this.#tenants) {
      tenantIds.push(tenantId);
      runs.push(this.#refreshing.start(tenantId, () => this.#refreshTenant(tenantId, tenant, signal, nowMs)));
    }
    const ended = await Promise.all(runs);
    // a skipped tenant (undefined): its last finished refresh's, as of now
    return ended.flatMap((failures, i) => failures ?? this.#lastRefreshFailures.get(tenantIds[i]!) ?? []);
  }

  /**
   * One tenant's refresh: its lists, then its tokens, recorded as its last refresh's failures.
   * Never rejects: a step that throws (rather than reporting each list's failure) is one failure
   * of that step, for this tenant alone, and the other step still runs.
   */
  async #refreshTenant(tenantId: string, tenant: TenantRuntime, signal: AbortSignal, nowMs: number): Promise<RefreshFailure[]> {
    const failures: RefreshFailure[] = [];
    const step = async (what: string, refresh: () => Promise<ReadonlyArray<{ url: string; error: PavilionError }>>): Promise<void> => {
      try {
        for (const failure of await refresh()) failures.push({ tenantId, ...failure });
      } catch (error) {
        failures.push({ tenantId, error: refreshStepError(what, error) });
      }
    };
    await step('status lists', async () => (await tenant.statusLists.refreshDue(nowMs, signal)).failed);
    await step('status list tokens', () => tenant.tokenStatusLists.refreshDue(nowMs, signal));
    this.#lastRefreshFailures.set(tenantId, failures);
    return failures;
  }

  #tenant(tenantId: string): TenantRuntime {
    const tenant = this.#tenants.get(tenantId);
    if (tenant === undefined) throw new PavilionError(ErrorCodes.CREDENTIAL_TENANT_UNKNOWN, `no credential policy for tenant ${tenantId.slice(0, 64)}`);
    return tenant;
  }

  /** The credential as received (its text), within the tenant's size limit. */
  #measure(tenant: TenantRuntime, credential: unknown): string {
    let text: string;
    if (typeof credential === 'string') text = credential;
    else if (isObject(credential)) {
      try {
        text = JSON.stringify(credential);
      } catch (error) {
        throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, 'credential is not serialisable JSON', { cause: error });
      }
    } else throw new PavilionError(ErrorCodes.CREDENTIAL_FORMAT_UNSUPPORTED, 'a credential is a JSON object (Data Integrity) or a string (VC-JWT, SD-JWT VC)');
    if (Buffer.byteLength(text) > tenant.policy.maxCredentialBytes) {
      throw new PavilionError(ErrorCodes.CREDENTIAL_TOO_LARGE, `credential exceeds ${tenant.policy.maxCredentialBytes} bytes`);
    }
    return text;
  }

  /**
   * A credential's refusals that need no proof work, on what it claims: an issuer the tenant
   * does not trust costs no proof work. For a Data Integrity credential, freshness and the whole
   * trust question (the facts it asks about are the ones the proof covers, unchanged; #finish
   * asks it again of the verified outcome); for a VC-JWT or SD-JWT VC, an issuer the trust policy
   * does not name at all, read from the JWT decoded here once (the proof check uses that
   * decoding, of the same bytes it verifies), then its stated time, and for a VC-JWT the whole
   * trust question too (its claims are all in the signed payload). A credential whose proof
   * outcome is cached is checked by #finish alone. Nothing here accepts anything.
   */
  #screen(tenant: TenantRuntime, credential: unknown, hash: string, nowMs: number): Screened {
    if (typeof credential === 'string') {
      if (credential.includes('~')) {
        // never cached: its key binding answers this request's challenge
        const issuerJws = decodeCompactJws(credential.slice(0, credential.indexOf('~')), 'SD-JWT');
        this.#refuseUnknownIssuer(tenant, claimedJwtIssuer(issuerJws, 'sd-jwt'));
        const vct = issuerJws.payload['vct'];
        checkFreshness(sdJwtWindow(issuerJws.payload), typeof vct === 'string' ? [vct] : [], nowMs, tenant.policy.freshness);
        return { kind: 'sd-jwt', compact: credential, issuerJws };
      }
      const cached = this.#cached(tenant, hash);
      if (cached !== undefined) return { kind: 'cached', proof: cached };
      const jws = decodeCompactJws(credential, 'VC-JWT');
      this.#refuseUnknownIssuer(tenant, claimedJwtIssuer(jws, 'vc-jwt'));
      const view = readVcJwt(jws);
      checkFreshness(view.window, view.types, nowMs, tenant.policy.freshness);
      establishTrust(trustQuestion(viewFacts(view)), tenant.trust, nowMs);
      return { kind: 'vc-jwt', jws, view };
    }
    const cached = this.#cached(tenant, hash);
    if (cached !== undefined) return { kind: 'cached', proof: cached };
    const view = readW3cCredential(credential);
    checkFreshness(view.window, view.types, nowMs, tenant.policy.freshness);
    establishTrust(trustQuestion(viewFacts(view)), tenant.trust, nowMs);
    return { kind: 'data-integrity', credential: credential as JsonObject, view };
  }

  /**
   * The proof outcome of a screened credential: from the cache, or checked now (`remember`:
   * #finish caches it once trust passed). Nothing is accepted here without its proof.
   */
  async #prove(tenant: TenantRuntime, { hash, screened }: Candidate, options: VerifyOptions, nowMs: number): Promise<{ proof: ProofOutcome; remember: boolean }> {
    const { policy } = tenant;
    if (screened.kind === 'cached') return { proof: screened.proof, remember: false };
    if (screened.kind === 'sd-jwt') {
      const verified = await verifySdJwtVc(screened.compact, {
        dids: tenant.dids,
        nowMs,
        clockSkewMs: policy.freshness.clockSkewMs,
        keyBinding: { required: policy.keyBinding.required, maxAgeMs: policy.keyBinding.maxAgeMs, clockSkewMs: policy.freshness.clockSkewMs },
        ...(options.challenge === undefined ? {} : { challenge: options.challenge }),
        ...(options.domain === undefined ? {} : { domain: options.domain }),
      }, screened.issuerJws);
      checkFreshness(verified.window, [verified.vct], nowMs, policy.freshness);
      // the challenge is used up in #finish, once issuer trust and status pass: a self-issued
      // SD-JWT must not burn (or fill the store with) one-time challenges
      const proof: ProofOutcome = {
        format: 'sd-jwt-vc',
        issuer: verified.issuer,
        types: [verified.vct],
        ...(verified.subject === undefined ? {} : { subject: verified.subject }),
        claims: verified.claims,
        window: verified.window,
        validity: isoValidity(verified.window),
        statusEntries: [],
        proofType: verified.proofType,
        ...(verified.keyBound ? { nonce: options.challenge ?? '' } : {}),
        ...(verified.statusReference === undefined ? {} : { tokenStatus: verified.statusReference }),
        ...(verified.holderJwk === undefined || !verified.keyBound ? {} : { holder: `urn:ietf:params:oauth:jwk-thumbprint:sha-256:${jwkThumbprint(verified.holderJwk)}` }),
      };
      // not cached: its key binding answers this request's challenge
      return { proof, remember: false };
    }
    // cached since it was screened: the same credential twice in one presentation
    const cached = this.#cached(tenant, hash);
    if (cached !== undefined) return { proof: cached, remember: false };
    if (screened.kind === 'vc-jwt') {
      // freshness is #finish's, which runs on every call, cached or not
      const { view, proofType } = await verifyVcJwt(screened.jws, tenant.dids, screened.view);
      return { proof: { format: 'vc+jwt', ...viewFacts(view), proofType }, remember: true };
    }
    const { proofType } = await this.#executor.verifyCredentialProof(policy.tenantId, screened.credential, {
      nowMs,
      clockSkewMs: policy.freshness.clockSkewMs,
    });
    return { proof: { format: 'vc+data-integrity', ...viewFacts(screened.view), proofType }, remember: true };
  }

  /**
   * Refuse, before its proof is checked, a credential whose issuer the tenant's trust policy does
   * not name at all: establishTrust refuses it whatever else it says (same code, same reason).
   * `issuer` undefined (not readable): the proof check says what is wrong.
   */
  #refuseUnknownIssuer(tenant: TenantRuntime, issuer: string | undefined): void {
    if (issuer === undefined || tenant.knownIssuers.has(issuer)) return;
    throw new PavilionError(ErrorCodes.CREDENTIAL_ISSUER_UNTRUSTED, `issuer ${issuer.slice(0, 120)} is neither a trust anchor nor accredited by one`);
  }

  #cached(tenant: TenantRuntime, hash: string): ProofOutcome | undefined {
    const key = `${tenant.policy.tenantId}:${hash}`;
    const hit = this.#proofCache.get(key);
    if (hit !== undefined) {
      this.#proofCache.delete(key);
      this.#proofCache.set(key, hit);
    }
    return hit;
  }

  #remember(tenant: TenantRuntime, hash: string, outcome: ProofOutcome): void {
    if (this.#proofCacheEntries <= 0) return;
    const key = `${tenant.policy.tenantId}:${hash}`;
    this.#proofCache.set(key, outcome);
    if (this.#proofCache.size > this.#proofCacheEntries) {
      const oldest = this.#proofCache.keys().next().value;
      if (oldest !== undefined) this.#proofCache.delete(oldest);
    }
  }

  /**
   * Freshness (again, for cached proofs), trust and status: never cached; a proof just checked
   * (`remember`) is cached once trust passed; then a KB-JWT's challenge is used.
   */
  async #finish(tenant: TenantRuntime, proof: ProofOutcome, hash: string, options: VerifyOptions, nowMs: number, consumed: Set<string>, remember: boolean): Promise<VerifiedFactsV1> {
    const { policy } = tenant;
    checkFreshness(proof.window, proof.types, nowMs, policy.freshness);
    const chain = establishTrust(trustQuestion(proof), tenant.trust, nowMs);
    if (remember) this.#remember(tenant, hash, proof);
    const status = await this.#status(tenant, proof, options, nowMs);
    if (proof.nonce !== undefined) {
      stopIfAbandoned(options.signal);
      await this.#consumeChallenge(tenant, proof.nonce, options.domain ?? '', nowMs, consumed);
    }
    return {
      version: 1,
      format: proof.format,
      issuer: proof.issuer,
      types: proof.types,
      ...(proof.subject === undefined ? {} : { subject: proof.subject }),
      claims: proof.claims,
      proofType: proof.proofType,
      validity: proof.validity,
      status,
      chain,
      ...(proof.holder === undefined ? {} : { holder: proof.holder }),
      credentialHash: hash,
    };
  }

  async #status(tenant: TenantRuntime, proof: ProofOutcome, options: VerifyOptions, nowMs: number): Promise<StatusCheckV1[]> {
    const checks: StatusCheckV1[] = [];
    if (proof.tokenStatus !== undefined) {
      const { ageMs } = tenant.tokenStatusLists.check(proof.tokenStatus, proof.issuer, nowMs);
      checks.push({ mechanism: 'TokenStatusList', purpose: 'revocation', source: proof.tokenStatus.uri, ageSeconds: Math.floor(ageMs / 1000) });
    }
    for (const entry of proof.statusEntries) {
      const type = stringsOf(entry['type']);
      if (type.includes('BitstringStatusListEntry')) {
        const parsed = readStatusListEntry(entry);
        const { set, ageMs } = tenant.statusLists.check(parsed, proof.issuer, nowMs);
        if (set) {
          throw new PavilionError(parsed.purpose === 'revocation' ? ErrorCodes.CREDENTIAL_REVOKED : ErrorCodes.CREDENTIAL_SUSPENDED, `credential is ${parsed.purpose === 'revocation' ? 'revoked' : 'suspended'} (status list ${parsed.listUrl.slice(0, 200)})`);
        }
        checks.push({ mechanism: 'BitstringStatusList', purpose: parsed.purpose, source: parsed.listUrl, ageSeconds: Math.floor(ageMs / 1000) });
      } else if (type.includes(ACCUMULATOR_ENTRY_TYPE)) {
        const parsed = readAccumulatorEntry(entry);
        const { ageMs } = await tenant.accumulators.check(parsed, proof.issuer, options.witnesses?.[parsed.revocationHandle], nowMs);
        checks.push({ mechanism: 'BlsAccumulator', purpose: 'revocation', source: parsed.accumulatorId, ageSeconds: Math.floor(ageMs / 1000) });
      } else {
        throw new PavilionError(ErrorCodes.CREDENTIAL_STATUS_INVALID, `status type ${type.join(',') || '(none)'} is not understood; the credential is refused rather than accepted unchecked`);
      }
    }
    if (checks.length === 0 && proof.types.some((t) => tenant.policy.statusLists.requiredForTypes.includes(t))) {
      throw new PavilionError(ErrorCodes.CREDENTIAL_STATUS_UNAVAILABLE, 'this tenant requires a status check for this credential type, and the credential has no status');
    }
    return checks;
  }

  /** Use `challenge` for this request: once per request, never again in a later one. */
  async #consumeChallenge(tenant: TenantRuntime, challenge: string, domain: string, nowMs: number, consumed: Set<string>): Promise<void> {
    const key = challengeKey(tenant.policy.tenantId, challenge, domain);
    if (consumed.has(key)) return;
    const lifetimeMs = nonceRetentionMs(tenant.policy);
    if (tenant.policy.presentations.requireIssuedChallenge && !(await this.#challenges.take(`${tenant.policy.tenantId}\u0000${challenge}`, nowMs))) {
      // a challenge already taken is a replay; one never minted (or expired) is not ours, and
      // is not recorded either (a flood of made-up challenges must not fill the store)
      if (await this.#nonces.seen(key, nowMs)) {
        throw new PavilionError(ErrorCodes.CREDENTIAL_REPLAYED, 'this challenge was already used: presentations are accepted once');
      }
      throw new PavilionError(ErrorCodes.CREDENTIAL_CHALLENGE_MISMATCH, 'this tenant accepts only challenges it issued, and this one was not issued or has expired');
    }
    if (!(await this.#nonces.consumeOnce(key, nowMs + lifetimeMs, nowMs))) {
      throw new PavilionError(ErrorCodes.CREDENTIAL_REPLAYED, 'this challenge was already used: presentations are accepted once');
    }
    consumed.add(key);
  }

  async #verifyStatusListCredential(loader: DocumentLoader, policy: CredentialPolicy, credential: unknown, url: string, nowMs: number): Promise<DecodedStatusList> {
    if (!isObject(credential)) throw new PavilionError(ErrorCodes.CREDENTIAL_STATUS_INVALID, 'a status list credential is a JSON object');
    try {
      const view = readW3cCredential(credential);
      checkFreshness(view.window, [], nowMs, { clockSkewMs: policy.freshness.clockSkewMs, maxAgeMsByType: {} });
      await (await dataIntegrity()).verifyDataIntegrityCredential(credential, { documentLoader: loader, nowMs, clockSkewMs: policy.freshness.clockSkewMs });
    } catch (error) {
      if (isPavilionError(error, ErrorCodes.CREDENTIAL_EXPIRED)) throw new PavilionError(ErrorCodes.CREDENTIAL_STATUS_STALE, `status list ${url.slice(0, 200)} expired`, { cause: error });
      throw new PavilionError(ErrorCodes.CREDENTIAL_STATUS_INVALID, `status list ${url.slice(0, 200)}: ${describeThrown(error)}`, { cause: error });
    }
    if (credential['id'] !== undefined && credential['id'] !== url) throw new PavilionError(ErrorCodes.CREDENTIAL_STATUS_INVALID, 'status list credential id differs from its URL');
    return decodeStatusListCredential(credential, url);
  }

  async #readAccreditation(tenant: TenantRuntime, raw: unknown, index: number): Promise<Accreditation> {
    if (!isObject(raw)) throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, 'an accreditation is a Data Integrity credential object');
    const view = readW3cCredential(raw);
    if (!view.types.includes('AccreditationCredential')) throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, 'type must include AccreditationCredential');
    // accreditations are checked for their proof here and for their validity window at use
    await (await dataIntegrity()).verifyDataIntegrityCredential(raw, { documentLoader: tenant.loader, nowMs: view.window.validFromMs ?? this.#clock(), clockSkewMs: tenant.policy.freshness.clockSkewMs });
    if (view.subject === undefined) throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, 'an accreditation names its subject issuer in credentialSubject.id');
    const scope = view.claims['accreditedFor'];
    if (!isObject(scope)) throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, 'credentialSubject.accreditedFor must be an object');
    const credentialTypes = stringsOf(scope['credentialTypes']);
    if (credentialTypes.length === 0) throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, 'accreditedFor.credentialTypes must list at least one type');
    const claims = scope['claims'] === undefined ? undefined : stringsOf(scope['claims']);
    const maxValiditySeconds = scope['maxValiditySeconds'];
    if (maxValiditySeconds !== undefined && (typeof maxValiditySeconds !== 'number' || !(maxValiditySeconds > 0))) {
      throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, 'accreditedFor.maxValiditySeconds must be a positive number');
    }
    return {
      id: typeof raw['id'] === 'string' ? raw['id'] : `accreditation#${index}`,
      issuer: view.issuer,
      subject: view.subject,
      credentialTypes,
      ...(claims === undefined ? {} : { claims }),
      ...(maxValiditySeconds === undefined ? {} : { maxValidityMs: maxValiditySeconds * 1000 }),
      ...(view.window.validFromMs === undefined ? {} : { validFromMs: view.window.validFromMs }),
      ...(view.window.validUntilMs === undefined ? {} : { validUntilMs: view.window.validUntilMs }),
    };
  }
}

/**
 * Refusals a copy of the same presentation would get again whenever it is shown (with this
 * configuration): a presentation refused only for these leaves its challenge unused. Anything
 * else (NOT_YET_VALID, STATUS_*, SUSPENDED, STATE_UNAVAILABLE, PROOF_UNAVAILABLE, DID_UNRESOLVED,
 * WITNESS_INVALID, CHAIN_INVALID, an internal error...) may pass later, so it uses the challenge up.
 */
const REFUSED_FOR_GOOD: ReadonlySet<string> = new Set([
  ErrorCodes.CREDENTIAL_MALFORMED, ErrorCodes.CREDENTIAL_TOO_LARGE, ErrorCodes.CREDENTIAL_FORMAT_UNSUPPORTED,
  ErrorCodes.CREDENTIAL_DOCUMENT_REFUSED, ErrorCodes.CREDENTIAL_CONTEXT_HASH_MISMATCH, ErrorCodes.CREDENTIAL_UNDEFINED_TERM,
  ErrorCodes.CREDENTIAL_CANONICALIZATION_LIMIT, ErrorCodes.CREDENTIAL_DID_UNSUPPORTED, ErrorCodes.CREDENTIAL_KEY_UNSUPPORTED,
  ErrorCodes.CREDENTIAL_PROOF_UNSUPPORTED, ErrorCodes.CREDENTIAL_SIGNATURE_INVALID, ErrorCodes.CREDENTIAL_ISSUER_MISMATCH,
  ErrorCodes.CREDENTIAL_EXPIRED, ErrorCodes.CREDENTIAL_TOO_OLD, ErrorCodes.CREDENTIAL_DISCLOSURE_INVALID,
  ErrorCodes.CREDENTIAL_KEY_BINDING_MISSING, ErrorCodes.CREDENTIAL_KEY_BINDING_INVALID, ErrorCodes.CREDENTIAL_CHALLENGE_MISMATCH,
  ErrorCodes.CREDENTIAL_DOMAIN_MISMATCH, ErrorCodes.CREDENTIAL_HOLDER_MISMATCH, ErrorCodes.CREDENTIAL_ISSUER_UNTRUSTED,
  ErrorCodes.CREDENTIAL_OUT_OF_SCOPE, ErrorCodes.CREDENTIAL_CHAIN_TOO_DEEP, ErrorCodes.CREDENTIAL_CHAIN_CYCLE,
  ErrorCodes.CREDENTIAL_REVOKED,
]);

/** Why work stopped by `signal` is refused: the PavilionError it was aborted with, else ERR_CREDENTIAL_DEADLINE_EXCEEDED. */
function abandoned(signal: AbortSignal): PavilionError {
  const reason: unknown = signal.reason;
  if (reason instanceof PavilionError) return reason;
  return new PavilionError(ErrorCodes.CREDENTIAL_DEADLINE_EXCEEDED, `credential verification was stopped: ${describeThrown(reason)}`, { cause: reason });
}

/** Start no further step (proof job, status or challenge look-up) once the request's deadline has passed. */
function stopIfAbandoned(signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw abandoned(signal);
}

/**
 * `work`'s outcome, or its refusal as soon as `signal` aborts: the answer does not wait for the
 * step in flight (a proof job or a Redis command, each with its own timeout). That step still
 * ends within its own timeout; the work then stops at its next stopIfAbandoned, and its outcome
 * is dropped (never unhandled).
 */
function beforeDeadline<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return work;
  work.catch(() => undefined);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(abandoned(signal));
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    void work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** What a refresh step that threw is reported as (describeThrown describes any value a status source rejected with). */
function refreshStepError(what: string, thrown: unknown): PavilionError {
  if (thrown instanceof PavilionError) return thrown;
  return new PavilionError(ErrorCodes.CREDENTIAL_STATUS_UNAVAILABLE, `refreshing ${what}: ${describeThrown(thrown)}`, { cause: thrown });
}

/** A used challenge's key in the nonce store: per tenant (the store bounds each tenant's share) and domain. */
function challengeKey(tenantId: string, challenge: string, domain: string): string {
  return `${tenantId}\u0000${domain}\u0000${challenge}`;
}

/**
 * How long a used challenge is remembered: as long as any proof answering it could still be
 * accepted. A presentation proof is accepted up to challengeLifetimeMs + skew after its
 * `created`, a KB-JWT up to keyBinding.maxAgeMs + skew after its `iat`, and either may be dated
 * up to one skew after the first use: forgetting the challenge sooner would let that proof
 * be replayed.
 */
function nonceRetentionMs(policy: CredentialPolicy): number {
  // + 1: both age bounds are inclusive, while a store entry is gone at its expiry
  return Math.max(policy.presentations.challengeLifetimeMs, policy.keyBinding.maxAgeMs) + 2 * policy.freshness.clockSkewMs + 1;
}

/**
 * A presentation proof is fresh: `created` (signed with the proof) at most challengeLifetimeMs +
 * skew ago and at most one skew ahead. Without it a captured presentation would verify forever
 * and only the challenge store, which forgets, would stand against its replay.
 */
function checkPresentationAge(presentation: JsonObject, policy: CredentialPolicy, nowMs: number): void {
  const skewMs = policy.freshness.clockSkewMs;
  const maxAgeMs = policy.presentations.challengeLifetimeMs;
  // every proof, not only the first: whichever one verified, none may be stale or undated
  for (const proof of asArray(presentation['proof'])) {
    const created = isObject(proof) ? proof['created'] : undefined;
    const createdMs = typeof created === 'string' ? Date.parse(created) : Number.NaN;
    if (!Number.isFinite(createdMs)) {
      throw new PavilionError(ErrorCodes.CREDENTIAL_KEY_BINDING_INVALID, 'presentation proof has no valid created time, so its age cannot be bounded');
    }
    if (createdMs > nowMs + skewMs) throw new PavilionError(ErrorCodes.CREDENTIAL_KEY_BINDING_INVALID, 'presentation proof created is in the future');
    if (nowMs - skewMs - createdMs > maxAgeMs) {
      throw new PavilionError(ErrorCodes.CREDENTIAL_KEY_BINDING_INVALID, `presentation proof is older than the challenge lifetime (${maxAgeMs} ms)`);
    }
  }
}

function viewFacts(view: ReturnType<typeof readW3cCredential>): Omit<ProofOutcome, 'format' | 'proofType'> {
  return {
    issuer: view.issuer,
    types: view.types,
    ...(view.subject === undefined ? {} : { subject: view.subject }),
    claims: view.claims,
    window: view.window,
    validity: view.validity,
    statusEntries: view.statusEntries,
  };
}

/**
 * The issuer a VC-JWT or SD-JWT VC would be attributed to once verified (VC-JWT: the credential's
 * `issuer` with `typ: vc+jwt`, else `iss`; SD-JWT VC: `iss`), read from its decoded JWT without
 * verifying anything, only to refuse an unknown issuer before the proof work; undefined when it
 * cannot be read (the proof check says what is wrong).
 */
function claimedJwtIssuer({ header, payload }: CompactJws, format: 'vc-jwt' | 'sd-jwt'): string | undefined {
  const issuer = format === 'vc-jwt' && header['typ'] === 'vc+jwt' ? nodeId(payload['issuer']) : payload['iss'];
  if (typeof issuer !== 'string' || issuer === '') return undefined;
  return format === 'sd-jwt' && !issuer.startsWith('did:') ? undefined : issuer; // an SD-JWT VC's iss is a DID, or it is malformed
}

/** RFC 7638 JWK thumbprint (SHA-256 over the required members in lexicographic order), named per RFC 9278. */
function jwkThumbprint(jwk: JsonObject): string {
  const members = jwk['kty'] === 'EC' ? { crv: jwk['crv'], kty: jwk['kty'], x: jwk['x'], y: jwk['y'] } : { crv: jwk['crv'], kty: jwk['kty'], x: jwk['x'] };
  return createHash('sha256').update(JSON.stringify(members)).digest('base64url');
}

export function toCredentialError(index: number, error: unknown): CredentialErrorV1 {
  const typed = error instanceof PavilionError ? error : new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, describeThrown(error), { cause: error });
  return { version: 1, index, code: typed.code, message: typed.message };
}
