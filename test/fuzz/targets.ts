/**
 * What is fuzzed, and what must hold for every input (each target's summary says it).
 */
import assert from 'node:assert/strict';
import { cp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import http2 from 'node:http2';
import { join } from 'node:path';
import { deflateSync, gunzipSync, gzipSync, inflateSync } from 'node:zlib';
import fc from 'fast-check';
import { AuditLog, Keyring, SoftwareSigner, WAL_FILE, verifyLogFile } from '../../sidecar/src/audit/log/index.ts';
import {
  applyPatch,
  defaultBuildDirectory,
  loadVerificationKey,
  parsePatch,
  readBundle,
  signDelta,
  verifyBundleSignature,
  verifyDeltaSignature,
  type Bundle,
  type DeltaContent,
  type SignaturePolicy,
} from '../../sidecar/src/bundles/index.ts';
import { encodePointer, parseDelta, parsePointer, type BundlePointer } from '../../sidecar/src/distribution/index.ts';
import { compilePolicy, PolicyEngine } from '../../sidecar/src/engine/index.ts';
import { CHECK_METHOD_PATH, CheckCodec, RpcCode, parseGrpcTimeoutMs } from '../../sidecar/src/extauthz/index.ts';
import { ErrorCodes } from '../../sidecar/src/lib/errors.ts';
import { HttpStatusListSource } from '../../sidecar/src/credentials/http-status-list.ts';
import { issueSdJwtVc, issueTokenStatusList, issueVcJwt, presentSdJwtVc } from '../../sidecar/src/credentials/samples.ts';
import { decisionEvent, logOptions, ringOf, tempDir } from '../audit/fixtures.ts';
import { CHALLENGE, DOMAIN, NOW_MS, keys, kycCredential, signed, signedStatusList, trusting, verifier } from '../credentials/fixtures.ts';
import { startPavilion, type RunningPavilion } from '../harness/pavilion-harness.ts';
import { assertRefusal, type FuzzTarget, type PreparedTarget } from './fuzz.ts';
import { applyMutations, mutations, type Mutation } from './mutations.ts';

/** Characters of every kind: mostly ASCII, also any UTF-16 code unit (lone surrogates too) and astral ones. */
const anyChar = fc.oneof(
  { weight: 6, arbitrary: fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 1 }) },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)) },
  { weight: 1, arbitrary: fc.integer({ min: 0x10000, max: 0x10ffff }).map((c) => String.fromCodePoint(c)) },
);
const text = (maxLength: number): fc.Arbitrary<string> => fc.string({ unit: anyChar, maxLength });
const json = (maxDepth: number): fc.Arbitrary<fc.JsonValue> => fc.jsonValue({ maxDepth, stringUnit: anyChar });

const codesStartingWith = (prefix: string): ReadonlySet<string> => new Set(Object.values(ErrorCodes).filter((c) => c.startsWith(prefix)));

// ---------------------------------------------------------------------------------------------
// bundle: a signed bundle with its bytes edited

const BUNDLE_REFUSALS = codesStartingWith('ERR_BUNDLE_');

const bundleTarget: FuzzTarget = {
  name: 'bundle',
  // past the archive: to its manifest, roots or signature, or accepted
  reached: (outcome) => outcome === 'accepted' || /^ERR_BUNDLE_(MANIFEST|ROOTS|DATA|SIGNATURE)/.test(outcome),
  summary: "the bank sample bundle (signed) with edits to its gzip bytes, or to its tar re-compressed: read and signature check refuse it with an ERR_BUNDLE_* code, or accept a bundle that means exactly what was signed (manifest, data, Wasm, entrypoints)",
  async prepare(): Promise<PreparedTarget<unknown>> {
    const build = defaultBuildDirectory();
    const archive = await readFile(join(build, 'bank', 'bundle.tar.gz'));
    const key = loadVerificationKey('bank', await readFile(join(build, 'keys', 'bank.pub.pem'), 'utf8'));
    const policy: SignaturePolicy = { keys: new Map([[key.id, key]]), scope: 'bank', allowUnsigned: false };
    const read = async (bytes: Buffer): Promise<Bundle> => {
      const bundle = await readBundle(bytes, { tenant: 'bank', namespace: 'bank' });
      await verifyBundleSignature(bundle.files, policy);
      return bundle;
    };
    const signed = await read(archive);
    const tar = gunzipSync(archive);
    const arbitrary = fc.record({ layer: fc.constantFrom('gzip' as const, 'tar' as const), edits: mutations() });
    return {
      arbitrary,
      async check(input: unknown): Promise<string> {
        const { layer, edits } = input as { layer: 'gzip' | 'tar'; edits: Mutation[] };
        const bytes = layer === 'gzip' ? applyMutations(archive, edits) : gzipSync(applyMutations(tar, edits));
        let bundle: Bundle;
        try {
          bundle = await read(bytes);
        } catch (error) {
          return assertRefusal(error, BUNDLE_REFUSALS, 'an edited bundle');
        }
        assert.deepEqual(bundle.manifest, signed.manifest, 'an accepted bundle has the signed manifest');
        assert.deepEqual(bundle.data, signed.data, 'an accepted bundle has the signed data');
        assert.ok(bundle.wasm.equals(signed.wasm), 'an accepted bundle has the signed Wasm');
        assert.deepEqual(bundle.entrypoints, signed.entrypoints);
        assert.deepEqual([...bundle.files.keys()].sort(), [...signed.files.keys()].sort(), 'an accepted bundle has the signed files, no more');
        return 'accepted';
      },
      async close(): Promise<void> {},
    };
  },
};

// ---------------------------------------------------------------------------------------------
// delta: patch.json operations on the tenant's data

const DELTA_REFUSALS = new Set<string>([ErrorCodes.BUNDLE_DELTA_INVALID, ErrorCodes.BUNDLE_DELTA_ROOTS]);

const segment = fc.oneof(
  fc.constantFrom('bank', 'limits', 'EUR', 'roles', '0', '1', '2', '-', '01', '__proto__', 'constructor', 'prototype', 'toString', '~0', '~1', '~2', '~', 'a~1b', ''),
  text(6),
);
/** JSON-pointer-like text for `segments` (OPA's escapes: ~0 for '~', ~1 for '/'). */
const pointer = (segments: readonly string[]): string => `/${segments.map((s) => s.replaceAll('~', '~0').replaceAll('/', '~1')).join('/')}`;

/** Every path in `document` (own keys, array indexes), as segments. */
function pathsIn(document: unknown, prefix: readonly string[] = []): string[][] {
  if (typeof document !== 'object' || document === null) return [];
  const entries = Array.isArray(document) ? document.map((v, i) => [String(i), v] as const) : Object.entries(document);
  return entries.flatMap(([key, value]) => [[...prefix, key], ...pathsIn(value, [...prefix, key])]);
}

/** Paths in and around the data: existing ones (and one more segment), made-up ones under the root, outside it, and any text. */
function patchPaths(existing: readonly string[][]): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 4, arbitrary: fc.tuple(fc.constantFrom(...existing), fc.option(segment, { nil: undefined })).map(([p, extra]) => pointer(extra === undefined ? p : [...p, extra])) },
    { weight: 2, arbitrary: fc.array(segment, { maxLength: 5 }).map((s) => `/bank/${s.join('/')}`) },
    { weight: 1, arbitrary: fc.array(segment, { maxLength: 5 }).map((s) => `/${s.join('/')}`) },
    { weight: 1, arbitrary: text(12) },
  );
}

// mostly well-formed operations (a tenth each: another op, another path type, no value)
function operations(existing: readonly string[][]): fc.Arbitrary<Record<string, unknown>> {
  return fc.tuple(
    fc.oneof({ weight: 9, arbitrary: fc.constantFrom('upsert', 'remove', 'replace') }, { weight: 1, arbitrary: json(1) }),
    fc.oneof({ weight: 9, arbitrary: patchPaths(existing) }, { weight: 1, arbitrary: json(1) }),
    json(3),
    fc.nat({ max: 9 }),
  ).map(([op, path, value, draw]) => (draw === 0 ? { op, path } : { op, path, value }));
}

