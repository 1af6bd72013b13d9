/**
 * The offline JSON-LD document loader handed to the Data Integrity verifier. It answers from
 * exactly two places - the pinned contexts and the DID resolver (itself offline) - and refuses
 * every other URL with `ERR_CREDENTIAL_DOCUMENT_REFUSED`. No request ever leaves the process,
 * whatever URL a credential names (SSRF-safe by construction: there is no fetch to misuse).
 */
import { ErrorCodes, PavilionError } from '../lib/errors.ts';
import type { DidResolver } from './did-resolver.ts';
import type { JsonObject } from './json.ts';

export interface LoadedDocument {
  readonly contextUrl: null;
  readonly documentUrl: string;
  readonly document: JsonObject;
}

export type DocumentLoader = (url: string) => Promise<LoadedDocument>;

export interface DocumentLoaderOptions {
  readonly contexts: ReadonlyMap<string, JsonObject>;
  readonly dids: DidResolver;
}

const MAX_URL_LENGTH = 4096;

export function createDocumentLoader(options: DocumentLoaderOptions): DocumentLoader {
  const { contexts, dids } = options;
  return async (url: string): Promise<LoadedDocument> => {
    if (typeof url !== 'string' || url.length > MAX_URL_LENGTH) {
      throw new PavilionError(ErrorCodes.CREDENTIAL_DOCUMENT_REFUSED, 'document URL refused: not a string or too long');
    }
    const context = contexts.get(url);
    if (context !== undefined) return { contextUrl: null, documentUrl: url, document: context };
    if (url.startsWith('did:')) {
      const hash = url.indexOf('#');
      if (hash < 0) {
        const resolved = await dids.resolve(url);
        return { contextUrl: null, documentUrl: url, document: resolved.document };
      }
      const method = await dids.verificationMethod(url);
      return {
        contextUrl: null,
        documentUrl: url,
        document: {
          '@context': 'https://w3id.org/security/multikey/v1',
          id: method.id,
          type: 'Multikey',
          controller: method.controller,
          publicKeyMultibase: method.publicKeyMultibase,
        },
      };
    }
    throw new PavilionError(ErrorCodes.CREDENTIAL_DOCUMENT_REFUSED, `document ${url.slice(0, 200)} is neither a pinned context nor a resolvable DID; it was not fetched`, {
      details: { url: url.slice(0, 200) },
    });
  };
}
