/**
 * crypto.x509.parse_certificates' result shape: OPA marshals Go's x509.Certificate (plus its
 * own URIStrings field) to JSON, so this module reads the certificate's DER and produces the
 * same field names and encodings (byte slices as base64, big integers exactly, OIDs as arc
 * arrays, times as RFC 3339, Go's enum numbers for algorithms and usages). Each certificate is
 * also loaded by node:crypto's X509Certificate, which rejects malformed input.
 *
 * Input, as in OPA's getX509CertsFromString: PEM text, or base64 of PEM, or base64 of one or
 * more concatenated DER certificates.
 *
 * Known limits: URIs are described by a simplified net/url parse (URIStrings repeats the SAN
 * text as written, where Go re-serialises it); attribute values that are not strings appear as
 * base64 of their DER content; public keys other than RSA, ECDSA and Ed25519 are null.
 */
import { X509Certificate } from 'node:crypto';
import {
  TAG,
  type Tlv,
  children,
  contents,
  derError,
  expect,
  isContext,
  isUniversal,
  oidString,
  readBitString,
  readInteger,
  readOid,
  readString,
  readTime,
  readTlv,
  whole,
} from './asn1.ts';
import { exactInteger, goBase64Decode } from './common.ts';
import { decodePem } from './keys.ts';
import { ipString } from './net.ts';

type Json = Record<string, unknown>;

const SIGNATURE_ALGORITHMS: Readonly<Record<string, number>> = {
  '1.2.840.113549.1.1.2': 1,
  '1.2.840.113549.1.1.4': 2,
  '1.2.840.113549.1.1.5': 3,
  '1.3.14.3.2.29': 3,
  '1.2.840.113549.1.1.11': 4,
  '1.2.840.113549.1.1.12': 5,
  '1.2.840.113549.1.1.13': 6,
  '1.2.840.10040.4.3': 7,
  '2.16.840.1.101.3.4.3.2': 8,
  '1.2.840.10045.4.1': 9,
  '1.2.840.10045.4.3.2': 10,
  '1.2.840.10045.4.3.3': 11,
  '1.2.840.10045.4.3.4': 12,
  '1.3.101.112': 16,
};

const PSS_BY_HASH: Readonly<Record<string, number>> = {
  '2.16.840.1.101.3.4.2.1': 13,
  '2.16.840.1.101.3.4.2.2': 14,
  '2.16.840.1.101.3.4.2.3': 15,
};

const PUBLIC_KEY_ALGORITHMS: Readonly<Record<string, number>> = {
  '1.2.840.113549.1.1.1': 1,
  '1.2.840.10040.4.1': 2,
  '1.2.840.10045.2.1': 3,
  '1.3.101.112': 4,
};

const CURVE_SIZES: Readonly<Record<string, number>> = {
  '1.2.840.10045.3.1.7': 32,
  '1.3.132.0.34': 48,
  '1.3.132.0.35': 66,
  '1.3.132.0.33': 28,
};

const EXT_KEY_USAGES: Readonly<Record<string, number>> = {
  '2.5.29.37.0': 0,
  '1.3.6.1.5.5.7.3.1': 1,
  '1.3.6.1.5.5.7.3.2': 2,
  '1.3.6.1.5.5.7.3.3': 3,
  '1.3.6.1.5.5.7.3.4': 4,
  '1.3.6.1.5.5.7.3.5': 5,
  '1.3.6.1.5.5.7.3.6': 6,
  '1.3.6.1.5.5.7.3.7': 7,
  '1.3.6.1.5.5.7.3.8': 8,
  '1.3.6.1.5.5.7.3.9': 9,
  '1.3.6.1.4.1.311.10.3.3': 10,
  '2.16.840.1.113730.4.1': 11,
  '1.3.6.1.4.1.311.2.1.22': 12,
  '1.3.6.1.4.1.311.61.1.1': 13,
};

