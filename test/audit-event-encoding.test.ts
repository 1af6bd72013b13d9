/**
 * decisionIdOf reads a logged event's decision id without parsing the event: for every JSON
 * text its answer must be JSON.parse's (`decision_id` of the top-level object when it is a
 * non-empty string, else none), which these cases compare it with - the events the log
 * writes, the shapes JSON allows that the log never writes, and random documents. For a text
 * that is not JSON it only has to answer without throwing.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decisionIdOf, encodeEvent } from '../sidecar/src/audit/log/index.ts';
import { decisionIdFrom } from '../sidecar/src/audit/log/event-encoding.ts';
import { decisionEvent } from './audit/fixtures.ts';

/** JSON.parse's answer, or undefined for a text that is not JSON. */
function parsed(text: string): { readonly value: unknown } | undefined {
  try {
    return { value: JSON.parse(text) };
  } catch {
    return undefined;
  }
}

/** What the log indexed before: the whole event parsed. */
const parsedId = (text: string): string | undefined => decisionIdFrom((parsed(text)?.value as { decision_id?: unknown } | null | undefined)?.decision_id);

function agrees(text: string, expected?: string): void {
  const reference = parsedId(text);
  if (arguments.length > 1) assert.equal(reference, expected, `the reference itself, for ${JSON.stringify(text)}`);
  assert.equal(decisionIdOf(Buffer.from(text, 'utf8')), reference, `decisionIdOf(${JSON.stringify(text)})`);
}

/** A deterministic generator (xorshift32), so a failure repeats with its seed. */
function random(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

describe('decisionIdOf: the decision id of a logged event, as JSON.parse reads it', () => {
  it('reads the id of every event the log writes (encodeEvent), ids with quotes, backslashes and non-ASCII included', () => {
    const ids = ['decision-000001', 'd"quoted"', 'back\\slash', 'tab\there', 'é-ü-漢字-😀', '\u2028line', 'x'.repeat(300)];
    for (const [n, id] of ids.entries()) {
      // as most events are (nothing after the id names another), and with names alike nested
      // before and after it
      const plain = decisionEvent(n, { decision_id: id });
      const nested = decisionEvent(n, { decision_id: id, bundles: { decision_id: { revision: 'a bundle named decision_id' } }, input: { decision_id: 'nested, not the id', list: [{ decision_id: 'deeper' }] } });
      for (const event of [plain, nested]) {
        const bytes = encodeEvent(event).bytes;
        assert.equal(decisionIdOf(bytes), id, `event ${n}`);
        assert.equal(parsedId(bytes.toString('utf8')), id);
      }
    }
  });

  it('answers as JSON.parse for the shapes JSON allows that the log never writes', () => {
    agrees('{"decision_id":"a"}', 'a');
    agrees(' \n\t{ "decision_id" \r: \n "a" } \n', 'a');
    // members named alike: the last wins, also when it is not a string
    agrees('{"decision_id":"a","b":1,"decision_id":"c"}', 'c');
    agrees('{"decision_id":"a","decision_id":7}', undefined);
    agrees('{"decision_id":7,"decision_id":"b"}', 'b');
    agrees('{"decision_id":"a","decision_id":{"decision_id":"x"}}', undefined);
    agrees('{"decision_id":""}', undefined);
    agrees('{"decision_id":null}', undefined);
    agrees('{"decision_id":["a"]}', undefined);
    // escapes in the name or the value are decoded as JSON.parse decodes them
    agrees('{"decision\\u005fid":"a"}', 'a');
    agrees('{"decision_id":"a","decision\\u005fid":"b"}', 'b');
    agrees('{"decision_id\\u0000":"a"}', undefined);
    agrees('{"decision_id":"a\\"b\\\\c\\u00e9\\n"}', 'a"b\\cé\n');
    agrees('{"x":"\\"decision_id\\":\\"no\\"","decision_id":"yes"}', 'yes');
    // only the top-level object's member counts
    agrees('{"a":{"decision_id":"nested"}}', undefined);
    agrees('{"a":[{"decision_id":"in a list"}],"b":"decision_id"}', undefined);
    agrees('[{"decision_id":"a"}]', undefined);
    agrees('["decision_id","a"]', undefined);
    agrees('"decision_id"', undefined);
    agrees('{}', undefined);
    agrees('', undefined);
    // not JSON: none where the structure shows it (cut short, something after the object)
    agrees('{"decision_id":"a"', undefined);
    agrees('{"decision_id":"a', undefined);
    agrees('{"decision_id":"a"}{"decision_id":"b"}', undefined);
    agrees('{"decision_id":"a"} x', undefined);
    agrees('{"decision_id', undefined);
  });

  it('answers as JSON.parse for 20,000 random documents (members named alike, escapes, nesting, whitespace), and without a throw for broken ones', () => {
    const next = random(0x5eed);
    const pick = <T,>(items: readonly T[]): T => items[Math.floor(next() * items.length)] as T;
    const names = ['decision_id', 'decision_id', 'decision\\u005fid', 'decision_idx', 'decision', 'a', 'bundles', 'input', '\\"decision_id\\"'];
    const strings = ['', 'x', 'd-1', 'quote\\"in', 'back\\\\slash', '\\u00e9t\\u00e9', 'é漢😀', '{\\"decision_id\\":\\"no\\"}', 'decision_id', '\\n\\t', '\\ud83d\\ude00'];
    const space = (): string => (next() < 0.8 ? '' : pick([' ', '\n', '\t', '\r\n  ']));
    const value = (depth: number): string => {
      const r = next();
      if (depth > 3 || r < 0.35) return `"${pick(strings)}"`;
      if (r < 0.5) return pick(['0', '-1.5e3', 'true', 'false', 'null', '123456789']);
      if (r < 0.7) return `[${space()}${Array.from({ length: Math.floor(next() * 4) }, () => value(depth + 1)).join(`${space()},${space()}`)}${space()}]`;
      return object(depth + 1);
    };
    const object = (depth: number): string => {
      const members = Array.from({ length: Math.floor(next() * 5) }, () => `${space()}"${pick(names)}"${space()}:${space()}${value(depth)}${space()}`);
      return `{${members.join(',')}${members.length === 0 ? space() : ''}}`;
    };
    let withId = 0;
    let broken = 0;
    for (let n = 0; n < 20_000; n++) {
      let text = `${space()}${object(0)}${space()}`;
      // now and then broken: cut short, or something after the object
      const r = next();
      if (r < 0.05) text = text.slice(0, Math.floor(next() * text.length));
      else if (r < 0.08) text += pick(['{}', 'x', ',', '"a"']);
      if (parsed(text) !== undefined) {
        if (parsedId(text) !== undefined) withId++;
        agrees(text);
      } else {
        // not JSON (the log never writes one): an answer, never a throw
        broken++;
        const id = decisionIdOf(Buffer.from(text, 'utf8'));
        assert.ok(id === undefined || typeof id === 'string');
      }
    }
    assert.ok(broken > 500, `${broken} broken documents`);
    // the documents must exercise the case that matters, not only its absence
    assert.ok(withId > 2_000, `${withId} of the random documents carry an id`);
  });
});
