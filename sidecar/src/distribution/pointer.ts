/**
 * A tenant's bundle pointer: the value of key `<tenant>` in the pointer KV bucket. Moving
 * it deploys; the key's history (KV revisions) is the deploy history. The bundle itself is
 * in the tenant's Object Store bucket under its SHA-256 digest, so a rollback only moves
 * the pointer back to bytes that are already there. Pure: parsing and encoding only.
 */
import { ErrorCodes, PavilionError } from '../lib/errors.ts';

export type PointerAction = 'push' | 'rollback';

export interface BundlePointer {
  readonly v: 1;
  readonly tenant: string;
  /** The manifest revision of the bundle. */
  readonly revision: string;
  /** Object name in the tenant's object bucket. */
  readonly object: string;
  /** Hex SHA-256 of the archive, checked after download. */
  readonly digest: string;
  readonly size_bytes: number;
  readonly action: PointerAction;
  readonly pushed_by: string;
  /** RFC 3339. */
  readonly pushed_at: string;
  /**
   * Where the object's one chunk is (`$O.<bucket>.C.<nuid>`), when it is stored in one
   * chunk: sidecars then read it with a single direct request. Only a shortcut: the bytes
   * are still checked against `digest` and `size_bytes`.
   */
  readonly object_nuid?: string;
  /** For a rollback: the deploy (KV revision) whose bundle it restores. */
  readonly restores?: number;
  readonly note?: string;
}

export interface PointerEntry {
  /** KV revision: a number the server assigns, increasing with every deploy of any tenant. */
  readonly sequence: number;
  readonly pointer: BundlePointer;
}

const DIGEST = /^[0-9a-f]{64}$/;

function invalid(message: string): PavilionError {
  return new PavilionError(ErrorCodes.BUNDLE_POINTER_INVALID, `bundle pointer is invalid: ${message}`);
}

export function parsePointer(bytes: Uint8Array, tenant: string): BundlePointer {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    throw invalid('not JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid('not an object');
  const p = value as Record<string, unknown>;
  if (p['v'] !== 1) throw invalid(`unsupported version ${JSON.stringify(p['v'])}`);
  if (p['tenant'] !== tenant) throw invalid(`names tenant ${JSON.stringify(p['tenant'])} under key ${tenant}`);
  for (const field of ['revision', 'object', 'pushed_by', 'pushed_at'] as const) {
    if (typeof p[field] !== 'string' || p[field] === '') throw invalid(`${field} must be a non-empty string`);
  }
  if (typeof p['digest'] !== 'string' || !DIGEST.test(p['digest'])) throw invalid('digest must be a hex SHA-256');
  // safe integers: a number past 2^53 reads as another, a size or a KV revision it does not name
  if (typeof p['size_bytes'] !== 'number' || !Number.isSafeInteger(p['size_bytes']) || p['size_bytes'] < 0) throw invalid('size_bytes must be a natural number');
  if (p['action'] !== 'push' && p['action'] !== 'rollback') throw invalid('action must be push or rollback');
  if (p['object_nuid'] !== undefined && (typeof p['object_nuid'] !== 'string' || !/^[A-Za-z0-9]{1,64}$/.test(p['object_nuid']))) throw invalid('object_nuid must be a NATS nuid');
  if (p['restores'] !== undefined && (typeof p['restores'] !== 'number' || !Number.isSafeInteger(p['restores']) || p['restores'] < 1)) throw invalid('restores must be a KV revision (a positive integer)');
  return value as BundlePointer;
}

export function encodePointer(pointer: BundlePointer): Uint8Array {
  return Buffer.from(JSON.stringify(pointer), 'utf8');
}
