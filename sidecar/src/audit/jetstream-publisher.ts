/**
 * Publishing to a JetStream stream with the acknowledgements counted here. Each message goes
 * out with a plain `publish` whose reply subject sits under one inbox subscription, and the
 * stream's PubAck (`{"stream", "seq", "duplicate"}` or `{"error": {...}}`) comes back there.
 * nats.js' `js.publish` does the same per message with its own request object and timer,
 * several times the cost per message (the forwarder publishes every decision).
 *
 * A message that is not acknowledged within `timeoutMs` fails, as does every pending one when
 * the publisher or its connection closes; the caller (the forwarder) resumes from its cursor.
 */
import type { Msg, NatsConnection, Subscription } from '@nats-io/transport-node';
import { loadedNats } from '../distribution/index.ts';
import { ErrorCodes, PavilionError, describeThrown, type ErrorCode } from '../lib/errors.ts';

/**
 * A failed publish, typed where it is known: too large for the stream's max_msg_size or the
 * connection's max_payload (ERR_AUDIT_EVENT_TOO_LARGE: as long as that limit stays), refused by
 * JetStream's PubAck (ERR_AUDIT_STREAM_REFUSED: JetStream answered, the connection works), or
 * anything else (ERR_AUDIT_STREAM_UNAVAILABLE: not sent, or no answer).
 */
function failure(code: ErrorCode, message: string, cause?: unknown): PavilionError {
  const tooLarge = /message size exceeds|max_payload/i.test(message);
  return new PavilionError(tooLarge ? ErrorCodes.AUDIT_EVENT_TOO_LARGE : code, message, cause === undefined ? {} : { cause });
}
const unavailable = (message: string, cause?: unknown): PavilionError => failure(ErrorCodes.AUDIT_STREAM_UNAVAILABLE, message, cause);

const UTF8 = new TextDecoder();

export interface StreamAck {
  readonly seq: number;
  readonly duplicate: boolean;
}

interface Waiting {
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
  #next = 0;
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
  }

  /** Publish `payload` to `subject` with `Nats-Msg-Id` = `msgId` (deduplicated by the stream). */
  publish(subject: string, payload: Uint8Array, msgId: string | undefined): Promise<StreamAck> {
    if (this.#closed) return Promise.reject(unavailable('the JetStream publisher is closed'));
    const token = (this.#next++).toString(36);
    return new Promise<StreamAck>((resolve, reject) => {
      this.#waiting.set(token, { resolve, reject, sentAtMs: Date.now() });
      try {
        let headers;
        if (msgId !== undefined) {
          headers = loadedNats().transport.headers();
          headers.set('Nats-Msg-Id', msgId);
        }
        this.#nc.publish(subject, payload, { reply: `${this.#inbox}.${token}`, ...(headers === undefined ? {} : { headers }) });
      } catch (error) {
        this.#waiting.delete(token);
        reject(unavailable(describeThrown(error), error));
      }
    });
  }

  #onAck(error: Error | null, msg: Msg): void {
    const token = msg.subject.slice(this.#inbox.length + 1);
    const waiting = this.#waiting.get(token);
    if (waiting === undefined) return; // expired meanwhile
    this.#waiting.delete(token);
    if (error !== null) {
      waiting.reject(unavailable(describeThrown(error), error));
      return;
    }
    if (msg.headers?.hasError === true) {
      // 503: no stream listens on the subject
      waiting.reject(unavailable(`JetStream did not take the message: ${msg.headers.code} ${msg.headers.description}`));
      return;
    }
    let ack: { seq?: unknown; duplicate?: unknown; error?: { code?: unknown; description?: unknown } };
    try {
      ack = JSON.parse(UTF8.decode(msg.data)) as typeof ack;
    } catch {
      waiting.reject(unavailable('JetStream answered with something that is not a PubAck'));
      return;
    }
    if (ack.error !== undefined) {
      waiting.reject(failure(ErrorCodes.AUDIT_STREAM_REFUSED, `JetStream refused the message: ${String(ack.error.description ?? ack.error.code)}`));
      return;
    }
    if (typeof ack.seq !== 'number') {
      waiting.reject(unavailable('JetStream answered with a PubAck without a sequence'));
      return;
    }
    waiting.resolve({ seq: ack.seq, duplicate: ack.duplicate === true });
  }

  #expire(): void {
    const limit = Date.now() - this.#timeoutMs;
    // insertion order is send order: the oldest come first
    for (const [token, waiting] of this.#waiting) {
      if (waiting.sentAtMs > limit) break;
      this.#waiting.delete(token);
      waiting.reject(unavailable(`no acknowledgement from JetStream within ${this.#timeoutMs} ms`));
    }
  }

  /** Fail whatever still waits and stop listening. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    for (const waiting of this.#waiting.values()) waiting.reject(unavailable('the JetStream publisher closed before the acknowledgement'));
    this.#waiting.clear();
    if (!this.#nc.isClosed()) this.#subscription.unsubscribe();
  }
}
