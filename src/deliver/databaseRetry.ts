import type { Logger } from '../log.js';

/**
 * SQLSTATEs (and socket errors) after which the same statement may succeed if sent again: lost
 * connections, a restarting server, contention. Anything else is a bug or a broken schema and is thrown.
 */
const RETRYABLE_SQLSTATES = new Set([
  '40001', // serialization_failure
  '40P01', // deadlock_detected
  '53300', // too_many_connections
  '55P03', // lock_not_available
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now
]);
const RETRYABLE_SOCKET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN']);
const RETRY_DELAYS_MS = [100, 250, 500, 1_000, 2_000, 5_000];
/** The server is going down: it also waits for our replication stream to confirm, which waits for us. */
const SHUTTING_DOWN_SQLSTATES = new Set(['57P01', '57P02', '57P03']);

let onServerShuttingDown: (() => void) | null = null;

/**
 * Who to tell when a store write finds the server shutting down. A fast shutdown waits until the
 * logical stream confirms everything sent, while the writes that would let us confirm it are refused:
 * dropping the stream (it reconnects and replays from the confirmed position) breaks that deadlock.
 * The stream also detects the wait itself (replication/shutdownWait.ts), but only from keepalives it
 * reads: while a message handler waits on such a write the socket is paused, and only this call helps.
 */
export function setServerShuttingDownListener(listener: (() => void) | null): void {
  onServerShuttingDown = listener;
}

export function isRetryableDatabaseError(error: unknown): boolean {
  const code = (error as { code?: string } | null)?.code;
  if (code && (RETRYABLE_SQLSTATES.has(code) || code.startsWith('08') || RETRYABLE_SOCKET_CODES.has(code))) return true;
  const message = (error as Error | null)?.message ?? '';
  return /Connection terminated|connection timeout|Client has encountered a connection error/i.test(message);
}

/**
 * Runs a store statement until it succeeds or fails for a reason that retrying cannot fix. Store
 * writes must not be dropped: while they fail, the acknowledgement they hold back does not advance,
 * which is the safe way to wait for the database to come back.
 */
export async function withDatabaseRetry<T>(log: Logger, what: string, run: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await run();
    } catch (error) {
      if (!isRetryableDatabaseError(error)) throw error;
      if (SHUTTING_DOWN_SQLSTATES.has((error as { code?: string }).code ?? '')) onServerShuttingDown?.();
      const delay = RETRY_DELAYS_MS[Math.min(attempt, RETRY_DELAYS_MS.length - 1)];
      log.warn({ err: error, attempt: attempt + 1, retryInMs: delay }, `database unavailable while trying to ${what}; retrying`);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}
