import diagnostics from 'node:diagnostics_channel';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createHttpSender, type HttpSender, type HttpSenderOptions } from '../../src/deliver/httpSender.js';

/**
 * Real node:http receivers on 127.0.0.1, port 0. Nothing here connects anywhere but loopback: the
 * blocked targets (10.0.0.1, 169.254.169.254, ...) must be refused before any socket exists, which the
 * `net.client.socket` diagnostics channel lets us check.
 */

interface Receiver {
  server: Server;
  port: number;
  url: string;
  connections: number;
  requests: Array<{ method: string; url: string; headers: IncomingMessage['headers']; body: string }>;
}

type Handler = (req: IncomingMessage, res: ServerResponse, body: string) => void;

const receivers: Receiver[] = [];
const senders: HttpSender[] = [];

const LOOPBACK_OK: HttpSenderOptions['policy'] = { allowPrivateTargets: false, allowedCidrs: ['127.0.0.0/8'] };
const GUARDED: HttpSenderOptions['policy'] = { allowPrivateTargets: false, allowedCidrs: [] };
const HEADERS = { 'content-type': 'application/json', 'x-twenty-webhook-signature': 'f'.repeat(64) };
const BODY = JSON.stringify({ event: 'person.created', data: { id: 1 } });

// Counts client sockets created anywhere in this process (net.connect / tls.connect).
let clientSockets = 0;
const onClientSocket = (): void => {
  clientSockets++;
};
beforeAll(() => diagnostics.subscribe('net.client.socket', onClientSocket));
afterAll(() => diagnostics.unsubscribe('net.client.socket', onClientSocket));

