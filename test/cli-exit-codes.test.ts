/**
 * The CLI's exit codes as scripts gate on them (0 verified, 1 refused, 2 usage), and what a
 * proof or checkpoint file that holds the server's error body (saved by `curl -s`) reports.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { SoftwareSigner, publicKeyPem, type SignedCheckpointV1 } from '../sidecar/src/audit/index.ts';
import { toHttpError } from '../sidecar/src/api/error-body.ts';
import { issueSampleCredential, presentSdJwtVc, sampleParties } from '../sidecar/src/credentials/samples.ts';
import { ErrorCodes, PavilionError, type ErrorCode } from '../sidecar/src/lib/errors.ts';
import { decisionEvent, openLog, tempDir } from './audit/fixtures.ts';

const CLI = join(import.meta.dirname, '..', 'sidecar', 'src', 'cli', 'main.ts');

interface Run {
  readonly status: number | null;
  readonly json: Record<string, unknown>;
  readonly stdout: string;
  readonly stderr: string;
}

function pavilion(...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', CLI, ...args], { encoding: 'utf8', timeout: 60_000 }, (error, stdout, stderr) => {
      let json: Record<string, unknown> = {};
      try {
        json = JSON.parse(stdout) as Record<string, unknown>;
      } catch {
        // usage errors print nothing on stdout
      }
      const status = error === null ? 0 : typeof error.code === 'number' ? error.code : null;
      resolve({ status, json, stdout, stderr });
    });
  });
}

const NOW = new Date('2026-06-01T12:00:00Z');

describe('pavilion credential verify exits 1 when the credential is refused', () => {
  let dir: string;
  let presentation: string;
  let hospitalCredential: string;

  before(async () => {
    dir = await tempDir('pavilion-cli-credential-');
    const credential = await issueSampleCredential('bank', { format: 'sd-jwt', issuedAt: NOW, validDays: 365 });
    assert.equal(typeof credential, 'string');
    const { holder } = await sampleParties('bank');
    presentation = join(dir, 'presentation.txt');
    await writeFile(presentation, await presentSdJwtVc(credential as string, ['kycLevel'], holder, { nonce: 'challenge-1', aud: 'https://bank.example', iatSeconds: NOW.getTime() / 1000 }));
    hospitalCredential = join(dir, 'hospital.json');
    await writeFile(hospitalCredential, JSON.stringify(await issueSampleCredential('hospital', { format: 'di', issuedAt: NOW, validDays: 30 })));
  });

  test('a wrong challenge: the JSON names ERR_CREDENTIAL_CHALLENGE_MISMATCH and the exit code is 1; the right one exits 0', async () => {
    const common = ['credential', 'verify', '--tenant', 'bank', '--credential', presentation, '--domain', 'https://bank.example', '--now', NOW.toISOString()];
    const [wrong, right] = await Promise.all([pavilion(...common, '--challenge', 'not-the-challenge'), pavilion(...common, '--challenge', 'challenge-1')]);
    assert.equal(wrong.status, 1, wrong.stderr);
    assert.deepEqual(wrong.json['credentials'], []);
    assert.equal((wrong.json['errors'] as Array<{ code: string }>)[0]?.code, ErrorCodes.CREDENTIAL_CHALLENGE_MISMATCH);
    assert.match(wrong.stderr, /verification FAILED \[ERR_CREDENTIAL_CHALLENGE_MISMATCH\]/);

    assert.equal(right.status, 0, right.stderr);
    assert.equal((right.json['credentials'] as unknown[]).length, 1);
    assert.deepEqual(right.json['errors'], []);
  });

  test('another tenant\'s credential is refused with exit 1; an unknown subcommand is a usage error (2)', async () => {
    const [untrusted, unknown] = await Promise.all([
      pavilion('credential', 'verify', '--tenant', 'bank', '--credential', hospitalCredential, '--now', NOW.toISOString()),
      pavilion('credential', 'frobnicate'),
    ]);
    assert.equal(untrusted.status, 1, untrusted.stderr);
    assert.equal((untrusted.json['errors'] as Array<{ code: string }>)[0]?.code, ErrorCodes.CREDENTIAL_ISSUER_UNTRUSTED);
    assert.equal(unknown.status, 2, unknown.stderr);
    assert.match(unknown.stderr, /usage:/);
  });
});

describe('pavilion audit with a saved server error instead of a proof or checkpoint', () => {
  let dir: string;
  let keys: string;
  let log: string;
  let checkpoint: SignedCheckpointV1;
  let firstCheckpoint: SignedCheckpointV1;
  const notCheckpointed = 'decision "decision-000009" is leaf 9 of pavilion-test/bank, not yet covered by a signed checkpoint (the latest covers 8 leaves)';

  /** What the sidecar's proof endpoint answers for a decision not yet checkpointed (and curl -s saves). */
  async function savedErrorBody(name: string, code: ErrorCode = ErrorCodes.AUDIT_NOT_CHECKPOINTED, message = notCheckpointed): Promise<string> {
    const file = join(dir, name);
    await writeFile(file, JSON.stringify(toHttpError(new PavilionError(code, message)).body));
    return file;
  }

  before(async () => {
    dir = await tempDir('pavilion-cli-audit-');
    const signer = SoftwareSigner.generate();
    keys = join(dir, 'trusted.pem');
    await writeFile(keys, publicKeyPem(signer.publicKeySpki));
    log = join(dir, 'bank');
    const audit = await openLog(log, signer, { checkpointEveryEvents: 4 });
    for (let i = 0; i < 8; i++) await audit.append(decisionEvent(i));
    await audit.stop(5000);
    checkpoint = audit.latestCheckpoint!;
    firstCheckpoint = audit.checkpoints[0]!;
  });

  test('verify --proof <error body>: the server\'s code and message, not "version must be 1", exit 1', async () => {
    const body = await savedErrorBody('proof.json');
    const run = await pavilion('audit', 'verify', '--decision', 'decision-000009', '--proof', body, '--keys', keys);
    assert.equal(run.status, 1, run.stderr);
    assert.equal(run.json['ok'], false);
    assert.equal(run.json['code'], ErrorCodes.AUDIT_NOT_CHECKPOINTED);
    assert.equal(run.json['message'], `the proof file holds the server's error ERR_AUDIT_NOT_CHECKPOINTED: ${notCheckpointed} (fetch the proof again after the next checkpoint)`);
    assert.doesNotMatch(run.stdout + run.stderr, /version must be 1/);
    assert.match(run.stderr, /verification FAILED \[ERR_AUDIT_NOT_CHECKPOINTED\] the proof file holds the server's error/);
    const position = run.json['position'] as Record<string, unknown>;
    assert.equal(position['serverCode'], ErrorCodes.AUDIT_NOT_CHECKPOINTED);
    assert.equal(position['file'], body);
  });

  test('an OPA-style body without a Pavilion code, a consistency proof and checkpoints that hold errors fail the same way', async () => {
    const opa = join(dir, 'opa.json');
    await writeFile(opa, JSON.stringify({ code: 'internal_error', message: 'storage unavailable', errors: [{ code: 'internal_error', message: 'storage unavailable' }] }));
    const checkpointError = await savedErrorBody('checkpoint.json', ErrorCodes.AUDIT_LOG_DISABLED, "the verifiable audit log is not configured (decisionLog.sink 'audit')");
    const [bare, consistency, trusted, from] = await Promise.all([
      pavilion('audit', 'verify', '--decision', 'decision-000001', '--proof', opa, '--keys', keys),
      pavilion('audit', 'verify-consistency', '--proof', await savedErrorBody('consistency.json', ErrorCodes.AUDIT_RANGE_INVALID, 'from must be <= to'), '--keys', keys),
      pavilion('audit', 'verify-log', '--log', log, '--keys', keys, '--origin', 'pavilion-test/bank', '--trusted-checkpoint', checkpointError),
      pavilion('audit', 'prove-consistency', '--from', checkpointError, '--log', log),
    ]);
    assert.equal(bare.status, 1, bare.stderr);
    assert.equal(bare.json['code'], ErrorCodes.AUDIT_PROOF_INVALID, 'an unknown server code is reported as an invalid proof');
    assert.match(String(bare.json['message']), /^the proof file holds the server's error internal_error: storage unavailable/);
    assert.equal((bare.json['position'] as Record<string, unknown>)['serverCode'], 'internal_error');

    assert.equal(consistency.status, 1, consistency.stderr);
    assert.equal(consistency.json['code'], ErrorCodes.AUDIT_RANGE_INVALID);
    assert.match(String(consistency.json['message']), /the proof file holds the server's error ERR_AUDIT_RANGE_INVALID: from must be <= to/);

    assert.equal(trusted.status, 1, trusted.stderr);
    assert.equal(trusted.json['code'], ErrorCodes.AUDIT_LOG_DISABLED);
    assert.match(String(trusted.json['message']), /the checkpoint file holds the server's error ERR_AUDIT_LOG_DISABLED/);

    assert.equal(from.status, 1, from.stderr);
    assert.match(from.stderr, /\[ERR_AUDIT_LOG_DISABLED\] the checkpoint file holds the server's error/);
  });

  test('an option mistyped (--key for --keys) is a usage error (2, usage on stderr, nothing on stdout); keys or a proof file that cannot be read are refusals (1) with the JSON report naming the file', async () => {
    const notAKey = join(dir, 'not-a-key.pem');
    await writeFile(notAKey, '-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n');
    const [mistyped, noKeys, badPem, noProof] = await Promise.all([
      pavilion('audit', 'verify-log', '--log', log, '--key', keys),
      pavilion('audit', 'verify-log', '--log', log, '--keys', join(dir, 'no-such-keys')),
      pavilion('audit', 'verify-log', '--log', log, '--keys', notAKey),
      pavilion('audit', 'verify', '--decision', 'decision-000001', '--proof', join(dir, 'no-such-proof.json'), '--keys', keys),
    ]);
    assert.equal(mistyped.status, 2, mistyped.stderr);
    assert.match(mistyped.stderr, /^usage error: Unknown option '--key'/);
    assert.match(mistyped.stderr, /pavilion audit verify-log --log/);
    assert.equal(mistyped.stdout, '');

    assert.equal(noKeys.status, 1, noKeys.stderr);
    assert.equal(noKeys.json['ok'], false);
    assert.equal(noKeys.json['code'], ErrorCodes.AUDIT_SIGNER_CONFIG);
    assert.match(String(noKeys.json['message']), /cannot read public keys at .*no-such-keys/);

    assert.equal(badPem.status, 1, badPem.stderr);
    assert.equal(badPem.json['code'], ErrorCodes.AUDIT_SIGNER_CONFIG);
    assert.match(String(badPem.json['message']), /cannot use the public key in .*not-a-key\.pem/);

    assert.equal(noProof.status, 1, noProof.stderr);
    assert.equal(noProof.json['code'], ErrorCodes.AUDIT_PROOF_INVALID);
    assert.match(String(noProof.json['message']), /cannot read the proof file .*no-such-proof\.json: .*ENOENT/);
    assert.equal((noProof.json['position'] as Record<string, unknown>)['reason'], 'unreadable');
  });

  test('verify-consistency --from <kept checkpoint>: a proof from another checkpoint exits 1 (ERR_AUDIT_ROOT_MISMATCH); without --from it passes with a note to compare by hand', async () => {
    const kept = join(dir, 'kept-checkpoint.json');
    const other = join(dir, 'other-checkpoint.json');
    assert.equal(firstCheckpoint.tree_size, 4);
    await writeFile(kept, JSON.stringify(checkpoint));
    await writeFile(other, JSON.stringify(firstCheckpoint));
    const proved = await pavilion('audit', 'prove-consistency', '--from', other, '--log', log);
    assert.equal(proved.status, 0, proved.stderr);
    const proof = join(dir, 'consistency-from-4.json');
    await writeFile(proof, proved.stdout);
    const [unpinned, mismatched, matched] = await Promise.all([
      pavilion('audit', 'verify-consistency', '--proof', proof, '--keys', keys),
      pavilion('audit', 'verify-consistency', '--proof', proof, '--keys', keys, '--from', kept),
      pavilion('audit', 'verify-consistency', '--proof', proof, '--keys', keys, '--from', other, '--origin', 'pavilion-test/bank'),
    ]);
    assert.equal(unpinned.status, 0, unpinned.stderr);
    assert.match(unpinned.stderr, /no --from given: the proof's older checkpoint \(tree size 4\) was accepted/);
    assert.equal(mismatched.status, 1, mismatched.stderr);
    assert.equal(mismatched.json['code'], ErrorCodes.AUDIT_ROOT_MISMATCH);
    assert.equal(matched.status, 0, matched.stderr);
  });

  test('real proofs and checkpoints still verify, also as the HTTP endpoints answer them ({"result": ...})', async () => {
    const proved = await pavilion('audit', 'prove', '--log', log, '--decision', 'decision-000005');
    assert.equal(proved.status, 0, proved.stderr);
    const proof = join(dir, 'real-proof.json');
    await writeFile(proof, JSON.stringify({ result: proved.json }));
    const wrapped = join(dir, 'real-checkpoint.json');
    await writeFile(wrapped, JSON.stringify({ result: checkpoint }));
    const [verified, trusted] = await Promise.all([
      pavilion('audit', 'verify', '--decision', 'decision-000005', '--proof', proof, '--keys', keys),
      pavilion('audit', 'verify-log', '--log', log, '--keys', keys, '--origin', 'pavilion-test/bank', '--trusted-checkpoint', wrapped),
    ]);
    assert.equal(verified.status, 0, verified.stderr);
    assert.equal(verified.json['ok'], true);
    assert.equal(trusted.status, 0, trusted.stderr);
    assert.equal(trusted.json['ok'], true);
  });
});