/**
 * Where a JSON-pointer-like path leads in `document` (own properties; array positions as Go's
 * strconv.Atoi reads them, as OPA does), or undefined. The position rule is the
 * implementation's own, so this checks the effect of each operation, not OPA parity (the
 * unit tests of applyPatch do).
 */
function lookUp(document: unknown, segments: readonly string[]): { found: boolean; value?: unknown } {
  let at: unknown = document;
  for (const s of segments) {
    if (Array.isArray(at)) {
      if (!/^[+-]?\d+$/.test(s) || Number(s) < 0 || Number(s) >= at.length) return { found: false };
      at = at[Number(s)];
    } else if (typeof at === 'object' && at !== null && Object.hasOwn(at, s)) {
      at = (at as Record<string, unknown>)[s];
    } else {
      return { found: false };
    }
  }
  return { found: true, value: at };
}

const deltaTarget: FuzzTarget = {
  name: 'delta',
  reached: (outcome) => outcome.startsWith('applied'),
  summary: "OPA patch.json operations (upsert, remove, replace, and anything else) on paths of all shapes, applied to the bank tenant's data under its root: refused with ERR_BUNDLE_DELTA_INVALID or _ROOTS, or applied leaving the input untouched, everything outside the root as it was, no prototype polluted, and the last operation's effect in place",
  async prepare(): Promise<PreparedTarget<unknown>> {
    const build = defaultBuildDirectory();
    const bundle = await readBundle(await readFile(join(build, 'bank', 'bundle.tar.gz')), { tenant: 'bank', namespace: 'bank' });
    const base = { ...structuredClone(bundle.data), outside: { untouched: [1, 2, 3] } };
    const frozen = JSON.stringify(base);
    const arbitrary = fc.record({ data: fc.array(operations(pathsIn(base)), { minLength: 1, maxLength: 4 }) });
    return {
      arbitrary,
      async check(patch: unknown): Promise<string> {
        let result: Record<string, unknown>;
        let operations: ReturnType<typeof parsePatch>;
        try {
          operations = parsePatch(structuredClone(patch));
          result = applyPatch(base, operations, ['bank']);
        } catch (error) {
          return assertRefusal(error, DELTA_REFUSALS, 'a delta');
        } finally {
          assert.equal(JSON.stringify(base), frozen, 'the data a delta applies to is not changed');
          assert.equal(({} as Record<string, unknown>)['polluted'], undefined);
          assert.equal(Object.getOwnPropertyNames(Object.prototype).sort().join(), PROTOTYPE_NAMES, 'Object.prototype is not touched');
        }
        assert.deepEqual(result['outside'], base.outside, 'outside the root nothing changes');
        assert.equal(Object.getPrototypeOf(result), Object.prototype);
        const last = operations.at(-1) as (typeof operations)[number];
        const segments = last.path.replace(/^\/+|\/+$/g, '').split('/').map((s) => s.replaceAll('~1', '/').replaceAll('~0', '~'));
        const parent = lookUp(result, segments.slice(0, -1));
        if (Array.isArray(parent.value)) return `applied (${last.op} in an array)`; // a position moves with inserts and removals
        const at = lookUp(result, segments);
        if (last.op === 'remove') assert.equal(at.found, false, `remove ${last.path} leaves nothing there`);
        else assert.deepEqual(at, { found: true, value: last.value }, `${last.op} ${last.path} leaves its value there`);
        return `applied (${last.op})`;
      },
      async close(): Promise<void> {},
    };
  },
};
const PROTOTYPE_NAMES = Object.getOwnPropertyNames(Object.prototype).sort().join();

// ---------------------------------------------------------------------------------------------
// nats-messages: the two messages a sidecar reads from NATS about a tenant, edited

const POINTER_FIELDS = ['v', 'tenant', 'revision', 'object', 'digest', 'size_bytes', 'action', 'pushed_by', 'pushed_at', 'object_nuid', 'restores', 'note'] as const;
const DELTA_FIELDS = ['v', 'tenant', 'base', 'sequence', 'roots', 'patch', 'signatures'] as const;

/** A JSON text's bytes with `field` set to `value` (undefined removes it). */
function withField(message: object, field: string, value: fc.JsonValue | undefined): Buffer {
  const edited: Record<string, unknown> = { ...message };
  if (value === undefined) delete edited[field];
  else edited[field] = value;
  return Buffer.from(JSON.stringify(edited), 'utf8');
}

/** What a field may be set to: anything JSON, or a near miss of a valid value (a number off by one, a string changed). */
const fieldValue = fc.oneof(
  { weight: 3, arbitrary: json(3) },
  { weight: 1, arbitrary: fc.constant(undefined) },
  { weight: 2, arbitrary: fc.integer({ min: -2, max: 3 }) },
  { weight: 1, arbitrary: fc.constantFrom(1.5, -0, 1e300, Number.MAX_SAFE_INTEGER + 2, '1', '', 'bank', 'push', 'rollback', ['bank'], [], {}, null) },
);

const natsMessagesTarget: FuzzTarget = {
  name: 'nats-messages',
  reached: (outcome) => !outcome.includes('not JSON'),
  summary: "the bank tenant's bundle pointer (the KV value a deploy writes) and a signed delta message (as published on its subject), with edits to their bytes or to one field: a pointer is refused with ERR_BUNDLE_POINTER_INVALID or read with every field of the type the sidecar relies on; a delta is refused with an ERR_BUNDLE_* code (its shape or its signature) or accepted meaning exactly what was signed (deploy, place, roots, operations) and applying as the signed one does",
  async prepare(): Promise<PreparedTarget<unknown>> {
    const build = defaultBuildDirectory();
    const keyPem = await readFile(join(build, 'keys', 'bank.key.pem'), 'utf8');
    const key = loadVerificationKey('bank', await readFile(join(build, 'keys', 'bank.pub.pem'), 'utf8'));
    const policy: SignaturePolicy = { keys: new Map([[key.id, key]]), scope: 'bank', allowUnsigned: false };
    const bundle = await readBundle(await readFile(join(build, 'bank', 'bundle.tar.gz')), { tenant: 'bank', namespace: 'bank' });
    const pointer: BundlePointer = {
      v: 1, tenant: 'bank', revision: bundle.revision, object: 'a'.repeat(64), digest: 'a'.repeat(64), size_bytes: 4096,
      action: 'rollback', pushed_by: 'alice', pushed_at: '2026-12-01T06:00:00Z', object_nuid: 'X4bLQy2Ab9AbCdEfGhIjKl', restores: 7, note: 'fuzz',
    };
    const pointerBytes = Buffer.from(encodePointer(pointer));
    const signedContent: DeltaContent = {
      tenant: 'bank', base: 7, sequence: 3, roots: ['bank'],
      operations: parsePatch({ data: [{ op: 'upsert', path: '/bank/fuzz/limit', value: 100 }, { op: 'upsert', path: '/bank/fuzz/names', value: ['a', 'b'] }] }),
    };
    const signatures = await signDelta(signedContent, { key: keyPem, algorithm: 'ES256', keyId: 'bank', scope: 'bank' });
    const delta = { v: 1, tenant: 'bank', base: signedContent.base, sequence: signedContent.sequence, roots: signedContent.roots, patch: { data: signedContent.operations }, signatures };
    const deltaBytes = Buffer.from(JSON.stringify(delta), 'utf8');
    const signedResult = applyPatch(bundle.data, signedContent.operations, signedContent.roots);
    const arbitrary = fc.oneof(
      fc.record({ message: fc.constantFrom('pointer' as const, 'delta' as const), edits: mutations() }),
      fc.record({ message: fc.constant('pointer' as const), field: fc.constantFrom(...POINTER_FIELDS), value: fieldValue }),
      fc.record({ message: fc.constant('delta' as const), field: fc.constantFrom(...DELTA_FIELDS), value: fieldValue }),
    );
    const describe = (error: unknown, codes: ReadonlySet<string>, what: string): string => {
      const code = assertRefusal(error, codes, what);
      return /not JSON/.test((error as Error).message) ? `${code} (not JSON)` : code;
    };
    return {
      arbitrary,
      async check(input: unknown): Promise<string> {
        const c = input as { message: 'pointer' | 'delta'; edits?: Mutation[]; field?: string; value?: fc.JsonValue };
        const original = c.message === 'pointer' ? pointerBytes : deltaBytes;
        const bytes = c.edits !== undefined ? applyMutations(original, c.edits) : withField(c.message === 'pointer' ? pointer : delta, c.field as string, c.value);
        if (c.message === 'pointer') {
          let read: BundlePointer;
          try {
            read = parsePointer(bytes, 'bank');
          } catch (error) {
            return describe(error, POINTER_REFUSALS, 'an edited pointer');
          }
          assertPointer(read);
          assert.deepEqual(parsePointer(encodePointer(read), 'bank'), read, 'a pointer read is written back the same');
          return 'pointer accepted';
        }
        let content: DeltaContent;
        try {
          const message = parseDelta(bytes, 'bank');
          content = { tenant: message.tenant, base: message.base, sequence: message.sequence, roots: message.roots, operations: message.patch.data };
          await verifyDeltaSignature(content, message.signatures, policy);
        } catch (error) {
          return describe(error, BUNDLE_REFUSALS, 'an edited delta');
        }
        assert.deepEqual(content, signedContent, 'an accepted delta is the signed one');
        assert.deepEqual(applyPatch(bundle.data, content.operations, content.roots), signedResult, 'an accepted delta applies as the signed one');
        return 'delta accepted';
      },
      async close(): Promise<void> {},
    };
  },
};
const POINTER_REFUSALS = new Set<string>([ErrorCodes.BUNDLE_POINTER_INVALID]);

