/**
 * The JSON-LD contexts Pavilion knows without a network: the ones shipped in the pinned
 * `@digitalbazaar/*` and W3C CCG context packages (exact versions in package.json), plus
 * contexts a tenant adds, each pinned by the SHA-256 of its bytes. Nothing else is ever
 * loaded: an unknown context is a refused credential, not a fetch.
 */
import { contexts as credentialsContexts } from '@digitalbazaar/credentials-context';
import { contexts as statusListContexts } from '@digitalbazaar/vc-bitstring-status-list-context';
import dataIntegrityContext from '@digitalbazaar/data-integrity-context';
import multikeyContext from '@digitalbazaar/multikey-context';
import ed25519Signature2020Context from 'ed25519-signature-2020-context';
import didContext from 'did-context';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import { sha256Hex } from '../lib/sha256.ts';
import { isObject, type JsonObject } from './json.ts';

/** A context a tenant added: its URL, the SHA-256 (hex) of its bytes, and the bytes. */
export interface TenantContext {
  readonly url: string;
  readonly sha256Hex: string;
  readonly bytes: Uint8Array;
}

/** The built-in contexts, URL -> document (a fresh map; callers may not mutate the documents). */
export function builtInContexts(): Map<string, JsonObject> {
  const out = new Map<string, JsonObject>();
  const maps: ReadonlyArray<Map<string, unknown>> = [
    credentialsContexts,
    statusListContexts,
    dataIntegrityContext.contexts,
    multikeyContext.contexts,
    ed25519Signature2020Context.contexts,
    didContext.contexts,
  ];
  for (const map of maps) {
    for (const [url, document] of map) if (isObject(document)) out.set(url, document);
  }
  return out;
}

/**
 * Check tenant contexts against their pins and merge them over the built-ins. A tenant may not
 * replace a built-in context (that would let one tenant's config change what "VerifiableCredential"
 * means), and the URL must be https.
 */
export function pinContexts(tenantContexts: readonly TenantContext[]): ReadonlyMap<string, JsonObject> {
  const all = builtInContexts();
  for (const context of tenantContexts) {
    let url: URL;
    try {
      url = new URL(context.url);
    } catch (error) {
      throw new PavilionError(ErrorCodes.CONFIG_INVALID, `credential context ${context.url}: not a URL`, { cause: error });
    }
    if (url.protocol !== 'https:') throw new PavilionError(ErrorCodes.CONFIG_INVALID, `credential context ${context.url}: must be https`);
    if (all.has(context.url)) throw new PavilionError(ErrorCodes.CONFIG_INVALID, `credential context ${context.url}: replaces a built-in context`);
    const actual = sha256Hex(context.bytes);
    if (actual !== context.sha256Hex.toLowerCase()) {
      throw new PavilionError(ErrorCodes.CREDENTIAL_CONTEXT_HASH_MISMATCH, `credential context ${context.url}: SHA-256 ${actual} differs from the pinned ${context.sha256Hex}`, {
        details: { url: context.url, expected: context.sha256Hex, actual },
      });
    }
    let document: unknown;
    try {
      document = JSON.parse(Buffer.from(context.bytes).toString('utf8'));
    } catch (error) {
      throw new PavilionError(ErrorCodes.CONFIG_INVALID, `credential context ${context.url}: not JSON: ${describeThrown(error)}`, { cause: error });
    }
    if (!isObject(document) || !isObject(document['@context'])) {
      throw new PavilionError(ErrorCodes.CONFIG_INVALID, `credential context ${context.url}: must be an object with an @context object`);
    }
    all.set(context.url, document);
  }
  return all;
}
