import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { coerceError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Subscriber } from '../route/types.js';
import { positionOf } from '../store/eventLog.js';
import type { LogWriter } from '../store/logWriter.js';
import type { LogCursor } from '../store/eventLog.js';
import type { Lsn } from '../replication/lsn.js';
import type { DeliveryKey, LogPosition, NewStoredDelivery, Queryable, StoredDelivery } from '../store/types.js';
import { nextRetryDelayMs } from './backoff.js';
import { AttemptRunner } from './attemptRunner.js';
import { EndpointBreaker } from './endpointBreaker.js';
import { justBefore, LogFollower, NO_HOLD } from './logFollower.js';
import { RecordQueue } from './recordQueue.js';
import { StoreClaimer } from './storeClaimer.js';
import { describeOutcome, storedRow } from './storedRow.js';
import { StoreWriter } from './storeWriter.js';
import type { AttemptOutcome, DeliveryObserver, FailedAttempt, HttpSender, LaneSettings, MemoryDelivery } from './types.js';

/** last_error of a delivery set aside because its webhook's targetUrl changed. */
export const TARGET_CHANGED_REASON = 'targetUrl changed; redeliver to send to the new URL';
/** How often drain() looks whether the last attempts have ended. */
const DRAIN_POLL_MS = 20;
/** Events read from the log ahead of the attempts, per webhook: bounds a lagging webhook's memory. */
const READ_AHEAD = 1_000;
const READ_AHEAD_BYTES = 16 * 1024 * 1024;
/** Past this many records with pending deliveries, every event read waits behind the store. */
const HELD_RECORDS_LIMIT = 50_000;

export interface LaneHooks {
  /** A failed attempt: records it and applies the disable rules (410, failing too long). */
  failure(webhookId: string, outcome: FailedAttempt): Promise<void>;
  success(webhookId: string): void;
  /** Memory was freed: a stream waiting for capacity may go on. */
  capacityFreed(): void;
  /** Events held for this webhook before delivery (coalescing) are handed on now, before it leaves memory. */
  releaseHeld(webhookId: string): void;
}

/** Where new events come from: `memory` (the fast path) or `store` (the event log, read from a cursor). */
export type LaneMode = 'memory' | 'store';
type Lifecycle = 'running' | 'draining' | 'closed';

/**
 * All deliveries to one webhook. Its state changes only through the `setMode*`, `setSending*` and
 * `setLifecycle*` methods below, each of which checks where it comes from.
 *
 * Mode:
 * - `memory` (fast path): routed events wait in per-record FIFO queues, each holding its transaction's
 *   acknowledgement; the head of each record's queue may be in flight, up to `concurrency` at once.
 *   Nothing is written to the database.
 * - `store` (behind): the webhook reads the event log from its cursor. Routed events are not taken:
 *   the log writer holds their transactions until they are written, and the reader reads them.
 * - memory -> store: an attempt fails, the oldest delivery waited longer than `storeAfterMs`, sending
 *   stops or the targetUrl changes while memory holds work, drain() at shutdown, or `startFromLog()`
 *   (a cursor or pending deliveries at start). The log writer writes what memory still needs, the
 *   cursor is saved, and the deliveries in memory stop holding their transactions (they stay queued).
 * - store -> memory: the reader has read everything routed, nothing is queued, in flight, claimed or
 *   being written, and the store holds no pending delivery of the webhook. The cursor is deleted.
 *
 * In either mode a failed attempt becomes a pending row of the store (`deliveries`) with its next run
 * time, and the record it belongs to is held: its later events are written behind it as pending rows,
 * and the store poller sends each record's oldest pending row. Other records go on.
 *
 * Sending (independent of the mode):
 * - on -> off: `disable()` (webhook deleted, soft-deleted, disabled or invalid) or a 410 Gone answer:
 *   no attempt starts from that moment, memory work goes to the log, the cursor is saved as paused.
 * - off -> on: `enable()`: events committed meanwhile are skipped; reading goes on from the cursor.
 *
 * Lifecycle: running -> draining (`drain()`: memory work goes to the log, no new attempt starts) ->
 * closed (the pool is gone: late outcomes are left to the store's lease expiry and the cursor).
 *
 * Every delivery remembers the targetUrl it was routed for, and is only ever sent to that URL:
 * `updateWebhook()` with a new URL sets the older ones aside (dead, listed, redeliverable).
 */
