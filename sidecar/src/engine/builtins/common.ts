/**
 * Shared plumbing for the host builtins: the calling-convention types, exact-number result
 * encoding, operand checks, and Go-compatible byte/string and base64 helpers.
 *
 * Calling convention (opa-wasm 1.10 `_builtinCall`): every argument arrives JSON.parse'd from
 * Wasm memory (so Rego sets arrive as arrays and integers beyond 2^53 arrive rounded); the
 * return value is JSON.stringify'd back, except `undefined` (the call is undefined in Rego,
 * which is how OPA's default non-strict mode treats a builtin error) and an `ArrayBuffer`
 * (raw JSON text, passed through unchanged). `hostResult` uses the latter whenever a result
 * holds a `bigint` or an `ExactNumber`, so integers such as nanosecond timestamps, X.509
 * serial numbers or RSA moduli reach Rego exactly.
 *
 * Known limits: a host builtin cannot return a Rego set (opa-wasm parses results as JSON),
 * so set-valued builtins return sorted arrays; strings are UTF-16 here, and byte strings that
 * are not valid UTF-8 are decoded with U+FFFD replacement (OPA keeps the raw bytes and
 * replaces them only when it serialises to JSON).
 */

import { ErrorCodes, PavilionError } from '../../lib/errors.ts';

/** Fixed per evaluation: every time.now_ns() call in one evaluation returns the same value. */
export interface EvaluationContext {
  readonly nowNs: bigint;
}

export type HostBuiltin = (...args: unknown[]) => unknown;

export type ContextProvider = () => EvaluationContext;

/** A builtin family: the builtins it implements, keyed by their Rego names. */
export type BuiltinFamily = Readonly<Record<string, HostBuiltin>>;

/** A JSON number kept as its exact decimal text (e.g. `1e400` from a JWT payload). */
export class ExactNumber {
  readonly text: string;
  constructor(text: string) {
    this.text = text;
  }
  toNumber(): number {
    return Number(this.text);
  }
}

/**
 * The error builtins raise internally for invalid operands or data; the builtin table turns any
 * failure into an undefined result (OPA's non-strict mode), so it never reaches the policy.
 */
export function builtinFailure(message: string): PavilionError {
  return new PavilionError(ErrorCodes.EVAL_BUILTIN, message);
}

// ---------------------------------------------------------------------------------------------
// Result encoding

function needsExactEncoding(value: unknown, depth = 0): boolean {
  if (typeof value === 'bigint' || value instanceof ExactNumber) return true;
  if (depth > 256 || typeof value !== 'object' || value === null) return false;
  if (Array.isArray(value)) return value.some((item) => needsExactEncoding(item, depth + 1));
  for (const key of Object.keys(value)) {
    if (needsExactEncoding((value as Record<string, unknown>)[key], depth + 1)) return true;
  }
  return false;
}

/** JSON text of a result value; bigints and ExactNumbers are written as exact number text. */
export function encodeJson(value: unknown): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'bigint':
      return value.toString();
    case 'number':
      if (!Number.isFinite(value)) throw builtinFailure('non-finite number in builtin result');
      return JSON.stringify(value);
    case 'string':
    case 'boolean':
      return JSON.stringify(value);
    case 'object':
      break;
    default:
      throw builtinFailure(`cannot encode ${typeof value} as JSON`);
  }
  if (value instanceof ExactNumber) return value.text;
  if (Array.isArray(value)) return `[${value.map((item) => encodeJson(item)).join(',')}]`;
  const parts: string[] = [];
  for (const key of Object.keys(value)) {
    const item = (value as Record<string, unknown>)[key];
    if (item === undefined) continue;
    parts.push(`${JSON.stringify(key)}:${encodeJson(item)}`);
  }
  return `{${parts.join(',')}}`;
}

const textEncoder = new TextEncoder();

/** Raw JSON text as the ArrayBuffer opa-wasm passes through unchanged. */
export function rawJson(text: string): ArrayBuffer {
  const bytes = textEncoder.encode(text);
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
}

