/**
 * `npm start`: run the sidecar on its configuration (embedded defaults when
 * PAVILION_CONFIG is not set: the local bundle directory, every tenant found there,
 * decisions appended to var/decisions.ndjson).
 */
import { loadConfig } from './config/index.ts';
import { describeThrown, isPavilionError } from './lib/errors.ts';
import { hostPort } from './lib/host-port.ts';
import { Pavilion } from './pavilion.ts';

function log(level: 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown> = {}): void {
  process.stderr.write(`${JSON.stringify({ level, time: new Date().toISOString(), msg, ...fields })}\n`);
}

async function main(): Promise<void> {
  const config = loadConfig();
  const pavilion = new Pavilion(config, { log });
  await pavilion.start();
  const address = pavilion.api.address();
  for (const tenant of pavilion.tenants.list()) {
    if (tenant.active !== undefined) {
      log('info', 'tenant active', { tenant: tenant.id, revision: tenant.active.revision, entrypoints: tenant.active.entrypoints });
    } else {
      log('error', 'tenant has no active policy', { tenant: tenant.id, error: tenant.lastError });
    }
  }
  // a tenant whose audit log could not be opened is refused alone (its decisions answer with the code)
  for (const [tenant, refused] of pavilion.auditLog?.refusedTenants() ?? []) {
    log('error', 'tenant audit log refused', { tenant, code: refused.code, error: refused.message });
  }
  log('info', 'pavilion listening', {
    url: `http://${address.address}:${address.port}`,
    workers: config.engine.workers,
    bundles: config.bundles.source === 'nats' ? `nats ${config.nats?.servers.join(',') ?? ''}` : config.bundles.directory,
    decision_log: config.decisionLog.sink === 'file'
      ? config.decisionLog.path
      : config.decisionLog.sink === 'audit' ? `audit ${config.decisionLog.audit?.directory ?? ''}` : 'none',
  });
  // Envoy ext_authz has its own listener (gRPC) and a prefix on the API port (HTTP service
  // mode): say where both are, so a mesh pointed at the wrong port is found from the log.
  const extAuthz = pavilion.extAuthz;
  if (extAuthz !== undefined && config.extAuthz !== undefined) {
    const grpc = extAuthz.grpc === undefined ? undefined : extAuthz.grpcAddress();
    log('info', 'ext_authz listening', {
      grpc: grpc === undefined ? 'disabled' : hostPort(grpc.host, grpc.port),
      http: extAuthz.http === undefined ? 'disabled' : `http://${hostPort(address.address, address.port)}${config.extAuthz.http.pathPrefix}`,
      tenant_from: config.extAuthz.tenantFrom.kind,
    });
  }
  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log('info', 'stopping', { signal });
    pavilion.stop().then(
      () => process.exit(0),
      (error: unknown) => {
        log('error', 'stop failed', { error: describeThrown(error) });
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

main().catch((error: unknown) => {
  log('error', 'pavilion failed to start', {
    code: isPavilionError(error) ? error.code : 'ERR_INTERNAL',
    error: describeThrown(error),
  });
  process.exit(1);
});
