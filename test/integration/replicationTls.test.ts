import { execFileSync } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Daemon } from '../../src/daemon.js';
import { addWebhook, eventually, prepareDatabase, startDaemon } from '../helpers/bridge.js';
import { osUserIds } from '../helpers/postgresBinaries.js';
import { startCluster, type ClusterHandle } from '../helpers/postgresCluster.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';

/**
 * The replication connection hands pg's protocol reader whole messages (messageAligner.ts), below TLS
 * when TLS is on: the stream must work the same through it. A private cluster with ssl=on.
 */
describe('replication over TLS (private cluster)', () => {
  let cluster: ClusterHandle;
  let receiver: Receiver;
  let certDir: string;

  beforeAll(async () => {
    certDir = mkdtempSync(path.join(os.tmpdir(), 'pgwb-tls-'));
    const [key, cert] = [path.join(certDir, 'key.pem'), path.join(certDir, 'cert.pem')];
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=localhost', '-keyout', key, '-out', cert], {
      stdio: 'ignore',
    });
    // The server reads them as its own OS user and refuses a key others can read.
    const ids = osUserIds();
    for (const file of [certDir, key, cert]) if (ids) chownSync(file, ids.uid, ids.gid);
    cluster = await startCluster({ extraFlags: ['-c', 'ssl=on', '-c', `ssl_cert_file=${cert}`, '-c', `ssl_key_file=${key}`] });
    receiver = await startReceiver();
  });

  afterAll(async () => {
    await receiver?.close();
    await cluster?.stop();
    rmSync(certDir, { recursive: true, force: true });
  });

  it('streams and delivers, with the walsender on TLS', async () => {
    const admin = new pg.Client({ connectionString: cluster.adminUrl('postgres') });
    await admin.connect();
    await admin.query('create database tls');
    await admin.end();
    const url = cluster.adminUrl('tls');
    const pool = new pg.Pool({ connectionString: url, max: 3, ssl: { rejectUnauthorized: false } });
    pool.on('error', () => undefined);
    const db = { url, name: 'tls', pool, drop: () => pool.end() };
    const config = await prepareDatabase(db, { 'database.ssl.mode': 'require' });
    let daemon: Daemon | null = null;
    try {
      ({ daemon } = await startDaemon(config));
      await addWebhook(db, receiver.url, ['note.created']);
      await eventually(
        async () => (await pool.query(`select 1 from pg_stat_replication r join pg_stat_ssl s using (pid) where s.ssl`)).rowCount === 1,
        'a walsender on TLS',
      );
      // Large enough to span many TLS records and socket reads.
      await pool.query(`insert into note (title, "bodyV2") values ('over tls', repeat('z', 300000))`);
      await receiver.waitFor((reqs) => reqs.some((q) => q.json?.data?.title === 'over tls'), 30_000);
      expect(receiver.requests.map((q) => (q.json.data.bodyV2 as string).length)).toEqual([300_000]);
    } finally {
      await daemon?.stop();
      await db.drop();
    }
  });
});
