/**
 * Bitstring status lists (`statusListUrls`) and Status List Tokens (`tokenStatusListUrls`)
 * fetched from their issuer over HTTP(S), against a
 * real local HTTP server: fetched at start, refreshed past their TTL (a revocation takes effect),
 * fail closed while the issuer is unreachable (health WARN, the credential refused with
 * ERR_CREDENTIAL_STATUS_UNAVAILABLE), and what each bad answer gets.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { CredentialGate } from '../sidecar/src/credentials/index.ts';
import { HttpStatusListSource } from '../sidecar/src/credentials/http-status-list.ts';
import { issueSdJwtVc, issueTokenStatusList, type SampleKey } from '../sidecar/src/credentials/samples.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { NOW_MS, keys, kycCredential, policy, rejectsWith, signed, signedStatusList, trusting } from './credentials/fixtures.ts';
import { until } from './harness/wait.ts';

interface Answer {
  status: number;
  body: string;
  headers?: Record<string, string>;
}

describe('status lists over HTTP', () => {
  let server: Server;
  let base: string;
  const answers = new Map<string, Answer>();

  before(async () => {
    server = createServer((req, res) => {
      const answer = answers.get(req.url ?? '') ?? { status: 404, body: 'not found' };
      res.writeHead(answer.status, { 'content-type': 'application/vc+ld+json', ...answer.headers });
      res.end(answer.body);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  async function statusList(issuer: SampleKey, url: string, revoked: number[]): Promise<string> {
    return JSON.stringify(await signedStatusList(issuer, url, { set: revoked }));
  }

  /** A started gate for the bank tenant: lists kept 60 s (TTL), trusted 10 min, refreshed every 50 ms. */
  async function startGate(raw: Record<string, unknown>, clock: () => number): Promise<CredentialGate> {
    const gate = new CredentialGate({
      policies: [policy({ ...raw, statusLists: { ttlMs: 60_000, maxAgeMs: 600_000 } })],
      refreshIntervalMs: 50,
      maxCredentialsPerRequest: 4,
      proofWorkers: 0,
      proofJobTimeoutMs: 5000,
      clock,
    });
    await gate.start();
    return gate;
  }

  it('fetched at start and past its TTL; unreachable at start fails closed with health WARN until it is fetched', async () => {
    const { issuer } = await keys();
    const url = `${base}/lists/1`;
    answers.set('/lists/1', { status: 503, body: 'later' });
    let now = NOW_MS;
    const gate = await startGate({ ...trusting(issuer.did), statusListUrls: [url] }, () => now);
    try {
      const credential = await signed(kycCredential(issuer.did, { credentialStatus: { id: `${url}#5`, type: 'BitstringStatusListEntry', statusPurpose: 'revocation', statusListIndex: '5', statusListCredential: url } }), issuer);
      assert.equal(gate.status().state, 'WARN');
      assert.match(gate.status().message ?? '', /could not be fetched yet/);
      await rejectsWith(gate.verifier.verify('bank', credential), ErrorCodes.CREDENTIAL_STATUS_UNAVAILABLE);

      answers.set('/lists/1', { status: 200, body: await statusList(issuer, url, []) });
      await until('fetched by the refresh timer', () => gate.status().state === 'OK', 5000);
      const facts = await gate.verifier.verify('bank', credential);
      assert.deepEqual(facts.status.map((s) => [s.mechanism, s.source]), [['BitstringStatusList', url]]);

      // the issuer revokes index 5; past the TTL the refresh fetches the new list
      answers.set('/lists/1', { status: 200, body: await statusList(issuer, url, [5]) });
      now += 61_000;
      assert.deepEqual(await gate.verifier.refreshStatusLists(AbortSignal.timeout(5000), now), []);
      await rejectsWith(gate.verifier.verify('bank', credential), ErrorCodes.CREDENTIAL_REVOKED);
    } finally {
      await gate.stop();
    }
  });

  it('Status List Tokens: fetched at start as application/statuslist+jwt, refreshed past their TTL, fail closed until fetched', async () => {
    const { issuer, holder } = await keys();
    const url = `${base}/tokens/1`;
    const nowS = Math.floor(NOW_MS / 1000);
    const token = (revoked: number[]): Answer => ({
      status: 200,
      body: issueTokenStatusList(issuer, url, { bits: 1, size: 1024, values: new Map(revoked.map((i) => [i, 1])), iatSeconds: nowS }),
      headers: { 'content-type': 'application/statuslist+jwt' },
    });
    answers.set('/tokens/1', { status: 503, body: 'later' });
    let now = NOW_MS;
    const gate = await startGate({ ...trusting(issuer.did), keyBinding: { required: false }, tokenStatusListUrls: [url] }, () => now);
    try {
      const credential = await issueSdJwtVc(
        { iss: issuer.did, vct: 'KycCredential', iat: nowS - 3600, exp: nowS + 86_400, kyc_level: 'full', status: { status_list: { idx: 7, uri: url } } },
        ['kyc_level'], issuer, holder, 'status-http-salts',
      );
      assert.equal(gate.status().state, 'WARN');
      await rejectsWith(gate.verifier.verify('bank', credential), ErrorCodes.CREDENTIAL_STATUS_UNAVAILABLE);

      answers.set('/tokens/1', token([]));
      await until('token fetched by the refresh timer', () => gate.status().state === 'OK', 5000);
      const facts = await gate.verifier.verify('bank', credential);
      assert.deepEqual(facts.status.map((s) => [s.mechanism, s.source]), [['TokenStatusList', url]]);

      answers.set('/tokens/1', token([7]));
      now += 61_000;
      assert.deepEqual(await gate.verifier.refreshStatusLists(AbortSignal.timeout(5000), now), []);
      await rejectsWith(gate.verifier.verify('bank', credential), ErrorCodes.CREDENTIAL_REVOKED);

      // the issuer's server answers garbage: the held token stays until its maximum age, then fails closed
      answers.set('/tokens/1', { status: 200, body: '{"not":"a jwt"}' });
      now += 61_000;
      const failures = await gate.verifier.refreshStatusLists(AbortSignal.timeout(5000), now);
      assert.deepEqual(failures.map((f) => f.error.code), [ErrorCodes.CREDENTIAL_STATUS_INVALID]);
      await rejectsWith(gate.verifier.verify('bank', credential), ErrorCodes.CREDENTIAL_REVOKED);
      now += 600_000;
      await rejectsWith(gate.verifier.verify('bank', credential), ErrorCodes.CREDENTIAL_STATUS_STALE);
    } finally {
      await gate.stop();
    }
  });

  it('refuses what the source must not take: an unlisted URL, a redirect, an error status, an oversized or non-JSON body', async () => {
    answers.set('/redirect', { status: 302, body: '', headers: { location: '/lists/1' } });
    answers.set('/big', { status: 200, body: 'x'.repeat(2048) });
    answers.set('/text', { status: 200, body: 'not json' });
    answers.set('/gone', { status: 410, body: 'gone' });
    const urls = ['/redirect', '/big', '/text', '/gone'].map((p) => `${base}${p}`);
    const source = new HttpStatusListSource({ urls, timeoutMs: 2000, maxBytes: 1024 });
    const code = async (url: string): Promise<string | undefined> => {
      try {
        await source.fetch(url, AbortSignal.timeout(5000));
        return undefined;
      } catch (error) {
        return isPavilionError(error) ? `${error.code}: ${error.message}` : String(error);
      }
    };
    assert.match((await code(`${base}/lists/other`)) ?? '', /ERR_CREDENTIAL_STATUS_UNAVAILABLE: .*not a configured status list URL/);
    assert.match((await code(`${base}/redirect`)) ?? '', /ERR_CREDENTIAL_STATUS_UNAVAILABLE: .*cannot be fetched/);
    assert.match((await code(`${base}/big`)) ?? '', /ERR_CREDENTIAL_STATUS_UNAVAILABLE: .*(2048 bytes|larger than the limit)/);
    assert.match((await code(`${base}/text`)) ?? '', /ERR_CREDENTIAL_STATUS_INVALID: .*not JSON/);
    assert.match((await code(`${base}/gone`)) ?? '', /ERR_CREDENTIAL_STATUS_UNAVAILABLE: .*HTTP 410/);
  });

  it('policy: https URLs (http only for a loopback host), not also a file', () => {
    assert.deepEqual(policy({ statusListUrls: ['https://status.example/1', 'http://127.0.0.1:8080/x'] }).statusListUrls, ['https://status.example/1', 'http://127.0.0.1:8080/x']);
    assert.deepEqual(policy({ tokenStatusListUrls: ['https://status.example/t/1'] }).tokenStatusListUrls, ['https://status.example/t/1']);
    for (const field of ['statusListUrls', 'tokenStatusListUrls']) {
      for (const bad of [['http://status.example/1'], ['ftp://x/1'], ['not a url'], [42]]) {
        assert.throws(() => policy({ [field]: bad }), (error: unknown) => isPavilionError(error, ErrorCodes.CONFIG_INVALID), `${field} ${JSON.stringify(bad)}`);
      }
    }
  });
});
