/**
 * The NATS client packages, loaded on the first connection: a sidecar on the local bundle
 * directory without a decision stream never loads them. Every connection goes through
 * `connectNats`, which loads them first, so code holding a connection can use
 * `loadedNats()` synchronously.
 */
import { ErrorCodes, PavilionError } from '../lib/errors.ts';

export interface NatsModules {
  readonly transport: typeof import('@nats-io/transport-node');
  readonly jetstream: typeof import('@nats-io/jetstream');
  readonly kv: typeof import('@nats-io/kv');
  readonly obj: typeof import('@nats-io/obj');
}

let loading: Promise<NatsModules> | undefined;
let loaded: NatsModules | undefined;

export function loadNats(): Promise<NatsModules> {
  loading ??= Promise.all([import('@nats-io/transport-node'), import('@nats-io/jetstream'), import('@nats-io/kv'), import('@nats-io/obj')])
    .then(([transport, jetstream, kv, obj]) => {
      loaded = { transport, jetstream, kv, obj };
      return loaded;
    });
  return loading;
}

export function loadedNats(): NatsModules {
  if (loaded === undefined) throw new PavilionError(ErrorCodes.INTERNAL, 'the NATS client is used before connectNats loaded it');
  return loaded;
}
