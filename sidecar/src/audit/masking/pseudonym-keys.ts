/**
 * Per-tenant pseudonymisation keys: 32 random bytes (node:crypto) in `<directory>/<tenant>.key`
 * (hex, mode 0600), created on first use and cached by this store. Losing a key only breaks
 * linkability with earlier pseudonyms; leaking it lets the holder test guesses, so keep the
 * directory as private as the checkpoint key.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCodes, PavilionError, describeThrown } from '../../lib/errors.ts';
import { MIN_PSEUDONYM_KEY_BYTES } from './pseudonymise.ts';

export class PseudonymKeyStore {
  readonly #directory: string;
  readonly #keys = new Map<string, Promise<Uint8Array>>();

  constructor(directory: string) {
    this.#directory = directory;
  }

  key(tenant: string): Promise<Uint8Array> {
    let key = this.#keys.get(tenant);
    if (key === undefined) {
      key = this.#load(tenant);
      this.#keys.set(tenant, key);
      key.catch(() => this.#keys.delete(tenant));
    }
    return key;
  }

  async #load(tenant: string): Promise<Uint8Array> {
    if (!/^[a-z_][a-z0-9_]{0,62}$/.test(tenant)) throw new PavilionError(ErrorCodes.AUDIT_MASK_FAILED, `no pseudonymisation key for tenant ${JSON.stringify(tenant)}`);
    const file = join(this.#directory, `${tenant}.key`);
    try {
      const key = Buffer.from((await readFile(file, 'utf8')).trim(), 'hex');
      if (key.length < MIN_PSEUDONYM_KEY_BYTES) throw new Error(`${file} holds ${key.length} bytes, fewer than ${MIN_PSEUDONYM_KEY_BYTES}`);
      return key;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new PavilionError(ErrorCodes.AUDIT_MASK_FAILED, `pseudonymisation key for ${tenant}: ${describeThrown(error)}`, { cause: error });
      }
    }
    const key = randomBytes(32);
    await mkdir(this.#directory, { recursive: true, mode: 0o700 });
    try {
      await writeFile(file, `${key.toString('hex')}\n`, { flag: 'wx', mode: 0o600 });
      return key;
    } catch (error) {
      // Another process created it first: use theirs.
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') return this.#load(tenant);
      throw new PavilionError(ErrorCodes.AUDIT_MASK_FAILED, `cannot create the pseudonymisation key for ${tenant}: ${describeThrown(error)}`, { cause: error });
    }
  }
}
