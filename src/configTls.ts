import type { BridgeConfig } from './config.js';

/** Checks of `database.url` and `database.ssl.*` that need more than a format. */

/**
 * A warning when the connection to Postgres leaves this host without a checked certificate: with
 * `disable` the password and every streamed row cross the network in clear; with `require` they are
 * encrypted, but to whoever answers. Loopback hosts and Unix sockets need neither.
 */
export function databaseTlsWarning(config: BridgeConfig): string | null {
  const mode = config.database.ssl.mode;
  if (mode === 'verify-full') return null;
  const host = databaseHost(config.database.url);
  if (host === null || isLoopbackHost(host)) return null;
  if (mode === 'disable') {
    return `database.ssl.mode is disable and the database host ${host} is not loopback: the password and every streamed row cross the network unencrypted; set database.ssl.mode=verify-full (with database.ssl.caFile)`;
  }
  return `database.ssl.mode is require: the connection to ${host} is encrypted but the server certificate is not checked, so anyone on the path can pose as the server; set database.ssl.mode=verify-full (with database.ssl.caFile)`;
}

/** The host of a postgres:// URL (never its credentials), or null when it cannot be read. */
function databaseHost(url: string): string | null {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return null;
  }
  const host = parsed.searchParams.get('host') ?? decodeURIComponent(parsed.hostname);
  return host.replace(/^\[|\]$/g, '');
}

function isLoopbackHost(host: string): boolean {
  // An empty host means the driver's default (localhost); a path is a Unix socket.
  return host === '' || host.startsWith('/') || host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** TLS parameters in a postgres:// URL's query (names only: values may hold paths or secrets). */
export function urlTlsParameters(url: string): string[] {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return [];
  }
  return [...new Set([...parsed.searchParams.keys()].filter((name) => ['ssl', 'sslmode', 'sslrootcert', 'sslcert', 'sslkey'].includes(name)))];
}
