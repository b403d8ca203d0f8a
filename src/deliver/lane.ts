import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { coerceError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Subscriber } from '../route/types.js';
import type { DeliveryKey, NewStoredDelivery, Queryable, StoredDelivery } from '../store/types.js';
import { nextRetryDelayMs } from './backoff.js';
import { AttemptRunner } from './attemptRunner.js';
import { EndpointBreaker } from './endpointBreaker.js';
import { RecordQueue } from './recordQueue.js';
import { LEASE_MARGIN_MS, StoreClaimer } from './storeClaimer.js';
import { describeOutcome, storedRow } from './storedRow.js';
import { StoreWriter } from './storeWriter.js';
import type { AttemptOutcome, DeliveryObserver, FailedAttempt, HttpSender, LaneSettings, MemoryDelivery } from './types.js';

/** last_error of a delivery set aside because its webhook's targetUrl changed. */
export const TARGET_CHANGED_REASON = 'targetUrl changed; redeliver to send to the new URL';
/** How often drain() looks whether the last attempts have ended. */
const DRAIN_POLL_MS = 20;

export interface LaneHooks {
  /** A failed attempt: records it and applies the disable rules (410, failing too long). */
  failure(webhookId: string, outcome: FailedAttempt): Promise<void>;
  success(webhookId: string): void;
  /** Memory was freed: a stream waiting for capacity may go on. */
  capacityFreed(): void;
}

/** Where new deliveries go: `memory` is the fast path, `store` the durable backlog. */
export type LaneMode = 'memory' | 'store';
type Lifecycle = 'running' | 'draining' | 'closed';

/**
 * All deliveries to one webhook. Its state changes only through the `setMode*`, `setSending*` and
 * `setLifecycle*` methods below, each of which checks where it comes from.
 *
 * Mode:
 * - `memory` (fast path): deliveries wait in per-record FIFO queues; the head of each record's queue may
 *   be in flight, up to `concurrency` at once. Nothing is written to the database.
 * - `store` (backlog): new deliveries are written to the store in batches; a poller claims the oldest
 *   pending delivery of each record and sends it.
 * - memory -> store ("spill"): an attempt fails, the oldest delivery waited longer than `storeAfterMs`
 *   (the coordinator's `moveToStore()`), sending is disabled or the targetUrl changes while memory holds
 *   work, drain() at shutdown, or `startFromStore()` for a new lane whose webhook has a stored backlog.
 *   Everything queued is stored, in-flight ones are stored under a lease and finish there.
 * - store -> memory: the store holds nothing pending for the webhook, and nothing is being written,
 *   claimed or in flight. Either way each record's deliveries go out in commit order and only the
 *   record with the failing head waits.
 *
 * Sending (independent of the mode):
 * - on -> off: `disable()` (webhook deleted, soft-deleted, disabled or invalid) or a 410 Gone answer:
 *   no attempt starts from that moment, memory work goes to the store, claimed rows are given back.
 * - off -> on: `enable()`: the store is polled again.
 *
 * Lifecycle: running -> draining (`drain()`: memory work is stored, new deliveries go to the store, no
 * new attempt starts) -> closed (the pool is gone: late outcomes are left to the store's lease expiry).
 *
 * Every delivery remembers the targetUrl it was routed for, and is only ever sent to that URL:
 * `updateWebhook()` with a new URL sets the older ones aside (dead, listed, redeliverable).
 */
export class Lane {
  private currentMode: LaneMode = 'memory';
  private sending = true;
  private lifecycle: Lifecycle = 'running';
  private readonly memory = new RecordQueue<MemoryDelivery>((delivery) => delivery.event.recordKey);
  private readonly inFlightMemory = new Set<MemoryDelivery>();
  /** Attempts under way, from memory and from the store. */
  private inFlight = 0;
  /** Payload bytes held by this lane: bodies are shared between webhooks, so this over-counts, safely. */
  private memoryBytes = 0;
  private polling = false;
  private repoll = false;
  private readonly breaker = new EndpointBreaker();
  private readonly attempts: AttemptRunner;
  private readonly writer: StoreWriter;
  private readonly claimer: StoreClaimer;

