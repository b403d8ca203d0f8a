import { quoteIdent } from '../database.js';
import type { LoggedEvent } from '../route/loggedEvent.js';
import { formatLsn, parseLsn, type Lsn } from '../replication/lsn.js';
import type { LogPosition, Queryable } from './types.js';

/**
 * The event log's statements (`<schema>.event_log`, `<schema>.log_cursors`), one function each. A
 * segment's events travel as one JSON array of arrays: native JSON.stringify/parse do the escaping, and
 * Postgres compresses the text (lz4 where it can) once it is past a page.
 */

type EncodedEvent = [
  lsn: string,
  index: number,
  commitMs: number,
  object: string,
  action: string,
  recordKey: string,
  workspaceId: string | null,
  body: string,
  head: string | null,
  tail: string | null,
  payloadKey: 'data' | 'record',
];

export function comparePositions(a: LogPosition, b: LogPosition): number {
  return a.lsn === b.lsn ? a.index - b.index : a.lsn < b.lsn ? -1 : 1;
}

export function positionOf(event: { commitLsn: Lsn; changeIndex: number }): LogPosition {
  return { lsn: event.commitLsn, index: event.changeIndex };
}

/** Pure: a segment's text. */
export function encodeSegment(events: readonly LoggedEvent[]): string {
  return JSON.stringify(
    events.map((e): EncodedEvent => [
      formatLsn(e.commitLsn),
      e.changeIndex,
      e.commitTime.getTime(),
      e.object,
      e.action,
      e.recordKey,
      e.workspaceId,
      e.body,
      e.bodyParts?.[0] ?? null,
      e.bodyParts?.[1] ?? null,
      e.payloadKey,
    ]),
  );
}

/** Pure: the events of a segment's text. */
export function decodeSegment(text: string): LoggedEvent[] {
  return (JSON.parse(text) as EncodedEvent[]).map(([lsn, index, commitMs, object, action, recordKey, workspaceId, body, head, tail, payloadKey]) => ({
    commitLsn: parseLsn(lsn),
    changeIndex: index,
    commitTime: new Date(commitMs),
    object,
    action: action as LoggedEvent['action'],
    recordKey,
    workspaceId,
    body,
    bodyParts: head === null || tail === null ? null : [head, tail],
    payloadKey,
  }));
}

function logTable(schema: string): string {
  return `${quoteIdent(schema)}.event_log`;
}

function cursorTable(schema: string): string {
  return `${quoteIdent(schema)}.log_cursors`;
}

/** Appends one segment (events in position order). */
export async function appendSegment(db: Queryable, schema: string, events: readonly LoggedEvent[]): Promise<void> {
  if (events.length === 0) return;
  const first = events[0]!;
  const last = events[events.length - 1]!;
  await db.query(
    `insert into ${logTable(schema)} (first_lsn, first_index, last_lsn, last_index, first_commit_at, last_commit_at, event_count, events)
     values ($1, $2, $3, $4, $5, $6, $7, $8)`,
    [
      formatLsn(first.commitLsn),
      first.changeIndex,
      formatLsn(last.commitLsn),
      last.changeIndex,
      first.commitTime,
      last.commitTime,
      events.length,
      encodeSegment(events),
    ],
  );
}

/** The last event's position in the log, or null when it is empty. */
export async function lastLoggedPosition(db: Queryable, schema: string): Promise<LogPosition | null> {
  const { rows } = await db.query(`select last_lsn::text as lsn, last_index from ${logTable(schema)} order by last_lsn desc, last_index desc limit 1`);
  return rows.length === 0 ? null : { lsn: parseLsn(rows[0].lsn), index: rows[0].last_index };
}

/**
 * The events at or after `from`, segment by segment in the order they start, at most `maxSegments`
 * segments (a segment that starts before `from` is cut). A replay after a crash may have written a
 * segment overlapping earlier ones: taken in start order, skipping positions already passed, every
 * event is read once and none is passed over.
 */
export async function readEvents(db: Queryable, schema: string, from: LogPosition, maxSegments: number): Promise<LoggedEvent[]> {
  const { rows } = await db.query(
    `select events from ${logTable(schema)} where (last_lsn, last_index) >= ($1::pg_lsn, $2::int) order by first_lsn, first_index limit $3`,
    [formatLsn(from.lsn), from.index, maxSegments],
  );
  const events: LoggedEvent[] = [];
  for (const row of rows) for (const event of decodeSegment(row.events)) if (comparePositions(positionOf(event), from) >= 0) events.push(event);
  return events;
}

/** The position of the first event committed at or after `time`, or null when the log holds none. */
export async function positionAtTime(db: Queryable, schema: string, time: Date): Promise<LogPosition | null> {
  const { rows } = await db.query(`select events from ${logTable(schema)} where last_commit_at >= $1 order by last_lsn, last_index limit 1`, [time]);
  if (rows.length === 0) return null;
  const event = decodeSegment(rows[0].events).find((e) => e.commitTime >= time);
  return event === undefined ? null : positionOf(event);
}

/** The first event's position and commit time, or null when the log is empty. */
export async function logStart(db: Queryable, schema: string): Promise<{ position: LogPosition; commitTime: Date } | null> {
  const { rows } = await db.query(`select first_lsn::text as lsn, first_index, first_commit_at from ${logTable(schema)} order by last_lsn, last_index limit 1`);
  return rows.length === 0 ? null : { position: { lsn: parseLsn(rows[0].lsn), index: rows[0].first_index }, commitTime: rows[0].first_commit_at };
}

/**
 * Deletes at most `limit` segments that no active cursor needs (wholly before the lowest one), that
 * were written over `graceMs` ago and whose last event committed before `committedBefore`. A paused
 * cursor (its webhook disabled or removed) keeps nothing. Returns how many.
 */
