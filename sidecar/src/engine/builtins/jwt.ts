/**
 * io.jwt.* builtins, following OPA's v1/topdown/tokens.go (JWS compact serialization only):
 *
 * - io.jwt.decode(jwt): [header, payload, signature as hex]; a header with "cty": "JWT"
 *   decodes the (quote-trimmed) payload as a nested token; JWE ("enc") is rejected.
 * - io.jwt.verify_{rs,ps,es}{256,384,512}, io.jwt.verify_eddsa(jwt, key): the key is a PEM
 *   certificate, a PEM public key, or a JWK / JWK Set; a key whose "kid" matches the header's
 *   is tried alone, otherwise every key whose "alg" is absent or equals the header's.
 * - io.jwt.verify_hs{256,384,512}(jwt, secret).
 * - io.jwt.decode_verify(jwt, constraints): constraints `cert` | `secret` (exactly one),
 *   `alg`, `iss`, `aud`, `time` (ns; context().nowNs when absent); any other key is an error.
 *   Returns [valid, header, payload], or [false, {}, {}] when the signature or a claim check
 *   fails; exp/nbf are compared in seconds against time / 1e9 as OPA does.
 * - io.jwt.encode_sign(headers, payload, jwk) and io.jwt.encode_sign_raw(headers text,
 *   payload text, jwk text): signs with the first key of a JWK or JWK Set (HS256/384/512 with
 *   an "oct" key; RS, PS, ES and EdDSA with a private key); encode_sign serialises headers and
 *   payload as Go's json.Marshal does (sorted keys, HTML-safe escapes).
 *
 * Decoding errors make the call undefined (OPA's non-strict mode). Signing and signature checks
 * use node:crypto only (see keys.ts).
 *
 * Known limits: JSON numbers in decoded headers and payloads are kept exactly (large integers
 * are returned as exact JSON), but a `time` constraint arrives as a double, as it does in OPA.
 * encode_sign receives its objects from opa-wasm as parsed JSON, so a set arrives in Wasm's
 * iteration order (OPA marshals it sorted) and a number written as 1.0 is serialised as 1.
 * ES and PS signatures are randomised, as in OPA.
 */
import { constants, createHmac, createPrivateKey, sign } from 'node:crypto';
import {
  type BuiltinFamily,
  type ContextProvider,
  ExactNumber,
  bytesToString,
  goBase64Decode,
  goJsonMarshal,
  isObject,
  isString,
  opaBase64UrlDecode,
  parseJsonExact,
  utf8Bytes,
} from './common.ts';
import { TOKEN_ALGORITHMS, type VerificationKey, hmacEqual, parseVerificationKeys, verifyWithKey } from './keys.ts';

interface Token {
  readonly header: string;
  readonly payload: string;
  readonly signature: string;
}

function splitToken(value: unknown): Token | undefined {
  if (!isString(value) || !value.includes('.')) return undefined;
  const parts = value.split('.');
  if (parts.length !== 3) return undefined;
  const [header = '', payload = '', signature = ''] = parts;
  return { header, payload, signature };
}

/** OPA's extractJSONObject: JSON text that must hold an object. */
function jsonObject(text: string): Record<string, unknown> | undefined {
  let value: unknown;
  try {
    value = parseJsonExact(text);
  } catch {
    return undefined;
  }
  return isObject(value) ? value : undefined;
}

function decodeSegment(segment: string): string | undefined {
  const bytes = opaBase64UrlDecode(segment);
  return bytes === undefined ? undefined : bytesToString(bytes);
}

function decodeHeader(token: Token): Record<string, unknown> | undefined {
  const text = decodeSegment(token.header);
  if (text === undefined) return undefined;
  const header = jsonObject(text);
  if (header === undefined || Object.prototype.hasOwnProperty.call(header, 'enc')) return undefined;
  return header;
}

function decodeSignature(token: Token): Buffer | undefined {
  return opaBase64UrlDecode(token.signature);
}

interface HeaderFields {
  readonly alg: string;
  readonly kid: string;
  readonly cty: string;
  readonly crit: ReadonlySet<string>;
  readonly unknown: readonly string[];
}

