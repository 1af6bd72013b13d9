/**
 * W3C Bitstring Status List v1.0 (Recommendation, 2025-05-15): revocation and suspension read
 * from a status list credential that the tenant's cache holds - never fetched on the request
 * path. The cache keeps each list with the time it was verified; a list older than its TTL is
 * refreshed in the background from the configured source, and a list older than its maximum age
 * is refused (`ERR_CREDENTIAL_STATUS_STALE`): when status cannot be known, the answer is no.
 * A list issued (`validFrom`, or `issuanceDate` in VC 1.1) before the one held is refused the
 * same way: a stale copy from before a revocation, still validly signed, must not replace it.
 *
 * Decoding (spec section 3.2 "Bitstring Generation Algorithm" and 3.3 "Validate Algorithm"):
 * `encodedList` is a Multibase base64url (`u`) string of the GZIP-compressed bitstring; index 0
 * is the left-most (most significant) bit of the first byte; the uncompressed list is at least
 * 16 KB (131,072 entries) for herd privacy. Only `statusSize` 1 is accepted.
 */
import { gunzipSync, gzipSync } from 'node:zlib';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import { isObject, stringsOf, nodeId, asArray, type JsonObject } from './json.ts';
import { parseDateTime, refuseOlderStatus } from './freshness.ts';

export const MIN_STATUS_LIST_BITS = 131_072;
/** Upper bound on a decompressed list (a gzip bomb stops here). */
export const MAX_STATUS_LIST_BYTES = 16 * 1024 * 1024;

export type StatusPurpose = 'revocation' | 'suspension';

export interface StatusListEntry {
  readonly purpose: StatusPurpose;
  readonly index: number;
  readonly listUrl: string;
}

function invalid(message: string, cause?: unknown): PavilionError {
  return new PavilionError(ErrorCodes.CREDENTIAL_STATUS_INVALID, message, cause === undefined ? {} : { cause });
}

/** A `BitstringStatusListEntry` from a credential's `credentialStatus`. */
export function readStatusListEntry(entry: JsonObject): StatusListEntry {
  const purpose = entry['statusPurpose'];
  if (purpose !== 'revocation' && purpose !== 'suspension') throw invalid(`statusPurpose ${String(purpose)} is not accepted (revocation, suspension)`);
  if (entry['statusSize'] !== undefined && entry['statusSize'] !== 1 && entry['statusSize'] !== '1') throw invalid('only statusSize 1 is accepted');
  const indexText = entry['statusListIndex'];
  if (typeof indexText !== 'string' || !/^(0|[1-9]\d{0,9})$/.test(indexText)) throw invalid('statusListIndex must be a non-negative integer string');
  const listUrl = entry['statusListCredential'];
  if (typeof listUrl !== 'string' || listUrl === '') throw invalid('statusListCredential must be a URL');
  return { purpose, index: Number(indexText), listUrl };
}

export interface DecodedStatusList {
  readonly url: string;
  readonly issuer: string;
  readonly purpose: StatusPurpose;
  readonly bits: Uint8Array;
  readonly validUntilMs?: number;
  /** When the issuer issued this list (validFrom / issuanceDate): orders two lists for one URL. */
  readonly issuedAtMs?: number;
}