async function receiver(handler: Handler): Promise<Receiver> {
  const server = createServer();
  const r: Receiver = { server, port: 0, url: '', connections: 0, requests: [] };
  server.on('connection', () => {
    r.connections++;
  });
  server.on('request', (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      r.requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      handler(req, res, body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  r.port = (server.address() as AddressInfo).port;
  r.url = `http://127.0.0.1:${r.port}`;
  receivers.push(r);
  return r;
}

function sender(overrides: Partial<HttpSenderOptions> = {}): HttpSender {
  const s = createHttpSender({
    timeoutMs: 2_000,
    maxResponseBytes: 64 * 1024,
    connectionsPerOrigin: 4,
    policy: LOOPBACK_OK,
    ...overrides,
  });
  senders.push(s);
  return s;
}

function reply(status: number, headers: Record<string, string> = {}, body = ''): Handler {
  return (_req, res) => {
    res.writeHead(status, headers);
    res.end(body);
  };
}

afterEach(async () => {
  await Promise.all(senders.splice(0).map((s) => s.close()));
  await Promise.all(
    receivers.splice(0).map(
      (r) =>
        new Promise<void>((resolve) => {
          r.server.closeAllConnections();
          r.server.close(() => resolve());
        }),
    ),
  );
});

describe('httpSender: responses', () => {
  it('POSTs the exact body and headers and treats 2xx as success', async () => {
    const r = await receiver(reply(204));
    const outcome = await sender().send(`${r.url}/hooks/a?x=1`, BODY, HEADERS);
    expect(outcome).toMatchObject({ ok: true, statusCode: 204 });
    expect(outcome.durationMs).toBeGreaterThan(0);
    expect(r.requests).toHaveLength(1);
    expect(r.requests[0]).toMatchObject({ method: 'POST', url: '/hooks/a?x=1', body: BODY });
    expect(r.requests[0].headers['x-twenty-webhook-signature']).toBe(HEADERS['x-twenty-webhook-signature']);
    expect(r.requests[0].headers['content-length']).toBe(String(Buffer.byteLength(BODY)));
  });

  it('keeps the connection alive between attempts', async () => {
    const r = await receiver(reply(200, {}, 'ok'));
    const s = sender();
    for (let i = 0; i < 5; i++) expect((await s.send(r.url, BODY, HEADERS)).ok).toBe(true);
    expect(r.requests).toHaveLength(5);
    // undici may open a second socket while the first is being released; never one per attempt.
    expect(r.connections).toBeLessThanOrEqual(2);
  });

  it('reports 500 as http_status without echoing headers', async () => {
    const r = await receiver(reply(500, {}, 'boom'));
    const outcome = await sender().send(r.url, BODY, HEADERS);
    expect(outcome).toMatchObject({ ok: false, reason: 'http_status', statusCode: 500 });
    expect(JSON.stringify(outcome)).not.toContain(HEADERS['x-twenty-webhook-signature']);
  });

  it('reports 410 as gone', async () => {
    const r = await receiver(reply(410));
    expect(await sender().send(r.url, BODY, HEADERS)).toMatchObject({ ok: false, reason: 'gone', statusCode: 410 });
  });

  it('reports 413 as payload_too_large', async () => {
    const r = await receiver(reply(413));
    expect(await sender().send(r.url, BODY, HEADERS)).toMatchObject({
      ok: false,
      reason: 'payload_too_large',
      statusCode: 413,
    });
  });

  it('reads Retry-After in seconds and as an HTTP date on 429 and 503', async () => {
    const r1 = await receiver(reply(429, { 'retry-after': '2' }));
    const s = sender();
    expect(await s.send(r1.url, BODY, HEADERS)).toMatchObject({
      ok: false,
      reason: 'http_status',
      statusCode: 429,
      retryAfterMs: 2_000,
    });

    const at = new Date(Date.now() + 60_000).toUTCString();
    const r2 = await receiver(reply(503, { 'retry-after': at }));
    const outcome = await s.send(r2.url, BODY, HEADERS);
    expect(outcome).toMatchObject({ ok: false, reason: 'http_status', statusCode: 503 });
    const retryAfterMs = (outcome as { retryAfterMs?: number }).retryAfterMs ?? -1;
    expect(retryAfterMs).toBeGreaterThan(55_000);
    expect(retryAfterMs).toBeLessThanOrEqual(60_000);

    const r3 = await receiver(reply(429, { 'retry-after': 'whenever' }));
    expect(await s.send(r3.url, BODY, HEADERS)).not.toHaveProperty('retryAfterMs');
  });

  it('never follows a redirect: the Location target sees nothing', async () => {
    const target = await receiver(reply(200));
    const r = await receiver(reply(302, { location: `${target.url}/stolen` }));
    const outcome = await sender().send(r.url, BODY, HEADERS);
    expect(outcome).toMatchObject({ ok: false, reason: 'redirect', statusCode: 302 });
    expect(r.requests).toHaveLength(1);
    expect(target.connections).toBe(0);
    expect(target.requests).toHaveLength(0);
  });

  it('refuses URLs that are not http: or https:', async () => {
    const s = sender();
    for (const url of ['ftp://example.com/x', 'file:///etc/passwd', 'not a url', 'javascript:alert(1)', '']) {
      expect(await s.send(url, BODY, HEADERS)).toMatchObject({ ok: false, reason: 'invalid_url' });
    }
  });
});

describe('httpSender: time and size limits', () => {
  it('gives up on a receiver that never answers within timeoutMs', async () => {
    const r = await receiver(() => {
      /* never answers */
    });
    const timeoutMs = 300;
    const outcome = await sender({ timeoutMs }).send(r.url, BODY, HEADERS);
    expect(outcome).toMatchObject({ ok: false, reason: 'timeout' });
    expect(outcome.durationMs).toBeGreaterThanOrEqual(timeoutMs - 5);
    expect(outcome.durationMs).toBeLessThan(timeoutMs + 500);
  });

  it('counts a body that stalls after the headers against the same deadline', async () => {
    const r = await receiver((_req, res) => {
      res.writeHead(200, { 'content-length': '100' });
      res.write('partial');
    });
    const outcome = await sender({ timeoutMs: 300 }).send(r.url, BODY, HEADERS);
    expect(outcome).toMatchObject({ ok: false, reason: 'timeout', statusCode: 200 });
    expect(outcome.durationMs).toBeLessThan(800);
  });

  it('reads at most maxResponseBytes of a 100 MB body, drops that connection, and stays usable', async () => {
    const TOTAL = 100 * 1024 * 1024;
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    let written = 0;
    let bigSocket: Socket | undefined;
    let streamClosed!: () => void;
    const closed = new Promise<void>((resolve) => (streamClosed = resolve));
    const r = await receiver((req, res) => {
      if (req.url === '/small') {
        res.end('fine');
        return;
      }
      bigSocket = req.socket;
      res.writeHead(200, { 'content-type': 'application/octet-stream' }); // chunked: no length to refuse up front
      res.on('close', streamClosed);
      const pump = (): void => {
        while (written < TOTAL && !res.destroyed) {
          written += chunk.length;
          if (!res.write(chunk)) {
            res.once('drain', pump);
            return;
          }
        }
        if (!res.destroyed) res.end();
      };
      pump();
    });
    const s = sender({ maxResponseBytes: 64 * 1024 });
    const started = Date.now();
    const outcome = await s.send(`${r.url}/big`, BODY, HEADERS);
    expect(outcome).toMatchObject({ ok: true, statusCode: 200 });
    await closed;
    expect(Date.now() - started).toBeLessThan(2_000);
    // Socket buffers hold a few MB at most; the rest was never produced.
    expect(written).toBeLessThan(16 * 1024 * 1024);
    expect(bigSocket?.destroyed).toBe(true); // the capped connection is dropped, not drained

    const next = await s.send(`${r.url}/small`, BODY, HEADERS);
    expect(next).toMatchObject({ ok: true, statusCode: 200 });
  });

  it('refuses an announced oversized body without reading it', async () => {
    const r = await receiver((_req, res) => {
      res.writeHead(500, { 'content-length': String(100 * 1024 * 1024) });
      res.write(Buffer.alloc(1024));
    });
    const outcome = await sender().send(r.url, BODY, HEADERS);
    expect(outcome).toMatchObject({ ok: false, reason: 'http_status', statusCode: 500 });
    expect(outcome.durationMs).toBeLessThan(1_000);
  });

  it('keeps the deadline while the host name is still resolving, and still closes', async () => {
    const s = sender({ timeoutMs: 250, lookup: () => new Promise(() => {}) });
    const outcome = await s.send('http://stuck.test/', BODY, HEADERS);
    expect(outcome).toMatchObject({ ok: false, reason: 'timeout' });
    expect(outcome.durationMs).toBeLessThan(750);
    const closing = Date.now();
    await s.close();
    expect(Date.now() - closing).toBeLessThan(1_000);
  });

  it('reports a failed lookup as connection_error', async () => {
    const s = sender({
      lookup: async () => {
        throw Object.assign(new Error('getaddrinfo ENOTFOUND nowhere.test'), { code: 'ENOTFOUND' });
      },
    });
    const outcome = await s.send('http://nowhere.test/', BODY, HEADERS);
    expect(outcome).toMatchObject({ ok: false, reason: 'connection_error' });
    expect((outcome as { message: string }).message).toContain('ENOTFOUND');
  });

  it('reports connection_refused for a port nobody listens on', async () => {
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const { port } = probe.address() as AddressInfo;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const outcome = await sender().send(`http://127.0.0.1:${port}/`, BODY, HEADERS);
    expect(outcome).toMatchObject({ ok: false, reason: 'connection_refused' });
  });

  it('reports connection_error when the receiver drops the socket', async () => {
    const r = await receiver((req) => {
      req.socket.destroy();
    });
    expect(await sender().send(r.url, BODY, HEADERS)).toMatchObject({ ok: false, reason: 'connection_error' });
  });
});

describe('httpSender: SSRF guard', () => {
  const loopbackLookup = async (): Promise<Array<{ address: string; family: 4 | 6 }>> => [{ address: '127.0.0.1', family: 4 }];

  it('refuses loopback, private, link-local and disguised forms before any connection', async () => {
    const r = await receiver(reply(200));
    const s = sender({ policy: GUARDED, lookup: async (host) => (host === 'rebind.test' ? loopbackLookup() : []) });
    const urls = [
      `http://127.0.0.1:${r.port}/`,
      `http://localhost:${r.port}/`,
      `http://[::1]:${r.port}/`,
      `http://[::ffff:127.0.0.1]:${r.port}/`,
      `http://[::ffff:7f00:1]:${r.port}/`,
      'http://169.254.169.254/latest/meta-data/',
      'http://10.0.0.1/',
      `http://0.0.0.0:${r.port}/`,
      `http://2130706433:${r.port}/`,
      `http://0x7f.1:${r.port}/`,
      `http://017700000001:${r.port}/`,
      `http://rebind.test:${r.port}/`,
      `https://rebind.test:${r.port}/`,
      'http://[fd00:ec2::254]/',
      'http://[64:ff9b::a9fe:a9fe]/',
    ];
    const socketsBefore = clientSockets;
    for (const url of urls) {
      const outcome = await s.send(url, BODY, HEADERS);
      expect({ url, outcome }).toMatchObject({ url, outcome: { ok: false, reason: 'blocked_address' } });
    }
    expect(clientSockets).toBe(socketsBefore);
    expect(r.connections).toBe(0);
  });

  it('uses the default DNS lookup for host names (localhost is refused)', async () => {
    const r = await receiver(reply(200));
    const before = clientSockets;
    const outcome = await sender({ policy: GUARDED }).send(`http://localhost:${r.port}/`, BODY, HEADERS);
    expect(outcome).toMatchObject({ ok: false, reason: 'blocked_address' });
    expect(clientSockets).toBe(before);
    expect(r.connections).toBe(0);
  });

  it('reaches loopback receivers once 127.0.0.0/8 is allowlisted', async () => {
    const r = await receiver(reply(200));
    const s = sender({ policy: LOOPBACK_OK, lookup: loopbackLookup });
    for (const url of [`http://127.0.0.1:${r.port}/`, `http://2130706433:${r.port}/`, `http://hooks.example.test:${r.port}/`]) {
      expect({ url, outcome: await s.send(url, BODY, HEADERS) }).toMatchObject({ url, outcome: { ok: true } });
    }
    expect(r.requests).toHaveLength(3);
    // The host name is dialled by IP but keeps its Host header.
    expect(r.requests[2].headers.host).toBe(`hooks.example.test:${r.port}`);

    const sDefault = sender({ policy: LOOPBACK_OK });
    expect(await sDefault.send(`http://localhost:${r.port}/`, BODY, HEADERS)).toMatchObject({ ok: true });
  });

  it('dials only the resolved addresses that pass, and judges every new connection again', async () => {
    const r = await receiver((_req, res) => {
      // Force a new connection (and so a new lookup) for every attempt.
      res.writeHead(200, { connection: 'close' });
      res.end();
    });
    const answers: Array<Array<{ address: string; family: 4 | 6 }>> = [
      // 10.0.0.1 is filtered out: only 127.0.0.1 may be dialled.
      [
        { address: '10.0.0.1', family: 4 },
        { address: '127.0.0.1', family: 4 },
      ],
      // A rebinding answer on the next connection.
      [{ address: '127.0.0.2', family: 4 }],
    ];
    const s = sender({
      policy: { allowPrivateTargets: false, allowedCidrs: ['127.0.0.1/32'] },
      lookup: async () => answers.shift() ?? [],
    });
    const first = await s.send(`http://rebind.test:${r.port}/`, BODY, HEADERS);
    expect(first).toMatchObject({ ok: true });
    const before = clientSockets;
    const second = await s.send(`http://rebind.test:${r.port}/`, BODY, HEADERS);
    expect(second).toMatchObject({ ok: false, reason: 'blocked_address' });
    expect(clientSockets).toBe(before);
    expect(r.connections).toBe(1);
  });

  it('opens everything with allowPrivateTargets', async () => {
    const r = await receiver(reply(200));
    const s = sender({ policy: { allowPrivateTargets: true, allowedCidrs: [] } });
    expect(await s.send(`http://127.0.0.1:${r.port}/`, BODY, HEADERS)).toMatchObject({ ok: true });
    expect(await s.send(`http://0.0.0.0:${r.port}/`, BODY, HEADERS)).toMatchObject({ ok: true });
  });
});
