import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { WebhookRegistry } from '../../src/webhooks/registry.js';
import { LogCapture, prepareDatabase, runCli } from '../helpers/bridge.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

/**
 * What a webhooks reload reads. The subscribers table is a view whose columns raise when they are read
 * where they must not be: any description, and the secret of a soft-deleted row. A reload runs every
 * couple of seconds; a 100 MB description or a pile of deleted rows must cost it nothing.
 */
describe('webhooks reload', () => {
  let db: TestDatabase;
  const TABLE = 'custom.hooks';

  beforeAll(async () => {
    db = await createTestDatabase('webhook_reload');
    await prepareDatabase(db);
    await db.pool.query(`
      create schema custom;
      create table custom.hooks_base (
        id uuid primary key default gen_random_uuid(), "targetUrl" text not null, operations text[] not null default '{*.*}',
        description text, secret text not null, "createdAt" timestamptz not null default now(),
        "updatedAt" timestamptz not null default now(), "deletedAt" timestamptz);
      create function custom.must_not_read(what text) returns text language plpgsql stable as $$
        begin raise exception 'the reload read %', what; end $$;
      create view custom.hooks as
        select id, "targetUrl", operations,
               case when "deletedAt" is null then secret else custom.must_not_read('the secret of a soft-deleted row') end as secret,
               custom.must_not_read('a description') as description, "createdAt", "updatedAt", "deletedAt"
          from custom.hooks_base;`);
  });

  afterAll(async () => {
    await db?.drop();
  });

  it('reads only live rows and never the description; a secret over 512 characters is an invalid row', async () => {
    const { rows } = await db.pool.query(
      `insert into custom.hooks_base ("targetUrl", secret, description, "deletedAt") values
         ('https://example.com/live', 'live-secret', 'd', null),
         ('https://example.com/gone', 'gone-secret', repeat('x', 1000000), now()),
         ('https://example.com/long', repeat('s', 100000), null, null)
       returning id::text`,
    );
    const [live, gone, long] = rows.map((r) => r.id as string);
    const registry = new WebhookRegistry(db.pool, 'webhook_bridge', '"custom"."hooks"', createLogger('info', new LogCapture()));
    await registry.reload();
    expect(registry.active.map((s) => s.id)).toEqual([live]);
    expect(registry.invalid).toEqual([{ id: long, problem: 'secret is longer than 512 characters' }]);
    expect(registry.disabled.has(gone)).toBe(false);

    // webhooks list still shows the soft-deleted row, without reading its secret or any description.
    const list = await runCli(['--database-url', db.url, '--webhooks-table', TABLE, 'webhooks', 'list', '--json'], { DATABASE_URL: undefined });
    expect(list.code, list.stderr).toBe(0);
    const listed = JSON.parse(list.stdout) as Array<{ id: string; state: string }>;
    expect(Object.fromEntries(listed.map((w) => [w.id, w.state]))).toEqual({ [live]: 'active', [gone]: 'deleted', [long]: 'invalid' });
    const status = await runCli(['--database-url', db.url, '--webhooks-table', TABLE, 'status', '--json'], { DATABASE_URL: undefined });
    expect(status.code, status.stderr).toBe(0);
    expect(JSON.parse(status.stdout).webhooks).toEqual({ active: 1, disabled: 0, invalid: 1, deleted: 1 });
  });
});
