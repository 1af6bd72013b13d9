/**
 * Credential state the replicas of a deployment share, in Redis (ioredis): one-time nonces
 * (`SET key 1 PX ttl NX`: the first replica to see a challenge wins, every later use anywhere is
 * a replay) and minted challenges (`SET PX` when minted, `DEL` when taken: exactly one replica
 * can take one). Keys are `<prefix>:nonce:<sha256>` and `<prefix>:challenge:<sha256>` of the
 * tenant-scoped key, so their size does not depend on what a holder sends.
 *
 * Fail closed: commands are not queued while Redis is away and time out after
 * `commandTimeoutMs`; a store that cannot answer throws ERR_CREDENTIAL_STATE_UNAVAILABLE and the
 * presentation is refused. The connection reconnects on its own; health says WARN meanwhile.
 */
import { Redis } from 'ioredis';
import type { RedisConfig } from '../config/index.ts';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import type { Component, ComponentStatus } from '../lib/lifecycle.ts';
import { sha256Hex } from '../lib/sha256.ts';
import type { ChallengeStore, NonceStore } from './nonce-store.ts';

function unavailable(error: unknown): PavilionError {
  return new PavilionError(ErrorCodes.CREDENTIAL_STATE_UNAVAILABLE, `the shared credential state (Redis) did not answer: ${describeThrown(error)}; the presentation is refused`, { cause: error });
}

export class RedisSharedState implements Component {
  readonly name = 'shared_state';
  readonly nonces: NonceStore;
  readonly challenges: ChallengeStore;
  readonly #config: RedisConfig;
  readonly #redis: Redis;
  #lastError: string | undefined;

  constructor(config: RedisConfig) {
    this.#config = config;
    this.#redis = new Redis(config.url, {
      ...(config.password === undefined ? {} : { password: config.password }),
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      connectTimeout: config.connectTimeoutMs,
      commandTimeout: config.commandTimeoutMs,
      retryStrategy: (attempt: number) => Math.min(50 * attempt, 2000),
    });
    this.#redis.on('error', (error: Error) => {
      this.#lastError = describeThrown(error);
    });
    const prefix = config.keyPrefix;
    const redis = this.#redis;
    const ttl = (expiresAtMs: number, nowMs: number): number => Math.max(1, Math.ceil(expiresAtMs - nowMs));
    this.nonces = {
      async consumeOnce(key, expiresAtMs, nowMs) {
        try {
          return (await redis.set(`${prefix}:nonce:${sha256Hex(key)}`, '1', 'PX', ttl(expiresAtMs, nowMs), 'NX')) === 'OK';
        } catch (error) {
          throw unavailable(error);
        }
      },
      async seen(key) {
        try {
          return (await redis.exists(`${prefix}:nonce:${sha256Hex(key)}`)) === 1;
        } catch (error) {
          throw unavailable(error);
        }
      },
    };
    this.challenges = {
      async remember(key, expiresAtMs, nowMs) {
        try {
          await redis.set(`${prefix}:challenge:${sha256Hex(key)}`, '1', 'PX', ttl(expiresAtMs, nowMs));
        } catch (error) {
          throw unavailable(error);
        }
      },
      async take(key) {
        try {
          return (await redis.del(`${prefix}:challenge:${sha256Hex(key)}`)) === 1;
        } catch (error) {
          throw unavailable(error);
        }
      },
    };
  }

  /** Connect; a Redis that is not there yet is retried in the background (health WARN), not fatal. */
  async start(): Promise<void> {
    try {
      await this.#redis.connect();
    } catch (error) {
      this.#lastError = describeThrown(error);
    }
  }

  async stop(): Promise<void> {
    if (this.#redis.status === 'end') return;
    try {
      await this.#redis.quit();
    } catch {
      this.#redis.disconnect();
    }
  }

  status(): ComponentStatus {
    const details = { url: redact(this.#config.url), connection: this.#redis.status };
    if (this.#redis.status === 'ready') return { state: 'OK', details };
    return {
      state: 'WARN',
      message: `shared credential state (Redis) is ${this.#redis.status}${this.#lastError === undefined ? '' : `: ${this.#lastError}`}; presentations that need a challenge are refused until it is back`,
      details,
    };
  }
}

/** The URL without a password in it, for health output. */
function redact(url: string): string {
  return url.replace(/\/\/([^@/]*)@/, '//***@');
}
