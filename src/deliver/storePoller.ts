import { coerceError } from '../errors.js';
import type { Logger } from '../log.js';
import type { DeliveryKey, StoredDelivery } from '../store/types.js';
import type { AttemptRequest } from './attemptRunner.js';
import type { EndpointBreaker } from './endpointBreaker.js';
import type { HeldRecords } from './heldRecords.js';
import type { InFlight } from './inFlight.js';
import type { LaneView } from './laneState.js';
import type { StoreClaimer } from './storeClaimer.js';
import { describeOutcome } from './storedRow.js';
import type { StoreWriter } from './storeWriter.js';
import type { AttemptOutcome, DeliveryObserver, FailedAttempt } from './types.js';

/** What the poller asks of its lane. */
export interface StorePollerHooks {
  /** Hands queued events out to free slots (and reads the log on while behind). */
  pump(): void;
  /** One attempt, reported to the lane's hooks (a 410 Gone stops its sending). */
  attempt(request: AttemptRequest): Promise<AttemptOutcome>;
  /** When a failed attempt runs again; null: never, it is dead. */
  nextRunAt(failedAttempts: number, outcome: FailedAttempt): Date | null;
  /** A poll ended while behind: the cursor may be saved. */
  polled(): void;
  onUnexpected(error: unknown): void;
}

/**
 * One webhook's store poller: one poll at a time, and one more if asked meanwhile. A poll reloads the
 * held records, hands queued events out, then claims due stored rows (a batch per round trip), sends
 * them to free slots in commit order and records each outcome (deleted, due again later, or dead).
 * Each recorded outcome polls again.
 */
export class StorePoller {
  private polling = false;
  private repoll = false;

  constructor(
    private readonly lane: LaneView,
    private readonly claimer: StoreClaimer,
    private readonly writer: Pick<StoreWriter, 'pendingWrites'>,
    private readonly held: HeldRecords,
    private readonly breaker: EndpointBreaker,
    private readonly inFlight: InFlight,
    private readonly settings: { concurrency: number },
    private readonly observer: DeliveryObserver,
    private readonly log: Logger,
    private readonly hooks: StorePollerHooks,
  ) {}

  get isPolling(): boolean {
    return this.polling;
  }

  /** Claims and sends due stored deliveries while there is room; reads the log on; returns to memory when caught up. */
  poll(): void {
    if (!this.lane.mayStart) return;
    if (this.polling) {
      this.repoll = true;
      return;
    }
    this.polling = true;
    void (async () => {
      try {
        do {
          this.repoll = false;
          await this.pollOnce();
        } while (this.repoll && this.lane.lifecycle === 'running');
      } catch (caught) {
        this.log.warn({ err: coerceError(caught), webhookId: this.lane.webhook.id }, 'store poll failed; will retry');
      } finally {
        this.polling = false;
      }
      if (this.lane.mode === 'store') this.hooks.polled();
    })();
  }

  private async pollOnce(): Promise<void> {
    if (this.lane.mode === 'store' && this.held.writesSettled) await this.held.refresh();
    this.hooks.pump();
    if (!this.breaker.mayPoll(Date.now(), this.inFlight.count)) return;
    const limit = this.breaker.sendLimit(this.settings.concurrency);
    this.dispatchClaimed(limit);
    if (this.claimer.claimedCount > 0 || this.inFlight.count >= limit || this.writer.pendingWrites > 0) return;
    await this.claimer.flushCompletions();
    // Claims fetch more than the free slots: one round trip then feeds many attempts.
    const batch = this.breaker.claimBatch(this.settings.concurrency);
    const rows = await this.claimer.claim(this.lane.webhook.targetUrl, batch);
    if (!this.lane.mayStart) {
      // Sending stopped while the claim ran: give the rows back now rather than when their lease ends.
      await this.claimer.release(rows);
      return;
    }
    this.claimer.queue(rows);
    this.dispatchClaimed(limit);
    if (rows.length === batch) this.repoll = true;
  }

  /** Sends claimed rows while there are free slots; each completion polls again. */
  private dispatchClaimed(limit: number): void {
    while (this.inFlight.count < limit && this.lane.mayStart) {
      const row = this.claimer.next();
      if (!row) return;
      // Claimed for a targetUrl that has changed since: the lane sets it aside as dead, it is never sent.
      if (row.targetUrl !== null && row.targetUrl !== this.lane.webhook.targetUrl) continue;
      this.send(row).catch((error) => this.hooks.onUnexpected(error));
    }
  }

  private async send(row: StoredDelivery): Promise<void> {
    this.inFlight.started();
    const outcome = await this.hooks.attempt({
      eventId: row.eventId,
      body: row.body,
      eventName: row.eventName,
      commitTime: row.createdAt,
      previousAttempts: row.attempts,
    });
    this.inFlight.ended();
    if (this.lane.lifecycle === 'closed') return;
    await this.recordOutcome({ eventId: row.eventId, webhookId: row.webhookId }, outcome, row.attempts);
    this.poll();
  }

  private async recordOutcome(key: DeliveryKey, outcome: AttemptOutcome, previousAttempts: number): Promise<void> {
    if (outcome.ok) {
      await this.claimer.complete(key);
      return;
    }
    const attempts = previousAttempts + 1;
    const runAt = this.hooks.nextRunAt(attempts, outcome);
    if (runAt === null) this.observer.attempt(this.lane.webhook.id, outcome, 'dead', { name: '', commitTime: new Date() });
    await this.claimer.fail(key, { attempts, runAt, error: describeOutcome(outcome), statusCode: outcome.statusCode ?? null });
  }
}
