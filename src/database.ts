import { readFileSync } from 'node:fs';
import pg from 'pg';
import type { BridgeConfig } from './config.js';

/**
 * Connection settings shared by the query pool and the replication connection. Session settings make
 * the text forms the decoder parses predictable (ISO dates, UTC offsets).
 */
export function clientConfig(config: BridgeConfig): pg.ClientConfig {
  const ssl = config.database.ssl;
  return {
    connectionString: config.database.url,
    ssl:
      ssl.mode === 'disable'
        ? false
        : ssl.mode === 'require'
          ? { rejectUnauthorized: false }
          : { rejectUnauthorized: true, ca: ssl.caFile ? readFileSync(ssl.caFile, 'utf8') : undefined },
    // Noticed within ~40 s when the network is cut silently (idle 10 s + probes).
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
    connectionTimeoutMillis: 10_000,
    application_name: 'pg-webhook-bridge',
    // TCP keepalives on the server's side too, so that a session whose client vanished silently (a
    // network cut) is ended within ~20 s: the leader lock it holds is released and a standby takes over.
    options:
      '-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=postgres -c bytea_output=hex -c extra_float_digits=1 ' +
      '-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=2',
  };
}

export function createPool(config: BridgeConfig, max = 10): pg.Pool {
  const pool = new pg.Pool({ ...clientConfig(config), max });
  // An idle client losing its connection must not crash the process; the next query reconnects.
  pool.on('error', () => undefined);
  return pool;
}
