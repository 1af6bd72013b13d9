/**
 * Type shims for the Digital Bazaar verifiable-credential packages and the JSON-LD context
 * packages, which ship JavaScript only. Only the surface Pavilion calls is declared; every
 * value crossing the boundary is `unknown` or a narrow structural type, checked by the caller.
 */

declare module '@digitalbazaar/vc' {
  export type DocumentLoaderResult = { contextUrl: string | null; documentUrl: string; document: unknown };
  export type DocumentLoader = (url: string) => Promise<DocumentLoaderResult>;
  export interface VerifyResult {
    verified: boolean;
    results?: Array<{ verified: boolean; error?: unknown; proof?: unknown; purposeResult?: unknown }>;
    error?: unknown;
    statusResult?: unknown;
    presentationResult?: { verified: boolean; results?: Array<{ verified: boolean; error?: unknown }>; error?: unknown };
    credentialResults?: Array<{ verified: boolean; error?: unknown; credentialId?: string }>;
  }
  export function derive(options: {
    verifiableCredential: Record<string, unknown>;
    suite: unknown;
    documentLoader: DocumentLoader;
  }): Promise<Record<string, unknown>>;
  export function issue(options: {
    credential: Record<string, unknown>;
    suite: unknown;
    documentLoader: DocumentLoader;
    now?: Date | string;
    maxClockSkew?: number;
  }): Promise<Record<string, unknown>>;
  export function verifyCredential(options: {
    credential: unknown;
    suite: unknown;
    documentLoader: DocumentLoader;
    now?: Date | string;
    maxClockSkew?: number;
    checkStatus?: (options: unknown) => Promise<{ verified: boolean }>;
  }): Promise<VerifyResult>;
  export function createPresentation(options: {
    verifiableCredential?: unknown;
    id?: string;
    holder?: string;
    now?: Date | string;
    version?: number;
  }): Record<string, unknown>;
  export function signPresentation(options: {
    presentation: Record<string, unknown>;
    suite: unknown;
    documentLoader: DocumentLoader;
    challenge: string;
    domain?: string;
  }): Promise<Record<string, unknown>>;
  export function verify(options: {
    presentation: unknown;
    suite: unknown;
    documentLoader: DocumentLoader;
    challenge: string;
    domain?: string;
    now?: Date | string;
    maxClockSkew?: number;
    unsignedPresentation?: boolean;
    checkStatus?: (options: unknown) => Promise<{ verified: boolean }>;
  }): Promise<VerifyResult>;
}

declare module '@digitalbazaar/data-integrity' {
  export class DataIntegrityProof {
    constructor(options: { signer?: unknown; cryptosuite: unknown; date?: Date | string });
  }
}

declare module '@digitalbazaar/eddsa-rdfc-2022-cryptosuite' {
  export const cryptosuite: { name: string };
}

declare module '@digitalbazaar/ecdsa-rdfc-2019-cryptosuite' {
  export const cryptosuite: { name: string };
}

declare module '@digitalbazaar/ed25519-signature-2020' {
  export class Ed25519Signature2020 {
    constructor(options?: { key?: unknown; signer?: unknown; date?: Date | string });
  }
}

declare module '@digitalbazaar/ed25519-multikey' {
  export interface Ed25519MultikeyKeyPair {
    id?: string;
    controller?: string;
    publicKeyMultibase: string;
    signer(): { algorithm: string; id?: string; sign(options: { data: Uint8Array }): Promise<Uint8Array> };
    export(options: { publicKey?: boolean; secretKey?: boolean; includeContext?: boolean }): Promise<Record<string, unknown>>;
  }
  export function generate(options?: { id?: string; controller?: string; seed?: Uint8Array }): Promise<Ed25519MultikeyKeyPair>;
  export function from(key: unknown): Promise<Ed25519MultikeyKeyPair>;
  export function fromJwk(options: { jwk: unknown; secretKey?: boolean; id?: string; controller?: string }): Promise<Ed25519MultikeyKeyPair>;
  export function toJwk(options: { keyPair: unknown; secretKey?: boolean }): Promise<Record<string, string>>;
}

declare module '@digitalbazaar/ecdsa-multikey' {
  export interface EcdsaMultikeyKeyPair {
    id?: string;
    controller?: string;
    publicKeyMultibase: string;
    signer(): { algorithm: string; id?: string; sign(options: { data: Uint8Array }): Promise<Uint8Array> };
    export(options: { publicKey?: boolean; secretKey?: boolean; includeContext?: boolean }): Promise<Record<string, unknown>>;
  }
  export function from(key: unknown): Promise<EcdsaMultikeyKeyPair>;
  export function fromJwk(options: { jwk: unknown; secretKey?: boolean; id?: string; controller?: string }): Promise<EcdsaMultikeyKeyPair>;
  export function toJwk(options: { keyPair: unknown; secretKey?: boolean }): Promise<Record<string, string>>;
}

/** The context packages: each exports a `contexts` map from context URL to context document. */
declare module '@digitalbazaar/credentials-context' {
  export const contexts: Map<string, unknown>;
}
declare module '@digitalbazaar/vc-bitstring-status-list-context' {
  export const contexts: Map<string, unknown>;
}
declare module '@digitalbazaar/data-integrity-context' {
  const pkg: { contexts: Map<string, unknown> };
  export default pkg;
}
declare module '@digitalbazaar/multikey-context' {
  const pkg: { contexts: Map<string, unknown> };
  export default pkg;
}
declare module 'ed25519-signature-2020-context' {
  const pkg: { contexts: Map<string, unknown> };
  export default pkg;
}
declare module 'did-context' {
  const pkg: { contexts: Map<string, unknown> };
  export default pkg;
}

declare module '@digitalbazaar/bbs-2023-cryptosuite' {
  export function createVerifyCryptosuite(): { name: string };
  export function createSignCryptosuite(options?: { mandatoryPointers?: string[] }): { name: string };
  export function createDiscloseCryptosuite(options: { selectivePointers?: string[]; proofId?: string; presentationHeader?: Uint8Array }): { name: string };
}

declare module '@digitalbazaar/bls12-381-multikey' {
  export interface Bls12381MultikeyKeyPair {
    id?: string;
    controller?: string;
    publicKeyMultibase: string;
    signer(): { algorithm: string; id?: string; sign(options: { data: Uint8Array }): Promise<Uint8Array> };
  }
  export const ALGORITHMS: { BBS_BLS12381_SHA256: string; BBS_BLS12381_SHAKE256: string };
  export function generateBbsKeyPair(options: { id?: string; controller?: string; algorithm: string; seed?: Uint8Array }): Promise<Bls12381MultikeyKeyPair>;
  export function from(key: unknown): Promise<Bls12381MultikeyKeyPair>;
}
