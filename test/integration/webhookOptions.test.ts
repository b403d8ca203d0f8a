import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BridgeConfig } from '../../src/config.js';
import type { Daemon } from '../../src/daemon.js';
import { migrate } from '../../src/migrate.js';
import { eventually, LogCapture, prepareDatabase, runCli, slotStreaming, startDaemon, testConfig, waitForLaneIdle, waitForLanes } from '../helpers/bridge.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startReceiver, type ReceivedRequest, type Receiver } from '../helpers/receiver.js';
import { createTwentyWorkspace, STANDARD_OBJECTS, TWENTY_CORE_SQL, type TwentyWorkspace } from '../fixtures/twentyDatabase.js';

/**
 * Per-webhook options (`webhooks set`): changed fields, a CEL row filter, column selection, in both
 * bodies, set from the CLI on a running daemon.
 */

interface Options {
  on_fields?: string[];
  filter?: string;
  include_columns?: string[];
  exclude_columns?: string[];
}

/** The filtered-event counter of one webhook and reason, as /metrics would show it. */
async function filteredCount(daemon: Daemon, webhookId: string, reason: string): Promise<number> {
  const metric = await daemon.metrics.registry.getSingleMetric('pgwb_events_filtered_total')!.get();
  return metric.values.find((v) => v.labels.webhook_id === webhookId && v.labels.reason === reason)?.value ?? 0;
}

/** A receiver got exactly these events; events of different records may arrive in any order. */
function expectEvents(r: Receiver, expected: string[], names: (r: Receiver) => string[]): void {
  expect(names(r)).toEqual([...expected].sort());
}

