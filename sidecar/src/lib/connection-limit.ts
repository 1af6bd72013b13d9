/**
 * A listener's bound on open connections (`http.maxConnections`,
 * `extAuthz.grpc.maxConnections`).
 *
 * Past the bound a new connection is closed as soon as it is accepted: Node's
 * `server.maxConnections`, so the client sees the connection close before any byte is read or
 * answered.
 * Every socket is a file descriptor, and the audit log, the last known good store and the
 * bundle downloads need descriptors too: a flood of connections must not be what makes a
 * log rotation fail. Neither OPA nor Go's `net/http` bounds connections; Envoy, in front of
 * the sidecar in a mesh, holds a handful.
 */
import type { Server, Socket } from 'node:net';

/** How often a listener that keeps refusing connections says so in the log. */
const REFUSAL_LOG_INTERVAL_MS = 60_000;

export interface ConnectionLimitOptions {
  /** The listener's name in logs, metrics and status: `http` or `grpc`. */
  readonly listener: string;
  readonly maxConnections: number;
  /** Called once per refused connection (the metrics counter). */
  readonly onRefused?: (listener: string) => void;
  readonly log?: (level: 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>) => void;
  readonly clock?: () => number;
}

export class ConnectionLimit {
  readonly listener: string;
  readonly maxConnections: number;
  readonly #options: ConnectionLimitOptions;
  readonly #clock: () => number;
  #open = 0;
  #refused = 0;
  #lastRefusedAtMs: number | undefined;
  /**
   * Refusals since the last log line (reported with the next refusal after the minute, not
   * when the minute ends: the counter has them all), and when that line was written.
   */
  #refusedSinceLog = 0;
  #loggedAtMs: number | undefined;

  constructor(options: ConnectionLimitOptions) {
    this.listener = options.listener;
    this.maxConnections = options.maxConnections;
    this.#options = options;
    this.#clock = options.clock ?? Date.now;
  }

  /** Bound `server` (before it listens). */
  apply(server: Server): void {
    server.maxConnections = this.maxConnections;
    server.on('connection', (socket: Socket) => {
      this.#open++;
      socket.once('close', () => this.#open--);
    });
    server.on('drop', () => this.#refuse());
  }

  /** Connections open now. */
  get open(): number {
    return this.#open;
  }

  /** Connections refused since start. */
  get refused(): number {
    return this.#refused;
  }

  /** The listener's figures, for its component's status details. */
  details(): { connections: number; maxConnections: number; connectionsRefused: number } {
    return { connections: this.#open, maxConnections: this.maxConnections, connectionsRefused: this.#refused };
  }

  /** A warning for the component's status while refusals are recent (within a minute), else undefined. */
  warning(): string | undefined {
    if (this.#lastRefusedAtMs === undefined || this.#clock() - this.#lastRefusedAtMs > REFUSAL_LOG_INTERVAL_MS) return undefined;
    return `${this.listener}: connections refused in the last minute: ${this.maxConnections} open connections is the bound (${this.#refused} refused since start)`;
  }

  #refuse(): void {
    const now = this.#clock();
    this.#refused++;
    this.#refusedSinceLog++;
    this.#lastRefusedAtMs = now;
    this.#options.onRefused?.(this.listener);
    if (this.#loggedAtMs !== undefined && now - this.#loggedAtMs < REFUSAL_LOG_INTERVAL_MS) return;
    this.#options.log?.('warn', `${this.listener}: connection refused: ${this.maxConnections} open connections is the bound`, {
      listener: this.listener,
      maxConnections: this.maxConnections,
      refusedSinceLastWarning: this.#refusedSinceLog,
    });
    this.#loggedAtMs = now;
    this.#refusedSinceLog = 0;
  }
}