/** What a builtin hands back to opa-wasm: the value itself, or raw JSON when it must stay exact. */
export function hostResult(value: unknown): unknown {
  if (value === undefined || value instanceof ArrayBuffer) return value;
  return needsExactEncoding(value) ? rawJson(encodeJson(value)) : value;
}

/** An integer result: a plain number when it is safe, otherwise a bigint (encoded exactly). */
export function exactInteger(value: bigint): number | bigint {
  return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
}

// ---------------------------------------------------------------------------------------------
// Exact JSON parsing (for JSON text a builtin decodes itself, e.g. JWT headers and payloads)

const LONG_NUMBER = /\d{16,}|[eE][+-]?\d{3,}/;

/**
 * JSON.parse, except that integers outside the safe range become bigints and numbers that do
 * not fit a double keep their text (ExactNumber). Duplicate keys: the last one wins, as with
 * Go's encoding/json. Throws SyntaxError on invalid JSON.
 */
export function parseJsonExact(text: string): unknown {
  const quick: unknown = JSON.parse(text);
  if (!LONG_NUMBER.test(text)) return quick;
  return new ExactJsonReader(text).document();
}

class ExactJsonReader {
  private pos = 0;
  private readonly text: string;
  constructor(text: string) {
    this.text = text;
  }

  document(): unknown {
    const value = this.value();
    this.space();
    if (this.pos !== this.text.length) throw builtinFailure('trailing data after JSON value');
    return value;
  }

  private space(): void {
    while (this.pos < this.text.length) {
      const c = this.text.charCodeAt(this.pos);
      if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) break;
      this.pos++;
    }
  }

  private value(): unknown {
    this.space();
    const c = this.text[this.pos];
    if (c === '{') return this.object();
    if (c === '[') return this.array();
    if (c === '"') return this.string();
    if (c === 't') return this.literal('true', true);
    if (c === 'f') return this.literal('false', false);
    if (c === 'n') return this.literal('null', null);
    return this.number();
  }

  private literal<T>(word: string, value: T): T {
    if (!this.text.startsWith(word, this.pos)) throw builtinFailure(`unexpected token at ${this.pos}`);
    this.pos += word.length;
    return value;
  }

  private object(): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    this.pos++;
    this.space();
    if (this.text[this.pos] === '}') {
      this.pos++;
      return out;
    }
    for (;;) {
      this.space();
      const key = this.string();
      this.space();
      if (this.text[this.pos] !== ':') throw builtinFailure(`expected ':' at ${this.pos}`);
      this.pos++;
      const item = this.value();
      Object.defineProperty(out, key, { value: item, enumerable: true, writable: true, configurable: true });
      this.space();
      const sep = this.text[this.pos++];
      if (sep === '}') return out;
      if (sep !== ',') throw builtinFailure(`expected ',' or '}' at ${this.pos - 1}`);
    }
  }

  private array(): unknown[] {
    const out: unknown[] = [];
    this.pos++;
    this.space();
    if (this.text[this.pos] === ']') {
      this.pos++;
      return out;
    }
    for (;;) {
      out.push(this.value());
      this.space();
      const sep = this.text[this.pos++];
      if (sep === ']') return out;
      if (sep !== ',') throw builtinFailure(`expected ',' or ']' at ${this.pos - 1}`);
    }
  }

  private string(): string {
    if (this.text[this.pos] !== '"') throw builtinFailure(`expected string at ${this.pos}`);
    const start = this.pos;
    this.pos++;
    while (this.pos < this.text.length) {
      const c = this.text[this.pos];
      if (c === '\\') {
        this.pos += 2;
        continue;
      }
      this.pos++;
      if (c === '"') return JSON.parse(this.text.slice(start, this.pos)) as string;
    }
    throw builtinFailure('unterminated string');
  }

  private number(): number | bigint | ExactNumber {
    const match = /^-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(this.text.slice(this.pos, this.pos + 4096));
    if (match === null) throw builtinFailure(`unexpected token at ${this.pos}`);
    const token = match[0];
    this.pos += token.length;
    if (match[1] === undefined && match[2] === undefined) {
      const asNumber = Number(token);
      return Number.isSafeInteger(asNumber) ? asNumber : BigInt(token);
    }
    const asNumber = Number(token);
    return Number.isFinite(asNumber) ? asNumber : new ExactNumber(token);
  }
}

