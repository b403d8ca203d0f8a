import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { coerceError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Subscriber } from '../route/types.js';
import type { LogWriter } from '../store/logWriter.js';
import type { LogCursor } from '../store/eventLog.js';
import type { Lsn } from '../replication/lsn.js';
import type { LogPosition, Queryable } from '../store/types.js';
import { AttemptRunner, type AttemptRequest } from './attemptRunner.js';
import { EndpointBreaker } from './endpointBreaker.js';
import { HeldRecords } from './heldRecords.js';
import { InFlight } from './inFlight.js';
import { LaneState, type LaneMode } from './laneState.js';
import { justBefore, LogFollower, NO_HOLD } from './logFollower.js';
import { LogReadAhead } from './logReadAhead.js';
import { RecordQueue } from './recordQueue.js';
import { StoreClaimer } from './storeClaimer.js';
import { StoreHandoff } from './storeHandoff.js';
import { StorePoller } from './storePoller.js';
import { StoreWriter } from './storeWriter.js';
import type { AttemptOutcome, DeliveryObserver, FailedAttempt, HttpSender, LaneHooks, LaneSettings, MemoryDelivery } from './types.js';

export { TARGET_CHANGED_REASON } from './storeHandoff.js';

/** How often drain() looks whether the last attempts have ended. */
const DRAIN_POLL_MS = 20;

/**
 * All deliveries to one webhook. Its modes (`memory`, the fast path; `store`, reading the event log),
 * whether it is sending, and its lifecycle are a LaneState: that file lists them and their transitions,
 * and only the Lane moves it through them.
 *
 * In either mode a failed attempt becomes a pending row of the store (`deliveries`) with its next run
 * time, and the record it belongs to is held (HeldRecords): its later events are written behind it as
 * pending rows, and the store poller (StorePoller) sends each record's oldest pending row. Other
 * records go on.
 *
 * Every delivery remembers the targetUrl it was routed for, and is only ever sent to that URL:
 * `updateWebhook()` with a new URL sets the older ones aside (dead, listed, redeliverable).
 */
export class Lane {
  private readonly state: LaneState;
  private readonly queue = new RecordQueue<MemoryDelivery>((delivery) => delivery.event.recordKey);
  /** When an attempt last ended: a full lane with none ending is stuck, not busy. */
  private lastAttemptEndedAt = Date.now();
  /** Queued deliveries in flight, with when their attempt started. */
  private readonly inFlightQueued = new Map<MemoryDelivery, number>();
  private readonly inFlight = new InFlight();
  /** Payload bytes held in memory on the fast path: bodies are shared between webhooks, so this over-counts, safely. */
  private memoryBytes = 0;
  /** The log head when sending stopped: events committed after it, until sending resumes, are not sent. */
  private pausedAt: Lsn | null = null;
  private readonly breaker = new EndpointBreaker();
  private readonly attempts: AttemptRunner;
  private readonly writer: StoreWriter;
  private readonly claimer: StoreClaimer;
  /** Records with pending rows in the store: their events are written behind them. */
  private readonly held: HeldRecords;
  private readonly handoff: StoreHandoff;
  private readonly poller: StorePoller;
  private readonly follower: LogFollower;
  private readonly reader: LogReadAhead;

  constructor(
    current: Subscriber,
    db: Queryable,
    sender: HttpSender,
    private readonly logWriter: LogWriter,
    private readonly settings: LaneSettings,
    observer: DeliveryObserver,
    private readonly hooks: LaneHooks,
    private readonly log: Logger,
    random: () => number = Math.random,
  ) {
    this.state = new LaneState(current, logWriter, () => this.reader.readMore());
    this.attempts = new AttemptRunner(sender, settings, observer, this.breaker, log, random);
    this.writer = new StoreWriter(
      db,
      settings,
      {
        toRow: (delivery, now) => this.handoff.toRow(delivery, 0, now, null),
        batchStored: (batch) => {
          for (const delivery of batch) delivery.finished = true;
        },
        mayPoll: () => this.poll(),
      },
      log,
    );
    this.claimer = new StoreClaimer(db, current.id, settings, log);
    this.held = new HeldRecords(this.claimer, this.writer);
    const onUnexpected = (error: unknown): void => this.onUnexpected(error);
    this.handoff = new StoreHandoff(this.state, this.queue, this.writer, this.claimer, this.held, settings, observer, log, random, onUnexpected);
    this.poller = new StorePoller(this.state, this.claimer, this.writer, this.held, this.breaker, this.inFlight, settings, observer, log, {
      pump: () => this.pump(),
      attempt: (request) => this.attempt(request),
      nextRunAt: (failedAttempts, outcome) => this.handoff.nextRunAt(failedAttempts, outcome),
      polled: () => this.saveCursor(false),
      onUnexpected,
    });
    this.follower = new LogFollower(db, current.id, settings, observer, log);
    this.reader = new LogReadAhead(this.state, this.follower, this.queue, this.inFlight, logWriter, log, {
      handOut: () => this.pump(),
      allRead: () => this.maybeCaughtUp(),
      endpointDown: () => this.breaker.isOpen,
    });
  }

