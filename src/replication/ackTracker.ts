import type { Lsn } from './lsn.js';
import type { SafeLsnSource } from './types.js';

/**
 * Low-watermark bookkeeping for acknowledgement.
 *
 * Each transaction is an entry in arrival (= commit) order. An entry is settled when its commit has
 * arrived and it has no outstanding deliveries (each delivery is outstanding until it was delivered or
 * durably stored). The safe LSN is the end LSN of the last entry of the settled prefix: everything up to
 * it may be forgotten by Postgres. It never moves backwards. Heartbeats are entries with nothing
 * outstanding, so idle periods still advance it.
 */
export class AckTracker implements SafeLsnSource {
  private readonly entries: TransactionEntry[] = [];
  private safe: Lsn;

  constructor(initialSafeLsn: Lsn = 0n) {
    this.safe = initialSafeLsn;
  }

  safeLsn(): Lsn {
    return this.safe;
  }

  isIdle(): boolean {
    return this.entries.length === 0;
  }

  begin(commitLsn: Lsn): TransactionEntry {
    const entry = new TransactionEntry(this, commitLsn);
    this.entries.push(entry);
    return entry;
  }

  /** A heartbeat at `lsn`: nothing to deliver, so it settles as soon as everything before it has. */
  heartbeat(lsn: Lsn): void {
    const entry = this.begin(lsn);
    entry.close(lsn);
  }

  /**
   * Forgets a transaction that will never close on this connection (the stream dropped mid-way and
   * the server will send it again from the start, as a new entry).
   */
  abandon(entry: TransactionEntry): void {
    const index = this.entries.indexOf(entry);
    if (index >= 0) this.entries.splice(index, 1);
    entry.abandoned = true;
    this.advance();
  }

  /** Called by entries when they may have become settled. */
  advance(): void {
    let i = 0;
    while (i < this.entries.length && this.entries[i]!.settled) {
      const end = this.entries[i]!.endLsn!;
      if (end > this.safe) this.safe = end;
      i++;
    }
    if (i > 0) this.entries.splice(0, i);
  }
}

/**
 * One routed event's share of its transaction's hold: every hold and release goes to the transaction,
 * and the count says whether anything (a delivery in memory, a coalesced burst, the log writer) still
 * needs this event, which the transaction as a whole cannot say while its other events wait.
 */
export class EventHold {
  private count = 0;

  constructor(readonly transaction: TransactionEntry) {}

  /** Nothing holds the event: whoever needed it has it delivered or written. */
  get settled(): boolean {
    return this.count === 0;
  }

  hold(count = 1): void {
    this.count += count;
    this.transaction.hold(count);
  }

  release(count = 1): void {
    this.count -= count;
    this.transaction.release(count);
  }
}

export class TransactionEntry {
  endLsn: Lsn | null = null;
  abandoned = false;
  private outstanding = 0;

  constructor(
    private readonly tracker: AckTracker,
    readonly commitLsn: Lsn,
  ) {}

  get settled(): boolean {
    return this.endLsn !== null && this.outstanding === 0;
  }

  /** One more delivery of this transaction is under way. */
  hold(count = 1): void {
    this.outstanding += count;
  }

  /** A delivery was delivered or durably stored. */
  release(count = 1): void {
    this.outstanding -= count;
    if (this.outstanding < 0) throw new Error(`ack bookkeeping went negative for transaction ${this.commitLsn}`);
    if (this.outstanding === 0 && this.endLsn !== null && !this.abandoned) this.tracker.advance();
  }

  close(endLsn: Lsn): void {
    this.endLsn = endLsn;
    if (this.outstanding === 0) this.tracker.advance();
  }
}
