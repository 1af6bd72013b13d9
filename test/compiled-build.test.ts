/**
 * The compiled build, as `npm start` runs it (`tsc -p tsconfig.build.json`, then plain node on
 * the JavaScript). Every other test runs the TypeScript sources through tsx, where each worker
 * thread is started from its `*-entry.mjs` file; the compiled build starts each from its own
 * compiled file instead, a path no other test takes. One sidecar process of the compiled build
 * goes through all five:
 *
 * - the evaluation worker: a Data API decision;
 * - the credential proof worker: a Data Integrity credential accepted, and the same credential
 *   edited refused with ERR_CREDENTIAL_SIGNATURE_INVALID;
 * - the audit log's scanning thread: the sidecar starts on a log of at least
 *   SCAN_ON_THREAD_MIN_BYTES (written here beforehand), and its next decision's receipt
 *   continues right after the last leaf of it (a failed scan refuses the tenant instead);
 * - the PKCS#11 signer's thread: checkpoints signed by a key generated on a SoftHSM2 token;
 * - the thread a whole-file pass over a sealed epoch runs on: the live log, past
 *   `rotateAtBytes`, is sealed after the decision, whose proof then comes from the archived
 *   epoch's file and verifies offline with the published key; once the next epoch is sealed
 *   too, retention (`keepArchivedEpochs: 1`) verifies the first on that thread and prunes it.
 *
 * Then SIGTERM stops it with exit code 0. Needs opa (the sample bundles) and SoftHSM2
 * (scripts/install-softhsm.sh), as scripts/test.sh provides.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { AuditLogSink, Keyring, SoftwareSigner, verifyDecisionProof, type DecisionProofV1 } from '../sidecar/src/audit/index.ts';
import { SCAN_ON_THREAD_MIN_BYTES } from '../sidecar/src/audit/log/log-scan.ts';
import { ErrorCodes } from '../sidecar/src/lib/errors.ts';
import { decisionEvent, logOptions, tempDir } from './audit/fixtures.ts';
import { get, post } from './harness/pavilion-harness.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SOFTHSM = ['/usr/lib/softhsm/libsofthsm2.so', '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so', '/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so'].find((p) => existsSync(p));
const TOKEN = 'pavilion-compiled-build';
const PIN = '135792';
const LABEL_ID = 'compiled-build';

/**
 * The build's output: a directory of the repository's own, at dist's depth, so that its imports
 * find node_modules and what it finds by relative path (the protos) as dist's do.
 */
let out: string;

before(async () => {
  out = await mkdtemp(join(ROOT, '.test-build-'));
  execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.build.json'), '--outDir', out], { cwd: ROOT, stdio: 'pipe' });
});

after(async () => {
  if (out !== undefined) await rm(out, { recursive: true, force: true });
});

