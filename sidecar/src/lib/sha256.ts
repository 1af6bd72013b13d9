/** Hex SHA-256 of text (UTF-8) or bytes: content addresses, digests and checksums. */
import { createHash } from 'node:crypto';

export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}