  constructor(
    private current: Subscriber,
    db: Queryable,
    sender: HttpSender,
    private readonly settings: LaneSettings,
    private readonly observer: DeliveryObserver,
    private readonly hooks: LaneHooks,
    private readonly log: Logger,
    private readonly random: () => number = Math.random,
  ) {
    this.attempts = new AttemptRunner(sender, settings, observer, this.breaker, log, random);
    this.writer = new StoreWriter(
      db,
      settings,
      {
        toRow: (delivery, now) => this.toRow(delivery, 0, now, null, null),
        batchStored: (batch) => {
          for (const delivery of batch) this.release(delivery);
          this.hooks.capacityFreed();
        },
        mayPoll: () => this.poll(),
      },
      log,
    );
    this.claimer = new StoreClaimer(db, current.id, settings, log);
  }

  // ---- State transitions: the only writers of currentMode, sending and lifecycle. ----

  private setModeStore(): void {
    assert.equal(this.currentMode, 'memory', 'only a lane on the fast path moves to the store');
    this.currentMode = 'store';
  }

  private setModeMemory(): void {
    assert.equal(this.currentMode, 'store', 'only a lane in store mode returns to the fast path');
    assert.ok(
      this.inFlight === 0 && this.claimer.claimedCount === 0 && this.writer.buffered === 0 && !this.writer.isFlushing,
      'the fast path resumes only once nothing is in flight, claimed or being written',
    );
    this.currentMode = 'memory';
  }

  /** From either side: a 410 Gone stops sending at once, and the disable that follows finds it stopped. */
  private setSendingOff(): void {
    this.sending = false;
  }

  private setSendingOn(): void {
    assert.equal(this.sending, false, 'only a lane whose sending was stopped resumes it');
    this.sending = true;
  }

  private setLifecycleDraining(): void {
    assert.equal(this.lifecycle, 'running', 'a lane drains once');
    this.lifecycle = 'draining';
  }

  private setLifecycleClosed(): void {
    assert.equal(this.lifecycle, 'draining', 'a lane closes at the end of its drain');
    this.lifecycle = 'closed';
  }

  // ---- What the coordinator reads and asks. ----

  /** The webhook as last loaded. */
  get webhook(): Subscriber {
    return this.current;
  }

  get mode(): LaneMode {
    return this.currentMode;
  }

  get isSending(): boolean {
    return this.sending;
  }

  /** Nothing in flight, held in memory, claimed or being written: the lane can be dropped. */
  get idle(): boolean {
    return (
      this.inFlight === 0 &&
      this.memoryCount === 0 &&
      this.claimer.claimedCount === 0 &&
      !this.writer.isFlushing &&
      this.writer.pendingWrites === 0 &&
      this.claimer.completionsPending === 0 &&
      !this.polling
    );
  }

  /** Deliveries held in memory (queued or in flight): what back-pressure looks at. */
  get memoryCount(): number {
    return this.memory.size + this.inFlightMemory.size + this.writer.buffered;
  }

  get isFull(): boolean {
    return this.memoryCount >= this.settings.memoryQueueLimit || this.memoryBytes >= this.settings.memoryQueueBytes;
  }

  get inFlightCount(): number {
    return this.inFlight;
  }

  /** Age of the oldest unfinished memory delivery, in ms (0 when none). */
  oldestAgeMs(now: number): number {
    return this.memory.oldestAgeMs(now);
  }

  /**
   * A new lane for a webhook whose deliveries wait in the store (stored backlog at startup, or a lane
   * dropped earlier): it starts in store mode so its records keep commit order.
   */
  startFromStore(): void {
    assert.ok(this.memoryCount === 0 && this.inFlight === 0, 'a lane starts from the store before it holds anything');
    this.setModeStore();
    // Its targetUrl may have changed while no lane watched it (daemon stopped, webhook removed).
    this.setAsideOldTargets();
    this.poll();
  }

