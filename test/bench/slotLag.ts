import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import { parseLsn } from '../../src/replication/lsn.js';

/** How long the slot took to confirm the WAL position of each moment of the run, in ms. */
export interface SlotLagSummary {
  samples: number;
  p50: number;
  p99: number;
  max: number;
  /** Positions not confirmed by the end of the run (their lag is counted up to then). */
  unconfirmed: number;
}

const SAMPLE_MS = 50;

/**
 * Every SAMPLE_MS, notes the current WAL position and the slot's confirmed_flush_lsn; each noted
 * position's lag is the time until confirmed_flush_lsn passed it. `stop()` keeps sampling (for at most
 * `settleMs`) until the positions noted during the run are confirmed.
 */
export function sampleSlotLag(admin: pg.Pool, slot: string): { stop(settleMs: number): Promise<SlotLagSummary> } {
  let running = true;
  const pending: Array<{ lsn: bigint; at: number }> = [];
  const lags: number[] = [];
  const sample = async (note: boolean): Promise<void> => {
    const { rows } = await admin
      .query(`select pg_current_wal_lsn()::text as current, confirmed_flush_lsn::text as confirmed from pg_replication_slots where slot_name = $1`, [slot])
      .catch(() => ({ rows: [] as Array<{ current: string; confirmed: string | null }> }));
    const now = performance.now();
    if (rows.length === 0) return;
    const confirmed = rows[0].confirmed ? parseLsn(rows[0].confirmed) : 0n;
    while (pending.length > 0 && pending[0]!.lsn <= confirmed) lags.push(now - pending.shift()!.at);
    if (note) pending.push({ lsn: parseLsn(rows[0].current), at: now });
  };
  const loop = (async () => {
    while (running) {
      await sample(true);
      await sleep(SAMPLE_MS);
    }
  })();
  return {
    async stop(settleMs: number) {
      running = false;
      await loop;
      const deadline = performance.now() + settleMs;
      while (pending.length > 0 && performance.now() < deadline) {
        await sleep(SAMPLE_MS);
        await sample(false);
      }
      const unconfirmed = pending.length;
      for (const { at } of pending) lags.push(performance.now() - at);
      const sorted = [...lags].sort((a, b) => a - b);
      const at = (q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
      return { samples: sorted.length, p50: at(0.5), p99: at(0.99), max: sorted.at(-1) ?? 0, unconfirmed };
    },
  };
}

/** A receiver that accepts connections and never answers: each attempt ends on the daemon's timeout. */
export async function startHangingServer(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
