import { setImmediate as nextTick, setTimeout as sleep } from 'node:timers/promises';
import { coerceError } from '../errors.js';
import type { Logger } from '../log.js';
import type { LoggedEvent } from '../route/loggedEvent.js';
import { appendSegment, comparePositions, positionOf } from './eventLog.js';
import type { LogPosition, Queryable } from './types.js';

/** One segment holds at most this many events and about this many body bytes. */
const SEGMENT_EVENTS = 2_000;
const SEGMENT_BYTES = 64 * 1024;
/** Past this many events or bytes waiting for their write, the stream waits (see isFull). */
const BUFFER_EVENTS_LIMIT = 10_000;
const BUFFER_BYTES_LIMIT = 16 * 1024 * 1024;

/**
 * An event's hold on its transaction's acknowledgement (the replication stage's EventHold): held while
 * the event waits to be written.
 */
export interface LoggedEventHold {
  hold(): void;
  release(): void;
  /** Nothing holds the event any more: every webhook that gets it has it, nobody will ask for it. */
  readonly settled: boolean;
}

interface Pending {
  transaction: LoggedEventHold;
  /** The transaction the event belongs to: a reconnect abandons all of its events. */
  group: object;
  /** Events of it appended and not yet written. */
  unwritten: number;
  /** This writer holds the transaction's acknowledgement until they are written. */
  held: boolean;
}

interface Buffered {
  event: LoggedEvent;
  pending: Pending;
}

export interface LogWriterSettings {
  schema: string;
  /** Every event is written (delivery.retentionHours > 0), not only while some webhook is behind. */
  keepEverything: boolean;
  /**
   * How long a write waits for its segment to fill (0: none): under a steady stream, segments of a few
   * events each would make many small rows to write, index and read. The acknowledgement waits with it.
   */
  segmentFillMs?: number;
  /** Retries of a failed write (see withDatabaseRetry). */
  retry: <T>(what: string, run: () => Promise<T>) => Promise<T>;
}

/**
 * Appends routed events to the event log, once each, in commit order.
 *
 * While it is logging (every event is kept, or some webhook is behind and reads the log) each event's
 * transaction stays unacknowledged until its segment is committed: from then on the slot may move past
 * it, whatever the webhooks do. While it is not, events are only buffered (their transactions are
 * held by the deliveries in memory): when a webhook falls behind, `writeBuffered()` writes every one
 * not yet settled, so the log holds all that webhook still needs. Settled transactions leave the
 * buffer: the log never gets what every webhook already had.
 */
export class LogWriter {
  private buffer: Buffered[] = [];
  private bufferBytes = 0;
  private readonly pending = new Map<LoggedEventHold, Pending>();
  private behind = 0;
  private last: LogPosition = { lsn: 0n, index: 0 };
  private flushing: Promise<void> | null = null;
  private prunedAt = 0;
  private failed: Error | null = null;
  private readonly writtenListeners = new Set<() => void>();

  constructor(
    private readonly db: Queryable,
    private readonly settings: LogWriterSettings,
    private readonly log: Logger,
  ) {}

  /**
   * Where the stream resumes: events after it are routed (again) in this run. `lastPosition` starts
   * just before it, whatever an earlier run wrote past it (a replay writes those events again).
   */
  resumeFrom(position: LogPosition): void {
    this.last = { lsn: position.lsn, index: position.index - 1 };
  }

  get logging(): boolean {
    return this.settings.keepEverything || this.behind > 0;
  }

  /** The last event appended in this run (written or not): a reader at it has seen everything routed so far. */
  get lastPosition(): LogPosition {
    return this.last;
  }

  /** Events waiting for their write are past the limit: the stream should wait (see waitForCapacity). */
  get isFull(): boolean {
    return this.logging && (this.buffer.length >= BUFFER_EVENTS_LIMIT || this.bufferBytes >= BUFFER_BYTES_LIMIT);
  }

  /** Told after every committed segment (readers may read on, the stream may go on). */
  onWritten(listener: () => void): () => void {
    this.writtenListeners.add(listener);
    return () => this.writtenListeners.delete(listener);
  }

  /** A webhook fell behind: from now on every event is written. Pair with caughtUp(). */
  fellBehind(): void {
    this.behind++;
  }

  caughtUp(): void {
    this.behind--;
    if (this.behind < 0) throw new Error('log writer: more webhooks caught up than fell behind');
  }