  /** The oldest memory delivery waited too long: memory work moves to the store. */
  moveToStore(): Promise<void> {
    return this.spill();
  }

  /**
   * The webhook as last loaded. A new secret applies from the next attempt (each is signed afresh); a
   * new targetUrl sets aside what was routed for the previous one.
   */
  updateWebhook(next: Subscriber): void {
    const previousUrl = this.current.targetUrl;
    this.current = next;
    if (next.targetUrl !== previousUrl) this.setAsideOldTargets();
  }

  /**
   * No attempt starts from now on (`reason`: the webhook was deleted, soft-deleted, disabled or made
   * invalid): memory work goes to the store, claimed rows are given back. Resolves once both are written.
   */
  async disable(reason: string): Promise<void> {
    this.setSendingOff();
    this.log.debug({ reason }, 'lane stops sending');
    const spilled = this.currentMode === 'memory' && this.memoryCount > 0 ? this.spill() : Promise.resolve();
    await Promise.all([spilled, this.claimer.releaseQueued()]);
  }

  /** The webhook is live again: its stored deliveries go out. */
  enable(): void {
    this.setSendingOn();
    this.poll();
  }

  enqueue(delivery: MemoryDelivery): void {
    // Routed in the moment between the bridge disabling this webhook and the registry knowing it:
    // events committed while a webhook is disabled are not sent to it.
    if (!this.sending) return;
    delivery.hold.hold();
    this.memoryBytes += delivery.event.body.length;
    if (this.currentMode === 'store' || this.lifecycle !== 'running') {
      this.writer.add(delivery);
      return;
    }
    this.memory.push(delivery);
    this.pump();
  }

  // ---- Fast path. ----

  private pump(): void {
    while (this.currentMode === 'memory' && this.sending && this.inFlight < this.settings.concurrency) {
      const delivery = this.memory.next();
      if (!delivery) return;
      this.sendFromMemory(delivery).catch((error) => this.onUnexpected(error));
    }
  }

  private async sendFromMemory(delivery: MemoryDelivery): Promise<void> {
    this.inFlight++;
    this.inFlightMemory.add(delivery);
    const { event } = delivery;
    const outcome = await this.attempt(event.id, event.body, event.name, event.commitTime, 0);
    this.inFlight--;
    this.inFlightMemory.delete(delivery);
    delivery.finished = true;
    if (this.lifecycle === 'closed') return;
    if (delivery.stored) {
      // Spilled while in flight: it lives in the store now, so its outcome is recorded there.
      await delivery.stored;
      await this.recordStoredOutcome({ eventId: event.id, webhookId: this.current.id }, outcome, 0);
    } else if (outcome.ok) {
      this.release(delivery);
      this.memory.complete(delivery);
    } else {
      await this.spill({ delivery, outcome });
    }
    this.hooks.capacityFreed();
    if (this.currentMode === 'memory') this.pump();
    else this.poll();
  }

  /**
   * memory -> store. `failed` is an attempt that just failed: it is stored with its next run time.
   * Resolves once everything spilled is durable (and so acknowledged as far as this lane goes).
   */
  private async spill(failed?: { delivery: MemoryDelivery; outcome: FailedAttempt }): Promise<void> {
    this.setModeStore();
    const now = Date.now();
    const rows: NewStoredDelivery[] = [];
    const spilled: MemoryDelivery[] = [];
    const leaseUntil = new Date(now + this.settings.timeoutMs + LEASE_MARGIN_MS);
    for (const delivery of this.inFlightMemory) {
      rows.push(this.toRow(delivery, 0, new Date(now), null, leaseUntil));
      spilled.push(delivery);
    }
    if (failed) {
      const runAt = this.nextRunAt(1, failed.outcome);
      rows.push(this.toRow(failed.delivery, 1, runAt ?? new Date(now), failed.outcome, null));
      spilled.push(failed.delivery);
    }
    for (const delivery of this.memory.takeAll()) {
      if (delivery === failed?.delivery || this.inFlightMemory.has(delivery)) continue;
      rows.push(this.toRow(delivery, 0, new Date(now), null, null));
      spilled.push(delivery);
      delivery.finished = true;
    }
    if (rows.length === 0) return;
    const written = this.writer.write('store spilled deliveries', rows);
    for (const delivery of this.inFlightMemory) delivery.stored = written;
    await written;
    for (const delivery of spilled) this.release(delivery);
    this.log.debug({ webhookId: this.current.id, stored: rows.length, reason: failed ? failed.outcome.reason : 'backlog' }, 'deliveries moved to the store');
    if (failed && this.nextRunAt(1, failed.outcome) === null) this.observer.attempt(this.current.id, failed.outcome, 'dead', failed.delivery.event);
    this.poll();
  }

