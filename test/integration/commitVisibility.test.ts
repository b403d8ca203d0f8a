import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Daemon } from '../../src/daemon.js';
import { addWebhook, eventually, prepareDatabase, startDaemon, type LogCapture } from '../helpers/bridge.js';
import { startCluster, type ClusterHandle } from '../helpers/postgresCluster.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';

/**
 * A commit reaches the replication stream as soon as its WAL is flushed, which can be before the
 * committing backend has made it visible to other sessions. A webhook added by such a commit must
 * still receive the events committed after it: the bridge may not reload its webhooks list until it
 * can see that commit.
 *
 * The window is normally microseconds wide (a busy 2-core CI machine hit it in about one run of
 * three). Synchronous replication with a standby that never connects holds it open: the commit is
 * flushed and streamed, while its backend waits for the standby before becoming visible, until the
 * wait is cancelled. A private cluster, since that setting touches every session of the server.
 */
describe('a webhooks change streamed before it is visible (private cluster)', () => {
  let cluster: ClusterHandle;
  let receiver: Receiver;

  beforeAll(async () => {
    // Sessions commit locally unless they ask for `on`, so only the test's own commit waits.
    cluster = await startCluster({ extraFlags: ['-c', 'synchronous_standby_names=pgwb_never_connects', '-c', 'synchronous_commit=local'] });
    receiver = await startReceiver();
  });

  afterAll(async () => {
    await receiver?.close();
    await cluster?.stop();
  });

  it('is waited for: the event committed after it reaches the new webhook', async () => {
    const admin = new pg.Client({ connectionString: cluster.adminUrl('postgres') });
    await admin.connect();
    await admin.query('create database visibility');
    await admin.end();
    const url = cluster.adminUrl('visibility');
    const pool = new pg.Pool({ connectionString: url, max: 5 });
    pool.on('error', () => undefined);
    const db = { url, name: 'visibility', pool, drop: () => pool.end() };
    const config = await prepareDatabase(db, { 'log.level': 'debug' });
    let daemon: Daemon | null = null;
    let logs: LogCapture | null = null;
    const adder = new pg.Client({ connectionString: url });
    await adder.connect();
    adder.on('error', () => undefined);
    try {
      ({ daemon, logs } = await startDaemon(config));
      const adderPid = (await adder.query('select pg_backend_pid() as pid')).rows[0].pid as number;
      await adder.query('set synchronous_commit = on');
      const adding = addWebhook({ ...db, pool: adder as unknown as pg.Pool }, receiver.url, ['note.created']).catch((error: Error) => error);
      // Flushed and streamed, not yet visible: its backend waits for the standby.
      await eventually(
        async () => (await pool.query(`select wait_event from pg_stat_activity where pid = $1`, [adderPid])).rows[0]?.wait_event === 'SyncRep',
        'the webhook insert to wait for the standby',
        10_000,
      );
      await eventually(
        () => logs!.lines.some((l) => l.msg === 'a webhooks change is streamed but not visible yet; waiting for it'),
        'the bridge to notice the invisible commit',
        10_000,
      );
      await pool.query(`insert into note (title) values ('after the webhook')`);
      // Cancelling the wait makes the commit visible (Postgres warns it had committed locally).
      await pool.query('select pg_cancel_backend($1)', [adderPid]);
      expect(await adding).toEqual(expect.any(String));
      await receiver.waitFor((reqs) => reqs.some((q) => q.json?.data?.title === 'after the webhook'), 15_000);
      expect(receiver.requests.map((q) => q.json.event)).toEqual(['note.created']);
    } finally {
      await adder.end().catch(() => undefined);
      await daemon?.stop();
      await db.drop();
    }
  });
});
