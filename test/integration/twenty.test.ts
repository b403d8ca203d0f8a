import { createHmac } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BridgeConfig } from '../../src/config.js';
import type { Daemon } from '../../src/daemon.js';
import { migrate } from '../../src/migrate.js';
import { eventually, LogCapture, runCli, slotStreaming, startDaemon, testConfig } from '../helpers/bridge.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startReceiver, type ReceivedRequest, type Receiver } from '../helpers/receiver.js';
import { addTwentyObject, createTwentyWorkspace, TWENTY_CORE_SQL, type ObjectDefinition, type TwentyWorkspace } from '../fixtures/twentyDatabase.js';

/**
 * Twenty mode on a database shaped like Twenty's: two workspaces (one registered through
 * core.workspace."databaseSchema", one only through core."dataSource"), the standard objects and a
 * custom one, webhooks in core.webhook.
 */
const SECRET = 'twenty-webhook-secret';

describe('Twenty mode', () => {
  let db: TestDatabase;
  let config: BridgeConfig;
  let daemon: Daemon;
  let logs: LogCapture;
  let alpha: TwentyWorkspace;
  let beta: TwentyWorkspace;
  const receivers: Receiver[] = [];

  async function receiver(): Promise<Receiver> {
    const r = await startReceiver();
    receivers.push(r);
    return r;
  }

  async function addWebhook(workspace: TwentyWorkspace, url: string, operations: string[] = ['*.*'], secret = SECRET): Promise<string> {
    const { rows } = await db.pool.query(
      `insert into core.webhook ("targetUrl", operations, secret, "workspaceId") values ($1, $2, $3, $4) returning id::text`,
      [url, operations, secret, workspace.id],
    );
    return rows[0].id;
  }

  /** Commits a marker row and waits for it: everything committed before it has been routed by then. */
  async function flush(workspace: TwentyWorkspace, r: Receiver, label: string): Promise<void> {
    await db.pool.query(`insert into ${workspace.schema}.note (title) values ($1)`, [label]);
    await r.waitFor((reqs) => reqs.some((q) => q.json?.record?.title === label));
  }

  /**
   * What receivers written for Twenty check: Twenty's docs re-serialise the parsed body
   * (`JSON.stringify(req.body)`), the community n8n node signs over the raw body.
   */
  function expectVerifiedAsTwentyReceiversDo(requests: ReceivedRequest[], secret = SECRET): void {
    for (const q of requests) {
      const timestamp = q.headers['x-twenty-webhook-timestamp'] as string;
      const hmac = (text: string) => createHmac('sha256', secret).update(`${timestamp}:${text}`).digest('hex');
      expect(q.headers['x-twenty-webhook-signature'], q.rawBody).toBe(hmac(JSON.stringify(q.json)));
      expect(q.headers['x-twenty-webhook-signature'], q.rawBody).toBe(hmac(q.rawBody));
    }
  }

  const named = (r: Receiver, eventName: string): ReceivedRequest[] => r.requests.filter((q) => q.json?.eventName === eventName);

  beforeAll(async () => {
    db = await createTestDatabase('twenty');
    const client = await db.pool.connect();
    try {
      await client.query(TWENTY_CORE_SQL);
      alpha = await createTwentyWorkspace(client, { displayName: 'Alpha', registration: 'databaseSchema' });
      beta = await createTwentyWorkspace(client, { displayName: 'Beta', registration: 'dataSource' });
      config = testConfig(db, { 'source.mode': 'twenty', 'source.discoveryIntervalMs': 500 });
      await migrate(client, config);
    } finally {
      client.release();
    }
    ({ daemon, logs } = await startDaemon(config));
    await eventually(() => slotStreaming(db.pool), 'the slot to stream');
  });

  afterAll(async () => {
    await daemon?.stop();
    await Promise.all(receivers.map((r) => r.close()));
    await db?.drop();
  });

  it('migrate put every workspace table in the publication, FULL, but not timelineActivity', async () => {
    const { rows } = await db.pool.query(
      `select p.schemaname || '.' || p.tablename as t, c.relreplident as ident from pg_publication_tables p
         join pg_class c on c.oid = (quote_ident(p.schemaname) || '.' || quote_ident(p.tablename))::regclass where p.pubname = 'pgwb'`,
    );
    const published = new Map(rows.map((r) => [r.t as string, r.ident as string]));
    for (const ws of [alpha, beta]) {
      for (const table of ['person', 'company', 'note', 'task', '_pet']) expect(published.get(`${ws.schema}.${table}`), `${ws.schema}.${table}`).toBe('f');
      expect(published.has(`${ws.schema}.timelineActivity`)).toBe(false);
    }
    expect(published.has('core.webhook')).toBe(true);
  });

  it("a webhook receives only its own workspace's changes, whatever its operations say", async () => {
    const [ra, rb] = [await receiver(), await receiver()];
    await addWebhook(alpha, ra.url);
    await addWebhook(beta, rb.url, ['*.*', 'person.created']);
    await flush(alpha, ra, 'alpha ready');
    await flush(beta, rb, 'beta ready');
    for (let i = 0; i < 5; i++) {
      await db.pool.query(`insert into ${alpha.schema}.person ("nameFirstName", "emailsPrimaryEmail") values ($1, $2)`, [
        `AlphaOnly${i}`,
        `a${i}@alpha.example`,
      ]);
      await db.pool.query(`insert into ${beta.schema}.person ("nameFirstName", "emailsPrimaryEmail") values ($1, $2)`, [`BetaOnly${i}`, `b${i}@beta.example`]);
    }
    await ra.waitFor((reqs) => reqs.filter((q) => q.json.eventName === 'person.created').length >= 5);
    await rb.waitFor((reqs) => reqs.filter((q) => q.json.eventName === 'person.created').length >= 5);
    await flush(alpha, ra, 'alpha done');
    await flush(beta, rb, 'beta done');
    expect(named(ra, 'person.created')).toHaveLength(5);
    expect(named(rb, 'person.created')).toHaveLength(5);
    for (const q of ra.requests) {
      expect(q.json.workspaceId).toBe(alpha.id);
      expect(q.rawBody).not.toMatch(/BetaOnly|beta\.example/);
      expect(q.rawBody).not.toContain(beta.id);
    }
    expectVerifiedAsTwentyReceiversDo([...ra.requests, ...rb.requests]);
    for (const q of rb.requests) {
      expect(q.json.workspaceId).toBe(beta.id);
      expect(q.rawBody).not.toMatch(/AlphaOnly|alpha\.example/);
      expect(q.rawBody).not.toContain(alpha.id);
    }
  });

  it("sends Twenty's body: its keys in order, bytes a receiver can re-serialise, records as Twenty presents them", async () => {
    const r = await receiver();
    const webhookId = await addWebhook(alpha, r.url, ['person.*', 'company.*']);
    await db.pool.query(`insert into ${alpha.schema}.note (title) values ('not for this webhook')`);
    const company = await db.pool.query(
      `insert into ${alpha.schema}.company (name, "domainNamePrimaryLinkUrl", employees, "annualRecurringRevenueAmountMicros", "annualRecurringRevenueCurrencyCode", tags, "addressAddressCity", "addressAddressLat")
       values ('Acme', 'https://acme.example', 12, 1500000000, 'EUR', '{SAAS,B2B}', 'Paris', 48.8566) returning id::text`,
    );
    await db.pool.query(
      `insert into ${alpha.schema}.person ("nameFirstName", "nameLastName", "emailsPrimaryEmail", "emailsAdditionalEmails", "companyId", "legacyScore", position, "createdBySource", "createdByName")
       values ('Ada', 'Lovelace', 'ada@acme.example', '["ada@home.example"]', $1, 99, 3, 'API', 'Zapier')`,
      [company.rows[0].id],
    );
    await r.waitForCount(2);
    const [companyEvent, personEvent] = r.requests;
    expectVerifiedAsTwentyReceiversDo(r.requests);
    for (const q of r.requests) {
      expect(JSON.stringify(JSON.parse(q.rawBody))).toBe(q.rawBody);
      expect(Object.keys(q.json)).toEqual(['targetUrl', 'eventName', 'objectMetadata', 'workspaceId', 'webhookId', 'eventDate', 'record']);
      expect(q.json.targetUrl).toBe(r.url);
      expect(q.json.webhookId).toBe(webhookId);
      expect(q.json.eventDate).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    }
    expect(companyEvent.json.eventName).toBe('company.created');
    expect(companyEvent.json.objectMetadata).toEqual({ id: alpha.objectIds.company, nameSingular: 'company' });
    expect(companyEvent.json.record).toMatchObject({
      name: 'Acme',
      domainName: { primaryLinkLabel: '', primaryLinkUrl: 'https://acme.example', secondaryLinks: [] },
      employees: 12,
      annualRecurringRevenue: { amountMicros: 1500000000, currencyCode: 'EUR' },
      tags: ['SAAS', 'B2B'],
      address: { addressStreet1: '', addressCity: 'Paris', addressLat: '48.8566', addressLng: null },
      idealCustomerProfile: null,
      createdBy: { source: 'MANUAL', workspaceMemberId: null, name: 'System', context: null },
    });
    // Generated columns (the search vector) are replicated from Postgres 18 on (publish_generated_columns).
    const { rows: version } = await db.pool.query(`select current_setting('server_version_num')::int >= 180000 as generated`);
    if (version[0].generated) expect(typeof companyEvent.json.record.searchVector).toBe('string');
    else expect(companyEvent.json.record).not.toHaveProperty('searchVector');
    const person = personEvent.json.record;
    expect(personEvent.json.eventName).toBe('person.created');
    expect(person).toMatchObject({
      name: { firstName: 'Ada', lastName: 'Lovelace' },
      emails: { primaryEmail: 'ada@acme.example', additionalEmails: ['ada@home.example'] },
      jobTitle: '',
      city: '',
      phones: { primaryPhoneNumber: '', primaryPhoneCountryCode: '', primaryPhoneCallingCode: '', additionalPhones: [] },
      companyId: company.rows[0].id,
      position: 3,
      createdBy: { source: 'API', name: 'Zapier' },
      deletedAt: null,
    });
    expect(person).not.toHaveProperty('legacyScore');
    expect(person).not.toHaveProperty('nameFirstName');
    expect(person).not.toHaveProperty('company');
    expect(person.createdAt).toMatch(/Z$/);
  });

  it('created, updated, deleted, restored, destroyed as Twenty sends them; nothing for updatedAt alone or timeline activities', async () => {
    const r = await receiver();
    await addWebhook(beta, r.url, ['task.*', 'timelineActivity.*', 'note.created']);
    await flush(beta, r, 'lifecycle ready');
    const { rows } = await db.pool.query(`insert into ${beta.schema}.task (title, status) values ('Call Ada', 'TODO') returning id::text`);
    const id = rows[0].id;
    await db.pool.query(`update ${beta.schema}.task set status = 'IN_PROGRESS', "updatedAt" = now() where id = $1`, [id]);
    await db.pool.query(`update ${beta.schema}.task set "updatedAt" = now() + interval '1 minute' where id = $1`, [id]);
    await db.pool.query(`insert into ${beta.schema}."timelineActivity" (name, properties) values ('task.updated', '{"diff": {}}')`);
    await db.pool.query(`update ${beta.schema}.task set "deletedAt" = now() where id = $1`, [id]);
    await db.pool.query(`update ${beta.schema}.task set "deletedAt" = null where id = $1`, [id]);
    await db.pool.query(`delete from ${beta.schema}.task where id = $1`, [id]);
    // One record's events arrive in commit order: once the last is here, the others (and any event
    // for the updatedAt-only update) are too. The marker is committed after the timeline activity.
    await r.waitFor((reqs) => reqs.some((q) => q.json.eventName === 'task.destroyed'));
    await flush(beta, r, 'lifecycle done');
    const events = r.requests.filter((q) => q.json.eventName.startsWith('task.') || q.json.eventName.startsWith('timelineActivity.'));
    expect(events.map((q) => q.json.eventName)).toEqual(['task.created', 'task.updated', 'task.deleted', 'task.restored', 'task.destroyed']);
    const [created, updated, deleted, restored, destroyed] = events.map((q) => q.json);
    expect(created).not.toHaveProperty('updatedFields');
    expect(created.record.status).toBe('TODO');
    expect(updated.updatedFields).toEqual(['status']);
    expect(updated.record.status).toBe('IN_PROGRESS');
    expect(deleted.updatedFields).toEqual(['deletedAt']);
    expect(deleted.record.deletedAt).not.toBeNull();
    expect(restored.updatedFields).toEqual(['deletedAt']);
    expect(restored.record.deletedAt).toBeNull();
    expect(destroyed).not.toHaveProperty('updatedFields');
    expect(destroyed.record).toMatchObject({ id, title: 'Call Ada', status: 'IN_PROGRESS', deletedAt: null });
    expectVerifiedAsTwentyReceiversDo(r.requests);
    for (const q of events) expect(Object.keys(q.json).at(-1)).toBe(q.json.updatedFields ? 'updatedFields' : 'record');
  });

  it('signs as Twenty does: receivers that verify the raw body and those that re-serialise it both accept; an empty secret sends no signature', async () => {
    const [signed, unsigned] = [await receiver(), await receiver()];
    const secret = 'a3f1c0de9b8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c6b5a4938271605f4e';
    await addWebhook(alpha, signed.url, ['pet.*'], secret);
    await addWebhook(alpha, unsigned.url, ['pet.*'], '');
    await db.pool.query(
      `insert into ${alpha.schema}._pet (name, species, birthday, weight, traits, vaccinated, profile) values ('Rex', 'DOG', '2020-02-29', 12.50, '{loyal,"very loud"}', true, '{"chip": 12345, "notes": "ünïcode \\u2028"}')`,
    );
    await signed.waitForCount(1);
    await unsigned.waitForCount(1);
    const q = signed.requests[0];
    const timestamp = q.headers['x-twenty-webhook-timestamp'] as string;
    expect(timestamp).toMatch(/^\d{13}$/);
    expect(q.headers['x-twenty-webhook-nonce']).toMatch(/^[0-9a-f]{32}$/);
    const hmac = (text: string) => createHmac('sha256', secret).update(`${timestamp}:${text}`).digest('hex');
    // Twenty's docs: JSON.stringify(req.body); the community n8n node: the raw body.
    expect(q.headers['x-twenty-webhook-signature']).toBe(hmac(JSON.stringify(q.json)));
    expect(q.headers['x-twenty-webhook-signature']).toBe(hmac(q.rawBody));
    expect(q.json.eventName).toBe('pet.created');
    expect(q.json.objectMetadata).toEqual({ id: alpha.objectIds.pet, nameSingular: 'pet' });
    expect(q.json.record).toMatchObject({
      name: 'Rex',
      species: 'DOG',
      birthday: '2020-02-29',
      weight: '12.50',
      traits: ['loyal', 'very loud'],
      vaccinated: true,
      profile: { chip: 12345, notes: 'ünïcode \u2028' },
    });
    const u = unsigned.requests[0];
    expect(u.json.eventName).toBe('pet.created');
    for (const header of ['x-twenty-webhook-signature', 'x-twenty-webhook-timestamp', 'x-twenty-webhook-nonce', 'webhook-signature'])
      expect(u.headers).not.toHaveProperty(header);
  });

  it('streams a workspace created while running within 30 s, and a custom object added to it, with no restart and no migrate', async () => {
    const created = Date.now();
    const client = await db.pool.connect();
    let gamma: TwentyWorkspace;
    try {
      gamma = await createTwentyWorkspace(client, { displayName: 'Gamma' });
    } finally {
      client.release();
    }
    const r = await receiver();
    await addWebhook(gamma, r.url);
    const published = async (table: string) =>
      (await db.pool.query(`select 1 from pg_publication_tables where pubname = 'pgwb' and schemaname = $1 and tablename = $2`, [gamma.schema, table]))
        .rowCount === 1;
    await eventually(() => published('person'), "the new workspace's person table to join the publication", 30_000);
    expect(Date.now() - created).toBeLessThan(30_000);
    await db.pool.query(`insert into ${gamma.schema}.person ("nameFirstName") values ('Grace')`);
    await r.waitFor((reqs) => reqs.some((q) => q.json.eventName === 'person.created' && q.json.record.name.firstName === 'Grace'));

    const boat: ObjectDefinition = {
      nameSingular: 'boat',
      namePlural: 'boats',
      isCustom: true,
      fields: [
        { name: 'id', type: 'UUID' },
        { name: 'name', type: 'TEXT' },
        { name: 'deletedAt', type: 'DATE_TIME' },
      ],
    };
    const addedAt = Date.now();
    const objectClient = await db.pool.connect();
    try {
      await addTwentyObject(objectClient, gamma, boat);
    } finally {
      objectClient.release();
    }
    await eventually(() => published('_boat'), "the new object's table to join the publication", 30_000);
    expect(Date.now() - addedAt).toBeLessThan(30_000);
    await db.pool.query(`insert into ${gamma.schema}._boat (name) values ('Beagle')`);
    await r.waitFor((reqs) => reqs.some((q) => q.json.eventName === 'boat.created'));
    const boatEvent = r.requests.find((q) => q.json.eventName === 'boat.created')!;
    expect(boatEvent.json.record).toEqual({ id: expect.any(String), name: 'Beagle', deletedAt: null });
    expect(boatEvent.json.objectMetadata.id).toBe(gamma.objectIds.boat);
    expect(logs.text()).toMatch(/_boat joined the publication/);
  });

  it('follows a field added and an object renamed while running', async () => {
    const client = await db.pool.connect();
    let delta: TwentyWorkspace;
    try {
      delta = await createTwentyWorkspace(client, {
        displayName: 'Delta',
        objects: [
          {
            nameSingular: 'person',
            namePlural: 'people',
            fields: [
              { name: 'id', type: 'UUID' },
              { name: 'name', type: 'FULL_NAME' },
              { name: 'deletedAt', type: 'DATE_TIME' },
            ],
          },
        ],
      });
    } finally {
      client.release();
    }
    const r = await receiver();
    await addWebhook(delta, r.url);
    await eventually(
      async () => (await db.pool.query(`select 1 from pg_publication_tables where pubname = 'pgwb' and schemaname = $1`, [delta.schema])).rowCount === 1,
      'the workspace to join the publication',
      30_000,
    );

    // A field, as Twenty adds one: the column, then its metadata.
    await db.pool.query(`alter table ${delta.schema}.person add column nickname text`);
    await db.pool.query(
      `insert into core."fieldMetadata" ("objectMetadataId", type, name, label, "isActive", "workspaceId") values ($1, 'TEXT', 'nickname', 'Nickname', true, $2)`,
      [delta.objectIds.person, delta.id],
    );
    let n = 0;
    await eventually(
      async () => {
        await db.pool.query(`insert into ${delta.schema}.person ("nameFirstName", nickname) values ($1, 'Bunny')`, [`Probe${n++}`]);
        return r.requests.some((q) => q.json.record.nickname === 'Bunny');
      },
      'an event carrying the new field',
      30_000,
    );

    // A rename, as Twenty does one: the table and the object's names.
    const renamer = await db.pool.connect();
    try {
      await renamer.query('begin');
      await renamer.query(`alter table ${delta.schema}.person rename to contact`);
      await renamer.query(`update core."objectMetadata" set "nameSingular" = 'contact', "namePlural" = 'contacts', "updatedAt" = now() where id = $1`, [
        delta.objectIds.person,
      ]);
      await renamer.query('commit');
    } finally {
      renamer.release();
    }
    await eventually(
      async () => {
        await db.pool.query(`insert into ${delta.schema}.contact ("nameFirstName") values ('Renamed')`);
        return r.requests.some((q) => q.json.eventName === 'contact.created');
      },
      'a contact.created event',
      30_000,
    );
    const renamed = r.requests.find((q) => q.json.eventName === 'contact.created')!.json;
    expect(renamed.objectMetadata).toEqual({ id: delta.objectIds.person, nameSingular: 'contact' });
  });

  it('retries a failed request with the same body, eventDate included, and a failing webhook holds back no other', async () => {
    const [failing, healthy] = [await receiver(), await receiver()];
    failing.script((_req, index) => (index === 0 ? { status: 503 } : { status: 200 }));
    await addWebhook(beta, failing.url, ['company.created']);
    await addWebhook(beta, healthy.url, ['company.created']);
    await db.pool.query(`insert into ${beta.schema}.company (name) values ('Retry Inc')`);
    await healthy.waitForCount(1);
    await failing.waitForCount(2);
    const [first, second] = failing.requests;
    expect(second.rawBody).toBe(first.rawBody);
    expect(second.headers['webhook-id']).toBe(first.headers['webhook-id']);
    expect(second.headers['x-twenty-webhook-timestamp']).not.toBe(first.headers['x-twenty-webhook-timestamp']);
    expect(first.json.record.name).toBe('Retry Inc');
    expect(healthy.requests[0].json.eventDate).toBe(first.json.eventDate);
  });

  it('labels metrics by object and action, never by workspace schema, custom objects as one label', async () => {
    const r = await receiver();
    await addWebhook(alpha, r.url, ['pet.created', 'person.created']);
    await db.pool.query(`insert into ${alpha.schema}._pet (name) values ('Labelled')`);
    await db.pool.query(`insert into ${alpha.schema}.person ("nameFirstName") values ('Labelled')`);
    await r.waitFor((reqs) => reqs.some((q) => q.json.eventName === 'pet.created') && reqs.some((q) => q.json.eventName === 'person.created'));
    const text = await daemon.metrics.registry.metrics();
    expect(text).toMatch(/pgwb_changes_decoded_total\{table="custom",kind="insert"\} [1-9]/);
    expect(text).toMatch(/pgwb_events_routed_total\{object="custom",action="created"\} [1-9]/);
    expect(text).toMatch(/pgwb_events_routed_total\{object="person",action="created"\} [1-9]/);
    expect(text).toMatch(/pgwb_source_workspaces [2-9]/);
    for (const line of text.split('\n').filter((l) => l.startsWith('pgwb_'))) {
      expect(line).not.toMatch(/workspace_|_pet|[0-9a-f]{8}-[0-9a-f]{4}-/);
    }
  });

  it('check refuses a Twenty webhooks table read in tables mode with workspace schema patterns', async () => {
    const result = await runCli(
      [
        '--database-url',
        db.url,
        '--replication-slot',
        'slot_other',
        '--replication-publication',
        'pgwb',
        '--webhooks-table',
        'core.webhook',
        '--source-tables',
        JSON.stringify({ 'workspace_*.person': 'person' }),
        'check',
      ],
      { DATABASE_URL: undefined },
    );
    expect(result.code).toBe(3);
    expect(result.stdout + result.stderr).toMatch(/"workspaceId" column .*source\.mode = "twenty"/);
  });
});