  /** The delivery no longer holds memory or its transaction back. */
  private release(delivery: MemoryDelivery): void {
    delivery.hold.release();
    this.memoryBytes -= delivery.event.body.length;
  }

  /**
   * Deliveries routed for another targetUrl than the current one become dead with a reason, in memory
   * and in the store, and are logged once: they are listed and `deliveries redeliver` sends them to
   * the current URL. The poller waits until this is done.
   */
  private setAsideOldTargets(): void {
    const url = this.current.targetUrl;
    this.claimer.dropOtherTargets(url);
    // Memory holds only deliveries routed before the change: stored first (with their URL), then set aside.
    if (this.currentMode === 'memory' && this.memoryCount > 0) this.spill().catch((error) => this.onUnexpected(error));
    // Once the writes under way settle, everything routed before the change is in the store; later rows carry the new URL.
    this.writer
      .afterWrites(() => this.claimer.setAsideOtherTargets(url, TARGET_CHANGED_REASON))
      .then((count) => {
        if (count === 0) return;
        this.log.warn(
          { setAside: count },
          `targetUrl changed: ${count} pending deliveries routed for the previous URL are set aside as dead; "pg-webhook-bridge deliveries redeliver --webhook ${this.current.id} --since <time>" sends them to the new URL`,
        );
      })
      .catch((error) => this.onUnexpected(error))
      .finally(() => this.poll());
  }

  // ---- Store path. ----

