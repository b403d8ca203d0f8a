import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { claimDeliveries, insertDeliveries } from '../../src/store/deliveryStore.js';
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
      ...extra,
    };
  }

  it('stores and claims back payloads byte for byte, each once, in commit order', async () => {
    const webhookId = randomUUID();
    const bodies = [
      JSON.stringify({ data: { title: 'quotes " and \\ backslashes \\" and {braces} [brackets] , commas' } }),
      JSON.stringify({ data: { title: 'control \u0000 \u0001 \n \t and escapes \\u0000 written out' } }),
      JSON.stringify({ data: { title: 'unicode: é ß 中文 🎉, and a lone surrogate \ud800' } }),
      JSON.stringify({ data: { title: 'NULL' } }),
      '',
    ];
    const rows = bodies.map((body, i) => delivery(webhookId, i, body, i === 1 ? { attempts: 2, lastError: 'http_status: 503 "busy"', lastStatusCode: 503 } : {}));
    await insertDeliveries(db.pool, schema, rows, 'worker-a');
    await insertDeliveries(db.pool, schema, rows, 'worker-a'); // a replay after a crash: nothing twice
    const claimed = await claimDeliveries(db.pool, schema, webhookId, 'worker-a', 100, 30_000);
    expect(claimed.map((d) => d.body)).toEqual(bodies);
    expect(claimed.map((d) => d.eventId)).toEqual(bodies.map((_, i) => `evt-${i}`));
    expect(claimed[1]).toMatchObject({ attempts: 2, lastError: 'http_status: 503 "busy"', lastStatusCode: 503, status: 'pending' });
    const { rows: counts } = await db.pool.query(`select count(*)::int as n from ${schema}.deliveries where webhook_id = $1`, [webhookId]);
    expect(counts[0].n).toBe(bodies.length);
  });

  it('keeps the lease of a delivery stored while in flight: the poller does not claim it', async () => {
    const webhookId = randomUUID();
    await insertDeliveries(db.pool, schema, [delivery(webhookId, 0, '{"a":1}', { lockedUntil: new Date(Date.now() + 60_000) }), delivery(webhookId, 1, '{"a":2}')], 'worker-b');
    const { rows } = await db.pool.query(`select event_id, locked_by from ${schema}.deliveries where webhook_id = $1 order by change_index`, [webhookId]);
    expect(rows).toEqual([
      { event_id: 'evt-0', locked_by: 'worker-b' },
      { event_id: 'evt-1', locked_by: null },
    ]);
    const claimed = await claimDeliveries(db.pool, schema, webhookId, 'worker-c', 100, 30_000);
    expect(claimed.map((d) => d.eventId)).toEqual(['evt-1']);
  });
});
