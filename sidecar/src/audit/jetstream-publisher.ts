/**
 * Publishing to a JetStream stream with the acknowledgements counted here. Each message goes
 * out with a plain `publish` whose reply subject sits under one inbox subscription, and the
 * stream's PubAck (`{"stream", "seq", "duplicate"}` or `{"error": {...}}`) comes back there.
 * nats.js' `js.publish` does the same per message with its own request object and timer,
 * several times the cost per message (the forwarder publishes every decision).
 *
 * A message that is not acknowledged within `timeoutMs` fails, as does every pending one when
 * the publisher or its connection closes; the caller (the forwarder) resumes from its cursor.
 * A publish the server denies (the account's permissions: the server drops the message and
 * sends an asynchronous `-ERR 'Permissions Violation for Publish to "<subject>"'`, never a
 * reply) fails at once as a refusal, the oldest one waiting on that subject (the server
 * answers a connection's publishes in order), instead of waiting out the timeout.
 *
 * Each failure carries `details.reason`, for the caller to tell a subject's failure from the
 * connection's: `closed` (the publisher or connection closed, or the ack subscription failed:
 * the connection's), `not_sent` (the client would not send it), `no_ack` (no answer in time),
 * `no_responders` (503: nothing listens on the subject), `bad_ack` (an answer that is not a
 * PubAck), `refused` (a PubAck error), `denied` (permissions). Only `closed` is certainly the
 * connection's; the others may be one subject's, which the caller can check: `answeredAfter`
 * tells whether a message published after a given one got a PubAck (the server reads a
 * connection's messages in order, so it read that one too, and JetStream answers).
 */
import type { Msg, NatsConnection, Subscription } from '@nats-io/transport-node';
import { loadedNats } from '../distribution/index.ts';
import { ErrorCodes, PavilionError, describeThrown, type ErrorCode } from '../lib/errors.ts';

/** Why a publish failed (`details.reason` of its error). */
export type PublishFailure = 'closed' | 'not_sent' | 'no_ack' | 'no_responders' | 'bad_ack' | 'refused' | 'denied';

/**
 * A failed publish, typed where it is known: too large for the stream's max_msg_size or the
 * connection's max_payload (ERR_AUDIT_EVENT_TOO_LARGE: as long as that limit stays), refused by
 * JetStream's PubAck or denied by the server (ERR_AUDIT_STREAM_REFUSED: the server answered, the
 * connection works), or anything else (ERR_AUDIT_STREAM_UNAVAILABLE: not sent, or no answer).
 */
function failure(code: ErrorCode, reason: PublishFailure, message: string, cause?: unknown): PavilionError {
  const tooLarge = /message size exceeds|max_payload/i.test(message);
  return new PavilionError(tooLarge ? ErrorCodes.AUDIT_EVENT_TOO_LARGE : code, message, { ...(cause === undefined ? {} : { cause }), details: { reason } });
}
const unavailable = (reason: PublishFailure, message: string, cause?: unknown): PavilionError => failure(ErrorCodes.AUDIT_STREAM_UNAVAILABLE, reason, message, cause);

/** The reason a publisher's failure gives (undefined for anything else). */
export function publishFailure(error: unknown): PublishFailure | undefined {
  if (!(error instanceof PavilionError)) return undefined;
  const reason = error.details?.['reason'];
  return typeof reason === 'string' ? reason as PublishFailure : undefined;
}

const UTF8 = new TextDecoder();

export interface StreamAck {
  readonly seq: number;
  readonly duplicate: boolean;
}

interface Waiting {
  /** Its number on this publisher (`lastSent` right after its publish). */
  readonly seq: number;
  readonly subject: string;
  readonly resolve: (ack: StreamAck) => void;
  readonly reject: (error: Error) => void;
  readonly sentAtMs: number;
}

export class JetStreamPublisher {
  readonly #nc: NatsConnection;
  readonly #inbox: string;
  readonly #subscription: Subscription;
  readonly #waiting = new Map<string, Waiting>();
  readonly #timer: NodeJS.Timeout;
  readonly #timeoutMs: number;
  readonly #status: AsyncIterable<unknown>;
  #next = 0;
  /** The highest number of a message JetStream answered with a PubAck (an acknowledgement or a refusal). */
  #answered = -1;
  #closed = false;

  constructor(nc: NatsConnection, options: { readonly inboxPrefix?: string; readonly timeoutMs: number }) {
    const { createInbox } = loadedNats().transport;
    this.#nc = nc;
    this.#timeoutMs = options.timeoutMs;
    this.#inbox = createInbox(options.inboxPrefix);
    this.#subscription = nc.subscribe(`${this.#inbox}.*`, { callback: (error, msg) => this.#onAck(error, msg) });
    this.#timer = setInterval(() => this.#expire(), Math.max(10, Math.floor(options.timeoutMs / 4)));
    this.#timer.unref();
    // a closed connection answers nothing more: fail what waits at once, not at the timeout
    void nc.closed().then(() => this.close(), () => this.close());
    this.#status = nc.status();
    void this.#watch();
  }

