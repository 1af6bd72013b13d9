/**
 * What a Data Integrity proof says about itself, read before anything is verified: the proof
 * types accepted, and a presentation proof's binding to the verifier's challenge and domain.
 * Plain data checks, without the JSON-LD and cryptosuite stacks: the verifier refuses on them
 * before it spends any signature work (or a worker's time), and data-integrity.ts asks the same
 * questions again of what it verifies.
 */
import { ErrorCodes, PavilionError } from '../lib/errors.ts';
import { asArray, isObject, type JsonObject } from './json.ts';

/** bbs-2023 is accepted as derived proofs only: its verify suite refuses base proofs. */
export const SUPPORTED_CRYPTOSUITES = ['eddsa-rdfc-2022', 'ecdsa-rdfc-2019', 'bbs-2023'] as const;

/** The legacy Linked Data proof accepted besides Data Integrity (VC 1.1 era, Ed25519 keys). */
export const ED25519_SIGNATURE_2020 = 'Ed25519Signature2020';

/** The proof types of a secured document, refused unless every proof is one we verify. */
export function proofTypeOf(document: JsonObject): string {
  const proofs = asArray(document['proof']);
  if (proofs.length === 0) throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, 'no proof');
  if (proofs.length > 1) throw new PavilionError(ErrorCodes.CREDENTIAL_PROOF_UNSUPPORTED, 'proof sets and chains are not accepted');
  const proof = proofs[0];
  if (!isObject(proof)) throw new PavilionError(ErrorCodes.CREDENTIAL_MALFORMED, 'proof must be an object');
  if (proof['type'] === ED25519_SIGNATURE_2020) return ED25519_SIGNATURE_2020;
  const cryptosuite = proof['cryptosuite'];
  if (proof['type'] !== 'DataIntegrityProof' || typeof cryptosuite !== 'string' || !(SUPPORTED_CRYPTOSUITES as readonly string[]).includes(cryptosuite)) {
    throw new PavilionError(ErrorCodes.CREDENTIAL_PROOF_UNSUPPORTED, `proof ${String(proof['type'])}/${String(cryptosuite)} is not accepted (accepted: DataIntegrityProof with ${SUPPORTED_CRYPTOSUITES.join(', ')}, and ${ED25519_SIGNATURE_2020})`);
  }
  return `DataIntegrityProof/${cryptosuite}`;
}

/**
 * A presentation's one proof, of a type we verify, for `authentication`, bound to this verifier's
 * `challenge` and `domain` (as the proof claims: its signature is what makes the claim true).
 */
export function checkPresentationBinding(presentation: JsonObject, challenge: string, domain: string): { proofType: string; proof: JsonObject } {
  const proofType = proofTypeOf(presentation);
  const proof = asArray(presentation['proof'])[0] as JsonObject;
  if (proof['challenge'] !== challenge) throw new PavilionError(ErrorCodes.CREDENTIAL_CHALLENGE_MISMATCH, 'presentation proof is not bound to this challenge');
  if (proof['domain'] !== domain) throw new PavilionError(ErrorCodes.CREDENTIAL_DOMAIN_MISMATCH, 'presentation proof is not bound to this domain');
  if (proof['proofPurpose'] !== 'authentication') throw new PavilionError(ErrorCodes.CREDENTIAL_KEY_BINDING_INVALID, 'presentation proof purpose must be authentication');
  return { proofType, proof };
}