describe('webhook options, tables mode', () => {
  let db: TestDatabase;
  let config: BridgeConfig;
  let daemon: Daemon;
  let logs: LogCapture;
  const receivers: Receiver[] = [];
  const cli = (...args: string[]) => runCli(['--database-url', db.url, ...args], { DATABASE_URL: undefined });

  async function receiver(): Promise<Receiver> {
    const r = await startReceiver();
    receivers.push(r);
    return r;
  }

  /** A webhook and its options in one transaction: the stream's reload sees both. */
  async function hook(url: string, options: Options | null): Promise<string> {
    const client = await db.pool.connect();
    try {
      await client.query('begin');
      const { rows } = await client.query(
        `insert into webhook_bridge.webhooks ("targetUrl", operations, secret) values ($1, '{person.*}', 's') returning id::text`,
        [url],
      );
      if (options !== null) {
        await client.query(
          `insert into webhook_bridge.webhook_options (webhook_id, on_fields, filter, include_columns, exclude_columns) values ($1, $2, $3, $4, $5)`,
          [rows[0].id, options.on_fields ?? null, options.filter ?? null, options.include_columns ?? null, options.exclude_columns ?? null],
        );
      }
      await client.query('commit');
      return rows[0].id as string;
    } finally {
      client.release();
    }
  }

  /** What a receiver got, sorted: events of different records may arrive in any order. */
  const names = (r: Receiver): string[] =>
    r.requests.map((q) => `${q.json.event} ${q.json.data.firstName}${q.json.updatedFields ? ` [${q.json.updatedFields}]` : ''}`).sort();

  async function person(firstName: string, extra: Record<string, string | null> = {}): Promise<string> {
    const row = { email: `${firstName.toLowerCase()}@example.com`, phone: '+1 555 0100', jobTitle: null, ...extra };
    const { rows } = await db.pool.query(`insert into public.person ("firstName", email, phone, "jobTitle") values ($1, $2, $3, $4) returning id::text`, [
      firstName,
      row.email,
      row.phone,
      row.jobTitle,
    ]);
    return rows[0].id as string;
  }

  /** Waits until every receiver got `marker` and every hook's lane is idle: nothing else is on its way. */
  async function settle(marker: string, hooks: Array<[string, Receiver]>): Promise<void> {
    for (const [id, r] of hooks) {
      await r.waitFor((reqs) => reqs.some((q) => q.json.data.firstName === marker));
      await waitForLaneIdle(daemon, db, id);
    }
  }

  beforeAll(async () => {
    db = await createTestDatabase('webhook_options');
    config = await prepareDatabase(db);
    ({ daemon, logs } = await startDaemon(config));
    await eventually(() => slotStreaming(db.pool), 'the slot to stream');
  });

  afterAll(async () => {
    await daemon?.stop();
    await Promise.all(receivers.map((r) => r.close()));
    await db?.drop();
  });

  it('changed fields, row filter and column selection: each webhook gets its own events and bodies', async () => {
    const [all, onFields, filtered, columns] = [await receiver(), await receiver(), await receiver(), await receiver()];
    const ids = [
      await hook(all.url, null),
      await hook(onFields.url, { on_fields: ['email', 'jobTitle'] }),
      await hook(filtered.url, { filter: 'data.firstName.startsWith("vip")' }),
      await hook(columns.url, { exclude_columns: ['phone', 'email'] }),
    ];
    await waitForLanes(daemon, { live: ids });
    const vip = await person('vipAda');
    const bob = await person('Bob');
    await db.pool.query(`update public.person set phone = '+1 555 0199' where id = $1`, [vip]);
    await db.pool.query(`update public.person set email = 'ada@new.example', "jobTitle" = 'CTO' where id = $1`, [vip]);
    await db.pool.query(`update public.person set "jobTitle" = 'Chef' where id = $1`, [bob]);
    await db.pool.query(`delete from public.person where id = $1`, [bob]);
    await person('vipMarker');
    await settle(
      'vipMarker',
      [ids[0]!, ids[1]!, ids[2]!, ids[3]!].map((id, i) => [id, [all, onFields, filtered, columns][i]!] as [string, Receiver]),
    );

    expectEvents(
      all,
      [
        'person.created vipAda',
        'person.created Bob',
        'person.updated vipAda [phone]',
        'person.updated vipAda [email,jobTitle]',
        'person.updated Bob [jobTitle]',
        'person.destroyed Bob',
        'person.created vipMarker',
      ],
      names,
    );
    expectEvents(
      onFields,
      [
        'person.created vipAda',
        'person.created Bob',
        'person.updated vipAda [email,jobTitle]',
        'person.updated Bob [jobTitle]',
        'person.destroyed Bob',
        'person.created vipMarker',
      ],
      names,
    );
    expectEvents(
      filtered,
      ['person.created vipAda', 'person.updated vipAda [phone]', 'person.updated vipAda [email,jobTitle]', 'person.created vipMarker'],
      names,
    );
    expectEvents(
      columns,
      [
        'person.created vipAda',
        'person.created Bob',
        'person.updated vipAda [jobTitle]',
        'person.updated Bob [jobTitle]',
        'person.destroyed Bob',
        'person.created vipMarker',
      ],
      names,
    );
    for (const q of columns.requests) {
      expect(Object.keys(q.json.data)).not.toContain('phone');
      expect(Object.keys(q.json.data)).not.toContain('email');
      expect(q.json.data).toHaveProperty('firstName');
    }
    // Webhooks without options get the shared bytes: the same body as the unfiltered webhook.
    expect(onFields.requests[0]!.rawBody).toBe(all.requests[0]!.rawBody);
    expect(await filteredCount(daemon, ids[1]!, 'on_fields')).toBe(1);
    expect(await filteredCount(daemon, ids[2]!, 'filter')).toBe(3);
    expect(await filteredCount(daemon, ids[3]!, 'columns')).toBe(1);
    expect(await filteredCount(daemon, ids[0]!, 'filter')).toBe(0);
  });

  it('a filter that fails on some rows: those are not sent, the others are, one log line, the daemon streams on', async () => {
    const r = await receiver();
    const id = await hook(r.url, { filter: 'data.jobTitle.startsWith("CEO")' });
    await waitForLanes(daemon, { live: [id] });
    for (let i = 0; i < 3; i++) await person(`Nobody${i}`); // jobTitle null: startsWith fails
    await person('Boss', { jobTitle: 'CEO of things' });
    await person('Clerk', { jobTitle: 'Clerk' });
    await person('vipMarker2', { jobTitle: 'CEO again' });
    await r.waitFor((reqs) => reqs.some((q) => q.json.data.firstName === 'vipMarker2'));
    await waitForLaneIdle(daemon, db, id);
    expectEvents(r, ['person.created Boss', 'person.created vipMarker2'], names);
    expect(await filteredCount(daemon, id, 'filter_error')).toBe(3);
    expect(await filteredCount(daemon, id, 'filter')).toBe(1);
    const failures = logs.lines.filter((l) => l.webhookId === id && /its filter failed/.test(l.msg));
    expect(failures).toHaveLength(1);
    expect(failures[0]!.problem).toMatch(/startsWith|overload|null/);
    expect(daemon.readiness().ready).toBe(true);
  });

  it('a stored filter that no longer compiles: its webhook receives nothing, logged once, the others are unaffected', async () => {
    const [broken, other] = [await receiver(), await receiver()];
    const ids = [await hook(broken.url, { filter: 'data.firstName ==' }), await hook(other.url, null)];
    await waitForLanes(daemon, { live: ids });
    await person('vipBroken1');
    await person('vipBroken2');
    await other.waitFor((reqs) => reqs.filter((q) => q.json.data.firstName.startsWith('vipBroken')).length === 2);
    await waitForLaneIdle(daemon, db, ids[0]!);
    expect(broken.requests).toHaveLength(0);
    expect(await filteredCount(daemon, ids[0]!, 'filter_error')).toBe(2);
    expect(logs.lines.filter((l) => l.webhookId === ids[0] && /stored filter does not compile/.test(l.msg))).toHaveLength(1);
  });

  it('webhooks set on a running daemon applies to a change committed 2 s later; an empty value clears it', async () => {
    const r = await receiver();
    const id = await hook(r.url, null);
    await waitForLanes(daemon, { live: [id] });
    const ada = await person('Ada');

    const set = await cli('webhooks', 'set', id, '--on-fields', 'email');
    expect(set.code, set.stderr).toBe(0);
    expect(set.stdout).toContain(`webhook ${id} options: on-fields=email`);
    // The bound itself is what is tested: options apply to changes committed 2 s after `set`.
    const committed = Date.now();
    await eventually(() => Date.now() - committed >= 2_000, '2 s to pass');
    await db.pool.query(`update public.person set phone = '+1 555 0001' where id = $1`, [ada]);
    await db.pool.query(`update public.person set email = 'ada@set.example' where id = $1`, [ada]);
    await r.waitFor((reqs) => reqs.some((q) => q.json.data.email === 'ada@set.example'));
    await waitForLaneIdle(daemon, db, id);
    expectEvents(r, ['person.created Ada', 'person.updated Ada [email]'], names);

    const cleared = await cli('webhooks', 'set', id, '--on-fields', '');
    expect(cleared.code, cleared.stderr).toBe(0);
    expect(cleared.stdout).toContain(`webhook ${id} options: (none)`);
    const clearedAt = Date.now();
    await eventually(() => Date.now() - clearedAt >= 2_000, '2 s to pass');
    await db.pool.query(`update public.person set phone = '+1 555 0002' where id = $1`, [ada]);
    await r.waitFor((reqs) => reqs.some((q) => q.json.data.phone === '+1 555 0002'));
  });

  it('webhooks set refuses what it cannot apply, with a usage exit code; list shows the options', async () => {
    const id = await hook('http://127.0.0.1:9/never', null);
    const refusals: Array<[string[], RegExp]> = [
      [['webhooks', 'set', '00000000-0000-4000-8000-000000000000', '--filter', 'true'], /no webhook with id 00000000-0000-4000-8000-000000000000/],
      [['webhooks', 'set', id, '--filter', 'data.firstName.startsWith('], /filter does not compile: at line 1, column \d+: /],
      [['webhooks', 'set', id, '--include-columns', 'a', '--exclude-columns', 'b'], /--include-columns or --exclude-columns, not both/],
      [['webhooks', 'set', id, '--coalesce', '1.5'], /--coalesce must be a whole number of seconds from 0 \(off\) to 3600/],
      [['webhooks', 'set', id, '--on-fields', 'email', '--coalesce', '3601'], /--coalesce must be a whole number of seconds from 0 \(off\) to 3600/],
    ];
    const [unknown, ...results] = await Promise.all([cli('webhooks', 'set', id, '--no-such-option', 'x'), ...refusals.map(([args]) => cli(...args))]);
    for (const [i, [args, message]] of refusals.entries()) {
      const result = results[i]!;
      expect(result.code, `${args.join(' ')}: ${result.stdout}${result.stderr}`).toBe(2);
      expect(result.stderr).toMatch(message);
    }
    expect(unknown!.code).not.toBe(0);
    expect(unknown!.stderr).toMatch(/unknown option '--no-such-option'/);
    const { rows } = await db.pool.query(`select count(*)::int as n from webhook_bridge.webhook_options where webhook_id = $1`, [id]);
    expect(rows[0].n).toBe(0);

    const set = await cli(
      'webhooks',
      'set',
      id,
      '--on-fields',
      'name,email',
      '--filter',
      'data.firstName == "x"',
      '--include-columns',
      'id,name',
      '--coalesce',
      '2',
    );
    expect(set.code, set.stderr).toBe(0);
    const [conflict, list, listJson] = await Promise.all([
      cli('webhooks', 'set', id, '--exclude-columns', 'phone'),
      cli('webhooks', 'list'),
      cli('webhooks', 'list', '--json'),
    ]);
    expect(conflict.code).toBe(2);
    expect(conflict.stderr).toMatch(/has --include-columns set; clear it in the same command \(--include-columns ''\)/);
    expect(list.stdout).toContain(`options: on-fields=name,email filter=data.firstName == "x" include-columns=id,name coalesce=2s`);
    const json = JSON.parse(listJson.stdout) as Array<{ id: string; options: unknown }>;
    expect(json.find((w) => w.id === id)!.options).toEqual({
      onFields: ['name', 'email'],
      filter: 'data.firstName == "x"',
      includeColumns: ['id', 'name'],
      excludeColumns: null,
      coalesceSeconds: 2,
    });
    expect(json.find((w) => w.id !== id)!.options).toBeNull();

    const swapped = await cli('webhooks', 'set', id, '--include-columns', '', '--exclude-columns', 'phone', '--coalesce', '0');
    expect(swapped.code, swapped.stderr).toBe(0);
    const after = await db.pool.query(
      `select include_columns, exclude_columns, coalesce_seconds, on_fields from webhook_bridge.webhook_options where webhook_id = $1`,
      [id],
    );
    expect(after.rows).toEqual([{ include_columns: null, exclude_columns: ['phone'], coalesce_seconds: null, on_fields: ['name', 'email'] }]);
  });
});

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
        await client.query(
          `insert into webhook_bridge.webhook_options (webhook_id, on_fields, filter, include_columns, exclude_columns) values ($1, $2, $3, $4, $5)`,
          [rows[0].id, options.on_fields ?? null, options.filter ?? null, options.include_columns ?? null, options.exclude_columns ?? null],
        );
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
