/**
 * The `pavilion` command line.
 *
 *   pavilion bundle build --tenant <id> | --all [--out <dir>] [--target wasm|rego]
 *   pavilion bundle inspect <bundle.tar.gz> [--tenant <id>]
 *   pavilion bundle sign <bundle.tar.gz> --key <pem> --key-id <id> --scope <tenant> [--alg ES256] [--out <file>]
 *   pavilion bundle push --tenant <id> [--file <bundle.tar.gz>] [--by <who>] [--note <text>] [--shadow]
 *   pavilion bundle promote --tenant <id> | pavilion bundle end-shadow --tenant <id>
 *   pavilion bundle rollback --tenant <id> [--to <deploy>] [--by <who>] [--note <text>]
 *   pavilion bundle history --tenant <id>
 *   pavilion bundle prune-deltas --tenant <id>   (admin: purge deltas of deploys two pushes old)
 *   pavilion bundle status
 *   pavilion audit verify-log --log <dir|file> --keys <pem|dir> [--origin <o>] [--trusted-checkpoint <file>]... [anchor checks]
 *   pavilion audit verify-log --archive <archive/<tenant> dir> [--log <live dir|file>] --keys <pem|dir> [--origin <epoch 0's>] ...
 *   pavilion audit verify --decision <id> (--proof <file> | --log <dir|file>) --keys <pem|dir> [--origin <o>] [anchor checks]
 *   pavilion audit anchor deploy|allow ...   (the PavilionAnchor contract: see anchor-commands.ts)
 *   pavilion audit prove --decision <id> --log <dir|file>
 *   pavilion audit prove-consistency --from <checkpoint.json> --log <dir|file>
 *   pavilion audit verify-consistency --proof <file> --keys <pem|dir> [--from <kept checkpoint.json>] [--origin <o>]
 *   pavilion credential <command> ...   (sample credentials: see credential-commands.ts)
 *   pavilion serve
 *
 * push/rollback/history/status talk to NATS: --nats <url> (or PAVILION_NATS_URL), with
 * --user/--password (or PAVILION_NATS_USER/PAVILION_NATS_PASSWORD).
 */
import { statSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { hostname, userInfo } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  Keyring,
  WAL_FILE,
  parseCheckpoint,
  proveConsistencyFromLogFile,
  proveFromLogFile,
  verifyConsistencyProof,
  verifyDecisionAnchor,
  verifyDecisionProof,
  verifyEpochs,
  verifyLogFile,
  type SignedCheckpointV1,
} from '../audit/index.ts';
import {
  buildTenantBundle,
  defaultBuildDirectory,
  definitionPath,
  isSigningAlgorithm,
  listDefinitions,
  readBundle,
  signBundle,
} from '../bundles/index.ts';
import { parseConfig } from '../config/index.ts';
import { NatsBundleStore, connectNats } from '../distribution/index.ts';
import { compilePolicy } from '../engine/index.ts';
import { ErrorCodes, PavilionError, describeThrown, isPavilionError, type ErrorCode } from '../lib/errors.ts';
import { CREDENTIAL_USAGE, credentialCommand } from './credential-commands.ts';
import { ANCHOR_USAGE, ANCHOR_VERIFY_OPTIONS, anchorCommand, anchorVerifiersFrom, closeVerifiers } from './anchor-commands.ts';

