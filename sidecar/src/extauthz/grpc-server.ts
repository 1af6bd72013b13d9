/**
 * `envoy.service.auth.v3.Authorization/Check` over gRPC (@grpc/grpc-js), Envoy's
 * `grpc_service` mode and opa-envoy-plugin's only transport (default 127.0.0.1:9191 here;
 * the plugin's default is :9191 on every interface).
 *
 * The request deserializer never throws (a malformed message becomes a failure
 * CheckResponse, not a gRPC error), the handler never rejects, and the response is encoded
 * in the handler, so every call that reaches the service gets a well-formed CheckResponse.
 * Only messages over `maxReceiveMessageBytes` are refused by the transport itself
 * (RESOURCE_EXHAUSTED), as grpc-go does in opa-envoy-plugin past its 4 MiB default.
 */
import * as grpc from '@grpc/grpc-js';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import type { CheckService } from './check-service.ts';
import { failureCheckResponse } from './decision.ts';
import { CHECK_METHOD_PATH, type CheckCodec, type DecodedCheckRequest } from './proto-codec.ts';

export interface GrpcServerOptions {
  readonly host: string;
  readonly port: number;
  readonly maxReceiveMessageBytes: number;
}

function identity(buffer: Buffer): Buffer {
  return buffer;
}

export class ExtAuthzGrpcServer {
  readonly #options: GrpcServerOptions;
  readonly #service: CheckService;
  readonly #codec: CheckCodec;
  #server: grpc.Server | undefined;
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
    const server = new grpc.Server({
      'grpc.max_receive_message_length': this.#options.maxReceiveMessageBytes,
      'grpc.max_send_message_length': -1,
    });
    const definition: grpc.ServiceDefinition = {
      Check: {
        path: CHECK_METHOD_PATH,
        requestStream: false,
        responseStream: false,
        requestSerialize: identity,
        requestDeserialize: (bytes: Buffer): DecodedCheckRequest => this.#codec.decodeRequest(bytes),
        responseSerialize: identity,
        responseDeserialize: identity,
        originalName: 'check',
      },
    };
    server.addService(definition, {
      Check: (call: grpc.ServerUnaryCall<DecodedCheckRequest, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
        void this.#check(call).then((bytes) => callback(null, bytes));
      },
    });
    const target = this.#options.host.includes(':') ? `[${this.#options.host}]:${this.#options.port}` : `${this.#options.host}:${this.#options.port}`;
    this.#port = await new Promise<number>((resolve, reject) => {
      server.bindAsync(target, grpc.ServerCredentials.createInsecure(), (error, port) => {
        if (error) {
          reject(new PavilionError(ErrorCodes.EXTAUTHZ_LISTEN_FAILED, `ext_authz gRPC server cannot listen on ${target}: ${error.message}`, { cause: error }));
        } else {
          resolve(port);
        }
      });
    });
    this.#server = server;
  }

  async #check(call: grpc.ServerUnaryCall<DecodedCheckRequest, Buffer>): Promise<Buffer> {
    const decoded = call.request;
    const deadline = call.getDeadline();
    const deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline;
    const budget = Number.isFinite(deadlineMs) ? Math.max(0, deadlineMs - Date.now() - 2) : undefined;
    const result = await this.#service.check(decoded.ok ? decoded.request : decoded.error, {
      transport: 'grpc',
      requestedBy: call.getPeer(),
      ...(budget === undefined ? {} : { callerBudgetMs: budget }),
    });
    try {
      return this.#codec.encodeResponse(result.response);
    } catch (error) {
      // a decision whose values protobuf cannot carry: still answer well-formed
      return this.#codec.encodeResponse(failureCheckResponse({
        decisionId: result.decisionId,
        httpStatus: this.#service.settingsFor(result.tenant ?? '').failureStatus,
        code: ErrorCodes.EXTAUTHZ_DECISION_INVALID,
        message: `the response cannot be encoded: ${describeThrown(error)}`,
      }));
    }
  }

  async stop(deadlineMs: number): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    this.#port = undefined;
    if (server === undefined) return;
    const drained = new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), deadlineMs);
    });
    const outcome = await Promise.race([drained, timeout]);
    clearTimeout(timer);
    if (outcome === 'timeout') server.forceShutdown();
  }
}
