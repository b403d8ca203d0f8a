import { quoteIdent } from '../database.js';
import type { WebhookOptionsInput } from '../route/webhookOptions.js';
import type { Queryable } from './types.js';

/**
 * The bridge's own per-webhook state (`<schema>.webhook_state`). The user's webhooks table is only
 * ever read.
 */

function table(schema: string): string {
  return `${quoteIdent(schema)}.webhook_state`;
}

function optionsTable(schema: string): string {
  return `${quoteIdent(schema)}.webhook_options`;
}

/** The options columns (`<schema>.webhook_options`, aliased `o`) as the row parser reads them. */
const OPTIONS_COLUMNS = `o.on_fields, o.filter, o.include_columns, o.exclude_columns, o.coalesce_seconds`;

/** Whether the webhooks table says which Twenty workspace each webhook belongs to. */
export async function hasWorkspaceColumn(db: Queryable, webhooksTable: string): Promise<boolean> {
  const { rows } = await db.query(`select 1 from pg_attribute where attrelid = to_regclass($1) and attname = 'workspaceId' and not attisdropped`, [
    webhooksTable,
  ]);
  return rows.length > 0;
}

// Text columns are read only as far as the row parser looks (URL 2,048, secret 512 characters): one
// over the limit is an invalid row, and a huge value costs no more than its first characters. substr
// reads an uncompressed out-of-line value only up to that length.
const SUBSCRIBER_COLUMNS = `w.id::text as id, substr(w."targetUrl", 1, 2049) as "targetUrl", w.operations`;
const SECRET_COLUMN = `substr(w.secret, 1, 513) as secret`;

/**
 * Live rows of the webhooks table (not soft-deleted) with what routing needs: reloaded every couple of
 * seconds, so nothing else is read (not `description`, which may be large, nor deleted rows).
 */
export async function loadWebhookRows(db: Queryable, schema: string, webhooksTable: string, workspaceColumn = false): Promise<Array<Record<string, unknown>>> {
  const { rows } = await db.query(
    `select ${SUBSCRIBER_COLUMNS}, ${SECRET_COLUMN},${workspaceColumn ? ' w."workspaceId"::text as "workspaceId",' : ''}
            s.disabled_at, s.disabled_reason, ${OPTIONS_COLUMNS}
       from ${webhooksTable} w left join ${table(schema)} s on s.webhook_id = w.id
       left join ${optionsTable(schema)} o on o.webhook_id = w.id
      where w."deletedAt" is null
      order by w."createdAt", w.id`,
  );
  return rows;
}

/** Every row, soft-deleted ones included (their secret unread), with the bridge's state: for the CLI. */
export async function listWebhookRows(db: Queryable, schema: string, webhooksTable: string, workspaceColumn = false): Promise<Array<Record<string, unknown>>> {
  const { rows } = await db.query(
    `select ${SUBSCRIBER_COLUMNS}, case when w."deletedAt" is null then ${SECRET_COLUMN.replace(' as secret', '')} end as secret, w."deletedAt",${workspaceColumn ? ' w."workspaceId"::text as "workspaceId",' : ''}
            s.disabled_at, s.disabled_reason, s.last_success_at, s.failing_since, s.last_error, s.last_error_at, ${OPTIONS_COLUMNS}
       from ${webhooksTable} w left join ${table(schema)} s on s.webhook_id = w.id
       left join ${optionsTable(schema)} o on o.webhook_id = w.id
      order by w."createdAt", w.id`,
  );
  return rows;
}

export async function recordSuccesses(db: Queryable, schema: string, successes: Map<string, Date>): Promise<void> {
  if (successes.size === 0) return;
  await db.query(
    `insert into ${table(schema)} (webhook_id, last_success_at, failing_since, updated_at)
     select w, t, null, now() from unnest($1::uuid[], $2::timestamptz[]) as x(w, t)
     on conflict (webhook_id) do update
       set last_success_at = greatest(${table(schema)}.last_success_at, excluded.last_success_at),
           failing_since = case when ${table(schema)}.failing_since <= excluded.last_success_at then null else ${table(schema)}.failing_since end,
           updated_at = now()`,
    [[...successes.keys()], [...successes.values()]],
  );
}