const USAGE = `usage:
  pavilion bundle build --tenant <id> | --all [--out <dir>] [--target wasm|rego] [--unsigned]
  pavilion bundle inspect <bundle.tar.gz> [--tenant <id>]
  pavilion bundle sign <bundle.tar.gz> --key <pem> --key-id <id> --scope <tenant> [--alg ES256] [--out <file>]
  pavilion bundle push --tenant <id> [--file <bundle.tar.gz>] [--by <who>] [--note <text>] [--shadow]  [nats options]
  pavilion bundle promote --tenant <id> [--by <who>]       (deploy the shadow revision)  [nats options]
  pavilion bundle end-shadow --tenant <id>                                               [nats options]
  pavilion bundle rollback --tenant <id> [--to <deploy>] [--by <who>] [--note <text>]      [nats options]
  pavilion bundle history --tenant <id>                                                    [nats options]
  pavilion bundle prune-deltas --tenant <id>  (deltas of deploys before the previous one)  [nats options]
  pavilion bundle status                                                                   [nats options]
  pavilion bundle delta --tenant <id> --patch <patch.json> [--roots <root,...>] [--key <pem> --key-id <id> [--alg ES256]]  [nats options]
  pavilion audit verify-log --log <dir|file> --keys <pem|dir> [--origin <o>] [--trusted-checkpoint <file>]... [anchor checks]
  pavilion audit verify-log --archive <dir> [--log <dir|file>] --keys <pem|dir> [--origin <o>] ...
    (a rotated log: every archived epoch (<dir>/<n>/), then the live one, and the link between each two;
     --origin names epoch 0's origin)
  pavilion audit verify --decision <id> (--proof <file> | --log <dir|file>) --keys <pem|dir> [--origin <o>] [anchor checks]
    (--origin is required with --trusted-checkpoint or anchor checks)
  pavilion audit prove --decision <id> --log <dir|file>
  pavilion audit prove-consistency --from <checkpoint.json> --log <dir|file>
  pavilion audit verify-consistency --proof <file> --keys <pem|dir> [--from <kept checkpoint.json>] [--origin <o>]
${ANCHOR_USAGE}
${CREDENTIAL_USAGE}
  pavilion serve
nats options: --nats <url> (default $PAVILION_NATS_URL or nats://127.0.0.1:4222)
  --user <u> --password <p> ($PAVILION_NATS_USER, $PAVILION_NATS_PASSWORD) | --token <t> ($PAVILION_NATS_TOKEN)
  | --creds <file> ($PAVILION_NATS_CREDS); --inbox-prefix <p> ($PAVILION_NATS_INBOX_PREFIX; default _INBOX:
  a user confined to its own inboxes, as in docs/nats-permissions.conf, needs its prefix, e.g. _INBOX_team_bank)`;

const NATS_OPTIONS = {
  nats: { type: 'string' },
  user: { type: 'string' },
  password: { type: 'string' },
  token: { type: 'string' },
  creds: { type: 'string' },
  'inbox-prefix': { type: 'string' },
} as const;

type NatsOptionValues = { readonly [K in keyof typeof NATS_OPTIONS]?: string | undefined };

/** Each NATS option's config key and the environment variable that stands in for it. */
const NATS_SETTINGS: ReadonlyArray<readonly [keyof typeof NATS_OPTIONS, string, string]> = [
  ['user', 'user', 'PAVILION_NATS_USER'],
  ['password', 'password', 'PAVILION_NATS_PASSWORD'],
  ['token', 'token', 'PAVILION_NATS_TOKEN'],
  ['creds', 'credsFile', 'PAVILION_NATS_CREDS'],
  ['inbox-prefix', 'inboxPrefix', 'PAVILION_NATS_INBOX_PREFIX'],
];

async function withStore<T>(values: NatsOptionValues, run: (store: NatsBundleStore) => Promise<T>): Promise<T> {
  const settings: Record<string, string> = {};
  for (const [option, key, variable] of NATS_SETTINGS) {
    // an empty variable counts as unset, as the sidecar's own overrides do
    const value = values[option] ?? (process.env[variable] === '' ? undefined : process.env[variable]);
    if (value !== undefined) settings[key] = value;
  }
  // parsed as a sidecar's nats section is (an inbox prefix of dot-separated tokens, no wildcards)
  const config = parseConfig({
    nats: {
      servers: [values.nats ?? process.env['PAVILION_NATS_URL'] ?? 'nats://127.0.0.1:4222'],
      name: 'pavilion-cli',
      ...settings,
    },
  }).nats;
  if (config === undefined) throw new Error('no NATS configuration');
  const store = new NatsBundleStore(await connectNats(config), config);
  try {
    return await run(store);
  } finally {
    await store.close();
  }
}

function who(by: string | undefined): string {
  return by ?? `${userInfo().username}@${hostname()}`;
}

async function bundleSign(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { key: { type: 'string' }, 'key-id': { type: 'string' }, scope: { type: 'string' }, alg: { type: 'string', default: 'ES256' }, out: { type: 'string' } },
  });
  const file = positionals[0];
  if (file === undefined || values.key === undefined || values['key-id'] === undefined || values.scope === undefined || !isSigningAlgorithm(values.alg)) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  const signed = await signBundle(await readFile(file), {
    key: await readFile(values.key, 'utf8'), algorithm: values.alg, keyId: values['key-id'], scope: values.scope,
  });
  await writeFile(values.out ?? file, signed);
  process.stdout.write(`signed ${values.out ?? file} with key ${values['key-id']} (${values.alg}), scope ${values.scope}\n`);
  return 0;
}

