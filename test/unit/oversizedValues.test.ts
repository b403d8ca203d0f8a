import { describe, expect, it } from 'vitest';
import { Decoder } from '../../src/decode/decoder.js';
import { parsePgoutputMessage } from '../../src/decode/pgoutput.js';
import { OversizedValue, UNCHANGED_TOAST, type PgoutputMessage, type RowChange } from '../../src/decode/types.js';
import type { Logger } from '../../src/log.js';
import { compileObjectMapping } from '../../src/route/objectMapping.js';
import { buildEvent } from '../../src/route/router.js';

/**
 * Values larger than the reader's limit are kept as their length only, from the bytes of the frame:
 * Insert ('I'), Update ('U') with an old image ('O'), Delete ('D'), built by hand field by field.
 */

const RELATION_ID = 16_400;
const TEXT_OID = 25;
const LIMIT = 64;

type Column = null | 'u' | string | Buffer;

/** TupleData: Int16 count, then 'n' | 'u' | 't' Int32 length + bytes. */
function tuple(columns: Column[]): Buffer {
  const parts: Buffer[] = [u16(columns.length)];
  for (const c of columns) {
    if (c === null) parts.push(Buffer.from('n'));
    else if (c === 'u') parts.push(Buffer.from('u'));
    else {
      const bytes = typeof c === 'string' ? Buffer.from(c) : c;
      parts.push(Buffer.from('t'), u32(bytes.length), bytes);
    }
  }
  return Buffer.concat(parts);
}

const u16 = (n: number) => Buffer.from([n >> 8, n & 0xff]);
function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

const insert = (columns: Column[]) => Buffer.concat([Buffer.from('I'), u32(RELATION_ID), Buffer.from('N'), tuple(columns)]);
const update = (old: Column[], next: Column[]) =>
  Buffer.concat([Buffer.from('U'), u32(RELATION_ID), Buffer.from('O'), tuple(old), Buffer.from('N'), tuple(next)]);
const del = (old: Column[]) => Buffer.concat([Buffer.from('D'), u32(RELATION_ID), Buffer.from('O'), tuple(old)]);

function parse<T extends PgoutputMessage['tag']>(bytes: Buffer, tag: T): Extract<PgoutputMessage, { tag: T }> {
  const message = parsePgoutputMessage(bytes, { maxValueBytes: LIMIT });
  expect(message.tag).toBe(tag);
  return message as Extract<PgoutputMessage, { tag: T }>;
}

const big = (fill: string, length = LIMIT + 1) => Buffer.alloc(length, fill);

describe('pgoutput reader: oversized values', () => {
  it('keeps a value longer than the limit as its byte length; the others as text', () => {
    const { newTuple } = parse(insert(['k1', big('x', 5_000), null, 'small']), 'insert');
    expect(newTuple[0]).toBe('k1');
    expect(newTuple[1]).toBeInstanceOf(OversizedValue);
    expect((newTuple[1] as OversizedValue).byteLength).toBe(5_000);
    expect(newTuple.slice(2)).toEqual([null, 'small']);
  });

  it('counts bytes, not characters: a multi-byte value at the limit in characters is over it in bytes', () => {
    const value = 'é'.repeat(LIMIT / 2 + 1); // LIMIT + 2 bytes
    const { newTuple } = parse(insert(['k1', value]), 'insert');
    expect(newTuple[1]).toEqual(new OversizedValue(LIMIT + 2));
    expect(parse(insert(['k1', 'é'.repeat(LIMIT / 2)]), 'insert').newTuple[1]).toBe('é'.repeat(LIMIT / 2));
  });

  it('bounds the text of a whole tuple: values over 1 KiB past the budget become oversized, small ones stay text', () => {
    const options = { maxValueBytes: 3_100 };
    const kb = (c: string) => Buffer.alloc(1_500, c);
    // a + key + b = 3,003 bytes fit; c would make 4,503; 'tail' is small.
    const message = parsePgoutputMessage(insert([kb('a'), 'key', kb('b'), kb('c'), 'tail']), options) as Extract<PgoutputMessage, { tag: 'insert' }>;
    expect(message.newTuple.map((v) => (v instanceof OversizedValue ? v.byteLength : typeof v === 'string' ? v.length : v))).toEqual([
      1_500, 3, 1_500, 1_500, 4,
    ]);
    expect(message.newTuple.map((v) => v instanceof OversizedValue)).toEqual([false, false, false, true, false]);
  });

  it('an update whose oversized column is byte for byte the same shares one marker: it reads as unchanged', () => {
    const message = parse(update(['k1', big('x'), 'old title'], ['k1', big('x'), 'new title']), 'update');
    expect(message.newTuple[1]).toBeInstanceOf(OversizedValue);
    expect(message.newTuple[1]).toBe(message.oldTuple![1]);
  });

  it('an update whose oversized column differs (same length, different bytes) keeps two markers', () => {
    const before = big('x');
    const after = Buffer.from(before);
    after[LIMIT] = 0x79; // 'y' in the last byte
    const message = parse(update(['k1', before], ['k1', after]), 'update');
    expect(message.newTuple[1]).not.toBe(message.oldTuple![1]);
    expect(message.newTuple[1]).toEqual(new OversizedValue(LIMIT + 1));
  });

  it('text on one side and oversized on the other (different budgets) are compared by bytes too', () => {
    const options = { maxValueBytes: 3_000 };
    const a = Buffer.alloc(2_000, 'a');
    const b = Buffer.alloc(2_000, 'b');
    // Old image: a then b (b is past the budget). New image: a unchanged (TOAST), b as text.
    const message = parsePgoutputMessage(update(['k1', a, b], ['k1', 'u', b]), options) as Extract<PgoutputMessage, { tag: 'update' }>;
    expect(message.oldTuple![2]).toBeInstanceOf(OversizedValue);
    expect(message.newTuple[2]).toBe(message.oldTuple![2]);
    expect(message.newTuple[1]).toBe(UNCHANGED_TOAST);
  });

  it('a delete keeps its old image the same way', () => {
    expect(parse(del(['k1', big('z', 100)]), 'delete').oldTuple).toEqual(['k1', new OversizedValue(100)]);
  });

  it('without a limit every value is text (the fixtures and tools parse that way)', () => {
    expect(parsePgoutputMessage(insert(['k1', big('x', 5_000)])).tag).toBe('insert');
    expect((parsePgoutputMessage(insert(['k1', big('x', 5_000)])) as Extract<PgoutputMessage, { tag: 'insert' }>).newTuple[1]).toBe('x'.repeat(5_000));
  });
});

