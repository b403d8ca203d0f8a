import { describe, expect, it } from 'vitest';
import type { RowChange } from '../../src/decode/types.js';
import { eventForWebhook, toLoggedEvent, type LoggedEvent, type WebhookOutcome } from '../../src/route/loggedEvent.js';
import { compileObjectMapping } from '../../src/route/objectMapping.js';
import { buildEvent } from '../../src/route/router.js';
import { parseSubscriberRow } from '../../src/route/subscribers.js';
import { buildTwentyEvent } from '../../src/route/twentyEvent.js';
import type { Subscriber, WebhookEvent } from '../../src/route/types.js';
import { applyOptions, celBindings, compileOptions, type WebhookOptionsInput } from '../../src/route/webhookOptions.js';
import { personRow, personUpdate } from './fakes/personChange.js';
import { twentyPerson, twentyPersonRow } from './fakes/twentyObjects.js';

const NONE: WebhookOptionsInput = { onFields: null, filter: null, includeColumns: null, excludeColumns: null, coalesceSeconds: null };

function hook(
  row: { operations?: string[]; workspaceId?: string | null; options?: Partial<WebhookOptionsInput>; id?: string; targetUrl?: string } = {},
): Subscriber {
  const parsed = parseSubscriberRow({
    id: row.id ?? '11111111-1111-4111-8111-111111111111',
    targetUrl: row.targetUrl ?? 'https://example.com/hook?x="1"',
    operations: row.operations ?? ['*.*'],
    secret: 's',
    workspaceId: row.workspaceId ?? null,
  });
  if (!parsed.ok) throw new Error(parsed.problem);
  return { ...parsed.subscriber, options: row.options ? compileOptions({ ...NONE, ...row.options }) : null };
}

const BEFORE = personRow('{"tier":"gold"}');

function tablesChange(overrides: Partial<RowChange> = {}): RowChange {
  return personUpdate({ indexInTransaction: 3, ...overrides }, BEFORE);
}

function tablesEvent(overrides: Partial<RowChange> = {}): WebhookEvent {
  const event = buildEvent(tablesChange(overrides), {
    resolveObject: compileObjectMapping({ 'public.person': 'person', 'public.workflow_run': 'workflowRun' }),
    softDeleteColumn: 'deletedAt',
    camelCase: true,
    maxPayloadBytes: 1_048_576,
  });
  if (event === null) throw new Error('no event');
  return event;
}

const PERSON = twentyPerson({ id: 'UUID', name: 'FULL_NAME', emails: 'EMAILS', jobTitle: 'TEXT' });
const WORKSPACE = PERSON.workspaceId;

const TWENTY_ROW = twentyPersonRow();

function twentyEvent(): WebhookEvent {
  const event = buildTwentyEvent(
    {
      ...tablesChange(),
      schema: 'workspace_x',
      oldRow: TWENTY_ROW,
      newRow: { ...TWENTY_ROW, jobTitle: 'Mathematician "and" poet' },
      columnNames: Object.keys(TWENTY_ROW),
      changedColumns: null,
    },
    PERSON,
    { format: 'twenty', maxPayloadBytes: 1_048_576 },
  );
  if (event === null) throw new Error('no event');
  return event;
}

/** A logged event as a segment gives it back (see eventLog.test.ts for the round trip). */
function logged(overrides: Partial<LoggedEvent> = {}): LoggedEvent {
  return { ...toLoggedEvent(tablesEvent(), null), ...overrides };
}

function sent(outcome: WebhookOutcome): WebhookEvent {
  if (outcome === null) throw new Error('not routed');
  if (!('event' in outcome)) throw new Error(`filtered: ${outcome.filtered}`);
  return outcome.event;
}

describe('eventForWebhook: which webhooks get a logged event', () => {
  it('follows the operations: exact, object.*, *.action and *.*; others get null', () => {
    const event = logged();
    for (const operations of [['person.updated'], ['person.*'], ['*.updated'], ['*.*'], ['company.created', 'person.updated']]) {
      expect(eventForWebhook(event, hook({ operations }))).not.toBeNull();
    }
    for (const operations of [['person.created'], ['company.*'], ['*.deleted']]) {
      expect(eventForWebhook(event, hook({ operations }))).toBeNull();
    }
  });

  it('a Twenty event goes only to webhooks of its workspace; a tables-mode event ignores workspaces', () => {
    const event = toLoggedEvent(twentyEvent(), WORKSPACE);
    expect(eventForWebhook(event, hook({ workspaceId: WORKSPACE }))).not.toBeNull();
    expect(eventForWebhook(event, hook({ workspaceId: '99999999-0000-4000-8000-000000000000' }))).toBeNull();
    expect(eventForWebhook(event, hook({ workspaceId: null }))).toBeNull();
    expect(eventForWebhook(logged(), hook({ workspaceId: WORKSPACE }))).not.toBeNull();
  });

  it('workflowRun.updated of a workspace goes only to webhooks that name it exactly, as Twenty sends it', () => {
    const event = logged({ object: 'workflowRun', action: 'updated', workspaceId: WORKSPACE });
    const of = (operations: string[]) => eventForWebhook(event, hook({ operations, workspaceId: WORKSPACE }));
    expect(of(['workflowRun.updated'])).not.toBeNull();
    expect(of(['*.*'])).toBeNull();
    expect(of(['workflowRun.*'])).toBeNull();
    expect(of(['*.updated'])).toBeNull();
    // Other actions of the object match as usual; in tables mode there is no such rule.
    expect(eventForWebhook({ ...event, action: 'created' }, hook({ operations: ['workflowRun.*'], workspaceId: WORKSPACE }))).not.toBeNull();
    expect(eventForWebhook({ ...event, workspaceId: null }, hook({ operations: ['*.*'] }))).not.toBeNull();
  });
});