async function bundlePush(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { tenant: { type: 'string' }, file: { type: 'string' }, by: { type: 'string' }, note: { type: 'string' }, shadow: { type: 'boolean' }, ...NATS_OPTIONS } });
  const tenant = values.tenant;
  if (tenant === undefined) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  const file = values.file ?? join(defaultBuildDirectory(), tenant, 'bundle.tar.gz');
  const archive = await readFile(file);
  // Refuse locally what every sidecar would refuse anyway (structure, roots); signatures are theirs to check.
  const bundle = await readBundle(archive, { tenant, namespace: tenant });
  const meta = { revision: bundle.revision, pushedBy: who(values.by), ...(values.note === undefined ? {} : { note: values.note }) };
  if (values.shadow === true) {
    await withStore(values, (store) => store.pushShadow(tenant, archive, meta));
    process.stdout.write(`staged ${tenant} revision ${bundle.revision} as the shadow revision; see 'bundle status', then 'bundle promote' or 'bundle end-shadow'\n`);
    return 0;
  }
  const entry = await withStore(values, (store) => store.push(tenant, archive, meta));
  process.stdout.write(`pushed ${tenant} revision ${bundle.revision} as deploy ${entry.sequence} (sha256 ${entry.pointer.digest.slice(0, 16)}, ${archive.length} bytes)\n`);
  return 0;
}

async function bundleShadowCommand(args: string[], action: 'promote' | 'end'): Promise<number> {
  const { values } = parseArgs({ args, options: { tenant: { type: 'string' }, by: { type: 'string' }, ...NATS_OPTIONS } });
  const tenant = values.tenant;
  if (tenant === undefined) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  if (action === 'end') {
    await withStore(values, (store) => store.endShadow(tenant));
    process.stdout.write(`ended shadow mode for ${tenant}\n`);
    return 0;
  }
  const entry = await withStore(values, (store) => store.promoteShadow(tenant, { pushedBy: who(values.by) }));
  process.stdout.write(`promoted ${tenant} shadow revision ${entry.pointer.revision} as deploy ${entry.sequence}\n`);
  return 0;
}

async function bundleRollback(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { tenant: { type: 'string' }, to: { type: 'string' }, by: { type: 'string' }, note: { type: 'string' }, ...NATS_OPTIONS } });
  const tenant = values.tenant;
  const to = values.to === undefined ? undefined : Number(values.to);
  if (tenant === undefined || (to !== undefined && !Number.isInteger(to))) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  const entry = await withStore(values, (store) => store.rollback(tenant, {
    pushedBy: who(values.by), ...(to === undefined ? {} : { to }), ...(values.note === undefined ? {} : { note: values.note }),
  }));
  process.stdout.write(`rolled ${tenant} back to revision ${entry.pointer.revision} (deploy ${entry.pointer.restores ?? '?'}) as deploy ${entry.sequence}\n`);
  return 0;
}

async function bundleHistory(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { tenant: { type: 'string' }, json: { type: 'boolean' }, ...NATS_OPTIONS } });
  const tenant = values.tenant;
  if (tenant === undefined) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  const invalid: string[] = [];
  const history = await withStore(values, (store) => store.history(tenant, (sequence, error) => invalid.push(`deploy ${sequence}: left out, ${error.message}`)));
  for (const line of invalid) process.stderr.write(`note: ${line} (no sidecar took it)\n`);
  if (values.json === true) {
    process.stdout.write(`${JSON.stringify(history, null, 2)}\n`);
    return 0;
  }
  process.stdout.write('deploy  action    revision          sha256            pushed_at                 by\n');
  for (const { sequence, pointer } of history) {
    const action = pointer.action === 'rollback' ? `rollback(${pointer.restores ?? '?'})` : 'push';
    process.stdout.write(`${String(sequence).padEnd(7)} ${action.padEnd(9)} ${pointer.revision.padEnd(17)} ${pointer.digest.slice(0, 16)}  ${pointer.pushed_at.padEnd(25)} ${pointer.pushed_by}${pointer.note === undefined ? '' : `  "${pointer.note}"`}\n`);
  }
  return 0;
}

