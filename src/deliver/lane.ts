import type { Logger } from '../log.js';
import type { Subscriber } from '../route/types.js';
import { claimDeliveries, completeDeliveries, failDelivery, hasPending, insertDeliveries, releaseDeliveries, setAsideOtherTargets } from '../store/deliveryStore.js';
import type { DeliveryKey, NewStoredDelivery, Queryable, StoredDelivery } from '../store/types.js';
import { nextRetryDelayMs } from './backoff.js';
import type { AttemptOutcome, HttpSender } from './httpSender.js';
import { signRequest } from './sign.js';
import type { DeliveryObserver, LaneSettings, MemoryDelivery } from './types.js';
import { withDatabaseRetry } from './databaseRetry.js';
import { formatLsn } from '../replication/lsn.js';

/** Margin on top of the attempt timeout for a store lease: the lease must outlive the attempt. */
const LEASE_MARGIN_MS = 5_000;
/** Longest pause between probes of an endpoint that is down (refused, timed out, 502/503/504/429). */
const MAX_PROBE_INTERVAL_MS = 10_000;
/** Failures that say the endpoint as a whole is unavailable, not that one payload is unwelcome. */
const ENDPOINT_DOWN_REASONS = new Set(['connection_refused', 'connection_error', 'timeout', 'blocked_address']);
const ENDPOINT_DOWN_STATUSES = new Set([429, 502, 503, 504]);
/** One store insert carries at most this many deliveries and about this many payload bytes. */
const STORE_BATCH_ROWS = 1_000;
const STORE_BATCH_BYTES = 16 * 1024 * 1024;
/** A claim fetches this many times the webhook's concurrency, to amortise the round trip. */
const CLAIM_BATCH_FACTOR = 4;
/** Extra lease for claimed rows waiting in the local queue (also how long a crashed worker's claims wait). */
const CLAIM_QUEUE_LEASE_MS = 30_000;
/** Consecutive endpoint-level failures (refused, timed out, 502/503/504/429) that open the breaker. */
const BREAKER_THRESHOLD = 3;
/** last_error of a delivery set aside because its webhook's targetUrl changed. */
export const TARGET_CHANGED_REASON = 'targetUrl changed; redeliver to send to the new URL';

export interface LaneHooks {
  /** A failed attempt: records it and applies the disable rules (410, failing too long). */
  failure(webhookId: string, outcome: Extract<AttemptOutcome, { ok: false }>): Promise<void>;
  success(webhookId: string): void;
  /** Memory was freed: a stream waiting for capacity may go on. */
  capacityFreed(): void;
}

/**
 * All deliveries to one webhook.
 *
 * States:
 * - `memory` (fast path): deliveries wait in per-record FIFO queues; the head of each record's queue may
 *   be in flight, up to `concurrency` at once. Nothing is written to the database.
 * - `store` (backlog): new deliveries are written to the store in batches; a poller claims the oldest
 *   pending delivery of each record and sends it.
 *
 * memory -> store ("spill") when an attempt fails, when the oldest delivery waited longer than
 * `storeAfterMs`, when the webhook stops being live, or at shutdown: everything queued is stored,
 * in-flight ones are stored under a lease and finish there. store -> memory when the store holds
 * nothing pending for the webhook and no write is under way. Either way each record's deliveries go
 * out in commit order and only the record with the failing head waits.
 *
 * Independently, sending is on or off (`disabled`): stopSending() (webhook deleted, soft-deleted,
 * disabled or invalid; 410 Gone) starts no attempt from that moment and gives back claimed rows;
 * resumeSending() polls the store again. Every delivery remembers the targetUrl it was routed for,
 * and a delivery is only ever sent to that URL: updateWebhook() with a new URL sets the older ones
 * aside (dead, listed, redeliverable).
 */
