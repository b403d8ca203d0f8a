/**
 * The one polling loop of the tests: wait on a condition, never on the clock. A passing wait returns as
 * soon as its condition holds; a failing one says what it waited for.
 */

const POLL_MS = 20;

/** Polls `condition` until it returns true; rejects after timeoutMs with `what` (a string or a late-built description). */
export async function waitUntil(condition: () => Promise<boolean> | boolean, what: string | (() => string), timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'function' ? what() : what}`);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}
