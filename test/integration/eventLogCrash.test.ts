import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseLsn } from '../../src/replication/lsn.js';
import { addWebhook, confirmedFlushLsn, eventually, prepareDatabase, spawnStreamingBridge, testOverrides, type BridgeProcess } from '../helpers/bridge.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';

/**
 * A daemon killed with SIGKILL after the event log holds a burst but before the slot was told: the
 * changes come again from the slot and from the log, and every one arrives, in order per record.
 */
describe('SIGKILL between the event log write and the acknowledgement (daemon as a child process)', () => {
  let db: TestDatabase;
  let receiver: Receiver;
  let bridge: BridgeProcess | null = null;
  let positionLock: pg.Client | null = null;
  const settings = { 'delivery.retrySchedule': [1, 1, 1, 1, 1], 'log.level': 'warn' };

  beforeAll(async () => {
    db = await createTestDatabase('eventlogcrash');
    await prepareDatabase(db, settings);
    receiver = await startReceiver();
    await addWebhook(db, receiver.url, ['person.created', 'person.updated']);
  });

  afterAll(async () => {
    bridge?.child.kill('SIGKILL');
    await bridge?.exited;
    await positionLock?.end().catch(() => undefined);
    await receiver?.close();
    await db?.drop();
  });

  it('every change of the burst arrives after the restart, each record in commit order', async () => {
    bridge = await spawnStreamingBridge(db, settings);
    const slot = String(testOverrides(db)['replication.slot']);
    // The receiver is down: the webhook falls behind and the burst goes to the log.
    await receiver.stopListening();
    // The daemon records the position it may confirm before telling the slot: holding that row's lock
    // keeps the slot from being told anything past what is recorded, while the log is written freely.
    positionLock = new pg.Client({ connectionString: db.url });
    await positionLock.connect();
    await positionLock.query('begin');
    await positionLock.query(`select 1 from webhook_bridge.slot_state where slot_name = $1 for update`, [slot]);

    const { rows: seeded } = await db.pool.query(`insert into person ("firstName") select 'crash-' || g from generate_series(1, 20) g returning id::text`);
    const ids = seeded.map((r) => r.id as string);
    for (let round = 1; round <= 10; round++) {
      await db.pool.query(`update person set city = $1 where id = any($2::uuid[])`, [`round-${round}`, ids]);
    }
    const expected = 20 + 20 * 10;
    const { rows: wal } = await db.pool.query('select pg_current_wal_lsn()::text as l');
    await eventually(
      async () => (await db.pool.query(`select coalesce(sum(event_count), 0)::int as n from webhook_bridge.event_log`)).rows[0].n >= expected,
      () => `the event log to hold the burst; output:\n${bridge!.output()}`,
      30_000,
    );
    // Between the write and the acknowledgement: the log has the burst, the slot does not know it.
    expect(await confirmedFlushLsn(db, slot)).toBeLessThan(parseLsn(wal[0].l));
    bridge.child.kill('SIGKILL');
    await bridge.exited;
    await positionLock.query('rollback');
    await positionLock.end();
    positionLock = null;

    await receiver.listenAgain();
    bridge = await spawnStreamingBridge(db, settings);
    const city = (body: string): string => (JSON.parse(body) as { data: { city: string | null } }).data.city ?? 'created';
    await eventually(
      () => new Set(receiver.requests.map((r) => `${(JSON.parse(r.rawBody) as { data: { id: string } }).data.id}/${city(r.rawBody)}`)).size >= expected,
      () => `every change of the burst to arrive (${receiver.requests.length} requests so far); output:\n${bridge!.output()}`,
      60_000,
    );
    // Per record: its created event, then rounds 1 to 10, each first seen in that order.
    for (const id of ids) {
      const seen: string[] = [];
      for (const request of receiver.requests) {
        const payload = JSON.parse(request.rawBody) as { data: { id: string } };
        if (payload.data.id !== id) continue;
        const state = city(request.rawBody);
        if (!seen.includes(state)) seen.push(state);
      }
      expect(seen, `record ${id}`).toEqual(['created', ...Array.from({ length: 10 }, (_, i) => `round-${i + 1}`)]);
    }
    await eventually(async () => (await confirmedFlushLsn(db, slot)) >= parseLsn(wal[0].l), 'the restarted daemon to acknowledge the burst', 30_000);
  });
});
