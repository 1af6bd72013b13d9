/**
 * Last known good: every activated bundle is written to local disk, so a sidecar restarted
 * while its bundle source is unreachable serves the revisions it last ran (as OPA's bundle
 * persistence does).
 *
 * One commit point per save: the archive is written under its own SHA-256
 * (`bundle-<digest>.tar.gz`), then `meta.json`, which names that digest, replaces the old one
 * by rename; each file is fsync'ed before its rename and the directory after. A crash at any
 * moment leaves a meta.json that names an archive which is there in full, the old pair or the
 * new one, never a new archive labelled with the old deploy. A load reads the archive the
 * meta names and checks its SHA-256 (a pair that does not match - damage, or a tear left by an
 * older version that wrote `bundle.tar.gz` in place - loads as nothing). What is read back is
 * then verified again like any other bundle: the disk is not trusted more than the network.
 * Archives no meta names any more are removed after each save.
 */
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { syncDirectory, writeFileDurably } from '../lib/durable-file.ts';
import { ErrorCodes, PavilionError } from '../lib/errors.ts';
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

const DIGEST = /^[0-9a-f]{64}$/;
/** The archive file of each save, and the single file of versions before content addressing. */
const ARCHIVE_FILE = /^bundle(-[0-9a-f]{64})?\.tar\.gz$/;
const LEGACY_ARCHIVE = 'bundle.tar.gz';

const archiveName = (digest: string): string => `bundle-${digest}.tar.gz`;

export class LastKnownGood {
  readonly #directory: string;

  constructor(directory: string) {
    this.#directory = directory;
  }

  get directory(): string {
    return this.#directory;
  }

  async save(archive: Buffer, meta: PersistedBundleMeta): Promise<void> {
    const digest = createHash('sha256').update(archive).digest('hex');
    if (meta.digest !== digest) {
      throw new PavilionError(ErrorCodes.BUNDLE_DIGEST_MISMATCH, `last known good: the archive's SHA-256 is ${digest}, not the ${meta.digest} its metadata names`);
    }
    const dir = join(this.#directory, meta.tenant);
    await mkdir(dir, { recursive: true });
    const keep = archiveName(digest);
    await writeFileDurably(join(dir, keep), archive);
    await writeFileDurably(join(dir, 'meta.json'), `${JSON.stringify(meta)}\n`); // the commit point
    await syncDirectory(dir);
    for (const file of await readdir(dir)) {
      if (file !== keep && ARCHIVE_FILE.test(file)) await rm(join(dir, file), { force: true });
    }
  }

  async load(tenant: string): Promise<PersistedBundle | undefined> {
    try {
      const dir = join(this.#directory, tenant);
      const meta = JSON.parse(await readFile(join(dir, 'meta.json'), 'utf8')) as PersistedBundleMeta;
      if (meta.tenant !== tenant || typeof meta.digest !== 'string' || !DIGEST.test(meta.digest)) return undefined;
      const archive = await readFile(join(dir, archiveName(meta.digest))).catch(async (error: unknown) => {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
        return readFile(join(dir, LEGACY_ARCHIVE));
      });
      if (createHash('sha256').update(archive).digest('hex') !== meta.digest) return undefined;
      return { archive, meta };
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
