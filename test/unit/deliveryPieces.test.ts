import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { BREAKER_THRESHOLD, EndpointBreaker, MAX_PROBE_INTERVAL_MS } from '../../src/deliver/endpointBreaker.js';
import { RecordQueue } from '../../src/deliver/recordQueue.js';
import { storedRow } from '../../src/deliver/storedRow.js';
import { StoreWriter } from '../../src/deliver/storeWriter.js';
import { event, FakeHold, FakeStore, HTTP_500, labelOf, REFUSED, SETTINGS } from './fakes/deliveryFakes.js';
import type { FailedAttempt, MemoryDelivery } from '../../src/deliver/types.js';
import { LogCapture } from '../helpers/bridge.js';

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

describe('StoreWriter', () => {
  const webhookId = '11111111-1111-4111-8111-111111111111';
  const delivery = (record: string, n: number, hold: FakeHold): MemoryDelivery => ({
    event: event(record, n),
    hold,
    targetUrl: 'https://example.com/hook',
    enqueuedAt: 0,
    finished: false,
  });

  it('a batch refused for good is logged and keeps its holds; the writes after it still go', async () => {
    const store = new FakeStore();
    const logs = new LogCapture();
    const stored: string[] = [];
    const writer = new StoreWriter(
      store,
      SETTINGS,
      {
        toRow: (d, now) => storedRow(webhookId, d, { attempts: 0, runAt: now, outcome: null, lockedUntil: null, dead: false }),
        batchStored: (batch) => {
          for (const d of batch) {
            stored.push(labelOf(d.event.body));
            d.hold.release();
          }
        },
        mayPoll: () => undefined,
      },
      pino({ level: 'warn' }, logs),
    );
    const refused = new FakeHold();
    const later = new FakeHold();
    store.failures.push(Object.assign(new Error('permission denied for table deliveries'), { code: '42501' }));
    refused.hold();
    writer.add(delivery('a', 1, refused));
    await writer.flushed();
    later.hold();
    writer.add(delivery('b', 2, later));
    await writer.flushed();
    await writer.settled();
    expect(stored).toEqual(['b-2']);
    expect(store.rows.map((r) => labelOf(r.body))).toEqual(['b-2']);
    expect(refused.outstanding).toBe(1);
    expect(later.outstanding).toBe(0);
    expect(logs.lines.filter((l) => l.level === 50).map((l) => l.err.message)).toEqual(['permission denied for table deliveries']);
  });
});