/** pkix.Name fields filled from well-known attribute types. */
const NAME_FIELDS: Readonly<Record<string, readonly [string, boolean]>> = {
  '2.5.4.6': ['Country', true],
  '2.5.4.10': ['Organization', true],
  '2.5.4.11': ['OrganizationalUnit', true],
  '2.5.4.3': ['CommonName', false],
  '2.5.4.5': ['SerialNumber', false],
  '2.5.4.7': ['Locality', true],
  '2.5.4.8': ['Province', true],
  '2.5.4.9': ['StreetAddress', true],
  '2.5.4.17': ['PostalCode', true],
};

/** Extensions Go's x509 parser handles (others that are critical are reported as unhandled). */
const HANDLED_EXTENSIONS = new Set([
  '2.5.29.15',
  '2.5.29.19',
  '2.5.29.17',
  '2.5.29.30',
  '2.5.29.31',
  '2.5.29.35',
  '2.5.29.36',
  '2.5.29.37',
  '2.5.29.14',
  '2.5.29.32',
  '2.5.29.33',
  '2.5.29.54',
  '1.3.6.1.5.5.7.1.1',
]);

function b64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64');
}

function parseName(buf: Buffer, name: Tlv): Json {
  const out: Json = {
    Country: null,
    Organization: null,
    OrganizationalUnit: null,
    Locality: null,
    Province: null,
    StreetAddress: null,
    PostalCode: null,
    SerialNumber: '',
    CommonName: '',
    Names: null,
    ExtraNames: null,
  };
  const names: Json[] = [];
  for (const rdn of children(buf, expect(name, TAG.SEQUENCE))) {
    for (const atv of children(buf, expect(rdn, TAG.SET))) {
      const [typeTlv, valueTlv] = children(buf, expect(atv, TAG.SEQUENCE));
      const type = readOid(buf, expect(typeTlv, TAG.OID));
      if (valueTlv === undefined) throw derError('attribute without value');
      const value = readString(buf, valueTlv);
      names.push({ Type: type, Value: value ?? b64(contents(buf, valueTlv)) });
      if (value === undefined) continue;
      const field = NAME_FIELDS[oidString(type)];
      if (field === undefined) continue;
      const [key, multi] = field;
      if (multi) out[key] = [...((out[key] as string[] | null) ?? []), value];
      else out[key] = value;
    }
  }
  out['Names'] = names.length > 0 ? names : null;
  return out;
}

/** Go's net.IP.String, including its "?<hex>" for lengths that are not an address. */
function ipText(bytes: Buffer): string {
  return bytes.length === 4 || bytes.length === 16 ? ipString(bytes) : `?${bytes.toString('hex')}`;
}

/** A simplified net/url.Parse, shaped like Go's url.URL JSON. */
function goUrl(text: string): Json {
  let rest = text;
  let fragment = '';
  const hash = rest.indexOf('#');
  if (hash >= 0) {
    fragment = rest.slice(hash + 1);
    rest = rest.slice(0, hash);
  }
  let scheme = '';
  const schemeMatch = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(rest);
  if (schemeMatch !== null) {
    scheme = (schemeMatch[1] ?? '').toLowerCase();
    rest = rest.slice(schemeMatch[0].length);
  }
  let rawQuery = '';
  let forceQuery = false;
  if (rest.endsWith('?') && rest.split('?').length === 2) {
    forceQuery = true;
    rest = rest.slice(0, -1);
  } else {
    const q = rest.indexOf('?');
    if (q >= 0) {
      rawQuery = rest.slice(q + 1);
      rest = rest.slice(0, q);
    }
  }
  let opaque = '';
  let host = '';
  let user: Json | null = null;
  let omitHost = false;
  if (!rest.startsWith('/') && scheme !== '') {
    opaque = rest;
    rest = '';
  } else if (rest.startsWith('//') && !rest.startsWith('///')) {
    const slash = rest.indexOf('/', 2);
    const authority = slash < 0 ? rest.slice(2) : rest.slice(2, slash);
    rest = slash < 0 ? '' : rest.slice(slash);
    const at = authority.lastIndexOf('@');
    if (at >= 0) user = {};
    host = at >= 0 ? authority.slice(at + 1) : authority;
  } else if (rest.startsWith('///') && scheme !== '') {
    omitHost = true;
    rest = rest.slice(2);
  }
  let path = rest;
  let rawPath = '';
  try {
    path = decodeURIComponent(rest);
    if (path !== rest && encodeURI(path) !== rest) rawPath = rest;
  } catch {
    path = rest;
  }
  let decodedFragment = fragment;
  try {
    decodedFragment = decodeURIComponent(fragment);
  } catch {
    decodedFragment = fragment;
  }
  return {
    Scheme: scheme,
    Opaque: opaque,
    User: user,
    Host: host,
    Path: path,
    RawPath: rawPath,
    OmitHost: omitHost,
    ForceQuery: forceQuery,
    RawQuery: rawQuery,
    Fragment: decodedFragment,
    RawFragment: decodedFragment !== fragment ? fragment : '',
  };
}

