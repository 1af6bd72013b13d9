/**
 * Data Integrity proofs on W3C credentials and presentations (VC Data Integrity 1.0,
 * cryptosuites eddsa-rdfc-2022, ecdsa-rdfc-2019 and bbs-2023 (derived proofs), and the legacy Ed25519Signature2020 suite
 * of VC 1.1 credentials), verified by `@digitalbazaar/vc` with the
 * offline document loader. JSON-LD runs in safe mode (undefined terms are refused) and
 * rdf-canonize keeps its default work-factor cap, so a crafted graph stops with
 * `ERR_CREDENTIAL_CANONICALIZATION_LIMIT` instead of pinning a core.
 *
 * `@digitalbazaar/vc` reports failures as untyped `Error`s nested in result objects; every one is
 * mapped here to a stable code, and anything unrecognised is a signature failure (fail closed).
 */
import * as vc from '@digitalbazaar/vc';
import { DataIntegrityProof } from '@digitalbazaar/data-integrity';
import { cryptosuite as eddsaRdfc2022 } from '@digitalbazaar/eddsa-rdfc-2022-cryptosuite';
import { cryptosuite as ecdsaRdfc2019 } from '@digitalbazaar/ecdsa-rdfc-2019-cryptosuite';
import { Ed25519Signature2020 } from '@digitalbazaar/ed25519-signature-2020';
import { createVerifyCryptosuite as bbs2023Verify } from '@digitalbazaar/bbs-2023-cryptosuite';
import { ErrorCodes, PavilionError, type ErrorCode } from '../lib/errors.ts';
import type { DocumentLoader } from './document-loader.ts';
import { isObject, type JsonObject } from './json.ts';
import { checkPresentationBinding, proofTypeOf } from './proof-shape.ts';

let verifySuites: unknown[] | undefined;

/**
 * The verification suites, made once: verifying reads them and keeps no state in them (the
 * library's own examples share one suite across calls), and constructing all four per proof
 * cost a tenth of the call.
 */
function suites(): unknown[] {
  verifySuites ??= [
    new DataIntegrityProof({ cryptosuite: eddsaRdfc2022 }),
    new DataIntegrityProof({ cryptosuite: ecdsaRdfc2019 }),
    // pure-JS pairings, 100s of ms: run it on a worker (WorkerProofExecutor)
    new DataIntegrityProof({ cryptosuite: bbs2023Verify() }),
    // converts the resolver's Multikey verification methods to Ed25519VerificationKey2020 itself
    new Ed25519Signature2020(),
  ];
  return verifySuites;
}

/** Every error reachable from a verification result (jsigs nests them in `errors`, `cause`, `details`). */
function* errorsIn(value: unknown, depth = 0): Generator<unknown> {
  if (value === undefined || value === null || depth > 8) return;
  if (Array.isArray(value)) {
    for (const item of value) yield* errorsIn(item, depth + 1);
    return;
  }
  yield value;
  if (typeof value !== 'object') return;
  const record = value as Record<string, unknown>;
  yield* errorsIn(record['errors'], depth + 1);
  yield* errorsIn(record['cause'], depth + 1);
  if (isObject(record['details'])) yield* errorsIn(record['details']['cause'], depth + 1);
}

const CLASSIFIERS: ReadonlyArray<readonly [RegExp, ErrorCode]> = [
  [/Safe mode validation error|undefined term|invalid property|relative (type|property|IRI)|prefix/i, ErrorCodes.CREDENTIAL_UNDEFINED_TERM],
  [/maximum deep iterations|work factor|maxDeepIterations/i, ErrorCodes.CREDENTIAL_CANONICALIZATION_LIMIT],
  [/issuer.*must match|controller.*issuer|not authorized by controller/i, ErrorCodes.CREDENTIAL_ISSUER_MISMATCH],
  [/credential has expired|is after "validUntil"|expirationDate/i, ErrorCodes.CREDENTIAL_EXPIRED],
  [/is before "validFrom"|before the "issuanceDate"/i, ErrorCodes.CREDENTIAL_NOT_YET_VALID],
];

