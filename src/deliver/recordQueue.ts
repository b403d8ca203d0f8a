/** What the queue needs of an item: when it arrived, and whether it still waits (for its age). */
export interface QueuedItem {
  enqueuedAt: number;
  /** No longer waiting (attempted, or moved elsewhere): its age no longer counts. */
  finished: boolean;
}

/**
 * FIFO queues per record key, with head-of-line per record: only the head of a record's queue is
 * handed out (`next`), and that record's next item becomes ready only once the head is `complete`d.
 * A record whose head is failing thus holds back its own later items and no other record's.
 * Pure: no I/O, no timers.
 */
export class RecordQueue<T extends QueuedItem> {
  private readonly queues = new Map<string, T[]>();
  /** Records whose head may be handed out, in the order they became ready. */
  private ready: string[] = [];
  /** Items in arrival order; finished ones are trimmed lazily from the front. */
  private arrivals: T[] = [];
  private waiting = 0;

  constructor(private readonly keyOf: (item: T) => string) {}

  /** Items not handed out yet. */
  get size(): number {
    return this.waiting;
  }

  push(item: T): void {
    const key = this.keyOf(item);
    let queue = this.queues.get(key);
    if (!queue) {
      queue = [];
      this.queues.set(key, queue);
    }
    queue.push(item);
    if (queue.length === 1) this.ready.push(key);
    this.arrivals.push(item);
    this.waiting++;
  }

  /** The head of the next ready record, now handed out; undefined when no record is ready. */
  next(): T | undefined {
    const key = this.ready.shift();
    if (key === undefined) return undefined;
    this.waiting--;
    return this.queues.get(key)![0];
  }

  /** A handed-out head is done: its record's next item (if any) becomes ready. */
  complete(item: T): void {
    const key = this.keyOf(item);
    const queue = this.queues.get(key);
    if (!queue || queue[0] !== item) return;
    queue.shift();
    if (queue.length === 0) this.queues.delete(key);
    else this.ready.push(key);
  }

  /** Every item still queued, handed out or not, record by record; the queue keeps them. */
  items(): T[] {
    return [...this.queues.values()].flat();
  }

  /** Every item still queued, handed out or not, record by record; the queue is empty afterwards. */
  takeAll(): T[] {
    const items = [...this.queues.values()].flat();
    this.queues.clear();
    this.ready = [];
    this.arrivals = [];
    this.waiting = 0;
    return items;
  }

  /** Age of the oldest unfinished item, in ms (0 when none). */
  oldestAgeMs(now: number): number {
    const oldest = this.oldestUnfinished();
    return oldest === undefined ? 0 : now - oldest.enqueuedAt;
  }

  /** The earliest-arrived item not finished yet, handed out or not. */
  oldestUnfinished(): T | undefined {
    while (this.arrivals.length > 0 && this.arrivals[0]!.finished) this.arrivals.shift();
    return this.arrivals[0];
  }
}
