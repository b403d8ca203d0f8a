/** Jitter around each scheduled delay: +-20%, so retries of many deliveries do not arrive in lockstep. */
const JITTER_RATIO = 0.2;
/** A receiver's Retry-After is honoured up to this bound; beyond it the schedule decides. */
export const MAX_RETRY_AFTER_MS = 6 * 60 * 60 * 1_000;

/**
 * Delay before the next attempt, or null when the retry budget is spent (the delivery is dead).
 * `failedAttempts` counts the attempts made so far, all failed (1 after the first failure).
 * With the default schedule (s): 5, 300, 1800, 7200, 18000, 36000, 36000, each +-20%.
 */
export function nextRetryDelayMs(failedAttempts: number, scheduleS: readonly number[], random: () => number, retryAfterMs?: number): number | null {
  if (failedAttempts < 1 || failedAttempts > scheduleS.length) return null;
  const baseMs = scheduleS[failedAttempts - 1] * 1_000;
  const jittered = Math.round(baseMs * (1 - JITTER_RATIO + 2 * JITTER_RATIO * random()));
  if (retryAfterMs === undefined) return jittered;
  return Math.max(jittered, Math.min(retryAfterMs, MAX_RETRY_AFTER_MS));
}
