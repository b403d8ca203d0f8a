import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../src/migrate.js';
import { runCli, testConfig } from '../helpers/bridge.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { createTwentyWorkspace, TWENTY_CORE_SQL, type TwentyWorkspace } from '../fixtures/twentyDatabase.js';

const WORKSPACE_OBJECTS = { objects: [] };

/** `webhooks add` and `webhooks list` on Twenty's core.webhook, where every row names its workspace. */
describe('webhooks commands on Twenty', () => {
  let db: TestDatabase;
  let alpha: TwentyWorkspace;
  let beta: TwentyWorkspace;
  const base = () => ['--database-url', db.url, '--source-mode', 'twenty', '--replication-slot', `slot_${db.name}`.slice(0, 63)];

  beforeAll(async () => {
    db = await createTestDatabase('twenty_cli');
    const client = await db.pool.connect();
    try {
      await client.query(TWENTY_CORE_SQL);
      alpha = await createTwentyWorkspace(client, { displayName: 'Alpha', ...WORKSPACE_OBJECTS });
      beta = await createTwentyWorkspace(client, { displayName: 'Beta', ...WORKSPACE_OBJECTS });
      await migrate(client, testConfig(db, { 'source.mode': 'twenty' }));
    } finally {
      client.release();
    }
  });

  afterAll(async () => {
    await db?.drop();
  });

  it('webhooks add needs --workspace-id, a uuid of an existing workspace, and writes it', async () => {
    const add = (...extra: string[]) => runCli([...base(), 'webhooks', 'add', '--url', 'https://example.com/hook', ...extra]);
    const missing = await add();
    expect(missing.code, missing.stderr).toBe(2);
    expect(missing.stderr).toMatch(/--workspace-id is required: .*core\.webhook.*"workspaceId".*select id, "displayName" from core\.workspace/);
    const notUuid = await add('--workspace-id', 'Alpha');
    expect(notUuid.code, notUuid.stderr).toBe(2);
    expect(notUuid.stderr).toMatch(/--workspace-id must be a uuid .*"Alpha"/);
    const unknown = randomUUID();
    const absent = await add('--workspace-id', unknown);
    expect(absent.code, absent.stderr).toBe(2);
    expect(absent.stderr).toMatch(new RegExp(`no workspace ${unknown}: .*select id, "displayName" from core\\.workspace`));
    expect((await db.pool.query(`select count(*)::int as n from core.webhook where "targetUrl" = 'https://example.com/hook'`)).rows[0].n).toBe(0);

    const added = await add('--workspace-id', alpha.id.toUpperCase(), '--operations', 'person.*', '--description', 'for n8n');
    expect(added.code, added.stderr).toBe(0);
    const id = added.stdout.match(/added webhook ([0-9a-f-]{36}) -> https:\/\/example\.com\/hook \(person\.\*\) in workspace ([0-9a-f-]{36})/)!;
    expect(id[2]).toBe(alpha.id);
    const { rows } = await db.pool.query(
      `select "workspaceId"::text, operations, description, "createdAt" is not null as stamped from core.webhook where id = $1`,
      [id[1]],
    );
    expect(rows[0]).toEqual({ workspaceId: alpha.id, operations: ['person.*'], description: 'for n8n', stamped: true });
  });

  it("webhooks list shows each webhook's workspace, in text and JSON", async () => {
    const hook = async (url: string, workspace: TwentyWorkspace): Promise<string> => {
      const { rows } = await db.pool.query(`insert into core.webhook ("targetUrl", secret, "workspaceId") values ($1, 's', $2) returning id::text`, [
        url,
        workspace.id,
      ]);
      return rows[0].id as string;
    };
    const alphaHook = await hook('https://example.com/alpha', alpha);
    const betaHook = await hook('https://example.com/beta', beta);
    const text = await runCli([...base(), 'webhooks', 'list']);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(new RegExp(`${betaHook}\\s+active\\s+https://example\\.com/beta[^\\n]*\\n\\s+workspace: ${beta.id}\\n`));
    expect(text.stdout).toMatch(new RegExp(`${alphaHook}\\s+active\\s+https://example\\.com/alpha[^\\n]*\\n\\s+workspace: ${alpha.id}\\n`));
    const json = await runCli([...base(), 'webhooks', 'list', '--json']);
    const listed = JSON.parse(json.stdout) as Array<{ id: string; workspaceId?: string; url: string }>;
    expect(listed.filter((w) => w.id === alphaHook || w.id === betaHook).map((w) => [w.url, w.workspaceId])).toEqual([
      ['https://example.com/alpha', alpha.id],
      ['https://example.com/beta', beta.id],
    ]);
    expect(listed.every((w) => w.workspaceId === alpha.id || w.workspaceId === beta.id)).toBe(true);
  });
});
