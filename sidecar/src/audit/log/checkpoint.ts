/**
 * Signed checkpoints (signed tree heads, RFC 9162 section 4.10 in spirit): a log's origin,
 * tree size, root hash, time and the id of the key that signed them. Pure.
 *
 * What is signed is this exact text (UTF-8, each line ending in "\n"):
 *
 *   pavilion.audit.checkpoint.v1
 *   <origin>
 *   <tree size, decimal>
 *   <root hash, lower-case hex>
 *   <timestamp, RFC 3339 UTC with milliseconds>
 *   <key id>
 *
 * The signature is ECDSA P-256 over SHA-256 of that text, as r||s (64 bytes, IEEE P1363),
 * whether it comes from the software signer or a PKCS#11 token, so one verifier serves both.
 */
import { ErrorCodes, PavilionError } from '../../lib/errors.ts';

export const CHECKPOINT_ALGORITHM = 'ecdsa-p256-sha256';

export interface CheckpointBody {
  readonly origin: string;
  readonly tree_size: number;
  readonly root_hash: string;
  readonly timestamp: string;
  readonly key_id: string;
}

/** A checkpoint as stored in the log and handed to verifiers. */
export interface SignedCheckpointV1 extends CheckpointBody {
  readonly version: 1;
  readonly algorithm: typeof CHECKPOINT_ALGORITHM;
  /** base64 of r||s. */
  readonly signature: string;
}

const ORIGIN = /^[A-Za-z0-9._~:/-]{1,200}$/;
const HEX32 = /^[0-9a-f]{64}$/;
const KEY_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

function invalid(message: string, details: Record<string, unknown> = {}): PavilionError {
  return new PavilionError(ErrorCodes.AUDIT_CHECKPOINT_INVALID, `checkpoint: ${message}`, { details });
}

export function checkpointMessage(body: CheckpointBody): Buffer {
  return Buffer.from(
    `pavilion.audit.checkpoint.v1\n${body.origin}\n${body.tree_size}\n${body.root_hash}\n${body.timestamp}\n${body.key_id}\n`,
    'utf8',
  );
}

export function isValidOrigin(origin: string): boolean {
  return ORIGIN.test(origin);
}

/** Check the shape of a parsed checkpoint (not its signature). Throws ERR_AUDIT_CHECKPOINT_INVALID. */
export function parseCheckpoint(value: unknown): SignedCheckpointV1 {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid('must be a JSON object');
  const v = value as Record<string, unknown>;
  const known = ['version', 'algorithm', 'origin', 'tree_size', 'root_hash', 'timestamp', 'key_id', 'signature'];
  for (const key of Object.keys(v)) if (!known.includes(key)) throw invalid(`unknown field ${JSON.stringify(key)}`, { field: key });
  if (v['version'] !== 1) throw invalid('version must be 1', { field: 'version' });
  if (v['algorithm'] !== CHECKPOINT_ALGORITHM) throw invalid(`algorithm must be ${CHECKPOINT_ALGORITHM}`, { field: 'algorithm' });
  const str = (key: string, pattern: RegExp): string => {
    const s = v[key];
    if (typeof s !== 'string' || !pattern.test(s)) throw invalid(`${key} is missing or malformed`, { field: key });
    return s;
  };
  const size = v['tree_size'];
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw invalid('tree_size must be a non-negative integer', { field: 'tree_size' });
  const timestamp = str('timestamp', TIMESTAMP);
  if (Number.isNaN(Date.parse(timestamp))) throw invalid('timestamp is not a valid time', { field: 'timestamp' });
  const signature = str('signature', BASE64);
  if (Buffer.from(signature, 'base64').length !== 64) throw invalid('signature must be 64 bytes (r||s)', { field: 'signature' });
  return {
    version: 1,
    algorithm: CHECKPOINT_ALGORITHM,
    origin: str('origin', ORIGIN),
    tree_size: size,
    root_hash: str('root_hash', HEX32),
    timestamp,
    key_id: str('key_id', KEY_ID),
    signature,
  };
}

/** Parse checkpoint JSON bytes or text. Throws ERR_AUDIT_CHECKPOINT_INVALID. */
export function decodeCheckpoint(bytes: Uint8Array | string): SignedCheckpointV1 {
  let parsed: unknown;
  try {
    parsed = JSON.parse(typeof bytes === 'string' ? bytes : Buffer.from(bytes).toString('utf8'));
  } catch (error) {
    throw new PavilionError(ErrorCodes.AUDIT_CHECKPOINT_INVALID, 'checkpoint: not JSON', { cause: error });
  }
  return parseCheckpoint(parsed);
}
