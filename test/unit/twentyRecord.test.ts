import { describe, expect, it } from 'vitest';
import { OversizedValue, type RowChange } from '../../src/decode/types.js';
import { RawJson } from '../../src/decode/values.js';
import { buildCatalog } from '../../src/twenty/catalog.js';
import { buildTwentyEvent } from '../../src/route/twentyEvent.js';
import { compilePresentation, presentRecord, updatedFieldsOf } from '../../src/route/twentyRecord.js';
import type { Subscriber } from '../../src/route/types.js';
import type { TwentyField, TwentyObject } from '../../src/twenty/types.js';

const field = (name: string, type: string, joinColumn: string | null = null): TwentyField => ({ name, type, joinColumn });

const PERSON_FIELDS: TwentyField[] = [
  field('id', 'UUID'),
  field('name', 'FULL_NAME'),
  field('emails', 'EMAILS'),
  field('jobTitle', 'TEXT'),
  field('tags', 'MULTI_SELECT'),
  field('salary', 'CURRENCY'),
  field('createdBy', 'ACTOR'),
  field('company', 'RELATION', 'companyId'),
  field('notes', 'RELATION'),
  field('position', 'POSITION'),
  field('searchVector', 'TS_VECTOR'),
  field('createdAt', 'DATE_TIME'),
  field('updatedAt', 'DATE_TIME'),
  field('deletedAt', 'DATE_TIME'),
];

const PERSON: TwentyObject = {
  id: '20202020-0000-4000-8000-000000000001',
  workspaceId: '3be9d202-5461-4881-a6de-4c1f96e4b02d',
  nameSingular: 'person',
  isCustom: false,
  schema: 'workspace_3joxkr9ofo5hlxjan164egffx',
  table: 'person',
  fields: PERSON_FIELDS,
};

// Columns as the table has them (pg_attribute order), one of them without field metadata.
const COLUMNS = [
  'id',
  'nameFirstName',
  'nameLastName',
  'emailsPrimaryEmail',
  'emailsAdditionalEmails',
  'jobTitle',
  'tags',
  'salaryAmountMicros',
  'salaryCurrencyCode',
  'createdBySource',
  'createdByWorkspaceMemberId',
  'createdByName',
  'createdByContext',
  'companyId',
  'position',
  'searchVector',
  'createdAt',
  'updatedAt',
  'deletedAt',
  'legacyScore',
];

function row(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: 'a0000000-0000-4000-8000-000000000001',
    nameFirstName: 'Ada',
    nameLastName: null,
    emailsPrimaryEmail: 'ada@example.com',
    emailsAdditionalEmails: new RawJson('["ada@work.example", "a@b.example"]'),
    jobTitle: null,
    tags: null,
    salaryAmountMicros: '1500000000',
    salaryCurrencyCode: 'EUR',
    createdBySource: 'MANUAL',
    createdByWorkspaceMemberId: null,
    createdByName: 'Tim Apple',
    createdByContext: new RawJson('{"provider": null}'),
    companyId: 'c0000000-0000-4000-8000-000000000001',
    position: 1,
    searchVector: "'ada':1",
    createdAt: '2026-11-30T10:00:00.000Z',
    updatedAt: '2026-11-30T10:00:00.000Z',
    deletedAt: null,
    legacyScore: 7,
    ...overrides,
  };
}

describe('presentRecord', () => {
  const presentation = compilePresentation(PERSON, COLUMNS);

  it('folds composites, keeps join columns flat, drops columns without a field and applies null-equivalents', () => {
    const record = presentRecord(presentation, row());
    expect(Object.keys(record)).toEqual([
      'id',
      'name',
      'emails',
      'jobTitle',
      'tags',
      'salary',
      'createdBy',
      'companyId',
      'position',
      'searchVector',
      'createdAt',
      'updatedAt',
      'deletedAt',
    ]);
    expect(record.name).toEqual({ firstName: 'Ada', lastName: '' });
    expect(JSON.parse(JSON.stringify(record.emails))).toEqual({ primaryEmail: 'ada@example.com', additionalEmails: ['ada@work.example', 'a@b.example'] });
    expect(record.jobTitle).toBe('');
    expect(record.tags).toEqual([]);
    expect(record.salary).toEqual({ amountMicros: 1500000000, currencyCode: 'EUR' });
    expect(record.companyId).toBe('c0000000-0000-4000-8000-000000000001');
    expect(record).not.toHaveProperty('legacyScore');
    expect(record).not.toHaveProperty('notes');
    expect(record.searchVector).toBe("'ada':1");
  });

  it("shows composites whose every column is null with Twenty's empty values", () => {
    const record = presentRecord(
      presentation,
      row({ nameFirstName: null, emailsPrimaryEmail: null, emailsAdditionalEmails: null, salaryAmountMicros: null, salaryCurrencyCode: null }),
    );
    expect(record.name).toEqual({ firstName: '', lastName: '' });
    expect(record.emails).toEqual({ primaryEmail: '', additionalEmails: [] });
    expect(record.salary).toEqual({ amountMicros: null, currencyCode: null });
  });

  it('shows an actor with no source as written by hand', () => {
    const record = presentRecord(presentation, row({ createdBySource: null, createdByName: null, createdByContext: null }));
    expect(record.createdBy).toEqual({ source: 'MANUAL', workspaceMemberId: null, name: '', context: {} });
  });

  it('leaves out a column Postgres did not send rather than faking it', () => {
    const partial = row();
    delete partial.jobTitle;
    delete partial.nameLastName;
    const record = presentRecord(presentation, partial);
    expect(record).not.toHaveProperty('jobTitle');
    expect(record.name).toEqual({ firstName: 'Ada' });
  });

  it('treats an older single-column RICH_TEXT field as text and a newer one as a composite', () => {
    const note = { fields: [field('id', 'UUID'), field('body', 'RICH_TEXT'), field('bodyV2', 'RICH_TEXT')] };
    const p = compilePresentation(note, ['id', 'body', 'bodyV2Blocknote', 'bodyV2Markdown']);
    expect(presentRecord(p, { id: 'n', body: 'old', bodyV2Blocknote: null, bodyV2Markdown: null })).toEqual({
      id: 'n',
      body: 'old',
      bodyV2: { blocknote: null, markdown: '' },
    });
  });
});

