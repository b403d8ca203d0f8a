import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Lane, type LaneHooks } from '../../src/deliver/lane.js';
import type { FailedAttempt, LaneSettings } from '../../src/deliver/types.js';
import {
  event,
  FakeHold,
  FakeObserver,
  FakeSender,
  FakeStore,
  GONE,
  HTTP_500,
  memoryDelivery,
  OK,
  REFUSED,
  SETTINGS,
  settle,
  silentLog,
  subscriber,
  until,
} from './fakes/deliveryFakes.js';

function setup(settings: Partial<LaneSettings> = {}) {
  const store = new FakeStore();
  const sender = new FakeSender();
  const observer = new FakeObserver();
  const failures: FailedAttempt[] = [];
  let capacityFreed = 0;
  const hooks: LaneHooks = {
    failure: async (_id, outcome) => {
      failures.push(outcome);
    },
    success: () => undefined,
    capacityFreed: () => {
      capacityFreed++;
    },
  };
  const webhook = subscriber();
  // random() = 0.5: retry delays are exactly the schedule (5 s, then 300 s).
  const lane = new Lane(webhook, store, sender, { ...SETTINGS, ...settings }, observer, hooks, silentLog, () => 0.5);
  const hold = new FakeHold();
  const enqueue = (record: string, n: number) => lane.enqueue(memoryDelivery(event(record, n), hold, webhook.targetUrl));
  return { store, sender, observer, failures, lane, hold, enqueue, webhook, capacityFreed: () => capacityFreed };
}

beforeEach(() => {
  vi.useFakeTimers({ now: new Date('2026-01-01T00:00:00Z') });
});
afterEach(() => {
  vi.useRealTimers();
});

describe('Lane on the fast path (memory)', () => {
  it('delivers every event, one record in commit order, without touching the database', async () => {
    const { lane, sender, store, hold, enqueue } = setup({ concurrency: 1 });
    for (let n = 1; n <= 3; n++) enqueue('a', n);
    await until(() => sender.sent.length === 3 && lane.idle);
    expect(sender.sentIds()).toEqual(['a-1', 'a-2', 'a-3']);
    expect(store.calls).toEqual([]);
    expect(hold.outstanding).toBe(0);
    expect(lane.mode).toBe('memory');
  });

  it('keeps at most one delivery of a record in flight while other records use the free slots', async () => {
    const { lane, sender, enqueue } = setup({ concurrency: 4 });
    sender.answer = () => 'hold';
    enqueue('a', 1);
    enqueue('a', 2);
    enqueue('b', 3);
    await settle();
    expect(sender.sentIds()).toEqual(['a-1', 'b-3']);
    expect(lane.inFlightCount).toBe(2);
    sender.finish(OK, (r) => r.eventId === 'a-1');
    await until(() => sender.sent.length === 3);
    expect(sender.sentIds()[2]).toBe('a-2');
    sender.answer = () => OK;
    sender.finish(OK);
    await until(() => lane.idle);
  });
});

