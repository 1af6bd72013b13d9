/**
 * Revocation and suspension: W3C Bitstring Status List from the tenant's verified cache (TTL,
 * maximum age, fail closed), and the BLS12-381 accumulator (Nguyen 2005 / VB 2022) with
 * witness updates, signed states and witness size.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { ErrorCodes } from '../sidecar/src/lib/errors.ts';
import { ACCUMULATOR_ENTRY_TYPE, AccumulatorIssuer, MIN_STATUS_LIST_BITS, WITNESS_BYTES, elementFor, encodeStatusList, encodeWitness, prepareAccumulatorKey, signAccumulatorState, updateWitness, verifyMembership } from '../sidecar/src/credentials/index.ts';
import { SAMPLE_CONTEXT_URL, jwsAlgorithm, type SampleKey } from '../sidecar/src/credentials/samples.ts';
import { bitAt } from '../sidecar/src/credentials/bitstring-status-list.ts';
import { gunzipSync, gzipSync } from 'node:zlib';
import { readFileSync } from 'node:fs';
import { CHALLENGE, DOMAIN, NOW_MS, VC_V2, issuerLoader, keys, kycCredential, rejectsWith, signed, signedStatusList, trusting, verifier, presentDataIntegrity, seeded } from './credentials/fixtures.ts';

const LIST_URL = 'https://status.bank.example/lists/1';
const SUSPENSION_URL = 'https://status.bank.example/lists/2';

function statusList(issuer: SampleKey, url: string, purpose: 'revocation' | 'suspension', set: number[], over: Record<string, unknown> = {}) {
  return signedStatusList(issuer, url, { purpose, set, over });
}

function entry(index: number, purpose: 'revocation' | 'suspension' = 'revocation', url = LIST_URL) {
  return { id: `${url}#${index}`, type: 'BitstringStatusListEntry', statusPurpose: purpose, statusListIndex: String(index), statusListCredential: url };
}

/** `body` with a temporary directory holding the sample context (`contexts` pins it), removed after it; `at` resolves a file there. */
async function inContextDir(body: (dir: { readonly contexts: unknown[]; readonly read: (path: string) => Uint8Array; readonly at: (path: string) => string }) => Promise<void>): Promise<void> {
  const { mkdtemp, rm, writeFile } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { sampleContext } = await import('../sidecar/src/credentials/samples.ts');
  const dir = await mkdtemp(join(tmpdir(), 'pavilion-status-'));
  try {
    await writeFile(join(dir, 'ctx.jsonld'), sampleContext().bytes);
    const at = (path: string): string => join(dir, path);
    await body({ contexts: [{ url: sampleContext().url, sha256Hex: sampleContext().sha256Hex, path: 'ctx.jsonld' }], read: (path) => new Uint8Array(readFileSync(at(path))), at });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe('Bitstring Status List', () => {
  it('encodes index 0 as the left-most bit of the first byte (spec section 3.2)', () => {
    const encoded = encodeStatusList(MIN_STATUS_LIST_BITS, [0, 9]);
    const bits = new Uint8Array(gunzipSync(Buffer.from(encoded.slice(1), 'base64url')));
    assert.equal(bits[0], 0x80);
    assert.equal(bits[1], 0x40);
    assert.ok(bitAt(bits, 0) && bitAt(bits, 9) && !bitAt(bits, 1));
  });

  it('accepts a credential whose bit is clear, refuses revoked and suspended ones', async () => {
    const { issuer } = await keys();
    const v = await verifier(trusting(issuer.did));
    await v.admitStatusList('bank', LIST_URL, await statusList(issuer, LIST_URL, 'revocation', [7]));
    await v.admitStatusList('bank', SUSPENSION_URL, await statusList(issuer, SUSPENSION_URL, 'suspension', [8]));
    const ok = await v.verify('bank', await signed(kycCredential(issuer.did, { credentialStatus: [entry(6), entry(6, 'suspension', SUSPENSION_URL)] }), issuer));
    assert.deepEqual(ok.status.map((s) => [s.mechanism, s.purpose]), [['BitstringStatusList', 'revocation'], ['BitstringStatusList', 'suspension']]);
    await rejectsWith(v.verify('bank', await signed(kycCredential(issuer.did, { credentialStatus: entry(7) }), issuer)), ErrorCodes.CREDENTIAL_REVOKED);
    await rejectsWith(v.verify('bank', await signed(kycCredential(issuer.did, { credentialStatus: entry(8, 'suspension', SUSPENSION_URL) }), issuer)), ErrorCodes.CREDENTIAL_SUSPENDED);
  });

  it('fails closed: unknown list, stale list, expired list', async () => {
    const { issuer } = await keys();
    let now = NOW_MS;
    const v = await verifier({ ...trusting(issuer.did), statusLists: { ttlMs: 60_000, maxAgeMs: 3_600_000 } }, { clock: () => now });
    const credential = await signed(kycCredential(issuer.did, { credentialStatus: entry(6) }), issuer);
    await rejectsWith(v.verify('bank', credential), ErrorCodes.CREDENTIAL_STATUS_UNAVAILABLE);
    await v.admitStatusList('bank', LIST_URL, await statusList(issuer, LIST_URL, 'revocation', []));
    await v.verify('bank', credential);
    now = NOW_MS + 3_600_001;
    await rejectsWith(v.verify('bank', credential), ErrorCodes.CREDENTIAL_STATUS_STALE);
    now = NOW_MS;
    await v.admitStatusList('bank', LIST_URL, await statusList(issuer, LIST_URL, 'revocation', [], { validUntil: '2026-06-01T12:30:00Z' }));
    now = NOW_MS + 40 * 60_000;
    await rejectsWith(v.verify('bank', credential), ErrorCodes.CREDENTIAL_STATUS_STALE);
  });

  it('refreshes lists past their TTL from the configured source; a failing source ends in STALE', async () => {
    const { issuer } = await keys();
    let now = NOW_MS;
    let revoked: number[] = [];
    let sourceUp = true;
    const fetched: string[] = [];
    const source = {
      fetch: async (url: string) => {
        fetched.push(url);
        if (!sourceUp) throw new Error('source down');
        return statusList(issuer, url, 'revocation', revoked);
      },
    };
    const v = await verifier({ ...trusting(issuer.did), statusLists: { ttlMs: 60_000, maxAgeMs: 600_000 } }, { clock: () => now, statusListSource: source });
    await v.admitStatusList('bank', LIST_URL, await statusList(issuer, LIST_URL, 'revocation', []));
    const credential = await signed(kycCredential(issuer.did, { credentialStatus: entry(6) }), issuer);
    await v.verify('bank', credential);
    revoked = [6];
    now = NOW_MS + 30_000;
    assert.deepEqual(await v.refreshStatusLists(AbortSignal.timeout(5_000)), []);
    assert.deepEqual(fetched, [], 'nothing is fetched before the TTL');
    now = NOW_MS + 61_000;
    assert.deepEqual(await v.refreshStatusLists(AbortSignal.timeout(5_000)), []);
    await rejectsWith(v.verify('bank', credential), ErrorCodes.CREDENTIAL_REVOKED);
    sourceUp = false;
    now = NOW_MS + 200_000;
    const failures = await v.refreshStatusLists(AbortSignal.timeout(5_000));
    assert.equal(failures.length, 1);
    now = NOW_MS + 61_000 + 600_001;
    await rejectsWith(v.verify('bank', credential), ErrorCodes.CREDENTIAL_STATUS_STALE);
  });

  it('refuses forged, foreign, short and wrong-purpose lists, and indexes outside the list', async () => {
    const { issuer, rogue } = await keys();
    const v = await verifier(trusting(issuer.did));
    const forged = await statusList(issuer, LIST_URL, 'revocation', []);
    (forged['credentialSubject'] as Record<string, unknown>)['encodedList'] = encodeStatusList(MIN_STATUS_LIST_BITS, [1]);
    await rejectsWith(v.admitStatusList('bank', LIST_URL, forged), ErrorCodes.CREDENTIAL_STATUS_INVALID);
    const { proof: _proof, ...unsigned } = await statusList(issuer, LIST_URL, 'revocation', []);
    const tiny = `u${gzipSync(new Uint8Array(16)).toString('base64url')}`;
    const short = await signed({ ...unsigned, credentialSubject: { ...(unsigned['credentialSubject'] as object), encodedList: tiny } }, issuer);
    await rejectsWith(v.admitStatusList('bank', LIST_URL, short), ErrorCodes.CREDENTIAL_STATUS_INVALID);
    await v.admitStatusList('bank', LIST_URL, await statusList(rogue, LIST_URL, 'revocation', []));
    await rejectsWith(v.verify('bank', await signed(kycCredential(issuer.did, { credentialStatus: entry(6) }), issuer)), ErrorCodes.CREDENTIAL_STATUS_INVALID);
    await v.admitStatusList('bank', LIST_URL, await statusList(issuer, LIST_URL, 'suspension', []));
    await rejectsWith(v.verify('bank', await signed(kycCredential(issuer.did, { credentialStatus: entry(6) }), issuer)), ErrorCodes.CREDENTIAL_STATUS_INVALID);
    await v.admitStatusList('bank', LIST_URL, await statusList(issuer, LIST_URL, 'revocation', []));
    await rejectsWith(v.verify('bank', await signed(kycCredential(issuer.did, { credentialStatus: entry(MIN_STATUS_LIST_BITS) }), issuer)), ErrorCodes.CREDENTIAL_STATUS_INVALID);
  });

  it('refuses unknown status types and requires status where the tenant says so', async () => {
    const { issuer } = await keys();
    const v = await verifier({ ...trusting(issuer.did), statusLists: { requiredForTypes: ['KycCredential'] } });
    await rejectsWith(v.verify('bank', await signed(kycCredential(issuer.did), issuer)), ErrorCodes.CREDENTIAL_STATUS_UNAVAILABLE);
  });

  it('a credential whose proof is cached is still checked for status, alone or inside a presentation', async () => {
    const { issuer, holder } = await keys();
    const v = await verifier(trusting(issuer.did));
    await v.admitStatusList('bank', LIST_URL, await statusList(issuer, LIST_URL, 'revocation', []));
    const credential = await signed(kycCredential(issuer.did, { credentialSubject: { id: holder.did, kycLevel: 'full' }, credentialStatus: entry(5) }), issuer);
    const alone = await v.verify('bank', credential);
    const first = await v.verifyPresentation('bank', await presentDataIntegrity([credential], holder, { challenge: CHALLENGE, domain: DOMAIN }, issuerLoader()), { challenge: CHALLENGE, domain: DOMAIN });
    assert.equal(first.credentials[0]?.credentialHash, alone.credentialHash, 'one cache key for the credential, inside a presentation or not');
    await v.admitStatusList('bank', LIST_URL, await statusList(issuer, LIST_URL, 'revocation', [5], { validFrom: '2026-05-02T00:00:00Z' }));
    await rejectsWith(v.verify('bank', credential), ErrorCodes.CREDENTIAL_REVOKED);
    // its only credential revoked, the presentation is refused with that code (and leaves its challenge unused)
    const second = await presentDataIntegrity([credential], holder, { challenge: 'c-2', domain: DOMAIN }, issuerLoader());
    await rejectsWith(v.verifyPresentation('bank', second, { challenge: 'c-2', domain: DOMAIN }), ErrorCodes.CREDENTIAL_REVOKED);
    assert.deepEqual((await v.verifyEach('bank', [second], { challenge: 'c-2', domain: DOMAIN })).errors.map((e) => [e.index, e.code]), [[0, ErrorCodes.CREDENTIAL_REVOKED]]);
  });
});


describe('BLS12-381 accumulator', () => {
  it('verifies members, refuses deleted ones, and keeps witnesses at 52 bytes', () => {
    const acc = AccumulatorIssuer.create('acc-1', seeded('acc-1'));
    const alice = acc.add('alice');
    const bob = acc.add('bob');
    const carol = acc.add('carol');
    assert.equal(encodeWitness(carol).length, WITNESS_BYTES);
    assert.ok(WITNESS_BYTES <= 100);
    const state = () => ({ value: new Uint8Array(Buffer.from(acc.state().value, 'hex')), key: acc.publicKey });
    const s = state();
    assert.ok(verifyMembership(s.value, s.key, elementFor('carol'), carol.point));
    assert.ok(!verifyMembership(s.value, s.key, elementFor('mallory'), carol.point), 'a witness is bound to its element');

    // holders update their witnesses from the published log
    const aliceNow = updateWitness(alice, elementFor('alice'), acc.updatesSince(alice.epoch), acc.valueAt(alice.epoch));
    const bobNow = updateWitness(bob, elementFor('bob'), acc.updatesSince(bob.epoch), acc.valueAt(bob.epoch));
    assert.ok(verifyMembership(s.value, s.key, elementFor('alice'), aliceNow.point));
    assert.ok(verifyMembership(s.value, s.key, elementFor('bob'), bobNow.point));
    assert.ok(!verifyMembership(s.value, s.key, elementFor('alice'), alice.point), 'an outdated witness fails');

    acc.delete('bob');
    const after = state();
    assert.ok(!verifyMembership(after.value, after.key, elementFor('bob'), bobNow.point), 'a deleted member fails');
    const aliceAfter = updateWitness(aliceNow, elementFor('alice'), acc.updatesSince(aliceNow.epoch), acc.valueAt(aliceNow.epoch));
    assert.ok(verifyMembership(after.value, after.key, elementFor('alice'), aliceAfter.point));
    assert.throws(() => updateWitness(bobNow, elementFor('bob'), acc.updatesSince(bobNow.epoch), acc.valueAt(bobNow.epoch)), (e: unknown) => (e as { code?: string }).code === ErrorCodes.CREDENTIAL_REVOKED);
  });

  it('checks a witness in a single multi-pairing, repeatably (timing is the benchmark\'s job)', () => {
    const acc = AccumulatorIssuer.create('acc-t', randomBytes);
    const w = acc.add('dave');
    const value = new Uint8Array(Buffer.from(acc.state().value, 'hex'));
    verifyMembership(value, acc.publicKey, elementFor('dave'), w.point);
    assert.ok(verifyMembership(value, acc.publicKey, elementFor('dave'), w.point));
    assert.ok(!verifyMembership(value, acc.publicKey, elementFor('erin'), w.point), 'another element with the same witness fails');
  });

  it('reuses one prepared key across more epochs than it keeps decoded values, never mixing them up', () => {
    const acc = AccumulatorIssuer.create('acc-e', seeded('acc-e'));
    const key = prepareAccumulatorKey(acc.publicKey);
    let frank = acc.add('frank');
    const values: Uint8Array[] = [];
    for (let epoch = 0; epoch < 7; epoch++) {
      acc.add(`filler-${epoch}`);
      frank = updateWitness(frank, elementFor('frank'), acc.updatesSince(frank.epoch), acc.valueAt(frank.epoch));
      const value = new Uint8Array(Buffer.from(acc.state().value, 'hex'));
      values.push(value);
      assert.ok(verifyMembership(value, key, elementFor('frank'), frank.point), `epoch ${epoch}`);
    }
    // the current witness matches only the current value, however often older ones were decoded
    for (const old of values.slice(0, -1)) assert.ok(!verifyMembership(old, key, elementFor('frank'), frank.point));
    assert.ok(verifyMembership(values.at(-1)!, key, elementFor('frank'), frank.point));
    const forged = values.at(-1)!.slice();
    forged[20]! ^= 1;
    assert.throws(() => verifyMembership(forged, key, elementFor('frank'), frank.point), (e: unknown) => (e as { code?: string }).code === ErrorCodes.CREDENTIAL_WITNESS_INVALID);
  });

  async function accumulatorSetup() {
    const { issuer } = await keys();
    const acc = AccumulatorIssuer.create('urn:accumulator:bank:1', seeded('bank-acc'));
    const pinned = { id: acc.id, issuer: issuer.did, publicKeyHex: Buffer.from(acc.publicKey).toString('hex') };
    let now = NOW_MS;
    const v = await verifier({ ...trusting(issuer.did), accumulators: [pinned], accumulatorMaxAgeMs: 3_600_000 }, { clock: () => now });
    const publish = async () => v.admitAccumulatorState('bank', await signAccumulatorState(acc.state(), { kid: issuer.kid, privateJwk: issuer.privateJwk, alg: jwsAlgorithm(issuer) }, Math.floor(now / 1000)));
    const status = (handle: string) => ({ type: ACCUMULATOR_ENTRY_TYPE, accumulatorId: acc.id, revocationHandle: handle });
    const credentialFor = async (handle: string) => signed(kycCredential(issuer.did, { '@context': [VC_V2, SAMPLE_CONTEXT_URL], credentialStatus: status(handle) }), issuer);
    return { issuer, acc, v, publish, credentialFor, setNow: (ms: number) => { now = ms; } };
  }

  it('verifies a credential with an accumulator status entry and the holder\'s witness', async () => {
    const { acc, v, publish, credentialFor } = await accumulatorSetup();
    const witness = acc.add('handle-alice');
    await publish();
    const facts = await v.verify('bank', await credentialFor('handle-alice'), { witnesses: { 'handle-alice': Buffer.from(encodeWitness(witness)).toString('base64url') } });
    assert.deepEqual(facts.status.map((s) => s.mechanism), ['BlsAccumulator']);
  });

  it('refuses a revoked credential, a missing or outdated witness, a stale state', async () => {
    const { acc, v, publish, credentialFor, setNow } = await accumulatorSetup();
    const alice = acc.add('handle-alice');
    const bob = acc.add('handle-bob');
    await publish();
    const b64 = (w: typeof alice) => Buffer.from(encodeWitness(w)).toString('base64url');
    const aliceCredential = await credentialFor('handle-alice');
    await rejectsWith(v.verify('bank', aliceCredential), ErrorCodes.CREDENTIAL_WITNESS_INVALID);
    await rejectsWith(v.verify('bank', aliceCredential, { witnesses: { 'handle-alice': b64(alice) } }), ErrorCodes.CREDENTIAL_WITNESS_INVALID);
    const aliceNow = updateWitness(alice, elementFor('handle-alice'), acc.updatesSince(alice.epoch), acc.valueAt(alice.epoch));
    await v.verify('bank', aliceCredential, { witnesses: { 'handle-alice': b64(aliceNow) } });
    await rejectsWith(v.verify('bank', aliceCredential, { witnesses: { 'handle-alice': b64(bob) } }), ErrorCodes.CREDENTIAL_REVOKED);
    acc.delete('handle-alice');
    await publish();
    const forged = { epoch: acc.state().epoch, point: aliceNow.point };
    await rejectsWith(v.verify('bank', aliceCredential, { witnesses: { 'handle-alice': b64(forged) } }), ErrorCodes.CREDENTIAL_REVOKED);
    setNow(NOW_MS + 3_600_001);
    const bobNow = updateWitness(bob, elementFor('handle-bob'), acc.updatesSince(bob.epoch), acc.valueAt(bob.epoch));
    await rejectsWith(v.verify('bank', await credentialFor('handle-bob'), { witnesses: { 'handle-bob': b64(bobNow) } }), ErrorCodes.CREDENTIAL_STATUS_STALE);
  });

  it('refuses a state signed by someone else, with another key, or rolled back', async () => {
    const { issuer, rogue } = await keys();
    const acc = AccumulatorIssuer.create('urn:accumulator:bank:2', seeded('bank-acc-2'));
    const v = await verifier({ ...trusting(issuer.did), accumulators: [{ id: acc.id, issuer: issuer.did, publicKeyHex: Buffer.from(acc.publicKey).toString('hex') }] });
    const sign = (key: SampleKey, state = acc.state()) => signAccumulatorState(state, { kid: key.kid, privateJwk: key.privateJwk, alg: jwsAlgorithm(key) }, Math.floor(NOW_MS / 1000));
    await rejectsWith(v.admitAccumulatorState('bank', await sign(rogue)), ErrorCodes.CREDENTIAL_STATUS_INVALID);
    const other = AccumulatorIssuer.create(acc.id, seeded('other'));
    await rejectsWith(v.admitAccumulatorState('bank', await sign(issuer, other.state())), ErrorCodes.CREDENTIAL_STATUS_INVALID);
    const first = acc.state();
    acc.add('x');
    assert.equal(await v.admitAccumulatorState('bank', await sign(issuer)), 1);
    await rejectsWith(v.admitAccumulatorState('bank', await sign(issuer, first)), ErrorCodes.CREDENTIAL_STATUS_INVALID);
    const jws = await sign(issuer);
    await rejectsWith(v.admitAccumulatorState('bank', `${jws.slice(0, -4)}AAAA`), ErrorCodes.CREDENTIAL_SIGNATURE_INVALID);
  });

  it('reads a state only through the verified JWS: malformed, wrong typ, or an algorithm other than the key\'s is refused', async () => {
    const { issuer } = await keys();
    const acc = AccumulatorIssuer.create('urn:accumulator:bank:3', seeded('bank-acc-3'));
    const v = await verifier({ ...trusting(issuer.did), accumulators: [{ id: acc.id, issuer: issuer.did, publicKeyHex: Buffer.from(acc.publicKey).toString('hex') }] });
    const jws = await signAccumulatorState(acc.state(), { kid: issuer.kid, privateJwk: issuer.privateJwk, alg: jwsAlgorithm(issuer) }, Math.floor(NOW_MS / 1000));
    const [h, p, sig] = jws.split('.') as [string, string, string];
    const header = JSON.parse(Buffer.from(h, 'base64url').toString('utf8')) as Record<string, unknown>;
    const withHeader = (over: Record<string, unknown>): string => `${Buffer.from(JSON.stringify({ ...header, ...over })).toString('base64url')}.${p}.${sig}`;
    for (const bad of ['not a jws', `${h}.${p}`, `${h}.${p}.${sig}.x`, `!!.${p}.${sig}`]) {
      await rejectsWith(v.admitAccumulatorState('bank', bad), ErrorCodes.CREDENTIAL_STATUS_INVALID);
    }
    await rejectsWith(v.admitAccumulatorState('bank', withHeader({ typ: 'JWT' })), ErrorCodes.CREDENTIAL_STATUS_INVALID);
    await rejectsWith(v.admitAccumulatorState('bank', withHeader({ alg: jwsAlgorithm(issuer) === 'EdDSA' ? 'ES256' : 'EdDSA' })), ErrorCodes.CREDENTIAL_SIGNATURE_INVALID);
    await rejectsWith(v.admitAccumulatorState('bank', withHeader({ alg: 'HS256' })), ErrorCodes.CREDENTIAL_SIGNATURE_INVALID);
    assert.equal(await v.admitAccumulatorState('bank', jws), 0);
  });
});


describe('status lists refreshed from their configured files', () => {
  it('picks up a revocation written to the file once the TTL has passed', async () => {
    const { writeFile, readFile } = await import('node:fs/promises');
    const { CredentialGate, parseCredentialPolicy } = await import('../sidecar/src/credentials/index.ts');
    const { issuer } = await keys();
    await inContextDir(async ({ contexts, read, at }) => {
      const listPath = at('list.json');
      await writeFile(listPath, JSON.stringify(await statusList(issuer, LIST_URL, 'revocation', [])));
      const policy = parseCredentialPolicy('bank', {
        ...trusting(issuer.did),
        contexts,
        statusLists: { ttlMs: 1_000, maxAgeMs: 60_000 },
        statusListFiles: [{ url: LIST_URL, path: 'list.json' }],
      }, read, at);
      let now = NOW_MS;
      const gate = new CredentialGate({ policies: [policy], refreshIntervalMs: 3_600_000, maxCredentialsPerRequest: 4, proofWorkers: 0, proofJobTimeoutMs: 1_000, clock: () => now });
      await gate.start();
      try {
        const credential = await signed(kycCredential(issuer.did, { credentialStatus: entry(6) }), issuer);
        const before = (await gate.prepareInput('bank', {}, [credential], {})) as { credentials: unknown[] };
        assert.equal(before.credentials.length, 1);
        await writeFile(listPath, JSON.stringify(await statusList(issuer, LIST_URL, 'revocation', [6])));
        assert.ok((await readFile(listPath, 'utf8')).length > 0);
        now = NOW_MS + 2_000;
        assert.deepEqual(await gate.verifier.refreshStatusLists(AbortSignal.timeout(5_000), now), []);
        const after = (await gate.prepareInput('bank', {}, [credential], {})) as { credential_errors: Array<{ code: string }> };
        assert.deepEqual(after.credential_errors.map((e) => e.code), [ErrorCodes.CREDENTIAL_REVOKED]);
      } finally {
        await gate.stop();
      }
    });
  });
});

describe("a tenant's status list file refused at start", () => {
  it("is that tenant's alone: the gate starts, credentials that need the list are refused (WARN names it), the others are served, and the renewed file is admitted by the next refresh", async () => {
    const { writeFile } = await import('node:fs/promises');
    const { CredentialGate, parseCredentialPolicy } = await import('../sidecar/src/credentials/index.ts');
    const { issuer } = await keys();
    await inContextDir(async ({ contexts, read, at }) => {
      const listPath = at('list.json');
      // expired an hour before the gate starts: refused when admitted
      await writeFile(listPath, JSON.stringify(await statusList(issuer, LIST_URL, 'revocation', [], { validUntil: '2026-06-01T11:00:00Z' })));
      const bank = parseCredentialPolicy('bank', { ...trusting(issuer.did), contexts, statusListFiles: [{ url: LIST_URL, path: 'list.json' }] }, read, at);
      const hospital = parseCredentialPolicy('hospital', { ...trusting(issuer.did), contexts }, read, at);
      const gate = new CredentialGate({ policies: [bank, hospital], refreshIntervalMs: 50, maxCredentialsPerRequest: 4, proofWorkers: 0, proofJobTimeoutMs: 1_000, clock: () => NOW_MS });
      await gate.start(); // not refused as a whole
      try {
        const status = gate.status();
        assert.equal(status.state, 'WARN');
        assert.match(status.message ?? '', /^1 status lists could not be fetched yet; credentials that need them are refused \(bank: status list https:\/\/status\.bank\.example\/lists\/1 expired\)$/);
        type Prepared = { credentials: unknown[]; credential_errors: Array<{ code: string }> };
        const withStatus = await signed(kycCredential(issuer.did, { credentialStatus: entry(6) }), issuer);
        const plain = await signed(kycCredential(issuer.did), issuer);
        const refused = (await gate.prepareInput('bank', {}, [withStatus], {})) as Prepared;
        assert.deepEqual(refused.credential_errors.map((e) => e.code), [ErrorCodes.CREDENTIAL_STATUS_UNAVAILABLE]);
        assert.equal(((await gate.prepareInput('bank', {}, [plain], {})) as Prepared).credentials.length, 1, "the tenant's credentials that need no list");
        assert.equal(((await gate.prepareInput('hospital', {}, [plain], {})) as Prepared).credentials.length, 1, 'the other tenant');
        // the operator renews the file: the next refresh reads it and admits it
        await writeFile(listPath, JSON.stringify(await statusList(issuer, LIST_URL, 'revocation', [])));
        for (let i = 0; i < 200 && gate.status().state !== 'OK'; i++) await new Promise((r) => setTimeout(r, 25));
        assert.equal(gate.status().state, 'OK', JSON.stringify(gate.status()));
        assert.equal(((await gate.prepareInput('bank', {}, [withStatus], {})) as Prepared).credentials.length, 1);
      } finally {
        await gate.stop();
      }
    });
  });
});

describe("a tenant's accumulator state file refused at start", () => {
  it('is reported (WARN) and leaves the gate started: its credentials are refused for lack of a state, not accepted unchecked', async () => {
    const { CredentialGate, parseCredentialPolicy } = await import('../sidecar/src/credentials/index.ts');
    const { issuer, rogue: stranger } = await keys();
    const accumulator = AccumulatorIssuer.create('urn:accumulator:bank:refused', randomBytes);
    const witness = accumulator.add('handle-alice');
    // signed by a key the issuer's DID does not hold: refused when admitted
    const forged = await signAccumulatorState(accumulator.state(), { kid: issuer.kid, privateJwk: stranger.privateJwk, alg: jwsAlgorithm(stranger) }, Math.floor(NOW_MS / 1000));
    const { sampleContext } = await import('../sidecar/src/credentials/samples.ts');
    const files: Record<string, Uint8Array> = { 'acc.jws': new Uint8Array(Buffer.from(forged)), 'ctx.jsonld': sampleContext().bytes };
    const bank = parseCredentialPolicy('bank', {
      ...trusting(issuer.did),
      contexts: [{ url: sampleContext().url, sha256Hex: sampleContext().sha256Hex, path: 'ctx.jsonld' }],
      accumulators: [{ id: accumulator.id, issuer: issuer.did, publicKeyHex: Buffer.from(accumulator.publicKey).toString('hex') }],
      accumulatorStateFiles: ['acc.jws'],
    }, (path) => files[path] ?? new Uint8Array(), (path) => path);
    const gate = new CredentialGate({ policies: [bank], refreshIntervalMs: 3_600_000, maxCredentialsPerRequest: 4, proofWorkers: 0, proofJobTimeoutMs: 1_000, clock: () => NOW_MS });
    await gate.start();
    try {
      const status = gate.status();
      assert.equal(status.state, 'WARN');
      assert.match(status.message ?? '', /^1 accumulator states were refused at start; credentials that need them are refused \(bank: accumulatorStateFiles\[0\] refused: /);
      const credential = await signed(kycCredential(issuer.did, { credentialStatus: { type: ACCUMULATOR_ENTRY_TYPE, accumulatorId: accumulator.id, revocationHandle: 'handle-alice' } }), issuer);
      const prepared = (await gate.prepareInput('bank', {}, [credential], { witnesses: { 'handle-alice': Buffer.from(encodeWitness(witness)).toString('base64url') } })) as { credential_errors: Array<{ code: string; message: string }> };
      assert.deepEqual(prepared.credential_errors.map((e) => e.code), [ErrorCodes.CREDENTIAL_STATUS_UNAVAILABLE]);
      assert.match(prepared.credential_errors[0]?.message ?? '', /no verified state for accumulator urn:accumulator:bank:refused/);
    } finally {
      await gate.stop();
    }
  });
});

describe('Status List Tokens refreshed from their configured files', () => {
  it('picks up a revocation in the token file once the TTL has passed', async () => {
    const { mkdtemp, rm, writeFile } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { CredentialGate, parseCredentialPolicy } = await import('../sidecar/src/credentials/index.ts');
    const { sampleContext, issueTokenStatusList, issueSdJwtVc } = await import('../sidecar/src/credentials/samples.ts');
    const { issuer } = await keys();
    const dir = await mkdtemp(join(tmpdir(), 'pavilion-token-'));
    const uri = 'https://status.bank.example/tokens/9';
    const NOW_S = Math.floor(NOW_MS / 1000);
    try {
      const token = (values: Map<number, number>) => issueTokenStatusList(issuer, uri, { bits: 1, size: 64, values, iatSeconds: NOW_S });
      await writeFile(join(dir, 't.jwt'), token(new Map()));
      await writeFile(join(dir, 'ctx.jsonld'), sampleContext().bytes);
      const policy = parseCredentialPolicy('bank', {
        ...trusting(issuer.did),
        contexts: [{ url: sampleContext().url, sha256Hex: sampleContext().sha256Hex, path: 'ctx.jsonld' }],
        keyBinding: { required: false },
        statusLists: { ttlMs: 1_000, maxAgeMs: 60_000 },
        tokenStatusListFiles: [{ uri, path: 't.jwt' }],
      }, (path) => new Uint8Array(readFileSync(join(dir, path))), (path) => join(dir, path));
      let now = NOW_MS;
      const gate = new CredentialGate({ policies: [policy], refreshIntervalMs: 3_600_000, maxCredentialsPerRequest: 4, proofWorkers: 0, proofJobTimeoutMs: 1_000, clock: () => now });
      await gate.start();
      try {
        const sdJwt = await issueSdJwtVc({ iss: issuer.did, vct: 'KycCredential', iat: NOW_S, status: { status_list: { idx: 7, uri } } }, [], issuer, undefined);
        assert.deepEqual(((await gate.prepareInput('bank', {}, [sdJwt], {})) as { credential_errors: unknown[] }).credential_errors, []);
        await writeFile(join(dir, 't.jwt'), token(new Map([[7, 1]])));
        now = NOW_MS + 2_000;
        assert.deepEqual(await gate.verifier.refreshStatusLists(AbortSignal.timeout(5_000), now), []);
        const after = (await gate.prepareInput('bank', {}, [sdJwt], {})) as { credential_errors: Array<{ code: string }> };
        assert.deepEqual(after.credential_errors.map((e) => e.code), [ErrorCodes.CREDENTIAL_REVOKED]);
      } finally {
        await gate.stop();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
