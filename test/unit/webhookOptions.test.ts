import { describe, expect, it } from 'vitest';
import type { RowChange } from '../../src/decode/types.js';
import { compileObjectMapping } from '../../src/route/objectMapping.js';
import { buildEvent } from '../../src/route/router.js';
import { parseSubscriberRow } from '../../src/route/subscribers.js';
import { buildTwentyEvent } from '../../src/route/twentyEvent.js';
import type { Subscriber, WebhookEvent } from '../../src/route/types.js';
import {
  applyOptions,
  celBindings,
  compileFilter,
  compileOptions,
  describeOptions,
  optionsShapeEvents,
  validateOptions,
  type WebhookOptions,
  type WebhookOptionsInput,
} from '../../src/route/webhookOptions.js';
import { createLogger } from '../../src/log.js';
import { OptionRouter } from '../../src/webhooks/optionRouter.js';
import { LogCapture } from '../helpers/bridge.js';
import { personRow, personUpdate } from './fakes/personChange.js';
import { twentyPerson, twentyPersonRow } from './fakes/twentyObjects.js';

const NONE: WebhookOptionsInput = { onFields: null, filter: null, includeColumns: null, excludeColumns: null, coalesceSeconds: null };

function options(input: Partial<WebhookOptionsInput>): WebhookOptions {
  const compiled = compileOptions({ ...NONE, ...input });
  if (compiled === null) throw new Error('no options');
  return compiled;
}

const HOOK: Subscriber = (() => {
  const parsed = parseSubscriberRow({ id: '11111111-1111-4111-8111-111111111111', targetUrl: 'https://example.com/hook', operations: ['*.*'], secret: 's' });
  if (!parsed.ok) throw new Error(parsed.problem);
  return parsed.subscriber;
})();

const BEFORE = personRow();

function tablesChange(overrides: Partial<RowChange> = {}): RowChange {
  return personUpdate({ ...overrides }, BEFORE);
}

function tablesEvent(overrides: Partial<RowChange> = {}, camelCase = true): WebhookEvent {
  const event = buildEvent(tablesChange(overrides), {
    resolveObject: compileObjectMapping({ 'public.person': 'person' }),
    softDeleteColumn: 'deletedAt',
    camelCase,
    maxPayloadBytes: 1_048_576,
  });
  if (event === null) throw new Error('no event');
  return event;
}

const PERSON = twentyPerson({ id: 'UUID', name: 'FULL_NAME', emails: 'EMAILS', jobTitle: 'TEXT', phones: 'PHONES' });

const TWENTY_ROW = twentyPersonRow({
  phonesPrimaryPhoneNumber: '555',
  phonesPrimaryPhoneCountryCode: 'US',
  phonesPrimaryPhoneCallingCode: '+1',
  phonesAdditionalPhones: null,
});

function twentyEvent(newRow: Record<string, unknown>, format: 'twenty' | 'event' = 'twenty'): WebhookEvent {
  const event = buildTwentyEvent(
    {
      ...tablesChange(),
      schema: 'workspace_x',
      oldRow: TWENTY_ROW,
      newRow,
      columnNames: Object.keys(TWENTY_ROW),
      changedColumns: null,
    },
    PERSON,
    { format, maxPayloadBytes: 1_048_576 },
  );
  if (event === null) throw new Error('no event');
  return event;
}

function apply(event: WebhookEvent, input: Partial<WebhookOptionsInput>) {
  return applyOptions(event, HOOK, options(input), () => celBindings(event));
}

function sentBody(outcome: ReturnType<typeof apply>): Record<string, unknown> {
  if (!('body' in outcome)) throw new Error(`filtered: ${outcome.filtered}`);
  return JSON.parse(outcome.body) as Record<string, unknown>;
}

describe('validating and compiling options', () => {
  it('accepts usable options and says where a filter does not compile', () => {
    expect(validateOptions({ ...NONE, onFields: ['email'], filter: 'data.firstName.startsWith("vip")', coalesceSeconds: 2 })).toEqual([]);
    const [problem] = validateOptions({ ...NONE, filter: 'data.firstName.startsWith(' });
    expect(problem).toMatch(/^filter does not compile: at line 1, column \d+: /);
    expect(compileFilter('data.age > 30 ||')).toMatchObject({ ok: false, problem: expect.stringMatching(/line 1, column 15/) });
  });

  it('refuses include and exclude together, and a coalescing window out of range', () => {
    expect(validateOptions({ ...NONE, includeColumns: ['a'], excludeColumns: ['b'] })).toEqual(['give --include-columns or --exclude-columns, not both']);
    for (const bad of [0, -1, 301, 1.5]) expect(validateOptions({ ...NONE, coalesceSeconds: bad })).toHaveLength(1);
    expect(validateOptions({ ...NONE, coalesceSeconds: 300 })).toEqual([]);
  });

  it('no option set: no options object (the fast path); coalescing alone shapes no event but is exposed', () => {
    expect(compileOptions(NONE)).toBeNull();
    const coalescing = options({ coalesceSeconds: 5 });
    expect(coalescing.coalesceSeconds).toBe(5);
    expect(optionsShapeEvents(coalescing)).toBe(false);
    expect(optionsShapeEvents(options({ onFields: ['email'] }))).toBe(true);
  });

  it('a stored filter that no longer compiles keeps every event from its webhook', () => {
    const broken = options({ filter: '1 +' });
    expect(broken.filter).toBeNull();
    expect(broken.filterProblem).toMatch(/does not compile/);
    expect(applyOptions(tablesEvent(), HOOK, broken, () => ({}))).toMatchObject({ filtered: 'filter_error' });
  });

  it('describes options compactly for webhooks list', () => {
    expect(describeOptions({ ...NONE, onFields: ['name', 'email'], filter: 'x == 1', coalesceSeconds: 2 })).toBe(
      'on-fields=name,email filter=x == 1 coalesce=2s',
    );
  });
});

