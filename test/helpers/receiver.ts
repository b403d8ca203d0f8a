/**
 * A scriptable webhook receiver on real node:http, 127.0.0.1, port 0.
 *
 *   const rx = await startReceiver();
 *   rx.script((req, i) => (i === 0 ? { status: 500 } : { status: 200 }));
 *   ... point a webhook at rx.url ...
 *   await rx.waitForCount(2);
 *   await rx.close();
 *
 * A request is recorded once its body has fully arrived, before the script decides the reply, so
 * 'hang' and 'destroy' requests are recorded too.
 */
import http from 'node:http';
import type net from 'node:net';
import { waitUntil } from './wait.js';

export interface ReceivedRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  rawBody: string;
  /** JSON.parse(rawBody), or undefined when the body is not JSON. */
  json: any;
  /** Date.now() when the body was complete. */
  receivedAt: number;
}

/** 'hang': never answer (the socket stays open until close()); 'destroy': drop the TCP connection. */
export type Reply = { status: number; headers?: Record<string, string>; body?: string } | 'hang' | 'destroy';

export interface Receiver {
  /** http://127.0.0.1:<port>/ */
  url: string;
  port: number;
  requests: ReceivedRequest[];
  /** TCP connections accepted so far (keep-alive reuse shows as fewer connections than requests). */
  readonly connections: number;
  /** Decides each reply; default: 200 with an empty body. */
  script(fn: (req: ReceivedRequest, index: number) => Reply): void;
  /** Polls until predicate(requests) holds; rejects after timeoutMs (default 10 s) saying what arrived. */
  waitFor(predicate: (reqs: ReceivedRequest[]) => boolean, timeoutMs?: number): Promise<void>;
  waitForCount(n: number, timeoutMs?: number): Promise<void>;
  /** Stops listening and destroys every socket, hung ones included. */
  close(): Promise<void>;
  /** Like close() but the port can be reopened with listenAgain(): "receiver down". */
  stopListening(): Promise<void>;
  /** Listens on the same port again: "receiver back up". */
  listenAgain(): Promise<void>;
}

const HOST = '127.0.0.1';
/**
 * Generous on purpose: the test clusters are shared, and a walsender reads all of the cluster's WAL,
 * other tests' 200,000-row transactions included, before it reaches a change of ours. A 10 s wait once
 * ran out in the PG 15 CI rerun (not reproduced since; that WAL is the likely cause). A passing wait
 * returns as soon as its condition holds.
 */
const DEFAULT_WAIT_MS = 30_000;

const DEFAULT_SCRIPT = (): Reply => ({ status: 200 });

function summarize(requests: ReceivedRequest[]): string {
  const last = requests.slice(-5).map((r) => `${r.method} ${r.url} ${r.rawBody.slice(0, 120)}`);
  return last.length === 0 ? '' : `; last ${last.length}:\n  ${last.join('\n  ')}`;
}

export async function startReceiver(): Promise<Receiver> {
  const requests: ReceivedRequest[] = [];
  const sockets = new Set<net.Socket>();
  let connections = 0;
  let decide: (req: ReceivedRequest, index: number) => Reply = DEFAULT_SCRIPT;

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('error', () => {}); // client went away mid-body: nothing to record
    req.on('end', () => {
      const rawBody = Buffer.concat(chunks).toString('utf8');
      let json: unknown;
      try {
        json = rawBody === '' ? undefined : JSON.parse(rawBody);
      } catch {
        json = undefined;
      }
      const received: ReceivedRequest = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        rawBody,
        json,
        receivedAt: Date.now(),
      };
      const index = requests.push(received) - 1;

      let reply: Reply;
      try {
        reply = decide(received, index);
      } catch (err) {
        reply = { status: 599, body: `receiver script threw: ${String(err)}` };
      }
      if (reply === 'hang') return;
      if (reply === 'destroy') {
        req.socket.destroy();
        return;
      }
      res.writeHead(reply.status, reply.headers);
      res.end(reply.body ?? '');
    });
  });
  server.on('connection', (socket) => {
    connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  server.on('clientError', (_err, socket) => socket.destroy());

  const listen = (port: number): Promise<void> =>
    new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, HOST, () => {
        server.off('error', reject);
        resolve();
      });
    });
  await listen(0);
  const { port } = server.address() as net.AddressInfo;

  const stopListening = (): Promise<void> =>
    new Promise((resolve) => {
      if (!server.listening) {
        resolve();
        return;
      }
      // close() waits for open connections, so end them all, hung or keep-alive.
      server.close(() => resolve());
      for (const socket of sockets) socket.destroy();
    });

  const waitFor = (predicate: (reqs: ReceivedRequest[]) => boolean, timeoutMs = DEFAULT_WAIT_MS): Promise<void> =>
    waitUntil(
      () => predicate(requests),
      () => `the condition on receiver ${port}; it received ${requests.length} request(s)${summarize(requests)}`,
      timeoutMs,
    );

  return {
    url: `http://${HOST}:${port}/`,
    port,
    requests,
    get connections() {
      return connections;
    },
    script(fn) {
      decide = fn;
    },
    waitFor,
    waitForCount: (n, timeoutMs) =>
      waitFor((reqs) => reqs.length >= n, timeoutMs).catch((err: Error) => {
        throw new Error(`waiting for ${n} request(s): ${err.message}`);
      }),
    close: stopListening,
    stopListening,
    listenAgain: () => (server.listening ? Promise.resolve() : listen(port)),
  };
}