async function bundlePruneDeltas(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { tenant: { type: 'string' }, ...NATS_OPTIONS } });
  const tenant = values.tenant;
  if (tenant === undefined) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  const pruned = await withStore(values, (store) => store.pruneDeltas(tenant));
  process.stdout.write(pruned === undefined
    ? `${tenant}: nothing to prune (no earlier deploy, or no record of where its deltas start)\n`
    : `${tenant}: purged ${pruned.purged} delta(s) of the deploys before ${pruned.previousDeploy} (its deltas and the current deploy's stay)\n`);
  return 0;
}

async function bundleDelta(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { tenant: { type: 'string' }, patch: { type: 'string' }, roots: { type: 'string' }, key: { type: 'string' }, 'key-id': { type: 'string' }, alg: { type: 'string', default: 'ES256' }, ...NATS_OPTIONS },
  });
  const tenant = values.tenant;
  if (tenant === undefined || values.patch === undefined || (values.key === undefined) !== (values['key-id'] === undefined) || !isSigningAlgorithm(values.alg)) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  const patch: unknown = JSON.parse(await readFile(values.patch, 'utf8'));
  const roots = (values.roots ?? tenant).split(',').filter((r) => r !== '');
  // signed like the tenant's bundles (scope: the tenant); sidecars refuse unsigned deltas unless the tenant allows unsigned bundles
  const signing = values.key === undefined || values['key-id'] === undefined
    ? undefined
    : { key: await readFile(values.key, 'utf8'), algorithm: values.alg, keyId: values['key-id'], scope: tenant };
  const delta = await withStore(values, (store) => store.publishDelta(tenant, patch, roots, signing));
  process.stdout.write(`published ${signing === undefined ? 'unsigned ' : ''}delta ${delta.sequence} on deploy ${delta.base} of ${tenant} (${delta.patch.data.length} operations)\n`);
  return 0;
}

async function bundleStatus(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { json: { type: 'boolean' }, ...NATS_OPTIONS } });
  const reports = await withStore(values, async (store) => {
    const kv = await store.statusBucket();
    const out: Array<Record<string, unknown>> = [];
    for await (const key of await kv.keys()) {
      const entry = await kv.get(key);
      if (entry?.operation === 'PUT') out.push(JSON.parse(Buffer.from(entry.value).toString('utf8')) as Record<string, unknown>);
    }
    return out;
  });
  if (values.json === true) {
    process.stdout.write(`${JSON.stringify(reports, null, 2)}\n`);
    return 0;
  }
  process.stdout.write('sidecar                  tenant       revision          state  reported_at\n');
  for (const report of reports) {
    const bundles = (report['bundles'] ?? {}) as Record<string, { active_revision?: string; code?: string; pavilion?: { state?: string; shadow?: { revision: string; evaluations: number; differences: number; errors: number }; shadow_error?: { code: string } } }>;
    for (const [tenant, b] of Object.entries(bundles)) {
      const shadow = b.pavilion?.shadow;
      const shadowRefused = b.pavilion?.shadow_error?.code;
      const shadowText = (shadow === undefined ? '' : `  shadow ${shadow.revision}: ${shadow.differences} differences, ${shadow.errors} errors in ${shadow.evaluations}`)
        + (shadowRefused === undefined ? '' : `  shadow refused: ${shadowRefused}`);
      process.stdout.write(`${String(report['sidecar']).padEnd(24)} ${tenant.padEnd(12)} ${(b.active_revision ?? '-').padEnd(17)} ${(b.pavilion?.state ?? '?').padEnd(6)} ${String(report['reported_at'])}${b.code === undefined ? '' : `  last refusal: ${b.code}`}${shadowText}\n`);
    }
  }
  return 0;
}

