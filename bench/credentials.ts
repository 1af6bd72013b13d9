/**
 * `npm run bench -- credentials`: what Pavilion's credential verifier costs on top of the
 * libraries it wraps, and what credentials cost the Data API.
 *
 * Per format (eddsa-rdfc-2022, ecdsa-rdfc-2019, Ed25519Signature2020, VC-JWT, SD-JWT VC with
 * key binding, bbs-2023 derived proof): Pavilion's `CredentialVerifier.verify` (freshness,
 * issuer trust and status included; Data Integrity proofs on its proof worker, as the sidecar
 * runs them) against the raw library call (the peer: `@digitalbazaar/vc` verifyCredential with
 * the same document loader and suites, `@sd-jwt/sd-jwt-vc` verify, `jose` jwtVerify), one
 * verification at a time:
 *   - first: a verifier just created (empty proof cache, fresh document loader and DID
 *     resolution; the peer: a fresh loader and fresh suites) verifying its first credential;
 *     run 1 is also the first call in this process (`first_in_process_ms`);
 *   - warm: a warmed verifier (as many warm-up verifications as samples, both sides), every
 *     credential new to it (no proof cache hit);
 *   - cached: the same credential again (Pavilion's proof cache; the libraries have none and
 *     verify again). SD-JWT VCs with key binding are never cached (each presentation carries
 *     a new KB-JWT): their repeat is the same credential presented again with a new nonce.
 * BLS12-381 accumulator: one witness check on the proof worker, and the sizes a holder and a
 * verifier keep, against the tails file an AnonCreds v1 holder downloads for the same capacity
 * (about 1.6 MB per 5,000 credentials, the figure the project notes use).
 * Data API: `bank/credentials/decision` on the compiled sidecar with its embedded defaults (the
 * sample tenants' credential policies), one credential per request against the same request
 * without a credential; autocannon in its own process (bench/lib/load.ts).
 *
 * Env: BENCH_DURATION_S (default 4, per load run), BENCH_CONNECTIONS (default 16),
 * BENCH_SAMPLES_SCALE (default 1: multiplies the verification sample counts).
 */
import { createHash, createPublicKey, randomBytes, verify as cryptoVerify, type JsonWebKey } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as vc from '@digitalbazaar/vc';
import { DataIntegrityProof } from '@digitalbazaar/data-integrity';
import { cryptosuite as eddsaRdfc2022 } from '@digitalbazaar/eddsa-rdfc-2022-cryptosuite';
import { cryptosuite as ecdsaRdfc2019 } from '@digitalbazaar/ecdsa-rdfc-2019-cryptosuite';
import { createVerifyCryptosuite as bbs2023Verify } from '@digitalbazaar/bbs-2023-cryptosuite';
import { Ed25519Signature2020 } from '@digitalbazaar/ed25519-signature-2020';
import { SDJwtVcInstance } from '@sd-jwt/sd-jwt-vc';
import { importJWK, jwtVerify } from 'jose';
import { buildTenantBundle, definitionPath } from '../sidecar/src/bundles/index.ts';
import { AccumulatorIssuer, CredentialVerifier, DidResolver, PUBLIC_KEY_BYTES, VALUE_BYTES, WITNESS_BYTES, WorkerProofExecutor, createDocumentLoader, elementFor, encodeWitness, parseCredentialPolicy, pinContexts, type CredentialPolicy, type DocumentLoader } from '../sidecar/src/credentials/index.ts';
import { SAMPLE_CONTEXT_URL, deriveBbs, issueBbsBase, issueDataIntegrity, issueEd25519Signature2020, issueSampleCredential, issueSdJwtVc, issueVcJwt, presentSdJwtVc, sampleBbsKey, sampleContext, sampleKey, type SampleKey } from '../sidecar/src/credentials/samples.ts';
import { REPO_ROOT } from '../sidecar/src/lib/tools.ts';
import { measureServer, type LoadRequest } from './lib/load.ts';
import { writeResults, type BenchCase, type Metrics } from './lib/results.ts';
import { buildSidecar, freePort, startServer, type Server } from './lib/servers.ts';

