import type pg from 'pg';
import type { Lsn } from '../decode/types.js';
import type { Logger } from '../log.js';
import { quoteIdent } from '../migrate.js';
import { formatLsn } from './lsn.js';

/**
 * The slot position this bridge may confirm, kept in `<schema>.slot_state.confirmed_lsn` and always
 * written before the slot is told: in normal operation the slot is never ahead of it, so a slot that
 * is ahead at start was recreated or moved by someone else (see ensureSlot).
 *
 * The stream asks `cap()` what it may send: the wanted position when already recorded, else the last
 * recorded one while the write runs (at most one at a time); `onRecorded` then lets it send more.
 */
/** A database that refuses the write is retried at every status report (1 s): warn less often. */
const WARN_EVERY_MS = 30_000;

export class ConfirmedPositionRecord {
  private writing: Promise<void> | null = null;
  private lastWarnedAt = 0;

  constructor(
    private readonly db: Pick<pg.Pool, 'query'>,
    private readonly schema: string,
    private readonly slot: string,
    private recorded: Lsn,
    private readonly log: Logger,
    public onRecorded: () => void = () => undefined,
  ) {}

  cap(wanted: Lsn): Lsn {
    if (wanted <= this.recorded) return wanted;
    if (!this.writing) void this.record(wanted);
    return this.recorded;
  }

  /** Records `wanted` now (shutdown: the last confirmation must not lag behind). */
  async recordNow(wanted: Lsn): Promise<void> {
    await this.writing;
    if (wanted > this.recorded) await this.record(wanted);
  }

  private record(lsn: Lsn): Promise<void> {
    this.writing = this.db
      .query(`update ${quoteIdent(this.schema)}.slot_state set confirmed_lsn = greatest(confirmed_lsn, $2::pg_lsn) where slot_name = $1`, [this.slot, formatLsn(lsn)])
      .then(
        () => {
          if (lsn > this.recorded) this.recorded = lsn;
          this.writing = null;
          this.onRecorded();
        },
        (error: Error) => {
          // Nothing is confirmed past the recorded position meanwhile; the next status report retries.
          this.writing = null;
          if (Date.now() - this.lastWarnedAt < WARN_EVERY_MS) return;
          this.lastWarnedAt = Date.now();
          this.log.warn({ err: error, lsn: formatLsn(lsn) }, 'could not record the slot position before confirming it; the slot waits (the database keeps WAL) until it can be recorded');
        },
      );
    return this.writing;
  }
}
