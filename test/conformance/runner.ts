/**
 * Runs one OPA conformance case through the real pipeline: `opa build -t wasm` of the case's
 * modules into a temporary directory, /policy.wasm out of the bundle, opa-wasm's loadPolicy
 * with the host builtins (so every host builtin call goes through opa-wasm's own dispatch),
 * data via setData, then evaluation of each entrypoint.
 *
 * The evaluation calls the same Wasm exports as opa-wasm's LoadedPolicy.evaluate, but reads the
 * result with `opa_value_dump` (Rego text) instead of `opa_json_dump`, as OPA's own Wasm
 * conformance suite does: that keeps sets distinguishable from arrays and numbers exact, so
 * results can be compared with OPA's expectations without rounding through doubles. An
 * `input_term` (Rego text) is loaded with `opa_value_parse`.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { type LoadedPolicy, loadPolicy } from '@open-policy-agent/opa-wasm';
import { encodeJson, rawJson } from '../../sidecar/src/engine/builtins/common.ts';
import { createHostBuiltins } from '../../sidecar/src/engine/builtins/index.ts';
import { ErrorCodes, PavilionError, describeThrown } from '../../sidecar/src/lib/errors.ts';
import type { BindingQuery, ConformanceCase } from './cases.ts';

export type BuildOutcome = { readonly ok: true; readonly wasm: Buffer } | { readonly ok: false; readonly message: string };

export type EvalOutcome =
  | { readonly kind: 'result'; readonly rows: Array<Record<string, unknown>> }
  | { readonly kind: 'error'; readonly message: string }
  | { readonly kind: 'build-error'; readonly message: string };

/** A file out of a (gzipped) tar archive; just enough tar for `opa build` bundles. */
export function extractFromTarGz(archive: Buffer, wanted: string): Buffer | undefined {
  const tar = gunzipSync(archive);
  let offset = 0;
  while (offset + 512 <= tar.length) {
    const header = tar.subarray(offset, offset + 512);
    if (header.every((b) => b === 0)) break;
    const field = (start: number, length: number): string =>
      header.subarray(start, start + length).toString('utf8').replace(/\0.*$/s, '');
    const name = field(0, 100);
    const prefix = field(345, 155);
    const size = parseInt(field(124, 12).trim() || '0', 8);
    const full = prefix === '' ? name : `${prefix}/${name}`;
    const dataStart = offset + 512;
    if (full.replace(/^\/+/, '') === wanted.replace(/^\/+/, '')) return Buffer.from(tar.subarray(dataStart, dataStart + size));
    offset = dataStart + Math.ceil(size / 512) * 512;
  }
  return undefined;
}

function run(binary: string, args: readonly string[]): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(binary, args, { timeout: 60_000, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : 1;
      resolve({ code, output: `${stdout}${stderr}`.trim() });
    });
  });
}

