/**
 * The `credentials` config section: parsed once with the rest of the config, files resolved
 * against the config's directory, pins checked at parse time, unknown keys refused; without the
 * section, the sample tenants' committed policies.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseConfig, sampleCredentialsConfig } from '../sidecar/src/config/index.ts';
import { sampleContext } from '../sidecar/src/credentials/samples.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { rejectsWith } from './credentials/fixtures.ts';

describe('credentials config section', () => {
  let dir: string;
  const context = sampleContext();
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pavilion-cred-config-'));
    await writeFile(join(dir, 'ctx.jsonld'), context.bytes);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const withPolicy = (policy: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
    parseConfig({ credentials: { tenants: { bank: policy }, ...extra } }, dir);

  it('parses a tenant policy with defaults and units, reading files relative to the config', () => {
    const config = withPolicy({ contexts: [{ url: context.url, sha256Hex: context.sha256Hex, path: 'ctx.jsonld' }], clockSkewMs: 30_000, domain: 'https://bank.example' });
    const bank = config.credentials?.tenants[0];
    assert.equal(bank?.tenantId, 'bank');
    assert.equal(bank?.freshness.clockSkewMs, 30_000);
    assert.equal(bank?.keyBinding.required, true);
    assert.equal(bank?.contexts[0]?.bytes.length, context.bytes.length);
    assert.equal(config.credentials?.maxCredentialsPerRequest, 8);
    assert.ok(Object.isFrozen(bank));
  });

  it('refuses unknown keys, bad units and contradictions', async () => {
    await rejectsWith(() => withPolicy({ clockSkew: 5 }), ErrorCodes.CONFIG_INVALID);
    await rejectsWith(() => withPolicy({}, { refreshInterval: 5 }), ErrorCodes.CONFIG_INVALID);
    await rejectsWith(() => withPolicy({ clockSkewMs: -1 }), ErrorCodes.CONFIG_INVALID);
    await rejectsWith(() => withPolicy({ statusLists: { ttlMs: 60_000, maxAgeMs: 30_000 } }), ErrorCodes.CONFIG_INVALID);
    await rejectsWith(() => withPolicy({ trustAnchors: [{ issuer: 'did:key:z6Mk' }] }), ErrorCodes.CONFIG_INVALID);
    await rejectsWith(() => withPolicy({ keyBinding: { required: 'yes' } }), ErrorCodes.CONFIG_INVALID);
  });

  it('refuses a bad policy field in the same words as any other config field, naming its path', () => {
    const refused = (policy: Record<string, unknown>, pattern: RegExp): void => {
      assert.throws(() => withPolicy(policy), (e: unknown) => isPavilionError(e, ErrorCodes.CONFIG_INVALID) && pattern.test(e.message), String(pattern));
    };
    refused({ keyBinding: { required: 'yes' } }, /^config \$\.credentials\.bank\.keyBinding\.required: must be a boolean$/);
    refused({ presentations: { requireIssuedChallenge: 1 } }, /^config \$\.credentials\.bank\.presentations\.requireIssuedChallenge: must be a boolean$/);
    refused({ statusLists: { ttl: 5 } }, /^config \$\.credentials\.bank\.statusLists\.ttl: unknown key$/);
    refused({ maxChainDepth: 1.5 }, /^config \$\.credentials\.bank\.maxChainDepth: must be an integer between 0 and 8$/);
    refused({ accumulators: [{ id: 'a', issuer: '' }] }, /^config \$\.credentials\.bank\.accumulators\[0\]\.issuer: must be a non-empty string$/);
    assert.throws(() => parseConfig({ engine: { workers: true } }), (e: unknown) => isPavilionError(e, ErrorCodes.CONFIG_INVALID) && /^config \$\.engine\.workers: must be an integer between/.test(e.message));
  });

  it('defaults to the sample tenants\' committed policies, only without a section and with the directory source', () => {
    const samples = parseConfig({}).credentials;
    assert.deepEqual(samples?.tenants.map((t) => [t.tenantId, t.domain, t.contexts[0]?.sha256Hex]), [
      ['bank', 'https://bank.example', context.sha256Hex],
      ['hospital', 'https://hospital.example', context.sha256Hex],
    ]);
    assert.equal(samples?.proofWorkers, 1);
    assert.deepEqual(parseConfig({ credentials: { tenants: {} } }).credentials?.tenants, []);
    assert.equal(parseConfig({ bundles: { source: 'nats' }, nats: { servers: ['nats://127.0.0.1:4222'] } }).credentials, undefined);
    assert.equal(sampleCredentialsConfig(join(dir, 'no-such-folder')), undefined);
  });

  it('refuses a file that is missing or differs from its pin', async () => {
    await rejectsWith(() => withPolicy({ contexts: [{ url: context.url, sha256Hex: context.sha256Hex, path: 'missing.jsonld' }] }), ErrorCodes.CONFIG_INVALID);
    await rejectsWith(() => withPolicy({ contexts: [{ url: context.url, sha256Hex: 'f'.repeat(64), path: 'ctx.jsonld' }] }), ErrorCodes.CREDENTIAL_CONTEXT_HASH_MISMATCH);
    await rejectsWith(() => withPolicy({ didWeb: [{ did: 'did:web:bank.example', sha256Hex: '0'.repeat(64), path: 'ctx.jsonld' }] }), ErrorCodes.CREDENTIAL_CONTEXT_HASH_MISMATCH);
  });
});