interface GeneralNames {
  dns: string[];
  email: string[];
  ip: string[];
  uris: string[];
}

function generalNames(buf: Buffer, seq: Tlv): GeneralNames {
  const out: GeneralNames = { dns: [], email: [], ip: [], uris: [] };
  for (const name of children(buf, seq)) {
    if (name.cls !== 2) continue;
    const bytes = contents(buf, name);
    switch (name.tag) {
      case 1:
        out.email.push(bytes.toString('latin1'));
        break;
      case 2:
        out.dns.push(bytes.toString('latin1'));
        break;
      case 6:
        out.uris.push(bytes.toString('latin1'));
        break;
      case 7:
        if (bytes.length !== 4 && bytes.length !== 16) throw derError('invalid IP length');
        out.ip.push(ipText(bytes));
        break;
      default:
        break;
    }
  }
  return out;
}

function orNull<T>(list: T[]): T[] | null {
  return list.length > 0 ? list : null;
}

function publicKeyInfo(buf: Buffer, spki: Tlv): { algorithm: number; key: unknown } {
  const [algTlv, keyTlv] = children(buf, expect(spki, TAG.SEQUENCE));
  const [oidTlv, paramsTlv] = children(buf, expect(algTlv, TAG.SEQUENCE));
  const oid = oidString(readOid(buf, expect(oidTlv, TAG.OID)));
  const algorithm = PUBLIC_KEY_ALGORITHMS[oid] ?? 0;
  const { bytes } = readBitString(buf, expect(keyTlv, TAG.BIT_STRING));
  if (algorithm === 1) {
    const rsa = readTlv(bytes, 0);
    const [n, e] = children(bytes, rsa);
    return {
      algorithm,
      key: { N: exactInteger(readInteger(bytes, expect(n, TAG.INTEGER))), E: exactInteger(readInteger(bytes, expect(e, TAG.INTEGER))) },
    };
  }
  if (algorithm === 3) {
    const curve = paramsTlv !== undefined && isUniversal(paramsTlv, TAG.OID) ? oidString(readOid(buf, paramsTlv)) : '';
    const size = CURVE_SIZES[curve];
    if (size === undefined || bytes[0] !== 4 || bytes.length !== 1 + 2 * size) throw derError('unsupported EC key');
    const coordinate = (b: Buffer): bigint => BigInt(`0x${b.toString('hex')}`);
    return { algorithm, key: { Curve: {}, X: coordinate(bytes.subarray(1, 1 + size)), Y: coordinate(bytes.subarray(1 + size)) } };
  }
  if (algorithm === 4) return { algorithm, key: b64(bytes) };
  return { algorithm, key: null };
}