/** OPA's parseTokenHeader: alg, kid, typ and cty must be strings, crit a non-empty list. */
function headerFields(header: Record<string, unknown>): HeaderFields | undefined {
  const fields = { alg: '', kid: '', typ: '', cty: '' };
  let crit = new Set<string>();
  const unknown: string[] = [];
  for (const [key, value] of Object.entries(header)) {
    if (key === 'alg' || key === 'kid' || key === 'typ' || key === 'cty') {
      if (!isString(value)) return undefined;
      fields[key] = value;
    } else if (key === 'crit') {
      if (!Array.isArray(value)) return undefined;
      crit = new Set(value.filter(isString));
      if (crit.size === 0) return undefined;
    } else {
      unknown.push(key);
    }
  }
  return { alg: fields.alg, kid: fields.kid, cty: fields.cty, crit, unknown };
}

function headerValid(fields: HeaderFields): boolean {
  if (fields.alg === '') return false;
  return !fields.unknown.some((name) => fields.crit.has(name));
}

function signingInput(token: Token): Buffer {
  return utf8Bytes(`${token.header}.${token.payload}`);
}

// ---------------------------------------------------------------------------------------------
// io.jwt.decode

function decode(value: unknown, depth = 0): unknown[] | undefined {
  if (depth > 32) return undefined;
  const token = splitToken(value);
  if (token === undefined) return undefined;
  const header = decodeHeader(token);
  if (header === undefined) return undefined;
  const payloadText = decodeSegment(token.payload);
  if (payloadText === undefined) return undefined;
  if (Object.prototype.hasOwnProperty.call(header, 'cty')) {
    const cty = header['cty'];
    if (!isString(cty)) return undefined;
    if (cty === 'JWT') return decode(payloadText.replace(/^["']+|["']+$/g, ''), depth + 1);
  }
  const payload = jsonObject(payloadText);
  if (payload === undefined) return undefined;
  const signature = decodeSignature(token);
  if (signature === undefined) return undefined;
  return [header, payload, signature.toString('hex')];
}

// ---------------------------------------------------------------------------------------------
// io.jwt.verify_*

function verifyAsymmetric(alg: string, jwt: unknown, keyText: unknown): boolean | undefined {
  const token = splitToken(jwt);
  if (token === undefined || !isString(keyText)) return undefined;
  const keys = parseVerificationKeys(keyText);
  if (keys === undefined) return undefined;
  const signature = decodeSignature(token);
  if (signature === undefined) return undefined;
  const header = decodeHeader(token);
  if (header === undefined) return undefined;
  const fields = headerFields(header);
  if (fields === undefined) return undefined;
  const data = signingInput(token);
  if (fields.kid !== '') {
    const byKid = keys.find((key) => key.kid === fields.kid);
    if (byKid !== undefined) return verifyWithKey(alg, byKid, data, signature, 'builtin');
  }
  for (const key of keys) {
    if (key.alg !== '' && key.alg !== fields.alg) continue;
    if (verifyWithKey(alg, key, data, signature, 'builtin')) return true;
  }
  return false;
}

function verifyHmac(hash: string, jwt: unknown, secret: unknown): boolean | undefined {
  if (!isString(jwt) || !isString(secret)) return undefined;
  const token = splitToken(jwt);
  if (token === undefined) return undefined;
  const mac = createHmac(hash, utf8Bytes(secret)).update(signingInput(token)).digest();
  const signature = decodeSignature(token);
  if (signature === undefined) return undefined;
  return hmacEqual(signature, mac);
}

// ---------------------------------------------------------------------------------------------
// io.jwt.decode_verify

interface Constraints {
  keys: readonly VerificationKey[] | undefined;
  secret: string;
  alg: string;
  iss: string;
  aud: string;
  time: number;
}

function parseConstraints(value: unknown, nowNs: bigint): Constraints | undefined {
  if (!isObject(value)) return undefined;
  const constraints: Constraints = { keys: undefined, secret: '', alg: '', iss: '', aud: '', time: -1 };
  for (const [name, item] of Object.entries(value)) {
    switch (name) {
      case 'cert': {
        if (!isString(item)) return undefined;
        const keys = parseVerificationKeys(item);
        if (keys === undefined) return undefined;
        constraints.keys = keys;
        break;
      }
      case 'secret':
      case 'alg':
      case 'iss':
      case 'aud':
        if (!isString(item)) return undefined;
        constraints[name] = item;
        break;
      case 'time':
        if (typeof item !== 'number' || !Number.isFinite(item) || item < 0) return undefined;
        constraints.time = item;
        break;
      default:
        return undefined;
    }
  }
  if (constraints.time === -1) constraints.time = Number(nowNs);
  const keyConstraints = (constraints.keys !== undefined ? 1 : 0) + (constraints.secret !== '' ? 1 : 0);
  if (keyConstraints !== 1) return undefined;
  return constraints;
}

function constraintsVerify(constraints: Constraints, fields: HeaderFields, token: Token, signature: Buffer): boolean {
  const data = signingInput(token);
  if (constraints.keys !== undefined) {
    if (fields.kid !== '') {
      const byKid = constraints.keys.find((key) => key.kid === fields.kid);
      if (byKid !== undefined) return verifyWithKey(fields.alg, byKid, data, signature, 'jws');
    }
    return constraints.keys.some(
      (key) => (key.alg === '' || key.alg === fields.alg) && verifyWithKey(fields.alg, key, data, signature, 'jws'),
    );
  }
  const secretKey: VerificationKey = {
    alg: '',
    kid: '',
    publicKey: undefined,
    secret: utf8Bytes(constraints.secret),
    isPrivate: false,
  };
  return verifyWithKey(fields.alg, secretKey, data, signature, 'jws');
}

function numeric(value: unknown): number | bigint | undefined {
  if (typeof value === 'number' || typeof value === 'bigint') return value;
  if (value instanceof ExactNumber) return value.toNumber();
  return undefined;
}

function audienceMatches(aud: unknown, wanted: string): boolean {
  if (isString(aud)) return aud === wanted;
  if (!Array.isArray(aud)) return false;
  return aud.some((item) => isString(item) && item === wanted);
}

function decodeVerify(jwt: unknown, constraintsValue: unknown, nowNs: bigint): unknown[] | undefined {
  const unverified = [false, {}, {}];
  const constraints = parseConstraints(constraintsValue, nowNs);
  if (constraints === undefined) return undefined;
  let current: unknown = jwt;
  let header: Record<string, unknown>;
  let payloadText: string;
  for (let depth = 0; ; depth++) {
    if (depth > 32) return undefined;
    const token = splitToken(current);
    if (token === undefined) return undefined;
    const decodedHeader = decodeHeader(token);
    if (decodedHeader === undefined) return undefined;
    const fields = headerFields(decodedHeader);
    if (fields === undefined) return undefined;
    if (!headerValid(fields)) return unverified;
    if (constraints.alg !== '' && constraints.alg !== fields.alg) return unverified;
    const signature = decodeSignature(token);
    if (signature === undefined) return undefined;
    if (!constraintsVerify(constraints, fields, token, signature)) return unverified;
    const text = decodeSegment(token.payload);
    if (text === undefined) return undefined;
    header = decodedHeader;
    payloadText = text;
    if (fields.cty.toLowerCase() === 'jwt') {
      current = text;
      continue;
    }
    break;
  }
  const payload = jsonObject(payloadText);
  if (payload === undefined) return undefined;
  const has = (name: string): boolean => Object.prototype.hasOwnProperty.call(payload, name);

  if (constraints.iss !== '') {
    if (!has('iss')) return unverified;
    const iss = payload['iss'];
    if (!isString(iss)) return undefined;
    if (iss !== constraints.iss) return unverified;
  }
  if (has('aud')) {
    if (!audienceMatches(payload['aud'], constraints.aud)) return unverified;
  } else if (constraints.aud !== '') {
    return unverified;
  }
  const nowSeconds = constraints.time / 1e9;
  if (has('exp')) {
    const exp = numeric(payload['exp']);
    if (exp === undefined) return undefined;
    if (!(nowSeconds < exp)) return unverified;
  }
  if (has('nbf')) {
    const nbf = numeric(payload['nbf']);
    if (nbf === undefined) return undefined;
    if (nowSeconds < nbf) return unverified;
  }
  return [true, header, payload];
}


// ---------------------------------------------------------------------------------------------
// io.jwt.encode_sign / encode_sign_raw

const HASH_BY_BITS: Readonly<Record<string, string>> = { '256': 'sha256', '384': 'sha384', '512': 'sha512' };

function signingKeyJwk(jwkText: string): Record<string, unknown> | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(jwkText);
  } catch {
    return undefined;
  }
  if (!isObject(parsed)) return undefined;
  if (Object.prototype.hasOwnProperty.call(parsed, 'keys')) {
    const keys = parsed['keys'];
    if (!Array.isArray(keys) || keys.length === 0 || !isObject(keys[0])) return undefined;
    return keys[0];
  }
  return parsed;
}

function signInput(alg: string, jwk: Record<string, unknown>, input: Buffer): Buffer | undefined {
  const hash = HASH_BY_BITS[alg.slice(2)];
  const family = alg.slice(0, 2);
  if (family === 'HS' && hash !== undefined) {
    const k = jwk['k'];
    if (jwk['kty'] !== 'oct' || !isString(k)) return undefined;
    const secret = goBase64Decode(k, 'url', true);
    return secret === undefined ? undefined : createHmac(hash, secret).update(input).digest();
  }
  const key = createPrivateKey({ key: jwk as never, format: 'jwk' });
  if (alg === 'EdDSA') return key.asymmetricKeyType === 'ed25519' ? sign(null, input, key) : undefined;
  if (hash === undefined) return undefined;
  if (family === 'RS' || family === 'PS') {
    if (key.asymmetricKeyType !== 'rsa' || (key.asymmetricKeyDetails?.modulusLength ?? 0) < 1024) return undefined;
    if (family === 'RS') return sign(hash, input, key);
    const saltLength = { sha256: 32, sha384: 48, sha512: 64 }[hash as 'sha256' | 'sha384' | 'sha512'];
    return sign(hash, input, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength });
  }
  if (family === 'ES') {
    if (key.asymmetricKeyType !== 'ec') return undefined;
    return sign(hash, input, { key, dsaEncoding: 'ieee-p1363' });
  }
  return undefined;
}

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/** OPA's commonBuiltinJWTEncodeSign over the serialised headers and payload. */
function encodeSign(headersText: string, payloadText: string, jwkText: string): string | undefined {
  const jwk = signingKeyJwk(jwkText);
  if (jwk === undefined) return undefined;
  let headers: unknown;
  try {
    headers = JSON.parse(headersText);
  } catch {
    return undefined;
  }
  if (!isObject(headers)) return undefined;
  const alg = headers['alg'];
  if (!isString(alg) || !TOKEN_ALGORITHMS.has(alg)) return undefined;
  const typ = headers['typ'];
  if ((!isString(typ) || typ === 'JWT') && !isJson(payloadText)) return undefined;
  const input = `${utf8Bytes(headersText).toString('base64url')}.${utf8Bytes(payloadText).toString('base64url')}`;
  const signature = signInput(alg, jwk, utf8Bytes(input));
  return signature === undefined ? undefined : `${input}.${signature.toString('base64url')}`;
}

