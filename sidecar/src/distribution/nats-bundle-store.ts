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
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Kvm, type KV, type KvEntry } from '@nats-io/kv';
import { Objm, type ObjectStore } from '@nats-io/obj';
import { DeliverPolicy, jetstream, jetstreamManager, type JetStreamManager, type StoredMsg } from '@nats-io/jetstream';
import { parsePatch } from '../bundles/index.ts';
import type { NatsConfig } from '../config/index.ts';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import { encodePointer, parsePointer, type BundlePointer, type PointerAction, type PointerEntry } from './pointer.ts';
import { parseDelta, type DeltaMessage } from './delta-message.ts';

/** KV keeps at most 64 revisions per key: the deploy history a rollback can reach. */
export const DEPLOY_HISTORY = 64;

export interface ConnectOptions {
  /** Keep retrying the first connection instead of failing (the sidecar; the CLI fails fast). */
  readonly waitOnFirstConnect?: boolean;
}

function unavailable(what: string, error: unknown): PavilionError {
  const text = describeThrown(error);
  const code = /permission|authorization/i.test(text) ? ErrorCodes.DISTRIBUTION_PERMISSION : ErrorCodes.DISTRIBUTION_UNAVAILABLE;
  return new PavilionError(code, `${what}: ${text}`, { cause: error });
}

