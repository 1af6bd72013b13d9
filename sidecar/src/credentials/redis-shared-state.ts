/**
 * Credential state the replicas of a deployment share, in Redis (ioredis): one-time nonces
 * (`SET key 1 PX ttl NX`: the first replica to see a challenge wins, every later use anywhere is
 * a replay) and minted challenges (`SET PX` when minted, `DEL` when taken: exactly one replica
 * can take one). Keys are `<prefix>:nonce:<sha256>` and `<prefix>:challenge:<sha256>` of the
 * tenant-scoped key, so their size does not depend on what a holder sends; Redis's own expiry
 * ends them.
 *
 * Bounded per tenant, as the in-memory stores are: beside its keys each tenant has a sorted set
 * per kind (`<prefix>:nonces:<tenant>`, `<prefix>:challenges:<tenant>`; member: the key's hash,
 * score: when it expires) that counts its live entries, changed in the same Lua script as the
 * key (atomic in Redis). A tenant whose nonces reach `maxEntriesPerTenant` is refused
 * (ERR_CREDENTIAL_STATE_UNAVAILABLE: evicting one would let its presentation be replayed); one
 * whose minted challenges reach it loses its own oldest. So one tenant's callers cannot fill the
 * Redis that every tenant and replica shares. The keys are those earlier versions wrote, so
 * replicas of both versions see each other's entries (theirs are not counted). The scripts
 * take the time from Redis (TIME), as the keys' expiry does, and at the bound drop the members
 * whose key is gone without the count (taken by an earlier version, or evicted). Needs Redis 5
 * or later.
 *
 * An eviction policy other than `noeviction` lets Redis drop a nonce under memory pressure, and
 * its presentation could then be replayed: health says WARN when Redis reports one.
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

// KEYS[1] the tenant's counting set, KEYS[2] the entry's key; ARGV: member (the key's hash),
// lifetime (ms), the tenant's bound, the prefix of an entry's key. Time is Redis's own (TIME),
// as is the keys' expiry, so no replica's clock moves the count. The set lives as long as its
// latest entry; its expired members leave first.
const PRELUDE = `
local set, key, member = KEYS[1], KEYS[2], ARGV[1]
local ttl, max, prefix = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', set, '-inf', now)
local function keepAlive()
  if redis.call('PTTL', set) < ttl then redis.call('PEXPIRE', set, ttl) end
end
-- at the bound: members whose key is gone (taken or evicted without the count) leave it,
-- looking at the 16 that expire first
local function dropGone()
  for _, gone in ipairs(redis.call('ZRANGE', set, 0, 15)) do
    if redis.call('EXISTS', prefix .. gone) == 0 then redis.call('ZREM', set, gone) end
  end
end
`;
const SCRIPTS = {
  /** 1: recorded; 0: recorded already (a replay); -1: the tenant's bound is reached (refused). */
  pavilionConsumeNonce: `${PRELUDE}
if redis.call('EXISTS', key) == 1 then return 0 end
if redis.call('ZCARD', set) >= max then dropGone() end
if redis.call('ZCARD', set) >= max then return -1 end
redis.call('SET', key, '1', 'PX', ttl)
redis.call('ZADD', set, now + ttl, member)
keepAlive()
return 1`,
  /** Records a minted challenge; past the bound the tenant's own earliest to expire go, their keys with them. 0 when the new one went too. */
  pavilionRememberChallenge: `${PRELUDE}
redis.call('SET', key, '1', 'PX', ttl)
redis.call('ZADD', set, now + ttl, member)
if redis.call('ZCARD', set) > max then dropGone() end
local size = redis.call('ZCARD', set)
if size > max then
  local popped = redis.call('ZPOPMIN', set, size - max)
  for i = 1, #popped, 2 do redis.call('DEL', prefix .. popped[i]) end
end
keepAlive()
return redis.call('EXISTS', key)`,
  /** 1 once for a recorded, unexpired challenge; its count goes with it. */
  pavilionTakeChallenge: `
local taken = redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return taken`,
} as const;