  /** Claims and sends due stored deliveries while there is room; flips back to memory when empty. */
  poll(): void {
    if (!this.sending || this.lifecycle !== 'running') return;
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
        } while (this.repoll && this.lifecycle === 'running');
      } catch (caught) {
        this.log.warn({ err: coerceError(caught), webhookId: this.current.id }, 'store poll failed; will retry');
      } finally {
        this.polling = false;
      }
    })();
  }

  private async pollOnce(): Promise<void> {
    if (!this.breaker.mayPoll(Date.now(), this.inFlight)) return;
    const limit = this.breaker.sendLimit(this.settings.concurrency);
    this.dispatchClaimed(limit);
    if (this.claimer.claimedCount > 0 || this.inFlight >= limit || this.writer.pendingWrites > 0) return;
    const generation = this.writer.generation;
    await this.claimer.flushCompletions();
    // Claims fetch more than the free slots: one round trip then feeds many attempts.
    const batch = this.breaker.claimBatch(this.settings.concurrency);
    const rows = await this.claimer.claim(this.current.targetUrl, batch);
    if (!this.sending || this.lifecycle !== 'running') {
      // Sending stopped while the claim ran: give the rows back now rather than when their lease ends.
      await this.claimer.release(rows);
      return;
    }
    this.claimer.queue(rows);
    this.dispatchClaimed(limit);
    if (rows.length === batch) {
      this.repoll = true;
      return;
    }
    if (rows.length > 0 || this.currentMode !== 'store') return;
    if (this.inFlight > 0 || this.writer.buffered > 0 || this.writer.isFlushing) return;
    if (await this.claimer.hasPending()) return;
    if (
      generation === this.writer.generation &&
      this.writer.buffered === 0 &&
      !this.writer.isFlushing &&
      this.inFlight === 0 &&
      this.claimer.claimedCount === 0
    ) {
      this.setModeMemory();
      this.log.debug({ webhookId: this.current.id }, 'store drained; back on the fast path');
    }
  }

  /** Sends claimed rows while there are free slots; each completion polls again. */
  private dispatchClaimed(limit: number): void {
    while (this.inFlight < limit && this.lifecycle === 'running' && this.sending) {
      const row = this.claimer.next();
      if (!row) return;
      // Claimed for a targetUrl that has changed since: setAsideOldTargets() marks it, it is never sent.
      if (row.targetUrl !== null && row.targetUrl !== this.current.targetUrl) continue;
      this.sendFromStore(row).catch((error) => this.onUnexpected(error));
    }
  }

  private async sendFromStore(row: StoredDelivery): Promise<void> {
    this.inFlight++;
    const outcome = await this.attempt(row.eventId, row.body, row.eventName, row.createdAt, row.attempts);
    this.inFlight--;
    if (this.lifecycle === 'closed') return;
    await this.recordStoredOutcome({ eventId: row.eventId, webhookId: row.webhookId }, outcome, row.attempts);
    this.poll();
  }

  private async recordStoredOutcome(key: DeliveryKey, outcome: AttemptOutcome, previousAttempts: number): Promise<void> {
    if (outcome.ok) {
      await this.claimer.complete(key);
      return;
    }
    const attempts = previousAttempts + 1;
    const runAt = this.nextRunAt(attempts, outcome);
    if (runAt === null) this.observer.attempt(this.current.id, outcome, 'dead', { name: '', commitTime: new Date() });
    await this.claimer.fail(key, { attempts, runAt, error: describeOutcome(outcome), statusCode: outcome.statusCode ?? null });
  }

  // ---- One attempt. ----

  private async attempt(eventId: string, body: string, eventName: string, commitTime: Date, previousAttempts: number): Promise<AttemptOutcome> {
    const outcome = await this.attempts.run(this.current, { eventId, body, eventName, commitTime, previousAttempts });
    if (outcome.ok) {
      this.hooks.success(this.current.id);
      return outcome;
    }
    // 410 Gone: no further attempts, from this very moment (the state write follows).
    if (outcome.reason === 'gone') this.setSendingOff();
    if (this.lifecycle !== 'closed') await this.hooks.failure(this.current.id, outcome);
    return outcome;
  }

  private nextRunAt(failedAttempts: number, outcome: FailedAttempt): Date | null {
    const delay = nextRetryDelayMs(failedAttempts, this.settings.retryScheduleS, this.random, outcome.retryAfterMs);
    return delay === null ? null : new Date(Date.now() + delay);
  }

  private toRow(delivery: MemoryDelivery, attempts: number, runAt: Date, outcome: FailedAttempt | null, lockedUntil: Date | null): NewStoredDelivery {
    const dead = outcome !== null && this.nextRunAt(attempts, outcome) === null;
    return storedRow(this.current.id, delivery, { attempts, runAt, outcome, lockedUntil, dead });
  }

  /**
   * A bookkeeping write failed for a reason retrying cannot fix (or the pool is gone). The delivery's
   * transaction stays unacknowledged, so the next start replays it: loud, but nothing is lost.
   */
  private onUnexpected(error: unknown): void {
    if (this.lifecycle === 'closed') return;
    this.log.error({ err: coerceError(error), webhookId: this.current.id }, 'could not record a delivery outcome; its transaction stays unacknowledged');
  }

  /** Shutdown: everything in memory goes to the store; waits for in-flight attempts up to the deadline. */
  async drain(deadline: number): Promise<void> {
    this.setLifecycleDraining();
    if (this.currentMode === 'memory' && this.memoryCount > 0) await this.spill();
    await this.writer.flushed();
    // Claimed rows never sent go back at once, not after their lease.
    await this.claimer.releaseQueued();
    while (this.inFlight > 0 && Date.now() < deadline) await sleep(DRAIN_POLL_MS);
    await this.writer.settled();
    await this.claimer.flushCompletions();
    this.setLifecycleClosed();
  }
}
