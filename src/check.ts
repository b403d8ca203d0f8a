import type pg from 'pg';
import type { BridgeConfig } from './config.js';
import { webhooksTable } from './config.js';
import { databaseTlsWarning } from './configTls.js';
import { quoteIdent } from './database.js';
import { findWatchedTables, type WatchedTable } from './migrate.js';
import { hasWorkspaceColumn } from './store/webhookState.js';
import { tableStates } from './twenty/publication.js';
import { assertSlotUsable, readSlot, slotAheadError, type SlotInfo } from './replication/slot.js';

/** WAL retained by the slot past which `check` warns: a subscriber or the bridge is far behind. */
const SLOT_LAG_WARN_BYTES = 1024 ** 3;
/** (table, column) added by migrations after the first ones: a schema missing one is too old. */
const MIGRATED_COLUMNS: ReadonlyArray<readonly [string, string]> = [
  ['slot_state', 'confirmed_lsn'],
  ['deliveries', 'target_url'],
  ['webhook_options', 'webhook_id'],
];

export interface PreflightReport {
  /** Each one line: what is wrong, and the command or setting that fixes it. */
  problems: string[];
  warnings: string[];
}

/** Preflight (wal_level, privileges, publication, slot, replica identity); run by `check` and at `start`. */
export async function preflight(client: pg.ClientBase | pg.Pool, config: BridgeConfig): Promise<PreflightReport> {
  const problems: string[] = [];
  const warnings: string[] = [];
  const tls = databaseTlsWarning(config);
  if (tls !== null) warnings.push(tls);
  const settings = await client.query(
    `select current_setting('wal_level') as wal_level, current_setting('server_version_num')::int as version,
            current_setting('max_replication_slots')::int as max_slots, current_database() as db,
            current_setting('max_slot_wal_keep_size') as wal_keep_limit,
            r.rolsuper as superuser, r.rolreplication as replication, current_user as role
       from pg_roles r where r.rolname = current_user`,
  );
  const s = settings.rows[0];
  if (s.wal_level !== 'logical') {
    problems.push(`wal_level is '${s.wal_level}', logical replication needs 'logical': ALTER SYSTEM SET wal_level = logical; then restart Postgres`);
  }
  if (s.wal_keep_limit === '-1') {
    // A warning, not a problem: an unlimited slot is Postgres' default and works, until the bridge stops.
    warnings.push(
      `max_slot_wal_keep_size is -1 (unlimited): while the bridge is stopped or stuck, its slot keeps every WAL segment until the primary's disk is full. Set a limit the disk can hold (ALTER SYSTEM SET max_slot_wal_keep_size = '50GB'; SELECT pg_reload_conf();): past it Postgres invalidates the slot instead, "check" and the daemon report it, and "pg-webhook-bridge slot reset --yes" recovers (the changes in between are not delivered)`,
    );
  }
  if (s.version < 140000) problems.push(`Postgres ${Math.floor(s.version / 10000)} is not supported (14 to 18 are): upgrade the server`);
  if (!s.superuser && !s.replication) {
    problems.push(`role "${s.role}" lacks the REPLICATION attribute: ALTER ROLE "${s.role}" REPLICATION; (or use the role from sql/least_privilege_role.sql)`);
  }
  const schemaExists = await client.query('select 1 from pg_namespace where nspname = $1', [config.schema]);
  if (schemaExists.rowCount === 0) {
    problems.push(`schema "${config.schema}" does not exist: run "pg-webhook-bridge migrate"`);
    return { problems, warnings };
  }
  const usage = await client.query(`select has_schema_privilege(current_user, $1, 'USAGE') as ok`, [config.schema]);
  if (!usage.rows[0].ok) {
    problems.push(
      `role "${s.role}" may not use schema "${config.schema}": as an admin run psql -v role=${s.role} -f sql/least_privilege_role.sql (see docs/configuration.md)`,
    );
    return { problems, warnings };
  }
  // The columns later migrations added: readable by any role, where the migrations ledger is not.
  const current = await client.query(
    `select 1 from unnest($1::text[], $2::text[]) as c(t, a)
       join pg_attribute on attrelid = to_regclass($3 || '.' || c.t) and attname = c.a and not attisdropped`,
    [MIGRATED_COLUMNS.map(([t]) => t), MIGRATED_COLUMNS.map(([, a]) => a), quoteIdent(config.schema)],
  );
  if (current.rowCount !== MIGRATED_COLUMNS.length)
    problems.push(`schema "${config.schema}" is older than this version of the bridge: run "pg-webhook-bridge migrate" (as an admin)`);
  const table = webhooksTable(config);
  const webhooks = await client.query('select to_regclass($1) as t', [table]);
  if (webhooks.rows[0].t === null) problems.push(`webhooks table ${table} does not exist: run "pg-webhook-bridge migrate" or set webhooks.table`);

  if (webhooks.rows[0].t !== null) problems.push(...(await tenantProblems(client, config, table)));
  let watched: WatchedTable[];
  try {
    watched = await findWatchedTables(client as pg.ClientBase, config);
  } catch (error) {
    problems.push((error as Error).message);
    return { problems, warnings };
  }
  if (config.source.mode === 'twenty') {
    await checkTwentyTables(client, config, watched, problems, warnings);
    await checkSlot(client, config, s, problems, warnings);
    return { problems, warnings };
  }
  if (watched.length === 0) {
    problems.push(`none of the tables in source.tables (${Object.keys(config.source.tables).join(', ')}) exists: create them or change source.tables`);
  }
  const published = await client.query(`select schemaname || '.' || tablename as t from pg_publication_tables where pubname = $1`, [
    config.replication.publication,
  ]);
  const publishedSet = new Set(published.rows.map((r) => r.t as string));
  const pub = await client.query('select 1 from pg_publication where pubname = $1', [config.replication.publication]);
  if (pub.rowCount === 0) {
    problems.push(`publication "${config.replication.publication}" does not exist: run "pg-webhook-bridge migrate"`);
  } else {
    for (const t of watched) {
      if (!publishedSet.has(`${t.schema}.${t.table}`)) {
        problems.push(`table ${t.schema}.${t.table} is not in publication "${config.replication.publication}": run "pg-webhook-bridge migrate"`);
      }
    }
  }
  for (const t of watched) {
    if (t.replicaIdentity !== 'f') {
      warnings.push(
        `table ${t.schema}.${t.table} is not REPLICA IDENTITY FULL (updatedFields, soft-delete and unchanged large values need it): ALTER TABLE ${t.schema}.${t.table} REPLICA IDENTITY FULL; or run "pg-webhook-bridge migrate"`,
      );
    }
  }

  await checkSlot(client, config, s, problems, warnings);
  return { problems, warnings };
}