/**
 * What the sidecar relies on in a pointer it has read (object names, digests and sizes go
 * into requests and checks). The parser checks the same: this is the consistency of the two,
 * written apart from it, so a check dropped from the parser is noticed.
 */
function assertPointer(p: BundlePointer): void {
  assert.equal(p.v, 1);
  assert.equal(p.tenant, 'bank', 'a pointer read names the key it is under');
  for (const field of ['revision', 'object', 'pushed_by', 'pushed_at'] as const) assert.ok(typeof p[field] === 'string' && p[field] !== '', `${field} is a non-empty string`);
  assert.match(p.digest, /^[0-9a-f]{64}$/);
  assert.ok(Number.isSafeInteger(p.size_bytes) && p.size_bytes >= 0, `size_bytes ${p.size_bytes} is a natural number`);
  assert.ok(p.action === 'push' || p.action === 'rollback');
  if (p.object_nuid !== undefined) assert.match(p.object_nuid, /^[A-Za-z0-9]{1,64}$/);
  if (p.restores !== undefined) assert.ok(Number.isSafeInteger(p.restores) && p.restores >= 1, `restores ${p.restores} is a KV revision`);
}

// ---------------------------------------------------------------------------------------------
// audit-wal: a tenant's audit log file with its bytes edited, then started

const WAL_EVENTS = 60;
const WAL_REFUSALS = new Set<string>([ErrorCodes.AUDIT_LOG_CORRUPT]);

const auditWalTarget: FuzzTarget = {
  name: 'audit-wal',
  reached: (outcome) => outcome.startsWith('started') || outcome.startsWith('torn'),
  summary: `an audit log of ${WAL_EVENTS} decisions and their signed checkpoints with edits to its file, then started as a sidecar starts it: refused with ERR_AUDIT_LOG_CORRUPT, or started holding leaves identical to the first ones written, having cut only damage within its torn-tail bound (saved aside byte for byte); a started log takes a new decision and the whole file verifies`,
  async prepare(): Promise<PreparedTarget<unknown>> {
    const signer = SoftwareSigner.generate();
    const keyring: Keyring = ringOf(signer);
    const source = await tempDir('pavilion-fuzz-wal-');
    const maxTornTailBytes = 2048;
    const options = (directory: string) => logOptions(directory, signer, { fsync: 'never', checkpointEveryEvents: 7, maxTornTailBytes, scanOnThreadMinBytes: Number.MAX_SAFE_INTEGER });
    const writer = new AuditLog(options(source));
    await writer.start();
    for (let n = 0; n < WAL_EVENTS; n++) await writer.append(decisionEvent(n));
    await writer.checkpoint();
    const leaves = Array.from({ length: writer.size }, (_, i) => writer.leafHashAt(i));
    await writer.stop(5000);
    const original = await readFile(join(source, WAL_FILE));
    const work = await tempDir('pavilion-fuzz-wal-run-');
    let round = 0;
    return {
      arbitrary: mutations(),
      async check(edits: unknown): Promise<string> {
        const bytes = applyMutations(original, edits as Mutation[]);
        const directory = join(work, String(round++));
        await cp(source, directory, { recursive: true });
        await writeFile(join(directory, WAL_FILE), bytes);
        try {
          return await startEdited(directory, bytes);
        } finally {
          await rm(directory, { recursive: true, force: true });
        }
      },
      async close(): Promise<void> {
        await rm(work, { recursive: true, force: true });
        await rm(source, { recursive: true, force: true });
      },
    };

    async function startEdited(directory: string, bytes: Buffer): Promise<string> {
      const log = new AuditLog(options(directory));
      try {
        try {
          await log.start();
        } catch (error) {
          return assertRefusal(error, WAL_REFUSALS, 'an edited log file');
        }
        const report = log.recovery;
        for (let i = 0; i < log.size; i++) assert.equal(log.leafHashAt(i), leaves[i], `leaf ${i} is the one written`);
        assert.ok(log.size <= leaves.length);
        const torn = report.tornTail;
        if (torn !== undefined) {
          // a file shorter than its header is a new log whose header write was torn
          assert.ok(torn.bytesRemoved <= maxTornTailBytes || (torn.reason === 'short_header' && torn.offset === 0), `only a torn tail is cut (${torn.bytesRemoved} bytes at ${torn.offset})`);
          assert.deepEqual(await readFile(torn.savedAs), bytes.subarray(torn.offset), 'the cut bytes are kept aside as they were');
        }
        await log.append(decisionEvent(WAL_EVENTS + 1, { decision_id: `after-${round}` }));
        await log.checkpoint();
      } finally {
        await log.stop(5000);
      }
      const verified = await verifyLogFile(join(directory, WAL_FILE), keyring);
      assert.equal(verified.leaves, log.size);
      return log.recovery.tornTail === undefined ? (log.size - 1 === leaves.length ? 'started whole' : 'started shorter (cut at a frame boundary)') : `torn tail cut (${log.recovery.tornTail.reason})`;
    }
  },
};

// ---------------------------------------------------------------------------------------------
// wasm: the policy module edited, compiled in the sandbox, loaded and evaluated

const WASM_REFUSALS = new Set<string>([ErrorCodes.BUNDLE_WASM_INVALID, ErrorCodes.BUNDLE_ABI_UNSUPPORTED, ErrorCodes.BUNDLE_BUILTIN_MISSING, ErrorCodes.BUNDLE_MANIFEST_INVALID]);
const EVALUATION_FAILURES = codesStartingWith('ERR_EVAL_');

