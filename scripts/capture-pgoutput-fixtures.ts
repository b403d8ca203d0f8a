/**
 * Captures real pgoutput (protocol version 1) messages as hex fixtures for test/unit/pgoutput.test.ts.
 *
 *   npx tsx scripts/capture-pgoutput-fixtures.ts
 *
 * Starts a throwaway cluster (test/helpers/postgresCluster.ts, never port 5432), makes a slot and a
 * publication, runs one scenario per fixture and reads what the server would stream with
 * pg_logical_slot_peek_binary_changes. Each fixture file is small text:
 *
 *   # key: value           metadata (server version, capture time, relation OIDs)
 *   <lsn> <xid> <hex>      one message per line; lsn and xid are the peek function's own columns
 *
 * The unit test checks decoded LSNs and xids against those columns, so a re-capture (new LSNs, OIDs
 * and times) needs no edit to the test.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { startCluster } from '../test/helpers/postgresCluster.js';

const OUT_DIR = fileURLToPath(new URL('../test/fixtures/pgoutput/', import.meta.url));
const SLOT = 'fixtures';
const PUBLICATION = 'pub';
/** Stored out of line (STORAGE EXTERNAL, no compression) once a row passes ~2 kB: a TOASTed value. */
const TOAST_VALUE = Array.from({ length: 2_100 }, (_, i) => String.fromCharCode(97 + ((i * 7) % 26))).join('');

const SETUP_SQL = `
create schema fixture;
create type fixture.mood as enum ('happy', 'sad', 'so-so');
create table fixture.contact (
  id integer primary key,
  name text not null,
  email varchar(100),
  score numeric(10, 2),
  mood fixture.mood,
  tags text[],
  seen_at timestamptz
);
alter table fixture.contact replica identity full;
-- default replica identity (the primary key): old key images only, unchanged TOAST stays unsent
create table fixture.document (id integer primary key, title text, body text);
alter table fixture.document alter column body set storage external;
-- replica identity through a unique index on a non-primary-key column
create table fixture.tagged (id integer not null, code text not null, label text);
create unique index tagged_code_idx on fixture.tagged (code);
alter table fixture.tagged alter column code set not null;
alter table fixture.tagged replica identity using index tagged_code_idx;
create table fixture.child (id integer primary key, contact_id integer references fixture.contact (id));
create table fixture.counter (id serial primary key, n integer);
create table fixture.flush_marker (n integer);
create publication ${PUBLICATION} for table fixture.contact, fixture.document, fixture.tagged, fixture.child, fixture.counter;
`;

interface Scenario {
  file: string;
  about: string;
  /** Each entry is run on its own (autocommit) unless it is a begin ... commit block. */
  sql: string[];
}

const SCENARIOS: Scenario[] = [
  {
    file: 'insert.hex',
    about: 'INSERT into a REPLICA IDENTITY FULL table with an enum column (Type message), NULLs, an array and a timestamptz printed in Asia/Kathmandu',
    sql: [
      `insert into fixture.contact values (1, 'Alice', 'alice@example.com', 12.5, 'happy', array['a"b', 'c,d', null, ''], '2024-03-10 12:34:56.789+05:45')`,
      `insert into fixture.contact (id, name) values (2, 'Bob')`,
    ],
  },
  {
    file: 'update-full.hex',
    about: "UPDATE on a FULL table: the old row image ('O') then the new one ('N')",
    sql: [`update fixture.contact set email = 'alice@new.example', mood = 'so-so' where id = 1`],
  },
  {
    file: 'update-key.hex',
    about: "UPDATE changing the primary key of a default-identity table: the old key only ('K'); then an UPDATE that keeps the key: no old image at all",
    sql: [
      `insert into fixture.document values (10, 'draft', 'short')`,
      `update fixture.document set id = 11 where id = 10`,
      `update fixture.document set title = 'final' where id = 11`,
    ],
  },
  {
    file: 'toast.hex',
    about: "INSERT of a TOASTed value, then UPDATE of another column on a default-identity table: the value arrives as unchanged TOAST ('u')",
    sql: [`insert into fixture.document values (20, 'big', '${TOAST_VALUE}')`, `update fixture.document set title = 'bigger' where id = 20`],
  },
  {
    file: 'delete.hex',
    about: "DELETE on a FULL table (old row 'O') and on a default-identity table (old key 'K'), in one transaction",
    sql: [`begin`, `delete from fixture.contact where id = 2`, `delete from fixture.document where id = 11`, `commit`],
  },
  {
    file: 'index-identity.hex',
    about: "REPLICA IDENTITY USING INDEX: the index column is the key; UPDATE of it sends the old key ('K')",
    sql: [`insert into fixture.tagged values (1, 'x1', 'first')`, `update fixture.tagged set code = 'x2' where code = 'x1'`],
  },
  {
    file: 'truncate.hex',
    about: 'TRUNCATE of two tables with CASCADE and RESTART IDENTITY',
    sql: [`insert into fixture.counter (n) values (1)`, `truncate fixture.child, fixture.counter restart identity cascade`],
  },
  {
    file: 'message.hex',
    about: 'pg_logical_emit_message: a transactional message inside a transaction, then a non-transactional one on its own',
    sql: [
      `begin`,
      `select pg_logical_emit_message(true, 'fixture_prefix', 'inside a transaction')`,
      `insert into fixture.counter (n) values (2)`,
      `commit`,
      `select pg_logical_emit_message(false, 'pg_webhook_bridge_heartbeat', '')`,
      `select pg_logical_emit_message(false, 'binary', '\\x00ff10'::bytea)`,
      // Non-transactional messages are not flushed by themselves, and the peek reads flushed WAL only:
      // a commit on an unpublished table flushes them (and itself emits nothing).
      `insert into fixture.flush_marker values (1)`,
    ],
  },
  {
    file: 'origin.hex',
    about: "A transaction replayed under a replication origin: the Origin message ('O') after Begin",
    sql: [
      `select pg_replication_origin_session_setup('fixture_origin')`,
      `begin`,
      `select pg_replication_origin_xact_setup('0/ABCDEF0', now())`,
      `insert into fixture.counter (n) values (3)`,
      `commit`,
      `select pg_replication_origin_session_reset()`,
    ],
  },
];

