import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { Decoder, type DecoderCatalog } from '../../src/decode/decoder.js';
import { parsePgoutputMessage, postgresTimeToDate } from '../../src/decode/pgoutput.js';
import { UNCHANGED_TOAST, type DecodedItem, type PgoutputMessage, type RowChange } from '../../src/decode/types.js';
import { convertValue } from '../../src/decode/values.js';
import { DecodeError } from '../../src/errors.js';
import type { Logger } from '../../src/log.js';
import { formatLsn, parseLsn } from '../../src/replication/lsn.js';

/**
 * The pgoutput parser on bytes a real server produced (scripts/capture-pgoutput-fixtures.ts). LSNs and
 * xids are checked against the columns pg_logical_slot_peek_binary_changes printed next to each message,
 * relation and type OIDs against the fixture header, so a re-capture needs no edit here.
 */

const FIXTURE_DIR = new URL('../fixtures/pgoutput/', import.meta.url);

interface Captured {
  /** The peek function's lsn column: first/change LSN for begin and changes, end LSN for commit. */
  lsn: bigint;
  xid: number;
  bytes: Buffer;
  message: PgoutputMessage;
}

interface Fixture {
  meta: Record<string, string>;
  messages: Captured[];
  relationOid(table: string): number;
  typeOid(name: string): number;
}

function load(file: string): Fixture {
  const meta: Record<string, string> = {};
  const messages: Captured[] = [];
  for (const line of readFileSync(new URL(file, FIXTURE_DIR), 'utf8').split('\n')) {
    const header = /^# ([a-z-]+): (.*)$/.exec(line);
    if (header) meta[header[1]] = header[2];
    if (line === '' || line.startsWith('#')) continue;
    const [lsn, xid, hex] = line.split(' ');
    const bytes = Buffer.from(hex, 'hex');
    messages.push({ lsn: parseLsn(lsn), xid: Number(xid), bytes, message: parsePgoutputMessage(bytes) });
  }
  const oidFrom = (key: string, name: string): number => {
    const match = new RegExp(`(?:^| )${name}=(\\d+)`).exec(meta[key] ?? '');
    if (!match) throw new Error(`fixture ${file}: no ${name} in "# ${key}:"`);
    return Number(match[1]);
  };
  return { meta, messages, relationOid: (t) => oidFrom('relations', t), typeOid: (t) => oidFrom('types', t) };
}

const tags = (f: Fixture): string[] => f.messages.map((m) => m.message.tag);
const as = <T extends PgoutputMessage['tag']>(m: Captured, tag: T): Extract<PgoutputMessage, { tag: T }> => {
  expect(m.message.tag).toBe(tag);
  return m.message as Extract<PgoutputMessage, { tag: T }>;
};

/** Begin and Commit of one transaction agree with each other and with the server's own columns. */
function expectTransaction(f: Fixture, beginIndex: number, commitIndex: number): void {
  const begin = as(f.messages[beginIndex], 'begin');
  const commit = as(f.messages[commitIndex], 'commit');
  expect(begin.finalLsn).toBe(commit.commitLsn);
  expect(commit.endLsn).toBe(f.messages[commitIndex].lsn);
  expect(commit.endLsn).toBeGreaterThan(commit.commitLsn);
  expect(commit.flags).toBe(0);
  expect(begin.commitTimeMicros).toBe(commit.commitTimeMicros);
  expect(begin.xid).toBe(f.messages[beginIndex].xid);
  for (let i = beginIndex; i <= commitIndex; i++) expect(f.messages[i].xid).toBe(begin.xid);
  const commitTime = postgresTimeToDate(commit.commitTimeMicros).getTime();
  expect(commitTime).toBeGreaterThanOrEqual(Date.parse(f.meta['captured-from']) - 1);
  expect(commitTime).toBeLessThanOrEqual(Date.parse(f.meta['captured-to']) + 1);
}

