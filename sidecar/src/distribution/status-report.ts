/**
 * The sidecar's status in OPA's Status API shape (docs: management-status): `labels`,
 * `bundles` by name (one bundle per tenant) with `active_revision`,
 * `last_successful_download`, `last_successful_activation`, `code`, `message`, `errors`,
 * and `plugins` with `state` NOT_READY | OK | WARN | ERROR. Pavilion adds, per bundle,
 * the fields OPA has no place for under `pavilion` (digest, signing key, deploy sequence,
 * origin, test vectors passed). Pure: it formats what it is given.
 */
import type { ComponentStatus } from '../lib/lifecycle.ts';
import type { TenantStatus } from '../tenants/index.ts';

export interface StatusReport {
  readonly labels: Readonly<Record<string, string>>;
  readonly bundles: Readonly<Record<string, Record<string, unknown>>>;
  readonly plugins: Readonly<Record<string, { state: string; message?: string }>>;
  readonly metrics?: Readonly<Record<string, unknown>>;
}

export function buildStatusReport(
  labels: Readonly<Record<string, string>>,
  tenants: readonly TenantStatus[],
  components: ReadonlyArray<{ readonly name: string; readonly status: ComponentStatus }>,
): StatusReport {
  const bundles: Record<string, Record<string, unknown>> = {};
  for (const t of tenants) {
    const error = t.lastError;
    bundles[t.id] = {
      name: t.id,
      ...(t.active === undefined ? {} : { active_revision: t.active.revision }),
      ...(t.lastSuccessfulDownload === undefined ? {} : { last_successful_download: t.lastSuccessfulDownload }),
      ...(t.lastSuccessfulActivation === undefined ? {} : { last_successful_activation: t.lastSuccessfulActivation }),
      ...(error === undefined ? {} : {
        code: error.code,
        message: error.message,
        errors: [{ code: error.code, message: error.message, at: error.at, ...(error.details === undefined ? {} : { details: error.details }) }],
      }),
      pavilion: {
        state: t.state,
        ...(t.active === undefined ? {} : { digest: t.active.bundleDigest }),
        ...(t.origin === undefined ? {} : { origin: t.origin.kind, ...(t.origin.sequence === undefined ? {} : { deploy: t.origin.sequence }) }),
        ...(t.signature === undefined ? {} : { signed: t.signature.signed, ...(t.signature.keyId === undefined ? {} : { key_id: t.signature.keyId }) }),
        decision_tests_passed: t.testsPassed,
        ...(t.persistError === undefined ? {} : { persist_error: t.persistError }),
        ...(t.shadow === undefined ? {} : { shadow: t.shadow }),
        ...(t.shadowError === undefined ? {} : { shadow_error: t.shadowError }),
      },
    };
  }
  const plugins: Record<string, { state: string; message?: string }> = {};
  for (const { name, status } of components) {
    plugins[name] = { state: status.state, ...(status.message === undefined ? {} : { message: status.message }) };
  }
  return { labels, bundles, plugins };
}