export class Lane {
  private currentMode: LaneMode = 'memory';
  private sending = true;
  private lifecycle: Lifecycle = 'running';
  private readonly queue = new RecordQueue<MemoryDelivery>((delivery) => delivery.event.recordKey);
  private readonly inFlightQueued = new Set<MemoryDelivery>();
  /** Attempts under way, from the queue and from the store. */
  private inFlight = 0;
  /** Payload bytes held in memory on the fast path: bodies are shared between webhooks, so this over-counts, safely. */
  private memoryBytes = 0;
  private polling = false;
  private repoll = false;
  private reading = false;
  /** Body bytes of events read from the log and not handed out yet. */
  private readBytes = 0;
  /** The log head when sending stopped: events committed after it, until sending resumes, are not sent. */
  private pausedAt: Lsn | null = null;
  /** Records with pending rows in the store: their events are written behind them. */
  private held = new Set<string>();
  /** Every record counts as held (more than HELD_RECORDS_LIMIT are), or `held` is not loaded yet. */
  private heldAll = false;
  private heldKnown = true;
  private readonly breaker = new EndpointBreaker();
  private readonly attempts: AttemptRunner;
  private readonly writer: StoreWriter;
  private readonly claimer: StoreClaimer;
  private readonly follower: LogFollower;
  private stopListening: (() => void) | null = null;

