import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import pino from 'pino';
import { DeliveryCoordinator } from '../../src/deliver/coordinator.js';
import type { Logger } from '../../src/log.js';
import { LogCapture } from '../helpers/bridge.js';
import type { LaneSettings } from '../../src/deliver/types.js';
import {
  event,
  eventually,
  FakeHold,
  FakeObserver,
  FakeSender,
  FakeStore,
  GONE,
  HTTP_500,
  OK,
  SETTINGS,
  settle,
  silentLog,
  subscriber,
  until,
} from './fakes/deliveryFakes.js';

const STORE_POLL_MS = 100;

async function setup(settings: Partial<LaneSettings> = {}, seed?: (store: FakeStore) => void, log: Logger = silentLog) {
  const store = new FakeStore();
  seed?.(store);
  const sender = new FakeSender();
  const observer = new FakeObserver();
  const disabled: Array<[string, boolean]> = [];
  const coordinator = new DeliveryCoordinator(store, sender, { ...SETTINGS, ...settings, storePollMs: STORE_POLL_MS }, observer, log, (id, recorded) =>
    disabled.push([id, recorded]),
  );
  await coordinator.start();
  const webhook = subscriber();
  coordinator.updateSubscribers([webhook]);
  const hold = new FakeHold();
  const route = (record: string, n: number) => coordinator.route(event(record, n), [webhook], hold);
  const lane = () => coordinator.laneStates().find((l) => l.webhookId === webhook.id);
  return { store, sender, observer, disabled, coordinator, webhook, hold, route, lane };
}

beforeEach(() => {
  vi.useFakeTimers({ now: new Date('2026-01-01T00:00:00Z') });
});
afterEach(() => {
  vi.useRealTimers();
});

