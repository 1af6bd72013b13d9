/**
 * Which keys each tenant trusts for bundle signatures. Keys come from the config's `keys`
 * (inline PEM or a file, with an optional algorithm, as in OPA's config) and from the keys
 * directory (`<key id>.pub.pem`, algorithm implied by the key type), where `bundle build`
 * writes the sample tenants' development keys. A tenant trusts the ids it lists (default:
 * its own id); listing an id that no source provides is a configuration error, found at
 * start rather than at the first push.
 *
 * One bad key never takes the others down: the keys directory holds every tenant's keys, so
 * a key file that cannot be read or parsed (or a configured key that cannot be loaded) is
 * recorded against its key id (ERR_BUNDLE_KEY_INVALID, naming the file) and every other key
 * is loaded. A signature naming that key id is refused with the recorded error - fail closed
 * for the tenants trusting it, and never "unknown key" - while the other tenants, and the
 * trusting tenant's other keys, keep working. `invalidKeys` lists the bad ones for status.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { KeyConfig, TenantConfig } from '../config/index.ts';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import { isSigningAlgorithm, loadVerificationKey, type SignaturePolicy, type VerificationKey } from './signing.ts';

const PUBLIC_KEY_SUFFIX = '.pub.pem';

/** A trusted key id whose key could not be loaded. */
export interface InvalidKey {
  readonly keyId: string;
  /** The file the key was read from; undefined for a key inline in the config. */
  readonly file: string | undefined;
  /** ERR_BUNDLE_KEY_INVALID, naming the key id and the file; what a signature by this key id is refused with. */
  readonly error: PavilionError;
}

export class TrustStore {
  readonly #keys: ReadonlyMap<string, VerificationKey>;
  readonly #invalid: ReadonlyMap<string, InvalidKey>;

  constructor(keys: Iterable<VerificationKey>, invalid: Iterable<InvalidKey> = []) {
    this.#keys = new Map([...keys].map((k) => [k.id, k]));
    this.#invalid = new Map([...invalid].filter((bad) => !this.#keys.has(bad.keyId)).map((bad) => [bad.keyId, bad]));
  }

  /**
   * Read the keys. Never fails for one key: a key that cannot be read or parsed is recorded
   * (`invalidKeys`) and the others are loaded. A configured key replaces a keys-directory
   * file of the same id, a bad configured key included (the directory's key is not trusted
   * in its place).
   */
  static async load(configured: Readonly<Record<string, KeyConfig>>, keysDirectory: string): Promise<TrustStore> {
    const keys = new Map<string, VerificationKey>();
    const invalid = new Map<string, InvalidKey>();
    const loaded = (id: string, file: string | undefined, load: () => Promise<VerificationKey>): Promise<void> =>
      load().then(
        (key) => {
          keys.set(id, key);
          invalid.delete(id);
        },
        (error: unknown) => {
          keys.delete(id);
          invalid.set(id, { keyId: id, file, error: keyFileError(id, file, error) });
        },
      );
    let names: string[] = [];
    try {
      names = await readdir(keysDirectory);
    } catch {
      // no keys directory: only configured keys
    }
    for (const name of names.filter((n) => n.endsWith(PUBLIC_KEY_SUFFIX)).sort()) {
      const id = name.slice(0, -PUBLIC_KEY_SUFFIX.length);
      const file = join(keysDirectory, name);
      await loaded(id, file, async () => loadVerificationKey(id, await readKeyFile(id, file)));
    }
    for (const [id, config] of Object.entries(configured)) {
      await loaded(id, config.file, async () => {
        const material = config.file === undefined ? config.key : await readKeyFile(id, config.file);
        const algorithm = config.algorithm;
        if (algorithm !== undefined && !isSigningAlgorithm(algorithm)) {
          throw new PavilionError(ErrorCodes.BUNDLE_KEY_INVALID, `key ${id}: unsupported algorithm ${algorithm}`);
        }
        return loadVerificationKey(id, material ?? '', algorithm);
      });
    }
    return new TrustStore(keys.values(), invalid.values());
  }

  /** How many keys were loaded (not counting `invalidKeys`). */
  get size(): number {
    return this.#keys.size;
  }

