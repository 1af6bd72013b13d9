/**
 * `envoy.service.auth.v3.Authorization/Check` over gRPC, Envoy's `grpc_service` mode and
 * opa-envoy-plugin's only transport (default 127.0.0.1:9191 here; the plugin's default is
 * :9191 on every interface).
 *
 * One unary method is all ext_authz needs, so this is gRPC's HTTP/2 wire protocol
 * (grpc/doc/PROTOCOL-HTTP2.md) served straight from `node:http2`, without a general gRPC
 * framework: per check that saves the framework's call objects, metadata and stream layers
 * on the event loop, which is where a sidecar's time goes (bench/extauthz.ts).
 *
 * Contract:
 * - Every call that reaches the Check method gets a well-formed CheckResponse with
 *   grpc-status 0: a malformed message becomes a failure CheckResponse (the codec never
 *   throws), the service never rejects, the response is encoded here.
 * - Transport-level refusals are gRPC statuses, as grpc-go gives them to opa-envoy-plugin's
 *   callers: a message over `maxReceiveMessageBytes` is RESOURCE_EXHAUSTED (8), an unknown
 *   method UNIMPLEMENTED (12), an unsupported `grpc-encoding` UNIMPLEMENTED, a call without
 *   exactly one message, or with a Compressed-Flag other than 0 or 1, INTERNAL (13) (grpc-go's
 *   codes). Not POST: HTTP 405; not
 *   `application/grpc`: HTTP 415 (the spec's answers).
 * - `grpc-timeout` becomes the check's budget, so the answer arrives before the caller's
 *   deadline; a malformed one is INTERNAL, as grpc-go answers it; a call the client cancels
 *   is dropped without an answer.
 * - Compressed messages (`grpc-encoding: gzip | deflate`, flag set) are inflated off the
 *   event loop, bounded by the same size limit.
 */
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import { gunzip, inflate } from 'node:zlib';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import type { ConnectionLimit } from '../lib/connection-limit.ts';
import { hostPort } from '../lib/host-port.ts';
import { withDeadline } from '../lib/lifecycle.ts';
import type { CheckService } from './check-service.ts';
import { RpcCode, failureCheckResponse } from './decision.ts';
import { CHECK_METHOD_PATH, type CheckCodec } from './proto-codec.ts';

export interface GrpcServerOptions {
  readonly host: string;
  readonly port: number;
  readonly maxReceiveMessageBytes: number;
  /** The listener's bound on open connections. */
  readonly connections: ConnectionLimit;
  /** A session whose client sent no SETTINGS (after HTTP/2's preface) within this is destroyed. */
  readonly handshakeTimeoutMs: number;
}


const ACCEPT_ENCODING = 'identity,deflate,gzip';
/** By `grpc-encoding` (a Map: a header naming an inherited property, `constructor`, finds nothing). */
const inflaters: ReadonlyMap<string, (input: Buffer, options: { maxOutputLength: number }) => Promise<Buffer>> = new Map([
  ['gzip', promisify(gunzip)],
  ['deflate', promisify(inflate)],
]);

/** `grpc-timeout`: at most 8 digits and a unit (PROTOCOL-HTTP2.md); undefined when absent or malformed. */
export function parseGrpcTimeoutMs(value: string | string[] | undefined): number | undefined {
  if (typeof value !== 'string') return undefined;
  const match = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (match === null) return undefined;
  const amount = Number(match[1]);
  const unitMs = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 }[match[2] as 'H' | 'M' | 'S' | 'm' | 'u' | 'n'];
  return amount * unitMs;
}

/** `grpc-message` is percent-encoded outside printable ASCII (and `%` itself). */
export function encodeGrpcMessage(message: string): string {
  let out = '';
  for (const byte of Buffer.from(message, 'utf8')) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** One gRPC length-prefixed message: flag byte, 4-byte big-endian length, bytes. */
function frame(message: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + message.length);
  out[0] = 0;
  out.writeUInt32BE(message.length, 1);
  message.copy(out, 5);
  return out;
}

function peerOf(stream: http2.ServerHttp2Stream): string {
  const socket = stream.session?.socket;
  const address = socket?.remoteAddress ?? 'unknown';
  const port = socket?.remotePort ?? 0;
  return hostPort(address, port);
}

export class ExtAuthzGrpcServer {
  readonly #options: GrpcServerOptions;
  readonly #service: CheckService;
  readonly #codec: CheckCodec;
  readonly #sessions = new Set<http2.ServerHttp2Session>();
  #server: http2.Http2Server | undefined;
  #port: number | undefined;

