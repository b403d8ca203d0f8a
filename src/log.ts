import pino, { type Logger } from 'pino';

export type { Logger };

/**
 * Paths that may hold secrets anywhere a stage logs a webhook, a config or a connection. Redaction is
 * the last line of defence: stages already avoid logging these fields.
 */
const REDACT_PATHS = [
  'secret',
  '*.secret',
  'password',
  '*.password',
  'databaseUrl',
  '*.databaseUrl',
  'connectionString',
  '*.connectionString',
  'database.url',
  'headers["x-twenty-webhook-signature"]',
  'headers["webhook-signature"]',
];

/** Query parameters of a postgres URL that carry credentials (pg and libpq honour `password`). */
const SECRET_URL_PARAMETER = /pass|secret|key|token/i;

/** Hides the password of a postgres URL (userinfo or `?password=`), for messages that must name the database. */
export function maskDatabaseUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    for (const name of new Set(parsed.searchParams.keys())) {
      if (SECRET_URL_PARAMETER.test(name)) parsed.searchParams.set(name, '***');
    }
    return parsed.toString();
  } catch {
    return '<unparsable database url>';
  }
}

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { name: 'pg-webhook-bridge' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
}
