/**
 * A deterministic corpus of Envoy CheckRequests for the envoy_demo tenant: a seeded PRNG
 * (mulberry32) picks tokens (valid HS256/RS256 per role, expired, forged, wrong secret,
 * wrong issuer or audience, `alg: none`, garbage, other schemes, none), methods, paths,
 * query strings, JSON and form bodies, truncated and partial bodies, and the peer/request
 * attributes Envoy sends. The same seed gives the same corpus (RS256 signatures are
 * deterministic and expiry is fixed far from today), so failures reproduce.
 *
 * Requests in the object form of @grpc/proto-loader (camelCase, numbers for longs).
 */
import { EXP_PAST, FORGER_PRIVATE_KEY, claims, signHs256, signRs256, unsigned } from './tokens.ts';
import type { Message } from './grpc-client.ts';

export interface CorpusCase {
  readonly name: string;
  /** Which configured tenant (x-pavilion-tenant): the object decision or the boolean one. */
  readonly tenant: 'envoy_demo' | 'envoy_demo_bool';
  readonly request: Message;
  /**
   * The request cannot be turned into an input document (a malformed JSON or form body, a
   * bad content-length, a bad escape): upstream answers a 400 denied response.
   */
  readonly invalid: boolean;
}

export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface TokenChoice {
  readonly label: string;
  readonly authorization: string | undefined;
}

function tokenChoices(): TokenChoice[] {
  const bearer = (token: string): string => `Bearer ${token}`;
  const choices: TokenChoice[] = [];
  for (const role of ['admin', 'editor', 'viewer']) {
    choices.push({ label: `hs256-${role}`, authorization: bearer(signHs256(claims(`${role}-user`, role))) });
    choices.push({ label: `rs256-${role}`, authorization: bearer(signRs256(claims(`${role}-rs`, role))) });
  }
  choices.push(
    { label: 'hs256-expired', authorization: bearer(signHs256(claims('old', 'admin', EXP_PAST))) },
    { label: 'rs256-expired', authorization: bearer(signRs256(claims('old-rs', 'editor', EXP_PAST))) },
    { label: 'rs256-forged', authorization: bearer(signRs256(claims('eve', 'admin'), FORGER_PRIVATE_KEY)) },
    { label: 'hs256-wrong-secret', authorization: bearer(signHs256(claims('mallory', 'admin'), 'guessed-secret')) },
    { label: 'hs256-wrong-issuer', authorization: bearer(signHs256({ ...claims('x', 'admin'), iss: 'https://evil.example' })) },
    { label: 'hs256-wrong-audience', authorization: bearer(signHs256({ ...claims('x', 'admin'), aud: 'other' })) },
    { label: 'hs256-unknown-role', authorization: bearer(signHs256(claims('guest', 'guest'))) },
    { label: 'alg-none', authorization: bearer(unsigned(claims('root', 'admin'))) },
    { label: 'garbage', authorization: bearer('not-a-token') },
    { label: 'three-garbage-parts', authorization: bearer('a.b.c') },
    { label: 'empty-bearer', authorization: 'Bearer ' },
    { label: 'basic', authorization: 'Basic YWxpY2U6cGFzc3dvcmQ=' },
    { label: 'none', authorization: undefined },
    { label: 'none-2', authorization: undefined },
  );
  return choices;
}