  // ---- What the coordinator reads and asks. ----

  /** The webhook as last loaded. */
  get webhook(): Subscriber {
    return this.state.webhook;
  }

  get mode(): LaneMode {
    return this.state.mode;
  }

  get isSending(): boolean {
    return this.state.sending;
  }

  /** Nothing in flight, queued, claimed, being read or written: the lane can be dropped. */
  get idle(): boolean {
    return (
      this.inFlight.count === 0 &&
      this.memoryCount === 0 &&
      this.claimer.claimedCount === 0 &&
      !this.writer.isFlushing &&
      this.writer.pendingWrites === 0 &&
      this.claimer.completionsPending === 0 &&
      !this.poller.isPolling &&
      !this.reader.isReading
    );
  }

  /** Deliveries held in memory (queued or in flight). */
  get memoryCount(): number {
    return this.queue.size + this.inFlightQueued.size + this.writer.buffered;
  }

  /** Memory holds as much as it may on the fast path: the stream waits. A lane reading the log never holds it. */
  get isFull(): boolean {
    if (this.state.mode !== 'memory') return false;
    return this.memoryCount >= this.settings.memoryQueueLimit || this.memoryBytes >= this.settings.memoryQueueBytes;
  }

  get inFlightCount(): number {
    return this.inFlight.count;
  }

  /** Age of the oldest unfinished memory delivery, in ms (0 when none). */
  oldestAgeMs(now: number): number {
    return this.queue.oldestAgeMs(now);
  }

  /** How long since an attempt last ended, in ms. */
  msSinceAttemptEnded(now: number): number {
    return now - this.lastAttemptEndedAt;
  }

  /** How long the oldest attempt under way from the queue has been running, in ms (0 when none). */
  oldestAttemptMs(now: number): number {
    let oldest = now;
    for (const startedAt of this.inFlightQueued.values()) if (startedAt < oldest) oldest = startedAt;
    return now - oldest;
  }

  /**
   * A new lane for a webhook that is behind: it reads the log from `cursor`, or (pending deliveries
   * but no cursor) after `start`, the position the slot resumes from. Its pending deliveries go first.
   */
  startFromLog(cursor: LogCursor | null, start: LogPosition): void {
    assert.ok(this.memoryCount === 0 && this.inFlight.count === 0, 'a lane starts from the log before it holds anything');
    this.state.setModeStore();
    this.held.forget();
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
    const previousUrl = this.state.webhook.targetUrl;
    this.state.setWebhook(next);
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
    this.state.setSendingOff();
    this.log.debug({ reason }, 'lane stops sending');
    if (this.state.mode === 'memory' && this.memoryCount > 0) await this.fallBehind();
    await this.claimer.releaseQueued();
    if (this.state.mode !== 'store') return;
    // Queued events are read again from the cursor once it is live.
    const next = this.reader.nextToHandle();
    for (const delivery of this.queue.takeAll()) if (!this.inFlightQueued.has(delivery)) delivery.finished = true;
    this.reader.dropped();
    this.follower.resumeAfter(justBefore(next));
    this.pausedAt = this.logWriter.lastPosition.lsn;
    await this.follower.save(next, { force: true, pausedAt: this.pausedAt });
  }