describe('changed-field filter', () => {
  it('passes an update that changed one of the fields (camelCased names where the body camelCases)', () => {
    expect(sentBody(apply(tablesEvent({ changedColumns: ['first_name'] }), { onFields: ['firstName', 'jobTitle'] })).updatedFields).toEqual(['firstName']);
    expect(apply(tablesEvent({ changedColumns: ['first_name'] }, false), { onFields: ['first_name'] })).toHaveProperty('body');
  });

  it('drops an update that changed none of them', () => {
    expect(apply(tablesEvent(), { onFields: ['firstName'] })).toEqual({ filtered: 'on_fields' });
  });

  it('never filters created, deleted, restored or destroyed events', () => {
    const created = tablesEvent({ kind: 'insert', oldRow: null, changedColumns: null });
    const deleted = tablesEvent({ kind: 'delete', newRow: null, changedColumns: null });
    for (const event of [created, deleted]) expect(apply(event, { onFields: ['nothing'] })).toHaveProperty('body', event.body);
  });

  it('uses Twenty field names in Twenty bodies', () => {
    const event = twentyEvent({ ...TWENTY_ROW, emailsPrimaryEmail: 'ada@new.example' });
    expect(sentBody(apply(event, { onFields: ['emails'] })).updatedFields).toEqual(['emails']);
    expect(apply(event, { onFields: ['jobTitle'] })).toEqual({ filtered: 'on_fields' });
  });
});

describe('row filter (CEL)', () => {
  it('sends when true, drops when false, on the body the webhook would get', () => {
    expect(apply(tablesEvent(), { filter: 'data.firstName.startsWith("vip")' })).toEqual({ body: tablesEvent().body });
    expect(apply(tablesEvent(), { filter: 'data.firstName.startsWith("vip") && event == "person.created"' })).toEqual({ filtered: 'filter' });
    expect(apply(tablesEvent(), { filter: '"email" in updatedFields && data.profile.tier == "gold"' })).toHaveProperty('body');
  });

  it('a filter that fails on a row (missing key, wrong type, not a boolean) drops it and says why', () => {
    expect(apply(tablesEvent(), { filter: 'data.noSuchColumn == 1' })).toEqual({ filtered: 'filter_error', problem: expect.stringMatching(/noSuchColumn/) });
    expect(apply(tablesEvent(), { filter: 'data.firstName > 3' })).toMatchObject({ filtered: 'filter_error' });
    expect(apply(tablesEvent(), { filter: 'data.firstName' })).toEqual({ filtered: 'filter_error', problem: 'the filter gave a string, not true or false' });
  });

  it('updatedFields is an empty list on events other than updates', () => {
    const created = tablesEvent({ kind: 'insert', oldRow: null, changedColumns: null });
    expect(apply(created, { filter: 'size(updatedFields) == 0' })).toHaveProperty('body');
  });

  it("sees Twenty's body: record, eventName, objectMetadata, workspaceId, and its own webhook", () => {
    const event = twentyEvent({ ...TWENTY_ROW, jobTitle: 'CTO' });
    const filter = `record.name.firstName == "Ada" && eventName == "person.updated" && objectMetadata.nameSingular == "person" && workspaceId == "${PERSON.workspaceId}" && "jobTitle" in updatedFields`;
    expect(apply(event, { filter })).toEqual({ body: event.bodyFor!(HOOK) });
    expect(apply(event, { filter: 'record.name.firstName == "Bob"' })).toEqual({ filtered: 'filter' });
  });

  it('compiles once: one program serves every event', () => {
    const compiled = options({ filter: 'data.firstName.startsWith("vip")' });
    const program = compiled.filter!.program;
    for (const name of ['vipA', 'bob']) {
      const event = tablesEvent({ newRow: { ...BEFORE, first_name: name, email: 'x' } });
      applyOptions(event, HOOK, compiled, () => celBindings(event));
    }
    expect(compiled.filter!.program).toBe(program);
  });
});