async function main(): Promise<void> {
  const cluster = await startCluster();
  const client = new pg.Client({ connectionString: cluster.adminUrl() });
  try {
    await client.connect();
    // The peek function prints values in this session's settings; pin them like the bridge does, except
    // the time zone, which shows that offsets such as +05:45 reach the decoder unchanged.
    await client.query(`set timezone = 'Asia/Kathmandu'; set datestyle = 'ISO'; set extra_float_digits = 1`);
    await client.query(SETUP_SQL);
    await client.query(`select pg_replication_origin_create('fixture_origin')`);
    await client.query(`select pg_create_logical_replication_slot($1, 'pgoutput')`, [SLOT]);
    const version = (await client.query('show server_version')).rows[0].server_version as string;
    const oids = (
      await client.query(
        `select c.relname, c.oid::int from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'fixture' and c.relkind = 'r' order by 1`,
      )
    ).rows.map((r) => `${r.relname}=${r.oid}`);
    const moodOid = (await client.query(`select 'fixture.mood'::regtype::oid::int as oid`)).rows[0].oid as number;
    mkdirSync(OUT_DIR, { recursive: true });

    for (const scenario of SCENARIOS) {
      const before = new Date();
      for (const statement of scenario.sql) await client.query(statement);
      const upto = (await client.query('select pg_current_wal_insert_lsn()::text as lsn')).rows[0].lsn as string;
      const { rows } = await client.query(
        `select lsn::text, xid::text, encode(data, 'hex') as hex
           from pg_logical_slot_peek_binary_changes($1, $2::pg_lsn, null, 'proto_version', '1', 'publication_names', $3, 'messages', 'true')`,
        [SLOT, upto, PUBLICATION],
      );
      // Consume what we read, so the next scenario starts clean (peek alone leaves it in the slot).
      await client.query('select pg_replication_slot_advance($1, $2::pg_lsn)', [SLOT, upto]);
      const header = [
        `# ${scenario.about}`,
        `# captured by scripts/capture-pgoutput-fixtures.ts; columns: lsn xid hex (one pgoutput message per line)`,
        `# server: PostgreSQL ${version}`,
        `# captured-from: ${before.toISOString()}`,
        `# captured-to: ${new Date().toISOString()}`,
        `# relations: ${oids.join(' ')}`,
        `# types: mood=${moodOid}`,
      ];
      const lines = rows.map((r) => `${r.lsn} ${r.xid} ${r.hex}`);
      writeFileSync(`${OUT_DIR}${scenario.file}`, `${[...header, ...lines].join('\n')}\n`);
      console.log(`${scenario.file}: ${rows.length} messages`);
    }
    await client.query('select pg_drop_replication_slot($1)', [SLOT]);
  } finally {
    await client.end().catch(() => undefined);
    await cluster.stop();
  }
}

await main();
