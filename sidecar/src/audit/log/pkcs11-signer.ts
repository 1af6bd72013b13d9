/**
 * Checkpoint signing with a key held in a PKCS#11 token (an HSM; SoftHSM2 in tests and
 * development), through pkcs11js.
 *
 * - The key is ECDSA P-256, generated on the token as a token object that is sensitive and
 *   never extractable, usable for signing only (no decrypt, unwrap, derive). An existing key
 *   found by label is refused if it is extractable or not sensitive.
 * - The message is hashed here (SHA-256, node:crypto) and the token signs the digest with
 *   CKM_ECDSA (SoftHSM 2.6 has no CKM_ECDSA_SHA256); the result is r||s, 64 bytes, the same
 *   encoding the software signer produces, so one verifier serves both.
 * - `C_Initialize` is called with CKF_OS_LOCKING_OK (without it, concurrent native calls can
 *   corrupt the heap); signing runs on pkcs11js's worker thread (`C_SignAsync`), one at a
 *   time per signer.
 * - One `Pkcs11Module` per library per process (PKCS#11 allows one C_Initialize); it hands out
 *   signers for any number of keys and tokens, which is how rotation works: a new key label,
 *   and the old key's public key kept for verifiers.
 * - The token is found by its label, not its slot number (slots renumber when tokens are
 *   added). The PIN is passed in by the caller (read it from the environment or a secret
 *   file, never from the config file).
 *
 * Every failure is ERR_AUDIT_SIGNER_CONFIG (setup: module, token, PIN, key) or
 * ERR_AUDIT_SIGNER_FAILED (a signature that could not be made), with the PKCS#11 error kept
 * as `cause`.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import type * as Pkcs11Types from 'pkcs11js';
import { ErrorCodes, PavilionError, describeThrown } from '../../lib/errors.ts';
import { keyIdOf, type CheckpointSigner } from './signer.ts';

type Pkcs11Lib = typeof Pkcs11Types;
type Handle = Buffer;

/** DER of the P-256 curve OID 1.2.840.10045.3.1.7 (CKA_EC_PARAMS). */
const P256_PARAMS = Buffer.from('06082a8648ce3d030107', 'hex');
/** SPKI DER prefix of an uncompressed P-256 point (id-ecPublicKey, prime256v1, BIT STRING). */
const P256_SPKI_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex');

function configError(message: string, cause?: unknown): PavilionError {
  return new PavilionError(ErrorCodes.AUDIT_SIGNER_CONFIG, `PKCS#11: ${message}${cause === undefined ? '' : `: ${describeThrown(cause)}`}`, cause === undefined ? {} : { cause });
}

export interface Pkcs11KeyOptions {
  readonly tokenLabel: string;
  readonly pin: string;
  /** CKA_LABEL of the key pair on the token. */
  readonly keyLabel: string;
  /** Generate the key pair when the token has none with this label (default false: refuse). */
  readonly generate?: boolean;
}

export interface Pkcs11KeyAttributes {
  readonly extractable: boolean;
  readonly sensitive: boolean;
  readonly neverExtractable: boolean;
  readonly token: boolean;
}

export class Pkcs11Module {
  readonly #lib: Pkcs11Lib;
  readonly #p11: Pkcs11Types.PKCS11;
  readonly #sessions: Handle[] = [];
  #closed = false;

  private constructor(lib: Pkcs11Lib, p11: Pkcs11Types.PKCS11) {
    this.#lib = lib;
    this.#p11 = p11;
  }

  /** Load and initialise a PKCS#11 library (e.g. /usr/lib/softhsm/libsofthsm2.so). */
  static open(modulePath: string): Pkcs11Module {
    let lib: Pkcs11Lib;
    try {
      lib = createRequire(import.meta.url)('pkcs11js') as Pkcs11Lib;
    } catch (error) {
      throw configError('the optional dependency pkcs11js is not installed (npm install, with a C++ toolchain)', error);
    }
    const p11 = new lib.PKCS11();
    try {
      p11.load(modulePath);
    } catch (error) {
      throw configError(`cannot load module ${modulePath}`, error);
    }
    try {
      p11.C_Initialize({ flags: lib.CKF_OS_LOCKING_OK });
    } catch (error) {
      throw configError(`C_Initialize failed for ${modulePath} (one Pkcs11Module per library per process)`, error);
    }
    return new Pkcs11Module(lib, p11);
  }

