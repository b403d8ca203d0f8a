import type { Logger } from '../log.js';
import {
  claimDeliveries,
  completeDeliveries,
  failDelivery,
  hasPending,
  pendingRecordKeys,
  releaseDeliveries,
  setAsideOtherTargets,
} from '../store/deliveryStore.js';
import type { DeliveryKey, Queryable, StoredDelivery } from '../store/types.js';
import { withDatabaseRetry } from './databaseRetry.js';

/** Margin on top of the attempt timeout for a store lease: the lease must outlive the attempt. */
export const LEASE_MARGIN_MS = 5_000;
/** Extra lease for claimed rows waiting in the local queue (also how long a crashed worker's claims wait). */
const CLAIM_QUEUE_LEASE_MS = 30_000;
/** Completed deliveries are deleted in one statement once this many gathered, or after this long. */
const COMPLETION_BATCH_ROWS = 200;
const COMPLETION_BATCH_MS = 20;

export interface StoreClaimerSettings {
  schema: string;
  /** The quoted, schema-qualified webhooks table: claims check the webhook is still live there. */
  webhooksTable: string;
  workerId: string;
  timeoutMs: number;
  onServerShuttingDown?: () => void;
}

/**
 * One webhook's side of the store's claim cycle: claims due rows into a local queue, gives unsent
 * claims back, records failed attempts and batches completions into one delete.
 */
export class StoreClaimer {
  /** Claimed rows waiting for a free slot. */
  private claimed: StoredDelivery[] = [];
  private completions: DeliveryKey[] = [];
  private completionTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly db: Queryable,
    private readonly webhookId: string,
    private readonly settings: StoreClaimerSettings,
    private readonly log: Logger,
  ) {}

  /** Store writes retried until they succeed (see withDatabaseRetry), telling the pipeline of a server shutdown. */
  private retry<T>(what: string, run: () => Promise<T>): Promise<T> {
    return withDatabaseRetry(this.log, what, run, this.settings.onServerShuttingDown);
  }

  get claimedCount(): number {
    return this.claimed.length;
  }

  get completionsPending(): number {
    return this.completions.length;
  }

  /**
   * Claims up to `limit` due rows for `targetUrl` from the store. The lease covers the wait in the local
   * queue as well as the attempt. Returns the rows without queueing them: see `queue`.
   */
  claim(targetUrl: string, limit: number): Promise<StoredDelivery[]> {
    const webhook = { id: this.webhookId, targetUrl, table: this.settings.webhooksTable };
    return claimDeliveries(
      this.db,
      this.settings.schema,
      webhook,
      this.settings.workerId,
      limit,
      this.settings.timeoutMs + LEASE_MARGIN_MS + CLAIM_QUEUE_LEASE_MS,
    );
  }

  queue(rows: StoredDelivery[]): void {
    this.claimed.push(...rows);
  }

  /** The next claimed row to send, in claim (commit) order. */
  next(): StoredDelivery | undefined {
    return this.claimed.shift();
  }

  /** Forgets claimed rows routed for another targetUrl: they are set aside, never sent. */
  dropOtherTargets(targetUrl: string): void {
    this.claimed = this.claimed.filter((row) => row.targetUrl === null || row.targetUrl === targetUrl);
  }

  /** Gives every queued claim back at once, rather than when its lease ends. */
  releaseQueued(): Promise<void> {
    return this.release(this.claimed.splice(0));
  }

  async release(rows: StoredDelivery[]): Promise<void> {
    if (rows.length === 0) return;
    await this.retry('release claims', () =>
      releaseDeliveries(
        this.db,
        this.settings.schema,
        rows.map((r) => ({ eventId: r.eventId, webhookId: r.webhookId })),
      ),
    );
  }

  /** A stored delivery was delivered: its row is deleted with the next batch. */
  async complete(key: DeliveryKey): Promise<void> {
    this.completions.push(key);
    if (this.completions.length >= COMPLETION_BATCH_ROWS) await this.flushCompletions();
    else this.completionTimer ??= setTimeout(() => void this.flushCompletions(), COMPLETION_BATCH_MS);
  }

  async flushCompletions(): Promise<void> {
    if (this.completionTimer) clearTimeout(this.completionTimer);
    this.completionTimer = null;
    if (this.completions.length === 0) return;
    const keys = this.completions;
    this.completions = [];
    await this.retry('complete deliveries', () => completeDeliveries(this.db, this.settings.schema, keys));
  }

  /** A failed attempt: next one at `runAt`, or dead when `runAt` is null. */
  async fail(key: DeliveryKey, failure: { attempts: number; runAt: Date | null; error: string; statusCode: number | null }): Promise<void> {
    await this.retry('record a failed attempt', () => failDelivery(this.db, this.settings.schema, key, failure));
  }

  /** The records with pending rows, at most `limit`. */
  pendingRecords(limit: number): Promise<string[]> {
    return pendingRecordKeys(this.db, this.settings.schema, this.webhookId, limit);
  }

  hasPending(): Promise<boolean> {
    return hasPending(this.db, this.settings.schema, this.webhookId);
  }

  /** Pending rows routed for another targetUrl than `targetUrl` become dead with `reason`; returns how many. */
  setAsideOtherTargets(targetUrl: string, reason: string): Promise<number> {
    return this.retry('set aside deliveries routed for a previous targetUrl', () =>
      setAsideOtherTargets(this.db, this.settings.schema, this.webhookId, targetUrl, reason),
    );
  }
}
