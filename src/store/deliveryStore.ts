import { quoteIdent } from '../database.js';
import type { DeliveryKey, NewStoredDelivery, Queryable, StoredDelivery } from './types.js';
import { compareLsnText } from '../replication/lsn.js';

/**
 * The durable delivery store: one function per statement, in the manner of graphile-worker's
 * src/sql. Every function takes the schema so several bridges can share a database.
 */

function table(schema: string): string {
  return `${quoteIdent(schema)}.deliveries`;
}

/**
 * Idempotent: a replay after a crash inserts nothing twice (unique event_id, webhook_id).
 *
 * The rows travel as one JSON parameter rather than one array per column: JSON.stringify escapes the
 * payloads natively, where pg's array literals escape every quote of every payload in JavaScript, which
 * was most of the main thread's cost of storing a delivery.
 */
export async function insertDeliveries(db: Queryable, schema: string, rows: NewStoredDelivery[], workerId: string): Promise<void> {
  await insertNewDeliveries(db, schema, rows, workerId);
}

/** insertDeliveries, returning how many rows were new (the others were stored already). */
export async function insertNewDeliveries(db: Queryable, schema: string, rows: NewStoredDelivery[], workerId: string): Promise<number> {
  if (rows.length === 0) return 0;
  const json = JSON.stringify(
    rows.map((r) => ({
      w: r.webhookId,
      e: r.eventId,
      n: r.eventName,
      r: r.recordKey,
      l: r.commitLsn,
      i: r.changeIndex,
      b: r.body,
      a: r.attempts,
      t: r.runAt,
      le: r.lastError,
      ls: r.lastStatusCode,
      lu: r.lockedUntil,
      st: r.status,
      u: r.targetUrl,
    })),
  );
  const { rowCount } = await db.query(
    `insert into ${table(schema)}
       (webhook_id, event_id, event_name, record_key, commit_lsn, change_index, body, attempts, run_at,
        last_error, last_status_code, locked_by, locked_until, status, target_url)
     select w, e, n, r, l::pg_lsn, i, b, a, t, le, ls, case when lu is null then null else $2 end, lu, st, u
       from json_to_recordset($1::json)
            as x(w uuid, e text, n text, r text, l text, i int, b text, a int, t timestamptz, le text, ls int, lu timestamptz, st text, u text)
     on conflict (event_id, webhook_id) do nothing`,
    [json, workerId],
  );
  return rowCount ?? 0;
}

/**
 * Claims up to `limit` due deliveries of one webhook, each the oldest pending delivery of its record
 * (so a failing delivery holds back later ones of the same record only), skipping rows another worker
 * holds. The lease makes a crashed worker's claims claimable again once it expires.
 *
 * Nothing is claimed for a webhook that is deleted, soft-deleted or disabled in the tables right now
 * (whatever the caller last loaded), nor a delivery routed for another targetUrl than `targetUrl`.
 */
export async function claimDeliveries(
  db: Queryable,
  schema: string,
  webhook: { id: string; targetUrl: string; table: string },
  workerId: string,
  limit: number,
  leaseMs: number,
): Promise<StoredDelivery[]> {
  const t = table(schema);
  const { rows } = await db.query(
    `with heads as (
       select d.id from ${t} d
        where d.webhook_id = $1 and d.status = 'pending' and d.run_at <= now()
          and (d.locked_until is null or d.locked_until < now())
          and (d.target_url is null or d.target_url = $5)
          -- the head of its record: the oldest pending delivery of the same (webhook, record); the
          -- ORDER BY + LIMIT 1 walks deliveries_pending_order_idx, whatever the table statistics say
          and d.id = (
            select p.id from ${t} p
             where p.webhook_id = d.webhook_id and p.record_key = d.record_key and p.status = 'pending'
             order by p.commit_lsn, p.change_index
             limit 1)
          and exists (select 1 from ${webhook.table} w where w.id = $1 and w."deletedAt" is null)
          and not exists (select 1 from ${quoteIdent(schema)}.webhook_state s where s.webhook_id = $1 and s.disabled_at is not null)
        order by d.commit_lsn, d.change_index
        limit $3
        for update of d skip locked)
     update ${t} d set locked_by = $2, locked_until = now() + ($4::int * interval '1 millisecond'), updated_at = now()
       from heads where d.id = heads.id
     returning d.id, d.webhook_id, d.event_id, d.event_name, d.record_key, d.body, d.attempts, d.status, d.run_at,
               d.last_error, d.last_status_code, d.created_at, d.commit_lsn, d.change_index, d.target_url`,
    [webhook.id, workerId, limit, leaseMs, webhook.targetUrl],
  );
  rows.sort((a, b) => (a.commit_lsn === b.commit_lsn ? a.change_index - b.change_index : compareLsnText(a.commit_lsn, b.commit_lsn)));
  return rows.map(toStoredDelivery);
}