// ---------------------------------------------------------------------------------------------
// Operand checks

export function isString(value: unknown): value is string {
  return typeof value === 'string';
}

/** A JSON object (not an array, not null). */
export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Go's builtins.IntOperand: an integral number (int64 range). */
export function intOperand(value: unknown): number | undefined {
  if (typeof value !== 'number' || !Number.isInteger(value)) return undefined;
  if (Math.abs(value) > 2 ** 63) return undefined;
  return value;
}

/**
 * The integer a JSON number most likely had before opa-wasm's JSON.parse rounded it: the
 * shortest decimal that round-trips to the same double. This is exact for integers with at most
 * 15 significant digits, and with 16 where doubles are dense enough (e.g. present-day
 * nanosecond timestamps at microsecond precision); otherwise it is the nearest candidate.
 * Non-integers give undefined.
 */
export function integerFromDouble(value: number): bigint | undefined {
  if (!Number.isFinite(value) || !Number.isInteger(value)) return undefined;
  if (Number.isSafeInteger(value)) return BigInt(value);
  const text = String(Math.abs(value));
  const sign = value < 0 ? -1n : 1n;
  const match = /^(\d+)(?:\.(\d+))?e\+(\d+)$/.exec(text);
  if (match === null) return sign * BigInt(text);
  const intPart = match[1] ?? '0';
  const fraction = match[2] ?? '';
  const exponent = Number(match[3]);
  const digits = intPart + fraction;
  const zeros = exponent - fraction.length;
  return sign * BigInt(zeros >= 0 ? digits + '0'.repeat(zeros) : digits.slice(0, digits.length + zeros));
}

// ---------------------------------------------------------------------------------------------
// Bytes and strings

const utf8Decoder = new TextDecoder('utf-8', { fatal: false });

/** UTF-8 bytes of a Rego string (Go's StringOperandByteSlice). */
export function utf8Bytes(value: string): Buffer {
  return Buffer.from(value, 'utf8');
}

/** A byte string as a Rego string (invalid UTF-8 becomes U+FFFD). */
export function bytesToString(bytes: Uint8Array): string {
  return utf8Decoder.decode(bytes);
}

const STD_B64 = /^[A-Za-z0-9+/]*={0,2}$/;
const URL_B64 = /^[A-Za-z0-9\-_]*={0,2}$/;
const STD_B64_RAW = /^[A-Za-z0-9+/]*$/;
const URL_B64_RAW = /^[A-Za-z0-9\-_]*$/;

/**
 * Go's base64 DecodeString for the standard or URL alphabet: padded unless `raw`, '\r' and '\n'
 * ignored, anything else outside the alphabet is an error (undefined).
 */
export function goBase64Decode(input: string, alphabet: 'std' | 'url', raw = false): Buffer | undefined {
  const s = input.replace(/[\r\n]/g, '');
  if (raw) {
    if (!(alphabet === 'std' ? STD_B64_RAW : URL_B64_RAW).test(s) || s.length % 4 === 1) return undefined;
  } else {
    if (!(alphabet === 'std' ? STD_B64 : URL_B64).test(s) || s.length % 4 !== 0) return undefined;
  }
  return Buffer.from(s, alphabet === 'std' ? 'base64' : 'base64url');
}

/** OPA's base64url.decode: pads a missing '=' suffix itself, then decodes strictly. */
export function opaBase64UrlDecode(input: string): Buffer | undefined {
  let s = input;
  if (!s.endsWith('=')) {
    switch (s.length % 4) {
      case 0:
        break;
      case 2:
        s += '==';
        break;
      case 3:
        s += '=';
        break;
      default:
        return undefined;
    }
  }
  return goBase64Decode(s, 'url');
}

// ---------------------------------------------------------------------------------------------
// Rego value ordering (for set-valued results returned as sorted arrays)

function typeRank(value: unknown): number {
  if (value === null) return 0;
  switch (typeof value) {
    case 'boolean':
      return 1;
    case 'number':
    case 'bigint':
      return 2;
    case 'string':
      return 3;
    default:
      return Array.isArray(value) ? 4 : 6;
  }
}

