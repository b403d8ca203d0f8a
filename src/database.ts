import { readFileSync } from 'node:fs';
import pg from 'pg';
import type { Logger } from './log.js';
import type { BridgeConfig } from './config.js';

/** Quotes a name for SQL ("person", "my ""odd"" table"). */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** Quotes a qualified name for SQL: "schema"."table". */
export function quoteQualified(schema: string, table: string): string {
  return `${quoteIdent(schema)}.${quoteIdent(table)}`;
}

/** Anything with pg's query(): a Pool, or a Client inside a transaction. */
export interface Queryable {
  query(text: string, values?: unknown[]): Promise<{ rows: any[]; rowCount: number | null }>;
}

/**
 * Connection settings shared by the query pool and the replication connection. Session settings make
 * the text forms the decoder parses predictable (ISO dates, UTC offsets).
 */
export function clientConfig(config: BridgeConfig): pg.ClientConfig {
  const ssl = config.database.ssl;
  return {
    connectionString: config.database.url,
    ssl:
      ssl.mode === 'disable'
        ? false
        : ssl.mode === 'require'
          ? { rejectUnauthorized: false }
          : { rejectUnauthorized: true, ca: ssl.caFile ? readFileSync(ssl.caFile, 'utf8') : undefined },
    // Noticed within ~40 s when the network is cut silently (idle 10 s + probes).
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
    connectionTimeoutMillis: 10_000,
    application_name: 'pg-webhook-bridge',
    // TCP keepalives on the server's side too, so that a session whose client vanished silently (a
    // network cut) is ended within ~20 s: the leader lock it holds is released and a standby takes over.
    options:
      '-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=postgres -c bytea_output=hex -c extra_float_digits=1 ' +
      '-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=2',
  };
}

/**
 * Whether a transaction whose commit the replication stream showed is visible to new snapshots yet.
 * The stream can deliver a commit as soon as its WAL is flushed, a moment before the committing
 * backend leaves the running set (longer with synchronous replication: it waits for the standby first).
 * `xid` is the 32-bit id of the stream's Begin message, widened to 64 bits as the value nearest the
 * snapshot's xmax (Postgres keeps every live xid within 2^31 of it).
 */
export async function isTransactionVisible(db: Pick<pg.Pool, 'query'>, xid: number): Promise<boolean> {
  const { rows } = await db.query<{ visible: boolean }>(
    `select pg_visible_in_snapshot(
              greatest(0, case when c.candidate > c.xmax + 2147483648 then c.candidate - 4294967296
                               when c.candidate < c.xmax - 2147483648 then c.candidate + 4294967296
                               else c.candidate end)::text::xid8,
              c.snap) as visible
       from (select s as snap, pg_snapshot_xmax(s)::text::bigint as xmax,
                    ((pg_snapshot_xmax(s)::text::bigint >> 32) << 32) | $1::bigint as candidate
               from pg_current_snapshot() s) c`,
    [xid],
  );
  return rows[0]!.visible;
}

/** Polling for a streamed webhooks change to become visible: quick at first (it usually is at once). */
const VISIBILITY_POLL_MS = [5, 20, 100, 250];
const VISIBILITY_WARN_EVERY_MS = 10_000;

/**
 * A commit is streamed once flushed, which can be before other sessions see it: a webhooks reload
 * then would miss the very change that prompted it (and the events after it would not reach a new
 * webhook). Waits until transaction `xid` is visible; false when `stopped()` interrupted the wait.
 */
export async function waitForVisibleTransaction(db: Pick<pg.Pool, 'query'>, xid: number, stopped: () => boolean, log: Logger): Promise<boolean> {
  const started = Date.now();
  let warnedAt = started;
  for (let attempt = 0; !stopped(); attempt++) {
    try {
      if (await isTransactionVisible(db, xid)) return true;
    } catch (error) {
      log.warn({ err: error, xid }, 'could not check that a webhooks change is visible; reloading anyway');
      return true;
    }
    if (attempt === 0) log.debug({ xid }, 'a webhooks change is streamed but not visible yet; waiting for it');
    if (Date.now() - warnedAt >= VISIBILITY_WARN_EVERY_MS) {
      warnedAt = Date.now();
      log.warn(
        { xid, waitingMs: warnedAt - started },
        'still waiting for a committed webhooks change to become visible (a synchronous standby that does not answer?); the stream waits with it',
      );
    }
    await new Promise((resolve) => setTimeout(resolve, VISIBILITY_POLL_MS[Math.min(attempt, VISIBILITY_POLL_MS.length - 1)]));
  }
  return false;
}

export function createPool(config: BridgeConfig, max = 10): pg.Pool {
  const pool = new pg.Pool({ ...clientConfig(config), max });
  // An idle client losing its connection must not crash the process; the next query reconnects.
  pool.on('error', () => undefined);
  return pool;
}
