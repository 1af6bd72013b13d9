/**
 * File digests exactly as OPA computes them for `.signatures.json` (v1/bundle/hash.go and
 * verify.go in OPA):
 *
 * - structured files (`.json`, `.manifest`) are parsed, then re-encoded with object keys
 *   sorted by their UTF-8 bytes, no whitespace, numbers kept as their source literals
 *   (`1.0` stays `1.0`), and strings escaped the way Go's `encoding/json` does with HTML
 *   escaping off (`\b \f \n \r \t`, other control characters as `\u00xx`, U+2028/U+2029
 *   escaped, lone surrogates replaced by U+FFFD);
 * - every other file is hashed as raw bytes.
 *
 * So whitespace and key order in a JSON file do not change its digest, and a digest
 * computed here matches the one `opa build --signing-key` writes. The parser is our own
 * because `JSON.parse` loses number literals; it bounds nesting depth, since bundles arrive
 * from the network.
 */
import { createHash } from 'node:crypto';
import { ErrorCodes, PavilionError } from '../lib/errors.ts';

/** OPA's hashing algorithm names that Pavilion accepts (MD5, SHA-1 and SHA-224 are refused). */
const ALGORITHMS: Readonly<Record<string, string>> = {
  'SHA-256': 'sha256',
  'SHA-384': 'sha384',
  'SHA-512': 'sha512',
  'SHA-512-224': 'sha512-224',
  'SHA-512-256': 'sha512-256',
};

export const DEFAULT_FILE_HASH_ALGORITHM = 'SHA-256';
const MAX_DEPTH = 512;

export function isSupportedHashAlgorithm(name: string): boolean {
  return Object.hasOwn(ALGORITHMS, name);
}

/** OPA treats these as structured documents (YAML is never accepted in a Pavilion bundle). */
export function isStructuredFile(name: string): boolean {
  return name.endsWith('.json') || name.endsWith('/.manifest') || name === '.manifest';
}

type Node = string | { readonly number: string } | boolean | null | Node[] | Map<string, Node>;

// Sticky, shared by every parse: each use sets lastIndex first, and nothing awaits in between.
const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
const STRING = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y;

class Parser {
  #pos = 0;
  readonly #text: string;
  readonly #file: string;

  constructor(text: string, file: string) {
    this.#text = text;
    this.#file = file;
  }

  parseDocument(): Node {
    const value = this.#value(0);
    this.#skipWhitespace();
    if (this.#pos !== this.#text.length) this.#fail('unexpected data after the JSON value');
    return value;
  }

  #fail(message: string): never {
    throw new PavilionError(ErrorCodes.BUNDLE_CORRUPT, `${this.#file} is not valid JSON: ${message} at offset ${this.#pos}`);
  }

  #skipWhitespace(): void {
    const text = this.#text;
    while (this.#pos < text.length) {
      const c = text.charCodeAt(this.#pos);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) this.#pos++;
      else break;
    }
  }

