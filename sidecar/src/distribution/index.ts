/** Bundle distribution over NATS JetStream: pointers in KV, bundles in Object Store, status reports. */
export { DEPLOY_HISTORY, NatsBundleStore, connectNats } from './nats-bundle-store.ts';
// the content address of a bundle in the Object Store
export { sha256Hex } from '../lib/sha256.ts';
export { loadNats, loadedNats, type NatsModules } from './nats-modules.ts';
export { NatsDistribution, type NatsDistributionOptions } from './nats-distribution.ts';
export { encodePointer, parsePointer, type BundlePointer, type PointerAction, type PointerEntry } from './pointer.ts';
export { buildStatusReport, type StatusReport } from './status-report.ts';
export { parseDelta, type DeltaMessage } from './delta-message.ts';