export class Lane {
  mode: 'memory' | 'store' = 'memory';
  disabled = false;
  private readonly queues = new Map<string, MemoryDelivery[]>();
  private ready: string[] = [];
  /** Memory deliveries in arrival order; finished ones are trimmed lazily from the front. */
  private arrivals: MemoryDelivery[] = [];
  private readonly inFlightMemory = new Set<MemoryDelivery>();
  private inFlight = 0;
  private queued = 0;
  private storeBuffer: MemoryDelivery[] = [];
  private storeFlush: Promise<void> | null = null;
  /**
   * Store writes run one after another, and the poller waits for them: a later event of a record must
   * never become visible (and claimable) before an earlier one that is still being written.
   */
  private writeChain: Promise<void> = Promise.resolve();
  private pendingWrites = 0;
  /** Bumped by every store write, so a "nothing pending" answer that raced a write is ignored. */
  private storeGeneration = 0;
  private completions: DeliveryKey[] = [];
  private completionTimer: NodeJS.Timeout | null = null;
  private polling = false;
  private repoll = false;
  private stopping = false;
  /** After drain(): the pool is gone, so late outcomes are left to the store's lease expiry. */
  private closed = false;
  /**
   * Circuit breaker: while the endpoint is down, the store is probed with one delivery at a time, no
   * sooner than `probeAt`, instead of every due record being retried at once. A success closes it.
   */
  private endpointDown = false;
  private endpointFailures = 0;
  private probeAt = 0;
  /** Claimed store rows waiting for a free slot. */
  private claimed: StoredDelivery[] = [];

  constructor(
    public webhook: Subscriber,
    private readonly db: Queryable,
    private readonly sender: HttpSender,
    private readonly settings: LaneSettings,
    private readonly observer: DeliveryObserver,
    private readonly hooks: LaneHooks,
    private readonly log: Logger,
    private readonly random: () => number = Math.random,
  ) {}

  /**
   * The webhook as last loaded. A new secret applies from the next attempt (each is signed afresh); a
   * new targetUrl sets aside what was routed for the previous one.
   */
  updateWebhook(next: Subscriber): void {
    const previousUrl = this.webhook.targetUrl;
    this.webhook = next;
    if (next.targetUrl !== previousUrl) this.setAsideOldTargets();
  }

  /**
   * Deliveries routed for another targetUrl than the current one become dead with a reason, in memory
   * and in the store, and are logged once: they are listed and `deliveries redeliver` sends them to
   * the current URL. The poller waits until this is done.
   */
  setAsideOldTargets(): void {
    const url = this.webhook.targetUrl;
    this.claimed = this.claimed.filter((row) => row.targetUrl === null || row.targetUrl === url);
    // Memory holds only deliveries routed before the change: stored first (with their URL), then set aside.
    if (this.mode === 'memory' && this.memoryCount > 0) this.spill().catch((error) => this.onUnexpected(error));
    const flushing = this.storeFlush;
    this.pendingWrites++;
    void (async () => {
      try {
        // Once these settle, everything routed before the change is in the store; later rows carry the new URL.
        await flushing;
        await this.writeChain.catch(() => undefined);
        const count = await withDatabaseRetry(this.log, 'set aside deliveries routed for a previous targetUrl', () =>
          setAsideOtherTargets(this.db, this.settings.schema, this.webhook.id, url, TARGET_CHANGED_REASON),
        );
        if (count > 0) {
          this.log.warn(
            { setAside: count },
            `targetUrl changed: ${count} pending deliveries routed for the previous URL are set aside as dead; "pg-webhook-bridge deliveries redeliver --webhook ${this.webhook.id} --since <time>" sends them to the new URL`,
          );
        }
      } catch (error) {
        this.onUnexpected(error);
      } finally {
        this.pendingWrites--;
        this.poll();
      }
    })();
  }

  /**
   * No attempt starts from now on (the webhook was deleted, soft-deleted, disabled or made invalid):
   * memory work goes to the store, claimed rows are given back. Resolves once both are written.
   */
  async stopSending(): Promise<void> {
    this.disabled = true;
    const unsent = this.claimed.splice(0);
    const spilled = this.mode === 'memory' && this.memoryCount > 0 ? this.spill() : Promise.resolve();
    const released =
      unsent.length === 0
        ? Promise.resolve()
        : withDatabaseRetry(this.log, 'release claims', () => releaseDeliveries(this.db, this.settings.schema, unsent.map((r) => ({ eventId: r.eventId, webhookId: r.webhookId }))));
    await Promise.all([spilled, released]);
  }

