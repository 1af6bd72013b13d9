/**
 * Envoy's ext_authz HTTP service mode (`http_service`), mounted on the API server under a
 * path prefix (default `/ext_authz`; Envoy's `path_prefix` must be the same). opa-envoy-plugin
 * has no HTTP mode; this one maps the HTTP request to the same input document as a gRPC
 * check and answers the way Envoy's HTTP mode expects:
 *
 * - The authorization request carries the original method, path (after the prefix) and
 *   headers, and the body when Envoy is configured `with_request_body`. It becomes
 *   `attributes.request.{time, http: {method, path, host, headers, protocol, body}}`;
 *   there are no `source`, `destination` or `contextExtensions` in this mode.
 * - Allowed: `200`, the decision's `headers` and `response_headers_to_add` as response
 *   headers (Envoy's `allowed_upstream_headers` / `allowed_client_headers_on_success`
 *   choose which go where), `request_headers_to_remove` as
 *   `x-envoy-auth-headers-to-remove: a,b`. Query parameter changes and dynamic metadata
 *   cannot be expressed in this mode and are dropped.
 * - Denied: the decision's `http_status` (default 403), `headers` and `body`.
 * - Failures: the configured failure status, like the gRPC server.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { describeThrown } from '../lib/errors.ts';
import type { CheckService } from './check-service.ts';
import { RpcCode, type CheckResponse, type HeaderValueOption } from './decision.ts';
import type { CheckRequestJson } from './input.ts';

/** The shape the API server dispatches to (see ApiServerDeps.mounted). */
export interface MountedHttpHandler {
  readonly pathPrefix: string;
  handle(req: IncomingMessage, res: ServerResponse): Promise<void>;
}

function headersOf(req: IncomingMessage): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, values] of Object.entries(req.headersDistinct)) {
    if (values !== undefined) headers[name] = values.join(',');
  }
  return headers;
}

/** Read at most `limit + 1` bytes (so an oversized body is seen as such), draining the rest. */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let kept = 0;
    req.on('data', (chunk: Buffer) => {
      if (kept > limit) return;
      const take = Math.min(chunk.length, limit + 1 - kept);
      chunks.push(take === chunk.length ? chunk : chunk.subarray(0, take));
      kept += take;
    });
    req.once('end', () => resolve(Buffer.concat(chunks, kept)));
    req.once('error', reject);
  });
}

function addHeaders(target: Map<string, string[]>, list: readonly HeaderValueOption[]): void {
  for (const { header } of list) {
    const name = header.key.toLowerCase();
    const values = target.get(name) ?? [];
    values.push(header.value);
    target.set(name, values);
  }
}

export function createHttpHandler(service: CheckService, pathPrefix: string): MountedHttpHandler {
  return {
    pathPrefix,
    async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
      const url = req.url ?? pathPrefix;
      let path = url.slice(pathPrefix.length);
      if (path === '' || path.startsWith('?')) path = `/${path}`;
      const headers = headersOf(req);
      const now = Date.now();
      const base: CheckRequestJson = {
        attributes: {
          request: {
            time: { seconds: Math.floor(now / 1000), nanos: (now % 1000) * 1_000_000 },
            http: {
              method: req.method ?? 'GET',
              headers,
              path,
              ...(headers['host'] === undefined ? {} : { host: headers['host'] }),
              protocol: `HTTP/${req.httpVersion}`,
            },
          },
        },
      };
      let result;
      try {
        const owner = service.tenantOf(base);
        const limit = 'tenant' in owner ? service.settingsFor(owner.tenant).maxRequestBodyBytes : 0;
        const body = await readBody(req, limit);
        const request: CheckRequestJson = body.length === 0
          ? base
          : { attributes: { request: { ...base.attributes?.request, http: { ...base.attributes?.request?.http, body: body.toString('utf8') } } } };
        result = await service.check(request, {
          transport: 'http',
          requestedBy: `${req.socket.remoteAddress ?? ''}:${req.socket.remotePort ?? ''}`,
        });
      } catch (error) {
        // the body stream failed: nothing sensible can be answered on this connection
        res.destroy(error instanceof Error ? error : new Error(describeThrown(error)));
        return;
      }
      writeHttpAnswer(res, result.response);
    },
  };
}

function writeHttpAnswer(res: ServerResponse, response: CheckResponse): void {
  const headers = new Map<string, string[]>();
  let status: number;
  let body = '';
  if (response.status.code === RpcCode.OK) {
    status = 200;
    if (response.okResponse !== undefined) {
      addHeaders(headers, response.okResponse.headers);
      addHeaders(headers, response.okResponse.responseHeadersToAdd);
      if (response.okResponse.headersToRemove.length > 0) {
        headers.set('x-envoy-auth-headers-to-remove', [response.okResponse.headersToRemove.join(',')]);
      }
    }
  } else {
    status = response.deniedResponse?.status.code ?? 403;
    if (response.deniedResponse !== undefined) {
      addHeaders(headers, response.deniedResponse.headers);
      body = response.deniedResponse.body;
    }
  }
  headers.delete('content-length');
  headers.delete('transfer-encoding');
  headers.delete('connection');
  const out: Record<string, string | string[]> = {};
  for (const [name, values] of headers) out[name] = values.length === 1 ? (values[0] as string) : values;
  out['content-length'] = String(Buffer.byteLength(body));
  res.writeHead(status, out);
  res.end(body);
}
