/**
 * `describeThrown` is total and bounded: it is called inside catch blocks everywhere, so it
 * returns a string for any thrown value and never throws (a throw there would turn a handled
 * failure into an unhandled one), and it stays short however large the value. Errors,
 * PavilionErrors, strings and opa-wasm's plain objects are described as before.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ErrorCodes, MAX_THROWN_DESCRIPTION_CHARS, PavilionError, describeThrown, wrapError } from '../sidecar/src/lib/errors.ts';

/** Generous room for the mark saying a description was cut. */
const BOUND = MAX_THROWN_DESCRIPTION_CHARS + 100;

function described(thrown: unknown): string {
  let text: unknown;
  assert.doesNotThrow(() => {
    text = describeThrown(thrown);
  });
  assert.equal(typeof text, 'string');
  assert.ok((text as string).length <= BOUND, `bounded (${(text as string).length} characters)`);
  return text as string;
}

describe('describeThrown: what it said before', () => {
  test('an Error or PavilionError is its message, a string itself, an object with a message that message', () => {
    assert.equal(described(new TypeError('bad input')), 'bad input');
    assert.equal(described(new PavilionError(ErrorCodes.BUNDLE_CORRUPT, 'bundle is corrupt: no manifest')), 'bundle is corrupt: no manifest');
    assert.equal(described(new Error('')), '');
    assert.equal(described('opa_eval failed'), 'opa_eval failed');
    assert.equal(described({ message: 'builtin failed', code: 1 }), 'builtin failed');
  });

  test('other values are their JSON, as JSON.stringify writes it', () => {
    const plain = { code: 'eval_error', location: { row: 3, col: [1, 2.5, -0, null, true] }, skipped: undefined, fn: () => 1, when: new Date(0), name: 'é\u2028"' };
    assert.equal(described(plain), JSON.stringify(plain));
    assert.equal(described([1, undefined, 'x']), JSON.stringify([1, undefined, 'x']));
    assert.equal(described(42), '42');
    assert.equal(described(null), 'null');
    assert.equal(described(false), 'false');
    assert.equal(described(Number.NaN), 'null');
  });

  test('wrapError keeps a PavilionError and prefixes a foreign one', () => {
    const own = new PavilionError(ErrorCodes.EVAL_TRAP, 'trap');
    assert.equal(wrapError(own, ErrorCodes.INTERNAL, 'ctx'), own);
    assert.equal(wrapError(new RangeError('too far'), ErrorCodes.INTERNAL, 'ctx').message, 'ctx: too far');
  });
});

describe('describeThrown: total - a string for any value, never a throw', () => {
  test('an object with no prototype holding a BigInt', () => {
    const value = Object.assign(Object.create(null) as object, { bytes: 1n });
    assert.equal(described(value), '{"bytes":1n}');
  });

  test('undefined, a symbol, a BigInt and a function', () => {
    assert.equal(described(undefined), 'undefined');
    assert.equal(described(Symbol('gone')), 'Symbol(gone)');
    assert.equal(described(12n), '12');
    assert.equal(described(function loader() {}), '[function loader]');
  });

  test('a Proxy whose every trap throws, and a revoked Proxy', () => {
    const hostile = new Proxy({}, {
      get: () => { throw new Error('get'); },
      has: () => { throw new Error('has'); },
      ownKeys: () => { throw new Error('ownKeys'); },
      getPrototypeOf: () => { throw new Error('getPrototypeOf'); },
      getOwnPropertyDescriptor: () => { throw new Error('getOwnPropertyDescriptor'); },
    });
    assert.match(described(hostile), /undescribable|unreadable/);
    const { proxy, revoke } = Proxy.revocable({}, {});
    revoke();
    assert.match(described(proxy), /undescribable|unreadable/);
    const revokedFunction = Proxy.revocable(() => 1, {});
    revokedFunction.revoke();
    described(revokedFunction.proxy);
  });

  test('a getter, toJSON or toString that throws; an Error whose message getter throws', () => {
    const getter = { ok: 1, get broken(): never { throw new Error('getter'); } };
    assert.equal(described(getter), '{"ok":1,"broken":"[unreadable]"}');
    described({ toJSON: () => { throw new Error('toJSON'); } });
    described(Object.assign(Object.create(null) as object, { toString: () => { throw new Error('toString'); }, valueOf: () => { throw new Error('valueOf'); }, big: 2n }));
    const error = new Error('x');
    Object.defineProperty(error, 'message', { get: () => { throw new Error('message'); } });
    described(error);
    const notString = new Error('x');
    Object.defineProperty(notString, 'message', { value: { nested: 1n } });
    assert.equal(described(notString), '{}');
  });

  test('a cycle', () => {
    const a: Record<string, unknown> = { name: 'a' };
    a['self'] = a;
    assert.equal(described(a), '{"name":"a","self":"[Circular]"}');
  });
});

describe('describeThrown: bounded', () => {
  test('a huge message is cut, and says so', () => {
    const text = described(new Error('x'.repeat(5_000_000)));
    assert.ok(text.startsWith('x'.repeat(1000)));
    assert.match(text, /cut/);
    assert.match(described('y'.repeat(5_000_000)), /cut/);
  });

  test('a huge, wide or deep object gives a short text', () => {
    described({ blob: 'z'.repeat(5_000_000) });
    described(Array.from({ length: 1_000_000 }, (_, i) => ({ i })));
    described(new Array(2 ** 31)); // sparse: a length, no elements
    let deep: unknown = 'bottom';
    for (let i = 0; i < 100_000; i++) deep = { d: deep };
    assert.match(described(deep), /\{…\}/);
    let deepArray: unknown = [];
    for (let i = 0; i < 100_000; i++) deepArray = [deepArray];
    described(deepArray);
  });

  test('a string of escaped characters is bounded after escaping', () => {
    described({ control: '\u0001'.repeat(MAX_THROWN_DESCRIPTION_CHARS) });
  });
});
