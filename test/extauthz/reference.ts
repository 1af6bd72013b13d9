/**
 * The reference side of the compatibility tests: `opa eval` (OPA's own evaluator) on the
 * envoy_demo policy, and the response mapping written here from opa-envoy-plugin's
 * documented contract (independently of sidecar/src/extauthz/decision.ts):
 *
 *   boolean decision -> status OK / PERMISSION_DENIED, no http_response;
 *   object decision  -> status from `allowed`; on allow ok_response{headers,
 *     headers_to_remove = request_headers_to_remove, response_headers_to_add,
 *     query_parameters_to_set, query_parameters_to_remove}; on deny denied_response{status =
 *     http_status or 403, headers, body or ""}; dynamic_metadata = the decision's, plus
 *     decision_id. Header values that are arrays give one header entry per string.
 *
 * opa-envoy-plugin itself cannot be installed here (the Go module proxy refuses
 * github.com/open-policy-agent/opa-envoy-plugin), so `opa eval` stands in for its evaluator.
 */
import { cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findOpa, REPO_ROOT, runTool } from '../../sidecar/src/lib/tools.ts';
import { structToJson, type Message } from './grpc-client.ts';

export type Pair = readonly [string, string];

/** The comparable form of a CheckResponse. */
export interface Normalized {
  readonly code: number;
  readonly denied?: { readonly status: number; readonly headers: Pair[]; readonly body: string };
  readonly ok?: {
    readonly headers: Pair[];
    readonly headersToRemove: string[];
    readonly responseHeadersToAdd: Pair[];
    readonly queryParametersToSet: Pair[];
    readonly queryParametersToRemove: string[];
  };
  readonly dynamicMetadata: Record<string, unknown>;
}

const sortPairs = (pairs: Pair[]): Pair[] => [...pairs].sort((a, b) => (a[0] === b[0] ? a[1].localeCompare(b[1]) : a[0].localeCompare(b[0])));

function headerPairs(value: unknown): Pair[] {
  if (value === undefined) return [];
  const maps = Array.isArray(value) ? value : [value];
  const pairs: Pair[] = [];
  for (const map of maps as Array<Record<string, unknown>>) {
    for (const [key, v] of Object.entries(map)) {
      for (const item of Array.isArray(v) ? v : [v]) pairs.push([key, String(item)]);
    }
  }
  return sortPairs(pairs);
}

/** The contract, applied to a decision value from `opa eval`. */
export function expectedResponse(decision: unknown): Normalized {
  if (typeof decision === 'boolean') return { code: decision ? 0 : 7, dynamicMetadata: {} };
  const d = decision as Record<string, unknown>;
  const allowed = d['allowed'] === true;
  const dynamicMetadata = (d['dynamic_metadata'] ?? {}) as Record<string, unknown>;
  if (allowed) {
    return {
      code: 0,
      ok: {
        headers: headerPairs(d['headers']),
        headersToRemove: (d['request_headers_to_remove'] ?? []) as string[],
        responseHeadersToAdd: headerPairs(d['response_headers_to_add']),
        queryParametersToSet: headerPairs(d['query_parameters_to_set']),
        queryParametersToRemove: (d['query_parameters_to_remove'] ?? []) as string[],
      },
      dynamicMetadata,
    };
  }
  return {
    code: 7,
    denied: { status: (d['http_status'] ?? 403) as number, headers: headerPairs(d['headers']), body: (d['body'] ?? '') as string },
    dynamicMetadata,
  };
}

function optionPairs(list: unknown): Pair[] {
  return sortPairs(((list ?? []) as Array<{ header?: { key?: string; value?: string } }>).map((o) => [o.header?.key ?? '', o.header?.value ?? ''] as Pair));
}

