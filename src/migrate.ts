import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import type pg from 'pg';
import type { BridgeConfig } from './config.js';
import { webhooksTable } from './config.js';
import { compileObjectMapping } from './route/objectMapping.js';
import type { Logger } from './log.js';
import { quoteIdent, quoteQualified } from './database.js';
import { BridgeError } from './errors.js';
import { hasTwentyMetadata, loadTwentyCatalog } from './twenty/catalog.js';

const SQL_DIR = fileURLToPath(new URL('../sql/', import.meta.url));
/** Any fixed number: concurrent `migrate` runs queue on this lock instead of racing. */
const MIGRATE_LOCK_KEY = 0x5077_6862; // "PwHb"

export interface MigrateResult {
  applied: string[];
  publicationTables: string[];
  replicaIdentityChanged: string[];
}

/** The numbered SQL files, in order. */
export function migrationFiles(): string[] {
  return readdirSync(SQL_DIR)
    .filter((f) => /^\d{6}_.+\.sql$/.test(f))
    .sort();
}

/**
 * Applies the forward-only SQL files, then (re)builds the publication over the watched tables that
 * exist and sets REPLICA IDENTITY FULL on them. Safe to run twice or concurrently: everything happens
 * under one advisory lock and each file is recorded once.
 */
export async function migrate(client: pg.ClientBase, config: BridgeConfig, log?: Logger): Promise<MigrateResult> {
  const schema = config.schema;
  const applied: string[] = [];
  // Must come first so that concurrent runs wait here instead of failing on each other's DDL.
  await client.query('select pg_advisory_lock($1)', [MIGRATE_LOCK_KEY]);
  try {
    await client.query(`create schema if not exists ${quoteIdent(schema)}`);
    await client.query(`create table if not exists ${quoteIdent(schema)}.migrations (name text primary key, applied_at timestamptz not null default now())`);
    const done = new Set((await client.query(`select name from ${quoteIdent(schema)}.migrations`)).rows.map((r) => r.name as string));
    for (const file of migrationFiles()) {
      if (done.has(file)) continue;
      const sql = readFileSync(path.join(SQL_DIR, file), 'utf8').replace(/:schema\b/g, quoteIdent(schema));
      await client.query('begin');
      try {
        await client.query(sql);
        await client.query(`insert into ${quoteIdent(schema)}.migrations (name) values ($1)`, [file]);
        await client.query('commit');
      } catch (error) {
        await client.query('rollback');
        throw error;
      }
      applied.push(file);
      log?.info({ file }, 'migration applied');
    }
    const { publicationTables, replicaIdentityChanged } = await syncPublication(client, config);
    return { applied, publicationTables, replicaIdentityChanged };
  } finally {
    await client.query('select pg_advisory_unlock($1)', [MIGRATE_LOCK_KEY]);
  }
}

export interface WatchedTable {
  schema: string;
  table: string;
  object: string;
  /** pg_class.relreplident: 'f' FULL, 'd' default, 'i' index, 'n' nothing. */
  replicaIdentity: string;
  /** Partitioned (relkind 'p'): its rows live in partitions, published under this root's name. */
  partitioned: boolean;
}

/**
 * The tables to stream: those `source.tables` selects, or in Twenty mode every active object's table
 * of every workspace.
 */
export async function findWatchedTables(client: pg.ClientBase, config: BridgeConfig): Promise<WatchedTable[]> {
  return config.source.mode === 'twenty' ? findTwentyTables(client) : findConfiguredTables(client, config);
}

async function findTwentyTables(client: pg.ClientBase): Promise<WatchedTable[]> {
  if (!(await hasTwentyMetadata(client))) {
    throw new BridgeError(
      'ERR_TWENTY_METADATA',
      'source.mode is "twenty" but this database has no Twenty metadata (core.workspace, core."objectMetadata", core."fieldMetadata"): point database.url at Twenty\'s database, or set source.mode to "tables"',
    );
  }
  const catalog = await loadTwentyCatalog(client);
  const { rows } = await client.query(
    `select t.schema, t.table, t.object, c.relreplident as ident, c.relkind = 'p' as partitioned
       from unnest($1::text[], $2::text[], $3::text[]) as t(schema, "table", object)
       join pg_namespace n on n.nspname = t.schema join pg_class c on c.relnamespace = n.oid and c.relname = t.table`,
    [catalog.objects.map((o) => o.schema), catalog.objects.map((o) => o.table), catalog.objects.map((o) => o.nameSingular)],
  );
  return rows.map((r) => ({ schema: r.schema, table: r.table, object: r.object, replicaIdentity: r.ident, partitioned: r.partitioned === true }));
}

