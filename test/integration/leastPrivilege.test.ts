import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BridgeConfig } from '../../src/config.js';
import type { Daemon } from '../../src/daemon.js';
import { verifySignature } from '../../src/index.js';
import { addWebhook, confirmedFlushLsn, eventually, LogCapture, prepareDatabase, runCli, startDaemon, testConfig } from '../helpers/bridge.js';
import { clusterInfo, clusterUrl, createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { applyPsqlScript, findPsql } from '../helpers/psqlScript.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';

/**
 * Issue 6, acceptance 5: the daemon runs with the least-privilege role from sql/. An admin (the
 * cluster's superuser here) creates the CRM tables and runs `migrate`; the script makes the role; the
 * daemon and `check` then run as that role alone.
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
  });

  afterAll(async () => {
    await daemon?.stop();
    await Promise.all(receivers.map((r) => r.close()));
    await db?.drop();
    // Roles are cluster-wide; the database (and so every grant in it) is gone now.
    const admin = new pg.Client({ connectionString: clusterUrl() });
    await admin.connect();
    await admin.query(`drop role if exists ${pg.escapeIdentifier(role)}`).finally(() => admin.end());
  });

  async function receiver(): Promise<Receiver> {
    const r = await startReceiver();
    receivers.push(r);
    return r;
  }

  it('applies as the admin, with psql when installed and again through the plain-SQL expander (idempotent)', async () => {
    const variables = { role, password, publication: config.replication.publication };
    // The script refuses to run before migrate has made the publication.
    await expect(applyPsqlScript(db.url, SCRIPT, { ...variables, publication: 'no_such_publication' }, 'expander')).rejects.toThrow(
      /publication "no_such_publication" does not exist/,
    );
    if (findPsql()) await applyPsqlScript(db.url, SCRIPT, variables, 'psql');
    await applyPsqlScript(db.url, SCRIPT, variables, 'expander');

    const { rows } = await db.pool.query(
      `select rolcanlogin, rolreplication, rolsuper, rolcreatedb, rolcreaterole, rolbypassrls from pg_roles where rolname = $1`,
      [role],
    );
    expect(rows[0]).toEqual({ rolcanlogin: true, rolreplication: true, rolsuper: false, rolcreatedb: false, rolcreaterole: false, rolbypassrls: false });

    const can = async (sql: string, ...args: string[]): Promise<boolean> => (await db.pool.query(`select ${sql} as ok`, [role, ...args])).rows[0].ok;
    // Reads the watched tables and the webhooks table, writes none of them.
    for (const table of ['public.person', 'public.company', 'public.note', 'public.task', 'webhook_bridge.webhooks']) {
      expect(await can(`has_table_privilege($1, $2, 'select')`, table), `select on ${table}`).toBe(true);
      for (const privilege of ['insert', 'update', 'delete', 'truncate']) {
        expect(await can(`has_table_privilege($1, $2, $3)`, table, privilege), `${privilege} on ${table}`).toBe(false);
      }
    }
    // Its own state: full DML, no DDL.
    for (const table of ['webhook_bridge.deliveries', 'webhook_bridge.webhook_state']) {
      for (const privilege of ['select', 'insert', 'update', 'delete']) {
        expect(await can(`has_table_privilege($1, $2, $3)`, table, privilege), `${privilege} on ${table}`).toBe(true);
      }
    }
    expect(await can(`has_sequence_privilege($1, 'webhook_bridge.deliveries_id_seq', 'usage')`)).toBe(true);
    expect(await can(`has_table_privilege($1, 'webhook_bridge.migrations', 'select')`)).toBe(false);
    expect(await can(`has_schema_privilege($1, 'webhook_bridge', 'create')`)).toBe(false);
    expect(await can(`has_schema_privilege($1, 'public', 'create')`)).toBe(false);
    expect(await can(`has_database_privilege($1, current_database(), 'create')`)).toBe(false);
    // Heartbeats: every overload (its signature changed in 17) is executable, by default through PUBLIC.
    expect(await can(`(select bool_and(has_function_privilege($1, oid, 'execute')) from pg_proc where proname = 'pg_logical_emit_message')`)).toBe(true);
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
      '--database-url', roleUrl,
      '--replication-slot', config.replication.slot,
      '--replication-publication', config.replication.publication,
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
    await addWebhook(db, flaky.url, ['company.created'], 'lp-secret-flaky');

    ({ daemon, logs } = await startDaemon(testConfig(db, { 'database.url': roleUrl })));
    const slot = await db.pool.query(`select s.slot_type, s.temporary, s.plugin from pg_replication_slots s where slot_name = $1`, [config.replication.slot]);
    expect(slot.rows[0]).toEqual({ slot_type: 'logical', temporary: false, plugin: 'pgoutput' });
    const sessions = await db.pool.query(`select distinct usename from pg_stat_activity where datname = current_database() and application_name = 'pg-webhook-bridge'`);
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
    await eventually(async () => (await db.pool.query('select count(*)::int as n from webhook_bridge.deliveries')).rows[0].n === 0, 'the stored delivery to be completed');
    const state = await db.pool.query(`select last_error from webhook_bridge.webhook_state where last_error is not null`);
    expect(state.rows[0]?.last_error).toMatch(/500/);

    // Idle tables: heartbeats (pg_logical_emit_message) still move confirmed_flush_lsn forward.
    const before = await confirmedFlushLsn(db, config.replication.slot);
    await eventually(async () => (await confirmedFlushLsn(db, config.replication.slot)) > before, 'confirmed_flush_lsn to advance while idle', 10_000);

    const text = logs.text();
    expect(text).not.toMatch(/permission denied|must be superuser|could not write a heartbeat/i);
    expect(logs.lines.filter((l) => l.level === 'error' || l.level === 'fatal')).toEqual([]);
  });
});
