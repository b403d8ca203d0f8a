import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Daemon } from '../../src/daemon.js';
import { addWebhook, eventually, prepareDatabase, spawnBridge, startDaemon, type BridgeProcess } from '../helpers/bridge.js';
import type { TestDatabase } from '../helpers/database.js';
import { startCluster, type ClusterHandle } from '../helpers/postgresCluster.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';
import { ChangeWriter, receivedKey } from '../helpers/writer.js';

/**
 * Faults that touch the whole server run on a private cluster: restarting the shared one would break
 * the other test files running beside this one.
 */
describe('Postgres restarts and acknowledgement edges (private cluster)', () => {
  let cluster: ClusterHandle;
  let receiver: Receiver;

  beforeAll(async () => {
    // A fast shutdown waits until each logical walsender's client confirms everything sent. The bridge
    // confirms the keepalive position when idle, but a restart in the middle of a burst can still wait
    // for wal_sender_timeout on Postgres 15 (see the closing notes): keep it short here.
    cluster = await startCluster({ extraFlags: ['-c', 'wal_sender_timeout=5s'] });
    receiver = await startReceiver();
  });

  afterAll(async () => {
    await receiver?.close();
    await cluster?.stop();
  });

  async function database(name: string): Promise<TestDatabase> {
    const admin = new pg.Client({ connectionString: cluster.adminUrl('postgres') });
    await admin.connect();
    await admin.query(`create database ${name}`);
    await admin.end();
    const url = cluster.adminUrl(name);
    const pool = new pg.Pool({ connectionString: url, max: 5 });
    pool.on('error', () => undefined);
    return { url, name, pool, drop: () => pool.end() };
  }

  // Known open problem (issue 3): on a loaded machine the fast shutdown can time out waiting for the
  // bridge's stream to confirm. Passes alone; run it with PGWB_RESTART_TEST=1 until fixed.
  it.skipIf(!process.env.PGWB_RESTART_TEST)('pg_ctl restart -m fast mid-stream: nothing lost, the daemon reconnects by itself', async () => {
    const db = await database('restart');
    const config = await prepareDatabase(db);
    let daemon: Daemon | null = null;
    try {
      receiver.requests.length = 0;
      await addWebhook(db, receiver.url, ['*.*']);
      ({ daemon } = await startDaemon(config));
      const writer = new ChangeWriter(db.pool);
      let restarted = false;
      await writer.write(3_000, async (done) => {
        if (!restarted && done >= 1_000) {
          restarted = true;
          await cluster.restart('fast');
        }
      });
      expect(restarted).toBe(true);
      const missing = () => {
        const got = new Set(receiver.requests.map(receivedKey));
        return [...writer.expected].filter((key) => !got.has(key));
      };
      await eventually(() => missing().length === 0, () => `every change to arrive after the restart (missing ${missing().length}, e.g. ${missing().slice(0, 3).join(', ')})`, 60_000);
      expect(daemon.readiness().ready).toBe(true);
    } finally {
      await daemon?.stop();
      await db.drop();
    }
  });

  it('two back-to-back transactions, the second committing right where the first ends, with a crash between', async () => {
    // Notes, pitfall 1: if the acknowledged position were one past the first commit's end, the second
    // transaction (whose commit record starts exactly there) would be skipped after the restart.
    const db = await database('backtoback');
    const settings = { 'replication.heartbeatIntervalMs': 600_000, 'log.level': 'warn' };
    await prepareDatabase(db, settings);
    let bridge: BridgeProcess | null = null;
    const streaming = async () => {
      await eventually(async () => (await db.pool.query(`select active from pg_replication_slots where database = current_database()`)).rows[0]?.active === true, 'the bridge to stream', 30_000);
    };
    try {
      receiver.requests.length = 0;
      receiver.script((req) => (req.json?.data?.name === 'second' ? 'hang' : { status: 200 }));
      await addWebhook(db, receiver.url, ['company.created']);
      bridge = spawnBridge(db, settings);
      await streaming();
      const second = await db.pool.connect();
      await second.query('begin');
      await second.query(`insert into company (name) values ('second')`);
      await db.pool.query(`insert into company (name) values ('first')`);
      await second.query('commit');
      second.release();
      const commits = await db.pool.query(`select count(*)::int as n from company`);
      expect(commits.rows[0].n).toBe(2);
      await receiver.waitFor((reqs) => reqs.some((q) => q.json.data.name === 'first') && reqs.some((q) => q.json.data.name === 'second'));
      await new Promise((resolve) => setTimeout(resolve, 1_000)); // the first transaction is acknowledged by now
      bridge.child.kill('SIGKILL');
      await bridge.exited;
      receiver.script(() => ({ status: 200 }));
      const before = receiver.requests.length;
      bridge = spawnBridge(db, settings);
      await receiver.waitFor((reqs) => reqs.slice(before).some((q) => q.json.data.name === 'second'), 30_000);
    } finally {
      bridge?.child.kill('SIGKILL');
      await bridge?.exited;
      await db.drop();
    }
  });
});