  #slotOf(tokenLabel: string): Handle {
    let matches: Handle[];
    try {
      matches = this.#p11.C_GetSlotList(true).filter((slot) => this.#p11.C_GetTokenInfo(slot).label.trim() === tokenLabel);
    } catch (error) {
      throw configError(`listing the tokens failed`, error);
    }
    if (matches.length === 0) throw configError(`no token labelled ${JSON.stringify(tokenLabel)}`);
    if (matches.length > 1) throw configError(`${matches.length} tokens are labelled ${JSON.stringify(tokenLabel)}`);
    return matches[0]!;
  }

  #find(session: Handle, template: Pkcs11Types.Template, what: string): Handle[] {
    try {
      this.#p11.C_FindObjectsInit(session, template);
      try {
        return this.#p11.C_FindObjects(session, 16);
      } finally {
        this.#p11.C_FindObjectsFinal(session);
      }
    } catch (error) {
      throw configError(`looking up ${what} failed`, error);
    }
  }

  /** C_GetAttributeValue, its failure typed (ERR_AUDIT_SIGNER_CONFIG naming what was read). */
  #attributes(session: Handle, object: Handle, template: Pkcs11Types.Template, what: string): Pkcs11Types.TemplateResult {
    try {
      return this.#p11.C_GetAttributeValue(session, object, template);
    } catch (error) {
      throw configError(`reading ${what} failed`, error);
    }
  }

  /** A signer for the key `keyLabel` on the token `tokenLabel` (generated there if asked). */
  async signer(options: Pkcs11KeyOptions): Promise<Pkcs11Signer> {
    if (this.#closed) throw configError('the module is closed');
    const lib = this.#lib;
    const p11 = this.#p11;
    const slot = this.#slotOf(options.tokenLabel);
    let session: Handle;
    try {
      session = p11.C_OpenSession(slot, lib.CKF_SERIAL_SESSION | lib.CKF_RW_SESSION);
    } catch (error) {
      throw configError(`cannot open a session on token ${options.tokenLabel}`, error);
    }
    this.#sessions.push(session);
    try {
      p11.C_Login(session, lib.CKU_USER, options.pin);
    } catch (error) {
      if ((error as { code?: unknown }).code !== lib.CKR_USER_ALREADY_LOGGED_IN) throw configError(`login to token ${options.tokenLabel} failed`, error);
    }
    const label = options.keyLabel;
    let privateKeys = this.#find(session, [
      { type: lib.CKA_CLASS, value: lib.CKO_PRIVATE_KEY },
      { type: lib.CKA_KEY_TYPE, value: lib.CKK_EC },
      { type: lib.CKA_LABEL, value: label },
    ], `the private key ${JSON.stringify(label)}`);
    if (privateKeys.length === 0) {
      if (options.generate !== true) throw configError(`token ${options.tokenLabel} has no EC private key labelled ${JSON.stringify(label)}`);
      const id = randomBytes(16);
      try {
        await p11.C_GenerateKeyPairAsync(
          session,
          { mechanism: lib.CKM_EC_KEY_PAIR_GEN },
          [
            { type: lib.CKA_TOKEN, value: true },
            { type: lib.CKA_LABEL, value: label },
            { type: lib.CKA_ID, value: id },
            { type: lib.CKA_EC_PARAMS, value: P256_PARAMS },
            { type: lib.CKA_VERIFY, value: true },
            { type: lib.CKA_ENCRYPT, value: false },
            { type: lib.CKA_WRAP, value: false },
            { type: lib.CKA_DERIVE, value: false },
          ],
          [
            { type: lib.CKA_TOKEN, value: true },
            { type: lib.CKA_PRIVATE, value: true },
            { type: lib.CKA_LABEL, value: label },
            { type: lib.CKA_ID, value: id },
            { type: lib.CKA_SENSITIVE, value: true },
            { type: lib.CKA_EXTRACTABLE, value: false },
            { type: lib.CKA_SIGN, value: true },
            { type: lib.CKA_DECRYPT, value: false },
            { type: lib.CKA_UNWRAP, value: false },
            { type: lib.CKA_DERIVE, value: false },
          ],
        );
      } catch (error) {
        throw configError(`generating key ${JSON.stringify(label)} on token ${options.tokenLabel} failed`, error);
      }
      privateKeys = this.#find(session, [
        { type: lib.CKA_CLASS, value: lib.CKO_PRIVATE_KEY },
        { type: lib.CKA_LABEL, value: label },
      ], `the private key ${JSON.stringify(label)}`);
    }
    if (privateKeys.length !== 1) throw configError(`token ${options.tokenLabel} has ${privateKeys.length} private keys labelled ${JSON.stringify(label)}; labels must be unique`);
    const privateKey = privateKeys[0]!;
    const attributes = this.#keyAttributes(session, privateKey);
    if (attributes.extractable || !attributes.sensitive) {
      throw configError(`key ${JSON.stringify(label)} is extractable or not sensitive; checkpoint keys must never leave the token`);
    }
    const params = this.#attributes(session, privateKey, [{ type: lib.CKA_EC_PARAMS }], `CKA_EC_PARAMS of key ${JSON.stringify(label)}`)[0]?.value;
    if (params === undefined || !params.equals(P256_PARAMS)) throw configError(`key ${JSON.stringify(label)} is not on curve P-256`);
    const publicKeys = this.#find(session, [
      { type: lib.CKA_CLASS, value: lib.CKO_PUBLIC_KEY },
      { type: lib.CKA_LABEL, value: label },
    ], `the public key ${JSON.stringify(label)}`);
    if (publicKeys.length !== 1) throw configError(`token ${options.tokenLabel} has ${publicKeys.length} public keys labelled ${JSON.stringify(label)}`);
    const point = this.#attributes(session, publicKeys[0]!, [{ type: lib.CKA_EC_POINT }], `CKA_EC_POINT of public key ${JSON.stringify(label)}`)[0]?.value;
    return new Pkcs11Signer(p11, lib, session, privateKey, ecPointToSpki(point), attributes);
  }

  #keyAttributes(session: Handle, key: Handle): Pkcs11KeyAttributes {
    const lib = this.#lib;
    const values = this.#attributes(session, key, [
      { type: lib.CKA_EXTRACTABLE },
      { type: lib.CKA_SENSITIVE },
      { type: lib.CKA_NEVER_EXTRACTABLE },
      { type: lib.CKA_TOKEN },
    ], 'the private key\'s attributes');
    const flag = (i: number): boolean => values[i]?.value[0] === 1;
    return { extractable: flag(0), sensitive: flag(1), neverExtractable: flag(2), token: flag(3) };
  }

  /** Close every session and finalize the library. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const session of this.#sessions) {
      try {
        this.#p11.C_CloseSession(session);
      } catch {
        // already closed
      }
    }
    try {
      this.#p11.C_Finalize();
    } catch {
      // nothing left to release
    }
  }
}

/** CKA_EC_POINT (a DER OCTET STRING around the uncompressed point, or the bare point) to SPKI DER. */
export function ecPointToSpki(value: Buffer | undefined): Buffer {
  if (value === undefined) throw configError('the public key has no CKA_EC_POINT');
  let point = value;
  if (value.length === 67 && value[0] === 0x04 && value[1] === 0x41) point = value.subarray(2);
  if (point.length !== 65 || point[0] !== 0x04) throw configError(`CKA_EC_POINT of ${value.length} bytes is not an uncompressed P-256 point`);
  return Buffer.concat([P256_SPKI_PREFIX, point]);
}