  /** The webhook is live again: events committed while it was off are skipped; the rest goes out. */
  enable(): void {
    this.state.setSendingOn();
    if (this.state.mode === 'store' && this.pausedAt !== null) this.follower.skipPaused(this.pausedAt, this.logWriter.lastPosition);
    this.pausedAt = null;
    this.poll();
  }

  /** The lane is dropped (its webhook is no longer live): the log writer stops counting it as behind. */
  dispose(): void {
    this.state.setLifecycleDisposed();
  }

  enqueue(delivery: MemoryDelivery): void {
    // Routed in the moment between the bridge disabling this webhook and the registry knowing it:
    // events committed while a webhook is disabled are not sent to it.
    if (!this.state.sending) return;
    // The log writer holds the transaction until the event is written; the reader reads it there.
    // Once closed the lane no longer counts as behind, so the writer may not keep it: held below.
    if (this.state.mode === 'store' && this.state.lifecycle !== 'closed') return;
    delivery.hold.hold();
    // Draining: the transaction stays unacknowledged (the hold is never released), so it is replayed.
    if (this.state.lifecycle !== 'running') return;
    this.memoryBytes += delivery.event.body.length;
    this.queue.push(delivery);
    this.pump();
  }

  // ---- Sending queued events (from memory or the log). ----

  private pump(): void {
    if (!this.state.mayStart) return;
    const behind = this.state.mode === 'store';
    if (behind && !this.held.isKnown) return;
    if (behind && !this.breaker.mayPoll(Date.now(), this.inFlight.count)) return;
    const limit = behind ? this.breaker.sendLimit(this.settings.concurrency) : this.settings.concurrency;
    let handedOut = 0;
    // An endpoint that is down gets one probe, and no record behind a held one is written meanwhile.
    while (this.inFlight.count < limit && !(behind && this.breaker.isOpen && handedOut > 0)) {
      const delivery = this.queue.next();
      if (!delivery) break;
      handedOut++;
      this.reader.handedOut(delivery);
      if (delivery.targetUrl !== this.state.webhook.targetUrl) this.handoff.setAside(delivery);
      else if (this.held.holds(delivery.event.recordKey)) this.handoff.writeBehind(delivery);
      else this.send(delivery).catch((error) => this.onUnexpected(error));
    }
    if (behind) this.reader.readMore();
  }

  private async send(delivery: MemoryDelivery): Promise<void> {
    this.inFlight.started();
    this.inFlightQueued.set(delivery, Date.now());
    const { event } = delivery;
    const outcome = await this.attempt({ eventId: event.id, body: event.body, eventName: event.name, commitTime: event.commitTime, previousAttempts: 0 });
    this.inFlight.ended();
    this.inFlightQueued.delete(delivery);
    if (this.state.lifecycle === 'closed') return;
    if (outcome.ok) {
      delivery.finished = true;
      this.queue.complete(delivery);
      this.release(delivery);
    } else if (this.state.mode === 'memory') {
      await this.fallBehind({ delivery, outcome });
    } else {
      await this.handoff.holdBack(delivery, outcome);
    }
    this.hooks.capacityFreed();
    if (this.state.mode === 'memory') this.pump();
    else this.poll();
  }

