/**
 * A decision-log collector for OPA's `decision_logs` HTTP upload (`POST <service>/logs`, a
 * gzipped JSON array of events), on a fixed loopback port so it can be stopped and started
 * again (an outage). Remembers every decision id it received.
 */
import { createServer, type Server } from 'node:http';
import { gunzipSync } from 'node:zlib';

export class DecisionLogCollector {
  readonly port: number;
  /** Every decision id received (a re-sent one counts once). */
  readonly ids = new Set<string>();
  /** Events received, re-sends included. */
  received = 0;
  #server: Server | undefined;

  constructor(port: number) {
    this.port = port;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        try {
          let body = Buffer.concat(chunks);
          if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body);
          const events = JSON.parse(body.toString('utf8')) as Array<{ decision_id?: string }>;
          for (const event of events) {
            this.received++;
            if (typeof event.decision_id === 'string') this.ids.add(event.decision_id);
          }
          res.writeHead(200).end();
        } catch {
          res.writeHead(400).end();
        }
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.#server = server;
  }

  /** Stop answering: the port refuses connections until `start` again. */
  async stop(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    if (server === undefined) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  }
}