const wasmTarget: FuzzTarget = {
  name: 'wasm',
  reached: (outcome) => outcome.startsWith('loaded'),
  summary: "the bank bundle's policy.wasm with edits to its bytes (an unsigned or a team's own broken module), compiled and inspected in the sandbox worker, then loaded and evaluated on the bank sample input: refused with ERR_BUNDLE_WASM_INVALID, _ABI_UNSUPPORTED, _BUILTIN_MISSING or _MANIFEST_INVALID, or loaded, answering or failing each evaluation with an ERR_EVAL_* code; the engine goes on serving the unedited policy",
  async prepare(): Promise<PreparedTarget<unknown>> {
    const bundle = await readBundle(await readFile(join(defaultBuildDirectory(), 'bank', 'bundle.tar.gz')), { tenant: 'bank', namespace: 'bank' });
    const engine = new PolicyEngine({
      workers: 1, evaluationTimeoutMs: 200, maxQueuedEvaluations: 100, memoryInitialPages: 5, memoryMaxBytes: 64 * 1024 * 1024, maxInputDepth: 32,
      cache: { enabled: false, maxEntries: 1, maxBytes: 1024, maxKeyBytes: 1024 },
    });
    await engine.start();
    await engine.activate(await compilePolicy(bundle, { initialMemoryPages: 5 }));
    const input = JSON.parse(VALID_BODY).input as unknown;
    const expected = (await engine.evaluate('bank', 'bank/authz/allow', input)).result;
    return {
      arbitrary: mutations(),
      async check(edits: unknown): Promise<string> {
        const wasm = applyMutations(bundle.wasm, edits as Mutation[]);
        let outcome: string;
        try {
          const loaded = await engine.load(await compilePolicy({ ...bundle, wasm }, { initialMemoryPages: 5 }));
          try {
            await engine.evaluateLoaded(loaded, 'bank/authz/allow', input);
            outcome = 'loaded, answered';
          } catch (error) {
            outcome = `loaded, ${assertRefusal(error, EVALUATION_FAILURES, 'an evaluation of an edited module')}`;
          } finally {
            engine.discard(loaded);
          }
        } catch (error) {
          outcome = assertRefusal(error, WASM_REFUSALS, 'an edited module');
        }
        assert.deepEqual((await engine.evaluate('bank', 'bank/authz/allow', input)).result, expected, 'the unedited policy still answers');
        return outcome;
      },
      async close(): Promise<void> {
        await engine.stop();
      },
    };
  },
};

// ---------------------------------------------------------------------------------------------
// credentials: a VC-JWT, an SD-JWT VC presentation and a Data Integrity credential, edited

const CREDENTIAL_REFUSALS = codesStartingWith('ERR_CREDENTIAL_');

const credentialsTarget: FuzzTarget = {
  name: 'credentials',
  reached: (outcome) => !outcome.endsWith('ERR_CREDENTIAL_MALFORMED'),
  summary: 'a VC-JWT (EdDSA), an SD-JWT VC presented with key binding and a Data Integrity credential (eddsa-rdfc-2022), with edits to their bytes, verified for a tenant that trusts their issuer: refused with an ERR_CREDENTIAL_* code, or accepted with the issuer, types and subject signed and claims that are the signed ones or fewer (what a holder may leave undisclosed)',
  async prepare(): Promise<PreparedTarget<unknown>> {
    const { issuer, holder } = await keys();
    const v = await verifier(trusting(issuer.did));
    const nowS = Math.floor(NOW_MS / 1000);
    const options = { challenge: CHALLENGE, domain: DOMAIN };
    const sdJwt = await issueSdJwtVc(
      { iss: issuer.did, vct: 'KycCredential', iat: nowS - 3600, exp: nowS + 86_400, given_name: 'Alice', birthdate: '1990-01-01', kyc_level: 'full' },
      ['given_name', 'birthdate', 'kyc_level'], issuer, holder, 'fuzz-salts',
    );
    const seeds: ReadonlyArray<{ kind: string; text: string; json: boolean }> = [
      { kind: 'vc+jwt', text: await issueVcJwt(kycCredential(issuer.did), issuer), json: false },
      { kind: 'sd-jwt', text: await presentSdJwtVc(sdJwt, ['kyc_level', 'given_name'], holder, { nonce: CHALLENGE, aud: DOMAIN, iatSeconds: nowS - 5 }), json: false },
      { kind: 'data-integrity', text: JSON.stringify(await signed(kycCredential(issuer.did), issuer)), json: true },
    ];
    const parse = (seed: (typeof seeds)[number], text: string): unknown => {
      if (!seed.json) return text;
      try {
        return JSON.parse(text) as unknown;
      } catch {
        return text; // not JSON any more: handed over as it is
      }
    };
    const originals = await Promise.all(seeds.map((seed) => v.verify('bank', parse(seed, seed.text), options)));
    return {
      arbitrary: fc.record({ seed: fc.nat({ max: seeds.length - 1 }), edits: mutations(3) }),
      async check(input: unknown): Promise<string> {
        const { seed: at, edits } = input as { seed: number; edits: Mutation[] };
        const seed = seeds[at] as (typeof seeds)[number];
        const original = originals[at] as (typeof originals)[number];
        const credential = parse(seed, applyMutations(Buffer.from(seed.text, 'latin1'), edits).toString('latin1'));
        let facts: typeof original;
        try {
          facts = await v.verify('bank', credential, options);
        } catch (error) {
          return `${seed.kind}: ${assertRefusal(error, CREDENTIAL_REFUSALS, `an edited ${seed.kind} credential`)}`;
        }
        assert.equal(facts.issuer, original.issuer, 'an accepted credential has the signed issuer');
        assert.deepEqual(facts.types, original.types);
        assert.equal(facts.subject, original.subject);
        for (const [claim, value] of Object.entries(facts.claims)) assert.deepEqual(value, original.claims[claim], `claim ${claim} is the signed one`);
        return `${seed.kind}: accepted`;
      },
      async close(): Promise<void> {},
    };
  },
};

// ---------------------------------------------------------------------------------------------
// status-lists: an issuer's status list, as its server answers it, edited

const STATUS_REFUSALS = codesStartingWith('ERR_CREDENTIAL_');

