/**
 * The PKCS#11 checkpoint signer against a real SoftHSM2 token in a token directory of its
 * own (SOFTHSM2_CONF, set before C_Initialize): key generated on the token and not
 * extractable, ECDSA P-256 signatures that the software verifier accepts, key rotation, and
 * each setup failure with its code, and a lost session replaced (only for a lost session, only
 * with the same key). Needs softhsm2 + opensc (scripts/install-softhsm.sh, which
 * scripts/test.sh runs).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createPublicKey, generateKeyPairSync, verify } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type * as Pkcs11Types from 'pkcs11js';
import { createCheckpointSigner } from '../sidecar/src/audit/index.ts';
import { Keyring, Pkcs11Module, SoftwareSigner, checkpointMessage, ecPointToSpki, verifyDecisionProof, verifyLogFile } from '../sidecar/src/audit/log/index.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';
import { decisionEvent, openLog, ringOf, tempDir, walPath } from './audit/fixtures.ts';

const MODULE = ['/usr/lib/softhsm/libsofthsm2.so', '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so'].find((p) => existsSync(p));
const TOKEN = 'pavilion-audit-test';
const PIN = '246810';

let module: Pkcs11Module;

before(async () => {
  assert.ok(MODULE !== undefined, 'SoftHSM2 is not installed: run bash scripts/install-softhsm.sh');
  const dir = await tempDir('pavilion-softhsm-');
  await mkdir(join(dir, 'tokens'));
  const conf = join(dir, 'softhsm2.conf');
  await writeFile(conf, `directories.tokendir = ${join(dir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
  process.env['SOFTHSM2_CONF'] = conf;
  execFileSync('softhsm2-util', ['--init-token', '--free', '--label', TOKEN, '--pin', PIN, '--so-pin', '13579'], { env: process.env, stdio: 'pipe' });
  module = Pkcs11Module.open(MODULE);
});

after(() => module?.close());

/** The token signed `message` with the key whose SPKI is `spki` (r||s over SHA-256). */
const verifies = (spki: Buffer, message: Buffer, signature: Buffer): boolean =>
  verify('sha256', message, { key: createPublicKey({ key: spki, format: 'der', type: 'spki' }), dsaEncoding: 'ieee-p1363' }, signature);

/**
 * A second pkcs11js instance on the same library in this process, acting on the token as an
 * administrator or a restarting HSM would. It shares SoftHSM's state with `module` (the same
 * library, already initialised: CKR_CRYPTOKI_ALREADY_INITIALIZED is expected), so it is never
 * finalized here: that would finalize the module's library too.
 */