  /**
   * memory -> store. The log gets everything memory still needs, the cursor is saved before anything
   * is acknowledged, and queued deliveries stop holding their transactions (they stay queued and are
   * sent from here). `failed` is an attempt that just failed: it becomes a pending row.
   */
  private async fallBehind(failed?: { delivery: MemoryDelivery; outcome: FailedAttempt }): Promise<void> {
    // Coalesced bursts join the queue first: once behind, routed events are no longer taken.
    this.hooks.releaseHeld(this.state.webhook.id);
    this.state.setModeStore();
    // Every event routed so far was either queued here or is not for this webhook.
    this.follower.resumeAfter(this.logWriter.lastPosition);
    this.held.forget();
    const heldBack = failed ? this.handoff.holdBack(failed.delivery, failed.outcome) : Promise.resolve();
    const inMemory = this.queue.items();
    if (failed) inMemory.push(failed.delivery);
    await this.follower.save(this.reader.nextToHandle(), { force: true });
    await this.logWriter.writeBuffered();
    for (const delivery of inMemory) this.release(delivery);
    await heldBack;
    this.log.debug(
      { webhookId: this.state.webhook.id, queued: inMemory.length, reason: failed ? failed.outcome.reason : 'backlog' },
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

  /**
   * What was routed for another targetUrl than the current one is set aside as dead (StoreHandoff):
   * claimed rows are dropped, memory work goes to the log first, pending rows are marked once the
   * writes under way are done, and queued events routed for the previous URL as they come up.
   */
  private setAsideOldTargets(): void {
    const url = this.state.webhook.targetUrl;
    this.claimer.dropOtherTargets(url);
    if (this.state.mode === 'memory' && this.memoryCount > 0) this.fallBehind().catch((error) => this.onUnexpected(error));
    this.handoff
      .setAsideStored(url)
      .catch((error) => this.onUnexpected(error))
      .finally(() => this.poll());
  }

  // ---- Behind: the log and the store. ----

  /** Claims and sends due stored deliveries while there is room; reads the log on; returns to memory when caught up. */
  poll(): void {
    this.poller.poll();
  }

  /** store -> memory, once everything routed is read and handled and the store holds nothing pending. */
  private maybeCaughtUp(): void {
    if (!this.caughtUp()) return;
    this.state.setModeMemory(
      this.inFlight.count === 0 &&
        this.claimer.claimedCount === 0 &&
        this.writer.buffered === 0 &&
        !this.writer.isFlushing &&
        this.queue.oldestUnfinished() === undefined,
    );
    this.log.debug({ webhookId: this.state.webhook.id }, 'caught up; back on the fast path');
    this.follower.remove().catch((error) => this.onUnexpected(error));
  }

  private caughtUp(): boolean {
    return (
      this.state.mode === 'store' &&
      this.state.mayStart &&
      this.held.isEmpty &&
      this.inFlight.count === 0 &&
      this.queue.oldestUnfinished() === undefined &&
      this.claimer.claimedCount === 0 &&
      this.claimer.completionsPending === 0 &&
      this.writer.buffered === 0 &&
      !this.writer.isFlushing &&
      this.writer.pendingWrites === 0 &&
      !this.reader.isReading &&
      this.follower.hasRead(this.logWriter.lastPosition)
    );
  }

  /** Saves where the webhook reads from (at most once a second unless `force`). */
  saveCursor(force: boolean): void {
    if (this.state.mode !== 'store' || !this.state.sending) return;
    this.follower.save(this.reader.nextToHandle(), { force }).catch((error) => this.onUnexpected(error));
  }

  // ---- One attempt. ----

  private async attempt(request: AttemptRequest): Promise<AttemptOutcome> {
    const outcome = await this.attempts.run(this.state.webhook, request);
    this.lastAttemptEndedAt = Date.now();
    if (outcome.ok) {
      this.hooks.success(this.state.webhook.id);
      return outcome;
    }
    // 410 Gone: no further attempts, from this very moment (the state write follows).
    if (outcome.reason === 'gone') this.state.setSendingOff();
    if (this.state.lifecycle !== 'closed') await this.hooks.failure(this.state.webhook.id, outcome);
    return outcome;
  }

  /**
   * A bookkeeping write failed for a reason retrying cannot fix (or the pool is gone). The delivery's
   * transaction stays unacknowledged or its cursor does not pass it, so the next start sends it again:
   * loud, but nothing is lost.
   */
  private onUnexpected(error: unknown): void {
    if (this.state.lifecycle === 'closed') return;
    this.log.error({ err: coerceError(error), webhookId: this.state.webhook.id }, 'could not record a delivery outcome; it is sent again after a restart');
  }

  /** Shutdown: memory work goes to the log; waits for in-flight attempts up to the deadline; saves the cursor. */
  async drain(deadline: number): Promise<void> {
    this.state.setLifecycleDraining();
    if (this.state.mode === 'memory' && this.memoryCount > 0) await this.fallBehind();
    await this.writer.flushed();
    // Claimed rows never sent go back at once, not after their lease.
    await this.claimer.releaseQueued();
    while (this.inFlight.count > 0 && Date.now() < deadline) await sleep(DRAIN_POLL_MS);
    await this.writer.settled();
    await this.claimer.flushCompletions();
    if (this.state.mode === 'store' && this.state.sending) await this.follower.save(this.reader.nextToHandle(), { force: true });
    this.state.setLifecycleClosed();
  }
}