type ScriptName = keyof typeof SCRIPTS;

export class RedisSharedState implements Component {
  readonly name = 'shared_state';
  readonly nonces: NonceStore;
  readonly challenges: ChallengeStore;
  readonly #config: RedisConfig;
  readonly #redis: Redis;
  #lastError: string | undefined;
  /** Redis's maxmemory-policy, as it reported it at connect (undefined: not asked, or it would not say). */
  #evictionPolicy: string | undefined;

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
    this.#redis.on('ready', () => void this.#readEvictionPolicy());
    for (const [name, lua] of Object.entries(SCRIPTS)) this.#redis.defineCommand(name, { numberOfKeys: 2, lua });
    const { keyPrefix: prefix, maxEntriesPerTenant: max } = config;
    const redis = this.#redis;
    const scripts = this.#redis as unknown as Record<ScriptName, (...args: Array<string | number>) => Promise<number>>;
    /** Where the entries of `kind` live: `<prefix>:<kind>:<sha-256 of the entry's key>` (the scripts drop gone ones by it). */
    const entriesOf = (kind: 'nonce' | 'challenge'): string => `${prefix}:${kind}:`;
    /** The script on the tenant's counting set of `kind` and the entry's key. */
    const run = async (script: ScriptName, kind: 'nonce' | 'challenge', key: string, ...args: Array<string | number>): Promise<number> => {
      try {
        const member = sha256Hex(key);
        return await scripts[script](`${prefix}:${kind}s:${tenantOfKey(key)}`, entriesOf(kind) + member, member, ...args);
      } catch (error) {
        throw unavailable(error);
      }
    };
    const lifetime = (expiresAtMs: number, nowMs: number): number => Math.max(1, Math.ceil(expiresAtMs - nowMs));
    const full = (key: string, what: string): PavilionError =>
      new PavilionError(ErrorCodes.CREDENTIAL_STATE_UNAVAILABLE, `the ${what} of tenant ${tenantOfKey(key)} in Redis are at their bound (${max} live); the presentation is refused`);
    this.nonces = {
      async consumeOnce(key, expiresAtMs, nowMs) {
        const outcome = await run('pavilionConsumeNonce', 'nonce', key, lifetime(expiresAtMs, nowMs), max, entriesOf('nonce'));
        if (outcome === -1) throw full(key, 'one-time nonces');
        return outcome === 1;
      },
      async seen(key) {
        try {
          return (await redis.exists(entriesOf('nonce') + sha256Hex(key))) === 1;
        } catch (error) {
          throw unavailable(error);
        }
      },
    };
    this.challenges = {
      async remember(key, expiresAtMs, nowMs) {
        if ((await run('pavilionRememberChallenge', 'challenge', key, lifetime(expiresAtMs, nowMs), max, entriesOf('challenge'))) !== 1) throw full(key, 'minted challenges');
      },
      async take(key) {
        return (await run('pavilionTakeChallenge', 'challenge', key)) === 1;
      },
    };
  }

  /** Ask Redis for its eviction policy (CONFIG may be refused, as managed services do: then unknown). */
  async #readEvictionPolicy(): Promise<void> {
    try {
      const answer = (await this.#redis.config('GET', 'maxmemory-policy')) as unknown;
      const policy = Array.isArray(answer) ? answer[1] : undefined;
      this.#evictionPolicy = typeof policy === 'string' ? policy : undefined;
    } catch {
      this.#evictionPolicy = undefined;
    }
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
    const details = { url: redact(this.#config.url), connection: this.#redis.status, maxmemory_policy: this.#evictionPolicy ?? 'unknown' };
    if (this.#redis.status === 'ready' && this.#evictionPolicy !== undefined && this.#evictionPolicy !== 'noeviction') {
      return {
        state: 'WARN',
        message: `Redis's maxmemory-policy is ${this.#evictionPolicy}: under memory pressure it may evict a one-time nonce, whose presentation could then be replayed; set noeviction`,
        details,
      };
    }
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