describe('Lane memory -> store -> memory', () => {
  it('a failed attempt spills the lane; the failing record waits for its retry while other records flow; the drained store returns it to memory', async () => {
    const { lane, sender, store, hold, observer, failures, enqueue } = setup({ concurrency: 1 });
    sender.answer = (r) => (r.eventId === 'a-1' && sender.sent.filter((s) => s.eventId === 'a-1').length === 1 ? HTTP_500 : OK);
    enqueue('a', 1);
    enqueue('a', 2);
    enqueue('b', 3);
    await until(() => lane.mode === 'store' && store.count('insert') === 1);
    // Spilled: a-1 with its failed attempt and next run time, a-2 and b-3 as new rows.
    await until(() => hold.outstanding === 0);
    const a1 = store.rows.find((r) => r.event_id === 'a-1')!;
    expect(a1).toMatchObject({ attempts: 1, status: 'pending', last_status_code: 500 });
    expect(a1.run_at.getTime()).toBe(Date.now() + 5_000);
    expect(failures.map((f) => f.reason)).toEqual(['http_status']);
    // b-3 goes out from the store; a-2 waits behind its record's failing head.
    await until(() => sender.sentIds().includes('b-3'));
    await vi.advanceTimersByTimeAsync(50);
    await settle();
    expect(sender.sentIds()).toEqual(['a-1', 'b-3']);
    expect(
      store
        .pending()
        .map((r) => r.event_id)
        .sort(),
    ).toEqual(['a-1', 'a-2']);
    expect(lane.mode).toBe('store');
    // The retry comes due: a-1, then a-2, then the store is empty and the lane is back in memory.
    await vi.advanceTimersByTimeAsync(5_000);
    lane.poll();
    await until(() => sender.sent.length === 4);
    for (let i = 0; i < 5 && lane.mode === 'store'; i++) {
      await vi.advanceTimersByTimeAsync(50);
      lane.poll();
      await settle();
    }
    expect(sender.sentIds()).toEqual(['a-1', 'b-3', 'a-1', 'a-2']);
    expect(store.rows).toEqual([]);
    expect(lane.mode).toBe('memory');
    expect(observer.attempts.map((a) => a.label)).toEqual(['retry', 'success', 'success', 'success']);
    // Back on the fast path: a new event goes out without a write.
    const inserts = store.count('insert');
    enqueue('c', 5);
    await until(() => sender.sent.length === 5);
    expect(store.count('insert')).toBe(inserts);
  });

  it('two attempts failing together spill once: the second, already stored under a lease, records its failure in the store', async () => {
    const { lane, sender, store, hold, failures, enqueue } = setup({ concurrency: 2 });
    sender.answer = () => 'hold';
    enqueue('a', 1);
    enqueue('b', 2);
    enqueue('a', 3);
    await settle();
    expect(sender.sentIds()).toEqual(['a-1', 'b-2']);
    sender.finish(HTTP_500);
    await until(() => failures.length === 2 && store.count('fail') === 1);
    await settle();
    expect(lane.mode).toBe('store');
    expect(store.count('insert')).toBe(1);
    expect(hold.outstanding).toBe(0);
    const rows = Object.fromEntries(store.rows.map((r) => [r.event_id, r]));
    expect(rows['a-1']).toMatchObject({ attempts: 1, status: 'pending', last_status_code: 500 });
    expect(rows['b-2']).toMatchObject({ attempts: 1, status: 'pending', last_status_code: 500, locked_until: null });
    expect(rows['a-3']).toMatchObject({ attempts: 0, status: 'pending' });
  });

  it('moveToStore() stores queued work and leases in-flight work, whose late outcome is recorded in the store', async () => {
    const { lane, sender, store, hold, enqueue } = setup({ concurrency: 1 });
    sender.answer = () => 'hold';
    enqueue('a', 1);
    enqueue('b', 2);
    await settle();
    await vi.advanceTimersByTimeAsync(3_000);
    expect(lane.oldestAgeMs(Date.now())).toBe(3_000);
    await lane.moveToStore();
    expect(lane.mode).toBe('store');
    // The transaction is no longer held: both deliveries are durable.
    expect(hold.outstanding).toBe(0);
    const a1 = store.rows.find((r) => r.event_id === 'a-1')!;
    expect(a1.locked_until!.getTime()).toBe(Date.now() + SETTINGS.timeoutMs + 5_000);
    expect(store.rows.find((r) => r.event_id === 'b-2')!.locked_until).toBeNull();
    expect(lane.oldestAgeMs(Date.now())).toBe(0);
    // The slow answer arrives: recorded as a completion in the store (one batched delete).
    sender.answer = () => OK;
    sender.finish(OK);
    await until(() => sender.sentIds().includes('b-2'));
    await vi.advanceTimersByTimeAsync(20);
    await until(() => store.rows.length === 0);
    expect(store.count('complete')).toBeGreaterThanOrEqual(1);
  });

  it('startFromStore() sends the stored backlog first, in commit order, and new events queue behind it in the store', async () => {
    const { lane, sender, store, webhook, enqueue } = setup({ concurrency: 1 });
    store.seed({ webhook_id: webhook.id, event_id: 'a-1', record_key: 'a', commit_lsn: '0/100' });
    lane.startFromStore();
    expect(lane.mode).toBe('store');
    enqueue('a', 2);
    await until(() => sender.sent.length === 2);
    expect(sender.sentIds()).toEqual(['a-1', 'a-2']);
    expect(store.count('setAside')).toBe(1);
  });

  it('rejects the transitions that cannot happen', async () => {
    const { lane, enqueue, sender } = setup();
    sender.answer = () => 'hold';
    expect(() => lane.enable()).toThrow(/only a lane whose sending was stopped/);
    enqueue('a', 1);
    expect(() => lane.startFromStore()).toThrow(/before it holds anything/);
    await lane.moveToStore();
    await expect(lane.moveToStore()).rejects.toThrow(/only a lane on the fast path/);
  });
});