export async function connectNats(config: NatsConfig, options: ConnectOptions = {}): Promise<NatsConnection> {
  try {
    return await connect({
      servers: [...config.servers],
      name: config.name,
      ...(config.user === undefined ? {} : { user: config.user }),
      ...(config.password === undefined ? {} : { pass: config.password }),
      ...(config.token === undefined ? {} : { token: config.token }),
      reconnect: true,
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

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

export class NatsBundleStore {
  readonly nc: NatsConnection;
  readonly #config: NatsConfig;
  readonly #kvm: Kvm;
  readonly #objm: Objm;
  #pointers: KV | undefined;
  #status: KV | undefined;
  readonly #objects = new Map<string, ObjectStore>();

  constructor(nc: NatsConnection, config: NatsConfig) {
    this.nc = nc;
    this.#config = config;
    this.#kvm = new Kvm(nc);
    this.#objm = new Objm(nc);
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
      for await (const key of await (await this.pointers()).keys()) out.push(key);
    } catch (error) {
      throw unavailable('cannot list tenants', error);
    }
    return out.sort();
  }

  async history(tenant: string): Promise<PointerEntry[]> {
    const out: PointerEntry[] = [];
    try {
      for await (const kvEntry of await (await this.pointers()).history({ key: tenant })) {
        const entry = NatsBundleStore.entry(tenant, kvEntry);
        if (entry !== undefined) out.push(entry);
      }
    } catch (error) {
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
      const info = await store.info(pointer.object);
      if (info !== null && info.size > maxBytes) {
        throw new PavilionError(ErrorCodes.BUNDLE_TOO_LARGE, `object ${pointer.object} is ${info.size} bytes; the limit is ${maxBytes}`);
      }
      bytes = await store.getBlob(pointer.object);
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

  /** Upload a bundle (content-addressed) and move the tenant's pointer to it. */
  async push(tenant: string, archive: Buffer, meta: { revision: string; pushedBy: string; note?: string }): Promise<PointerEntry> {
    const digest = sha256Hex(archive);
    try {
      const store = await this.#objectStore(tenant, true);
      if ((await store.info(digest)) === null) await store.putBlob({ name: digest, description: `${tenant} ${meta.revision}` }, archive);
    } catch (error) {
      throw unavailable(`cannot upload the bundle of ${tenant}`, error);
    }
    return this.#move(tenant, {
      v: 1, tenant, revision: meta.revision, object: digest, digest, size_bytes: archive.length,
      action: 'push', pushed_by: meta.pushedBy, pushed_at: new Date().toISOString(),
      ...(meta.note === undefined ? {} : { note: meta.note }),
    });
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
    return this.#move(tenant, {
      ...target.pointer, action: 'rollback', restores: target.sequence, pushed_by: meta.pushedBy, pushed_at: new Date().toISOString(),
      ...(meta.note === undefined ? {} : { note: meta.note }),
    });
  }

  async #move(tenant: string, pointer: BundlePointer): Promise<PointerEntry> {
    try {
      const sequence = await (await this.pointers(true)).put(tenant, encodePointer(pointer));
      return { sequence, pointer };
    } catch (error) {
      throw unavailable(`cannot move the pointer of ${tenant}`, error);
    }
  }

  /** The JetStream stream that keeps delta updates (`<prefix>.delta.<tenant>`), 7 days. */
  get deltaStream(): string {
    return `${this.#config.subjectPrefix.replace(/[^A-Za-z0-9_-]/g, '_').toUpperCase()}_DELTAS`;
  }

  deltaSubject(tenant: string): string {
    return `${this.#config.subjectPrefix}.delta.${tenant}`;
  }

  async #jsm(): Promise<JetStreamManager> {
    try {
      return await jetstreamManager(this.nc);
    } catch (error) {
      throw unavailable('JetStream is not available', error);
    }
  }

  async ensureDeltaStream(): Promise<void> {
    const jsm = await this.#jsm();
    await openOrCreate(this.deltaStream, true, () => jsm.streams.info(this.deltaStream), () => jsm.streams.add({
      name: this.deltaStream,
      subjects: [`${this.#config.subjectPrefix}.delta.>`],
      max_age: 7 * 24 * 3600 * 1_000_000_000,
      duplicate_window: 120 * 1_000_000_000,
    }));
  }

  async #lastDelta(tenant: string): Promise<{ message: DeltaMessage; streamSequence: number } | undefined> {
    let stored: StoredMsg | null;
    try {
      stored = await (await this.#jsm()).streams.getMessage(this.deltaStream, { last_by_subj: this.deltaSubject(tenant) });
    } catch (error) {
      if (/no message found|not found/i.test(describeThrown(error))) return undefined;
      throw unavailable(`cannot read the last delta of ${tenant}`, error);
    }
    return stored === null ? undefined : { message: parseDelta(stored.data, tenant), streamSequence: stored.seq };
  }

  /**
   * Publish a delta on top of the tenant's current deploy: sequence = last delta of that
   * deploy + 1, with the stream's expected-last-subject-sequence so two publishers racing
   * for the same number cannot both succeed.
   */
  async publishDelta(tenant: string, patch: unknown, roots: readonly string[]): Promise<DeltaMessage> {
    const operations = parsePatch(patch);
    const current = await this.current(tenant);
    if (current === undefined) throw new PavilionError(ErrorCodes.BUNDLE_REVISION_UNKNOWN, `tenant ${tenant} has no deploy to apply a delta to`);
    await this.ensureDeltaStream();
    const last = await this.#lastDelta(tenant);
    const sameBase = last === undefined ? [] : (await this.deltas(tenant)).filter((d) => d.base === current.sequence);
    const sequence = sameBase.reduce((max, d) => Math.max(max, d.sequence), 0) + 1;
    const message: DeltaMessage = { v: 1, tenant, base: current.sequence, sequence, roots: [...roots], patch: { data: operations } };
    try {
      await jetstream(this.nc).publish(this.deltaSubject(tenant), Buffer.from(JSON.stringify(message)), {
        msgID: `${tenant}.${current.sequence}.${sequence}`,
        expect: { lastSubjectSequence: last?.streamSequence ?? 0 },
      });
    } catch (error) {
      throw unavailable(`cannot publish the delta of ${tenant}`, error);
    }
    return message;
  }

  /** Every stored delta of a tenant, in stream order (for a rebuild from the snapshot). */
  async deltas(tenant: string): Promise<DeltaMessage[]> {
    const last = await this.#lastDelta(tenant).catch(() => undefined);
    if (last === undefined) return [];
    const out: DeltaMessage[] = [];
    try {
      const consumer = await jetstream(this.nc).consumers.get(this.deltaStream, {
        filter_subjects: [this.deltaSubject(tenant)], deliver_policy: DeliverPolicy.All,
      });
      const messages = await consumer.consume();
      for await (const m of messages) {
        try {
          out.push(parseDelta(m.data, tenant));
        } catch {
          // a malformed delta is skipped here; the sequence guard reports the gap it leaves
        }
        if (m.seq >= last.streamSequence) break;
      }
      messages.stop();
    } catch (error) {
      throw unavailable(`cannot read the deltas of ${tenant}`, error);
    }
    return out;
  }

  async close(): Promise<void> {
    await this.nc.close().catch(() => undefined);
  }
}

export type { PointerAction };
