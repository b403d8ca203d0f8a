import { describe, expect, it } from 'vitest';
import { BREAKER_THRESHOLD, EndpointBreaker, MAX_PROBE_INTERVAL_MS } from '../../src/deliver/endpointBreaker.js';
import { RecordQueue } from '../../src/deliver/recordQueue.js';
import { HTTP_500, REFUSED } from './fakes/deliveryFakes.js';
import type { FailedAttempt } from '../../src/deliver/types.js';

interface Item {
  record: string;
  n: number;
  enqueuedAt: number;
  finished: boolean;
}

const item = (record: string, n: number, enqueuedAt = 0): Item => ({ record, n, enqueuedAt, finished: false });

describe('RecordQueue', () => {
  it('hands out only the head of each record; the next of a record is ready once its head completes', () => {
    const queue = new RecordQueue<Item>((i) => i.record);
    const [a1, a2, b1] = [item('a', 1), item('a', 2), item('b', 1)];
    queue.push(a1);
    queue.push(a2);
    queue.push(b1);
    expect(queue.size).toBe(3);
    expect(queue.next()).toBe(a1);
    expect(queue.next()).toBe(b1);
    // a-2 waits behind a-1, however many slots are free.
    expect(queue.next()).toBeUndefined();
    queue.complete(a1);
    expect(queue.next()).toBe(a2);
    expect(queue.size).toBe(0);
  });

  it('takeAll() returns what is queued and handed out, record by record, and empties the queue', () => {
    const queue = new RecordQueue<Item>((i) => i.record);
    const items = [item('a', 1), item('b', 1), item('a', 2)];
    for (const i of items) queue.push(i);
    queue.next();
    expect(queue.takeAll()).toEqual([items[0], items[2], items[1]]);
    expect(queue.size).toBe(0);
    expect(queue.next()).toBeUndefined();
  });

  it('reports the age of the oldest unfinished item', () => {
    const queue = new RecordQueue<Item>((i) => i.record);
    const first = item('a', 1, 1_000);
    queue.push(first);
    queue.push(item('b', 1, 4_000));
    expect(queue.oldestAgeMs(5_000)).toBe(4_000);
    first.finished = true;
    expect(queue.oldestAgeMs(5_000)).toBe(1_000);
    queue.takeAll();
    expect(queue.oldestAgeMs(5_000)).toBe(0);
  });
});

describe('EndpointBreaker', () => {
  const refused = REFUSED as FailedAttempt;

  it('opens after a run of endpoint-level failures, then allows one probe at a time after the delay', () => {
    const breaker = new EndpointBreaker();
    for (let i = 1; i < BREAKER_THRESHOLD; i++) breaker.failed(refused, 0, () => 2_000);
    expect(breaker.isOpen).toBe(false);
    expect(breaker.sendLimit(8)).toBe(8);
    expect(breaker.claimBatch(8)).toBe(32);
    breaker.failed(refused, 0, () => 2_000);
    expect(breaker.isOpen).toBe(true);
    expect(breaker.sendLimit(8)).toBe(1);
    expect(breaker.claimBatch(8)).toBe(1);
    expect(breaker.mayPoll(1_999, 0)).toBe(false);
    expect(breaker.mayPoll(2_000, 1)).toBe(false);
    expect(breaker.mayPoll(2_000, 0)).toBe(true);
    breaker.succeeded();
    expect(breaker.isOpen).toBe(false);
    expect(breaker.mayPoll(0, 5)).toBe(true);
  });

  it('ignores failures that say nothing about the endpoint and caps the probe delay', () => {
    const breaker = new EndpointBreaker();
    for (let i = 0; i < 10; i++) breaker.failed(HTTP_500 as FailedAttempt, 0, () => 1);
    expect(breaker.isOpen).toBe(false);
    const unavailable: FailedAttempt = { ok: false, reason: 'http_status', statusCode: 503, message: 'HTTP 503', durationMs: 1 };
    for (let i = 0; i < BREAKER_THRESHOLD; i++) breaker.failed(unavailable, 0, () => 3_600_000);
    expect(breaker.isOpen).toBe(true);
    expect(breaker.mayPoll(MAX_PROBE_INTERVAL_MS - 1, 0)).toBe(false);
    expect(breaker.mayPoll(MAX_PROBE_INTERVAL_MS, 0)).toBe(true);
  });
});
