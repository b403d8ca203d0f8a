import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { migrate } from '../../src/migrate.js';
import { CRM_SCHEMA_SQL, ROOT, runCli } from '../helpers/bridge.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

/** The CLI as users meet it — migrate, check, webhooks, bad config — and `npm run demo`. */
describe('command line', () => {
  let db: TestDatabase;
  const dir = mkdtempSync(path.join(tmpdir(), 'pgwb-cli-'));
  const base = (target: TestDatabase = db) => ['--database-url', target.url, '--replication-slot', `slot_${target.name}`.slice(0, 63)];

  /** A database with the CRM's tables, not yet migrated. */
  async function crmDatabase(name: string): Promise<TestDatabase> {
    const created = await createTestDatabase(name);
    await created.pool.query(CRM_SCHEMA_SQL);
    return created;
  }

  beforeAll(async () => {
    db = await crmDatabase('cli');
    const migrated = await runCli([...base(), 'migrate']);
    expect(migrated.code, migrated.stderr).toBe(0);
  });

  afterAll(async () => {
    rmSync(dir, { recursive: true, force: true });
    await db?.drop();
  });

  it('npx pg-webhook-bridge --help lists the commands and the config flags', async () => {
    const help = await runCli(['--help']);
    expect(help.code).toBe(0);
    for (const word of ['start', 'migrate', 'check', 'webhooks', 'deliveries', 'status', '--database-url', '--delivery-timeout-ms', 'DATABASE_URL']) {
      expect(help.stdout).toContain(word);
    }
  });

  it('check names each problem with its fix before migrate, and passes after it', async () => {
    const fresh = await crmDatabase('cli_check');
    try {
      const before = await runCli([...base(fresh), 'check']);
      expect(before.code).toBe(3);
      expect(before.stdout).toMatch(/problem: schema "webhook_bridge" does not exist: run "pg-webhook-bridge migrate"/);
      const migrated = await runCli([...base(fresh), 'migrate']);
      expect(migrated.code).toBe(0);
      expect(migrated.stdout).toMatch(/migrations applied: 000001_schema.sql, 000002_delivery_store.sql/);
      expect(migrated.stdout).toMatch(/publication "pg_webhook_bridge" covers: public.company, public.note, public.person, public.task/);
      const after = await runCli([...base(fresh), 'check']);
      expect(after.code).toBe(0);
      expect(after.stdout).toMatch(/ok: ready to stream/);
      const identity = await fresh.pool.query(`select relname, relreplident from pg_class where relname in ('person','company','note','task') order by 1`);
      expect(identity.rows.every((r) => r.relreplident === 'f')).toBe(true);
    } finally {
      await fresh.drop();
    }
  });

  it('check warns, without failing, while max_slot_wal_keep_size is unlimited (-1, the default)', async () => {
    const { rows } = await db.pool.query(`select current_setting('max_slot_wal_keep_size') as v`);
    expect(rows[0].v).toBe('-1');
    const check = await runCli([...base(), 'check']);
    expect(check.code).toBe(0);
    expect(check.stdout).toMatch(/^warning: max_slot_wal_keep_size is -1 \(unlimited\): .*disk.*ALTER SYSTEM SET max_slot_wal_keep_size.*slot reset/m);
    expect(check.stdout).toMatch(/^ok: ready to stream$/m);
  });

  it('migrate is harmless twice and when run concurrently', async () => {
    const again = await runCli([...base(), 'migrate']);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/migrations applied: none \(up to date\)/);
    // A schema from the previous version (before 000004): check and the daemon's preflight say to migrate.
    await db.pool.query(
      `alter table webhook_bridge.slot_state drop column confirmed_lsn; delete from webhook_bridge.migrations where name = '000004_slot_confirmed.sql'`,
    );
    const old = await runCli([...base(), 'check']);
    expect(old.code).toBe(3);
    expect(old.stdout).toMatch(/problem: schema "webhook_bridge" is older than this version of the bridge: run "pg-webhook-bridge migrate" \(as an admin\)/);
    const upgraded = await runCli([...base(), 'migrate']);
    expect(upgraded.stdout).toMatch(/migrations applied: 000004_slot_confirmed.sql/);
    expect((await runCli([...base(), 'check'])).code).toBe(0);
    const other = await createTestDatabase('cli_concurrent');
    try {
      await other.pool.query(CRM_SCHEMA_SQL);
      const config = loadConfig({ env: {}, overrides: { 'database.url': other.url } });
      const clients = await Promise.all(
        Array.from({ length: 4 }, async () => {
          const client = new pg.Client({ connectionString: other.url });
          await client.connect();
          return client;
        }),
      );
      const results = await Promise.all(clients.map((client) => migrate(client, config)));
      await Promise.all(clients.map((client) => client.end()));
      expect(results.filter((r) => r.applied.length > 0)).toHaveLength(1);
      const { rows } = await other.pool.query(`select count(*)::int as n from webhook_bridge.migrations`);
      expect(rows[0].n).toBe(results.find((r) => r.applied.length > 0)!.applied.length);
    } finally {
      await other.drop();
    }
  });

  it('webhooks add prints a generated secret once; list masks it; remove soft-deletes', async () => {
    const added = await runCli([...base(), 'webhooks', 'add', '--url', 'https://example.com/hook', '--operations', 'person.*,*.deleted']);
    expect(added.code).toBe(0);
    const id = added.stdout.match(/added webhook ([0-9a-f-]{36})/)![1];
    const secret = added.stdout.match(/secret \(shown once, keep it for your receiver\): ([0-9a-f]{64})/)![1];
    const { rows } = await db.pool.query(`select secret, operations from webhook_bridge.webhooks where id = $1`, [id]);
    expect(rows[0]).toEqual({ secret, operations: ['person.*', '*.deleted'] });
    const list = await runCli([...base(), 'webhooks', 'list']);
    expect(list.stdout).toMatch(new RegExp(`${id}\\s+active`));
    expect(list.stdout).not.toContain(secret);
    const withSecret = await runCli([
      ...base(),
      'webhooks',
      'add',
      '--url',
      'https://example.com/2',
      '--secret',
      `whsec_${Buffer.alloc(32, 5).toString('base64')}`,
    ]);
    expect(withSecret.code, withSecret.stderr).toBe(0);
    expect(withSecret.stdout).not.toMatch(/shown once/);
    // whsec_ secrets that decode to no usable key: refused by add, and listed as invalid when written directly.
    for (const secret of ['whsec_', 'whsec_a', 'whsec_!!!!', 'whsec_c2VjcmV0']) {
      const refused = await runCli([...base(), 'webhooks', 'add', '--url', 'https://example.com/3', '--secret', secret]);
      expect(refused.code, secret).toBe(2);
      expect(refused.stderr).toMatch(/whsec_ secret: the text after whsec_ must be base64 of a 24 to 64 byte key/);
    }
    const { rows: written } = await db.pool.query(
      `insert into webhook_bridge.webhooks ("targetUrl", secret) values ('https://example.com/4', 'whsec_!!!!') returning id::text`,
    );
    const listed = await runCli([...base(), 'webhooks', 'list']);
    expect(listed.stdout).toMatch(
      new RegExp(
        `${written[0].id}\\s+invalid[^\\n]*\\n\\s+problem: whsec_ secret: the text after whsec_ must be base64 of a 24 to 64 byte key \\(it is not base64\\)`,
      ),
    );
    const removed = await runCli([...base(), 'webhooks', 'remove', id]);
    expect(removed.code).toBe(0);
    expect((await runCli([...base(), 'webhooks', 'list'])).stdout).toMatch(new RegExp(`${id}\\s+deleted`));
    const bad = await runCli([...base(), 'webhooks', 'add', '--url', 'ftp://example.com']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/not http or https/);
  });

  it('webhooks add refuses --workspace-id where the webhooks table has no "workspaceId" column; list shows no workspace', async () => {
    await db.pool.query(`insert into webhook_bridge.webhooks ("targetUrl", secret) values ('https://example.com/listed', 's')`);
    const refused = await runCli([...base(), 'webhooks', 'add', '--url', 'https://example.com/ws', '--workspace-id', '0b6a1f0d-5d8b-4c0e-9d3a-3f1c0f5e2c11']);
    expect(refused.code, refused.stderr).toBe(2);
    expect(refused.stderr).toMatch(/--workspace-id: the webhooks table webhook_bridge\.webhooks has no "workspaceId" column/);
    const { rows } = await db.pool.query(`select count(*)::int as n from webhook_bridge.webhooks where "targetUrl" = 'https://example.com/ws'`);
    expect(rows[0].n).toBe(0);
    const text = await runCli([...base(), 'webhooks', 'list']);
    expect(text.stdout).toMatch(/active/);
    expect(text.stdout).not.toMatch(/workspace/);
    const json = JSON.parse((await runCli([...base(), 'webhooks', 'list', '--json'])).stdout) as Array<Record<string, unknown>>;
    expect(json.length).toBeGreaterThan(0);
    for (const w of json) expect(w).not.toHaveProperty('workspaceId');
  });

  it('webhooks add takes the secret from an environment variable or stdin, keeping it out of argv', async () => {
    const secretOf = async (stdout: string): Promise<string> => {
      const id = stdout.match(/added webhook ([0-9a-f-]{36})/)![1];
      return (await db.pool.query(`select secret from webhook_bridge.webhooks where id = $1`, [id])).rows[0].secret;
    };
    const standard = `whsec_${Buffer.alloc(32, 7).toString('base64')}`;
    const fromEnv = await runCli([...base(), 'webhooks', 'add', '--url', 'https://example.com/env', '--secret-env', 'HOOK_SECRET'], { HOOK_SECRET: standard });
    expect(fromEnv.code, fromEnv.stderr).toBe(0);
    expect(await secretOf(fromEnv.stdout)).toBe(standard);
    expect(fromEnv.stdout).not.toContain(standard);
    const fromStdin = await runCli([...base(), 'webhooks', 'add', '--url', 'https://example.com/stdin', '--secret-stdin'], {}, 'from-stdin-secret\n');
    expect(fromStdin.code, fromStdin.stderr).toBe(0);
    expect(await secretOf(fromStdin.stdout)).toBe('from-stdin-secret');
    // An empty secret is allowed (unsigned requests, as Twenty sends them) and said so.
    const empty = await runCli([...base(), 'webhooks', 'add', '--url', 'https://example.com/unsigned', '--secret-env', 'EMPTY_SECRET'], { EMPTY_SECRET: '' });
    expect(empty.code, empty.stderr).toBe(0);
    expect(await secretOf(empty.stdout)).toBe('');
    expect(empty.stdout).toMatch(/empty secret: requests to this webhook are unsigned/);
    const unset = await runCli([...base(), 'webhooks', 'add', '--url', 'https://example.com/x', '--secret-env', 'NO_SUCH_VARIABLE_SET'], {
      NO_SUCH_VARIABLE_SET: undefined,
    });
    expect(unset.code).toBe(2);
    expect(unset.stderr).toMatch(/environment variable NO_SUCH_VARIABLE_SET is not set/);
    const both = await runCli([...base(), 'webhooks', 'add', '--url', 'https://example.com/x', '--secret', 's', '--secret-env', 'HOOK_SECRET'], {
      HOOK_SECRET: 's',
    });
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/one of --secret, --secret-env, --secret-stdin/);
    const badFromStdin = await runCli([...base(), 'webhooks', 'add', '--url', 'https://example.com/x', '--secret-stdin'], {}, 'whsec_!!!!\n');
    expect(badFromStdin.code).toBe(2);
    expect(badFromStdin.stderr).toMatch(/whsec_ secret/);
  });

  it('bad config exits non-zero naming the key or the fix', async () => {
    const file = path.join(dir, 'bad.json');
    writeFileSync(file, JSON.stringify({ delivery: { timeoutMs: 'soon' }, nonsense: true }));
    const bad = await runCli(['--config', file, 'check']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/delivery\.timeoutMs/);
    expect(bad.stderr).toMatch(/nonsense: unknown key/);
    const wrongType = await runCli(['--delivery-concurrency', 'many', '--database-url', db.url, 'check']);
    expect(wrongType.code).toBe(2);
    expect(wrongType.stderr).toMatch(/delivery\.concurrency/);
    const unreachable = await runCli(['--database-url', 'postgres://nobody:hunter2@127.0.0.1:1/none', 'check']);
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr).toMatch(/cannot connect to postgres:\/\/nobody:\*\*\*@127\.0\.0\.1:1\/none.*check database\.url \(DATABASE_URL\)/);
    expect(unreachable.stderr).not.toContain('hunter2');
    const badEnv = await runCli(['check'], { DATABASE_URL: 'mysql://x' });
    expect(badEnv.code).toBe(2);
    expect(badEnv.stderr).toMatch(/database\.url: must be a postgres:\/\//);
  });

  it('npm run demo -- --exit-after 8 exits 0 after eight verified events', async () => {
    const child = spawn('npm', ['run', 'demo', '--', '--exit-after', '8'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code, output).toBe(0);
    expect(output.match(/verified \(twenty \+ standard webhooks\)/g)?.length).toBeGreaterThanOrEqual(8);
    expect(output).toMatch(/8 verified events/);
  });
});
