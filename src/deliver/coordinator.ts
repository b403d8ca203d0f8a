import { setTimeout as sleep } from 'node:timers/promises';
import { coerceError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Subscriber, WebhookEvent } from '../route/types.js';
import { webhooksWithPending } from '../store/deliveryStore.js';
import { loadCursors, pauseCursors, type LogCursor } from '../store/eventLog.js';
import type { LogWriter } from '../store/logWriter.js';
import type { LogPosition, Queryable } from '../store/types.js';
import { disableWebhook, recordFailure, recordSuccesses } from '../store/webhookState.js';
import { withDatabaseRetry } from './databaseRetry.js';
import { Lane } from './lane.js';
import type { DeliveryObserver, FailedAttempt, HttpSender, LaneSettings, TransactionHold } from './types.js';

const SUCCESS_FLUSH_INTERVAL_MS = 5_000;
/** How often the age of each lane's oldest memory delivery is checked against storeAfterMs. */
const AGE_CHECK_MS = 100;
/** A delivery that waited this many times storeAfterMs in its queue makes its webhook fall behind (see checkAges). */
const QUEUE_WAIT_FACTOR = 10;
/** A lane full this long, with no attempt ending, while another has room falls behind (see checkAges). */
const FULL_GRACE_MS = 250;
/** Fast-path lanes look for rows made due from outside every this many ticks (storePollMs each). */
const DUE_CHECK_EVERY_TICKS = 4;
/** A failing webhook's state row is written at most this often (a dead endpoint fails a lot). */
const FAILURE_WRITE_INTERVAL_MS = 1_000;
/** How often a stopped lane is checked for its last attempts and writes to finish, before it is dropped. */
const RETIRE_POLL_MS = 50;

/**
 * Fans routed events out to one Lane per webhook and runs the lanes' timers: making slow webhooks fall
 * behind (onto the event log), polling the store, flushing per-webhook success times. The stream
 * awaits `waitForCapacity()` so memory stays bounded whatever the backlog.
 */
export class DeliveryCoordinator {
  private readonly lanes = new Map<string, Lane>();
  private tick: NodeJS.Timeout | null = null;
  private ageTimer: NodeJS.Timeout | null = null;
  /** When each memory lane became full, while it stays full. */
  private readonly fullSince = new Map<Lane, number>();
  private successTimer: NodeJS.Timeout | null = null;
  private readonly successes = new Map<string, Date>();
  private capacityWaiters: Array<() => void> = [];
  private startupPending = new Set<string>();
  private cursors = new Map<string, LogCursor>();
  /** Where a lane with pending deliveries but no cursor reads from at start: the slot's position. */
  private startPosition: LogPosition = { lsn: 0n, index: 0 };
  private ticks = 0;
  private readonly failing = new Map<string, { failingSince: number; lastWrite: number }>();
  private ticking = false;
  /** Lanes of webhooks no longer live: sending stopped, dropped once idle. */
  private readonly retiring = new Set<string>();
  /** Webhooks whose lane was dropped: a new one starts behind, where their deliveries wait. */
  private readonly dropped = new Set<string>();
  private draining = false;

  constructor(
    private readonly db: Queryable,
    private readonly sender: HttpSender,
    private readonly logWriter: LogWriter,
    private readonly settings: LaneSettings & { storePollMs: number },
    private readonly observer: DeliveryObserver,
    private readonly log: Logger,
    /**
     * Told when the bridge disables a webhook (410 Gone, failing too long): at once, and again once
     * `disabled_at` is committed (`recorded`).
     */
    private readonly onDisabled: (webhookId: string, recorded: boolean) => void,
    /** Events held for a webhook before delivery (coalescing) are handed on now. */
    private readonly releaseHeld: (webhookId: string) => void,
  ) {
    logWriter.onWritten(() => this.releaseWaiters());
  }

  /** Store writes retried until they succeed (see withDatabaseRetry), telling the pipeline of a server shutdown. */
  private retry<T>(what: string, run: () => Promise<T>): Promise<T> {
    return withDatabaseRetry(this.log, what, run, this.settings.onServerShuttingDown);
  }