  /** The number of the last message published (the first is 0). */
  get lastSent(): number {
    return this.#next - 1;
  }

  /** Whether JetStream answered a message published after message `seq` (a PubAck, or a PubAck refusal). */
  answeredAfter(seq: number): boolean {
    return this.#answered > seq;
  }

  /** Whether it was closed (its connection closed, or close()): every publish fails at once. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Publish `payload` to `subject` with `Nats-Msg-Id` = `msgId` (deduplicated by the stream). */
  publish(subject: string, payload: Uint8Array, msgId: string | undefined): Promise<StreamAck> {
    const seq = this.#next++;
    if (this.#closed) return Promise.reject(unavailable('closed', 'the JetStream publisher is closed'));
    const token = seq.toString(36);
    return new Promise<StreamAck>((resolve, reject) => {
      this.#waiting.set(token, { seq, subject, resolve, reject, sentAtMs: performance.now() });
      try {
        let headers;
        if (msgId !== undefined) {
          headers = loadedNats().transport.headers();
          headers.set('Nats-Msg-Id', msgId);
        }
        this.#nc.publish(subject, payload, { reply: `${this.#inbox}.${token}`, ...(headers === undefined ? {} : { headers }) });
      } catch (error) {
        this.#waiting.delete(token);
        reject(unavailable(this.#nc.isClosed() ? 'closed' : 'not_sent', describeThrown(error), error));
      }
    });
  }

  #onAck(error: Error | null, msg: Msg): void {
    if (error !== null) {
      // the subscription itself failed (e.g. no permission to subscribe to the inbox): no
      // acknowledgement can arrive any more on this connection
      this.close(`the acknowledgement subscription failed: ${describeThrown(error)}`);
      return;
    }
    const token = msg.subject.slice(this.#inbox.length + 1);
    const waiting = this.#waiting.get(token);
    if (waiting === undefined) return; // expired meanwhile
    this.#waiting.delete(token);
    if (msg.headers?.hasError === true) {
      // 503: no stream listens on the subject
      waiting.reject(unavailable(msg.headers.code === 503 ? 'no_responders' : 'bad_ack', `JetStream did not take the message: ${msg.headers.code} ${msg.headers.description}`));
      return;
    }
    let ack: { seq?: unknown; duplicate?: unknown; error?: { code?: unknown; description?: unknown } };
    try {
      ack = JSON.parse(UTF8.decode(msg.data)) as typeof ack;
    } catch {
      waiting.reject(unavailable('bad_ack', 'JetStream answered with something that is not a PubAck'));
      return;
    }
    if (ack.error !== undefined || typeof ack.seq === 'number') this.#answered = Math.max(this.#answered, waiting.seq);
    if (ack.error !== undefined) {
      waiting.reject(failure(ErrorCodes.AUDIT_STREAM_REFUSED, 'refused', `JetStream refused the message: ${String(ack.error.description ?? ack.error.code)}`));
      return;
    }
    if (typeof ack.seq !== 'number') {
      waiting.reject(unavailable('bad_ack', 'JetStream answered with a PubAck without a sequence'));
      return;
    }
    waiting.resolve({ seq: ack.seq, duplicate: ack.duplicate === true });
  }

  /** The connection's asynchronous server errors: a publish denied by permissions fails at once. */
  async #watch(): Promise<void> {
    const { PermissionViolationError } = loadedNats().transport;
    try {
      for await (const status of this.#status) {
        if (this.#closed) break;
        const error = (status as { type?: unknown; error?: unknown }).error;
        if (!(error instanceof PermissionViolationError) || error.operation !== 'publish') continue;
        // the server answers a connection's publishes in order: the oldest one waiting on that subject
        for (const [token, waiting] of this.#waiting) {
          if (waiting.subject !== error.subject) continue;
          this.#waiting.delete(token);
          waiting.reject(failure(ErrorCodes.AUDIT_STREAM_REFUSED, 'denied', `the NATS server denied the publish: ${error.message}`));
          break;
        }
      }
    } catch {
      // the status stream ends with the connection
    }
  }

  #expire(): void {
    const limit = performance.now() - this.#timeoutMs; // monotonic: a clock stepped back does not hold acks past their timeout
    // insertion order is send order: the oldest come first
    for (const [token, waiting] of this.#waiting) {
      if (waiting.sentAtMs > limit) break;
      this.#waiting.delete(token);
      waiting.reject(unavailable('no_ack', `no acknowledgement from JetStream within ${this.#timeoutMs} ms`));
    }
  }

  /** Fail whatever still waits and stop listening. */
  close(why = 'the JetStream publisher closed before the acknowledgement'): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    for (const waiting of this.#waiting.values()) waiting.reject(unavailable('closed', why));
    this.#waiting.clear();
    (this.#status as { stop?: () => void }).stop?.();
    if (!this.#nc.isClosed()) this.#subscription.unsubscribe();
  }
}
