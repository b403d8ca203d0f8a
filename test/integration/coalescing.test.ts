import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Daemon } from '../../src/daemon.js';
import { migrate } from '../../src/migrate.js';
import { parseLsn, type Lsn } from '../../src/replication/lsn.js';
import {
  confirmedFlushLsn,
  eventually,
  prepareDatabase,
  spawnStreamingBridge,
  startDaemon,
  testConfig,
  testOverrides,
  type BridgeProcess,
} from '../helpers/bridge.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';
import { coalescedCount, insertOptions } from '../helpers/webhookOptions.js';
import { createTwentyWorkspace, TWENTY_CORE_SQL, type TwentyWorkspace } from '../fixtures/twentyDatabase.js';

/**
 * `--coalesce S`: a burst of auto-save-like updates of one record reaches the webhook as one event with
 * the final row; other webhooks get every change; a kill -9 while a burst is held loses nothing.
 */

async function currentWalLsn(db: TestDatabase): Promise<Lsn> {
  const { rows } = await db.pool.query('select pg_current_wal_lsn()::text as l');
  return parseLsn(rows[0].l);
}

/** Five single-field saves of one record, each its own transaction, as a form that saves on every field does. */
async function autoSave(db: TestDatabase, table: string, id: string, saves: Array<[column: string, value: string]>): Promise<void> {
  for (const [column, value] of saves) await db.pool.query(`update ${table} set "${column}" = $2 where id = $1`, [id, value]);
}

describe('coalescing, tables mode', () => {
  let db: TestDatabase;
  let daemon: Daemon;
  const receivers: Receiver[] = [];
  const ids: string[] = [];

  beforeAll(async () => {
    db = await createTestDatabase('coalescing');
    const config = await prepareDatabase(db);
    for (const coalesce of [2, null]) {
      const r = await startReceiver();
      receivers.push(r);
      const { rows } = await db.pool.query(
        `insert into webhook_bridge.webhooks ("targetUrl", operations, secret) values ($1, '{person.*}', 's') returning id::text`,
        [r.url],
      );
      ids.push(rows[0].id);
      if (coalesce !== null) await insertOptions(db.pool, rows[0].id, { coalesce_seconds: coalesce });
    }
    ({ daemon } = await startDaemon(config));
  });

  afterAll(async () => {
    await daemon?.stop();
    await Promise.all(receivers.map((r) => r.close()));
    await db?.drop();
  });

  it('five saves in a second reach the coalescing webhook as one update with the final row; the other gets all five', async () => {
    const [held, plain] = receivers as [Receiver, Receiver];
    const { rows } = await db.pool.query(`insert into public.person ("firstName", email) values ('Ada', 'ada@example.com') returning id::text`);
    const id = rows[0].id as string;
    await held.waitFor((reqs) => reqs.some((q) => q.json.data.id === id));
    held.requests.length = 0;
    plain.requests.length = 0;
    const coalescedBefore = await coalescedCount(daemon, ids[0]!);

    const started = Date.now();
    await autoSave(db, 'public.person', id, [
      ['firstName', 'Ada M.'],
      ['email', 'ada@new.example'],
      ['phone', '+44 20 7946 0000'],
      ['jobTitle', 'Engineer'],
      ['jobTitle', 'Chief Engineer'],
    ]);
    expect(Date.now() - started).toBeLessThan(1_000);
    await plain.waitFor((reqs) => reqs.length === 5);
    await held.waitFor((reqs) => reqs.length === 1, 10_000);
    const [event] = held.requests;
    expect(event!.json).toMatchObject({
      event: 'person.updated',
      data: { id, firstName: 'Ada M.', email: 'ada@new.example', phone: '+44 20 7946 0000', jobTitle: 'Chief Engineer' },
      updatedFields: ['firstName', 'email', 'phone', 'jobTitle'],
    });
    // The id of the last change it covers: the same id the other webhook got for that change.
    expect(event!.json.id).toBe(plain.requests[4]!.json.id);
    expect(event!.headers['webhook-id']).toBe(plain.requests[4]!.headers['webhook-id']);
    expect((await coalescedCount(daemon, ids[0]!)) - coalescedBefore).toBe(4);
  });

  it('a created followed by saves is one created with the final row; a delete sends what is held first, then itself', async () => {
    const [held] = receivers as [Receiver, Receiver];
    held.requests.length = 0;
    const { rows } = await db.pool.query(`insert into public.person ("firstName") values ('Grace') returning id::text`);
    const id = rows[0].id as string;
    await autoSave(db, 'public.person', id, [
      ['email', 'grace@example.com'],
      ['jobTitle', 'Rear Admiral'],
    ]);
    await db.pool.query(`delete from public.person where id = $1`, [id]);
    await held.waitFor((reqs) => reqs.length === 2);
    expect(held.requests.map((q) => q.json.event)).toEqual(['person.created', 'person.destroyed']);
    expect(held.requests[0]!.json.data).toMatchObject({ firstName: 'Grace', email: 'grace@example.com', jobTitle: 'Rear Admiral' });
    expect(held.requests[0]!.json).not.toHaveProperty('updatedFields');
  });
});

