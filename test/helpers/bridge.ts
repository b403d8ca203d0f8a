/**
 * Running the bridge in tests: in-process (a Daemon) or as a child process (for SIGKILL and SIGTERM),
 * against a database made by createTestDatabase(), with intervals shortened so tests stay quick.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { beforeEach } from 'vitest';
import { fileURLToPath } from 'node:url';
import { loadConfig, type BridgeConfig } from '../../src/config.js';
import { Daemon } from '../../src/daemon.js';
import { createLogger } from '../../src/log.js';
import { migrate } from '../../src/migrate.js';
import type { TestDatabase } from './database.js';
import { parseLsn } from '../../src/replication/lsn.js';
import { waitUntil } from './wait.js';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const CRM_SCHEMA_SQL = readFileSync(new URL('../../examples/crm-schema.sql', import.meta.url), 'utf8');

/** Config overrides every test bridge gets: its own slot, loopback receivers allowed, quick timers. */
export function testOverrides(db: TestDatabase, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    'database.url': db.url,
    'replication.slot': `slot_${db.name}`.slice(0, 63),
    'replication.publication': 'pgwb',
    'replication.heartbeatIntervalMs': 500,
    'replication.ackIntervalMs': 200,
    'http.port': 0,
    'delivery.allowedCidrs': ['127.0.0.0/8'],
    'delivery.retrySchedule': [1, 1, 1],
    'delivery.storePollMs': 100,
    'delivery.timeoutMs': 3_000,
    'log.level': 'info',
    ...extra,
  };
}

export function testConfig(db: TestDatabase, extra: Record<string, unknown> = {}): BridgeConfig {
  return loadConfig({ env: {}, overrides: testOverrides(db, extra) });
}

/** CRM tables + bridge migrations, as a user would: `psql -f crm.sql && pg-webhook-bridge migrate`. */
export async function prepareDatabase(db: TestDatabase, extra: Record<string, unknown> = {}, extraSql = ''): Promise<BridgeConfig> {
  const config = testConfig(db, extra);
  const client = await db.pool.connect();
  try {
    await client.query(CRM_SCHEMA_SQL + extraSql);
    await migrate(client, config);
  } finally {
    client.release();
  }
  return config;
}

/** Log lines of an in-process daemon, kept for assertions. */
export class LogCapture extends Writable {
  lines: Array<Record<string, any>> = [];
  override _write(chunk: Buffer, _enc: string, done: () => void): void {
    for (const line of chunk.toString('utf8').split('\n')) if (line) this.lines.push(JSON.parse(line));
    done();
  }
  text(): string {
    return this.lines.map((l) => JSON.stringify(l)).join('\n');
  }
}

/** Logs of the in-process daemons of the current file: printed when a test fails, to say why. */
const liveDaemonLogs = new Set<LogCapture>();
beforeEach(({ onTestFailed }) => {
  onTestFailed(() => {
    for (const logs of liveDaemonLogs)
      console.log(
        `in-process daemon log (last 60 lines):\n${logs.lines
          .slice(-60)
          .map((l) => JSON.stringify(l))
          .join('\n')}`,
      );
  });
});

export async function startDaemon(config: BridgeConfig): Promise<{ daemon: Daemon; logs: LogCapture }> {
  const logs = new LogCapture();
  liveDaemonLogs.add(logs);
  const daemon = new Daemon(config, createLogger(config.log.level, logs));
  await daemon.start();
  return { daemon, logs };
}

export async function addWebhook(
  db: TestDatabase,
  url: string,
  operations: string[] = ['*.*'],
  secret = 'test-secret',
  schema = 'webhook_bridge',
): Promise<string> {
  const { rows } = await db.pool.query(`insert into ${schema}.webhooks ("targetUrl", operations, secret) values ($1, $2, $3) returning id::text`, [
    url,
    operations,
    secret,
  ]);
  return rows[0].id;
}

export interface BridgeProcess {
  child: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
}

