/**
 * Where bundles come from. The embedded default reads `<directory>/<tenant>/bundle.tar.gz`;
 * the NATS JetStream source implements the same interface.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import type { BundleLimits } from './archive.ts';

export interface BundleSource {
  readonly kind: string;
  /** Tenants this source has a bundle for. */
  listTenants(): Promise<string[]>;
  /** The tenant's current bundle archive, or undefined when it has none. */
  fetch(tenant: string): Promise<Buffer | undefined>;
}

export class LocalDirectoryBundleSource implements BundleSource {
  readonly kind = 'directory';
  readonly #directory: string;
  readonly #limits: BundleLimits;

  constructor(directory: string, limits: BundleLimits) {
    this.#directory = directory;
    this.#limits = limits;
  }

  get directory(): string {
    return this.#directory;
  }

  async listTenants(): Promise<string[]> {
    let entries;
    try {
      entries = await readdir(this.#directory, { withFileTypes: true });
    } catch {
      return [];
    }
    const tenants: string[] = [];
    for (const entry of entries) {
      if (!entry.isDirectory()) continue;
      try {
        if ((await stat(join(this.#directory, entry.name, 'bundle.tar.gz'))).isFile()) tenants.push(entry.name);
      } catch {
        // no bundle for this folder
      }
    }
    return tenants.sort();
  }

  async fetch(tenant: string): Promise<Buffer | undefined> {
    const file = join(this.#directory, tenant, 'bundle.tar.gz');
    let size: number;
    try {
      size = (await stat(file)).size;
    } catch {
      return undefined;
    }
    if (size > this.#limits.maxCompressedBytes) {
      throw new PavilionError(
        ErrorCodes.BUNDLE_TOO_LARGE,
        `bundle ${file} is ${size} bytes; the limit is ${this.#limits.maxCompressedBytes}`,
      );
    }
    try {
      return await readFile(file);
    } catch (error) {
      throw new PavilionError(ErrorCodes.BUNDLE_CORRUPT, `cannot read ${file}: ${describeThrown(error)}`, { cause: error });
    }
  }
}

/**
 * For sources that push bundles (NATS): nothing to list or fetch at start; the tenants
 * serve their last known good revisions until the distribution delivers.
 */
export class PushedBundleSource implements BundleSource {
  readonly kind: string;

  constructor(kind: string) {
    this.kind = kind;
  }

  async listTenants(): Promise<string[]> {
    return [];
  }

  async fetch(): Promise<Buffer | undefined> {
    return undefined;
  }
}
