import { coerceError } from '../errors.js';
import type { Logger } from '../log.js';
import { positionOf } from '../store/eventLog.js';
import type { LogWriter } from '../store/logWriter.js';
import type { LogPosition } from '../store/types.js';
import type { InFlight } from './inFlight.js';
import type { LaneView } from './laneState.js';
import type { LogFollower } from './logFollower.js';
import type { RecordQueue } from './recordQueue.js';
import type { MemoryDelivery } from './types.js';

/**
 * Events read from the log ahead of the attempts, per webhook: bounds a lagging webhook's memory. A
 * webhook whose endpoint is down is probed one event at a time and reads only once its queue is empty:
 * ten dead webhooks then hold next to nothing each.
 */
const READ_AHEAD = 500;
const READ_AHEAD_BYTES = 4 * 1024 * 1024;

/** What the reader asks of its lane. */
export interface LogReadAheadHooks {
  /** Events were queued, or the log is read to its head: hand them out. */
  handOut(): void;
  /** Everything written to the log is read: the lane may have caught up. */
  allRead(): void;
  /** The endpoint counts as down (its breaker is open). */
  endpointDown(): boolean;
}

/**
 * Reads one webhook's event log into its queue ahead of the attempts while it is behind and sending:
 * one read at a time, within bounds on the queued events and their bytes.
 */
export class LogReadAhead {
  private reading = false;
  /** Body bytes of events read from the log and not handed out yet. */
  private bytes = 0;

  constructor(
    private readonly lane: LaneView,
    private readonly follower: LogFollower,
    private readonly queue: RecordQueue<MemoryDelivery>,
    private readonly inFlight: InFlight,
    private readonly logWriter: Pick<LogWriter, 'lastPosition'>,
    private readonly log: Logger,
    private readonly hooks: LogReadAheadHooks,
  ) {}

  get isReading(): boolean {
    return this.reading;
  }

  /** A queued delivery was handed out: one read from the log no longer counts against the bound. */
  handedOut(delivery: MemoryDelivery): void {
    if (delivery.fromLog) this.bytes -= delivery.event.body.length;
  }

  /** The queue was emptied: its events are read again from the cursor. */
  dropped(): void {
    this.bytes = 0;
  }

  /** The first position not handled yet: the oldest unfinished queued event, or the one after the last read. */
  nextToHandle(): LogPosition {
    const oldest = this.queue.oldestUnfinished();
    if (oldest !== undefined) return positionOf(oldest.event);
    const read = this.follower.position;
    return { lsn: read.lsn, index: read.index + 1 };
  }

  /** Reads the next events of the log while the queue has room. */
  readMore(): void {
    if (this.reading || this.lane.mode !== 'store' || !this.lane.mayStart) return;
    if (this.queue.size + this.inFlight.count >= READ_AHEAD || this.bytes >= READ_AHEAD_BYTES) return;
    if (this.hooks.endpointDown() && this.queue.size > 0) return;
    if (this.follower.hasRead(this.logWriter.lastPosition)) {
      this.hooks.allRead();
      return;
    }
    this.reading = true;
    const before = this.follower.position;
    void (async () => {
      try {
        // An endpoint that is down gets one event at a time: the rest stays in the log, not in memory.
        const room = this.hooks.endpointDown() ? 1 : READ_AHEAD - this.queue.size - this.inFlight.count;
        const deliveries = await this.follower.read(this.lane.webhook, room);
        for (const delivery of deliveries) {
          this.bytes += delivery.event.body.length;
          this.queue.push(delivery);
        }
      } catch (caught) {
        this.log.warn({ err: coerceError(caught) }, 'could not read the event log; will retry');
      } finally {
        this.reading = false;
      }
      // Nothing new was written yet: the writer's next segment (onWritten) or the next tick reads on.
      if (this.follower.position !== before || this.follower.hasRead(this.logWriter.lastPosition)) this.hooks.handOut();
    })();
  }
}
