/** Polling helpers for tests that wait on another process (a sidecar, nats-server). */
import assert from 'node:assert/strict';

/** Poll `check` every 20 ms until it holds; fail the test naming `what` after `timeoutMs`. */
export async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.fail(`timed out waiting for ${what}`);
}
