import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifySignature } from '../../src/index.js';
import { addWebhook, eventually, prepareDatabase, runCli, spawnBridge, startDaemon, testConfig } from '../helpers/bridge.js';
import { clusterInfo, clusterUrl, createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startReceiver, type ReceivedRequest, type Receiver } from '../helpers/receiver.js';

/**
 * Webhook secrets and the database password never reach
 * logs, errors, metrics or CLI output, except once when `webhooks add` generates a secret. Everything
 * the bridge prints over a whole run is captured (an in-process daemon's log at trace level, a spawned
 * `start`, CLI commands, config errors, /metrics) and searched for every secret.
 */
describe('secrets stay secret', () => {
  let db: TestDatabase;

  let role: string;
  /** Distinctive, and with characters that a URL must encode. */
  let password: string;
  let roleUrl: string;
  const receivers: Receiver[] = [];
  const secrets: Record<string, string> = {
    standard: `whsec_${randomBytes(32).toString('base64')}`,
    plain: `plain-${randomBytes(16).toString('hex')}`,
    failing: `failing-${randomBytes(16).toString('hex')}`,
    unreachable: `unreachable-${randomBytes(16).toString('hex')}`,
    blocked: `blocked-${randomBytes(16).toString('hex')}`,
    invalidRow: `invalid-row-${randomBytes(16).toString('hex')}`,
    short: 'Ω¥€#§¶',
  };
  /** Everything printed by the bridge in this file, with where it came from. */
  const captured: Array<{ where: string; text: string }> = [];
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'pgwb-secrets-'));
  let hooks: { ok: Receiver; okStandard: Receiver; failing: Receiver };

  beforeAll(async () => {
    db = await createTestDatabase('secrets');
    await prepareDatabase(db);
    role = `pgwb_secret_${randomBytes(4).toString('hex')}`;
    password = `Pw#${randomBytes(12).toString('hex')}/Sekr@t`;
    await db.pool.query(`create role ${pg.escapeIdentifier(role)} login superuser password ${pg.escapeLiteral(password)}`);
    const info = clusterInfo();
    roleUrl = `postgres://${role}:${encodeURIComponent(password)}@${info.host}:${info.port}/${db.name}`;
    // One webhook per path a secret could leak through: successes, 500s, an unreachable and a refused
    // target, a bad row, a short secret.
    hooks = { ok: await receiver(), okStandard: await receiver(), failing: await receiver() };
    hooks.failing.script(() => ({ status: 500, body: 'nope' }));
    await addWebhook(db, hooks.ok.url, ['person.*'], secrets.plain);
    await addWebhook(db, hooks.okStandard.url, ['person.*'], secrets.standard);
    await addWebhook(db, hooks.failing.url, ['person.*'], secrets.failing);
    await addWebhook(db, `http://127.0.0.1:${await closedPort()}/gone`, ['person.*'], secrets.unreachable);
    await addWebhook(db, 'http://10.255.255.1/internal', ['person.*'], secrets.blocked);
    await addWebhook(db, 'javascript:alert(1)', ['person.*'], secrets.invalidRow);
    await addWebhook(db, `${hooks.ok.url}short`, ['company.*'], secrets.short);
  });

  afterAll(async () => {
    await Promise.all(receivers.map((r) => r.close()));
    await db?.drop();
    const admin = new pg.Client({ connectionString: clusterUrl() });
    await admin.connect();
    await admin.query(`drop role if exists ${pg.escapeIdentifier(role)}`).finally(() => admin.end());
    rmSync(tmp, { recursive: true, force: true });
  });

  async function receiver(): Promise<Receiver> {
    const r = await startReceiver();
    receivers.push(r);
    return r;
  }

  /** Every form in which a secret could show up: as is, URL-encoded, and (whsec_) the decoded key. */
  function forbidden(): string[] {
    const forms = new Set<string>([password, encodeURIComponent(password)]);
    for (const secret of Object.values(secrets)) {
      forms.add(secret);
      if (secret.startsWith('whsec_')) {
        forms.add(secret.slice('whsec_'.length));
        forms.add(Buffer.from(secret.slice('whsec_'.length), 'base64').toString('hex'));
      }
    }
    return [...forms];
  }

  function expectNoSecretIn(where: string, text: string): void {
    for (const secret of forbidden()) {
      expect(text.includes(secret), `${where} contains a secret (${secret.slice(0, 4)}...):\n${text.slice(0, 2_000)}`).toBe(false);
    }
  }

  async function closedPort(): Promise<number> {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as net.AddressInfo;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    return port;
  }

  async function cli(args: string[], env: Record<string, string | undefined> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const result = await runCli(args, { DATABASE_URL: undefined, PG_WEBHOOK_BRIDGE_CONFIG: undefined, ...env });
    captured.push({
      where: `cli #${captured.length} ${args.filter((a) => !a.includes(encodeURIComponent(password))).join(' ')}`,
      text: result.stdout + result.stderr,
    });
    return result;
  }

  const asRole = (...args: string[]): string[] => ['--database-url', roleUrl, ...args];

  it('a whole in-process run (successes, 500s, an unreachable and a refused target, a bad row) logs no secret', async () => {
    const { ok, okStandard, failing } = hooks;
    const failedBefore = failing.requests.length;
    const metricsPort = await closedPort();
    const { daemon, logs } = await startDaemon(
      testConfig(db, { 'database.url': roleUrl, 'log.level': 'trace', 'http.port': metricsPort, 'http.host': '127.0.0.1' }),
    );
    try {
      await db.pool.query(`insert into person ("firstName", email) values ('Secret', 'keeper@example.com')`);
      await db.pool.query(`insert into company (name) values ('Short Secret Ltd')`);
      const secretPerson = (r: ReceivedRequest) => r.json.event === 'person.created' && r.json.data.firstName === 'Secret';
      await ok.waitFor((reqs) => reqs.some(secretPerson) && reqs.some((r) => r.json.event === 'company.created'));
      await okStandard.waitFor((reqs) => reqs.some(secretPerson));
      await failing.waitForCount(failedBefore + 2, 15_000);
      await eventually(
        async () => (await db.pool.query(`select count(*)::int as n from webhook_bridge.webhook_state where last_error is not null`)).rows[0].n >= 3,
        'the failing, unreachable and refused webhooks to record their errors',
      );
      const person = ok.requests.find(secretPerson)!;
      expect(verifySignature(person.rawBody, person.headers, secrets.plain).valid).toBe(true);
      const standard = okStandard.requests.find(secretPerson)!;
      expect(verifySignature(standard.rawBody, standard.headers, secrets.standard)).toMatchObject({ valid: true });

      const base = `http://127.0.0.1:${metricsPort}`;
      const metrics = await (await fetch(`${base}/metrics`)).text();
      expect(metrics).toContain('pgwb_delivery_attempts_total');
      captured.push({ where: '/metrics', text: metrics }, { where: '/readyz', text: await (await fetch(`${base}/readyz`)).text() });
    } finally {
      await daemon.stop();
    }
    captured.push({ where: 'in-process daemon log', text: logs.text() });
    // The run did go through the paths that could leak: failed attempts, a refused target, a bad row.
    expect(logs.lines.some((l) => l.msg === 'delivery attempt failed' && l.statusCode === 500)).toBe(true);
    expect(logs.lines.some((l) => l.reason === 'blocked_address')).toBe(true);
    expect(logs.lines.some((l) => /skipped: targetUrl scheme "javascript:"/.test(l.msg))).toBe(true);
    // The list tells the operator what went wrong, and still masks every secret.
    const listed = await cli(asRole('webhooks', 'list', '--json'));
    expect(JSON.parse(listed.stdout).filter((w: { lastError: string | null }) => w.lastError !== null).length).toBeGreaterThanOrEqual(3);
    for (const { where, text } of captured) expectNoSecretIn(where, text);
  });

  it('`webhooks list` and `deliveries list` mask every secret, in text and JSON', async () => {
    const text = await cli(asRole('webhooks', 'list'));
    const json = await cli(asRole('webhooks', 'list', '--json'));
    const deliveries = await cli(asRole('deliveries', 'list'));
    expect(text.code).toBe(0);
    expect(json.code).toBe(0);
    expect(deliveries.code).toBe(0);
    const listed = JSON.parse(json.stdout) as Array<{ secret: string; state: string }>;
    const rows = await db.pool.query('select count(*)::int as n from webhook_bridge.webhooks');
    expect(listed).toHaveLength(rows.rows[0].n);
    for (const w of listed) expect(w.secret).toMatch(/…\(\d+ chars\)$/);
    expect(listed.find((w) => w.state === 'invalid')).toBeDefined();
    // A short secret shows no character of it at all.
    expect(text.stdout + json.stdout).not.toContain(secrets.short.slice(0, 2));
    for (const { where, text } of captured) expectNoSecretIn(where, text);
  });

  it('a spawned `start` (password in --database-url) prints no secret over its run and its shutdown', async () => {
    const { ok } = hooks;
    const before = ok.requests.length;
    const bridge = spawnBridge(db, { 'database.url': roleUrl, 'log.level': 'debug' });
    try {
      await eventually(() => bridge.output().includes('replication streaming'), 'the spawned bridge to stream', 30_000);
      await db.pool.query(`insert into person ("firstName") values ('Spawned')`);
      await ok.waitFor((reqs) => reqs.slice(before).some((r) => r.json.data.firstName === 'Spawned'), 15_000);
      await eventually(() => bridge.output().includes('delivery attempt failed'), 'a failed attempt in the spawned bridge output');
    } finally {
      bridge.child.kill('SIGTERM');
      expect(await bridge.exited).toBe(0);
    }
    captured.push({ where: 'spawned start', text: bridge.output() });
    expectNoSecretIn('spawned start', bridge.output());
  });

  it('configuration and connection errors name the problem, never the password', async () => {
    const info = clusterInfo();
    const unreachable = `postgres://${role}:${encodeURIComponent(password)}@127.0.0.1:${await closedPort()}/${db.name}`;
    const writeConfig = (name: string, content: string): string => {
      const file = path.join(tmp, name);
      writeFileSync(file, content);
      return file;
    };

    const badFlag = await cli(asRole('--delivery-timeout-ms', 'soon', 'check'));
    expect(badFlag.code).toBe(2);
    expect(badFlag.stderr).toMatch(/delivery\.timeoutMs/);

    const badKeys = await cli([
      '--config',
      writeConfig('bad-keys.json', JSON.stringify({ database: { url: roleUrl, passwrd: password }, delivery: { timeoutMs: 'soon' } })),
      'check',
    ]);
    expect(badKeys.code).toBe(2);
    expect(badKeys.stderr).toMatch(/database\.passwrd: unknown key/);
    expect(badKeys.stderr).toMatch(/delivery\.timeoutMs/);

    const wrongScheme = await cli(['check'], { DATABASE_URL: roleUrl.replace(/^postgres:/, 'mysql:') });
    expect(wrongScheme.code).toBe(2);
    expect(wrongScheme.stderr).toMatch(/database\.url: must be a postgres:\/\/ or postgresql:\/\/ URL/);

    const unquoted = await cli(['--config', writeConfig('syntax.json', `{"database": {"url": ${roleUrl}}}`), 'check']);
    expect(unquoted.code).toBe(2);
    expect(unquoted.stderr).toMatch(/syntax\.json/);

    const refused = await cli(['--database-url', unreachable, 'check']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/cannot connect to postgres:\/\/[^:]+:\*\*\*@127\.0\.0\.1/);

    // libpq-style password in the query string (pg honours it).
    const inQuery = await cli([
      '--database-url',
      `postgres://${role}@127.0.0.1:${await closedPort()}/${db.name}?password=${encodeURIComponent(password)}`,
      'check',
    ]);
    expect(inQuery.code).toBe(1);
    expect(inQuery.stderr).toMatch(/cannot connect to/);

    const wrongPassword = await cli([
      '--database-url',
      `postgres://${role}:${encodeURIComponent(`${password}-wrong`)}@${info.host}:${info.port}/${db.name}`,
      'check',
    ]);
    expect(wrongPassword.code).toBe(1);
    expect(wrongPassword.stderr).toMatch(/password authentication failed/);

    // `start` waits for an unreachable database (retrying with backoff) until it is told to stop.
    const waiting = spawnBridge(db, { 'database.url': unreachable });
    try {
      await eventually(() => /database unreachable; retrying/.test(waiting.output()), 'start to report the unreachable database', 30_000);
    } finally {
      waiting.child.kill('SIGTERM');
      await waiting.exited;
    }
    captured.push({ where: 'start against an unreachable database', text: waiting.output() });

    for (const { where, text } of captured) expectNoSecretIn(where, text);
  });

  it('`webhooks add` prints a generated secret exactly once, and never a given one', async () => {
    const generated = await cli(asRole('webhooks', 'add', '--url', 'https://hooks.example.com/crm', '--operations', 'person.*'));
    expect(generated.code).toBe(0);
    const match = /secret \(shown once, keep it for your receiver\): (\S+)/.exec(generated.stdout);
    expect(match).not.toBeNull();
    const secret = match![1];
    expect(secret.length).toBeGreaterThanOrEqual(32);
    expect(generated.stdout.split(secret).length - 1).toBe(1);
    const stored = await db.pool.query(`select secret from webhook_bridge.webhooks where "targetUrl" = 'https://hooks.example.com/crm'`);
    expect(stored.rows[0].secret).toBe(secret);

    const given = `given-${randomBytes(16).toString('hex')}`;
    const explicit = await cli(asRole('webhooks', 'add', '--url', 'https://hooks.example.com/given', '--secret', given));
    expect(explicit.code).toBe(0);
    expect(explicit.stdout + explicit.stderr).not.toContain(given);

    const list = await cli(asRole('webhooks', 'list'));
    expect(list.stdout).not.toContain(secret);
    expect(list.stdout).not.toContain(given);
  });
});
