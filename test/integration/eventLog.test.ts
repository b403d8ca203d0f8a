import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BridgeConfig } from '../../src/config.js';
import type { Daemon } from '../../src/daemon.js';
import { parseLsn } from '../../src/replication/lsn.js';
import type { LoggedEvent } from '../../src/route/loggedEvent.js';
import { appendSegment, purgeSegments, saveCursor } from '../../src/store/eventLog.js';
import { addWebhook, confirmedFlushLsn, eventually, freePort, prepareDatabase, startDaemon, waitForLanes } from '../helpers/bridge.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';

const LOG = 'webhook_bridge.event_log';

/** The event log: written once however many webhooks are behind, and deleted only when no cursor needs it. */
describe('the event log (in-process daemon)', () => {
  let db: TestDatabase;
  let config: BridgeConfig;
  let daemon: Daemon;
  const receivers: Receiver[] = [];

  beforeAll(async () => {
    db = await createTestDatabase('eventlog');
    // Retries far apart: a dead webhook's only store rows are its first failures and the breaker's probes.
    config = await prepareDatabase(db, { 'delivery.retrySchedule': [60, 60, 60], 'replication.heartbeatIntervalMs': 300 });
    ({ daemon } = await startDaemon(config));
  });

  afterAll(async () => {
    await daemon?.stop();
    await Promise.all(receivers.map((r) => r.close()));
    await db?.drop();
  });

  async function writePeople(count: number, tag: string): Promise<void> {
    for (let i = 0; i < count; i += 100) {
      await db.pool.query(`insert into person ("firstName", city) select $1 || g, $1 from generate_series($2::int, $3::int) g`, [
        `${tag}-`,
        i,
        Math.min(i + 99, count - 1),
      ]);
    }
  }

  /** One healthy webhook and `deadCount` dead ones get 2,000 changes; what the log and the store hold afterwards. */
  async function round(deadCount: number): Promise<{ loggedEvents: number; loggedBytes: number; deadRows: number }> {
    await db.pool.query(`update webhook_bridge.webhooks set "deletedAt" = now() where "deletedAt" is null`);
    const healthy = await startReceiver();
    receivers.push(healthy);
    const deadUrl = `http://127.0.0.1:${await freePort()}/`;
    const healthyId = await addWebhook(db, healthy.url, ['person.created']);
    const deadIds: string[] = [];
    for (let i = 0; i < deadCount; i++) deadIds.push(await addWebhook(db, deadUrl, ['person.created']));
    await waitForLanes(daemon, { live: [healthyId, ...deadIds] });
    const { rows: start } = await db.pool.query(`select coalesce(max(id), 0) as id from ${LOG}`);
    await writePeople(2_000, `dead${deadCount}`);
    await healthy.waitForCount(2_000, 60_000);
    const { rows: wal } = await db.pool.query('select pg_current_wal_lsn()::text as l');
    await eventually(
      async () => (await confirmedFlushLsn(db, String(config.replication.slot))) >= parseLsn(wal[0].l),
      `the slot to pass the changes while ${deadCount} webhooks are dead`,
      30_000,
    );
    const { rows: logged } = await db.pool.query(
      `select coalesce(sum(event_count), 0)::int as events, coalesce(sum(pg_column_size(events)), 0)::int as bytes from ${LOG} where id > $1`,
      [start[0].id],
    );
    const { rows: stored } = await db.pool.query(`select count(*)::int as n from webhook_bridge.deliveries where webhook_id = any($1::uuid[])`, [deadIds]);
    return { loggedEvents: logged[0].events, loggedBytes: logged[0].bytes, deadRows: stored[0].n };
  }

  it('ten dead webhooks cost the store what one does: each change is logged once, and their own rows are only failed attempts', async () => {
    const one = await round(1);
    const ten = await round(10);
    console.log(`event log, 2,000 changes: 1 dead webhook ${JSON.stringify(one)}; 10 dead webhooks ${JSON.stringify(ten)}`);
    // Every change once (a few more where a segment spans the start of the round), not once per webhook.
    for (const { loggedEvents } of [one, ten]) {
      expect(loggedEvents).toBeGreaterThanOrEqual(2_000);
      expect(loggedEvents).toBeLessThan(2_200);
    }
    expect(ten.loggedBytes / one.loggedBytes).toBeGreaterThan(0.8);
    expect(ten.loggedBytes / one.loggedBytes).toBeLessThan(1.25);
    // One row per failed attempt, a handful per webhook before its breaker opens: not one per change.
    expect(one.deadRows).toBeLessThan(100);
    expect(ten.deadRows).toBeLessThan(10 * 100);
  });

  it('an active cursor of a webhook that is not live and has no lane (removed while the daemon was stopped) is paused, so it keeps nothing', async () => {
    const removed = '00000000-0000-4000-8000-0000000000aa';
    await saveCursor(db.pool, 'webhook_bridge', removed, { lsn: 0x100n, index: 0 }, null);
    await eventually(
      async () => (await db.pool.query(`select paused_lsn from webhook_bridge.log_cursors where webhook_id = $1`, [removed])).rows[0]?.paused_lsn != null,
      'the cursor of a webhook that does not exist to be paused',
      15_000,
    );
  });
});

