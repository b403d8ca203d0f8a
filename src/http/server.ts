import http from 'node:http';
import type { Logger } from '../log.js';
import type { BridgeMetrics } from './metrics.js';

export interface Readiness {
  ready: boolean;
  reason: string;
  role?: string;
}

/** /healthz (the process answers), /readyz (connected and streaming or standing by), /metrics. */
export async function startHttpServer(options: {
  port: number;
  host: string;
  metrics: BridgeMetrics;
  readiness: () => Readiness;
  log: Logger;
}): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
    } else if (path === '/readyz') {
      const state = options.readiness();
      res.writeHead(state.ready ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify(state));
    } else if (path === '/metrics') {
      options.metrics.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': options.metrics.registry.contentType }).end(text),
        (error) => res.writeHead(500).end(String(error)),
      );
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  options.log.info({ address: server.address() }, 'health and metrics endpoints listening');
  return server;
}