const PSS_SALT_BY_HASH: Readonly<Record<string, number>> = {
  '2.16.840.1.101.3.4.2.1': 32,
  '2.16.840.1.101.3.4.2.2': 48,
  '2.16.840.1.101.3.4.2.3': 64,
};

/** An AlgorithmIdentifier's OID, and whether its parameters are absent or NULL. */
function algorithmIdentifier(buf: Buffer, tlv: Tlv | undefined): { oid: string; plainParams: boolean } {
  const [oidTlv, params] = children(buf, expect(tlv, TAG.SEQUENCE));
  const oid = oidString(readOid(buf, expect(oidTlv, TAG.OID)));
  return { oid, plainParams: params === undefined || isUniversal(params, TAG.NULL) };
}

/** Go's x509 SignatureAlgorithm; RSASSA-PSS only with MGF1 over the same hash and salt = hash size. */
function signatureAlgorithm(buf: Buffer, algId: Tlv): number {
  const [oidTlv, params] = children(buf, expect(algId, TAG.SEQUENCE));
  const oid = oidString(readOid(buf, expect(oidTlv, TAG.OID)));
  if (oid !== '1.2.840.113549.1.1.10') return SIGNATURE_ALGORITHMS[oid] ?? 0;
  try {
    const fields = children(buf, expect(params, TAG.SEQUENCE));
    const explicit = (tag: number): Tlv | undefined => {
      const field = fields.find((t) => isContext(t, tag));
      return field === undefined ? undefined : children(buf, field)[0];
    };
    const hash = algorithmIdentifier(buf, explicit(0));
    const mgfFields = children(buf, expect(explicit(1), TAG.SEQUENCE));
    const mgfOid = oidString(readOid(buf, expect(mgfFields[0], TAG.OID)));
    const mgfHash = algorithmIdentifier(buf, mgfFields[1]);
    const saltTlv = explicit(2);
    const trailerTlv = explicit(3);
    const salt = Number(readInteger(buf, expect(saltTlv, TAG.INTEGER)));
    const trailer = trailerTlv === undefined ? 1 : Number(readInteger(buf, expect(trailerTlv, TAG.INTEGER)));
    if (!hash.plainParams || mgfOid !== '1.2.840.113549.1.1.8' || mgfHash.oid !== hash.oid || !mgfHash.plainParams || trailer !== 1) {
      return 0;
    }
    return PSS_SALT_BY_HASH[hash.oid] === salt ? (PSS_BY_HASH[hash.oid] ?? 0) : 0;
  } catch {
    return 0;
  }
}