/** `pg-webhook-bridge start` in a child process, configured through the environment and flags. */
export function spawnBridge(
  db: TestDatabase,
  extra: Record<string, unknown> = {},
  command: string[] = ['start'],
  env: Record<string, string> = {},
): BridgeProcess {
  const overrides = testOverrides(db, extra);
  const args: string[] = [];
  for (const [key, value] of Object.entries(overrides)) {
    const flag = `--${key.replace(/\./g, '-').replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
    args.push(flag, typeof value === 'string' ? value : JSON.stringify(value));
  }
  const child = spawn(process.execPath, ['bin/pg-webhook-bridge.js', ...args, ...command], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, LOG_LEVEL: undefined, ...env },
  });
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, output: () => output, exited };
}

/** `pg-webhook-bridge start` in a child process, once its stream is streaming (its output on a timeout). */
export async function spawnStreamingBridge(db: TestDatabase, extra: Record<string, unknown> = {}): Promise<BridgeProcess> {
  const started = spawnBridge(db, extra);
  await eventually(
    () => slotStreaming(db.pool),
    () => `the bridge to stream; output:\n${started.output()}`,
    30_000,
  );
  return started;
}

/** Runs a CLI command to completion. */
export async function runCli(
  args: string[],
  env: Record<string, string | undefined> = {},
  stdin?: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['bin/pg-webhook-bridge.js', ...args], {
    cwd: ROOT,
    stdio: [stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  if (stdin !== undefined) child.stdin!.end(stdin);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  return { code, stdout, stderr };
}

/** Waits until `fn` returns true, polling; fails with `what` after timeoutMs. */
export const eventually = waitUntil;

/**
 * Waits until an in-process daemon has taken up a webhooks change: each `live` webhook has its delivery
 * lane (every live webhook gets one when the list is reloaded) and no `gone` webhook has one any more.
 */
export async function waitForLanes(daemon: Daemon, { live = [], gone = [] }: { live?: string[]; gone?: string[] }): Promise<void> {
  await waitUntil(
    () => {
      const lanes = new Set(daemon.laneStates().map((l) => l.webhookId));
      return live.every((id) => lanes.has(id)) && gone.every((id) => !lanes.has(id));
    },
    () =>
      `the daemon's lanes to include [${live.join(', ')}] and exclude [${gone.join(', ')}]; it has [${daemon
        .laneStates()
        .map((l) => l.webhookId)
        .join(', ')}]`,
  );
}

/**
 * Waits until an in-process daemon has nothing of a webhook in memory or in flight and the store holds
 * `storedPending` of its deliveries: nothing more is on its way to it, unless a stored one is retried.
 */
export async function waitForLaneIdle(daemon: Daemon, db: TestDatabase, webhookId: string, storedPending = 0): Promise<void> {
  let state = '';
  await waitUntil(
    async () => {
      const lane = daemon.laneStates().find((l) => l.webhookId === webhookId);
      const { rows } = await db.pool.query(`select count(*)::int as n from webhook_bridge.deliveries where webhook_id = $1 and status = 'pending'`, [
        webhookId,
      ]);
      state = `lane ${JSON.stringify(lane ?? null)}, ${rows[0].n} stored pending`;
      return (lane === undefined || (lane.inMemory === 0 && lane.inFlight === 0)) && rows[0].n === storedPending;
    },
    () => `webhook ${webhookId} to have nothing in memory or in flight and ${storedPending} stored pending; ${state}`,
  );
}

/** Waits until the slot has acknowledged all WAL written so far: every change committed by now is routed, and delivered or stored. */
export async function waitForSlotToPassNow(db: TestDatabase, slot = String(testOverrides(db)['replication.slot'])): Promise<void> {
  const { rows } = await db.pool.query('select pg_current_wal_lsn()::text as l');
  const target = parseLsn(rows[0].l);
  await waitUntil(async () => (await confirmedFlushLsn(db, slot)) >= target, `slot ${slot} to pass ${rows[0].l}`, 30_000);
}

/**
 * Whether a bridge streams the slot (by name, else this database's): active is not enough, since a slot
 * being created is active too, and a change committed before its creation ends is never streamed.
 */
export async function slotStreaming(pool: Pick<TestDatabase['pool'], 'query'>, slot?: string): Promise<boolean> {
  const { rows } = await pool.query(
    `select active and confirmed_flush_lsn is not null as streaming from pg_replication_slots where ${slot === undefined ? 'database = current_database()' : 'slot_name = $1'}`,
    slot === undefined ? [] : [slot],
  );
  return rows[0]?.streaming === true;
}

export async function confirmedFlushLsn(db: TestDatabase, slot: string): Promise<bigint> {
  const { rows } = await db.pool.query(`select confirmed_flush_lsn::text as l from pg_replication_slots where slot_name = $1`, [slot]);
  return parseLsn(rows[0]?.l ?? '0/0');
}

/** A port nothing listens on right now (listen on 0, close). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}