const DURATION_S = Number(process.env['BENCH_DURATION_S'] ?? 4);
const CONNECTIONS = Number(process.env['BENCH_CONNECTIONS'] ?? 16);
const WARMUP_S = 1;
const SAMPLES_SCALE = Number(process.env['BENCH_SAMPLES_SCALE'] ?? 1);
const FIRST_RUNS = Math.max(1, Math.round(5 * SAMPLES_SCALE));
const scaled = (samples: number): number => Math.max(2, Math.round(samples * SAMPLES_SCALE));
const DOMAIN = 'https://bench.pavilion.example';
const VC_V2 = 'https://www.w3.org/ns/credentials/v2';
const VC_V1 = 'https://www.w3.org/2018/credentials/v1';
const ED25519_2020_CONTEXT = 'https://w3id.org/security/suites/ed25519-2020/v1';
const DAY_MS = 24 * 60 * 60_000;
/** AnonCreds v1 tails file size per 5,000 credentials of capacity (project notes). */
const ANONCREDS_TAILS_BYTES_PER_5000 = 1_600_000;
const ACCUMULATOR_CAPACITY = 5_000;

// ---------------------------------------------------------------------------- statistics

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

const round3 = (ms: number): number => Math.round(ms * 1000) / 1000;

/** median and p99 of `samples` (ms) under `prefix`. */
function summary(prefix: string, samples: readonly number[]): Metrics {
  const sorted = [...samples].sort((a, b) => a - b);
  return { [`${prefix}_median_ms`]: round3(percentile(sorted, 50)), [`${prefix}_p99_ms`]: round3(percentile(sorted, 99)) };
}

async function timed(work: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await work();
  return performance.now() - started;
}

// ---------------------------------------------------------------------------- formats

interface Issuers {
  readonly ed25519: SampleKey;
  readonly p256: SampleKey;
  readonly holder: SampleKey;
  readonly bbs: Awaited<ReturnType<typeof sampleBbsKey>>;
}

/** One verification of `credential` (a nonce: SD-JWT presentations carry their own). */
type Verify = (credential: unknown, nonce: string) => Promise<unknown>;

interface FormatCase {
  readonly name: string;
  /** Warm and cached samples. */
  readonly samples: number;
  /** The i-th distinct credential, ready to verify (SD-JWT: presented for `nonce`). */
  credential(i: number, nonce: string): Promise<unknown>;
  /** For SD-JWT: the same issued credential presented again (a repeat). */
  again?(credential: unknown, nonce: string): Promise<unknown>;
  /** The raw library call, built fresh (`first`) or reused. */
  peer(): Verify;
}

function kyc(issuer: string, i: number, context: readonly string[] = [VC_V2, SAMPLE_CONTEXT_URL]): Record<string, unknown> {
  const from = new Date(Date.now() - DAY_MS);
  return {
    '@context': [...context],
    id: `urn:pavilion:bench:kyc:${i}`,
    type: ['VerifiableCredential', 'KycCredential'],
    issuer,
    ...(context[0] === VC_V1
      ? { issuanceDate: from.toISOString().replace(/\.\d+Z$/, 'Z') }
      : { validFrom: from.toISOString().replace(/\.\d+Z$/, 'Z'), validUntil: new Date(from.getTime() + 30 * DAY_MS).toISOString().replace(/\.\d+Z$/, 'Z') }),
    credentialSubject: { id: 'did:example:alice', kycLevel: 'full', givenName: 'Alice', country: 'CH' },
  };
}

function dataIntegrityPeer(policy: CredentialPolicy): () => Verify {
  return () => {
    const documentLoader = peerLoader(policy);
    const suite = [
      new DataIntegrityProof({ cryptosuite: eddsaRdfc2022 }),
      new DataIntegrityProof({ cryptosuite: ecdsaRdfc2019 }),
      new DataIntegrityProof({ cryptosuite: bbs2023Verify() }),
      new Ed25519Signature2020(),
    ];
    return async (credential) => {
      const result = await vc.verifyCredential({ credential, suite, documentLoader, checkStatus: async () => ({ verified: true }) });
      if (result.verified !== true) throw new Error(`peer: not verified: ${JSON.stringify(result.error ?? result).slice(0, 300)}`);
    };
  };
}

function peerLoader(policy: CredentialPolicy): DocumentLoader {
  return createDocumentLoader({ contexts: pinContexts(policy.contexts), dids: new DidResolver(policy.didWeb) });
}

function sha256(data: string | ArrayBuffer, alg: string): Uint8Array {
  if (alg.toLowerCase() !== 'sha-256') throw new Error(`hash ${alg}`);
  return new Uint8Array(createHash('sha256').update(typeof data === 'string' ? data : Buffer.from(data)).digest());
}