function parseExtensions(buf: Buffer, list: Tlv, out: Json): void {
  const extensions: Json[] = [];
  const unhandled: number[][] = [];
  for (const ext of children(buf, expect(list, TAG.SEQUENCE))) {
    const fields = children(buf, expect(ext, TAG.SEQUENCE));
    const id = readOid(buf, expect(fields[0], TAG.OID));
    let critical = false;
    let valueTlv = fields[1];
    if (valueTlv !== undefined && isUniversal(valueTlv, TAG.BOOLEAN)) {
      critical = contents(buf, valueTlv)[0] !== 0;
      valueTlv = fields[2];
    }
    const value = contents(buf, expect(valueTlv, TAG.OCTET_STRING));
    extensions.push({ Id: id, Critical: critical, Value: b64(value) });
    const oid = oidString(id);
    let handled = HANDLED_EXTENSIONS.has(oid);
    const inner = (): Tlv => readTlv(value, 0);
    switch (oid) {
      case '2.5.29.15': {
        const { bytes, bitLength } = readBitString(value, expect(inner(), TAG.BIT_STRING));
        let usage = 0;
        for (let i = 0; i < 9 && i < bitLength; i++) {
          if ((((bytes[i >> 3] as number) >> (7 - (i & 7))) & 1) === 1) usage |= 1 << i;
        }
        out['KeyUsage'] = usage;
        break;
      }
      case '2.5.29.19': {
        const parts = children(value, expect(inner(), TAG.SEQUENCE));
        let isCA = false;
        let maxPathLen = -1;
        for (const part of parts) {
          if (isUniversal(part, TAG.BOOLEAN)) isCA = contents(value, part)[0] !== 0;
          else if (isUniversal(part, TAG.INTEGER)) maxPathLen = Number(readInteger(value, part));
        }
        out['BasicConstraintsValid'] = true;
        out['IsCA'] = isCA;
        out['MaxPathLen'] = maxPathLen;
        out['MaxPathLenZero'] = maxPathLen === 0;
        break;
      }
      case '2.5.29.17': {
        const names = generalNames(value, expect(inner(), TAG.SEQUENCE));
        out['DNSNames'] = orNull(names.dns);
        out['EmailAddresses'] = orNull(names.email);
        out['IPAddresses'] = orNull(names.ip);
        out['URIs'] = orNull(names.uris.map(goUrl));
        out['URIStrings'] = orNull(names.uris);
        if (names.dns.length + names.email.length + names.ip.length + names.uris.length === 0) handled = false;
        break;
      }
      case '2.5.29.30': {
        out['PermittedDNSDomainsCritical'] = critical;
        for (const subtrees of children(value, expect(inner(), TAG.SEQUENCE))) {
          const prefix = isContext(subtrees, 0) ? 'Permitted' : isContext(subtrees, 1) ? 'Excluded' : undefined;
          if (prefix === undefined) continue;
          const dns: string[] = [];
          const ips: Json[] = [];
          const emails: string[] = [];
          const uris: string[] = [];
          for (const subtree of children(value, subtrees)) {
            const [base] = children(value, expect(subtree, TAG.SEQUENCE));
            if (base === undefined || base.cls !== 2) continue;
            const bytes = contents(value, base);
            if (base.tag === 2) dns.push(bytes.toString('latin1'));
            else if (base.tag === 1) emails.push(bytes.toString('latin1'));
            else if (base.tag === 6) uris.push(bytes.toString('latin1'));
            else if (base.tag === 7) {
              const half = bytes.length / 2;
              ips.push({ IP: ipText(bytes.subarray(0, half)), Mask: b64(bytes.subarray(half)) });
            }
          }
          out[`${prefix}DNSDomains`] = orNull(dns);
          out[`${prefix}IPRanges`] = orNull(ips);
          out[`${prefix}EmailAddresses`] = orNull(emails);
          out[`${prefix}URIDomains`] = orNull(uris);
        }
        break;
      }
      case '2.5.29.31': {
        const urls: string[] = [];
        for (const point of children(value, expect(inner(), TAG.SEQUENCE))) {
          const dpName = children(value, point).find((t) => isContext(t, 0));
          if (dpName === undefined) continue;
          const fullName = children(value, dpName).find((t) => isContext(t, 0));
          if (fullName === undefined) continue;
          for (const name of children(value, fullName)) {
            if (isContext(name, 6)) urls.push(contents(value, name).toString('latin1'));
          }
        }
        out['CRLDistributionPoints'] = orNull(urls);
        break;
      }
      case '2.5.29.35': {
        const keyId = children(value, expect(inner(), TAG.SEQUENCE)).find((t) => isContext(t, 0));
        if (keyId !== undefined) out['AuthorityKeyId'] = b64(contents(value, keyId));
        break;
      }
      case '2.5.29.14':
        out['SubjectKeyId'] = b64(contents(value, expect(inner(), TAG.OCTET_STRING)));
        break;
      case '2.5.29.37': {
        const known: number[] = [];
        const unknown: number[][] = [];
        for (const usage of children(value, expect(inner(), TAG.SEQUENCE))) {
          const arcs = readOid(value, expect(usage, TAG.OID));
          const code = EXT_KEY_USAGES[oidString(arcs)];
          if (code === undefined) unknown.push(arcs);
          else known.push(code);
        }
        out['ExtKeyUsage'] = orNull(known);
        out['UnknownExtKeyUsage'] = orNull(unknown);
        break;
      }
      case '2.5.29.32': {
        const ids: number[][] = [];
        for (const info of children(value, expect(inner(), TAG.SEQUENCE))) {
          const [policy] = children(value, expect(info, TAG.SEQUENCE));
          ids.push(readOid(value, expect(policy, TAG.OID)));
        }
        out['PolicyIdentifiers'] = orNull(ids);
        out['Policies'] = orNull(ids.map(oidString));
        break;
      }
      case '2.5.29.33': {
        const mappings: Json[] = [];
        for (const mapping of children(value, expect(inner(), TAG.SEQUENCE))) {
          const [issuer, subject] = children(value, expect(mapping, TAG.SEQUENCE));
          mappings.push({
            IssuerDomainPolicy: oidString(readOid(value, expect(issuer, TAG.OID))),
            SubjectDomainPolicy: oidString(readOid(value, expect(subject, TAG.OID))),
          });
        }
        out['PolicyMappings'] = orNull(mappings);
        break;
      }
      case '2.5.29.36':
        for (const part of children(value, expect(inner(), TAG.SEQUENCE))) {
          const n = Number(readInteger(value, { ...part, cls: 0, tag: TAG.INTEGER }));
          const key = isContext(part, 0) ? 'RequireExplicitPolicy' : isContext(part, 1) ? 'InhibitPolicyMapping' : undefined;
          if (key === undefined) continue;
          out[key] = n;
          out[`${key}Zero`] = n === 0;
        }
        break;
      case '2.5.29.54': {
        const n = Number(readInteger(value, expect(inner(), TAG.INTEGER)));
        out['InhibitAnyPolicy'] = n;
        out['InhibitAnyPolicyZero'] = n === 0;
        break;
      }
      case '1.3.6.1.5.5.7.1.1': {
        const ocsp: string[] = [];
        const issuers: string[] = [];
        for (const access of children(value, expect(inner(), TAG.SEQUENCE))) {
          const [method, location] = children(value, expect(access, TAG.SEQUENCE));
          if (location === undefined || !isContext(location, 6)) continue;
          const url = contents(value, location).toString('latin1');
          const methodOid = oidString(readOid(value, expect(method, TAG.OID)));
          if (methodOid === '1.3.6.1.5.5.7.48.1') ocsp.push(url);
          else if (methodOid === '1.3.6.1.5.5.7.48.2') issuers.push(url);
        }
        out['OCSPServer'] = orNull(ocsp);
        out['IssuingCertificateURL'] = orNull(issuers);
        break;
      }
      default:
        break;
    }
    if (critical && !handled) unhandled.push(id);
  }
  out['Extensions'] = orNull(extensions);
  out['UnhandledCriticalExtensions'] = orNull(unhandled);
}