  /** `slotPosition`: where the stream resumes (the slot's confirmed position). */
  async start(slotPosition: LogPosition): Promise<void> {
    // Lanes with a cursor or pending deliveries start behind so their records keep commit order.
    this.startupPending = await webhooksWithPending(this.db, this.settings.schema);
    this.cursors = await loadCursors(this.db, this.settings.schema);
    this.startPosition = slotPosition;
    this.tick = setInterval(() => void this.onTick(), this.settings.storePollMs);
    this.ageTimer = setInterval(() => this.checkAges(), AGE_CHECK_MS);
    this.successTimer = setInterval(() => void this.flushSuccesses(), SUCCESS_FLUSH_INTERVAL_MS);
  }

  /** Hands one event to every subscriber it was routed to; `hold` keeps its transaction unacknowledged. */
  route(event: WebhookEvent, subscribers: readonly Subscriber[], hold: TransactionHold): void {
    const now = Date.now();
    for (const subscriber of subscribers) {
      const own = event.bodyFor === null ? event : { ...event, body: event.bodyFor(subscriber) };
      this.laneFor(subscriber).enqueue({ event: own, hold, targetUrl: subscriber.targetUrl, enqueuedAt: now, finished: false });
    }
  }

  /** Resolves at once unless a memory lane or the log writer is full; then when there is room (see checkAges). */
  waitForCapacity(): Promise<void> | null {
    if (this.logWriter.isFull) return new Promise((resolve) => this.capacityWaiters.push(resolve));
    for (const lane of this.lanes.values()) {
      if (lane.isFull) return new Promise((resolve) => this.capacityWaiters.push(resolve));
    }
    return null;
  }

  /**
   * The registry changed. Live webhooks' lanes follow the new secret (next attempt) and targetUrl (the
   * backlog routed for the previous one is set aside); a webhook no longer live (deleted, soft-deleted,
   * disabled, invalid) starts no attempt from now on, its lane is dropped once its last attempts and
   * writes are done, and its stored deliveries wait in the store until it is live again.
   * `cursors`, when given, are the log cursors now: a new webhook with one (`webhooks add --from`)
   * starts behind, reading from it.
   */
  updateSubscribers(active: readonly Subscriber[], cursors?: Map<string, LogCursor>): void {
    if (cursors) this.cursors = cursors;
    const live = new Set<string>();
    for (const subscriber of active) {
      live.add(subscriber.id);
      const lane = this.lanes.get(subscriber.id);
      if (!lane) {
        // Every live webhook gets its lane now, so stored work of a webhook with no new events is found.
        this.laneFor(subscriber);
        continue;
      }
      lane.updateWebhook(subscriber);
      if (this.retiring.delete(subscriber.id)) lane.enable();
    }
    for (const [id, lane] of this.lanes) if (!live.has(id) && !this.retiring.has(id)) this.retire(id, lane);
    if (cursors) this.pauseOrphanedCursors(cursors, live);
  }

  /**
   * An active cursor of a webhook that is not live and has no lane (removed or disabled while the daemon
   * was stopped) would keep the log for ever: it is paused, as its lane would have done. `cursors` must
   * be read before the webhooks, so that a cursor's webhook, committed with it, is in `live`.
   */
  private pauseOrphanedCursors(cursors: Map<string, LogCursor>, live: Set<string>): void {
    const orphaned = [...cursors.values()].filter((c) => c.pausedAt === null && !live.has(c.webhookId) && !this.lanes.has(c.webhookId)).map((c) => c.webhookId);
    if (orphaned.length === 0) return;
    this.retry('pause the log cursors of webhooks no longer live', () =>
      pauseCursors(this.db, this.settings.schema, orphaned, this.logWriter.lastPosition.lsn),
    ).then(
      (count) => {
        if (count > 0) this.log.info({ webhookIds: orphaned }, `${count} log cursors of webhooks no longer live are paused: they keep nothing past retention`);
      },
      (error: unknown) => this.log.warn({ err: coerceError(error) }, 'could not pause the log cursors of webhooks no longer live'),
    );
  }

