/**
 * The receipt a transport hands back with a decision when asked (`x-pavilion-receipt: 1`):
 * which leaf of which tenant's audit log holds the decision event. The Data API puts it in
 * the response body; ext_authz puts it in a header (base64url of this JSON) and in the
 * CheckResponse's `dynamic_metadata.receipt`. A client keeps it and later fetches the
 * inclusion proof (`GET /v1/tenants/{tenant}/audit/decisions/{decision_id}/proof`), whose
 * event must hash to `leaf_hash`.
 */
import { ErrorCodes, PavilionError } from '../lib/errors.ts';
import type { DecisionReceiptV1 } from './log/index.ts';

/** Asks for the decision's receipt (value `1`); on an ext_authz answer it carries the receipt. */
export const RECEIPT_HEADER = 'x-pavilion-receipt';

export interface TransportReceiptV1 {
  readonly decision_id: string;
  readonly tenant: string;
  readonly origin: string;
  readonly leaf_index: number;
  /** RFC 9162 leaf hash of the logged event, hex. */
  readonly leaf_hash: string;
  /** SHA-256 of the canonical JSON of the logged input and result (absent when absent). */
  readonly input_sha256?: string;
  readonly result_sha256?: string;
}

export function transportReceipt(tenant: string, receipt: DecisionReceiptV1): TransportReceiptV1 {
  return {
    decision_id: receipt.decision_id,
    tenant,
    origin: receipt.origin,
    leaf_index: receipt.leaf_index,
    leaf_hash: receipt.leaf_hash,
    ...(receipt.input_sha256 === undefined ? {} : { input_sha256: receipt.input_sha256 }),
    ...(receipt.result_sha256 === undefined ? {} : { result_sha256: receipt.result_sha256 }),
  };
}

/** The header form: base64url (no padding) of the receipt's JSON. */
export function encodeReceiptHeader(receipt: TransportReceiptV1): string {
  return Buffer.from(JSON.stringify(receipt), 'utf8').toString('base64url');
}

const HEX64 = /^[0-9a-f]{64}$/;

/**
 * Read a receipt header back (what a client or upstream does). Returns the receipt or throws
 * ERR_AUDIT_PROOF_INVALID when it is not one; it proves nothing by itself - check it against
 * the proof endpoint's answer and the checkpoint's signature.
 */
export function decodeReceiptHeader(value: string): TransportReceiptV1 {
  const invalid = (why: string): PavilionError => new PavilionError(ErrorCodes.AUDIT_PROOF_INVALID, `receipt header: ${why}`, { details: { reason: 'malformed' } });
  if (!/^[A-Za-z0-9_-]{1,8192}$/.test(value)) throw invalid('not base64url');
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(value, 'base64url').toString('utf8'));
  } catch (error) {
    throw new PavilionError(ErrorCodes.AUDIT_PROOF_INVALID, 'receipt header: not JSON', { cause: error, details: { reason: 'malformed' } });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw invalid('not a JSON object');
  const r = parsed as Record<string, unknown>;
  for (const key of ['decision_id', 'tenant', 'origin'] as const) if (typeof r[key] !== 'string' || r[key] === '') throw invalid(`${key} must be a non-empty string`);
  if (!Number.isSafeInteger(r['leaf_index']) || (r['leaf_index'] as number) < 0) throw invalid('leaf_index must be an integer >= 0');
  for (const key of ['leaf_hash', 'input_sha256', 'result_sha256'] as const) {
    if ((key === 'leaf_hash' || r[key] !== undefined) && (typeof r[key] !== 'string' || !HEX64.test(r[key]))) throw invalid(`${key} must be 64 hex digits`);
  }
  return r as unknown as TransportReceiptV1;
}
