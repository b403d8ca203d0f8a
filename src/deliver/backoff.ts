/**
 * The one retry policy of the deliver stage: how long to wait before the next try (`calculateDelay`),
 * and which database errors are worth a next try (`TRANSIENT_SQLSTATES`). Delivery retries and store
 * statement retries both use it, so a schedule is a table of numbers, never a hand-written loop.
 */

/** Spread around a scheduled delay: `ratio` 0.2 gives +-20%; `random` returns a number in [0, 1). */
export interface Jitter {
  ratio: number;
  random: () => number;
}

export const NO_JITTER: Jitter = { ratio: 0, random: () => 0.5 };

/**
 * Delay (ms) before try number `attempt + 1`, where `attempt` counts the failed tries so far (1 after
 * the first failure): `scheduleMs[attempt - 1]`, jittered; null once the schedule is spent.
 */
export function calculateDelay(attempt: number, scheduleMs: readonly number[], jitter: Jitter): number | null {
  const baseMs = attempt >= 1 ? scheduleMs[attempt - 1] : undefined;
  if (baseMs === undefined) return null;
  return Math.round(baseMs * (1 - jitter.ratio + 2 * jitter.ratio * jitter.random()));
}

/** Jitter around each scheduled delivery retry: +-20%, so retries of many deliveries do not arrive in lockstep. */
const DELIVERY_JITTER_RATIO = 0.2;
/** A receiver's Retry-After is honoured up to this bound; beyond it the schedule decides. */
export const MAX_RETRY_AFTER_MS = 6 * 60 * 60 * 1_000;

/**
 * Delay before the next delivery attempt, or null when the retry budget is spent (the delivery is dead).
 * `failedAttempts` counts the attempts made so far, all failed (1 after the first failure).
 * With the default schedule (s): 5, 300, 1800, 7200, 18000, 36000, 36000, each +-20%.
 */
export function nextRetryDelayMs(failedAttempts: number, scheduleS: readonly number[], random: () => number, retryAfterMs?: number): number | null {
  const jittered = calculateDelay(
    failedAttempts,
    scheduleS.map((s) => s * 1_000),
    { ratio: DELIVERY_JITTER_RATIO, random },
  );
  if (jittered === null || retryAfterMs === undefined) return jittered;
  return Math.max(jittered, Math.min(retryAfterMs, MAX_RETRY_AFTER_MS));
}

/**
 * SQLSTATEs after which the same statement may succeed if sent again: lost connections (class 08),
 * a restarting server, contention. Anything else is a bug or a broken schema and is thrown.
 */
export const TRANSIENT_SQLSTATES: ReadonlySet<string> = new Set([
  '40001', // serialization_failure
  '40P01', // deadlock_detected
  '53300', // too_many_connections
  '55P03', // lock_not_available
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now
]);
/** Class 08: connection exceptions (08000, 08003, 08006, ...), all transient. */
export const TRANSIENT_SQLSTATE_CLASSES: readonly string[] = ['08'];
/** The server is going down: it also waits for our replication stream to confirm, which waits for us. */
export const SHUTTING_DOWN_SQLSTATES: ReadonlySet<string> = new Set(['57P01', '57P02', '57P03']);

/** Store statement retries (ms): 100, 250, 500, 1000, 2000, then 5000 for as long as it takes. */
export const DATABASE_RETRY_SCHEDULE_MS: readonly number[] = [100, 250, 500, 1_000, 2_000, 5_000];

export function isTransientSqlState(code: string): boolean {
  return TRANSIENT_SQLSTATES.has(code) || TRANSIENT_SQLSTATE_CLASSES.some((prefix) => code.startsWith(prefix));
}