/** Existing tables that `source.tables` selects (exact names and schema patterns). */
async function findConfiguredTables(client: pg.ClientBase, config: BridgeConfig): Promise<WatchedTable[]> {
  const resolve = compileObjectMapping(config.source.tables);
  // Partitions are left out: with publish_via_partition_root their changes arrive as the root's.
  const { rows } = await client.query(
    `select n.nspname as schema, c.relname as "table", c.relreplident as ident, c.relkind = 'p' as partitioned
       from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where c.relkind in ('r', 'p') and not c.relispartition
        and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname <> $1
      order by 1, 2`,
    [config.schema],
  );
  const out: WatchedTable[] = [];
  for (const row of rows) {
    const object = resolve(row.schema, row.table);
    if (object) out.push({ schema: row.schema, table: row.table, object, replicaIdentity: row.ident, partitioned: row.partitioned === true });
  }
  return out;
}

/**
 * Every partition (at any depth) of a partitioned table that is not REPLICA IDENTITY FULL. Postgres
 * does not carry the setting down from the root, and the old row image is written by the partition
 * the row lives in: without FULL there, updates have no old values (no updatedFields, no soft-delete
 * transitions, unchanged TOAST values unavailable) and no-op updates cannot be recognised.
 */
export async function partitionsNotFull(client: pg.ClientBase, root: WatchedTable): Promise<Array<{ schema: string; table: string }>> {
  const { rows } = await client.query(
    `select n.nspname as schema, c.relname as "table"
       from pg_partition_tree($1::regclass) t
       join pg_class c on c.oid = t.relid join pg_namespace n on n.oid = c.relnamespace
      where t.level > 0 and c.relreplident <> 'f'
      order by t.level, 1, 2`,
    [quoteQualified(root.schema, root.table)],
  );
  return rows;
}

/**
 * Publication options. From Postgres 18 on, a table whose replica identity (FULL) includes a stored
 * generated column refuses every UPDATE and DELETE unless the publication publishes generated
 * columns ("Replica identity must not contain unpublished generated column"): Twenty's search vector
 * is such a column. Publishing them also sends their values, as any other column's.
 */
async function publicationOptions(client: pg.ClientBase): Promise<string> {
  const { rows } = await client.query(`select current_setting('server_version_num')::int >= 180000 as generated`);
  return rows[0].generated ? 'publish_via_partition_root = true, publish_generated_columns = stored' : 'publish_via_partition_root = true';
}

/**
 * Makes the publication cover exactly the watched tables that exist now, with REPLICA IDENTITY FULL on
 * them and on their partitions. `migrate` runs it; run it again (`pg-webhook-bridge migrate`) after
 * creating tables that a pattern should cover, such as a new `workspace_*` schema, or new partitions.
 * A running stream picks the change up without a restart.
 */
export async function syncPublication(client: pg.ClientBase, config: BridgeConfig): Promise<{ publicationTables: string[]; replicaIdentityChanged: string[] }> {
  const watched = await findWatchedTables(client, config);
  const replicaIdentityChanged: string[] = [];
  const setFull = async (schema: string, table: string): Promise<void> => {
    // FULL gives old row images: updatedFields, soft-delete transitions and unchanged TOAST values.
    await client.query(`alter table ${quoteQualified(schema, table)} replica identity full`);
    replicaIdentityChanged.push(`${schema}.${table}`);
  };
  for (const t of watched) {
    if (t.replicaIdentity !== 'f') await setFull(t.schema, t.table);
    if (t.partitioned) for (const p of await partitionsNotFull(client, t)) await setFull(p.schema, p.table);
  }
  // The subscribers table rides the same stream, so webhook changes apply in commit order.
  const tables = [...watched.map((t) => quoteQualified(t.schema, t.table)), webhooksTable(config)];
  const publication = quoteIdent(config.replication.publication);
  const exists = await client.query('select 1 from pg_publication where pubname = $1', [config.replication.publication]);
  const options = await publicationOptions(client);
  if (exists.rowCount === 0) {
    await client.query(`create publication ${publication} for table ${tables.join(', ')} with (${options})`);
  } else {
    await client.query(`alter publication ${publication} set table ${tables.join(', ')}`);
    // Also for a publication made by hand or by an older version: partitioned tables must emit changes
    // under their root's name, which is the name source.tables maps.
    await client.query(`alter publication ${publication} set (${options})`);
  }
  return { publicationTables: watched.map((t) => `${t.schema}.${t.table}`), replicaIdentityChanged };
}
