/** Privacy of decision events: OPA's system.log.mask/drop and keyed pseudonymisation. */
export { bothRevisions } from './both-revisions.ts';
export { DecisionMasker, MASK_FAILED_CODE, type DecisionMaskerOptions, type LogPolicy, type LogRules, type MaskOutcome, type Pseudonyms } from './decision-masker.ts';
export { applyMaskRules, goPathEscape, parseMaskRules, type MaskRule } from './mask-rules.ts';
export { MaskingDecisionSink } from './masking-decision-sink.ts';
export { PseudonymKeyStore } from './pseudonym-keys.ts';
export { PSEUDONYM_PREFIX, parsePseudonymField, pseudonym, pseudonymiseEvent, type PseudonymField } from './pseudonymise.ts';