async function bundleBuild(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      tenant: { type: 'string', multiple: true },
      all: { type: 'boolean' },
      out: { type: 'string' },
      target: { type: 'string', default: 'wasm' },
      unsigned: { type: 'boolean' },
    },
  });
  if (values.target !== 'wasm' && values.target !== 'rego') {
    process.stderr.write('--target must be wasm or rego\n');
    return 2;
  }
  const target = values.target;
  const tenants = values.all === true ? await listDefinitions() : values.tenant ?? [];
  if (tenants.length === 0) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  let failed = 0;
  for (const tenant of tenants) {
    const started = performance.now();
    try {
      const result = await buildTenantBundle(definitionPath(tenant), {
        target,
        ...(values.unsigned === true ? { signing: false } : {}),
        ...(values.out === undefined ? {} : { outputDirectory: values.out }),
      });
      const ms = Math.round(performance.now() - started);
      const entrypoints = result.bundle?.entrypoints.join(', ') ?? '(rego target)';
      process.stdout.write(
        `built ${tenant} (${target}): revision ${result.revision}, ${result.testsPassed} opa tests passed, ` +
          `entrypoints ${entrypoints} -> ${result.output} (${ms} ms)\n`,
      );
    } catch (error) {
      failed++;
      process.stderr.write(`failed ${tenant}: ${isPavilionError(error) ? `[${error.code}] ` : ''}${describeThrown(error)}\n`);
    }
  }
  return failed === 0 ? 0 : 1;
}

async function bundleInspect(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { tenant: { type: 'string' } } });
  const file = positionals[0];
  if (file === undefined) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  const archive = await readFile(file);
  const manifestTenant = values.tenant;
  // Without --tenant, take the namespace from the first root so a bundle can be inspected on its own.
  const probe = manifestTenant ?? 'inspect';
  const bundle = await readBundle(archive, {
    tenant: probe,
    namespace: manifestTenant ?? '',
  });
  const compiled = await compilePolicy(bundle, { initialMemoryPages: 5 });
  process.stdout.write(
    `${JSON.stringify(
      {
        revision: bundle.revision,
        roots: bundle.manifest.roots,
        entrypoints: bundle.entrypoints,
        metadata: bundle.manifest.metadata,
        files: [...bundle.files.keys()],
        required_builtins: compiled.requiredBuiltins,
        deterministic: compiled.deterministic,
        sha256: bundle.digest,
        size_bytes: bundle.sizeBytes,
      },
      null,
      2,
    )}\n`,
  );
  return 0;
}

/** A tenant's log directory or the log file itself. */
function logFile(path: string): string {
  try {
    return statSync(path).isDirectory() ? join(path, WAL_FILE) : path;
  } catch {
    return path;
  }
}

/** Print a verification failure (code, message, the first bad position) and return exit code 1. */
function reportFailure(error: unknown): number {
  if (!isPavilionError(error)) throw error;
  process.stdout.write(`${JSON.stringify({ ok: false, code: error.code, message: error.message, position: error.details ?? {} }, null, 2)}\n`);
  process.stderr.write(`verification FAILED [${error.code}] ${error.message}\n`);
  return 1;
}

/**
 * The error a server answered instead of a proof or checkpoint, saved by `curl -s` as if it
 * were one: Pavilion's body (`{"code": <OPA code>, "message", "errors": [{"code": <Pavilion
 * code>, "message"}]}`, see api/error-body.ts), OPA's (`{"code", "message", "errors"?: [...]}`)
 * or a bare `{"code", "message"}`. Proofs and checkpoints carry `version`; error bodies do not.
 */
function serverErrorIn(parsed: unknown): { code: string; message: string } | undefined {
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed) || 'version' in parsed) return undefined;
  const body = parsed as Record<string, unknown>;
  const topMessage = typeof body['message'] === 'string' ? body['message'] : '';
  const errors: unknown[] = Array.isArray(body['errors']) ? body['errors'] : [];
  for (const entry of errors) {
    if (typeof entry !== 'object' || entry === null) continue;
    const { code, message } = entry as Record<string, unknown>;
    if (typeof code === 'string') return { code, message: typeof message === 'string' ? message : topMessage };
  }
  if (typeof body['code'] === 'string' && (typeof body['message'] === 'string' || errors.length > 0)) return { code: body['code'], message: topMessage };
  return undefined;
}

const SERVER_ERROR_HINTS: Partial<Record<string, (what: string) => string>> = {
  [ErrorCodes.AUDIT_NOT_CHECKPOINTED]: (what) => `fetch the ${what} again after the next checkpoint`,
  [ErrorCodes.AUDIT_DECISION_UNKNOWN]: () => 'check the decision id and the tenant it was fetched for',
  [ErrorCodes.AUDIT_LOG_DISABLED]: () => "the sidecar has no verifiable audit log (decisionLog.sink 'audit')",
  [ErrorCodes.AUDIT_RANGE_INVALID]: (what) => `check the from/to tree sizes and fetch the ${what} again`,
};

