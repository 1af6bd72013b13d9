/**
 * Streams every logged decision to NATS JetStream, in log order, without loss or duplicates.
 *
 * Each tenant's events go to `<subjectPrefix>.decisions.<tenant>` with `Nats-Msg-Id` = the
 * event's `decision_id`, into the stream `<PREFIX>_DECISIONS` (subjects
 * `<subjectPrefix>.decisions.>`, created when missing, 10 minute duplicate window). The payload is
 * the event exactly as logged (its canonical JSON, the bytes the leaf hash covers).
 *
 * The audit log is the write-ahead log: the forwarder reads each tenant's `audit.wal` from a
 * cursor (`stream.cursor` next to it: the next leaf index, the byte offset after the last
 * acknowledged leaf and that leaf's hash, replaced atomically), publishes up to `maxInFlight`
 * of its events at a time, and moves the cursor only over events JetStream acknowledged, in
 * order (the file is replaced when the forwarder finds nothing new, fails or stops, and once a
 * second while events keep coming: a crash re-sends at most about that second, as
 * duplicates). It reads only up to the bytes the log has written, follows new appends by
 * polling, and while NATS is away keeps retrying with a doubling wait (retryWaitMs up to 30x):
 * the log keeps everything meanwhile, and `status()` shows the backlog.
 *
 * No duplicates: events acknowledged but not yet in the cursor file (a crash, a lost ack) are
 * published again, and JetStream drops them by message id within the duplicate window. Order:
 * the forwarder has its own connection without automatic reconnection, so nothing buffered
 * on a dead connection is sent after a newer event; after any failure it re-sends from the
 * acknowledged cursor (after a failure of the connection, on a new one; after a tenant's own,
 * on the same connection, behind what it sent before).
 *
 * One event refused while later ones are in flight (a size limit, a leader change) is the
 * one way the stream's order can differ from the log's: those later ones may be stored
 * before it. Then the next pass re-sends the refused event alone and pipelines again only
 * once it is stored, so at most `maxInFlight` events ever precede one they follow in the log
 * (the log, its Merkle tree and each receipt's position stay the order of record); and the
 * events acknowledged after it are not sent again, so they are not stored twice even after
 * the duplicate window (within one process; a restart relies on the window).
 *
 * Tenants do not wait on each other. Each tenant's pass runs on its own, all of them on the one
 * connection (up to MAX_CONCURRENT_TENANTS passes at once, the least recently started first): a
 * tenant waiting for acknowledgements (up to ackTimeoutMs) holds up only itself, and the other
 * tenants publish and are acknowledged meanwhile. A tenant whose pass published something is
 * passed again at once; one that found nothing new waits for the next poll.
 *
 * Tenants fail apart. A pass that fails for one tenant (an event JetStream refuses or the
 * server's permissions deny, one too large for the connection, a log that cannot be read, or
 * publishes on its subject that get no acknowledgement, no responders or no PubAck while the
 * connection and the stream answer) stops that tenant only: its cursor stays before the event
 * (nothing is skipped; its backlog shows it), it is retried alone with its own doubling wait
 * (retryWaitMs up to 30x) and probe, and the other tenants go on on the same connection.
 * `status()` names each such tenant under `tenant_errors` with the error's code (and, for a
 * publish, `details.reason`); the first acknowledgement of its events clears that and its wait
 * at once. An event over the stream's max_msg_size, or over the server's max_payload once the
 * Nats-Msg-Id header is added, is ERR_AUDIT_EVENT_TOO_LARGE: it cannot be published as it is,
 * so it is never hurried, never dropped, and retried at that bounded pace until the limit is
 * raised.
 *
 * A failure that leaves the connection in doubt is the connection's, not the tenant's that was
 * publishing: the connection (or its publisher) closed, or a publish got no acknowledgement in
 * time (or no responders, or something other than a PubAck) and then the connection did not
 * answer a request for the stream's info within the ack timeout, or the stream is gone. Then
 * the connection is dropped, no tenant is blamed (no `tenant_errors`, no wait of its own): every
 * tenant's publishes in flight on it fail with it and are re-sent from its acknowledged cursor
 * on the next connection (JetStream drops those it stored already, within the duplicate
 * window), and while NATS cannot be reached every tenant waits with the connection's own
 * doubling wait (`state: retrying`, `last_error`). A publish that got no acknowledgement is not
 * in doubt when JetStream acknowledged a later publish on the connection (another tenant's), or
 * the connection answers that request: either went out on the same connection after it, so the
 * answer shows the server has read the publish (nothing of it is left in the client to be sent
 * after a newer event) and JetStream works. Then the failure is the tenant's subject's, the
 * connection is kept, and the other tenants' publishes in flight on it are not disturbed (not
 * failed, not re-sent); a new connection (made for another reason) tries such a tenant again
 * at once, in case it was the connection's after all.
 *
 * The cursor holds the hash of its last leaf: a log recovered shorter (a tail lost with
 * fsync 'interval' or 'never') may have grown past the cursor again with other events, so on
 * load the cursor counts only when the log still has that leaf there; otherwise forwarding
 * restarts from leaf 0 (reported in status and the log) and JetStream drops what it already
 * holds within its duplicate window.
 */
