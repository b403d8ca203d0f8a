import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Daemon } from '../../src/daemon.js';
import {
  addWebhook,
  eventually,
  prepareDatabase,
  runCli,
  startDaemon,
  testOverrides,
  waitForLaneIdle,
  waitForLanes,
  waitForSlotToPassNow,
} from '../helpers/bridge.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';

/** Retries, Retry-After, 410, timeouts, dead and redeliver. */
describe('retries', () => {
  let db: TestDatabase;
  let daemon: Daemon;
  const receivers: Receiver[] = [];

  beforeAll(async () => {
    db = await createTestDatabase('retries');
    const config = await prepareDatabase(db, { 'delivery.retrySchedule': [1, 2, 1], 'delivery.timeoutMs': 1_000 });
    ({ daemon } = await startDaemon(config));
  });

  afterAll(async () => {
    await daemon?.stop();
    await Promise.all(receivers.map((r) => r.close()));
    await db?.drop();
  });

  async function hook(operations: string[]): Promise<{ r: Receiver; id: string }> {
    const r = await startReceiver();
    receivers.push(r);
    const id = await addWebhook(db, r.url, operations);
    await waitForLanes(daemon, { live: [id] });
    return { r, id };
  }

  async function deadCount(webhookId: string): Promise<number> {
    const { rows } = await db.pool.query(`select count(*)::int as n from webhook_bridge.deliveries where webhook_id = $1 and status = 'dead'`, [webhookId]);
    return rows[0].n;
  }

  function cli(args: string[]) {
    const o = testOverrides(db);
    return runCli(['--database-url', db.url, '--replication-slot', String(o['replication.slot']), ...args]);
  }

  it('500, 500, 200 -> three attempts with growing gaps, same event id and body, fresh signature', async () => {
    const { r, id } = await hook(['person.created']);
    r.script((_req, i) => (i < 2 ? { status: 500 } : { status: 200 }));
    await db.pool.query(`insert into person ("firstName") values ('Retry')`);
    await r.waitForCount(3, 20_000);
    const [a, b, c] = r.requests;
    expect(new Set(r.requests.map((q) => q.json.id)).size).toBe(1);
    expect(new Set(r.requests.map((q) => q.rawBody)).size).toBe(1);
    expect(new Set(r.requests.map((q) => q.headers['x-twenty-webhook-nonce'])).size).toBe(3);
    const gap1 = b.receivedAt - a.receivedAt;
    const gap2 = c.receivedAt - b.receivedAt;
    expect(gap1).toBeGreaterThanOrEqual(750); // 1 s -20%, minus timer slack
    expect(gap2).toBeGreaterThan(gap1);
    await waitForLaneIdle(daemon, db, id);
    expect(r.requests).toHaveLength(3);
  });

  it('429 with Retry-After: 2 -> the next attempt not before 2 s', async () => {
    const { r } = await hook(['company.created']);
    r.script((_req, i) => (i === 0 ? { status: 429, headers: { 'retry-after': '2' } } : { status: 200 }));
    await db.pool.query(`insert into company (name) values ('Slow down')`);
    await r.waitForCount(2, 20_000);
    expect(r.requests[1].receivedAt - r.requests[0].receivedAt).toBeGreaterThanOrEqual(1_950);
  });

  it('410 Gone disables the webhook at once: no further attempts', async () => {
    const { r, id } = await hook(['note.created']);
    r.script(() => ({ status: 410 }));
    await db.pool.query(`insert into note (title) values ('gone 1')`);
    await r.waitForCount(1);
    await db.pool.query(`insert into note (title) values ('gone 2')`);
    // Once the slot passes 'gone 2' its routing is decided; the kept 'gone 1' stays stored, unsent.
    await waitForSlotToPassNow(db);
    await waitForLaneIdle(daemon, db, id, 1);
    expect(r.requests).toHaveLength(1);
    const { rows } = await db.pool.query(`select disabled_reason from webhook_bridge.webhook_state where webhook_id = $1 and disabled_at is not null`, [id]);
    expect(rows[0]?.disabled_reason).toMatch(/410 Gone/);
    const list = await cli(['webhooks', 'list']);
    expect(list.stdout).toMatch(new RegExp(`${id}\\s+disabled`));
    // Re-enabled from the CLI: the kept delivery goes out; events committed while disabled were not routed.
    r.script(() => ({ status: 200 }));
    const enabled = await cli(['webhooks', 'enable', id]);
    expect(enabled.code).toBe(0);
    await r.waitForCount(2, 15_000);
    expect(r.requests[1].json.data.title).toBe('gone 1');
    await db.pool.query(`insert into note (title) values ('gone 3')`);
    await r.waitForCount(3, 15_000);
    expect(r.requests.map((q) => q.json.data.title)).toEqual(['gone 1', 'gone 1', 'gone 3']);
  });

  it('410 Gone: a webhooks reload while the disable is still being written does not bring it back', async () => {
    const { r, id } = await hook(['note.updated']);
    r.script(() => ({ status: 410 }));
    // Hold the bridge's write of the failure (and so of disabled_at) with a row lock, across timer reloads.
    await db.pool.query(`insert into webhook_bridge.webhook_state (webhook_id) values ($1) on conflict do nothing`, [id]);
    const holder = await db.pool.connect();
    try {
      await holder.query('begin');
      await holder.query(`select 1 from webhook_bridge.webhook_state where webhook_id = $1 for update`, [id]);
      // Two records, so the second event does not queue behind the first one's failed delivery.
      const { rows } = await db.pool.query(`insert into note (title) values ('held 1'), ('other 1') returning id`);
      await db.pool.query(`update note set title = 'held 1b' where id = $1`, [rows[0].id]);
      await r.waitForCount(1);
      // Real time on purpose: the webhooks list is also reloaded on a timer, and these 2.5 s windows make
      // at least one timer reload read disabled_at as null while the disable is held.
      await new Promise((resolve) => setTimeout(resolve, 2_500));
      await db.pool.query(`update note set title = 'held 2' where id = $1`, [rows[1].id]);
      await new Promise((resolve) => setTimeout(resolve, 2_500));
      await holder.query('commit');
    } finally {
      holder.release();
    }
    await eventually(
      async () => (await db.pool.query(`select 1 from webhook_bridge.webhook_state where webhook_id = $1 and disabled_at is not null`, [id])).rowCount === 1,
      'the disable to be written',
    );
    await waitForSlotToPassNow(db);
    await waitForLaneIdle(daemon, db, id, 1);
    expect(r.requests.map((q) => q.json.data.title)).toEqual(['held 1b']);
  });

  it('a hung receiver: the timeout counts as a failure and the delivery is retried', async () => {
    const { r, id } = await hook(['task.created']);
    r.script((_req, i) => (i === 0 ? 'hang' : { status: 200 }));
    await db.pool.query(`insert into task (title) values ('hang once')`);
    await r.waitForCount(2, 20_000);
    const { rows } = await db.pool.query(`select last_error from webhook_bridge.webhook_state where webhook_id = $1`, [id]);
    expect(rows[0].last_error).toMatch(/timeout/);
  });

  it('a delivery that exhausts the schedule is dead, listed, and delivered again by redeliver', async () => {
    const { r, id } = await hook(['person.updated']);
    r.script(() => ({ status: 503 }));
    const { rows: people } = await db.pool.query(`insert into person ("firstName") values ('Dead') returning id`);
    await db.pool.query(`update person set "firstName" = 'Dead again' where id = $1`, [people[0].id]);
    await r.waitForCount(4, 30_000); // 1 attempt + 3 retries
    await eventually(async () => (await deadCount(id)) === 1, 'the delivery to be dead');
    const dead = await cli(['deliveries', 'list', '--status', 'dead', '--webhook', id, '--json']);
    const listed = JSON.parse(dead.stdout);
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatchObject({ eventName: 'person.updated', attempts: 4, status: 'dead' });
    expect(listed[0].lastError).toMatch(/503/);
    r.script(() => ({ status: 200 }));
    const again = await cli(['deliveries', 'redeliver', listed[0].id]);
    expect(again.code).toBe(0);
    await r.waitForCount(5, 15_000);
    expect(r.requests[4].json.id).toBe(listed[0].eventId);
    await waitForLaneIdle(daemon, db, id);
    await eventually(
      async () => (await db.pool.query(`select 1 from webhook_bridge.deliveries where webhook_id = $1`, [id])).rowCount === 0,
      'the store to be empty',
    );
    const after = await cli(['deliveries', 'list', '--webhook', id, '--json']);
    expect(JSON.parse(after.stdout)).toEqual([]);
  });

  it('redeliver --webhook --since replays every dead delivery of that webhook since then', async () => {
    const { r, id } = await hook(['company.updated']);
    r.script(() => ({ status: 500 }));
    const since = new Date(Date.now() - 1_000).toISOString();
    const { rows } = await db.pool.query(`insert into company (name) values ('a'), ('b') returning id`);
    for (const row of rows) await db.pool.query(`update company set employees = 1 where id = $1`, [row.id]);
    await r.waitForCount(8, 30_000); // 2 deliveries x 4 attempts
    await eventually(async () => (await deadCount(id)) === 2, 'both deliveries to be dead');
    const dead = JSON.parse((await cli(['deliveries', 'list', '--status', 'dead', '--webhook', id, '--json'])).stdout);
    expect(dead).toHaveLength(2);
    r.script(() => ({ status: 200 }));
    const replay = await cli(['deliveries', 'redeliver', '--webhook', id, '--since', since]);
    expect(replay.stdout).toMatch(/2 deliveries scheduled/);
    await r.waitForCount(10, 15_000);
    expect(new Set(r.requests.slice(8).map((q) => q.json.id))).toEqual(new Set(dead.map((d: { eventId: string }) => d.eventId)));
  });
});

