/**
 * A delta update as published on `<prefix>.delta.<tenant>`: OPA's `patch.json` plus the
 * deploy it applies to (`base`, the pointer's KV revision) and its place in that deploy's
 * sequence of deltas (1, 2, 3, ...), and its signatures (over all of that, as a bundle's
 * cover its files). Pure parsing.
 */
import { parsePatch, type DeltaMessageV1 } from '../bundles/index.ts';
import { ErrorCodes, PavilionError } from '../lib/errors.ts';

/** The wire form (defined with the bundles, which also keep it with the last known good). */
export type DeltaMessage = DeltaMessageV1;

export function parseDelta(bytes: Uint8Array, tenant: string): DeltaMessage {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    throw new PavilionError(ErrorCodes.BUNDLE_DELTA_INVALID, 'delta is not JSON');
  }
  const d = (value ?? {}) as Record<string, unknown>;
  const bad = (message: string): PavilionError => new PavilionError(ErrorCodes.BUNDLE_DELTA_INVALID, `delta is invalid: ${message}`);
  if (d['v'] !== 1) throw bad('unsupported version');
  if (d['tenant'] !== tenant) throw bad(`names tenant ${JSON.stringify(d['tenant'])} on ${tenant}'s subject`);
  for (const field of ['base', 'sequence'] as const) {
    // safe integers: past 2^53 a number reads as its neighbour, another deploy or place
    if (typeof d[field] !== 'number' || !Number.isSafeInteger(d[field]) || (d[field] as number) < 1) throw bad(`${field} must be a positive integer`);
  }
  const roots = d['roots'];
  if (!Array.isArray(roots) || !roots.every((r): r is string => typeof r === 'string')) throw bad('roots must be an array of strings');
  const signatures = d['signatures'];
  if (signatures !== undefined && (!Array.isArray(signatures) || signatures.length === 0 || !signatures.every((t) => typeof t === 'string'))) {
    throw bad('signatures must be a non-empty array of strings');
  }
  return {
    v: 1, tenant, base: d['base'] as number, sequence: d['sequence'] as number, roots, patch: { data: parsePatch(d['patch']) },
    ...(signatures === undefined ? {} : { signatures: signatures as string[] }),
  };
}
