/**
 * Per-file databases on the shared test cluster (started by globalSetup.ts).
 *
 *   const db = await createTestDatabase('fanout');   // fresh database, its own pool
 *   ...
 *   await db.drop();                                  // backends, slots, database: all gone
 *
 * Replication slot names are cluster-wide: derive them from `db.name` so parallel files never collide.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';
import { PG_ENV, type ProvidedPgCluster } from './globalSetup.js';
import { restartDataDir } from './postgresCluster.js';

export interface TestDatabase {
  /** postgres://user:password@127.0.0.1:port/name */
  url: string;
  name: string;
  /** Ended by drop(). Idle-client errors (a restart, a terminated backend) are swallowed. */
  pool: pg.Pool;
  /** Terminates its backends (walsenders included), drops its replication slots, drops it. Idempotent. */
  drop(): Promise<void>;
}

const POOL_END_TIMEOUT_MS = 5_000; // a test that never released a client must not hang drop()
const SLOT_DROP_TIMEOUT_MS = 30_000;
const SLOT_DROP_POLL_MS = 50;

/** Connection to the shared cluster: inject('pg') inside vitest, PGWB_TEST_* otherwise. */
export function clusterInfo(): ProvidedPgCluster {
  let provided: ProvidedPgCluster | undefined;
  try {
    provided = inject('pg');
  } catch {
    // Not inside a vitest worker (e.g. a tsx script): use the environment.
  }
  if (provided) return provided;
  const env = process.env;
  if (env[PG_ENV.host] && env[PG_ENV.port]) {
    return {
      host: env[PG_ENV.host]!,
      port: Number(env[PG_ENV.port]),
      user: env[PG_ENV.user] ?? 'postgres',
      password: env[PG_ENV.password] ?? '',
      dataDir: env[PG_ENV.dataDir] ?? '',
      binDir: env[PG_ENV.binDir] ?? '',
    };
  }
  throw new Error(
    'no shared test cluster: test/helpers/globalSetup.ts starts one only when a selected test file is under ' +
      '/integration/; put this file there, or set PGWB_TEST_HOST/PGWB_TEST_PORT/PGWB_TEST_USER/PGWB_TEST_PASSWORD',
  );
}

export function clusterUrl(database = 'postgres', info: ProvidedPgCluster = clusterInfo()): string {
  const auth = `${encodeURIComponent(info.user)}:${encodeURIComponent(info.password)}`;
  return `postgres://${auth}@${info.host}:${info.port}/${encodeURIComponent(database)}`;
}

async function withAdmin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: clusterUrl() });
  client.on('error', () => {}); // a restart while we are connected: the query below rejects instead
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

function databaseName(hint: string | undefined): string {
  const base = (hint ?? 'test')
    .toLowerCase()
    .replace(/[^a-z0-9_]+/g, '_')
    .slice(0, 40);
  // Lower case and unquoted-safe: pg-logical-replication does not quote slot names derived from it.
  return `pgwb_${base}_${randomBytes(4).toString('hex')}`;
}

/** Creates a fresh, uniquely named database (`pgwb_<name>_<random>`) on the shared cluster. */
export async function createTestDatabase(name?: string): Promise<TestDatabase> {
  const dbName = databaseName(name);
  // template0: nobody is ever connected to it, so parallel files never hit "source database is being
  // accessed by other users".
  await withAdmin((admin) => admin.query(`CREATE DATABASE ${pg.escapeIdentifier(dbName)} TEMPLATE template0`));
  const url = clusterUrl(dbName);
  const pool = new pg.Pool({ connectionString: url, max: 10 });
  // Without a listener an idle client's error (Postgres restarted, backend terminated) crashes the worker.
  pool.on('error', () => {});

  let dropping: Promise<void> | undefined;
  const drop = (): Promise<void> => {
    dropping ??= (async () => {
      await Promise.race([pool.end().catch(() => {}), new Promise((resolve) => setTimeout(resolve, POOL_END_TIMEOUT_MS).unref())]);
      await dropDatabaseAndSlots(dbName);
    })();
    return dropping;
  };
  return { url, name: dbName, pool, drop };
}

/**
 * DROP DATABASE refuses while logical slots exist on it, and a slot can only be dropped while no
 * walsender uses it; a daemon under test may also be reconnecting. So: lock the door, terminate every
 * backend, drop the slots once they are inactive, then drop the database.
 */
async function dropDatabaseAndSlots(name: string): Promise<void> {
  await withAdmin(async (admin) => {
    const exists = await admin.query('select 1 from pg_database where datname = $1', [name]);
    if (exists.rowCount === 0) return;
    await admin.query(`ALTER DATABASE ${pg.escapeIdentifier(name)} WITH ALLOW_CONNECTIONS false`);

    const deadline = Date.now() + SLOT_DROP_TIMEOUT_MS;
    for (;;) {
      await admin.query(`select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()`, [name]);
      await admin.query(`select pg_terminate_backend(active_pid) from pg_replication_slots where database = $1 and active_pid is not null`, [name]);
      const slots = await admin.query<{ slot_name: string; active: boolean }>('select slot_name, active from pg_replication_slots where database = $1', [name]);
      if (slots.rowCount === 0) break;
      for (const slot of slots.rows.filter((s) => !s.active)) {
        try {
          await admin.query('select pg_drop_replication_slot($1)', [slot.slot_name]);
        } catch (err) {
          // 55006: became active again (retry); 42704: already dropped.
          const code = (err as { code?: string }).code;
          if (code !== '55006' && code !== '42704') throw err;
        }
      }
      if (Date.now() > deadline) {
        throw new Error(`could not drop replication slots of ${name}: ${slots.rows.map((s) => `${s.slot_name} (active=${s.active})`).join(', ')}`);
      }
      await new Promise((resolve) => setTimeout(resolve, SLOT_DROP_POLL_MS));
    }
    await admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`);
  });
}

/** Drops a role made by a test. Roles are cluster-wide: drop the test's database (and its grants) first. */
export async function dropClusterRole(role: string): Promise<void> {
  const admin = new pg.Client({ connectionString: clusterUrl() });
  await admin.connect();
  await admin.query(`drop role if exists ${pg.escapeIdentifier(role)}`).finally(() => admin.end());
}

/**
 * `pg_ctl restart -m <mode>` on the shared cluster (default) or on `target` (a cluster from
 * startCluster()). Same port afterwards; every existing connection breaks. The shared cluster serves
 * all integration files running in parallel: a file that restarts Postgres should own its cluster.
 */
export async function restartCluster(mode: 'fast' | 'immediate' = 'fast', target: { dataDir: string; binDir: string } = clusterInfo()): Promise<void> {
  if (!target.dataDir || !target.binDir) throw new Error('restartCluster: the cluster info has no dataDir/binDir');
  await restartDataDir(target.binDir, target.dataDir, mode);
}