function tokenAdmin() {
  const lib = createRequire(import.meta.url)('pkcs11js') as typeof Pkcs11Types;
  const p11 = new lib.PKCS11();
  p11.load(MODULE!);
  const tolerate = (action: () => void, code: number): void => {
    try {
      action();
    } catch (error) {
      if ((error as { code?: unknown }).code !== code) throw error;
    }
  };
  tolerate(() => p11.C_Initialize(), lib.CKR_CRYPTOKI_ALREADY_INITIALIZED);
  const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.trim() === TOKEN)!;
  const loggedIn = (): Buffer => {
    const session = p11.C_OpenSession(slot, lib.CKF_SERIAL_SESSION | lib.CKF_RW_SESSION);
    tolerate(() => p11.C_Login(session, lib.CKU_USER, PIN), lib.CKR_USER_ALREADY_LOGGED_IN);
    return session;
  };
  const objects = (session: Buffer, label: string, cls?: number): Buffer[] => {
    p11.C_FindObjectsInit(session, [{ type: lib.CKA_LABEL, value: label }, ...(cls === undefined ? [] : [{ type: lib.CKA_CLASS, value: cls }])]);
    try {
      return p11.C_FindObjects(session, 16);
    } finally {
      p11.C_FindObjectsFinal(session);
    }
  };
  const generate = (session: Buffer, label: string, sign = true): void => {
    p11.C_GenerateKeyPair(
      session,
      { mechanism: lib.CKM_EC_KEY_PAIR_GEN },
      [
        { type: lib.CKA_TOKEN, value: true },
        { type: lib.CKA_LABEL, value: label },
        { type: lib.CKA_EC_PARAMS, value: Buffer.from('06082a8648ce3d030107', 'hex') },
        { type: lib.CKA_VERIFY, value: true },
      ],
      [
        { type: lib.CKA_TOKEN, value: true },
        { type: lib.CKA_PRIVATE, value: true },
        { type: lib.CKA_LABEL, value: label },
        { type: lib.CKA_SENSITIVE, value: true },
        { type: lib.CKA_EXTRACTABLE, value: false },
        { type: lib.CKA_SIGN, value: sign },
      ],
    );
  };
  return {
    lib,
    /**
     * C_CloseAllSessions on the slot: every session of this process on the token, the signers'
     * included, is gone, and so is the login. Checked on a session of its own opened before.
     */
    closeAllSessions(): void {
      const probe = p11.C_OpenSession(slot, lib.CKF_SERIAL_SESSION);
      p11.C_CloseAllSessions(slot);
      assert.throws(() => p11.C_GetSessionInfo(probe), (e: unknown) => (e as { code?: unknown }).code === lib.CKR_SESSION_HANDLE_INVALID, 'C_CloseAllSessions closed the sessions');
    },
    /** Change the user PIN (C_SetPIN in a user session). */
    setPin(oldPin: string, newPin: string): void {
      const session = p11.C_OpenSession(slot, lib.CKF_SERIAL_SESSION | lib.CKF_RW_SESSION);
      tolerate(() => p11.C_Login(session, lib.CKU_USER, oldPin), lib.CKR_USER_ALREADY_LOGGED_IN);
      p11.C_SetPIN(session, oldPin, newPin);
      p11.C_CloseSession(session);
    },
    /** Destroy every object labelled `label` (of class `cls`, if given). */
    destroy(label: string, cls?: number): void {
      const session = loggedIn();
      const found = objects(session, label, cls);
      assert.ok(found.length > 0, `objects labelled ${label}`);
      for (const object of found) p11.C_DestroyObject(session, object);
      p11.C_CloseSession(session);
    },
    /** A new P-256 key pair labelled `label` (the old one destroyed first); `sign` false: a private key not allowed to sign. */
    replaceKey(label: string, sign = true): void {
      const session = loggedIn();
      for (const object of objects(session, label)) p11.C_DestroyObject(session, object);
      generate(session, label, sign);
      p11.C_CloseSession(session);
    },
    /**
     * A P-256 key pair made off the token and imported with C_CreateObject, marked sensitive
     * and non-extractable: the token records it as never-extractable false.
     */
    importKey(label: string): void {
      const jwk = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
      const bytes = (v: string | undefined): Buffer => Buffer.from(v ?? '', 'base64url');
      const params = Buffer.from('06082a8648ce3d030107', 'hex');
      const session = loggedIn();
      const ecKey = [
        { type: lib.CKA_KEY_TYPE, value: lib.CKK_EC },
        { type: lib.CKA_TOKEN, value: true },
        { type: lib.CKA_LABEL, value: label },
        { type: lib.CKA_EC_PARAMS, value: params },
      ];
      p11.C_CreateObject(session, [
        { type: lib.CKA_CLASS, value: lib.CKO_PRIVATE_KEY },
        ...ecKey,
        { type: lib.CKA_PRIVATE, value: true },
        { type: lib.CKA_SENSITIVE, value: true },
        { type: lib.CKA_EXTRACTABLE, value: false },
        { type: lib.CKA_SIGN, value: true },
        { type: lib.CKA_VALUE, value: bytes(jwk.d) },
      ]);
      p11.C_CreateObject(session, [
        { type: lib.CKA_CLASS, value: lib.CKO_PUBLIC_KEY },
        ...ecKey,
        { type: lib.CKA_VERIFY, value: true },
        // the point as a DER OCTET STRING: 04 41 04 || x || y
        { type: lib.CKA_EC_POINT, value: Buffer.concat([Buffer.from([0x04, 0x41, 0x04]), bytes(jwk.x), bytes(jwk.y)]) },
      ]);
      p11.C_CloseSession(session);
    },
    /** A new private key labelled `label`, the old public key object left in its place. */
    swapPrivateKey(label: string): void {
      const session = loggedIn();
      const oldPublic = objects(session, label, lib.CKO_PUBLIC_KEY);
      for (const object of objects(session, label, lib.CKO_PRIVATE_KEY)) p11.C_DestroyObject(session, object);
      generate(session, label);
      for (const object of objects(session, label, lib.CKO_PUBLIC_KEY)) {
        if (!oldPublic.some((old) => old.equals(object))) p11.C_DestroyObject(session, object);
      }
      p11.C_CloseSession(session);
    },
  };
}

const setupFails = async (promise: () => Promise<unknown>, pattern: RegExp): Promise<void> => {
  await assert.rejects(promise, (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_SIGNER_CONFIG) && pattern.test(e.message));
};

/**
 * Run `script` (an ES module) in a process of its own, with the PIN in TEST_HSM_PIN: one
 * C_Initialize per process, and this one has its own. From a file, not --eval: the signer's
 * thread inherits the process's options, and --input-type is not one a worker takes.
 */
