/**
 * Bearer tokens per tenant on the API (OPA's --authentication=token, bound to a tenant): what a
 * request without a token, with a wrong one, or with another tenant's gets (401
 * `unauthorized`, ERR_API_UNAUTHORIZED), on every route form, with the sample tenants' bundles
 * served by a real Pavilion; token files rotated and broken in place; `http.authentication:
 * 'token'` refusing tenants that have no tokens.
 */
import assert from 'node:assert/strict';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { MIN_TOKEN_CHARS, parseTokenFile } from '../sidecar/src/api/index.ts';
import { parseConfig } from '../sidecar/src/config/index.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { REPO_ROOT } from '../sidecar/src/lib/tools.ts';
import { get, post, startPavilion, type RunningPavilion } from './harness/pavilion-harness.ts';
import { tempDir } from './harness/temp-dir.ts';

const BANK_TOKENS = ['bank-token-one-0123456789abcdef', 'bank-token-two-0123456789abcdef'];
const AGENCY_TOKEN = 'agency-token-0123456789abcdef';

interface Example {
  readonly path: string;
  readonly input: unknown;
  readonly expect: unknown;
}

async function firstExample(tenant: string): Promise<Example> {
  return (JSON.parse(await readFile(join(REPO_ROOT, 'bundles', tenant, 'examples.json'), 'utf8')) as Example[])[0] as Example;
}

const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` });

function refusal(response: { status: number; body: Record<string, unknown> }): [number, unknown, unknown] {
  return [response.status, response.body['code'], (response.body['errors'] as Array<{ code: string }> | undefined)?.[0]?.code];
}

const UNAUTHORIZED: [number, string, string] = [401, 'unauthorized', ErrorCodes.API_UNAUTHORIZED];

async function until(what: string, condition: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await sleep(100);
  }
}

describe('token files', () => {
  test('one token a line; blank lines and # comments are skipped; a short token or a file without one is refused whole', () => {
    assert.equal(parseTokenFile(`# rotated 2026-11\n\n${BANK_TOKENS[0]}\n  ${BANK_TOKENS[1]}  \n`).size, 2);
    for (const text of ['', '# nothing\n\n', `${BANK_TOKENS[0]}\nshort\n`, `${'x'.repeat(MIN_TOKEN_CHARS)} ${'y'.repeat(MIN_TOKEN_CHARS)}\n`]) {
      assert.throws(() => parseTokenFile(text), (e: unknown) => isPavilionError(e, ErrorCodes.CONFIG_INVALID), JSON.stringify(text));
    }
  });

  test("http.authentication 'token' needs a tokens file for every configured tenant", () => {
    assert.throws(
      () => parseConfig({ http: { authentication: 'token' }, tenants: [{ id: 'bank', apiTokensFile: '/run/bank' }, { id: 'agency' }] }),
      (e: unknown) => isPavilionError(e, ErrorCodes.CONFIG_INVALID) && /tenants\[1\]\.apiTokensFile/.test(e.message),
    );
    assert.throws(() => parseConfig({ http: { authentication: 'basic' } }), (e: unknown) => isPavilionError(e, ErrorCodes.CONFIG_INVALID));
    assert.equal(parseConfig({ http: { authentication: 'token' }, tenants: [{ id: 'bank', apiTokensFile: '/run/bank' }] }).http.authentication, 'token');
  });
});

