import type { Logger } from '../log.js';
import type { NewStoredDelivery } from '../store/types.js';
import { nextRetryDelayMs } from './backoff.js';
import type { HeldRecords } from './heldRecords.js';
import type { LaneView } from './laneState.js';
import type { RecordQueue } from './recordQueue.js';
import type { StoreClaimer } from './storeClaimer.js';
import { storedRow } from './storedRow.js';
import type { StoreWriter } from './storeWriter.js';
import type { DeliveryObserver, FailedAttempt, LaneSettings, MemoryDelivery } from './types.js';

/** last_error of a delivery set aside because its webhook's targetUrl changed. */
export const TARGET_CHANGED_REASON = 'targetUrl changed; redeliver to send to the new URL';

/**
 * Hands one webhook's queued deliveries over to the store as rows: a failed attempt becomes the
 * pending head of its record, a delivery of a held record is written behind it, and one routed for
 * a previous targetUrl is set aside as dead. Each leaves the queue as it goes.
 */
export class StoreHandoff {
  constructor(
    private readonly lane: LaneView,
    private readonly queue: RecordQueue<MemoryDelivery>,
    private readonly writer: StoreWriter,
    private readonly claimer: Pick<StoreClaimer, 'setAsideOtherTargets'>,
    private readonly held: HeldRecords,
    private readonly settings: Pick<LaneSettings, 'retryScheduleS'>,
    private readonly observer: DeliveryObserver,
    private readonly log: Logger,
    private readonly random: () => number,
    private readonly onUnexpected: (error: unknown) => void,
  ) {}

  /** A failed attempt becomes the pending head of its record in the store; the record's later events wait behind it. */
  async holdBack(delivery: MemoryDelivery, outcome: FailedAttempt): Promise<void> {
    const runAt = this.nextRunAt(1, outcome);
    if (runAt !== null) this.held.hold(delivery.event.recordKey);
    this.queue.complete(delivery);
    await this.writer.write('store a failed delivery', [this.toRow(delivery, 1, runAt ?? new Date(), outcome)]);
    delivery.finished = true;
    if (runAt === null) this.observer.attempt(this.lane.webhook.id, outcome, 'dead', delivery.event);
  }

  /** A record with pending rows: the delivery is written behind them, in order. */
  writeBehind(delivery: MemoryDelivery): void {
    this.queue.complete(delivery);
    this.writer.add(delivery);
  }

  /** Routed for a previous targetUrl: stored dead with a reason, never sent to the current one. */
  setAside(delivery: MemoryDelivery): void {
    this.queue.complete(delivery);
    const row = { ...this.toRow(delivery, 0, new Date(), null), status: 'dead' as const, lastError: TARGET_CHANGED_REASON };
    this.writer.write('set aside a delivery routed for a previous targetUrl', [row]).then(
      () => (delivery.finished = true),
      (error: unknown) => this.onUnexpected(error),
    );
  }

  /**
   * Pending rows routed for another targetUrl than `url` become dead with a reason, once every write
   * under way is done, and are logged once: they are listed and `deliveries redeliver` sends them to
   * the current URL.
   */
  setAsideStored(url: string): Promise<void> {
    return this.writer
      .afterWrites(() => this.claimer.setAsideOtherTargets(url, TARGET_CHANGED_REASON))
      .then((count) => {
        if (count === 0) return;
        this.log.warn(
          { setAside: count },
          `targetUrl changed: ${count} pending deliveries routed for the previous URL are set aside as dead; "pg-webhook-bridge deliveries redeliver --webhook ${this.lane.webhook.id} --since <time>" sends them to the new URL`,
        );
      });
  }

  /** When a delivery that failed `failedAttempts` times runs again; null: never, it is dead. */
  nextRunAt(failedAttempts: number, outcome: FailedAttempt): Date | null {
    const delay = nextRetryDelayMs(failedAttempts, this.settings.retryScheduleS, this.random, outcome.retryAfterMs);
    return delay === null ? null : new Date(Date.now() + delay);
  }

  toRow(delivery: MemoryDelivery, attempts: number, runAt: Date, outcome: FailedAttempt | null): NewStoredDelivery {
    const dead = outcome !== null && this.nextRunAt(attempts, outcome) === null;
    return storedRow(this.lane.webhook.id, delivery, { attempts, runAt, outcome, lockedUntil: null, dead });
  }
}
