/**
 * A webhook that is deleted, soft-deleted, disabled or made invalid gets no attempt that starts more
 * than 3 s after the change commits; its stored deliveries stay listed, and go out only once it is
 * restored or re-enabled. A targetUrl change never sends the old backlog to the new URL; a secret
 * change applies to the next attempt.
 */
import { createHmac } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Daemon } from '../../src/daemon.js';
import { addWebhook, eventually, prepareDatabase, runCli, startDaemon, testOverrides, type LogCapture } from '../helpers/bridge.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';

/** The promise under test: nothing starts later than this after the change commits. */
const STOP_WITHIN_MS = 3_000;
/** How long after the change we keep watching: retries fall due about every second meanwhile. */
const WATCH_MS = STOP_WITHIN_MS + 2_000;
const BACKLOG = 6;

describe('a removed, disabled or invalid webhook', () => {
  let db: TestDatabase;
  let daemon: Daemon;
  let logs: LogCapture;
  const receivers: Receiver[] = [];

  beforeAll(async () => {
    db = await createTestDatabase('removed_webhook');
    // Retries about every second, for long: a webhook that kept its lane would be hit several times a second.
    const config = await prepareDatabase(db, { 'delivery.retrySchedule': Array(40).fill(1), 'delivery.timeoutMs': 1_000 });
    ({ daemon, logs } = await startDaemon(config));
  });

  afterAll(async () => {
    await daemon?.stop();
    await Promise.all(receivers.map((r) => r.close()));
    await db?.drop();
  });

  function cli(args: string[]) {
    const o = testOverrides(db);
    return runCli(['--database-url', db.url, '--replication-slot', String(o['replication.slot']), ...args]);
  }

  async function receiver(): Promise<Receiver> {
    const r = await startReceiver();
    receivers.push(r);
    return r;
  }

  const hasLane = (id: string) => daemon.laneStates().some((lane) => lane.webhookId === id);

  /** A webhook answering 500 with BACKLOG events (one per record) in retry. */
  async function failingWebhookWithBacklog(object: 'person' | 'company' | 'note' | 'task', secret = 'test-secret') {
    const r = await receiver();
    r.script(() => ({ status: 500 }));
    const id = await addWebhook(db, r.url, [`${object}.created`], secret);
    await eventually(() => hasLane(id), 'the webhook to get its lane');
    const column = object === 'person' ? '"firstName"' : object === 'company' ? 'name' : 'title';
    await db.pool.query(`insert into ${object} (${column}) select 'backlog ' || i from generate_series(1, ${BACKLOG}) i`);
    // Every event attempted and retried at least once: the backlog is in the store, in retry.
    await r.waitFor((reqs) => new Set(reqs.map((q) => q.json?.id)).size === BACKLOG && reqs.length >= 2 * BACKLOG, 30_000);
    return { r, id, eventIds: new Set(r.requests.map((q) => q.json.id as string)) };
  }

  async function stored(id: string): Promise<Array<{ eventId: string; status: string; lastError: string | null }>> {
    const listed = await cli(['deliveries', 'list', '--webhook', id, '--json']);
    expect(listed.code).toBe(0);
    return JSON.parse(listed.stdout);
  }

  /** Requests that started more than STOP_WITHIN_MS after the change, watched for WATCH_MS after it. */
  async function requestsTooLate(r: Receiver, committedAt: number): Promise<number[]> {
    await eventually(() => Date.now() >= committedAt + WATCH_MS, 'the watch window to pass');
    const last = Math.max(...r.requests.map((q) => q.receivedAt - committedAt));
    console.log(`last request to the old target started ${last} ms after the change committed`);
    return r.requests.map((q) => q.receivedAt - committedAt).filter((ms) => ms > STOP_WITHIN_MS);
  }

  async function expectStopped(r: Receiver, id: string, committedAt: number, eventIds: Set<string>): Promise<void> {
    expect(await requestsTooLate(r, committedAt)).toEqual([]);
    await eventually(() => !hasLane(id), `the lane of ${id} to be freed`);
    const kept = await stored(id);
    expect(new Set(kept.map((d) => d.eventId))).toEqual(eventIds);
    expect(kept.every((d) => d.status === 'pending')).toBe(true);
  }

  it('soft delete: no attempt starts 3 s after it, the backlog stays listed and goes out once restored', async () => {
    const { r, id, eventIds } = await failingWebhookWithBacklog('person');
    await db.pool.query(`update webhook_bridge.webhooks set "deletedAt" = now() where id = $1`, [id]);
    await expectStopped(r, id, Date.now(), eventIds);

    r.script(() => ({ status: 200 }));
    const before = r.requests.length;
    await db.pool.query(`update webhook_bridge.webhooks set "deletedAt" = null where id = $1`, [id]);
    await r.waitFor((reqs) => new Set(reqs.slice(before).map((q) => q.json.id)).size === BACKLOG, 30_000);
    await eventually(async () => (await stored(id)).length === 0, 'the restored backlog to be delivered');
  });

  it('delete: no attempt starts 3 s after it; its stored deliveries stay listed', async () => {
    const { r, id, eventIds } = await failingWebhookWithBacklog('company');
    await db.pool.query(`delete from webhook_bridge.webhooks where id = $1`, [id]);
    await expectStopped(r, id, Date.now(), eventIds);
  });

  it('webhooks disable: no attempt starts 3 s after it; webhooks enable sends the backlog', async () => {
    const { r, id, eventIds } = await failingWebhookWithBacklog('note');
    const disabled = await cli(['webhooks', 'disable', id]);
    expect(disabled.code).toBe(0);
    await expectStopped(r, id, Date.now(), eventIds);

    r.script(() => ({ status: 200 }));
    const before = r.requests.length;
    expect((await cli(['webhooks', 'enable', id])).code).toBe(0);
    await r.waitFor((reqs) => new Set(reqs.slice(before).map((q) => q.json.id)).size === BACKLOG, 30_000);
    await eventually(async () => (await stored(id)).length === 0, 'the re-enabled backlog to be delivered');
  });

  it('a targetUrl made invalid: no attempt starts 3 s after it; its stored deliveries stay listed', async () => {
    const { r, id, eventIds } = await failingWebhookWithBacklog('task');
    await db.pool.query(`update webhook_bridge.webhooks set "targetUrl" = 'not a url' where id = $1`, [id]);
    await expectStopped(r, id, Date.now(), eventIds);
  });

  it('a new targetUrl gets only events routed after the change; the old backlog is set aside, listed and redeliverable', async () => {
    const { r: oldTarget, id, eventIds } = await failingWebhookWithBacklog('person');
    const newTarget = await receiver();
    const since = new Date(Date.now() - 60_000).toISOString();
    const logLinesBefore = logs.lines.length;
    await db.pool.query(`update webhook_bridge.webhooks set "targetUrl" = $2 where id = $1`, [id, newTarget.url]);
    const committedAt = Date.now();
    await db.pool.query(`insert into person ("firstName") values ('after the move')`);
    await newTarget.waitForCount(1);
    await eventually(
      async () => (await stored(id)).filter((d) => d.status === 'dead' && /targetUrl changed/.test(d.lastError ?? '')).length === BACKLOG,
      'the old backlog to be set aside',
    );
    expect(await requestsTooLate(oldTarget, committedAt)).toEqual([]);
    expect(newTarget.requests.map((q) => q.json.data.firstName)).toEqual(['after the move']);
    const setAside = logs.lines.slice(logLinesBefore).filter((l) => /targetUrl changed/.test(String(l.msg)));
    expect(setAside).toHaveLength(1);
    expect(setAside[0]).toMatchObject({ webhookId: id, setAside: BACKLOG });

    const replay = await cli(['deliveries', 'redeliver', '--webhook', id, '--since', since]);
    expect(replay.stdout).toMatch(new RegExp(`${BACKLOG} deliveries scheduled`));
    await newTarget.waitFor((reqs) => reqs.length >= 1 + BACKLOG, 30_000);
    expect(new Set(newTarget.requests.slice(1).map((q) => q.json.id))).toEqual(eventIds);
  });

  it('a new secret signs the next attempt of a delivery already in retry', async () => {
    const newSecret = 'the-new-secret';
    const { r, id, eventIds } = await failingWebhookWithBacklog('company', 'the-old-secret');
    const signedWith = (q: Receiver['requests'][number], secret: string) =>
      q.headers['x-twenty-webhook-signature'] === createHmac('sha256', secret).update(`${q.headers['x-twenty-webhook-timestamp']}:${q.rawBody}`).digest('hex');
    r.script((q) => (signedWith(q, newSecret) ? { status: 200 } : { status: 500 }));
    await db.pool.query(`update webhook_bridge.webhooks set secret = $2 where id = $1`, [id, newSecret]);
    await r.waitFor((reqs) => new Set(reqs.filter((q) => signedWith(q, newSecret)).map((q) => q.json.id)).size === BACKLOG, 30_000);
    expect(new Set(r.requests.filter((q) => signedWith(q, newSecret)).map((q) => q.json.id))).toEqual(eventIds);
    await eventually(async () => (await stored(id)).length === 0, 'the backlog to be delivered under the new secret');
  });
});
