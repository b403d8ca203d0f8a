import { describe, expect, it } from 'vitest';
import type { RowChange } from '../../src/decode/types.js';
import { absorb, canAbsorb } from '../../src/route/coalesce.js';
import { compileObjectMapping } from '../../src/route/objectMapping.js';
import { buildEvent } from '../../src/route/router.js';
import { parseSubscriberRow } from '../../src/route/subscribers.js';
import { buildTwentyEvent } from '../../src/route/twentyEvent.js';
import type { Subscriber, WebhookEvent } from '../../src/route/types.js';
import { compileOptions } from '../../src/route/webhookOptions.js';
import { Coalescer, MAX_HELD_RECORDS_PER_WEBHOOK, type CoalescingHold } from '../../src/webhooks/coalescer.js';
import { twentyPerson } from './fakes/twentyObjects.js';

const ROW = { id: 'p1', first_name: 'Ada', email: 'a@example.com', city: 'London' };

/** The n-th change of a run of changes to person p1 (or `id`), one transaction each. */
function change(n: number, kind: RowChange['kind'], row: Record<string, unknown>, changed: string[] | null = null): RowChange {
  return {
    kind,
    schema: 'public',
    table: 'person',
    oldRow: kind === 'insert' ? null : { ...ROW },
    newRow: kind === 'delete' ? null : row,
    columnNames: Object.keys(ROW),
    keyColumns: ['id'],
    changedColumns: changed,
    unavailableColumns: [],
    commitLsn: 0x1000n + BigInt(n),
    indexInTransaction: 0,
    commitTime: new Date(Date.UTC(2026, 1, 10, 15, 30, n)),
  };
}

function tablesEvent(c: RowChange): WebhookEvent {
  const event = buildEvent(c, {
    resolveObject: compileObjectMapping({ 'public.person': 'person' }),
    softDeleteColumn: '',
    camelCase: true,
    maxPayloadBytes: 1_048_576,
  });
  if (event === null) throw new Error('no event');
  return event;
}

const PERSON = twentyPerson({ id: 'UUID', name: 'FULL_NAME', jobTitle: 'TEXT', city: 'TEXT' });
const TWENTY_ROW = { id: 'a0000000-0000-4000-8000-000000000001', nameFirstName: 'Ada', nameLastName: 'Lovelace', jobTitle: 'Engineer', city: 'London' };

function twentyEvent(n: number, kind: RowChange['kind'], row: Record<string, unknown>, oldRow: Record<string, unknown> = TWENTY_ROW): WebhookEvent {
  const c: RowChange = { ...change(n, kind, row), schema: 'workspace_x', oldRow: kind === 'insert' ? null : oldRow, columnNames: Object.keys(TWENTY_ROW) };
  const event = buildTwentyEvent(c, PERSON, { format: 'twenty', maxPayloadBytes: 1_048_576 });
  if (event === null) throw new Error('no event');
  return event;
}

function subscriber(coalesceSeconds: number | null, id = '11111111-1111-4111-8111-111111111111'): Subscriber {
  const parsed = parseSubscriberRow({ id, targetUrl: 'https://example.com/hook', operations: ['*.*'], secret: 's' });
  if (!parsed.ok) throw new Error(parsed.problem);
  const options = compileOptions({ onFields: null, filter: null, includeColumns: null, excludeColumns: null, coalesceSeconds });
  return { ...parsed.subscriber, options };
}