import { open, readFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { STREAM_HEADER_ALLOWANCE_BYTES, type NatsConfig } from '../config/index.ts';
import { connectNats, loadedNats } from '../distribution/index.ts';
import { ErrorCodes, PavilionError, describeThrown, isPavilionError, wrapError } from '../lib/errors.ts';
import type { Component, ComponentStatus } from '../lib/lifecycle.ts';
import { withDeadline } from '../lib/lifecycle.ts';
import { writeFileDurably } from '../lib/durable-file.ts';
import { SingleFlight } from '../lib/single-flight.ts';
import type { Metrics } from '../telemetry/index.ts';
import type { StreamPosition, StreamProgress } from './audit-log-sink.ts';
import type { AuditLog } from './log/index.ts';
import { JetStreamPublisher, publishFailure, type StreamAck } from './jetstream-publisher.ts';
import { FILE_HEADER_BYTES, FRAME_OVERHEAD_BYTES, FrameDecoder, RecordType } from './log/record-format.ts';

export const CURSOR_FILE = 'stream.cursor';
/** JetStream drops a re-sent message id within this window (nanoseconds in the API). */
export const DUPLICATE_WINDOW_MS = 10 * 60 * 1000;
const READ_CHUNK_BYTES = 1024 * 1024;
const DEFAULT_ACK_TIMEOUT_MS = 10_000;
const MAX_BACKOFF_FACTOR = 30;
/** During a long catch-up the cursor file is written at least this often (bounds re-sends after a crash). */
const CURSOR_SAVE_INTERVAL_MS = 1000;
/**
 * Tenant passes running at once (each reads up to a megabyte of its log at a time and keeps up
 * to maxInFlight publishes waiting): bounds memory and the client's outgoing buffer when many
 * tenants catch up together. A tenant waiting for acknowledgements holds one for at most the
 * ack timeout, and one whose publishes fail retries with a probe of one event.
 */
const MAX_CONCURRENT_TENANTS = 16;

export interface DecisionForwarderOptions {
  readonly nats: NatsConfig;
  /** The tenant logs to forward (read again on every pass: logs open with a tenant's first event). */
  readonly logs: () => ReadonlyMap<string, AuditLog>;
  /** Publishes awaiting their acknowledgement, per tenant. */
  readonly maxInFlight: number;
  /**
   * The largest event the audit log accepts (decisionLog.audit.maxEventBytes): on connecting,
   * a server whose max_payload cannot carry one with its headers is reported (WARN), since such
   * an event would be logged and then wait in the log until the limit is raised.
   */
  readonly maxEventBytes?: number;
  /** The first wait after a failure, doubling up to 30x: for the connection, and for each tenant on its own. */
  readonly retryWaitMs: number;
  /**
   * How long JetStream may take to acknowledge a message before the tenant's pass fails and
   * retries (default 10 s), and to answer the request that then tells whether the connection
   * is in doubt. Only that tenant waits it out.
   */
  readonly ackTimeoutMs?: number;
  /** How often the logs are checked for new events (default 50 ms). */
  readonly pollIntervalMs?: number;
  readonly metrics?: Metrics;
  readonly log?: (level: 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>) => void;
}

interface Cursor {
  /** Index of the next leaf to publish. */
  nextLeaf: number;
  /** Byte offset just past the last acknowledged leaf's frame. */
  offset: number;
}

/** Why a tenant is not forwarded now, and when it is tried again. */
interface TenantFailure {
  readonly error: PavilionError;
  /** The leaf it is stuck on (the cursor's next leaf). */
  readonly leaf: number;
  /** Failed passes in a row on that leaf. */
  readonly attempts: number;
  /** When the first of them failed (ISO 8601). */
  readonly since: string;
  /** No pass for this tenant before then (Date.now()). */
  readonly retryAtMs: number;
}

interface TenantState {
  readonly log: AuditLog;
  readonly file: string;
  cursor: Cursor;
  /** The cursor in the file (it is written only when it moved). */
  saved: Cursor;
  /** When the cursor file was last written (Date.now()). */
  savedAtMs: number;
  /** Leaves acknowledged while an earlier one was refused (a failed pass): not sent again. */
  storedAhead: Set<number>;
  /** The last pass failed: the next one probes with one event before pipelining. */
  probe: boolean;
  /** The log file, open for reading from the first pass until a pass fails or the forwarder stops. */
  reader: FileHandle | undefined;
  /** The last pass failed and it was this tenant's failure: it waits until `retryAtMs`, the others go on. */
  failure: TenantFailure | undefined;
  /** The last pass published nothing: the next one waits for the next poll. */
  idle: boolean;
  /** When its last pass started (Date.now()): the least recently started go first when passes are all taken. */
  startedAtMs: number;
}

/** One connection with its publisher: what the tenants' passes started on it share. */
interface Link {
  readonly nc: NatsConnection;
  readonly publisher: JetStreamPublisher;
  readonly jsm: JetStreamManager;
  /** The running check whether the connection answers (shared by the passes that failed meanwhile). */
  check: Promise<string | undefined> | undefined;
}

type ForwarderState = 'new' | 'connecting' | 'forwarding' | 'retrying' | 'stopped';

export class DecisionForwarder implements Component, StreamProgress {
  readonly name = 'decision_stream';
  readonly #options: DecisionForwarderOptions;
  readonly #tenants = new Map<string, TenantState>();
  /** Tenants whose forwarding could not be set up (#loadFailed), and why: tried again each round. */
  readonly #loadErrors = new Map<string, { readonly code: string; readonly message: string }>();
  /** The tenants' passes running now (at most one per tenant). */
  readonly #passes = new SingleFlight<string, void>();
  #state: ForwarderState = 'new';
  #lastError: string | undefined;
  #link: Link | undefined;
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  /** A wake-up came while the loop was not sleeping: its next sleep returns at once. */
  #woken = false;
  #stopping = false;
  /** Failures of the connection in a row: failed connection attempts, and connections dropped in doubt. */
  #failures = 0;
  /** No connection attempt before then (Date.now()): the connection's own doubling wait. */
  #reconnectAtMs = 0;
  /** When the tenants that found nothing new were last passed again (Date.now()). */
  #polledAtMs = 0;
  /** Set on connecting when the server's max_payload cannot carry the largest event the log accepts. */
  #payloadWarning: string | undefined;
  #published = 0;
  #duplicates = 0;
  /** The publisher's number of the message whose failure a publish error reports (#inDoubt). */
  readonly #failedSeq = new WeakMap<PavilionError, number>();
  /** Acknowledgements awaited at once when the in-flight window is full. */
  readonly #burst: number;
  readonly #ackTimeoutMs: number;

  constructor(options: DecisionForwarderOptions) {
    this.#options = options;
    this.#burst = Math.max(1, Math.floor(options.maxInFlight / 2));
    this.#ackTimeoutMs = options.ackTimeoutMs ?? DEFAULT_ACK_TIMEOUT_MS;
  }

  /** The wait after `failures` failures in a row: doubling from retryWaitMs up to 30x, jittered. */
  #backoffMs(failures: number): number {
    return this.#options.retryWaitMs * Math.min(2 ** (failures - 1), MAX_BACKOFF_FACTOR) * (0.75 + Math.random() * 0.5);
  }

  /** Whether the cursor file is due for a write (at most once a CURSOR_SAVE_INTERVAL_MS under load). */
  static #saveDue(state: { readonly savedAtMs: number }): boolean {
    return Date.now() - state.savedAtMs >= CURSOR_SAVE_INTERVAL_MS;
  }

  get streamName(): string {
    return `${this.#options.nats.subjectPrefix.replace(/[^A-Za-z0-9_-]/g, '_').toUpperCase()}_DECISIONS`;
  }

  subject(tenant: string): string {
    return `${this.#options.nats.subjectPrefix}.decisions.${tenant}`;
  }

  async start(): Promise<void> {
    if (this.#state !== 'new') return;
    this.#state = 'connecting';
    this.#options.metrics?.registerAuditStreamMetrics(() => this.backlog());
    this.#loop = this.#run();
  }

  /** Records logged but not yet acknowledged by JetStream, per tenant. */
  backlog(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [tenant, log] of this.#options.logs()) {
      out[tenant] = Math.max(0, log.size - (this.#tenants.get(tenant)?.cursor.nextLeaf ?? 0));
    }
    return out;
  }

  /**
   * How far JetStream has taken `log`, the tenant's log the forwarder reads: leaves acknowledged,
   * leaves whose acknowledgement the cursor file holds, and whether the tenant is forwarded now
   * (connected, no failure of its own). Undefined when the forwarder does not read that log.
   * Read-only: the audit log sink asks it before sealing an epoch.
   */
  streamPosition(tenant: string, log: AuditLog): StreamPosition | undefined {
    const state = this.#tenants.get(tenant);
    if (state === undefined || state.log !== log) return undefined;
    return { acknowledged: state.cursor.nextLeaf, saved: state.saved.nextLeaf, forwarding: this.#link !== undefined && state.failure === undefined };
  }

  status(): ComponentStatus {
    const backlog = this.backlog();
    const total = Object.values(backlog).reduce((a, b) => a + b, 0);
    const stuck: string[] = [];
    const tenantErrors: Record<string, unknown> = {};
    for (const [tenant, { code, message }] of this.#loadErrors) {
      stuck.push(`${tenant} (${code})`);
      tenantErrors[tenant] = { code, message };
    }
    for (const [tenant, { failure }] of this.#tenants) {
      if (failure === undefined) continue;
      stuck.push(`${tenant} (${failure.error.code}, ${backlog[tenant] ?? 0} waiting)`);
      tenantErrors[tenant] = {
        code: failure.error.code,
        message: failure.error.message,
        attempts: failure.attempts,
        since: failure.since,
        retry_at: new Date(failure.retryAtMs).toISOString(),
        ...(failure.error.details === undefined ? {} : { details: failure.error.details }),
      };
    }
    const details = {
      // retrying: the connection, or (connected) a tenant waiting out a failure
      state: this.#state === 'forwarding' && stuck.length > 0 ? 'retrying' : this.#state,
      stream: this.streamName,
      backlog: total,
      tenants: backlog,
      published: this.#published,
      duplicates: this.#duplicates,
      ...(stuck.length === 0 ? {} : { tenant_errors: tenantErrors }),
      ...(this.#lastError === undefined ? {} : { last_error: this.#lastError }),
    };
    if (this.#state === 'new' || this.#state === 'stopped') return { state: 'NOT_READY', message: `decision stream ${this.#state}`, details };
    if (this.#state === 'retrying' || this.#state === 'connecting') {
      return { state: 'WARN', message: `decision stream ${this.#state}; ${total} decisions waiting in the audit log${this.#lastError === undefined ? '' : `: ${this.#lastError}`}`, details };
    }
    if (stuck.length > 0) {
      return { state: 'WARN', message: `decision stream: not forwarding ${stuck.join(', ')}; their decisions wait in the audit log, the other tenants are forwarded`, details };
    }
    if (this.#payloadWarning !== undefined) return { state: 'WARN', message: `decision stream: ${this.#payloadWarning}`, details };
    return { state: 'OK', details };
  }

  /**
   * Connect (after the connection's own wait when it failed), and start the pass of every
   * tenant that is due; the passes run on their own (#startPass) and wake this loop as they end.
   */
  async #run(): Promise<void> {
    const pollMs = this.#options.pollIntervalMs ?? 50;
    while (!this.#stopping) {
      try {
        // Cursors first, so the backlog is right while NATS is away too.
        const logs = this.#options.logs();
        // a tenant whose log is gone (sealed and not reopened, or the sink stopping) is not stuck
        for (const tenant of this.#loadErrors.keys()) if (!logs.has(tenant)) this.#loadErrors.delete(tenant);
        for (const [tenant, log] of logs) {
          const state = this.#tenants.get(tenant);
          try {
            if (state === undefined) await this.#load(tenant, log);
            else if (state.log !== log && !this.#passes.has(tenant)) await this.#followEpoch(tenant, state, log);
            this.#loadErrors.delete(tenant);
          } catch (error) {
            // that tenant's alone (its cursor, its log): tried again next round, the others go on
            this.#loadFailed(tenant, error);
          }
        }
        if (this.#link === undefined) {
          const wait = this.#reconnectAtMs - Date.now();
          if (wait > 0) {
            await this.#sleep(wait);
            continue;
          }
          await this.#connect();
        } else if (this.#link.publisher.closed) {
          // the server closed it (seen before any pass fails on it): reconnect after the connection's wait
          await this.#connectionFailed(this.#link, 'the connection to NATS JetStream closed');
          continue;
        }
        this.#schedule(pollMs);
      } catch (error) {
        // NATS JetStream could not be reached (a tenant's own failure stays in its pass): every tenant waits
        if (this.#stopping) break;
        await this.#connectionFailed(this.#link, describeThrown(error));
        continue;
      }
      await this.#sleep(Math.max(1, this.#polledAtMs + pollMs - Date.now()));
    }
    await Promise.allSettled(this.#passes.running());
    // A connection made after stop's deadline passed is not left open.
    await this.#disconnect();
    for (const [tenant, state] of this.#tenants) {
      await this.#closeReader(state);
      await this.#saveOrRecord(tenant, state); // a tenant between passes at stop: the file gets its cursor
    }
  }

  #sleep(ms: number): Promise<void> {
    if (this.#woken) {
      this.#woken = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#wake = done;
    });
  }

  /** Wake the loop now (or make its next sleep return at once). */
  #poke(): void {
    if (this.#wake !== undefined) this.#wake();
    else this.#woken = true;
  }

  async #connect(): Promise<void> {
    const nc = await connectNats(this.#options.nats, { reconnect: false });
    let jsm: JetStreamManager;
    try {
      if (this.#stopping) throw new Error('stopping');
      const { jetstreamManager } = loadedNats().jetstream;
      jsm = await jetstreamManager(nc);
      try {
        await jsm.streams.info(this.streamName);
      } catch (error) {
        if (!/not found/i.test(describeThrown(error))) throw error;
        await jsm.streams.add({
          name: this.streamName,
          subjects: [`${this.#options.nats.subjectPrefix}.decisions.>`],
          duplicate_window: DUPLICATE_WINDOW_MS * 1_000_000,
        });
      }
    } catch (error) {
      await nc.close().catch(() => undefined);
      throw error;
    }
    const maxPayload = nc.info?.max_payload;
    const maxEventBytes = this.#options.maxEventBytes;
    this.#payloadWarning = maxPayload !== undefined && maxEventBytes !== undefined && maxPayload < maxEventBytes + STREAM_HEADER_ALLOWANCE_BYTES
      ? `the NATS server's max_payload (${maxPayload} bytes) is below decisionLog.audit.maxEventBytes (${maxEventBytes}) plus ${STREAM_HEADER_ALLOWANCE_BYTES} bytes for headers: a decision event that large would be logged but not streamed until the limit is raised; lower maxEventBytes or raise max_payload`
      : undefined;
    if (this.#payloadWarning !== undefined) this.#options.log?.('warn', `decision stream: ${this.#payloadWarning}`, { maxPayload, maxEventBytes });
    const publisher = new JetStreamPublisher(nc, { ...(this.#options.nats.inboxPrefix === undefined ? {} : { inboxPrefix: this.#options.nats.inboxPrefix }), timeoutMs: this.#ackTimeoutMs });
    this.#link = { nc, publisher, jsm, check: undefined };
    // A tenant whose publishes got no usable answer (while the connection seemed to work) may
    // have failed for the connection's sake after all: it is tried again at once on the new one.
    // A refusal or an event too large keeps its pace: the server said so.
    const now = Date.now();
    for (const state of this.#tenants.values()) {
      if (state.failure?.error.code === ErrorCodes.AUDIT_STREAM_UNAVAILABLE && state.failure.retryAtMs > now) state.failure = { ...state.failure, retryAtMs: now };
    }
    if (this.#failures > 0) this.#options.log?.('info', 'decision stream: NATS JetStream is back; catching up from the audit log');
    this.#failures = 0;
    this.#state = 'forwarding';
  }

  async #disconnect(): Promise<void> {
    const link = this.#link;
    this.#link = undefined;
    if (link === undefined) return;
    link.publisher.close();
    await link.nc.close().catch(() => undefined);
  }

  /**
   * The connection `link` failed, or could not be made (`link` undefined): it is dropped and
   * every tenant waits for the next one, after the connection's own doubling wait. Nothing when
   * that connection was dropped already (another tenant's pass saw it first).
   */
  async #connectionFailed(link: Link | undefined, reason: string): Promise<void> {
    if (link !== this.#link) return;
    this.#lastError = reason;
    this.#state = 'retrying';
    this.#failures++;
    if (this.#failures === 1) this.#options.log?.('warn', 'decision stream: NATS JetStream unavailable; decisions wait in the audit log', { error: reason });
    this.#reconnectAtMs = Date.now() + this.#backoffMs(this.#failures);
    await this.#disconnect();
    this.#poke();
  }

  /**
   * Start the pass of every tenant that is due: not running, not waiting out a failure of its
   * own, and (unless the poll interval has passed) whose last pass published something. When
   * more are due than passes are free, the least recently started go first.
   */
  #schedule(pollMs: number): void {
    const link = this.#link;
    if (link === undefined) return;
    const now = Date.now();
    const poll = now - this.#polledAtMs >= pollMs;
    if (poll) this.#polledAtMs = now;
    const due: Array<[string, TenantState]> = [];
    for (const [tenant] of this.#options.logs()) {
      const state = this.#tenants.get(tenant);
      if (state === undefined || this.#passes.has(tenant)) continue;
      if (state.failure !== undefined && now < state.failure.retryAtMs) continue;
      if (state.idle && !poll) continue;
      if (state.failure === undefined && state.cursor.nextLeaf >= state.log.size
        && state.cursor.nextLeaf === state.saved.nextLeaf && state.cursor.offset === state.saved.offset) {
        state.idle = true; // caught up, and the file has the cursor: nothing to do
        continue;
      }
      due.push([tenant, state]);
    }
    const free = MAX_CONCURRENT_TENANTS - this.#passes.size;
    if (due.length > free) due.sort((x, y) => x[1].startedAtMs - y[1].startedAtMs);
    for (const [tenant, state] of due.slice(0, Math.max(0, free))) this.#startPass(tenant, state, link);
  }

  /**
   * One pass of one tenant on `link`, on its own: the other tenants' passes go on meanwhile.
   * A failure is this tenant's or the connection's (#failed).
   */
  #startPass(tenant: string, state: TenantState, link: Link): void {
    state.startedAtMs = Date.now();
    this.#passes.start(tenant, async () => {
      try {
        const moved = await this.#forward(tenant, state, link);
        state.idle = !moved;
        if (state.failure !== undefined) this.#recovered(tenant, state);
      } catch (error) {
        state.idle = false;
        if (!this.#stopping) await this.#failed(tenant, state, link, error);
      }
    })?.catch((error: unknown) => {
      this.#lastError = `${tenant}: ${describeThrown(error)}`;
    }).finally(() => this.#poke()); // once it no longer counts as running: the loop may start it again
  }

  /** The tenant's events are acknowledged again: it is no longer reported, and its wait is over. */
  #recovered(tenant: string, state: TenantState): void {
    const failure = state.failure;
    if (failure === undefined) return;
    state.failure = undefined;
    this.#options.log?.('info', `decision stream: tenant ${tenant} is forwarded again`, { tenant, attempts: failure.attempts });
  }

  /**
   * A pass of one tenant failed. When the connection is in doubt (#inDoubt) the failure is the
   * connection's: it is dropped, every tenant waits for the next one, and this tenant is not
   * blamed. Otherwise it is this tenant's: it waits on its own (doubling per failure on the
   * same leaf), with its error typed for status; the next pass probes with one event
   * (#forward). The connection is kept then: JetStream answered (a refusal), the server denied
   * the publish, the client would not send the event (max_payload), the log is at fault, or the
   * connection and the stream answer while this tenant's subject gets no acknowledgement.
   */
  async #failed(tenant: string, state: TenantState, link: Link, thrown: unknown): Promise<void> {
    let error = wrapError(thrown, ErrorCodes.AUDIT_LOG_IO, `${tenant}: forwarding from ${state.log.path}`);
    if (error.code === ErrorCodes.AUDIT_STREAM_UNAVAILABLE) {
      const doubt = await this.#inDoubt(link, error);
      if (doubt !== undefined) {
        await this.#connectionFailed(link, doubt);
        return;
      }
      error = this.#subjectError(tenant, error);
    }
    const leaf = state.cursor.nextLeaf;
    const previous = state.failure?.leaf === leaf ? state.failure : undefined;
    const attempts = (previous?.attempts ?? 0) + 1;
    state.failure = { error, leaf, attempts, since: previous?.since ?? new Date().toISOString(), retryAtMs: Date.now() + this.#backoffMs(attempts) };
    this.#lastError = error.message;
    if (attempts === 1) {
      this.#options.log?.('warn', `decision stream: tenant ${tenant} is not forwarded (retried on its own); its decisions wait in the audit log`, { tenant, code: error.code, leaf, error: error.message });
    }
  }

  /**
   * Why the connection is in doubt after a publish failed with ERR_AUDIT_STREAM_UNAVAILABLE, or
   * undefined when it is not. Not in doubt when, after a publish got no acknowledgement,
   * JetStream answered a message published after it on the connection (any tenant's), or when
   * the connection answers a request for the stream's info within the ack timeout: either went
   * out on the same connection after the failed publish, so an answer shows the server read
   * that publish (nothing of it is left in the client) and JetStream works; what failed is the
   * publish's subject (no acknowledgement, no responders, not a PubAck, or one the client
   * would not send). In doubt: the connection closed or was dropped already, no answer to the
   * request in time, or the stream is gone (reconnecting makes it again).
   */
  async #inDoubt(link: Link, error: PavilionError): Promise<string | undefined> {
    const reason = publishFailure(error);
    if (link !== this.#link || link.publisher.closed || reason === undefined || reason === 'closed') return error.message;
    const seq = this.#failedSeq.get(error);
    if (reason === 'no_ack' && seq !== undefined && link.publisher.answeredAfter(seq)) return undefined;
    link.check ??= this.#check(link).finally(() => {
      link.check = undefined;
    });
    const doubt = await link.check;
    return doubt === undefined ? undefined : `${error.message}; ${doubt}`;
  }

  /** Undefined when the connection answers a request for the stream's info within the ack timeout; else why not. */
  async #check(link: Link): Promise<string | undefined> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${this.#ackTimeoutMs} ms`)), this.#ackTimeoutMs);
    });
    try {
      await Promise.race([link.jsm.streams.info(this.streamName), timeout]);
      return undefined;
    } catch (error) {
      return `the connection is in doubt: JetStream's info on the stream ${this.streamName}: ${describeThrown(error)}`;
    } finally {
      clearTimeout(timer);
    }
  }

  /** A publish failure of one tenant's subject while the connection and the stream answer. */
  #subjectError(tenant: string, error: PavilionError): PavilionError {
    const subject = this.subject(tenant);
    const answer = `the connection and the stream ${this.streamName} answer`;
    let why: string;
    switch (publishFailure(error)) {
      case 'no_responders':
        why = `the stream ${this.streamName} answers but does not take ${subject} (its subjects leave it out), and no other stream does`;
        break;
      case 'bad_ack':
        why = `${answer}, so it is ${subject} that something other than JetStream answers`;
        break;
      case 'not_sent':
        why = `${answer}, so it is the publish to ${subject} that the client would not send`;
        break;
      default:
        why = `${answer}, so it is ${subject} that gets no acknowledgement (taken by a stream that does not acknowledge or a subscriber that does not reply, or dropped by the server)`;
    }
    return new PavilionError(error.code, `${error.message}; ${why}`, { cause: error.cause ?? error, ...(error.details === undefined ? {} : { details: error.details }) });
  }

  /**
   * A failed publish of leaf `leaf` with the tenant, leaf and size added: typed by the publisher
   * as too large (until a limit is raised), refused by JetStream or denied by the server, or not
   * answered (with the publisher's reason).
   */
  #publishError(tenant: string, leaf: number, bytes: number, link: Link, thrown: unknown): PavilionError {
    const text = describeThrown(thrown);
    const code = isPavilionError(thrown) ? thrown.code : ErrorCodes.AUDIT_STREAM_UNAVAILABLE;
    const reason = publishFailure(thrown);
    if (code === ErrorCodes.AUDIT_EVENT_TOO_LARGE) {
      const maxPayload = link.nc.info?.max_payload;
      return new PavilionError(
        code,
        `${tenant}: decision ${leaf} (${bytes} bytes) is too large to publish (${text}); it stays in the audit log and is retried until the stream's max_msg_size and the server's max_payload allow it`,
        { cause: thrown, details: { tenant, leaf, bytes, ...(maxPayload === undefined ? {} : { max_payload: maxPayload }), refused: true } },
      );
    }
    const refused = code === ErrorCodes.AUDIT_STREAM_REFUSED;
    return new PavilionError(refused ? code : ErrorCodes.AUDIT_STREAM_UNAVAILABLE, `${tenant}: decision ${leaf} not published: ${text}`, {
      cause: thrown,
      details: { tenant, leaf, refused, ...(reason === undefined ? {} : { reason }) },
    });
  }

  /**
   * The tenant's log is another now: the audit log sink sealed the epoch `state` read and
   * started the next. The sink seals an epoch only once JetStream acknowledged every leaf of
   * it and the cursor file holds that (streamPosition), so nothing of it is left to send or to
   * save: its reader is closed, nothing is written (its directory has moved, and the path it
   * had is the next epoch's), and the next epoch is forwarded from its own cursor file, from
   * its first leaf (the link to the sealed epoch) when it has none.
   */
  async #followEpoch(tenant: string, state: TenantState, log: AuditLog): Promise<void> {
    await this.#closeReader(state);
    this.#tenants.delete(tenant);
    await this.#load(tenant, log);
  }

  /** A tenant whose cursor could not be set up: reported (stuck, in status) and logged once per distinct error. */
  #loadFailed(tenant: string, error: unknown): void {
    const failure = isPavilionError(error) ? error : new PavilionError(ErrorCodes.INTERNAL, describeThrown(error), { cause: error });
    const message = `${tenant}: cannot start forwarding: ${failure.message}`;
    if (this.#loadErrors.get(tenant)?.message !== message) this.#options.log?.('warn', `decision stream: ${message}`, { tenant, code: failure.code });
    this.#loadErrors.set(tenant, { code: failure.code, message });
  }

  async #load(tenant: string, log: AuditLog): Promise<TenantState> {
    const file = join(log.directory, CURSOR_FILE);
    let cursor: Cursor = { nextLeaf: 0, offset: FILE_HEADER_BYTES };
    let leafHash: string | undefined;
    try {
      const parsed = JSON.parse(await readFile(file, 'utf8')) as { version?: unknown; next_leaf?: unknown; offset?: unknown; leaf_hash?: unknown };
      if (parsed.version === 1 && Number.isSafeInteger(parsed.next_leaf) && (parsed.next_leaf as number) >= 0 && Number.isSafeInteger(parsed.offset)) {
        cursor = { nextLeaf: parsed.next_leaf as number, offset: parsed.offset as number };
        if (typeof parsed.leaf_hash === 'string') leafHash = parsed.leaf_hash;
      } else {
        this.#lastError = `${tenant}: ${CURSOR_FILE} is not readable; forwarding from the start (JetStream drops what it already has within its duplicate window)`;
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') this.#lastError = `${tenant}: cannot read ${CURSOR_FILE}: ${describeThrown(error)}; forwarding from the start`;
    }
    const last = cursor.nextLeaf - 1;
    const beyond = cursor.nextLeaf > log.size || cursor.offset > log.writtenBytes || cursor.offset < FILE_HEADER_BYTES;
    const differs = last >= 0 && last < log.size && leafHash !== undefined && log.leafHashAt(last) !== leafHash;
    if (beyond || differs) {
      // The log lost a tail that was never synced (fsync 'interval' or 'never', and a power
      // cut), and may have grown again with other events. What recovery kept is a synced
      // prefix of the history the cursor forwarded: forward again from where it ends (or
      // the cursor, if that is before), not from the start, whose leaves JetStream would
      // store twice once its duplicate window has passed. A cursor leaf inside that prefix
      // that is not the one it forwarded means another log altogether: from the start.
      const kept = log.recovery.leaves;
      const from = differs && last < kept ? 0 : Math.min(cursor.nextLeaf, kept);
      const where = from === 0 ? 'from the start' : `from leaf ${from} (where the log recovered at start ends)`;
      this.#lastError = beyond && !differs
        ? `${tenant}: the cursor (leaf ${cursor.nextLeaf}, offset ${cursor.offset}) is past the end of the audit log (${log.size} leaves, ${log.writtenBytes} bytes); forwarding ${where}`
        : `${tenant}: the audit log's leaf ${last} is not the one the cursor forwarded (the log was recovered to another history); forwarding ${where}`;
      this.#options.log?.('warn', `decision stream: ${this.#lastError}`, { tenant, cursorLeaf: cursor.nextLeaf, logLeaves: log.size, from });
      cursor = from === 0 ? { nextLeaf: 0, offset: FILE_HEADER_BYTES } : { nextLeaf: from, offset: log.leafOffsetAt(from - 1) };
    } else if (last >= 0) {
      // from the last leaf's frame by the log's own index: never a byte inside a frame
      cursor.offset = log.leafOffsetAt(last);
    }
    const state: TenantState = { log, file, cursor, saved: { ...cursor }, savedAtMs: Date.now(), storedAhead: new Set(), probe: false, reader: undefined, failure: undefined, idle: false, startedAtMs: 0 };
    this.#tenants.set(tenant, state);
    return state;
  }

  /**
   * Publish what the tenant's log has past its cursor on `link`; true when anything was
   * published. Passes of several tenants run at once: each reads into buffers of its own.
   */
  async #forward(tenant: string, state: TenantState, link: Link): Promise<boolean> {
    const js = link.publisher;
    const end = state.log.writtenBytes;
    if (state.cursor.nextLeaf >= state.log.size) {
      await this.#saveOrRecord(tenant, state); // caught up: the file gets the cursor (a no-op when it has it)
      return false;
    }
    const subject = this.subject(tenant);
    // kept open between passes: at a moderate rate a pass carries a few events, and opening
    // and closing the file for each was two more trips to the thread pool
    state.reader ??= await open(state.log.path, 'r');
    const handle = state.reader;
    const inFlight: Array<{ ack: Promise<StreamAck>; nextLeaf: number; offset: number; bytes: number; seq: number }> = [];
    let moved = false;
    let completed = false;
    // Settle the oldest `count` in order. Publishing then resumes for as many at once: the
    // client writes what was published within one turn to the socket together, where
    // settling one and publishing one in turn made a socket write per event.
    const settle = async (count: number): Promise<void> => {
      for (let i = 0; i < count && inFlight.length > 0; i++) {
        const first = inFlight.shift()!;
        let ack: StreamAck;
        try {
          ack = await first.ack;
        } catch (error) {
          const failed = this.#publishError(tenant, first.nextLeaf - 1, first.bytes, link, error);
          this.#failedSeq.set(failed, first.seq);
          throw failed;
        }
        if (ack.duplicate) this.#duplicates++;
        // its events are acknowledged again: no longer reported, no wait of its own left
        if (state.failure !== undefined) this.#recovered(tenant, state);
        state.cursor = { nextLeaf: first.nextLeaf, offset: first.offset };
        this.#published++;
        this.#options.metrics?.auditStreamPublished.inc({ tenant });
        moved = true;
      }
      if (DecisionForwarder.#saveDue(state)) await this.#save(state);
    };
    try {
      const decoder = new FrameDecoder(state.cursor.offset);
      let position = state.cursor.offset;
      let expected = state.cursor.nextLeaf;
      while (position < end && !this.#stopping) {
        // sized to what is there to read (a pass at a moderate rate reads a few events), and
        // not shared: the decoder keeps what it was given
        const chunk = Buffer.allocUnsafe(Math.min(READ_CHUNK_BYTES, end - position));
        const { bytesRead } = await handle.read(chunk, 0, chunk.length, position);
        if (bytesRead === 0) break;
        position += bytesRead;
        for (const record of decoder.push(chunk.subarray(0, bytesRead))) {
          if (record.type !== RecordType.LEAF || record.index < expected) continue;
          if (record.index !== expected) {
            throw new PavilionError(ErrorCodes.AUDIT_SEQUENCE_BROKEN, `${tenant}: ${state.log.path}: leaf ${record.index} at byte ${record.offset}, expected leaf ${expected}`, {
              details: { tenant, leaf: expected, found: record.index, offset: record.offset },
            });
          }
          // the log knows each leaf's decision id (a leaf joins the tree before its frame is
          // written, and only written bytes are read): no JSON parse of every payload
          const decisionId = state.log.decisionIdAt(record.index);
          const frameEnd = record.offset + record.payload.length + FRAME_OVERHEAD_BYTES;
          expected = record.index + 1;
          if (inFlight.length >= this.#options.maxInFlight) await settle(this.#burst);
          if (state.storedAhead.delete(record.index)) {
            // acknowledged in a failed pass, after the one refused there: stored already
            inFlight.push({ ack: Promise.resolve({ seq: 0, duplicate: false }), nextLeaf: expected, offset: frameEnd, bytes: record.payload.length, seq: -1 });
            continue;
          }
          const ack = js.publish(subject, record.payload, decisionId);
          ack.catch(() => undefined); // awaited in order below; a failure stops the pass there
          inFlight.push({ ack, nextLeaf: expected, offset: frameEnd, bytes: record.payload.length, seq: js.lastSent });
          if (state.probe) {
            await settle(inFlight.length); // after a failure: this one stored before any later one is sent
            state.probe = false;
          }
        }
        if (decoder.damage !== undefined) {
          throw new PavilionError(ErrorCodes.AUDIT_RECORD_CORRUPT, `${tenant}: ${state.log.path}: ${decoder.damage.reason} at byte ${decoder.damage.offset}`, {
            details: { tenant, leaf: expected, offset: decoder.damage.offset },
          });
        }
      }
      while (inFlight.length > 0) await settle(inFlight.length);
      completed = true;
    } catch (error) {
      // The first unacknowledged one failed; later ones may have been stored meanwhile.
      state.probe = true;
      const outcomes = await Promise.allSettled(inFlight.map((f) => f.ack));
      outcomes.forEach((outcome, i) => {
        if (outcome.status === 'fulfilled') state.storedAhead.add((inFlight[i] as { nextLeaf: number }).nextLeaf - 1);
      });
      throw error;
    } finally {
      if (!completed) await this.#closeReader(state);
      // While events keep coming, the cursor file is written once a CURSOR_SAVE_INTERVAL_MS
      // (a crash re-sends at most that much, which JetStream drops as duplicates), not after
      // every pass: a pass is a few milliseconds under load, and each write is an fsync. The
      // first pass that finds nothing new writes it (above), as do a failure and stop.
      if (!completed || this.#stopping || DecisionForwarder.#saveDue(state)) await this.#saveOrRecord(tenant, state);
    }
    return moved;
  }

  /** Write the cursor file; a failure is recorded (status) and retried with the next write. */
  async #saveOrRecord(tenant: string, state: TenantState): Promise<void> {
    await this.#save(state).catch((error: unknown) => {
      this.#lastError = `${tenant}: cannot write ${CURSOR_FILE}: ${describeThrown(error)}`;
    });
  }

  async #closeReader(state: TenantState): Promise<void> {
    const reader = state.reader;
    state.reader = undefined;
    await reader?.close().catch(() => undefined);
  }

  /** Replace the cursor file atomically (write a temporary file, fsync it, rename). */
  async #save(state: TenantState): Promise<void> {
    state.savedAtMs = Date.now();
    if (state.cursor.nextLeaf === state.saved.nextLeaf && state.cursor.offset === state.saved.offset) return;
    const cursor = { ...state.cursor };
    // the last leaf's hash: on load, whether the log still has that leaf there
    const leafHash = cursor.nextLeaf > 0 ? { leaf_hash: state.log.leafHashAt(cursor.nextLeaf - 1) } : {};
    await writeFileDurably(state.file, `${JSON.stringify({ version: 1, next_leaf: cursor.nextLeaf, offset: cursor.offset, ...leafHash })}\n`);
    state.saved = cursor;
  }

  /** Stop publishing, let acknowledged events reach the cursor file, close the connection. */
  async stop(deadlineMs: number): Promise<void> {
    if (this.#state === 'stopped') return;
    this.#stopping = true;
    this.#poke();
    if (this.#loop !== undefined) await withDeadline(this.#loop, deadlineMs);
    await this.#disconnect();
    this.#state = 'stopped';
  }
}

