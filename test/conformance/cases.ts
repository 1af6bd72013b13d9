/**
 * OPA's own evaluation test cases (v1/test/cases/testdata/v1/<dir>/*.yaml in the OPA Go module),
 * read in place from the Go module cache; nothing is copied into the repository.
 *
 * A case is applicable when its directory exercises a builtin the host implements and its
 * query is a conjunction of `data.<path> = <var>` expressions (each becomes a Wasm entrypoint).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { type DocumentOptions, type ParseOptions, type SchemaOptions, type Tags, parseAllDocuments } from 'yaml';
import { ErrorCodes, PavilionError } from '../../sidecar/src/lib/errors.ts';
import { OPA_VERSION } from '../../sidecar/src/lib/tools.ts';

/** Case directories whose builtins the host provides (see sidecar/src/engine/builtins). */
export const APPLICABLE_DIRECTORIES: readonly string[] = [
  'time',
  'jwtbuiltins',
  'jwtdecodeverify',
  'jwtverifyrsa',
  'jwtverifyhs256',
  'jwtverifyhs384',
  'jwtverifyhs512',
  'jwtverifyeddsa',
  'jwtencodesign',
  'jwtencodesignraw',
  'jwtencodesignheadererrors',
  'jwtencodesignpayloaderrors',
  'cryptomd5',
  'cryptosha1',
  'cryptosha256',
  'cryptohmacequal',
  'cryptohmacmd5',
  'cryptohmacsha1',
  'cryptohmacsha256',
  'cryptohmacsha512',
  'cryptox509parsecertificates',
  'cryptox509parsersaprivatekey',
  'jsonpatch',
  'objectkeys',
  'units',
  'semvercompare',
  'semverisvalid',
  'urlbuiltins',
  'hexbuiltins',
  'base64urlbuiltins',
  'uuid',
  'rand',
  'netcidrmerge',
  'netcidrexpand',
  'netcidrisvalid',
  'netcidrcontainsmatches',
  'regexreplace',
  'regexfind',
  'regexmatchtemplate',
];

export interface BindingQuery {
  /** Entrypoint path, e.g. `generated/p` for `data.generated.p`. */
  readonly entrypoint: string;
  /** The variable bound to the document. */
  readonly variable: string;
}

export interface ConformanceCase {
  /** Unique test name: the note, suffixed when a note repeats. */
  readonly name: string;
  readonly note: string;
  readonly directory: string;
  readonly file: string;
  readonly query: string;
  readonly modules: readonly string[];
  readonly data: unknown;
  readonly input: unknown;
  readonly inputTerm: string | undefined;
  readonly wantResult: ReadonlyArray<Readonly<Record<string, unknown>>> | undefined;
  readonly wantDefined: boolean | undefined;
  readonly wantError: string | undefined;
  readonly wantErrorCode: string | undefined;
  readonly sortBindings: boolean;
  readonly strictError: boolean;
  /** The query as entrypoints, or undefined when its shape is not `data.<path> = <var>; ...`. */
  readonly bindings: readonly BindingQuery[] | undefined;
}

/** `go env GOMODCACHE`, asked at run time. */
export function goModCache(): string {
  return execFileSync('go', ['env', 'GOMODCACHE'], { encoding: 'utf8' }).trim();
}

export function opaCasesRoot(): string {
  return join(goModCache(), 'github.com', 'open-policy-agent', `opa@${OPA_VERSION}`, 'v1', 'test', 'cases', 'testdata', 'v1');
}

const BINDING = /^data((?:\.[A-Za-z_][A-Za-z0-9_]*)+)\s*=\s*([A-Za-z_][A-Za-z0-9_]*)$/;

/** Split a query into `data.<path> = <var>` expressions; undefined for any other shape. */
export function parseBindings(query: string): BindingQuery[] | undefined {
  const expressions = query
    .split(/[;\n]/)
    .map((part) => part.trim())
    .filter((part) => part !== '');
  if (expressions.length === 0) return undefined;
  const out: BindingQuery[] = [];
  for (const expression of expressions) {
    const match = BINDING.exec(expression);
    if (match === null) return undefined;
    out.push({ entrypoint: (match[1] ?? '').slice(1).replaceAll('.', '/'), variable: match[2] ?? '' });
  }
  return out;
}

/**
 * OPA reads these files with a YAML 1.1 parser (go-yaml v2) that leaves timestamps and
 * sexagesimal numbers as strings; the `yaml` package's 1.1 schema would convert them.
 * Integers are read as bigints so expected results compare exactly.
 */
const YAML_OPTIONS = {
  version: '1.1',
  intAsBigInt: true,
  customTags: (tags: Tags): Tags =>
    tags.filter((t) => typeof t === 'string' || (t.tag !== 'tag:yaml.org,2002:timestamp' && !('format' in t && t.format === 'TIME'))),
} satisfies ParseOptions & DocumentOptions & SchemaOptions;

function optionalString(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

/** Every case of the applicable directories, in file order. */
export function loadConformanceCases(root: string = opaCasesRoot()): ConformanceCase[] {
  const out: ConformanceCase[] = [];
  const seen = new Map<string, number>();
  for (const directory of APPLICABLE_DIRECTORIES) {
    const dir = join(root, directory);
    if (!existsSync(dir)) throw new PavilionError(ErrorCodes.INTERNAL, `OPA test case directory not found: ${dir}`);
    for (const file of readdirSync(dir).filter((f) => f.endsWith('.yaml')).sort()) {
      const text = readFileSync(join(dir, file), 'utf8');
      for (const doc of parseAllDocuments(text, YAML_OPTIONS)) {
        if ('errors' in doc && doc.errors.length > 0) throw new PavilionError(ErrorCodes.INTERNAL, `${file}: ${doc.errors[0]?.message ?? 'YAML error'}`);
        const parsed = doc.toJS({ maxAliasCount: -1 }) as { cases?: Array<Record<string, unknown>> } | null;
        for (const raw of parsed?.cases ?? []) {
          const note = String(raw['note']);
          const count = (seen.get(note) ?? 0) + 1;
          seen.set(note, count);
          const query = String(raw['query'] ?? '');
          out.push({
            name: count === 1 ? note : `${note} (#${count})`,
            note,
            directory,
            file,
            query,
            modules: Array.isArray(raw['modules']) ? (raw['modules'] as string[]) : [],
            data: raw['data'],
            input: raw['input'],
            inputTerm: optionalString(raw['input_term']),
            wantResult: Array.isArray(raw['want_result']) ? (raw['want_result'] as Array<Record<string, unknown>>) : undefined,
            wantDefined: typeof raw['want_defined'] === 'boolean' ? raw['want_defined'] : undefined,
            wantError: optionalString(raw['want_error']),
            wantErrorCode: optionalString(raw['want_error_code']),
            sortBindings: raw['sort_bindings'] === true,
            strictError: raw['strict_error'] === true,
            bindings: parseBindings(query),
          });
        }
      }
    }
  }
  return out;
}
