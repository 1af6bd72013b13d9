/**
 * JWTs for the envoy_demo tenant (JWS compact serialization, RFC 7515; HS256 and RS256 from
 * RFC 7518 section 3.2 and 3.3). RS256 (RSASSA-PKCS1-v1_5) signatures are deterministic, so
 * a token depends only on its header, claims and key: the corpus is the same on every run.
 * Expiry is fixed far in the future (2100) or the past (2001), so no result depends on the
 * clock.
 */
import { createHmac, createPrivateKey, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../../sidecar/src/lib/tools.ts';

export const ISSUER = 'https://issuer.envoy-demo.example';
export const AUDIENCE = 'envoy-demo';
/** Mirrors bundles/envoy_demo/data/jwt.json. */
export const HS256_SECRET = 'envoy-demo-hs256-secret-not-for-production';
export const EXP_FUTURE = 4_102_444_800; // 2100-01-01T00:00:00Z
export const EXP_PAST = 978_307_200; // 2001-01-01T00:00:00Z
export const ISSUED_AT = 946_684_800; // 2000-01-01T00:00:00Z

const KEYS = join(REPO_ROOT, 'test', 'extauthz', 'keys');
export const RS256_PRIVATE_KEY = readFileSync(join(KEYS, 'rs256-private.pem'), 'utf8');
export const FORGER_PRIVATE_KEY = readFileSync(join(KEYS, 'forger-private.pem'), 'utf8');

function b64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

function signingInput(alg: string, claims: Record<string, unknown>): string {
  return `${b64url(JSON.stringify({ alg, typ: 'JWT' }))}.${b64url(JSON.stringify(claims))}`;
}

export function signHs256(claims: Record<string, unknown>, secret: string = HS256_SECRET): string {
  const input = signingInput('HS256', claims);
  return `${input}.${b64url(createHmac('sha256', secret).update(input).digest())}`;
}

export function signRs256(claims: Record<string, unknown>, privateKeyPem: string = RS256_PRIVATE_KEY): string {
  const input = signingInput('RS256', claims);
  return `${input}.${b64url(sign('sha256', Buffer.from(input), createPrivateKey(privateKeyPem)))}`;
}

export function claims(sub: string, role: string, exp: number = EXP_FUTURE, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { iss: ISSUER, aud: AUDIENCE, sub, role, iat: ISSUED_AT, exp, ...extra };
}

/** `alg: none` (must always be refused). */
export function unsigned(claimSet: Record<string, unknown>): string {
  return `${b64url(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${b64url(JSON.stringify(claimSet))}.`;
}