  /** The keys that could not be loaded, by key id (for status and health). */
  get invalidKeys(): readonly InvalidKey[] {
    return [...this.#invalid.values()].sort((a, b) => (a.keyId < b.keyId ? -1 : a.keyId > b.keyId ? 1 : 0));
  }

  /**
   * The signature policy of one tenant. A configured tenant (`explicit`) listing a key id that
   * no source provides is a configuration error (ERR_CONFIG_INVALID); a key id whose key could
   * not be loaded is not: it stays in the policy and refuses any signature by it with its
   * recorded error.
   */
  policyFor(tenant: TenantConfig, explicit: boolean): SignaturePolicy {
    const keys = new Map<string, VerificationKey>();
    const invalid = new Map<string, PavilionError>();
    for (const id of tenant.keys) {
      const key = this.#keys.get(id);
      const bad = this.#invalid.get(id);
      if (key !== undefined) keys.set(id, key);
      else if (bad !== undefined) invalid.set(id, bad.error);
      else if (explicit) {
        throw new PavilionError(ErrorCodes.CONFIG_INVALID, `tenant ${tenant.id} trusts key ${id}, which is neither in keys nor in the keys directory`);
      }
    }
    return { keys: invalid.size === 0 ? keys : new TrustedKeys(keys, invalid), scope: tenant.scope, allowUnsigned: tenant.allowUnsigned };
  }
}

async function readKeyFile(id: string, file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    throw new PavilionError(ErrorCodes.BUNDLE_KEY_INVALID, `key ${id}: cannot read ${file}: ${describeThrown(error)}`, { cause: error });
  }
}

/** The error recorded for a key that could not be loaded: ERR_BUNDLE_KEY_INVALID naming the key id and its file. */
function keyFileError(id: string, file: string | undefined, error: unknown): PavilionError {
  const prefix = `key ${id}: `;
  let reason = describeThrown(error);
  if (reason.startsWith(prefix)) reason = reason.slice(prefix.length);
  const where = file === undefined ? 'the key configured inline' : file;
  const message = reason.includes(where) ? `${prefix}${reason}` : `${prefix}${where}: ${reason}`;
  return new PavilionError(ErrorCodes.BUNDLE_KEY_INVALID, message, {
    cause: error,
    details: file === undefined ? { keyId: id } : { keyId: id, file },
  });
}

/**
 * A tenant's trusted keys when some of its key ids name a key that could not be loaded.
 * Those ids are trusted ids all the same (`size`, `has`, `keys()` count them, so a tenant
 * whose only key is bad is not taken for one without keys), and reading one's key throws its
 * recorded error: `get` for that id, and walking the values or entries. So the signature check
 * refuses a signature by that key id with the reason, and cannot verify with it.
 */
class TrustedKeys implements ReadonlyMap<string, VerificationKey> {
  readonly #usable: ReadonlyMap<string, VerificationKey>;
  readonly #invalid: ReadonlyMap<string, PavilionError>;
  readonly #ids: ReadonlyMap<string, true>;

  constructor(usable: ReadonlyMap<string, VerificationKey>, invalid: ReadonlyMap<string, PavilionError>) {
    this.#usable = usable;
    this.#invalid = invalid;
    this.#ids = new Map([...usable.keys(), ...invalid.keys()].map((id) => [id, true]));
  }

  get size(): number {
    return this.#ids.size;
  }

  has(id: string): boolean {
    return this.#ids.has(id);
  }

  get(id: string): VerificationKey | undefined {
    const key = this.#usable.get(id);
    if (key !== undefined) return key;
    const error = this.#invalid.get(id);
    if (error !== undefined) throw error;
    return undefined;
  }

  keys(): MapIterator<string> {
    return this.#ids.keys();
  }

  values(): MapIterator<VerificationKey> {
    return this.#allUsable().values();
  }

  entries(): MapIterator<[string, VerificationKey]> {
    return this.#allUsable().entries();
  }

  [Symbol.iterator](): MapIterator<[string, VerificationKey]> {
    return this.entries();
  }

  forEach(callback: (value: VerificationKey, key: string, map: ReadonlyMap<string, VerificationKey>) => void, thisArg?: unknown): void {
    for (const [id, key] of this.entries()) callback.call(thisArg, key, id, this);
  }

  #allUsable(): ReadonlyMap<string, VerificationKey> {
    const [first] = this.#invalid.values();
    if (first !== undefined) throw first;
    return this.#usable;
  }
}
