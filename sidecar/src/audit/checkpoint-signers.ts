/**
 * The checkpoint signer a deployment configures: the embedded software key (default) or a
 * key on a PKCS#11 token. The PIN is read from the environment variable the config names,
 * never from the config file.
 */
import { ErrorCodes, PavilionError } from '../lib/errors.ts';
import type { AuditSignerConfig } from '../config/index.ts';
import { Pkcs11Module, SoftwareSigner, type CheckpointSigner } from './log/index.ts';

/** The signer settings, as the config's decisionLog.audit.signer section defines them. */
export type CheckpointSignerSettings = AuditSignerConfig;

export async function createCheckpointSigner(settings: CheckpointSignerSettings, env: NodeJS.ProcessEnv = process.env): Promise<CheckpointSigner> {
  if (settings.kind === 'software') return SoftwareSigner.loadOrCreate(settings.keyFile);
  const pin = env[settings.pinEnv];
  if (pin === undefined || pin === '') {
    throw new PavilionError(ErrorCodes.AUDIT_SIGNER_CONFIG, `PKCS#11: the PIN variable ${settings.pinEnv} is not set`);
  }
  const module = Pkcs11Module.open(settings.modulePath);
  try {
    const signer = await module.signer({ tokenLabel: settings.tokenLabel, keyLabel: settings.keyLabel, pin, generate: settings.generateKey, allowImportedKey: settings.allowImportedKey });
    return {
      keyId: signer.keyId,
      publicKeySpki: signer.publicKeySpki,
      sign: (message) => signer.sign(message),
      async close() {
        await signer.close();
        module.close();
      },
    };
  } catch (error) {
    module.close();
    throw error;
  }
}