describe('absorb', () => {
  it('folds updates into one: final row, union of changed fields in first-changed order, id and date of the last', () => {
    const first = tablesEvent(change(1, 'update', { ...ROW, email: 'b@example.com' }, ['email']));
    const second = tablesEvent(change(2, 'update', { ...ROW, email: 'b@example.com', city: 'Paris' }, ['city']));
    const third = tablesEvent(change(3, 'update', { ...ROW, email: 'c@example.com', city: 'Paris' }, ['email']));
    expect(canAbsorb(first, second)).toBe(true);
    const merged = absorb(absorb(first, second), third);
    expect(merged).toMatchObject({ id: third.id, name: 'person.updated', action: 'updated', commitLsn: third.commitLsn, recordKey: first.recordKey });
    expect(JSON.parse(merged.body)).toEqual({
      event: 'person.updated',
      data: { id: 'p1', firstName: 'Ada', email: 'c@example.com', city: 'Paris' },
      timestamp: '2026-02-10T15:30:03.000Z',
      id: third.id,
      updatedFields: ['email', 'city'],
    });
    // The body of a single event has the same key order: one serialisation for both.
    expect(Object.keys(JSON.parse(merged.body))).toEqual(Object.keys(JSON.parse(third.body)));
  });

  it('keeps a created a created, with the final row and no updatedFields', () => {
    const created = tablesEvent(change(1, 'insert', ROW));
    const updated = tablesEvent(change(2, 'update', { ...ROW, city: 'Paris' }, ['city']));
    const merged = absorb(created, updated);
    expect(merged).toMatchObject({ id: updated.id, name: 'person.created', action: 'created' });
    const body = JSON.parse(merged.body) as Record<string, unknown>;
    expect(body).toEqual({
      event: 'person.created',
      data: { id: 'p1', firstName: 'Ada', email: 'a@example.com', city: 'Paris' },
      timestamp: '2026-02-10T15:30:02.000Z',
      id: updated.id,
    });
  });

  it('leaves out updatedFields when an update did not say what changed (no old row)', () => {
    const first = tablesEvent(change(1, 'update', { ...ROW, city: 'Paris' }, ['city']));
    const blind = tablesEvent(change(2, 'update', { ...ROW, city: 'Rome' }, null));
    expect(JSON.parse(absorb(first, blind).body)).not.toHaveProperty('updatedFields');
  });

  it('makes Twenty bodies per webhook, keys in Twenty order, bytes as JSON.stringify(JSON.parse(body))', () => {
    const first = twentyEvent(1, 'update', { ...TWENTY_ROW, jobTitle: 'CTO' });
    const second = twentyEvent(2, 'update', { ...TWENTY_ROW, jobTitle: 'CTO', city: 'Paris' }, { ...TWENTY_ROW, jobTitle: 'CTO' });
    const merged = absorb(first, second);
    const hook = subscriber(2);
    expect(merged.bodyFor).not.toBeNull();
    const text = merged.bodyFor!(hook);
    const body = JSON.parse(text) as Record<string, unknown>;
    expect(JSON.stringify(body)).toBe(text);
    expect(Object.keys(body)).toEqual(Object.keys(JSON.parse(second.bodyFor!(hook)) as object));
    expect(body).toMatchObject({
      targetUrl: hook.targetUrl,
      webhookId: hook.id,
      eventName: 'person.updated',
      eventDate: '2026-02-10T15:30:02.000Z',
      updatedFields: ['jobTitle', 'city'],
    });
    expect(body.record).toMatchObject({ jobTitle: 'CTO', city: 'Paris', name: { firstName: 'Ada', lastName: 'Lovelace' } });
  });

  it('absorbs only updates into a held created or updated of the same record', () => {
    const created = tablesEvent(change(1, 'insert', ROW));
    const updated = tablesEvent(change(2, 'update', { ...ROW, city: 'Paris' }, ['city']));
    const deleted = tablesEvent(change(3, 'delete', ROW));
    const other = tablesEvent({ ...change(4, 'update', { ...ROW, id: 'p2', city: 'Rome' }, ['city']) });
    expect(canAbsorb(created, updated)).toBe(true);
    expect(canAbsorb(updated, deleted)).toBe(false);
    expect(canAbsorb(deleted, updated)).toBe(false);
    expect(canAbsorb(updated, created)).toBe(false);
    expect(canAbsorb(updated, other)).toBe(false);
  });
});

class CountingHold implements CoalescingHold {
  outstanding = 0;
  hold(): void {
    this.outstanding++;
  }
  release(): void {
    this.outstanding--;
    if (this.outstanding < 0) throw new Error('released more than held');
  }
}

/** A Coalescer on a hand-driven clock; what it hands on is recorded, and the downstream takes a hold as a lane does. */
function setup() {
  let now = 1_000_000;
  const sent: Array<{ event: WebhookEvent; to: string[]; urls: string[]; hold: CountingHold }> = [];
  const coalesced: Array<[string, number]> = [];
  const coalescer = new Coalescer<CountingHold>(
    (event, subscribers, hold) => {
      hold.hold();
      sent.push({ event, to: subscribers.map((s) => s.id), urls: subscribers.map((s) => s.targetUrl), hold });
      return subscribers.length;
    },
    { eventsCoalesced: (id, n) => coalesced.push([id, n]) },
    () => now,
  );
  return { coalescer, sent, coalesced, advance: (ms: number) => (now += ms) };
}