const statusListsTarget: FuzzTarget = {
  name: 'status-lists',
  // past the fetch's and the list's shape checks: its signature, or held
  reached: (outcome) => outcome.endsWith('accepted') || outcome === ErrorCodes.CREDENTIAL_SIGNATURE_INVALID,
  summary: "the issuer's Bitstring Status List credential (Data Integrity, index 7 revoked) and Status List Token (2 bits: 7 revoked, 8 suspended), with edits to the bytes its server answers, fetched by the sidecar's HTTP source and admitted as a refresh admits them: refused with an ERR_CREDENTIAL_* code, or held meaning exactly what was signed (credentials at the list's indexes 6 and 7 get valid and revoked, at the token's 6, 7 and 8 valid, revoked and suspended, as from the signed ones)",
  async prepare(): Promise<PreparedTarget<unknown>> {
    const { issuer, holder } = await keys();
    const nowS = Math.floor(NOW_MS / 1000);
    let answer: Buffer = Buffer.alloc(0);
    const server = http.createServer((_req, res) => res.writeHead(200).end(answer));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    const listUrl = `${base}/list`;
    const tokenUrl = `${base}/token`;
    const sources = {
      list: new HttpStatusListSource({ urls: [listUrl], timeoutMs: 5_000 }),
      token: new HttpStatusListSource({ urls: [tokenUrl], timeoutMs: 5_000, format: 'jwt' }),
    };
    const originals = {
      list: Buffer.from(JSON.stringify(await signedStatusList(issuer, listUrl, { set: [7] }))),
      token: Buffer.from(issueTokenStatusList(issuer, tokenUrl, { bits: 2, size: 1024, values: new Map([[7, 1], [8, 2]]), iatSeconds: nowS })),
    };
    const v = await verifier({ ...trusting(issuer.did), keyBinding: { required: false } });
    const listEntry = (index: number) => ({ id: `${listUrl}#${index}`, type: 'BitstringStatusListEntry', statusPurpose: 'revocation', statusListIndex: String(index), statusListCredential: listUrl });
    const credentials: Record<'list' | 'token', unknown[]> = {
      list: await Promise.all([6, 7].map(async (index) => signed(kycCredential(issuer.did, { credentialStatus: listEntry(index) }), issuer))),
      token: await Promise.all([6, 7, 8].map(async (idx) => issueSdJwtVc(
        { iss: issuer.did, vct: 'KycCredential', iat: nowS - 3600, exp: nowS + 86_400, kyc_level: 'full', status: { status_list: { idx, uri: tokenUrl } } },
        ['kyc_level'], issuer, holder, `fuzz-status-${idx}`,
      ))),
    };
    /** What each credential gets while the list held is `which`'s: 'valid' or the refusal's code. */
    const statuses = async (which: 'list' | 'token'): Promise<string[]> => Promise.all(credentials[which].map(async (credential) => {
      try {
        await v.verify('bank', credential);
        return 'valid';
      } catch (error) {
        return assertRefusal(error, STATUS_REFUSALS, 'a credential checked against a held list');
      }
    }));
    const admit = async (which: 'list' | 'token', bytes: Buffer): Promise<void> => {
      answer = bytes;
      const fetched = await sources[which].fetch(which === 'list' ? listUrl : tokenUrl, AbortSignal.timeout(5_000));
      if (which === 'list') await v.admitStatusList('bank', listUrl, fetched, NOW_MS);
      else await v.admitTokenStatusList('bank', tokenUrl, fetched as string, NOW_MS);
    };
    await admit('list', originals.list);
    await admit('token', originals.token);
    const signedStatuses = { list: await statuses('list'), token: await statuses('token') };
    assert.deepEqual(signedStatuses, {
      list: ['valid', ErrorCodes.CREDENTIAL_REVOKED],
      token: ['valid', ErrorCodes.CREDENTIAL_REVOKED, ErrorCodes.CREDENTIAL_SUSPENDED],
    }, 'the signed lists decide as issued');
    return {
      arbitrary: fc.record({ which: fc.constantFrom('list' as const, 'token' as const), edits: mutations() }),
      async check(input: unknown): Promise<string> {
        const { which, edits } = input as { which: 'list' | 'token'; edits: Mutation[] };
        try {
          await admit(which, applyMutations(originals[which], edits));
        } catch (error) {
          return assertRefusal(error, STATUS_REFUSALS, `an edited status ${which}`);
        }
        assert.deepEqual(await statuses(which), signedStatuses[which], `an edited status ${which} that is held decides as the signed one`);
        return `${which} accepted`;
      },
      async close(): Promise<void> {
        await new Promise<void>((resolve) => server.close(() => resolve()));
      },
    };
  },
};

// ---------------------------------------------------------------------------------------------
// Live targets: one sidecar (envoy_demo and bank), checked through its real entry points

let live: { app: RunningPavilion; users: number } | undefined;

async function liveSidecar(): Promise<RunningPavilion> {
  if (live === undefined) {
    const app = await startPavilion({
      config: {
        tenants: [{ id: 'bank' }, { id: 'envoy_demo' }],
        engine: { evaluationTimeoutMs: 1000 },
        extAuthz: { grpc: { port: 0 }, tenantFrom: { header: 'x-pavilion-tenant' }, timeoutMs: 2000 },
      },
    });
    live = { app, users: 0 };
  }
  live.users++;
  return live.app;
}

async function releaseSidecar(): Promise<void> {
  if (live === undefined) return;
  if (--live.users > 0) return;
  const { app } = live;
  live = undefined;
  // whatever was thrown at it, it still answers
  const ready = await fetch(`${app.url}/health/ready`);
  await app.stop();
  assert.equal(ready.status, 200, 'the sidecar is still ready after the fuzzing');
}

const CHECK_SEEDS = [
  { attributes: { request: { http: { method: 'GET', path: '/api/v1/products?limit=10&x=%2F', host: 'shop.local', headers: { 'x-pavilion-tenant': 'envoy_demo', ':authority': 'shop.local' } } } } },
  { attributes: { request: { http: { method: 'POST', path: '/api/v1/orders', headers: { 'x-pavilion-tenant': 'envoy_demo', 'content-type': 'application/json' }, body: '{"item":"a","qty":2,"tags":["x"]}' } } } },
  { attributes: { request: { http: { method: 'POST', path: '/form', headers: { 'x-pavilion-tenant': 'envoy_demo', 'content-type': 'application/x-www-form-urlencoded' }, body: 'a=1&b=%20x&c' } } } },
  { attributes: { request: { http: { method: 'POST', path: '/upload', headers: { 'x-pavilion-tenant': 'envoy_demo', 'content-type': 'multipart/form-data; boundary=XyZ' }, body: '--XyZ\r\ncontent-disposition: form-data; name="f"\r\ncontent-type: application/json\r\n\r\n{"a":1}\r\n--XyZ--\r\n' } } } },
  { attributes: { source: { address: { socketAddress: { address: '10.0.0.1', portValue: 5000 } } }, contextExtensions: { tenant: 'envoy_demo' }, request: { http: { method: 'DELETE', path: '/api/v1/products/1', headers: { 'x-pavilion-tenant': 'bank' } } } } },
];

/** Codes a check may end with when the request is malformed or names no servable tenant; anything else (ERR_INTERNAL, a trap) is a defect. */
const CHECK_CODES = new Set<string>([
  ErrorCodes.EXTAUTHZ_REQUEST_MALFORMED, ErrorCodes.TENANT_REQUIRED, ErrorCodes.TENANT_UNKNOWN, ErrorCodes.ENTRYPOINT_UNKNOWN,
  ...codesStartingWith('ERR_EXTAUTHZ_'), ...codesStartingWith('ERR_REQUEST_'),
  // a machine too busy for the deadline: not the input's doing, and not a defect (an input
  // that did make the evaluation slow would pass unnoticed too: the price of no flaky runs)
  ErrorCodes.EVAL_TIMEOUT, ErrorCodes.EVAL_OVERLOADED,
]);

/** A multipart body of random parts (names, content types, JSON or not), with `boundary`, sometimes cut short. */
const multipartBody = fc.tuple(
  fc.array(fc.record({
    name: fc.oneof(fc.constantFrom('f', 'file', 'a b', 'é', ''), text(8)),
    type: fc.option(fc.constantFrom('application/json', 'text/plain', 'application/octet-stream', 'application/json; charset=utf-8', 'multipart/mixed'), { nil: undefined }),
    filename: fc.option(text(8), { nil: undefined }),
    content: fc.oneof(json(3).map((v) => JSON.stringify(v)), text(40), fc.constant('{"a":')),
  }), { maxLength: 4 }),
  fc.nat({ max: 4 }),
).map(([parts, cut]) => {
  const text = parts.map((p) => `--XyZ\r\ncontent-disposition: form-data; name="${p.name}"${p.filename === undefined ? '' : `; filename="${p.filename}"`}\r\n${p.type === undefined ? '' : `content-type: ${p.type}\r\n`}\r\n${p.content}\r\n`).join('') + '--XyZ--\r\n';
  return cut === 0 ? text.slice(0, Math.floor(text.length / 2)) : text;
});