/** `opa build -t wasm` of the case's modules; the wasm module, or the compiler's message. */
export async function buildCase(opa: string, testCase: ConformanceCase, bindings: readonly BindingQuery[]): Promise<BuildOutcome> {
  const dir = await mkdtemp(join(tmpdir(), 'pavilion-conformance-'));
  try {
    const src = join(dir, 'src');
    await mkdir(src);
    await Promise.all(testCase.modules.map((module, i) => writeFile(join(src, `module-${i}.rego`), module)));
    const out = join(dir, 'bundle.tar.gz');
    const entrypoints = [...new Set(bindings.map((b) => b.entrypoint))];
    const args = ['build', '-t', 'wasm', ...entrypoints.flatMap((e) => ['-e', e]), '-o', out, src];
    const result = await run(opa, args);
    if (result.code !== 0) return { ok: false, message: result.output };
    const wasm = extractFromTarGz(await readFile(out), '/policy.wasm');
    if (wasm === undefined) return { ok: false, message: 'bundle has no /policy.wasm' };
    return { ok: true, wasm };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Rego values as dumped by opa_value_dump

/** A Rego set. */
export class RegoSet {
  readonly items: unknown[];
  constructor(items: unknown[]) {
    this.items = items;
  }
}

/** A Rego number, kept as its exact text. */
export class RegoNumber {
  readonly text: string;
  constructor(text: string) {
    this.text = text;
  }
}

/** Parse Rego value text (JSON plus sets `{a, b}`, `set()` and non-string object keys). */
export function parseRegoValue(text: string): unknown {
  let pos = 0;
  const fail = (what: string): never => {
    throw new PavilionError(ErrorCodes.INTERNAL, `cannot parse Rego value (${what}) at ${pos}: ${text.slice(pos, pos + 40)}`);
  };
  const space = (): void => {
    while (pos < text.length && /\s/.test(text[pos] as string)) pos++;
  };
  const value = (): unknown => {
    space();
    const c = text[pos];
    if (c === '"') {
      const start = pos++;
      while (pos < text.length && text[pos] !== '"') pos += text[pos] === '\\' ? 2 : 1;
      pos++;
      return JSON.parse(text.slice(start, pos)) as string;
    }
    if (c === '[') {
      pos++;
      const items: unknown[] = [];
      space();
      if (text[pos] === ']') {
        pos++;
        return items;
      }
      for (;;) {
        items.push(value());
        space();
        const sep = text[pos++];
        if (sep === ']') return items;
        if (sep !== ',') fail('array');
      }
    }
    if (c === '{') {
      pos++;
      space();
      if (text[pos] === '}') {
        pos++;
        return new Map();
      }
      const first = value();
      space();
      if (text[pos] === ':') {
        const entries = new Map<unknown, unknown>();
        pos++;
        entries.set(first, value());
        for (;;) {
          space();
          const sep = text[pos++];
          if (sep === '}') return entries;
          if (sep !== ',') fail('object');
          const key = value();
          space();
          if (text[pos++] !== ':') fail('object key');
          entries.set(key, value());
        }
      }
      const items = [first];
      for (;;) {
        space();
        const sep = text[pos++];
        if (sep === '}') return new RegoSet(items);
        if (sep !== ',') fail('set');
        items.push(value());
      }
    }
    if (text.startsWith('set()', pos)) {
      pos += 5;
      return new RegoSet([]);
    }
    for (const [word, v] of [
      ['true', true],
      ['false', false],
      ['null', null],
    ] as const) {
      if (text.startsWith(word, pos)) {
        pos += word.length;
        return v;
      }
    }
    const number = /^-?\d+(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(pos, pos + 1000));
    if (number === null) return fail('value');
    pos += number[0].length;
    return new RegoNumber(number[0]);
  };
  const result = value();
  space();
  if (pos !== text.length) fail('trailing text');
  return result;
}

// ---------------------------------------------------------------------------------------------
// Evaluation

interface OpaExports {
  opa_malloc(size: number): number;
  opa_json_parse(addr: number, length: number): number;
  opa_value_parse(addr: number, length: number): number;
  opa_heap_ptr_set(addr: number): void;
  opa_eval_ctx_new(): number;
  opa_eval_ctx_set_input(ctx: number, addr: number): void;
  opa_eval_ctx_set_data(ctx: number, addr: number): void;
  opa_eval_ctx_set_entrypoint(ctx: number, entrypoint: number): void;
  eval(ctx: number): number;
  opa_eval_ctx_get_result(ctx: number): number;
  opa_value_dump(addr: number): number;
}

interface PolicyInternals {
  readonly wasmInstance: WebAssembly.Instance;
  readonly mem: WebAssembly.Memory;
  readonly dataAddr: number;
  readonly dataHeapPtr: number;
  readonly entrypoints: Record<string, number>;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function evaluateEntrypoint(policy: LoadedPolicy, entrypoint: string, input: { text: string; rego: boolean } | undefined): unknown {
  const internals = policy as unknown as PolicyInternals;
  const exports = internals.wasmInstance.exports as unknown as OpaExports;
  const id = internals.entrypoints[entrypoint];
  if (id === undefined) throw new PavilionError(ErrorCodes.ENTRYPOINT_UNKNOWN, `no entrypoint ${entrypoint}`);
  exports.opa_heap_ptr_set(internals.dataHeapPtr);
  let inputAddr = 0;
  if (input !== undefined) {
    const bytes = encoder.encode(input.text);
    const addr = exports.opa_malloc(bytes.length);
    new Uint8Array(internals.mem.buffer).set(bytes, addr);
    inputAddr = input.rego ? exports.opa_value_parse(addr, bytes.length) : exports.opa_json_parse(addr, bytes.length);
    if (inputAddr === 0) throw new PavilionError(ErrorCodes.INTERNAL, 'the policy could not parse the input');
  }
  const ctx = exports.opa_eval_ctx_new();
  if (inputAddr !== 0) exports.opa_eval_ctx_set_input(ctx, inputAddr);
  exports.opa_eval_ctx_set_data(ctx, internals.dataAddr);
  exports.opa_eval_ctx_set_entrypoint(ctx, id);
  exports.eval(ctx);
  const start = exports.opa_value_dump(exports.opa_eval_ctx_get_result(ctx));
  const memory = new Uint8Array(internals.mem.buffer);
  let end = start;
  while (memory[end] !== 0) end++;
  return parseRegoValue(decoder.decode(memory.subarray(start, end)));
}

/** Evaluate the built policy: one row of bindings when every entrypoint is defined, else none. */
export async function evaluateCase(
  wasm: Buffer,
  testCase: ConformanceCase,
  bindings: readonly BindingQuery[],
  nowNs: bigint,
): Promise<EvalOutcome> {
  const context = { nowNs };
  const builtins = createHostBuiltins(() => context);
  let input: { text: string; rego: boolean } | undefined;
  if (testCase.inputTerm !== undefined) input = { text: testCase.inputTerm, rego: true };
  else if (testCase.input !== undefined) input = { text: encodeJson(testCase.input), rego: false };
  try {
    const policy = await loadPolicy(wasm, { initial: 5 }, builtins);
    policy.setData(rawJson(encodeJson(testCase.data ?? {})));
    const row: Record<string, unknown> = {};
    for (const binding of bindings) {
      const results = evaluateEntrypoint(policy, binding.entrypoint, input);
      if (!(results instanceof RegoSet) || results.items.length === 0) return { kind: 'result', rows: [] };
      const first = results.items[0];
      row[binding.variable] = first instanceof Map ? first.get('result') : undefined;
    }
    return { kind: 'result', rows: [row] };
  } catch (thrown) {
    return { kind: 'error', message: describeThrown(thrown) };
  }
}