describe('updatedFieldsOf', () => {
  const presentation = compilePresentation(PERSON, COLUMNS);
  const before = presentRecord(presentation, row());

  it('names changed fields, a relation as its field and join column, never updatedAt, position or the search vector', () => {
    const after = presentRecord(
      presentation,
      row({ nameLastName: 'Lovelace', companyId: null, updatedAt: '2026-11-30T11:00:00.000Z', position: 2, searchVector: "'ada':1 'lovelace':2" }),
    );
    expect(updatedFieldsOf(presentation, before, after)).toEqual(['name', 'company', 'companyId']);
  });

  it('finds nothing when only unreported fields changed', () => {
    const after = presentRecord(presentation, row({ updatedAt: '2026-11-30T11:00:00.000Z', searchVector: "'x':1", legacyScore: 8 }));
    expect(updatedFieldsOf(presentation, before, after)).toEqual([]);
  });

  it('compares composite values by content (jsonb parsed on both sides)', () => {
    const same = presentRecord(presentation, row({ emailsAdditionalEmails: new RawJson('["ada@work.example","a@b.example"]') }));
    expect(updatedFieldsOf(presentation, before, same)).toEqual([]);
  });
});

function change(overrides: Partial<RowChange>): RowChange {
  return {
    kind: 'insert',
    schema: PERSON.schema,
    table: 'person',
    newRow: row(),
    oldRow: null,
    columnNames: COLUMNS,
    keyColumns: ['id'],
    changedColumns: null,
    unavailableColumns: [],
    commitLsn: 0x16b3a28n,
    indexInTransaction: 2,
    commitTime: new Date('2026-11-30T10:00:00.123Z'),
    ...overrides,
  };
}

const subscriber = (id: string, targetUrl: string): Subscriber => ({
  id,
  targetUrl,
  operations: ['*.*'],
  operationSet: new Set(['*.*']),
  secret: '',
  workspaceId: PERSON.workspaceId,
});