function formats(issuers: Issuers, policy: CredentialPolicy, issuerLoader: DocumentLoader, bbsBase: Record<string, unknown>): FormatCase[] {
  const di = dataIntegrityPeer(policy);
  const nowSeconds = (): number => Math.floor(Date.now() / 1000);
  return [
    {
      name: 'eddsa-rdfc-2022',
      samples: scaled(120),
      credential: (i) => issueDataIntegrity(kyc(issuers.ed25519.did, i), issuers.ed25519, issuerLoader, new Date(Date.now() - DAY_MS)),
      peer: di,
    },
    {
      name: 'ecdsa-rdfc-2019',
      samples: scaled(80),
      credential: (i) => issueDataIntegrity(kyc(issuers.p256.did, i), issuers.p256, issuerLoader, new Date(Date.now() - DAY_MS)),
      peer: di,
    },
    {
      name: 'Ed25519Signature2020',
      samples: scaled(120),
      credential: (i) => issueEd25519Signature2020(kyc(issuers.ed25519.did, i, [VC_V1, ED25519_2020_CONTEXT, SAMPLE_CONTEXT_URL]), issuers.ed25519, issuerLoader, new Date(Date.now() - DAY_MS)),
      peer: di,
    },
    {
      name: 'VC-JWT (vc+jwt, EdDSA)',
      samples: scaled(400),
      credential: (i) => issueVcJwt(kyc(issuers.ed25519.did, i), issuers.ed25519),
      peer: () => {
        let key: Awaited<ReturnType<typeof importJWK>> | undefined;
        return async (credential) => {
          key ??= await importJWK(issuers.ed25519.publicJwk, 'EdDSA');
          await jwtVerify(credential as string, key, { algorithms: ['EdDSA'], typ: 'vc+jwt' });
        };
      },
    },
    {
      name: 'SD-JWT VC with key binding (EdDSA)',
      samples: scaled(300),
      credential: async (i, nonce) => {
        const seconds = nowSeconds() - 60;
        const issued = await issueSdJwtVc(
          { iss: issuers.ed25519.did, vct: 'KycCredential', iat: seconds, nbf: seconds, exp: seconds + 30 * 86_400, sub: 'did:example:alice', kycLevel: 'full', givenName: 'Alice', country: 'CH', jti: `urn:pavilion:bench:sd:${i}` },
          ['kycLevel', 'givenName', 'country'],
          issuers.ed25519,
          issuers.holder,
        );
        return presentSdJwtVc(issued, ['kycLevel'], issuers.holder, { nonce, aud: DOMAIN, iatSeconds: nowSeconds() });
      },
      again: async (presented, nonce) => {
        const issued = `${(presented as string).split('~').slice(0, -1).join('~')}~`;
        return presentSdJwtVc(issued, ['kycLevel'], issuers.holder, { nonce, aud: DOMAIN, iatSeconds: nowSeconds() });
      },
      peer: () => {
        const issuerKey = createPublicKey({ key: issuers.ed25519.publicJwk as JsonWebKey, format: 'jwk' });
        const instance = new SDJwtVcInstance({
          hasher: sha256,
          hashAlg: 'sha-256',
          verifier: (data, signature) => cryptoVerify(null, Buffer.from(data), issuerKey, Buffer.from(signature, 'base64url')),
          kbVerifier: (data, signature, payload) => {
            const jwk = (payload as { cnf?: { jwk?: JsonWebKey } }).cnf?.jwk;
            if (jwk === undefined) return false;
            return cryptoVerify(null, Buffer.from(data), createPublicKey({ key: jwk, format: 'jwk' }), Buffer.from(signature, 'base64url'));
          },
        });
        return async (credential, nonce) => {
          await instance.verify(credential as string, { keyBindingNonce: nonce, requireKeyBindings: true });
        };
      },
    },
    {
      name: 'bbs-2023 derived proof (proof worker)',
      samples: scaled(8),
      credential: () => deriveBbs(bbsBase, ['/credentialSubject/kycLevel'], issuerLoader),
      peer: di,
    },
  ];
}

