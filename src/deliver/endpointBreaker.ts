import type { FailedAttempt } from './types.js';

/** Longest pause between probes of an endpoint that is down (refused, timed out, 502/503/504/429). */
export const MAX_PROBE_INTERVAL_MS = 10_000;
/** Consecutive endpoint-level failures (refused, timed out, 502/503/504/429) that open the breaker. */
export const BREAKER_THRESHOLD = 3;
/** A claim fetches this many times the webhook's concurrency, to amortise the round trip. */
const CLAIM_BATCH_FACTOR = 4;
/** Failures that say the endpoint as a whole is unavailable, not that one payload is unwelcome. */
const ENDPOINT_DOWN_REASONS = new Set(['connection_refused', 'connection_error', 'timeout', 'blocked_address']);
const ENDPOINT_DOWN_STATUSES = new Set([429, 502, 503, 504]);

/**
 * Circuit breaker of one endpoint. Closed: the store poller sends up to `concurrency` deliveries at
 * once. Open (after BREAKER_THRESHOLD endpoint-level failures in a row): the store is probed with one
 * delivery at a time, none in flight, no sooner than `probeAt`, instead of every due record being
 * retried at once. Any success closes it. One slow or refused request is not an outage.
 * Pure: the caller passes the clock.
 */
export class EndpointBreaker {
  private open = false;
  private failures = 0;
  private probeAt = 0;

  get isOpen(): boolean {
    return this.open;
  }

  succeeded(): void {
    this.open = false;
    this.failures = 0;
  }

  /** `probeDelayMs` is asked only when the breaker opens (again): the pause before the next probe. */
  failed(outcome: FailedAttempt, now: number, probeDelayMs: () => number | null): void {
    const endpointDown = ENDPOINT_DOWN_REASONS.has(outcome.reason) || ENDPOINT_DOWN_STATUSES.has(outcome.statusCode ?? 0);
    if (!endpointDown || ++this.failures < BREAKER_THRESHOLD) return;
    this.open = true;
    this.probeAt = now + Math.min(probeDelayMs() ?? MAX_PROBE_INTERVAL_MS, MAX_PROBE_INTERVAL_MS);
  }

  /** Whether the store may be polled now, with `inFlight` attempts under way. */
  mayPoll(now: number, inFlight: number): boolean {
    return !this.open || (now >= this.probeAt && inFlight === 0);
  }

  /** Attempts from the store that may be in flight at once. */
  sendLimit(concurrency: number): number {
    return this.open ? 1 : concurrency;
  }

  /** Rows one claim fetches. */
  claimBatch(concurrency: number): number {
    return this.open ? 1 : concurrency * CLAIM_BATCH_FACTOR;
  }
}
