/**
 * A delta's operations as parsed from a message, a persisted file or the CLI's patch.json:
 * what each malformed or lossy operation gets. A value the signature's canonical hash would
 * write differently (an unpaired surrogate becomes U+FFFD, an overflowed number null) is
 * refused, because it would verify under the signature of another value.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, test } from 'node:test';
import { applyPatch, parsePatch, signDelta, verifyDeltaSignature, type PatchOperation, type SignaturePolicy } from '../sidecar/src/bundles/index.ts';
import { ErrorCodes, isPavilionError } from '../sidecar/src/lib/errors.ts';

function refusedWith(pattern: RegExp): (error: unknown) => boolean {
  return (error: unknown) => isPavilionError(error, ErrorCodes.BUNDLE_DELTA_INVALID) && pattern.test(error.message);
}

describe('applyPatch: array positions as OPA reads them (Go strconv.Atoi), walked through or last', () => {
  const data = { bank: { list: [{ id: 'a' }, { id: 'b' }] } };
  const apply = (operations: PatchOperation[]): Record<string, unknown> => applyPatch(data, operations, ['bank']);
  const list = (result: Record<string, unknown>): unknown => (result['bank'] as { list: unknown }).list;

  test('"1", "01" and "+1" name the same element, in the middle of a path and at its end', () => {
    for (const position of ['1', '01', '+1']) {
      assert.deepEqual(list(apply([{ op: 'upsert', path: `/bank/list/${position}/x`, value: true }])), [{ id: 'a' }, { id: 'b', x: true }], position);
      assert.deepEqual(list(apply([{ op: 'replace', path: `/bank/list/${position}`, value: 'B' }])), [{ id: 'a' }, 'B'], position);
      assert.deepEqual(list(apply([{ op: 'remove', path: `/bank/list/${position}` }])), [{ id: 'a' }], position);
    }
    assert.deepEqual(list(apply([{ op: 'upsert', path: '/bank/list/-0', value: 'first' }])), ['first', { id: 'a' }, { id: 'b' }], '-0 is 0');
  });

  test('an upsert appends at "-" or at the length spelled plainly; other spellings of the length, negative and non-numeric positions are refused', () => {
    assert.deepEqual(list(apply([{ op: 'upsert', path: '/bank/list/-', value: 'c' }])), [{ id: 'a' }, { id: 'b' }, 'c']);
    assert.deepEqual(list(apply([{ op: 'upsert', path: '/bank/list/2', value: 'c' }])), [{ id: 'a' }, { id: 'b' }, 'c']);
    assert.throws(() => apply([{ op: 'upsert', path: '/bank/list/02', value: 'c' }]), refusedWith(/index 2 is out of range/));
    assert.throws(() => apply([{ op: 'replace', path: '/bank/list/2', value: 'c' }]), refusedWith(/index 2 is out of range/));
    assert.throws(() => apply([{ op: 'remove', path: '/bank/list/-1' }]), refusedWith(/index -1 is out of range/));
    assert.throws(() => apply([{ op: 'remove', path: '/bank/list/1x' }]), refusedWith(/"1x" is not an array index/));
    assert.throws(() => apply([{ op: 'upsert', path: '/bank/list/-1/x', value: 1 }]), refusedWith(/document missing at \/bank\/list\/-1/));
    assert.deepEqual(data.bank.list, [{ id: 'a' }, { id: 'b' }], 'the input is not changed');
  });
});

describe('parsePatch', () => {
  test('well-formed operations pass as they are (a surrogate pair, U+FFFD itself and large finite numbers included)', () => {
    const data = [
      { op: 'upsert', path: '/bank/limits/\u{1f600}', value: { '\ufffd': 'replacement char', n: 1.7976931348623157e308, list: [0.5, 1e-300] } },
      { op: 'replace', path: '/bank/limits/max', value: 5000 },
      { op: 'remove', path: '/bank/limits/old' },
    ];
    assert.deepEqual(parsePatch(JSON.parse(JSON.stringify({ data }))), data);
  });

  test('malformed operations -> ERR_BUNDLE_DELTA_INVALID naming the operation', () => {
    assert.throws(() => parsePatch([]), refusedWith(/patch must be an object/));
    assert.throws(() => parsePatch({ data: {} }), refusedWith(/patch.data must be an array/));
    assert.throws(() => parsePatch({ data: [{ op: 'add', path: '/a', value: 1 }] }), refusedWith(/data\[0\]: bad patch operation "add"/));
    assert.throws(() => parsePatch({ data: [{ op: 'upsert', path: 7, value: 1 }] }), refusedWith(/data\[0\]\.path must be a string/));
    assert.throws(() => parsePatch({ data: [{ op: 'replace', path: '/a' }] }), refusedWith(/data\[0\]: replace needs a value/));
  });

  test('an unpaired surrogate in a path, a value or a key of a value, and a number that overflows -> ERR_BUNDLE_DELTA_INVALID', () => {
    assert.throws(() => parsePatch(JSON.parse('{"data": [{"op": "upsert", "path": "/bank/a\\ud800", "value": 1}]}')), refusedWith(/data\[0\]\.path holds an unpaired surrogate/));
    assert.throws(() => parsePatch(JSON.parse('{"data": [{"op": "remove", "path": "/bank/\\udc00"}]}')), refusedWith(/data\[0\]\.path holds an unpaired surrogate/));
    assert.throws(() => parsePatch(JSON.parse('{"data": [{"op": "upsert", "path": "/bank/a", "value": {"x": ["ok", "\\ud800"]}}]}')), refusedWith(/data\[0\]\.value\.x\[1\] holds an unpaired surrogate/));
    assert.throws(() => parsePatch(JSON.parse('{"data": [{"op": "replace", "path": "/bank/a", "value": {"\\ud800": 1}}]}')), refusedWith(/data\[0\]\.value has a key with an unpaired surrogate/));
    assert.throws(() => parsePatch(JSON.parse('{"data": [{"op": "upsert", "path": "/bank/a", "value": [1, 1e400]}]}')), refusedWith(/data\[0\]\.value\[1\] holds a number JSON cannot carry/));
  });

  test('why: a signed delta setting U+FFFD verifies with an unpaired surrogate in its place, so only the parse can refuse the swap', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const policy: SignaturePolicy = { keys: new Map([['bank', { id: 'bank', algorithm: 'ES256', key: publicKey }]]), scope: 'bank', allowUnsigned: false };
    const delta = (operations: PatchOperation[]) => ({ tenant: 'bank', base: 3, sequence: 1, roots: ['bank'], operations });
    const signatures = await signDelta(delta([{ op: 'upsert', path: '/bank/names/\ufffd', value: '\ufffd' }]), {
      key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), algorithm: 'ES256', keyId: 'bank', scope: 'bank',
    });
    const swapped = JSON.parse('{"data": [{"op": "upsert", "path": "/bank/names/\\ud800", "value": "\\ud800"}]}');
    await verifyDeltaSignature(delta((swapped as { data: PatchOperation[] }).data), signatures, policy); // the hash cannot tell them apart
    assert.throws(() => parsePatch(swapped), refusedWith(/unpaired surrogate/));
  });
});