function benchPolicy(tenantId: string, issuers: Issuers): CredentialPolicy {
  const context = sampleContext();
  return parseCredentialPolicy(
    tenantId,
    {
      domain: DOMAIN,
      contexts: [{ url: context.url, sha256Hex: context.sha256Hex, path: 'samples-v1.jsonld' }],
      trustAnchors: [issuers.ed25519.did, issuers.p256.did, issuers.bbs.did].map((issuer) => ({ issuer, credentialTypes: ['KycCredential'] })),
      keyBinding: { required: true, maxAgeMs: 5 * 60_000 },
    },
    (path) => {
      if (path === 'samples-v1.jsonld') return context.bytes;
      throw new Error(`no file ${path}`);
    },
  );
}

async function measureFormat(format: FormatCase, issuers: Issuers, executor: WorkerProofExecutor, warm: CredentialVerifier): Promise<BenchCase> {
  let nonces = 0;
  const nextNonce = (): string => `bench-${format.name.length}-${++nonces}-${randomBytes(4).toString('hex')}`;
  const pavilionVerify = (verifier: CredentialVerifier, tenant: string): Verify => (credential, nonce) =>
    verifier.verify(tenant, credential, { challenge: nonce, domain: DOMAIN });

  // first: a new verifier (or fresh library objects) and a credential it has never seen
  const pavilionFirst: number[] = [];
  const peerFirst: number[] = [];
  let serial = 1_000_000;
  for (let run = 0; run < FIRST_RUNS; run++) {
    const tenant = `first-${format.name.replace(/[^a-z0-9]/gi, '').toLowerCase()}-${run}`;
    const verifier = await CredentialVerifier.create([benchPolicy(tenant, issuers)], { executor });
    const nonce = nextNonce();
    const credential = await format.credential(serial++, nonce);
    pavilionFirst.push(await timed(() => pavilionVerify(verifier, tenant)(credential, nonce)));
    const peerNonce = nextNonce();
    const peerCredential = await format.credential(serial++, peerNonce);
    const peer = format.peer();
    peerFirst.push(await timed(() => peer(peerCredential, peerNonce)));
  }

  // warm: distinct credentials, issued before the clock starts
  const issued: Array<{ credential: unknown; nonce: string }> = [];
  const peerIssued: Array<{ credential: unknown; nonce: string }> = [];
  // as many warm-up verifications as measured ones, on both sides: the proof worker's JSON-LD
  // canonicalisation reaches optimised code after about a hundred (the median falls by a third)
  const warmup = format.samples;
  for (let i = 0; i < format.samples + warmup; i++) {
    const nonce = nextNonce();
    issued.push({ credential: await format.credential(i, nonce), nonce });
    const peerNonce = nextNonce();
    peerIssued.push({ credential: await format.credential(i, peerNonce), nonce: peerNonce });
  }
  const pavilion = pavilionVerify(warm, 'bench');
  const peer = format.peer();
  const pavilionWarm: number[] = [];
  const peerWarm: number[] = [];
  for (const [i, { credential, nonce }] of issued.entries()) {
    const ms = await timed(() => pavilion(credential, nonce));
    if (i >= warmup) pavilionWarm.push(ms);
  }
  for (const [i, { credential, nonce }] of peerIssued.entries()) {
    const ms = await timed(() => peer(credential, nonce));
    if (i >= warmup) peerWarm.push(ms);
  }

  // cached: the last warm credential again (SD-JWT: the same credential, a new presentation)
  const repeat = issued.at(-1)!;
  const peerRepeat = peerIssued.at(-1)!;
  const again = async (entry: { credential: unknown }): Promise<{ credential: unknown; nonce: string }> => {
    if (format.again === undefined) return { credential: entry.credential, nonce: nextNonce() };
    const nonce = nextNonce();
    return { credential: await format.again(entry.credential, nonce), nonce };
  };
  const pavilionCached: number[] = [];
  const peerCached: number[] = [];
  // each side in its own loop, as for warm: interleaved, every Pavilion sample would follow
  // milliseconds of the library's JSON-LD work and its garbage
  for (let i = 0; i < format.samples; i++) {
    const p = await again(repeat);
    pavilionCached.push(await timed(() => pavilion(p.credential, p.nonce)));
  }
  for (let i = 0; i < format.samples; i++) {
    const q = await again(peerRepeat);
    peerCached.push(await timed(() => peer(q.credential, q.nonce)));
  }

  return {
    name: `verify ${format.name}`,
    pavilion: { ...summary('first', pavilionFirst), first_in_process_ms: round3(pavilionFirst[0]!), ...summary('warm', pavilionWarm), ...summary('cached', pavilionCached) },
    peer: { ...summary('first', peerFirst), first_in_process_ms: round3(peerFirst[0]!), ...summary('warm', peerWarm), ...summary('cached', peerCached) },
    peerName: format.name.startsWith('VC-JWT') ? 'jose jwtVerify' : format.name.startsWith('SD-JWT') ? '@sd-jwt/sd-jwt-vc verify (keyBindingNonce)' : '@digitalbazaar/vc verifyCredential, same loader and suites, main thread',
    notes: `${FIRST_RUNS} first runs, ${format.samples} warm (after as many warm-up verifications) and ${format.samples} repeat samples, one at a time.` +
      (format.again === undefined ? ' Repeat: Pavilion answers from its proof cache (time, trust and status re-checked); the library verifies again.' : ' Repeat: SD-JWT VCs with key binding are not cached (a new KB-JWT each time), on either side.') +
      (format.name.startsWith('VC-JWT') || format.name.startsWith('SD-JWT') ? ' Both on the calling thread.' : ' Pavilion: proof on its proof worker (one worker), as the sidecar runs it.'),
  };
}

