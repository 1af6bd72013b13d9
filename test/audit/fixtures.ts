/** Shared pieces of the audit log tests: events, logs in temp directories, file surgery. */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AuditLogSink, type AuditLogSettings, type AuditLogSinkOptions, type DecisionEventV1, type RotationStep } from '../../sidecar/src/audit/index.ts';
import {
  AuditLog,
  FILE_HEADER_BYTES,
  FrameDecoder,
  Keyring,
  SoftwareSigner,
  WAL_FILE,
  encodeFrame,
  checkpointMessage,
  type AuditLogOptions,
  type CheckpointSigner,
  type SignedCheckpointV1,
  type RecordType,
} from '../../sidecar/src/audit/log/index.ts';
import { tempDir as makeTempDir } from '../harness/temp-dir.ts';

export function decisionEvent(n: number, extra: Partial<DecisionEventV1> = {}): DecisionEventV1 {
  return {
    labels: { id: 'pavilion-test', version: '0.1.0' },
    decision_id: `decision-${String(n).padStart(6, '0')}`,
    tenant: 'bank',
    bundles: { bank: { revision: 'rev-1' } },
    path: 'bank/authz/allow',
    input: { subject: { id: `cust-${n}` }, action: 'accounts.read', n },
    result: n % 3 !== 0,
    requested_by: '127.0.0.1:5000',
    timestamp: '2026-11-28T12:00:00.000Z',
    metrics: { timer_rego_query_eval_ns: 1000 },
    req_id: n,
    ...extra,
  };
}

/** `checkpoint` signed again by `signer` over another root at the same tree size: a fork. */
export async function forkOf(checkpoint: SignedCheckpointV1, rootHash: string, signer: CheckpointSigner): Promise<SignedCheckpointV1> {
  const body = { origin: checkpoint.origin, tree_size: checkpoint.tree_size, root_hash: rootHash, timestamp: checkpoint.timestamp, key_id: checkpoint.key_id };
  return { ...checkpoint, root_hash: rootHash, signature: (await signer.sign(checkpointMessage(body))).toString('base64') };
}

/** A keyring trusting the public keys of `signers` (what a verifier would be given). */
export function ringOf(...signers: ReadonlyArray<{ readonly publicKeySpki: Uint8Array }>): Keyring {
  const ring = new Keyring();
  for (const signer of signers) ring.add(signer.publicKeySpki);
  return ring;
}

/** A temporary directory, removed when the test process exits. */
export async function tempDir(prefix = 'pavilion-audit-'): Promise<string> {
  return makeTempDir(prefix);
}

export function logOptions(directory: string, signer: CheckpointSigner, overrides: Partial<AuditLogOptions> = {}): AuditLogOptions {
  return {
    directory,
    origin: 'pavilion-test/bank',
    signer,
    fsync: 'always',
    fsyncIntervalMs: 100,
    groupCommitMaxDelayMs: 0,
    groupCommitMaxBytes: 1024 * 1024,
    maxDiskBytes: 1024 * 1024 * 1024,
    onFull: 'refuse',
    blockTimeoutMs: 1000,
    maxEventBytes: 1024 * 1024,
    checkpointEveryEvents: 1000,
    checkpointIntervalMs: 60_000,
    clock: () => Date.parse('2026-11-28T12:00:00.000Z'),
    ...overrides,
  };
}

export async function openLog(directory: string, signer: CheckpointSigner = SoftwareSigner.generate(), overrides: Partial<AuditLogOptions> = {}): Promise<AuditLog> {
  const log = new AuditLog(logOptions(directory, signer, overrides));
  await log.start();
  return log;
}

/** `count` events numbered from `from` (decision ids are unique: JetStream deduplicates by id stream-wide). */
export function decisionEvents(from: number, count: number): DecisionEventV1[] {
  return Array.from({ length: count }, (_, i) => decisionEvent(from + i));
}

/** Append `count` events (`event(n)` for n from 0) to `log`, `inFlight` at a time, as concurrent decisions would. */
export async function appendMany(log: AuditLog, count: number, event: (n: number) => DecisionEventV1, inFlight = 100): Promise<void> {
  for (let n = 0; n < count; n += inFlight) {
    await Promise.all(Array.from({ length: Math.min(inFlight, count - n) }, (_, i) => log.append(event(n + i))));
  }
}

/** A started log (fsync 'never') holding `events`; its stop goes into `cleanup`. */
export async function logHolding(events: readonly DecisionEventV1[], cleanup: Array<() => Promise<unknown>>): Promise<AuditLog> {
  const log = await openLog(await tempDir(), SoftwareSigner.generate(), { fsync: 'never' });
  cleanup.push(() => log.stop(2000));
  for (const event of events) await log.append(event);
  return log;
}

export interface FileRecord {
  type: RecordType;
  index: number;
  payload: Buffer;
  offset: number;
}

/** Decode a log file into its header and records (the file must be intact). */
export async function readRecords(directory: string): Promise<{ header: Buffer; records: FileRecord[] }> {
  const bytes = await readFile(join(directory, WAL_FILE));
  const decoder = new FrameDecoder(FILE_HEADER_BYTES);
  const records = decoder.push(bytes.subarray(FILE_HEADER_BYTES)).map((r) => ({ type: r.type, index: r.index, payload: r.payload, offset: r.offset }));
  if (decoder.finish() !== undefined) throw new Error('fixture: the log file is damaged');
  return { header: Buffer.from(bytes.subarray(0, FILE_HEADER_BYTES)), records };
}

/** Write records back, with correct framing (an attacker who fixes the CRCs). */
export async function writeRecords(directory: string, header: Buffer, records: readonly FileRecord[]): Promise<void> {
  await writeFile(join(directory, WAL_FILE), Buffer.concat([header, ...records.map((r) => encodeFrame(r.type, r.index, r.payload))]));
}

export function walPath(directory: string): string {
  return join(directory, WAL_FILE);
}

/** Where a rotating sink over `directory` archives a tenant's sealed epochs, and keeps its live one. */
export const archiveOf = (directory: string, tenant = 'bank'): string => join(directory, 'archive', tenant);
export const liveOf = (directory: string, tenant = 'bank'): string => join(directory, 'tenants', tenant);

/** Rotation tests: one decision event here is about 350 bytes on disk, so about 11 per epoch. */
export const ROTATE_AT_BYTES = 4 * 1024;

/** A sink over `directory` rotating every ROTATE_AT_BYTES (16 KiB disk budget), signing with `signer`. */
export function rotatingSink(
  directory: string,
  signer: CheckpointSigner,
  settings: Partial<AuditLogSettings> = {},
  onRotationStep?: (step: RotationStep, tenant: string) => Promise<void> | void,
  hooks: Pick<AuditLogSinkOptions, 'onPruneMarked' | 'anchor'> = {},
): AuditLogSink {
  const { directory: _directory, origin: _origin, signer: _signer, ...defaults } = logOptions(directory, signer);
  return new AuditLogSink({
    directory,
    originPrefix: 'pavilion-test',
    settings: { ...defaults, maxDiskBytes: 16 * 1024, maxEventBytes: 4096, rotateAtBytes: ROTATE_AT_BYTES, ...settings },
    createSigner: () => Promise.resolve(signer),
    ...(onRotationStep === undefined ? {} : { onRotationStep }),
    ...hooks,
  });
}

/** The sink's status per tenant (what health shows of each tenant's log). */
export function sinkTenants(sink: AuditLogSink): Record<string, { details: Record<string, unknown> }> {
  return (sink.status().details as { tenants: Record<string, { details: Record<string, unknown> }> }).tenants;
}
