import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Daemon } from '../../src/daemon.js';
import { addWebhook, eventually, slotStreaming, prepareDatabase, spawnBridge, startDaemon, type BridgeProcess, type LogCapture } from '../helpers/bridge.js';
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
    // Default wal_sender_timeout (60 s), as in production: a fast shutdown must not wait on the bridge.
    cluster = await startCluster({ extraFlags: process.env.PGWB_RESTART_DEBUG ? ['-c', 'log_min_messages=debug2', '-c', 'log_replication_commands=on'] : [] });
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

  it('pg_ctl restart -m fast mid-stream: nothing lost, the daemon reconnects by itself', async () => {
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
      await eventually(
        () => missing().length === 0,
        () => `every change to arrive after the restart (missing ${missing().length}, e.g. ${missing().slice(0, 3).join(', ')})`,
        60_000,
      );
      expect(daemon.readiness().ready).toBe(true);
    } finally {
      await daemon?.stop();
      await db.drop();
    }
  });

  it('a delivery still in flight does not hold a fast shutdown; it arrives after the restart', async () => {
    // Postgres' fast shutdown waits until each logical client confirms everything sent, and answers to
    // its keepalives restart that wait: a bridge that cannot confirm (a receiver hanging for the whole
    // attempt timeout here) must let go of the stream rather than hold the server for that long.
    const db = await database('heldshutdown');
    const config = await prepareDatabase(db, { 'delivery.timeoutMs': 120_000 });
    let daemon: Daemon | null = null;
    let logs: LogCapture;
    try {
      receiver.requests.length = 0;
      receiver.script(() => 'hang');
      await addWebhook(db, receiver.url, ['company.created']);
      ({ daemon, logs } = await startDaemon(config));
      await db.pool.query(`insert into company (name) values ('held')`);
      await receiver.waitFor((reqs) => reqs.length === 1);
      const started = Date.now();
      await cluster.restart('fast');
      const restartMs = Date.now() - started;
      console.log(`[held shutdown] pg_ctl restart -m fast took ${restartMs} ms with a delivery in flight`);
      // Unfixed, the restart waits for the 120 s attempt (pg_ctl gives up at 60 s and this test fails).
      expect(restartMs).toBeLessThan(30_000);
      const letGo = logs!.lines.filter((l) => /waiting for this stream to confirm|Postgres is shutting down/.test(l.msg));
      expect(letGo.length).toBeGreaterThan(0);
      console.log(`[held shutdown] the bridge let go of the stream: ${letGo.map((l) => l.msg).join(' | ')}`);
      receiver.script(() => ({ status: 200 }));
      await eventually(() => daemon!.readiness().ready, 'the daemon to reconnect', 30_000);
      await db.pool.query(`insert into company (name) values ('after')`);
      await receiver.waitFor((reqs) => reqs.some((q) => q.json.data.name === 'after'), 30_000);
    } finally {
      await daemon?.stop();
      await db.drop();
    }
  });

  it('two back-to-back transactions, the second committing right where the first ends, with a crash between', async () => {
    // If the acknowledged position were one past the first commit's end, the second
    // transaction (whose commit record starts exactly there) would be skipped after the restart.
    const db = await database('backtoback');
    const settings = { 'replication.heartbeatIntervalMs': 600_000, 'log.level': 'warn' };
    await prepareDatabase(db, settings);
    let bridge: BridgeProcess | null = null;
    const streaming = async () => {
      await eventually(() => slotStreaming(db.pool), 'the bridge to stream', 30_000);
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
