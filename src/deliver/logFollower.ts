import type { Logger } from '../log.js';
import { eventForWebhook } from '../route/loggedEvent.js';
import type { Subscriber } from '../route/types.js';
import type { Lsn } from '../replication/lsn.js';
import { comparePositions, deleteCursor, positionOf, readEvents, saveCursor } from '../store/eventLog.js';
import type { LogPosition, Queryable } from '../store/types.js';
import type { FilteredObserver } from '../webhooks/optionRouter.js';
import { withDatabaseRetry } from './databaseRetry.js';
import type { MemoryDelivery } from './types.js';

/** A read fetches at most this many segments. */
const READ_SEGMENTS = 1;
/** The cursor row is written at most this often while the webhook reads on (and at every stop). */
const CURSOR_SAVE_INTERVAL_MS = 1_000;

/** What an event read from the log holds back: nothing, the log has it. */
export const NO_HOLD = { hold(): void {}, release(): void {} };

/** The position just before `position`: reading resumes at `position` itself. */
export function justBefore(position: LogPosition): LogPosition {
  return { lsn: position.lsn, index: position.index - 1 };
}

export interface LogFollowerSettings {
  schema: string;
  onServerShuttingDown?: () => void;
}

/**
 * One webhook's reading of the event log: where it has read to, which events it skips (committed
 * while it was disabled; routed before its targetUrl changed) and its cursor row.
 */
export class LogFollower {
  /** The last event read. */
  private readPos: LogPosition = { lsn: 0n, index: 0 };
  /** Events committed after `after` up to `through` were committed while the webhook was disabled. */
  private skip: { after: Lsn; through: LogPosition } | null = null;
  /** Events up to `through` were routed for `url`, the webhook's previous targetUrl. */
  private previousTarget: { url: string; through: LogPosition } | null = null;
  private saved = '';
  private savedAt = 0;
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly db: Queryable,
    private readonly webhookId: string,
    private readonly settings: LogFollowerSettings,
    private readonly filtered: FilteredObserver,
    private readonly log: Logger,
  ) {}

  get position(): LogPosition {
    return this.readPos;
  }

  /** Reading goes on after `position` (the last event already read, or handled in memory). */
  resumeAfter(position: LogPosition): void {
    this.readPos = position;
  }

  /** Events committed after `pausedAt` (while the webhook was disabled) up to `through` are not sent. */
  skipPaused(pausedAt: Lsn, through: LogPosition): void {
    this.skip = { after: pausedAt, through };
  }

  /** The targetUrl changed: events up to `through` were routed for `url` and are set aside, not sent. */
  targetChanged(url: string, through: LogPosition): void {
    this.previousTarget = { url, through };
  }

  /** Whether everything up to `head` has been read. */
  hasRead(head: LogPosition): boolean {
    return comparePositions(this.readPos, head) >= 0;
  }

  /**
   * The next events of the log for `subscriber` (at most `max`), as deliveries that hold nothing back;
   * [] when none is written yet.
   */
  async read(subscriber: Subscriber, max = Infinity): Promise<MemoryDelivery[]> {
    const from = { lsn: this.readPos.lsn, index: this.readPos.index + 1 };
    const events = await readEvents(this.db, this.settings.schema, from, READ_SEGMENTS);
    const deliveries: MemoryDelivery[] = [];
    const now = Date.now();
    for (const logged of events) {
      if (deliveries.length >= max) break;
      const position = positionOf(logged);
      // Overlapping segments (a replay after a crash wrote some events twice): each is read once.
      if (comparePositions(position, this.readPos) <= 0) continue;
      this.readPos = position;
      if (this.skip !== null && logged.commitLsn > this.skip.after && comparePositions(position, this.skip.through) <= 0) continue;
      const outcome = eventForWebhook(logged, subscriber);
      if (outcome === null) continue;
      if ('filtered' in outcome) {
        this.filtered.eventFiltered(subscriber.id, outcome.filtered);
        continue;
      }
      const routedFor =
        this.previousTarget !== null && comparePositions(position, this.previousTarget.through) <= 0 ? this.previousTarget.url : subscriber.targetUrl;
      deliveries.push({ event: outcome.event, hold: NO_HOLD, targetUrl: routedFor, enqueuedAt: now, finished: false, fromLog: true });
    }
    return deliveries;
  }

  /**
   * Saves the cursor: every event before `next` is handled. Skipped when unchanged, or (unless `force`)
   * when saved less than a second ago. `pausedAt`: the webhook stopped (disabled or removed).
   */
  save(next: LogPosition, options: { force?: boolean; pausedAt?: Lsn | null } = {}): Promise<void> {
    const pausedAt = options.pausedAt ?? null;
    const key = `${next.lsn}/${next.index}/${pausedAt}`;
    if (key === this.saved || (!options.force && Date.now() - this.savedAt < CURSOR_SAVE_INTERVAL_MS)) return this.chain;
    this.saved = key;
    this.savedAt = Date.now();
    return this.enqueue('save a log cursor', () => saveCursor(this.db, this.settings.schema, this.webhookId, next, pausedAt));
  }

  /** The webhook keeps up from memory again: it no longer needs the log. */
  remove(): Promise<void> {
    this.saved = '';
    this.skip = null;
    this.previousTarget = null;
    return this.enqueue('delete a log cursor', () => deleteCursor(this.db, this.settings.schema, this.webhookId));
  }

  private enqueue(what: string, run: () => Promise<void>): Promise<void> {
    const done = this.chain.then(() => withDatabaseRetry(this.log, what, run, this.settings.onServerShuttingDown));
    this.chain = done.catch(() => undefined);
    return done;
  }
}
