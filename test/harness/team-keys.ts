/**
 * A policy team's signing keys and the sidecars' keys directory, for distribution tests:
 * per tenant a development key (key id = tenant id) kept outside the keys directory, a
 * generation number making a new one (a rotation), and the fixture bundle those tests push
 * (limitsFixture of the tenant).
 */
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { developmentKey, signBundle, type SignOptions } from '../../sidecar/src/bundles/index.ts';
import { buildFixtureBundle, limitsFixture } from './fixtures.ts';

export interface TeamKeys {
  /** The team's signing key for `tenant`; `generation` makes a new one. */
  signingKey(tenant: string, generation?: number): Promise<SignOptions & { publicFile: string }>;
  /** Install (or replace in place) the tenant's public key in the sidecars' keys directory. */
  install(tenant: string, generation?: number): Promise<void>;
  /** The fixture bundle of `tenant` at `revision`, signed with that generation's key. */
  signedBundle(tenant: string, revision: string, generation?: number): Promise<Buffer>;
}

/** `where` gives the test's working directory and the sidecars' keys directory (set once the test starts). */
export function teamKeys(where: () => { readonly dir: string; readonly keys: string }): TeamKeys {
  const signingKey = async (tenant: string, generation = 1): Promise<SignOptions & { publicFile: string }> => {
    const build = join(where().dir, 'signing', `g${generation}`);
    const key = await developmentKey(tenant, build);
    return { key: key.keyPem, algorithm: key.algorithm, keyId: key.keyId, scope: tenant, publicFile: join(build, 'keys', `${tenant}.pub.pem`) };
  };
  return {
    signingKey,
    async install(tenant, generation = 1) {
      await copyFile((await signingKey(tenant, generation)).publicFile, join(where().keys, `${tenant}.pub.pem`));
    },
    async signedBundle(tenant, revision, generation = 1) {
      return signBundle(await buildFixtureBundle(limitsFixture(revision, tenant)), await signingKey(tenant, generation));
    },
  };
}
