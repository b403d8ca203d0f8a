import { describe, expect, it } from 'vitest';
import type { RowChange } from '../../src/decode/types.js';
import { compileObjectMapping } from '../../src/route/objectMapping.js';
import { buildEvent, eventIdFor, SubscriberIndex, toCamelCase } from '../../src/route/router.js';
import { parseSubscriberRow, subscriberMatches } from '../../src/route/subscribers.js';
import type { Subscriber } from '../../src/route/types.js';

const options = {
  resolveObject: compileObjectMapping({ 'public.person': 'person', 'public.company': 'company', 'crm.deal': 'opportunity', 'workspace_*.person': 'person' }),
  softDeleteColumn: 'deletedAt',
  camelCase: false,
  maxPayloadBytes: 1_048_576,
};

function change(overrides: Partial<RowChange>): RowChange {
  return {
    kind: 'insert',
    schema: 'public',
    table: 'person',
    newRow: { id: 'p1', firstName: 'Alice', deletedAt: null },
    oldRow: null,
    columnNames: ['id', 'firstName', 'deletedAt'],
    keyColumns: ['id'],
    changedColumns: null,
    unavailableColumns: [],
    commitLsn: 0x16b3a28n,
    indexInTransaction: 3,
    commitTime: new Date('2026-02-10T15:30:50.123Z'),
    ...overrides,
  };
}

function subscriber(id: string, operations: string[]): Subscriber {
  const parsed = parseSubscriberRow({ id, targetUrl: 'https://example.com/hook', operations, secret: 's' });
  if (!parsed.ok) throw new Error(parsed.problem);
  return parsed.subscriber;
}

describe('buildEvent', () => {
  it('serialises the contract payload once, keys in contract order', () => {
    const event = buildEvent(change({}), options)!;
    expect(event.name).toBe('person.created');
    expect(event.id).toBe('00000000016B3A28-00000003');
    expect(event.recordKey).toBe('person:p1');
    expect(event.body).toBe(
      '{"event":"person.created","data":{"id":"p1","firstName":"Alice","deletedAt":null},"timestamp":"2026-02-10T15:30:50.123Z","id":"00000000016B3A28-00000003"}',
    );
  });

  it('the same position always gives the same id', () => {
    expect(eventIdFor({ commitLsn: 0x16b3a28n, indexInTransaction: 3 })).toBe(buildEvent(change({}), options)!.id);
    expect(eventIdFor({ commitLsn: 0x16b3a28n, indexInTransaction: 4 })).not.toBe(buildEvent(change({}), options)!.id);
  });

  it('maps update, soft delete, restore and destroy', () => {
    const before = { id: 'p1', firstName: 'Alice', deletedAt: null };
    const updated = buildEvent(change({ kind: 'update', oldRow: before, newRow: { ...before, firstName: 'Bob' }, changedColumns: ['firstName'] }), options)!;
    expect(updated.name).toBe('person.updated');
    expect(JSON.parse(updated.body).updatedFields).toEqual(['firstName']);
    const deleted = buildEvent(
      change({ kind: 'update', oldRow: before, newRow: { ...before, deletedAt: '2026-01-01T00:00:00.000Z' }, changedColumns: ['deletedAt'] }),
      options,
    )!;
    expect(deleted.name).toBe('person.deleted');
    const restored = buildEvent(change({ kind: 'update', oldRow: { ...before, deletedAt: 'x' }, newRow: before, changedColumns: ['deletedAt'] }), options)!;
    expect(restored.name).toBe('person.restored');
    const destroyed = buildEvent(change({ kind: 'delete', oldRow: before, newRow: null }), options)!;
    expect(destroyed.name).toBe('person.destroyed');
    expect(JSON.parse(destroyed.body).data).toEqual(before);
  });

  it('a DELETE on a table without the soft-delete column is .deleted', () => {
    const event = buildEvent(change({ kind: 'delete', schema: 'crm', table: 'deal', columnNames: ['id'], oldRow: { id: 'd1' }, newRow: null }), options)!;
    expect(event.name).toBe('opportunity.deleted');
  });

  it('an UPDATE that changed nothing emits nothing; unwatched tables emit nothing', () => {
    const row = { id: 'p1', firstName: 'Alice', deletedAt: null };
    expect(buildEvent(change({ kind: 'update', oldRow: row, newRow: row, changedColumns: [] }), options)).toBeNull();
    expect(buildEvent(change({ table: 'secret_table' }), options)).toBeNull();
  });

  it('schema patterns and camelCase', () => {
    const event = buildEvent(change({ schema: 'workspace_abc123', newRow: { id: 'p1', first_name: 'A' }, columnNames: ['id', 'first_name'] }), {
      ...options,
      camelCase: true,
    })!;
    expect(event.name).toBe('person.created');
    expect(JSON.parse(event.body).data).toEqual({ id: 'p1', firstName: 'A' });
    expect(toCamelCase('annual_recurring__revenue')).toBe('annualRecurringRevenue');
  });

  it('camelCase that turns a column into a prototype name ("to_string") still yields that key', () => {
    const event = buildEvent(change({ newRow: { id: 'p1', to_string: 'x' }, columnNames: ['id', 'to_string'] }), { ...options, camelCase: true })!;
    expect(event.body).toContain('"toString":"x"');
    expect(JSON.parse(event.body).data).toEqual({ id: 'p1', toString: 'x' });
  });

  it('a payload over the limit is sent in its truncated form with the key', () => {
    const big = 'x'.repeat(2_000);
    const event = buildEvent(change({ newRow: { id: 'p1', firstName: big, deletedAt: null } }), { ...options, maxPayloadBytes: 1_000 })!;
    expect(JSON.parse(event.body)).toEqual({
      event: 'person.created',
      data: { id: 'p1', truncated: true },
      timestamp: '2026-02-10T15:30:50.123Z',
      id: event.id,
      truncated: true,
    });
  });

  it('lists unchanged TOAST values Postgres did not send instead of faking them', () => {
    const event = buildEvent(change({ kind: 'update', newRow: { id: 'p1' }, oldRow: null, unavailableColumns: ['bio'] }), options)!;
    expect(JSON.parse(event.body).unavailableFields).toEqual(['bio']);
  });
});

