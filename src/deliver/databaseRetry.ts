import { setTimeout as sleep } from 'node:timers/promises';
import { coerceError } from '../errors.js';
import type { Logger } from '../log.js';
import { calculateDelay, DATABASE_RETRY_SCHEDULE_MS, isTransientSqlState, NO_JITTER, SHUTTING_DOWN_SQLSTATES } from './backoff.js';

const RETRYABLE_SOCKET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN']);

export function isRetryableDatabaseError(error: unknown): boolean {
  const code = (error as { code?: string } | null)?.code;
  if (code && (isTransientSqlState(code) || RETRYABLE_SOCKET_CODES.has(code))) return true;
  const message = (error as Error | null)?.message ?? '';
  return /Connection terminated|connection timeout|Client has encountered a connection error/i.test(message);
}

/**
 * Runs a store statement until it succeeds or fails for a reason that retrying cannot fix. Store
 * writes must not be dropped: while they fail, the acknowledgement they hold back does not advance,
 * which is the safe way to wait for the database to come back.
 *
 * `onServerShuttingDown` is told when a write finds the server shutting down. A fast shutdown waits
 * until the logical stream confirms everything sent, while the writes that would let us confirm it are
 * refused: dropping the stream (it reconnects and replays from the confirmed position) breaks that
 * deadlock. The stream also detects the wait itself (replication/shutdownWait.ts), but only from
 * keepalives it reads: while a message handler waits on such a write the socket is paused.
 */
export async function withDatabaseRetry<T>(log: Logger, what: string, run: () => Promise<T>, onServerShuttingDown?: () => void): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await run();
    } catch (caught) {
      const error = coerceError(caught);
      if (!isRetryableDatabaseError(error)) throw error;
      if (SHUTTING_DOWN_SQLSTATES.has((error as { code?: string }).code ?? '')) onServerShuttingDown?.();
      // The last step of the schedule repeats: store writes are never given up.
      const delay = calculateDelay(Math.min(attempt + 1, DATABASE_RETRY_SCHEDULE_MS.length), DATABASE_RETRY_SCHEDULE_MS, NO_JITTER)!;
      log.warn({ err: error, attempt: attempt + 1, retryInMs: delay }, `database unavailable while trying to ${what}; retrying`);
      await sleep(delay);
    }
  }
}