const PATHS = [
  '/api/v1/products', '/api/v1/products', '/api/v1/products/42', '/api/v1/products/7',
  '/api/v1/orders', '/api/v1/me', '/admin/users', '/admin', '/public/index.html',
  '/public/a%20b.txt', '/health', '/api/v1/products/%2E%2E/secret', '/unknown', '//api/v1/products', '/',
];
const QUERIES = ['', '', '', '?debug=1', '?debug=true&page=2', '?a=1&a=2&b', '?q=hello+world', '?x=%41%42', '?empty='];
const METHODS = ['GET', 'GET', 'GET', 'POST', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'];

type BodyKind = 'none' | 'product' | 'product-bad-type' | 'order' | 'order-too-many' | 'order-two-items'
  | 'truncated' | 'partial' | 'raw-json' | 'text' | 'bad-json' | 'bad-form' | 'bad-content-length';
const BODIES: BodyKind[] = [
  'none', 'none', 'product', 'product', 'product-bad-type', 'order', 'order-too-many', 'order-two-items',
  'truncated', 'partial', 'raw-json', 'text',
];
/** Requests that make sense for the API (half the corpus), so that enough of them are allowed. */
const SCENARIOS: ReadonlyArray<{ readonly method: string; readonly path: string; readonly body: BodyKind }> = [
  { method: 'GET', path: '/api/v1/products', body: 'none' },
  { method: 'GET', path: '/api/v1/products/42', body: 'none' },
  { method: 'POST', path: '/api/v1/products', body: 'product' },
  { method: 'POST', path: '/api/v1/products', body: 'raw-json' },
  { method: 'PUT', path: '/api/v1/products/7', body: 'product' },
  { method: 'DELETE', path: '/api/v1/products/7', body: 'none' },
  { method: 'POST', path: '/api/v1/orders', body: 'order' },
  { method: 'GET', path: '/api/v1/me', body: 'none' },
  { method: 'GET', path: '/public/index.html', body: 'none' },
  { method: 'GET', path: '/admin/users', body: 'none' },
];
/** Bodies upstream refuses to parse; kept rare so most of the corpus reaches the policy. */
const INVALID_BODIES: BodyKind[] = ['bad-json', 'bad-form', 'bad-content-length'];

export function generateCorpus(seed: number, count: number): CorpusCase[] {
  const random = mulberry32(seed);
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)] as T;
  const tokens = tokenChoices();
  const valid = tokens.filter((t) => /^(hs|rs)256-(admin|editor|viewer)$/.test(t.label));
  const cases: CorpusCase[] = [];
  for (let i = 0; i < count; i++) {
    const coherent = random() < 0.5;
    const scenario = pick(SCENARIOS);
    const token = coherent && random() < 0.75 ? pick(valid) : pick(tokens);
    const method = coherent ? scenario.method : pick(METHODS);
    const path = (coherent ? scenario.path : pick(PATHS)) + (coherent && random() < 0.8 ? '' : pick(QUERIES));
    const body: BodyKind = i % 25 === 24 ? pick(INVALID_BODIES) : coherent ? scenario.body : pick(BODIES);
    const tenant = random() < 0.15 ? 'envoy_demo_bool' : 'envoy_demo';
    const headers: Record<string, string> = {
      ':authority': 'shop.envoy-demo.example',
      ':method': method,
      ':path': path,
      accept: '*/*',
      'user-agent': `corpus/${i}`,
      'x-request-id': `corpus-${seed}-${i}`,
      'x-pavilion-tenant': tenant,
    };
    if (token.authorization !== undefined) headers['authorization'] = token.authorization;
    const http: Record<string, unknown> = {
      id: String(1_000_000 + i),
      method,
      path,
      host: 'shop.envoy-demo.example',
      scheme: 'http',
      protocol: random() < 0.5 ? 'HTTP/1.1' : 'HTTP/2',
    };
    const price = Math.floor(random() * (random() < 0.6 ? 1000 : 6000));
    switch (body) {
      case 'product':
        http['body'] = JSON.stringify({ name: `item-${i}`, price });
        headers['content-type'] = 'application/json';
        break;
      case 'product-bad-type':
        http['body'] = JSON.stringify({ name: `item-${i}`, price: String(price) });
        headers['content-type'] = 'application/json; charset=utf-8';
        break;
      case 'order':
        http['body'] = `item=tea&quantity=${1 + Math.floor(random() * 9)}`;
        headers['content-type'] = 'application/x-www-form-urlencoded';
        break;
      case 'order-too-many':
        http['body'] = 'item=tea&quantity=300';
        headers['content-type'] = 'application/x-www-form-urlencoded';
        break;
      case 'order-two-items':
        http['body'] = 'item=tea&item=cake+pop&quantity=1';
        headers['content-type'] = 'application/x-www-form-urlencoded';
        break;
      case 'truncated':
        http['body'] = JSON.stringify({ name: `item-${i}`, price }).slice(0, 10);
        headers['content-type'] = 'application/json';
        headers['content-length'] = '4096';
        break;
      case 'partial':
        http['body'] = '{"name": "partial", "pri';
        headers['content-type'] = 'application/json';
        headers['x-envoy-auth-partial-body'] = 'true';
        break;
      case 'raw-json':
        http['rawBody'] = Buffer.from(JSON.stringify({ name: `raw-${i}`, price }));
        headers['content-type'] = 'application/json';
        break;
      case 'text':
        http['body'] = 'just some text';
        headers['content-type'] = 'text/plain';
        break;
      case 'bad-json':
        http['body'] = '{"name": ';
        headers['content-type'] = 'application/json';
        break;
      case 'bad-form':
        http['body'] = 'item=%zz';
        headers['content-type'] = 'application/x-www-form-urlencoded';
        break;
      case 'bad-content-length':
        http['body'] = '{}';
        headers['content-type'] = 'application/json';
        headers['content-length'] = 'twelve';
        break;
      case 'none':
        break;
    }
    const size = typeof http['body'] === 'string' ? Buffer.byteLength(http['body']) : 0;
    if (size > 0) http['size'] = size;
    http['headers'] = headers;
    const request: Message = {
      attributes: {
        source: {
          address: { socketAddress: { address: `10.1.${i % 256}.${(i * 7) % 256}`, portValue: 30000 + i } },
          principal: i % 3 === 0 ? `spiffe://cluster.local/ns/shop/sa/client-${i % 5}` : '',
        },
        destination: { address: { socketAddress: { address: '10.0.0.2', portValue: 8080 } }, principal: 'spiffe://cluster.local/ns/shop/sa/api' },
        request: { time: { seconds: 1_700_000_000 + i, nanos: i * 1000 }, http },
        contextExtensions: { route: i % 2 === 0 ? 'products' : 'default' },
        metadataContext: { filterMetadata: { 'envoy.filters.http.jwt_authn': { fields: { corpus: { numberValue: i } } } } },
      },
    };
    cases.push({ name: `#${i} ${method} ${path} token=${token.label} body=${body} tenant=${tenant}`, tenant, request, invalid: INVALID_BODIES.includes(body) });
  }
  return cases;
}