describe('decoder and router with oversized values', () => {
  const log = { warn: () => undefined } as unknown as Logger;
  const options = { resolveObject: compileObjectMapping({ 'public.note': 'note' }), softDeleteColumn: 'deletedAt', camelCase: false, maxPayloadBytes: 1_000 };
  const relation: PgoutputMessage = {
    tag: 'relation',
    relation: {
      id: RELATION_ID,
      schema: 'public',
      table: 'note',
      replicaIdentity: 'full',
      columns: ['id', 'body', 'title'].map((name) => ({ name, typeOid: TEXT_OID, typeModifier: -1, isKey: true })),
    },
  };

  async function changes(...frames: Buffer[]): Promise<RowChange[]> {
    const decoder = new Decoder({ ensureTypes: async () => undefined, lookupType: () => undefined, primaryKey: async () => ['id'] }, log);
    await decoder.decode(relation, '0/1');
    await decoder.decode({ tag: 'begin', finalLsn: 0x100n, commitTimeMicros: 0n, xid: 7 }, '0/1');
    const out: RowChange[] = [];
    for (const frame of frames) {
      const item = await decoder.decode(parsePgoutputMessage(frame, { maxValueBytes: LIMIT }), '0/1');
      if (item?.type === 'change') out.push(item.change);
    }
    return out;
  }

  it('an insert with an oversized value is sent truncated: primary key only, without serialising the value', async () => {
    const [change] = await changes(insert(['k1', big('x'), 'title']));
    const event = buildEvent(change, options)!;
    expect(JSON.parse(event.body)).toEqual({
      event: 'note.created',
      data: { id: 'k1', truncated: true },
      timestamp: '2000-01-01T00:00:00.000Z',
      id: event.id,
      truncated: true,
    });
  });

  it('an unchanged TOAST value taken from an oversized old image keeps the new row truncated; updatedFields stay exact', async () => {
    const [renamed, same, rewritten] = await changes(
      update(['k1', big('x'), 'a'], ['k1', 'u', 'b']),
      update(['k1', big('x'), 'b'], ['k1', big('x'), 'b']),
      update(['k1', big('x'), 'b'], ['k1', big('y'), 'b']),
    );
    expect(renamed.newRow!.body).toBeInstanceOf(OversizedValue);
    expect(renamed.changedColumns).toEqual(['title']);
    expect(JSON.parse(buildEvent(renamed, options)!.body).data).toEqual({ id: 'k1', truncated: true });
    // The same 65 bytes written again: no column changed, no event.
    expect(same.changedColumns).toEqual([]);
    expect(buildEvent(same, options)).toBeNull();
    expect(rewritten.changedColumns).toEqual(['body']);
  });

  it('an oversized primary key is described in the truncated body, never printed', async () => {
    const [change] = await changes(insert([big('k', 200), 'body', 'title']));
    const event = buildEvent(change, options)!;
    expect(JSON.parse(event.body).data).toEqual({ id: { truncated: true, byteLength: 200 }, truncated: true });
    expect(event.body.length).toBeLessThan(300);
  });
});
