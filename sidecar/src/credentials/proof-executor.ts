/**
 * Where the CPU-heavy proof work runs: Data Integrity verification (JSON-LD expansion and RDF
 * canonicalization, milliseconds) and accumulator membership (a multi-pairing, tens of
 * milliseconds). The verifier hands these pure jobs to a `ProofExecutor`; the inline one runs
 * them on the calling thread (tests, the CLI), `WorkerProofExecutor` on worker threads so the
 * event loop keeps serving requests. Everything stateful (caches, nonces, status, trust) stays
 * with the verifier on the main thread; a job carries all it needs.
 */
import { ErrorCodes, PavilionError } from '../lib/errors.ts';
import { prepareAccumulatorKey, verifyMembership, type PreparedAccumulatorKey } from './bls-accumulator.ts';
import { DidResolver, type PinnedDidDocument } from './did-resolver.ts';
import { createDocumentLoader, type DocumentLoader } from './document-loader.ts';
import type { JsonObject } from './json.ts';
import { pinContexts, type TenantContext } from './pinned-contexts.ts';

/** What a tenant's proofs are checked against: its pinned contexts and did:web documents. */
export interface TenantProofMaterial {
  readonly tenantId: string;
  readonly contexts: readonly TenantContext[];
  readonly didWeb: readonly PinnedDidDocument[];
}

export interface ProofTime {
  readonly nowMs: number;
  readonly clockSkewMs: number;
}

export interface ProofExecutor {
  /** Register (or replace) a tenant's material before its jobs arrive. */
  addTenant(material: TenantProofMaterial): Promise<void>;
  verifyCredentialProof(tenantId: string, credential: JsonObject, time: ProofTime): Promise<{ proofType: string }>;
  verifyPresentationProof(tenantId: string, presentation: JsonObject, time: ProofTime & { challenge: string; domain: string }): Promise<{ proofType: string; holderKey: string }>;
  /** Accumulator membership (see bls-accumulator.ts); element as a bigint. */
  /** `tenantId`: whose check it is (a worker executor queues jobs by tenant). */
  verifyMembership(value: Uint8Array, publicKey: Uint8Array, element: bigint, witness: Uint8Array, tenantId?: string): Promise<boolean>;
  close(): Promise<void>;
}

let dataIntegrityModule: Promise<typeof import('./data-integrity.ts')> | undefined;

/**
 * The Data Integrity stack (jsonld, the cryptosuites) is tens of megabytes: loaded on the
 * first proof, not when the module is imported (the sidecar's proofs run on workers). The
 * promise is kept: an `import()` per proof is a module-resolution round (through the loader
 * hooks' own thread when running from TypeScript sources) that cost a third of a millisecond
 * per verification.
 */
export function dataIntegrity(): Promise<typeof import('./data-integrity.ts')> {
  dataIntegrityModule ??= import('./data-integrity.ts').catch((error: unknown) => {
    dataIntegrityModule = undefined; // a passing failure (file descriptors, memory) is retried
    throw error;
  });
  return dataIntegrityModule;
}

/** Runs every job on the calling thread. */
export class InlineProofExecutor implements ProofExecutor {
  readonly #loaders = new Map<string, DocumentLoader>();
  readonly #keys = new Map<string, PreparedAccumulatorKey>();

  async addTenant(material: TenantProofMaterial): Promise<void> {
    this.#loaders.set(material.tenantId, createDocumentLoader({ contexts: pinContexts(material.contexts), dids: new DidResolver(material.didWeb) }));
  }

  #loader(tenantId: string): DocumentLoader {
    const loader = this.#loaders.get(tenantId);
    if (loader === undefined) throw new PavilionError(ErrorCodes.CREDENTIAL_TENANT_UNKNOWN, `no proof material for tenant ${tenantId.slice(0, 64)}`);
    return loader;
  }

  async verifyCredentialProof(tenantId: string, credential: JsonObject, time: ProofTime): Promise<{ proofType: string }> {
    return (await dataIntegrity()).verifyDataIntegrityCredential(credential, { documentLoader: this.#loader(tenantId), ...time });
  }

  async verifyPresentationProof(tenantId: string, presentation: JsonObject, check: ProofTime & { challenge: string; domain: string }): Promise<{ proofType: string; holderKey: string }> {
    return (await dataIntegrity()).verifyDataIntegrityPresentation(presentation, { documentLoader: this.#loader(tenantId), ...check });
  }

  async verifyMembership(value: Uint8Array, publicKey: Uint8Array, element: bigint, witness: Uint8Array): Promise<boolean> {
    const id = Buffer.from(publicKey).toString('hex');
    let key = this.#keys.get(id);
    if (key === undefined) {
      key = prepareAccumulatorKey(publicKey);
      if (this.#keys.size < 1024) this.#keys.set(id, key);
    }
    return verifyMembership(value, key, element, witness);
  }

  async close(): Promise<void> {
    this.#loaders.clear();
    this.#keys.clear();
  }
}