const CONTACT_COLUMNS = [
  // REPLICA IDENTITY FULL: every column is part of the identity, so every column carries the key flag.
  { isKey: true, name: 'id', typeOid: 23, typeModifier: -1 },
  { isKey: true, name: 'name', typeOid: 25, typeModifier: -1 },
  { isKey: true, name: 'email', typeOid: 1043, typeModifier: 104 }, // varchar(100): 100 + 4 header bytes
  { isKey: true, name: 'score', typeOid: 1700, typeModifier: (10 << 16) + 2 + 4 }, // numeric(10, 2)
  { isKey: true, name: 'mood', typeOid: -1, typeModifier: -1 }, // the enum's OID, filled in below
  { isKey: true, name: 'tags', typeOid: 1009, typeModifier: -1 },
  { isKey: true, name: 'seen_at', typeOid: 1184, typeModifier: -1 },
];
const ALICE = ['1', 'Alice', 'alice@example.com', '12.50', 'happy', '{"a\\"b","c,d",NULL,""}', '2024-03-10 12:34:56.789+05:45'];

describe('pgoutput fixtures', () => {
  it('every fixture file parses completely, as the protocol-1 message types we expect', () => {
    const files = readdirSync(FIXTURE_DIR).filter((f) => f.endsWith('.hex'));
    expect(files.sort()).toEqual([
      'delete.hex',
      'index-identity.hex',
      'insert.hex',
      'message.hex',
      'origin.hex',
      'toast.hex',
      'truncate.hex',
      'update-full.hex',
      'update-key.hex',
    ]);
    for (const file of files) expect(load(file).messages.length, file).toBeGreaterThan(0);
  });

  it('insert: Begin, Type, Relation (FULL, key flags, typmods), Insert with NULLs, Commit', () => {
    const f = load('insert.hex');
    expect(tags(f)).toEqual(['begin', 'type', 'relation', 'insert', 'commit', 'begin', 'insert', 'commit']);
    expectTransaction(f, 0, 4);
    expectTransaction(f, 5, 7);
    const mood = f.typeOid('mood');
    expect(as(f.messages[1], 'type')).toEqual({ tag: 'type', oid: mood, schema: 'fixture', name: 'mood' });
    const contact = f.relationOid('contact');
    expect(as(f.messages[2], 'relation').relation).toEqual({
      id: contact,
      schema: 'fixture',
      table: 'contact',
      replicaIdentity: 'full',
      columns: CONTACT_COLUMNS.map((c) => (c.name === 'mood' ? { ...c, typeOid: mood } : c)),
    });
    expect(as(f.messages[3], 'insert')).toEqual({ tag: 'insert', relationId: contact, newTuple: ALICE });
    expect(as(f.messages[6], 'insert')).toEqual({ tag: 'insert', relationId: contact, newTuple: ['2', 'Bob', null, null, null, null, null] });
    // Second transaction: the relation was described already in this session, so no Relation message.
    expect(f.messages[6].lsn).toBe(f.messages[5].lsn);
  });

  it('the captured text forms convert to the contract values (offset +05:45 -> UTC)', () => {
    const tuple = as(load('insert.hex').messages[3], 'insert').newTuple as string[];
    const noLookup = (): undefined => undefined;
    expect(convertValue(tuple[5], 1009, noLookup)).toEqual(['a"b', 'c,d', null, '']);
    expect(convertValue(tuple[6], 1184, noLookup)).toBe('2024-03-10T06:49:56.789Z');
    expect(convertValue(tuple[3], 1700, noLookup)).toBe('12.50');
  });

  it("update on a FULL table: old image ('O') and new tuple", () => {
    const f = load('update-full.hex');
    expect(tags(f)).toEqual(['begin', 'type', 'relation', 'update', 'commit']);
    expectTransaction(f, 0, 4);
    const newTuple = [...ALICE];
    newTuple[2] = 'alice@new.example';
    newTuple[4] = 'so-so';
    expect(as(f.messages[3], 'update')).toEqual({ tag: 'update', relationId: f.relationOid('contact'), keyOnly: false, oldTuple: ALICE, newTuple });
  });

  it("update of the key on a default-identity table: old key only ('K'); key kept: no old tuple", () => {
    const f = load('update-key.hex');
    expect(tags(f)).toEqual(['begin', 'relation', 'insert', 'commit', 'begin', 'update', 'commit', 'begin', 'update', 'commit']);
    [0, 4, 7].forEach((begin, i) => expectTransaction(f, begin, [3, 6, 9][i]));
    const document = f.relationOid('document');
    expect(as(f.messages[1], 'relation').relation).toEqual({
      id: document,
      schema: 'fixture',
      table: 'document',
      replicaIdentity: 'default',
      columns: [
        { isKey: true, name: 'id', typeOid: 23, typeModifier: -1 },
        { isKey: false, name: 'title', typeOid: 25, typeModifier: -1 },
        { isKey: false, name: 'body', typeOid: 25, typeModifier: -1 },
      ],
    });
    expect(as(f.messages[5], 'update')).toEqual({
      tag: 'update',
      relationId: document,
      keyOnly: true,
      oldTuple: ['10', null, null],
      newTuple: ['11', 'draft', 'short'],
    });
    expect(as(f.messages[8], 'update')).toEqual({ tag: 'update', relationId: document, keyOnly: false, oldTuple: null, newTuple: ['11', 'final', 'short'] });
  });

  it("unchanged TOAST: the insert carries the value, the update sends 'u' for it", () => {
    const f = load('toast.hex');
    expect(tags(f)).toEqual(['begin', 'relation', 'insert', 'commit', 'begin', 'update', 'commit']);
    expectTransaction(f, 0, 3);
    expectTransaction(f, 4, 6);
    const value = Array.from({ length: 2_100 }, (_, i) => String.fromCharCode(97 + ((i * 7) % 26))).join('');
    expect(as(f.messages[2], 'insert').newTuple).toEqual(['20', 'big', value]);
    const update = as(f.messages[5], 'update');
    expect(update).toEqual({
      tag: 'update',
      relationId: f.relationOid('document'),
      keyOnly: false,
      oldTuple: null,
      newTuple: ['20', 'bigger', UNCHANGED_TOAST],
    });
    expect(update.newTuple[2]).toBe(UNCHANGED_TOAST);
  });

  it("delete: the old row ('O') on a FULL table, the old key ('K') otherwise, in one transaction", () => {
    const f = load('delete.hex');
    expect(tags(f)).toEqual(['begin', 'type', 'relation', 'delete', 'relation', 'delete', 'commit']);
    expectTransaction(f, 0, 6);
    expect(as(f.messages[3], 'delete')).toEqual({
      tag: 'delete',
      relationId: f.relationOid('contact'),
      keyOnly: false,
      oldTuple: ['2', 'Bob', null, null, null, null, null],
    });
    expect(as(f.messages[5], 'delete')).toEqual({ tag: 'delete', relationId: f.relationOid('document'), keyOnly: true, oldTuple: ['11', null, null] });
    // Changes carry their own LSN; later changes of the transaction come later in WAL.
    expect(f.messages[5].lsn).toBeGreaterThan(f.messages[3].lsn);
  });

  it('replica identity USING INDEX: the index column carries the key flag', () => {
    const f = load('index-identity.hex');
    expect(tags(f)).toEqual(['begin', 'relation', 'insert', 'commit', 'begin', 'update', 'commit']);
    expectTransaction(f, 0, 3);
    expectTransaction(f, 4, 6);
    const relation = as(f.messages[1], 'relation').relation;
    expect(relation.replicaIdentity).toBe('index');
    expect(relation.columns.map((c) => [c.name, c.isKey])).toEqual([
      ['id', false],
      ['code', true],
      ['label', false],
    ]);
    expect(as(f.messages[5], 'update')).toMatchObject({ keyOnly: true, oldTuple: [null, 'x1', null], newTuple: ['1', 'x2', 'first'] });
  });

  it('truncate: both relations, CASCADE and RESTART IDENTITY flags', () => {
    const f = load('truncate.hex');
    expect(tags(f)).toEqual(['begin', 'relation', 'insert', 'commit', 'begin', 'relation', 'relation', 'truncate', 'commit']);
    expectTransaction(f, 4, 8);
    expect(as(f.messages[7], 'truncate')).toEqual({
      tag: 'truncate',
      relationIds: [f.relationOid('child'), f.relationOid('counter')],
      cascade: true,
      restartIdentity: true,
    });
  });

  it('logical messages: transactional inside Begin/Commit, non-transactional on their own (xid 0)', () => {
    const f = load('message.hex');
    expect(tags(f)).toEqual(['begin', 'message', 'relation', 'insert', 'commit', 'message', 'message']);
    expectTransaction(f, 0, 4);
    const inside = as(f.messages[1], 'message');
    expect(inside).toMatchObject({ transactional: true, prefix: 'fixture_prefix', lsn: f.messages[1].lsn });
    expect(inside.content!.toString('utf8')).toBe('inside a transaction');
    const heartbeat = as(f.messages[5], 'message');
    expect(heartbeat).toMatchObject({ transactional: false, prefix: 'pg_webhook_bridge_heartbeat', lsn: f.messages[5].lsn });
    expect(heartbeat.content!.length).toBe(0);
    expect(f.messages[5].xid).toBe(0);
    const binary = as(f.messages[6], 'message');
    expect(binary).toMatchObject({ transactional: false, prefix: 'binary', lsn: f.messages[6].lsn });
    expect([...binary.content!]).toEqual([0x00, 0xff, 0x10]);
  });

  it('the message content is a copy: reusing the frame buffer does not change it', () => {
    const bytes = Buffer.from(load('message.hex').messages[6].bytes);
    const message = parsePgoutputMessage(bytes) as Extract<PgoutputMessage, { tag: 'message' }>;
    bytes.fill(0);
    expect([...message.content!]).toEqual([0x00, 0xff, 0x10]);
  });

  it('a message longer than the value limit is not copied: its length only', () => {
    const bytes = load('message.hex').messages[6].bytes;
    expect(parsePgoutputMessage(bytes, { maxValueBytes: 2 })).toMatchObject({ tag: 'message', prefix: 'binary', content: null, contentLength: 3 });
    expect(parsePgoutputMessage(bytes, { maxValueBytes: 3 })).toMatchObject({ content: Buffer.from([0x00, 0xff, 0x10]), contentLength: 3 });
  });

  it("origin: the Origin message follows Begin with the origin's name and commit LSN", () => {
    const f = load('origin.hex');
    expect(tags(f)).toEqual(['begin', 'origin', 'relation', 'insert', 'commit']);
    expectTransaction(f, 0, 4);
    expect(as(f.messages[1], 'origin')).toEqual({ tag: 'origin', originLsn: parseLsn('0/ABCDEF0'), name: 'fixture_origin' });
  });
});