/** Decode the subject of a (verified) `BitstringStatusListCredential`. */
export function decodeStatusListCredential(credential: JsonObject, url: string): DecodedStatusList {
  if (!stringsOf(credential['type']).includes('BitstringStatusListCredential')) throw invalid('not a BitstringStatusListCredential');
  const issuer = nodeId(credential['issuer']);
  if (issuer === undefined) throw invalid('status list credential has no issuer');
  const subject = asArray(credential['credentialSubject'])[0];
  if (!isObject(subject) || subject['type'] !== 'BitstringStatusList') throw invalid('credentialSubject must be a BitstringStatusList');
  const purposes = stringsOf(subject['statusPurpose']);
  if (purposes.length !== 1 || (purposes[0] !== 'revocation' && purposes[0] !== 'suspension')) throw invalid('status list must have one statusPurpose, revocation or suspension');
  const encoded = subject['encodedList'];
  if (typeof encoded !== 'string' || !encoded.startsWith('u') || !/^u[A-Za-z0-9_-]+$/.test(encoded)) throw invalid('encodedList must be multibase base64url (u...)');
  let bits: Uint8Array;
  try {
    bits = new Uint8Array(gunzipSync(Buffer.from(encoded.slice(1), 'base64url'), { maxOutputLength: MAX_STATUS_LIST_BYTES }));
  } catch (error) {
    throw invalid(`encodedList does not decompress: ${describeThrown(error)}`, error);
  }
  if (bits.length * 8 < MIN_STATUS_LIST_BITS) throw invalid(`status list has ${bits.length * 8} entries, fewer than the ${MIN_STATUS_LIST_BITS} required`);
  const validUntil = credential['validUntil'];
  const issued = credential['validFrom'] !== undefined ? { value: credential['validFrom'], field: 'validFrom' } : credential['issuanceDate'] !== undefined ? { value: credential['issuanceDate'], field: 'issuanceDate' } : undefined;
  return {
    url,
    issuer,
    purpose: purposes[0] as StatusPurpose,
    bits,
    ...(validUntil === undefined ? {} : { validUntilMs: parseDateTime(validUntil, 'validUntil') }),
    ...(issued === undefined ? {} : { issuedAtMs: parseDateTime(issued.value, issued.field) }),
  };
}

export function bitAt(bits: Uint8Array, index: number): boolean {
  const byte = bits[Math.floor(index / 8)];
  if (byte === undefined) throw invalid(`statusListIndex ${index} is outside the list`);
  return (byte & (0x80 >> index % 8)) !== 0;
}

/** Issuer side: the `encodedList` for a list of `lengthBits` entries with `setIndexes` set. */
export function encodeStatusList(lengthBits: number, setIndexes: Iterable<number>): string {
  if (!Number.isInteger(lengthBits) || lengthBits < MIN_STATUS_LIST_BITS || lengthBits % 8 !== 0) {
    throw invalid(`a status list needs a multiple of 8 entries, at least ${MIN_STATUS_LIST_BITS}`);
  }
  const bits = new Uint8Array(lengthBits / 8);
  for (const index of setIndexes) {
    if (!Number.isInteger(index) || index < 0 || index >= lengthBits) throw invalid(`index ${index} is outside the list`);
    bits[Math.floor(index / 8)]! |= 0x80 >> index % 8;
  }
  return `u${gzipSync(bits).toString('base64url')}`;
}

/**
 * Adapter: where status information is refreshed from (HTTP client, file, message bus): a
 * status list credential (a JSON object) or a Status List Token (a compact JWT string).
 */
export interface StatusListSource {
  fetch(url: string, signal: AbortSignal): Promise<unknown>;
}

/**
 * Status lists re-read from files the operator keeps current (a sync job, a mounted volume): the
 * offline source. Only configured URLs are served; anything else is refused, not guessed.
 */
export class FileStatusListSource implements StatusListSource {
  readonly #paths: ReadonlyMap<string, string>;

  constructor(files: ReadonlyArray<{ readonly url: string; readonly path: string }>) {
    this.#paths = new Map(files.map((f) => [f.url, f.path]));
  }

  async fetch(url: string, signal: AbortSignal): Promise<unknown> {
    const path = this.#paths.get(url);
    if (path === undefined) throw new PavilionError(ErrorCodes.CREDENTIAL_STATUS_UNAVAILABLE, `no configured file for status list ${url.slice(0, 200)}`);
    const { readFile } = await import('node:fs/promises');
    const text = (await readFile(path, { encoding: 'utf8', signal })).trim();
    if (!text.startsWith('{')) return text; // a Status List Token (compact JWT)
    try {
      return JSON.parse(text);
    } catch (error) {
      throw invalid(`status list file for ${url.slice(0, 200)} is not JSON`, error);
    }
  }
}

export interface StatusListCachePolicy {
  /** After this, a list is refreshed in the background (still used meanwhile). */
  readonly ttlMs: number;
  /** After this, a list is not used: status checks fail closed. */
  readonly maxAgeMs: number;
}

