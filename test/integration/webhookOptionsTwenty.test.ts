import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BridgeConfig } from '../../src/config.js';
import type { Daemon } from '../../src/daemon.js';
import { migrate } from '../../src/migrate.js';
import { eventually, runCli, slotStreaming, startDaemon, testConfig, waitForLaneIdle, waitForLanes } from '../helpers/bridge.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startReceiver, type ReceivedRequest, type Receiver } from '../helpers/receiver.js';
import { expectEvents, filteredCount, insertOptions, type StoredOptions as Options } from '../helpers/webhookOptions.js';
import { createTwentyWorkspace, STANDARD_OBJECTS, TWENTY_CORE_SQL, type TwentyWorkspace } from '../fixtures/twentyDatabase.js';

/** Per-webhook options on Twenty's body (core.webhook), and the README's n8n case. */

describe('webhook options, Twenty mode', () => {
  let db: TestDatabase;
  let daemon: Daemon;
  let ws: TwentyWorkspace;
  const receivers: Receiver[] = [];

  async function receiver(): Promise<Receiver> {
    const r = await startReceiver();
    receivers.push(r);
    return r;
  }

  async function hook(url: string, options: Options | null): Promise<string> {
    const client = await db.pool.connect();
    try {
      await client.query('begin');
      const { rows } = await client.query(
        `insert into core.webhook ("targetUrl", operations, secret, "workspaceId") values ($1, '{person.*}', 's', $2) returning id::text`,
        [url, ws.id],
      );
      if (options !== null) {
        await insertOptions(client, rows[0].id as string, options);
      }
      await client.query('commit');
      return rows[0].id as string;
    } finally {
      client.release();
    }
  }

  /** What a receiver got, sorted: events of different records may arrive in any order. */
  const names = (r: Receiver): string[] =>
    r.requests
      .map((q: ReceivedRequest) => `${q.json.eventName} ${q.json.record.name?.firstName}${q.json.updatedFields ? ` [${q.json.updatedFields}]` : ''}`)
      .sort();

  async function insertPerson(first: string, vip: boolean): Promise<string> {
    const { rows } = await db.pool.query(
      `insert into ${ws.schema}.person ("nameFirstName", "emailsPrimaryEmail", "phonesPrimaryPhoneNumber", vip) values ($1, $2, '555', $3) returning id::text`,
      [first, `${first.toLowerCase()}@example.com`, vip],
    );
    return rows[0].id as string;
  }

  async function settle(rs: Receiver[], ids: string[]): Promise<void> {
    for (const [i, r] of rs.entries()) {
      await r.waitFor((reqs) => reqs.some((q) => q.json.record.name?.firstName === 'vipMarker' && q.json.eventName === 'person.created'));
      await waitForLaneIdle(daemon, db, ids[i]!);
    }
  }

  beforeAll(async () => {
    db = await createTestDatabase('webhook_options_twenty');
    const client = await db.pool.connect();
    let config: BridgeConfig;
    try {
      await client.query(TWENTY_CORE_SQL);
      // A custom field on person, as a Twenty user would add to mark VIPs.
      const objects = STANDARD_OBJECTS.map((o) => (o.nameSingular === 'person' ? { ...o, fields: [...o.fields, { name: 'vip', type: 'BOOLEAN' }] } : o));
      ws = await createTwentyWorkspace(client, { displayName: 'Options', objects });
      config = testConfig(db, { 'source.mode': 'twenty', 'source.discoveryIntervalMs': 500 });
      await migrate(client, config);
    } finally {
      client.release();
    }
    ({ daemon } = await startDaemon(config));
    await eventually(() => slotStreaming(db.pool), 'the slot to stream');
  });

  afterAll(async () => {
    await daemon?.stop();
    await Promise.all(receivers.map((r) => r.close()));
    await db?.drop();
  });

  it("each option on Twenty's body: field names, record filter, record keys kept or removed", async () => {
    const [all, onFields, filtered, columns] = [await receiver(), await receiver(), await receiver(), await receiver()];
    const ids = [
      await hook(all.url, null),
      await hook(onFields.url, { on_fields: ['emails', 'jobTitle'] }),
      await hook(filtered.url, { filter: 'record.name.firstName.startsWith("vip")' }),
      await hook(columns.url, { exclude_columns: ['phones', 'emails'] }),
    ];
    await waitForLanes(daemon, { live: ids });
    const vip = await insertPerson('vipAda', true);
    const bob = await insertPerson('Bob', false);
    await db.pool.query(`update ${ws.schema}.person set "phonesPrimaryPhoneNumber" = '556' where id = $1`, [vip]);
    await db.pool.query(`update ${ws.schema}.person set "emailsPrimaryEmail" = 'ada@new.example' where id = $1`, [vip]);
    await db.pool.query(`update ${ws.schema}.person set "jobTitle" = 'Chef' where id = $1`, [bob]);
    await insertPerson('vipMarker', true);
    await settle([all, onFields, filtered, columns], ids);

    expectEvents(
      all,
      [
        'person.created vipAda',
        'person.created Bob',
        'person.updated vipAda [phones]',
        'person.updated vipAda [emails]',
        'person.updated Bob [jobTitle]',
        'person.created vipMarker',
      ],
      names,
    );
    expectEvents(
      onFields,
      ['person.created vipAda', 'person.created Bob', 'person.updated vipAda [emails]', 'person.updated Bob [jobTitle]', 'person.created vipMarker'],
      names,
    );
    expectEvents(filtered, ['person.created vipAda', 'person.updated vipAda [phones]', 'person.updated vipAda [emails]', 'person.created vipMarker'], names);
    expectEvents(columns, ['person.created vipAda', 'person.created Bob', 'person.updated Bob [jobTitle]', 'person.created vipMarker'], names);
    for (const q of columns.requests) {
      expect(q.json.record).not.toHaveProperty('phones');
      expect(q.json.record).not.toHaveProperty('emails');
      expect(q.json.record).toHaveProperty('jobTitle');
      expect(Object.keys(q.json).slice(0, 6)).toEqual(['targetUrl', 'eventName', 'objectMetadata', 'workspaceId', 'webhookId', 'eventDate']);
      expect([q.json.targetUrl, q.json.webhookId]).toEqual([columns.url, ids[3]]);
    }
    // Webhooks without options keep the shared body (theirs differs only in targetUrl and webhookId).
    const first = (r: Receiver) => r.requests.find((q) => q.json.eventName === 'person.created' && q.json.record.name.firstName === 'vipAda')!;
    expect(first(onFields).rawBody).toBe(first(all).rawBody.replace(all.url, onFields.url).replace(ids[0]!, ids[1]!));
    expect(await filteredCount(daemon, ids[3]!, 'columns')).toBe(2);
  });

  it("the README's n8n case: set through the CLI on a running daemon (core.webhook), only VIPs' email or job title changes, no personal columns", async () => {
    const [all, n8n] = [await receiver(), await receiver()];
    const ids = [await hook(all.url, null), await hook(n8n.url, null)];
    await waitForLanes(daemon, { live: ids });
    const set = await runCli(
      [
        ...['--database-url', db.url, '--source-mode', 'twenty', 'webhooks', 'set', ids[1]!],
        ...['--on-fields', 'emails,jobTitle', '--filter', 'record.vip', '--include-columns', 'id,name,emails,jobTitle,companyId,updatedAt'],
      ],
      { DATABASE_URL: undefined },
    );
    expect(set.code, set.stderr).toBe(0);
    // Options reach a running daemon through its poll: a change committed 2 s after `set` obeys them.
    const committed = Date.now();
    await eventually(() => Date.now() - committed >= 2_000, '2 s to pass');
    const vip = await insertPerson('Grace', true);
    const other = await insertPerson('Bob', false);
    await db.pool.query(`update ${ws.schema}.person set "phonesPrimaryPhoneNumber" = '556', city = 'Paris' where id = $1`, [vip]);
    await db.pool.query(`update ${ws.schema}.person set "emailsPrimaryEmail" = 'grace@navy.example' where id = $1`, [vip]);
    await db.pool.query(`update ${ws.schema}.person set "jobTitle" = 'Rear Admiral' where id = $1`, [vip]);
    await db.pool.query(`update ${ws.schema}.person set "emailsPrimaryEmail" = 'bob@new.example' where id = $1`, [other]);
    await insertPerson('vipMarker', true);
    await settle([all, n8n], ids);

    expectEvents(n8n, ['person.created Grace', 'person.updated Grace [emails]', 'person.updated Grace [jobTitle]', 'person.created vipMarker'], names);
    expect(all.requests).toHaveLength(7);
    const update = n8n.requests.find((q) => q.json.updatedFields?.includes('emails'))!;
    expect(Object.keys(update.json.record)).toEqual(['id', 'updatedAt', 'name', 'emails', 'jobTitle', 'companyId']);
    expect(update.json.record.emails.primaryEmail).toBe('grace@navy.example');
    expect(update.rawBody).not.toMatch(/556|Paris|searchVector|"vip"/);
    expect(await filteredCount(daemon, ids[1]!, 'on_fields')).toBe(1);
    expect(await filteredCount(daemon, ids[1]!, 'filter')).toBe(2);
  });
});
