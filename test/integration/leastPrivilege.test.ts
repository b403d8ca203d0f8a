import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BridgeConfig } from '../../src/config.js';
import type { Daemon } from '../../src/daemon.js';
import { verifySignature } from '../../src/index.js';
import { addWebhook, confirmedFlushLsn, eventually, LogCapture, prepareDatabase, runCli, startDaemon, testConfig } from '../helpers/bridge.js';
import { clusterInfo, createTestDatabase, dropClusterRole, type TestDatabase } from '../helpers/database.js';
import { startCluster, type ClusterHandle } from '../helpers/postgresCluster.js';
import { applyPsqlScript, findPsql } from '../helpers/psqlScript.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';

/**
 * The daemon runs with the least-privilege role from sql/. An admin (the cluster's superuser here)
 * creates the CRM tables and runs `migrate`; the script makes the role; the daemon, `check` and the
 * operator commands then run as that role alone, and it holds no privilege they do not use.
 */
const SCRIPT = fileURLToPath(new URL('../../sql/least_privilege_role.sql', import.meta.url));

describe('least-privilege role (sql/least_privilege_role.sql)', () => {
  let db: TestDatabase;
  let config: BridgeConfig;
  let role: string;
  let password: string;
  let roleUrl: string;
  let daemon: Daemon | undefined;
  let logs: LogCapture | undefined;
  const receivers: Receiver[] = [];

  beforeAll(async () => {
    db = await createTestDatabase('leastpriv');
    config = await prepareDatabase(db);
    const suffix = randomBytes(4).toString('hex');
    role = `pgwb_daemon_${suffix}`;
    password = `lp-${randomBytes(12).toString('hex')}`;
    const info = clusterInfo();
    roleUrl = `postgres://${role}:${password}@${info.host}:${info.port}/${db.name}`;
    // The role every test below acts as; the first test applies the script again, both ways.
    await applyPsqlScript(db.url, SCRIPT, { role, password, publication: config.replication.publication }, 'expander');
  });

  afterAll(async () => {
    await daemon?.stop();
    await Promise.all(receivers.map((r) => r.close()));
    await db?.drop();
    await dropClusterRole(role);
  });

  async function receiver(): Promise<Receiver> {
    const r = await startReceiver();
    receivers.push(r);
    return r;
  }

  async function stopRoleDaemon(): Promise<void> {
    await daemon?.stop();
    daemon = logs = undefined;
  }

  /** The daemon running as that role (started by whichever test needs it first, or again after a test stopped it). */
  async function roleDaemon(): Promise<{ daemon: Daemon; logs: LogCapture }> {
    if (daemon === undefined || logs === undefined) ({ daemon, logs } = await startDaemon(testConfig(db, { 'database.url': roleUrl })));
    return { daemon, logs };
  }

  it('applies as the admin, with psql when installed and again through the plain-SQL expander (idempotent)', async () => {
    const variables = { role, password, publication: config.replication.publication };
    // The script refuses to run before migrate has made the publication.
    await expect(applyPsqlScript(db.url, SCRIPT, { ...variables, publication: 'no_such_publication' }, 'expander')).rejects.toThrow(
      /publication "no_such_publication" does not exist/,
    );
    await applyPsqlScript(db.url, SCRIPT, variables, findPsql() ? 'psql' : 'expander');
    // What an older version of this script granted (SELECT on the watched tables), and a stray grant:
    // running the script again takes them back.
    await db.pool.query(
      `grant select on public.person, public.task to ${pg.escapeIdentifier(role)}; grant delete on webhook_bridge.webhook_state to ${pg.escapeIdentifier(role)}`,
    );
    await applyPsqlScript(db.url, SCRIPT, variables, 'expander');

    const { rows } = await db.pool.query(
      `select rolcanlogin, rolreplication, rolsuper, rolcreatedb, rolcreaterole, rolbypassrls from pg_roles where rolname = $1`,
      [role],
    );
    expect(rows[0]).toEqual({ rolcanlogin: true, rolreplication: true, rolsuper: false, rolcreatedb: false, rolcreaterole: false, rolbypassrls: false });

    const can = async (sql: string, ...args: string[]): Promise<boolean> => (await db.pool.query(`select ${sql} as ok`, [role, ...args])).rows[0].ok;
    // Exactly what the daemon's SQL uses, table by table: pgoutput reads the watched tables without
    // any table privilege, the webhooks table is only read, and each state table gets only the
    // statements run on it (webhook_state and webhook_options rows are upserted, never deleted).
    const expected: Record<string, string[]> = {
      'public.person': [],
      'public.company': [],
      'public.note': [],
      'public.task': [],
      'webhook_bridge.webhooks': ['select'],
      'webhook_bridge.deliveries': ['select', 'insert', 'update', 'delete'],
      'webhook_bridge.webhook_state': ['select', 'insert', 'update'],
      'webhook_bridge.webhook_options': ['select', 'insert', 'update'],
      'webhook_bridge.slot_state': ['select', 'insert', 'update', 'delete'],
      'webhook_bridge.event_log': ['select', 'insert', 'delete'],
      'webhook_bridge.log_cursors': ['select', 'insert', 'update', 'delete'],
      'webhook_bridge.migrations': [],
    };
    const bridgeTables = await db.pool.query(
      `select 'webhook_bridge.' || relname as t from pg_class where relnamespace = 'webhook_bridge'::regnamespace and relkind in ('r', 'p') order by 1`,
    );
    expect(
      bridgeTables.rows.map((r) => r.t).filter((t) => !(t in expected)),
      'bridge tables this test does not audit',
    ).toEqual([]);
    const actual: Record<string, string[]> = {};
    for (const table of Object.keys(expected)) {
      actual[table] = [];
      for (const privilege of ['select', 'insert', 'update', 'delete', 'truncate', 'references', 'trigger']) {
        if (await can(`has_table_privilege($1, $2, $3)`, table, privilege)) actual[table].push(privilege);
      }
    }
    expect(actual).toEqual(expected);
    expect(await can(`has_sequence_privilege($1, 'webhook_bridge.deliveries_id_seq', 'usage')`)).toBe(true);
    expect(await can(`has_sequence_privilege($1, 'webhook_bridge.event_log_id_seq', 'usage')`)).toBe(true);
    expect(await can(`has_sequence_privilege($1, 'webhook_bridge.deliveries_id_seq', 'select')`)).toBe(false);
    expect(await can(`has_sequence_privilege($1, 'webhook_bridge.deliveries_id_seq', 'update')`)).toBe(false);
    expect(await can(`has_schema_privilege($1, 'webhook_bridge', 'create')`)).toBe(false);
    // Before Postgres 15 every role may create in schema public (through PUBLIC, not through this
    // script): the role must then have no more of it than PUBLIC has.
    const publicCreate = (await db.pool.query(`select current_setting('server_version_num')::int < 150000 as v`)).rows[0].v;
    expect(await can(`has_schema_privilege($1, 'public', 'create')`)).toBe(publicCreate);
    expect(await can(`has_database_privilege($1, current_database(), 'create')`)).toBe(false);
    // Heartbeats: every overload (its signature changed in 17) is executable, by default through PUBLIC.
    expect(await can(`(select bool_and(has_function_privilege($1, oid, 'execute')) from pg_proc where proname = 'pg_logical_emit_message')`)).toBe(true);
  });

  it("refuses a table in the bridge's schema that it has no grants for, instead of leaving the role without them", async () => {
    await db.pool.query('create table webhook_bridge.from_a_newer_bridge (id int)');
    try {
      await expect(applyPsqlScript(db.url, SCRIPT, { role, publication: config.replication.publication }, 'expander')).rejects.toThrow(
        /table webhook_bridge\.from_a_newer_bridge is not known to this script/,
      );
    } finally {
      await db.pool.query('drop table webhook_bridge.from_a_newer_bridge');
    }
  });

  it('refuses to turn an existing superuser into the daemon role', async () => {
    await expect(applyPsqlScript(db.url, SCRIPT, { role: clusterInfo().user, publication: config.replication.publication }, 'expander')).rejects.toThrow(
      /is a superuser/,
    );
    const { rows } = await db.pool.query('select rolsuper from pg_roles where rolname = $1', [clusterInfo().user]);
    expect(rows[0].rolsuper).toBe(true);
  });

  it('`check` passes as that role', async () => {
    const result = await runCli([
      '--database-url',
      roleUrl,
      '--replication-slot',
      config.replication.slot,
      '--replication-publication',
      config.replication.publication,
      'check',
    ]);
    expect(result.stderr).toBe('');
    expect(result.stdout).toContain('ok: ready to stream');
    expect(result.code).toBe(0);
  });

  it('the daemon runs as that role: creates its slot, delivers, stores and retries a failure, heartbeats move the slot', async () => {
    const ok = await receiver();
    const flaky = await receiver();
    flaky.script((_req, i) => (i < 2 ? { status: 500 } : { status: 200 }));
    await addWebhook(db, ok.url, ['person.created'], 'lp-secret-ok');
    const flakyHook = await addWebhook(db, flaky.url, ['company.created'], 'lp-secret-flaky');

    const { logs } = await roleDaemon();
    const slot = await db.pool.query(`select s.slot_type, s.temporary, s.plugin from pg_replication_slots s where slot_name = $1`, [config.replication.slot]);
    expect(slot.rows[0]).toEqual({ slot_type: 'logical', temporary: false, plugin: 'pgoutput' });
    const sessions = await db.pool.query(
      `select distinct usename from pg_stat_activity where datname = current_database() and application_name = 'pg-webhook-bridge'`,
    );
    expect(sessions.rows.map((r) => r.usename)).toEqual([role]);

    await db.pool.query(`insert into person ("firstName") values ('Least')`);
    await ok.waitForCount(1);
    const request = ok.requests[0];
    expect(request.json).toMatchObject({ event: 'person.created', data: { firstName: 'Least' } });
    expect(verifySignature(request.rawBody, request.headers, 'lp-secret-ok')).toEqual({ valid: true, scheme: 'twenty', id: request.json.id, idSigned: true });

    // A failing receiver: the delivery goes to the durable store (insert), is retried from there
    // (claim, update) and completed (delete), and the webhook's state is recorded.
    await db.pool.query(`insert into company (name) values ('Privilege Inc')`);
    await flaky.waitForCount(3, 20_000);
    expect(flaky.requests.map((r) => r.json.event)).toEqual(['company.created', 'company.created', 'company.created']);
    await eventually(
      async () => (await db.pool.query('select count(*)::int as n from webhook_bridge.deliveries where webhook_id = $1', [flakyHook])).rows[0].n === 0,
      'the stored delivery to be completed',
    );
    const state = await db.pool.query(`select last_error from webhook_bridge.webhook_state where last_error is not null and webhook_id = $1`, [flakyHook]);
    expect(state.rows[0]?.last_error).toMatch(/500/);

    // Idle tables: heartbeats (pg_logical_emit_message) still move confirmed_flush_lsn forward.
    const before = await confirmedFlushLsn(db, config.replication.slot);
    await eventually(async () => (await confirmedFlushLsn(db, config.replication.slot)) > before, 'confirmed_flush_lsn to advance while idle', 10_000);

    const text = logs.text();
    expect(text).not.toMatch(/permission denied|must be superuser|could not write a heartbeat/i);
    expect(logs.lines.filter((l) => l.level === 'error' || l.level === 'fatal')).toEqual([]);
  });

  it('as that role too: dead deliveries, auto-disable, gauges, and every operator command that runs as it', async () => {
    const { daemon, logs } = await roleDaemon();
    await eventually(() => daemon.role === 'leader', 'the daemon to lead');
    const asRole = (...args: string[]) =>
      runCli(['--database-url', roleUrl, '--replication-slot', config.replication.slot, '--replication-publication', config.replication.publication, ...args]);
    const failing = await receiver();
    failing.script(() => ({ status: 500 }));
    const gone = await receiver();
    gone.script(() => ({ status: 410 }));
    const deadHook = await addWebhook(db, failing.url, ['note.created'], 'lp-secret-dead');
    const goneHook = await addWebhook(db, gone.url, ['task.created'], 'lp-secret-gone');

    // Out of retries: the stored delivery is marked dead (update) and kept.
    await db.pool.query(`insert into note (title) values ('dead letter')`);
    await eventually(
      async () =>
        (await db.pool.query(`select count(*)::int as n from webhook_bridge.deliveries where status = 'dead' and webhook_id = $1`, [deadHook])).rows[0].n === 1,
      'a dead delivery',
      30_000,
    );
    // 410 Gone: the bridge disables the webhook in its own state table (upsert).
    await db.pool.query(`insert into task (title) values ('gone')`);
    await eventually(
      async () =>
        (await db.pool.query(`select 1 from webhook_bridge.webhook_state where webhook_id = $1 and disabled_at is not null`, [goneHook])).rowCount === 1,
      'the 410 webhook to be disabled',
      20_000,
    );

    // The gauges read the store and the slot through queries whose failures are not logged: they
    // must have values, or a missing grant would go unseen.
    await eventually(
      async () => {
        const backlog = await daemon.metrics.registry.getSingleMetric('pgwb_store_backlog')!.get();
        return backlog.values.some((v) => v.labels.status === 'dead' && v.value === 1);
      },
      'pgwb_store_backlog{status="dead"} 1',
      20_000,
    );

    const listed = await asRole('deliveries', 'list', '--status', 'dead', '--json');
    expect(listed.stderr).toBe('');
    expect(JSON.parse(listed.stdout).map((d: any) => [d.webhookId, d.eventName])).toEqual([[deadHook, 'note.created']]);
    const hooks = await asRole('webhooks', 'list', '--json');
    expect(hooks.stderr).toBe('');
    expect(JSON.parse(hooks.stdout).find((w: any) => w.id === goneHook)).toMatchObject({ state: 'disabled' });
    for (const command of ['enable', 'disable', 'enable']) {
      const result = await asRole('webhooks', command, goneHook);
      expect(result.stderr).toBe('');
      expect(result.code).toBe(0);
    }
    const status = await asRole('status', '--json');
    expect(status.stderr).toBe('');
    expect(JSON.parse(status.stdout)).toMatchObject({ slot: { exists: true, streaming: true }, replicas: { leader: 1 }, backlog: { dead: 1 } });

    // The receiver recovers; redeliver (update) sends the dead delivery, which is then completed (delete).
    failing.script(() => ({ status: 200 }));
    const redelivered = await asRole('deliveries', 'redeliver', '--webhook', deadHook);
    expect(redelivered.stderr).toBe('');
    expect(redelivered.stdout).toMatch(/^1 delivery scheduled/);
    await eventually(() => failing.requests.some((r, i) => i >= 4 && r.json.event === 'note.created'), 'the redelivered event', 20_000);
    await eventually(
      async () => (await db.pool.query('select count(*)::int as n from webhook_bridge.deliveries where webhook_id = $1', [deadHook])).rows[0].n === 0,
      'the redelivered delivery to be completed',
    );

    // Recovery after a lost slot: `slot reset` drops the old slot and records the new one.
    await stopRoleDaemon();
    const reset = await asRole('slot', 'reset', '--yes');
    expect(reset.stderr).toBe('');
    expect(reset.code).toBe(0);
    const check = await asRole('check');
    expect(check.stdout).toContain('ok: ready to stream');

    expect(logs.text()).not.toMatch(/permission denied|must be superuser/i);
    expect(logs.lines.filter((l) => l.level === 'error' || l.level === 'fatal')).toEqual([]);
  });
});