  #value(depth: number): Node {
    if (depth > MAX_DEPTH) this.#fail(`nested deeper than ${MAX_DEPTH} levels`);
    this.#skipWhitespace();
    const c = this.#text[this.#pos];
    switch (c) {
      case '{': return this.#object(depth);
      case '[': return this.#array(depth);
      case '"': return this.#string();
      case 't': return this.#literal('true', true);
      case 'f': return this.#literal('false', false);
      case 'n': return this.#literal('null', null);
      default: return this.#number();
    }
  }

  #literal<T extends Node>(word: string, value: T): T {
    if (!this.#text.startsWith(word, this.#pos)) this.#fail(`expected ${word}`);
    this.#pos += word.length;
    return value;
  }

  #number(): Node {
    NUMBER.lastIndex = this.#pos;
    if (!NUMBER.test(this.#text) || NUMBER.lastIndex === this.#pos) this.#fail('expected a value');
    const literal = this.#text.slice(this.#pos, NUMBER.lastIndex);
    this.#pos = NUMBER.lastIndex;
    return { number: literal };
  }

  #string(): string {
    STRING.lastIndex = this.#pos;
    if (!STRING.test(this.#text)) this.#fail('invalid string');
    const literal = this.#text.slice(this.#pos, STRING.lastIndex);
    this.#pos = STRING.lastIndex;
    // Without escapes the literal's inside is the string: the text came from a UTF-8 decode,
    // which never yields a lone surrogate.
    if (!literal.includes('\\')) return literal.slice(1, -1);
    // Go's decoder turns lone surrogate escapes into U+FFFD; so must we.
    return (JSON.parse(literal) as string).toWellFormed();
  }

  #array(depth: number): Node[] {
    this.#pos++;
    const out: Node[] = [];
    this.#skipWhitespace();
    if (this.#text[this.#pos] === ']') {
      this.#pos++;
      return out;
    }
    for (;;) {
      out.push(this.#value(depth + 1));
      this.#skipWhitespace();
      const c = this.#text[this.#pos++];
      if (c === ']') return out;
      if (c !== ',') this.#fail("expected ',' or ']'");
    }
  }

  #object(depth: number): Map<string, Node> {
    this.#pos++;
    const out = new Map<string, Node>();
    this.#skipWhitespace();
    if (this.#text[this.#pos] === '}') {
      this.#pos++;
      return out;
    }
    for (;;) {
      this.#skipWhitespace();
      if (this.#text[this.#pos] !== '"') this.#fail('expected a string key');
      const key = this.#string();
      this.#skipWhitespace();
      if (this.#text[this.#pos++] !== ':') this.#fail("expected ':'");
      out.delete(key); // a repeated key: the last one wins, as in Go
      out.set(key, this.#value(depth + 1));
      this.#skipWhitespace();
      const c = this.#text[this.#pos++];
      if (c === '}') return out;
      if (c !== ',') this.#fail("expected ',' or '}'");
    }
  }
}

const SHORT_ESCAPES: Readonly<Record<number, string>> = { 0x08: '\\b', 0x0c: '\\f', 0x0a: '\\n', 0x0d: '\\r', 0x09: '\\t', 0x22: '\\"', 0x5c: '\\\\' };

/** What goJsonString writes other than as itself. */
const GO_ESCAPED = /["\\\u0000-\u001f\u2028\u2029]/;

/** A string as Go's encoding/json writes it with SetEscapeHTML(false). */
export function goJsonString(value: string): string {
  if (!GO_ESCAPED.test(value)) return `"${value}"`;
  let out = '"';
  for (const char of value) {
    const code = char.codePointAt(0) ?? 0;
    const short = SHORT_ESCAPES[code];
    if (short !== undefined) out += short;
    else if (code < 0x20 || code === 0x2028 || code === 0x2029) out += `\\u${code.toString(16).padStart(4, '0')}`;
    else out += char;
  }
  return `${out}"`;
}

function byUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

const SURROGATE = /[\ud800-\udfff]/;

/**
 * An object's keys in Go's order (by UTF-8 bytes). Without surrogates, the order of UTF-16
 * code units (a plain sort) is the order of code points, which UTF-8 keeps; only a character
 * past U+FFFF (a surrogate pair) sorts differently, so only then are the bytes compared.
 */
function sortedKeys(node: ReadonlyMap<string, Node>): string[] {
  const keys = [...node.keys()];
  return keys.some((key) => SURROGATE.test(key)) ? keys.sort(byUtf8) : keys.sort();
}

function encode(node: Node): string {
  if (node === null) return 'null';
  if (typeof node === 'boolean') return node ? 'true' : 'false';
  if (typeof node === 'string') return goJsonString(node);
  if (Array.isArray(node)) {
    let out = '[';
    for (let i = 0; i < node.length; i++) out += (i > 0 ? ',' : '') + encode(node[i] as Node);
    return `${out}]`;
  }
  if (node instanceof Map) {
    let out = '{';
    const keys = sortedKeys(node);
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i] as string;
      out += `${i > 0 ? ',' : ''}${goJsonString(key)}:${encode(node.get(key) as Node)}`;
    }
    return `${out}}`;
  }
  return node.number;
}

/** The bytes OPA hashes for a structured file. */
export function canonicalStructuredBytes(name: string, bytes: Buffer): Buffer {
  return Buffer.from(encode(new Parser(bytes.toString('utf8'), name).parseDocument()), 'utf8');
}

/** Hex digest of one bundle file under OPA's rules. */
export function hashBundleFile(name: string, bytes: Buffer, algorithm: string = DEFAULT_FILE_HASH_ALGORITHM): string {
  const nodeName = ALGORITHMS[algorithm];
  if (nodeName === undefined) {
    throw new PavilionError(
      ErrorCodes.BUNDLE_SIGNATURE_INVALID,
      `file ${name} is hashed with ${algorithm}; accepted: ${Object.keys(ALGORITHMS).join(', ')}`,
    );
  }
  const content = isStructuredFile(name) ? canonicalStructuredBytes(name, bytes) : bytes;
  return createHash(nodeName).update(content).digest('hex');
}