// ---------------------------------------------------------------------------- accumulator

async function measureAccumulator(executor: WorkerProofExecutor): Promise<BenchCase> {
  const members = 200;
  const issuer = AccumulatorIssuer.create('urn:pavilion:bench:accumulator', randomBytes);
  let last = issuer.add('member-0');
  for (let i = 1; i < members; i++) last = issuer.add(`member-${i}`);
  const value = new Uint8Array(Buffer.from(issuer.state().value, 'hex'));
  const element = elementFor(`member-${members - 1}`);
  const publicKey = issuer.publicKey; // what a verifier holds: read once, outside the timing
  const times: number[] = [];
  // 20 warm-up checks: the worker's bigint arithmetic needs them to reach optimised code
  for (let i = 0; i < 50; i++) {
    const ms = await timed(async () => {
      if (!(await executor.verifyMembership(value, publicKey, element, last.point))) throw new Error('witness did not verify');
    });
    if (i >= 20) times.push(ms);
  }
  return {
    name: `BLS12-381 accumulator: one witness check, and sizes for ${ACCUMULATOR_CAPACITY.toLocaleString('en')} credentials of capacity`,
    pavilion: {
      ...summary('witness_check', times),
      holder_download_bytes: encodeWitness(last).length,
      witness_bytes: WITNESS_BYTES,
      accumulator_value_bytes: VALUE_BYTES,
      public_key_bytes: PUBLIC_KEY_BYTES,
      verifier_state_bytes: VALUE_BYTES + PUBLIC_KEY_BYTES,
    },
    peer: { holder_download_bytes: Math.round((ACCUMULATOR_CAPACITY / 5000) * ANONCREDS_TAILS_BYTES_PER_5000) },
    peerName: 'AnonCreds v1 tails file (about 1.6 MB per 5,000 credentials: the project notes\' figure, not measured here)',
    notes: `Witness check: one multi-pairing on the proof worker (30 samples after 20 warm-up), accumulator of ${members} members (sizes and check time do not depend on the member count). ` +
      'A holder keeps a 52-byte witness (updated from published deltas) where an AnonCreds v1 holder downloads the registry\'s tails file; the verifier keeps the accumulator value and public key.',
  };
}

// ---------------------------------------------------------------------------- Data API

async function startPavilion(main: string, bundleDir: string, workDir: string): Promise<Server> {
  const port = await freePort();
  const config = join(workDir, `pavilion-${port}.json`);
  // no credentials section: the embedded defaults (the sample tenants' credential policies)
  await writeFile(config, JSON.stringify({
    http: { host: '127.0.0.1', port },
    bundles: { directory: bundleDir, keysDirectory: join(bundleDir, 'keys'), persistDirectory: join(workDir, 'persisted') },
    decisionLog: { sink: 'none' },
  }));
  return startServer(process.execPath, [main], `http://127.0.0.1:${port}`, '/health/ready', { ...process.env, PAVILION_CONFIG: config });
}