/**
 * A webhooks table with a "workspaceId" column is Twenty's: in tables mode with schema patterns, every
 * workspace's changes would reach every workspace's webhooks.
 */
async function tenantProblems(client: pg.ClientBase | pg.Pool, config: BridgeConfig, table: string): Promise<string[]> {
  if (config.source.mode !== 'tables') return [];
  const patterns = Object.keys(config.source.tables).filter((t) => t.slice(0, t.indexOf('.')).includes('*'));
  if (patterns.length === 0 || !(await hasWorkspaceColumn(client, table))) return [];
  return [
    `webhooks table ${table} has a "workspaceId" column and source.tables uses schema patterns (${patterns.join(', ')}): webhooks of one workspace would receive the changes of every workspace; set source.mode = "twenty" (each webhook then receives its own workspace's changes only)`,
  ];
}

/**
 * Twenty mode: the daemon adds new workspace tables to the publication itself, so a table missing
 * from it matters only where this role cannot add it. Those are warnings: the daemon still streams
 * every other workspace (and logs and counts the tables it cannot add).
 */
async function checkTwentyTables(
  client: pg.ClientBase | pg.Pool,
  config: BridgeConfig,
  watched: WatchedTable[],
  problems: string[],
  warnings: string[],
): Promise<void> {
  const publication = config.replication.publication;
  const pub = await client.query(`select pg_has_role(current_user, pubowner, 'USAGE') as owner from pg_publication where pubname = $1`, [publication]);
  if (pub.rowCount === 0) {
    problems.push(`publication "${publication}" does not exist: run "pg-webhook-bridge migrate"`);
    return;
  }
  if (!pub.rows[0].owner) {
    warnings.push(
      `role "${await currentRole(client)}" does not own publication "${publication}", so it cannot add new workspace tables to it: ALTER PUBLICATION ${quoteIdent(publication)} OWNER TO <this role> (see docs/configuration.md, Twenty mode)`,
    );
  }
  if (watched.length === 0)
    warnings.push(
      'no Twenty workspace with tables was found in core.workspace / core."dataSource": nothing to stream yet (new workspaces are picked up while running)',
    );
  for (const t of await tableStates(client, publication, watched)) {
    if ((t.published && t.full) || t.manageable) continue;
    const fix = !t.published ? 'add it to the publication' : 'set REPLICA IDENTITY FULL';
    warnings.push(
      `table ${t.schema}.${t.table} is not streamed: the bridge must ${fix}, but its role may not change it: GRANT <owner of Twenty's tables> TO <this role>, or run "pg-webhook-bridge migrate" as that owner (see docs/configuration.md, Twenty mode)`,
    );
  }
}