describe('Coalescer', () => {
  const hook = subscriber(2);
  const plain = subscriber(null, '22222222-2222-4222-8222-222222222222');

  it('holds a burst of updates until the window passes with no newer one, then hands on one event; holds follow', () => {
    const { coalescer, sent, coalesced, advance } = setup();
    const holds = [1, 2, 3, 4, 5].map(() => new CountingHold());
    for (let n = 1; n <= 5; n++) {
      expect(coalescer.route(tablesEvent(change(n, 'update', { ...ROW, city: `c${n}` }, ['city'])), [hook, plain], holds[n - 1]!)).toBe(2);
      advance(200);
    }
    // The webhook without a window got each one at once; the other none yet.
    expect(sent.map((s) => s.to)).toEqual([[plain.id], [plain.id], [plain.id], [plain.id], [plain.id]]);
    expect(holds.map((h) => h.outstanding)).toEqual([2, 2, 2, 2, 2]);
    advance(1_700);
    coalescer.sendDue();
    expect(sent).toHaveLength(5);
    advance(200);
    coalescer.sendDue();
    expect(sent).toHaveLength(6);
    const burst = sent[5]!;
    expect(burst.to).toEqual([hook.id]);
    expect(JSON.parse(burst.event.body)).toMatchObject({ data: { city: 'c5' }, updatedFields: ['city'] });
    expect(burst.event.id).toBe(tablesEvent(change(5, 'update', ROW, ['city'])).id);
    // Handed on under the first transaction's hold (still held downstream); the others are free.
    expect(burst.hold).toBe(holds[0]);
    expect(holds.map((h) => h.outstanding)).toEqual([2, 1, 1, 1, 1]);
    expect(coalesced).toEqual([
      [hook.id, 1],
      [hook.id, 1],
      [hook.id, 1],
      [hook.id, 1],
    ]);
    expect(coalescer.heldCount).toBe(0);
  });

  it('sends a burst at the latest ten windows after its first event, however busy the record', () => {
    const { coalescer, sent, advance } = setup();
    for (let n = 1; n <= 30; n++) {
      coalescer.route(tablesEvent(change(n, 'update', { ...ROW, city: `c${n}` }, ['city'])), [hook], new CountingHold());
      advance(1_000);
      coalescer.sendDue();
    }
    // 2 s windows, an update every second: the burst is cut at 20 s, then the next one begins.
    expect(sent.length).toBe(1);
    expect(JSON.parse(sent[0]!.event.body)).toMatchObject({ data: { city: 'c20' } });
  });

  it('a delete sends what is held for its record first, then itself; other records stay held', () => {
    const { coalescer, sent } = setup();
    coalescer.route(tablesEvent(change(1, 'insert', ROW)), [hook], new CountingHold());
    coalescer.route(tablesEvent(change(2, 'update', { ...ROW, city: 'Paris' }, ['city'])), [hook], new CountingHold());
    coalescer.route(tablesEvent(change(3, 'update', { ...ROW, id: 'p2', city: 'Rome' }, ['city'])), [hook], new CountingHold());
    const deleteHold = new CountingHold();
    coalescer.route(tablesEvent(change(4, 'delete', { ...ROW, city: 'Paris' })), [hook], deleteHold);
    expect(sent.map((s) => s.event.name)).toEqual(['person.created', 'person.deleted']);
    expect(JSON.parse(sent[0]!.event.body)).toMatchObject({ data: { city: 'Paris' } });
    expect(sent[1]!.hold).toBe(deleteHold);
    expect(coalescer.heldCount).toBe(1);
  });

  it('hands everything on when the webhook goes or stops coalescing, and at shutdown', () => {
    const { coalescer, sent } = setup();
    const other = subscriber(5, '33333333-3333-4333-8333-333333333333');
    coalescer.route(tablesEvent(change(1, 'update', { ...ROW, city: 'Paris' }, ['city'])), [hook, other], new CountingHold());
    coalescer.updateSubscribers([{ ...hook, options: null }, other]);
    expect(sent.map((s) => s.to)).toEqual([[hook.id]]);
    coalescer.route(tablesEvent(change(2, 'update', { ...ROW, id: 'p2' }, ['city'])), [other], new CountingHold());
    coalescer.sendEverything();
    expect(sent.map((s) => s.to)).toEqual([[hook.id], [other.id], [other.id]]);
    expect(coalescer.heldCount).toBe(0);
  });

  it('goes out to the webhook as it is when sent: a new URL applies to what is held', () => {
    const { coalescer, sent, advance } = setup();
    coalescer.route(tablesEvent(change(1, 'update', { ...ROW, city: 'Paris' }, ['city'])), [hook], new CountingHold());
    coalescer.updateSubscribers([{ ...hook, targetUrl: 'https://example.com/new' }]);
    advance(2_000);
    coalescer.sendDue();
    expect(sent.map((s) => s.urls)).toEqual([['https://example.com/new']]);
  });

  it('holds at most a bounded number of records per webhook: past it the oldest goes out early', () => {
    const { coalescer, sent } = setup();
    for (let n = 0; n <= MAX_HELD_RECORDS_PER_WEBHOOK; n++) {
      coalescer.route(tablesEvent(change(n, 'update', { ...ROW, id: `p${n}` }, ['city'])), [hook], new CountingHold());
    }
    expect(coalescer.heldCount).toBe(MAX_HELD_RECORDS_PER_WEBHOOK);
    expect(sent).toHaveLength(1);
    expect(JSON.parse(sent[0]!.event.body)).toMatchObject({ data: { id: 'p0' } });
  });
});
