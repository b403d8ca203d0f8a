/**
 * The benchmark's webhook receiver, in its own process so that it never shares a CPU queue with the
 * daemon or the bench driver:
 *
 *   node --import tsx test/bench/receiver.ts      (spawned by bench.ts with an IPC channel)
 *
 * Plain node:http on 127.0.0.1. Every request is answered 200 with an empty body as soon as its body
 * has arrived. Per listening port it counts requests, distinct (path, `webhook-id`) pairs (duplicates
 * show up as count > unique), body bytes and the first/last arrival time; for every request it records the
 * commit-to-receipt latency: arrival (wall clock, sub-millisecond) minus the payload's `timestamp`
 * (the transaction's commit time, millisecond precision, so latencies read up to 1 ms high).
 *
 * IPC requests ({ id, cmd, ... }) and replies ({ id, ok, ... }):
 *   listen { port }   listen on `port` (0: any free one); replies { port }
 *   close  { port }   stop listening and drop every connection: the target is now "dead" (refused)
 *   reset             forget all counts, samples and latencies
 *   stats { latency } { ports: { <port>: PortStats }, latency: LatencySummary (zeros unless asked), bodies: string[], cpuUs }
 *   exit
 */
import http from 'node:http';
import type net from 'node:net';
import { performance } from 'node:perf_hooks';

const HOST = '127.0.0.1';
const SAMPLE_BODIES = 200;
const TIMESTAMP_KEY = '"timestamp":"';
const ISO_LENGTH = 24; // 2026-02-10T15:30:50.123Z

export interface PortStats {
  count: number;
  unique: number;
  bytes: number;
  /** Wall-clock ms (performance.timeOrigin + performance.now()) of the first and last request; 0 when none. */
  firstAt: number;
  lastAt: number;
}

export interface LatencySummary {
  n: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  mean: number;
  /** Median of the first and of the last fifth of arrivals: a queue that keeps growing shows here. */
  p50FirstFifth: number;
  p50LastFifth: number;
}

export type ReceiverRequest =
  | { id: number; cmd: 'listen'; port: number }
  | { id: number; cmd: 'close'; port: number }
  | { id: number; cmd: 'reset' }
  | { id: number; cmd: 'stats'; latency?: boolean }
  | { id: number; cmd: 'exit' };

interface Listener {
  server: http.Server;
  sockets: Set<net.Socket>;
}

interface Counter {
  count: number;
  /** Distinct `${path} ${webhook-id}` pairs. */
  ids: Set<string>;
  bytes: number;
  firstAt: number;
  lastAt: number;
}

const listeners = new Map<number, Listener>();
let counters = new Map<number, Counter>();
let latencies = new Float64Array(1 << 16);
let latencyCount = 0;
let bodies: string[] = [];

function counterFor(port: number): Counter {
  let counter = counters.get(port);
  if (!counter) {
    counter = { count: 0, ids: new Set(), bytes: 0, firstAt: 0, lastAt: 0 };
    counters.set(port, counter);
  }
  return counter;
}

function record(port: number, path: string, id: string | undefined, body: Buffer, at: number): void {
  const counter = counterFor(port);
  counter.count++;
  if (id !== undefined) counter.ids.add(`${path} ${id}`);
  counter.bytes += body.length;
  if (counter.firstAt === 0) counter.firstAt = at;
  counter.lastAt = at;
  if (bodies.length < SAMPLE_BODIES) bodies.push(body.toString('utf8'));
  // No JSON.parse: the receiver must stay far cheaper than the sender it measures.
  const i = body.indexOf(TIMESTAMP_KEY);
  if (i < 0) return;
  const start = i + TIMESTAMP_KEY.length;
  const committed = Date.parse(body.toString('latin1', start, start + ISO_LENGTH));
  if (Number.isNaN(committed)) return;
  if (latencyCount === latencies.length) {
    const grown = new Float64Array(latencies.length * 2);
    grown.set(latencies);
    latencies = grown;
  }
  latencies[latencyCount++] = at - committed;
}

function listen(port: number): Promise<number> {
  const sockets = new Set<net.Socket>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const at = performance.timeOrigin + performance.now();
      const body = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
      // Distinct per webhook (URL) and event: ten webhooks on one origin are ten deliveries of an event.
      const id = req.headers['webhook-id'];
      record(ownPort, req.url ?? '', typeof id === 'string' ? id : undefined, body, at);
      res.writeHead(200, { 'content-length': '0' });
      res.end();
    });
  });
  server.keepAliveTimeout = 60_000;
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  let ownPort = port;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, HOST, () => {
      ownPort = (server.address() as net.AddressInfo).port;
      listeners.set(ownPort, { server, sockets });
      resolve(ownPort);
    });
  });
}

async function close(port: number): Promise<void> {
  const listener = listeners.get(port);
  if (!listener) return;
  listeners.delete(port);
  const closed = new Promise<void>((resolve) => listener.server.close(() => resolve()));
  for (const socket of listener.sockets) socket.destroy();
  await closed;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank];
}

function median(values: Float64Array): number {
  return percentile(values.slice().sort(), 50);
}

function latencySummary(): LatencySummary {
  const fifth = Math.floor(latencyCount / 5);
  const sorted = latencies.slice(0, latencyCount).sort();
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    n: sorted.length,
    p50: percentile(sorted, 50),
    p95: percentile(sorted, 95),
    p99: percentile(sorted, 99),
    max: sorted.length ? sorted[sorted.length - 1] : 0,
    mean: sorted.length ? sum / sorted.length : 0,
    p50FirstFifth: median(latencies.subarray(0, fifth)),
    p50LastFifth: median(latencies.subarray(latencyCount - fifth, latencyCount)),
  };
}

const NO_LATENCY: LatencySummary = { n: 0, p50: 0, p95: 0, p99: 0, max: 0, mean: 0, p50FirstFifth: 0, p50LastFifth: 0 };

/**
 * The latency summary sorts every sample (a million in the fan-out): computed only when asked, or the
 * bench's progress polls would cost this process more than the requests it measures.
 */
function stats(withLatency: boolean): { ports: Record<number, PortStats>; latency: LatencySummary; bodies: string[]; cpuUs: number } {
  const ports: Record<number, PortStats> = {};
  for (const [port, c] of counters) ports[port] = { count: c.count, unique: c.ids.size, bytes: c.bytes, firstAt: c.firstAt, lastAt: c.lastAt };
  const cpu = process.cpuUsage();
  return { ports, latency: withLatency ? latencySummary() : { ...NO_LATENCY, n: latencyCount }, bodies, cpuUs: cpu.user + cpu.system };
}

async function handle(message: ReceiverRequest): Promise<Record<string, unknown>> {
  switch (message.cmd) {
    case 'listen':
      return { port: await listen(message.port) };
    case 'close':
      await close(message.port);
      return {};
    case 'reset':
      counters = new Map();
      latencyCount = 0;
      bodies = [];
      return {};
    case 'stats':
      return stats(message.latency === true);
    case 'exit':
      setImmediate(() => process.exit(0));
      return {};
  }
}

process.on('message', (message: ReceiverRequest) => {
  handle(message).then(
    (result) => process.send!({ id: message.id, ok: true, ...result }),
    (error: Error) => process.send!({ id: message.id, ok: false, error: error.message }),
  );
});
// The bench is gone (finished, crashed or Ctrl-C): so are we.
process.on('disconnect', () => process.exit(0));
process.send!({ id: 0, ok: true, ready: true });
