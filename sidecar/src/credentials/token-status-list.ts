/**
 * Token Status List (IETF draft-ietf-oauth-status-list, the status mechanism of SD-JWT VC):
 * a credential's `status.status_list` names an index and the URI of a Status List Token, a JWT
 * (`typ: statuslist+jwt`) signed by the credential's issuer whose `status_list` holds `bits`
 * (1, 2, 4 or 8 per entry) and `lst`, the base64url of the zlib-DEFLATE-compressed byte array.
 * Entry i sits in byte floor(i * bits / 8), counting from the least significant bits.
 * Values: 0 valid, 1 invalid (revoked), 2 suspended; anything else is refused here.
 *
 * Tokens are held in a per-tenant cache, verified when admitted, never fetched on the request
 * path, and refused once older than the tenant's maximum age or past their `exp`. A token
 * issued (`iat`) before the one held is refused: a stale copy from before a revocation, still
 * validly signed, must not bring the credential back. Decoding is
 * done here with node:zlib (bounded output) rather than `@sd-jwt/jwt-status-list`, which
 * inflates without a size limit and expands every entry into a JS number.
 */
import { inflateSync } from 'node:zlib';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import type { DidResolver } from './did-resolver.ts';
import { parseNumericDate, refuseOlderStatus } from './freshness.ts';
import { assertAlgorithm, publicKeyFromJwk, verifyJwsSignature } from './jws-keys.ts';
import { decodeCompactJws } from './jwt-parts.ts';
import { isObject } from './json.ts';
import { MAX_STATUS_LIST_BYTES, type StatusListSource } from './bitstring-status-list.ts';

export interface TokenStatusReference {
  readonly idx: number;
  readonly uri: string;
}

function invalid(message: string, cause?: unknown): PavilionError {
  return new PavilionError(ErrorCodes.CREDENTIAL_STATUS_INVALID, `status list token: ${message}`, cause === undefined ? {} : { cause });
}

/** The `status` claim of an SD-JWT VC. */
export function readTokenStatusReference(status: unknown): TokenStatusReference {
  const list = isObject(status) ? status['status_list'] : undefined;
  if (!isObject(list) || typeof list['uri'] !== 'string' || list['uri'] === '' || !Number.isSafeInteger(list['idx']) || (list['idx'] as number) < 0) {
    throw invalid('status.status_list needs idx (a non-negative integer) and uri');
  }
  return { idx: list['idx'] as number, uri: list['uri'] };
}

interface HeldToken {
  readonly issuer: string;
  readonly bits: 1 | 2 | 4 | 8;
  readonly bytes: Uint8Array;
  readonly expiresAtMs?: number;
  /** The token's own `iat`: what orders two tokens for the same URI (local time does not). */
  readonly issuedAtMs?: number;
  readonly verifiedAtMs: number;
}

export function statusValueAt(bytes: Uint8Array, bits: 1 | 2 | 4 | 8, index: number): number {
  const bitOffset = index * bits;
  const byte = bytes[Math.floor(bitOffset / 8)];
  if (byte === undefined) throw invalid(`index ${index} is outside the list`);
  return (byte >> (bitOffset % 8)) & ((1 << bits) - 1);
}

export class TokenStatusListCache {
  readonly #tokens = new Map<string, HeldToken>();

  constructor(
    readonly maxAgeMs: number,
    readonly dids: DidResolver,
    /** After this a held token is refreshed from `source` (still used meanwhile). */
    readonly ttlMs: number = maxAgeMs,
    readonly source?: StatusListSource,
  ) {}

  /** Refresh tokens older than the TTL from the source; failures keep the old token until max age. */
  async refreshDue(nowMs: number, signal: AbortSignal): Promise<Array<{ url: string; error: PavilionError }>> {
    const failed: Array<{ url: string; error: PavilionError }> = [];
    if (this.source === undefined) return failed;
    for (const [uri, held] of this.#tokens) {
      if (nowMs - held.verifiedAtMs < this.ttlMs) continue;
      try {
        await this.admit(uri, await this.source.fetch(uri, signal), nowMs);
      } catch (error) {
        failed.push({ url: uri, error: error instanceof PavilionError ? error : new PavilionError(ErrorCodes.CREDENTIAL_STATUS_UNAVAILABLE, `refreshing ${uri}: ${describeThrown(error)}`, { cause: error }) });
      }
    }
    return failed;
  }

