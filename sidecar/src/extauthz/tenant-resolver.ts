/**
 * Which tenant's policy decides a check. Exactly one configured place, never a default and
 * never a guess (README, "Envoy / Istio ext_authz"):
 *
 * - `header`: a request header the mesh sets. Envoy must remove or overwrite it on every
 *   request from clients (e.g. `request_headers_to_remove` plus `request_headers_to_add` on
 *   the route), or a client could pick another tenant's policy.
 * - `contextExtension`: the route's `context_extensions` (Envoy/Istio configuration that
 *   clients cannot set). gRPC mode only: the HTTP service mode carries no context extensions.
 * - `destination`: a static map from the destination `address:port` (the listener Envoy
 *   accepted the request on) or, failing that, the request host (`:authority`, lower-cased)
 *   to a tenant. Address keys are matched against the destination only, never against the
 *   host, which the client sets. Host keys are only safe where Envoy routes by host, so that
 *   the host also decides which backend receives the request.
 * - `fixed`: one tenant (a single-tenant sidecar).
 *
 * Pure: returns the tenant id as claimed, or throws `ERR_EXTAUTHZ_TENANT_MISSING`. Whether
 * the tenant exists is the caller's check.
 */
import type { ExtAuthzTenantSource } from '../config/index.ts';
import { ErrorCodes, PavilionError } from '../lib/errors.ts';
import type { CheckRequestJson } from './input.ts';

function lookup(map: Readonly<Record<string, string>>, key: string): string | undefined {
  return Object.hasOwn(map, key) ? map[key] : undefined;
}

export function resolveTenant(source: ExtAuthzTenantSource, request: CheckRequestJson): string {
  const attributes = request.attributes;
  switch (source.kind) {
    case 'fixed':
      return source.tenant;
    case 'header': {
      const headers = attributes?.request?.http?.headers;
      const value = headers === undefined ? undefined : lookup(headers, source.header);
      if (value === undefined || value === '') {
        throw new PavilionError(ErrorCodes.EXTAUTHZ_TENANT_MISSING, `the request has no ${source.header} header naming its tenant`);
      }
      return value;
    }
    case 'contextExtension': {
      const extensions = attributes?.contextExtensions;
      const value = extensions === undefined ? undefined : lookup(extensions, source.key);
      if (value === undefined || value === '') {
        throw new PavilionError(ErrorCodes.EXTAUTHZ_TENANT_MISSING, `the route sets no context extension ${JSON.stringify(source.key)} naming the tenant`);
      }
      return value;
    }
    case 'destination': {
      const socket = attributes?.destination?.address?.socketAddress;
      if (socket?.address !== undefined) {
        const port = socket.portValue ?? socket.namedPort;
        const byAddress = port === undefined ? undefined : lookup(source.addresses, `${socket.address}:${port}`.toLowerCase());
        if (byAddress !== undefined) return byAddress;
      }
      const host = attributes?.request?.http?.host;
      const byHost = host === undefined ? undefined : lookup(source.hosts, host.toLowerCase());
      if (byHost !== undefined) return byHost;
      throw new PavilionError(
        ErrorCodes.EXTAUTHZ_TENANT_MISSING,
        'the destination address and host are not in extAuthz.tenantFrom.destination',
      );
    }
  }
}