async function currentRole(client: pg.ClientBase | pg.Pool): Promise<string> {
  return (await client.query('select current_user as role')).rows[0].role as string;
}

async function checkSlot(
  client: pg.ClientBase | pg.Pool,
  config: BridgeConfig,
  s: { db: string; max_slots: number },
  problems: string[],
  warnings: string[],
): Promise<void> {
  const slot = await readSlot(client, config.replication.slot);
  if (slot) {
    try {
      assertSlotUsable(slot, s.db);
    } catch (error) {
      problems.push((error as Error).message);
    }
    const ahead = await slotAheadOfRecord(client, config.schema, slot);
    if (ahead) problems.push(ahead);
    if (slot.walStatus === 'unreserved') {
      warnings.push(
        `slot "${slot.slotName}" is about to lose WAL it needs (wal_status=unreserved): make sure the bridge is running and delivering, or raise max_slot_wal_keep_size`,
      );
    }
    if (slot.lagBytes !== null && Number(slot.lagBytes) > SLOT_LAG_WARN_BYTES) {
      warnings.push(
        `slot "${slot.slotName}" retains ${Math.round(Number(slot.lagBytes) / 1024 ** 2)} MiB of WAL: is the bridge running? ("pg-webhook-bridge status")`,
      );
    }
  } else {
    const stateTable = await client.query('select to_regclass($1) as t', [`${config.schema}.slot_state`]);
    const recorded = stateTable.rows[0].t
      ? await client.query(`select created_at from ${config.schema}.slot_state where slot_name = $1`, [config.replication.slot])
      : { rowCount: 0, rows: [] };
    if (recorded.rowCount) {
      problems.push(
        `replication slot "${config.replication.slot}" (created by this bridge at ${new Date(recorded.rows[0].created_at).toISOString()}) no longer exists: changes committed since the bridge last acknowledged are lost. Recover: "pg-webhook-bridge slot reset --yes" creates a new slot at the current position`,
      );
    }
    const used = await client.query('select count(*)::int as n from pg_replication_slots');
    if (used.rows[0].n >= s.max_slots)
      problems.push(`no free replication slot (max_replication_slots=${s.max_slots}): raise max_replication_slots and restart Postgres`);
  }
}

/** The slot past the furthest position this bridge recorded before confirming (see ensureSlot). */
async function slotAheadOfRecord(client: pg.ClientBase | pg.Pool, schema: string, slot: SlotInfo): Promise<string | null> {
  if (slot.confirmedFlushLsn === null) return null;
  try {
    const { rows } = await client.query(
      `select confirmed_lsn::text as recorded from ${quoteIdent(schema)}.slot_state where slot_name = $1 and $2::pg_lsn > confirmed_lsn`,
      [slot.slotName, slot.confirmedFlushLsn],
    );
    return rows.length > 0 ? slotAheadError(slot.slotName, rows[0].recorded, slot.confirmedFlushLsn).message : null;
  } catch {
    return null; // no state table or column yet: the missing migration is reported on its own
  }
}