  constructor(
    private current: Subscriber,
    db: Queryable,
    sender: HttpSender,
    private readonly logWriter: LogWriter,
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
        toRow: (delivery, now) => this.toRow(delivery, 0, now, null),
        batchStored: (batch) => {
          for (const delivery of batch) delivery.finished = true;
        },
        mayPoll: () => this.poll(),
      },
      log,
    );
    this.claimer = new StoreClaimer(db, current.id, settings, log);
    this.follower = new LogFollower(db, current.id, settings, observer, log);
  }

  // ---- State transitions: the only writers of currentMode, sending and lifecycle. ----

  private setModeStore(): void {
    assert.equal(this.currentMode, 'memory', 'only a lane on the fast path falls behind');
    this.currentMode = 'store';
    this.logWriter.fellBehind();
    this.stopListening = this.logWriter.onWritten(() => this.readMore());
  }

  private setModeMemory(): void {
    assert.equal(this.currentMode, 'store', 'only a lane reading the log returns to the fast path');
    assert.ok(
      this.inFlight === 0 &&
        this.claimer.claimedCount === 0 &&
        this.writer.buffered === 0 &&
        !this.writer.isFlushing &&
        this.queue.oldestUnfinished() === undefined,
      'the fast path resumes only once nothing is queued, in flight, claimed or being written',
    );
    this.currentMode = 'memory';
    this.logWriter.caughtUp();
    this.stopListening?.();
    this.stopListening = null;
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
    if (this.currentMode === 'store') {
      this.logWriter.caughtUp();
      this.stopListening?.();
    }
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

  /** Nothing in flight, queued, claimed, being read or written: the lane can be dropped. */
  get idle(): boolean {
    return (
      this.inFlight === 0 &&
      this.memoryCount === 0 &&
      this.claimer.claimedCount === 0 &&
      !this.writer.isFlushing &&
      this.writer.pendingWrites === 0 &&
      this.claimer.completionsPending === 0 &&
      !this.polling &&
      !this.reading
    );
  }

  /** Deliveries held in memory (queued or in flight). */
  get memoryCount(): number {
    return this.queue.size + this.inFlightQueued.size + this.writer.buffered;
  }

  /** Memory holds as much as it may on the fast path: the stream waits. A lane reading the log never holds it. */
  get isFull(): boolean {
    if (this.currentMode !== 'memory') return false;
    return this.memoryCount >= this.settings.memoryQueueLimit || this.memoryBytes >= this.settings.memoryQueueBytes;
  }

  get inFlightCount(): number {
    return this.inFlight;
  }

  /** Age of the oldest unfinished memory delivery, in ms (0 when none). */
  oldestAgeMs(now: number): number {
    return this.queue.oldestAgeMs(now);
  }

  /**
   * A new lane for a webhook that is behind: it reads the log from `cursor`, or (pending deliveries
   * but no cursor) after `start`, the position the slot resumes from. Its pending deliveries go first.
   */
  startFromLog(cursor: LogCursor | null, start: LogPosition): void {
    assert.ok(this.memoryCount === 0 && this.inFlight === 0, 'a lane starts from the log before it holds anything');
    this.setModeStore();
    this.heldKnown = false;
    this.follower.resumeAfter(justBefore(cursor?.position ?? start));
    if (cursor?.pausedAt != null) this.follower.skipPaused(cursor.pausedAt, this.logWriter.lastPosition);
    // Its targetUrl may have changed while no lane watched it (daemon stopped, webhook removed).
    this.setAsideOldTargets();
    this.poll();
  }

  /** The oldest memory delivery waited too long: the webhook falls behind and reads the log. */
  moveToStore(): Promise<void> {
    return this.fallBehind();
  }

  /**
   * The webhook as last loaded. A new secret applies from the next attempt (each is signed afresh); a
   * new targetUrl sets aside what was routed for the previous one.
   */
  updateWebhook(next: Subscriber): void {
    const previousUrl = this.current.targetUrl;
    this.current = next;
    if (next.targetUrl === previousUrl) return;
    // Everything routed so far was routed for the previous URL.
    this.follower.targetChanged(previousUrl, this.logWriter.lastPosition);
    this.setAsideOldTargets();
  }

  /**
   * No attempt starts from now on (`reason`: the webhook was deleted, soft-deleted, disabled or made
   * invalid): memory work goes to the log, claimed rows are given back, and the cursor is saved as
   * paused. Resolves once all of it is written.
   */
  async disable(reason: string): Promise<void> {
    this.setSendingOff();
    this.log.debug({ reason }, 'lane stops sending');
    if (this.currentMode === 'memory' && this.memoryCount > 0) await this.fallBehind();
    await this.claimer.releaseQueued();
    if (this.currentMode !== 'store') return;
    // Queued events are read again from the cursor once it is live.
    const next = this.nextToHandle();
    for (const delivery of this.queue.takeAll()) if (!this.inFlightQueued.has(delivery)) delivery.finished = true;
    this.readBytes = 0;
    this.follower.resumeAfter(justBefore(next));
    this.pausedAt = this.logWriter.lastPosition.lsn;
    await this.follower.save(next, { force: true, pausedAt: this.pausedAt });
  }

  /** The webhook is live again: events committed while it was off are skipped; the rest goes out. */
  enable(): void {
    this.setSendingOn();
    if (this.currentMode === 'store' && this.pausedAt !== null) this.follower.skipPaused(this.pausedAt, this.logWriter.lastPosition);
    this.pausedAt = null;
    this.poll();
  }

  /** The lane is dropped (its webhook is no longer live): the log writer stops counting it as behind. */
  dispose(): void {
    if (this.currentMode !== 'store' || this.lifecycle === 'closed') return;
    this.logWriter.caughtUp();
    this.stopListening?.();
    this.stopListening = null;
    this.lifecycle = 'closed';
  }

  enqueue(delivery: MemoryDelivery): void {
    // Routed in the moment between the bridge disabling this webhook and the registry knowing it:
    // events committed while a webhook is disabled are not sent to it.
    if (!this.sending) return;
    // The log writer holds the transaction until the event is written; the reader reads it there.
    // Once closed the lane no longer counts as behind, so the writer may not keep it: held below.
    if (this.currentMode === 'store' && this.lifecycle !== 'closed') return;
    delivery.hold.hold();
    // Draining: the transaction stays unacknowledged (the hold is never released), so it is replayed.
    if (this.lifecycle !== 'running') return;
    this.memoryBytes += delivery.event.body.length;
    this.queue.push(delivery);
    this.pump();
  }

  // ---- Sending queued events (from memory or the log). ----

  private pump(): void {
    if (!this.sending || this.lifecycle !== 'running') return;
    const behind = this.currentMode === 'store';
    if (behind && !this.heldKnown) return;
    if (behind && !this.breaker.mayPoll(Date.now(), this.inFlight)) return;
    const limit = behind ? this.breaker.sendLimit(this.settings.concurrency) : this.settings.concurrency;
    let handedOut = 0;
    // An endpoint that is down gets one probe, and no record behind a held one is written meanwhile.
    while (this.inFlight < limit && !(behind && this.breaker.isOpen && handedOut > 0)) {
      const delivery = this.queue.next();
      if (!delivery) break;
      handedOut++;
      if (delivery.fromLog) this.readBytes -= delivery.event.body.length;
      if (delivery.targetUrl !== this.current.targetUrl) this.setAside(delivery);
      else if (this.heldAll || this.held.has(delivery.event.recordKey)) this.writeBehind(delivery);
      else this.send(delivery).catch((error) => this.onUnexpected(error));
    }
    if (behind) this.readMore();
  }

  private async send(delivery: MemoryDelivery): Promise<void> {
    this.inFlight++;
    this.inFlightQueued.add(delivery);
    const { event } = delivery;
    const outcome = await this.attempt(event.id, event.body, event.name, event.commitTime, 0);
    this.inFlight--;
    this.inFlightQueued.delete(delivery);
    if (this.lifecycle === 'closed') return;
    if (outcome.ok) {
      delivery.finished = true;
      this.queue.complete(delivery);
      this.release(delivery);
    } else if (this.currentMode === 'memory') {
      await this.fallBehind({ delivery, outcome });
    } else {
      await this.holdBack(delivery, outcome);
    }
    this.hooks.capacityFreed();
    if (this.currentMode === 'memory') this.pump();
    else this.poll();
  }

  /** A failed attempt becomes the pending head of its record in the store; the record's later events wait behind it. */
  private async holdBack(delivery: MemoryDelivery, outcome: FailedAttempt): Promise<void> {
    const runAt = this.nextRunAt(1, outcome);
    if (runAt !== null) this.held.add(delivery.event.recordKey);
    this.queue.complete(delivery);
    await this.writer.write('store a failed delivery', [this.toRow(delivery, 1, runAt ?? new Date(), outcome)]);
    delivery.finished = true;
    if (runAt === null) this.observer.attempt(this.current.id, outcome, 'dead', delivery.event);
  }

  /** A record with pending rows: the delivery is written behind them, in order. */
  private writeBehind(delivery: MemoryDelivery): void {
    this.queue.complete(delivery);
    this.writer.add(delivery);
  }

  /** Routed for a previous targetUrl: stored dead with a reason, never sent to the current one. */
  private setAside(delivery: MemoryDelivery): void {
    this.queue.complete(delivery);
    const row = { ...this.toRow(delivery, 0, new Date(), null), status: 'dead' as const, lastError: TARGET_CHANGED_REASON };
    this.writer.write('set aside a delivery routed for a previous targetUrl', [row]).then(
      () => (delivery.finished = true),
      (error: unknown) => this.onUnexpected(error),
    );
  }

  /**
   * memory -> store. The log gets everything memory still needs, the cursor is saved before anything
   * is acknowledged, and queued deliveries stop holding their transactions (they stay queued and are
   * sent from here). `failed` is an attempt that just failed: it becomes a pending row.
   */
  private async fallBehind(failed?: { delivery: MemoryDelivery; outcome: FailedAttempt }): Promise<void> {
    // Coalesced bursts join the queue first: once behind, routed events are no longer taken.
    this.hooks.releaseHeld(this.current.id);
    this.setModeStore();
    // Every event routed so far was either queued here or is not for this webhook.
    this.follower.resumeAfter(this.logWriter.lastPosition);
    this.heldKnown = false;
    const heldBack = failed ? this.holdBack(failed.delivery, failed.outcome) : Promise.resolve();
    const inMemory = this.queue.items();
    if (failed) inMemory.push(failed.delivery);
    await this.follower.save(this.nextToHandle(), { force: true });
    await this.logWriter.writeBuffered();
    for (const delivery of inMemory) this.release(delivery);
    await heldBack;
    this.log.debug(
      { webhookId: this.current.id, queued: inMemory.length, reason: failed ? failed.outcome.reason : 'backlog' },
      'webhook is behind; reading the event log',
    );
    this.hooks.capacityFreed();
    this.poll();
  }

  /** The delivery no longer holds memory or its transaction back. */
  private release(delivery: MemoryDelivery): void {
    if (delivery.hold === NO_HOLD) return;
    delivery.hold.release();
    delivery.hold = NO_HOLD;
    this.memoryBytes -= delivery.event.body.length;
  }

  /** The first position not handled yet: the oldest unfinished queued event, or the one after the last read. */
  private nextToHandle(): LogPosition {
    const oldest = this.queue.oldestUnfinished();
    if (oldest !== undefined) return positionOf(oldest.event);
    const read = this.follower.position;
    return { lsn: read.lsn, index: read.index + 1 };
  }

  /**
   * Pending rows routed for another targetUrl than the current one become dead with a reason and are
   * logged once: they are listed and `deliveries redeliver` sends them to the current URL. Memory work
   * goes to the log first; queued events routed for the previous URL are set aside as they come up.
   */
  private setAsideOldTargets(): void {
    const url = this.current.targetUrl;
    this.claimer.dropOtherTargets(url);
    if (this.currentMode === 'memory' && this.memoryCount > 0) this.fallBehind().catch((error) => this.onUnexpected(error));
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

  // ---- Behind: the log and the store. ----

  /** Reads the next events of the log while the queue has room. */
  private readMore(): void {
    if (this.reading || this.currentMode !== 'store' || !this.sending || this.lifecycle !== 'running') return;
    if (this.queue.size + this.inFlight >= READ_AHEAD || this.readBytes >= READ_AHEAD_BYTES) return;
    if (this.follower.hasRead(this.logWriter.lastPosition)) {
      this.maybeCaughtUp();
      return;
    }
    this.reading = true;
    const before = this.follower.position;
    void (async () => {
      try {
        const deliveries = await this.follower.read(this.current);
        for (const delivery of deliveries) {
          this.readBytes += delivery.event.body.length;
          this.queue.push(delivery);
        }
      } catch (caught) {
        this.log.warn({ err: coerceError(caught) }, 'could not read the event log; will retry');
      } finally {
        this.reading = false;
      }
      // Nothing new was written yet: the writer's next segment (onWritten) or the next tick reads on.
      if (this.follower.position !== before || this.follower.hasRead(this.logWriter.lastPosition)) this.pump();
    })();
  }

  /** Claims and sends due stored deliveries while there is room; reads the log on; returns to memory when caught up. */
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
      if (this.currentMode === 'store') this.saveCursor(false);
    })();
  }

  private async pollOnce(): Promise<void> {
    if (this.currentMode === 'store' && this.writer.pendingWrites === 0 && this.writer.buffered === 0 && !this.writer.isFlushing) await this.refreshHeld();
    this.pump();
    if (!this.breaker.mayPoll(Date.now(), this.inFlight)) return;
    const limit = this.breaker.sendLimit(this.settings.concurrency);
    this.dispatchClaimed(limit);
    if (this.claimer.claimedCount > 0 || this.inFlight >= limit || this.writer.pendingWrites > 0) return;
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
    if (rows.length === batch) this.repoll = true;
  }

  /**
   * Reloads which records have pending rows. Only while no write is under way, and dropped if one
   * started meanwhile: a record must not look free while its head is being written.
   */
  private async refreshHeld(): Promise<void> {
    const generation = this.writer.generation;
    const keys = await this.claimer.pendingRecords(HELD_RECORDS_LIMIT + 1);
    if (generation !== this.writer.generation || this.writer.pendingWrites > 0 || this.writer.buffered > 0 || this.writer.isFlushing) return;
    this.heldAll = keys.length > HELD_RECORDS_LIMIT;
    this.held = new Set(keys);
    this.heldKnown = true;
  }

  /** store -> memory, once everything routed is read and handled and the store holds nothing pending. */
  private maybeCaughtUp(): void {
    if (!this.caughtUp()) return;
    this.setModeMemory();
    this.log.debug({ webhookId: this.current.id }, 'caught up; back on the fast path');
    this.follower.remove().catch((error) => this.onUnexpected(error));
  }

  private caughtUp(): boolean {
    return (
      this.currentMode === 'store' &&
      this.sending &&
      this.lifecycle === 'running' &&
      this.heldKnown &&
      !this.heldAll &&
      this.held.size === 0 &&
      this.inFlight === 0 &&
      this.queue.oldestUnfinished() === undefined &&
      this.claimer.claimedCount === 0 &&
      this.claimer.completionsPending === 0 &&
      this.writer.buffered === 0 &&
      !this.writer.isFlushing &&
      this.writer.pendingWrites === 0 &&
      !this.reading &&
      this.follower.hasRead(this.logWriter.lastPosition)
    );
  }

  /** Saves where the webhook reads from (at most once a second unless `force`). */
  saveCursor(force: boolean): void {
    if (this.currentMode !== 'store' || !this.sending) return;
    this.follower.save(this.nextToHandle(), { force }).catch((error) => this.onUnexpected(error));
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

  private toRow(delivery: MemoryDelivery, attempts: number, runAt: Date, outcome: FailedAttempt | null): NewStoredDelivery {
    const dead = outcome !== null && this.nextRunAt(attempts, outcome) === null;
    return storedRow(this.current.id, delivery, { attempts, runAt, outcome, lockedUntil: null, dead });
  }

  /**
   * A bookkeeping write failed for a reason retrying cannot fix (or the pool is gone). The delivery's
   * transaction stays unacknowledged or its cursor does not pass it, so the next start sends it again:
   * loud, but nothing is lost.
   */
  private onUnexpected(error: unknown): void {
    if (this.lifecycle === 'closed') return;
    this.log.error({ err: coerceError(error), webhookId: this.current.id }, 'could not record a delivery outcome; it is sent again after a restart');
  }

  /** Shutdown: memory work goes to the log; waits for in-flight attempts up to the deadline; saves the cursor. */
  async drain(deadline: number): Promise<void> {
    this.setLifecycleDraining();
    if (this.currentMode === 'memory' && this.memoryCount > 0) await this.fallBehind();
    await this.writer.flushed();
    // Claimed rows never sent go back at once, not after their lease.
    await this.claimer.releaseQueued();
    while (this.inFlight > 0 && Date.now() < deadline) await sleep(DRAIN_POLL_MS);
    await this.writer.settled();
    await this.claimer.flushCompletions();
    if (this.currentMode === 'store' && this.sending) await this.follower.save(this.nextToHandle(), { force: true });
    this.setLifecycleClosed();
  }
}
