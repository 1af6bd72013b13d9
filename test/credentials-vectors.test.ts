/**
 * The W3C Data Integrity cryptosuite specifications' published test vectors, verified through
 * Pavilion's Data Integrity path (test/vectors/README.md has the provenance). The specs'
 * issuer is an https controller document; the test serves it (and the examples context, pinned
 * by hash) the way a tenant's pinned material would be served: nothing is fetched.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { ErrorCodes } from '../sidecar/src/lib/errors.ts';
import { DidResolver, createDocumentLoader, pinContexts, type DocumentLoader } from '../sidecar/src/credentials/index.ts';
import { verifyDataIntegrityCredential } from '../sidecar/src/credentials/data-integrity.ts';
import { rejectsWith } from './credentials/fixtures.ts';

const vector = (path: string): Record<string, unknown> => JSON.parse(readFileSync(new URL(`./vectors/${path}`, import.meta.url), 'utf8'));
const EXAMPLES_URL = 'https://www.w3.org/ns/credentials/examples/v2';
const ISSUER = 'https://vc.example/issuers/5678';
const KEYS = ['z6MkrJVnaZkeFzdQyMZu1cgjg7k1pZZ6pvBQ7XJPt4swbTQ2'];

function specLoader(): DocumentLoader {
  const bytes = readFileSync(new URL('./vectors/vc-data-model/examples-v2.jsonld', import.meta.url));
  const base = createDocumentLoader({
    contexts: pinContexts([{ url: EXAMPLES_URL, sha256Hex: createHash('sha256').update(bytes).digest('hex'), bytes }]),
    dids: new DidResolver(),
  });
  const methods = KEYS.map((key) => ({ id: `${ISSUER}#${key}`, type: 'Multikey', controller: ISSUER, publicKeyMultibase: key }));
  const controller = {
    '@context': ['https://www.w3.org/ns/did/v1', 'https://w3id.org/security/multikey/v1'],
    id: ISSUER,
    verificationMethod: methods,
    assertionMethod: methods.map((m) => m.id),
  };
  return async (url) => {
    if (url === ISSUER) return { contextUrl: null, documentUrl: url, document: controller };
    const method = methods.find((m) => m.id === url);
    if (method !== undefined) return { contextUrl: null, documentUrl: url, document: { '@context': 'https://w3id.org/security/multikey/v1', ...method } };
    return base(url);
  };
}

const check = { documentLoader: specLoader(), nowMs: Date.parse('2026-06-01T00:00:00Z'), clockSkewMs: 60_000 };

describe('W3C Data Integrity test vectors', () => {
  it('vc-di-eddsa: eddsa-rdfc-2022 signed Alumni Credential verifies', async () => {
    const result = await verifyDataIntegrityCredential(vector('vc-di-eddsa/signedDataInt.json'), check);
    assert.equal(result.proofType, 'DataIntegrityProof/eddsa-rdfc-2022');
  });

  it('the vector with one claim changed does not verify', async () => {
    for (const path of ['vc-di-eddsa/signedDataInt.json']) {
      const credential = vector(path);
      (credential['credentialSubject'] as Record<string, unknown>)['alumniOf'] = 'The School of Forgeries';
      await rejectsWith(verifyDataIntegrityCredential(credential, check), ErrorCodes.CREDENTIAL_SIGNATURE_INVALID);
    }
  });

  it('without the examples context pinned, the vector is refused, not fetched', async () => {
    const loader = createDocumentLoader({ contexts: pinContexts([]), dids: new DidResolver() });
    await rejectsWith(verifyDataIntegrityCredential(vector('vc-di-eddsa/signedDataInt.json'), { ...check, documentLoader: loader }), ErrorCodes.CREDENTIAL_DOCUMENT_REFUSED);
  });
});
