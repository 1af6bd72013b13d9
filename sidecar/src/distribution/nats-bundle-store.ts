/**
 * The NATS JetStream adapter for bundle distribution, shared by the CLI (push, rollback,
 * history, status) and the sidecar (read, watch, report status):
 *
 *   KV `<pointerBucket>`             key `<tenant>` -> BundlePointer (history = deploy history)
 *   Object Store `<prefix><tenant>`  object `<sha256>` -> bundle.tar.gz
 *   KV `<pointerBucket>-status`      key `<sidecar id>` -> OPA Status report of that sidecar
 *
 * One object bucket per tenant keeps each tenant's bytes under its own subjects
 * (`$O.<prefix><tenant>.>`), so NATS permissions can confine a policy team to its tenants.
 *
 * Uses the modular nats.js v3 client (`@nats-io/*`): the maintained successor of the
 * all-in-one `nats` package (in maintenance), with KV watch and Object Store as typed,
 * async-iterable APIs.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Kvm, KV, KvEntry } from '@nats-io/kv';
import type { Objm, ObjectStore } from '@nats-io/obj';
import type { Consumer, ConsumerMessages, JetStreamManager, StoredMsg } from '@nats-io/jetstream';
import { parsePatch, signDelta, type SignOptions } from '../bundles/index.ts';
import type { NatsConfig } from '../config/index.ts';
import { ErrorCodes, PavilionError, describeThrown, isPavilionError } from '../lib/errors.ts';
import { sha256Hex } from '../lib/sha256.ts';
import { encodePointer, parsePointer, type BundlePointer, type PointerAction, type PointerEntry } from './pointer.ts';
import { parseDelta, type DeltaMessage } from './delta-message.ts';
import { loadNats, loadedNats } from './nats-modules.ts';

/** Who pushes a bundle, and why (kept in the deploy history). */
export interface PushMeta {
  readonly revision: string;
  readonly pushedBy: string;
  readonly note?: string;
}

/** Object chunk size: bundles up to this size are one message (NATS' default max payload is 1 MiB). */
const CHUNK_BYTES = 900 * 1024;

/** Idle time after which the server removes a delta replay consumer this client could not delete. */
const DELTA_CONSUMER_IDLE_MS = 10_000;

/** KV keeps at most 64 revisions per key: the deploy history a rollback can reach. */
export const DEPLOY_HISTORY = 64;

export interface ConnectOptions {
  /** Keep retrying the first connection instead of failing (the sidecar; the CLI fails fast). */
  readonly waitOnFirstConnect?: boolean;
  /**
   * Reconnect (and re-send what was buffered meanwhile) after a disconnect (default true).
   * The decision forwarder turns it off: a publish buffered across a reconnect could land
   * after one sent later, so it reconnects itself and re-sends from its cursor.
   */
  readonly reconnect?: boolean;
}

/** The code of a NATS failure: a refusal by NATS permissions keeps its own. */
export function distributionCode(text: string): typeof ErrorCodes.DISTRIBUTION_PERMISSION | typeof ErrorCodes.DISTRIBUTION_UNAVAILABLE {
  return /permission|authorization/i.test(text) ? ErrorCodes.DISTRIBUTION_PERMISSION : ErrorCodes.DISTRIBUTION_UNAVAILABLE;
}

function unavailable(what: string, error: unknown): PavilionError {
  const text = describeThrown(error);
  return new PavilionError(distributionCode(text), `${what}: ${text}`, { cause: error });
}

function moved(key: string, expectedSequence: number, error: unknown): PavilionError {
  return new PavilionError(ErrorCodes.BUNDLE_POINTER_MOVED, `the pointer ${key} moved since deploy ${expectedSequence} was read (a concurrent push?): nothing was changed; read the history and try again`, {
    cause: error,
    details: { key, expectedSequence },
  });
}

/** JetStream refused a write (a KV update, a publish) for its expected last sequence: the key or subject moved since it was read. */
function isWrongLastSequence(error: unknown): boolean {
  const code = (error as { readonly code?: unknown } | undefined)?.code;
  return code === 10071 || code === 10164 || /wrong last sequence/i.test(describeThrown(error));
}

export async function connectNats(config: NatsConfig, options: ConnectOptions = {}): Promise<NatsConnection> {
  let creds: Uint8Array | undefined;
  if (config.credsFile !== undefined) {
    try {
      creds = await readFile(config.credsFile);
    } catch (error) {
      throw new PavilionError(ErrorCodes.CONFIG_INVALID, `cannot read the NATS credentials file ${config.credsFile}: ${describeThrown(error)}`, { cause: error });
    }
  }
  const { connect, credsAuthenticator } = (await loadNats()).transport;
  try {
    return await connect({
      ...(creds === undefined ? {} : { authenticator: credsAuthenticator(creds) }),
      servers: [...config.servers],
      name: config.name,
      ...(config.user === undefined ? {} : { user: config.user }),
      ...(config.password === undefined ? {} : { pass: config.password }),
      ...(config.token === undefined ? {} : { token: config.token }),
      ...(config.inboxPrefix === undefined ? {} : { inboxPrefix: config.inboxPrefix }),
      reconnect: options.reconnect ?? true,
      maxReconnectAttempts: -1,
      reconnectTimeWait: config.reconnectWaitMs,
      reconnectJitter: config.reconnectJitterMs,
      timeout: config.connectTimeoutMs,
      waitOnFirstConnect: options.waitOnFirstConnect ?? false,
      noAsyncTraces: true,
    });
  } catch (error) {
    throw unavailable(`cannot connect to NATS at ${config.servers.join(', ')}`, error);
  }
}

function isMissingStream(error: unknown): boolean {
  return /stream not found|bucket not found|not found/i.test(describeThrown(error));
}

/**
 * Read an object in one request sequence: `get` returns the object's info with its data
 * stream, so the size is checked before any chunk is kept, and reading stops at the limit
 * (a lying pointer or object cannot make the sidecar buffer more than `maxBytes`). The
 * client checks the object's own SHA-256 digest at the end of the stream.
 */