/** A CheckRequest built field by field: methods, paths with escapes, headers, bodies of each kind. */
const structuredCheck = fc.record({
  method: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'get', ''),
  path: fc.oneof(
    fc.array(fc.constantFrom('api', 'v1', 'products', '%2F', '%', '%zz', '..', '?', '&', '=', '#', 'a=b', 'é', '%E2%82'), { maxLength: 6 }).map((s) => `/${s.join('/')}`),
    text(30),
  ),
  tenant: fc.constantFrom('envoy_demo', 'envoy_demo', 'bank', 'nobody', ''),
  headers: fc.dictionary(fc.constantFrom('content-length', 'x-envoy-auth-partial-body', 'authorization', 'x-forwarded-for', ':path', 'cookie', 'x-a'), text(20), { maxKeys: 3 }),
  contentType: fc.option(fc.constantFrom('application/json', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=XyZ', 'multipart/form-data', 'multipart/form-data; boundary="XyZ"', 'application/grpc', 'text/plain'), { nil: undefined }),
  body: fc.oneof(json(4).map((v) => JSON.stringify(v)), text(60), multipartBody, fc.constantFrom('a=1&a=2&b', '%zz=1', '{"a":"\\ud800"}', '')),
  rawBody: fc.boolean(),
}).map((r) => ({
  attributes: {
    request: {
      http: {
        method: r.method,
        path: r.path,
        headers: { ...r.headers, 'x-pavilion-tenant': r.tenant, ...(r.contentType === undefined ? {} : { 'content-type': r.contentType }) },
        ...(r.rawBody ? { rawBody: Buffer.from(r.body) } : { body: r.body }),
      },
    },
  },
}));

/** The shared live sidecar's ext_authz and its gRPC message limit, a codec, and the CheckRequest seeds encoded. */
async function liveExtAuthz(): Promise<{ extAuthz: NonNullable<RunningPavilion['pavilion']['extAuthz']>; limitBytes: number; codec: CheckCodec; seeds: Buffer[] }> {
  const app = await liveSidecar();
  const extAuthz = app.pavilion.extAuthz;
  assert.ok(extAuthz !== undefined && app.config.extAuthz !== undefined);
  const codec = new CheckCodec();
  return { extAuthz, limitBytes: app.config.extAuthz.grpc.maxReceiveMessageBytes, codec, seeds: CHECK_SEEDS.map((s) => codec.encodeRequest(s)) };
}

const extAuthzTarget: FuzzTarget = {
  name: 'extauthz',
  reached: (outcome) => outcome === 'decided',
  summary: 'Envoy CheckRequests (GET, JSON, form, multipart bodies, context extensions) with edits to their protobuf bytes, or built with fields of every kind (paths with bad escapes, headers, JSON, form and multipart bodies cut short), decoded and checked by a running sidecar: always a CheckResponse that encodes, with a status, ending in a decision or a typed refusal of the request (never ERR_INTERNAL or a trap)',
  async prepare(): Promise<PreparedTarget<unknown>> {
    const { extAuthz, codec, seeds } = await liveExtAuthz();
    return {
      // edited protobuf bytes, or well-formed messages whose fields are anything
      arbitrary: fc.oneof(fc.record({ seed: fc.nat({ max: seeds.length - 1 }), edits: mutations() }), fc.record({ built: structuredCheck })),
      async check(input: unknown): Promise<string> {
        const bytes = 'built' in (input as object)
          ? codec.encodeRequest((input as { built: Record<string, unknown> }).built)
          : applyMutations(seeds[(input as { seed: number }).seed] as Buffer, (input as { edits: Mutation[] }).edits);
        const decoded = codec.decodeRequest(bytes);
        const result = await extAuthz.service.check(decoded.ok ? decoded.request : decoded.error, { transport: 'grpc', requestedBy: '127.0.0.1:1' });
        assert.ok(result.code === undefined || CHECK_CODES.has(result.code), `a check ended with ${result.code}`);
        const encoded = codec.encodeResponse(result.response);
        const back = codec.decodeResponse(encoded) as { status?: { code?: number } };
        assert.ok(back.status !== undefined, 'the response has a status');
        assert.equal(back.status.code ?? 0, result.response.status.code, 'it encodes the status decided');
        return result.code ?? (decoded.ok ? 'decided' : 'malformed');
      },
      async close(): Promise<void> {
        await releaseSidecar();
      },
    };
  },
};

// ---------------------------------------------------------------------------------------------
// grpc-framing: the gRPC wire protocol beneath ext_authz (PROTOCOL-HTTP2.md), over a live HTTP/2 session

/** Mostly `usual`, sometimes any of `others` (so most calls get past the headers and the framing to a message). */
const mostly = <T>(usual: T, ...others: T[]): fc.Arbitrary<T> => fc.oneof({ weight: 4, arbitrary: fc.constant(usual) }, { weight: 1, arbitrary: fc.constantFrom(usual, ...others) });

const grpcCall = fc.record({
  seed: fc.nat({ max: CHECK_SEEDS.length - 1 }),
  method: mostly('POST', 'GET', 'PUT'),
  path: mostly(CHECK_METHOD_PATH, '/envoy.service.auth.v2.Authorization/Check', '/grpc.health.v1.Health/Check', '/', `${CHECK_METHOD_PATH}/`),
  contentType: mostly<string | undefined>('application/grpc', 'application/grpc+proto', 'application/grpc; charset=utf-8', 'application/grpcx', 'application/json', undefined),
  /** `grpc-encoding`; 'match' names the compression actually used (none: no header). */
  encoding: mostly<string | undefined>('match', undefined, 'identity', 'gzip', 'deflate', 'br', '', 'constructor', '__proto__'),
  timeout: mostly<string | undefined>(undefined, '2S', '500m', '0n', '99999999H', 'bogus', '1'),
  /** The Compressed-Flag byte (0 or 1 are the protocol's, anything else is not); 'match' says whether the message is compressed. */
  flag: mostly<'match' | number>('match', 0, 1, 2, 255),
  /** How the message bytes are actually compressed (the flag and the header may say otherwise). */
  compression: fc.constantFrom<'none' | 'gzip' | 'deflate'>('none', 'none', 'gzip', 'deflate'),
  /** The declared length against the bytes that follow. */
  length: mostly<'exact' | 'short' | 'long' | 'zero' | 'over-limit' | 'max'>('exact', 'short', 'long', 'zero', 'over-limit', 'max'),
  extra: mostly<'none' | 'second-message' | 'stray-bytes'>('none', 'second-message', 'stray-bytes'),
  /** Keep only the first N bytes of the body (undefined: all of it). */
  cut: fc.oneof({ weight: 8, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.nat({ max: 12 }) }),
  /** Edits to the message bytes before they are compressed and framed (in half the calls). */
  edits: fc.option(mutations(3), { nil: undefined, freq: 2 }),
  /** Where the body is split into separate writes (DATA frames). */
  splits: fc.array(fc.nat({ max: 64 }), { maxLength: 3 }),
});

type GrpcCall = typeof grpcCall extends fc.Arbitrary<infer T> ? T : never;

const grpcEncoding = (call: GrpcCall): string | undefined => (call.encoding !== 'match' ? call.encoding : call.compression === 'none' ? undefined : call.compression);
const grpcFlag = (call: GrpcCall): number => (call.flag !== 'match' ? call.flag : call.compression === 'none' ? 0 : 1);

interface GrpcAnswer {
  readonly httpStatus: number;
  /** From the trailers, or the headers of a trailers-only response; undefined when neither has one. */
  readonly grpcStatus: number | undefined;
  readonly body: Buffer;
}

/**
 * The call's body, and what a server refusing messages over `limitBytes` must answer (from the
 * protocol and grpc-go's codes): an HTTP status, or a gRPC code.
 */
function grpcCallBody(call: GrpcCall, seeds: readonly Buffer[], limitBytes: number): { body: Buffer; expected: { http: number } | { grpc: number } } {
  const message = call.edits === undefined ? seeds[call.seed] as Buffer : applyMutations(seeds[call.seed] as Buffer, call.edits);
  const payload = call.compression === 'gzip' ? gzipSync(message) : call.compression === 'deflate' ? deflateSync(message) : message;
  const declared = { exact: payload.length, short: Math.max(0, payload.length - 1), long: payload.length + 1, zero: 0, 'over-limit': limitBytes + 1, max: 0xffffffff }[call.length];
  const prefix = Buffer.alloc(5);
  prefix[0] = grpcFlag(call);
  prefix.writeUInt32BE(declared, 1);
  const extra = call.extra === 'second-message' ? Buffer.concat([prefix, payload]) : call.extra === 'stray-bytes' ? Buffer.from([0, 0]) : Buffer.alloc(0);
  const whole = Buffer.concat([prefix, payload, extra]);
  const body = call.cut === undefined ? whole : whole.subarray(0, call.cut);
  const expect = (): { http: number } | { grpc: number } => {
    if (call.method !== 'POST') return { http: 405 };
    if (call.contentType === undefined || !/^application\/grpc(?:$|[+;])/.test(call.contentType)) return { http: 415 };
    if (call.timeout !== undefined && parseGrpcTimeoutMs(call.timeout) === undefined) return { grpc: RpcCode.INTERNAL }; // grpc-go: malformed grpc-timeout
    if (call.path !== CHECK_METHOD_PATH) return { grpc: RpcCode.UNIMPLEMENTED };
    const encoding = grpcEncoding(call);
    if (encoding !== undefined && !['', 'identity', 'gzip', 'deflate'].includes(encoding)) return { grpc: RpcCode.UNIMPLEMENTED };
    if (body.length >= 5 && body.readUInt32BE(1) > limitBytes) return { grpc: RpcCode.RESOURCE_EXHAUSTED };
    if (body.length < 5 || body.length !== 5 + body.readUInt32BE(1)) return { grpc: RpcCode.INTERNAL }; // no message, cut short, or more than one
    if (body[0] !== 0 && body[0] !== 1) return { grpc: RpcCode.INTERNAL }; // grpc-go: "unexpected payload format"
    if (body[0] === 1) {
      const inflate = encoding === 'gzip' ? gunzipSync : encoding === 'deflate' ? inflateSync : undefined;
      if (inflate === undefined) return { grpc: RpcCode.INTERNAL }; // compressed, with no encoding to undo
      try {
        inflate(body.subarray(5), { maxOutputLength: limitBytes });
      } catch (error) {
        return { grpc: (error as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE' ? RpcCode.RESOURCE_EXHAUSTED : RpcCode.INTERNAL };
      }
    }
    // one well-framed message: whatever its bytes, a CheckResponse (a malformed one is a denial)
    return { grpc: RpcCode.OK };
  };
  return { body, expected: expect() };
}

function sendGrpc(session: http2.ClientHttp2Session, call: GrpcCall, body: Buffer): Promise<GrpcAnswer> {
  const headers: http2.OutgoingHttpHeaders = { ':method': call.method, ':path': call.path, te: 'trailers' };
  if (call.contentType !== undefined) headers['content-type'] = call.contentType;
  const encoding = grpcEncoding(call);
  if (encoding !== undefined) headers['grpc-encoding'] = encoding;
  if (call.timeout !== undefined) headers['grpc-timeout'] = call.timeout;
  const cuts = [...new Set(call.splits.map((c) => Math.min(c, body.length)))].sort((a, b) => a - b);
  const parts = [0, ...cuts, body.length].flatMap((from, i, all) => (i + 1 < all.length && (all[i + 1] as number) > from ? [body.subarray(from, all[i + 1])] : []));
  return new Promise((resolve, reject) => {
    const stream = session.request(headers, { endStream: call.method === 'GET' });
    let response: http2.IncomingHttpHeaders | undefined;
    let trailers: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    const answer = (): GrpcAnswer => {
      const status = trailers['grpc-status'] ?? response?.['grpc-status'];
      return { httpStatus: Number(response?.[':status']), grpcStatus: status === undefined ? undefined : Number(status), body: Buffer.concat(chunks) };
    };
    stream.setTimeout(10_000, () => stream.close(http2.constants.NGHTTP2_CANCEL));
    stream.on('response', (h) => {
      response = h;
    });
    stream.on('trailers', (t) => {
      trailers = t;
    });
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => resolve(answer()));
    // the server may answer (a refusal) and close the stream before the whole body was sent
    stream.on('error', (error) => (response === undefined ? reject(error) : resolve(answer())));
    stream.on('close', () => (response === undefined ? reject(new Error(`the stream closed without an answer (code ${stream.rstCode})`)) : resolve(answer())));
    if (call.method === 'GET') return;
    void (async () => {
      for (const part of parts) {
        if (stream.destroyed) return;
        stream.write(part);
        await new Promise((r) => setImmediate(r)); // each part its own DATA frame
      }
      if (!stream.destroyed) stream.end();
    })();
  });
}

const grpcFramingTarget: FuzzTarget = {
  name: 'grpc-framing',
  reached: (outcome) => outcome === 'grpc 0',
  summary: "ext_authz calls over a live HTTP/2 session with everything gRPC's wire protocol leaves to the sender varied: method, path, content type, grpc-encoding, grpc-timeout, the Compressed-Flag, the declared length against the bytes sent (short, long, zero, over the limit), a second message or stray bytes, a body cut short, split across DATA frames, compressed or not, with the message's bytes edited: each gets exactly its answer: HTTP 405 for a method other than POST (where grpc-go resets the stream), 415 for a content type other than gRPC's, else the grpc-status grpc-go gives it (13 for a malformed grpc-timeout, 12 for an unknown method or encoding, 8 over the size limit, 13 for framing other than one message with a Compressed-Flag of 0 or 1 that inflates, trailers-only), or 0 with one CheckResponse; and the same session still answers a valid check after it",
  async prepare(): Promise<PreparedTarget<unknown>> {
    const { extAuthz, limitBytes, codec, seeds } = await liveExtAuthz();
    const connect = async (): Promise<http2.ClientHttp2Session> => {
      const session = http2.connect(`http://127.0.0.1:${extAuthz.grpcAddress().port}`);
      session.on('error', () => undefined); // seen as a closed session below
      await new Promise<void>((resolve, reject) => {
        session.once('connect', () => resolve());
        session.once('error', reject);
      });
      return session;
    };
    const gone = (s: http2.ClientHttp2Session): boolean => s.closed || s.destroyed;
    // a case that lost the session failed; the next (shrinking's too) starts on a new one
    let session = await connect();
    const valid: GrpcCall = { seed: 0, method: 'POST', path: CHECK_METHOD_PATH, contentType: 'application/grpc', encoding: 'match', timeout: undefined, flag: 'match', compression: 'none', length: 'exact', extra: 'none', cut: undefined, edits: undefined, splits: [] };
    const validBody = grpcCallBody(valid, seeds, limitBytes).body;
    const oneResponse = (answer: GrpcAnswer): Record<string, unknown> => {
      assert.ok(answer.body.length >= 5 && answer.body[0] === 0 && answer.body.readUInt32BE(1) === answer.body.length - 5, 'one uncompressed length-prefixed message');
      return codec.decodeResponse(answer.body.subarray(5)) as Record<string, unknown>;
    };
    return {
      arbitrary: grpcCall,
      async check(input: unknown): Promise<string> {
        const call = input as GrpcCall;
        if (gone(session)) session = await connect();
        const { body, expected } = grpcCallBody(call, seeds, limitBytes);
        const answer = await sendGrpc(session, call, body);
        if ('http' in expected) {
          assert.equal(answer.httpStatus, expected.http, `HTTP ${expected.http}`);
          assert.equal(answer.grpcStatus, undefined, 'no gRPC status with an HTTP refusal');
        } else {
          assert.equal(answer.httpStatus, 200, 'a gRPC answer is HTTP 200');
          assert.equal(answer.grpcStatus, expected.grpc, `grpc-status ${expected.grpc}`);
          if (expected.grpc === RpcCode.OK) {
            const response = oneResponse(answer) as { status?: unknown };
            assert.ok(response.status !== undefined, 'the CheckResponse has a status');
          } else {
            assert.equal(answer.body.length, 0, 'a refusal is trailers-only');
          }
        }
        // whatever this call was, the session still serves the next one
        assert.ok(!gone(session), 'the server kept the session');
        const after = await sendGrpc(session, valid, validBody);
        assert.equal(after.grpcStatus, RpcCode.OK, 'a valid check on the same session afterwards');
        oneResponse(after);
        return 'http' in expected ? `http ${expected.http}` : `grpc ${expected.grpc}`;
      },
      async close(): Promise<void> {
        // close() never calls back on a session already closed or destroyed
        if (gone(session)) session.destroy();
        else await new Promise<void>((resolve) => session.close(() => resolve()));
        await releaseSidecar();
      },
    };
  },
};

// ---------------------------------------------------------------------------------------------
// data-api: HTTP requests of all shapes to the Data API and the rest of the routes

const VALID_BODY = '{"input":{"subject":{"id":"cust-1001","roles":["customer"],"kyc_tier":1,"accounts":["GB-0001"]},"action":"accounts.read","resource":{"account":"GB-0001"}}}';
const OPA_CODES = new Set(['invalid_parameter', 'invalid_operation', 'resource_not_found', 'undefined_document', 'unauthorized', 'internal_error']);

const requestShape = fc.record({
  method: fc.constantFrom('GET', 'POST', 'POST', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'HEAD'),
  path: fc.oneof(
    fc.constantFrom('/v1/data/bank/authz/allow', '/v1/data/bank/authz/decision', '/v1/data', '/v1/data/', '/v0/data/bank/authz/allow', '/v1/tenants/bank/data/bank/authz/allow',
      '/v1/tenants/bank', '/v1/tenants', '/v1/status', '/health', '/health?verbose', '/v1/tenants/bank/audit/checkpoint', '/v1/tenants/bank/audit/consistency?from=1&to=x',
      '/v1/tenants/bank/audit/decisions/x/proof', '/', '/v1/data/bank/authz/%2e%2e/allow', '/v1/tenants/%62ank/data/bank', '/v1/data/bank//authz'),
    fc.array(fc.constantFrom('v1', 'data', 'bank', 'authz', 'allow', 'tenants', '..', '.', '%00', '%2F', '%E2%82', 'é', ''), { maxLength: 6 }).map((s) => `/${s.join('/')}`),
  ),
  query: fc.array(fc.constantFrom('pretty', 'metrics=true', 'explain=full', 'instrument', 'receipt=1', 'strict-builtin-errors=true', 'provenance', 'input=%7B%7D', 'input=%7B', 'input=%5B1%5D', 'from=', '%ZZ', 'x=%E2'), { maxLength: 3 }),
  tenant: fc.option(fc.constantFrom('bank', 'envoy_demo', 'nobody', 'BANK', 'bank ', '../bank', ''), { nil: undefined }),
  contentType: fc.option(fc.constantFrom('application/json', 'application/x-yaml', 'text/plain', 'application/json; charset=latin1', 'multipart/form-data'), { nil: undefined }),
  gzip: fc.constantFrom('none', 'none', 'valid', 'broken'),
  body: fc.oneof(
    { weight: 3, arbitrary: mutations().map((edits) => applyMutations(Buffer.from(VALID_BODY), edits)) },
    { weight: 2, arbitrary: json(4).map((v) => Buffer.from(JSON.stringify({ input: v }))) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)) },
    { weight: 1, arbitrary: fc.constantFrom('{"input":' + '['.repeat(200) + ']'.repeat(200) + '}', '{"input":12345678901234567890}', '{"input":{"a":1e400}}', '{"input":"\\ud800"}', '{}', '', 'null').map((s) => Buffer.from(s)) },
  ),
});

