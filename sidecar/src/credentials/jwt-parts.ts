/** Decoding compact JWS parts of untrusted input, with typed errors. */
import { ErrorCodes, PavilionError } from '../lib/errors.ts';
import { isObject, type JsonObject } from './json.ts';

/** A compact JWS decoded from its text: the header and payload are those of signingInput. */
export interface CompactJws {
  readonly header: JsonObject;
  readonly payload: JsonObject;
  readonly signingInput: string;
  readonly signature: string;
}

const B64U = /^[A-Za-z0-9_-]+$/;

export function decodeCompactJws(text: string, what: string): CompactJws {
  const parts = text.split('.');
  if (parts.length !== 3 || !parts.every((p, i) => B64U.test(p) || (i === 2 && p === ''))) {
    throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, `${what} is not a compact JWS`);
  }
  const [h, p, s] = parts as [string, string, string];
  let header: unknown;
  let payload: unknown;
  try {
    header = JSON.parse(Buffer.from(h, 'base64url').toString('utf8'));
    payload = JSON.parse(Buffer.from(p, 'base64url').toString('utf8'));
  } catch (error) {
    throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, `${what}: header or payload is not base64url JSON`, { cause: error });
  }
  if (!isObject(header) || !isObject(payload)) throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, `${what}: header and payload must be JSON objects`);
  if (header['crit'] !== undefined) throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, `${what}: critical header parameters are not supported`);
  return { header, payload, signingInput: `${h}.${p}`, signature: s };
}

/** The compact JWS text `jws` was decoded from: the exact bytes its signature is checked over. */
export function compactJwsText(jws: CompactJws): string {
  return `${jws.signingInput}.${jws.signature}`;
}
