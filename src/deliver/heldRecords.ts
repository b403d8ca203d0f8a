import assert from 'node:assert/strict';
import type { StoreClaimer } from './storeClaimer.js';
import type { StoreWriter } from './storeWriter.js';

/** Past this many records with pending deliveries, every event read waits behind the store. */
const HELD_RECORDS_LIMIT = 50_000;

/**
 * The records of one webhook with pending rows in the store. A failed attempt holds its record: its
 * later events are written behind it as pending rows, and the store poller sends each record's oldest
 * pending row. Other records go on.
 *
 * Known (loaded; past HELD_RECORDS_LIMIT records every record counts as held) or unknown (the lane
 * has just fallen behind: nothing queued is sent until the set is loaded).
 * - known -> unknown: `forget()`.
 * - unknown or known -> known: `refresh()` reloads the set from the store.
 * - `hold(record)` adds a record in either state; a refresh replaces the set.
 */
export class HeldRecords {
  private records = new Set<string>();
  /** Every record counts as held: more than HELD_RECORDS_LIMIT are. */
  private all = false;
  private known = true;

  constructor(
    private readonly claimer: Pick<StoreClaimer, 'pendingRecords'>,
    private readonly writer: Pick<StoreWriter, 'generation' | 'pendingWrites' | 'buffered' | 'isFlushing'>,
  ) {}

  get isKnown(): boolean {
    return this.known;
  }

  /** Known, and no record has pending rows. */
  get isEmpty(): boolean {
    return this.known && !this.all && this.records.size === 0;
  }

  /** Whether `recordKey`'s events must be written behind pending rows. */
  holds(recordKey: string): boolean {
    return this.all || this.records.has(recordKey);
  }

  /** A failed attempt of `recordKey` becomes a pending row. */
  hold(recordKey: string): void {
    this.records.add(recordKey);
  }

  /** The lane fell behind: the store may hold pending rows the set does not know of. */
  forget(): void {
    assert.ok(this.known, 'only a loaded set of held records is forgotten');
    this.known = false;
  }

  /** No store write is buffered, being flushed or chained: a refresh could not race one. */
  get writesSettled(): boolean {
    return this.writer.pendingWrites === 0 && this.writer.buffered === 0 && !this.writer.isFlushing;
  }

  /**
   * Reloads which records have pending rows. Only while no write is under way, and dropped if one
   * started meanwhile: a record must not look free while its head is being written.
   */
  async refresh(): Promise<void> {
    const generation = this.writer.generation;
    const keys = await this.claimer.pendingRecords(HELD_RECORDS_LIMIT + 1);
    if (generation !== this.writer.generation || this.writer.pendingWrites > 0 || this.writer.buffered > 0 || this.writer.isFlushing) return;
    this.all = keys.length > HELD_RECORDS_LIMIT;
    this.records = new Set(keys);
    this.known = true;
  }
}
