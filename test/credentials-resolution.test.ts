/**
 * Offline resolution: the document loader answers only from pinned contexts and offline DID
 * methods, never from the network, and every refusal has its code.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { DidResolver, builtInContexts, createDocumentLoader, pinContexts } from '../sidecar/src/credentials/index.ts';
import { sampleContext } from '../sidecar/src/credentials/samples.ts';
import { ErrorCodes } from '../sidecar/src/lib/errors.ts';
import { keys, rejectsWith } from './credentials/fixtures.ts';

const realFetch = globalThis.fetch;
let fetchCalls: string[] = [];
beforeEach(() => {
  fetchCalls = [];
  globalThis.fetch = (async (input: unknown) => {
    fetchCalls.push(String(input));
    throw new Error('network is not allowed in these tests');
  }) as typeof fetch;
});
afterEach(() => {
  globalThis.fetch = realFetch;
});

describe('pinned contexts', () => {
  it('serves the VC v1/v2, Data Integrity, Multikey, status list and DID contexts from the packages', () => {
    const urls = [...builtInContexts().keys()];
    for (const url of [
      'https://www.w3.org/ns/credentials/v2',
      'https://www.w3.org/2018/credentials/v1',
      'https://w3id.org/security/data-integrity/v2',
      'https://w3id.org/security/multikey/v1',
      'https://www.w3.org/ns/credentials/status/v1',
      'https://www.w3.org/ns/did/v1',
    ]) assert.ok(urls.includes(url), url);
  });

  it('accepts a tenant context whose bytes match its SHA-256 pin', async () => {
    const loader = createDocumentLoader({ contexts: pinContexts([sampleContext()]), dids: new DidResolver() });
    const loaded = await loader(sampleContext().url);
    assert.equal(loaded.documentUrl, sampleContext().url);
    assert.ok('@context' in loaded.document);
  });

  it('refuses a tenant context whose bytes differ from the pin', () => {
    const context = sampleContext();
    const wrong = { ...context, sha256Hex: createHash('sha256').update('something else').digest('hex') };
    return rejectsWith(() => pinContexts([wrong]), ErrorCodes.CREDENTIAL_CONTEXT_HASH_MISMATCH);
  });

  it('refuses a tenant context that would replace a built-in one, or is not https', async () => {
    const bytes = new TextEncoder().encode('{"@context":{}}');
    const sha256Hex = createHash('sha256').update(bytes).digest('hex');
    await rejectsWith(() => pinContexts([{ url: 'https://www.w3.org/ns/credentials/v2', sha256Hex, bytes }]), ErrorCodes.CONFIG_INVALID);
    await rejectsWith(() => pinContexts([{ url: 'http://example.org/ctx', sha256Hex, bytes }]), ErrorCodes.CONFIG_INVALID);
  });
});

describe('document loader', () => {
  const loader = createDocumentLoader({ contexts: pinContexts([]), dids: new DidResolver() });

  for (const url of [
    'https://example.org/contexts/unknown/v1',
    'http://169.254.169.254/latest/meta-data/',
    'http://127.0.0.1:8181/v1/data',
    'file:///etc/passwd',
    'urn:uuid:0c8e0b5e-1111-4b0a-9c7d-000000000000',
  ]) {
    it(`refuses ${url} without any network call`, async () => {
      await rejectsWith(loader(url), ErrorCodes.CREDENTIAL_DOCUMENT_REFUSED);
      assert.deepEqual(fetchCalls, []);
    });
  }

  it('serves a did:key verification method as a Multikey', async () => {
    const { issuer } = await keys();
    const { document } = await loader(issuer.kid);
    assert.equal(document['type'], 'Multikey');
    assert.equal(document['controller'], issuer.did);
  });
});

describe('DID resolution', () => {
  it('resolves did:key for Ed25519 and P-256 with the key in assertionMethod', async () => {
    const { issuer, issuerP256 } = await keys();
    const resolver = new DidResolver();
    for (const key of [issuer, issuerP256]) {
      const doc = await resolver.resolve(key.did);
      assert.deepEqual(doc.assertionMethod, [key.kid]);
      const method = await resolver.verificationMethod(key.kid);
      assert.equal(method.algorithm, key.algorithm);
      assert.deepEqual(method.publicKeyJwk, key.publicJwk);
    }
  });

  it('resolves did:jwk from the identifier itself', async () => {
    const { holderP256 } = await keys();
    const did = `did:jwk:${Buffer.from(JSON.stringify(holderP256.publicJwk)).toString('base64url')}`;
    const method = await new DidResolver().verificationMethod(`${did}#0`);
    assert.equal(method.controller, did);
    assert.deepEqual(method.publicKeyJwk, holderP256.publicJwk);
  });

  it('refuses a did:jwk carrying a private key', async () => {
    const { holder } = await keys();
    const did = `did:jwk:${Buffer.from(JSON.stringify(holder.privateJwk)).toString('base64url')}`;
    await rejectsWith(new DidResolver().resolve(did), ErrorCodes.CREDENTIAL_KEY_UNSUPPORTED);
  });

  it('resolves did:web only from the pinned documents, without fetching', async () => {
    const { issuer } = await keys();
    const did = 'did:web:issuer.example';
    const document = {
      '@context': ['https://www.w3.org/ns/did/v1'],
      id: did,
      verificationMethod: [{ id: `${did}#key-1`, type: 'JsonWebKey2020', controller: did, publicKeyJwk: issuer.publicJwk }],
      assertionMethod: ['#key-1'],
    };
    const resolver = new DidResolver([{ did, document }]);
    const method = await resolver.verificationMethod(`${did}#key-1`);
    assert.deepEqual(method.publicKeyJwk, issuer.publicJwk);
    assert.deepEqual((await resolver.resolve(did)).assertionMethod, [`${did}#key-1`]);
    await rejectsWith(resolver.resolve('did:web:other.example'), ErrorCodes.CREDENTIAL_DID_UNRESOLVED);
    assert.deepEqual(fetchCalls, []);
  });

  it('refuses unsupported DID methods and malformed did:key identifiers', async () => {
    const resolver = new DidResolver();
    await rejectsWith(resolver.resolve('did:ion:EiD3'), ErrorCodes.CREDENTIAL_DID_UNSUPPORTED);
    await rejectsWith(resolver.resolve('did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme'), ErrorCodes.CREDENTIAL_KEY_UNSUPPORTED);
    await rejectsWith(resolver.resolve('did:key:z6MkNOTBASE58!!'), ErrorCodes.CREDENTIAL_KEY_UNSUPPORTED);
    await rejectsWith(resolver.verificationMethod('did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK#other'), ErrorCodes.CREDENTIAL_DID_UNRESOLVED);
  });
});
