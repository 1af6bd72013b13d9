/**
 * crypto.* builtins, following OPA's v1/topdown/crypto.go, using node:crypto only:
 * crypto.md5 / sha1 / sha256 (hex digest of the string's UTF-8 bytes),
 * crypto.hmac.md5 / sha1 / sha256 / sha512 (hex MAC of message x key),
 * crypto.hmac.equal (constant-time comparison, Go's hmac.Equal),
 * crypto.x509.parse_certificates (Go's x509.Certificate JSON shape; see x509.ts) and
 * crypto.x509.parse_rsa_private_key (the first RSA PRIVATE KEY, PRIVATE KEY or EC PRIVATE KEY
 * PEM block, plain or base64, as a JWK; null when there is none).
 *
 * Known limits: crypto.x509.parse_and_verify_certificates(_with_options),
 * parse_certificate_request, parse_keypair and crypto.parse_private_keys are not provided by the
 * host (a policy using them fails the load-time builtin check); chain verification in
 * particular is left to OPA rather than approximated.
 */
import { type KeyObject, createHash, createHmac, createPrivateKey } from 'node:crypto';
import { type BuiltinFamily, bytesToString, goBase64Decode, isString, utf8Bytes } from './common.ts';
import { decodePem, hmacEqual } from './keys.ts';
import { parseCertificates } from './x509.ts';

function digest(algorithm: string): (value: unknown) => string | undefined {
  return (value) => (isString(value) ? createHash(algorithm).update(utf8Bytes(value)).digest('hex') : undefined);
}

function hmac(algorithm: string): (message: unknown, key: unknown) => string | undefined {
  return (message, key) => {
    if (!isString(message) || !isString(key)) return undefined;
    return createHmac(algorithm, utf8Bytes(key)).update(utf8Bytes(message)).digest('hex');
  };
}

const PRIVATE_KEY_BLOCKS: Readonly<Record<string, 'pkcs1' | 'pkcs8' | 'sec1'>> = {
  'RSA PRIVATE KEY': 'pkcs1',
  'PRIVATE KEY': 'pkcs8',
  'EC PRIVATE KEY': 'sec1',
};

/** OPA's getPrivateKeysFromPEMData: the private keys among the PEM blocks (base64 accepted). */
function privateKeysFromPem(input: string): KeyObject[] | undefined {
  const decoded = goBase64Decode(input, 'std');
  let rest = decoded === undefined ? input : bytesToString(decoded);
  const keys: KeyObject[] = [];
  for (let block = decodePem(rest); block !== undefined; block = decodePem(rest)) {
    rest = block.rest;
    const type = PRIVATE_KEY_BLOCKS[block.type];
    if (type === undefined) continue;
    try {
      keys.push(createPrivateKey({ key: block.bytes, format: 'der', type }));
    } catch {
      return undefined;
    }
  }
  return keys;
}

function parsePrivateKeyJwk(input: string): unknown {
  if (input === '') return undefined;
  let pem = input;
  if (!pem.startsWith('-----BEGIN')) {
    const bytes = goBase64Decode(pem, 'std');
    if (bytes === undefined) return undefined;
    pem = bytesToString(bytes);
  }
  const keys = privateKeysFromPem(pem);
  if (keys === undefined) return undefined;
  const first = keys[0];
  return first === undefined ? null : first.export({ format: 'jwk' });
}

export function cryptoBuiltins(): BuiltinFamily {
  return {
    'crypto.md5': digest('md5'),
    'crypto.sha1': digest('sha1'),
    'crypto.sha256': digest('sha256'),
    'crypto.hmac.md5': hmac('md5'),
    'crypto.hmac.sha1': hmac('sha1'),
    'crypto.hmac.sha256': hmac('sha256'),
    'crypto.hmac.sha512': hmac('sha512'),
    'crypto.hmac.equal': (a, b) => (isString(a) && isString(b) ? hmacEqual(utf8Bytes(a), utf8Bytes(b)) : undefined),
    'crypto.x509.parse_certificates': (value) => (isString(value) ? parseCertificates(value) : undefined),
    'crypto.x509.parse_rsa_private_key': (value) => (isString(value) ? parsePrivateKeyJwk(value) : undefined),
  };
}