describe('eventForWebhook: the event a webhook gets', () => {
  it('tables mode: the shared body, and the id, name and position of the live event', () => {
    const live = tablesEvent();
    const event = sent(eventForWebhook(toLoggedEvent(live, null), hook()));
    expect(event.body).toBe(live.body);
    expect(event).toMatchObject({ id: live.id, name: 'person.updated', object: 'person', action: 'updated', recordKey: live.recordKey });
    expect(event.commitLsn).toBe(live.commitLsn);
    expect(event.changeIndex).toBe(3);
    expect(event.commitTime).toEqual(live.commitTime);
    expect(event.bodyFor).toBeNull();
  });

  it('Twenty mode: the body is byte for byte what the live event makes for that webhook', () => {
    const live = twentyEvent();
    expect(live.body).toBe('');
    const loggedEvent = toLoggedEvent(live, WORKSPACE);
    for (const subscriber of [
      hook({ workspaceId: WORKSPACE }),
      hook({ workspaceId: WORKSPACE, id: '22222222-2222-4222-8222-222222222222', targetUrl: 'https://other.example.com/é\u2028' }),
    ]) {
      const event = sent(eventForWebhook(loggedEvent, subscriber));
      expect(event.body).toBe(live.bodyFor!(subscriber));
      expect(JSON.parse(event.body)).toMatchObject({ targetUrl: subscriber.targetUrl, webhookId: subscriber.id });
      expect(event.id).toBe(live.id);
    }
  });

  it('options that drop the event say why', () => {
    const event = logged();
    const filtered = (options: Partial<WebhookOptionsInput>) => eventForWebhook(event, hook({ options }));
    expect(filtered({ onFields: ['phone'] })).toEqual({ filtered: 'on_fields' });
    expect(filtered({ filter: 'data.firstName.startsWith("bob")' })).toEqual({ filtered: 'filter' });
    expect(filtered({ excludeColumns: ['email'] })).toEqual({ filtered: 'columns' });
    expect(filtered({ filter: 'data.firstName +' })).toMatchObject({ filtered: 'filter_error', problem: expect.stringMatching(/does not compile/) });
    // Options that keep it: the changed field, a filter that holds.
    expect(sent(filtered({ onFields: ['email'] })).body).toBe(event.body);
    expect(sent(filtered({ filter: 'data.firstName.startsWith("vip") && "email" in updatedFields' })).body).toBe(event.body);
  });

  it('column options narrow the body as they do for the live event', () => {
    const live = tablesEvent();
    const subscriber = hook({ options: { includeColumns: ['id', 'email', 'profile'] } });
    const body = sent(eventForWebhook(toLoggedEvent(live, null), subscriber)).body;
    expect(JSON.parse(body)).toMatchObject({
      event: 'person.updated',
      data: { id: 'p1', email: 'alice@example.com', profile: { tier: 'gold' } },
      updatedFields: ['email'],
    });
    expect(Object.keys((JSON.parse(body) as { data: object }).data)).toEqual(['id', 'email', 'profile']);
    const liveOutcome = applyOptions(live, subscriber, subscriber.options!, () => celBindings(live));
    expect('body' in liveOutcome && JSON.parse(liveOutcome.body)).toEqual(JSON.parse(body));
  });

  it('Twenty mode with column options: the narrowed record, named for the webhook, equals the live one byte for byte', () => {
    const live = twentyEvent();
    const subscriber = hook({ workspaceId: WORKSPACE, options: { excludeColumns: ['emails'] } });
    expect(JSON.parse(live.bodyFor!(subscriber))).toHaveProperty('record.emails');
    const body = sent(eventForWebhook(toLoggedEvent(live, WORKSPACE), subscriber)).body;
    const parsed = JSON.parse(body) as { targetUrl: string; webhookId: string; record: Record<string, unknown> };
    expect(parsed.targetUrl).toBe(subscriber.targetUrl);
    expect(parsed.webhookId).toBe(subscriber.id);
    expect(parsed.record).not.toHaveProperty('emails');
    expect(parsed.record).toHaveProperty('jobTitle', 'Mathematician "and" poet');
    const liveOutcome = applyOptions(live, subscriber, subscriber.options!, () => celBindings(live));
    expect(liveOutcome).toEqual({ body });
  });
});