/**
 * A failure naming the server's error: its code when it is a Pavilion code (so scripts can
 * tell "not checkpointed yet" from a bad proof), else `fallback` with the server's code in details.
 */
function serverErrorFailure(what: 'proof' | 'checkpoint', file: string, server: { code: string; message: string }, fallback: ErrorCode): PavilionError {
  const known = (Object.values(ErrorCodes) as string[]).includes(server.code);
  const hint = SERVER_ERROR_HINTS[server.code]?.(what) ?? `fetch the ${what} again once the request succeeds`;
  return new PavilionError(
    known ? (server.code as ErrorCode) : fallback,
    `the ${what} file holds the server's error ${server.code}${server.message === '' ? '' : `: ${server.message}`} (${hint})`,
    { details: { reason: 'server_error', file, serverCode: server.code, serverMessage: server.message } },
  );
}

function isResultWrapper(parsed: unknown): parsed is { result: unknown } {
  return typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) && Object.keys(parsed).length === 1 && 'result' in parsed;
}

/**
 * A JSON file saved from the API or written by the CLI: the value, unwrapped from the
 * endpoints' `{"result": ...}`; a saved error body is refused as the server's error
 * (`fallback` when its code is not Pavilion's); a parse failure is `notJson`'s error.
 */
async function readServerJson(file: string, what: 'proof' | 'checkpoint', fallback: ErrorCode, notJson: (error: unknown) => PavilionError): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new PavilionError(fallback, `cannot read the ${what} file ${file}: ${describeThrown(error)}`, { cause: error, details: { reason: 'unreadable', file } });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw notJson(error);
  }
  const server = serverErrorIn(parsed);
  if (server !== undefined) throw serverErrorFailure(what, file, server, fallback);
  return isResultWrapper(parsed) ? parsed.result : parsed;
}

/** A proof as `pavilion audit prove` writes it, or as the HTTP proof endpoint answers (`{"result": proof}`). */
function readProofFile(file: string): Promise<unknown> {
  return readServerJson(file, 'proof', ErrorCodes.AUDIT_PROOF_INVALID, (error) =>
    new PavilionError(ErrorCodes.AUDIT_PROOF_INVALID, 'the proof file is not JSON', { cause: error, details: { reason: 'malformed' } }));
}

/** A checkpoint as the log holds it, or as the HTTP checkpoint endpoint answers (`{"result": checkpoint}`). */
async function readCheckpointFile(file: string): Promise<SignedCheckpointV1> {
  return parseCheckpoint(await readServerJson(file, 'checkpoint', ErrorCodes.AUDIT_CHECKPOINT_INVALID, (error) =>
    new PavilionError(ErrorCodes.AUDIT_CHECKPOINT_INVALID, 'checkpoint: not JSON', { cause: error })));
}

/** Say on stderr what the anchors were checked against, so "ok" is never read as more than it is. */
function anchorNote(anchors: number, verified: number, consulted: boolean): void {
  if (anchors === 0) return;
  if (!consulted) {
    process.stderr.write(`note: ${anchors} anchor record(s) match their checkpoints, but the chain (or anchor file) was not consulted; give --rpc/--chain-id/--contract or --anchor-file to check them\n`);
  } else if (verified < anchors) {
    process.stderr.write(`note: ${verified} of ${anchors} anchor record(s) were confirmed outside; the others are of a kind no option here checks\n`);
  }
}

