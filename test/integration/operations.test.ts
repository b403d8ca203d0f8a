import net from 'node:net';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon } from '../../src/daemon.js';
import { createLogger } from '../../src/log.js';
import { disableWebhook } from '../../src/store/webhookState.js';
import {
  addWebhook,
  confirmedFlushLsn,
  eventually,
  freePort,
  LogCapture,
  prepareDatabase,
  runCli,
  slotStreaming,
  spawnBridge,
  testConfig,
  type BridgeProcess,
  waitForLanes,
} from '../helpers/bridge.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startCluster, type ClusterHandle } from '../helpers/postgresCluster.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';
import { ChangeWriter, receivedKey } from '../helpers/writer.js';

async function getJson(port: number, path: string): Promise<{ status: number; body: any; text: string }> {
  const response = await fetch(`http://127.0.0.1:${port}${path}`);
  const text = await response.text();
  let body: any;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  return { status: response.status, body, text };
}

/** A slot that has caught up lags by heartbeats and in-flight WAL of the shared cluster, far below this. */
const SLOT_CAUGHT_UP_BYTES = 64 * 1024 * 1024;

function metricValue(text: string, name: string, labels = ''): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels}`) && !l.startsWith('#'));
  return line ? Number(line.split(' ').pop()) : Number.NaN;
}

/** Health, metrics, high availability, slot health. */
describe('operations', () => {
  let db: TestDatabase;
  let receiver: Receiver;
  const children: BridgeProcess[] = [];

  beforeAll(async () => {
    db = await createTestDatabase('ops');
    await prepareDatabase(db);
    receiver = await startReceiver();
  });

  afterAll(async () => {
    for (const child of children) child.child.kill('SIGKILL');
    await Promise.all(children.map((c) => c.exited));
    await receiver?.close();
    await db?.drop();
  });

  it('/readyz is 503 while the database is unreachable and 200 once it is; /metrics counts what was delivered', async () => {
    // A door to the database that opens later: the daemon starts while nothing listens there.
    const port = await freePort();
    const realPort = Number(new URL(db.url).port);
    // Its connections are closed with it: a proxied pair can stay half-open after the daemon is gone.
    const doorSockets = new Set<net.Socket>();
    const door = net.createServer((socket) => {
      const upstream = net.connect(realPort, '127.0.0.1');
      doorSockets.add(socket).add(upstream);
      socket.pipe(upstream).pipe(socket);
      socket.on('error', () => upstream.destroy());
      upstream.on('error', () => socket.destroy());
    });
    const url = new URL(db.url);
    url.port = String(port);
    const httpPort = await freePort();
    const config = testConfig(db, { 'database.url': url.toString(), 'http.port': httpPort, 'http.host': '127.0.0.1', 'replication.slot': 'ops_metrics' });
    const daemon = new Daemon(config, createLogger('silent', new LogCapture()));
    const started = daemon.start();
    try {
      await eventually(async () => (await getJson(httpPort, '/healthz').catch(() => ({ status: 0 }))).status === 200, '/healthz to answer');
      const before = await getJson(httpPort, '/readyz');
      expect(before.status).toBe(503);
      // A short class: the host, port and driver error belong in the log, not on an unauthenticated endpoint.
      expect(before.body).toEqual({ ready: false, reason: 'database unreachable' });
      await new Promise<void>((resolve) => door.listen(port, '127.0.0.1', resolve));
      await started;
      await eventually(async () => (await getJson(httpPort, '/readyz')).status === 200, '/readyz to turn 200', 30_000);
      expect((await getJson(httpPort, '/readyz')).body).toMatchObject({ ready: true, role: 'leader' });

      receiver.requests.length = 0;
      receiver.script((_req, i) => (i === 0 ? { status: 500 } : { status: 200 }));
      await waitForLanes(daemon, { live: [await addWebhook(db, receiver.url, ['person.*', 'company.created'])] });
      await db.pool.query(`insert into person ("firstName") select 'm' || g from generate_series(1, 20) g`);
      await db.pool.query(`update person set city = 'Paris' where "firstName" = 'm1'`);
      await db.pool.query(`insert into company (name) values ('MetricsCo')`);
      await receiver.waitForCount(23, 20_000); // 22 events, one of them retried once
      // The gauges are read from the database every 5 s: wait for a reading taken after the burst was
      // delivered and acknowledged (nothing pending, the slot caught up to well under 64 MiB of WAL; an
      // unset, stale or misread lag, such as the absolute WAL position, fails here).
      let text = '';
      await eventually(
        async () => {
          ({ text } = await getJson(httpPort, '/metrics'));
          const lag = metricValue(text, 'pgwb_slot_lag_bytes');
          return metricValue(text, 'pgwb_store_backlog', '{status="pending"}') === 0 && lag >= 0 && lag < SLOT_CAUGHT_UP_BYTES;
        },
        () =>
          `gauges read after the burst; last scrape: ${text
            .split('\n')
            .filter((l) => /^pgwb_(slot_lag_bytes|store_backlog)/.test(l))
            .join(', ')}`,
        20_000,
      );
      expect(metricValue(text, 'pgwb_events_routed_total', '{object="person",action="created"}')).toBe(20);
      expect(metricValue(text, 'pgwb_events_routed_total', '{object="person",action="updated"}')).toBe(1);
      expect(metricValue(text, 'pgwb_events_routed_total', '{object="company",action="created"}')).toBe(1);
      // Labels carry the bare table name: per-workspace schemas must not multiply the series.
      expect(metricValue(text, 'pgwb_changes_decoded_total', '{table="person",kind="insert"}')).toBe(20);
      expect(text.split('\n').filter((line) => line.startsWith('pgwb_') && /="[^"]*(public|webhook_bridge)\./.test(line))).toEqual([]);
      expect(metricValue(text, 'pgwb_delivery_attempts_total', '{outcome="success"}')).toBe(22);
      expect(metricValue(text, 'pgwb_delivery_attempts_total', '{outcome="retry"}')).toBe(1);
      expect(metricValue(text, 'pgwb_delivery_attempt_duration_seconds_count', '{outcome="success"}')).toBe(22);
      expect(metricValue(text, 'pgwb_commit_to_delivery_seconds_count')).toBe(22);
      expect(metricValue(text, 'pgwb_commit_to_delivery_seconds_sum')).toBeGreaterThan(0);
      expect(metricValue(text, 'pgwb_slot_lag_bytes')).toBeLessThan(SLOT_CAUGHT_UP_BYTES);
      expect(metricValue(text, 'pgwb_slot_wal_status', '{status="reserved"}')).toBe(1);
      expect(metricValue(text, 'pgwb_store_backlog', '{status="pending"}')).toBe(0);
      expect(metricValue(text, 'pgwb_store_backlog', '{status="dead"}')).toBe(0);
      expect(metricValue(text, 'pgwb_webhooks', '{state="active"}')).toBe(1);
      expect(metricValue(text, 'pgwb_leader')).toBe(1);
      expect(text).toMatch(/process_resident_memory_bytes \d+/);
    } finally {
      await daemon.stop();
      for (const socket of doorSockets) socket.destroy();
      await new Promise((resolve) => door.close(resolve));
      await db.pool.query(`update webhook_bridge.webhooks set "deletedAt" = now()`);
    }
  });

  it('/metrics for the alerting rules: readiness, seconds since the slot advanced, oldest pending delivery, webhooks the bridge disabled', async () => {
    const slot = 'ops_alerts';
    await db.pool.query(`select pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
    // Another replica leads (this client holds the leader lock): the daemon stands by, nobody reads the slot.
    const otherLeader = new pg.Client({ connectionString: db.url });
    await otherLeader.connect();
    await otherLeader.query(`select pg_advisory_lock(hashtext('pg-webhook-bridge'), hashtext($1))`, [slot]);
    const httpPort = await freePort();
    const config = testConfig(db, { 'http.port': httpPort, 'http.host': '127.0.0.1', 'replication.slot': slot, 'delivery.retrySchedule': [3_600] });
    const constructedAt = Date.now();
    const daemon = new Daemon(config, createLogger('silent', new LogCapture()));
    const metrics = async () => (await getJson(httpPort, '/metrics')).text;
    try {
      await daemon.start();
      expect((await getJson(httpPort, '/readyz')).body).toMatchObject({ ready: true, role: 'standby' });
      let text = await metrics();
      for (const name of ['pgwb_ready', 'pgwb_slot_last_advance_seconds', 'pgwb_store_oldest_pending_seconds', 'pgwb_webhooks_auto_disabled_total']) {
        expect(text).toMatch(new RegExp(`^# HELP ${name} \\S.{20,}`, 'm'));
      }
      expect(metricValue(text, 'pgwb_ready')).toBe(1);
      expect(metricValue(text, 'pgwb_leader')).toBe(0);
      expect(metricValue(text, 'pgwb_webhooks_auto_disabled_total', '{reason="gone"}')).toBe(0);
      expect(metricValue(text, 'pgwb_webhooks_auto_disabled_total', '{reason="failing"}')).toBe(0);
      expect(metricValue(text, 'pgwb_store_oldest_pending_seconds')).toBe(0);

      // A still slot: the age grows through several 5 s reads, counted from the daemon's start.
      const position = await confirmedFlushLsn(db, slot);
      await eventually(
        async () => metricValue((text = await metrics()), 'pgwb_slot_last_advance_seconds') >= 11,
        'pgwb_slot_last_advance_seconds to pass 11 s',
        30_000,
      );
      const age = metricValue(text, 'pgwb_slot_last_advance_seconds');
      expect(age).toBeLessThanOrEqual((Date.now() - constructedAt) / 1_000);
      expect(age).toBeGreaterThan((Date.now() - constructedAt) / 1_000 - 2);
      expect(await confirmedFlushLsn(db, slot)).toBe(position);

      // The other leader goes away: this daemon leads, heartbeats move the slot, the age starts again.
      await otherLeader.end();
      await eventually(async () => (await getJson(httpPort, '/readyz')).body?.role === 'leader', 'the daemon to lead', 20_000);
      await eventually(
        async () => metricValue((text = await metrics()), 'pgwb_slot_last_advance_seconds') < 5.5,
        'pgwb_slot_last_advance_seconds to fall back under one read interval',
        20_000,
      );
      expect(metricValue(text, 'pgwb_leader')).toBe(1);
      expect(metricValue(text, 'pgwb_ready')).toBe(1);

      // A failing receiver: its delivery waits in the store (next retry in an hour), and ages.
      const failing = await startReceiver();
      const gone = await startReceiver();
      try {
        failing.script(() => ({ status: 500 }));
        gone.script(() => ({ status: 410 }));
        await addWebhook(db, failing.url, ['person.created']);
        await addWebhook(db, gone.url, ['company.created']);
        await db.pool.query(`insert into person ("firstName") values ('waiting')`);
        await failing.waitForCount(1);
        await eventually(
          async () => (await db.pool.query(`select count(*)::int as n from webhook_bridge.deliveries where status = 'pending'`)).rows[0].n === 1,
          'the failed delivery to be stored',
        );
        const storedAt = (await db.pool.query(`select created_at from webhook_bridge.deliveries where status = 'pending'`)).rows[0].created_at.getTime();
        await eventually(
          async () => metricValue((text = await metrics()), 'pgwb_store_oldest_pending_seconds') >= 2,
          'pgwb_store_oldest_pending_seconds to pass 2 s',
          30_000,
        );
        const oldest = metricValue(text, 'pgwb_store_oldest_pending_seconds');
        expect(oldest).toBeLessThanOrEqual((Date.now() - storedAt) / 1_000 + 0.5);
        expect(metricValue(text, 'pgwb_store_backlog', '{status="pending"}')).toBe(1);

        // 410 Gone: the bridge disables the webhook and counts it.
        await db.pool.query(`insert into company (name) values ('gone')`);
        await eventually(
          async () => metricValue((text = await metrics()), 'pgwb_webhooks_auto_disabled_total', '{reason="gone"}') === 1,
          'the 410 to be counted',
        );
        expect(metricValue(text, 'pgwb_webhooks_auto_disabled_total', '{reason="failing"}')).toBe(0);
      } finally {
        await Promise.all([failing.close(), gone.close()]);
      }
      // No label of these metrics names a table or a schema.
      for (const line of text.split('\n').filter((l) => /^pgwb_(ready|slot_last_advance|store_oldest_pending|webhooks_auto_disabled)/.test(l))) {
        expect(line).not.toMatch(/public|webhook_bridge|table=|schema=/);
      }
    } finally {
      await otherLeader.end().catch(() => undefined);
      await daemon.stop();
      await db.pool.query(`update webhook_bridge.webhooks set "deletedAt" = now()`);
      await db.pool.query(`delete from webhook_bridge.deliveries`);
    }
  });

  it('pgwb_webhooks{state} comes from the leader only: a replica that loses the lead drops its series, and has them again when it leads', async () => {
    const slot = 'ops_demoted';
    // It counts webhooks: those other tests of this file left live are removed first.
    await db.pool.query(`update webhook_bridge.webhooks set "deletedAt" = now() where "deletedAt" is null`);
    const [active, disabled] = [await addWebhook(db, receiver.url, ['person.*']), await addWebhook(db, receiver.url, ['company.*'])];
    await disableWebhook(db.pool, 'webhook_bridge', disabled, 'disabled by an operator');
    const daemon = new Daemon(testConfig(db, { 'replication.slot': slot }), createLogger('silent', new LogCapture()));
    const other = new pg.Client({ connectionString: db.url });
    await other.connect();
    const series = async () => (await daemon.metrics.registry.metrics()).split('\n').filter((l) => l.startsWith('pgwb_webhooks{'));
    try {
      await daemon.start();
      expect(daemon.role).toBe('leader');
      let counted: string[] = [];
      await eventually(
        async () => (counted = await series()).join() === 'pgwb_webhooks{state="active"} 1,pgwb_webhooks{state="disabled"} 1,pgwb_webhooks{state="invalid"} 0',
        () => `the leader's counts; last: ${counted.join()}`,
      );
      // Its lock session dies and another holder takes the lock before it retries: it stands by.
      await other.query(
        `select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'pg-webhook-bridge leader lock' and datname = current_database()`,
      );
      await other.query(`select pg_advisory_lock(hashtext('pg-webhook-bridge'), hashtext($1))`, [slot]);
      await eventually(() => daemon.role === 'standby', 'the daemon to stand by', 20_000);
      expect(await series()).toEqual([]);
      expect(metricValue(await daemon.metrics.registry.metrics(), 'pgwb_leader')).toBe(0);

      await other.query(`select pg_advisory_unlock(hashtext('pg-webhook-bridge'), hashtext($1))`, [slot]);
      await eventually(async () => daemon.role === 'leader' && (await series()).length === 3, 'the daemon to lead and count again', 20_000);
      expect(metricValue(await daemon.metrics.registry.metrics(), 'pgwb_webhooks', '{state="disabled"}')).toBe(1);
    } finally {
      await daemon.stop();
      await other.end();
      await db.pool.query(`update webhook_bridge.webhooks set "deletedAt" = now() where id = any($1)`, [[active, disabled]]);
    }
  });

  it('two daemons on one database: one streams, the other stands by, takes over within 10 s of a SIGKILL, and together they deliver everything', async () => {
    receiver.requests.length = 0;
    receiver.script(() => ({ status: 200 }));
    await addWebhook(db, receiver.url, ['*.*']);
    const portA = await freePort();
    const portB = await freePort();
    const a = spawnBridge(db, { 'http.port': portA, 'http.host': '127.0.0.1', 'log.level': 'warn' });
    children.push(a);
    await eventually(
      async () => (await getJson(portA, '/readyz').catch(() => ({ status: 0, body: null }))).body?.role === 'leader',
      () => `replica A to lead: ${a.output()}`,
      30_000,
    );
    const b = spawnBridge(db, { 'http.port': portB, 'http.host': '127.0.0.1', 'log.level': 'warn' });
    children.push(b);
    await eventually(
      async () => (await getJson(portB, '/readyz').catch(() => ({ status: 0, body: null }))).body?.role === 'standby',
      () => `replica B to stand by: ${b.output()}`,
      30_000,
    );
    expect((await getJson(portB, '/readyz')).status).toBe(200);

    // A standby never delivers what the leader delivers: each change arrives exactly once.
    const first = new ChangeWriter(db.pool);
    await first.write(1_000);
    await eventually(() => [...first.expected].every((k) => receiver.requests.some((q) => receivedKey(q) === k)), 'the first 1,000 changes', 30_000);
    // A standby that delivered too would be a second process, unordered with the leader's lanes, so no
    // marker can prove its absence: its copies would trail the leader's by a stream read, well under 1 s.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const counts = new Map<string, number>();
    for (const q of receiver.requests) counts.set(receivedKey(q), (counts.get(receivedKey(q)) ?? 0) + 1);
    expect([...counts.values()].filter((n) => n > 1)).toEqual([]);
    const status = await runCli(['--database-url', db.url, '--replication-slot', `slot_${db.name}`.slice(0, 63), 'status', '--json']);
    expect(JSON.parse(status.stdout)).toMatchObject({ slot: { exists: true, streaming: true }, replicas: { leader: 1, standby: 1 } });

    const burst = new ChangeWriter(db.pool, Math.random, 20, 'burst');
    let killedAt = 0;
    await burst.write(5_000, async (done) => {
      if (!killedAt && done >= 1_500) {
        a.child.kill('SIGKILL');
        killedAt = Date.now();
      }
    });
    await a.exited;
    await eventually(async () => (await getJson(portB, '/readyz')).body?.role === 'leader', 'replica B to take over', 10_000);
    console.log(`takeover: replica B leads ${Date.now() - killedAt} ms after the SIGKILL`);
    const missing = () => {
      const got = new Set(receiver.requests.map(receivedKey));
      return [...burst.expected].filter((k) => !got.has(k));
    };
    await eventually(
      () => missing().length === 0,
      () => `all 5,000 changes after the takeover (missing ${missing().length})`,
      60_000,
    );
    b.child.kill('SIGTERM');
    expect(await b.exited).toBe(0);
  });

  it('SIGTERM at any moment of start-up (connecting, creating the slot, starting the stream) exits 0', async () => {
    // A SIGTERM that arrived while the pipeline was still creating its slot ended the pool under it:
    // "Cannot use a pool after calling end on the pool", exit 1. Each delay lands in a different step.
    const slot = 'startup_sigterm';
    for (const delayMs of [0, 150, 300, 450, 600, 750, 900, 1_200]) {
      const bridge = spawnBridge(db, { 'replication.slot': slot, 'log.level': 'info', 'http.port': await freePort() });
      children.push(bridge);
      // Counted from the first log line (the health endpoint listens): signal handlers are installed by then.
      await eventually(() => bridge.output().includes('endpoints listening'), 'the daemon to begin starting', 30_000);
      await new Promise((resolve) => setTimeout(resolve, delayMs)); // the delay is the point: it picks the start-up step hit
      bridge.child.kill('SIGTERM');
      expect(await bridge.exited, `SIGTERM after ${delayMs} ms:\n${bridge.output()}`).toBe(0);
    }
  });
});