/** Segments deleted by retention: only those no active cursor needs, once old enough. */
describe('event log retention (store)', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase('eventlogretention');
    await prepareDatabase(db);
  });

  afterAll(async () => {
    await db?.drop();
  });

  function events(fromLsn: number, count: number, commitTime: Date): LoggedEvent[] {
    return Array.from({ length: count }, (_, i) => ({
      commitLsn: BigInt(fromLsn + i),
      changeIndex: 0,
      commitTime,
      object: 'person',
      action: 'created' as const,
      recordKey: `person:${fromLsn + i}`,
      workspaceId: null,
      body: `{"n":${fromLsn + i}}`,
      bodyParts: null,
      payloadKey: 'data' as const,
    }));
  }

  async function remaining(): Promise<number[]> {
    const { rows } = await db.pool.query(`select first_lsn::text as l from ${LOG} order by first_lsn`);
    return rows.map((r) => Number(parseLsn(r.l)));
  }

  it('keeps what an active cursor needs and what is inside retention; a paused cursor keeps nothing', async () => {
    const hoursAgo = (h: number) => new Date(Date.now() - h * 3_600_000);
    for (const [from, age] of [
      [100, 3],
      [200, 3],
      [300, 2],
      [400, 0],
    ] as const) {
      await appendSegment(db.pool, 'webhook_bridge', events(from, 10, hoursAgo(age)));
    }
    const active = '00000000-0000-4000-8000-000000000001';
    const paused = '00000000-0000-4000-8000-000000000002';
    await saveCursor(db.pool, 'webhook_bridge', active, { lsn: 305n, index: 0 }, null);
    await saveCursor(db.pool, 'webhook_bridge', paused, { lsn: 105n, index: 0 }, 500n);
    const retention1h = hoursAgo(1);

    // Just written: the grace period keeps every segment, whatever its commit times.
    expect(await purgeSegments(db.pool, 'webhook_bridge', retention1h, 60_000, 500)).toBe(0);
    // Past retention and wholly before the active cursor: gone. The paused cursor at 105 keeps nothing.
    expect(await purgeSegments(db.pool, 'webhook_bridge', retention1h, 0, 500)).toBe(2);
    expect(await remaining()).toEqual([300, 400]);
    // The cursor moves on: the segment it was reading is no longer needed.
    await saveCursor(db.pool, 'webhook_bridge', active, { lsn: 400n, index: 0 }, null);
    expect(await purgeSegments(db.pool, 'webhook_bridge', retention1h, 0, 500)).toBe(1);
    // Inside retention: kept, though no cursor needs it; retention 0 deletes it.
    expect(await remaining()).toEqual([400]);
    await db.pool.query(`delete from webhook_bridge.log_cursors`);
    expect(await purgeSegments(db.pool, 'webhook_bridge', retention1h, 0, 500)).toBe(0);
    expect(await purgeSegments(db.pool, 'webhook_bridge', new Date(), 0, 500)).toBe(1);
    expect(await remaining()).toEqual([]);
  });
});

/** A webhook that accepts connections and never answers must not hold the stream back for the others. */
describe('a hanging webhook beside a healthy one (in-process daemon)', () => {
  let db: TestDatabase;
  let daemon: Daemon;
  let hanging: net.Server;
  const sockets = new Set<net.Socket>();
  let healthy: Receiver;

  beforeAll(async () => {
    db = await createTestDatabase('eventloghang');
    // Neither its attempts' timeout nor the age limit would let it go in the time of the test: only
    // being full beside a lane with room does.
    const config = await prepareDatabase(db, { 'delivery.timeoutMs': 600_000, 'delivery.storeAfterMs': 600_000, 'delivery.memoryQueueLimit': 100 });
    hanging = net.createServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    });
    await new Promise<void>((resolve) => hanging.listen(0, '127.0.0.1', resolve));
    healthy = await startReceiver();
    ({ daemon } = await startDaemon(config));
  });

  afterAll(async () => {
    await daemon?.stop(2_000);
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => hanging?.close(resolve));
    await healthy?.close();
    await db?.drop();
  });

  it('the healthy webhook gets every change while the hanging one holds its first attempts open', async () => {
    const healthyId = await addWebhook(db, healthy.url, ['person.created']);
    const hangingId = await addWebhook(db, `http://127.0.0.1:${(hanging.address() as net.AddressInfo).port}/`, ['person.created']);
    await waitForLanes(daemon, { live: [healthyId, hangingId] });
    for (let i = 0; i < 10; i++) {
      await db.pool.query(`insert into person ("firstName") select 'hang-' || g from generate_series(1, 100) g`);
    }
    await healthy.waitForCount(1_000, 30_000);
    const lane = daemon.laneStates().find((l) => l.webhookId === hangingId);
    expect(lane?.mode, 'the hanging webhook reads the log').toBe('store');
  });
});
