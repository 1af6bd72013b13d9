/**
 * Keyed pseudonymisation (GDPR Art. 4(5)) of configured identifier fields in a decision
 * event: each value is replaced by `hmac-sha256:<base64url of HMAC-SHA-256(key, canonical
 * JSON of the value)>` with the tenant's secret key (node:crypto). The same identifier gets
 * the same pseudonym within a tenant, so an auditor can still follow one subject through the
 * log; without the key the mapping cannot be reversed or recomputed, and tenants' pseudonyms
 * cannot be linked. Pure apart from the HMAC.
 *
 * Fields are RFC 6901 JSON pointers under /input or /result; a segment `*` stands for every
 * element of an array or every value of an object. Missing fields are skipped. The pointers
 * that matched are listed in the event's `pseudonymised`.
 */
import { setOwn } from '../../lib/own-property.ts';
import { createHmac } from 'node:crypto';
import { ErrorCodes, PavilionError } from '../../lib/errors.ts';
import { parseFieldPointer, type FieldPointer } from '../../lib/field-pointer.ts';
import { canonicalJson } from '../../lib/canonical-json.ts';
import type { DecisionEventV1 } from '../decision-event.ts';
import { shallowCopy } from './mask-rules.ts';
import { rebuildEvent } from './rebuild-event.ts';

const INPUT_AND_RESULT: ReadonlySet<string> = new Set(['input', 'result']);

export const PSEUDONYM_PREFIX = 'hmac-sha256:';
export const MIN_PSEUDONYM_KEY_BYTES = 32;

export type PseudonymField = FieldPointer;

/** Parse and check a configured field pointer. Throws ERR_CONFIG_INVALID. */
export const parsePseudonymField = parseFieldPointer;

export function pseudonym(key: Uint8Array, value: unknown): string {
  return pseudonymOfText(key, canonicalJson(value));
}

function pseudonymOfText(key: Uint8Array, text: string): string {
  return PSEUDONYM_PREFIX + createHmac('sha256', key).update(text, 'utf8').digest('base64url');
}

/** Values longer than this (as canonical JSON) are not remembered. */
const MAX_REMEMBERED_TEXT_CHARS = 256;
/** Pseudonyms remembered per key; the memory is emptied when it is full. */
const MAX_REMEMBERED = 4096;

/**
 * The pseudonyms under one key, remembering recent ones: the same identifiers come again and
 * again (a subject makes many requests), and `pseudonym` is a function of key and value, so a
 * remembered one is the one an HMAC would give. Holds a copy of the key; `hasKey` tells
 * whether it still is the given one. What it remembers (recent identifiers in clear, with their
 * pseudonyms) stays in this process's memory, as the events being masked do, and is never
 * written anywhere.
 */
export class PseudonymMemo {
  readonly #key: Buffer;
  readonly #known = new Map<string, string>();

  constructor(key: Uint8Array) {
    this.#key = Buffer.from(key);
  }

  hasKey(key: Uint8Array): boolean {
    return this.#key.equals(key);
  }

  pseudonym(value: unknown): string {
    const text = canonicalJson(value);
    const known = this.#known.get(text);
    if (known !== undefined) return known;
    const made = pseudonymOfText(this.#key, text);
    if (text.length <= MAX_REMEMBERED_TEXT_CHARS) {
      if (this.#known.size >= MAX_REMEMBERED) this.#known.clear();
      this.#known.set(text, made);
    }
    return made;
  }
}

/**
 * `node` with every value `segments` selects replaced, copying only the objects and arrays on
 * the way to a replaced value (the event's other parts are shared, never mutated); the same
 * `node` when nothing matched.
 */
function replaceAt(node: unknown, segments: readonly string[], at: number, replace: (value: unknown) => unknown): unknown {
  if (typeof node !== 'object' || node === null) return node;
  const segment = segments[at]!;
  const last = at === segments.length - 1;
  const container = node as Record<string, unknown>;
  const keys = segment === '*'
    ? Object.keys(container)
    : Array.isArray(node)
      ? (/^(0|[1-9][0-9]*)$/.test(segment) && Number(segment) < node.length ? [segment] : [])
      : (Object.hasOwn(container, segment) ? [segment] : []);
  let copy: Record<string, unknown> | undefined;
  for (const key of keys) {
    const before = container[key];
    const after = last ? replace(before) : replaceAt(before, segments, at + 1, replace);
    if (after === before && !last) continue;
    copy ??= shallowCopy(container) as Record<string, unknown>;
    setOwn(copy, key, after);
  }
  return copy ?? node;
}

/** `memo`, when given, must hold `key` (PseudonymMemo.hasKey). */
export function pseudonymiseEvent(event: DecisionEventV1, fields: readonly PseudonymField[], key: Uint8Array, memo?: PseudonymMemo): DecisionEventV1 {
  if (key.length < MIN_PSEUDONYM_KEY_BYTES) {
    throw new PavilionError(ErrorCodes.AUDIT_MASK_FAILED, `pseudonymisation keys must have at least ${MIN_PSEUDONYM_KEY_BYTES} bytes`);
  }
  const state: { input: unknown; result: unknown } = { input: event.input, result: event.result };
  const applied: string[] = [...(event.pseudonymised ?? [])];
  for (const field of fields) {
    const before = state[field.root];
    let hit = false;
    const after = replaceAt(before, field.segments, 0, (value) => {
      hit = true;
      return memo === undefined ? pseudonym(key, value) : memo.pseudonym(value);
    });
    if (!hit) continue;
    state[field.root] = after;
    applied.push(field.pointer);
  }
  if (applied.length === (event.pseudonymised?.length ?? 0)) return event;
  return rebuildEvent(event, INPUT_AND_RESULT, { input: state.input, result: state.result, pseudonymised: applied });
}