/**
 * Pending deliveries routed for another targetUrl than the webhook's current one become dead with
 * `reason`, so the old backlog is never sent to the new URL; `deliveries redeliver` sends them there.
 * Returns how many.
 */
export async function setAsideOtherTargets(db: Queryable, schema: string, webhookId: string, targetUrl: string, reason: string): Promise<number> {
  const { rowCount } = await db.query(
    `update ${table(schema)} set status = 'dead', last_error = $3, locked_by = null, locked_until = null, updated_at = now()
      where webhook_id = $1 and status = 'pending' and target_url is not null and target_url <> $2`,
    [webhookId, targetUrl, reason],
  );
  return rowCount ?? 0;
}

/** Delivered: the row is no longer needed. */
export async function completeDeliveries(db: Queryable, schema: string, keys: DeliveryKey[]): Promise<void> {
  if (keys.length === 0) return;
  await db.query(`delete from ${table(schema)} d using unnest($1::text[], $2::uuid[]) as k(e, w) where d.event_id = k.e and d.webhook_id = k.w`, [
    keys.map((k) => k.eventId),
    keys.map((k) => k.webhookId),
  ]);
}

/**
 * A failed attempt: the next one at `runAt`, or dead when `runAt` is null (budget spent). A row set
 * aside (dead) while the attempt ran stays dead.
 */
export async function failDelivery(
  db: Queryable,
  schema: string,
  key: DeliveryKey,
  failure: { attempts: number; runAt: Date | null; error: string; statusCode: number | null },
): Promise<void> {
  await db.query(
    `update ${table(schema)}
        set attempts = $3, status = case when $4::timestamptz is null then 'dead' else 'pending' end,
            run_at = coalesce($4::timestamptz, run_at), last_error = $5, last_status_code = $6,
            locked_by = null, locked_until = null, updated_at = now()
      where event_id = $1 and webhook_id = $2 and status = 'pending'`,
    [key.eventId, key.webhookId, failure.attempts, failure.runAt, failure.error.slice(0, 1_000), failure.statusCode],
  );
}

/** Gives claims back (shutdown): the rows become due again at once. */
export async function releaseDeliveries(db: Queryable, schema: string, keys: DeliveryKey[]): Promise<void> {
  if (keys.length === 0) return;
  await db.query(
    `update ${table(schema)} d set locked_by = null, locked_until = null, updated_at = now()
       from unnest($1::text[], $2::uuid[]) as k(e, w) where d.event_id = k.e and d.webhook_id = k.w`,
    [keys.map((k) => k.eventId), keys.map((k) => k.webhookId)],
  );
}

/** Webhooks that have pending rows at all (due or not): their lanes must start in store mode. */
export async function webhooksWithPending(db: Queryable, schema: string): Promise<Set<string>> {
  const { rows } = await db.query(`select distinct webhook_id from ${table(schema)} where status = 'pending'`);
  return new Set(rows.map((r) => r.webhook_id as string));
}

/** The records of a webhook that have pending deliveries (at most `limit`): their later events wait behind them. */
export async function pendingRecordKeys(db: Queryable, schema: string, webhookId: string, limit: number): Promise<string[]> {
  const { rows } = await db.query(`select distinct record_key from ${table(schema)} where webhook_id = $1 and status = 'pending' limit $2`, [webhookId, limit]);
  return rows.map((r) => r.record_key as string);
}

