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

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON = 0x3a;
const COMMA = 0x2c;
const DECISION_ID_KEY = Buffer.from('"decision_id"', 'utf8');

/** Where the JSON string starting at `from` (its opening quote) ends: its closing quote, or `bytes.length`. */
function stringEnd(bytes: Buffer, from: number): { end: number; escaped: boolean } {
  let escaped = false;
  let i = from + 1;
  while (i < bytes.length) {
    const c = bytes[i];
    if (c === BACKSLASH) {
      escaped = true;
      i += 2;
    } else if (c === QUOTE) {
      return { end: i, escaped };
    } else {
      i++;
    }
  }
  return { end: bytes.length, escaped };
}

/** JSON whitespace: space, line feed, carriage return, tab. */
const isSpace = (c: number | undefined): boolean => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;

/** The first byte at or after `from` that is not JSON whitespace. */
function skipSpace(bytes: Buffer, from: number): number {
  let i = from;
  while (i < bytes.length && isSpace(bytes[i])) i++;
  return i;
}

/**
 * The `decision_id` of a logged event (the leaf payload), or undefined for a payload that has
 * none: what `JSON.parse(payload).decision_id` gives, read without building the event. A log
 * holds one payload per decision, and a start reads them all to index their ids, so parsing
 * each whole event (its input and result) was a quarter of a restart's CPU.
 *
 * It walks the text, following strings (escapes included) and nesting, and takes the last
 * member named `decision_id` of the top-level object, as JSON.parse does; a name or value with
 * escapes is decoded by JSON.parse. Once it has a string id, it stops when the rest holds
 * neither the name nor a backslash (so no later member can be named decision_id), as in the
 * log's events, whose id comes second (after `bundles`, keys sorted). For every JSON text the
 * answer is JSON.parse's (tested against it). It does not validate what it skips: for a
 * payload that is not JSON, which the log never writes (a frame's CRC and the leaf hashes
 * under signed checkpoints catch one edited in), it may find an id where JSON.parse would
 * throw.
 */
export function decisionIdOf(payload: Buffer): string | undefined {
  let i = skipSpace(payload, 0);
  if (payload[i] !== 0x7b) return undefined;
  let found: unknown;
  let depth = 0;
  let expectName = false;
  while (i < payload.length) {
    const c = payload[i];
    if (c === QUOTE) {
      const { end, escaped } = stringEnd(payload, i);
      if (depth === 1 && expectName) {
        expectName = false;
        const colon = skipSpace(payload, end + 1);
        if (payload[colon] === COLON && isDecisionIdName(payload, i, end, escaped)) {
          const valueStart = skipSpace(payload, colon + 1);
          if (payload[valueStart] === QUOTE) {
            const value = stringEnd(payload, valueStart);
            if (value.end >= payload.length) return undefined;
            found = value.escaped ? parseJson(payload.toString('utf8', valueStart, value.end + 1)) : payload.toString('utf8', valueStart + 1, value.end);
            i = value.end + 1;
            // the rest cannot name another decision_id (not plainly, nor with an escape), so
            // this one is the last: skip the walk through the rest (most of the event)
            if (payload.indexOf(DECISION_ID_KEY, i) === -1 && payload.indexOf(BACKSLASH, i) === -1) {
              return payload[lastNonSpace(payload)] === 0x7d ? decisionIdFrom(found) : undefined;
            }
            continue;
          }
          // not a string (a later string member would still win)
          found = undefined;
          i = valueStart;
          continue;
        }
      }
      i = end + 1;
      continue;
    }
    if (c === 0x7b || c === 0x5b) {
      depth++;
    } else if (c === 0x7d || c === 0x5d) {
      depth--;
      // the end of the top-level object: JSON.parse takes nothing but whitespace after it
      if (depth === 0) return skipSpace(payload, i + 1) === payload.length ? decisionIdFrom(found) : undefined;
    } else if (c === COMMA && depth === 1) {
      // the top level is the object (checked above), so a comma there precedes a member's name
      expectName = true;
    }
    if (depth === 1 && c === 0x7b) expectName = true;
    i++;
  }
  // cut short: the top-level object never closed
  return undefined;
}

/** The index of the last byte that is not JSON whitespace (-1 when there is none). */
function lastNonSpace(bytes: Buffer): number {
  let i = bytes.length - 1;
  while (i >= 0 && isSpace(bytes[i])) i--;
  return i;
}

function isDecisionIdName(bytes: Buffer, start: number, end: number, escaped: boolean): boolean {
  if (!escaped) return end + 1 - start === DECISION_ID_KEY.length && bytes.compare(DECISION_ID_KEY, 0, DECISION_ID_KEY.length, start, end + 1) === 0;
  return parseJson(bytes.toString('utf8', start, end + 1)) === 'decision_id';
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
