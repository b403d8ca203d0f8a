import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../src/migrate.js';
import { eventually, spawnStreamingBridge, testConfig, type BridgeProcess } from '../helpers/bridge.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';
import { createTwentyWorkspace, TWENTY_CORE_SQL, type TwentyWorkspace } from '../fixtures/twentyDatabase.js';

/** Twenty mode keeps the crash guarantee: SIGKILL twice while two workspaces write, nothing lost, nothing crosses. */
describe('Twenty mode, daemon killed while two workspaces write', () => {
  let db: TestDatabase;
  let bridge: BridgeProcess | null = null;
  const workspaces: TwentyWorkspace[] = [];
  const receivers: Receiver[] = [];
  const settings = { 'source.mode': 'twenty', 'source.discoveryIntervalMs': 500, 'delivery.retrySchedule': [1, 1, 2, 2, 2, 2], 'log.level': 'warn' };

  beforeAll(async () => {
    db = await createTestDatabase('twentycrash');
    const client = await db.pool.connect();
    try {
      await client.query(TWENTY_CORE_SQL);
      workspaces.push(
        await createTwentyWorkspace(client, { registration: 'databaseSchema' }),
        await createTwentyWorkspace(client, { registration: 'dataSource' }),
      );
      await migrate(client, testConfig(db, settings));
      for (const ws of workspaces) {
        const r = await startReceiver();
        // Some attempts fail, so deliveries also take the durable store path when the kills land.
        r.script((_req, i) => (i % 41 === 5 ? { status: 500 } : { status: 200 }));
        receivers.push(r);
        await client.query(`insert into core.webhook ("targetUrl", operations, secret, "workspaceId") values ($1, '{person.created}', 'crash-secret', $2)`, [
          r.url,
          ws.id,
        ]);
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

  const startBridge = (): Promise<BridgeProcess> => spawnStreamingBridge(db, settings);

  it("every person reaches its own workspace's receiver and no other", async () => {
    bridge = await startBridge();
    const written: Array<Set<string>> = [new Set(), new Set()];
    const total = 3_000;
    const batch = 20;
    const killAfter = [Math.floor(total * (0.3 + Math.random() * 0.1)), Math.floor(total * (0.65 + Math.random() * 0.1))];
    for (let done = 0; done < total; done += batch) {
      const ws = (done / batch) % 2;
      const { rows } = await db.pool.query(
        `insert into ${workspaces[ws].schema}.person ("nameFirstName") select 'p' || g from generate_series(1, ${batch}) g returning id::text`,
      );
      for (const row of rows) written[ws].add(row.id);
      if (killAfter.length > 0 && done >= killAfter[0]) {
        killAfter.shift();
        bridge.child.kill('SIGKILL');
        await bridge.exited;
        bridge = await startBridge();
      }
    }
    const missing = (i: number) => [...written[i]].filter((id) => !receivers[i].requests.some((q) => q.json?.record?.id === id));
    await eventually(
      () => missing(0).length === 0 && missing(1).length === 0,
      () => `every person to arrive (missing ${missing(0).length} + ${missing(1).length})`,
      120_000,
    );
    for (const i of [0, 1]) {
      for (const q of receivers[i].requests) {
        expect(q.json.workspaceId).toBe(workspaces[i].id);
        expect(written[i].has(q.json.record.id)).toBe(true);
      }
    }
  });
});