describe('tenant routes with API tokens', () => {
  const logged: Array<{ level: string; message: string; fields: Record<string, unknown> | undefined }> = [];
  let app: RunningPavilion;
  let dir: string;
  let bankFile: string;
  let bank: Example;
  let hospital: Example;

  before(async () => {
    bank = await firstExample('bank');
    hospital = await firstExample('hospital');
    dir = await tempDir('pavilion-tokens-');
    bankFile = join(dir, 'bank.tokens');
    const agencyFile = join(dir, 'agency.tokens');
    await writeFile(bankFile, `${BANK_TOKENS.join('\n')}\n`);
    await writeFile(agencyFile, `${AGENCY_TOKEN}\n`);
    app = await startPavilion({
      config: { tenants: [{ id: 'bank', apiTokensFile: bankFile }, { id: 'agency', apiTokensFile: agencyFile }, { id: 'hospital' }] },
      log: (level, message, fields) => logged.push({ level, message, fields }),
    });
  });
  after(async () => {
    await app.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const askBank = (headers: Record<string, string> = {}): Promise<{ status: number; body: Record<string, unknown> }> =>
    post(`${app.url}/v1/data/${bank.path}`, { input: bank.input }, { 'x-pavilion-tenant': 'bank', ...headers });

  test('no token, a wrong one, another tenant\'s, or a malformed header: 401 unauthorized on the header, path and v0 forms', async () => {
    for (const headers of [{}, bearer('not-a-bank-token-0123456789'), bearer(AGENCY_TOKEN), { authorization: BANK_TOKENS[0] as string }, { authorization: `Basic ${BANK_TOKENS[0]}` }]) {
      assert.deepEqual(refusal(await askBank(headers)), UNAUTHORIZED, JSON.stringify(headers));
    }
    assert.deepEqual(refusal(await post(`${app.url}/v1/tenants/bank/data/${bank.path}`, { input: bank.input })), UNAUTHORIZED);
    assert.deepEqual(refusal(await post(`${app.url}/v0/tenants/bank/data/${bank.path}`, bank.input)), UNAUTHORIZED);
    assert.deepEqual(refusal(await get(`${app.url}/v1/tenants/bank/data/${bank.path}`)), UNAUTHORIZED);
    assert.deepEqual(refusal(await get(`${app.url}/v1/tenants/bank`)), UNAUTHORIZED, "the tenant's status too");
    // an unknown tenant gets the same answer as a tenant behind tokens, not a 404: which ids
    // exist behind tokens cannot be probed
    const unknown = await post(`${app.url}/v1/data/${bank.path}`, { input: bank.input }, { 'x-pavilion-tenant': 'globex' });
    assert.deepEqual(refusal(unknown), UNAUTHORIZED);
    assert.deepEqual(refusal(await get(`${app.url}/v1/tenants/globex`)), UNAUTHORIZED);
    const listed = async (headers: Record<string, string>): Promise<string[]> => ((await get(`${app.url}/v1/tenants`, headers)).body['result'] as Array<{ id: string }>).map((t) => t.id).sort();
    assert.deepEqual(await listed({}), ['hospital'], 'the tenant list shows a caller without a token only the tenants that need none');
    assert.deepEqual(await listed(bearer(BANK_TOKENS[0] as string)), ['bank', 'hospital']);
  });

  test('either of the tenant\'s tokens gets the decision; a tenant without a tokens file needs none; health stays open', async () => {
    for (const token of BANK_TOKENS) {
      const answer = await askBank(bearer(token));
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      assert.deepEqual(answer.body['result'], bank.expect);
    }
    const viaPath = await post(`${app.url}/v1/tenants/bank/data/${bank.path}`, { input: bank.input }, bearer(BANK_TOKENS[1] as string));
    assert.deepEqual(viaPath.body['result'], bank.expect);
    const open = await post(`${app.url}/v1/data/${hospital.path}`, { input: hospital.input }, { 'x-pavilion-tenant': 'hospital' });
    assert.equal(open.status, 200, JSON.stringify(open.body));
    assert.equal((await get(`${app.url}/health`)).status, 200);
    assert.equal((await get(`${app.url}/health/ready`)).status, 200);
  });

  test('a tokens file rotated in place: the new token works and the removed one stops, without a restart', async () => {
    const rotated = 'bank-token-three-0123456789abcdef';
    await writeFile(bankFile, `${BANK_TOKENS[1]}\n${rotated}\n`);
    await until('the rotated file is read', async () => (await askBank(bearer(rotated))).status === 200);
    await until('the removed token is refused', async () => (await askBank(bearer(BANK_TOKENS[0] as string))).status === 401);
    assert.equal((await askBank(bearer(BANK_TOKENS[1] as string))).status, 200);
  });

  test('/v1/status shows a caller the tenants its token may see; health names no tenant and gives the components\' states only', async () => {
    const status = async (headers: Record<string, string>): Promise<Record<string, unknown>> => (await get(`${app.url}/v1/status`, headers)).body['result'] as Record<string, unknown>;
    const bundles = (report: Record<string, unknown>): string[] => Object.keys(report['bundles'] as object).sort();
    const anonymous = await status({});
    assert.deepEqual(bundles(anonymous), ['hospital'], 'without a token: the tenants that need none');
    assert.deepEqual(bundles(await status(bearer(BANK_TOKENS[1] as string))), ['bank', 'hospital']); // [0] is rotated out above
    assert.deepEqual(bundles(await status(bearer(AGENCY_TOKEN))), ['agency', 'hospital']);
    for (const [name, plugin] of Object.entries(anonymous['plugins'] as Record<string, Record<string, unknown>>)) {
      assert.deepEqual(Object.keys(plugin), ['state'], `${name}: its message may name any tenant`);
    }
    for (const path of ['/health?verbose', '/health/ready?verbose', '/health?bundles&plugins&verbose']) {
      const health = await get(`${app.url}${path}`);
      assert.equal(health.status, 200, path);
      assert.doesNotMatch(JSON.stringify(health.body), /bank|agency|hospital|\.tokens/, `${path} names no tenant and no tokens file`);
      for (const component of Object.values(health.body['components'] as Record<string, Record<string, unknown>>)) assert.deepEqual(Object.keys(component), ['state'], path);
    }
  });

  test('a tokens file that disappears refuses every request of its tenant (fail closed), shows WARN in health and is logged; other tenants go on', async () => {
    await rm(bankFile);
    await until('the missing file is noticed', async () => {
      const health = await get(`${app.url}/health?verbose`);
      return (health.body['components'] as Record<string, { state: string }>)['api_tokens']?.state === 'WARN';
    });
    const warned = logged.find((l) => l.level === 'warn' && l.fields?.['tenant'] === 'bank');
    assert.ok(warned !== undefined, 'the operator learns which tenant and file from the log');
    assert.equal(warned.fields?.['file'], bankFile);
    assert.deepEqual(refusal(await askBank(bearer(BANK_TOKENS[1] as string))), UNAUTHORIZED);
    const agencyExample = await firstExample('agency');
    const agency = await post(`${app.url}/v1/data/${agencyExample.path}`, { input: agencyExample.input }, { 'x-pavilion-tenant': 'agency', ...bearer(AGENCY_TOKEN) });
    assert.equal(agency.status, 200, JSON.stringify(agency.body));
    assert.equal((await get(`${app.url}/health/ready`)).status, 200, 'a WARN does not take the sidecar out of service');
    await writeFile(bankFile, `${BANK_TOKENS[1]}\n`);
    await until('the file is back', async () => (await askBank(bearer(BANK_TOKENS[1] as string))).status === 200);
    assert.ok(logged.some((l) => l.level === 'info' && l.fields?.['tenant'] === 'bank' && /usable again/.test(l.message)));
  });
});

describe('health with API tokens and a tenant not serving', () => {
  test('/health?bundles says how many tenants are not activated, not which', async () => {
    const dir = await tempDir('pavilion-tokens-');
    const bankFile = join(dir, 'bank.tokens');
    const ghostFile = join(dir, 'ghost.tokens');
    await writeFile(bankFile, `${BANK_TOKENS[0]}\n`);
    await writeFile(ghostFile, `${AGENCY_TOKEN}\n`);
    const app = await startPavilion({ config: { tenants: [{ id: 'bank', apiTokensFile: bankFile }, { id: 'ghost', keys: ['bank'], apiTokensFile: ghostFile }] } });
    try {
      const health = await get(`${app.url}/health?bundles`);
      assert.equal(health.status, 500);
      assert.equal(health.body['error'], 'one or more bundles are not activated: 1 of 2 tenants');
      assert.doesNotMatch(JSON.stringify(health.body), /ghost/);
      const status = (await get(`${app.url}/v1/status`, bearer(AGENCY_TOKEN))).body['result'] as { bundles: Record<string, { code?: string }> };
      assert.deepEqual(Object.keys(status.bundles), ['ghost'], "the tenant's own token shows why");
      assert.equal(typeof status.bundles['ghost']?.code, 'string');
    } finally {
      await app.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("http.authentication 'token'", () => {
  test('a tenant the bundle directory announced, with no tokens file, cannot be reached', async () => {
    const bank = await firstExample('bank');
    const app = await startPavilion({ config: { http: { authentication: 'token' } } });
    try {
      assert.ok(app.pavilion.tenants.has('bank'), 'bank was discovered');
      const answer = await post(`${app.url}/v1/data/${bank.path}`, { input: bank.input }, { 'x-pavilion-tenant': 'bank', ...bearer(BANK_TOKENS[0] as string) });
      assert.deepEqual(refusal(answer), UNAUTHORIZED);
      assert.doesNotMatch(String(answer.body['message']), /configured|file/, 'the answer tells nothing about the configuration');
      // an unknown tenant gets the same answer, not a 404: tenant ids cannot be probed
      const unknown = await post(`${app.url}/v1/data/${bank.path}`, { input: bank.input }, { 'x-pavilion-tenant': 'globex' });
      assert.deepEqual(refusal(unknown), UNAUTHORIZED);
      assert.deepEqual((await get(`${app.url}/v1/tenants`)).body['result'], [], 'no tenant is listed to a caller without a token');
    } finally {
      await app.stop();
    }
  });
});
