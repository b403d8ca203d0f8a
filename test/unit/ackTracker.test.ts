import { describe, expect, it } from 'vitest';
import { AckTracker } from '../../src/replication/ackTracker.js';
import { nextRetryDelayMs } from '../../src/deliver/backoff.js';
import { formatLsn, parseLsn } from '../../src/replication/lsn.js';

describe('AckTracker: the safe LSN is the end of the settled prefix', () => {
  it('waits for the oldest transaction even when later ones are done', () => {
    const ack = new AckTracker();
    const t1 = ack.begin(100n);
    t1.hold(2);
    t1.close(110n);
    const t2 = ack.begin(200n);
    t2.close(210n);
    expect(ack.safeLsn()).toBe(0n);
    t1.release();
    expect(ack.safeLsn()).toBe(0n);
    t1.release();
    expect(ack.safeLsn()).toBe(210n);
  });

  it('an open transaction (commit not yet seen) holds the position even with nothing outstanding', () => {
    const ack = new AckTracker();
    ack.begin(100n).close(110n);
    const open = ack.begin(200n);
    ack.heartbeat(300n);
    expect(ack.safeLsn()).toBe(110n);
    open.close(210n);
    expect(ack.safeLsn()).toBe(300n);
  });

  it('heartbeats advance an idle stream and the position never goes backwards', () => {
    const ack = new AckTracker(500n);
    ack.heartbeat(400n);
    expect(ack.safeLsn()).toBe(500n);
    ack.heartbeat(600n);
    expect(ack.safeLsn()).toBe(600n);
  });

  it('an abandoned (half-received) transaction no longer blocks', () => {
    const ack = new AckTracker();
    const half = ack.begin(100n);
    half.hold();
    ack.abandon(half);
    const again = ack.begin(100n);
    again.close(110n);
    expect(ack.safeLsn()).toBe(110n);
    half.release();
    expect(ack.safeLsn()).toBe(110n);
  });

  it('rejects releasing more than was held', () => {
    const ack = new AckTracker();
    const t = ack.begin(1n);
    expect(() => t.release()).toThrow(/negative/);
  });
});

describe('LSN text forms', () => {
  it('parses both forms and compares as bigint', () => {
    expect(parseLsn('0/177DB38')).toBe(parseLsn('00000000/0177DB38'));
    expect(parseLsn('1/0') > parseLsn('0/FFFFFFFF')).toBe(true);
    expect(formatLsn(parseLsn('16/B374D848'))).toBe('16/B374D848');
  });
});

describe('retry backoff', () => {
  const schedule = [5, 300, 1800, 7200, 18000, 36000, 36000];
  it('follows the schedule within +-20% jitter and ends after the last entry', () => {
    expect(nextRetryDelayMs(1, schedule, () => 0.5)).toBe(5_000);
    expect(nextRetryDelayMs(1, schedule, () => 0)).toBe(4_000);
    expect(nextRetryDelayMs(1, schedule, () => 1)).toBe(6_000);
    expect(nextRetryDelayMs(2, schedule, () => 0.5)).toBe(300_000);
    expect(nextRetryDelayMs(7, schedule, () => 0.5)).toBe(36_000_000);
    expect(nextRetryDelayMs(8, schedule, () => 0.5)).toBeNull();
  });

  it('honours Retry-After above the schedule, within the bound', () => {
    expect(nextRetryDelayMs(1, [1], () => 0.5, 2_000)).toBe(2_000);
    expect(nextRetryDelayMs(1, [10], () => 0.5, 2_000)).toBe(10_000);
    expect(nextRetryDelayMs(1, [1], () => 0.5, 365 * 86_400_000)).toBe(6 * 3_600_000);
  });
});
