import { describe, expect, it } from 'vitest';
import { SHUTDOWN_PINGS, SHUTDOWN_PING_WINDOW_MS, ShutdownWaitDetector } from '../../src/replication/shutdownWait.js';

describe('ShutdownWaitDetector', () => {
  it('back-to-back keepalives at one position we cannot confirm: the server waits for us', () => {
    const d = new ShutdownWaitDetector();
    const seen = Array.from({ length: SHUTDOWN_PINGS }, (_, i) => d.observe(1_000n, 900n, i * 5));
    expect(seen.slice(0, -1).every((v) => v === false)).toBe(true);
    expect(seen.at(-1)).toBe(true);
  });

  it('normal streaming (a keepalive every wal_sender_timeout / 2) never trips it', () => {
    const d = new ShutdownWaitDetector();
    for (let i = 0; i < 100; i++) expect(d.observe(1_000n, 900n, i * 30_000)).toBe(false);
  });

  it('a confirmed position, a moving position or a pause resets the count', () => {
    const d = new ShutdownWaitDetector();
    for (let i = 0; i < SHUTDOWN_PINGS - 1; i++) d.observe(1_000n, 900n, i);
    expect(d.observe(1_000n, 1_000n, 20)).toBe(false); // caught up: nothing to wait for
    for (let i = 0; i < SHUTDOWN_PINGS - 1; i++) expect(d.observe(2_000n + BigInt(i), 900n, 30 + i)).toBe(false); // streaming on
    for (let i = 0; i < SHUTDOWN_PINGS - 1; i++) d.observe(5_000n, 900n, 100 + i);
    expect(d.observe(5_000n, 900n, 100 + SHUTDOWN_PING_WINDOW_MS + 1)).toBe(false); // outside the window: starts over
  });
});