describe('pgoutput: damaged input raises DecodeError with a clear message', () => {
  const all = readdirSync(FIXTURE_DIR)
    .filter((f) => f.endsWith('.hex'))
    .flatMap((file) => load(file).messages.map((m, i) => ({ name: `${file}#${i} ${m.message.tag}`, bytes: m.bytes })));

  it('every captured message cut short at every length', () => {
    let checked = 0;
    for (const { name, bytes } of all) {
      // The long TOAST value: every 97th cut is plenty.
      const step = bytes.length > 500 ? 97 : 1;
      for (let cut = 0; cut < bytes.length; cut += step) {
        expect(() => parsePgoutputMessage(bytes.subarray(0, cut)), `${name} cut at ${cut}`).toThrow(DecodeError);
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(1_000);
  });

  it('names the message, the problem and the offset', () => {
    const insert = load('insert.hex').messages[3].bytes;
    expect(() => parsePgoutputMessage(insert.subarray(0, 7))).toThrow("pgoutput Insert ('I'): message truncated: 2 more bytes needed (offset 6 of 7 bytes)");
    expect(() => parsePgoutputMessage(Buffer.alloc(0))).toThrow('pgoutput: empty message');
    const relation = load('insert.hex').messages[2].bytes;
    expect(() => parsePgoutputMessage(relation.subarray(0, 12))).toThrow(
      "pgoutput Relation ('R'): message truncated: string without its terminating zero byte",
    );
  });

  it.each([
    ['unknown message type', 'Z', /unknown pgoutput message type 0x5a: the bridge speaks protocol version 1 only/],
    ['stream start (protocol 2)', 'S', /unknown pgoutput message type 0x53/],
    ['insert without N', 'I\x00\x00\x40\x09X', /Insert \('I'\): expected 'N' \(new tuple\), got 0x58/],
    ['update with a bad tuple marker', 'U\x00\x00\x40\x09X', /Update \('U'\): expected 'K', 'O' or 'N' \(new tuple\), got 0x58/],
    ['delete with N', 'D\x00\x00\x40\x09N', /Delete \('D'\): expected 'K' \(key\) or 'O' \(old tuple\), got 0x4e/],
    ['binary tuple value', 'I\x00\x00\x40\x09N\x00\x01b', /column 1: unsupported tuple value kind 0x62/],
    ['bad replica identity', 'R\x00\x00\x40\x09s\x00t\x00z\x00\x00', /unknown replica identity 0x7a/],
    ['trailing bytes', 'B' + '\x00'.repeat(20) + '\x01\x02', /Begin \('B'\): 2 unexpected trailing bytes/],
    ['huge column count', 'I\x00\x00\x40\x09N\xff\xff', /message truncated: 65535 more bytes needed/],
    ['huge truncate count', 'T\xff\xff\xff\xff\x00', /Truncate \('T'\): message truncated: 17179869180 more bytes needed/],
    ['huge value length', 'I\x00\x00\x40\x09N\x00\x01t\x7f\xff\xff\xff', /message truncated: 2147483647 more bytes needed/],
  ])('%s', (_name, text, message) => {
    const bytes = Buffer.from(text, 'latin1');
    expect(() => parsePgoutputMessage(bytes)).toThrow(DecodeError);
    expect(() => parsePgoutputMessage(bytes)).toThrow(message);
  });

  it('random bytes never raise anything but DecodeError', () => {
    // Deterministic xorshift, so a failure reproduces.
    let state = 0x2545f491;
    const next = (): number => {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      return state >>> 0;
    };
    const starts = [...'BCORYIUDTMZ'].map((c) => c.charCodeAt(0));
    for (let i = 0; i < 5_000; i++) {
      const bytes = Buffer.alloc(next() % 64);
      for (let j = 0; j < bytes.length; j++) bytes[j] = next() & 0xff;
      if (bytes.length > 0) bytes[0] = starts[next() % starts.length];
      try {
        parsePgoutputMessage(bytes);
      } catch (error) {
        expect(error, bytes.toString('hex')).toBeInstanceOf(DecodeError);
      }
    }
  });
});

describe('Decoder on the captured messages', () => {
  /** Runs fixture files through one Decoder, as one stream would; returns what it emits and logs. */
  async function decodeFixtures(...files: string[]): Promise<{ items: DecodedItem[]; warnings: Array<Record<string, unknown>> }> {
    const fixture = load(files[0]);
    const mood = fixture.typeOid('mood');
    const warnings: Array<Record<string, unknown>> = [];
    const log = { warn: (fields: Record<string, unknown>, msg: string) => warnings.push({ ...fields, msg }) } as unknown as Logger;
    const catalog: DecoderCatalog = {
      ensureTypes: async () => undefined,
      lookupType: (oid) => (oid === mood ? { oid, name: 'mood', kind: 'enum', elementOid: 0, baseOid: 0, delimiter: ',' } : undefined),
      primaryKey: async (relationId) => (relationId === fixture.relationOid('tagged') ? [] : ['id']),
    };
    const decoder = new Decoder(catalog, log);
    const items: DecodedItem[] = [];
    for (const file of files) {
      for (const m of load(file).messages) {
        const item = await decoder.decode(m.message, formatLsn(m.lsn));
        if (item) items.push(item);
      }
    }
    return { items, warnings };
  }
  const changes = (items: DecodedItem[]): RowChange[] => items.flatMap((i) => (i.type === 'change' ? [i.change] : []));

  it('converts values and numbers changes by their position in the transaction', async () => {
    const { items } = await decodeFixtures('insert.hex', 'update-full.hex');
    expect(items.map((i) => i.type)).toEqual(['begin', 'change', 'commit', 'begin', 'change', 'commit', 'begin', 'change', 'commit']);
    const [alice, bob, update] = changes(items);
    const aliceRow = {
      id: 1,
      name: 'Alice',
      email: 'alice@example.com',
      score: '12.50',
      mood: 'happy',
      tags: ['a"b', 'c,d', null, ''],
      seen_at: '2024-03-10T06:49:56.789Z',
    };
    expect(alice).toMatchObject({
      kind: 'insert',
      schema: 'fixture',
      table: 'contact',
      newRow: aliceRow,
      oldRow: null,
      keyColumns: ['id'],
      changedColumns: null,
      unavailableColumns: [],
      indexInTransaction: 0,
    });
    expect(alice.commitLsn).toBe((items[0] as Extract<DecodedItem, { type: 'begin' }>).commitLsn);
    expect(bob.newRow).toEqual({ id: 2, name: 'Bob', email: null, score: null, mood: null, tags: null, seen_at: null });
    expect(update).toMatchObject({
      kind: 'update',
      oldRow: aliceRow,
      newRow: { ...aliceRow, email: 'alice@new.example', mood: 'so-so' },
      changedColumns: ['email', 'mood'],
    });
  });

  it('an unchanged TOAST value without an old image is listed as unavailable, never nulled', async () => {
    const { items, warnings } = await decodeFixtures('toast.hex', 'update-key.hex');
    const [insert, update, , keyChange, titleChange] = changes(items);
    expect((insert.newRow!.body as string).length).toBe(2_100);
    expect(update).toMatchObject({ kind: 'update', newRow: { id: 20, title: 'bigger' }, oldRow: null, changedColumns: null, unavailableColumns: ['body'] });
    expect('body' in update.newRow!).toBe(false);
    // A key-only old image tells nothing about other columns: no changedColumns, no TOAST source.
    expect(keyChange).toMatchObject({ newRow: { id: 11, title: 'draft', body: 'short' }, oldRow: null, changedColumns: null, unavailableColumns: [] });
    expect(titleChange).toMatchObject({ newRow: { id: 11, title: 'final', body: 'short' }, changedColumns: null });
    // Logged once for the table, however many Relation messages describe it.
    expect(warnings.filter((w) => /not REPLICA IDENTITY FULL/.test(String(w.msg))).map((w) => w.table)).toEqual(['fixture.document']);
  });

  it("a DELETE's key-only old image gives the key, and lists the other columns as unavailable", async () => {
    const { items } = await decodeFixtures('delete.hex');
    const [full, keyOnly] = changes(items);
    expect(full).toMatchObject({ kind: 'delete', oldRow: { id: 2, name: 'Bob', email: null }, newRow: null, unavailableColumns: [], indexInTransaction: 0 });
    expect(keyOnly).toMatchObject({ kind: 'delete', oldRow: { id: 11 }, unavailableColumns: ['title', 'body'], indexInTransaction: 1 });
    expect(keyOnly.oldRow).toEqual({ id: 11 });
  });

  it('a table without primary key or id column uses its replica identity index as the record key', async () => {
    const { items } = await decodeFixtures('index-identity.hex');
    expect(changes(items).map((c) => c.keyColumns)).toEqual([['code'], ['code']]);
  });

  it('heartbeats become heartbeat items; other logical messages and TRUNCATE emit nothing, TRUNCATE warns', async () => {
    const { items, warnings } = await decodeFixtures('message.hex', 'truncate.hex');
    const heartbeat = load('message.hex').messages[5];
    expect(items.filter((i) => i.type === 'heartbeat')).toEqual([{ type: 'heartbeat', lsn: heartbeat.lsn }]);
    expect(changes(items).map((c) => c.table)).toEqual(['counter', 'counter']);
    const truncate = warnings.find((w) => /TRUNCATE/.test(String(w.msg)));
    expect(truncate?.tables).toEqual(['fixture.child', 'fixture.counter']);
  });

  it('a change before its Relation message is a DecodeError naming the LSN', async () => {
    const decoder = new Decoder({ ensureTypes: async () => undefined, lookupType: () => undefined, primaryKey: async () => [] }, {
      warn: () => undefined,
    } as unknown as Logger);
    const [begin, , , insert] = load('insert.hex').messages;
    await decoder.decode(begin.message, formatLsn(begin.lsn));
    await expect(decoder.decode(insert.message, formatLsn(insert.lsn))).rejects.toThrow(
      new RegExp(`arrived before its Relation message \\(at LSN ${formatLsn(insert.lsn)}\\)`),
    );
  });
});