  constructor(options: GrpcServerOptions, service: CheckService, codec: CheckCodec) {
    this.#options = options;
    this.#service = service;
    this.#codec = codec;
  }

  get listening(): boolean {
    return this.#port !== undefined;
  }

  /** The bound address (the port is the real one when configured as 0). */
  address(): { host: string; port: number } {
    if (this.#port === undefined) throw new PavilionError(ErrorCodes.INTERNAL, 'the ext_authz gRPC server is not listening');
    return { host: this.#options.host, port: this.#port };
  }

  async start(): Promise<void> {
    const server = http2.createServer({
      // room for a few maximum-size messages in flight on one connection
      maxSessionMemory: Math.max(10, Math.ceil((4 * this.#options.maxReceiveMessageBytes) / (1024 * 1024))),
      settings: { initialWindowSize: 1024 * 1024 },
    });
    this.#options.connections.apply(server);
    server.on('session', (session) => {
      // a connection that never speaks HTTP/2 would hold one of maxConnections for good
      const handshake = setTimeout(() => session.destroy(), this.#options.handshakeTimeoutMs);
      handshake.unref();
      session.once('remoteSettings', () => clearTimeout(handshake));
      session.once('close', () => clearTimeout(handshake));
      this.#sessions.add(session);
      session.on('close', () => this.#sessions.delete(session));
      session.on('error', () => session.destroy());
    });
    server.on('stream', (stream, headers) => this.#onStream(stream, headers));
    // a client speaking HTTP/1 (or garbage) to the gRPC port
    server.on('unknownProtocol', (socket) => socket.destroy());
    const target = `${this.#options.host}:${this.#options.port}`;
    this.#port = await new Promise<number>((resolve, reject) => {
      const onError = (error: Error): void => {
        reject(new PavilionError(ErrorCodes.EXTAUTHZ_LISTEN_FAILED, `ext_authz gRPC server cannot listen on ${target}: ${error.message}`, { cause: error }));
      };
      server.once('error', onError);
      server.listen(this.#options.port, this.#options.host, () => {
        server.off('error', onError);
        resolve((server.address() as AddressInfo).port);
      });
    });
    server.on('error', () => undefined); // after listening, errors belong to sessions and streams
    this.#server = server;
  }

  #onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on('error', () => undefined); // a reset stream: nothing left to answer
    if (headers[':method'] !== 'POST') {
      stream.respond({ ':status': 405, allow: 'POST' }, { endStream: true });
      return;
    }
    const contentType = headers['content-type'];
    if (typeof contentType !== 'string' || !/^application\/grpc(?:$|[+;])/.test(contentType)) {
      stream.respond({ ':status': 415, 'content-type': 'text/plain' }, { endStream: true });
      return;
    }
    // a deadline the caller cannot have meant: grpc-go refuses the call before looking at its method
    const timeoutMs = parseGrpcTimeoutMs(headers['grpc-timeout']);
    if (headers['grpc-timeout'] !== undefined && timeoutMs === undefined) {
      this.#refuse(stream, RpcCode.INTERNAL, `malformed grpc-timeout ${JSON.stringify(String(headers['grpc-timeout']).slice(0, 100))}`);
      return;
    }
    if (headers[':path'] !== CHECK_METHOD_PATH) {
      this.#refuse(stream, RpcCode.UNIMPLEMENTED, `unknown method ${String(headers[':path']).slice(0, 200)}`);
      return;
    }
    // absent, empty or identity: not compressed (an empty grpc-encoding is identity to grpc-go too)
    const encoding = headers['grpc-encoding'];
    const identity = encoding === undefined || encoding === '' || encoding === 'identity';
    const inflater = identity ? undefined : inflaters.get(String(encoding));
    if (!identity && inflater === undefined) {
      this.#refuse(stream, RpcCode.UNIMPLEMENTED, `message encoding ${String(encoding).slice(0, 100)} is not supported`);
      return;
    }
    const deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
    const limit = this.#options.maxReceiveMessageBytes;
    const chunks: Buffer[] = [];
    let received = 0;
    let refused = false;
    let prefixChecked = false;
    stream.on('data', (chunk: Buffer) => {
      if (refused) return;
      chunks.push(chunk);
      received += chunk.length;
      let length = 0;
      if (!prefixChecked && received >= 5) {
        prefixChecked = true;
        length = (chunks.length === 1 ? chunk : Buffer.concat(chunks)).readUInt32BE(1);
      }
      if (length > limit || received > limit + 5) {
        refused = true;
        chunks.length = 0;
        this.#refuse(stream, RpcCode.RESOURCE_EXHAUSTED, `Received message larger than max (${Math.max(length, received - 5)} vs. ${limit})`);
      }
    });
    stream.on('end', () => {
      if (refused) return;
      void this.#answer(stream, Buffer.concat(chunks, received), inflater, deadline);
    });
  }

  async #answer(
    stream: http2.ServerHttp2Stream,
    body: Buffer,
    inflater: ((input: Buffer, options: { maxOutputLength: number }) => Promise<Buffer>) | undefined,
    deadline: number | undefined,
  ): Promise<void> {
    if (body.length < 5) {
      this.#refuse(stream, RpcCode.INTERNAL, 'the call carries no request message');
      return;
    }
    const compressed = body[0] === 1;
    const length = body.readUInt32BE(1);
    if (body.length !== 5 + length) {
      this.#refuse(stream, RpcCode.INTERNAL, body.length < 5 + length ? 'the request message is truncated' : 'a unary call carries more than one request message');
      return;
    }
    if (body[0] !== 0 && body[0] !== 1) {
      // the Compressed-Flag is 0 or 1; grpc-go refuses any other as an unexpected payload format
      this.#refuse(stream, RpcCode.INTERNAL, `unexpected payload format ${body[0]} (the Compressed-Flag is 0 or 1)`);
      return;
    }
    let message = body.subarray(5);
    if (compressed) {
      if (inflater === undefined) {
        this.#refuse(stream, RpcCode.INTERNAL, 'a compressed message without grpc-encoding');
        return;
      }
      try {
        message = await inflater(message, { maxOutputLength: this.#options.maxReceiveMessageBytes });
      } catch (error) {
        const tooLarge = (error as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE';
        this.#refuse(stream, tooLarge ? RpcCode.RESOURCE_EXHAUSTED : RpcCode.INTERNAL, tooLarge
          ? `Received message larger than max (inflated past ${this.#options.maxReceiveMessageBytes})`
          : `the message cannot be decompressed: ${describeThrown(error)}`);
        return;
      }
    }
    const decoded = this.#codec.decodeRequest(message);
    const budget = deadline === undefined ? undefined : Math.max(0, deadline - Date.now() - 2);
    const result = await this.#service.check(decoded.ok ? decoded.request : decoded.error, {
      transport: 'grpc',
      requestedBy: peerOf(stream),
      ...(budget === undefined ? {} : { callerBudgetMs: budget }),
    });
    let bytes: Buffer;
    try {
      bytes = this.#codec.encodeResponse(result.response);
    } catch (error) {
      // a decision whose values protobuf cannot carry: still answer well-formed
      bytes = this.#codec.encodeResponse(failureCheckResponse({
        decisionId: result.decisionId,
        httpStatus: this.#service.settingsFor(result.tenant ?? '').failureStatus,
        code: ErrorCodes.EXTAUTHZ_DECISION_INVALID,
        message: `the response cannot be encoded: ${describeThrown(error)}`,
      }));
    }
    if (stream.destroyed || stream.closed) return; // cancelled by the client meanwhile
    stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-accept-encoding': ACCEPT_ENCODING }, { waitForTrailers: true });
    stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': String(RpcCode.OK) }));
    stream.end(frame(bytes));
  }

  /** A trailers-only response: HTTP 200 with the gRPC status in the only header block. */
  #refuse(stream: http2.ServerHttp2Stream, code: number, message: string): void {
    if (stream.destroyed || stream.closed || stream.headersSent) return;
    stream.respond({
      ':status': 200,
      'content-type': 'application/grpc',
      'grpc-accept-encoding': ACCEPT_ENCODING,
      'grpc-status': String(code),
      'grpc-message': encodeGrpcMessage(message),
    }, { endStream: true });
  }

  /** Stop accepting; in-flight checks finish within `deadlineMs`, then connections are cut. */
  async stop(deadlineMs: number): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    this.#port = undefined;
    if (server === undefined) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const session of this.#sessions) session.close(); // GOAWAY; open streams complete
    if (!(await withDeadline(closed, deadlineMs))) {
      for (const session of this.#sessions) session.destroy();
      await closed;
    }
  }
}