export async function hasPending(db: Queryable, schema: string, webhookId: string): Promise<boolean> {
  const { rows } = await db.query(`select exists (select 1 from ${table(schema)} where webhook_id = $1 and status = 'pending') as p`, [webhookId]);
  return rows[0].p === true;
}

export async function countDeliveriesByStatus(db: Queryable, schema: string): Promise<Record<string, number>> {
  return (await summarizeDeliveries(db, schema)).counts;
}

/** Deliveries by status, and when the oldest pending one was stored (null: none): one scan. */
export async function summarizeDeliveries(db: Queryable, schema: string): Promise<{ counts: Record<string, number>; oldestPendingStoredAt: Date | null }> {
  const { rows } = await db.query(`select status, count(*)::int as n, min(created_at) as oldest from ${table(schema)} group by status`);
  const counts: Record<string, number> = { pending: 0, dead: 0 };
  let oldestPendingStoredAt: Date | null = null;
  for (const r of rows) {
    counts[r.status] = r.n;
    if (r.status === 'pending') oldestPendingStoredAt = r.oldest;
  }
  return { counts, oldestPendingStoredAt };
}

export async function listDeliveries(
  db: Queryable,
  schema: string,
  filter: { status?: 'pending' | 'dead'; webhookId?: string; limit?: number },
): Promise<StoredDelivery[]> {
  const { rows } = await db.query(
    `select id, webhook_id, event_id, event_name, record_key, body, attempts, status, run_at, last_error, last_status_code, created_at, target_url
       from ${table(schema)}
      where ($1::text is null or status = $1) and ($2::uuid is null or webhook_id = $2)
      order by commit_lsn, change_index limit $3`,
    [filter.status ?? null, filter.webhookId ?? null, filter.limit ?? 100],
  );
  return rows.map(toStoredDelivery);
}

/**
 * Makes dead or failing deliveries due again with a fresh retry budget, for the webhook's current
 * targetUrl. Returns how many.
 */
export async function redeliver(db: Queryable, schema: string, filter: { id?: string; webhookId?: string; since?: Date }): Promise<number> {
  const { rowCount } = await db.query(
    `update ${table(schema)}
        set status = 'pending', attempts = 0, run_at = now(), locked_by = null, locked_until = null, target_url = null, updated_at = now()
      where ($1::bigint is not null and id = $1)
         or ($1::bigint is null and webhook_id = $2 and created_at >= $3 and (status = 'dead' or attempts > 0))`,
    [filter.id ?? null, filter.webhookId ?? null, filter.since ?? new Date(0)],
  );
  return rowCount ?? 0;
}

export interface PurgeFilter {
  status?: 'pending' | 'dead';
  webhookId?: string;
  /** Only deliveries created before this time. */
  createdBefore?: Date;
  /** Only deliveries last changed (for a dead one: when it died) before this time. */
  updatedBefore?: Date;
}

/**
 * Deletes at most `limit` deliveries matching every given filter; returns how many. Callers loop in
 * small batches, so no single statement holds many row locks or writes much WAL at once.
 */
export async function purgeDeliveries(db: Queryable, schema: string, filter: PurgeFilter, limit: number): Promise<number> {
  const t = table(schema);
  const { rowCount } = await db.query(
    `delete from ${t} where id in (
       select id from ${t}
        where ($1::text is null or status = $1) and ($2::uuid is null or webhook_id = $2)
          and ($3::timestamptz is null or created_at < $3) and ($4::timestamptz is null or updated_at < $4)
        limit $5)`,
    [filter.status ?? null, filter.webhookId ?? null, filter.createdBefore ?? null, filter.updatedBefore ?? null, limit],
  );
  return rowCount ?? 0;
}

function toStoredDelivery(r: Record<string, any>): StoredDelivery {
  return {
    id: String(r.id),
    webhookId: r.webhook_id,
    eventId: r.event_id,
    eventName: r.event_name,
    recordKey: r.record_key,
    body: r.body,
    attempts: r.attempts,
    status: r.status,
    runAt: r.run_at,
    lastError: r.last_error,
    lastStatusCode: r.last_status_code,
    createdAt: r.created_at,
    targetUrl: r.target_url ?? null,
  };
}
