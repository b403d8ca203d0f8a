import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BridgeConfig } from '../../src/config.js';
import type { Daemon } from '../../src/daemon.js';
import { addWebhook, confirmedFlushLsn, eventually, prepareDatabase, startDaemon, waitForLanes, waitForSlotToPassNow } from '../helpers/bridge.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';
import { parseLsn } from '../../src/replication/lsn.js';

/** Isolation, idle acknowledgement, receiver down then up, back-to-back transactions. */
describe('delivery guarantees (in-process daemon)', () => {
  let db: TestDatabase;
  let config: BridgeConfig;
  let daemon: Daemon | null = null;
  const receivers: Receiver[] = [];

  beforeAll(async () => {
    db = await createTestDatabase('guarantees');
    config = await prepareDatabase(db, { 'delivery.retrySchedule': [1, 2, 4, 8, 10, 10, 10], 'replication.heartbeatIntervalMs': 300 });
  });

  afterAll(async () => {
    await daemon?.stop();
    await Promise.all(receivers.map((r) => r.close()));
    await db?.drop();
  });

  async function receiver(): Promise<Receiver> {
    const r = await startReceiver();
    receivers.push(r);
    return r;
  }

  async function clearWebhooks(): Promise<void> {
    const { rows } = await db.pool.query(`update webhook_bridge.webhooks set "deletedAt" = now() where "deletedAt" is null returning id::text`);
    if (daemon) await waitForLanes(daemon, { gone: rows.map((row) => row.id) });
  }

  /** The dead webhook's changes not delivered (in memory, in flight or stored pending) and those given up. */
  async function deadBacklog(webhookId: string): Promise<{ undelivered: number; givenUp: number }> {
    const { rows } = await db.pool.query(
      `select count(*) filter (where status = 'pending')::int as pending, count(*) filter (where status = 'dead')::int as dead
         from webhook_bridge.deliveries where webhook_id = $1`,
      [webhookId],
    );
    const lane = daemon!.laneStates().find((l) => l.webhookId === webhookId);
    return { undelivered: rows[0].pending + (lane?.inMemory ?? 0) + (lane?.inFlight ?? 0), givenUp: rows[0].dead };
  }

  async function writePeople(count: number, tag: string): Promise<void> {
    // 50 rows per transaction: 5,000 changes in 100 commits.
    for (let i = 0; i < count; i += 50) {
      await db.pool.query(`insert into person ("firstName", city) select $1 || g, $2 from generate_series($3::int, $4::int) g`, [
        `${tag}-`,
        tag,
        i,
        Math.min(i + 49, count - 1),
      ]);
    }
  }

  it('a transaction committed while the daemon is stopped is delivered at the next start', async () => {
    const r = await receiver();
    await addWebhook(db, r.url, ['company.created']);
    ({ daemon } = await startDaemon(config));
    await db.pool.query(`insert into company (name) values ('first')`);
    await r.waitForCount(1);
    await daemon.stop();
    daemon = null;
    await db.pool.query(`insert into company (name) values ('second')`);
    ({ daemon } = await startDaemon(config));
    await r.waitForCount(2);
    expect(r.requests.map((q) => q.json.data.name)).toEqual(['first', 'second']);
    await clearWebhooks();
  });

  it('a dead webhook costs a healthy one little, and the slot keeps advancing while it fails', async () => {
    const slot = config.replication.slot;
    const dead = await receiver();
    await dead.stopListening(); // connection refused
    // Each round times the same burst to a webhook alone, then to a healthy webhook beside the dead
    // one. Two checks, each of which a blocked lane fails: (1) the healthy webhook is done while the
    // dead one still holds its whole backlog, none of it given up yet (its retries span 45 s, far more
    // than a burst takes); (2) the median slowdown over three rounds, which one noisy round of a
    // shared machine cannot decide, stays within 3x (the benchmark measures the real ratio).
    const rounds: Array<{ aloneMs: number; mixedMs: number }> = [];
    for (let round = 1; round <= 3; round++) {
      const alone = await receiver();
      await addWebhook(db, alone.url, ['person.created']);
      let started = Date.now();
      await writePeople(5_000, `alone${round}`);
      await alone.waitForCount(5_000, 60_000);
      const aloneMs = Date.now() - started;
      await clearWebhooks();

      const healthy = await receiver();
      await addWebhook(db, healthy.url, ['person.created']);
      const deadId = await addWebhook(db, dead.url, ['person.created']);
      const lsnBefore = await confirmedFlushLsn(db, slot);
      started = Date.now();
      await writePeople(5_000, `mixed${round}`);
      await healthy.waitForCount(5_000, 60_000);
      const mixedMs = Date.now() - started;
      rounds.push({ aloneMs, mixedMs });
      const backlog = await deadBacklog(deadId);
      expect(backlog.givenUp, `dead deliveries given up before the healthy webhook was done (round ${round})`).toBe(0);
      expect(backlog.undelivered, `the dead webhook's undelivered changes when the healthy one was done (round ${round})`).toBeGreaterThan(0);

      const { rows: wal } = await db.pool.query('select pg_current_wal_lsn()::text as l');
      const walAfterWrites = parseLsn(wal[0].l);
      await eventually(
        async () => (await confirmedFlushLsn(db, slot)) >= walAfterWrites,
        'confirmed_flush_lsn to pass the burst while a webhook is dead',
        20_000,
      );
      expect(await confirmedFlushLsn(db, slot)).toBeGreaterThan(lsnBefore);
      // The dead webhook's backlog is the event log past its cursor, written once; its own rows in the
      // store are only the attempts that failed (one probe at a time once its endpoint counts as down).
      const { rows: cursor } = await db.pool.query(`select lsn::text as lsn, change_index from webhook_bridge.log_cursors where webhook_id = $1`, [deadId]);
      expect(cursor, 'the dead webhook reads the event log from a cursor').toHaveLength(1);
      const { rows: logged } = await db.pool.query(
        `select coalesce(sum(event_count), 0)::int as n from webhook_bridge.event_log where (last_lsn, last_index) >= ($1::pg_lsn, $2::int)`,
        [cursor[0].lsn, cursor[0].change_index],
      );
      expect(logged[0].n, 'events in the log from the dead webhook on').toBeGreaterThanOrEqual(5_000);
      const stored = await db.pool.query(`select count(*)::int as n from webhook_bridge.deliveries where webhook_id = $1`, [deadId]);
      expect(stored.rows[0].n, 'store rows of the dead webhook').toBeLessThan(250);
      await clearWebhooks();
      await db.pool.query(`delete from webhook_bridge.deliveries`);
    }
    const summary = rounds.map((r) => `alone ${r.aloneMs} ms / beside a dead webhook ${r.mixedMs} ms`).join('; ');
    console.log(`isolation, 5,000 changes: ${summary}`);
    const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
    const aloneMedian = median(rounds.map((r) => r.aloneMs));
    expect(median(rounds.map((r) => r.mixedMs)), summary).toBeLessThan(Math.max(3 * aloneMedian, aloneMedian + 3_000));
  });

  it('idle watched tables but other WAL traffic: confirmed_flush_lsn still advances', async () => {
    await db.pool.query('create table if not exists unwatched (id serial primary key, v text)');
    const slot = config.replication.slot;
    await waitForSlotToPassNow(db, slot);
    const before = await confirmedFlushLsn(db, slot);
    for (let i = 0; i < 20; i++) await db.pool.query(`insert into unwatched (v) values (repeat('x', 1000))`);
    const { rows } = await db.pool.query('select pg_current_wal_lsn()::text as l');
    const target = parseLsn(rows[0].l);
    await eventually(async () => (await confirmedFlushLsn(db, slot)) >= target, 'the slot to pass WAL written to an unwatched table', 15_000);
    expect(await confirmedFlushLsn(db, slot)).toBeGreaterThan(before);
    // Every confirmation was recorded first: the slot is never past the bridge's own record of it.
    const { rows: record } = await db.pool.query(
      `select s.confirmed_flush_lsn <= st.confirmed_lsn as behind, st.confirmed_lsn - s.confirmed_flush_lsn as margin
         from pg_replication_slots s join webhook_bridge.slot_state st on st.slot_name = s.slot_name where s.slot_name = $1`,
      [slot],
    );
    expect(record).toEqual([{ behind: true, margin: expect.any(String) }]);
  });

  it('receiver down 30 s (connection refused), then up: everything arrives, in commit order per record', async () => {
    const r = await receiver();
    await waitForLanes(daemon!, { live: [await addWebhook(db, r.url, ['task.*'])] });
    await r.stopListening();
    const { rows } = await db.pool.query(`insert into task (title) select 'down ' || g from generate_series(1, 20) g returning id`);
    const ids: string[] = rows.map((row) => row.id);
    for (let round = 1; round <= 5; round++) {
      for (const id of ids) await db.pool.query(`update task set status = $1 where id = $2`, [`round ${round}`, id]);
    }
    // Real time on purpose: the outage must outlast several retries (schedule 1, 2, 4, 8, 10 s).
    await new Promise((resolve) => setTimeout(resolve, 30_000));
    await r.listenAgain();
    await r.waitForCount(20 * 6, 60_000);
    // Nothing more (no duplicate): a last update of each record arrives after all of that record's
    // earlier deliveries, so once every marker is in, the count is final.
    for (const id of ids) await db.pool.query(`update task set status = 'marker' where id = $1`, [id]);
    const isMarker = (q: { json: any }): boolean => q.json.data.status === 'marker';
    await r.waitFor((reqs) => reqs.filter(isMarker).length === 20, 60_000);
    const delivered = r.requests.filter((q) => !isMarker(q));
    expect(delivered).toHaveLength(120);
    for (const id of ids) {
      const seen = delivered.filter((q) => q.json.data.id === id).map((q) => (q.json.event === 'task.created' ? 'created' : q.json.data.status));
      expect(seen).toEqual(['created', 'round 1', 'round 2', 'round 3', 'round 4', 'round 5']);
    }
  });
});
