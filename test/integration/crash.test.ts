import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addWebhook, eventually, prepareDatabase, spawnStreamingBridge, type BridgeProcess } from '../helpers/bridge.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';
import { ChangeWriter, receivedKey } from '../helpers/writer.js';

/** Crash safety: SIGKILL three times during 20,000 changes; SIGTERM during a burst. */
describe('crash safety (daemon as a child process)', () => {
  let db: TestDatabase;
  let receiver: Receiver;
  let bridge: BridgeProcess | null = null;
  const settings = { 'delivery.retrySchedule': [1, 1, 2, 2, 2, 2, 2, 2], 'log.level': 'warn' };

  beforeAll(async () => {
    db = await createTestDatabase('crash');
    await prepareDatabase(db, settings);
    receiver = await startReceiver();
    await addWebhook(db, receiver.url, ['*.*']);
  });

  afterAll(async () => {
    bridge?.child.kill('SIGKILL');
    await bridge?.exited;
    await receiver?.close();
    await db?.drop();
  });

  const startBridge = (): Promise<BridgeProcess> => spawnStreamingBridge(db, settings);

  function missing(writer: ChangeWriter): string[] {
    const got = new Set(receiver.requests.map(receivedKey));
    return [...writer.expected].filter((key) => !got.has(key));
  }

  it('20,000 changes, SIGKILL three times at random moments: every change arrives, duplicates share their webhook-id', async () => {
    // ~2% of attempts fail, so some deliveries take the store path when the kills land.
    receiver.requests.length = 0;
    receiver.script((_req, i) => (i % 53 === 7 ? { status: 500 } : { status: 200 }));
    bridge ??= await startBridge();
    const writer = new ChangeWriter(db.pool);
    const total = 20_000;
    const killAt = [0.15, 0.45, 0.75].map((f) => Math.floor(total * (f + Math.random() * 0.1)));
    const kills: number[] = [];
    await writer.write(total, async (done) => {
      if (killAt.length > 0 && done >= killAt[0]) {
        killAt.shift();
        bridge!.child.kill('SIGKILL');
        await bridge!.exited;
        kills.push(done);
        bridge = await startBridge();
      }
    });
    expect(kills).toHaveLength(3);
    await eventually(
      () => missing(writer).length === 0,
      () => `every change to arrive (missing e.g. ${missing(writer).slice(0, 5).join(', ')})`,
      120_000,
    );
    const idsByKey = new Map<string, Set<string>>();
    for (const request of receiver.requests) {
      const key = receivedKey(request);
      if (!idsByKey.has(key)) idsByKey.set(key, new Set());
      idsByKey.get(key)!.add(String(request.headers['webhook-id']));
      expect(request.headers['webhook-id']).toBe(request.json.id);
    }
    const keysWithSeveralIds = [...idsByKey].filter(([, ids]) => ids.size > 1);
    expect(keysWithSeveralIds).toEqual([]);
    const duplicates = await db.pool.query(`select event_id, webhook_id, count(*) from webhook_bridge.deliveries group by 1, 2 having count(*) > 1`);
    expect(duplicates.rows).toEqual([]);
    const successful = receiver.requests.length;
    console.log(
      `crash test: ${writer.expected.size} changes, kills after ${kills.join(', ')} changes, ${successful} requests received (${successful - writer.expected.size} extra: retries and crash replays)`,
    );
    await eventually(
      async () => (await db.pool.query(`select count(*)::int as n from webhook_bridge.deliveries`)).rows[0].n === 0,
      'the store to drain',
      30_000,
    );
  });

  it('SIGTERM during a burst exits 0 within 10 s, and a restart delivers the rest', async () => {
    bridge ??= await startBridge();
    receiver.requests.length = 0;
    // Some requests hang until the attempt timeout, so attempts are in flight when the signal lands.
    receiver.script((_req, i) => (i % 97 === 0 ? 'hang' : { status: 200 }));
    const writer = new ChangeWriter(db.pool, Math.random, 50, 'sigterm');
    await writer.write(5_000);
    await eventually(() => receiver.requests.length > 500, 'the burst to be under way', 30_000);
    const signalled = Date.now();
    bridge!.child.kill('SIGTERM');
    const code = await bridge!.exited;
    const tookMs = Date.now() - signalled;
    console.log(`SIGTERM: exit code ${code} after ${tookMs} ms; ${receiver.requests.length} of ${writer.expected.size} delivered before`);
    expect(code).toBe(0);
    expect(tookMs).toBeLessThan(10_000);
    bridge = await startBridge();
    await eventually(
      () => missing(writer).length === 0,
      () => `the rest to arrive (missing e.g. ${missing(writer).slice(0, 5).join(', ')})`,
      60_000,
    );
  });
});