describe('DeliveryCoordinator', () => {
  it('waitForCapacity() holds the stream while a lane is full and lets it go once memory is freed', async () => {
    const { coordinator, sender, route } = await setup({ memoryQueueLimit: 2, concurrency: 1 });
    sender.answer = () => 'hold';
    route('a', 1);
    expect(coordinator.waitForCapacity()).toBeNull();
    route('b', 2);
    const waiting = coordinator.waitForCapacity();
    expect(waiting).not.toBeNull();
    let released = false;
    void waiting!.then(() => {
      released = true;
    });
    await settle();
    expect(released).toBe(false);
    sender.answer = () => OK;
    sender.finish(OK);
    await until(() => released);
    expect(coordinator.waitForCapacity()).toBeNull();
    await coordinator.drain(Date.now() + 1_000);
  });

  it('moves a lane whose oldest delivery waited longer than storeAfterMs to the store, so its transaction is acknowledged', async () => {
    const { coordinator, sender, store, hold, route, lane } = await setup({ storeAfterMs: 2_000, concurrency: 1 });
    sender.answer = () => 'hold';
    route('a', 1);
    route('b', 2);
    await settle();
    await vi.advanceTimersByTimeAsync(2_000);
    expect(lane()!.mode).toBe('memory');
    await vi.advanceTimersByTimeAsync(STORE_POLL_MS);
    await until(() => hold.outstanding === 0);
    expect(lane()!.mode).toBe('store');
    expect(store.rows.map((r) => r.event_id).sort()).toEqual(['a-1', 'b-2']);
    // The slow receiver answers; the store empties and the next tick finds the lane back in memory.
    sender.answer = () => OK;
    sender.finish(OK);
    for (let i = 0; i < 10 && lane()!.mode === 'store'; i++) {
      await vi.advanceTimersByTimeAsync(STORE_POLL_MS);
      await settle();
    }
    expect(store.rows).toEqual([]);
    expect(lane()!.mode).toBe('memory');
    expect(sender.sentIds().sort()).toEqual(['a-1', 'b-2']);
    await coordinator.drain(Date.now() + 1_000);
  });

  it('a move to the store refused for good (permission denied) is logged, nothing goes unhandled, and its transaction stays unacknowledged', async () => {
    const logs = new LogCapture();
    const { coordinator, sender, store, hold, route } = await setup({ storeAfterMs: 2_000, concurrency: 1 }, undefined, pino({ level: 'warn' }, logs));
    sender.answer = () => 'hold';
    route('a', 1);
    route('b', 2);
    await settle();
    store.failures.push(Object.assign(new Error('permission denied for table deliveries'), { code: '42501' }));
    await vi.advanceTimersByTimeAsync(2_000 + STORE_POLL_MS);
    await until(() => logs.lines.some((l) => l.level >= 40 && /permission denied/.test(l.err?.message ?? '')));
    expect(hold.outstanding).toBeGreaterThan(0);
    expect(store.rows).toEqual([]);
    sender.finish(OK);
    await coordinator.drain(Date.now() + 1_000);
  });

  it('a webhook no longer live gets no attempt, its lane is freed, and its stored work goes out when it is live again', async () => {
    const { coordinator, sender, store, route, lane, webhook } = await setup({ concurrency: 1 });
    sender.answer = () => 'hold';
    route('a', 1);
    route('b', 2);
    await settle();
    coordinator.updateSubscribers([]);
    await until(() => store.rows.length === 2);
    sender.finish(OK);
    route('c', 3);
    // The late success is a completion in the store, deleted with the next batch.
    await vi.advanceTimersByTimeAsync(50);
    await eventually(() => lane() === undefined);
    await vi.advanceTimersByTimeAsync(STORE_POLL_MS * 8);
    expect(sender.sentIds()).toEqual(['a-1']);
    expect(store.pending().map((r) => r.event_id)).toEqual(['b-2']);
    // Live again: a new lane starts from the store.
    sender.answer = () => OK;
    coordinator.updateSubscribers([webhook]);
    expect(lane()!.mode).toBe('store');
    await until(() => sender.sent.length === 2);
    expect(sender.sentIds()).toEqual(['a-1', 'b-2']);
    await coordinator.drain(Date.now() + 1_000);
  });

  it('a webhook removed and added back before its lane is freed resumes sending on the same lane', async () => {
    const { coordinator, sender, store, route, webhook } = await setup({ concurrency: 1 });
    sender.answer = () => 'hold';
    route('a', 1);
    route('b', 2);
    await settle();
    coordinator.updateSubscribers([]);
    await until(() => store.rows.length === 2);
    coordinator.updateSubscribers([webhook]);
    sender.answer = () => OK;
    sender.finish(OK);
    await until(() => sender.sent.length === 2);
    expect(sender.sentIds()).toEqual(['a-1', 'b-2']);
    await coordinator.drain(Date.now() + 1_000);
  });

  it('starts a webhook with stored backlog in store mode and sends the backlog before new events of a record', async () => {
    const id = subscriber().id;
    const { coordinator, sender, route, lane } = await setup({ concurrency: 1 }, (store) =>
      store.seed({ webhook_id: id, event_id: 'a-1', record_key: 'a', commit_lsn: '0/100' }),
    );
    expect(lane()!.mode).toBe('store');
    route('a', 2);
    await until(() => sender.sent.length === 2);
    expect(sender.sentIds()).toEqual(['a-1', 'a-2']);
    await coordinator.drain(Date.now() + 1_000);
  });

  it('410 Gone disables the webhook at once, records it, and starts no further attempt', async () => {
    const { coordinator, sender, store, observer, disabled, route, webhook } = await setup({ concurrency: 1 });
    sender.answer = () => GONE;
    route('a', 1);
    route('b', 2);
    await until(() => disabled.length === 2);
    expect(disabled).toEqual([
      [webhook.id, false],
      [webhook.id, true],
    ]);
    expect(store.disabledWebhooks.has(webhook.id)).toBe(true);
    expect(observer.autoDisabled).toEqual([webhook.id]);
    await vi.advanceTimersByTimeAsync(STORE_POLL_MS * 8);
    expect(sender.sentIds()).toEqual(['a-1']);
    await coordinator.drain(Date.now() + 1_000);
  });

  it('disables a webhook that has failed for longer than disableAfterMs', async () => {
    const { coordinator, sender, store, disabled, route, webhook } = await setup({ concurrency: 1, disableAfterMs: 500, retryScheduleS: [1, 1, 1] });
    sender.answer = () => HTTP_500;
    route('a', 1);
    await until(() => store.rows.length === 1 && store.count('recordFailure') === 1);
    expect(disabled).toEqual([]);
    for (let i = 0; i < 30 && disabled.length === 0; i++) {
      await vi.advanceTimersByTimeAsync(STORE_POLL_MS);
      await settle();
    }
    expect(disabled).toEqual([[webhook.id, true]]);
    expect(sender.sent.length).toBe(2);
    await coordinator.drain(Date.now() + 1_000);
  });

  it('drain() stops the timers and stores what memory holds', async () => {
    const { coordinator, sender, store, hold, route } = await setup({ concurrency: 1 });
    sender.answer = () => 'hold';
    route('a', 1);
    route('b', 2);
    await settle();
    const drained = coordinator.drain(Date.now() + 1_000);
    await until(() => store.rows.length === 2);
    sender.finish(OK);
    await drained;
    expect(hold.outstanding).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
  });
});
