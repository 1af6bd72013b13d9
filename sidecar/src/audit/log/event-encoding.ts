/**
 * How a decision event becomes a leaf: its canonical JSON (keys sorted recursively, no
 * whitespace; sidecar/src/lib/canonical-json.ts), UTF-8. Canonical, so anyone holding the
 * event as parsed JSON can re-encode it and get the same leaf hash. An event that cannot be
 * encoded (nested past the bound) is still logged - never dropped - without its input and
 * result and with the reason in `error`, as the NDJSON sink does.
 */
import { hash } from 'node:crypto';
import { LOGGED_DOCUMENT_MAX_DEPTH, canonicalJson, canonicalJsonWith } from '../../lib/canonical-json.ts';
import { describeThrown } from '../../lib/errors.ts';
import type { DecisionEventV1 } from '../decision-event.ts';

export interface EncodedEvent {
  readonly bytes: Buffer;
  readonly inputSha256: string | undefined;
  readonly resultSha256: string | undefined;
}

// one-shot: a Hash object per digest costs more than the digest of a small text
const digest = (text: string): string => hash('sha256', text, 'hex');

export function encodeEvent(event: DecisionEventV1): EncodedEvent {
  try {
    const input = event.input === undefined ? undefined : canonicalJson(event.input, LOGGED_DOCUMENT_MAX_DEPTH);
    const result = event.result === undefined ? undefined : canonicalJson(event.result, LOGGED_DOCUMENT_MAX_DEPTH);
    const serialised: Record<string, string> = {};
    if (input !== undefined) serialised['input'] = input;
    if (result !== undefined) serialised['result'] = result;
    return {
      bytes: Buffer.from(canonicalJsonWith(event as unknown as Record<string, unknown>, serialised, LOGGED_DOCUMENT_MAX_DEPTH + 2), 'utf8'),
      inputSha256: input === undefined ? undefined : digest(input),
      resultSha256: result === undefined ? undefined : digest(result),
    };
  } catch (error) {
    const { input: _input, result: _result, ...rest } = event;
    return {
      bytes: Buffer.from(canonicalJson({
        ...rest,
        error: {
          code: 'ERR_DECISION_LOG_UNSERIALISABLE',
          message: `input and result left out of the decision log: ${describeThrown(error)}`,
          ...(event.error === undefined ? {} : { cause: event.error }),
        },
      }), 'utf8'),
      inputSha256: undefined,
      resultSha256: undefined,
    };
  }
}

/** A decision id as the log indexes it: a non-empty string, else none. */
export function decisionIdFrom(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}

/** The `decision_id` of a logged event (the leaf payload), or undefined for a payload that has none. */
export function decisionIdOf(payload: Buffer): string | undefined {
  try {
    return decisionIdFrom((JSON.parse(payload.toString('utf8')) as { decision_id?: unknown }).decision_id);
  } catch {
    return undefined;
  }
}
