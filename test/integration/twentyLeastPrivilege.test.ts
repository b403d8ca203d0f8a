import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Daemon } from '../../src/daemon.js';
import { migrate } from '../../src/migrate.js';
import { eventually, runCli, slotStreaming, startDaemon, testConfig } from '../helpers/bridge.js';
import { clusterInfo, createTestDatabase, dropClusterRole, type TestDatabase } from '../helpers/database.js';
import { applyPsqlScript } from '../helpers/psqlScript.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';
import { createTwentyWorkspace, TWENTY_CORE_SQL, type TwentyWorkspace } from '../fixtures/twentyDatabase.js';

const SCRIPT = fileURLToPath(new URL('../../sql/least_privilege_role.sql', import.meta.url));

/**
 * Twenty mode with a daemon role that does not own Twenty's tables (the variant docs/configuration.md
 * describes): workspaces that existed at `migrate` stream; a new one is reported as unmanaged (check,
 * metric) until `migrate` runs again as Twenty's user, and then streams with no restart.
 */
describe("Twenty mode with a role that does not own Twenty's tables", () => {
  let db: TestDatabase;
  let daemon: Daemon | undefined;
  let role: string;
  let roleUrl: string;
  const receivers: Receiver[] = [];
  const settings = { 'source.mode': 'twenty', 'source.discoveryIntervalMs': 500 };

  beforeAll(async () => {
    db = await createTestDatabase('twentylp');
    role = `pgwb_twenty_${randomBytes(4).toString('hex')}`;
    const password = `tw-${randomBytes(12).toString('hex')}`;
    const info = clusterInfo();
    roleUrl = `postgres://${role}:${password}@${info.host}:${info.port}/${db.name}`;
    const client = await db.pool.connect();
    try {
      await client.query(TWENTY_CORE_SQL);
      await createTwentyWorkspace(client, { displayName: 'Existing' });
      await migrate(client, testConfig(db, settings));
    } finally {
      client.release();
    }
    await applyPsqlScript(db.url, SCRIPT, { role, password, publication: 'pgwb', webhooks_table: 'core.webhook' }, 'expander');
    await db.pool.query(
      `grant usage on schema core to ${pg.escapeIdentifier(role)};
       grant select on core.workspace, core."dataSource", core."objectMetadata", core."fieldMetadata" to ${pg.escapeIdentifier(role)}`,
    );
  });

  afterAll(async () => {
    await daemon?.stop();
    await Promise.all(receivers.map((r) => r.close()));
    await db?.drop();
    await dropClusterRole(role);
  });

  async function addWebhook(workspace: TwentyWorkspace, url: string): Promise<void> {
    await db.pool.query(`insert into core.webhook ("targetUrl", operations, secret, "workspaceId") values ($1, '{person.created}', 's3cret', $2)`, [
      url,
      workspace.id,
    ]);
  }

  it('streams the workspaces migrate saw, reports a new one as unmanaged, and streams it once migrate runs again', async () => {
    ({ daemon } = await startDaemon(testConfig(db, { ...settings, 'database.url': roleUrl })));
    await eventually(() => slotStreaming(db.pool), 'the slot to stream');
    const existing = (await db.pool.query(`select id::text, "databaseSchema" as schema from core.workspace`)).rows[0];
    const early = await startReceiver();
    receivers.push(early);
    await addWebhook({ id: existing.id, schema: existing.schema, objectIds: {} }, early.url);
    await db.pool.query(`insert into ${existing.schema}.person ("nameFirstName") values ('Streamed')`);
    await early.waitFor((reqs) => reqs.some((q) => q.json.record.name.firstName === 'Streamed'));

    const client = await db.pool.connect();
    let late: TwentyWorkspace;
    try {
      late = await createTwentyWorkspace(client, { displayName: 'Late' });
    } finally {
      client.release();
    }
    const unmanaged = async () => Number(/pgwb_source_tables\{state="unmanaged"\} (\d+)/.exec(await daemon!.metrics.registry.metrics())?.[1] ?? 0);
    await eventually(async () => (await unmanaged()) > 0, "the new workspace's tables to be counted as unmanaged", 30_000);
    const check = await runCli(
      [
        '--database-url',
        roleUrl,
        '--replication-slot',
        `slot_${db.name}`.slice(0, 63),
        '--replication-publication',
        'pgwb',
        '--source-mode',
        'twenty',
        'check',
      ],
      { DATABASE_URL: undefined },
    );
    expect(check.stdout).toMatch(new RegExp(`warning: table ${late.schema}\\.person is not streamed`));

    const lateReceiver = await startReceiver();
    receivers.push(lateReceiver);
    await addWebhook(late, lateReceiver.url);
    const admin = await db.pool.connect();
    try {
      await migrate(admin, testConfig(db, settings));
    } finally {
      admin.release();
    }
    await eventually(async () => (await unmanaged()) === 0, 'no table left unmanaged after migrate', 30_000);
    await db.pool.query(`insert into ${late.schema}.person ("nameFirstName") values ('Late but here')`);
    await lateReceiver.waitFor((reqs) => reqs.some((q) => q.json.record.name.firstName === 'Late but here'));
    expect(lateReceiver.requests.every((q) => q.json.workspaceId === late.id)).toBe(true);
  });
});