  /** The webhook is live again: its stored deliveries go out. */
  resumeSending(): void {
    this.disabled = false;
    this.poll();
  }

  /** Nothing in flight, held in memory, claimed or being written: the lane can be dropped. */
  get idle(): boolean {
    return (
      this.inFlight === 0 &&
      this.memoryCount === 0 &&
      this.claimed.length === 0 &&
      this.storeFlush === null &&
      this.pendingWrites === 0 &&
      this.completions.length === 0 &&
      !this.polling
    );
  }

  /** Deliveries held in memory (queued or in flight): what back-pressure looks at. */
  get memoryCount(): number {
    return this.queued + this.inFlightMemory.size + this.storeBuffer.length;
  }

  get isFull(): boolean {
    return this.memoryCount >= this.settings.memoryQueueLimit || this.memoryBytes >= this.settings.memoryQueueBytes;
  }

  /** Payload bytes held by this lane: bodies are shared between webhooks, so this over-counts, safely. */
  private memoryBytes = 0;

  private track(delivery: MemoryDelivery, sign: 1 | -1): void {
    this.memoryBytes += sign * delivery.event.body.length;
  }

  get inFlightCount(): number {
    return this.inFlight;
  }

  enqueue(delivery: MemoryDelivery): void {
    // Routed in the moment between the bridge disabling this webhook and the registry knowing it:
    // events committed while a webhook is disabled are not sent to it.
    if (this.disabled) return;
    delivery.hold.hold();
    this.track(delivery, 1);
    if (this.mode === 'store' || this.stopping) {
      this.storeBuffer.push(delivery);
      this.scheduleStoreFlush();
      return;
    }
    const key = delivery.event.recordKey;
    let queue = this.queues.get(key);
    if (!queue) {
      queue = [];
      this.queues.set(key, queue);
    }
    queue.push(delivery);
    if (queue.length === 1) this.ready.push(key);
    this.arrivals.push(delivery);
    this.queued++;
    this.pump();
  }

  /** Age of the oldest unfinished memory delivery, in ms (0 when none). */
  oldestAgeMs(now: number): number {
    while (this.arrivals.length > 0 && this.arrivals[0].finished) this.arrivals.shift();
    return this.arrivals.length > 0 ? now - this.arrivals[0].enqueuedAt : 0;
  }

  private pump(): void {
    while (this.mode === 'memory' && !this.disabled && this.inFlight < this.settings.concurrency && this.ready.length > 0) {
      const key = this.ready.shift()!;
      const delivery = this.queues.get(key)![0];
      this.queued--;
      this.sendFromMemory(delivery).catch((error) => this.onUnexpected(error));
    }
  }

  private async sendFromMemory(delivery: MemoryDelivery): Promise<void> {
    this.inFlight++;
    this.inFlightMemory.add(delivery);
    const outcome = await this.attempt(delivery.event.id, delivery.event.body, delivery.event.name, delivery.event.commitTime, 0);
    this.inFlight--;
    this.inFlightMemory.delete(delivery);
    delivery.finished = true;
    if (this.closed) return;
    if (delivery.stored) {
      // Spilled while in flight: it lives in the store now, so its outcome is recorded there.
      await delivery.stored;
      await this.recordStoredOutcome({ eventId: delivery.event.id, webhookId: this.webhook.id }, outcome, 0);
    } else if (outcome.ok) {
      delivery.hold.release();
      this.track(delivery, -1);
      const key = delivery.event.recordKey;
      const queue = this.queues.get(key);
      if (queue && queue[0] === delivery) {
        queue.shift();
        if (queue.length === 0) this.queues.delete(key);
        else this.ready.push(key);
      }
    } else {
      await this.spill({ delivery, outcome });
    }
    this.hooks.capacityFreed();
    if (this.mode === 'memory') this.pump();
    else this.poll();
  }

