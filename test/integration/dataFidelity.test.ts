/**
 * Data fidelity: every value, every shape of change, every table, end to end through a real
 * Postgres and a real receiver (event names, payload values).
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BridgeConfig } from '../../src/config.js';
import type { Daemon } from '../../src/daemon.js';
import { migrate } from '../../src/migrate.js';
import { addWebhook, LogCapture, prepareDatabase, startDaemon } from '../helpers/bridge.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';
import { EVERYTHING_COLUMNS, EVERYTHING_EXPECTED, EVERYTHING_INSERTS, EVERYTHING_SQL } from '../fixtures/everythingTable.js';

const TABLES = {
  'public.person': 'person',
  'public.note': 'note',
  'public.everything': 'everything',
  'public.big_row': 'big_row',
  'public.doc': 'doc',
  'public.shape': 'shape',
  'crm.deal': 'opportunity',
  'workspace_*.person': 'person',
  'public.measurement': 'measurement',
};

const SCHEMA_SQL = `
${EVERYTHING_SQL}
create table public.big_row (id integer primary key, payload text, note text);
create table public.doc (id integer primary key, title text, body text);
alter table public.doc alter column body set storage external; -- out of line, uncompressed: TOASTed at ~2 kB
create table public.shape (id integer primary key, a text);
create schema crm;
create table crm.deal (id integer primary key, name text, amount numeric(12, 2));
create schema workspace_1a2b;
create table workspace_1a2b.person (id uuid primary key, "firstName" text, "deletedAt" timestamptz);
create schema other;
create table other.person (id integer primary key, name text);
create table public.measurement (id integer, region text, value numeric, primary key (id, region)) partition by list (region);
create table public.measurement_eu partition of public.measurement for values in ('eu');
create table public.measurement_us partition of public.measurement for values in ('us') partition by range (id);
create table public.measurement_us_low partition of public.measurement_us for values from (0) to (1000);
`;

type Payload = { event: string; data: Record<string, any>; id: string; timestamp: string; updatedFields?: string[]; unavailableFields?: string[] };

/** The events a receiver got for one record of one object, in arrival (= commit, per record) order. */
function eventsOf(r: Receiver, object: string, match: (data: Record<string, any>) => boolean): Payload[] {
  return r.requests.map((q) => q.json as Payload).filter((p) => p.event.startsWith(`${object}.`) && match(p.data));
}

async function waitForEvent(r: Receiver, name: string, match: (data: Record<string, any>) => boolean, timeoutMs = 15_000): Promise<Payload> {
  await r.waitFor((reqs) => reqs.some((q) => q.json?.event === name && match(q.json.data)), timeoutMs);
  return r.requests.find((q) => q.json.event === name && match(q.json.data))!.json;
}

