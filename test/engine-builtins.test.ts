/**
 * Unit tests of the host builtins for what OPA's conformance cases cover thinly: the fixed
 * per-evaluation clock and exact integers through Wasm, JWT verification with keys generated
 * here (RS256, PS256, ES256, EdDSA, HS256, JWKS, certificates), decode_verify's exp/nbf against
 * the context time, X.509 parsing of a certificate made with openssl (compared field by field
 * with `opa eval` when both tools exist), per-evaluation memoisation, and the rule that invalid
 * operands give undefined instead of throwing.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { type KeyObject, constants, createHmac, generateKeyPairSync, sign } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { loadPolicy } from '@open-policy-agent/opa-wasm';
import {
  type EvaluationContext,
  HOST_BUILTIN_NAMES,
  NON_DETERMINISTIC_BUILTINS,
  createHostBuiltins,
} from '../sidecar/src/engine/builtins/index.ts';
import { ErrorCodes, PavilionError } from '../sidecar/src/lib/errors.ts';
import { findOpa } from '../sidecar/src/lib/tools.ts';
import { extractFromTarGz } from './conformance/runner.ts';

const NOW_NS = 1_700_000_000_123_456_789n;
const NOW_S = 1_700_000_000;

function builtinsAt(nowNs: bigint = NOW_NS): Readonly<Record<string, (...args: unknown[]) => unknown>> {
  const context: EvaluationContext = { nowNs };
  return createHostBuiltins(() => context);
}

function call(name: string, ...args: unknown[]): unknown {
  const fn = builtinsAt()[name];
  assert.ok(fn, `${name} is provided`);
  return fn(...args);
}

/** A builtin result as opa-wasm would parse it, keeping raw-JSON results as text. */
function rawText(value: unknown): string {
  assert.ok(value instanceof ArrayBuffer, 'an exact result is raw JSON text');
  return new TextDecoder().decode(value);
}

const b64url = (data: string | Buffer): string => Buffer.from(data).toString('base64url');

function makeToken(header: object, payload: object, signer: (input: Buffer) => Buffer): string {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  return `${input}.${b64url(signer(Buffer.from(input)))}`;
}

function tamper(token: string): string {
  const parts = token.split('.');
  const payload = JSON.parse(Buffer.from(parts[1] ?? '', 'base64url').toString()) as Record<string, unknown>;
  payload['sub'] = 'mallory';
  return [parts[0], b64url(JSON.stringify(payload)), parts[2]].join('.');
}

function spkiPem(key: KeyObject): string {
  return key.export({ type: 'spki', format: 'pem' }).toString();
}

