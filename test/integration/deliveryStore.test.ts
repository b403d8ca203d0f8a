import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { claimDeliveries, failDelivery, insertDeliveries, setAsideOtherTargets } from '../../src/store/deliveryStore.js';
import type { NewStoredDelivery } from '../../src/store/types.js';
import { prepareDatabase } from '../helpers/bridge.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

/** The store keeps a payload byte for byte, whatever it holds: it is what a retry signs and sends. */
describe('delivery store', () => {
  let db: TestDatabase;
  const schema = 'webhook_bridge';

  beforeAll(async () => {
    db = await createTestDatabase('store');
    await prepareDatabase(db);
  });

  afterAll(async () => {
    await db?.drop();
  });

  const TARGET = 'https://receiver.example/hook';
  const WEBHOOKS_TABLE = '"webhook_bridge"."webhooks"';

  /** A live webhook row: claims only serve webhooks that are live in the table. */
  async function liveWebhook(): Promise<{ id: string; targetUrl: string; table: string }> {
    const { rows } = await db.pool.query(`insert into ${schema}.webhooks ("targetUrl", secret) values ($1, 's') returning id::text`, [TARGET]);
    return { id: rows[0].id, targetUrl: TARGET, table: WEBHOOKS_TABLE };
  }

  function delivery(webhookId: string, index: number, body: string, extra: Partial<NewStoredDelivery> = {}): NewStoredDelivery {
    return {
      webhookId,
      eventId: `evt-${index}`,
      eventName: 'note.created',
      recordKey: `note:${index}`,
      commitLsn: '0/1A2B3C4',
      changeIndex: index,
      body,
      attempts: 0,
      status: 'pending',
      runAt: new Date(Date.now() - 1_000),
      lastError: null,
      lastStatusCode: null,
      lockedUntil: null,
      targetUrl: TARGET,
      ...extra,
    };
  }

  it('stores and claims back payloads byte for byte, each once, in commit order', async () => {
    const webhook = await liveWebhook();
    const webhookId = webhook.id;
    const bodies = [
      JSON.stringify({ data: { title: 'quotes " and \\ backslashes \\" and {braces} [brackets] , commas' } }),
      JSON.stringify({ data: { title: 'control \u0000 \u0001 \n \t and escapes \\u0000 written out' } }),
      JSON.stringify({ data: { title: 'unicode: é ß 中文 🎉, and a lone surrogate \ud800' } }),
      JSON.stringify({ data: { title: 'NULL' } }),
      '',
    ];
    const rows = bodies.map((body, i) =>
      delivery(webhookId, i, body, i === 1 ? { attempts: 2, lastError: 'http_status: 503 "busy"', lastStatusCode: 503 } : {}),
    );
    await insertDeliveries(db.pool, schema, rows, 'worker-a');
    await insertDeliveries(db.pool, schema, rows, 'worker-a'); // a replay after a crash: nothing twice
    const claimed = await claimDeliveries(db.pool, schema, webhook, 'worker-a', 100, 30_000);
    expect(claimed.map((d) => d.body)).toEqual(bodies);
    expect(claimed.map((d) => d.eventId)).toEqual(bodies.map((_, i) => `evt-${i}`));
    expect(claimed[1]).toMatchObject({ attempts: 2, lastError: 'http_status: 503 "busy"', lastStatusCode: 503, status: 'pending' });
    const { rows: counts } = await db.pool.query(`select count(*)::int as n from ${schema}.deliveries where webhook_id = $1`, [webhookId]);
    expect(counts[0].n).toBe(bodies.length);
  });

  it('keeps the lease of a delivery stored while in flight: the poller does not claim it', async () => {
    const webhook = await liveWebhook();
    const webhookId = webhook.id;
    await insertDeliveries(
      db.pool,
      schema,
      [delivery(webhookId, 0, '{"a":1}', { lockedUntil: new Date(Date.now() + 60_000) }), delivery(webhookId, 1, '{"a":2}')],
      'worker-b',
    );
    const { rows } = await db.pool.query(`select event_id, locked_by from ${schema}.deliveries where webhook_id = $1 order by change_index`, [webhookId]);
    expect(rows).toEqual([
      { event_id: 'evt-0', locked_by: 'worker-b' },
      { event_id: 'evt-1', locked_by: null },
    ]);
    const claimed = await claimDeliveries(db.pool, schema, webhook, 'worker-c', 100, 30_000);
    expect(claimed.map((d) => d.eventId)).toEqual(['evt-1']);
  });

  it('claims nothing for a webhook that is soft-deleted, deleted or disabled in the tables right now', async () => {
    for (const change of [
      `update ${schema}.webhooks set "deletedAt" = now() where id = $1`,
      `delete from ${schema}.webhooks where id = $1`,
      `insert into ${schema}.webhook_state (webhook_id, disabled_at) values ($1, now())`,
    ]) {
      const webhook = await liveWebhook();
      await insertDeliveries(db.pool, schema, [delivery(webhook.id, 0, '{}')], 'worker-d');
      await db.pool.query(change, [webhook.id]);
      expect(await claimDeliveries(db.pool, schema, webhook, 'worker-d', 100, 30_000)).toEqual([]);
    }
  });

  it('sets aside deliveries routed for another targetUrl: never claimed, dead with the reason, and a late failure keeps them dead', async () => {
    const webhook = await liveWebhook();
    const moved = { ...webhook, targetUrl: 'https://elsewhere.example/hook' };
    await insertDeliveries(
      db.pool,
      schema,
      [
        delivery(webhook.id, 0, '{"old":1}'),
        delivery(webhook.id, 1, '{"legacy":1}', { targetUrl: null as unknown as string }),
        delivery(webhook.id, 2, '{"new":1}', { targetUrl: moved.targetUrl }),
      ],
      'worker-e',
    );
    // evt-0 was routed for the old URL: not claimed; the row stored before URLs were kept (null) goes to the current one.
    expect((await claimDeliveries(db.pool, schema, moved, 'worker-e', 100, 1)).map((d) => d.eventId)).toEqual(['evt-1', 'evt-2']);
    expect(await setAsideOtherTargets(db.pool, schema, webhook.id, moved.targetUrl, 'targetUrl changed')).toBe(1);
    await failDelivery(
      db.pool,
      schema,
      { eventId: 'evt-0', webhookId: webhook.id },
      { attempts: 1, runAt: new Date(), error: 'late failure', statusCode: 500 },
    );
    const { rows } = await db.pool.query(`select event_id, status, last_error from ${schema}.deliveries where webhook_id = $1 order by change_index`, [
      webhook.id,
    ]);
    expect(rows[0]).toEqual({ event_id: 'evt-0', status: 'dead', last_error: 'targetUrl changed' });
    expect(rows.slice(1).map((r) => r.status)).toEqual(['pending', 'pending']);
  });
});
