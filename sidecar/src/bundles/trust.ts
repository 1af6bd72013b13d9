/**
 * Which keys each tenant trusts for bundle signatures. Keys come from the config's `keys`
 * (inline PEM or a file, with an optional algorithm, as in OPA's config) and from the keys
 * directory (`<key id>.pub.pem`, algorithm implied by the key type), where `bundle build`
 * writes the sample tenants' development keys. A tenant trusts the ids it lists (default:
 * its own id); listing an id that no source provides is a configuration error, found at
 * start rather than at the first push.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { KeyConfig, TenantConfig } from '../config/index.ts';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import { isSigningAlgorithm, loadVerificationKey, type SignaturePolicy, type VerificationKey } from './signing.ts';

const PUBLIC_KEY_SUFFIX = '.pub.pem';

export class TrustStore {
  readonly #keys: ReadonlyMap<string, VerificationKey>;

  constructor(keys: Iterable<VerificationKey>) {
    this.#keys = new Map([...keys].map((k) => [k.id, k]));
  }

  static async load(configured: Readonly<Record<string, KeyConfig>>, keysDirectory: string): Promise<TrustStore> {
    const keys = new Map<string, VerificationKey>();
    let names: string[] = [];
    try {
      names = await readdir(keysDirectory);
    } catch {
      // no keys directory: only configured keys
    }
    for (const name of names.filter((n) => n.endsWith(PUBLIC_KEY_SUFFIX)).sort()) {
      const id = name.slice(0, -PUBLIC_KEY_SUFFIX.length);
      let pem: string;
      try {
        pem = await readFile(join(keysDirectory, name), 'utf8');
      } catch (error) {
        throw new PavilionError(ErrorCodes.BUNDLE_KEY_INVALID, `key ${id}: cannot read ${join(keysDirectory, name)}: ${describeThrown(error)}`, { cause: error });
      }
      keys.set(id, loadVerificationKey(id, pem));
    }
    for (const [id, config] of Object.entries(configured)) {
      let material = config.key;
      if (config.file !== undefined) {
        try {
          material = await readFile(config.file, 'utf8');
        } catch (error) {
          throw new PavilionError(ErrorCodes.BUNDLE_KEY_INVALID, `key ${id}: cannot read ${config.file}: ${describeThrown(error)}`, { cause: error });
        }
      }
      const algorithm = config.algorithm;
      if (algorithm !== undefined && !isSigningAlgorithm(algorithm)) {
        throw new PavilionError(ErrorCodes.BUNDLE_KEY_INVALID, `key ${id}: unsupported algorithm ${algorithm}`);
      }
      keys.set(id, loadVerificationKey(id, material ?? '', algorithm));
    }
    return new TrustStore(keys.values());
  }

  get size(): number {
    return this.#keys.size;
  }

  /** The signature policy of one tenant. */
  policyFor(tenant: TenantConfig, explicit: boolean): SignaturePolicy {
    const keys = new Map<string, VerificationKey>();
    for (const id of tenant.keys) {
      const key = this.#keys.get(id);
      if (key !== undefined) keys.set(id, key);
      else if (explicit) {
        throw new PavilionError(ErrorCodes.CONFIG_INVALID, `tenant ${tenant.id} trusts key ${id}, which is neither in keys nor in the keys directory`);
      }
    }
    return { keys, scope: tenant.scope, allowUnsigned: tenant.allowUnsigned };
  }
}
