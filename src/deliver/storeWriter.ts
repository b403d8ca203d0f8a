import { setImmediate as nextTick } from 'node:timers/promises';
import { coerceError } from '../errors.js';
import type { Logger } from '../log.js';
import { insertDeliveries } from '../store/deliveryStore.js';
import type { NewStoredDelivery, Queryable } from '../store/types.js';
import { withDatabaseRetry } from './databaseRetry.js';
import type { MemoryDelivery } from './types.js';

/** One store insert carries at most this many deliveries and about this many payload bytes. */
const STORE_BATCH_ROWS = 1_000;
const STORE_BATCH_BYTES = 16 * 1024 * 1024;

export interface StoreWriterHooks {
  /** Turns a delivery buffered for the store into its row (attempts 0, due `now`). */
  toRow(delivery: MemoryDelivery, now: Date): NewStoredDelivery;
  /** A batch of buffered deliveries is committed: their holds may be released. */
  batchStored(batch: MemoryDelivery[]): void;
  /** The store may hold new due rows (a flush or the last pending write ended): poll it. */
  mayPoll(): void;
}

/**
 * Writes one webhook's deliveries into the store. Writes run one after another, and the poller waits
 * for them (`pendingWrites`): a later event of a record must never become visible (and claimable)
 * before an earlier one that is still being written. New deliveries are buffered for one tick, so a
 * transaction's deliveries to this webhook land in one insert.
 */
export class StoreWriter {
  private buffer: MemoryDelivery[] = [];
  private flushing: Promise<void> | null = null;
  private chain: Promise<void> = Promise.resolve();
  private pending = 0;
  private writes = 0;

  constructor(
    private readonly db: Queryable,
    private readonly settings: { schema: string; workerId: string; onServerShuttingDown?: () => void },
    private readonly hooks: StoreWriterHooks,
    private readonly log: Logger,
  ) {}

  /** Store writes retried until they succeed (see withDatabaseRetry), telling the pipeline of a server shutdown. */
  private retry<T>(what: string, run: () => Promise<T>): Promise<T> {
    return withDatabaseRetry(this.log, what, run, this.settings.onServerShuttingDown);
  }

  /** Deliveries waiting in the buffer for their insert. */
  get buffered(): number {
    return this.buffer.length;
  }

  get isFlushing(): boolean {
    return this.flushing !== null;
  }

  /** Writes committed or under way, including work queued behind them with `afterWrites`. */
  get pendingWrites(): number {
    return this.pending;
  }

  /** Bumped by every write, so a "nothing pending" answer that raced a write can be ignored. */
  get generation(): number {
    return this.writes;
  }

  /** Buffers a new delivery for the next batched insert. */
  add(delivery: MemoryDelivery): void {
    this.buffer.push(delivery);
    if (this.flushing) return;
    this.flushing = this.flush();
  }

  private async flush(): Promise<void> {
    await nextTick();
    while (this.buffer.length > 0) {
      let count = 0;
      let bytes = 0;
      while (count < this.buffer.length && count < STORE_BATCH_ROWS && bytes < STORE_BATCH_BYTES) bytes += this.buffer[count++]!.event.body.length;
      const batch = this.buffer.splice(0, count);
      const now = new Date();
      try {
        await this.write(
          'store new deliveries',
          batch.map((d) => this.hooks.toRow(d, now)),
        );
      } catch (error) {
        // Refused for good (retryable errors are retried inside write): the batch keeps its holds, so
        // its transactions stay unacknowledged and the next start replays them. Later batches still go.
        this.log.error(
          { err: coerceError(error), deliveries: batch.length },
          'could not store deliveries; their transactions stay unacknowledged until a restart replays them',
        );
        continue;
      }
      this.hooks.batchStored(batch);
    }
    this.flushing = null;
    this.hooks.mayPoll();
  }

  /** Appends an insert to the write chain; resolves when it is committed. */
  write(what: string, rows: NewStoredDelivery[]): Promise<void> {
    this.writes++;
    this.pending++;
    const written = this.chain.then(() => this.retry(what, () => insertDeliveries(this.db, this.settings.schema, rows, this.settings.workerId)));
    // The caller gets the failure through `written`; the chain goes on, so one refused write does not
    // refuse every later one.
    this.chain = written
      .catch(() => undefined)
      .finally(() => {
        this.pending--;
        if (this.pending === 0) this.hooks.mayPoll();
      });
    return written;
  }

  /**
   * Runs `work` once every write buffered or chained so far is settled; counts as a pending write
   * meanwhile, so the poller waits for it too.
   */
  async afterWrites<T>(work: () => Promise<T>): Promise<T> {
    const flushing = this.flushing;
    this.pending++;
    try {
      await flushing;
      await this.chain;
      return await work();
    } finally {
      this.pending--;
    }
  }

  /** Resolves once the buffer is empty and written. */
  async flushed(): Promise<void> {
    while (this.flushing) await this.flushing;
  }

  /** Resolves once the last chained write is settled (its caller heard of a failure). */
  settled(): Promise<void> {
    return this.chain;
  }
}
