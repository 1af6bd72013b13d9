/**
 * Checkpoint signing and verification. `CheckpointSigner` is the adapter interface (the
 * software signer and the PKCS#11 signer implement it); `Keyring` holds the public keys a
 * verifier trusts, by key id, old ones included, so checkpoints signed before a rotation
 * still verify. Signatures: ECDSA P-256 / SHA-256, r||s. node:crypto does the cryptography.
 */
import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCodes, PavilionError, describeThrown } from '../../lib/errors.ts';
import { sha256Hex } from '../../lib/sha256.ts';
import { checkpointMessage, type SignedCheckpointV1 } from './checkpoint.ts';

export interface CheckpointSigner {
  /** Names the key in every checkpoint it signs: `p256:` + hex of the first 16 bytes of SHA-256(SPKI DER). */
  readonly keyId: string;
  /** The public key, SPKI DER. */
  readonly publicKeySpki: Buffer;
  /** ECDSA P-256 over SHA-256(message); r||s, 64 bytes. */
  sign(message: Uint8Array): Promise<Buffer>;
  close(): Promise<void>;
}

/** Whether `signature` (r||s) is the P-256 / SHA-256 signature of `message` under `key`. */
export function p256Verifies(key: KeyObject, message: Uint8Array, signature: Uint8Array): boolean {
  return verify('sha256', message, { key, dsaEncoding: 'ieee-p1363' }, signature);
}

/** The key id of a P-256 public key (SPKI DER). */
export function keyIdOf(spki: Uint8Array): string {
  return `p256:${sha256Hex(spki).slice(0, 32)}`;
}

/** Check a P-256 public key and return its SPKI DER. */
export function p256Spki(key: KeyObject): Buffer {
  if (key.type !== 'public' || key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new PavilionError(ErrorCodes.AUDIT_SIGNER_CONFIG, 'checkpoint keys must be ECDSA P-256 public keys');
  }
  return key.export({ format: 'der', type: 'spki' });
}

export function publicKeyPem(spki: Uint8Array): string {
  return createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' }).export({ format: 'pem', type: 'spki' }).toString();
}

export class Keyring {
  readonly #keys = new Map<string, KeyObject>();

  /** Add a public key (PEM or SPKI DER); returns its key id. */
  add(key: string | Uint8Array): string {
    let object: KeyObject;
    try {
      object = typeof key === 'string'
        ? createPublicKey(key)
        : createPublicKey({ key: Buffer.from(key), format: 'der', type: 'spki' });
    } catch (error) {
      throw new PavilionError(ErrorCodes.AUDIT_SIGNER_CONFIG, `not a public key: ${describeThrown(error)}`, { cause: error });
    }
    const spki = p256Spki(object);
    const id = keyIdOf(spki);
    this.#keys.set(id, object);
    return id;
  }

  /**
   * Load every `*.pem` in a directory, or one PEM file. Key ids are computed from the keys,
   * never taken from file names, so a file cannot claim another key's id.
   */
  static load(path: string): Keyring {
    const ring = new Keyring();
    let files: string[];
    try {
      files = statSync(path).isDirectory()
        ? readdirSync(path).filter((f) => f.endsWith('.pem')).sort().map((f) => join(path, f))
        : [path];
    } catch (error) {
      throw new PavilionError(ErrorCodes.AUDIT_SIGNER_CONFIG, `cannot read public keys at ${path}: ${describeThrown(error)}`, { cause: error });
    }
    for (const file of files) {
      try {
        ring.add(readFileSync(file, 'utf8'));
      } catch (error) {
        throw new PavilionError(ErrorCodes.AUDIT_SIGNER_CONFIG, `cannot use the public key in ${file}: ${describeThrown(error)}`, { cause: error });
      }
    }
    if (ring.size === 0) throw new PavilionError(ErrorCodes.AUDIT_SIGNER_CONFIG, `no public keys (*.pem) at ${path}`);
    return ring;
  }

  get size(): number {
    return this.#keys.size;
  }

  ids(): string[] {
    return [...this.#keys.keys()];
  }

  /**
   * Verify a checkpoint's signature with the key it names. Returns the checkpoint, or throws
   * ERR_AUDIT_KEY_UNKNOWN (no such key here) / ERR_AUDIT_SIGNATURE_INVALID.
   */
  verifyCheckpoint(checkpoint: SignedCheckpointV1): SignedCheckpointV1 {
    const key = this.#keys.get(checkpoint.key_id);
    if (key === undefined) {
      throw new PavilionError(ErrorCodes.AUDIT_KEY_UNKNOWN, `checkpoint at tree size ${checkpoint.tree_size} is signed by key ${checkpoint.key_id}, which is not among the trusted keys`, {
        details: { keyId: checkpoint.key_id, treeSize: checkpoint.tree_size, trusted: this.ids() },
      });
    }
    const ok = p256Verifies(key, checkpointMessage(checkpoint), Buffer.from(checkpoint.signature, 'base64'));
    if (!ok) {
      throw new PavilionError(ErrorCodes.AUDIT_SIGNATURE_INVALID, `checkpoint at tree size ${checkpoint.tree_size}: the signature does not verify with key ${checkpoint.key_id}`, {
        details: { keyId: checkpoint.key_id, treeSize: checkpoint.tree_size },
      });
    }
    return checkpoint;
  }
}