type RequestShape = typeof requestShape extends fc.Arbitrary<infer T> ? T : never;

function send(base: URL, shape: RequestShape): Promise<{ status: number; body: Buffer }> {
  let body = shape.body;
  const headers: Record<string, string> = {};
  if (shape.tenant !== undefined) headers['x-pavilion-tenant'] = shape.tenant;
  if (shape.contentType !== undefined) headers['content-type'] = shape.contentType;
  if (shape.gzip !== 'none') {
    headers['content-encoding'] = 'gzip';
    body = shape.gzip === 'valid' ? gzipSync(body) : Buffer.concat([gzipSync(body).subarray(0, 12), Buffer.from('not gzip')]);
  }
  const path = shape.query.length === 0 ? shape.path : `${shape.path}${shape.path.includes('?') ? '&' : '?'}${shape.query.join('&')}`;
  return new Promise((resolve, reject) => {
    const request = http.request({ host: base.hostname, port: base.port, method: shape.method, path, headers: { ...headers, 'content-length': String(body.length) }, agent: false }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (c: Buffer) => chunks.push(c));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks) }));
      response.on('error', reject);
    });
    request.on('error', reject);
    request.setTimeout(10_000, () => request.destroy(new Error(`no answer within 10 s to ${shape.method} ${path}`)));
    request.end(body);
  });
}

