/**
 * A tenant's credential policy: parsed once from JSON, validated, given defaults, frozen. Units
 * are in the names. Unknown keys are refused. Files (tenant contexts, did:web documents) are read
 * through the injected `readFile`, and their SHA-256 pins are checked when the verifier is built.
 *
 *   {
 *     "maxCredentialBytes": 65536, "clockSkewMs": 60000, "verifyTimeoutMs": 5000,
 *     "maxAgeMsByType": {"KycCredential": 31536000000}, "defaultMaxAgeMs": null,
 *     "contexts": [{"url": "https://...", "sha256Hex": "...", "path": "ctx.jsonld"}],
 *     "didWeb": [{"did": "did:web:...", "sha256Hex": "...", "path": "did.json"}],
 *     "trustAnchors": [{"issuer": "did:...", "credentialTypes": ["KycCredential"], "claims": [...], "maxValidityMs": ...}],
 *     "accreditations": [{...signed AccreditationCredential...}], "maxChainDepth": 2,
 *     "statusLists": {"ttlMs": 300000, "maxAgeMs": 3600000, "requiredForTypes": ["KycCredential"]},
 *     "accumulators": [{"id": "...", "issuer": "did:...", "publicKeyHex": "..."}], "accumulatorMaxAgeMs": 3600000,
 *     "keyBinding": {"required": true, "maxAgeMs": 300000},
 *     "presentations": {"challengeLifetimeMs": 600000, "requireIssuedChallenge": false},
 *     "domain": "https://bank.example",
 *     "statusListFiles": [{"url": "https://...", "path": "list.json"}],
 *     "statusListUrls": ["https://..."],
 *     "tokenStatusListFiles": [{"uri": "https://...", "path": "list.jwt"}],
 *     "tokenStatusListUrls": ["https://..."],
 *     "accumulatorStateFiles": ["acc-state.jws"]
 *   }
 */
import { bool, deepFreeze, fail, int, objectAt, refuseUnknown, section, str, type Json } from '../lib/config-fields.ts';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import { sha256Hex } from '../lib/sha256.ts';
import type { PinnedAccumulator } from './accumulator-registry.ts';
import type { PinnedDidDocument } from './did-resolver.ts';
import type { FreshnessPolicy } from './freshness.ts';
import type { TrustAnchor } from './issuer-trust.ts';
import type { TenantContext } from './pinned-contexts.ts';

export interface CredentialPolicy {
  readonly tenantId: string;
  readonly maxCredentialBytes: number;
  /**
   * One deadline for all the credentials of one request (every proof job, status and challenge
   * look-up together, each of which has its own timeout too): those not verified by then are
   * refused with ERR_CREDENTIAL_DEADLINE_EXCEEDED, and the policy decides on the rest.
   */
  readonly verifyTimeoutMs: number;
  readonly freshness: FreshnessPolicy;
  readonly contexts: readonly TenantContext[];
  readonly didWeb: readonly PinnedDidDocument[];
  readonly trustAnchors: readonly TrustAnchor[];
  /** Signed AccreditationCredentials; verified when the verifier is built. */
  readonly accreditations: readonly unknown[];
  readonly maxChainDepth: number;
  readonly statusLists: { readonly ttlMs: number; readonly maxAgeMs: number; readonly requiredForTypes: readonly string[] };
  readonly accumulators: readonly PinnedAccumulator[];
  readonly accumulatorMaxAgeMs: number;
  readonly keyBinding: { readonly required: boolean; readonly maxAgeMs: number };
  readonly presentations: {
    readonly challengeLifetimeMs: number;
    /** Accept only challenges this verifier minted (CredentialVerifier.issueChallenge), once each. */
    readonly requireIssuedChallenge: boolean;
  };
  /** This verifier's identity for holder binding (presentation `domain`, KB-JWT `aud`). */
  readonly domain?: string;
  /**
   * Status list credentials held from the start (verified when the verifier starts) and re-read
   * from `path` when past their TTL (FileStatusListSource).
   */
  readonly initialStatusLists: ReadonlyArray<{ readonly url: string; readonly path: string; readonly bytes: Uint8Array }>;
  /**
   * Bitstring status list credentials fetched over HTTPS (plain HTTP only for a loopback host)
   * when the verifier starts and again when past their TTL (HttpStatusListSource).
   */
  readonly statusListUrls: readonly string[];
  /** Status List Tokens (SD-JWT VC status, compact JWT) held from the start. */
  readonly initialTokenStatusLists: ReadonlyArray<{ readonly uri: string; readonly path: string; readonly jwt: string }>;
  /** Status List Tokens fetched over HTTPS (as `statusListUrls`), served as `application/statuslist+jwt`. */
  readonly tokenStatusListUrls: readonly string[];
  /** Signed accumulator states (compact JWS) held from the start. */
  readonly initialAccumulatorStates: readonly string[];
}