  private retire(id: string, lane: Lane): void {
    this.retiring.add(id);
    void (async () => {
      await lane.disable('webhook no longer live');
      while (this.retiring.has(id) && !this.draining && !lane.idle) await sleep(RETIRE_POLL_MS);
      if (!this.retiring.has(id) || this.draining || this.lanes.get(id) !== lane) return;
      this.retiring.delete(id);
      this.lanes.delete(id);
      this.fullSince.delete(lane);
      lane.dispose();
      this.dropped.add(id);
      this.log.info({ webhookId: id }, 'webhook no longer live: its lane is freed; stored deliveries wait until it is live again');
      this.releaseWaiters();
    })().catch((error) => this.log.warn({ err: coerceError(error), webhookId: id }, 'could not stop the lane of a webhook that is no longer live'));
  }

  laneStates(): Array<{ webhookId: string; mode: string; inMemory: number; inFlight: number }> {
    return [...this.lanes.values()].map((l) => ({ webhookId: l.webhook.id, mode: l.mode, inMemory: l.memoryCount, inFlight: l.inFlightCount }));
  }

  private laneFor(subscriber: Subscriber): Lane {
    let lane = this.lanes.get(subscriber.id);
    if (!lane) {
      lane = new Lane(
        subscriber,
        this.db,
        this.sender,
        this.logWriter,
        this.settings,
        this.observer,
        {
          failure: (id, outcome) => this.onFailure(id, outcome),
          success: (id) => {
            this.successes.set(id, new Date());
            this.failing.delete(id);
          },
          capacityFreed: () => this.releaseWaiters(),
          releaseHeld: (id) => this.releaseHeld(id),
        },
        this.log.child({ webhookId: subscriber.id }),
      );
      const cursor = this.cursors.get(subscriber.id) ?? null;
      if (cursor !== null || this.startupPending.has(subscriber.id) || this.dropped.has(subscriber.id)) {
        // At start the stream resumes from the slot; later, only what is routed from now on is new.
        const last = this.logWriter.lastPosition;
        lane.startFromLog(cursor, this.startupPending.has(subscriber.id) ? this.startPosition : { lsn: last.lsn, index: last.index + 1 });
      }
      this.cursors.delete(subscriber.id);
      this.startupPending.delete(subscriber.id);
      this.lanes.set(subscriber.id, lane);
    }
    return lane;
  }

  private releaseWaiters(): void {
    if (this.capacityWaiters.length === 0 || this.logWriter.isFull) return;
    for (const lane of this.lanes.values()) if (lane.isFull) return;
    const waiters = this.capacityWaiters;
    this.capacityWaiters = [];
    for (const resolve of waiters) resolve();
  }

  /**
   * A slow receiver must not hold the slot or the other webhooks back. A webhook falls behind when an
   * attempt has been running longer than storeAfterMs, when its oldest delivery waited
   * QUEUE_WAIT_FACTOR times as long (a receiver that answers, too slowly for the load), or when its lane
   * has been full for FULL_GRACE_MS, with no attempt ending meanwhile, while another has room: the
   * stream waits for it alone. A healthy webhook draining a backlog waits in its queue but each attempt
   * is quick, and lanes draining a backlog to several webhooks are full most of the time but their
   * attempts keep ending.
   */
  private checkAges(): void {
    const now = Date.now();
    let withRoom = false;
    for (const lane of this.lanes.values()) {
      if (lane.mode !== 'memory' || !lane.isFull) {
        withRoom = true;
        this.fullSince.delete(lane);
      } else if (!this.fullSince.has(lane)) this.fullSince.set(lane, now);
    }
    for (const lane of this.lanes.values()) {
      if (lane.mode !== 'memory') continue;
      const since = this.fullSince.get(lane);
      const slow =
        lane.oldestAttemptMs(now) > this.settings.storeAfterMs ||
        lane.oldestAgeMs(now) > QUEUE_WAIT_FACTOR * this.settings.storeAfterMs ||
        (withRoom && since !== undefined && now - since >= FULL_GRACE_MS && lane.msSinceAttemptEnded(now) >= FULL_GRACE_MS);
      if (slow) {
        this.fullSince.delete(lane);
        this.fallBehind(lane);
      }
    }
  }

