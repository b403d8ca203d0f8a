/**
 * What a daemon left in its store, read after (or during) a phase: the event log (segments, events,
 * their compressed and plain size, the table with its TOAST and indexes), the cursors, and the rows of
 * `deliveries` (failed attempts and the later events of their record).
 */
import type pg from 'pg';

export interface LogFigures {
  /** Segments in `event_log` now, and inserted since the schema was made (the log purges after 60 s + retention). */
  segments: number;
  segmentsInserted: number;
  /** sum(event_count) over the segments there now. */
  events: number;
  /** sum(pg_column_size(events)): the events as stored (compressed where Postgres compressed them). */
  compressedBytes: number;
  /** sum(octet_length(events)): the same text uncompressed. */
  plainBytes: number;
  /** pg_total_relation_size(event_log): heap, TOAST and indexes. */
  logTableBytes: number;
  /** The `events` column's compression: lz4, or pglz (the default, or a server without lz4). */
  compression: string;
  cursors: number;
  cursorsTableBytes: number;
  /** Rows in `deliveries` now, and inserted since the schema was made ("via store"). */
  deliveries: number;
  deliveriesInserted: number;
  deliveriesTableBytes: number;
}

/** Reads a daemon's store figures; statistics (the *Inserted counts) lag until its backends flush or exit. */
export async function readLogFigures(db: pg.Pool, schema: string): Promise<LogFigures> {
  const s = `"${schema}"`;
  const { rows } = await db.query(
    `select
       (select count(*) from ${s}.event_log)::float8 as segments,
       (select coalesce(sum(n_tup_ins), 0) from pg_stat_user_tables where schemaname = $1 and relname = 'event_log')::float8 as segments_inserted,
       (select coalesce(sum(event_count), 0) from ${s}.event_log)::float8 as events,
       (select coalesce(sum(pg_column_size(events)), 0) from ${s}.event_log)::float8 as compressed,
       (select coalesce(sum(octet_length(events)), 0) from ${s}.event_log)::float8 as plain,
       pg_total_relation_size('${s}.event_log')::float8 as log_table,
       (select case attcompression when 'l' then 'lz4' when 'p' then 'pglz' else current_setting('default_toast_compression') end
          from pg_attribute where attrelid = '${s}.event_log'::regclass and attname = 'events') as compression,
       (select count(*) from ${s}.log_cursors)::float8 as cursors,
       pg_total_relation_size('${s}.log_cursors')::float8 as cursors_table,
       (select count(*) from ${s}.deliveries)::float8 as deliveries,
       (select coalesce(sum(n_tup_ins), 0) from pg_stat_user_tables where schemaname = $1 and relname = 'deliveries')::float8 as deliveries_inserted,
       pg_total_relation_size('${s}.deliveries')::float8 as deliveries_table`,
    [schema],
  );
  const r = rows[0];
  return {
    segments: r.segments,
    segmentsInserted: r.segments_inserted,
    events: r.events,
    compressedBytes: r.compressed,
    plainBytes: r.plain,
    logTableBytes: r.log_table,
    compression: r.compression,
    cursors: r.cursors,
    cursorsTableBytes: r.cursors_table,
    deliveries: r.deliveries,
    deliveriesInserted: r.deliveries_inserted,
    deliveriesTableBytes: r.deliveries_table,
  };
}

/** The whole store on disk: event_log, deliveries and log_cursors, each with TOAST and indexes. */
export function storeBytes(f: LogFigures): number {
  return f.logTableBytes + f.deliveriesTableBytes + f.cursorsTableBytes;
}

const int = (n: number): string => Math.round(n).toLocaleString('en-US');
const mb = (bytes: number): string => `${(bytes / 1024 ** 2).toFixed(bytes < 10 * 1024 ** 2 ? 2 : 0)} MB`;

/** One line: `log 466 seg, 10,000 ev, 2.60 MB pglz of 8.98 MB, table 3.09 MB; deliveries 0 (37 ins)`. */
export function describeLog(f: LogFigures | undefined): string {
  if (!f) return 'log -';
  // Statistics lag while the daemon runs: only more inserted than there are says rows were deleted.
  const inserted = (now: number, ins: number): string => (ins > now ? ` (${int(ins)} ins)` : '');
  return (
    `log ${int(f.segments)} seg${inserted(f.segments, f.segmentsInserted)}, ${int(f.events)} ev, ${mb(f.compressedBytes)} ${f.compression} of ${mb(f.plainBytes)}, ` +
    `table ${mb(f.logTableBytes)}; deliveries ${int(f.deliveries)}${inserted(f.deliveries, f.deliveriesInserted)}`
  );
}