async function runScript(script: string): Promise<string> {
  const file = join(await tempDir(), 'script.mts');
  await writeFile(file, script);
  return execFileSync(process.execPath, ['--import', 'tsx', file], { env: { ...process.env, TEST_HSM_PIN: PIN }, encoding: 'utf8' });
}

describe('PKCS#11 signer (SoftHSM2)', () => {
  it('generates a non-extractable P-256 key on the token; its checkpoints verify with the software verifier', async () => {
    const signer = await module.signer({ tokenLabel: TOKEN, pin: PIN, keyLabel: 'checkpoint-2026', generate: true });
    assert.deepEqual(signer.attributes, { extractable: false, sensitive: true, neverExtractable: true, token: true });
    assert.match(signer.keyId, /^p256:[0-9a-f]{32}$/);

    const dir = await tempDir();
    const log = await openLog(dir, signer, { checkpointEveryEvents: 4 });
    for (let i = 0; i < 10; i++) await log.append(decisionEvent(i));
    const proof = await log.proveInclusion('decision-000009');
    await log.stop(5000);
    const ring = ringOf(signer);
    assert.equal(verifyDecisionProof(proof, ring).keyId, signer.keyId);
    const result = await verifyLogFile(walPath(dir), ring);
    assert.equal(result.checkpoints, 3);
    assert.deepEqual(result.keyIds, [signer.keyId]);
  });

  it('finds the same key again by label (a restart), and signs concurrently without mixing operations', async () => {
    const first = await module.signer({ tokenLabel: TOKEN, pin: PIN, keyLabel: 'checkpoint-2026' });
    const again = await module.signer({ tokenLabel: TOKEN, pin: PIN, keyLabel: 'checkpoint-2026' });
    assert.equal(again.keyId, first.keyId);
    const ring = ringOf(first);
    const body = { origin: 'pavilion-test/bank', tree_size: 1, root_hash: '00'.repeat(32), timestamp: '2026-11-28T12:00:00.000Z', key_id: first.keyId };
    const signatures = await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? first : again).sign(checkpointMessage({ ...body, tree_size: i }))));
    signatures.forEach((signature, i) => {
      ring.verifyCheckpoint({ version: 1, algorithm: 'ecdsa-p256-sha256', ...body, tree_size: i, signature: signature.toString('base64') });
    });
  });

  it('rotates: a second key on the token signs later checkpoints; the log verifies with both public keys', async () => {
    const oldKey = await module.signer({ tokenLabel: TOKEN, pin: PIN, keyLabel: 'checkpoint-2026' });
    const newKey = await module.signer({ tokenLabel: TOKEN, pin: PIN, keyLabel: 'checkpoint-2027', generate: true });
    assert.notEqual(newKey.keyId, oldKey.keyId);
    const dir = await tempDir();
    const log = await openLog(dir, oldKey);
    await log.append(decisionEvent(1));
    await log.checkpoint();
    log.rotateSigner(newKey);
    await log.append(decisionEvent(2));
    await log.stop(5000);
    const ring = ringOf(newKey);
    await assert.rejects(verifyLogFile(walPath(dir), ring), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_KEY_UNKNOWN));
    ring.add(oldKey.publicKeySpki);
    assert.equal((await verifyLogFile(walPath(dir), ring)).checkpoints, 2);
  });

  it('refuses each bad setup with ERR_AUDIT_SIGNER_CONFIG', async () => {
    await setupFails(() => module.signer({ tokenLabel: 'no-such-token', pin: PIN, keyLabel: 'k' }), /no token labelled/);
    await setupFails(() => module.signer({ tokenLabel: TOKEN, pin: PIN, keyLabel: 'absent-key' }), /no EC private key/);
    assert.throws(() => Pkcs11Module.open('/nonexistent/libpkcs11.so'), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_SIGNER_CONFIG));
    assert.throws(() => ecPointToSpki(Buffer.from('0441', 'hex')), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_SIGNER_CONFIG));
    assert.throws(() => ecPointToSpki(undefined), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_SIGNER_CONFIG));
  });

  it('an imported key (C_CreateObject, CKA_NEVER_EXTRACTABLE false) is refused with ERR_AUDIT_SIGNER_CONFIG unless allowImportedKey', async () => {
    tokenAdmin().importKey('imported-2026');
    await setupFails(() => module.signer({ tokenLabel: TOKEN, pin: PIN, keyLabel: 'imported-2026' }), /has not always been non-extractable \(CKA_NEVER_EXTRACTABLE is false/);
    const signer = await module.signer({ tokenLabel: TOKEN, pin: PIN, keyLabel: 'imported-2026', allowImportedKey: true });
    assert.deepEqual(signer.attributes, { extractable: false, sensitive: true, neverExtractable: false, token: true });
    const message = Buffer.from('checkpoint');
    assert.ok(verifies(signer.publicKeySpki, message, await signer.sign(message)));
  });

  it('refuses a wrong PIN with ERR_AUDIT_SIGNER_CONFIG', async () => {
    // A separate process: a PKCS#11 login is per application, and this one is logged in.
    const script = `
      import { Pkcs11Module } from ${JSON.stringify(new URL('../sidecar/src/audit/log/index.ts', import.meta.url).href)};
      const m = Pkcs11Module.open(${JSON.stringify(MODULE)});
      try { await m.signer({ tokenLabel: ${JSON.stringify(TOKEN)}, pin: '000000', keyLabel: 'checkpoint-2026' }); console.log('no error'); }
      catch (e) { console.log(e.code, e.message); } finally { m.close(); }`;
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { env: process.env, encoding: 'utf8' });
    assert.match(out, /^ERR_AUDIT_SIGNER_CONFIG .*login .* failed.*CKR_PIN_INCORRECT/);
  });

  it("the configured 'pkcs11' signer drives a whole AuditLogSink (own process: one C_Initialize per process)", async () => {
    const dir = await tempDir();
    const sinkModule = JSON.stringify(new URL('../sidecar/src/audit/index.ts', import.meta.url).href);
    const fixtures = JSON.stringify(new URL('./audit/fixtures.ts', import.meta.url).href);
    const script = `
      import { AuditLogSink, createCheckpointSigner } from ${sinkModule};
      import { decisionEvent } from ${fixtures};
      const signer = { kind: 'pkcs11', modulePath: ${JSON.stringify(MODULE)}, tokenLabel: ${JSON.stringify(TOKEN)}, keyLabel: 'sidecar-key', pinEnv: 'TEST_HSM_PIN', generateKey: true, operationTimeoutMs: 10000 };
      const sink = new AuditLogSink({ directory: ${JSON.stringify(dir)}, originPrefix: 'hsm-test', createSigner: () => createCheckpointSigner(signer),
        settings: { fsync: 'always', fsyncIntervalMs: 100, groupCommitMaxDelayMs: 0, groupCommitMaxBytes: 1 << 20, maxDiskBytes: 1 << 30,
          onFull: 'refuse', blockTimeoutMs: 100, maxEventBytes: 1 << 20, checkpointEveryEvents: 2, checkpointIntervalMs: 60000 } });
      await sink.start();
      for (let i = 0; i < 5; i++) await sink.append(decisionEvent(i));
      console.log(sink.status().details.key_id);
      await sink.stop(5000);`;
    const keyId = (await runScript(script)).trim();
    const onToken = await module.signer({ tokenLabel: TOKEN, pin: PIN, keyLabel: 'sidecar-key' });
    assert.equal(keyId, onToken.keyId, 'the key was generated on the token');
    const keys = Keyring.load(join(dir, 'keys'));
    assert.deepEqual(keys.ids(), [onToken.keyId], 'its public key was published');
    const result = await verifyLogFile(join(dir, 'tenants', 'bank', 'audit.wal'), keys);
    assert.equal(result.leaves, 5);
    assert.equal(result.unsignedLeaves, 0);
    await assert.rejects(createCheckpointSigner({ kind: 'pkcs11', modulePath: MODULE!, tokenLabel: TOKEN, keyLabel: 'k', pinEnv: 'UNSET_PIN_VARIABLE', generateKey: false, allowImportedKey: false, operationTimeoutMs: 10_000 }, {}),
      (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_SIGNER_CONFIG) && /UNSET_PIN_VARIABLE is not set/.test(e.message));
  });

  it('a sink whose start fails after the signer opened (the anchor key missing) closes the token session: the module opens again in the same process', async () => {
    const dir = await tempDir();
    const sinkModule = JSON.stringify(new URL('../sidecar/src/audit/index.ts', import.meta.url).href);
    const anchorModule = JSON.stringify(new URL('../sidecar/src/audit/anchor/index.ts', import.meta.url).href);
    const logModule = JSON.stringify(new URL('../sidecar/src/audit/log/index.ts', import.meta.url).href);
    const script = `
      import { AuditLogSink, createCheckpointSigner } from ${sinkModule};
      import { createAnchor } from ${anchorModule};
      import { Pkcs11Module } from ${logModule};
      const signer = { kind: 'pkcs11', modulePath: ${JSON.stringify(MODULE)}, tokenLabel: ${JSON.stringify(TOKEN)}, keyLabel: 'start-failure-key', pinEnv: 'TEST_HSM_PIN', generateKey: true, operationTimeoutMs: 10000 };
      const anchor = { kind: 'evm', rpcUrl: 'http://127.0.0.1:9', chainId: 31337, contract: '0x${'12'.repeat(20)}', privateKeyFile: '/nonexistent/anchor.key', privateKeyEnv: 'UNSET_ANCHOR_KEY',
        confirmations: 1, receiptTimeoutMs: 1000, submitTimeoutMs: 1000, maxAttempts: 1, feeBumpPercent: 20, pollingIntervalMs: 10, requestTimeoutMs: 100 };
      const sink = new AuditLogSink({ directory: ${JSON.stringify(dir)}, originPrefix: 'hsm-test', createSigner: () => createCheckpointSigner(signer), createAnchor: () => createAnchor(anchor),
        settings: { fsync: 'always', fsyncIntervalMs: 100, groupCommitMaxDelayMs: 0, groupCommitMaxBytes: 1 << 20, maxDiskBytes: 1 << 30,
          onFull: 'refuse', blockTimeoutMs: 100, maxEventBytes: 1 << 20, checkpointEveryEvents: 2, checkpointIntervalMs: 60000 } });
      try { await sink.start(); console.log('started'); } catch (e) { console.log('start failed', e.code); }
      try { Pkcs11Module.open(${JSON.stringify(MODULE)}).close(); console.log('reopened'); } catch (e) { console.log('reopen failed', e.message); }`;
    const out = await runScript(script);
    assert.match(out, /^start failed ERR_AUDIT_ANCHOR_CONFIG\nreopened$/m, out);
  });

  it('every call into the token runs on a thread of its own: a token that does not answer fails the signature after operationTimeoutMs (later ones at once) while the event loop runs on, and close() does not wait for it; a stopped thread is replaced, with the same key, but never again once the token refused the PIN', async () => {
    const logModule = JSON.stringify(new URL('../sidecar/src/audit/log/index.ts', import.meta.url).href);
    const script = `
      import { createRequire } from 'node:module';
      import { threadId } from 'node:worker_threads';
      import { Pkcs11ThreadSigner } from ${logModule};
      const options = { modulePath: ${JSON.stringify(MODULE)}, key: { tokenLabel: ${JSON.stringify(TOKEN)}, pin: process.env.TEST_HSM_PIN, keyLabel: 'thread-key', generate: true }, operationTimeoutMs: 400, restartBackoffMs: 2000, allowStall: true };
      const outcome = (p) => p.then(() => 'signed', (e) => e.code + ': ' + e.message);
      const m = Buffer.from('a checkpoint signed on the thread');
      const out = { main: threadId };
      let signer = await Pkcs11ThreadSigner.open(options);
      out.verifies = signer.verifies(m, await signer.sign(m));
      out.thread = signer.threadId;
      let ticks = 0;
      const tick = setInterval(() => ticks++, 10);
      signer.stallNextSign(1500);
      out.stalled = await outcome(signer.sign(m));
      out.ticksWhileStalled = ticks;
      out.next = await outcome(signer.sign(m));
      const until = Date.now() + 10000;
      do { await new Promise((r) => setTimeout(r, 100)); out.after = await outcome(signer.sign(m)); } while (out.after !== 'signed' && Date.now() < until);
      clearInterval(tick);
      await signer.stopThreadForTests();
      const again = await signer.sign(m);
      out.restartVerifies = signer.verifies(m, again);
      out.restartThread = signer.threadId;
      await signer.stopThreadForTests();
      out.backoff = await outcome(signer.sign(m));
      // close() while the token holds a signature: it does not wait for the answer
      await new Promise((r) => setTimeout(r, 2100));
      signer.stallNextSign(3000);
      out.stalledBeforeClose = await outcome(signer.sign(m));
      await signer.close();
      out.unansweredAtClose = signer.unanswered;
      out.closed = await outcome(signer.sign(m));
      // a new signer in the same process (the abandoned thread left the library initialised)
      signer = await Pkcs11ThreadSigner.open(options);
      out.reopened = await outcome(signer.sign(m));
      // the PIN changes, then the thread stops: its replacement is refused the PIN, and never tried again
      const lib = createRequire(${JSON.stringify(import.meta.url)})('pkcs11js');
      const p11 = new lib.PKCS11();
      p11.load(options.modulePath);
      try { p11.C_Initialize(); } catch (e) { if (e.code !== lib.CKR_CRYPTOKI_ALREADY_INITIALIZED) throw e; }
      const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.trim() === options.key.tokenLabel);
      const setPin = (from, to) => { const session = p11.C_OpenSession(slot, lib.CKF_SERIAL_SESSION | lib.CKF_RW_SESSION); try { p11.C_Login(session, lib.CKU_USER, from); } catch (e) { if (e.code !== lib.CKR_USER_ALREADY_LOGGED_IN) throw e; } p11.C_SetPIN(session, from, to); p11.C_CloseSession(session); };
      setPin(options.key.pin, '999999');
      try {
        await signer.stopThreadForTests();
        p11.C_CloseAllSessions(slot); // logged out: a login is per process, and the stopped thread's sessions kept it
        await new Promise((r) => setTimeout(r, 2100));
        const first = await signer.sign(m).catch((e) => e);
        out.pinRefused = first.code + ': ' + first.message;
        await new Promise((r) => setTimeout(r, 2100));
        out.notAgain = (await signer.sign(m).catch((e) => e)) === first;
      } finally {
        setPin('999999', options.key.pin);
      }
      await signer.close();
      console.log(JSON.stringify(out));
      process.exit(0);`;
    const out = JSON.parse((await runScript(script)).trim().split('\n').at(-1)!) as Record<string, unknown>;
    assert.equal(out['verifies'], true);
    assert.ok(typeof out['thread'] === 'number' && out['thread'] !== out['main'], `signed on thread ${String(out['thread'])}, the event loop's is ${String(out['main'])}`);
    assert.match(String(out['stalled']), /^ERR_AUDIT_SIGNER_FAILED: PKCS#11: the token did not answer a signature within 400 ms$/);
    assert.ok(Number(out['ticksWhileStalled']) >= 10, `the event loop ran while the token did not answer (${String(out['ticksWhileStalled'])} ticks of 10 ms in 400 ms)`);
    assert.match(String(out['next']), /^ERR_AUDIT_SIGNER_FAILED: PKCS#11: the token has not answered the signature asked \d+ ms ago; not asking again until it does$/);
    assert.equal(out['after'], 'signed', 'signs again once the token answered');
    assert.equal(out['restartVerifies'], true, 'a stopped thread is replaced by one that opens the same key');
    assert.ok(out['restartThread'] !== out['thread'] && out['restartThread'] !== out['main']);
    assert.match(String(out['backoff']), /^ERR_AUDIT_SIGNER_FAILED: PKCS#11: the signing thread stopped: exit code 1; restarted \d+ ms ago, the next start is in \d+ ms$/);
    assert.match(String(out['stalledBeforeClose']), /did not answer a signature within 400 ms/);
    assert.equal(out['unansweredAtClose'], 1, 'close() returned while the token still held the signature');
    assert.equal(out['closed'], 'ERR_AUDIT_SIGNER_FAILED: PKCS#11: the signer is closed');
    assert.equal(out['reopened'], 'signed');
    assert.match(String(out['pinRefused']), /^ERR_AUDIT_SIGNER_FAILED: PKCS#11: the signing thread stopped: exit code 1; a new one could not open the key: .*login to token .* failed.*CKR_PIN_INCORRECT/);
    assert.equal(out['notAgain'], true, 'the same refusal, without another thread or login (each login counts toward locking the PIN)');
  });

  it('a key whose public half is not an EC key (CKA_EC_POINT unreadable): ERR_AUDIT_SIGNER_CONFIG naming the attribute, not a raw PKCS#11 error', async () => {
    const label = 'mixed-key';
    await module.signer({ tokenLabel: TOKEN, pin: PIN, keyLabel: label, generate: true });
    const tool = (...args: string[]): void => {
      execFileSync('pkcs11-tool', ['--module', MODULE!, '--token-label', TOKEN, '--login', '--pin', PIN, ...args], { env: process.env, stdio: 'pipe' });
    };
    // Swap the EC public key for an RSA one under the same label (the EC private key stays).
    tool('--delete-object', '--type', 'pubkey', '--label', label);
    tool('--keypairgen', '--key-type', 'rsa:1024', '--label', label, '--id', 'beef');
    await setupFails(() => module.signer({ tokenLabel: TOKEN, pin: PIN, keyLabel: label }), /reading CKA_EC_POINT of public key "mixed-key" failed/);
  });

  it('the software signer and the token produce the same signature encoding (r||s, 64 bytes)', async () => {
    const token = await module.signer({ tokenLabel: TOKEN, pin: PIN, keyLabel: 'checkpoint-2026' });
    const message = Buffer.from('same encoding');
    assert.equal((await token.sign(message)).length, 64);
    assert.equal((await SoftwareSigner.generate().sign(message)).length, 64);
  });

  it('the PIN changed while the session was gone: the reopen is refused once and never tried again (retries would lock the PIN), even after the PIN is back', async () => {
    const signer = await module.signer({ tokenLabel: TOKEN, pin: PIN, keyLabel: 'pin-change-key', generate: true });
    const admin = tokenAdmin();
    const refusedForGood = (e: unknown): boolean => isPavilionError(e, ErrorCodes.AUDIT_SIGNER_FAILED) && /refused the PIN .*not trying again/.test(e.message);
    admin.setPin(PIN, '135790');
    try {
      admin.closeAllSessions();
      await assert.rejects(signer.sign(Buffer.from('after the PIN changed')), refusedForGood);
    } finally {
      admin.setPin('135790', PIN);
    }
    admin.closeAllSessions();
    // the right PIN is back, but the signer does not try again: a restart decides
    await assert.rejects(signer.sign(Buffer.from('PIN restored')), refusedForGood);
    assert.equal(signer.reconnects, 0);
  });

  it('a lost session (C_CloseAllSessions) is replaced once: the signature is made again with the same key, concurrent calls share one reopen', async () => {
    const signer = await module.signer({ tokenLabel: TOKEN, pin: PIN, keyLabel: 'reconnect-key', generate: true });
    const before = Buffer.from('before the HSM went away');
    assert.ok(verifies(signer.publicKeySpki, before, await signer.sign(before)));

    const admin = tokenAdmin();
    admin.closeAllSessions();
    const after = Buffer.from('after the HSM came back');
    const signature = await signer.sign(after);
    assert.ok(verifies(signer.publicKeySpki, after, signature), 'signed by the key the signer started with');
    assert.equal(signer.reconnects, 1);

    admin.closeAllSessions();
    const messages = Array.from({ length: 8 }, (_, i) => Buffer.from(`concurrent ${i}`));
    const signatures = await Promise.all(messages.map((m) => signer.sign(m)));
    signatures.forEach((s, i) => assert.ok(verifies(signer.publicKeySpki, messages[i]!, s)));
    assert.equal(signer.reconnects, 2, 'the first waiting call reopened; the others used its session');
  });

  it('a key replaced under the same label while the session was gone: ERR_AUDIT_SIGNER_KEY_CHANGED, for good, and never a signature from the new key', async () => {
    const label = 'replaced-key';
    const signer = await module.signer({ tokenLabel: TOKEN, pin: PIN, keyLabel: label, generate: true });
    await signer.sign(Buffer.from('with the first key'));
    const admin = tokenAdmin();
    admin.replaceKey(label);
    admin.closeAllSessions();
    const replacement = await module.signer({ tokenLabel: TOKEN, pin: PIN, keyLabel: label });
    assert.notEqual(replacement.keyId, signer.keyId, 'the label names another key now');

    const refused = (e: unknown): boolean => isPavilionError(e, ErrorCodes.AUDIT_SIGNER_KEY_CHANGED)
      && e.details?.['expectedKeyId'] === signer.keyId && e.details['foundKeyId'] === replacement.keyId;
    await assert.rejects(signer.sign(Buffer.from('must not be signed')), refused);
    assert.equal(signer.reconnects, 0, 'the session with the other key was not adopted');
    // Refused from now on, even once the token stays reachable: the signer's key id names the old key.
    await assert.rejects(signer.sign(Buffer.from('nor this')), refused);
    const message = Buffer.from('the new key signs as itself');
    assert.ok(verifies(replacement.publicKeySpki, message, await replacement.sign(message)));
  });

  it('a private key swapped under the old public key: the reopen matches, but the first signature does not verify and is refused', async () => {
    const label = 'swapped-private-key';
    const signer = await module.signer({ tokenLabel: TOKEN, pin: PIN, keyLabel: label, generate: true });
    await signer.sign(Buffer.from('with the first key'));
    const admin = tokenAdmin();
    admin.swapPrivateKey(label);
    admin.closeAllSessions();
    const refused = (e: unknown): boolean => isPavilionError(e, ErrorCodes.AUDIT_SIGNER_KEY_CHANGED) && /signs with another key/.test(e.message);
    await assert.rejects(signer.sign(Buffer.from('must not be signed')), refused);
    await assert.rejects(signer.sign(Buffer.from('nor this')), refused);
  });

  it('a start that finds a private key not the pair of the public key under the label is refused (ERR_AUDIT_SIGNER_CONFIG), before any checkpoint is signed', async () => {
    const label = 'mismatched-pair';
    await module.signer({ tokenLabel: TOKEN, pin: PIN, keyLabel: label, generate: true });
    tokenAdmin().swapPrivateKey(label);
    await setupFails(() => module.signer({ tokenLabel: TOKEN, pin: PIN, keyLabel: label }), /is not the pair of the public key labelled so/);
  });

  it('a start whose self-test signature the token refuses (a key without CKA_SIGN) is refused with ERR_AUDIT_SIGNER_CONFIG, the token\'s reason kept', async () => {
    const label = 'cannot-sign';
    tokenAdmin().replaceKey(label, false);
    await setupFails(() => module.signer({ tokenLabel: TOKEN, pin: PIN, keyLabel: label }), /the private key labelled "cannot-sign" cannot sign \(the start's self-test\): .*CKR_KEY_FUNCTION_NOT_PERMITTED/);
  });

  it('a failure that is not a lost session (the private key deleted under a live session) is not retried', async () => {
    const label = 'deleted-key';
    const signer = await module.signer({ tokenLabel: TOKEN, pin: PIN, keyLabel: label, generate: true });
    await signer.sign(Buffer.from('before the delete'));
    const admin = tokenAdmin();
    admin.destroy(label, admin.lib.CKO_PRIVATE_KEY);
    // The error is the token's own answer to the signature: a retry would have reopened the
    // session and failed there instead (no key labelled deleted-key), with that as the cause.
    await assert.rejects(signer.sign(Buffer.from('after the delete')), (e: unknown) => {
      const code = (e as { cause?: { code?: unknown } }).cause?.code;
      return isPavilionError(e, ErrorCodes.AUDIT_SIGNER_FAILED) && !/reopen/.test(e.message)
        && (code === admin.lib.CKR_OBJECT_HANDLE_INVALID || code === admin.lib.CKR_KEY_HANDLE_INVALID);
    });
    assert.equal(signer.reconnects, 0);
  });

  it('a reopen that fails for another reason (the key gone with the session) is not tried again for 5 s: the next call fails at once, naming the wait', async () => {
    const label = 'gone-key';
    const signer = await module.signer({ tokenLabel: TOKEN, pin: PIN, keyLabel: label, generate: true });
    const admin = tokenAdmin();
    admin.destroy(label);
    admin.closeAllSessions();
    await assert.rejects(signer.sign(Buffer.from('after the HSM lost the key')), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_SIGNER_FAILED) && /could not be reopened/.test(e.message));
    await assert.rejects(signer.sign(Buffer.from('right after')), (e: unknown) => isPavilionError(e, ErrorCodes.AUDIT_SIGNER_FAILED) && /last reopen failed \d+ ms ago; the next attempt is in \d+ ms/.test(e.message));
    assert.equal(signer.reconnects, 0);
  });
});

describe('PKCS#11 login: a PIN with its tries running out is never spent by a start', () => {
  // SoftHSM2 reports CKF_USER_PIN_COUNT_LOW after a wrong PIN but never FINAL_TRY or LOCKED
  // (tried), so the token here is a stand-in for the few PKCS#11 calls a login makes: what a
  // hardware token that counts tries reports, per PKCS#11 (CK_TOKEN_INFO flags).
  function tokenReporting(flags: number): { module: Pkcs11Module; logins: () => number } {
    const lib = createRequire(import.meta.url)('pkcs11js') as typeof Pkcs11Types;
    let logins = 0;
    const p11 = {
      C_GetSlotList: () => [Buffer.from('slot')],
      C_GetTokenInfo: () => ({ label: 'hsm'.padEnd(32), flags }),
      C_OpenSession: () => Buffer.from('session'),
      C_CloseSession: () => undefined,
      C_Login: () => {
        logins++;
        throw Object.assign(new Error('CKR_PIN_INCORRECT'), { code: lib.CKR_PIN_INCORRECT });
      },
    };
    const construct = Pkcs11Module as unknown as new (l: typeof Pkcs11Types, p: unknown) => Pkcs11Module;
    return { module: Reflect.construct(construct, [lib, p11]), logins: () => logins };
  }

  it('a locked PIN, or one with a single try left, is refused with ERR_AUDIT_SIGNER_CONFIG before any login; otherwise the login is tried', async () => {
    const lib = createRequire(import.meta.url)('pkcs11js') as typeof Pkcs11Types;
    const cases: Array<[number, RegExp | undefined]> = [
      [lib.CKF_USER_PIN_LOCKED, /user PIN of token hsm is locked/],
      [lib.CKF_USER_PIN_FINAL_TRY | lib.CKF_USER_PIN_COUNT_LOW, /one try left, which is not spent automatically/],
      [lib.CKF_USER_PIN_COUNT_LOW, undefined],
      [0, undefined],
    ];
    for (const [flags, refusal] of cases) {
      const token = tokenReporting(flags);
      await assert.rejects(token.module.signer({ tokenLabel: 'hsm', pin: '000000', keyLabel: 'k' }), (e: unknown) =>
        isPavilionError(e, ErrorCodes.AUDIT_SIGNER_CONFIG) && (refusal === undefined ? /login to token hsm failed/ : refusal).test(e.message));
      assert.equal(token.logins(), refusal === undefined ? 1 : 0, `flags ${flags}`);
    }
  });
});
