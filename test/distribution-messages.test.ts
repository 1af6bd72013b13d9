/**
 * The two messages a sidecar reads from NATS about a tenant, parsed: the bundle pointer (the
 * KV value a deploy writes) and a delta message. What each bad one gets, case by case; the
 * fuzz target `nats-messages` edits them at random (test/fuzz/targets.ts). The sizes and
 * sequence numbers must be safe integers: past 2^53 a number reads as its neighbour (a
 * pointer with `size_bytes` 1e300 was read until the fuzz target found it).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { encodePointer, parseDelta, parsePointer, type BundlePointer } from '../sidecar/src/distribution/index.ts';
import { ErrorCodes, PavilionError } from '../sidecar/src/lib/errors.ts';

const POINTER: BundlePointer = {
  v: 1, tenant: 'bank', revision: 'r1', object: 'a'.repeat(64), digest: 'a'.repeat(64), size_bytes: 4096,
  action: 'push', pushed_by: 'alice', pushed_at: '2026-12-01T06:00:00Z',
};
const DELTA = { v: 1, tenant: 'bank', base: 7, sequence: 3, roots: ['bank'], patch: { data: [{ op: 'upsert', path: '/bank/limit', value: 100 }] } };

const bytes = (value: unknown): Buffer => Buffer.from(JSON.stringify(value), 'utf8');

function refused(run: () => unknown, code: string, message: RegExp): void {
  assert.throws(run, (error: unknown) => error instanceof PavilionError && error.code === code && message.test(error.message));
}

describe('bundle pointer', () => {
  test('a valid pointer is read as written, and written back the same', () => {
    const read = parsePointer(encodePointer(POINTER), 'bank');
    assert.deepEqual(read, POINTER);
    assert.deepEqual(parsePointer(encodePointer(read), 'bank'), POINTER);
    const rollback = { ...POINTER, action: 'rollback', restores: 5, object_nuid: 'X4bLQy2Ab9' };
    assert.deepEqual(parsePointer(bytes(rollback), 'bank'), rollback);
  });

  const bad: Array<[string, unknown, RegExp]> = [
    ['not JSON', 'x{', /not JSON/],
    ['an array', [POINTER], /not an object/],
    ['version 2', { ...POINTER, v: 2 }, /unsupported version 2/],
    ['another tenant under this key', { ...POINTER, tenant: 'hospital' }, /names tenant "hospital" under key bank/],
    ['an empty revision', { ...POINTER, revision: '' }, /revision must be a non-empty string/],
    ['a digest that is not hex SHA-256', { ...POINTER, digest: 'A'.repeat(64) }, /digest must be a hex SHA-256/],
    ['a negative size', { ...POINTER, size_bytes: -1 }, /size_bytes must be a natural number/],
    ['a fractional size', { ...POINTER, size_bytes: 1.5 }, /size_bytes must be a natural number/],
    ['a size past 2^53', { ...POINTER, size_bytes: 1e300 }, /size_bytes must be a natural number/],
    ['an unknown action', { ...POINTER, action: 'delete' }, /action must be push or rollback/],
    ['an object nuid that is not one', { ...POINTER, object_nuid: '../C/x' }, /object_nuid must be a NATS nuid/],
    ['restores 0', { ...POINTER, restores: 0 }, /restores must be a KV revision/],
    ['restores past 2^53', { ...POINTER, restores: 2 ** 53 + 2 }, /restores must be a KV revision/],
  ];
  for (const [name, value, message] of bad) {
    test(`${name} -> ERR_BUNDLE_POINTER_INVALID`, () => {
      refused(() => parsePointer(typeof value === 'string' ? Buffer.from(value) : bytes(value), 'bank'), ErrorCodes.BUNDLE_POINTER_INVALID, message);
    });
  }
});

describe('delta message', () => {
  test('a valid delta is read with its operations', () => {
    const read = parseDelta(bytes(DELTA), 'bank');
    assert.deepEqual({ ...read, patch: { data: [...read.patch.data] } }, DELTA);
  });

  const bad: Array<[string, unknown, RegExp]> = [
    ['not JSON', '{"v":1', /delta is not JSON/],
    ['version 2', { ...DELTA, v: 2 }, /unsupported version/],
    ['another tenant on this subject', { ...DELTA, tenant: 'hospital' }, /names tenant "hospital" on bank's subject/],
    ['base 0', { ...DELTA, base: 0 }, /base must be a positive integer/],
    ['base past 2^53', { ...DELTA, base: 1e300 }, /base must be a positive integer/],
    ['sequence past 2^53', { ...DELTA, sequence: 2 ** 53 + 2 }, /sequence must be a positive integer/],
    ['roots not strings', { ...DELTA, roots: [1] }, /roots must be an array of strings/],
    ['an empty signature list', { ...DELTA, signatures: [] }, /signatures must be a non-empty array of strings/],
    ['a patch that is not one', { ...DELTA, patch: [] }, /patch must be an object/],
  ];
  for (const [name, value, message] of bad) {
    test(`${name} -> ERR_BUNDLE_DELTA_INVALID`, () => {
      refused(() => parseDelta(typeof value === 'string' ? Buffer.from(value) : bytes(value), 'bank'), ErrorCodes.BUNDLE_DELTA_INVALID, message);
    });
  }
});