const KiB = 1024;

export function defaultCredentialPolicy(tenantId: string): CredentialPolicy {
  return {
    tenantId,
    maxCredentialBytes: 64 * KiB,
    verifyTimeoutMs: 5_000,
    freshness: { clockSkewMs: 60_000, maxAgeMsByType: {} },
    contexts: [],
    didWeb: [],
    trustAnchors: [],
    accreditations: [],
    maxChainDepth: 2,
    statusLists: { ttlMs: 5 * 60_000, maxAgeMs: 60 * 60_000, requiredForTypes: [] },
    accumulators: [],
    accumulatorMaxAgeMs: 60 * 60_000,
    keyBinding: { required: true, maxAgeMs: 5 * 60_000 },
    presentations: { challengeLifetimeMs: 10 * 60_000, requireIssuedChallenge: false },
    initialStatusLists: [],
    statusListUrls: [],
    initialTokenStatusLists: [],
    tokenStatusListUrls: [],
    initialAccumulatorStates: [],
  };
}

/** An optional array of non-empty strings. */
function strings(o: Json, key: string, path: string): string[] | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string' && s !== '')) fail(`${path}.${key}`, 'must be an array of non-empty strings');
  return v as string[];
}

/** An array (absent: empty). */
function arr(o: Json, key: string, path: string): unknown[] {
  const v = o[key] ?? [];
  if (!Array.isArray(v)) fail(`${path}.${key}`, 'must be an array');
  return v;
}

const DAY_MS = 24 * 60 * 60_000;

/**
 * `readFile` reads a path exactly as written in the policy; `resolvePath` (default: unchanged)
 * gives the path stored for later re-reads (status list files).
 */
