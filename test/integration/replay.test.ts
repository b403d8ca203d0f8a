import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Daemon } from '../../src/daemon.js';
import { migrate } from '../../src/migrate.js';
import { parseLsn } from '../../src/replication/lsn.js';
import type { LoggedEvent } from '../../src/route/loggedEvent.js';
import { appendSegment } from '../../src/store/eventLog.js';
import { createTwentyWorkspace, TWENTY_CORE_SQL, type TwentyWorkspace } from '../fixtures/twentyDatabase.js';
import {
  addWebhook,
  prepareDatabase,
  runCli,
  startDaemon,
  testConfig,
  testOverrides,
  waitForLaneIdle,
  waitForLanes,
  waitForSlotToPassNow,
} from '../helpers/bridge.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startReceiver, type ReceivedRequest, type Receiver } from '../helpers/receiver.js';

/** The event id a request carries (the Standard Webhooks `webhook-id` header). */
function eventId(request: ReceivedRequest): string {
  return String(request.headers['webhook-id']);
}

/** `deliveries replay` and `webhooks add --from`, which read the event log's history, and `status` on it. */
describe('replay and webhooks starting in the past (delivery.retentionHours 1)', () => {
  let db: TestDatabase;
  let daemon: Daemon;
  const receivers: Receiver[] = [];

  beforeAll(async () => {
    db = await createTestDatabase('replay');
    const config = await prepareDatabase(db, { 'delivery.retentionHours': 1 });
    ({ daemon } = await startDaemon(config));
  });

  afterAll(async () => {
    await daemon?.stop();
    await Promise.all(receivers.map((r) => r.close()));
    await db?.drop();
  });

  function cli(args: string[]) {
    const o = testOverrides(db);
    return runCli(['--database-url', db.url, '--replication-slot', String(o['replication.slot']), '--delivery-retention-hours', '1', ...args]);
  }

  async function receiver(): Promise<Receiver> {
    const r = await startReceiver();
    receivers.push(r);
    return r;
  }

  /** Commits one statement and waits for `r` to receive its event: each event gets its own commit time. */
  async function commit(r: Receiver, sql: string, params: unknown[] = []): Promise<ReceivedRequest> {
    const before = r.requests.length;
    await db.pool.query(sql, params);
    await r.waitForCount(before + 1);
    return r.requests[before]!;
  }

  it('deliveries replay re-sends exactly the window, with the same ids and bodies, in order per record, beside live events', async () => {
    const r = await receiver();
    const id = await addWebhook(db, r.url, ['person.*']);
    await waitForLanes(daemon, { live: [id] });
    const ann = (await db.pool.query(`insert into person ("firstName") values ('Ann') returning id`)).rows[0].id;
    await r.waitForCount(1);
    const bobCreated = await commit(r, `insert into person ("firstName") values ('Bob')`);
    const bob = bobCreated.json.data.id;
    const window = [
      bobCreated,
      await commit(r, `update person set "lastName" = 'A1' where id = $1`, [ann]),
      await commit(r, `update person set "lastName" = 'B1' where id = $1`, [bob]),
      await commit(r, `update person set "lastName" = 'A2' where id = $1`, [ann]),
    ];
    await commit(r, `update person set "lastName" = 'A3' where id = $1`, [ann]);
    const carl = (await commit(r, `insert into person ("firstName") values ('Carl')`)).json.data.id;
    // The slot passes an event only once the log holds it.
    await waitForSlotToPassNow(db);
    const sentBefore = r.requests.length;
    const since = window[0]!.json.timestamp as string;
    const until = window[window.length - 1]!.json.timestamp as string;

    const windowIds = window.map(eventId);
    const replayArrived = (reqs: ReceivedRequest[]) => windowIds.every((e) => reqs.slice(sentBefore).some((q) => eventId(q) === e));
    // Live changes keep flowing, each delivered, from before the replay is queued until after it is sent.
    let liveCount = 0;
    const liveUpdate = () => commit(r, `update person set "lastName" = $1 where id = $2`, [`live ${liveCount++}`, carl]);
    const live = (async () => {
      do await liveUpdate();
      while (!replayArrived(r.requests));
      await liveUpdate();
    })();
    const replay = await cli(['deliveries', 'replay', '--webhook', id, '--since', since, '--until', until]);
    expect(replay.code, replay.stderr + replay.stdout).toBe(0);
    expect(replay.stdout).not.toMatch(/warning/);
    expect(replay.stdout).toMatch(
      new RegExp(`^4 events committed from ${since.replace(/\./g, '\\.')} to ${until.replace(/\./g, '\\.')} queued for webhook ${id}`, 'm'),
    );
    await r.waitFor(replayArrived);
    await live;
    await r.waitFor((reqs) => reqs.filter((q) => q.json.data.id === carl).length === liveCount + 1);
    await waitForLaneIdle(daemon, db, id);
    const later = r.requests.slice(sentBefore);
    const replayed = later.filter((q) => q.json.data.id !== carl);
    // Exactly the window: each of its events once more, nothing from before or after it.
    expect(replayed.map(eventId).sort()).toEqual([...windowIds].sort());
    for (const q of replayed) expect(q.rawBody).toBe(window.find((w) => eventId(w) === eventId(q))!.rawBody);
    // In commit order per record.
    expect(replayed.filter((q) => q.json.data.id === ann).map((q) => q.json.data.lastName)).toEqual(['A1', 'A2']);
    expect(replayed.filter((q) => q.json.data.id === bob).map((q) => q.json.event)).toEqual(['person.created', 'person.updated']);
    expect(later.filter((q) => q.json.data.id === carl).map((q) => q.json.data.lastName)).toEqual(Array.from({ length: liveCount }, (_, i) => `live ${i}`));
  });

  it('webhooks add --from gets the events committed since then from the log, then live ones, in order', async () => {
    const history = await receiver();
    const historyId = await addWebhook(db, history.url, ['company.*']);
    await waitForLanes(daemon, { live: [historyId] });
    const x = (await commit(history, `insert into company (name) values ('X')`)).json.data.id;
    const from = await commit(history, `update company set employees = 1 where id = $1`, [x]);
    const y = (await commit(history, `insert into company (name) values ('Y')`)).json.data.id;
    await commit(history, `update company set employees = 2 where id = $1`, [y]);
    await waitForSlotToPassNow(db);
    const past = history.requests.slice(1).map(eventId);

    const r = await receiver();
    const added = await cli(['webhooks', 'add', '--url', r.url, '--operations', 'company.*', '--from', from.json.timestamp]);
    expect(added.code, added.stderr + added.stdout).toBe(0);
    expect(added.stdout).toMatch(/^added webhook [0-9a-f-]{36} -> /m);
    expect(added.stdout).toMatch(/gets the events committed since .* first \(from the event log\), then new ones/);
    expect(added.stdout).not.toMatch(/warning/);
    const id = /added webhook ([0-9a-f-]{36})/.exec(added.stdout)![1]!;
    // From before the log began: it gets what the log holds, and is told from when.
    const early = await receiver();
    const addedEarly = await cli(['webhooks', 'add', '--url', early.url, '--operations', 'company.*', '--from', '2000-01-01']);
    expect(addedEarly.code, addedEarly.stderr).toBe(0);
    expect(addedEarly.stdout).toMatch(
      /^warning: the event log starts at \S+, after 2000-01-01T00:00:00\.000Z: the webhook gets the events committed from then on/m,
    );

    await r.waitForCount(past.length);
    await db.pool.query(`update company set employees = 3 where id = $1`, [x]);
    await db.pool.query(`update company set employees = 4 where id = $1`, [y]);
    await r.waitForCount(past.length + 2);
    await history.waitForCount(6);
    await waitForLaneIdle(daemon, db, id);
    // The same events under the same ids; in commit order per record (records may interleave).
    expect(r.requests.map(eventId).sort()).toEqual(history.requests.slice(1).map(eventId).sort());
    const perRecord = (reqs: ReceivedRequest[], record: string) =>
      reqs.filter((q) => q.json.data.id === record).map((q) => [q.json.event, q.json.data.employees]);
    expect(perRecord(r.requests, x)).toEqual([
      ['company.updated', 1],
      ['company.updated', 3],
    ]);
    expect(perRecord(r.requests, y)).toEqual([
      ['company.created', null],
      ['company.updated', 2],
      ['company.updated', 4],
    ]);
    await early.waitForCount(history.requests.length);
    expect(early.requests.map(eventId).sort()).toEqual(history.requests.map(eventId).sort());
    expect(perRecord(early.requests, x)).toEqual([
      ['company.created', null],
      ['company.updated', 1],
      ['company.updated', 3],
    ]);

    const status = await cli(['status', '--json']);
    expect(status.code, status.stderr).toBe(0);
    const log = JSON.parse(status.stdout).eventLog;
    expect(log).toMatchObject({ retentionHours: 1 });
    expect(log.segments).toBeGreaterThan(0);
    expect(log.events).toBeGreaterThanOrEqual(6);
    expect(log.bytes).toBeGreaterThan(0);
    expect(new Date(log.oldestCommitAt).getTime()).toBeLessThanOrEqual(new Date(history.requests[0]!.json.timestamp).getTime());
    const text = await cli(['status']);
    expect(text.stdout).toMatch(/^event log +\d+ segments, \d+ events, .* compressed; oldest commit \S+; retention 1 h$/m);
    expect(text.stdout).toMatch(/^log readers +\d+ behind.*; \d+ paused/m);
  });

  it('replay of a window the log no longer holds says so and queues nothing', async () => {
    const r = await receiver();
    const id = await addWebhook(db, r.url, ['person.*']);
    await waitForLanes(daemon, { live: [id] });
    await commit(r, `insert into person ("firstName") values ('Eve')`);
    await waitForSlotToPassNow(db);
    const result = await cli(['deliveries', 'replay', '--webhook', id, '--since', '2000-01-01T00:00:00Z', '--until', '2000-01-02T00:00:00+01:00']);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^warning: the event log starts at \S+: events committed from 2000-01-01T00:00:00\.000Z until then are no longer held/m);
    expect(result.stdout).toMatch(/^0 events committed from 2000-01-01T00:00:00\.000Z to 2000-01-01T23:00:00\.000Z queued/m);
  });

  it('replay refuses bad times, an inverted window and unknown or disabled webhooks', async () => {
    const r = await receiver();
    const id = await addWebhook(db, r.url);
    const replay = (...args: string[]) => cli(['deliveries', 'replay', '--webhook', id, ...args]);
    for (const bad of ['yesterday', '2026-02-30', '2026-03-01T10:00']) {
      const result = await replay('--since', bad);
      expect(result.code, result.stderr).toBe(2);
      expect(result.stderr).toContain(`error: --since ${JSON.stringify(bad)} is not an ISO 8601 time`);
    }
    const inverted = await replay('--since', '2026-03-02', '--until', '2026-03-01T00:00:00Z');
    expect(inverted.code).toBe(2);
    expect(inverted.stderr).toMatch(/--until 2026-03-01T00:00:00\.000Z is before --since 2026-03-02T00:00:00\.000Z/);
    const unknown = await cli(['deliveries', 'replay', '--webhook', '00000000-0000-4000-8000-000000000000', '--since', '2026-03-01']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/no active webhook with id 00000000-0000-4000-8000-000000000000/);
    expect((await cli(['webhooks', 'disable', id])).code).toBe(0);
    const disabled = await replay('--since', '2026-03-01');
    expect(disabled.code).toBe(2);
    expect(disabled.stderr).toMatch(/is disabled; enable it first/);
  });
});