const dataApiTarget: FuzzTarget = {
  name: 'data-api',
  reached: (outcome) => outcome === '200 decision',
  summary: "HTTP requests of every shape (methods, paths with dot segments and bad escapes, OPA's query parameters, tenants, content types, gzip valid and broken, edited and random bodies) to a running sidecar: every answer is a decision or a 4xx/503 with an OPA error body naming a typed Pavilion code, never a 500, and the sidecar stays ready",
  async prepare(): Promise<PreparedTarget<unknown>> {
    const app = await liveSidecar();
    const base = new URL(app.url);
    return {
      arbitrary: requestShape,
      async check(input: unknown): Promise<string> {
        const shape = input as RequestShape;
        const { status, body } = await send(base, shape);
        // no 500 but a deadline a busy machine missed: the sample tenants' policies decide on
        // any input; a trap would be input that reached the Wasm unread
        const timedOut = status === 500 && /"code":\s*"ERR_EVAL_TIMEOUT"/.test(body.toString('utf8'));
        assert.ok([200, 400, 401, 404, 405, 408, 413, 415, 431, 503].includes(status) || timedOut, `status ${status}: ${body.toString('utf8').slice(0, 300)}`);
        if (shape.method === 'HEAD') return `HEAD ${status}`;
        if (status === 200 && shape.path.startsWith('/health')) return 'health';
        let parsed: { code?: unknown; errors?: Array<{ code?: unknown }> };
        try {
          parsed = JSON.parse(body.toString('utf8')) as typeof parsed;
        } catch {
          assert.fail(`a ${status} answer is not JSON: ${body.toString('utf8').slice(0, 200)}`);
        }
        if (status === 200) return shape.path.includes('/data') ? '200 decision' : '200';
        assert.ok(OPA_CODES.has(String(parsed.code)), `OPA's error code: ${String(parsed.code)}`);
        const code = String(parsed.errors?.[0]?.code);
        assert.match(code, /^ERR_[A-Z0-9_]+$/, 'a Pavilion code');
        assert.notEqual(code, ErrorCodes.INTERNAL, `ERR_INTERNAL for ${JSON.stringify({ ...shape, body: shape.body.toString('latin1').slice(0, 100) })}`);
        return `${status} ${code}`;
      },
      async close(): Promise<void> {
        await releaseSidecar();
      },
    };
  },
};

export const TARGETS: readonly FuzzTarget[] = [bundleTarget, deltaTarget, natsMessagesTarget, wasmTarget, auditWalTarget, credentialsTarget, statusListsTarget, extAuthzTarget, grpcFramingTarget, dataApiTarget];