/**
 * Records a failure and returns how long the webhook has been failing without a success, so the
 * caller can apply the auto-disable rule.
 */
export async function recordFailure(db: Queryable, schema: string, webhookId: string, error: string): Promise<{ failingForMs: number }> {
  const { rows } = await db.query(
    `insert into ${table(schema)} (webhook_id, failing_since, last_error, last_error_at, updated_at)
     values ($1, now(), $2, now(), now())
     on conflict (webhook_id) do update
       set failing_since = coalesce(${table(schema)}.failing_since, now()), last_error = $2, last_error_at = now(), updated_at = now()
     returning extract(epoch from (now() - failing_since)) * 1000 as failing_ms`,
    [webhookId, error.slice(0, 1_000)],
  );
  return { failingForMs: Number(rows[0].failing_ms) };
}

export async function disableWebhook(db: Queryable, schema: string, webhookId: string, reason: string): Promise<void> {
  await db.query(
    `insert into ${table(schema)} (webhook_id, disabled_at, disabled_reason, updated_at) values ($1, now(), $2, now())
     on conflict (webhook_id) do update set disabled_at = coalesce(${table(schema)}.disabled_at, now()), disabled_reason = $2, updated_at = now()`,
    [webhookId, reason],
  );
}

export async function enableWebhook(db: Queryable, schema: string, webhookId: string): Promise<void> {
  await db.query(
    `insert into ${table(schema)} (webhook_id, updated_at) values ($1, now())
     on conflict (webhook_id) do update set disabled_at = null, disabled_reason = null, failing_since = null, updated_at = now()`,
    [webhookId],
  );
}

/** A row's options columns (as loaded above) as the route stage takes them. */
export function optionsOfRow(row: Record<string, unknown>): WebhookOptionsInput {
  return {
    onFields: (row.on_fields as string[] | null | undefined) ?? null,
    filter: (row.filter as string | null | undefined) ?? null,
    includeColumns: (row.include_columns as string[] | null | undefined) ?? null,
    excludeColumns: (row.exclude_columns as string[] | null | undefined) ?? null,
    coalesceSeconds: (row.coalesce_seconds as number | null | undefined) ?? null,
  };
}

/**
 * Which options `webhooks set` changes: a key left out keeps its value, null clears it. A webhook whose
 * options are all cleared keeps an all-null row.
 */
export async function setWebhookOptions(db: Queryable, schema: string, webhookId: string, changes: Partial<WebhookOptionsInput>): Promise<void> {
  const columns: Array<[string, keyof WebhookOptionsInput]> = [
    ['on_fields', 'onFields'],
    ['filter', 'filter'],
    ['include_columns', 'includeColumns'],
    ['exclude_columns', 'excludeColumns'],
    ['coalesce_seconds', 'coalesceSeconds'],
  ];
  const given = columns.filter(([, key]) => key in changes);
  const values = given.map(([, key]) => changes[key] ?? null);
  const names = given.map(([column]) => column);
  await db.query(
    `insert into ${optionsTable(schema)} (webhook_id${names.map((n) => `, ${n}`).join('')}, updated_at)
     values ($1${names.map((_, i) => `, $${i + 2}`).join('')}, clock_timestamp())
     on conflict (webhook_id) do update set ${names.map((n) => `${n} = excluded.${n}, `).join('')}updated_at = clock_timestamp()`,
    [webhookId, ...values],
  );
}

/**
 * A fingerprint of every webhook's options: cheap enough to poll often, so a `webhooks set` reaches a
 * running daemon well within the 2 s the webhooks table itself gets (its own changes are not streamed).
 * A sum of all update times rather than the newest: a write that commits after a later-stamped one
 * still changes it.
 */
export async function webhookOptionsVersion(db: Queryable, schema: string): Promise<string> {
  const { rows } = await db.query(
    `select count(*)::text || '/' || coalesce(sum(extract(epoch from updated_at)), 0)::text as version from ${optionsTable(schema)}`,
  );
  return rows[0].version as string;
}
