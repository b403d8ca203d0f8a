import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Daemon } from '../../src/daemon.js';
import { addWebhook, prepareDatabase, runCli, startDaemon } from '../helpers/bridge.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';

const SIGNATURE_HEADERS = ['x-twenty-webhook-signature', 'x-twenty-webhook-timestamp', 'x-twenty-webhook-nonce', 'webhook-signature', 'webhook-timestamp'];

/** Rows as Twenty writes them: secret '' (Zapier's webhooks), operations the bridge never emits. */
describe('webhook rows written by Twenty', () => {
  let db: TestDatabase;
  let daemon: Daemon;
  const receivers: Receiver[] = [];

  beforeAll(async () => {
    db = await createTestDatabase('twenty_rows');
    const config = await prepareDatabase(db, { 'log.level': 'debug' });
    ({ daemon } = await startDaemon(config));
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

  it('an empty secret gets its events unsigned; {metadata.*.*, person.created} gets person.created', async () => {
    const unsigned = await receiver();
    const mixed = await receiver();
    const unsignedId = await addWebhook(db, unsigned.url, ['*.*'], '');
    const mixedId = await addWebhook(db, mixed.url, ['metadata.*.*', 'person.created'], 'mixed-secret');
    await db.pool.query(`insert into person ("firstName") values ('First')`);
    await db.pool.query(`insert into company (name) values ('Not for mixed')`);
    await db.pool.query(`insert into person ("firstName") values ('Second')`);

    await unsigned.waitForCount(3);
    expect(unsigned.requests.map((r) => r.json.event).sort()).toEqual(['company.created', 'person.created', 'person.created']);
    for (const request of unsigned.requests) {
      for (const name of SIGNATURE_HEADERS) expect(request.headers, name).not.toHaveProperty(name);
      expect(request.headers['webhook-id']).toBe(request.json.id);
      expect(request.headers['user-agent']).toMatch(/^pg-webhook-bridge\//);
    }

    await mixed.waitForCount(2);
    expect(mixed.requests.map((r) => `${r.json.event} ${r.json.data.firstName}`).sort()).toEqual(['person.created First', 'person.created Second']);
    expect(mixed.requests[0].headers['x-twenty-webhook-signature']).toMatch(/^[0-9a-f]{64}$/);

    const list = await runCli(['--database-url', db.url, 'webhooks', 'list', '--json']);
    const listed = JSON.parse(list.stdout) as Array<{ id: string; state: string; ignoredOperations: unknown[] }>;
    expect(listed.find((w) => w.id === unsignedId)).toMatchObject({ state: 'active' });
    expect(listed.find((w) => w.id === mixedId)).toMatchObject({ state: 'active', ignoredOperations: ['metadata.*.*'] });
  });
});