describe('operations filter', () => {
  const cases: Array<[string[], string, string, boolean]> = [
    [['*.*'], 'person', 'created', true],
    [['person.*'], 'person', 'deleted', true],
    [['person.*'], 'company', 'created', false],
    [['*.created'], 'note', 'created', true],
    [['*.created'], 'note', 'updated', false],
    [['note.updated'], 'note', 'updated', true],
    [['note.updated'], 'task', 'updated', false],
    [['task.deleted', 'company.*'], 'company', 'updated', true],
    [['task.deleted', 'company.*'], 'task', 'created', false],
  ];
  it.each(cases)('%j receives %s.%s: %s', (operations, object, action, expected) => {
    expect(subscriberMatches(subscriber('w', operations), object, action)).toBe(expected);
  });

  it('one delivery per webhook however many entries match', () => {
    const index = new SubscriberIndex([subscriber('a', ['*.*', 'person.*', 'person.created']), subscriber('b', ['company.*'])]);
    expect(index.forEvent('person', 'created').map((s) => s.id)).toEqual(['a']);
  });
});

describe('parseSubscriberRow rejects bad rows with a reason', () => {
  const base = { id: 'w1', targetUrl: 'https://example.com/h', operations: ['*.*'], secret: 's' };
  it.each([
    [{ targetUrl: 'not a url' }, /not a valid URL/],
    [{ targetUrl: 'javascript:alert(1)' }, /not http or https/],
    [{ targetUrl: 'ftp://example.com/x' }, /not http or https/],
    [{ targetUrl: `https://example.com/${'a'.repeat(10_000)}` }, /longer than/],
    [{ operations: [] }, /operations is empty/],
    [{ operations: null }, /operations is empty/],
    [{ secret: null }, /secret is NULL/],
    [{ secret: 'whsec_' }, /whsec_ secret: the text after whsec_ must be base64 of a 24 to 64 byte key \(it is empty\)/],
    [{ secret: 'whsec_a' }, /whsec_ secret: the text after whsec_ must be base64 of a 24 to 64 byte key \(it is not base64\)/],
    [{ secret: 'whsec_!!!!' }, /whsec_ secret: .*not base64/],
    [{ secret: `whsec_${Buffer.alloc(23, 1).toString('base64')}` }, /whsec_ secret: .*\(it decodes to 23 bytes\)/],
    [{ secret: `whsec_${Buffer.alloc(65, 1).toString('base64')}` }, /whsec_ secret: .*\(it decodes to 65 bytes\)/],
    // Buffer.from(_, 'base64') would silently drop the space, the dot and the stray padding.
    [{ secret: `whsec_${Buffer.alloc(32, 1).toString('base64').slice(0, 20)} ${Buffer.alloc(32, 1).toString('base64').slice(20)}` }, /not base64/],
    [{ secret: `whsec_${Buffer.alloc(32, 1).toString('base64')}.` }, /not base64/],
    [{ secret: `whsec_${Buffer.alloc(32, 1).toString('base64')}==` }, /not base64/],
    [{ secret: 'x'.repeat(513) }, /secret is longer than 512 characters/],
    [{ targetUrl: 'https://user:pw@example.com/' }, /credentials/],
  ])('%j', (patch, reason) => {
    const parsed = parseSubscriberRow({ ...base, ...patch });
    expect(parsed.ok).toBe(false);
    if (!parsed.ok) {
      expect(parsed.problem).toMatch(reason);
      expect(parsed.id).toBe('w1');
    }
  });

  it('accepts whsec_ secrets of 24 to 64 bytes, padded or not', () => {
    for (const bytes of [24, 31, 32, 64]) {
      const b64 = Buffer.alloc(bytes, 9).toString('base64');
      expect(parseSubscriberRow({ ...base, secret: `whsec_${b64}` }).ok, `${bytes} bytes`).toBe(true);
      expect(parseSubscriberRow({ ...base, secret: `whsec_${b64.replace(/=+$/, '')}` }).ok, `${bytes} bytes unpadded`).toBe(true);
    }
    expect(parseSubscriberRow({ ...base, secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw' }).ok).toBe(true);
  });

  it('accepts an empty secret: such a webhook gets unsigned requests, as Twenty sends them', () => {
    const parsed = parseSubscriberRow({ ...base, secret: '' });
    expect(parsed).toMatchObject({ ok: true, subscriber: { secret: '' } });
  });

  it('ignores operations that are not object.action patterns and keeps the row', () => {
    const parsed = parseSubscriberRow({ ...base, operations: ['metadata.*.*', 'person.created', null, 'person', "x'; drop table y;--"] });
    expect(parsed.ok).toBe(true);
    if (!parsed.ok) return;
    expect([...parsed.subscriber.operationSet]).toEqual(['person.created']);
    expect(parsed.ignoredOperations).toEqual(['metadata.*.*', null, 'person', "x'; drop table y;--"]);
    expect(subscriberMatches(parsed.subscriber, 'person', 'created')).toBe(true);
    expect(subscriberMatches(parsed.subscriber, 'person', 'updated')).toBe(false);
    // Nothing usable left: valid, and it matches no event.
    const none = parseSubscriberRow({ ...base, operations: ['metadata.*.*'] });
    expect(none.ok).toBe(true);
    if (none.ok) expect(subscriberMatches(none.subscriber, 'person', 'created')).toBe(false);
  });

  it('accepts a unicode host', () => {
    expect(parseSubscriberRow({ ...base, targetUrl: 'https://bücher.example/hook' }).ok).toBe(true);
  });
});

describe('SubscriberIndex by workspace', () => {
  const hook = (id: string, operations: string[], workspaceId: string | null): Subscriber => ({ ...subscriber(id, operations), workspaceId });

  it("gives a workspace's change only to that workspace's webhooks, whatever their operations", () => {
    const index = new SubscriberIndex([hook('a', ['*.*'], 'ws-a'), hook('b', ['*.*', 'person.created'], 'ws-b'), hook('none', ['*.*'], null)]);
    expect(index.forEvent('person', 'created', 'ws-a').map((s) => s.id)).toEqual(['a']);
    expect(index.forEvent('person', 'created', 'ws-b').map((s) => s.id)).toEqual(['b']);
    expect(index.forEvent('person', 'created', 'ws-c')).toEqual([]);
    // Tables mode: the change belongs to no tenant.
    expect(index.forEvent('person', 'created').map((s) => s.id)).toEqual(['a', 'b', 'none']);
  });

  it('sends workflowRun.updated only to webhooks that name it, as Twenty does', () => {
    const index = new SubscriberIndex([hook('all', ['*.*'], 'ws'), hook('runs', ['workflowRun.*'], 'ws'), hook('exact', ['workflowRun.updated'], 'ws')]);
    expect(index.forEvent('workflowRun', 'updated', 'ws').map((s) => s.id)).toEqual(['exact']);
    expect(index.forEvent('workflowRun', 'created', 'ws').map((s) => s.id)).toEqual(['all', 'runs']);
  });
});
