/**
 * Wire codec for `envoy.service.auth.v3.Authorization/Check`, on protobufjs reflection over
 * the `.proto` files in `sidecar/proto/` (Envoy's field numbers; see their headers).
 *
 * Decoding renders a CheckRequest the way opa-envoy-plugin's `protomap` does (Go protobuf
 * reflection, envoyauth/protomap.go): keys are the fields' JSON names; only populated fields
 * appear (proto3 scalars that are not zero, set messages, non-empty lists and maps, the set
 * member of a oneof); `google.protobuf.Struct` becomes a plain object; other messages
 * (Timestamp, Any, ...) are walked field by field; int64 and uint32 become numbers, bytes
 * base64 (Go's JSON encoding of []byte), enums their numbers. Decoding never throws: a
 * malformed message is reported as `ERR_EXTAUTHZ_REQUEST_MALFORMED`, so the server can still
 * answer with a well-formed CheckResponse.
 *
 * As in grpc-go (google.golang.org/protobuf), a proto3 `string` field (map keys and values,
 * Struct keys and string values included) whose bytes are not UTF-8, or whose length runs
 * past the message, makes the whole message malformed ("string field contains invalid
 * UTF-8"), where protobufjs alone would turn bad bytes into U+FFFD and cut a short string.
 * `bytes` fields (raw_body) stay arbitrary. Fields Envoy declares outside the subset in
 * `sidecar/proto` (e.g. `Address.envoy_internal_address`) are skipped unread, so bad bytes
 * there go unnoticed, where grpc-go would refuse them too.
 *
 * Encoding takes the `CheckResponse` built by `decision.ts`.
 */
import { setOwn } from '../lib/own-property.ts';
import { isUtf8 } from 'node:buffer';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { ErrorCodes, PavilionError, describeThrown } from '../lib/errors.ts';
import type { CheckResponse, HeaderValueOption } from './decision.ts';
import type { CheckRequestJson, JsonObject } from './input.ts';

export const CHECK_PROTO = 'envoy/service/auth/v3/external_auth.proto';

/**
 * `sidecar/proto`: next to `sidecar/src` when running from source, and at the same place
 * under the application root when running the compiled `dist/sidecar/src` (the image copies
 * `sidecar/proto` beside `dist/`).
 */
export const PROTO_ROOT = ((): string => {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [resolve(here, '..', '..', 'proto'), resolve(here, '..', '..', '..', '..', 'sidecar', 'proto')];
  return candidates.find((dir) => existsSync(resolve(dir, CHECK_PROTO))) ?? (candidates[0] as string);
})();
export const CHECK_METHOD_PATH = '/envoy.service.auth.v3.Authorization/Check';

export type DecodedCheckRequest =
  | { readonly ok: true; readonly request: CheckRequestJson }
  | { readonly ok: false; readonly error: PavilionError };

interface LongLike {
  toNumber(): number;
  isZero(): boolean;
}

/** grpc-go's (protobuf-go's) text for the refusal. */
const INVALID_UTF8 = 'string field contains invalid UTF-8';

interface Utf8Slicing {
  utf8Slice(start: number, end: number): string;
}

/**
 * protobufjs' Node reader with proto3's string rule. The check stays off the common path:
 * Node's UTF-8 decoding turns every invalid sequence into U+FFFD, so only a string that
 * decodes with one (on a one-byte string the probe costs nothing) has its bytes checked
 * with `isUtf8`; a U+FFFD sent as such (EF BF BD) is valid and kept.
 */
class Utf8CheckingReader extends protobuf.BufferReader {
  override string(): string {
    const length = this.uint32();
    const start = this.pos;
    const end = start + length;
    if (end > this.len) throw new RangeError(`index out of range: ${start} + ${length} > ${this.len}`);
    this.pos = end;
    const text = (this.buf as unknown as Utf8Slicing).utf8Slice(start, end);
    if (text.includes('\uFFFD') && !isUtf8(this.buf.subarray(start, end))) throw new Error(INVALID_UTF8);
    return text;
  }
}

function isLong(value: unknown): value is LongLike {
  return typeof value === 'object' && value !== null && typeof (value as LongLike).toNumber === 'function';
}