describe('Lane sending on and off', () => {
  it('disable() starts no attempt, stores memory work and gives claims back; enable() sends it', async () => {
    const { lane, sender, store, hold, enqueue } = setup({ concurrency: 1 });
    sender.answer = () => 'hold';
    enqueue('a', 1);
    enqueue('b', 2);
    await settle();
    expect(sender.sent.length).toBe(1);
    await lane.disable('webhook deleted');
    expect(lane.isSending).toBe(false);
    expect(lane.mode).toBe('store');
    expect(hold.outstanding).toBe(0);
    // The attempt under way ends; nothing new starts, events routed now are not taken.
    sender.answer = () => OK;
    sender.finish(OK);
    enqueue('c', 3);
    await vi.advanceTimersByTimeAsync(100);
    lane.poll();
    await settle();
    expect(sender.sentIds()).toEqual(['a-1']);
    expect(store.pending().map((r) => r.event_id)).toEqual(['b-2']);
    lane.enable();
    await until(() => sender.sent.length === 2);
    expect(sender.sentIds()).toEqual(['a-1', 'b-2']);
  });

  it('a 410 Gone stops sending at that very moment', async () => {
    const { lane, sender, failures, enqueue } = setup({ concurrency: 1 });
    sender.answer = () => GONE;
    enqueue('a', 1);
    enqueue('a', 2);
    enqueue('b', 3);
    await until(() => failures.length === 1 && lane.mode === 'store');
    await settle();
    expect(lane.isSending).toBe(false);
    expect(sender.sentIds()).toEqual(['a-1']);
  });

  it('claimed rows are given back when sending stops while they wait for a slot', async () => {
    const { lane, sender, store, webhook } = setup({ concurrency: 1 });
    for (let n = 1; n <= 3; n++) store.seed({ webhook_id: webhook.id, event_id: `r${n}-${n}`, record_key: `r${n}`, commit_lsn: `0/${n}00` });
    sender.answer = () => 'hold';
    lane.startFromStore();
    await until(() => sender.sent.length === 1);
    expect(store.count('release')).toBe(0);
    await lane.disable('webhook disabled');
    expect(store.count('release')).toBe(1);
    const released = store.calls.find((c) => c.statement === 'release')!.values[0] as string[];
    expect(released.sort()).toEqual(['r2-2', 'r3-3']);
  });
});

describe('Lane endpoint breaker', () => {
  it('after three refused attempts the store is probed one delivery at a time', async () => {
    const { lane, sender, store, webhook } = setup({ concurrency: 4 });
    for (let n = 1; n <= 6; n++) store.seed({ webhook_id: webhook.id, event_id: `r${n}-${n}`, record_key: `r${n}`, commit_lsn: `0/${n}00` });
    sender.answer = () => REFUSED;
    lane.startFromStore();
    await until(() => sender.sent.length >= 4);
    await settle();
    const afterBurst = sender.sent.length;
    expect(afterBurst).toBe(4);
    // Open: the next poll waits for the probe time, then sends a single delivery.
    lane.poll();
    await settle();
    expect(sender.sent.length).toBe(afterBurst);
    await vi.advanceTimersByTimeAsync(10_000);
    sender.answer = () => 'hold';
    lane.poll();
    await until(() => sender.sent.length === afterBurst + 1);
    lane.poll();
    await settle();
    expect(sender.sent.length).toBe(afterBurst + 1);
    // The probe succeeds: the breaker closes and the rest go out with full concurrency.
    sender.answer = () => OK;
    sender.finish(OK);
    for (let i = 0; i < 10 && store.rows.length > 0; i++) {
      await vi.advanceTimersByTimeAsync(50);
      lane.poll();
      await settle();
    }
    expect(store.rows).toEqual([]);
    expect(new Set(sender.sentIds()).size).toBe(6);
  });
});

describe('Lane drain and targetUrl', () => {
  it('drain() stores memory work, sends nothing new, and closes once', async () => {
    const { lane, sender, store, hold, enqueue } = setup({ concurrency: 1 });
    sender.answer = () => 'hold';
    enqueue('a', 1);
    enqueue('b', 2);
    await settle();
    const drained = lane.drain(Date.now() + 1_000);
    await until(() => store.rows.length === 2);
    sender.finish(OK);
    await drained;
    expect(hold.outstanding).toBe(0);
    enqueue('c', 3);
    await until(() => store.rows.some((r) => r.event_id === 'c-3'));
    expect(sender.sentIds()).toEqual(['a-1']);
    await expect(lane.drain(Date.now())).rejects.toThrow(/drains once/);
  });

  it('a new targetUrl sets aside what was routed for the old one and never sends it there', async () => {
    const { lane, sender, store, webhook, hold } = setup({ concurrency: 1 });
    sender.answer = () => 'hold';
    lane.enqueue(memoryDelivery(event('a', 1), hold, webhook.targetUrl));
    lane.enqueue(memoryDelivery(event('b', 2), hold, webhook.targetUrl));
    await settle();
    lane.updateWebhook({ ...webhook, targetUrl: 'http://new.test/hook' });
    await until(() => store.count('setAside') === 1);
    await settle();
    expect(store.rows.find((r) => r.event_id === 'b-2')!.status).toBe('dead');
    sender.answer = () => OK;
    sender.finish(OK);
    await vi.advanceTimersByTimeAsync(100);
    lane.poll();
    await settle();
    expect(sender.sent.map((r) => r.url)).toEqual(['http://receiver.test/hook']);
  });
});