describe('coalescing, Twenty mode and body', () => {
  let db: TestDatabase;
  let workspace: TwentyWorkspace;
  let heldId = '';
  let bridge: BridgeProcess | null = null;
  const receivers: Receiver[] = [];
  // Acknowledgements every 100 ms: a burst that were not held would be acknowledged at once.
  const settings = { 'source.mode': 'twenty', 'source.discoveryIntervalMs': 500, 'replication.ackIntervalMs': 100, 'log.level': 'warn' };

  beforeAll(async () => {
    db = await createTestDatabase('coalescing_twenty');
    const client = await db.pool.connect();
    try {
      await client.query(TWENTY_CORE_SQL);
      workspace = await createTwentyWorkspace(client, { registration: 'databaseSchema' });
      await migrate(client, testConfig(db, settings));
      for (const coalesce of [30, null]) {
        const r = await startReceiver();
        receivers.push(r);
        const { rows } = await client.query(
          `insert into core.webhook ("targetUrl", operations, secret, "workspaceId") values ($1, '{person.*}', 'twenty-secret', $2) returning id::text`,
          [r.url, workspace.id],
        );
        if (coalesce !== null) {
          heldId = rows[0].id;
          await insertOptions(client, heldId, { coalesce_seconds: coalesce });
        }
      }
    } finally {
      client.release();
    }
  });

  afterAll(async () => {
    bridge?.child.kill('SIGKILL');
    await bridge?.exited;
    await Promise.all(receivers.map((r) => r.close()));
    await db?.drop();
  });

  it('a created and its saves become one Twenty event; killed with -9 while it is held, the restarted daemon still sends it', async () => {
    const [held, plain] = receivers as [Receiver, Receiver];
    const table = `${workspace.schema}.person`;
    bridge = await spawnStreamingBridge(db, settings);
    const { rows } = await db.pool.query(`insert into ${table} ("nameFirstName", "jobTitle") values ('Ada', 'Engineer') returning id::text`);
    const id = rows[0].id as string;
    // Past the created's commit: a slot confirmed beyond this has let the held burst go.
    const afterCreated = await currentWalLsn(db);
    await autoSave(db, table, id, [
      ['nameFirstName', 'Augusta Ada'],
      ['jobTitle', 'Analyst'],
      ['city', 'London'],
    ]);
    // The daemon has routed the burst (the other webhook has it all) and holds it for 30 s. The slot
    // stays before it: had it been acknowledged, a kill now would lose it.
    await plain.waitFor((reqs) => reqs.length === 4);
    await sleep(1_500); // many acknowledgement rounds
    expect(await confirmedFlushLsn(db, String(testOverrides(db)['replication.slot']))).toBeLessThan(afterCreated);
    bridge.child.kill('SIGKILL');
    await bridge.exited;
    expect(held.requests).toHaveLength(0);

    // A short window from now on, so the restarted daemon sends the replayed burst soon.
    await db.pool.query(`update webhook_bridge.webhook_options set coalesce_seconds = 1 where webhook_id = $1`, [heldId]);
    bridge = await spawnStreamingBridge(db, settings);
    await held.waitFor((reqs) => reqs.length >= 1, 20_000);
    await eventually(() => plain.requests.length >= 8, 'the replayed changes to reach the other webhook again');
    const body = held.requests[0]!.json;
    expect(body).toMatchObject({
      eventName: 'person.created',
      workspaceId: workspace.id,
      webhookId: heldId,
      record: { id, name: { firstName: 'Augusta Ada' }, jobTitle: 'Analyst', city: 'London' },
    });
    expect(body).not.toHaveProperty('updatedFields');
    expect(JSON.stringify(body)).toBe(held.requests[0]!.rawBody);
    // The replayed burst formed again, with the id of its last change.
    expect(held.requests).toHaveLength(1);
    expect(held.requests[0]!.headers['webhook-id']).toBe(plain.requests.at(-1)!.headers['webhook-id']);

    // Five saves in a second: one person.updated with the final row and every changed field.
    held.requests.length = 0;
    await autoSave(db, table, id, [
      ['jobTitle', 'Lead Analyst'],
      ['city', 'Marylebone'],
      ['nameLastName', 'King'],
      ['jobTitle', 'Countess'],
      ['city', 'London'],
    ]);
    await held.waitFor((reqs) => reqs.length === 1);
    expect(held.requests[0]!.json).toMatchObject({
      eventName: 'person.updated',
      record: { name: { firstName: 'Augusta Ada', lastName: 'King' }, jobTitle: 'Countess', city: 'London' },
      updatedFields: ['jobTitle', 'city', 'name'],
    });
  });
});