export class Pkcs11Signer implements CheckpointSigner {
  readonly keyId: string;
  readonly publicKeySpki: Buffer;
  readonly attributes: Pkcs11KeyAttributes;
  readonly #p11: Pkcs11Types.PKCS11;
  readonly #lib: Pkcs11Lib;
  readonly #session: Handle;
  readonly #key: Handle;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(p11: Pkcs11Types.PKCS11, lib: Pkcs11Lib, session: Handle, key: Handle, spki: Buffer, attributes: Pkcs11KeyAttributes) {
    this.#p11 = p11;
    this.#lib = lib;
    this.#session = session;
    this.#key = key;
    this.publicKeySpki = spki;
    this.keyId = keyIdOf(spki);
    this.attributes = attributes;
  }

  sign(message: Uint8Array): Promise<Buffer> {
    // C_SignInit and C_Sign must not interleave on one session: one signature at a time.
    const run = this.#queue.then(async () => {
      const digest = createHash('sha256').update(message).digest();
      try {
        this.#p11.C_SignInit(this.#session, { mechanism: this.#lib.CKM_ECDSA }, this.#key);
        const signature = await this.#p11.C_SignAsync(this.#session, digest, Buffer.alloc(64));
        if (signature.length !== 64) throw new Error(`the token returned ${signature.length} bytes`);
        return Buffer.from(signature);
      } catch (error) {
        throw new PavilionError(ErrorCodes.AUDIT_SIGNER_FAILED, `PKCS#11 signing failed: ${describeThrown(error)}`, { cause: error });
      }
    });
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async close(): Promise<void> {
    await this.#queue;
  }
}
