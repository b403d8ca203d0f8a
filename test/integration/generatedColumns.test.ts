import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Daemon } from '../../src/daemon.js';
import { addWebhook, prepareDatabase, startDaemon } from '../helpers/bridge.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';

/**
 * A watched table with a stored generated column. `migrate` makes watched tables REPLICA IDENTITY
 * FULL; from Postgres 18 on, such a table refuses every UPDATE and DELETE unless the publication also
 * publishes generated columns, so the bridge must never leave the user's writes failing.
 */
describe('a watched table with a stored generated column', () => {
  let db: TestDatabase;
  let daemon: Daemon;
  let receiver: Receiver;
  let generatedPublished: boolean;

  beforeAll(async () => {
    db = await createTestDatabase('generated');
    const config = await prepareDatabase(
      db,
      {},
      `alter table person add column "fullName" text generated always as (coalesce("firstName", '') || ' ' || coalesce("lastName", '')) stored;`,
    );
    ({ daemon } = await startDaemon(config));
    receiver = await startReceiver();
    await addWebhook(db, receiver.url, ['person.*']);
    const { rows } = await db.pool.query(`select current_setting('server_version_num')::int >= 180000 as v`);
    generatedPublished = rows[0].v;
  });

  afterAll(async () => {
    await daemon?.stop();
    await receiver?.close();
    await db?.drop();
  });

  it('still accepts updates and deletes, and sends them', async () => {
    const { rows } = await db.pool.query(`insert into person ("firstName", "lastName") values ('Ada', 'Byron') returning id`);
    await db.pool.query(`update person set "lastName" = 'Lovelace' where id = $1`, [rows[0].id]);
    await db.pool.query(`delete from person where id = $1`, [rows[0].id]);
    await receiver.waitFor((reqs) => reqs.some((q) => q.json.event === 'person.destroyed'));
    const updated = receiver.requests.find((q) => q.json.event === 'person.updated')!.json;
    expect(updated.data.lastName).toBe('Lovelace');
    if (generatedPublished) {
      expect(updated.data.fullName).toBe('Ada Lovelace');
      expect(updated.updatedFields).toEqual(['lastName', 'fullName']);
    } else expect(updated.updatedFields).toEqual(['lastName']);
  });
});