describe('buildTwentyEvent', () => {
  const options = { format: 'twenty' as const, maxPayloadBytes: 1_048_576 };

  it("writes Twenty's body, keys in Twenty's order, per webhook, as JSON.stringify would", () => {
    const event = buildTwentyEvent(change({}), PERSON, options)!;
    expect(event.name).toBe('person.created');
    const body = event.bodyFor!(subscriber('w1', 'https://example.com/a?x="1"'));
    const parsed = JSON.parse(body);
    expect(JSON.stringify(parsed)).toBe(body);
    expect(Object.keys(parsed)).toEqual(['targetUrl', 'eventName', 'objectMetadata', 'workspaceId', 'webhookId', 'eventDate', 'record']);
    expect(parsed).toMatchObject({
      targetUrl: 'https://example.com/a?x="1"',
      eventName: 'person.created',
      objectMetadata: { id: PERSON.id, nameSingular: 'person' },
      workspaceId: PERSON.workspaceId,
      webhookId: 'w1',
      eventDate: '2026-11-30T10:00:00.123Z',
    });
    expect(Object.keys(parsed.objectMetadata)).toEqual(['id', 'nameSingular']);
    expect(parsed.record.createdBy).toEqual({ source: 'MANUAL', workspaceMemberId: null, name: 'Tim Apple', context: { provider: null } });
    const other = JSON.parse(event.bodyFor!(subscriber('w2', 'https://example.com/b')));
    expect(other.webhookId).toBe('w2');
    expect(other.record).toEqual(parsed.record);
  });

  it('sends updates with the changed field names and drops those that changed nothing Twenty reports', () => {
    const updated = buildTwentyEvent(
      change({ kind: 'update', oldRow: row(), newRow: row({ jobTitle: 'Engineer', updatedAt: '2026-11-30T11:00:00.000Z' }) }),
      PERSON,
      options,
    )!;
    const body = JSON.parse(updated.bodyFor!(subscriber('w1', 'https://example.com/')));
    expect(body.eventName).toBe('person.updated');
    expect(body.updatedFields).toEqual(['jobTitle']);
    expect(Object.keys(body).at(-1)).toBe('updatedFields');
    expect(buildTwentyEvent(change({ kind: 'update', oldRow: row(), newRow: row({ updatedAt: '2026-11-30T11:00:00.000Z' }) }), PERSON, options)).toBeNull();
  });

  it('soft delete, restore and hard delete', () => {
    const deleted = buildTwentyEvent(change({ kind: 'update', oldRow: row(), newRow: row({ deletedAt: '2026-11-30T12:00:00.000Z' }) }), PERSON, options)!;
    const deletedBody = JSON.parse(deleted.bodyFor!(subscriber('w1', 'https://example.com/')));
    expect(deletedBody.eventName).toBe('person.deleted');
    expect(deletedBody.record.deletedAt).toBe('2026-11-30T12:00:00.000Z');
    expect(deletedBody.updatedFields).toEqual(['deletedAt']);
    const restored = buildTwentyEvent(change({ kind: 'update', oldRow: row({ deletedAt: '2026-11-30T12:00:00.000Z' }), newRow: row() }), PERSON, options)!;
    expect(restored.name).toBe('person.restored');
    const destroyed = buildTwentyEvent(change({ kind: 'delete', oldRow: row({ jobTitle: 'Gone' }), newRow: null }), PERSON, options)!;
    const destroyedBody = JSON.parse(destroyed.bodyFor!(subscriber('w1', 'https://example.com/')));
    expect(destroyedBody.eventName).toBe('person.destroyed');
    expect(destroyedBody.record.jobTitle).toBe('Gone');
    expect(destroyedBody).not.toHaveProperty('updatedFields');
  });

  it('in the event format, the presented record is `data`', () => {
    const event = buildTwentyEvent(change({}), PERSON, { format: 'event', maxPayloadBytes: 1_048_576 })!;
    expect(event.bodyFor).toBeNull();
    const body = JSON.parse(event.body);
    expect(Object.keys(body)).toEqual(['event', 'data', 'timestamp', 'id']);
    expect(body.data.name).toEqual({ firstName: 'Ada', lastName: '' });
  });

  it('sends a row with a value the reader kept as its size only as its id, without serialising it', () => {
    const event = buildTwentyEvent(change({ newRow: row({ jobTitle: new OversizedValue(600_000_000) }) }), PERSON, options)!;
    const body = JSON.parse(event.bodyFor!(subscriber('w1', 'https://example.com/')));
    expect(body.record).toEqual({ id: 'a0000000-0000-4000-8000-000000000001', truncated: true });
    expect(body.truncated).toBe(true);
  });

  it('sends a record too large for maxPayloadBytes as its id, marked truncated', () => {
    const event = buildTwentyEvent(change({ newRow: row({ jobTitle: 'x'.repeat(5_000) }) }), PERSON, { format: 'twenty', maxPayloadBytes: 4_000 })!;
    const body = JSON.parse(event.bodyFor!(subscriber('w1', 'https://example.com/')));
    expect(body.record).toEqual({ id: 'a0000000-0000-4000-8000-000000000001', truncated: true });
    expect(body.truncated).toBe(true);
  });
});

describe('buildCatalog', () => {
  it('maps custom objects to underscore tables, skips timeline activities, reads join columns from relation settings', () => {
    const catalog = buildCatalog(
      [
        { id: 'o1', workspaceId: 'w', nameSingular: 'pet', isCustom: true, schema: 's' },
        { id: 'o2', workspaceId: 'w', nameSingular: 'timelineActivity', isCustom: false, schema: 's' },
        { id: 'o3', workspaceId: 'w', nameSingular: 'person', isCustom: false, schema: 's' },
      ],
      [
        { objectId: 'o3', name: 'company', type: 'RELATION', settings: { relationType: 'MANY_TO_ONE', joinColumnName: 'companyId' } },
        { objectId: 'o3', name: 'notes', type: 'RELATION', settings: { relationType: 'ONE_TO_MANY' } },
      ],
      1,
    );
    expect(catalog.objectFor('s', '_pet')?.nameSingular).toBe('pet');
    expect(catalog.objectFor('s', 'pet')).toBeUndefined();
    expect(catalog.objectFor('s', 'timelineActivity')).toBeUndefined();
    expect(catalog.objectFor('s', 'person')?.fields.map((f) => f.joinColumn)).toEqual(['companyId', null]);
    expect(catalog.objects.map((o) => o.table)).toEqual(['_pet', 'person']);
  });
});