async function expectDecision(url: string, request: LoadRequest, kycVerified: boolean): Promise<void> {
  const response = await fetch(`${url}${request.path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...request.headers }, body: request.body });
  const body = await response.json() as { result?: { kyc_verified?: boolean } };
  if (body.result?.kyc_verified !== kycVerified) throw new Error(`expected kyc_verified ${kycVerified}, got ${JSON.stringify(body).slice(0, 400)}`);
}

async function measureDataApi(work: string): Promise<BenchCase[]> {
  const main = await buildSidecar(REPO_ROOT);
  const bundleDir = join(work, 'bundles');
  await buildTenantBundle(definitionPath('bank'), { outputDirectory: bundleDir });
  const server = await startPavilion(main, bundleDir, work);
  try {
    const path = '/v1/data/bank/credentials/decision';
    const headers = { 'x-pavilion-tenant': 'bank' };
    const now = Date.now();
    const jwtPool = 256;
    const jwts: LoadRequest[] = [];
    for (let i = 0; i < jwtPool; i++) {
      const credential = await issueSampleCredential('bank', { format: 'vc-jwt', issuedAt: new Date(now - DAY_MS - i * 1000), validDays: 30 }) as string;
      jwts.push({ path, headers: { ...headers, 'x-pavilion-credentials': credential }, body: '{"input":{}}' });
    }
    const diPool = 1200;
    const dis: LoadRequest[] = [];
    for (let i = 0; i < diPool; i++) {
      const credential = await issueSampleCredential('bank', { format: 'di', issuedAt: new Date(now - DAY_MS - i * 1000), validDays: 30 });
      dis.push({ path, headers, body: JSON.stringify({ input: {}, credentials: [credential] }) });
    }
    const none: LoadRequest = { path, headers, body: '{"input":{}}' };
    await expectDecision(server.url, jwts[0]!, true);
    await expectDecision(server.url, dis[0]!, true);
    await expectDecision(server.url, none, false);

    const load = (requests: readonly LoadRequest[]) => measureServer(server, { url: server.url, connections: CONNECTIONS, requests, unique: false }, WARMUP_S, DURATION_S);
    const withoutCredential = await load([none]);
    const withJwt = await load(jwts);
    const withDi = await load(dis);
    const peerName = 'the same request without a credential (same server)';
    return [
      {
        name: `Data API bank/credentials/decision, one VC-JWT per request (${jwtPool} credentials repeating: proof cache hits)`,
        pavilion: withJwt,
        peer: withoutCredential,
        peerName,
        notes: `compiled sidecar, embedded defaults, ${CONNECTIONS} connections, ${DURATION_S}s after ${WARMUP_S}s warm-up; credential in x-pavilion-credentials`,
      },
      {
        name: `Data API bank/credentials/decision, one eddsa-rdfc-2022 credential per request (${diPool} distinct credentials in the body)`,
        pavilion: withDi,
        peer: withoutCredential,
        peerName,
        notes: `proofs on the sidecar's one proof worker; requests beyond the first ${diPool} (warm-up included) repeat a credential and hit the proof cache`,
      },
    ];
  } finally {
    await server.stop();
  }
}

// ---------------------------------------------------------------------------- run

export async function run(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'pavilion-bench-credentials-'));
  const executor = await WorkerProofExecutor.start({ workers: 1, jobTimeoutMs: 30_000 });
  try {
    const issuers: Issuers = {
      ed25519: await sampleKey('bench-issuer-ed25519'),
      p256: await sampleKey('bench-issuer-p256', 'P-256'),
      holder: await sampleKey('bench-holder'),
      bbs: await sampleBbsKey('bench-issuer-bbs'),
    };
    const policy = benchPolicy('bench', issuers);
    const issuerLoader = peerLoader(policy);
    const bbsBase = await issueBbsBase(kyc(issuers.bbs.did, 0), issuers.bbs, ['/issuer', '/validFrom', '/validUntil'], issuerLoader);
    const warm = await CredentialVerifier.create([policy], { executor });

    const cases: BenchCase[] = [];
    for (const format of formats(issuers, policy, issuerLoader, bbsBase)) {
      process.stdout.write(`- verify ${format.name}\n`);
      cases.push(await measureFormat(format, issuers, executor, warm));
    }
    process.stdout.write('- accumulator\n');
    cases.push(await measureAccumulator(executor));
    process.stdout.write('- Data API throughput\n');
    cases.push(...await measureDataApi(work));
    await writeResults('credentials', cases, { connections: CONNECTIONS, duration_s: DURATION_S, load_generator: 'autocannon (separate process)' });
  } finally {
    await executor.close();
    await rm(work, { recursive: true, force: true });
  }
}
