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
 *   time per signer. Every other call is synchronous: the configured signer runs all of this
 *   on a thread of its own (pkcs11-thread-signer.ts), never on the event loop.
 * - One `Pkcs11Module` per library per process (PKCS#11 allows one C_Initialize); it hands out
 *   signers for any number of keys and tokens, which is how rotation works: a new key label,
 *   and the old key's public key kept for verifiers.
 * - The token is found by its label, not its slot number (slots renumber when tokens are
 *   added). The PIN is passed in by the caller (read it from the environment or a secret
 *   file, never from the config file).
 * - A session that goes away (HSM restart, C_CloseAllSessions, a network HSM reconnecting,
 *   the login dropped) is replaced when a signature fails for that reason: a new session,
 *   login, the key found again by label exactly as at start (never generated), and that one
 *   signature retried once, but only if the key found has the public key the signer started
 *   with. A different key under the label is refused for good (ERR_AUDIT_SIGNER_KEY_CHANGED):
 *   the key id in checkpoints names the old key, and a new key is a rotation, not a reconnect.
 *
 * Every failure is ERR_AUDIT_SIGNER_CONFIG (setup: module, token, PIN, key),
 * ERR_AUDIT_SIGNER_FAILED (a signature that could not be made) or
 * ERR_AUDIT_SIGNER_KEY_CHANGED (above), with the PKCS#11 error kept as `cause`.
 */
import { createHash, createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import { createRequire } from 'node:module';
import type * as Pkcs11Types from 'pkcs11js';
import { ErrorCodes, PavilionError, describeThrown, isPavilionError } from '../../lib/errors.ts';
import { keyIdOf, p256Verifies, type CheckpointSigner } from './signer.ts';

type Pkcs11Lib = typeof Pkcs11Types;
type Handle = Buffer;

/** DER of the P-256 curve OID 1.2.840.10045.3.1.7 (CKA_EC_PARAMS). */
const P256_PARAMS = Buffer.from('06082a8648ce3d030107', 'hex');
/** SPKI DER prefix of an uncompressed P-256 point (id-ecPublicKey, prime256v1, BIT STRING). */
const P256_SPKI_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex');

function configError(message: string, cause?: unknown): PavilionError {
  return new PavilionError(ErrorCodes.AUDIT_SIGNER_CONFIG, `PKCS#11: ${message}${cause === undefined ? '' : `: ${describeThrown(cause)}`}`, cause === undefined ? {} : { cause });
}

function keyChanged(keyLabel: string, tokenLabel: string, expected: string, found: string): PavilionError {
  return new PavilionError(
    ErrorCodes.AUDIT_SIGNER_KEY_CHANGED,
    `PKCS#11: the key labelled ${JSON.stringify(keyLabel)} on token ${tokenLabel} is now ${found}, not ${expected} that this signer signs as; refusing to sign (a new key is a rotation: configure it and restart)`,
    { details: { keyLabel, tokenLabel, expectedKeyId: expected, foundKeyId: found } },
  );
}

function signingFailed(cause: unknown, when = ''): PavilionError {
  return new PavilionError(ErrorCodes.AUDIT_SIGNER_FAILED, `PKCS#11 signing failed${when}: ${describeThrown(cause)}`, { cause });
}

/** The PKCS#11 return value of a pkcs11js error (Pkcs11Error.code), if it has one. */
function returnValueOf(error: unknown): number | undefined {
  const code = typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
  return typeof code === 'number' ? code : undefined;
}

/**
 * The return values that mean the session or its login is gone, not that this signature is
 * wrong: only these make the signer open a new session and retry. Anything else (a deleted
 * key, a key no longer allowed to sign, a full device) would fail the same way again.
 */
function sessionLostCodes(lib: Pkcs11Lib): ReadonlySet<number> {
  return new Set([
    lib.CKR_SESSION_HANDLE_INVALID,
    lib.CKR_SESSION_CLOSED,
    lib.CKR_USER_NOT_LOGGED_IN,
    lib.CKR_DEVICE_REMOVED,
    lib.CKR_TOKEN_NOT_PRESENT,
    lib.CKR_DEVICE_ERROR,
  ]);
}

/** Whether `error`, or a cause of it (a typed failure wraps the token's), is a login the token refused for its PIN. */
export function isPinRefusal(error: unknown): boolean {
  const lib = loadedLib;
  if (lib === undefined) return false;
  const refused = pinRefusedCodes(lib);
  for (let e = error, depth = 0; e !== undefined && e !== null && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    const rv = returnValueOf(e);
    if (rv !== undefined) return refused.has(rv);
  }
  return false;
}

/**
 * Login failures that another attempt with the same PIN cannot fix and that tokens count
 * toward locking the user PIN: after one, the signer stops trying (see #replaceSession).
 */
function pinRefusedCodes(lib: Pkcs11Lib): ReadonlySet<number> {
  return new Set([lib.CKR_PIN_INCORRECT, lib.CKR_PIN_INVALID, lib.CKR_PIN_LEN_RANGE, lib.CKR_PIN_EXPIRED, lib.CKR_PIN_LOCKED]);
}

/** pkcs11js once loaded (its CKR_* constants), for isPinRefusal. */
let loadedLib: Pkcs11Lib | undefined;

/** After a reopen failed, the next one waits this long (a token that is down is not hammered). */
const REOPEN_BACKOFF_MS = 5_000;

/** A replacement session and the key handle in it, found again and checked by the module. */
export interface Pkcs11Reopened {
  readonly session: Handle;
  readonly key: Handle;
}

/** Opens a new session for a signer whose session was lost; refuses a key whose SPKI is not `expected`. */
export type Pkcs11Reopen = (expected: Buffer) => Promise<Pkcs11Reopened>;

interface FoundKey {
  readonly privateKey: Handle;
  readonly spki: Buffer;
  readonly attributes: Pkcs11KeyAttributes;
}

export interface Pkcs11KeyOptions {
  readonly tokenLabel: string;
  readonly pin: string;
  /** CKA_LABEL of the key pair on the token. */
  readonly keyLabel: string;
  /** Generate the key pair when the token has none with this label (default false: refuse). */
  readonly generate?: boolean;
  /**
   * Accept a key that was not always non-extractable (CKA_NEVER_EXTRACTABLE false: imported
   * with C_CreateObject, or once allowed out). Default false: its material may exist off the
   * token, so the HSM would not be the only holder of the checkpoint key.
   */
  readonly allowImportedKey?: boolean;
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
  /** Whether this module's C_Initialize did it (only then may close() finalize the library). */
  readonly #initialized: boolean;
  #closed = false;

  private constructor(lib: Pkcs11Lib, p11: Pkcs11Types.PKCS11, initialized: boolean) {
    this.#lib = lib;
    this.#p11 = p11;
    this.#initialized = initialized;
  }

  /**
   * Load and initialise a PKCS#11 library (e.g. /usr/lib/softhsm/libsofthsm2.so).
   * `acceptInitialized`: a library this process initialised already (a signing thread that
   * stopped without finalizing it, or one still inside a call) is used as it is, and never
   * finalized by this module.
   */
  static open(modulePath: string, options: { readonly acceptInitialized?: boolean } = {}): Pkcs11Module {
    let lib: Pkcs11Lib;
    try {
      lib = createRequire(import.meta.url)('pkcs11js') as Pkcs11Lib;
    } catch (error) {
      throw configError('the optional dependency pkcs11js is not installed (npm install, with a C++ toolchain)', error);
    }
    loadedLib = lib;
    const p11 = new lib.PKCS11();
    try {
      p11.load(modulePath);
    } catch (error) {
      throw configError(`cannot load module ${modulePath}`, error);
    }
    try {
      p11.C_Initialize({ flags: lib.CKF_OS_LOCKING_OK });
    } catch (error) {
      if (options.acceptInitialized === true && returnValueOf(error) === lib.CKR_CRYPTOKI_ALREADY_INITIALIZED) return new Pkcs11Module(lib, p11, false);
      throw configError(`C_Initialize failed for ${modulePath} (one Pkcs11Module per library per process)`, error);
    }
    return new Pkcs11Module(lib, p11, true);
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
    const session = this.#openSession(options);
    const found = await this.#findKey(session, options, options.generate === true);
    const reopen: Pkcs11Reopen = (expected) => this.#reopen(options, expected);
    const signer = new Pkcs11Signer(this.#p11, this.#lib, session, found.privateKey, found.spki, found.attributes, reopen);
    // The public key is found by its label, as the private key is: one signature now proves
    // they are a pair, before any checkpoint is signed under the public key's id.
    const probe = Buffer.concat([Buffer.from('pavilion checkpoint key self-test '), randomBytes(16)]);
    let refusal: PavilionError | undefined;
    try {
      if (!signer.verifies(probe, await signer.sign(probe))) {
        refusal = configError(`the private key labelled ${JSON.stringify(options.keyLabel)} is not the pair of the public key labelled so: its signature does not verify`);
      }
    } catch (error) {
      refusal = configError(`the private key labelled ${JSON.stringify(options.keyLabel)} cannot sign (the start's self-test)`, error);
    }
    if (refusal !== undefined) {
      this.#closeSession(signer.session ?? session); // a lost session replaced meanwhile: the one it holds
      throw refusal;
    }
    return signer;
  }

  /** A new session on the token, tracked for close(), logged in as the user. */
  #openSession(options: Pkcs11KeyOptions): Handle {
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
    // Every start tries the PIN once: under a crash loop with a wrong PIN that would spend the
    // token's tries one restart at a time, the last one too. A locked PIN, or one with a single
    // try left, is not tried: an operator confirms the PIN by hand (which resets the count).
    let flags = 0;
    try {
      flags = p11.C_GetTokenInfo(slot).flags;
    } catch {
      // no flags to go by: the login below says what is wrong
    }
    const pinState = (flags & lib.CKF_USER_PIN_LOCKED) !== 0 ? 'is locked'
      : (flags & lib.CKF_USER_PIN_FINAL_TRY) !== 0 ? 'has one try left, which is not spent automatically (log in once by hand to confirm the PIN)'
        : undefined;
    if (pinState !== undefined) {
      this.#closeSession(session);
      throw configError(`the user PIN of token ${options.tokenLabel} ${pinState}`);
    }
    try {
      p11.C_Login(session, lib.CKU_USER, options.pin);
    } catch (error) {
      // A login is per application, not per session: another signer may have logged in already.
      if (returnValueOf(error) !== lib.CKR_USER_ALREADY_LOGGED_IN) {
        // Not left open: a reopen that keeps failing (a changed PIN) must not collect sessions.
        this.#closeSession(session);
        throw configError(`login to token ${options.tokenLabel} failed`, error);
      }
    }
    return session;
  }

  /** The signing key labelled `keyLabel` (generated when absent and `generate`), checked as a checkpoint key must be. */
  async #findKey(session: Handle, options: Pkcs11KeyOptions, generate: boolean): Promise<FoundKey> {
    const lib = this.#lib;
    const p11 = this.#p11;
    const label = options.keyLabel;
    let privateKeys = this.#find(session, [
      { type: lib.CKA_CLASS, value: lib.CKO_PRIVATE_KEY },
      { type: lib.CKA_KEY_TYPE, value: lib.CKK_EC },
      { type: lib.CKA_LABEL, value: label },
    ], `the private key ${JSON.stringify(label)}`);
    if (privateKeys.length === 0) {
      if (!generate) throw configError(`token ${options.tokenLabel} has no EC private key labelled ${JSON.stringify(label)}`);
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
    if (!attributes.neverExtractable && options.allowImportedKey !== true) {
      throw configError(`key ${JSON.stringify(label)} has not always been non-extractable (CKA_NEVER_EXTRACTABLE is false: imported, or once allowed out), so it may exist off the token; generate the checkpoint key on the token, or set allowImportedKey to accept it`);
    }
    const params = this.#attributes(session, privateKey, [{ type: lib.CKA_EC_PARAMS }], `CKA_EC_PARAMS of key ${JSON.stringify(label)}`)[0]?.value;
    if (params === undefined || !params.equals(P256_PARAMS)) throw configError(`key ${JSON.stringify(label)} is not on curve P-256`);
    const publicKeys = this.#find(session, [
      { type: lib.CKA_CLASS, value: lib.CKO_PUBLIC_KEY },
      { type: lib.CKA_LABEL, value: label },
    ], `the public key ${JSON.stringify(label)}`);
    if (publicKeys.length !== 1) throw configError(`token ${options.tokenLabel} has ${publicKeys.length} public keys labelled ${JSON.stringify(label)}`);
    const point = this.#attributes(session, publicKeys[0]!, [{ type: lib.CKA_EC_POINT }], `CKA_EC_POINT of public key ${JSON.stringify(label)}`)[0]?.value;
    return { privateKey, spki: ecPointToSpki(point), attributes };
  }

  /**
   * For a signer whose session was lost: a new session, login, and its key found again the
   * way signer() found it, but never generated (a missing key must not be replaced by a new
   * one behind the signer's back) and refused unless its public key is `expected`. The new
   * session is closed again when anything is refused, so a token that keeps failing does not
   * collect sessions.
   */
  async #reopen(options: Pkcs11KeyOptions, expected: Buffer): Promise<Pkcs11Reopened> {
    if (this.#closed) throw configError('the module is closed');
    const session = this.#openSession(options);
    try {
      const found = await this.#findKey(session, options, false);
      if (!found.spki.equals(expected)) throw keyChanged(options.keyLabel, options.tokenLabel, keyIdOf(expected), keyIdOf(found.spki));
      return { session, key: found.privateKey };
    } catch (error) {
      this.#closeSession(session);
      throw error;
    }
  }

  /** Close a session this module just opened and stop tracking it (an error closing it means it is gone already). */
  #closeSession(session: Handle): void {
    const index = this.#sessions.indexOf(session);
    if (index >= 0) this.#sessions.splice(index, 1);
    try {
      this.#p11.C_CloseSession(session);
    } catch {
      // gone already
    }
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
  close(options: { readonly finalize?: boolean } = {}): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const session of this.#sessions) {
      try {
        this.#p11.C_CloseSession(session);
      } catch {
        // already closed
      }
    }
    // C_Finalize while another thread of the process is inside a call is undefined (PKCS#11 v2.40, 5.4)
    if (!this.#initialized || options.finalize === false) return;
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
  readonly #reopen: Pkcs11Reopen;
  readonly #lostCodes: ReadonlySet<number>;
  readonly #pinRefused: ReadonlySet<number>;
  /** When the last reopen failed (0: never); the next waits REOPEN_BACKOFF_MS from it. */
  #reopenFailedAt = 0;
  readonly #publicKey: KeyObject;
  /** Undefined after a lost session could not be replaced: the next call replaces it first. */
  #session: Handle | undefined;
  #key: Handle;
  /** False from a reopen until a signature from the new session verified with `publicKeySpki`. */
  #confirmed = true;
  /** Set once the key under the label turned out to be another key: every later call is refused. */
  #refusal: PavilionError | undefined;
  #reconnects = 0;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(p11: Pkcs11Types.PKCS11, lib: Pkcs11Lib, session: Handle, key: Handle, spki: Buffer, attributes: Pkcs11KeyAttributes, reopen: Pkcs11Reopen) {
    this.#p11 = p11;
    this.#lib = lib;
    this.#session = session;
    this.#key = key;
    this.#reopen = reopen;
    this.#lostCodes = sessionLostCodes(lib);
    this.#pinRefused = pinRefusedCodes(lib);
    this.#publicKey = createPublicKey({ key: spki, format: 'der', type: 'spki' });
    this.publicKeySpki = spki;
    this.keyId = keyIdOf(spki);
    this.attributes = attributes;
  }

  /** Whether `signature` over `message` verifies with this signer's public key. */
  verifies(message: Uint8Array, signature: Buffer): boolean {
    return p256Verifies(this.#publicKey, message, signature);
  }

  /** The session it signs on (undefined after a lost session could not be replaced). */
  get session(): Handle | undefined {
    return this.#session;
  }

  /** How many times a lost session was replaced (for status and tests). */
  get reconnects(): number {
    return this.#reconnects;
  }

  sign(message: Uint8Array): Promise<Buffer> {
    // C_SignInit and C_Sign must not interleave on one session, and a lost session must be
    // replaced by one call, not by every call waiting: one signature at a time.
    const run = this.#queue.then(() => this.#signQueued(message));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #signQueued(message: Uint8Array): Promise<Buffer> {
    if (this.#refusal !== undefined) throw this.#refusal;
    const digest = createHash('sha256').update(message).digest();
    // An earlier call lost the session and could not replace it: this call's one reopen is now.
    const reopenedFirst = this.#session === undefined;
    if (reopenedFirst) await this.#replaceSession();
    try {
      return this.#checked(message, await this.#signOnce(digest));
    } catch (error) {
      if (reopenedFirst || isPavilionError(error) || !this.#lostCodes.has(returnValueOf(error) ?? -1)) throw this.#typed(error);
      this.#dropSession(error);
    }
    await this.#replaceSession();
    try {
      return this.#checked(message, await this.#signOnce(digest));
    } catch (error) {
      throw this.#typed(error, ' (after reopening the session)');
    }
  }

  async #signOnce(digest: Buffer): Promise<Buffer> {
    const session = this.#session!;
    this.#p11.C_SignInit(session, { mechanism: this.#lib.CKM_ECDSA }, this.#key);
    const signature = await this.#p11.C_SignAsync(session, digest, Buffer.alloc(64));
    if (signature.length !== 64) throw new Error(`the token returned ${signature.length} bytes`);
    return Buffer.from(signature);
  }

  #typed(error: unknown, when = ''): PavilionError {
    return isPavilionError(error) ? error : signingFailed(error, when);
  }

  /**
   * The first signature from a reopened session is verified with the public key the signer
   * started with: the reopen matched the public key object under the label, and this proves
   * the private key found with it is its pair. Never hand out a signature under `keyId` that
   * another key made.
   */
  #checked(message: Uint8Array, signature: Buffer): Buffer {
    if (this.#confirmed) return signature;
    if (!this.verifies(message, signature)) {
      this.#refusal = new PavilionError(ErrorCodes.AUDIT_SIGNER_KEY_CHANGED, `PKCS#11: after reopening the session, the private key found for ${this.keyId} signs with another key; refusing to sign`, { details: { keyId: this.keyId } });
      throw this.#refusal;
    }
    this.#confirmed = true;
    return signature;
  }

  /**
   * Forget a lost session. It stays tracked by the module (close() closes it, ignoring that it
   * is gone). Only a session the token says is merely logged out is closed now: it still exists
   * and is ours. A handle the token says is invalid is not closed, because a token may already
   * have given that number to another signer's new session.
   */
  #dropSession(lost: unknown): void {
    const session = this.#session;
    this.#session = undefined;
    if (session !== undefined && returnValueOf(lost) === this.#lib.CKR_USER_NOT_LOGGED_IN) {
      try {
        this.#p11.C_CloseSession(session);
      } catch {
        // gone meanwhile
      }
    }
  }

  /**
   * A new session in place of the lost one. A token that refuses the PIN (changed since start,
   * expired, locked) stops the signer for good: every later checkpoint would try the same PIN
   * again, and tokens lock the user PIN after a few wrong ones, the right PIN of a restarted
   * deployment included. Any other failure waits REOPEN_BACKOFF_MS before the next reopen.
   */
  async #replaceSession(): Promise<void> {
    const sinceFailure = Date.now() - this.#reopenFailedAt;
    if (sinceFailure < REOPEN_BACKOFF_MS) {
      throw new PavilionError(ErrorCodes.AUDIT_SIGNER_FAILED, `PKCS#11 signing failed: the session was lost and the last reopen failed ${sinceFailure} ms ago; the next attempt is in ${REOPEN_BACKOFF_MS - sinceFailure} ms`);
    }
    let reopened: Pkcs11Reopened;
    try {
      reopened = await this.#reopen(this.publicKeySpki);
    } catch (error) {
      if (isPavilionError(error, ErrorCodes.AUDIT_SIGNER_KEY_CHANGED)) {
        this.#refusal = error;
        throw error;
      }
      const rv = returnValueOf((error as { cause?: unknown }).cause);
      if (rv !== undefined && this.#pinRefused.has(rv)) {
        this.#refusal = new PavilionError(ErrorCodes.AUDIT_SIGNER_FAILED, `PKCS#11: the token refused the PIN when the lost session was reopened (${describeThrown((error as { cause?: unknown }).cause)}); not trying again, so that retries do not lock the PIN: restart with the right PIN`, { cause: error });
        throw this.#refusal;
      }
      this.#reopenFailedAt = Date.now();
      throw new PavilionError(ErrorCodes.AUDIT_SIGNER_FAILED, `PKCS#11 signing failed: the session was lost and could not be reopened: ${describeThrown(error)}`, { cause: error });
    }
    this.#reopenFailedAt = 0;
    this.#session = reopened.session;
    this.#key = reopened.key;
    this.#confirmed = false;
    this.#reconnects++;
  }

  async close(): Promise<void> {
    await this.#queue;
  }
}