async function auditCommand(command: string | undefined, args: string[]): Promise<number> {
  if (command === 'anchor') {
    const [sub, ...rest] = args;
    const code = await anchorCommand(sub, rest);
    if (code === -2) {
      process.stderr.write(`${USAGE}\n`);
      return 2;
    }
    return code;
  }
  const { values } = parseArgs({
    args,
    options: {
      log: { type: 'string' },
      archive: { type: 'string' },
      keys: { type: 'string' },
      origin: { type: 'string' },
      decision: { type: 'string' },
      proof: { type: 'string' },
      'trusted-checkpoint': { type: 'string', multiple: true },
      from: { type: 'string' },
      ...ANCHOR_VERIFY_OPTIONS,
    },
  });
  const usage = (): number => {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  };
  if (command === 'prove') {
    if (values.decision === undefined || values.log === undefined) return usage();
    const proof = await proveFromLogFile(logFile(values.log), values.decision);
    process.stdout.write(`${JSON.stringify(proof, null, 2)}\n`);
    return 0;
  }
  if (command === 'prove-consistency') {
    if (values.from === undefined || values.log === undefined) return usage();
    const proof = await proveConsistencyFromLogFile(logFile(values.log), await readCheckpointFile(values.from));
    process.stdout.write(`${JSON.stringify(proof, null, 2)}\n`);
    return 0;
  }
  if (command !== 'verify-log' && command !== 'verify' && command !== 'verify-consistency') return usage();
  // Trust comes from keys obtained out of band; never from the log directory by default.
  if (values.keys === undefined) return usage();
  const origin = values.origin === undefined ? {} : { origin: values.origin };
  // Anchors and trusted checkpoints are looked up by log: the log's own checkpoints must not
  // choose which (a log re-signed under another origin would find nothing anchored).
  const anchorsAsked = values.rpc !== undefined || values['anchor-file'] !== undefined;
  const trustedAsked = command === 'verify-log' && (values['trusted-checkpoint'] ?? []).length > 0;
  if (values.origin === undefined && (anchorsAsked || trustedAsked) && command !== 'verify-consistency') {
    const error = new PavilionError(anchorsAsked ? ErrorCodes.AUDIT_ANCHOR_CONFIG : ErrorCodes.CONFIG_INVALID, `--origin <o> is required with ${anchorsAsked ? 'anchor checks (--rpc/--contract or --anchor-file)' : '--trusted-checkpoint'}: the log to check is never taken from the file itself`);
    process.stdout.write(`${JSON.stringify({ ok: false, code: error.code, message: error.message }, null, 2)}\n`);
    process.stderr.write(`usage error [${error.code}] ${error.message}\n${USAGE}\n`);
    return 2;
  }
  let anchorVerifiers: ReturnType<typeof anchorVerifiersFrom> = [];
  try {
    // inside: keys that cannot be read are a failure reported like any other (JSON, exit 1)
    const keyring = Keyring.load(values.keys);
    anchorVerifiers = anchorVerifiersFrom(values);
    if (command === 'verify-log') {
      if (values.log === undefined && values.archive === undefined) return usage();
      const trustedCheckpoints = await Promise.all((values['trusted-checkpoint'] ?? []).map(readCheckpointFile));
      const options = { ...origin, trustedCheckpoints, anchorVerifiers };
      const log = values.log === undefined ? undefined : logFile(values.log);
      // a rotated log: every archived epoch, then the live one if given; else the one log
      const report = values.archive !== undefined
        ? await verifyEpochs(values.archive, log, keyring, options)
        : await verifyLogFile(log as string, keyring, options);
      process.stdout.write(`${JSON.stringify({ ok: true, ...report, anchorsConsulted: anchorVerifiers.length > 0 }, null, 2)}\n`);
      const verified = 'epochs' in report ? report.epochs : [report];
      const last = verified.at(-1);
      if (last !== undefined && last.unsignedLeaves > 0) {
        process.stderr.write(`note: ${last.unsignedLeaves} leaves after the last checkpoint${'epoch' in last ? ` of epoch ${last.epoch}` : ''} are intact but not yet signed\n`);
      }
      const pruned = verified.filter((one) => 'pruned' in one && one.pruned === true).map((one) => ('epoch' in one ? one.epoch : -1));
      if (pruned.length > 0) process.stderr.write(`note: epochs ${pruned.join(', ')} were pruned by retention: their final checkpoints and links were checked, their leaves and anchors are gone\n`);
      for (const one of verified) anchorNote(one.anchors, one.anchorsVerified, anchorVerifiers.length > 0);
      if (values.archive !== undefined && log === undefined) process.stderr.write('note: no --log given: the archive was verified alone; epochs after its last one (the live log) were not\n');
      return 0;
    }
    if (command === 'verify-consistency') {
      if (values.proof === undefined) return usage();
      const kept = values.from === undefined ? undefined : await readCheckpointFile(values.from);
      const result = verifyConsistencyProof(await readProofFile(values.proof), keyring, { ...origin, ...(kept === undefined ? {} : { old: kept }) });
      if (kept === undefined) process.stderr.write(`note: no --from given: the proof's older checkpoint (tree size ${result.oldSize}) was accepted because a trusted key signed it; compare it with the one you kept, or pass it with --from\n`);
      process.stdout.write(`${JSON.stringify({ ok: true, ...result }, null, 2)}\n`);
      return 0;
    }
    if (values.decision === undefined || (values.proof === undefined) === (values.log === undefined)) return usage();
    const proof: unknown = values.proof !== undefined
      ? await readProofFile(values.proof)
      : await proveFromLogFile(logFile(values.log ?? ''), values.decision);
    const { checkpoint: _checkpoint, anchor, ...result } = verifyDecisionProof(proof, keyring, { decisionId: values.decision, ...origin });
    // Asked to check the anchor: a proof without one does not pass as if it had been checked.
    if (anchorVerifiers.length > 0 && anchor === undefined) {
      throw new PavilionError(ErrorCodes.AUDIT_ANCHOR_MISMATCH, `the proof carries no anchor: its checkpoint at tree size ${_checkpoint.tree_size} is not anchored (yet); prove again once it is, or verify without anchor options`, { details: { treeSize: _checkpoint.tree_size } });
    }
    const anchorVerified = await verifyDecisionAnchor({ ...result, checkpoint: _checkpoint, anchor }, anchorVerifiers);
    const anchorReport = anchor === undefined ? null : { kind: anchor.kind, tree_size: anchor.tree_size, reference: anchor.reference, verified: anchorVerified };
    process.stdout.write(`${JSON.stringify({ ok: true, ...result, anchor: anchorReport }, null, 2)}\n`);
    if (values.origin === undefined) process.stderr.write(`note: no --origin given: the checkpoint is of log ${result.origin}, accepted because a trusted key signed it\n`);
    if (anchor === undefined) process.stderr.write('note: the proof carries no anchor (its checkpoint was not anchored)\n');
    else anchorNote(1, anchorVerified ? 1 : 0, anchorVerifiers.length > 0);
    return 0;
  } catch (error) {
    return reportFailure(error);
  } finally {
    closeVerifiers(anchorVerifiers);
  }
}