interface CachedList {
  readonly list: DecodedStatusList;
  readonly verifiedAtMs: number;
}

/**
 * The status lists of one tenant. `admit` verifies and stores a list (the proof check is
 * injected: it is the same Data Integrity verification credentials get); `check` answers from
 * memory only. Refreshing is explicit (`refreshDue`) so the owner decides when and how often.
 */
export class StatusListCache {
  readonly #lists = new Map<string, CachedList>();
  readonly #refreshing = new Set<string>();

  constructor(
    readonly policy: StatusListCachePolicy,
    readonly verifyList: (credential: unknown, url: string, nowMs: number) => Promise<DecodedStatusList>,
    readonly source?: StatusListSource,
  ) {
    if (!(policy.ttlMs > 0) || !(policy.maxAgeMs >= policy.ttlMs)) throw new PavilionError(ErrorCodes.CONFIG_INVALID, 'status lists: ttlMs must be > 0 and maxAgeMs >= ttlMs');
  }

  /** Verify a status list credential and hold it as of `nowMs`. */
  async admit(url: string, credential: unknown, nowMs: number): Promise<void> {
    const list = await this.verifyList(credential, url, nowMs);
    const existing = this.#lists.get(url);
    if (existing !== undefined && existing.verifiedAtMs > nowMs) return; // never go back in time
    refuseOlderStatus(`status list ${url.slice(0, 200)}`, list.issuedAtMs, existing?.list.issuedAtMs);
    this.#lists.set(url, { list, verifiedAtMs: nowMs });
  }

  /** The status bit for `entry` of a credential issued by `issuer`. Throws when it cannot be known. */
  check(entry: StatusListEntry, issuer: string, nowMs: number): { set: boolean; ageMs: number } {
    const cached = this.#lists.get(entry.listUrl);
    if (cached === undefined) {
      throw new PavilionError(ErrorCodes.CREDENTIAL_STATUS_UNAVAILABLE, `status list ${entry.listUrl.slice(0, 200)} is not held by this tenant; it is never fetched on the request path`);
    }
    const ageMs = nowMs - cached.verifiedAtMs;
    if (ageMs > this.policy.maxAgeMs) {
      throw new PavilionError(ErrorCodes.CREDENTIAL_STATUS_STALE, `status list ${entry.listUrl.slice(0, 200)} was verified ${Math.round(ageMs / 1000)} s ago, more than the ${Math.round(this.policy.maxAgeMs / 1000)} s allowed`);
    }
    if (cached.list.validUntilMs !== undefined && nowMs > cached.list.validUntilMs) {
      throw new PavilionError(ErrorCodes.CREDENTIAL_STATUS_STALE, `status list ${entry.listUrl.slice(0, 200)} expired`);
    }
    if (cached.list.issuer !== issuer) throw invalid('the status list was not issued by the credential\'s issuer');
    if (cached.list.purpose !== entry.purpose) throw invalid(`the status list's purpose is ${cached.list.purpose}, the entry's ${entry.purpose}`);
    return { set: bitAt(cached.list.bits, entry.index), ageMs };
  }

  /** Refresh every list older than its TTL from the source; failures keep the old list (until max age). */
  async refreshDue(nowMs: number, signal: AbortSignal): Promise<{ refreshed: string[]; failed: Array<{ url: string; error: PavilionError }> }> {
    const refreshed: string[] = [];
    const failed: Array<{ url: string; error: PavilionError }> = [];
    if (this.source === undefined) return { refreshed, failed };
    for (const [url, cached] of this.#lists) {
      if (nowMs - cached.verifiedAtMs < this.policy.ttlMs || this.#refreshing.has(url)) continue;
      this.#refreshing.add(url);
      try {
        const credential = await this.source.fetch(url, signal);
        await this.admit(url, credential, nowMs);
        refreshed.push(url);
      } catch (error) {
        failed.push({ url, error: error instanceof PavilionError ? error : new PavilionError(ErrorCodes.CREDENTIAL_STATUS_UNAVAILABLE, `refreshing ${url}: ${describeThrown(error)}`, { cause: error }) });
      } finally {
        this.#refreshing.delete(url);
      }
    }
    return { refreshed, failed };
  }
}
