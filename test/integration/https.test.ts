import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { twentySignature } from '../../src/deliver/sign.js';
import { addWebhook, eventually, slotStreaming, prepareDatabase, spawnBridge, type BridgeProcess } from '../helpers/bridge.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

interface Received {
  path: string;
  servername: string | false | null;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/**
 * Webhook URLs are https in real life. The sender resolves the host itself and dials the checked IP
 * (SSRF guard), so TLS must still present and verify the host name: a real node:https receiver with a
 * certificate for "localhost" only, trusted by the bridge through NODE_EXTRA_CA_CERTS.
 */
describe('HTTPS targets', () => {
  let dir: string;
  let server: https.Server;
  let port: number;
  let db: TestDatabase;
  const received: Received[] = [];
  const bridges: BridgeProcess[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'pgwb-tls-'));
    // A throwaway self-signed certificate for DNS:localhost (openssl ships with every Postgres install).
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '2',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=DNS:localhost',
        '-keyout',
        path.join(dir, 'key.pem'),
        '-out',
        path.join(dir, 'cert.pem'),
      ],
      { stdio: 'ignore' },
    );
    server = https.createServer({ key: readFileSync(path.join(dir, 'key.pem')), cert: readFileSync(path.join(dir, 'cert.pem')) }, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        received.push({
          path: req.url ?? '',
          servername: (req.socket as TLSSocket).servername,
          headers: req.headers,
          body: Buffer.concat(chunks).toString('utf8'),
        });
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
    db = await createTestDatabase('https');
    await prepareDatabase(db);
  });

  afterAll(async () => {
    for (const bridge of bridges) bridge.child.kill('SIGKILL');
    await Promise.all(bridges.map((b) => b.exited));
    await new Promise((resolve) => server?.close(resolve));
    server?.closeAllConnections();
    await db?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('delivers a signed event to https://localhost with SNI "localhost" while dialling the checked 127.0.0.1; refuses an https IP target whose certificate does not name it', async () => {
    await addWebhook(db, `https://localhost:${port}/hook`, ['company.created'], 'tls-secret');
    // The same receiver by IP: the certificate names only localhost, so verification must fail.
    await addWebhook(db, `https://127.0.0.1:${port}/by-ip`, ['company.created'], 'tls-secret');
    const bridge = spawnBridge(db, { 'log.level': 'info' }, ['start'], { NODE_EXTRA_CA_CERTS: path.join(dir, 'cert.pem') });
    bridges.push(bridge);
    await eventually(() => slotStreaming(db.pool), 'the bridge to stream', 30_000);
    await db.pool.query(`insert into company (name) values ('over tls')`);
    await eventually(
      () => received.length >= 1,
      () => `an HTTPS delivery (log: ${bridge.output().slice(-2_000)})`,
      30_000,
    );
    const [request] = received;
    expect(request.servername).toBe('localhost');
    expect(JSON.parse(request.body).data.name).toBe('over tls');
    const timestamp = String(request.headers['x-twenty-webhook-timestamp']);
    expect(request.headers['x-twenty-webhook-signature']).toBe(twentySignature(request.body, 'tls-secret', timestamp));
    // The IP-addressed webhook fails certificate verification: attempts logged as failed with the TLS
    // error, never received.
    await eventually(
      () => /"msg":"delivery attempt failed"/.test(bridge.output()) && /ERR_TLS_CERT_ALTNAME_INVALID/.test(bridge.output()),
      () =>
        `a failed attempt for the IP target (received ${JSON.stringify(received.map((r) => [r.path, r.servername]))}; log: ${bridge.output().slice(-2_000)})`,
      30_000,
    );
    expect(received.every((r) => r.servername === 'localhost')).toBe(true);
    expect(received.some((r) => r.path === '/by-ip')).toBe(false);
  });
});