function compareStrings(a: string, b: string): number {
  // Go compares strings bytewise (UTF-8), which equals code point order.
  if (a === b) return 0;
  const ai = a[Symbol.iterator]();
  const bi = b[Symbol.iterator]();
  for (;;) {
    const x = ai.next();
    const y = bi.next();
    if (x.done === true) return y.done === true ? 0 : -1;
    if (y.done === true) return 1;
    const cx = x.value.codePointAt(0) ?? 0;
    const cy = y.value.codePointAt(0) ?? 0;
    if (cx !== cy) return cx < cy ? -1 : 1;
  }
}

/** Rego's total order over JSON values (null < boolean < number < string < array < object). */
export function compareValues(a: unknown, b: unknown): number {
  const ra = typeRank(a);
  const rb = typeRank(b);
  if (ra !== rb) return ra < rb ? -1 : 1;
  switch (ra) {
    case 0:
      return 0;
    case 1:
      return a === b ? 0 : a === false ? -1 : 1;
    case 2: {
      const x = a as number | bigint;
      const y = b as number | bigint;
      return x < y ? -1 : x > y ? 1 : 0;
    }
    case 3:
      return compareStrings(a as string, b as string);
    case 4: {
      const x = a as unknown[];
      const y = b as unknown[];
      for (let i = 0; i < Math.min(x.length, y.length); i++) {
        const c = compareValues(x[i], y[i]);
        if (c !== 0) return c;
      }
      return x.length - y.length < 0 ? -1 : x.length === y.length ? 0 : 1;
    }
    default: {
      const x = a as Record<string, unknown>;
      const y = b as Record<string, unknown>;
      const xk = Object.keys(x).sort(compareStrings);
      const yk = Object.keys(y).sort(compareStrings);
      for (let i = 0; i < Math.min(xk.length, yk.length); i++) {
        const kx = xk[i] as string;
        const ky = yk[i] as string;
        const c = compareStrings(kx, ky);
        if (c !== 0) return c;
        const v = compareValues(x[kx], y[ky]);
        if (v !== 0) return v;
      }
      return xk.length < yk.length ? -1 : xk.length === yk.length ? 0 : 1;
    }
  }
}

/** Rego equality of JSON values. */
export function valuesEqual(a: unknown, b: unknown): boolean {
  return compareValues(a, b) === 0;
}

/** A Rego set as opa-wasm can carry it: a sorted array without duplicates. */
export function toSortedSet(values: readonly unknown[]): unknown[] {
  const sorted = [...values].sort(compareValues);
  return sorted.filter((value, index) => index === 0 || compareValues(sorted[index - 1], value) !== 0);
}

// ---------------------------------------------------------------------------------------------
// Per-evaluation memory

const memos = new WeakMap<EvaluationContext, Map<string, unknown>>();

/**
 * Memoise a value for the current evaluation, keyed by the EvaluationContext object identity
 * (OPA caches uuid.rfc4122 and rand.intn results per query the same way). The engine hands a
 * fresh context object to each evaluation.
 */
export function memoize<T>(context: EvaluationContext, key: string, compute: () => T): T {
  let memo = memos.get(context);
  if (memo === undefined) {
    memo = new Map();
    memos.set(context, memo);
  }
  if (memo.has(key)) return memo.get(key) as T;
  const value = compute();
  memo.set(key, value);
  return value;
}

// ---------------------------------------------------------------------------------------------
// Go's encoding/json output

function goString(value: string): string {
  return JSON.stringify(value).replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Go's json.Marshal of a JSON value: object keys sorted bytewise, <, >, & and U+2028/9 escaped. */
export function goJsonMarshal(value: unknown): string {
  if (typeof value === 'string') return goString(value);
  if (Array.isArray(value)) return `[${value.map((item) => goJsonMarshal(item)).join(',')}]`;
  if (isObject(value) && !(value instanceof ExactNumber)) {
    const keys = Object.keys(value).sort((a, b) => Buffer.compare(utf8Bytes(a), utf8Bytes(b)));
    return `{${keys.map((key) => `${goString(key)}:${goJsonMarshal(value[key])}`).join(',')}}`;
  }
  return encodeJson(value);
}
