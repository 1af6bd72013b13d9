/**
 * The anchor a deployment configures (`decisionLog.audit.anchor`): the local anchor file
 * (default), a PavilionAnchor contract on an EVM chain, or none. The EVM submitter key is
 * read here, from the file or the environment variable the config names. ethers is loaded only
 * for an EVM anchor.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AuditAnchorConfig } from '../../config/index.ts';
import { ErrorCodes, PavilionError, describeThrown } from '../../lib/errors.ts';
import type { Anchor } from '../log/index.ts';
import { FileAnchor } from './file-anchor.ts';

/** Where an EVM anchor records its transaction without a receipt yet, in the audit log's directory. */
export const EVM_PENDING_FILE = 'anchor-evm-pending.json';

/**
 * `stateDirectory` (the audit log's directory) holds an EVM anchor's EVM_PENDING_FILE; without
 * it a transaction stuck when the process stops is not known to the next one.
 */
export async function createAnchor(settings: AuditAnchorConfig, env: NodeJS.ProcessEnv = process.env, stateDirectory?: string): Promise<Anchor | undefined> {
  if (settings.kind === 'none') return undefined;
  if (settings.kind === 'file') {
    const anchor = new FileAnchor({ path: settings.path });
    // a torn last line shows in status from start; a file that cannot be read fails the
    // first anchor (reported in status) rather than the sidecar's start, as before
    await anchor.open().catch(() => undefined);
    return anchor;
  }
  const { EvmAnchor, parseEvmPrivateKey } = await import('./evm-anchor.ts');
  let privateKey: string;
  if (settings.privateKeyFile !== undefined) {
    let text: string;
    try {
      text = await readFile(settings.privateKeyFile, 'utf8');
    } catch (error) {
      throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_CONFIG, `cannot read the anchor key file ${settings.privateKeyFile}: ${describeThrown(error)}`, { cause: error });
    }
    privateKey = parseEvmPrivateKey(text, `the anchor key file ${settings.privateKeyFile}`);
  } else {
    const value = env[settings.privateKeyEnv];
    if (value === undefined || value === '') throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_CONFIG, `the anchor key variable ${settings.privateKeyEnv} is not set (and no privateKeyFile is configured)`);
    privateKey = parseEvmPrivateKey(value, `the variable ${settings.privateKeyEnv}`);
  }
  const { kind: _kind, privateKeyFile: _file, privateKeyEnv: _env, ...options } = settings;
  const anchor = new EvmAnchor({ ...options, privateKey, ...(stateDirectory === undefined ? {} : { pendingFile: join(stateDirectory, EVM_PENDING_FILE) }) });
  await anchor.open(); // a pending-transaction record it cannot take shows in status from start
  return anchor;
}