function goCertificate(der: Buffer): Json {
  new X509Certificate(der);
  const cert = readTlv(der, 0);
  if (cert.end !== der.length) throw derError('trailing data after certificate');
  const [tbs, sigAlg, sigValue] = children(der, expect(cert, TAG.SEQUENCE));
  const tbsFields = children(der, expect(tbs, TAG.SEQUENCE));
  let index = 0;
  let version = 1;
  const first = tbsFields[0];
  if (first !== undefined && isContext(first, 0)) {
    const [v] = children(der, first);
    version = Number(readInteger(der, expect(v, TAG.INTEGER))) + 1;
    index++;
  }
  const serial = readInteger(der, expect(tbsFields[index++], TAG.INTEGER));
  index++; // the TBS signature algorithm repeats the outer one
  const issuer = tbsFields[index++] as Tlv;
  const validity = children(der, expect(tbsFields[index++], TAG.SEQUENCE));
  const subject = tbsFields[index++] as Tlv;
  const spki = tbsFields[index++] as Tlv;
  const { algorithm, key } = publicKeyInfo(der, spki);

  const out: Json = {
    Raw: b64(der),
    RawTBSCertificate: b64(whole(der, tbs as Tlv)),
    RawSubjectPublicKeyInfo: b64(whole(der, spki)),
    RawSubject: b64(whole(der, subject)),
    RawIssuer: b64(whole(der, issuer)),
    Signature: b64(readBitString(der, expect(sigValue, TAG.BIT_STRING)).bytes),
    SignatureAlgorithm: signatureAlgorithm(der, sigAlg as Tlv),
    PublicKeyAlgorithm: algorithm,
    PublicKey: key,
    Version: version,
    SerialNumber: exactInteger(serial),
    Issuer: parseName(der, issuer),
    Subject: parseName(der, subject),
    NotBefore: readTime(der, validity[0] as Tlv),
    NotAfter: readTime(der, validity[1] as Tlv),
    KeyUsage: 0,
    Extensions: null,
    ExtraExtensions: null,
    UnhandledCriticalExtensions: null,
    ExtKeyUsage: null,
    UnknownExtKeyUsage: null,
    BasicConstraintsValid: false,
    IsCA: false,
    MaxPathLen: 0,
    MaxPathLenZero: false,
    SubjectKeyId: null,
    AuthorityKeyId: null,
    OCSPServer: null,
    IssuingCertificateURL: null,
    DNSNames: null,
    EmailAddresses: null,
    IPAddresses: null,
    URIs: null,
    PermittedDNSDomainsCritical: false,
    PermittedDNSDomains: null,
    ExcludedDNSDomains: null,
    PermittedIPRanges: null,
    ExcludedIPRanges: null,
    PermittedEmailAddresses: null,
    ExcludedEmailAddresses: null,
    PermittedURIDomains: null,
    ExcludedURIDomains: null,
    CRLDistributionPoints: null,
    PolicyIdentifiers: null,
    Policies: null,
    InhibitAnyPolicy: 0,
    InhibitAnyPolicyZero: false,
    InhibitPolicyMapping: 0,
    InhibitPolicyMappingZero: false,
    RequireExplicitPolicy: 0,
    RequireExplicitPolicyZero: false,
    PolicyMappings: null,
    URIStrings: null,
  };
  for (const field of tbsFields.slice(index)) {
    if (isContext(field, 3)) {
      const [list] = children(der, field);
      parseExtensions(der, list as Tlv, out);
    }
  }
  return out;
}