describe('slot health (private cluster)', () => {
  let cluster: ClusterHandle;

  beforeAll(async () => {
    cluster = await startCluster({ extraFlags: ['-c', 'max_slot_wal_keep_size=1MB', '-c', 'wal_keep_size=0'] });
  });

  afterAll(async () => {
    await cluster?.stop();
  });

  it('an invalidated, a dropped and a recreated slot are reported clearly by check and by the daemon', async () => {
    const url = cluster.adminUrl('postgres');
    const pool = new pg.Pool({ connectionString: url, max: 3 });
    const db: TestDatabase = { url, name: 'postgres', pool, drop: () => pool.end() };
    try {
      await prepareDatabase(db);
      const flags = ['--database-url', url, '--replication-slot', 'health_slot', '--replication-publication', 'pgwb', '--http-port', '0'];
      // Create the slot by running the daemon once.
      const first = spawnBridge(db, { 'replication.slot': 'health_slot' });
      await eventually(() => slotStreaming(pool, 'health_slot'), 'the first run to stream', 30_000);
      first.child.kill('SIGTERM');
      expect(await first.exited, first.output()).toBe(0);
      // Push the slot past max_slot_wal_keep_size: it is invalidated at the next checkpoint.
      await eventually(
        async () => {
          await pool.query(
            `create table if not exists filler (v text); insert into filler select repeat('x', 2000) from generate_series(1, 2000); select pg_switch_wal(); checkpoint;`,
          );
          return (await pool.query(`select wal_status from pg_replication_slots where slot_name = 'health_slot'`)).rows[0]?.wal_status === 'lost';
        },
        'the slot to be invalidated',
        60_000,
      );
      const check = await runCli([...flags, 'check']);
      expect(check.code).not.toBe(0);
      expect(check.stdout).toMatch(/problem: replication slot "health_slot" was invalidated by Postgres \(wal_status=lost\).*slot reset/);
      const lost = spawnBridge(db, { 'replication.slot': 'health_slot' });
      expect(await lost.exited).not.toBe(0);
      expect(lost.output()).toMatch(/invalidated by Postgres \(wal_status=lost\)/);

      const reset = await runCli([...flags, 'slot', 'reset', '--yes']);
      expect(reset.code).toBe(0);
      const healthy = await runCli([...flags, 'check']);
      expect(healthy.code).toBe(0);
      // This cluster limits the WAL a slot may keep: no warning about it.
      expect(healthy.stdout).not.toMatch(/max_slot_wal_keep_size is/);
      await pool.query(`select pg_drop_replication_slot('health_slot')`);
      const dropped = await runCli([...flags, 'check']);
      expect(dropped.code).not.toBe(0);
      expect(dropped.stdout).toMatch(/replication slot "health_slot" \(created by this bridge at .*\) no longer exists.*slot reset --yes/);
      const again = spawnBridge(db, { 'replication.slot': 'health_slot' });
      expect(await again.exited).not.toBe(0);
      expect(again.output()).toMatch(/no longer exists/);
      expect((await pool.query(`select count(*)::int as n from pg_replication_slots where slot_name = 'health_slot'`)).rows[0].n).toBe(0);

      // Recreated under the same name by someone else: it starts past what the bridge confirmed.
      await pool.query(`insert into company (name) values ('committed while the slot was gone')`);
      await pool.query(`select pg_create_logical_replication_slot('health_slot', 'pgoutput')`);
      const recreated = await runCli([...flags, 'check']);
      expect(recreated.code).not.toBe(0);
      expect(recreated.stdout).toMatch(
        /replication slot "health_slot" is at \S+, past \S+, the furthest this bridge ever confirmed: it was dropped and recreated.*slot reset/,
      );
      const ahead = spawnBridge(db, { 'replication.slot': 'health_slot' });
      expect(await ahead.exited).not.toBe(0);
      expect(ahead.output()).toMatch(/the furthest this bridge ever confirmed/);
      expect((await runCli([...flags, 'slot', 'reset', '--yes'])).code).toBe(0);
      expect((await runCli([...flags, 'check'])).code).toBe(0);
    } finally {
      await pool.end();
    }
  });
});