describe('data fidelity', () => {
  let db: TestDatabase;
  let config: BridgeConfig;
  let daemon: Daemon;
  let logs: LogCapture;
  let r: Receiver;

  beforeAll(async () => {
    db = await createTestDatabase('fidelity');
    // Every new session of this database (ours, the daemon's) starts in Asia/Kathmandu (+05:45).
    await db.pool.query(`alter database ${pg.escapeIdentifier(db.name)} set timezone = 'Asia/Kathmandu'`);
    config = await prepareDatabase(db, { 'source.tables': TABLES }, SCHEMA_SQL);
    r = await startReceiver();
    await addWebhook(db, r.url);
    ({ daemon, logs } = await startDaemon(config));
  });

  afterAll(async () => {
    await daemon?.stop();
    await r?.close();
    await db?.drop();
  });

  it('a column of every type, with edge values, arrives as the hand-written JSON', async () => {
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      // The database-level setting is what a fresh session gets: timestamps without an offset below
      // are Kathmandu time.
      expect((await client.query('show timezone')).rows[0].TimeZone).toBe('Asia/Kathmandu');
      for (const insert of EVERYTHING_INSERTS) await client.query(insert);
    } finally {
      await client.end();
    }
    for (const [id, expected] of Object.entries(EVERYTHING_EXPECTED)) {
      const payload = await waitForEvent(r, 'everything.created', (d) => d.id === Number(id));
      expect(Object.keys(payload.data)).toEqual(['id', ...EVERYTHING_COLUMNS]);
      expect(payload.data, `row ${id}`).toStrictEqual(expected);
    }
    // JSON.parse above rounds big numbers to doubles; the body itself carries Postgres' exact text.
    const body = r.requests.find((q) => q.json.event === 'everything.created' && q.json.data.id === 1)!.rawBody;
    expect(body).toContain('"c_json":{"b": 1, "a": [1, 2.5, "x", null, true], "big": 12345678901234567890}');
    expect(body).toContain('"n": 12345678901234567890.5');
    expect(body).toContain('"c_int8":"9223372036854775807"');
    expect(body).toContain('"c_numeric":"12345678901234567890.123456789"');
  });

  it('a 1 MB TOASTed text survives an UPDATE of another column (REPLICA IDENTITY FULL)', async () => {
    // md5 text does not compress, so the value is stored out of line in the TOAST table.
    await db.pool.query(`insert into big_row select 1, string_agg(md5(i::text), ''), 'first' from generate_series(1, 31250) i`);
    const { rows } = await db.pool.query(`select payload, pg_column_size(payload) as stored from big_row where id = 1`);
    const big: string = rows[0].payload;
    expect(big.length).toBe(1_000_000);
    expect(Number(rows[0].stored)).toBeGreaterThan(900_000); // not compressed inline: really TOASTed
    await db.pool.query(`update big_row set note = 'second' where id = 1`);
    const updated = await waitForEvent(r, 'big_row.updated', (d) => d.id === 1, 30_000);
    expect(updated.updatedFields).toEqual(['note']);
    expect(updated.unavailableFields).toBeUndefined();
    expect(updated.data.note).toBe('second');
    expect(updated.data.payload.length).toBe(1_000_000);
    expect(updated.data.payload === big).toBe(true);
  });

  it('soft delete, restore and destroy -> .deleted, .restored, .destroyed with the right data', async () => {
    const id = '11111111-2222-4333-8444-555555555555';
    await db.pool.query(
      `insert into person (id, "firstName", email, "createdAt", "updatedAt") values ($1, 'Soft', 'soft@example.com', '2024-05-01 10:00:00+00', '2024-05-01 10:00:00+00')`,
      [id],
    );
    await db.pool.query(`update person set "deletedAt" = '2024-05-02 08:15:30.25+00' where id = $1`, [id]);
    await db.pool.query(`update person set "deletedAt" = null where id = $1`, [id]);
    await db.pool.query(`delete from person where id = $1`, [id]);
    await waitForEvent(r, 'person.destroyed', (d) => d.id === id);
    const events = eventsOf(r, 'person', (d) => d.id === id);
    expect(events.map((e) => e.event)).toEqual(['person.created', 'person.deleted', 'person.restored', 'person.destroyed']);
    const row = {
      id,
      firstName: 'Soft',
      lastName: null,
      email: 'soft@example.com',
      phone: null,
      jobTitle: null,
      city: null,
      companyId: null,
      createdAt: '2024-05-01T10:00:00.000Z',
      updatedAt: '2024-05-01T10:00:00.000Z',
      deletedAt: null,
    };
    expect(events[0].data).toStrictEqual(row);
    expect(events[1].data).toStrictEqual({ ...row, deletedAt: '2024-05-02T08:15:30.250Z' });
    expect(events[1].updatedFields).toEqual(['deletedAt']);
    expect(events[2].data).toStrictEqual(row);
    expect(events[2].updatedFields).toEqual(['deletedAt']);
    // A DELETE carries the row as it was before.
    expect(events[3].data).toStrictEqual(row);
    expect(events[3].updatedFields).toBeUndefined();

    // A table without the soft-delete column keeps DELETE -> .deleted.
    await db.pool.query(`insert into crm.deal values (90, 'Gone', 1.5)`);
    await db.pool.query(`delete from crm.deal where id = 90`);
    const deleted = await waitForEvent(r, 'opportunity.deleted', (d) => d.id === 90);
    expect(deleted.data).toStrictEqual({ id: 90, name: 'Gone', amount: '1.50' });
  });

  it('an UPDATE that changes nothing emits nothing (a later witness event does arrive)', async () => {
    const { rows } = await db.pool.query(`insert into person ("firstName", email) values ('Same', 'same@example.com') returning id`);
    const id = rows[0].id;
    await waitForEvent(r, 'person.created', (d) => d.id === id);
    await db.pool.query(`update person set "firstName" = "firstName" where id = $1`, [id]);
    await db.pool.query(`update person set email = email, "deletedAt" = "deletedAt" where id = $1`, [id]);
    // Also with a 1 MB TOASTed row: the unchanged value is not mistaken for a change.
    await db.pool.query(`insert into big_row select 2, string_agg(md5(i::text), ''), 'first' from generate_series(1, 31250) i`);
    await db.pool.query(`update big_row set note = note, payload = payload where id = 2`);
    await db.pool.query(`update person set "firstName" = 'Witness' where id = $1`, [id]);
    await db.pool.query(`update big_row set note = 'witness' where id = 2`);
    await waitForEvent(r, 'person.updated', (d) => d.id === id && d.firstName === 'Witness');
    await waitForEvent(r, 'big_row.updated', (d) => d.id === 2 && d.note === 'witness', 30_000);
    // Per record, deliveries arrive in commit order: a no-op event would have come before the witness.
    expect(eventsOf(r, 'person', (d) => d.id === id).map((e) => e.event)).toEqual(['person.created', 'person.updated']);
    expect(eventsOf(r, 'person', (d) => d.id === id)[1].updatedFields).toEqual(['firstName']);
    expect(eventsOf(r, 'big_row', (d) => d.id === 2).map((e) => e.data.note)).toEqual(['first', 'witness']);
  });

  it('ADD, RENAME, DROP COLUMN and a type change while running: each event has the shape of its moment', async () => {
    const steps: Array<[string | null, string]> = [
      [null, `insert into shape values (1, 'one')`],
      [`alter table shape add column b integer default 7`, `insert into shape values (2, 'two')`],
      [`alter table shape rename column a to alpha`, `insert into shape values (3, 'three', 8)`],
      [`alter table shape drop column b`, `insert into shape values (4, 'four')`],
      [`alter table shape add column qty text`, `insert into shape values (5, 'five', '42')`],
      [`alter table shape alter column qty type integer using qty::integer`, `insert into shape values (6, 'six', 43)`],
      [null, `update shape set alpha = 'uno' where id = 1`],
    ];
    for (const [ddl, dml] of steps) {
      if (ddl) await db.pool.query(ddl);
      await db.pool.query(dml);
    }
    await waitForEvent(r, 'shape.updated', (d) => d.id === 1);
    const events = eventsOf(r, 'shape', () => true).sort((x, y) => (x.id < y.id ? -1 : 1));
    expect(events.map((e) => [e.event, e.data])).toEqual([
      ['shape.created', { id: 1, a: 'one' }],
      ['shape.created', { id: 2, a: 'two', b: 7 }],
      ['shape.created', { id: 3, alpha: 'three', b: 8 }],
      ['shape.created', { id: 4, alpha: 'four' }],
      ['shape.created', { id: 5, alpha: 'five', qty: '42' }],
      ['shape.created', { id: 6, alpha: 'six', qty: 43 }],
      ['shape.updated', { id: 1, alpha: 'uno', qty: null }],
    ]);
    expect(events[6].updatedFields).toEqual(['alpha']);
    expect(daemon.fatalError).toBeNull();
  });

  it('custom table -> "opportunity", workspace_* schemas -> "person", other schemas ignored', async () => {
    await db.pool.query(`insert into crm.deal values (1, 'Big deal', 1234567.89)`);
    await db.pool.query(`insert into workspace_1a2b.person values ('00000000-0000-4000-8000-000000000001', 'Ws')`);
    await db.pool.query(`insert into other.person values (1, 'not watched')`);
    const deal = await waitForEvent(r, 'opportunity.created', (d) => d.id === 1);
    expect(deal.data).toStrictEqual({ id: 1, name: 'Big deal', amount: '1234567.89' });
    const ws = await waitForEvent(r, 'person.created', (d) => d.id === '00000000-0000-4000-8000-000000000001');
    expect(ws.data).toStrictEqual({ id: '00000000-0000-4000-8000-000000000001', firstName: 'Ws', deletedAt: null });
    await db.pool.query(`update workspace_1a2b.person set "deletedAt" = '2024-01-01 00:00:00+00'`);
    await waitForEvent(r, 'person.deleted', (d) => d.id === '00000000-0000-4000-8000-000000000001');

    // A workspace created while the daemon runs: `migrate` again adds it, no restart.
    await db.pool.query(`create schema workspace_9z9z; create table workspace_9z9z.person (id uuid primary key, "firstName" text)`);
    const client = await db.pool.connect();
    try {
      expect((await migrate(client, config)).publicationTables).toContain('workspace_9z9z.person');
    } finally {
      client.release();
    }
    await db.pool.query(`insert into workspace_9z9z.person values ('00000000-0000-4000-8000-000000000002', 'Late')`);
    const late = await waitForEvent(r, 'person.created', (d) => d.id === '00000000-0000-4000-8000-000000000002');
    expect(late.data).toStrictEqual({ id: '00000000-0000-4000-8000-000000000002', firstName: 'Late' });
    expect(r.requests.some((q) => q.json.data?.name === 'not watched')).toBe(false);
  });

  it('a partitioned table publishes via its root, with FULL old images from its partitions', async () => {
    const { rows } = await db.pool.query(`select relname, relreplident from pg_class where relname like 'measurement%' and relkind in ('r', 'p') order by 1`);
    // Postgres does not pass REPLICA IDENTITY down to partitions: migrate sets it on every level.
    expect(rows.map((x) => [x.relname, x.relreplident])).toEqual([
      ['measurement', 'f'],
      ['measurement_eu', 'f'],
      ['measurement_us', 'f'],
      ['measurement_us_low', 'f'],
    ]);
    await db.pool.query(`insert into measurement values (1, 'eu', 1.5), (2, 'us', 2.5)`);
    await db.pool.query(`update measurement set value = 3.5 where id = 2`);
    await db.pool.query(`update measurement set value = value where id = 1`); // no-op: needs the partition's old image
    await db.pool.query(`delete from measurement where id = 1`);
    await waitForEvent(r, 'measurement.deleted', (d) => d.id === 1);
    await waitForEvent(r, 'measurement.updated', (d) => d.id === 2);
    expect(eventsOf(r, 'measurement', (d) => d.id === 1).map((e) => [e.event, e.data])).toEqual([
      ['measurement.created', { id: 1, region: 'eu', value: '1.5' }],
      ['measurement.deleted', { id: 1, region: 'eu', value: '1.5' }],
    ]);
    const updated = eventsOf(r, 'measurement', (d) => d.id === 2);
    expect(updated.map((e) => e.event)).toEqual(['measurement.created', 'measurement.updated']);
    expect(updated[1].data).toStrictEqual({ id: 2, region: 'us', value: '3.5' });
    expect(updated[1].updatedFields).toEqual(['value']);
  });

  it('TRUNCATE emits nothing and logs a warning naming the table', async () => {
    await db.pool.query(`insert into note (title) values ('before truncate')`);
    await waitForEvent(r, 'note.created', (d) => d.title === 'before truncate');
    await db.pool.query(`truncate note`);
    await db.pool.query(`insert into note (title) values ('witness')`);
    await waitForEvent(r, 'note.created', (d) => d.title === 'witness');
    expect(eventsOf(r, 'note', () => true).map((e) => e.data.title)).toEqual(['before truncate', 'witness']);
    const warning = logs.lines.find((l) => /TRUNCATE/.test(l.msg));
    expect(warning?.level).toBe('warn');
    expect(warning?.tables).toEqual(['public.note']);
  });

  it('a table that is not REPLICA IDENTITY FULL: one log line, and missing values are listed, never dropped silently', async () => {
    // Not FULL on purpose (migrate, also run by an earlier test, makes it FULL): no old images.
    await db.pool.query('alter table public.doc replica identity default');
    const body = 'x'.repeat(3_000);
    await db.pool.query(`insert into doc values (1, 'draft', $1)`, [body]);
    await db.pool.query(`update doc set title = 'final' where id = 1`);
    await db.pool.query(`alter table doc add column tags text`); // a new Relation message for the table
    await db.pool.query(`update doc set title = 'final 2' where id = 1`);
    await db.pool.query(`delete from doc where id = 1`);
    await waitForEvent(r, 'doc.deleted', (d) => d.id === 1);
    const events = eventsOf(r, 'doc', (d) => d.id === 1);
    expect(events.map((e) => e.event)).toEqual(['doc.created', 'doc.updated', 'doc.updated', 'doc.deleted']);
    expect(events[0].data).toStrictEqual({ id: 1, title: 'draft', body });
    // The unchanged TOASTed body was not sent and there is no old image: listed, not nulled.
    expect(events[1].data).toStrictEqual({ id: 1, title: 'final' });
    expect(events[1].unavailableFields).toEqual(['body']);
    expect(events[1].updatedFields).toBeUndefined(); // unknown without an old image
    expect(events[2].data).toStrictEqual({ id: 1, title: 'final 2', tags: null });
    expect(events[2].unavailableFields).toEqual(['body']);
    // A DELETE sends only the key: the other columns are unavailable, not null.
    expect(events[3].data).toStrictEqual({ id: 1 });
    expect(events[3].unavailableFields).toEqual(['title', 'body', 'tags']);
    const warnings = logs.lines.filter((l) => /not REPLICA IDENTITY FULL/.test(l.msg));
    expect(warnings.map((l) => [l.level, l.table])).toEqual([['warn', 'public.doc']]);
  });
});

