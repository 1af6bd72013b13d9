/**
 * The one lifecycle every long-lived component follows (after OPA's plugin manager):
 * construct with validated config -> start() -> status() while running -> stop(deadline).
 */
export type ComponentState = 'NOT_READY' | 'OK' | 'WARN' | 'ERROR';

export interface ComponentStatus {
  readonly state: ComponentState;
  readonly message?: string;
  readonly details?: Readonly<Record<string, unknown>>;
}

/**
 * A status as a caller without a tenant's token may see it (API tokens): its state only, as
 * a component's message or details may name any tenant.
 */
export function stateOnly(status: ComponentStatus): ComponentStatus {
  return { state: status.state };
}

export interface Component {
  readonly name: string;
  start(): Promise<void>;
  /** Flush and release everything within `deadlineMs`. Idempotent. */
  stop(deadlineMs: number): Promise<void>;
  status(): ComponentStatus;
}

/** Resolve after `promise`, or after `ms` at the latest (never rejects). */
export async function withDeadline(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
    timer.unref();
  });
  try {
    return await Promise.race([promise.then(() => true, () => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