/** Turn a failed `@digitalbazaar/vc` result (or a thrown error) into one typed error. */
export function classifyFailure(result: unknown, what: string): PavilionError {
  const all = [...errorsIn(isObject(result) && 'verified' in result ? [result['error'], result['results'], result['presentationResult'], result['credentialResults']] : result)];
  // our own loader and resolver errors carry the real reason: surface the first one
  for (const error of all) if (error instanceof PavilionError) return error;
  // only real errors' own messages: a result object's JSON would match on any word it contains
  const messages = all.filter((e): e is Error => e instanceof Error).map((e) => e.message).filter((m) => m !== '');
  for (const message of messages) {
    for (const [pattern, code] of CLASSIFIERS) if (pattern.test(message)) return new PavilionError(code, `${what}: ${message}`, { cause: all[0] });
  }
  const message = messages.find((m) => /signature|verif/i.test(m)) ?? messages[0] ?? 'verification failed';
  return new PavilionError(ErrorCodes.CREDENTIAL_SIGNATURE_INVALID, `${what}: ${message}`, { cause: all[0] });
}

export interface DataIntegrityCheck {
  readonly documentLoader: DocumentLoader;
  readonly nowMs: number;
  readonly clockSkewMs: number;
}

/**
 * Verify the proof of a W3C credential. Freshness and status are checked by the caller with
 * Pavilion's own rules and codes, before and after; the library's own date checks run too and
 * agree with them. The credential object is not modified.
 */
export async function verifyDataIntegrityCredential(credential: JsonObject, check: DataIntegrityCheck): Promise<{ proofType: string }> {
  const proofType = proofTypeOf(credential);
  let result: vc.VerifyResult;
  try {
    result = await vc.verifyCredential({
      credential,
      suite: suites(),
      documentLoader: check.documentLoader,
      now: new Date(check.nowMs),
      maxClockSkew: Math.floor(check.clockSkewMs / 1000),
      // status is checked by Pavilion's status verifiers after the proof, with typed codes
      checkStatus: async () => ({ verified: true }),
    });
  } catch (error) {
    throw classifyFailure(error, 'credential proof');
  }
  if (result.verified !== true) throw classifyFailure(result, 'credential proof');
  return { proofType };
}

export interface PresentationCheck extends DataIntegrityCheck {
  readonly challenge: string;
  readonly domain: string;
}

/**
 * Verify a presentation's own proof (holder binding: `authentication` purpose, bound to the
 * verifier's challenge and domain). The embedded credentials are verified one by one by the
 * caller, so each gets its own code.
 */
export async function verifyDataIntegrityPresentation(presentation: JsonObject, check: PresentationCheck): Promise<{ proofType: string; holderKey: string }> {
  // the verifier checked this already, before any signature work; asked again of what is verified here
  const { proofType, proof } = checkPresentationBinding(presentation, check.challenge, check.domain);
  // the library verifies the embedded credentials too (their results are ignored here: the
  // caller verifies each one with Pavilion's pipeline and codes) - a known double cost
  let result: vc.VerifyResult;
  try {
    result = await vc.verify({
      presentation,
      suite: suites(),
      documentLoader: check.documentLoader,
      challenge: check.challenge,
      domain: check.domain,
      now: new Date(check.nowMs),
      maxClockSkew: Math.floor(check.clockSkewMs / 1000),
      checkStatus: async () => ({ verified: true }),
    });
  } catch (error) {
    throw classifyFailure(error, 'presentation proof');
  }
  const presentationResult = result.presentationResult;
  if (presentationResult === undefined || presentationResult.verified !== true) {
    throw classifyFailure(presentationResult ?? result, 'presentation proof');
  }
  return { proofType, holderKey: String(proof['verificationMethod']) };
}
