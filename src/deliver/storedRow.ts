import { formatLsn } from '../replication/lsn.js';
import type { NewStoredDelivery } from '../store/types.js';
import type { FailedAttempt, MemoryDelivery } from './types.js';

/**
 * The store row of a memory delivery. `outcome` is its failed attempt, if it had one; a `dead` row
 * (its first attempt spent the retry budget) carries no lease.
 */
export function storedRow(
  webhookId: string,
  delivery: MemoryDelivery,
  attempt: { attempts: number; runAt: Date; outcome: FailedAttempt | null; lockedUntil: Date | null; dead: boolean },
): NewStoredDelivery {
  const { event } = delivery;
  const { attempts, runAt, outcome, lockedUntil, dead } = attempt;
  return {
    webhookId,
    eventId: event.id,
    eventName: event.name,
    recordKey: event.recordKey,
    commitLsn: formatLsn(event.commitLsn),
    changeIndex: event.changeIndex,
    body: event.body,
    attempts,
    runAt,
    lastError: outcome ? describeOutcome(outcome) : null,
    lastStatusCode: outcome?.statusCode ?? null,
    lockedUntil: dead ? null : lockedUntil,
    status: dead ? 'dead' : 'pending',
    targetUrl: delivery.targetUrl,
  };
}

/** A failed attempt as `last_error` keeps it. */
export function describeOutcome(outcome: FailedAttempt): string {
  return outcome.statusCode ? `${outcome.reason} (HTTP ${outcome.statusCode}): ${outcome.message}` : `${outcome.reason}: ${outcome.message}`;
}