describe('auto-disable', () => {
  it('a webhook failing with no success for delivery.disableAfterHours is disabled with a reason', async () => {
    const db = await createTestDatabase('autodisable');
    // 0.001 h = 3.6 s of failures without a success.
    const config = await prepareDatabase(db, { 'delivery.retrySchedule': [1, 1, 1, 1, 1, 1, 1, 1, 1, 1], 'delivery.disableAfterHours': 0.001 });
    const { daemon } = await startDaemon(config);
    const r = await startReceiver();
    try {
      r.script(() => ({ status: 500 }));
      const id = await addWebhook(db, r.url, ['task.created']);
      await waitForLanes(daemon, { live: [id] });
      await db.pool.query(`insert into task (title) values ('fails for ever')`);
      await eventually(
        async () =>
          (await db.pool.query(`select disabled_reason from webhook_bridge.webhook_state where webhook_id = $1 and disabled_at is not null`, [id])).rowCount ===
          1,
        'the webhook to be disabled',
        30_000,
      );
      const { rows } = await db.pool.query(`select disabled_reason from webhook_bridge.webhook_state where webhook_id = $1`, [id]);
      expect(rows[0].disabled_reason).toMatch(/no successful delivery for .* while failing \(last: http_status\)/);
      const attempts = r.requests.length;
      // Real time on purpose: a disabled webhook gets no attempt later than 3 s after it is disabled, and
      // its retries are 1 s apart, so a disable that did not stop them shows within this window.
      await new Promise((resolve) => setTimeout(resolve, 2_500));
      expect(r.requests.length).toBe(attempts);
    } finally {
      await daemon.stop();
      await r.close();
      await db.drop();
    }
  });
});