describe('replay and --from with delivery.retentionHours 0', () => {
  let db: TestDatabase;
  let daemon: Daemon;
  let r: Receiver;

  beforeAll(async () => {
    db = await createTestDatabase('replay_no_history');
    const config = await prepareDatabase(db);
    ({ daemon } = await startDaemon(config));
    r = await startReceiver();
  });

  afterAll(async () => {
    await daemon?.stop();
    await r?.close();
    await db?.drop();
  });

  function cli(args: string[]) {
    const o = testOverrides(db);
    return runCli(['--database-url', db.url, '--replication-slot', String(o['replication.slot']), ...args]);
  }

  it('the log keeps nothing a healthy webhook had: replay warns and queues 0; --from is refused', async () => {
    const id = await addWebhook(db, r.url);
    await waitForLanes(daemon, { live: [id] });
    await db.pool.query(`insert into person ("firstName") values ('Dora')`);
    await r.waitForCount(1);
    await waitForSlotToPassNow(db);
    const since = new Date(Date.now() - 3_600_000).toISOString();
    const replay = await cli(['deliveries', 'replay', '--webhook', id, '--since', since]);
    expect(replay.code, replay.stderr).toBe(0);
    expect(replay.stdout).toMatch(/^warning: the event log is empty, so nothing can be replayed \(delivery\.retentionHours is 0: /m);
    expect(replay.stdout).toMatch(/^0 events committed from .* queued/m);

    const webhooks = async () => (await db.pool.query('select count(*)::int as n from webhook_bridge.webhooks')).rows[0].n;
    const before = await webhooks();
    const added = await cli(['webhooks', 'add', '--url', r.url, '--from', since]);
    expect(added.code).toBe(2);
    expect(added.stderr).toMatch(/^error: --from needs delivery\.retentionHours above 0/m);
    expect(await webhooks()).toBe(before);
    await waitForLaneIdle(daemon, db, id);
    expect(r.requests).toHaveLength(1);
  });
});

/** `webhooks add --from` on Twenty's core.webhook: the cursor is written with the row, or not at all. */
describe('webhooks add --from in Twenty mode', () => {
  let db: TestDatabase;
  let alpha: TwentyWorkspace;
  const base = () => [
    '--database-url',
    db.url,
    '--source-mode',
    'twenty',
    '--replication-slot',
    `slot_${db.name}`.slice(0, 63),
    '--delivery-retention-hours',
    '1',
  ];

  /** A logged event of workspace alpha (its body does not matter here), committed at `at`. */
  function logged(lsn: string, at: string): LoggedEvent {
    return {
      commitLsn: parseLsn(lsn),
      changeIndex: 0,
      commitTime: new Date(at),
      object: 'person',
      action: 'created',
      recordKey: `person:${lsn}`,
      workspaceId: alpha.id,
      body: '',
      bodyParts: [',"eventName":"person.created","webhookId":', ',"record":{}}'],
      payloadKey: 'record',
    };
  }

  beforeAll(async () => {
    db = await createTestDatabase('replay_twenty');
    const client = await db.pool.connect();
    try {
      await client.query(TWENTY_CORE_SQL);
      alpha = await createTwentyWorkspace(client, { displayName: 'Alpha', objects: [] });
      await migrate(client, testConfig(db, { 'source.mode': 'twenty' }));
    } finally {
      client.release();
    }
    await appendSegment(db.pool, 'webhook_bridge', [logged('0/1000', '2026-03-01T10:00:00Z'), logged('0/2000', '2026-03-01T10:05:00Z')]);
  });

  afterAll(async () => {
    await db?.drop();
  });

  async function cursorOf(webhookId: string): Promise<string | null> {
    const { rows } = await db.pool.query(`select lsn::text || '#' || change_index as at from webhook_bridge.log_cursors where webhook_id = $1`, [webhookId]);
    return rows[0]?.at ?? null;
  }

  it('starts the cursor at the first event since --from, at the log start, or after its end, with the webhook row', async () => {
    const add = (from: string, workspace = alpha.id) =>
      runCli([...base(), 'webhooks', 'add', '--url', 'https://example.com/hook', '--workspace-id', workspace, '--from', from]);
    const cases: Array<[string, string, RegExp | null]> = [
      ['2026-03-01T10:03:00Z', '0/2000#0', null],
      ['2026-03-01T09:00:00Z', '0/1000#0', /^warning: the event log starts at 2026-03-01T10:00:00\.000Z, after 2026-03-01T09:00:00\.000Z/m],
      ['2026-03-01T11:04:00+01:00', '0/2000#0', null],
      [
        '2026-03-01T11:00:00Z',
        '0/2000#1',
        /^warning: the event log holds no event committed at or after 2026-03-01T11:00:00\.000Z: the webhook gets the events committed from now on/m,
      ],
    ];
    for (const [from, cursor, warning] of cases) {
      const added = await add(from);
      expect(added.code, added.stderr).toBe(0);
      const id = /added webhook ([0-9a-f-]{36}) -> .* in workspace /.exec(added.stdout)![1]!;
      expect(await cursorOf(id), from).toBe(cursor);
      if (warning === null) expect(added.stdout).not.toMatch(/warning/);
      else expect(added.stdout).toMatch(warning);
    }
    const cursors = async () => (await db.pool.query('select count(*)::int as n from webhook_bridge.log_cursors')).rows[0].n;
    const before = await cursors();
    const refused = await add('2026-03-01T10:03:00Z', randomUUID());
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/^error: no workspace /m);
    expect(await cursors()).toBe(before);
  });
});