/** Run the compiled CLI; its standard output. */
function cli(env: NodeJS.ProcessEnv, ...args: string[]): string {
  return execFileSync(process.execPath, [join(out, 'sidecar', 'src', 'cli', 'main.js'), ...args], { cwd: ROOT, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Start the compiled sidecar; resolves with its URL once it logs that it listens (rejects with its output if it exits first). */
function startCompiled(env: NodeJS.ProcessEnv): Promise<{ proc: ChildProcess; url: string; output: () => string }> {
  const proc = spawn(process.execPath, [join(out, 'sidecar', 'src', 'main.js')], { cwd: ROOT, env, stdio: ['ignore', 'ignore', 'pipe'] });
  let output = '';
  return new Promise((resolveStart, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL'); // not left running behind a failed test
      reject(new Error(`the compiled sidecar did not start: ${output}`));
    }, 120_000);
    proc.stderr?.setEncoding('utf8');
    proc.stderr?.on('data', (chunk: string) => {
      output += chunk;
      // whole lines only: a chunk may end inside one
      const line = output.split('\n').slice(0, -1).find((l) => l.includes('"pavilion listening"'));
      if (line === undefined) return;
      clearTimeout(timer);
      resolveStart({ proc, url: String((JSON.parse(line) as { url: string }).url), output: () => output });
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the compiled sidecar exited with ${String(code)}: ${output}`));
    });
  });
}

describe('the compiled build (npm start)', () => {
  it('starts every worker thread from its compiled file: evaluation, credential proofs, the audit log scan at start, PKCS#11 signing, proofs from sealed epochs and their verification before retention prunes them', async () => {
    assert.ok(SOFTHSM !== undefined, 'SoftHSM2 is not installed: run bash scripts/install-softhsm.sh');
    const dir = await tempDir('pavilion-compiled-');
    const auditDir = join(dir, 'audit');
    // A token of its own for the sidecar's checkpoint key (generated on it at start).
    await mkdir(join(dir, 'tokens'));
    const softhsmConf = join(dir, 'softhsm2.conf');
    await writeFile(softhsmConf, `directories.tokendir = ${join(dir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
    const { NODE_OPTIONS: _loader, ...inherited } = process.env; // plain node, as npm start runs it
    const env = { ...inherited, SOFTHSM2_CONF: softhsmConf, TEST_HSM_PIN: PIN };
    execFileSync('softhsm2-util', ['--init-token', '--free', '--label', TOKEN, '--pin', PIN, '--so-pin', '97531'], { env, stdio: 'pipe' });

    // bank's log, large enough to be scanned on a thread at start, signed by an earlier
    // (software) key whose public key the sink publishes beside it
    const earlierKey = SoftwareSigner.generate();
    const { directory: _d, origin: _o, signer: _s, clock: _c, ...settings } = logOptions(auditDir, earlierKey);
    const writer = new AuditLogSink({ directory: auditDir, originPrefix: LABEL_ID, settings: { ...settings, fsync: 'never', maxEventBytes: 8192 }, createSigner: async () => earlierKey });
    await writer.start();
    const padding = 'p'.repeat(2000);
    let logged = 0;
    const append = async (): Promise<void> => {
      for (;;) {
        const n = logged++;
        await writer.append(decisionEvent(n, { input: { n, padding } }));
        if ((await stat(join(auditDir, 'tenants', 'bank', 'audit.wal'))).size >= SCAN_ON_THREAD_MIN_BYTES + (1 << 20)) return;
      }
    };
    await Promise.all(Array.from({ length: 64 }, append));
    await writer.stop(10_000);
    const leaves = logged;

    const config = join(dir, 'pavilion.json');
    await writeFile(config, JSON.stringify({
      labels: { id: LABEL_ID },
      http: { host: '127.0.0.1', port: 0 },
      engine: { workers: 1 },
      bundles: { persistDirectory: join(dir, 'persisted'), watchIntervalMs: 0 },
      decisionLog: {
        sink: 'audit',
        audit: {
          directory: auditDir,
          checkpointEveryEvents: 1,
          rotateAtBytes: 65536,
          keepArchivedEpochs: 1,
          signer: { kind: 'pkcs11', modulePath: SOFTHSM, tokenLabel: TOKEN, keyLabel: 'checkpoint-key', pinEnv: 'TEST_HSM_PIN', generateKey: true },
        },
      },
    }));
    const sidecar = await startCompiled({ ...env, PAVILION_CONFIG: config });
    let exited: Promise<number | null> | undefined;
    try {
      const tenant = { 'x-pavilion-tenant': 'bank' };
      // evaluation worker, and the log recovered whole by the scanning thread
      const decision = await post(`${sidecar.url}/v1/data/bank/authz/allow?receipt=1`, { input: { subject: { id: 'c1' } } }, tenant);
      assert.equal(decision.status, 200, JSON.stringify(decision.body));
      const receipt = decision.body['receipt'] as { leaf_index: number };
      assert.equal(receipt.leaf_index, leaves, 'the decision is logged right after the recovered leaves');
      // credential proof worker: accepted, and refused once edited
      const credential = JSON.parse(cli(env, 'credential', 'issue', '--tenant', 'bank', '--format', 'di')) as Record<string, unknown>;
      const accepted = await post(`${sidecar.url}/v1/data/bank/credentials/decision`, { input: {}, credentials: [credential] }, tenant);
      assert.equal(accepted.status, 200, JSON.stringify(accepted.body));
      assert.equal((accepted.body['result'] as { kyc_verified: boolean }).kyc_verified, true, JSON.stringify(accepted.body));
      const forged = JSON.parse(JSON.stringify(credential).replace('"Alice"', '"Mallory"')) as Record<string, unknown>;
      assert.notDeepEqual(forged, credential);
      const refused = await post(`${sidecar.url}/v1/data/bank/credentials/decision`, { input: {}, credentials: [forged] }, tenant);
      assert.deepEqual((refused.body['result'] as { reasons: unknown[] }).reasons.at(-1), { credential: 0, refused: ErrorCodes.CREDENTIAL_SIGNATURE_INVALID }, JSON.stringify(refused.body));
      // the log is sealed into an archived epoch (it is past rotateAtBytes): the decision's proof
      // comes from that epoch's file, on a thread of its own, under the final checkpoint the
      // PKCS#11 signer's thread signed on the token
      const epochOf = async (): Promise<unknown> => {
        const health = await get(`${sidecar.url}/health?verbose`);
        const log = (health.body['components'] as Record<string, { details?: { tenants?: Record<string, { details?: { epoch?: number } }> } }>)['decision_log'];
        return log?.details?.tenants?.['bank']?.details?.epoch;
      };
      for (let tries = 0; (await epochOf()) !== 1 && tries < 200; tries++) await new Promise((r) => setTimeout(r, 50));
      assert.equal(await epochOf(), 1, 'the live epoch was sealed and the next one started');
      const id = String(decision.body['decision_id']);
      let proof: DecisionProofV1 | undefined;
      for (let tries = 0; proof === undefined && tries < 200; tries++) {
        const answer = await get(`${sidecar.url}/v1/tenants/bank/audit/decisions/${id}/proof`);
        if (answer.status === 200) proof = answer.body['result'] as DecisionProofV1;
        else await new Promise((r) => setTimeout(r, 50));
      }
      assert.ok(proof !== undefined, 'the decision was checkpointed');
      const keys = Keyring.load(join(auditDir, 'keys'));
      assert.equal(keys.ids().length, 2, 'the earlier key and the token key are published');
      assert.notEqual(proof.checkpoint.key_id, earlierKey.keyId, "signed with the token's key");
      assert.equal(verifyDecisionProof(proof, keys, { decisionId: id }).tenant, 'bank');
      // epoch 1 filled past rotateAtBytes: with one archived epoch kept, retention verifies epoch 0
      // (the 33 MiB log) on a thread of its own before it prunes it
      for (let n = 0; (await epochOf()) !== 2 && n < 400; n++) {
        const filler = await post(`${sidecar.url}/v1/data/bank/authz/allow`, { input: { subject: { id: `c${n}` }, padding } }, tenant);
        assert.equal(filler.status, 200, JSON.stringify(filler.body));
      }
      assert.equal(await epochOf(), 2, 'epoch 1 was sealed too');
      const archivedOf = async (): Promise<Array<{ epoch: number; pruned?: boolean }>> => {
        const health = await get(`${sidecar.url}/health?verbose`);
        const log = (health.body['components'] as Record<string, { details?: { tenants?: Record<string, { details?: { archived_epochs?: Array<{ epoch: number; pruned?: boolean }> } }> } }>)['decision_log'];
        return log?.details?.tenants?.['bank']?.details?.archived_epochs ?? [];
      };
      for (let tries = 0; (await archivedOf())[0]?.pruned !== true && tries < 400; tries++) await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual((await archivedOf()).map((a) => [a.epoch, a.pruned === true]), [[0, true], [1, false]], JSON.stringify(await get(`${sidecar.url}/health?verbose`)));
    } finally {
      exited = new Promise((r) => sidecar.proc.once('exit', (code) => r(code)));
      sidecar.proc.kill('SIGTERM');
    }
    assert.equal(await exited, 0, sidecar.output());
  });
});
