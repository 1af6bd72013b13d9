/**
 * Envoy ext_authz, a drop-in for opa-envoy-plugin: the gRPC Authorization service and
 * Envoy's HTTP service mode, evaluating each tenant's policy on the same input document and
 * with the same response contract as the plugin (see README, "Envoy / Istio ext_authz", for
 * the deliberate differences).
 *
 * Pure parts: `checkRequestToInput` (CheckRequest -> input document), `decisionToCheckResponse`
 * (decision -> CheckResponse), `failureCheckResponse`, `resolveTenant`. Adapters: the
 * `ExtAuthz` component (gRPC server + HTTP handler) and the wire codec.
 */
export {
  checkRequestToInput,
  parseBody,
  parsePathAndQuery,
  INPUT_VERSION,
  type CheckRequestJson,
  type HttpRequestJson,
  type InputDocument,
  type InputOptions,
  type JsonObject,
  type PeerJson,
} from './input.ts';
export {
  decisionToCheckResponse,
  failureCheckResponse,
  isAllowed,
  ENVOY_HTTP_STATUS_CODES,
  HeaderAppendAction,
  RpcCode,
  type CheckResponse,
  type DecisionOptions,
  type FailureOptions,
  type HeaderValueOption,
  type MappedDecision,
  type QueryParameter,
} from './decision.ts';
export { resolveTenant } from './tenant-resolver.ts';
export { CheckService, correctionDecisionId, type CheckContext, type CheckResult, type ExtAuthzDecisionEvent, type Transport } from './check-service.ts';
export { CheckCodec, CHECK_METHOD_PATH, CHECK_PROTO, PROTO_ROOT, jsonToStruct, type DecodedCheckRequest } from './proto-codec.ts';
export { ExtAuthz, type ExtAuthzDeps, type UnservablePath } from './ext-authz.ts';
export type { MountedHttpHandler } from './http-handler.ts';
export { encodeGrpcMessage, parseGrpcTimeoutMs } from './grpc-server.ts';
