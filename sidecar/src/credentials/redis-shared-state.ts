/**
 * Credential state the replicas of a deployment share, in Redis (ioredis): one-time nonces (the
 * first replica to record a challenge wins, every later use anywhere is a replay) and minted
 * challenges (recorded when minted, removed when taken: exactly one replica can take one).
 *
 * Per tenant, as the in-memory stores: each tenant's entries are one sorted set (member: the
 * SHA-256 of the tenant-scoped key, so its size does not depend on what a holder sends; score:
 * when it expires), `<prefix>:nonces:<tenant>` and `<prefix>:challenges:<tenant>`, each holding
 * at most `maxEntriesPerTenant` live entries. Every change is one Lua script, atomic in Redis:
 * expired entries leave first; a tenant whose nonces are full is refused
 * (ERR_CREDENTIAL_STATE_UNAVAILABLE: evicting one would let its presentation be replayed); a
 * tenant whose minted challenges are full loses its own oldest. So one tenant's callers cannot
 * fill the Redis every tenant (and every replica) shares, nor, under an eviction policy, have
 * another tenant's nonces evicted and replayed. Entries written by earlier versions
 * (`<prefix>:nonce:<sha256>`, `<prefix>:challenge:<sha256>`, each with its own expiry) are still
 * honoured until they expire.
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
import { tenantOfKey } from '../lib/tenant-id.ts';
import type { ChallengeStore, NonceStore } from './nonce-store.ts';

function unavailable(error: unknown): PavilionError {
  return new PavilionError(ErrorCodes.CREDENTIAL_STATE_UNAVAILABLE, `the shared credential state (Redis) did not answer: ${describeThrown(error)}; the presentation is refused`, { cause: error });
}

// KEYS[1] the tenant's set, KEYS[2] the entry's key as earlier versions wrote it; ARGV: member,
// expires at (ms), now (ms), the tenant's bound. The set lives as long as its latest entry.
const KEEP_ALIVE = `
local function keepAlive(set, expires, now)
  local ttl = math.ceil(expires - now)
  if ttl > 0 and redis.call('PTTL', set) < ttl then redis.call('PEXPIRE', set, ttl) end
end
`;
const SCRIPTS = {
  /** 1: recorded; 0: recorded already (a replay); -1: the tenant's set is full (refused). */
  pavilionConsumeNonce: `${KEEP_ALIVE}
local set, member = KEYS[1], ARGV[1]
local expires, now, max = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', set, '-inf', now)
if redis.call('ZSCORE', set, member) or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('ZCARD', set) >= max then return -1 end
redis.call('ZADD', set, expires, member)
keepAlive(set, expires, now)
return 1`,
  /** 1: recorded and unexpired. */
  pavilionSeenNonce: `
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) > tonumber(ARGV[2]) then return 1 end
return redis.call('EXISTS', KEYS[2])`,
  /** Records a minted challenge; past the bound the tenant's own earliest to expire goes. */
  pavilionRememberChallenge: `${KEEP_ALIVE}
local set, member = KEYS[1], ARGV[1]
local expires, now, max = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', set, '-inf', now)
redis.call('ZADD', set, expires, member)
local size = redis.call('ZCARD', set)
if size > max then redis.call('ZPOPMIN', set, size - max) end
keepAlive(set, expires, now)
return 1`,
  /** 1 once for a recorded, unexpired challenge (removed as it is taken); 0 otherwise. */
  pavilionTakeChallenge: `
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score then
  redis.call('ZREM', KEYS[1], ARGV[1])
  if tonumber(score) > tonumber(ARGV[2]) then return 1 end
  return 0
end
return redis.call('DEL', KEYS[2])`,
} as const;

type ScriptName = keyof typeof SCRIPTS;

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
    for (const [name, lua] of Object.entries(SCRIPTS)) this.#redis.defineCommand(name, { numberOfKeys: 2, lua });
    const { keyPrefix: prefix, maxEntriesPerTenant: max } = config;
    const redis = this.#redis as unknown as Record<ScriptName, (...args: Array<string | number>) => Promise<number>>;
    /** The script on the tenant's set of `kind` and the entry's earlier key, with its member. */
    const run = async (script: ScriptName, kind: 'nonce' | 'challenge', key: string, ...args: number[]): Promise<number> => {
      const member = sha256Hex(key);
      try {
        return await redis[script](`${prefix}:${kind}s:${tenantOfKey(key)}`, `${prefix}:${kind}:${member}`, member, ...args);
      } catch (error) {
        throw unavailable(error);
      }
    };
    const ms = (value: number): number => Math.ceil(value);
    this.nonces = {
      async consumeOnce(key, expiresAtMs, nowMs) {
        const outcome = await run('pavilionConsumeNonce', 'nonce', key, ms(expiresAtMs), ms(nowMs), max);
        if (outcome === -1) {
          throw new PavilionError(ErrorCodes.CREDENTIAL_STATE_UNAVAILABLE, `the one-time challenge store of tenant ${tenantOfKey(key)} (Redis) is full (${max} live entries); the presentation is refused`);
        }
        return outcome === 1;
      },
      async seen(key, nowMs) {
        return (await run('pavilionSeenNonce', 'nonce', key, ms(nowMs))) === 1;
      },
    };
    this.challenges = {
      async remember(key, expiresAtMs, nowMs) {
        await run('pavilionRememberChallenge', 'challenge', key, ms(expiresAtMs), ms(nowMs), max);
      },
      async take(key, nowMs) {
        return (await run('pavilionTakeChallenge', 'challenge', key, ms(nowMs))) === 1;
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