async function readObject(store: ObjectStore, name: string, maxBytes: number): Promise<Uint8Array | null> {
  const result = await store.get(name);
  if (result === null) return null;
  if (result.info.size > maxBytes) {
    void result.data.cancel().catch(() => undefined);
    throw new PavilionError(ErrorCodes.BUNDLE_TOO_LARGE, `object ${name} is ${result.info.size} bytes; the limit is ${maxBytes}`);
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = result.data.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw new PavilionError(ErrorCodes.BUNDLE_TOO_LARGE, `object ${name} is larger than ${maxBytes} bytes`);
    }
    chunks.push(value);
  }
  const error = await result.error;
  if (error !== null && error !== undefined) throw error;
  return Buffer.concat(chunks);
}

const SHADOW_SUFFIX = '.shadow';

/** The KV key of a tenant's shadow pointer. */
export function shadowKey(tenant: string): string {
  return `${tenant}${SHADOW_SUFFIX}`;
}

/** The tenant whose shadow pointer `key` is, or undefined for any other key. */
export function tenantOfShadowKey(key: string): string | undefined {
  return key.endsWith(SHADOW_SUFFIX) ? key.slice(0, -SHADOW_SUFFIX.length) : undefined;
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new PavilionError(ErrorCodes.DISTRIBUTION_UNAVAILABLE, `${what} took longer than ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** `Kvm.open` does not check that the bucket exists; its status call does. */
async function openKv(kvm: Kvm, name: string): Promise<KV> {
  const kv = await kvm.open(name);
  await kv.status();
  return kv;
}

async function openOrCreate<T>(name: string, create: boolean, open: () => Promise<T>, make: () => Promise<T>): Promise<T> {
  try {
    return await open();
  } catch (error) {
    if (!create || !isMissingStream(error)) throw unavailable(`cannot open bucket ${name}`, error);
  }
  try {
    return await make();
  } catch (error) {
    throw unavailable(`cannot create bucket ${name}`, error);
  }
}


export class NatsBundleStore {
  readonly nc: NatsConnection;
  readonly #config: NatsConfig;
  readonly #kvm: Kvm;
  readonly #objm: Objm;
  #pointers: KV | undefined;
  #status: KV | undefined;
  readonly #objects = new Map<string, ObjectStore>();
  #manager: Promise<JetStreamManager> | undefined;
  /** Tenants whose object stream refused a direct get (no allow_direct, or grants without it). */
  readonly #noDirectGet = new Set<string>();

  constructor(nc: NatsConnection, config: NatsConfig) {
    this.nc = nc;
    this.#config = config;
    const nats = loadedNats();
    this.#kvm = new nats.kv.Kvm(nc);
    this.#objm = new nats.obj.Objm(nc);
  }

  /**
   * The pointer bucket. Opened first (an operator may provision it, and a policy team's
   * credentials may not allow creating streams); created with history 64 when missing and
   * `create` is set.
   */
  async pointers(create = false): Promise<KV> {
    if (this.#pointers === undefined) {
      this.#pointers = await openOrCreate(this.#config.pointerBucket, create,
        () => openKv(this.#kvm, this.#config.pointerBucket),
        () => this.#kvm.create(this.#config.pointerBucket, { history: DEPLOY_HISTORY }));
    }
    return this.#pointers;
  }

  /**
   * When the pointer bucket's stream was made (its identity: a bucket deleted and made again,
   * or lost with the server's store, has another), or undefined when there is none now.
   */
  async pointerBucketCreated(): Promise<string | undefined> {
    try {
      return (await (await this.#jsm()).streams.info(`KV_${this.#config.pointerBucket}`)).created;
    } catch (error) {
      if (/stream not found/i.test(describeThrown(error))) return undefined;
      throw error;
    }
  }

  async statusBucket(): Promise<KV> {
    if (this.#status === undefined) {
      const name = `${this.#config.pointerBucket}-status`;
      this.#status = await openOrCreate(name, true, () => openKv(this.#kvm, name), () => this.#kvm.create(name, { history: 1 }));
    }
    return this.#status;
  }

  async #objectStore(tenant: string, create: boolean): Promise<ObjectStore> {
    let store = this.#objects.get(tenant);
    if (store === undefined) {
      const name = `${this.#config.objectBucketPrefix}${tenant}`;
      store = await openOrCreate(name, create, () => this.#objm.open(name), () => this.#objm.create(name));
      this.#objects.set(tenant, store);
    }
    return store;
  }

  /** Read a pointer KV entry into a typed entry (or a typed error). */
  static entry(tenant: string, kvEntry: KvEntry): PointerEntry | undefined {
    if (kvEntry.operation !== 'PUT') return undefined;
    return { sequence: kvEntry.revision, pointer: parsePointer(kvEntry.value, tenant) };
  }

  async current(tenant: string): Promise<PointerEntry | undefined> {
    let kvEntry: KvEntry | null;
    try {
      kvEntry = await (await this.pointers()).get(tenant);
    } catch (error) {
      throw unavailable(`cannot read the pointer of ${tenant}`, error);
    }
    return kvEntry === null ? undefined : NatsBundleStore.entry(tenant, kvEntry);
  }

  async tenants(): Promise<string[]> {
    const out: string[] = [];
    try {
      for await (const key of await (await this.pointers()).keys()) if (!key.includes('.')) out.push(key);
    } catch (error) {
      throw unavailable('cannot list tenants', error);
    }
    return out.sort();
  }

  /**
   * The tenant's deploy history, oldest first. A malformed pointer in it (never a deploy: every
   * sidecar refused it) is left out and handed to `onInvalid` (by default: ignored).
   */
  async history(tenant: string, onInvalid: (sequence: number, error: PavilionError) => void = () => undefined): Promise<PointerEntry[]> {
    const out: PointerEntry[] = [];
    let entries: Awaited<ReturnType<KV['history']>> | undefined;
    const read = async (): Promise<void> => {
      entries = await (await this.pointers()).history({ key: tenant });
      for await (const kvEntry of entries) {
        let entry: PointerEntry | undefined;
        try {
          entry = NatsBundleStore.entry(tenant, kvEntry);
        } catch (error) {
          if (!isPavilionError(error, ErrorCodes.BUNDLE_POINTER_INVALID)) throw error;
          onInvalid(kvEntry.revision, error);
          continue;
        }
        if (entry !== undefined) out.push(entry);
      }
    };
    try {
      await withTimeout(read(), this.#config.fetchTimeoutMs, `reading the history of ${tenant}`);
    } catch (error) {
      entries?.stop(); // a read given up on stops its consumer, not only its caller
      if (error instanceof PavilionError) throw error;
      throw unavailable(`cannot read the history of ${tenant}`, error);
    }
    return out.sort((a, b) => a.sequence - b.sequence);
  }

  /** Download the pointer's bundle, checking size and digest. */
  async fetch(pointer: BundlePointer, maxBytes: number): Promise<Buffer> {
    if (pointer.size_bytes > maxBytes) {
      throw new PavilionError(ErrorCodes.BUNDLE_TOO_LARGE, `bundle ${pointer.revision} of ${pointer.tenant} is ${pointer.size_bytes} bytes; the limit is ${maxBytes}`);
    }
    let bytes: Uint8Array | null;
    try {
      const store = await this.#objectStore(pointer.tenant, false);
      // the chunk the pointer names is a shortcut: gone (the object was uploaded again since,
      // under a new chunk), the object is read by its name
      const read = async (): Promise<Uint8Array | null> =>
        (pointer.object_nuid === undefined ? null : await this.#readChunk(pointer.tenant, pointer.object_nuid))
        ?? this.#readObject(pointer.tenant, store, pointer.object, maxBytes);
      bytes = await withTimeout(read(), this.#config.fetchTimeoutMs, `downloading ${pointer.object}`);
    } catch (error) {
      if (error instanceof PavilionError) throw error;
      throw unavailable(`cannot download ${pointer.object} for ${pointer.tenant}`, error);
    }
    if (bytes === null) {
      throw new PavilionError(ErrorCodes.BUNDLE_REVISION_UNKNOWN, `object ${pointer.object} of ${pointer.tenant} is not in the object store`);
    }
    const digest = sha256Hex(bytes);
    if (digest !== pointer.digest) {
      throw new PavilionError(ErrorCodes.BUNDLE_DIGEST_MISMATCH, `downloaded bundle of ${pointer.tenant} has SHA-256 ${digest}, the pointer says ${pointer.digest}`);
    }
    return Buffer.from(bytes);
  }

  /**
   * A bundle stored in one chunk (what `push` writes for bundles under CHUNK_BYTES) is read
   * with two direct requests - its info, then its one chunk message - and checked against
   * the object's SHA-256 here. This spares nats-server a consumer per sidecar per rollout,
   * which is what a fleet-wide rollout costs it otherwise. Larger or linked objects take
   * the client's consumer path.
   */
  async #readObject(tenant: string, store: ObjectStore, name: string, maxBytes: number): Promise<Uint8Array | null> {
    const info = await store.info(name);
    if (info === null || info.deleted) return null;
    if (info.size > maxBytes) throw new PavilionError(ErrorCodes.BUNDLE_TOO_LARGE, `object ${name} is ${info.size} bytes; the limit is ${maxBytes}`);
    if (info.chunks !== 1 || info.options?.link !== undefined || !info.digest.startsWith('SHA-256=')) return readObject(store, name, maxBytes);
    const chunk = await this.#chunkMessage(tenant, info.nuid);
    if (chunk === null) return null;
    const expected = Buffer.from(info.digest.slice('SHA-256='.length), 'base64url');
    const actual = createHash('sha256').update(chunk.data).digest();
    if (chunk.data.length !== info.size || !actual.equals(expected)) {
      throw new PavilionError(ErrorCodes.BUNDLE_DIGEST_MISMATCH, `object ${name} does not match its own size and SHA-256 in the object store`);
    }
    return chunk.data;
  }

  /**
   * Store a bundle under its SHA-256 (once) without moving the pointer: a push of the same bytes
   * later finds them there. The chunk's nuid when it is one chunk.
   */
  async upload(tenant: string, archive: Buffer, revision: string): Promise<{ digest: string; nuid?: string }> {
    const digest = sha256Hex(archive);
    try {
      const store = await this.#objectStore(tenant, true);
      // Stored already only if it is there with these very bytes: a deleted object keeps its
      // info (marked deleted), and an object of this name with other content is not this bundle.
      const existing = await store.info(digest);
      // the object store writes the digest in base64url with its padding; compare the bytes
      const stored = existing !== null && !existing.deleted && existing.size === archive.length && existing.digest.startsWith('SHA-256=')
        && Buffer.from(existing.digest.slice('SHA-256='.length), 'base64url').equals(Buffer.from(digest, 'hex'));
      const info = stored ? existing : await store.putBlob({ name: digest, description: `${tenant} ${revision}`, options: { max_chunk_size: CHUNK_BYTES } }, archive);
      return info.chunks === 1 ? { digest, nuid: info.nuid } : { digest };
    } catch (error) {
      throw unavailable(`cannot upload the bundle of ${tenant}`, error);
    }
  }

  /**
   * A chunk by its subject. A direct get first: the server answers with the raw bytes,
   * where STREAM.MSG.GET answers with JSON carrying them in base64, which costs both sides
   * CPU on every sidecar of a rollout. A stream without `allow_direct`, or grants that do
   * not include `$JS.API.DIRECT.GET`, make it fall back to STREAM.MSG.GET (for good for
   * that tenant). Either way the bytes are then checked against the SHA-256 the caller has.
   */
  async #chunkMessage(tenant: string, nuid: string): Promise<{ data: Uint8Array } | null> {
    const bucket = `${this.#config.objectBucketPrefix}${tenant}`;
    const stream = `OBJ_${bucket}`;
    const subject = `$O.${bucket}.C.${nuid}`;
    const jsm = await this.#jsm();
    if (!this.#noDirectGet.has(tenant)) {
      try {
        return await jsm.direct.getMessage(stream, { last_by_subj: subject });
      } catch (error) {
        if (/permission|no responders|503/i.test(describeThrown(error))) this.#noDirectGet.add(tenant);
        // and try the stream API below, which also reports a real outage
      }
    }
    try {
      return await jsm.streams.getMessage(stream, { last_by_subj: subject });
    } catch (error) {
      if (/no message found|not found/i.test(describeThrown(error))) return null;
      throw error;
    }
  }

  /** The pointer named the chunk: one request; `fetch` checks size and digest against the pointer. */
  async #readChunk(tenant: string, nuid: string): Promise<Uint8Array | null> {
    return (await this.#chunkMessage(tenant, nuid))?.data ?? null;
  }

  /** Upload a bundle (content-addressed) and move the tenant's pointer to it. */
  async push(tenant: string, archive: Buffer, meta: PushMeta): Promise<PointerEntry> {
    return this.#uploadAndPoint(tenant, tenant, archive, meta);
  }


  /** Upload a bundle and point the tenant's shadow key at it: sidecars evaluate it beside the active revision. */
  async pushShadow(tenant: string, archive: Buffer, meta: PushMeta): Promise<PointerEntry> {
    return this.#uploadAndPoint(tenant, shadowKey(tenant), archive, meta);
  }

  /** Upload the bundle and point `key` (the tenant's pointer, or its shadow pointer) at it. */
  async #uploadAndPoint(tenant: string, key: string, archive: Buffer, meta: PushMeta): Promise<PointerEntry> {
    const { digest, nuid } = await this.upload(tenant, archive, meta.revision);
    return this.#move(key, {
      v: 1, tenant, revision: meta.revision, object: digest, digest, size_bytes: archive.length, ...(nuid === undefined ? {} : { object_nuid: nuid }),
      action: 'push', pushed_by: meta.pushedBy, pushed_at: new Date().toISOString(),
      ...(meta.note === undefined ? {} : { note: meta.note }),
    });
  }


  async currentShadow(tenant: string): Promise<PointerEntry | undefined> {
    let kvEntry: KvEntry | null;
    try {
      kvEntry = await (await this.pointers()).get(shadowKey(tenant));
    } catch (error) {
      throw unavailable(`cannot read the shadow pointer of ${tenant}`, error);
    }
    return kvEntry === null ? undefined : NatsBundleStore.entry(tenant, kvEntry);
  }

  /**
   * Deploy the shadow revision (a push) and end shadow mode. Compare-and-set on both keys: a
   * push or another promotion since they were read fails it (ERR_BUNDLE_POINTER_MOVED), and a
   * shadow staged again meanwhile is left staged.
   */
  async promoteShadow(tenant: string, meta: { pushedBy: string; note?: string }): Promise<PointerEntry> {
    const shadow = await this.currentShadow(tenant);
    if (shadow === undefined) throw new PavilionError(ErrorCodes.BUNDLE_REVISION_UNKNOWN, `tenant ${tenant} has no shadow revision`);
    const current = await this.current(tenant);
    const entry = await this.#move(tenant, {
      ...shadow.pointer, action: 'push', pushed_by: meta.pushedBy, pushed_at: new Date().toISOString(),
      ...(meta.note === undefined ? {} : { note: meta.note }),
    }, current?.sequence ?? 0);
    await this.endShadow(tenant, shadow.sequence).catch((error: unknown) => {
      // staged again since: that newer shadow stays; the promotion itself is done
      if (!(error instanceof PavilionError && error.code === ErrorCodes.BUNDLE_POINTER_MOVED)) throw error;
    });
    return entry;
  }

  /** End shadow mode; with `expectedSequence`, only if the shadow pointer is still that deploy. */
  async endShadow(tenant: string, expectedSequence?: number): Promise<void> {
    try {
      await (await this.pointers()).delete(shadowKey(tenant), expectedSequence === undefined ? undefined : { previousSeq: expectedSequence });
    } catch (error) {
      if (expectedSequence !== undefined && isWrongLastSequence(error)) throw moved(shadowKey(tenant), expectedSequence, error);
      throw unavailable(`cannot end the shadow of ${tenant}`, error);
    }
  }

  /** Move the pointer back to an earlier deploy (default: the one before the current). */
  async rollback(tenant: string, meta: { to?: number; pushedBy: string; note?: string }): Promise<PointerEntry> {
    const history = await this.history(tenant);
    const current = history.at(-1);
    if (current === undefined) throw new PavilionError(ErrorCodes.BUNDLE_REVISION_UNKNOWN, `tenant ${tenant} has no deploys`);
    const target = meta.to === undefined
      ? [...history].reverse().find((e) => e.pointer.digest !== current.pointer.digest)
      : history.find((e) => e.sequence === meta.to);
    if (target === undefined) {
      throw new PavilionError(ErrorCodes.BUNDLE_REVISION_UNKNOWN, meta.to === undefined
        ? `tenant ${tenant} has no earlier revision to roll back to`
        : `deploy ${meta.to} is not in ${tenant}'s history (${history.map((e) => e.sequence).join(', ')})`);
    }
    // only from the deploy it chose its target against: a push landing meanwhile is not undone
    return this.#move(tenant, {
      ...target.pointer, action: 'rollback', restores: target.sequence, pushed_by: meta.pushedBy, pushed_at: new Date().toISOString(),
      ...(meta.note === undefined ? {} : { note: meta.note }),
    }, current.sequence);
  }

  /**
   * Point `key` at `pointer`. With `expectedSequence` (0: the key must not exist), only if the
   * key is still at that deploy; otherwise ERR_BUNDLE_POINTER_MOVED and nothing changes.
   */
  async #move(key: string, pointer: BundlePointer, expectedSequence?: number): Promise<PointerEntry> {
    try {
      const kv = await this.pointers(true);
      const value = encodePointer(pointer);
      const sequence = expectedSequence === undefined
        ? await kv.put(key, value)
        : expectedSequence === 0 ? await kv.create(key, value) : await kv.update(key, value, expectedSequence);
      return { sequence, pointer };
    } catch (error) {
      if (expectedSequence !== undefined && isWrongLastSequence(error)) throw moved(key, expectedSequence, error);
      throw unavailable(`cannot move the pointer ${key}`, error);
    }
  }

  /**
   * Delta updates (OPA's delta bundles: `patch.json` on top of a deploy's snapshot):
   *
   *   Stream `<PREFIX>_DELTAS`           subjects `<prefix>.delta.<tenant>` -> DeltaMessage
   *   KV `<pointerBucket>` `<tenant>.deltas`  -> DeltaRecordV1: the last delta published
   *
   * The stream keeps deltas with no age limit: a deploy's deltas are part of its data, and a
   * sidecar that starts weeks after the deploy needs every one of them; `pruneDeltas` purges
   * those of deploys two pushes old (an operator's `bundle prune-deltas`). (Streams this code
   * created before had a 7-day limit; `publishDelta` lifts it, or refuses to publish.) The
   * record keeps each deploy's delta count beside its pointer, updated with compare-and-set,
   * where the stream's retention cannot lose it: a deploy's numbering never starts over, and
   * sidecars know how many deltas the deploy has, so a history whose start is missing is
   * reported instead of served as complete. Sidecars ignore keys with a dot as tenants, so
   * sidecars that predate the record are not disturbed by it.
   */
  get deltaStream(): string {
    return `${this.#config.subjectPrefix.replace(/[^A-Za-z0-9_-]/g, '_').toUpperCase()}_DELTAS`;
  }

  deltaSubject(tenant: string): string {
    return `${this.#config.subjectPrefix}.delta.${tenant}`;
  }

  /**
   * One manager per connection: creating one asks the server for the account's JetStream
   * info, which each sidecar would otherwise repeat on every download of a rollout.
   */
  async #jsm(): Promise<JetStreamManager> {
    const manager = this.#manager ?? loadedNats().jetstream.jetstreamManager(this.nc);
    this.#manager = manager;
    try {
      return await manager;
    } catch (error) {
      if (this.#manager === manager) this.#manager = undefined;
      throw unavailable('JetStream is not available', error);
    }
  }

  /** Open the delta stream; create it when missing (and this user may): no age limit, direct gets allowed. */
  async ensureDeltaStream(): Promise<void> {
    await this.#openDeltaStream();
  }

  async #openDeltaStream() {
    const jsm = await this.#jsm();
    return openOrCreate(this.deltaStream, true, () => jsm.streams.info(this.deltaStream), () => jsm.streams.add({
      name: this.deltaStream,
      subjects: [`${this.#config.subjectPrefix}.delta.>`],
      max_age: 0,
      allow_direct: true,
      duplicate_window: 120 * 1_000_000_000,
    }));
  }

  /**
   * The delta stream, checked before a publish: a stream that would drop deltas (an age limit,
   * or a message or byte limit that discards old messages) would leave sidecars that start
   * later with a deploy whose history is incomplete. An age limit (what streams created by
   * earlier versions have) is lifted when this user may update the stream; anything else
   * is refused with ERR_DISTRIBUTION_DELTA_RETENTION, for an operator to fix.
   */
  async #deltaStreamForPublishing(): Promise<void> {
    const info = await this.#openDeltaStream();
    const c = info.config;
    const ages = (c.max_age ?? 0) > 0;
    const discardsOld = c.discard !== loadedNats().jetstream.DiscardPolicy.New
      && ((c.max_msgs ?? -1) > 0 || (c.max_bytes ?? -1) > 0 || (c.max_msgs_per_subject ?? 0) > 0);
    if (!ages && !discardsOld) return;
    const refused = (why: string, cause?: unknown): PavilionError => new PavilionError(ErrorCodes.DISTRIBUTION_DELTA_RETENTION,
      `the delta stream ${this.deltaStream} ${why}, so sidecars starting later would miss deltas of the current deploy; `
      + `an operator must remove that limit (e.g. \`nats stream edit ${this.deltaStream} --max-age=0\`) before deltas are published`,
      { ...(cause === undefined ? {} : { cause }), details: { stream: this.deltaStream, max_age_ns: c.max_age ?? 0, max_msgs: c.max_msgs ?? -1, max_bytes: c.max_bytes ?? -1, max_msgs_per_subject: c.max_msgs_per_subject ?? 0 } });
    if (discardsOld) throw refused('discards its oldest messages at a message or byte limit');
    try {
      await (await this.#jsm()).streams.update(this.deltaStream, { max_age: 0, allow_direct: true });
    } catch (error) {
      throw refused(`drops deltas after ${Math.round((c.max_age ?? 0) / 1e9)} s and this user cannot lift the limit (${describeThrown(error)})`, error);
    }
  }

  /** Streams whose STREAM.MSG.GET this user may not send: direct gets by subject from then on. */
  readonly #noMessageGet = new Set<string>();

  /**
   * The last message on `subject` of `stream`, or null. A message get first (the stream
   * leader answers: it sees a pointer moved a moment ago). Its subject filter travels in the
   * request body, so grants cannot confine it to one tenant, and a policy team may not send
   * it; refused, this uses (from then on, for that stream) a direct get that names the
   * subject in the API subject, which grants can confine (the stream must allow direct
   * gets; any replica may answer one).
   */
  async #lastOnSubject(stream: string, subject: string): Promise<StoredMsg | null> {
    const jsm = await this.#jsm();
    if (!this.#noMessageGet.has(stream)) {
      try {
        return await jsm.streams.getMessage(stream, { last_by_subj: subject });
      } catch (error) {
        const text = describeThrown(error);
        if (/no message found|not found/i.test(text)) return null;
        if (!/permission/i.test(text)) throw error;
        this.#noMessageGet.add(stream);
      }
    }
    return jsm.direct.getMessage(stream, { last_by_subj: subject });
  }

  /** The last message on the tenant's delta subject: its stream sequence, and the delta unless it is malformed. */
  async #lastDelta(tenant: string): Promise<{ message?: DeltaMessage; streamSequence: number } | undefined> {
    let stored: StoredMsg | null;
    try {
      stored = await this.#lastOnSubject(this.deltaStream, this.deltaSubject(tenant));
    } catch (error) {
      throw unavailable(`cannot read the last delta of ${tenant}`, error);
    }
    if (stored === null) return undefined;
    try {
      return { message: parseDelta(stored.data, tenant), streamSequence: stored.seq };
    } catch {
      return { streamSequence: stored.seq }; // malformed: its place still bounds a read
    }
  }

  /**
   * The tenant's last stored delta (one message lookup: cheap enough for every resync), or
   * 'malformed' when the last message on its subject is not a delta.
   */
  async lastDelta(tenant: string): Promise<DeltaMessage | 'malformed' | undefined> {
    const last = await this.#lastDelta(tenant);
    return last === undefined ? undefined : (last.message ?? 'malformed');
  }

  /** The last value of `key` in the pointer bucket: its revision (the compare-and-set point) and value (none when deleted). */
  async #pointerKey(key: string): Promise<{ revision: number; value?: Uint8Array } | undefined> {
    const bucket = this.#config.pointerBucket;
    let stored: StoredMsg | null;
    try {
      stored = await this.#lastOnSubject(`KV_${bucket}`, `$KV.${bucket}.${key}`);
    } catch (error) {
      throw unavailable(`cannot read ${key} in ${bucket}`, error);
    }
    if (stored === null) return undefined;
    const operation = stored.header?.get('KV-Operation');
    return operation === 'DEL' || operation === 'PURGE' ? { revision: stored.seq } : { revision: stored.seq, value: stored.data };
  }

  /** The tenant's delta record and its revision (0: none yet); a malformed record reads as none. */
  async #deltaRecordEntry(tenant: string): Promise<{ revision: number; record?: DeltaRecordV1 }> {
    const entry = await this.#pointerKey(deltaRecordKey(tenant));
    if (entry === undefined) return { revision: 0 };
    if (entry.value === undefined) return { revision: entry.revision };
    const record = parseDeltaRecord(entry.value, tenant);
    return record === undefined ? { revision: entry.revision } : { revision: entry.revision, record };
  }

  /**
   * The tenant's delta record: the last delta published and on which deploy, or undefined
   * (no delta published by this version yet, or a malformed record). Sidecars compare it
   * with what the stream still holds.
   */
  async deltaRecord(tenant: string): Promise<DeltaRecordV1 | undefined> {
    const { record } = await this.#deltaRecordEntry(tenant);
    return record?.stream === this.deltaStream ? record : undefined;
  }

  /** The tenant's current deploy (with a policy team's grants too: `#lastOnSubject`). */
  async #deployForDelta(tenant: string): Promise<PointerEntry> {
    const entry = await this.#pointerKey(tenant);
    if (entry?.value === undefined) throw new PavilionError(ErrorCodes.BUNDLE_REVISION_UNKNOWN, `tenant ${tenant} has no deploy to apply a delta to`);
    return { sequence: entry.revision, pointer: parsePointer(entry.value, tenant) };
  }

  /**
   * The number of the last delta of deploy `base`. The record says it, unless the stream
   * has messages on the tenant's subject after the recorded one (a publish whose record
   * update failed, or a publisher that writes no record): those few are read. Without a
   * record of this deploy, the stream's last delta says it (publishers number in stream
   * order: the publish expects the subject's last sequence); only a malformed last message
   * then makes it read all the stored deltas (what earlier versions always did).
   */
  async #lastNumber(tenant: string, base: number, record: DeltaRecordV1 | undefined, last: { message?: DeltaMessage; streamSequence: number } | undefined): Promise<number> {
    const recorded = record?.base === base && record.stream === this.deltaStream ? record : undefined;
    const highest = (deltas: readonly DeltaMessage[], from: number): number => deltas.reduce((max, d) => (d.base === base ? Math.max(max, d.sequence) : max), from);
    if (last === undefined) return recorded?.sequence ?? 0;
    if (recorded !== undefined) {
      if (last.streamSequence <= recorded.last_stream_seq) return recorded.sequence;
      return highest(await this.deltas(tenant, { fromStreamSequence: recorded.last_stream_seq + 1 }), recorded.sequence);
    }
    if (last.message !== undefined) return last.message.base === base ? last.message.sequence : 0;
    return highest(await this.deltas(tenant), 0);
  }

  /**
   * Publish a delta on top of the tenant's current deploy, numbered after the last one of
   * that deploy (`#lastNumber`). Two publishers racing for the same number cannot both
   * succeed: the publish expects the subject's last stream sequence that was read, and the
   * loser reads again and takes the next number. Then the record moves to this delta
   * (compare-and-set). With `signing`, signed over tenant, deploy, number, roots and patch
   * with the tenant's key (scope: the tenant), as sidecars require unless the tenant is
   * configured for unsigned development bundles.
   *
   * Refused: a deploy that already has MAX_DELTAS_PER_DEPLOY deltas (ERR_BUNDLE_DELTA_LIMIT:
   * push a new snapshot first), a stream that would drop deltas
   * (ERR_DISTRIBUTION_DELTA_RETENTION). A delta published whose record could not be written
   * fails with `details.published: true`: do not publish it again; the next publish takes
   * the number from the stream.
   *
   * Grants this needs (a policy team, docs/nats-permissions.conf): stream info of the delta
   * stream, direct gets (`#lastOnSubject`) of the tenant's delta subject, pointer key and
   * record key, publish to the tenant's delta subject and record key.
   */
  async publishDelta(tenant: string, patch: unknown, roots: readonly string[], signing?: SignOptions): Promise<DeltaMessage> {
    const operations = parsePatch(patch);
    await this.#deltaStreamForPublishing();
    const js = loadedNats().jetstream.jetstream(this.nc);
    for (let attempt = 1; ; attempt++) {
      const [deploy, previous, last] = await Promise.all([this.#deployForDelta(tenant), this.#deltaRecordEntry(tenant), this.#lastDelta(tenant)]);
      const base = deploy.sequence;
      const sequence = (await this.#lastNumber(tenant, base, previous.record, last)) + 1;
      if (sequence > MAX_DELTAS_PER_DEPLOY) {
        throw new PavilionError(ErrorCodes.BUNDLE_DELTA_LIMIT,
          `deploy ${base} of ${tenant} already has ${MAX_DELTAS_PER_DEPLOY} deltas, the most one deploy takes; push a new snapshot (bundle push) with this data first, then publish deltas on it`,
          { details: { tenant, base, limit: MAX_DELTAS_PER_DEPLOY } });
      }
      const unsigned: DeltaMessage = { v: 1, tenant, base, sequence, roots: [...roots], patch: { data: operations } };
      const message: DeltaMessage = signing === undefined
        ? unsigned
        : { ...unsigned, signatures: await signDelta({ tenant, base, sequence, roots: unsigned.roots, operations }, signing) };
      let ack: Awaited<ReturnType<typeof js.publish>>;
      try {
        ack = await js.publish(this.deltaSubject(tenant), Buffer.from(JSON.stringify(message)), {
          msgID: `${tenant}.${base}.${sequence}`,
          expect: { lastSubjectSequence: last?.streamSequence ?? 0 },
        });
      } catch (error) {
        if (!isWrongLastSequence(error)) throw unavailable(`cannot publish the delta of ${tenant}`, error);
        if (attempt < PUBLISH_ATTEMPTS) continue; // another publisher took this number: read again
        throw raced(tenant, error);
      }
      // the same id within the duplicate window: the message stored is another publisher's
      if (ack.duplicate) {
        if (attempt < PUBLISH_ATTEMPTS) continue;
        throw raced(tenant);
      }
      const streamSequence = ack.seq;
      const first = sequence === 1 ? streamSequence : (previous.record?.base === base && previous.record.stream === this.deltaStream ? previous.record.first_stream_seq : undefined);
      await this.#recordDelta(tenant, previous.revision, {
        v: 1, tenant, stream: this.deltaStream, base, sequence, ...(first === undefined ? {} : { first_stream_seq: first }), last_stream_seq: streamSequence,
      });
      return message;
    }
  }

  /**
   * Purge the tenant's deltas of the deploys before `previous`, the deploy its current pointer
   * replaced (`pavilion bundle prune-deltas`). A sidecar applies the deltas of the deploy it
   * serves only, and a rollback is a new deploy whose deltas start at 1, so these serve only
   * a sidecar that still runs an older deploy because it refused both later ones (tests,
   * keys): it keeps its data but reports ERR_BUNDLE_DELTA_SEQUENCE on a rebuild. `previous`'s
   * deltas stay, for the sidecars still on it while they activate the current one. A tenant's
   * deltas are in deploy order on its subject (a publish expects the subject's last sequence
   * it read, with the deploy it read), so this purges the subject below the first delta of
   * `previous`: past the last delta when that one is of an older deploy, else below the
   * stream sequence the delta record gives for delta 1 of `previous`; with no record of where
   * `previous` starts it purges nothing. Needs `$JS.API.STREAM.PURGE.<delta stream>`, which
   * the shipped permissions give admin only: a purge names its subject in the request body,
   * so it cannot be granted per tenant. Returns how many deltas went, or undefined when the
   * tenant has no earlier deploy or nothing could be placed.
   */
  async pruneDeltas(tenant: string): Promise<{ readonly previousDeploy: number; readonly purged: number } | undefined> {
    const previous = (await this.history(tenant)).at(-2)?.sequence;
    if (previous === undefined) return undefined;
    try {
      const [last, record] = await Promise.all([this.#lastDelta(tenant), this.deltaRecord(tenant)]);
      if (last === undefined) return { previousDeploy: previous, purged: 0 };
      const firstOfPrevious = record?.base === previous && record.first_stream_seq !== undefined && record.first_stream_seq <= last.streamSequence
        ? record.first_stream_seq
        : undefined;
      const below = last.message !== undefined && last.message.base < previous ? last.streamSequence + 1 : firstOfPrevious;
      if (below === undefined) return undefined;
      const { purged } = await (await this.#jsm()).streams.purge(this.deltaStream, { filter: this.deltaSubject(tenant), seq: below });
      return { previousDeploy: previous, purged };
    } catch (error) {
      if (error instanceof PavilionError) throw error;
      throw unavailable(`cannot prune the deltas of ${tenant}`, error);
    }
  }

  /** Move the tenant's delta record to `next` (compare-and-set from `revision`); a newer record written meanwhile stays. */
  async #recordDelta(tenant: string, revision: number, next: DeltaRecordV1): Promise<void> {
    const key = deltaRecordKey(tenant);
    const subject = `$KV.${this.#config.pointerBucket}.${key}`;
    const js = loadedNats().jetstream.jetstream(this.nc);
    let expected = revision;
    let failure: unknown;
    for (let attempt = 0; attempt < PUBLISH_ATTEMPTS; attempt++) {
      try {
        await js.publish(subject, Buffer.from(JSON.stringify(next)), { expect: { lastSubjectSequence: expected } });
        return;
      } catch (error) {
        failure = error;
        if (!isWrongLastSequence(error)) break;
      }
      try {
        const now = await this.#deltaRecordEntry(tenant);
        if (now.record?.stream === next.stream && now.record.last_stream_seq >= next.last_stream_seq) return; // a later delta recorded itself
        expected = now.revision;
      } catch (error) {
        failure = error;
        break;
      }
    }
    const text = describeThrown(failure);
    throw new PavilionError(distributionCode(text),
      `delta ${next.sequence} of deploy ${next.base} of ${tenant} was published (stream sequence ${next.last_stream_seq}), but ${this.#config.pointerBucket}/${key} could not record it: ${text}. `
      + 'Do not publish it again: the next delta takes its number from the stream and records it.',
      { cause: failure, details: { published: true, tenant, base: next.base, sequence: next.sequence, stream_sequence: next.last_stream_seq } });
  }

  /**
   * Every stored delta of a tenant, in stream order (for a rebuild from the snapshot), from
   * `fromStreamSequence` on when given (the record's first delta of the deploy: the older
   * deploys' deltas are then not read; a start past the stream's last message, as after
   * the stream was made again, is ignored). The read is bounded: it ends at the last delta
   * looked up first, or when the consumer has nothing more pending (deltas purged
   * meanwhile), and fails with DISTRIBUTION_UNAVAILABLE past `fetchTimeoutMs`; the
   * consumer is deleted either way.
   */
  async deltas(tenant: string, options: { readonly fromStreamSequence?: number } = {}): Promise<DeltaMessage[]> {
    // A failed lookup is not "no deltas" (the caller retries); a malformed last message still
    // marks where the read ends (the deltas before it count).
    const last = await this.#lastDelta(tenant);
    if (last === undefined) return [];
    const from = options.fromStreamSequence !== undefined && options.fromStreamSequence <= last.streamSequence ? options.fromStreamSequence : undefined;
    const out: DeltaMessage[] = [];
    const timeoutMs = this.#config.fetchTimeoutMs;
    let consumer: Consumer | undefined;
    let messages: ConsumerMessages | undefined;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      messages?.stop();
    }, timeoutMs);
    try {
      const { DeliverPolicy } = loadedNats().jetstream;
      consumer = await loadedNats().jetstream.jetstream(this.nc).consumers.get(this.deltaStream, {
        // one subject as a string: nats.js sends an array of filters on the API subject
        // without the filter, which grants confined to the delta subjects refuse
        filter_subjects: this.deltaSubject(tenant),
        ...(from === undefined ? { deliver_policy: DeliverPolicy.All } : { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from }),
        // the sidecar's documented grants do not include CONSUMER.DELETE: the server then drops it after this idle time
        inactive_threshold: DELTA_CONSUMER_IDLE_MS,
      });
      if ((await consumer.info(true)).num_pending === 0) return out;
      messages = await consumer.consume();
      if (timedOut) messages.stop();
      for await (const m of messages) {
        try {
          out.push(parseDelta(m.data, tenant));
        } catch {
          // a malformed delta is skipped here; the sequence guard reports the gap it leaves
        }
        if (m.seq >= last.streamSequence || m.info.pending === 0) break;
      }
    } catch (error) {
      if (!timedOut) throw unavailable(`cannot read the deltas of ${tenant}`, error);
    } finally {
      clearTimeout(timer);
      messages?.stop();
      await consumer?.delete().catch(() => undefined);
    }
    if (timedOut) throw new PavilionError(ErrorCodes.DISTRIBUTION_UNAVAILABLE, `reading the deltas of ${tenant} took longer than ${timeoutMs} ms`);
    return out;
  }

  async close(): Promise<void> {
    await this.nc.close().catch(() => undefined);
  }
}