/** protoc's JSON name of a field (`type_url` -> `typeUrl`), as Go's `FieldDescriptor.JSONName`. */
export function jsonName(name: string): string {
  let out = '';
  let upper = false;
  for (const c of name) {
    if (c === '_') {
      upper = true;
      continue;
    }
    out += upper && c >= 'a' && c <= 'z' ? c.toUpperCase() : c;
    upper = false;
  }
  return out;
}

/** google.protobuf.Struct renders as a plain object (structToJson), not field by field. */
const STRUCT_PLAN: readonly FieldPlan[] = [];

/** What rendering needs to know about one field, worked out once per message type. */
interface FieldPlan {
  readonly name: string;
  readonly jsonName: string;
  readonly nested: protobuf.Type | undefined;
  readonly enumType: protobuf.Enum | undefined;
  readonly map: boolean;
  readonly repeated: boolean;
  readonly oneofMember: boolean;
}

function structToJson(message: Record<string, unknown>): JsonObject {
  const out: JsonObject = {};
  const fields = (message['fields'] ?? {}) as Record<string, Record<string, unknown>>;
  for (const [key, value] of Object.entries(fields)) setOwn(out, key, valueToJson(value));
  return out;
}

/** `structpb.Value.AsInterface`. */
function valueToJson(value: Record<string, unknown> | null | undefined): unknown {
  if (value === null || value === undefined) return null;
  switch (value['kind']) {
    case 'numberValue':
      return value['numberValue'];
    case 'stringValue':
      return value['stringValue'];
    case 'boolValue':
      return value['boolValue'];
    case 'structValue':
      return structToJson(value['structValue'] as Record<string, unknown>);
    case 'listValue': {
      const list = value['listValue'] as { values?: Array<Record<string, unknown>> } | null;
      return (list?.values ?? []).map((v) => valueToJson(v));
    }
    default:
      return null;
  }
}

export class CheckCodec {
  readonly #request: protobuf.Type;
  readonly #response: protobuf.Type;
  readonly #plans = new Map<protobuf.Type, readonly FieldPlan[]>();

  constructor(protoRoot: string = PROTO_ROOT) {
    const root = new protobuf.Root();
    // google/protobuf/* come from protobufjs' bundled well-known types.
    root.resolvePath = (_origin, target) => (target.startsWith('google/protobuf/') ? target : resolve(protoRoot, target));
    root.loadSync(CHECK_PROTO, { keepCase: false });
    root.resolveAll();
    this.#request = root.lookupType('envoy.service.auth.v3.CheckRequest');
    this.#response = root.lookupType('envoy.service.auth.v3.CheckResponse');
  }