async function main(argv: string[]): Promise<number> {
  const [group, command, ...rest] = argv;
  if (group === 'bundle' && command === 'build') return bundleBuild(rest);
  if (group === 'bundle' && command === 'inspect') return bundleInspect(rest);
  if (group === 'audit') return auditCommand(command, rest);
  if (group === 'bundle' && command === 'sign') return bundleSign(rest);
  if (group === 'bundle' && command === 'push') return bundlePush(rest);
  if (group === 'bundle' && command === 'rollback') return bundleRollback(rest);
  if (group === 'bundle' && command === 'history') return bundleHistory(rest);
  if (group === 'bundle' && command === 'prune-deltas') return bundlePruneDeltas(rest);
  if (group === 'bundle' && command === 'status') return bundleStatus(rest);
  if (group === 'bundle' && command === 'delta') return bundleDelta(rest);
  if (group === 'bundle' && command === 'promote') return bundleShadowCommand(rest, 'promote');
  if (group === 'bundle' && command === 'end-shadow') return bundleShadowCommand(rest, 'end');
  if (group === 'credential') return credentialCommand(command, rest);
  if (group === 'serve') {
    await import('../main.ts');
    return -1;
  }
  process.stderr.write(`${USAGE}\n`);
  return 2;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (error: unknown) => {
    // an option no command takes, a value missing, a stray argument: a usage error, as elsewhere
    if (isArgumentError(error)) {
      process.stderr.write(`usage error: ${error.message}\n${USAGE}\n`);
      process.exitCode = 2;
      return;
    }
    process.stderr.write(`${isPavilionError(error) ? `[${error.code}] ` : ''}${describeThrown(error)}\n`);
    process.exitCode = 1;
  },
);

/** node:util parseArgs' refusals (ERR_PARSE_ARGS_*). */
function isArgumentError(error: unknown): error is Error {
  return error instanceof Error && typeof (error as NodeJS.ErrnoException).code === 'string' && (error as NodeJS.ErrnoException).code!.startsWith('ERR_PARSE_ARGS_');
}