describe('column selection', () => {
  it('tables body: removes keys from data and updatedFields; json values keep their text', () => {
    const event = tablesEvent({ changedColumns: ['email', 'phone'], newRow: { ...BEFORE, email: 'b@example.com', phone: '+2' } });
    const outcome = apply(event, { excludeColumns: ['phone'] });
    expect(sentBody(outcome)).toEqual({
      event: 'person.updated',
      data: { id: 'p1', firstName: 'vipAlice', email: 'b@example.com', profile: { tier: 'gold' } },
      timestamp: '2026-02-10T15:30:50.123Z',
      id: event.id,
      updatedFields: ['email'],
    });
    expect((outcome as { body: string }).body).toContain('"profile":{"tier": "gold"}');
    expect(sentBody(apply(event, { includeColumns: ['id', 'email'] })).data).toEqual({ id: 'p1', email: 'b@example.com' });
  });

  it('an update whose changed fields were all removed is not sent', () => {
    expect(apply(tablesEvent(), { excludeColumns: ['email'] })).toEqual({ filtered: 'columns' });
    expect(apply(tablesEvent({ kind: 'insert', oldRow: null, changedColumns: null }), { excludeColumns: ['email'] })).toHaveProperty('body');
  });

  it("Twenty body: removes keys from record and updatedFields, names its webhook, keeps Twenty's key order", () => {
    const event = twentyEvent({ ...TWENTY_ROW, jobTitle: 'CTO', phonesPrimaryPhoneNumber: '556' });
    const body = sentBody(apply(event, { excludeColumns: ['phones', 'emails'] }));
    expect(Object.keys(body)).toEqual(['targetUrl', 'eventName', 'objectMetadata', 'workspaceId', 'webhookId', 'eventDate', 'record', 'updatedFields']);
    expect(body.targetUrl).toBe(HOOK.targetUrl);
    expect(body.webhookId).toBe(HOOK.id);
    expect(body.record).toEqual({ id: TWENTY_ROW.id, name: { firstName: 'Ada', lastName: 'Lovelace' }, jobTitle: 'CTO' });
    expect(body.updatedFields).toEqual(['jobTitle']);
    // Same bytes as the shared body when nothing is removed.
    const all = sentBody(apply(event, { excludeColumns: ['nothing'] }));
    expect(JSON.stringify(all)).toBe(event.bodyFor!(HOOK));
  });

  it("Twenty mode with the bridge's body: removes keys from data", () => {
    const event = twentyEvent({ ...TWENTY_ROW, jobTitle: 'CTO' }, 'event');
    const body = sentBody(apply(event, { includeColumns: ['id', 'jobTitle'] }));
    expect(body.data).toEqual({ id: TWENTY_ROW.id, jobTitle: 'CTO' });
    expect(body.event).toBe('person.updated');
  });
});

describe('OptionRouter', () => {
  function setup() {
    const routed: Array<{ event: WebhookEvent; ids: string[] }> = [];
    const filtered: string[] = [];
    const logs = new LogCapture();
    const router = new OptionRouter({ eventFiltered: (id, reason) => filtered.push(`${id} ${reason}`) }, createLogger('info', logs));
    const sink = { route: (event: WebhookEvent, subscribers: readonly Subscriber[]) => routed.push({ event, ids: subscribers.map((s) => s.id) }) };
    return { routed, filtered, logs, router, sink };
  }
  const withOptions = (id: string, input: Partial<WebhookOptionsInput>): Subscriber => ({ ...HOOK, id, options: options(input) });

  it('webhooks without options that shape events share the event itself (coalescing alone included)', () => {
    const { routed, router, sink } = setup();
    const event = tablesEvent();
    const subscribers = [HOOK, withOptions('c', { coalesceSeconds: 3 })];
    expect(router.route(event, subscribers, sink, null)).toBe(2);
    expect(routed).toEqual([{ event, ids: [HOOK.id, 'c'] }]);
    expect(routed[0]!.event).toBe(event);
  });

  it('each shaped webhook gets its own body or nothing; a failing filter is logged once a minute at most', () => {
    const { routed, filtered, logs, router, sink } = setup();
    const subscribers = [HOOK, withOptions('cols', { excludeColumns: ['phone'] }), withOptions('bad', { filter: 'data.nothing == 1' })];
    for (let i = 0; i < 3; i++) expect(router.route(tablesEvent(), subscribers, sink, null)).toBe(2);
    expect(routed.map((r) => r.ids)).toEqual([['cols'], [HOOK.id], ['cols'], [HOOK.id], ['cols'], [HOOK.id]]);
    expect(JSON.parse(routed[0]!.event.body).data).not.toHaveProperty('phone');
    expect(filtered).toEqual(['bad filter_error', 'bad filter_error', 'bad filter_error']);
    expect(logs.lines.filter((l) => /its filter failed/.test(l.msg as string))).toHaveLength(1);
  });
});
