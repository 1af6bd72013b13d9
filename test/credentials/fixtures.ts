/**
 * Shared material for the credential tests: deterministic sample keys, a frozen clock, the sample
 * context pinned like a tenant would pin it, and builders for credentials and verifiers.
 */
import { CredentialVerifier, DidResolver, MIN_STATUS_LIST_BITS, createDocumentLoader, encodeStatusList, parseCredentialPolicy, pinContexts, type CredentialPolicy, type CredentialVerifierOptions, type DocumentLoader } from '../../sidecar/src/credentials/index.ts';
import { SAMPLE_CONTEXT_URL, issueDataIntegrity, sampleContext, sampleKey, type SampleKey } from '../../sidecar/src/credentials/samples.ts';
import * as vc from '@digitalbazaar/vc';
import { DataIntegrityProof } from '@digitalbazaar/data-integrity';
import { cryptosuite as eddsaRdfc2022 } from '@digitalbazaar/eddsa-rdfc-2022-cryptosuite';
import { cryptosuite as ecdsaRdfc2019 } from '@digitalbazaar/ecdsa-rdfc-2019-cryptosuite';

export const NOW_MS = Date.parse('2026-06-01T12:00:00Z');
export const DAY_MS = 24 * 60 * 60_000;
export const VC_V2 = 'https://www.w3.org/ns/credentials/v2';
export const VC_V1 = 'https://www.w3.org/2018/credentials/v1';
export const CHALLENGE = 'c-1f4e2d';
export const DOMAIN = 'https://bank.pavilion.example';

export interface Keys {
  readonly anchor: SampleKey;
  readonly issuer: SampleKey;
  readonly issuerP256: SampleKey;
  readonly rogue: SampleKey;
  readonly holder: SampleKey;
  readonly holderP256: SampleKey;
}

let keysPromise: Promise<Keys> | undefined;
export function keys(): Promise<Keys> {
  keysPromise ??= (async () => ({
    anchor: await sampleKey('test-anchor'),
    issuer: await sampleKey('test-issuer'),
    issuerP256: await sampleKey('test-issuer-p256', 'P-256'),
    rogue: await sampleKey('test-rogue'),
    holder: await sampleKey('test-holder'),
    holderP256: await sampleKey('test-holder-p256', 'P-256'),
  }))();
  return keysPromise;
}

/** The loader an issuer uses (the same pinned material a tenant verifies with). */
export function issuerLoader(): DocumentLoader {
  return createDocumentLoader({ contexts: pinContexts([sampleContext()]), dids: new DidResolver() });
}

const SAMPLE_PATH = 'samples-v1.jsonld';

/** A tenant policy from JSON, with the sample context pinned by its real hash. */
export function policy(raw: Record<string, unknown> = {}, tenantId = 'bank'): CredentialPolicy {
  const context = sampleContext();
  return parseCredentialPolicy(
    tenantId,
    { contexts: [{ url: context.url, sha256Hex: context.sha256Hex, path: SAMPLE_PATH }], ...raw },
    (path) => {
      if (path === SAMPLE_PATH) return context.bytes;
      throw new Error(`no file ${path}`);
    },
  );
}

export async function verifier(raw: Record<string, unknown> = {}, options: CredentialVerifierOptions = {}): Promise<CredentialVerifier> {
  return CredentialVerifier.create([policy(raw)], { clock: () => NOW_MS, ...options });
}

/** Anchors trusting `issuer` for KYC credentials. */
export function trusting(issuer: string, types: readonly string[] = ['KycCredential']): Record<string, unknown> {
  return { trustAnchors: [{ issuer, credentialTypes: types }] };
}

export function kycCredential(issuer: string, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    '@context': [VC_V2, SAMPLE_CONTEXT_URL],
    id: 'urn:uuid:6a1b7f0e-8c1d-4a57-9d3e-1f1a2b3c4d5e',
    type: ['VerifiableCredential', 'KycCredential'],
    issuer,
    validFrom: '2026-01-01T00:00:00Z',
    validUntil: '2036-01-01T00:00:00Z',
    credentialSubject: { id: 'did:example:alice', kycLevel: 'full', country: 'CH' },
    ...overrides,
  };
}

/**
 * A presentation signed by the holder for a verifier's challenge and domain, its proof `created`
 * at `createdMs` (default: the frozen test clock, as the verifier bounds a presentation's age).
 */
export async function presentDataIntegrity(
  credentials: readonly Record<string, unknown>[],
  holder: SampleKey,
  binding: { challenge: string; domain: string },
  documentLoader: DocumentLoader,
  holderId: string = holder.did,
  createdMs: number = NOW_MS,
): Promise<Record<string, unknown>> {
  const presentation = vc.createPresentation({ verifiableCredential: structuredClone([...credentials]), holder: holderId });
  const suite = new DataIntegrityProof({ signer: holder.signer(), cryptosuite: holder.algorithm === 'Ed25519' ? eddsaRdfc2022 : ecdsaRdfc2019, date: new Date(createdMs) });
  return vc.signPresentation({ presentation, suite, documentLoader, challenge: binding.challenge, domain: binding.domain });
}

export async function signed(credential: Record<string, unknown>, key: SampleKey): Promise<Record<string, unknown>> {
  return issueDataIntegrity(credential, key, issuerLoader(), new Date(NOW_MS - DAY_MS));
}

/**
 * A Bitstring Status List credential for `url`, signed by `issuer`: the bits in `set` on
 * (revoked, or suspended with `purpose: 'suspension'`); `validFrom` and other fields overridable.
 */
export async function signedStatusList(
  issuer: SampleKey,
  url: string,
  options: { purpose?: 'revocation' | 'suspension'; set?: readonly number[]; validFrom?: string; over?: Record<string, unknown> } = {},
): Promise<Record<string, unknown>> {
  return signed({
    '@context': [VC_V2],
    id: url,
    type: ['VerifiableCredential', 'BitstringStatusListCredential'],
    issuer: issuer.did,
    validFrom: options.validFrom ?? '2026-05-01T00:00:00Z',
    credentialSubject: { id: `${url}#list`, type: 'BitstringStatusList', statusPurpose: options.purpose ?? 'revocation', encodedList: encodeStatusList(MIN_STATUS_LIST_BITS, [...(options.set ?? [])]) },
    ...options.over,
  }, issuer);
}

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { isPavilionError, type ErrorCode } from '../../sidecar/src/lib/errors.ts';

/** Assert that `work` fails with exactly `code` (and show the real error when it does not). */
export async function rejectsWith(work: Promise<unknown> | (() => unknown), code: ErrorCode): Promise<void> {
  try {
    await (typeof work === 'function' ? work() : work);
  } catch (error) {
    if (isPavilionError(error, code)) return;
    assert.fail(`expected ${code}, got ${isPavilionError(error) ? `${error.code}: ${error.message}` : String(error)}`);
  }
  assert.fail(`expected ${code}, but it succeeded`);
}

/** Deterministic randomness for reproducible accumulator tests. */
export function seeded(label: string): (n: number) => Uint8Array {
  let counter = 0;
  return (n) => {
    const out = new Uint8Array(n);
    for (let off = 0; off < n; off += 32) out.set(createHash('sha256').update(`${label}:${counter++}`).digest().subarray(0, Math.min(32, n - off)), off);
    return out;
  };
}