  /** Verify a Status List Token for `uri` (signature by a key of its `iss`, `sub` = uri) and hold it. */
  async admit(uri: string, jwt: unknown, nowMs: number): Promise<void> {
    if (typeof jwt !== 'string') throw invalid('a Status List Token is a compact JWT string');
    const { header, payload, signingInput, signature } = decodeCompactJws(jwt, 'status list token');
    if (header['typ'] !== 'statuslist+jwt') throw invalid('typ must be statuslist+jwt');
    const iss = payload['iss'];
    if (typeof iss !== 'string' || !iss.startsWith('did:')) throw invalid('iss must be a DID');
    const kid = typeof header['kid'] === 'string' ? header['kid'] : iss;
    if (kid !== iss && !kid.startsWith(`${iss}#`)) throw invalid('kid is not a key of iss');
    // the list speaks for the issuer: its key must be under the issuer's assertionMethod
    const method = await this.dids.verificationMethod(kid, 'assertionMethod');
    const key = publicKeyFromJwk(method.publicKeyJwk);
    assertAlgorithm(header['alg'], key);
    if (!verifyJwsSignature(signingInput, signature, key)) throw new PavilionError(ErrorCodes.CREDENTIAL_SIGNATURE_INVALID, 'status list token signature does not verify');
    if (payload['sub'] !== uri) throw invalid('sub differs from the URI it is held for');
    const expiresAtMs = payload['exp'] === undefined ? undefined : parseNumericDate(payload['exp'], 'exp');
    const issuedAtMs = payload['iat'] === undefined ? undefined : parseNumericDate(payload['iat'], 'iat');
    if (expiresAtMs !== undefined && nowMs > expiresAtMs) throw new PavilionError(ErrorCodes.CREDENTIAL_STATUS_STALE, 'status list token expired');
    const list = payload['status_list'];
    if (!isObject(list)) throw invalid('status_list must be an object');
    const bits = list['bits'];
    if (bits !== 1 && bits !== 2 && bits !== 4 && bits !== 8) throw invalid('bits must be 1, 2, 4 or 8');
    const lst = list['lst'];
    if (typeof lst !== 'string' || !/^[A-Za-z0-9_-]+$/.test(lst)) throw invalid('lst must be base64url');
    let bytes: Uint8Array;
    try {
      bytes = new Uint8Array(inflateSync(Buffer.from(lst, 'base64url'), { maxOutputLength: MAX_STATUS_LIST_BYTES }));
    } catch (error) {
      throw invalid(`lst does not decompress: ${describeThrown(error)}`, error);
    }
    const held = this.#tokens.get(uri);
    if (held !== undefined && held.verifiedAtMs > nowMs) return;
    refuseOlderStatus(`status list token ${uri.slice(0, 200)}`, issuedAtMs, held?.issuedAtMs);
    this.#tokens.set(uri, { issuer: method.controller, bits, bytes, verifiedAtMs: nowMs, ...(expiresAtMs === undefined ? {} : { expiresAtMs }), ...(issuedAtMs === undefined ? {} : { issuedAtMs }) });
  }

  /** The status of a credential issued by `issuer`; throws unless it is known and valid now. */
  check(reference: TokenStatusReference, issuer: string, nowMs: number): { ageMs: number } {
    const held = this.#tokens.get(reference.uri);
    if (held === undefined) throw new PavilionError(ErrorCodes.CREDENTIAL_STATUS_UNAVAILABLE, `status list token ${reference.uri.slice(0, 200)} is not held by this tenant; it is never fetched on the request path`);
    const ageMs = nowMs - held.verifiedAtMs;
    if (ageMs > this.maxAgeMs) throw new PavilionError(ErrorCodes.CREDENTIAL_STATUS_STALE, `status list token ${reference.uri.slice(0, 200)} was verified ${Math.round(ageMs / 1000)} s ago`);
    if (held.expiresAtMs !== undefined && nowMs > held.expiresAtMs) throw new PavilionError(ErrorCodes.CREDENTIAL_STATUS_STALE, 'status list token expired');
    if (held.issuer !== issuer) throw invalid('the list was not issued by the credential\'s issuer');
    const value = statusValueAt(held.bytes, held.bits, reference.idx);
    if (value === 1) throw new PavilionError(ErrorCodes.CREDENTIAL_REVOKED, `credential is revoked (status list token ${reference.uri.slice(0, 200)})`);
    if (value === 2) throw new PavilionError(ErrorCodes.CREDENTIAL_SUSPENDED, `credential is suspended (status list token ${reference.uri.slice(0, 200)})`);
    if (value !== 0) throw invalid(`status value ${value} is not understood; the credential is refused`);
    return { ageMs };
  }
}
