/**
 * A changed copy of a decision event, as masking and pseudonymisation make one per logged
 * event. Pure.
 */
import { setOwn } from '../../lib/own-property.ts';
import type { DecisionEventV1 } from '../decision-event.ts';

/**
 * What `{ ...rest, ...additions }` gives after `const { <the members in drop>, ...rest } =
 * event` (for the string-keyed members events have): the event's members in order except
 * those in `drop`, then the defined members of `additions` in order (one the event still has
 * keeps its place). Written out because the rest-and-spread form costs several times as much.
 */
export function rebuildEvent(event: DecisionEventV1, drop: ReadonlySet<string>, additions: Readonly<Record<string, unknown>>): DecisionEventV1 {
  const source = event as unknown as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(source)) if (!drop.has(key)) setOwn(out, key, source[key]);
  for (const key of Object.keys(additions)) {
    const value = additions[key];
    if (value !== undefined) setOwn(out, key, value);
  }
  return out as unknown as DecisionEventV1;
}
