/** The tenant manager of a test sidecar fed by pushes, as pavilion.ts builds it for `bundles.source: 'nats'`. */
import { PushedBundleSource, TrustStore } from '../../sidecar/src/bundles/index.ts';
import type { PavilionConfig } from '../../sidecar/src/config/index.ts';
import type { PolicyEngine } from '../../sidecar/src/engine/index.ts';
import type { TenantManagerOptions } from '../../sidecar/src/tenants/index.ts';

/** The options every such manager takes from its config and engine; a test spreads its own after them. */
export function pushedTenantOptions(config: PavilionConfig, engine: PolicyEngine): TenantManagerOptions {
  return {
    tenants: config.tenants,
    source: new PushedBundleSource('nats'),
    engine,
    limits: { maxCompressedBytes: config.bundles.maxCompressedBytes, maxUncompressedBytes: config.bundles.maxUncompressedBytes },
    memoryInitialPages: config.engine.memoryInitialPages,
    loadTrust: () => TrustStore.load(config.keys, config.bundles.keysDirectory),
  };
}
