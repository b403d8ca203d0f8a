/**
 * One 200,000-row transaction is delivered completely while the daemon's memory
 * stays bounded. The daemon runs as a child process so its peak RSS (the kernel's VmHWM) is its own.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addWebhook, eventually, slotStreaming, prepareDatabase, spawnBridge, type BridgeProcess } from '../helpers/bridge.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

const ROWS = 200_000;
const RSS_LIMIT_BYTES = 300 * 1024 * 1024;
const RSS_SAMPLE_MS = 100;
const DELIVERY_TIMEOUT_MS = 150_000;

/** VmHWM (peak resident set) and VmRSS of a process, in bytes, from /proc/<pid>/status. */
function memoryOf(pid: number): { peak: number; current: number } | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kib = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024;
    return { peak: kib('VmHWM'), current: kib('VmRSS') };
  } catch {
    return null; // exited
  }
}

/**
 * The lightest receiver that still checks every event: it parses each body, marks the row as seen
 * and answers 200 at once. It keeps no request objects, so 200,000 of them cost the test nothing.
 */
async function startCountingReceiver(): Promise<{ url: string; distinct: () => number; requests: () => number; close: () => Promise<void> }> {
  const seen = new Uint8Array(ROWS + 1);
  let distinct = 0;
  let requests = 0;
  const sockets = new Set<net.Socket>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      requests++;
      const payload = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { event: string; data: { id: number; name: string } };
      const { id, name } = payload.data;
      if (payload.event === 'item.created' && name === `item ${id}` && seen[id] === 0) {
        seen[id] = 1;
        distinct++;
      }
      res.writeHead(200).end();
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}/`,
    distinct: () => distinct,
    requests: () => requests,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      }),
  };
}

describe('a 200,000-row transaction', () => {
  let db: TestDatabase;
  let bridge: BridgeProcess | undefined;
  let receiver: Awaited<ReturnType<typeof startCountingReceiver>>;
  const settings = { 'source.tables': { 'public.item': 'item' }, 'log.level': 'warn' };

  beforeAll(async () => {
    db = await createTestDatabase('bigtx');
    await prepareDatabase(db, settings, 'create table public.item (id integer primary key, name text not null, qty integer not null);');
    receiver = await startCountingReceiver();
    await addWebhook(db, receiver.url, ['item.created']);
  });

  afterAll(async () => {
    if (bridge && bridge.child.exitCode === null) {
      bridge.child.kill('SIGTERM');
      const exited = await Promise.race([bridge.exited, new Promise((resolve) => setTimeout(() => resolve('timeout'), 15_000))]);
      if (exited === 'timeout') bridge.child.kill('SIGKILL');
    }
    await receiver?.close();
    await db?.drop();
  });

  it('is delivered completely with the daemon under 300 MB peak RSS', async () => {
    const started = spawnBridge(db, settings);
    bridge = started;
    await eventually(() => slotStreaming(db.pool), 'the bridge to stream', 60_000);
    const pid = started.child.pid!;
    const startRss = memoryOf(pid)!.current;
    let sampledPeak = 0;
    const sampler = setInterval(() => {
      const m = memoryOf(pid);
      if (m) sampledPeak = Math.max(sampledPeak, m.current);
    }, RSS_SAMPLE_MS);

    const t0 = Date.now();
    try {
      // One statement, one transaction: the stream gets one Begin, 200,000 Inserts, one Commit.
      await db.pool.query(`insert into public.item select i, 'item ' || i, i % 100 from generate_series(1, ${ROWS}) i`);
      const committedMs = Date.now() - t0;
      await eventually(() => receiver.distinct() === ROWS || started.child.exitCode !== null, `all ${ROWS} rows at the receiver`, DELIVERY_TIMEOUT_MS).catch(
        (error) => {
          throw new Error(
            `${(error as Error).message}: got ${receiver.distinct()} distinct of ${receiver.requests()} requests; bridge output:\n${started.output().slice(-3_000)}`,
          );
        },
      );
      const deliveredMs = Date.now() - t0;
      expect(started.child.exitCode, started.output().slice(-3_000)).toBeNull();
      const memory = memoryOf(pid)!;
      const mib = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
      console.log(
        `[bigTransaction] ${ROWS} rows in one transaction: committed in ${committedMs} ms, all delivered after ${deliveredMs} ms ` +
          `(${Math.round(ROWS / (deliveredMs / 1000))} events/s, ${receiver.requests()} requests); daemon RSS: ${mib(startRss)} at start, ` +
          `peak ${mib(memory.peak)} (VmHWM; sampled peak ${mib(sampledPeak)}), ${mib(memory.current)} now`,
      );
      expect(receiver.distinct()).toBe(ROWS);
      expect(memory.peak).toBeLessThan(RSS_LIMIT_BYTES);
      // The slot moves past the transaction once every delivery is done.
      await eventually(
        async () => {
          const { rows } = await db.pool.query(
            `select confirmed_flush_lsn >= pg_current_wal_lsn() - 1024 * 1024 as caught_up from pg_replication_slots where database = current_database()`,
          );
          return rows[0]?.caught_up === true;
        },
        'the slot to acknowledge the big transaction',
        30_000,
      );
    } finally {
      clearInterval(sampler);
    }
  });
});
