/**
 * Privacy before anything is written: for each decision event, the tenant's
 * `system.log.drop` and `system.log.mask` rules (evaluated as OPA evaluates
 * `data.system.log.drop` / `data.system.log.mask`: with the unmasked event as input, drop
 * first), then keyed pseudonymisation of the configured fields.
 *
 * The policy evaluation is an adapter (`LogPolicy`, the engine in production). Where OPA
 * would not log an event whose masking failed, Pavilion fails closed without losing it: the
 * event is logged with input and result erased and the failure in `error`
 * (ERR_AUDIT_MASK_FAILED). A drop that cannot be evaluated is treated the same way (the
 * event is kept, erased). Dropped events are counted, never silent.
 */
import { describeThrown } from '../../lib/errors.ts';
import type { DecisionEventV1 } from '../decision-event.ts';
import { applyMaskRules, parseMaskRules } from './mask-rules.ts';
import { PseudonymMemo, pseudonymiseEvent, type PseudonymField } from './pseudonymise.ts';

/** Tenants whose recent pseudonyms are remembered at once (more: the memory starts over). */
const MAX_MEMO_TENANTS = 1024;

export interface LogPolicy {
  /**
   * The value of the tenant's `system.log.<rule>` with `input` as input; `present: false`
   * when the tenant's policy has no such rule (no masking or dropping then).
   */
  evaluate(tenant: string, rule: 'mask' | 'drop', input: unknown): Promise<{ readonly present: boolean; readonly result?: unknown }>;
}

export interface Pseudonyms {
  fields(tenant: string): readonly PseudonymField[];
  key(tenant: string): Promise<Uint8Array>;
}

export type MaskOutcome =
  | { readonly kind: 'drop' }
  | { readonly kind: 'log'; readonly event: DecisionEventV1; readonly failure?: string };

export interface DecisionMaskerOptions {
  readonly policy?: LogPolicy;
  readonly pseudonyms?: Pseudonyms;
}

export const MASK_FAILED_CODE = 'ERR_AUDIT_MASK_FAILED';

function erasedForFailure(event: DecisionEventV1, reason: string): DecisionEventV1 {
  const { input, result, erased, ...rest } = event;
  const cut = [...(erased ?? []), ...(input === undefined ? [] : ['/input']), ...(result === undefined ? [] : ['/result'])];
  return {
    ...rest,
    ...(cut.length === 0 ? {} : { erased: cut }),
    error: {
      code: MASK_FAILED_CODE,
      message: `input and result erased because masking failed: ${reason}`,
      ...(event.error === undefined ? {} : { cause: event.error }),
    } as NonNullable<DecisionEventV1['error']>,
  };
}

export class DecisionMasker {
  readonly #options: DecisionMaskerOptions;
  readonly #memos = new Map<string, PseudonymMemo>();

  constructor(options: DecisionMaskerOptions) {
    this.#options = options;
  }

  async process(event: DecisionEventV1): Promise<MaskOutcome> {
    const { policy, pseudonyms } = this.#options;
    let current = event;
    if (policy !== undefined && event.tenant !== '') {
      try {
        const drop = await policy.evaluate(event.tenant, 'drop', event);
        if (drop.present && drop.result === true) return { kind: 'drop' };
      } catch (error) {
        const reason = `system.log.drop: ${describeThrown(error)}`;
        return { kind: 'log', event: erasedForFailure(event, reason), failure: reason };
      }
      try {
        const mask = await policy.evaluate(event.tenant, 'mask', event);
        if (mask.present && mask.result !== undefined) current = applyMaskRules(event, parseMaskRules(mask.result));
      } catch (error) {
        const reason = `system.log.mask: ${describeThrown(error)}`;
        return { kind: 'log', event: erasedForFailure(event, reason), failure: reason };
      }
    }
    if (pseudonyms !== undefined) {
      const fields = pseudonyms.fields(event.tenant);
      if (fields.length > 0) {
        try {
          const key = await pseudonyms.key(event.tenant);
          current = pseudonymiseEvent(current, fields, key, this.#memo(event.tenant, key));
        } catch (error) {
          const reason = `pseudonymisation: ${describeThrown(error)}`;
          return { kind: 'log', event: erasedForFailure(current, reason), failure: reason };
        }
      }
    }
    return { kind: 'log', event: current };
  }

  /** The tenant's pseudonym memory, started afresh when its key is another. */
  #memo(tenant: string, key: Uint8Array): PseudonymMemo {
    let memo = this.#memos.get(tenant);
    if (memo === undefined || !memo.hasKey(key)) {
      if (this.#memos.size >= MAX_MEMO_TENANTS) this.#memos.clear();
      memo = new PseudonymMemo(key);
      this.#memos.set(tenant, memo);
    }
    return memo;
  }
}