  /**
   * memory -> store. `failed` is an attempt that just failed: it is stored with its next run time.
   * Resolves once everything spilled is durable (and so acknowledged as far as this lane goes).
   */
  async spill(failed?: { delivery: MemoryDelivery; outcome: Extract<AttemptOutcome, { ok: false }> }): Promise<void> {
    this.mode = 'store';
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
      rows.push({ ...this.toRow(failed.delivery, 1, runAt ?? new Date(now), failed.outcome, null) });
      spilled.push(failed.delivery);
    }
    for (const queue of this.queues.values()) {
      for (const delivery of queue) {
        if (delivery === failed?.delivery || this.inFlightMemory.has(delivery)) continue;
        rows.push(this.toRow(delivery, 0, new Date(now), null, null));
        spilled.push(delivery);
        delivery.finished = true;
      }
    }
    this.queues.clear();
    this.ready = [];
    this.arrivals = [];
    this.queued = 0;
    if (rows.length === 0) return;
    const written = this.write('store spilled deliveries', rows);
    for (const delivery of this.inFlightMemory) delivery.stored = written;
    await written;
    for (const delivery of spilled) {
      delivery.hold.release();
      this.track(delivery, -1);
    }
    this.log.debug({ webhookId: this.webhook.id, stored: rows.length, reason: failed ? failed.outcome.reason : 'backlog' }, 'deliveries moved to the store');
    if (failed && this.dead(1, failed.outcome)) this.observer.attempt(this.webhook.id, failed.outcome, 'dead', failed.delivery.event);
    this.poll();
  }

  private scheduleStoreFlush(): void {
    if (this.storeFlush) return;
    this.storeFlush = (async () => {
      // One tick of batching: a transaction's deliveries to this webhook land in one insert.
      await new Promise((resolve) => setImmediate(resolve));
      while (this.storeBuffer.length > 0) {
        let count = 0;
        let bytes = 0;
        while (count < this.storeBuffer.length && count < STORE_BATCH_ROWS && bytes < STORE_BATCH_BYTES) bytes += this.storeBuffer[count++].event.body.length;
        const batch = this.storeBuffer.splice(0, count);
        const now = new Date();
        await this.write('store new deliveries', batch.map((d) => this.toRow(d, 0, now, null, null)));
        for (const delivery of batch) {
          delivery.hold.release();
          this.track(delivery, -1);
        }
        this.hooks.capacityFreed();
      }
      this.storeFlush = null;
      this.poll();
    })();
  }

  /** Appends an insert to the write chain; resolves when it is committed. */
  private write(what: string, rows: NewStoredDelivery[]): Promise<void> {
    this.storeGeneration++;
    this.pendingWrites++;
    const written = this.writeChain.then(() => withDatabaseRetry(this.log, what, () => insertDeliveries(this.db, this.settings.schema, rows, this.settings.workerId)));
    this.writeChain = written.finally(() => {
      this.pendingWrites--;
      if (this.pendingWrites === 0) this.poll();
    });
    return written;
  }

  /** Claims and sends due stored deliveries while there is room; flips back to memory when empty. */
  poll(): void {
    if (this.disabled || this.stopping) return;
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
        } while (this.repoll && !this.stopping);
      } catch (error) {
        this.log.warn({ err: error, webhookId: this.webhook.id }, 'store poll failed; will retry');
      } finally {
        this.polling = false;
      }
    })();
  }

  private async pollOnce(): Promise<void> {
    if (this.endpointDown && (Date.now() < this.probeAt || this.inFlight > 0)) return;
    const limit = this.endpointDown ? 1 : this.settings.concurrency;
    this.dispatchClaimed(limit);
    if (this.claimed.length > 0 || this.inFlight >= limit || this.pendingWrites > 0) return;
    const generation = this.storeGeneration;
    await this.flushCompletions();
    // Claims fetch more than the free slots: one round trip then feeds many attempts. The lease covers
    // the wait in the local queue as well as the attempt.
    const batch = this.endpointDown ? 1 : this.settings.concurrency * CLAIM_BATCH_FACTOR;
    const webhook = { id: this.webhook.id, targetUrl: this.webhook.targetUrl, table: this.settings.webhooksTable };
    const rows = await claimDeliveries(this.db, this.settings.schema, webhook, this.settings.workerId, batch, this.settings.timeoutMs + LEASE_MARGIN_MS + CLAIM_QUEUE_LEASE_MS);
    if (this.disabled || this.stopping) {
      // Sending stopped while the claim ran: give the rows back now rather than when their lease ends.
      if (rows.length > 0) await withDatabaseRetry(this.log, 'release claims', () => releaseDeliveries(this.db, this.settings.schema, rows.map((r) => ({ eventId: r.eventId, webhookId: r.webhookId }))));
      return;
    }
    this.claimed.push(...rows);
    this.dispatchClaimed(limit);
    if (rows.length === batch) {
      this.repoll = true;
      return;
    }
    if (rows.length > 0 || this.mode !== 'store') return;
    if (this.inFlight > 0 || this.storeBuffer.length > 0 || this.storeFlush) return;
    if (await hasPending(this.db, this.settings.schema, this.webhook.id)) return;
    if (generation === this.storeGeneration && this.storeBuffer.length === 0 && !this.storeFlush && this.inFlight === 0 && this.claimed.length === 0) {
      this.mode = 'memory';
      this.log.debug({ webhookId: this.webhook.id }, 'store drained; back on the fast path');
    }
  }

  /** Sends claimed rows while there are free slots; each completion polls again. */
  private dispatchClaimed(limit: number): void {
    while (this.claimed.length > 0 && this.inFlight < limit && !this.stopping && !this.disabled) {
      const row = this.claimed.shift()!;
      // Claimed for a targetUrl that has changed since: setAsideOldTargets() marks it, it is never sent.
      if (row.targetUrl !== null && row.targetUrl !== this.webhook.targetUrl) continue;
      this.inFlight++;
      void (async () => {
        const outcome = await this.attempt(row.eventId, row.body, row.eventName, row.createdAt, row.attempts);
        this.inFlight--;
        if (this.closed) return;
        await this.recordStoredOutcome({ eventId: row.eventId, webhookId: row.webhookId }, outcome, row.attempts);
        this.poll();
      })().catch((error) => this.onUnexpected(error));
    }
  }

  private async recordStoredOutcome(key: DeliveryKey, outcome: AttemptOutcome, previousAttempts: number): Promise<void> {
    if (outcome.ok) {
      this.completions.push(key);
      if (this.completions.length >= 200) await this.flushCompletions();
      else this.completionTimer ??= setTimeout(() => void this.flushCompletions(), 20);
      return;
    }
    const attempts = previousAttempts + 1;
    const runAt = this.nextRunAt(attempts, outcome);
    if (runAt === null) this.observer.attempt(this.webhook.id, outcome, 'dead', { name: '', commitTime: new Date() });
    await withDatabaseRetry(this.log, 'record a failed attempt', () =>
      failDelivery(this.db, this.settings.schema, key, { attempts, runAt, error: describeOutcome(outcome), statusCode: outcome.statusCode ?? null }),
    );
  }

  private async flushCompletions(): Promise<void> {
    if (this.completionTimer) clearTimeout(this.completionTimer);
    this.completionTimer = null;
    if (this.completions.length === 0) return;
    const keys = this.completions;
    this.completions = [];
    await withDatabaseRetry(this.log, 'complete deliveries', () => completeDeliveries(this.db, this.settings.schema, keys));
  }

  /** One HTTP attempt, signed afresh (new timestamp and nonce per attempt). */
  private async attempt(eventId: string, body: string, eventName: string, commitTime: Date, previousAttempts: number): Promise<AttemptOutcome> {
    const headers = signRequest(body, this.webhook.secret, eventId, Date.now(), this.settings.userAgent);
    const outcome = await this.sender.send(this.webhook.targetUrl, body, headers);
    if (outcome.ok) {
      this.endpointDown = false;
      this.endpointFailures = 0;
      this.hooks.success(this.webhook.id);
      this.observer.attempt(this.webhook.id, outcome, 'success', { name: eventName, commitTime });
    } else {
      // 410 Gone: no further attempts, from this very moment (the state write follows).
      if (outcome.reason === 'gone') this.disabled = true;
      // One slow or refused request is not an outage: only a run of them opens the breaker.
      if ((ENDPOINT_DOWN_REASONS.has(outcome.reason) || ENDPOINT_DOWN_STATUSES.has(outcome.statusCode ?? 0)) && ++this.endpointFailures >= BREAKER_THRESHOLD) {
        this.endpointDown = true;
        const delay = nextRetryDelayMs(Math.max(1, previousAttempts + 1), this.settings.retryScheduleS, this.random, outcome.retryAfterMs) ?? MAX_PROBE_INTERVAL_MS;
        this.probeAt = Date.now() + Math.min(delay, MAX_PROBE_INTERVAL_MS);
      }
      const label = outcome.reason === 'blocked_address' ? 'refused' : 'retry';
      this.observer.attempt(this.webhook.id, outcome, label, { name: eventName, commitTime });
      // webhookId comes with this lane's child logger.
      this.log.info({ eventId, attempt: previousAttempts + 1, reason: outcome.reason, statusCode: outcome.statusCode, error: outcome.message }, 'delivery attempt failed');
      if (!this.closed) await this.hooks.failure(this.webhook.id, outcome);
    }
    return outcome;
  }

  private dead(attempts: number, outcome: Extract<AttemptOutcome, { ok: false }>): boolean {
    return this.nextRunAt(attempts, outcome) === null;
  }

  private nextRunAt(failedAttempts: number, outcome: Extract<AttemptOutcome, { ok: false }>): Date | null {
    const delay = nextRetryDelayMs(failedAttempts, this.settings.retryScheduleS, this.random, outcome.retryAfterMs);
    return delay === null ? null : new Date(Date.now() + delay);
  }

  private toRow(delivery: MemoryDelivery, attempts: number, runAt: Date, outcome: Extract<AttemptOutcome, { ok: false }> | null, lockedUntil: Date | null): NewStoredDelivery {
    const { event } = delivery;
    const dead = outcome !== null && this.dead(attempts, outcome);
    return {
      webhookId: this.webhook.id,
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

  /**
   * A bookkeeping write failed for a reason retrying cannot fix (or the pool is gone). The delivery's
   * transaction stays unacknowledged, so the next start replays it: loud, but nothing is lost.
   */
  private onUnexpected(error: unknown): void {
    if (this.closed) return;
    this.log.error({ err: error, webhookId: this.webhook.id }, 'could not record a delivery outcome; its transaction stays unacknowledged');
  }

  /** Shutdown: everything in memory goes to the store; waits for in-flight attempts up to the deadline. */
  async drain(deadline: number): Promise<void> {
    this.stopping = true;
    if (this.mode === 'memory' && this.memoryCount > 0) await this.spill();
    while (this.storeFlush) await this.storeFlush;
    // Claimed rows never sent go back at once, not after their lease.
    const unsent = this.claimed.splice(0);
    if (unsent.length > 0) await withDatabaseRetry(this.log, 'release claims', () => releaseDeliveries(this.db, this.settings.schema, unsent.map((r) => ({ eventId: r.eventId, webhookId: r.webhookId }))));
    while (this.inFlight > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    await this.writeChain;
    await this.flushCompletions();
    this.closed = true;
  }
}

function describeOutcome(outcome: Extract<AttemptOutcome, { ok: false }>): string {
  return outcome.statusCode ? `${outcome.reason} (HTTP ${outcome.statusCode}): ${outcome.message}` : `${outcome.reason}: ${outcome.message}`;
}
