/**
 * The embedded default signer: an ECDSA P-256 key in a PKCS#8 PEM file (mode 0600), created
 * on first use. Signing is node:crypto's. Suitable for development and single-node
 * deployments; production keys belong in an HSM (see Pkcs11Signer).
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { ErrorCodes, PavilionError, describeThrown } from '../../lib/errors.ts';
import { keyIdOf, p256Spki, type CheckpointSigner } from './signer.ts';

export class SoftwareSigner implements CheckpointSigner {
  readonly keyId: string;
  readonly publicKeySpki: Buffer;
  readonly #privateKey: KeyObject;

  constructor(privateKey: KeyObject) {
    this.#privateKey = privateKey;
    this.publicKeySpki = p256Spki(createPublicKey(privateKey));
    this.keyId = keyIdOf(this.publicKeySpki);
  }

  /** A fresh in-memory key (tests, or callers that store the key themselves). */
  static generate(): SoftwareSigner {
    return new SoftwareSigner(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey);
  }

  /** Load the key in `file`, or create it there (0600) when the file does not exist. */
  static loadOrCreate(file: string): SoftwareSigner {
    let pem: string | undefined;
    try {
      pem = readFileSync(file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new PavilionError(ErrorCodes.AUDIT_SIGNER_CONFIG, `cannot read the checkpoint key ${file}: ${describeThrown(error)}`, { cause: error });
      }
    }
    if (pem === undefined) {
      const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
      writeFileSync(file, privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600, flag: 'wx' });
      return new SoftwareSigner(privateKey);
    }
    let key: KeyObject;
    try {
      key = createPrivateKey(pem);
    } catch (error) {
      throw new PavilionError(ErrorCodes.AUDIT_SIGNER_CONFIG, `the checkpoint key ${file} is not a private key: ${describeThrown(error)}`, { cause: error });
    }
    if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
      throw new PavilionError(ErrorCodes.AUDIT_SIGNER_CONFIG, `the checkpoint key ${file} must be an ECDSA P-256 key`);
    }
    return new SoftwareSigner(key);
  }

  async sign(message: Uint8Array): Promise<Buffer> {
    try {
      return sign('sha256', message, { key: this.#privateKey, dsaEncoding: 'ieee-p1363' });
    } catch (error) {
      throw new PavilionError(ErrorCodes.AUDIT_SIGNER_FAILED, `software signer: ${describeThrown(error)}`, { cause: error });
    }
  }

  async close(): Promise<void> {}
}
