/**
 * Reading a W3C Verifiable Credential (Data Model 2.0 or 1.1) as plain data: its version, issuer,
 * types, subject, claims and validity window. Shape checks only; proofs are checked elsewhere.
 */
import { ErrorCodes, PavilionError } from '../lib/errors.ts';
import { parseDateTime, type ValidityText, type ValidityWindow } from './freshness.ts';
import { asArray, isObject, nodeId, stringsOf, type JsonObject } from './json.ts';

export const VC_V2_CONTEXT = 'https://www.w3.org/ns/credentials/v2';
export const VC_V1_CONTEXT = 'https://www.w3.org/2018/credentials/v1';

export interface W3cCredentialView {
  readonly dataModel: '2.0' | '1.1';
  readonly issuer: string;
  readonly types: readonly string[];
  readonly subject?: string;
  readonly claims: JsonObject;
  readonly window: ValidityWindow;
  readonly validity: ValidityText;
  readonly statusEntries: readonly JsonObject[];
}

function malformed(message: string): PavilionError {
  return new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, message);
}

export function readW3cCredential(credential: unknown): W3cCredentialView {
  if (!isObject(credential)) throw malformed('a credential must be a JSON object');
  const contexts = asArray(credential['@context']);
  const first = contexts[0];
  const dataModel = first === VC_V2_CONTEXT ? '2.0' : first === VC_V1_CONTEXT ? '1.1' : undefined;
  if (dataModel === undefined) throw malformed(`the first @context must be ${VC_V2_CONTEXT} or ${VC_V1_CONTEXT}`);
  const types = stringsOf(credential['type']);
  if (!types.includes('VerifiableCredential')) throw malformed('type must include VerifiableCredential');
  const issuer = nodeId(credential['issuer']);
  if (issuer === undefined || issuer === '') throw malformed('issuer must be a URL or an object with an id');
  const subjects = asArray(credential['credentialSubject']);
  if (subjects.length !== 1 || !isObject(subjects[0])) throw malformed('exactly one credentialSubject object is accepted');
  const subjectObject = subjects[0];
  const subject = typeof subjectObject['id'] === 'string' ? subjectObject['id'] : undefined;
  const claims: JsonObject = {};
  for (const [key, value] of Object.entries(subjectObject)) if (key !== 'id') claims[key] = value;

  const validity: { validFrom?: string; validUntil?: string; issuedAt?: string } = {};
  const window: { validFromMs?: number; validUntilMs?: number; issuedAtMs?: number } = {};
  if (dataModel === '2.0') {
    if (credential['validFrom'] !== undefined) {
      window.validFromMs = parseDateTime(credential['validFrom'], 'validFrom');
      validity.validFrom = String(credential['validFrom']);
    }
    if (credential['validUntil'] !== undefined) {
      window.validUntilMs = parseDateTime(credential['validUntil'], 'validUntil');
      validity.validUntil = String(credential['validUntil']);
    }
  } else {
    // VC 1.1: issuanceDate is required and is when the credential became valid
    window.validFromMs = parseDateTime(credential['issuanceDate'], 'issuanceDate');
    window.issuedAtMs = window.validFromMs;
    validity.validFrom = String(credential['issuanceDate']);
    validity.issuedAt = validity.validFrom;
    if (credential['expirationDate'] !== undefined) {
      window.validUntilMs = parseDateTime(credential['expirationDate'], 'expirationDate');
      validity.validUntil = String(credential['expirationDate']);
    }
  }
  const statusEntries = asArray(credential['credentialStatus']).map((entry) => {
    if (!isObject(entry)) throw malformed('credentialStatus entries must be objects');
    return entry;
  });
  return {
    dataModel,
    issuer,
    types,
    ...(subject === undefined ? {} : { subject }),
    claims,
    window,
    validity,
    statusEntries,
  };
}

/**
 * Whether `value` is a Verifiable Presentation (its `type` says so) rather than a credential: one
 * test for the verifier, which verifies it as a presentation, and the gate, which counts the
 * credentials inside it toward the request's limit.
 */
export function isPresentation(value: unknown): value is JsonObject {
  return isObject(value) && stringsOf(value['type']).includes('VerifiablePresentation');
}

/** The credentials a presentation embeds (`verifiableCredential`, one or many), unverified. */
export function embeddedCredentials(presentation: JsonObject): unknown[] {
  return asArray(presentation['verifiableCredential']);
}