function hasTool(binary: string, args: string[]): boolean {
  try {
    execFileSync(binary, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function opaOrUndefined(): string | undefined {
  try {
    return findOpa();
  } catch {
    return undefined;
  }
}

async function buildWasm(opa: string, rego: string, entrypoints: readonly string[]): Promise<Buffer> {
  const dir = mkdtempSync(join(tmpdir(), 'pavilion-builtins-'));
  try {
    writeFileSync(join(dir, 'policy.rego'), rego);
    const out = join(dir, 'bundle.tar.gz');
    await new Promise<void>((resolve, reject) => {
      execFile(opa, ['build', '-t', 'wasm', ...entrypoints.flatMap((e) => ['-e', e]), '-o', out, join(dir, 'policy.rego')], (error, _stdout, stderr) =>
        error === null ? resolve() : reject(new PavilionError(ErrorCodes.BUNDLE_BUILD_FAILED, stderr)),
      );
    });
    const wasm = extractFromTarGz(readFileSync(out), '/policy.wasm');
    assert.ok(wasm, 'bundle contains policy.wasm');
    return wasm;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('the host builtin table', () => {
  test('provides every required builtin', () => {
    const required = [
      'time.now_ns', 'time.parse_rfc3339_ns', 'time.parse_ns', 'time.parse_duration_ns', 'time.date', 'time.clock',
      'time.weekday', 'time.add_date', 'time.diff', 'io.jwt.decode', 'io.jwt.decode_verify', 'io.jwt.verify_rs256',
      'io.jwt.verify_rs384', 'io.jwt.verify_rs512', 'io.jwt.verify_ps256', 'io.jwt.verify_ps384', 'io.jwt.verify_ps512',
      'io.jwt.verify_es256', 'io.jwt.verify_es384', 'io.jwt.verify_es512', 'io.jwt.verify_eddsa', 'io.jwt.verify_hs256',
      'io.jwt.verify_hs384', 'io.jwt.verify_hs512', 'crypto.sha256', 'crypto.sha1', 'crypto.md5', 'crypto.hmac.sha256',
      'crypto.hmac.sha1', 'crypto.hmac.sha512', 'crypto.hmac.md5', 'crypto.hmac.equal', 'crypto.x509.parse_certificates',
      'json.patch', 'object.keys', 'units.parse', 'units.parse_bytes', 'semver.compare', 'semver.is_valid',
      'urlquery.encode', 'urlquery.decode', 'urlquery.encode_object', 'urlquery.decode_object', 'hex.encode',
      'hex.decode', 'uuid.rfc4122', 'net.cidr_merge', 'regex.replace',
    ];
    const table = builtinsAt();
    for (const name of required) {
      assert.ok(HOST_BUILTIN_NAMES.has(name), `${name} is in HOST_BUILTIN_NAMES`);
      assert.equal(typeof table[name], 'function', `${name} is in the table`);
    }
    assert.deepEqual(new Set(Object.keys(table)), HOST_BUILTIN_NAMES);
  });

  test('lists the builtins that make a decision uncacheable', () => {
    for (const name of ['time.now_ns', 'io.jwt.decode_verify', 'uuid.rfc4122', 'rand.intn', 'http.send', 'opa.runtime', 'net.lookup_ip_addr']) {
      assert.ok(NON_DETERMINISTIC_BUILTINS.has(name), name);
    }
    assert.ok(!NON_DETERMINISTIC_BUILTINS.has('time.parse_ns'));
  });

  test('invalid operands give undefined, never an exception', () => {
    const table = builtinsAt();
    const odd: unknown[] = [undefined, null, true, 0, -1, 1.5, 2 ** 70, '', 'x', '%', [], [null], {}, { a: [] }];
    for (const [name, fn] of Object.entries(table)) {
      for (const a of odd) {
        for (const b of [undefined, null, 'x', {}, 3]) {
          assert.doesNotThrow(() => fn(a, b, b, b), `${name}(${String(a)}, ${String(b)})`);
        }
      }
    }
    assert.equal(call('time.parse_ns', 1, 'x'), undefined);
    assert.equal(call('io.jwt.decode', 'not-a-token'), undefined);
    assert.equal(call('units.parse_bytes', '12 kb'), undefined);
    assert.equal(call('regex.replace', 'a', '(?=a)', 'b'), undefined);
  });
});

describe('time', () => {
  test('time.now_ns returns the context time exactly, as raw JSON', () => {
    assert.equal(rawText(call('time.now_ns')), NOW_NS.toString());
  });

  test('time.now_ns follows the current evaluation context', () => {
    let context: EvaluationContext = { nowNs: 1n };
    const table = createHostBuiltins(() => context);
    const now = table['time.now_ns'] as () => unknown;
    assert.equal(rawText(now()), '1');
    assert.equal(rawText(now()), '1');
    context = { nowNs: 2n ** 62n };
    assert.equal(rawText(now()), (2n ** 62n).toString());
  });

  test('results beyond 2^53 are exact', () => {
    assert.equal(rawText(call('time.parse_rfc3339_ns', '2262-04-11T23:47:16.854775807Z')), '9223372036854775807');
    assert.equal(rawText(call('time.parse_ns', 'RFC3339', '1677-09-21T00:12:43.145224192Z')), '-9223372036854775808');
    assert.equal(rawText(call('time.parse_duration_ns', '2562047h47m16.854775807s')), '9223372036854775807');
    assert.equal(call('time.parse_duration_ns', '1.5d'), 36 * 3600 * 1e9);
    assert.equal(call('time.parse_rfc3339_ns', '2262-04-11T23:47:16.854775808Z'), undefined);
  });

  test('Go layouts, zones and calendar arithmetic', () => {
    assert.deepEqual(call('time.date', [1517814000000000000, 'America/Los_Angeles']), [2018, 2, 4]);
    assert.equal(call('time.weekday', 1517832000000000000), 'Monday');
    assert.equal(call('time.format', [1670006453000000000, 'Asia/Kolkata', 'Mon Jan 02 15:04:05 -0700 2006']), 'Sat Dec 03 00:10:53 +0530 2022');
    assert.deepEqual(call('time.diff', 1582934400000000000, 1614556800000000000), [1, 0, 1, 0, 0, 0]);
    assert.equal(call('time.add_date', 0, 0, 1, 30), 86400 * 61 * 1e9);
  });
});

describe('exact integers through Wasm', () => {
  const opa = opaOrUndefined();
  test('time.now_ns is fixed within an evaluation and reaches Rego exactly', { skip: opa === undefined && 'opa CLI not found' }, async () => {
    // Rego compares numbers exactly; the double nearest to NOW_NS is NOW_NS - 21.
    const rego = `package t
exact if time.now_ns() == ${NOW_NS}
next if time.now_ns() == ${NOW_NS + 1n}
rounded if time.now_ns() == ${BigInt(Number(NOW_NS))}
same if time.now_ns() == time.now_ns()
max_exact if time.parse_rfc3339_ns("2262-04-11T23:47:16.854775807Z") == 9223372036854775807
`;
    const entrypoints = ['t/exact', 't/next', 't/rounded', 't/same', 't/max_exact'];
    const wasm = await buildWasm(opa as string, rego, entrypoints);
    let context: EvaluationContext = { nowNs: NOW_NS };
    const policy = await loadPolicy(wasm, { initial: 5 }, createHostBuiltins(() => context));
    const defined = (): string[] => entrypoints.filter((e) => (policy.evaluate({}, e) as unknown[]).length > 0);
    assert.deepEqual(defined(), ['t/exact', 't/same', 't/max_exact']);
    context = { nowNs: NOW_NS + 1n };
    assert.deepEqual(defined(), ['t/next', 't/same', 't/max_exact']);
  });
});

describe('JWT verification with generated keys', () => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const ed = generateKeyPairSync('ed25519');
  const payload = { sub: 'alice', iss: 'issuer', aud: 'pavilion', exp: NOW_S + 60, nbf: NOW_S - 60 };

  const cases: Array<{ alg: string; builtin: string; key: string; signer: (input: Buffer) => Buffer }> = [
    { alg: 'RS256', builtin: 'io.jwt.verify_rs256', key: spkiPem(rsa.publicKey), signer: (d) => sign('sha256', d, rsa.privateKey) },
    {
      alg: 'PS256',
      builtin: 'io.jwt.verify_ps256',
      key: spkiPem(rsa.publicKey),
      signer: (d) => sign('sha256', d, { key: rsa.privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }),
    },
    { alg: 'ES256', builtin: 'io.jwt.verify_es256', key: spkiPem(ec.publicKey), signer: (d) => sign('sha256', d, { key: ec.privateKey, dsaEncoding: 'ieee-p1363' }) },
    { alg: 'EdDSA', builtin: 'io.jwt.verify_eddsa', key: spkiPem(ed.publicKey), signer: (d) => sign(null, d, ed.privateKey) },
    { alg: 'HS256', builtin: 'io.jwt.verify_hs256', key: 'shared secret', signer: (d) => createHmac('sha256', 'shared secret').update(d).digest() },
  ];

  for (const c of cases) {
    test(`${c.alg}: valid token verifies, tampered and foreign tokens do not`, () => {
      const token = makeToken({ alg: c.alg, typ: 'JWT' }, payload, c.signer);
      assert.equal(call(c.builtin, token, c.key), true);
      assert.equal(call(c.builtin, tamper(token), c.key), false);
      const other = cases.find((x) => x.alg !== c.alg && x.alg !== 'PS256' && x.alg !== 'RS256') ?? cases[0];
      assert.equal(call(c.builtin, makeToken({ alg: c.alg }, payload, (other as (typeof cases)[number]).signer), c.key), false);
      const constraints = c.alg === 'HS256' ? { secret: c.key } : { cert: c.key };
      const verified = call('io.jwt.decode_verify', token, { ...constraints, aud: 'pavilion' }) as unknown[];
      assert.equal(verified[0], true);
      assert.deepEqual(verified[2], payload);
      assert.deepEqual(call('io.jwt.decode_verify', tamper(token), { ...constraints, aud: 'pavilion' }), [false, {}, {}]);
    });
  }

  test('JWK Sets: the key with the matching kid is used', () => {
    const jwks = JSON.stringify({
      keys: [
        { ...ec.publicKey.export({ format: 'jwk' }), kid: 'ec-1', alg: 'ES256' },
        { ...rsa.publicKey.export({ format: 'jwk' }), kid: 'rsa-1' },
      ],
    });
    const token = makeToken({ alg: 'RS256', kid: 'rsa-1' }, payload, (d) => sign('sha256', d, rsa.privateKey));
    assert.equal(call('io.jwt.verify_rs256', token, jwks), true);
    const wrongKid = makeToken({ alg: 'RS256', kid: 'ec-1' }, payload, (d) => sign('sha256', d, rsa.privateKey));
    assert.equal(call('io.jwt.verify_rs256', wrongKid, jwks), false);
  });

  test('decode_verify checks exp and nbf against the context time', () => {
    const signer = (d: Buffer): Buffer => createHmac('sha256', 'k').update(d).digest();
    const token = makeToken({ alg: 'HS256' }, { exp: NOW_S + 10, nbf: NOW_S - 10 }, signer);
    const at = (nowNs: bigint): unknown => (builtinsAt(nowNs)['io.jwt.decode_verify'] as (...a: unknown[]) => unknown)(token, { secret: 'k' });
    assert.equal((at(NOW_NS) as unknown[])[0], true);
    assert.deepEqual(at(BigInt(NOW_S + 10) * 1_000_000_000n), [false, {}, {}], 'expired at exp');
    assert.deepEqual(at(BigInt(NOW_S - 11) * 1_000_000_000n), [false, {}, {}], 'not yet valid before nbf');
    assert.equal((call('io.jwt.decode_verify', token, { secret: 'k', time: (NOW_S + 5) * 1e9 }) as unknown[])[0], true);
    assert.deepEqual(call('io.jwt.decode_verify', token, { secret: 'k', time: (NOW_S + 20) * 1e9 }), [false, {}, {}]);
    assert.equal(call('io.jwt.decode_verify', token, { secret: 'k', unknown: 1 }), undefined);
  });

  test('encode_sign output verifies with the matching public key', () => {
    for (const [alg, pair] of [['ES256', ec], ['PS256', rsa], ['RS256', rsa], ['EdDSA', ed]] as const) {
      const token = call('io.jwt.encode_sign', { alg }, { sub: 'x' }, pair.privateKey.export({ format: 'jwk' }));
      assert.equal(typeof token, 'string', alg);
      assert.equal((call('io.jwt.decode_verify', token, { cert: spkiPem(pair.publicKey) }) as unknown[])[0], true, alg);
    }
  });
});

describe('X.509', () => {
  const haveOpenssl = hasTool('openssl', ['version']);
  const dir = mkdtempSync(join(tmpdir(), 'pavilion-x509-'));
  let certPem = '';
  let keyPem = '';
  if (haveOpenssl) {
    execFileSync(
      'openssl',
      [
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
        '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
        '-subj', '/C=DE/O=Pavilion Test/CN=builtins.test',
        '-addext', 'subjectAltName=DNS:builtins.test,DNS:*.builtins.test,IP:10.0.0.1,URI:spiffe://pavilion/test',
        '-addext', 'extendedKeyUsage=serverAuth',
      ],
      { stdio: 'ignore' },
    );
    certPem = readFileSync(join(dir, 'cert.pem'), 'utf8');
    keyPem = readFileSync(join(dir, 'key.pem'), 'utf8');
  }
  rmSync(dir, { recursive: true, force: true });

  test('parse_certificates reads a self-signed certificate', { skip: !haveOpenssl && 'openssl not found' }, () => {
    const result = call('crypto.x509.parse_certificates', certPem);
    const certs = JSON.parse(rawText(result)) as Array<Record<string, unknown>>;
    assert.equal(certs.length, 1);
    const cert = certs[0] as Record<string, unknown>;
    assert.equal((cert['Subject'] as Record<string, unknown>)['CommonName'], 'builtins.test');
    assert.deepEqual((cert['Subject'] as Record<string, unknown>)['Organization'], ['Pavilion Test']);
    assert.deepEqual(cert['DNSNames'], ['builtins.test', '*.builtins.test']);
    assert.deepEqual(cert['IPAddresses'], ['10.0.0.1']);
    assert.deepEqual(cert['URIStrings'], ['spiffe://pavilion/test']);
    assert.deepEqual(cert['ExtKeyUsage'], [1]);
    assert.equal(cert['PublicKeyAlgorithm'], 3);
    const serialHex = execFileSync('openssl', ['x509', '-noout', '-serial'], { input: certPem, encoding: 'utf8' }).trim().split('=')[1];
    const serialText = /"SerialNumber":(-?\d+)/.exec(rawText(result))?.[1];
    assert.equal(serialText, BigInt(`0x${serialHex}`).toString(), 'serial number is exact');
    assert.equal(call('crypto.x509.parse_certificates', Buffer.from(certPem).toString('base64')) instanceof ArrayBuffer, true);
    assert.equal(call('crypto.x509.parse_certificates', 'YmFkc3RyaW5n'), undefined);
  });

  const opa = opaOrUndefined();
  test('parse_certificates matches opa eval field by field', { skip: (!haveOpenssl || opa === undefined) && 'openssl or opa not found' }, () => {
    const work = mkdtempSync(join(tmpdir(), 'pavilion-x509-eval-'));
    try {
      writeFileSync(join(work, 'input.json'), JSON.stringify({ c: certPem }));
      const out = execFileSync(opa as string, ['eval', '-f', 'raw', '-i', join(work, 'input.json'), 'crypto.x509.parse_certificates(input.c)'], {
        encoding: 'utf8',
      });
      const expected = JSON.parse(out) as unknown;
      const ours = JSON.parse(rawText(call('crypto.x509.parse_certificates', certPem))) as unknown;
      assert.deepEqual(ours, expected);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });

  test('a certificate verifies JWTs signed with its key', { skip: !haveOpenssl && 'openssl not found' }, () => {
    const token = makeToken({ alg: 'ES256' }, { sub: 'svc' }, (d) => sign('sha256', d, { key: keyPem, dsaEncoding: 'ieee-p1363' }));
    assert.equal(call('io.jwt.verify_es256', token, certPem), true);
    assert.equal(call('io.jwt.verify_es256', tamper(token), certPem), false);
    assert.equal(call('io.jwt.verify_es256', token, `${certPem}\n`), undefined, 'data after the PEM block is an error, as in OPA');
  });
});

describe('per-evaluation memoisation', () => {
  test('uuid.rfc4122 is stable within an evaluation and fresh in the next', () => {
    let context: EvaluationContext = { nowNs: 0n };
    const table = createHostBuiltins(() => context);
    const uuid = table['uuid.rfc4122'] as (key: unknown) => unknown;
    const first = uuid('a');
    assert.match(String(first), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(uuid('a'), first);
    assert.notEqual(uuid('b'), first);
    context = { nowNs: 0n };
    assert.notEqual(uuid('a'), first);
  });

  test('rand.intn stays in range and is stable within an evaluation', () => {
    const table = builtinsAt();
    const intn = table['rand.intn'] as (s: unknown, n: unknown) => unknown;
    const value = intn('seed', 10);
    assert.ok(typeof value === 'number' && value >= 0 && value < 10);
    assert.equal(intn('seed', 10), value);
    assert.equal(intn('seed', 0), 0);
    assert.equal(intn('seed', 1.5), undefined);
  });
});

describe('Go semantics that differ from JavaScript', () => {
  test('regex.replace follows Go: RE2 syntax, empty matches and $name templates', () => {
    assert.equal(call('regex.replace', 'baaac', 'a*', 'X'), 'XbXcX');
    assert.equal(call('regex.replace', 'foo bar', '(?P<first>\\w+) (\\w+)', '$2 ${first}'), 'bar foo');
    assert.equal(call('regex.replace', 'foo bar', '(\\w+) (\\w+)', '$1x-$2'), '-bar', '$1x names group "1x", which does not exist');
    assert.equal(call('regex.replace', 'A\r\nb', '(?s)a.', '-'), 'A\r\nb');
    assert.equal(call('regex.replace', 'a\rb', 'a.b', '-'), '-', 'Go . matches \\r');
    assert.equal(call('regex.replace', 'x{y}', 'x{', '-'), '-y}', 'a lone brace is literal in RE2');
    assert.equal(call('regex.replace', 'a\u000bb', 'a\\sb', '-'), 'a\u000bb', 'Go \\s excludes \\v');
  });

  test('units, semver and cidr merge', () => {
    assert.equal(call('units.parse_bytes', '0.3kb'), 300);
    assert.equal(rawText(call('units.parse', '10Ei')), (10n * 1024n ** 6n).toString());
    assert.equal(call('semver.compare', '1.0.0-rc.10', '1.0.0-rc.2'), 1);
    assert.deepEqual(call('net.cidr_merge', ['10.0.0.0/24', '10.0.1.0/24']), ['10.0.0.0/23']);
    assert.deepEqual(call('net.cidr_merge', ['10.0.0.1']), ['10.0.0.1/8'], 'a bare address takes its classful mask, as in OPA');
    assert.deepEqual(call('net.cidr_merge', ['192.0.128.0/24', '192.0.129.0/24', '2001:db8::/33', '2001:db8:8000::/33']), [
      '192.0.128.0/23',
      '2001:db8::/32',
    ]);
  });
});
