import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Daemon } from '../../src/daemon.js';
import { eventually, prepareDatabase, runCli, startDaemon, testConfig } from '../helpers/bridge.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

interface Row {
  status: 'pending' | 'dead';
  webhookId: string;
  /** How long ago the delivery was created, in hours. */
  createdHoursAgo: number;
  /** How long ago it was last updated (when it died, for a dead one), in hours. */
  updatedHoursAgo?: number;
}

/** Dead deliveries keep whole CRM rows: they can be purged by hand, and are purged after N days. */
describe('deliveries purge', () => {
  let db: TestDatabase;
  let daemon: Daemon | undefined;
  const base = () => ['--database-url', db.url, '--replication-slot', 'purge_slot'];
  const hookA = randomUUID();
  const hookB = randomUUID();

  beforeAll(async () => {
    db = await createTestDatabase('delivery_purge');
    await prepareDatabase(db);
  });

  // The purge commands count and delete across the whole table, and the daemon purges on its own while
  // it runs: each test starts from an empty table with no daemon, whatever ran before it.
  beforeEach(async () => {
    await db.pool.query(`delete from webhook_bridge.deliveries`);
  });

  afterEach(async () => {
    await daemon?.stop();
    daemon = undefined;
  });

  afterAll(async () => {
    await db?.drop();
  });

  let nextEvent = 0;
  async function insert(rows: Row[]): Promise<string[]> {
    const ids: string[] = [];
    for (const row of rows) {
      const n = nextEvent++;
      const { rows: inserted } = await db.pool.query(
        `insert into webhook_bridge.deliveries (webhook_id, event_id, event_name, record_key, commit_lsn, change_index, body, status, created_at, updated_at)
         values ($1, $2, 'person.created', $3, $4::pg_lsn, 0, '{"data":{"email":"someone@example.com"}}', $5,
                 now() - make_interval(hours => $6), now() - make_interval(hours => $7)) returning id::text`,
        [row.webhookId, `evt-${n}`, `person:${n}`, `0/${(n + 1).toString(16)}`, row.status, row.createdHoursAgo, row.updatedHoursAgo ?? row.createdHoursAgo],
      );
      ids.push(inserted[0].id);
    }
    return ids;
  }

  async function remaining(): Promise<string[]> {
    const { rows } = await db.pool.query(`select id::text from webhook_bridge.deliveries order by id`);
    return rows.map((r) => r.id);
  }

  it('deletes what the filters select, says how many, and needs at least one filter', async () => {
    const [, newDeadA, oldPendingA, , newPendingB] = await insert([
      { status: 'dead', webhookId: hookA, createdHoursAgo: 24 * 40 },
      { status: 'dead', webhookId: hookA, createdHoursAgo: 2 },
      { status: 'pending', webhookId: hookA, createdHoursAgo: 24 * 40 },
      { status: 'dead', webhookId: hookB, createdHoursAgo: 24 * 40 },
      { status: 'pending', webhookId: hookB, createdHoursAgo: 1 },
    ]);

    const none = await runCli([...base(), 'deliveries', 'purge']);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/give at least one of --status, --older-than, --webhook/);
    const badDuration = await runCli([...base(), 'deliveries', 'purge', '--older-than', 'a month']);
    expect(badDuration.code).toBe(2);
    expect(badDuration.stderr).toMatch(/--older-than "a month" is not a duration \(e\.g\. 30d, 12h, 45m\)/);
    const badStatus = await runCli([...base(), 'deliveries', 'purge', '--status', 'done']);
    expect(badStatus.code).toBe(2);

    const deadOld = await runCli([...base(), 'deliveries', 'purge', '--status', 'dead', '--older-than', '30d']);
    expect(deadOld.code, deadOld.stderr).toBe(0);
    expect(deadOld.stdout).toMatch(/^2 deliveries deleted$/m);
    expect(await remaining()).toEqual([newDeadA, oldPendingA, newPendingB]);

    const ofB = await runCli([...base(), 'deliveries', 'purge', '--webhook', hookB]);
    expect(ofB.stdout).toMatch(/^1 delivery deleted$/m);
    expect(await remaining()).toEqual([newDeadA, oldPendingA]);

    const olderThanHours = await runCli([...base(), 'deliveries', 'purge', '--older-than', '12h']);
    expect(olderThanHours.stdout).toMatch(/^1 delivery deleted$/m);
    expect(await remaining()).toEqual([newDeadA]);

    const nothing = await runCli([...base(), 'deliveries', 'purge', '--status', 'pending']);
    expect(nothing.stdout).toMatch(/^0 deliveries deleted$/m);
  });

  it('the daemon deletes dead deliveries that died more than delivery.purgeDeadAfterDays ago, in batches', async () => {
    // 1,200 rows: more than one batch.
    const deadLongAgo = Array.from({ length: 1_200 }, (): Row => ({ status: 'dead', webhookId: hookA, createdHoursAgo: 24 * 10, updatedHoursAgo: 24 * 8 }));
    await insert(deadLongAgo);
    const [diedRecently, pendingOld] = await insert([
      { status: 'dead', webhookId: hookA, createdHoursAgo: 24 * 10, updatedHoursAgo: 24 * 6 },
      { status: 'pending', webhookId: hookB, createdHoursAgo: 24 * 10 },
    ]);
    const started = await startDaemon(testConfig(db, { 'delivery.purgeDeadAfterDays': 7 }));
    daemon = started.daemon;
    let left = -1;
    await eventually(
      async () => (left = (await remaining()).length) === 2,
      () => `the purge; ${left} rows left`,
      30_000,
    );
    expect(await remaining()).toEqual([diedRecently, pendingOld]);
    await eventually(() => started.logs.lines.some((l) => l.deleted === 1_200), 'the purge to log how many it deleted');
  });
});
