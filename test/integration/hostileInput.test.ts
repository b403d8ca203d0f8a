import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BridgeConfig } from '../../src/config.js';
import type { Daemon } from '../../src/daemon.js';
import { eventually, LogCapture, prepareDatabase, runCli, startDaemon, waitForLanes } from '../helpers/bridge.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';

/**
 * Hostile rows in the webhooks table and hostile names and
 * values in the watched data never crash the daemon; a bad row is reported (one log line naming its
 * id and problem, and `webhooks list`), and every other webhook keeps receiving.
 */

/** Control characters a terminal would act on, and bidirectional overrides that reorder what is shown. */
const TERMINAL_UNSAFE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

/** Every character from U+0001 to U+001F, DEL, C1 controls, line/paragraph separators, a BOM, a bidi override, quotes, backslashes. */
const CONTROL_VALUE =
  Array.from({ length: 31 }, (_, i) => String.fromCharCode(i + 1)).join('') + '\u007f\u0080\u009b\u2028\u2029\ufeff\u202e"\\\'' + 'end ✓ 🐘';

/** Column names that break naive quoting, key handling or object construction. */
const HOSTILE_COLUMNS = [
  'we"ird',
  'naïve ✓',
  'a.b',
  "Robert'); drop table person;--",
  'constructor',
  'toString',
  'hasOwnProperty',
  'emoji 🐘',
  'bell\u0007col',
  'x'.repeat(63),
];

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

const HOSTILE_TABLE_SQL = `
create table public."hostile""tbl" (
  id uuid primary key default gen_random_uuid(),
  ${HOSTILE_COLUMNS.map((c) => `${quoteIdent(c)} text`).join(',\n  ')}
);`;

/** A table of its own for the "__proto__" column: the hostile table's columns are asserted exactly. */
const PROTO_TABLE_SQL = `
create table public.proto (id uuid primary key default gen_random_uuid(), "__proto__" text);`;

/** Rows that must be skipped, with the problem `webhooks list` and the log line must name. */
interface BadRow {
  label: string;
  insert: { targetUrl: string | null; operations: string[] | null | string; secret: string | null };
  problem: RegExp;
}