export async function purgeSegments(db: Queryable, schema: string, committedBefore: Date, graceMs: number, limit: number): Promise<number> {
  const t = logTable(schema);
  const { rowCount } = await db.query(
    `delete from ${t} where id in (
       select id from ${t}
        where last_commit_at < $1 and created_at < now() - ($2::int * interval '1 millisecond')
          and not exists (select 1 from ${cursorTable(schema)} c
                           where c.paused_lsn is null and (c.lsn, c.change_index) <= (${t}.last_lsn, ${t}.last_index))
        order by last_lsn, last_index limit $3)`,
    [committedBefore, graceMs, limit],
  );
  return rowCount ?? 0;
}

export async function logSummary(db: Queryable, schema: string): Promise<{ segments: number; events: number; bytes: number; oldestCommitAt: Date | null }> {
  const { rows } = await db.query(
    `select count(*)::int as segments, coalesce(sum(event_count), 0)::bigint as events, coalesce(sum(pg_column_size(events)), 0)::bigint as bytes,
            min(first_commit_at) as oldest from ${logTable(schema)}`,
  );
  return { segments: rows[0].segments, events: Number(rows[0].events), bytes: Number(rows[0].bytes), oldestCommitAt: rows[0].oldest };
}

export interface LogCursor {
  webhookId: string;
  position: LogPosition;
  /** Set while the webhook is disabled or removed: the log head when it stopped. */
  pausedAt: Lsn | null;
}

export async function saveCursor(db: Queryable, schema: string, webhookId: string, position: LogPosition, pausedAt: Lsn | null): Promise<void> {
  await db.query(
    `insert into ${cursorTable(schema)} (webhook_id, lsn, change_index, paused_lsn) values ($1, $2, $3, $4)
     on conflict (webhook_id) do update set lsn = excluded.lsn, change_index = excluded.change_index, paused_lsn = excluded.paused_lsn, updated_at = now()`,
    [webhookId, formatLsn(position.lsn), position.index, pausedAt === null ? null : formatLsn(pausedAt)],
  );
}

/**
 * Pauses the active cursors of `webhookIds` at `pausedAt` (the log head): webhooks no longer live whose
 * lane was not there to pause them (removed while the daemon was stopped). Returns how many.
 */
export async function pauseCursors(db: Queryable, schema: string, webhookIds: string[], pausedAt: Lsn): Promise<number> {
  const { rowCount } = await db.query(
    `update ${cursorTable(schema)} set paused_lsn = $2, updated_at = now() where webhook_id = any($1::uuid[]) and paused_lsn is null`,
    [webhookIds, formatLsn(pausedAt)],
  );
  return rowCount ?? 0;
}

export async function deleteCursor(db: Queryable, schema: string, webhookId: string): Promise<void> {
  await db.query(`delete from ${cursorTable(schema)} where webhook_id = $1`, [webhookId]);
}

export async function loadCursors(db: Queryable, schema: string): Promise<Map<string, LogCursor>> {
  const { rows } = await db.query(`select webhook_id, lsn::text as lsn, change_index, paused_lsn::text as paused from ${cursorTable(schema)}`);
  return new Map(
    rows.map((r) => [
      r.webhook_id as string,
      { webhookId: r.webhook_id, position: { lsn: parseLsn(r.lsn), index: r.change_index }, pausedAt: r.paused === null ? null : parseLsn(r.paused) },
    ]),
  );
}

/**
 * Events committed in [since, until], in position order, from the segments after `after` (a segment's
 * last position), at most `maxSegments` segments: call again with `next` while `done` is false. Each
 * event comes once, however many segments hold it (a replay after a crash may write some twice).
 */
export async function readEventsCommittedBetween(
  db: Queryable,
  schema: string,
  window: { since: Date; until: Date },
  after: LogPosition,
  maxSegments: number,
): Promise<{ events: LoggedEvent[]; next: LogPosition; done: boolean }> {
  const { rows } = await db.query(
    `select events from ${logTable(schema)}
      where (last_lsn, last_index) > ($1::pg_lsn, $2::int) and last_commit_at >= $3 and first_commit_at <= $4
      order by last_lsn, last_index limit $5`,
    [formatLsn(after.lsn), after.index, window.since, window.until, maxSegments],
  );
  let passed = after;
  const events: LoggedEvent[] = [];
  for (const row of rows) {
    for (const event of decodeSegment(row.events)) {
      const position = positionOf(event);
      if (comparePositions(position, passed) <= 0) continue;
      passed = position;
      if (event.commitTime >= window.since && event.commitTime <= window.until) events.push(event);
    }
  }
  return { events, next: passed, done: rows.length < maxSegments };
}

/**
 * Every cursor, oldest first, with `readingFrom`: the first commit time of the segment it reads
 * (within a segment of how far behind it is; null when the log holds nothing at or after it).
 */
export async function listCursors(db: Queryable, schema: string): Promise<Array<LogCursor & { readingFrom: Date | null; updatedAt: Date }>> {
  const { rows } = await db.query(
    `select c.webhook_id::text as webhook_id, c.lsn::text as lsn, c.change_index, c.paused_lsn::text as paused, c.updated_at,
            (select s.first_commit_at from ${logTable(schema)} s where (s.last_lsn, s.last_index) >= (c.lsn, c.change_index)
              order by s.last_lsn, s.last_index limit 1) as reading_from
       from ${cursorTable(schema)} c order by c.lsn, c.change_index`,
  );
  return rows.map((r) => ({
    webhookId: r.webhook_id,
    position: { lsn: parseLsn(r.lsn), index: r.change_index },
    pausedAt: r.paused === null ? null : parseLsn(r.paused),
    readingFrom: r.reading_from,
    updatedAt: r.updated_at,
  }));
}
