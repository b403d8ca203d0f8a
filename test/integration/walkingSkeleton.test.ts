import { createHmac } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Daemon } from '../../src/daemon.js';
import { addWebhook, LogCapture, prepareDatabase, startDaemon, waitForLanes } from '../helpers/bridge.js';
import { waitUntil } from '../helpers/wait.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startReceiver, type Receiver, type ReceivedRequest } from '../helpers/receiver.js';

/** A committed row change becomes a signed webhook, end to end. */
describe('walking skeleton', () => {
  let db: TestDatabase;
  let daemon: Daemon;
  let logs: LogCapture;
  const receivers: Receiver[] = [];

  beforeAll(async () => {
    db = await createTestDatabase('skeleton');
    const config = await prepareDatabase(db);
    ({ daemon, logs } = await startDaemon(config));
  });

  afterAll(async () => {
    await daemon?.stop();
    await Promise.all(receivers.map((r) => r.close()));
    await db?.drop();
  });

  /** The marker of a record: its hard delete, the last change it can have. */
  async function commitMarkers(records: Array<[table: string, id: string]>): Promise<void> {
    for (const [table, id] of records) await db.pool.query(`delete from ${table} where id = $1`, [id]);
  }
  const isMarker = (q: ReceivedRequest): boolean => q.json.event.endsWith('.destroyed');

  async function receiver(): Promise<Receiver> {
    const r = await startReceiver();
    receivers.push(r);
    return r;
  }

  it('insert, update and soft delete on each table -> 12 events in commit order, signed both ways', async () => {
    const r = await receiver();
    const secret = 'whsec_' + Buffer.from('a secret of thirty-two bytes!!!!').toString('base64');
    await waitForLanes(daemon, { live: [await addWebhook(db, `${r.url}all`, ['*.*'], secret)] });
    const expected: string[] = [];
    const records: Array<[string, string]> = [];
    for (const [table, object, insert] of [
      ['person', 'person', `insert into person ("firstName", email) values ('Alice', 'alice@example.com') returning id`],
      ['company', 'company', `insert into company (name, employees) values ('Acme', 5) returning id`],
      ['note', 'note', `insert into note (title) values ('Hello') returning id`],
      ['task', 'task', `insert into task (title) values ('Call') returning id`],
    ] as const) {
      const { rows } = await db.pool.query(insert);
      const column = table === 'person' ? 'email' : table === 'company' ? 'employees' : 'title';
      const value = table === 'company' ? '6' : `'changed ${table}'`;
      await db.pool.query(`update ${table} set ${column === 'email' ? 'email' : `"${column}"`} = ${value} where id = $1`, [rows[0].id]);
      await db.pool.query(`update ${table} set "deletedAt" = now() where id = $1`, [rows[0].id]);
      expected.push(`${object}.created`, `${object}.updated`, `${object}.deleted`);
      records.push([table, rows[0].id]);
    }
    await r.waitForCount(12);
    // Nothing more (a duplicate, a spurious event): one more change per record, delivered in order after
    // the record's earlier ones, proves nothing else of that record was on its way.
    await commitMarkers(records);
    await r.waitFor((reqs) => reqs.filter(isMarker).length === 4);
    expect(r.requests.filter((q) => !isMarker(q))).toHaveLength(12);
    r.requests.splice(0, r.requests.length, ...r.requests.filter((q) => !isMarker(q)));
    // Deliveries of one record arrive in commit order; sort by event id (commit LSN) to compare across records.
    const byCommit = [...r.requests].sort((a, b) => (a.json.id < b.json.id ? -1 : 1));
    expect(byCommit.map((q) => q.json.event)).toEqual(expected);
    for (const object of ['person', 'company', 'note', 'task']) {
      const ofRecord = r.requests.filter((q) => q.json.event.startsWith(`${object}.`)).map((q) => q.json.event);
      expect(ofRecord).toEqual([`${object}.created`, `${object}.updated`, `${object}.deleted`]);
    }
    const personUpdate = r.requests.find((q) => q.json.event === 'person.updated')!;
    expect(personUpdate.json.updatedFields).toEqual(['email']);
    expect(personUpdate.json.data).toMatchObject({ firstName: 'Alice', email: 'changed person', deletedAt: null });
    expect(Object.keys(personUpdate.json)).toEqual(['event', 'data', 'timestamp', 'id', 'updatedFields']);
    const created = r.requests.find((q) => q.json.event === 'person.created')!;
    expect(created.json.updatedFields).toBeUndefined();
    expect(created.json.timestamp).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(Math.abs(Date.parse(created.json.timestamp) - created.receivedAt)).toBeLessThan(30_000);

    for (const request of r.requests) {
      const timestamp = request.headers['x-twenty-webhook-timestamp'] as string;
      const expectedSignature = createHmac('sha256', secret).update(`${timestamp}:${request.rawBody}`).digest('hex');
      expect(request.headers['x-twenty-webhook-signature']).toBe(expectedSignature);
      expect(request.headers['x-twenty-webhook-nonce']).toMatch(/^[0-9a-f]{32}$/);
      expect(request.headers['content-type']).toBe('application/json');
      expect(request.headers['user-agent']).toMatch(/^pg-webhook-bridge\/\d+\.\d+\.\d+/);
      expect(request.headers['webhook-id']).toBe(request.json.id);
      const verified = new Webhook(secret).verify(request.rawBody, {
        'webhook-id': request.headers['webhook-id'] as string,
        'webhook-timestamp': request.headers['webhook-timestamp'] as string,
        'webhook-signature': request.headers['webhook-signature'] as string,
      });
      expect(verified).toEqual(request.json);
    }
  });

  it('operations filters: each webhook receives exactly its events, once', async () => {
    const hooks: Record<string, { r: Receiver; ops: string[]; id: string }> = {};
    for (const [name, ops] of Object.entries({
      all: ['*.*'],
      person: ['person.*'],
      created: ['*.created'],
      noteUpdated: ['note.updated'],
      several: ['task.created', 'company.*', '*.created'],
      gone: ['*.*'],
    })) {
      const r = await receiver();
      const id = await addWebhook(db, r.url, ops);
      hooks[name] = { r, ops, id };
      if (name === 'gone') await db.pool.query(`update webhook_bridge.webhooks set "deletedAt" = now() where id = $1`, [id]);
    }
    // The soft-deleted webhook has no lane: nothing can be sent to it.
    await waitForLanes(daemon, {
      live: Object.values(hooks)
        .filter((h) => h !== hooks.gone)
        .map((h) => h.id),
      gone: [hooks.gone.id],
    });
    const person = await db.pool.query(`insert into person ("firstName") values ('Filter') returning id`);
    await db.pool.query(`update person set "firstName" = 'Filtered' where id = $1`, [person.rows[0].id]);
    const company = await db.pool.query(`insert into company (name) values ('FilterCo') returning id`);
    await db.pool.query(`update company set name = 'FilterCo 2' where id = $1`, [company.rows[0].id]);
    const note = await db.pool.query(`insert into note (title) values ('n') returning id`);
    await db.pool.query(`update note set title = 'n2' where id = $1`, [note.rows[0].id]);
    await db.pool.query(`insert into task (title) values ('t')`);
    const want: Record<string, string[]> = {
      all: ['person.created', 'person.updated', 'company.created', 'company.updated', 'note.created', 'note.updated', 'task.created'],
      person: ['person.created', 'person.updated'],
      created: ['person.created', 'company.created', 'note.created', 'task.created'],
      noteUpdated: ['note.updated'],
      several: ['person.created', 'company.created', 'company.updated', 'note.created', 'task.created'],
      gone: [],
    };
    for (const [name, events] of Object.entries(want)) await hooks[name].r.waitForCount(events.length);
    // Nothing more: each record's hard delete reaches the webhooks whose filters take it after that
    // record's earlier events, so a duplicate or stray event of those records would be in by then.
    await commitMarkers([
      ['person', person.rows[0].id],
      ['company', company.rows[0].id],
      ['note', note.rows[0].id],
    ]);
    await hooks.all.r.waitFor((reqs) => reqs.filter(isMarker).length === 3);
    await hooks.person.r.waitFor((reqs) => reqs.filter(isMarker).length === 1);
    await hooks.several.r.waitFor((reqs) => reqs.filter(isMarker).length === 1);
    for (const [name, events] of Object.entries(want)) {
      const got = hooks[name].r.requests
        .filter((q) => !isMarker(q))
        .map((q) => q.json.event)
        .sort();
      expect(got, name).toEqual([...events].sort());
    }
  });

  it('a webhook added while running receives the events committed after it; a soft-deleted one stops', async () => {
    const late = await receiver();
    const id = await addWebhook(db, late.url, ['task.*']);
    await waitForLanes(daemon, { live: [id] });
    await db.pool.query(`insert into task (title) values ('after add')`);
    await late.waitForCount(1);
    expect(late.requests[0].json.data.title).toBe('after add');
    await db.pool.query(`update webhook_bridge.webhooks set "deletedAt" = now() where id = $1`, [id]);
    const witness = await receiver();
    const witnessId = await addWebhook(db, witness.url, ['task.*']);
    // Once its lane is gone, nothing more can be sent to the soft-deleted webhook.
    await waitForLanes(daemon, { live: [witnessId], gone: [id] });
    await db.pool.query(`insert into task (title) values ('after delete')`);
    await witness.waitForCount(1);
    expect(witness.requests[0].json.data.title).toBe('after delete');
    expect(late.requests.map((q) => q.json.data.title)).toEqual(['after add']);
  });

  it('a bad webhook row is skipped with a log line naming it; the others still receive', async () => {
    const good = await receiver();
    const goodId = await addWebhook(db, good.url, ['company.*']);
    const { rows } = await db.pool.query(
      `insert into webhook_bridge.webhooks ("targetUrl", operations, secret) values ('not a url', '{*.*}', 's') returning id::text`,
    );
    await waitForLanes(daemon, { live: [goodId] });
    await waitUntil(() => logs.lines.some((l) => l.webhookId === rows[0].id), 'the log line of the skipped webhook row');
    await db.pool.query(`insert into company (name) values ('After bad row')`);
    await good.waitForCount(1);
    const line = logs.lines.find((l) => l.webhookId === rows[0].id);
    expect(line?.msg).toMatch(/skipped: targetUrl "not a url" is not a valid URL/);
    expect(line?.level).toBe('warn');
  });
});