describe('payload.camelCase', () => {
  let db: TestDatabase;
  let daemon: Daemon;
  let r: Receiver;

  beforeAll(async () => {
    db = await createTestDatabase('camel');
    const config = await prepareDatabase(
      db,
      { 'source.tables': { 'crm.contact_person': 'contact' }, 'payload.camelCase': true, 'source.softDeleteColumn': 'deleted_at' },
      `create schema crm; create table crm.contact_person (id integer primary key, first_name text, home_address_line_1 text, "alreadyCamel" text, deleted_at timestamptz);`,
    );
    r = await startReceiver();
    await addWebhook(db, r.url);
    ({ daemon } = await startDaemon(config));
  });

  afterAll(async () => {
    await daemon?.stop();
    await r?.close();
    await db?.drop();
  });

  it('turns first_name into firstName in data, updatedFields and soft-delete detection', async () => {
    await db.pool.query(`insert into crm.contact_person values (1, 'Ada', '1 Main St', 'x', null)`);
    await db.pool.query(`update crm.contact_person set first_name = 'Ada L.' where id = 1`);
    await db.pool.query(`update crm.contact_person set deleted_at = '2024-01-01 00:00:00+00' where id = 1`);
    await waitForEvent(r, 'contact.deleted', (d) => d.id === 1);
    const events = eventsOf(r, 'contact', (d) => d.id === 1);
    expect(events.map((e) => e.event)).toEqual(['contact.created', 'contact.updated', 'contact.deleted']);
    expect(events[0].data).toStrictEqual({ id: 1, firstName: 'Ada', homeAddressLine1: '1 Main St', alreadyCamel: 'x', deletedAt: null });
    expect(events[1].updatedFields).toEqual(['firstName']);
    expect(events[2].updatedFields).toEqual(['deletedAt']);
    expect(events[2].data.deletedAt).toBe('2024-01-01T00:00:00.000Z');
  });
});
