import type pg from 'pg';
import type { Lsn } from './lsn.js';
import type { Logger } from '../log.js';
import { quoteIdent } from '../database.js';
import { formatLsn } from './lsn.js';

/** A database that refuses the write is retried at each status report (1 s): warn less often. */
const WARN_EVERY_MS = 30_000;
/**
 * Each write records this far past the wanted position at least (and as far again as the position
 * moved since the last write). Without it the write's own WAL, reported back by the next keepalive as
 * a new position to confirm, called for the next write: measured 186 writes in 12 s on an idle slot.
 */
const MIN_AHEAD_BYTES = 8_192n;
/** At most one write per interval while streaming (shutdown's recordNow excepted). */
const MIN_WRITE_INTERVAL_MS = 1_000;

/**
 * The slot position this bridge may confirm, kept in `<schema>.slot_state.confirmed_lsn` and always
 * written before the slot is told: in normal operation the slot is never ahead of it, so a slot that
 * is ahead at start was recreated or moved by someone else (see ensureSlot). Recording ahead (above)
 * means a slot recreated less than that far past the last confirmation goes unnoticed.
 *
 * The stream asks `cap()` what it may send: the wanted position when already recorded, else the last
 * recorded one while a write runs (at most one at a time); `onRecorded` then lets it send more.
 */
export class ConfirmedPositionRecord {
  private writing: Promise<void> | null = null;
  private lastWarnedAt = 0;
  private lastWriteAt = 0;

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
    if (!this.writing && Date.now() - this.lastWriteAt >= MIN_WRITE_INTERVAL_MS) void this.record(wanted);
    return this.recorded;
  }

  /** Records `wanted` now (shutdown: the last confirmation must not lag behind). */
  async recordNow(wanted: Lsn): Promise<void> {
    await this.writing;
    if (wanted > this.recorded) await this.record(wanted);
  }

  private record(wanted: Lsn): Promise<void> {
    const moved = wanted - this.recorded;
    const target = wanted + (moved > MIN_AHEAD_BYTES ? moved : MIN_AHEAD_BYTES);
    this.lastWriteAt = Date.now();
    this.writing = this.db
      .query(`update ${quoteIdent(this.schema)}.slot_state set confirmed_lsn = greatest(confirmed_lsn, $2::pg_lsn) where slot_name = $1`, [
        this.slot,
        formatLsn(target),
      ])
      .then(
        () => {
          if (target > this.recorded) this.recorded = target;
          this.writing = null;
          this.onRecorded();
        },
        (error: Error) => {
          // Nothing is confirmed past the recorded position meanwhile; the next status report retries.
          this.writing = null;
          if (Date.now() - this.lastWarnedAt < WARN_EVERY_MS) return;
          this.lastWarnedAt = Date.now();
          this.log.warn(
            { err: error, lsn: formatLsn(target) },
            'could not record the slot position before confirming it; the slot waits (the database keeps WAL) until it can be recorded',
          );
        },
      );
    return this.writing;
  }
}