/** The fenced block of docs/configuration.md whose first line is pg_hba.conf's column header. */
function documentedHbaLines(): string[] {
  const doc = readFileSync(fileURLToPath(new URL('../../docs/configuration.md', import.meta.url)), 'utf8');
  const block = /```\n(# TYPE\s+DATABASE[^\n]*\n[\s\S]*?)```/.exec(doc);
  expect(block, 'a pg_hba.conf block in docs/configuration.md').not.toBeNull();
  return block![1].split('\n').filter((line) => line.trim() && !line.startsWith('#'));
}

describe('pg_hba.conf lines from docs/configuration.md (private cluster)', () => {
  let cluster: ClusterHandle;
  let pool: pg.Pool;
  const role = 'webhook_bridge_daemon';
  const password = `hba-${randomBytes(12).toString('hex')}`;

  beforeAll(async () => {
    cluster = await startCluster();
    const admin = new pg.Client({ connectionString: cluster.adminUrl('postgres') });
    await admin.connect();
    await admin.query('create database crm').finally(() => admin.end());
    pool = new pg.Pool({ connectionString: cluster.adminUrl('crm'), max: 2 });
    const db: TestDatabase = { url: cluster.adminUrl('crm'), name: 'crm', pool, drop: async () => undefined };
    const config = await prepareDatabase(db);
    await applyPsqlScript(db.url, SCRIPT, { role, password, publication: config.replication.publication }, 'expander');
  });

  afterAll(async () => {
    await pool?.end();
    await cluster?.stop();
  });

  const roleUrl = (database: string) => `postgres://${role}:${password}@${cluster.host}:${cluster.port}/${database}`;

  /** Connects (as a logical or physical walsender, or a plain session) and asks for the system id. */
  async function identify(database: string, replication?: 'database' | true): Promise<string> {
    const client = new pg.Client({ connectionString: roleUrl(database), ...(replication ? { replication } : {}) } as pg.ClientConfig);
    client.on('error', () => undefined);
    try {
      await client.connect();
      const { rows } = await client.query(replication ? 'IDENTIFY_SYSTEM' : 'select system_identifier::text as systemid from pg_control_system()');
      return `ok ${rows[0].systemid}`;
    } catch (error) {
      return (error as Error).message;
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  it('admit the role to its database, logical replication included, and refuse physical replication and other databases', async () => {
    // initdb's own lines let every REPLICATION role in everywhere, physical replication included.
    expect(await identify('crm', true)).toMatch(/^ok /);
    expect(await identify('postgres')).toMatch(/^ok /);

    // The documented lines, for this test's loopback network (its cluster has no TLS: hostssl -> host).
    const lines = documentedHbaLines().map((line) => line.replace(/^hostssl\b/, 'host   ').replace(/\b10\.0\.0\.0\/8\b/, '127.0.0.1/32'));
    expect(lines.length).toBeGreaterThanOrEqual(3);
    const file = path.join(cluster.dataDir, 'pg_hba.conf');
    writeFileSync(file, `${lines.join('\n')}\n${readFileSync(file, 'utf8')}`);
    await pool.query('select pg_reload_conf()');
    await eventually(async () => !(await identify('crm', true)).startsWith('ok '), 'the new pg_hba.conf to be loaded');

    expect(await identify('crm', 'database')).toMatch(/^ok /);
    expect(await identify('crm')).toMatch(/^ok /);
    expect(await identify('crm', true)).toMatch(/pg_hba\.conf rejects replication connection for host "127\.0\.0\.1", user "webhook_bridge_daemon"/);
    expect(await identify('postgres', 'database')).toMatch(
      /pg_hba\.conf rejects connection for host "127\.0\.0\.1", user "webhook_bridge_daemon", database "postgres"/,
    );
    expect(await identify('postgres')).toMatch(/pg_hba\.conf rejects connection/);
    // Other roles are untouched.
    const admin = new pg.Client({ connectionString: cluster.adminUrl('postgres'), replication: true } as pg.ClientConfig);
    await admin.connect();
    expect((await admin.query('IDENTIFY_SYSTEM')).rows).toHaveLength(1);
    await admin.end();
  });
});
