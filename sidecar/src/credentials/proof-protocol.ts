/** Messages between the verifier and its proof workers (structured-clone safe). */
import type { ErrorCode } from '../lib/errors.ts';
import type { JsonObject } from './json.ts';
import type { TenantProofMaterial } from './proof-executor.ts';

export type ProofJob =
  | { readonly op: 'tenant'; readonly material: TenantProofMaterial }
  /** Load the proof stack now and answer once it is loaded (a new worker, before its first job). */
  | { readonly op: 'warm' }
  | { readonly op: 'credential'; readonly tenantId: string; readonly credential: JsonObject; readonly nowMs: number; readonly clockSkewMs: number }
  | { readonly op: 'presentation'; readonly tenantId: string; readonly presentation: JsonObject; readonly nowMs: number; readonly clockSkewMs: number; readonly challenge: string; readonly domain: string }
  | { readonly op: 'membership'; readonly value: Uint8Array; readonly publicKey: Uint8Array; readonly element: string; readonly witness: Uint8Array };

export interface ProofRequest {
  readonly id: number;
  readonly job: ProofJob;
}

export type ProofReply =
  | { readonly id: number; readonly ok: true; readonly value: unknown }
  | { readonly id: number; readonly ok: false; readonly code: ErrorCode; readonly message: string };
