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
import type { DecisionEventV1, EvaluatedLogRules, LogRuleOutcome } from '../decision-event.ts';
import { applyMaskRules, parseMaskRules } from './mask-rules.ts';
import { PseudonymMemo, pseudonymiseEvent, type PseudonymField } from './pseudonymise.ts';

/** Tenants whose recent pseudonyms are remembered at once (more: the memory starts over). */
const MAX_MEMO_TENANTS = 1024;

export type { LogRuleOutcome } from '../decision-event.ts';

/** A tenant's `system.log.drop` and `.mask` for one event; a rule the policy does not have is absent. */
export interface LogRules {
  readonly drop?: LogRuleOutcome;
  readonly mask?: LogRuleOutcome;
}

export interface LogPolicy {
  /**
   * The values of the tenant's `system.log.drop` and `system.log.mask` with `input` (the
   * unmasked event) as input, evaluated together (one evaluation round for both: mask is
   * pure, so evaluating it for an event that is then dropped costs only time). A rule the
   * tenant's policy does not have is absent (no dropping or masking then). A rule that
   * could not be evaluated is `ok: false`; a rejection is taken as drop's failure. With
   * `evaluated` (the rules as already evaluated on this event, by path), those are the answer.
   */
  evaluate(tenant: string, input: unknown, evaluated?: EvaluatedLogRules): Promise<LogRules>;
  /** The paths of the tenant's rules, for evaluating them beside its decisions (see EvaluatedLogRules). */
  paths?(tenant: string): readonly string[];
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

  /** `evaluated`: the tenant's rules as already evaluated on this event, if they were (see LogPolicy). */
  async process(event: DecisionEventV1, evaluated?: EvaluatedLogRules): Promise<MaskOutcome> {
    const { policy, pseudonyms } = this.#options;
    let current = event;
    if (policy !== undefined && event.tenant !== '') {
      const failed = (rule: 'drop' | 'mask', error: unknown): MaskOutcome => {
        const reason = `system.log.${rule}: ${describeThrown(error)}`;
        return { kind: 'log', event: erasedForFailure(event, reason), failure: reason };
      };
      let rules: LogRules;
      try {
        rules = await policy.evaluate(event.tenant, event, evaluated);
      } catch (error) {
        return failed('drop', error); // drop comes first: its failure is the one reported
      }
      const { drop, mask } = rules;
      if (drop !== undefined) {
        if (!drop.ok) return failed('drop', drop.error);
        if (drop.result === true) return { kind: 'drop' };
      }
      if (mask !== undefined) {
        if (!mask.ok) return failed('mask', mask.error);
        try {
          if (mask.result !== undefined) current = applyMaskRules(event, parseMaskRules(mask.result));
        } catch (error) {
          return failed('mask', error);
        }
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