  /** The lane reads the log from now on; its memory work no longer holds the stream or the slot. */
  private fallBehind(lane: Lane): void {
    lane.moveToStore().then(
      () => this.releaseWaiters(),
      (error: unknown) =>
        this.log.error(
          { err: coerceError(error), webhookId: lane.webhook.id },
          'could not move the deliveries of a slow webhook to the event log; their transactions stay unacknowledged until a restart replays them',
        ),
    );
  }

  private async onTick(): Promise<void> {
    if (this.ticking) return;
    this.ticking = true;
    try {
      for (const lane of this.lanes.values()) if (lane.mode === 'store') lane.poll();
      // Rows made due from outside (CLI redeliver, a crashed replica's leases) for lanes on the fast
      // path: a claim per lane (index-backed, empty for a healthy lane) every few ticks, rather than a
      // scan of the whole store, which costs seconds per tick once it holds a large backlog.
      if (++this.ticks % DUE_CHECK_EVERY_TICKS === 0) {
        for (const lane of this.lanes.values()) if (lane.mode === 'memory') lane.poll();
      }
    } catch (caught) {
      this.log.warn({ err: coerceError(caught) }, 'delivery tick failed');
    } finally {
      this.ticking = false;
    }
  }

  private async onFailure(webhookId: string, outcome: FailedAttempt): Promise<void> {
    // Before any await: a registry reload already under way must not route to a gone webhook again.
    if (outcome.reason === 'gone') this.onDisabled(webhookId, false);
    const now = Date.now();
    const known = this.failing.get(webhookId);
    let failingForMs: number;
    if (known && outcome.reason !== 'gone' && now - known.lastWrite < FAILURE_WRITE_INTERVAL_MS) {
      failingForMs = now - known.failingSince;
    } else {
      ({ failingForMs } = await this.retry('record a webhook failure', () =>
        recordFailure(this.db, this.settings.schema, webhookId, `${outcome.reason}: ${outcome.message}`),
      ));
      this.failing.set(webhookId, { failingSince: now - failingForMs, lastWrite: now });
    }
    let reason: string | null = null;
    if (outcome.reason === 'gone') reason = 'target answered 410 Gone';
    else if (failingForMs > this.settings.disableAfterMs)
      reason = `no successful delivery for ${Math.round(failingForMs / 3_600_000)} h while failing (last: ${outcome.reason})`;
    if (reason) {
      await this.retry('disable a webhook', () => disableWebhook(this.db, this.settings.schema, webhookId, reason!));
      this.log.warn({ webhookId, reason }, 'webhook disabled; re-enable with "pg-webhook-bridge webhooks enable <id>"');
      this.observer.webhookAutoDisabled(webhookId, outcome.reason === 'gone' ? 'gone' : 'failing');
      // At once, not at the next registry refresh: a 410 means no further attempts.
      this.lanes
        .get(webhookId)
        ?.disable(reason)
        .catch((error) =>
          this.log.warn({ err: coerceError(error), webhookId }, 'could not store the work of a disabled webhook; its transaction stays unacknowledged'),
        );
      this.onDisabled(webhookId, true);
    }
  }

  private async flushSuccesses(): Promise<void> {
    if (this.successes.size === 0) return;
    const batch = new Map(this.successes);
    this.successes.clear();
    await recordSuccesses(this.db, this.settings.schema, batch).catch((error) =>
      this.log.warn({ err: coerceError(error) }, 'could not record webhook successes'),
    );
  }

  /** Shutdown: stop timers, move memory work to the store, wait for attempts up to `deadline`. */
  async drain(deadline: number): Promise<void> {
    this.draining = true;
    if (this.tick) clearInterval(this.tick);
    if (this.ageTimer) clearInterval(this.ageTimer);
    this.ageTimer = null;
    if (this.successTimer) clearInterval(this.successTimer);
    this.tick = this.successTimer = null;
    await Promise.all([...this.lanes.values()].map((lane) => lane.drain(deadline)));
    await this.flushSuccesses();
    this.releaseWaiters();
  }
}