/** A CheckResponse decoded by @grpc/proto-loader, in the comparable form (decision_id removed). */
export function normalizeResponse(response: Message): { normalized: Normalized; decisionId: unknown } {
  const status = (response['status'] ?? {}) as { code?: number };
  const metadata = structToJson(response['dynamicMetadata']);
  const decisionId = metadata['decision_id'];
  delete metadata['decision_id'];
  const denied = response['deniedResponse'] as Record<string, unknown> | undefined;
  const ok = response['okResponse'] as Record<string, unknown> | undefined;
  const qp = ((ok?.['queryParametersToSet'] ?? []) as Array<{ key?: string; value?: string }>).map((p) => [p.key ?? '', p.value ?? ''] as Pair);
  return {
    decisionId,
    normalized: {
      code: status.code ?? 0,
      ...(denied === undefined ? {} : {
        denied: {
          status: ((denied['status'] ?? {}) as { code?: number }).code ?? 0,
          headers: optionPairs(denied['headers']),
          body: (denied['body'] ?? '') as string,
        },
      }),
      ...(ok === undefined ? {} : {
        ok: {
          headers: optionPairs(ok['headers']),
          headersToRemove: (ok['headersToRemove'] ?? []) as string[],
          responseHeadersToAdd: optionPairs(ok['responseHeadersToAdd']),
          queryParametersToSet: sortPairs(qp),
          queryParametersToRemove: (ok['queryParametersToRemove'] ?? []) as string[],
        },
      }),
      dynamicMetadata: metadata,
    },
  };
}

/** Every HeaderValueOption in a response leaves append/append_action unset (APPEND_IF_EXISTS_OR_ADD). */
export function appendActions(response: Message): unknown[] {
  const denied = response['deniedResponse'] as Record<string, unknown> | undefined;
  const ok = response['okResponse'] as Record<string, unknown> | undefined;
  const options = [
    ...((denied?.['headers'] ?? []) as Message[]),
    ...((ok?.['headers'] ?? []) as Message[]),
    ...((ok?.['responseHeadersToAdd'] ?? []) as Message[]),
  ];
  return options.map((o) => [o['append'], o['appendAction'] ?? 0]);
}

/**
 * Evaluate many inputs in one `opa eval` over the tenant's sources and data: one object
 * comprehension per decision path, keyed by the caller's ids.
 */
export async function opaEvalBatch(
  tenant: string,
  batches: Readonly<Record<string, { readonly rule: string; readonly inputs: Readonly<Record<string, unknown>> }>>,
): Promise<Record<string, Record<string, unknown>>> {
  const dir = await mkdtemp(join(tmpdir(), 'pavilion-opa-eval-'));
  try {
    const policy = join(dir, 'policy');
    await mkdir(policy, { recursive: true });
    for (const file of await readdir(join(REPO_ROOT, 'rego', tenant))) {
      if (file.endsWith('.rego') && !file.endsWith('_test.rego')) await cp(join(REPO_ROOT, 'rego', tenant, file), join(policy, file));
    }
    const definition = JSON.parse(await readFile(join(REPO_ROOT, 'bundles', tenant, 'bundle.json'), 'utf8')) as {
      data: Array<{ path: string; file: string }>;
    };
    for (const { path, file } of definition.data) {
      await mkdir(join(policy, ...path.split('/')), { recursive: true });
      await cp(join(REPO_ROOT, file), join(policy, ...path.split('/'), 'data.json'));
    }
    const corpus: Record<string, unknown> = {};
    const parts: string[] = [];
    for (const [name, batch] of Object.entries(batches)) {
      corpus[name] = batch.inputs;
      parts.push(`"${name}": {id: d | some id; inp := data.pavilion_corpus.${name}[id]; d := data.${batch.rule.replaceAll('/', '.')} with input as inp}`);
    }
    await mkdir(join(policy, 'pavilion_corpus'), { recursive: true });
    await writeFile(join(policy, 'pavilion_corpus', 'data.json'), JSON.stringify(corpus));
    const { stdout } = await runTool(findOpa(), ['eval', '-f', 'json', '-b', policy, `{${parts.join(', ')}}`], { timeoutMs: 120_000 });
    const parsed = JSON.parse(stdout) as { result?: Array<{ expressions: Array<{ value: Record<string, Record<string, unknown>> }> }> };
    const value = parsed.result?.[0]?.expressions[0]?.value;
    if (value === undefined) throw new Error(`opa eval gave no result: ${stdout.slice(0, 500)}`);
    return value;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