  /**
   * Call once the event is routed (deliveries in memory hold it by then): while the writer is not
   * logging, an event nobody holds is not kept. `group` is its transaction.
   */
  append(event: LoggedEvent, transaction: LoggedEventHold, group: object): void {
    const position = positionOf(event);
    let pending = this.pending.get(transaction);
    if (pending === undefined) {
      pending = { transaction, group, unwritten: 0, held: false };
      this.pending.set(transaction, pending);
    }
    pending.unwritten++;
    this.buffer.push({ event, pending });
    this.bufferBytes += event.body.length + (event.bodyParts?.[1].length ?? 0);
    // A replay after a crash may append what an earlier run wrote: readers skip what they have read.
    if (comparePositions(position, this.last) > 0) this.last = position;
    if (!this.logging) {
      this.pruneSettled();
      return;
    }
    if (!pending.held) {
      pending.held = true;
      transaction.hold();
    }
    this.flushing ??= this.flush();
  }

  /** A transaction the stream will send again from its start (a reconnect): its unwritten events go. */
  abandon(group: object): void {
    const abandoned = this.buffer.filter((b) => b.pending.group === group);
    if (abandoned.length === 0) return;
    this.buffer = this.buffer.filter((b) => b.pending.group !== group);
    this.recountBytes();
    for (const { pending } of abandoned) {
      if (!this.pending.delete(pending.transaction) || !pending.held) continue;
      // A write under way may hold some of its events: when it ends, it must not release them again.
      pending.held = false;
      pending.transaction.release();
    }
  }

  /** Writes every buffered event not yet settled; resolves once they are committed. */
  async writeBuffered(): Promise<void> {
    this.flushing ??= this.flush();
    while (this.flushing !== null) await this.flushing;
    if (this.failed !== null) throw this.failed;
  }

  private pruneSettled(): void {
    // Cheap in the common case: settled transactions sit at the front.
    let front = 0;
    while (front < this.buffer.length && this.buffer[front]!.pending.transaction.settled) front++;
    if (front > 0) this.dropWritten(this.buffer.splice(0, front), false);
    // A transaction held for long (a coalesced burst, a slow webhook) keeps later settled ones behind it.
    if (this.buffer.length > 2 * this.prunedAt + 1_000) {
      const kept: Buffered[] = [];
      const dropped: Buffered[] = [];
      for (const b of this.buffer) (b.pending.transaction.settled ? dropped : kept).push(b);
      this.buffer = kept;
      this.dropWritten(dropped, false);
      this.prunedAt = kept.length;
    }
  }

  private async flush(): Promise<void> {
    await nextTick();
    const fillMs = this.settings.segmentFillMs ?? 0;
    if (fillMs > 0 && this.buffer.length < SEGMENT_EVENTS) await sleep(fillMs);
    try {
      while (this.buffer.length > 0 && this.failed === null) {
        let count = 0;
        let bytes = 0;
        while (count < this.buffer.length && count < SEGMENT_EVENTS && bytes < SEGMENT_BYTES) bytes += this.buffer[count++]!.event.body.length;
        const batch = this.buffer.splice(0, count);
        // Settled while it waited: every webhook had it, nobody will read it.
        const events = batch.filter((b) => !b.pending.transaction.settled || b.pending.held).map((b) => b.event);
        try {
          if (events.length > 0) await this.settings.retry('write the event log', () => appendSegment(this.db, this.settings.schema, events));
        } catch (error) {
          // Refused for good: the events stay unacknowledged (their holds are kept) and nothing is
          // written after them, so no reader goes past them; a restart replays them from the slot.
          this.failed = coerceError(error);
          this.log.error({ err: this.failed }, 'could not write the event log; changes stay unacknowledged until a restart replays them');
          this.buffer.unshift(...batch);
          return;
        }
        this.dropWritten(batch, true);
        for (const listener of this.writtenListeners) listener();
      }
    } finally {
      this.flushing = null;
    }
  }

  private dropWritten(batch: Buffered[], written: boolean): void {
    for (const { event, pending } of batch) {
      this.bufferBytes -= event.body.length + (event.bodyParts?.[1].length ?? 0);
      if (--pending.unwritten > 0) continue;
      this.pending.delete(pending.transaction);
      if (pending.held && written) pending.transaction.release();
    }
  }

  private recountBytes(): void {
    this.bufferBytes = 0;
    for (const b of this.buffer) this.bufferBytes += b.event.body.length + (b.event.bodyParts?.[1].length ?? 0);
  }
}