export function parseCredentialPolicy(
  tenantId: string,
  raw: unknown,
  readFile: (path: string) => Uint8Array,
  resolvePath: (path: string) => string = (path) => path,
): CredentialPolicy {
  const d = defaultCredentialPolicy(tenantId);
  const p = `$.credentials.${tenantId}`;
  const root = objectAt(raw ?? {}, p);
  refuseUnknown(root, ['maxCredentialBytes', 'verifyTimeoutMs', 'clockSkewMs', 'maxAgeMsByType', 'defaultMaxAgeMs', 'contexts', 'didWeb', 'trustAnchors', 'accreditations', 'maxChainDepth', 'statusLists', 'accumulators', 'accumulatorMaxAgeMs', 'keyBinding', 'presentations', 'domain', 'statusListFiles', 'statusListUrls', 'tokenStatusListFiles', 'tokenStatusListUrls', 'accumulatorStateFiles'], p);

  const read = (path: string, at: string): Uint8Array => {
    try {
      return readFile(path);
    } catch (error) {
      return fail(at, `cannot read ${path}: ${describeThrown(error)}`, error);
    }
  };

  const maxAgeRaw = objectAt(root['maxAgeMsByType'] ?? {}, `${p}.maxAgeMsByType`);
  const maxAgeMsByType: Record<string, number> = {};
  for (const type of Object.keys(maxAgeRaw)) maxAgeMsByType[type] = int(maxAgeRaw, type, `${p}.maxAgeMsByType`, 0, 1, 100 * 365 * DAY_MS);
  const defaultMaxAgeMs = root['defaultMaxAgeMs'] === undefined ? undefined : int(root, 'defaultMaxAgeMs', p, 0, 1, 100 * 365 * DAY_MS);

  const contexts = arr(root, 'contexts', p).map((c, i): TenantContext => {
    const at = `${p}.contexts[${i}]`;
    const o = objectAt(c, at);
    refuseUnknown(o, ['url', 'sha256Hex', 'path'], at);
    const pinned = str(o, 'sha256Hex', at);
    if (!/^[0-9a-fA-F]{64}$/.test(pinned)) fail(`${at}.sha256Hex`, 'must be 64 hex digits');
    const bytes = read(str(o, 'path', at), at);
    const actual = sha256Hex(bytes);
    if (actual !== pinned.toLowerCase()) {
      throw new PavilionError(ErrorCodes.CREDENTIAL_CONTEXT_HASH_MISMATCH, `credentials ${at}: context SHA-256 ${actual} differs from the pin`);
    }
    return { url: str(o, 'url', at), sha256Hex: pinned, bytes };
  });

  const didWeb = arr(root, 'didWeb', p).map((c, i): PinnedDidDocument => {
    const at = `${p}.didWeb[${i}]`;
    const o = objectAt(c, at);
    refuseUnknown(o, ['did', 'sha256Hex', 'path'], at);
    const did = str(o, 'did', at);
    if (!did.startsWith('did:web:')) fail(`${at}.did`, 'must be a did:web');
    const bytes = read(str(o, 'path', at), at);
    const actual = sha256Hex(bytes);
    if (actual !== str(o, 'sha256Hex', at).toLowerCase()) {
      throw new PavilionError(ErrorCodes.CREDENTIAL_CONTEXT_HASH_MISMATCH, `credentials ${at}: did:web document SHA-256 ${actual} differs from the pin`);
    }
    let document: unknown;
    try {
      document = JSON.parse(Buffer.from(bytes).toString('utf8'));
    } catch (error) {
      fail(at, 'document is not JSON', error);
    }
    return { did, document: objectAt(document, at) };
  });

  const trustAnchors = arr(root, 'trustAnchors', p).map((a, i): TrustAnchor => {
    const at = `${p}.trustAnchors[${i}]`;
    const o = objectAt(a, at);
    refuseUnknown(o, ['issuer', 'credentialTypes', 'claims', 'maxValidityMs'], at);
    const claims = strings(o, 'claims', at);
    const maxValidityMs = o['maxValidityMs'] === undefined ? undefined : int(o, 'maxValidityMs', at, 0, 1, 100 * 365 * DAY_MS);
    return {
      issuer: str(o, 'issuer', at),
      credentialTypes: strings(o, 'credentialTypes', at) ?? fail(`${at}.credentialTypes`, 'is required (use ["*"] for any type)'),
      ...(claims === undefined ? {} : { claims }),
      ...(maxValidityMs === undefined ? {} : { maxValidityMs }),
    };
  });

  const statusRaw = section(root, 'statusLists', p, ['ttlMs', 'maxAgeMs', 'requiredForTypes']);
  const ttlMs = int(statusRaw, 'ttlMs', `${p}.statusLists`, d.statusLists.ttlMs, 1000, 7 * DAY_MS);
  const statusMaxAgeMs = int(statusRaw, 'maxAgeMs', `${p}.statusLists`, Math.max(d.statusLists.maxAgeMs, ttlMs), 1000, 30 * DAY_MS);
  if (statusMaxAgeMs < ttlMs) fail(`${p}.statusLists.maxAgeMs`, 'must be at least ttlMs');

  const accumulators = arr(root, 'accumulators', p).map((a, i): PinnedAccumulator => {
    const at = `${p}.accumulators[${i}]`;
    const o = objectAt(a, at);
    refuseUnknown(o, ['id', 'issuer', 'publicKeyHex'], at);
    return { id: str(o, 'id', at), issuer: str(o, 'issuer', at), publicKeyHex: str(o, 'publicKeyHex', at).toLowerCase() };
  });

  const kb = section(root, 'keyBinding', p, ['required', 'maxAgeMs']);
  const keyBindingRequired = bool(kb, 'required', `${p}.keyBinding`, d.keyBinding.required);
  const presentations = section(root, 'presentations', p, ['challengeLifetimeMs', 'requireIssuedChallenge']);
  const requireIssuedChallenge = bool(presentations, 'requireIssuedChallenge', `${p}.presentations`, d.presentations.requireIssuedChallenge);

  const initialStatusLists = arr(root, 'statusListFiles', p).map((f, i) => {
    const at = `${p}.statusListFiles[${i}]`;
    const o = objectAt(f, at);
    refuseUnknown(o, ['url', 'path'], at);
    const path = str(o, 'path', at);
    return { url: str(o, 'url', at), path: resolvePath(path), bytes: read(path, at) };
  });
  /** A status source URL: https (http only for a loopback host), not also served from a file. */
  const statusUrls = (field: 'statusListUrls' | 'tokenStatusListUrls', files: ReadonlyArray<{ readonly url: string }>, filesField: string): string[] => {
    const urls = arr(root, field, p).map((u, i) => {
      const at = `${p}.${field}[${i}]`;
      if (typeof u !== 'string') fail(at, 'must be a URL');
      let url: URL;
      try {
        url = new URL(u);
      } catch {
        fail(at, 'must be a URL');
      }
      const loopback = ['127.0.0.1', '[::1]', 'localhost'].includes(url.hostname);
      if (url.protocol !== 'https:' && !(url.protocol === 'http:' && loopback)) fail(at, 'must be an https:// URL (http:// only for a loopback host)');
      if (files.some((f) => f.url === u)) fail(at, `is also in ${filesField}: one source per list`);
      return u;
    });
    if (urls.length > 256) fail(`${p}.${field}`, 'at most 256 lists');
    return urls;
  };
  const statusListUrls = statusUrls('statusListUrls', initialStatusLists, 'statusListFiles');
  const initialTokenStatusLists = arr(root, 'tokenStatusListFiles', p).map((f, i) => {
    const at = `${p}.tokenStatusListFiles[${i}]`;
    const o = objectAt(f, at);
    refuseUnknown(o, ['uri', 'path'], at);
    const path = str(o, 'path', at);
    return { uri: str(o, 'uri', at), path: resolvePath(path), jwt: Buffer.from(read(path, at)).toString('utf8').trim() };
  });
  const tokenStatusListUrls = statusUrls('tokenStatusListUrls', initialTokenStatusLists.map((t) => ({ url: t.uri })), 'tokenStatusListFiles');
  const initialAccumulatorStates = arr(root, 'accumulatorStateFiles', p).map((f, i) => {
    const at = `${p}.accumulatorStateFiles[${i}]`;
    if (typeof f !== 'string' || f === '') fail(at, 'must be a file path');
    return Buffer.from(read(f, at)).toString('utf8').trim();
  });
  const domain = root['domain'] === undefined ? undefined : str(root, 'domain', p);

  return deepFreeze({
    tenantId,
    ...(domain === undefined ? {} : { domain }),
    initialStatusLists,
    statusListUrls,
    initialTokenStatusLists,
    tokenStatusListUrls,
    initialAccumulatorStates,
    maxCredentialBytes: int(root, 'maxCredentialBytes', p, d.maxCredentialBytes, 256, 16 * 1024 * KiB),
    verifyTimeoutMs: int(root, 'verifyTimeoutMs', p, d.verifyTimeoutMs, 10, 60_000),
    freshness: {
      clockSkewMs: int(root, 'clockSkewMs', p, d.freshness.clockSkewMs, 0, 10 * 60_000),
      maxAgeMsByType,
      ...(defaultMaxAgeMs === undefined ? {} : { defaultMaxAgeMs }),
    },
    contexts,
    didWeb,
    trustAnchors,
    accreditations: arr(root, 'accreditations', p),
    maxChainDepth: int(root, 'maxChainDepth', p, d.maxChainDepth, 0, 8),
    statusLists: { ttlMs, maxAgeMs: statusMaxAgeMs, requiredForTypes: strings(statusRaw, 'requiredForTypes', `${p}.statusLists`) ?? [] },
    accumulators,
    accumulatorMaxAgeMs: int(root, 'accumulatorMaxAgeMs', p, d.accumulatorMaxAgeMs, 1000, 30 * DAY_MS),
    keyBinding: {
      required: keyBindingRequired,
      maxAgeMs: int(kb, 'maxAgeMs', `${p}.keyBinding`, d.keyBinding.maxAgeMs, 1000, DAY_MS),
    },
    presentations: {
      challengeLifetimeMs: int(presentations, 'challengeLifetimeMs', `${p}.presentations`, d.presentations.challengeLifetimeMs, 1000, DAY_MS),
      requireIssuedChallenge,
    },
  });
}