/** Go's x509.ParseCertificates over concatenated DER. */
function splitDer(der: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let pos = 0;
  while (pos < der.length) {
    const tlv = readTlv(der, pos);
    out.push(der.subarray(pos, tlv.end));
    pos = tlv.end;
  }
  return out;
}

function derFromPem(text: string): Buffer[] | undefined {
  const blocks: Buffer[] = [];
  let rest = text;
  for (;;) {
    const block = decodePem(rest);
    if (block === undefined) break;
    if (block.type !== 'CERTIFICATE') return undefined;
    blocks.push(block.bytes);
    rest = block.rest;
  }
  return splitDer(Buffer.concat(blocks));
}

/** The DER certificates in OPA's accepted input forms (PEM, base64 PEM, base64 DER). */
export function certificatesFromString(input: string): Buffer[] | undefined {
  try {
    if (input.startsWith('-----BEGIN')) return derFromPem(input);
    const decoded = goBase64Decode(input, 'std');
    if (decoded === undefined) return undefined;
    if (decoded.subarray(0, 10).toString('latin1') === '-----BEGIN') return derFromPem(decoded.toString('latin1'));
    return splitDer(decoded);
  } catch {
    return undefined;
  }
}

/** crypto.x509.parse_certificates. */
export function parseCertificates(input: string): Json[] | undefined {
  const ders = certificatesFromString(input);
  if (ders === undefined) return undefined;
  try {
    return ders.map(goCertificate);
  } catch {
    return undefined;
  }
}