export function jwtBuiltins(context: ContextProvider): BuiltinFamily {
  const family: Record<string, (...args: unknown[]) => unknown> = {
    'io.jwt.decode': (jwt) => decode(jwt),
    'io.jwt.decode_verify': (jwt, constraints) => decodeVerify(jwt, constraints, context().nowNs),
    'io.jwt.verify_eddsa': (jwt, key) => verifyAsymmetric('EdDSA', jwt, key),
    'io.jwt.encode_sign': (headers, payload, key) => {
      if (!isObject(headers) || !isObject(payload) || !isObject(key)) return undefined;
      return encodeSign(goJsonMarshal(headers), goJsonMarshal(payload), goJsonMarshal(key));
    },
    'io.jwt.encode_sign_raw': (headers, payload, key) => {
      if (!isString(headers) || !isString(payload) || !isString(key)) return undefined;
      return encodeSign(headers, payload, key);
    },
  };
  for (const bits of ['256', '384', '512']) {
    for (const family2 of ['rs', 'ps', 'es']) {
      const alg = `${family2.toUpperCase()}${bits}`;
      family[`io.jwt.verify_${family2}${bits}`] = (jwt, key) => verifyAsymmetric(alg, jwt, key);
    }
    family[`io.jwt.verify_hs${bits}`] = (jwt, secret) => verifyHmac(`sha${bits}`, jwt, secret);
  }
  return family;
}