  decodeRequest(bytes: Uint8Array): DecodedCheckRequest {
    try {
      const buffer = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      const message = this.#request.decode(new Utf8CheckingReader(buffer)) as unknown as Record<string, unknown>;
      return { ok: true, request: this.#toJson(message, this.#request) as CheckRequestJson };
    } catch (error) {
      return {
        ok: false,
        error: new PavilionError(ErrorCodes.EXTAUTHZ_REQUEST_MALFORMED, `CheckRequest is not a valid protobuf message: ${describeThrown(error)}`, { cause: error }),
      };
    }
  }

  /** For clients and tests: encode a CheckRequest given in protobufjs object form (camelCase). */
  encodeRequest(object: Record<string, unknown>): Buffer {
    return Buffer.from(this.#request.encode(this.#request.fromObject(object)).finish());
  }

  encodeResponse(response: CheckResponse): Buffer {
    const headers = (list: readonly HeaderValueOption[] | undefined): unknown[] | undefined =>
      list?.map((h) => ({
        header: { key: h.header.key, value: h.header.value },
        ...(h.appendAction === undefined ? {} : { appendAction: h.appendAction }),
      }));
    const object: Record<string, unknown> = {
      status: { code: response.status.code, ...(response.status.message === undefined ? {} : { message: response.status.message }) },
    };
    if (response.deniedResponse !== undefined) {
      const d = response.deniedResponse;
      object['deniedResponse'] = { status: { code: d.status.code }, headers: headers(d.headers), body: d.body };
    }
    if (response.okResponse !== undefined) {
      const o = response.okResponse;
      object['okResponse'] = {
        headers: headers(o.headers),
        headersToRemove: o.headersToRemove,
        responseHeadersToAdd: headers(o.responseHeadersToAdd),
        queryParametersToSet: o.queryParametersToSet,
        queryParametersToRemove: o.queryParametersToRemove,
      };
    }
    if (response.dynamicMetadata !== undefined) object['dynamicMetadata'] = jsonToStruct(response.dynamicMetadata);
    return Buffer.from(this.#response.encode(this.#response.fromObject(object)).finish());
  }

  /** For clients and tests: a CheckResponse back in protobufjs object form (camelCase, Structs as JSON). */
  decodeResponse(bytes: Uint8Array): Record<string, unknown> {
    const message = this.#response.decode(bytes) as unknown as Record<string, unknown>;
    return this.#toJson(message, this.#response);
  }

  #plan(type: protobuf.Type): readonly FieldPlan[] {
    let plan = this.#plans.get(type);
    if (plan === undefined) {
      // protobufjs computes `fullName` by walking the parents on every read: once per type here
      plan = type.fullName === '.google.protobuf.Struct' ? STRUCT_PLAN : type.fieldsArray.map((field): FieldPlan => ({
        name: field.name,
        jsonName: jsonName(field.name),
        nested: field.resolvedType instanceof protobuf.Type ? field.resolvedType : undefined,
        enumType: field.resolvedType instanceof protobuf.Enum ? field.resolvedType : undefined,
        map: field.map,
        repeated: field.repeated,
        oneofMember: field.partOf !== null && field.partOf !== undefined,
      }));
      this.#plans.set(type, plan);
    }
    return plan;
  }

  #toJson(message: Record<string, unknown>, type: protobuf.Type): JsonObject {
    const plan = this.#plan(type);
    if (plan === STRUCT_PLAN) return structToJson(message);
    const out: JsonObject = {};
    for (const field of plan) {
      // unset fields are prototype defaults; decoded ones (and maps/lists) are own properties
      if (!Object.hasOwn(message, field.name)) continue;
      const value = message[field.name];
      if (value === undefined || value === null) continue;
      const nested = field.nested;
      if (field.map) {
        const entries = Object.entries(value as Record<string, unknown>);
        if (entries.length === 0) continue;
        const map: JsonObject = {};
        for (const [key, v] of entries) {
          // an entry sent without its value is the value's default, an empty message (as Go decodes it)
          setOwn(map, key, nested === undefined ? scalar(v, field) : this.#toJson((v ?? {}) as Record<string, unknown>, nested));
        }
        out[field.jsonName] = map;
      } else if (field.repeated) {
        const list = value as unknown[];
        if (list.length === 0) continue;
        out[field.jsonName] = list.map((v) => (nested === undefined ? scalar(v, field) : this.#toJson(v as Record<string, unknown>, nested)));
      } else if (nested !== undefined) {
        out[field.jsonName] = this.#toJson(value as Record<string, unknown>, nested);
      } else if (field.oneofMember) {
        // a oneof member has explicit presence: set means present, even when zero
        out[field.jsonName] = scalar(value, field);
      } else if (!isZero(value)) {
        out[field.jsonName] = scalar(value, field);
      }
    }
    return out;
  }
}

function isZero(value: unknown): boolean {
  if (typeof value === 'string') return value === '';
  if (typeof value === 'number') return value === 0;
  if (typeof value === 'boolean') return !value;
  if (value instanceof Uint8Array || Array.isArray(value)) return value.length === 0;
  if (isLong(value)) return value.isZero();
  return false;
}

function scalar(value: unknown, field: FieldPlan): unknown {
  if (typeof value === 'string' || typeof value === 'boolean') return value;
  if (typeof value === 'number') return value;
  if (isLong(value)) return value.toNumber();
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64');
  if (field.enumType !== undefined) return field.enumType.values[String(value)];
  return value;
}

/** A JSON object as a `google.protobuf.Struct` in protobufjs object form. */
export function jsonToStruct(object: JsonObject): { fields: Record<string, unknown> } {
  const fields: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(object)) fields[key] = jsonToValue(value);
  return { fields };
}

function jsonToValue(value: unknown): Record<string, unknown> {
  if (value === null || value === undefined) return { nullValue: 0 };
  if (typeof value === 'number') return { numberValue: value };
  if (typeof value === 'string') return { stringValue: value };
  if (typeof value === 'boolean') return { boolValue: value };
  if (Array.isArray(value)) return { listValue: { values: value.map((v) => jsonToValue(v)) } };
  return { structValue: jsonToStruct(value as JsonObject) };
}
