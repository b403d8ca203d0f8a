import type { Lsn } from './lsn.js';

/**
 * Keepalives asking for a reply, this many at one position within the window, while we confirm less:
 * Postgres is shutting down and waits for us. In normal streaming it asks at most every
 * wal_sender_timeout / 2; while shutting down (WalSndDone) it asks again as soon as each reply arrives.
 */
export const SHUTDOWN_PINGS = 10;
export const SHUTDOWN_PING_WINDOW_MS = 2_000;

/**
 * Tells, from the keepalives that ask for a reply, when the server is waiting for a confirmation we
 * cannot give yet (a fast shutdown waits until each logical client confirms everything sent).
 * Pure: fed the keepalive's position, what we confirmed in reply, and the time.
 */
export class ShutdownWaitDetector {
  private lsn: Lsn = 0n;
  private count = 0;
  private since = 0;

  /** One keepalive that asked for a reply, after we answered `confirmed`. True: the server waits for us. */
  observe(sent: Lsn, confirmed: Lsn, now: number): boolean {
    if (confirmed >= sent) {
      this.count = 0;
      return false;
    }
    if (sent !== this.lsn || this.count === 0 || now - this.since > SHUTDOWN_PING_WINDOW_MS) {
      this.lsn = sent;
      this.count = 1;
      this.since = now;
      return false;
    }
    return ++this.count >= SHUTDOWN_PINGS;
  }
}
