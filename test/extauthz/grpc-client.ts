/**
 * gRPC clients for the ext_authz tests and benchmark, built the way an Envoy-side user of
 * the protos would build them: `@grpc/proto-loader` over `sidecar/proto` (no Pavilion
 * code), and a raw client with a passthrough serializer for bytes no protobuf encoder would
 * produce.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { join } from 'node:path';
import { REPO_ROOT } from '../../sidecar/src/lib/tools.ts';

export const PROTO_DIR = join(REPO_ROOT, 'sidecar', 'proto');
export const CHECK_PATH = '/envoy.service.auth.v3.Authorization/Check';

/** proto-loader object form: camelCase names, longs and enums as numbers, bytes as Buffers. */
export type Message = Record<string, unknown>;

export interface CheckClient {
  check(request: Message, options?: { readonly deadlineMs?: number }): Promise<Message>;
  close(): void;
}

type Unary = (request: Message, metadata: grpc.Metadata, options: grpc.CallOptions, callback: (error: grpc.ServiceError | null, response?: Message) => void) => void;

export function loadCheckDefinition(): protoLoader.PackageDefinition {
  return protoLoader.loadSync('envoy/service/auth/v3/external_auth.proto', {
    includeDirs: [PROTO_DIR],
    keepCase: false,
    longs: Number,
    enums: Number,
    bytes: Buffer,
    defaults: false,
    oneofs: true,
  });
}

export function createCheckClient(address: string): CheckClient {
  const loaded = grpc.loadPackageDefinition(loadCheckDefinition()) as unknown as {
    envoy: { service: { auth: { v3: { Authorization: grpc.ServiceClientConstructor } } } };
  };
  const client = new loaded.envoy.service.auth.v3.Authorization(address, grpc.credentials.createInsecure());
  const check = (client as unknown as { Check: Unary }).Check.bind(client);
  return {
    check(request, options = {}) {
      return new Promise((resolve, reject) => {
        const callOptions: grpc.CallOptions = options.deadlineMs === undefined ? {} : { deadline: Date.now() + options.deadlineMs };
        check(request, new grpc.Metadata(), callOptions, (error, response) => (error ? reject(error) : resolve(response ?? {})));
      });
    },
    close: () => client.close(),
  };
}

export interface RawClient {
  /** Send raw bytes as the request message; the response bytes come back undecoded. */
  call(bytes: Buffer, options?: { readonly deadlineMs?: number }): Promise<Buffer>;
  close(): void;
}

export function createRawClient(address: string): RawClient {
  const Client = grpc.makeGenericClientConstructor({
    Check: {
      path: CHECK_PATH,
      requestStream: false,
      responseStream: false,
      requestSerialize: (bytes: Buffer) => bytes,
      requestDeserialize: (bytes: Buffer) => bytes,
      responseSerialize: (bytes: Buffer) => bytes,
      responseDeserialize: (bytes: Buffer) => bytes,
    },
  }, 'Authorization');
  const client = new Client(address, grpc.credentials.createInsecure());
  const check = (client as unknown as { Check: (b: Buffer, m: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r?: Buffer) => void) => void }).Check.bind(client);
  return {
    call(bytes, options = {}) {
      return new Promise((resolve, reject) => {
        const callOptions: grpc.CallOptions = options.deadlineMs === undefined ? {} : { deadline: Date.now() + options.deadlineMs };
        check(bytes, new grpc.Metadata(), callOptions, (error, response) => (error ? reject(error) : resolve(response ?? Buffer.alloc(0))));
      });
    },
    close: () => client.close(),
  };
}

/** A `google.protobuf.Struct` as proto-loader decodes it, back to plain JSON. */
export function structToJson(struct: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const fields = ((struct ?? {}) as { fields?: Record<string, unknown> }).fields ?? {};
  for (const [key, value] of Object.entries(fields)) out[key] = valueToJson(value);
  return out;
}

function valueToJson(value: unknown): unknown {
  const v = (value ?? {}) as Record<string, unknown>;
  switch (v['kind']) {
    case 'numberValue':
      return v['numberValue'];
    case 'stringValue':
      return v['stringValue'];
    case 'boolValue':
      return v['boolValue'];
    case 'structValue':
      return structToJson(v['structValue']);
    case 'listValue':
      return (((v['listValue'] ?? {}) as { values?: unknown[] }).values ?? []).map(valueToJson);
    default:
      return null;
  }
}