/** The most deltas one deploy takes: past it, the publisher is told to push a new snapshot (a replay stays bounded). */
export const MAX_DELTAS_PER_DEPLOY = 10_000;

/** Tries of a delta publish (or its record update) that another publisher beat to the number. */
const PUBLISH_ATTEMPTS = 5;

/**
 * Version 1 of a tenant's delta record (pointer bucket key `<tenant>.deltas`, JSON): the
 * last delta published, on which deploy, and where the deploy's deltas are in the stream.
 */
export interface DeltaRecordV1 {
  readonly v: 1;
  readonly tenant: string;
  /** The delta stream the stream sequences below are in. */
  readonly stream: string;
  /** The deploy (pointer KV revision) the deltas apply to. */
  readonly base: number;
  /** The number of the last delta published on `base` (1, 2, 3, ...). */
  readonly sequence: number;
  /** Stream sequence of delta 1 of `base`, when it was published with a record (a replay starts there). */
  readonly first_stream_seq?: number;
  /** Stream sequence of delta `sequence`. */
  readonly last_stream_seq: number;
}

/** The pointer bucket key of a tenant's delta record (a dot: no sidecar takes it for a tenant). */
export function deltaRecordKey(tenant: string): string {
  return `${tenant}.deltas`;
}

/** Parse a delta record; undefined when it is not one (the stream then decides alone). */
function parseDeltaRecord(bytes: Uint8Array, tenant: string): DeltaRecordV1 | undefined {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const r = value as Record<string, unknown>;
  const positive = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 1;
  if (r['v'] !== 1 || r['tenant'] !== tenant || typeof r['stream'] !== 'string' || !positive(r['base']) || !positive(r['sequence']) || !positive(r['last_stream_seq'])) return undefined;
  if (r['first_stream_seq'] !== undefined && !positive(r['first_stream_seq'])) return undefined;
  return {
    v: 1, tenant, stream: r['stream'], base: r['base'], sequence: r['sequence'], last_stream_seq: r['last_stream_seq'],
    ...(positive(r['first_stream_seq']) ? { first_stream_seq: r['first_stream_seq'] } : {}),
  };
}

function raced(tenant: string, cause?: unknown): PavilionError {
  return new PavilionError(ErrorCodes.DISTRIBUTION_UNAVAILABLE,
    `cannot publish the delta of ${tenant}: other publishers took the next number ${PUBLISH_ATTEMPTS} times in a row; try again`,
    cause === undefined ? {} : { cause });
}

export type { PointerAction };
