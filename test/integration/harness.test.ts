/**
 * Proves the test harness itself: the shared cluster, per-file databases and their cleanup, the
 * scriptable receiver, restarting Postgres, and the leak guard.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { LogicalReplicationService, PgoutputPlugin } from 'pg-logical-replication';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { clusterInfo, clusterUrl, createTestDatabase, restartCluster } from '../helpers/database.js';
import { assertNoLeakedHandles, captureHandles } from '../helpers/leakGuard.js';
import { ClusterSetupError, embeddedBinDir, startCluster } from '../helpers/postgresCluster.js';
import { isRoot, osUserIds, reachableBinDir } from '../helpers/postgresBinaries.js';
import { startReceiver } from '../helpers/receiver.js';
import { waitUntil } from '../helpers/wait.js';

async function queryOnce<T extends pg.QueryResultRow>(url: string, sql: string, values?: unknown[]): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(sql, values)).rows;
  } finally {
    await client.end();
  }
}

describe('shared cluster', () => {
  it('is provided by globalSetup, runs wal_level=logical and is not on port 5432', async () => {
    const info = clusterInfo();
    expect(inject('pg')).toEqual(info);
    expect(process.env.PGWB_TEST_PORT).toBe(String(info.port));
    expect(info.host).toBe('127.0.0.1');
    expect(info.port).not.toBe(5432);

    const [settings] = await queryOnce<Record<string, string>>(
      clusterUrl(),
      `select current_setting('wal_level') as wal_level, current_setting('port') as port,
              current_setting('max_replication_slots') as max_replication_slots,
              current_setting('max_wal_senders') as max_wal_senders,
              current_setting('max_connections') as max_connections,
              current_setting('synchronous_commit') as synchronous_commit,
              current_setting('fsync') as fsync, current_setting('wal_sender_timeout') as wal_sender_timeout,
              (select rolsuper from pg_roles where rolname = current_user)::text as superuser`,
    );
    expect(settings).toEqual({
      wal_level: 'logical',
      port: String(info.port),
      max_replication_slots: '40',
      max_wal_senders: '40',
      max_connections: '300',
      synchronous_commit: 'on',
      fsync: 'off',
      wal_sender_timeout: '1min',
      superuser: 'true',
    });
  });
});

describe('createTestDatabase', () => {
  it('gives a fresh working database; drop() terminates the stream and removes the slot and the database', async () => {
    const db = await createTestDatabase('harness');
    const other = await createTestDatabase('harness');
    expect(db.name).toMatch(/^pgwb_harness_[0-9a-f]{8}$/);
    expect(other.name).not.toBe(db.name);
    await other.drop();

    const [{ current_database }] = (await db.pool.query('select current_database()')).rows;
    expect(current_database).toBe(db.name);
    const [{ tables }] = (await db.pool.query(`select count(*)::int as tables from pg_tables where schemaname = 'public'`)).rows;
    expect(tables).toBe(0);
    await db.pool.query('create table item (id int primary key, name text)');
    await db.pool.query(`insert into item values (1, 'one')`);
    expect((await db.pool.query('select name from item')).rows).toEqual([{ name: 'one' }]);
    expect((await queryOnce(db.url, 'select count(*)::int as n from item'))[0]).toEqual({ n: 1 });

    // A logical slot with pgoutput, held active by a walsender, as the daemon will hold it.
    const slot = `${db.name}_slot`;
    await db.pool.query('create publication harness_pub for all tables');
    await db.pool.query(`select pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
    const service = new LogicalReplicationService({ connectionString: db.url, replication: 'database' } as pg.ClientConfig, {
      acknowledge: { auto: false, timeoutSeconds: 0 },
    });
    const errors: Error[] = [];
    service.on('error', (err) => void errors.push(err));
    const streaming = service.subscribe(new PgoutputPlugin({ protoVersion: 1, publicationNames: ['harness_pub'] }), slot).catch(() => {});
    const slotActive = async () =>
      (await queryOnce<{ active: boolean }>(clusterUrl(), 'select active from pg_replication_slots where slot_name = $1', [slot]))[0]?.active === true;
    await waitUntil(slotActive, 'the slot to become active', 10_000);

    await db.drop();
    await db.drop(); // idempotent

    const remaining = await queryOnce(
      clusterUrl(),
      `select (select count(*)::int from pg_database where datname = any($1)) as databases,
              (select count(*)::int from pg_replication_slots where slot_name = $2) as slots`,
      [[db.name, other.name], slot],
    );
    expect(remaining).toEqual([{ databases: 0, slots: 0 }]);
    await service.stop().catch(() => {});
    await streaming;
  });
});

describe('receiver', () => {
  it('records a POST with its raw body and headers', async () => {
    const rx = await startReceiver();
    try {
      const body = '{"event":"item.created","data":{"id":1,"name":"Zoë"}}';
      const res = await fetch(`${rx.url}hooks/a?x=1`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'webhook-id': 'evt_1' },
        body,
      });
      expect(res.status).toBe(200);
      await res.text();
      await rx.waitForCount(1);
      const [req] = rx.requests;
      expect(req.method).toBe('POST');
      expect(req.url).toBe('/hooks/a?x=1');
      expect(req.rawBody).toBe(body);
      expect(req.json).toEqual({ event: 'item.created', data: { id: 1, name: 'Zoë' } });
      expect(req.headers['content-type']).toBe('application/json');
      expect(req.headers['webhook-id']).toBe('evt_1');
      expect(req.receivedAt).toBeLessThanOrEqual(Date.now());
      expect(rx.connections).toBe(1);
      expect(rx.port).not.toBe(0);
    } finally {
      await rx.close();
    }
  });

  it('obeys script(): status and body, hang, destroy; waitFor explains a timeout', async () => {
    const rx = await startReceiver();
    try {
      rx.script((req) => {
        if (req.url === '/fail') return { status: 500, headers: { 'retry-after': '7' }, body: 'nope' };
        if (req.url === '/hang') return 'hang';
        if (req.url === '/destroy') return 'destroy';
        return { status: 204 };
      });

      const fail = await fetch(`${rx.url}fail`, { method: 'POST', body: 'x' });
      expect(fail.status).toBe(500);
      expect(fail.headers.get('retry-after')).toBe('7');
      expect(await fail.text()).toBe('nope');

      const hung = fetch(`${rx.url}hang`, { method: 'POST', body: 'y', signal: AbortSignal.timeout(300) });
      await expect(hung).rejects.toMatchObject({ name: 'TimeoutError' });

      await expect(fetch(`${rx.url}destroy`, { method: 'POST', body: 'z' })).rejects.toThrow(TypeError);

      const ok = await fetch(`${rx.url}ok`, { method: 'POST', body: 'w' });
      expect(ok.status).toBe(204);

      expect(rx.requests.map((r) => [r.url, r.rawBody])).toEqual([
        ['/fail', 'x'],
        ['/hang', 'y'],
        ['/destroy', 'z'],
        ['/ok', 'w'],
      ]);
      expect(rx.connections).toBeGreaterThanOrEqual(3); // the hung and destroyed sockets are not reused
      await expect(rx.waitForCount(5, 100)).rejects.toThrow(/received 4 request\(s\)/);
    } finally {
      await rx.close(); // also ends the hung socket
    }
  });

  it('goes down and comes back on the same port', async () => {
    const rx = await startReceiver();
    try {
      await (await fetch(rx.url, { method: 'POST', body: '1' })).text();
      await rx.stopListening();
      await expect(fetch(rx.url, { method: 'POST', body: '2' })).rejects.toThrow(TypeError);
      await rx.listenAgain();
      const res = await fetch(rx.url, { method: 'POST', body: '3' });
      expect(res.status).toBe(200);
      await res.text();
      expect(rx.requests.map((r) => r.rawBody)).toEqual(['1', '3']);
    } finally {
      await rx.close();
    }
  });
});

describe('leak guard', () => {
  it('rejects while a server the test opened is listening, and passes once it is closed', async () => {
    // Servers of earlier tests may still be closing: one that closes now would hide the new one.
    await waitUntil(() => !process.getActiveResourcesInfo().includes('TCPServerWrap'), 'earlier servers to close', 5_000);
    const baseline = captureHandles();
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      await expect(assertNoLeakedHandles(baseline, { graceMs: 100 })).rejects.toThrow(/TCPServerWrap: 0 -> 1/);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    await assertNoLeakedHandles(baseline, { graceMs: 1_000 });
  });
});

describe('restarting Postgres', () => {
  // On a private cluster: restarting the shared one would break the files running beside this one.
  it('restartCluster() and handle.restart() bring the server back on the same port and settings', async () => {
    const startedAt = Date.now();
    const cluster = await startCluster({ extraFlags: ['-c', 'work_mem=12MB'] });
    const startMs = Date.now() - startedAt;
    try {
      expect(cluster.port).not.toBe(5432);
      expect(cluster.port).not.toBe(clusterInfo().port);
      const startTime = async () => (await queryOnce<{ t: Date }>(cluster.adminUrl(), 'select pg_postmaster_start_time() as t'))[0].t.getTime();

      const client = new pg.Client({ connectionString: cluster.adminUrl() });
      const clientErrors: Error[] = [];
      client.on('error', (err) => void clientErrors.push(err));
      await client.connect();
      const before = await startTime();

      await restartCluster('fast', cluster);
      await expect(client.query('select 1')).rejects.toThrow();
      await client.end().catch(() => {});
      const afterFast = await startTime();
      expect(afterFast).toBeGreaterThan(before);

      await cluster.restart('immediate');
      const afterImmediate = await startTime();
      expect(afterImmediate).toBeGreaterThan(afterFast);
      const settings = await queryOnce(
        cluster.adminUrl(),
        `select current_setting('wal_level') as wal_level, current_setting('port') as port, current_setting('work_mem') as work_mem`,
      );
      expect(settings).toEqual([{ wal_level: 'logical', port: String(cluster.port), work_mem: '12MB' }]);
    } finally {
      await cluster.stop();
    }
    await expect(queryOnce(cluster.adminUrl(), 'select 1')).rejects.toThrow(/ECONNREFUSED/);
    expect(existsSync(cluster.dataDir)).toBe(false);
    console.log(`private cluster (${cluster.binDir}) started in ${startMs} ms`);
  });
});

// Postgres refuses to run as root, so as root the server runs as `postgres`, which cannot enter a
// checkout in a private folder (root's home, a `mktemp -d` folder).
describe.skipIf(!isRoot())('as root, with the binaries in a private folder', () => {
  let privateDir: string;
  let privateBinDir: string;
  beforeAll(async () => {
    privateDir = await mkdtemp(path.join(os.tmpdir(), 'pgwb-private-'));
    expect(statSync(privateDir).mode & 0o777).toBe(0o700);
    // The install as npm lays it out (bin/, lib/ with its symlinks, share/); hard links, so no disk.
    execFileSync('cp', ['-al', path.dirname(embeddedBinDir()), path.join(privateDir, 'native')]);
    privateBinDir = path.join(privateDir, 'native', 'bin');
  });
  afterAll(async () => {
    await rm(privateDir, { recursive: true, force: true });
  });

  it('starts a cluster from a copy the postgres user can reach, its folder private to that user', async () => {
    const cluster = await startCluster({ binDir: privateBinDir });
    try {
      expect(cluster.binDir.startsWith(privateDir)).toBe(false);
      expect(await queryOnce(cluster.adminUrl(), `select current_setting('wal_level') as wal_level`)).toEqual([{ wal_level: 'logical' }]);
      const postgresUid = osUserIds()!.uid;
      for (const dir of [cluster.dataDir, path.dirname(cluster.dataDir)]) {
        const stat = statSync(dir);
        expect({ dir, uid: stat.uid, othersAndGroup: stat.mode & 0o077 }).toEqual({ dir, uid: postgresUid, othersAndGroup: 0 });
      }
    } finally {
      await cluster.stop();
    }
  });

  it('says in one line what to do when the postgres user cannot reach the temporary folder either', async () => {
    const previous = process.env.TMPDIR;
    process.env.TMPDIR = privateDir;
    try {
      const error = await reachableBinDir(privateBinDir).then(
        () => null,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(ClusterSetupError);
      expect((error as Error).message).toMatch(/^the "postgres" user cannot reach .*TMPDIR=\/tmp/);
      expect((error as Error).message).not.toContain('\n');
    } finally {
      if (previous === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = previous;
    }
  });
});
