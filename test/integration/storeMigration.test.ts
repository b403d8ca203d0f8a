import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Daemon } from '../../src/daemon.js';
import { addWebhook, prepareDatabase, runCli, startDaemon, testConfig, testOverrides } from '../helpers/bridge.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';

const EVENT_LOG_MIGRATION = '000009_event_log.sql';

/**
 * A store written by the version before the event log (pending and dead deliveries, one row each) is
 * carried over by `migrate`: the pending ones are sent, each record in order and before its newer
 * changes, and the dead ones stay listed and redeliverable.
 */
describe('migrating a populated store from before the event log', () => {
  let db: TestDatabase;
  let daemon: Daemon | null = null;
  let receiver: Receiver;
  let webhookId: string;
  const people: string[] = [];

  beforeAll(async () => {
    db = await createTestDatabase('storemigration');
    await prepareDatabase(db);
    // The schema as the previous version left it: no event log yet.
    await db.pool.query(`drop table webhook_bridge.event_log, webhook_bridge.log_cursors`);
    await db.pool.query(`delete from webhook_bridge.migrations where name = $1`, [EVENT_LOG_MIGRATION]);
    receiver = await startReceiver();
    webhookId = await addWebhook(db, receiver.url, ['person.updated']);
    const { rows } = await db.pool.query(`insert into person ("firstName") select 'old-' || g from generate_series(1, 3) g returning id::text`);
    people.push(...rows.map((r) => r.id as string));
    // What the previous version stored for a webhook that was down: three updates per record, pending,
    // and two that had spent their retries.
    let lsn = 0x1000;
    for (const [n, id] of people.entries()) {
      for (let step = 1; step <= 3; step++) {
        await db.pool.query(
          `insert into webhook_bridge.deliveries (webhook_id, event_id, event_name, record_key, commit_lsn, change_index, body, status, attempts)
           values ($1, $2, 'person.updated', $3, $4::pg_lsn, 0, $5, 'pending', 2)`,
          [
            webhookId,
            `old-${n}-${step}`,
            `person:${id}`,
            `0/${(lsn++).toString(16)}`,
            JSON.stringify({ event: 'person.updated', data: { id, step }, id: `old-${n}-${step}` }),
          ],
        );
      }
    }
    for (const n of [1, 2]) {
      await db.pool.query(
        `insert into webhook_bridge.deliveries (webhook_id, event_id, event_name, record_key, commit_lsn, change_index, body, status, attempts, last_error)
         values ($1, $2, 'person.updated', 'person:gone', $3::pg_lsn, 0, '{"dead":true}', 'dead', 5, 'http_status (HTTP 500): failed')`,
        [webhookId, `dead-${n}`, `0/${(lsn++).toString(16)}`],
      );
    }
  });

  afterAll(async () => {
    await daemon?.stop();
    await receiver?.close();
    await db?.drop();
  });

  it('migrate adds the log; the daemon sends every pending delivery, each record in order and before its newer changes; dead ones stay', async () => {
    const o = testOverrides(db);
    const migrated = await runCli(['--database-url', db.url, '--replication-slot', String(o['replication.slot']), 'migrate']);
    expect(migrated.code, migrated.stderr).toBe(0);
    const { rows: applied } = await db.pool.query(`select name from webhook_bridge.migrations where name = $1`, [EVENT_LOG_MIGRATION]);
    expect(applied).toHaveLength(1);

    ({ daemon } = await startDaemon(testConfig(db)));
    // A newer change of the first record, committed once the daemon runs: it waits behind the stored ones.
    await db.pool.query(`update person set city = 'newer' where id = $1`, [people[0]]);
    await receiver.waitForCount(3 * 3 + 1, 30_000);
    const steps = (id: string): unknown[] =>
      receiver.requests
        .map((r) => JSON.parse(r.rawBody) as { data: { id: string; step?: number; city?: string } })
        .filter((p) => p.data.id === id)
        .map((p) => p.data.step ?? p.data.city);
    expect(steps(people[0]!)).toEqual([1, 2, 3, 'newer']);
    expect(steps(people[1]!)).toEqual([1, 2, 3]);
    expect(steps(people[2]!)).toEqual([1, 2, 3]);
    const { rows: left } = await db.pool.query(`select event_id, status from webhook_bridge.deliveries order by event_id`);
    expect(left).toEqual([
      { event_id: 'dead-1', status: 'dead' },
      { event_id: 'dead-2', status: 'dead' },
    ]);
    const listed = await runCli(['--database-url', db.url, 'deliveries', 'list', '--status', 'dead']);
    expect(listed.stdout).toContain('dead-1');
  });
});