describe('hostile input', () => {
  const receivers: Receiver[] = [];
  afterAll(async () => {
    await Promise.all(receivers.map((r) => r.close()));
  });

  async function receiver(): Promise<Receiver> {
    const r = await startReceiver();
    receivers.push(r);
    return r;
  }

  async function insertHook(db: TestDatabase, table: string, row: BadRow['insert']): Promise<string> {
    const { rows } = await db.pool.query(`insert into ${table} ("targetUrl", operations, secret) values ($1, $2::text[], $3) returning id::text`, [
      row.targetUrl,
      row.operations,
      row.secret,
    ]);
    return rows[0].id;
  }

  async function webhooksList(db: TestDatabase, table: string, ...extra: string[]) {
    const result = await runCli(['--database-url', db.url, '--webhooks-table', table, 'webhooks', 'list', ...extra], { DATABASE_URL: undefined });
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    return result.stdout;
  }

  function expectReported(logs: LogCapture, id: string, problem: RegExp): void {
    const lines = logs.lines.filter((l) => l.webhookId === id && /skipped/.test(l.msg));
    expect(lines, `one log line for webhook ${id}`).toHaveLength(1);
    expect(lines[0].level).toBe('warn');
    expect(lines[0].msg).toContain(id);
    expect(lines[0].problem).toMatch(problem);
  }

  /** waitForCount, failing with what the daemon logged at warn and above (a decode error, a stuck lane). */
  async function received(r: Receiver, n: number, logs: LogCapture): Promise<void> {
    await r.waitForCount(n, 15_000).catch((error: Error) => {
      const problems = logs.lines.filter((l) => l.level !== 'info' && l.level !== 'debug' && l.level !== 'trace');
      throw new Error(`${error.message}\ndaemon warnings and errors:\n${problems.map((l) => JSON.stringify(l).slice(0, 600)).join('\n')}`);
    });
  }

  function expectHealthy(daemon: Daemon, logs: LogCapture): void {
    expect(daemon.fatalError).toBeNull();
    expect(daemon.readiness()).toMatchObject({ ready: true });
    expect(logs.lines.filter((l) => l.level === 'fatal' || l.level === 'error')).toEqual([]);
  }

  describe('in the default webhooks table and in the watched data', () => {
    let db: TestDatabase;
    let config: BridgeConfig;
    let daemon: Daemon;
    let logs: LogCapture;

    beforeAll(async () => {
      db = await createTestDatabase('hostile');
      config = await prepareDatabase(
        db,
        { 'source.tables': { 'public.person': 'person', 'public.company': 'company', 'public.hostile"tbl': 'hostile', 'public.proto': 'proto' } },
        HOSTILE_TABLE_SQL + PROTO_TABLE_SQL,
      );
      ({ daemon, logs } = await startDaemon(config));
    });

    afterAll(async () => {
      await daemon?.stop();
      await db?.drop();
    });

    it('skips each hostile webhook row with one clear log line, lists its problem, and keeps the others receiving', async () => {
      const good = await receiver();
      const escaped = await receiver();
      const fullwidth = await receiver();
      const goodId = await insertHook(db, 'webhook_bridge.webhooks', { targetUrl: good.url, operations: ['*.*'], secret: 'good-secret' });
      const bad: BadRow[] = [
        {
          label: '10 kB URL',
          insert: { targetUrl: `${good.url}?pad=${'a'.repeat(10_000)}`, operations: ['*.*'], secret: 's' },
          problem: /longer than 2048 characters/,
        },
        {
          label: 'javascript: scheme',
          insert: { targetUrl: 'javascript:alert(document.cookie)', operations: ['*.*'], secret: 's' },
          problem: /scheme "javascript:" is not http or https/,
        },
        {
          label: 'file: scheme',
          insert: { targetUrl: 'file:///etc/passwd', operations: ['*.*'], secret: 's' },
          problem: /scheme "file:" is not http or https/,
        },
        { label: 'not a URL', insert: { targetUrl: 'http://[::1', operations: ['*.*'], secret: 's' }, problem: /is not a valid URL/ },
        { label: 'empty URL', insert: { targetUrl: '', operations: ['*.*'], secret: 's' }, problem: /targetUrl is empty/ },
        {
          label: 'credentials in URL',
          insert: { targetUrl: `http://user:pw@127.0.0.1:${good.port}/`, operations: ['*.*'], secret: 's' },
          problem: /must not carry credentials/,
        },
        { label: 'operations {}', insert: { targetUrl: good.url, operations: '{}', secret: 's' }, problem: /operations is empty/ },
        {
          label: 'whsec_ secret with no key',
          insert: { targetUrl: good.url, operations: ['*.*'], secret: 'whsec_!!!!' },
          problem: /whsec_ secret: .* \(it is not base64\)/,
        },
        {
          label: 'secret of 10 kB',
          insert: { targetUrl: good.url, operations: ['*.*'], secret: 's'.repeat(10_000) },
          problem: /secret is longer than 512 characters/,
        },
      ];
      // Inserted while the daemon runs: they reach it through the stream and the registry reload.
      const ids = new Map<string, BadRow>();
      for (const row of bad) ids.set(await insertHook(db, 'webhook_bridge.webhooks', row.insert), row);
      // Odd but valid: a path with an escape sequence, a unicode (full-width) spelling of 127.0.0.1, and
      // an internationalised host name that does not resolve.
      await insertHook(db, 'webhook_bridge.webhooks', {
        targetUrl: `${escaped.url}\u001b[2J\u001b]0;pwned\u0007/ü`,
        operations: ['person.*'],
        secret: 'escaped-secret',
      });
      await insertHook(db, 'webhook_bridge.webhooks', {
        targetUrl: `http://１２７.０.０.１:${fullwidth.port}/wide`,
        operations: ['person.*'],
        secret: 'fullwidth-secret',
      });
      const unresolvable = await insertHook(db, 'webhook_bridge.webhooks', {
        targetUrl: 'http://bücher.invalid/hook',
        operations: ['person.*'],
        secret: 'idn-secret',
      });
      await eventually(() => [...ids.keys()].every((id) => logs.lines.some((l) => l.webhookId === id)), 'a log line for every bad row', 10_000);

      await db.pool.query(`insert into person ("firstName") values ('Still delivered')`);
      await received(good, 1, logs);
      expect(good.requests[0].json).toMatchObject({ event: 'person.created', data: { firstName: 'Still delivered' } });
      await received(escaped, 1, logs);
      expect(escaped.requests[0].url).toBe('/%1B[2J%1B]0;pwned%07/%C3%BC');
      await received(fullwidth, 1, logs);
      expect(fullwidth.requests[0].url).toBe('/wide');
      await eventually(
        async () =>
          (await db.pool.query('select last_error from webhook_bridge.webhook_state where webhook_id = $1', [unresolvable])).rows[0]?.last_error != null,
        'the unresolvable host to record a failed attempt',
      );

      for (const [id, row] of ids) expectReported(logs, id, row.problem);
      // Reported once, not at every registry refresh. Real time on purpose: the list is also reloaded on a
      // timer, which shows no sign of having run; 2.5 s spans at least one such reload.
      await new Promise((resolve) => setTimeout(resolve, 2_500));
      for (const [id, row] of ids) expectReported(logs, id, row.problem);

      const listed = JSON.parse(await webhooksList(db, 'webhook_bridge.webhooks', '--json')) as Array<{ id: string; state: string; problem: string | null }>;
      for (const [id, row] of ids) {
        const entry = listed.find((w) => w.id === id);
        expect(entry, row.label).toMatchObject({ state: 'invalid' });
        expect(entry!.problem, row.label).toMatch(row.problem);
      }
      expect(listed.find((w) => w.id === goodId)).toMatchObject({ state: 'active', problem: null });

      const text = await webhooksList(db, 'webhook_bridge.webhooks');
      for (const [id, row] of ids) expect(text, row.label).toMatch(new RegExp(`${id}  invalid[^\\n]*\\n    problem: [^\\n]*${row.problem.source}`));
      // What a table writer put in a URL is shown, never acted on by the operator's terminal.
      expect(text).not.toMatch(TERMINAL_UNSAFE);
      expect(text.split('\n').every((line) => line.length < 400)).toBe(true);
      expectHealthy(daemon, logs);
    });

    it('hostile column names arrive intact as JSON keys, and control characters survive in values', async () => {
      const r = await receiver();
      await waitForLanes(daemon, {
        live: [await insertHook(db, 'webhook_bridge.webhooks', { targetUrl: r.url, operations: ['hostile.*'], secret: 'data-secret' })],
      });
      const columns = HOSTILE_COLUMNS.map(quoteIdent).join(', ');
      const params = HOSTILE_COLUMNS.map((_, i) => `$${i + 1}`).join(', ');
      const values = HOSTILE_COLUMNS.map((c, i) => (i === 0 ? CONTROL_VALUE : `value of ${c}`));
      const { rows } = await db.pool.query(`insert into public."hostile""tbl" (${columns}) values (${params}) returning id::text`, values);
      await db.pool.query(`update public."hostile""tbl" set ${quoteIdent('naïve ✓')} = $1 where id = $2`, [`${CONTROL_VALUE} (changed)`, rows[0].id]);
      await received(r, 2, logs);

      const [created, updated] = r.requests.map((q) => q.json);
      expect(created.event).toBe('hostile.created');
      expect(Object.keys(created.data).sort()).toEqual(['id', ...HOSTILE_COLUMNS].sort());
      expect(created.data).toEqual({ id: rows[0].id, ...Object.fromEntries(HOSTILE_COLUMNS.map((c, i) => [c, values[i]])) });
      expect(created.data['we"ird']).toBe(CONTROL_VALUE);
      expect(updated.event).toBe('hostile.updated');
      expect(updated.updatedFields).toEqual(['naïve ✓']);
      expect(updated.data['naïve ✓']).toBe(`${CONTROL_VALUE} (changed)`);
      // The raw body is JSON whatever the data: every control character is escaped, none raw.
      expect(r.requests[0].rawBody).not.toMatch(/[\u0000-\u001f]/);
      expectHealthy(daemon, logs);
    });

    // Rows are built on prototype-less objects: assigning "__proto__" to a plain object would set its
    // prototype instead of a key, and the column would silently vanish from "data".
    it('a column named "__proto__" arrives as a JSON key', async () => {
      const r = await receiver();
      await waitForLanes(daemon, {
        live: [await insertHook(db, 'webhook_bridge.webhooks', { targetUrl: r.url, operations: ['proto.created'], secret: 'proto-secret' })],
      });
      await db.pool.query(`insert into public.proto ("__proto__") values ('polluted?')`);
      // Once seen to run out (10 s, PG 15 CI rerun) and never reproduced: the daemon's log tells why next time.
      await r.waitForCount(1).catch((error: Error) => {
        throw new Error(`${error.message}\ndaemon log (tail):\n${logs.text().split('\n').slice(-30).join('\n')}`);
      });
      expect(r.requests[0].rawBody).toContain('"__proto__":"polluted?"');
    });
  });

  describe('in a user webhooks table whose columns allow NULL (webhooks.table)', () => {
    let db: TestDatabase;
    let daemon: Daemon;
    let logs: LogCapture;
    const TABLE = 'hostile_hooks.webhooks';

    beforeAll(async () => {
      db = await createTestDatabase('hostilenull');
      const config = await prepareDatabase(
        db,
        { 'webhooks.table': TABLE },
        `create schema hostile_hooks;
         create table hostile_hooks.webhooks (
           id uuid primary key default gen_random_uuid(), "targetUrl" text, operations text[], description text, secret text,
           "createdAt" timestamptz not null default now(), "updatedAt" timestamptz not null default now(), "deletedAt" timestamptz);`,
      );
      ({ daemon, logs } = await startDaemon(config));
    });

    afterAll(async () => {
      await daemon?.stop();
      await db?.drop();
    });

    it('NULL targetUrl, operations or secret: skipped and listed; the valid row still receives', async () => {
      const good = await receiver();
      await insertHook(db, TABLE, { targetUrl: good.url, operations: ['company.*'], secret: 'null-table-secret' });
      const bad: BadRow[] = [
        { label: 'NULL operations', insert: { targetUrl: good.url, operations: null, secret: 's' }, problem: /operations is empty/ },
        { label: 'NULL secret', insert: { targetUrl: good.url, operations: ['*.*'], secret: null }, problem: /secret is NULL/ },
        { label: 'NULL targetUrl', insert: { targetUrl: null, operations: ['*.*'], secret: 's' }, problem: /targetUrl is empty/ },
        { label: 'all NULL', insert: { targetUrl: null, operations: null, secret: null }, problem: /targetUrl is empty/ },
      ];
      const ids = new Map<string, BadRow>();
      for (const row of bad) ids.set(await insertHook(db, TABLE, row.insert), row);
      await eventually(() => [...ids.keys()].every((id) => logs.lines.some((l) => l.webhookId === id)), 'a log line for every bad row', 10_000);

      await db.pool.query(`insert into company (name) values ('Null Safe')`);
      await received(good, 1, logs);
      expect(good.requests[0].json).toMatchObject({ event: 'company.created', data: { name: 'Null Safe' } });
      for (const [id, row] of ids) expectReported(logs, id, row.problem);

      const listed = JSON.parse(await webhooksList(db, TABLE, '--json')) as Array<{ id: string; state: string; problem: string | null; secret: string }>;
      for (const [id, row] of ids) {
        const entry = listed.find((w) => w.id === id);
        expect(entry, row.label).toMatchObject({ state: 'invalid' });
        expect(entry!.problem, row.label).toMatch(row.problem);
      }
      expect(listed.find((w) => w.id === [...ids.entries()].find(([, r]) => r.label === 'NULL secret')![0])!.secret).toBe('(none)');
      const text = await webhooksList(db, TABLE);
      expect(text).toMatch(/invalid/);
      expectHealthy(daemon, logs);
    });
  });
});
