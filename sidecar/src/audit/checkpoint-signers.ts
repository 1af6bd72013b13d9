/**
 * The checkpoint signer a deployment configures: the embedded software key (default) or a
 * key on a PKCS#11 token. The PIN is read from the environment variable the config names,
 * never from the config file.
 */
import { ErrorCodes, PavilionError } from '../lib/errors.ts';
import type { AuditSignerConfig } from '../config/index.ts';
import { Pkcs11ThreadSigner, SoftwareSigner, type CheckpointSigner } from './log/index.ts';

/** The signer settings, as the config's decisionLog.audit.signer section defines them. */
export type CheckpointSignerSettings = AuditSignerConfig;

export async function createCheckpointSigner(settings: CheckpointSignerSettings, env: NodeJS.ProcessEnv = process.env): Promise<CheckpointSigner> {
  if (settings.kind === 'software') return SoftwareSigner.loadOrCreate(settings.keyFile);
  const pin = env[settings.pinEnv];
  if (pin === undefined || pin === '') {
    throw new PavilionError(ErrorCodes.AUDIT_SIGNER_CONFIG, `PKCS#11: the PIN variable ${settings.pinEnv} is not set`);
  }
  // every call into the token on a thread of its own: a token that hangs holds that thread, not decisions
  return Pkcs11ThreadSigner.open({
    modulePath: settings.modulePath,
    key: { tokenLabel: settings.tokenLabel, keyLabel: settings.keyLabel, pin, generate: settings.generateKey, allowImportedKey: settings.allowImportedKey },
    operationTimeoutMs: settings.operationTimeoutMs,
  });
}
