/**
 * Last known good: every activated bundle is written to local disk, so a sidecar restarted
 * while its bundle source is unreachable serves the revisions it last ran (as OPA's bundle
 * persistence does). Writes are atomic (temp file + rename, then the metadata), so a crash
 * mid-write leaves the previous pair intact. What is read back is verified again like any
 * other bundle: the disk is not trusted more than the network.
 */
import { mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TENANT_ID_PATTERN } from '../lib/tenant-id.ts';

export interface PersistedBundleMeta {
  readonly tenant: string;
  readonly revision: string;
  /** Hex SHA-256 of the archive. */
  readonly digest: string;
  /** The distribution pointer's sequence (KV revision) the bundle came from, if any. */
  readonly sequence?: number;
  readonly savedAt: string;
}

export interface PersistedBundle {
  readonly archive: Buffer;
  readonly meta: PersistedBundleMeta;
}

async function writeAtomic(file: string, data: Buffer | string): Promise<void> {
  const temp = `${file}.${process.pid}.tmp`;
  await writeFile(temp, data);
  await rename(temp, file);
}

export class LastKnownGood {
  readonly #directory: string;

  constructor(directory: string) {
    this.#directory = directory;
  }

  get directory(): string {
    return this.#directory;
  }

  async save(archive: Buffer, meta: PersistedBundleMeta): Promise<void> {
    const dir = join(this.#directory, meta.tenant);
    await mkdir(dir, { recursive: true });
    await writeAtomic(join(dir, 'bundle.tar.gz'), archive);
    await writeAtomic(join(dir, 'meta.json'), `${JSON.stringify(meta)}\n`);
  }

  async load(tenant: string): Promise<PersistedBundle | undefined> {
    try {
      const dir = join(this.#directory, tenant);
      const meta = JSON.parse(await readFile(join(dir, 'meta.json'), 'utf8')) as PersistedBundleMeta;
      if (meta.tenant !== tenant) return undefined;
      return { archive: await readFile(join(dir, 'bundle.tar.gz')), meta };
    } catch {
      return undefined;
    }
  }

  async tenants(): Promise<string[]> {
    try {
      const entries = await readdir(this.#directory, { withFileTypes: true });
      return entries.filter((e) => e.isDirectory() && TENANT_ID_PATTERN.test(e.name)).map((e) => e.name).sort();
    } catch {
      return [];
    }
  }
}
