import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import pino from 'pino';
import { DeliveryCoordinator } from '../../src/deliver/coordinator.js';
import { withDatabaseRetry } from '../../src/deliver/databaseRetry.js';
import type { Logger } from '../../src/log.js';
import { toLoggedEvent } from '../../src/route/loggedEvent.js';
import { appendSegment, lastLoggedPosition, loadCursors } from '../../src/store/eventLog.js';
import { LogWriter } from '../../src/store/logWriter.js';
import type { LogPosition } from '../../src/store/types.js';
import { LogCapture } from '../helpers/bridge.js';
import type { LaneSettings } from '../../src/deliver/types.js';
import {
  event,
  eventually,
  FakeHold,
  routeAsPipeline,
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

interface SetupOptions {
  seed?: (store: FakeStore) => Promise<void> | void;
  log?: Logger;
  /** Where the stream resumes (the slot's confirmed position). */
  slot?: LogPosition;
}

async function setup(settings: Partial<LaneSettings> = {}, options: SetupOptions = {}) {
  const store = new FakeStore();
  await options.seed?.(store);
  const log = options.log ?? silentLog;
  const sender = new FakeSender();
  const observer = new FakeObserver();
  const disabled: Array<[string, boolean]> = [];
  const releasedHeld: string[] = [];
  const logWriter = new LogWriter(store, { schema: SETTINGS.schema, keepEverything: false, retry: (what, run) => withDatabaseRetry(log, what, run) }, log);
  // The stream resumes after what the log holds, as it does once a run has acknowledged it.
  const logged = await lastLoggedPosition(store, SETTINGS.schema);
  if (logged !== null) logWriter.resumeFrom({ lsn: logged.lsn, index: logged.index + 1 });
  const coordinator = new DeliveryCoordinator(
    store,
    sender,
    logWriter,
    { ...SETTINGS, ...settings, storePollMs: STORE_POLL_MS },
    observer,
    log,
    (id, recorded) => disabled.push([id, recorded]),
    (id) => releasedHeld.push(id),
  );
  await coordinator.start(options.slot ?? { lsn: 0n, index: 0 });
  const webhook = subscriber();
  coordinator.updateSubscribers([webhook]);
  const transactions: FakeHold[] = [];
  /** As the pipeline does: the event goes to the log writer, then to the lanes, then its transaction commits. */
  const route = (record: string, n: number): FakeHold => {
    const e = event(record, n);
    const transaction = routeAsPipeline(logWriter, e, (hold) => coordinator.route(e, [webhook], hold));
    transactions.push(transaction);
    return transaction;
  };
  const held = () => transactions.reduce((sum, t) => sum + t.outstanding, 0);
  const lane = () => coordinator.laneStates().find((l) => l.webhookId === webhook.id);
  /** What the pipeline passes on each registry refresh: the live webhooks and the cursors now. */
  const refresh = async (active: (typeof webhook)[]) => coordinator.updateSubscribers(active, await loadCursors(store, SETTINGS.schema));
  return { store, sender, observer, disabled, releasedHeld, logWriter, coordinator, webhook, route, held, lane, refresh };
}

/** Runs the coordinator's ticks until `condition` holds. */
async function tickUntil(condition: () => boolean, ticks = 20): Promise<void> {
  for (let i = 0; i < ticks && !condition(); i++) {
    await vi.advanceTimersByTimeAsync(STORE_POLL_MS);
    await settle();
  }
  expect(condition()).toBe(true);
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

  it('a lane whose attempt has run longer than storeAfterMs falls behind: the log takes its work and its transactions are acknowledged; caught up, it is back in memory', async () => {
    const { coordinator, sender, store, held, route, lane, releasedHeld, webhook, logWriter } = await setup({ storeAfterMs: 2_000, concurrency: 1 });
    sender.answer = () => 'hold';
    route('a', 1);
    route('b', 2);
    await settle();
    await vi.advanceTimersByTimeAsync(2_000);
    expect(lane()!.mode).toBe('memory');
    await vi.advanceTimersByTimeAsync(STORE_POLL_MS);
    await until(() => held() === 0);
    expect(lane()!.mode).toBe('store');
    expect(releasedHeld).toEqual([webhook.id]);
    expect(store.loggedLabels()).toEqual(['a-1', 'b-2']);
    expect(store.cursors.get(webhook.id)).toMatchObject({ lsn: '0/100', change_index: 0 });
    // The slow receiver answers; the lane sends on and a tick finds it caught up.
    sender.answer = () => OK;
    sender.finish(OK);
    await tickUntil(() => lane()!.mode === 'memory');
    expect(sender.sentIds()).toEqual(['a-1', 'b-2']);
    expect(store.rows).toEqual([]);
    await until(() => !store.cursors.has(webhook.id));
    expect(logWriter.logging).toBe(false);
    await coordinator.drain(Date.now() + 1_000);
  });

  it('a fall behind refused for good (permission denied) is logged, nothing goes unhandled, and its transactions stay unacknowledged', async () => {
    const logs = new LogCapture();
    const { coordinator, sender, store, held, route } = await setup({ storeAfterMs: 2_000, concurrency: 1 }, { log: pino({ level: 'warn' }, logs) });
    sender.answer = () => 'hold';
    route('a', 1);
    route('b', 2);
    await settle();
    await vi.advanceTimersByTimeAsync(2_000);
    store.failures.push(Object.assign(new Error('permission denied for table log_cursors'), { code: '42501' }));
    await vi.advanceTimersByTimeAsync(STORE_POLL_MS);
    await until(() => logs.lines.some((l) => l.level >= 50 && /permission denied/.test(l.err?.message ?? '')));
    expect(held()).toBe(2);
    expect(store.segments).toEqual([]);
    sender.finish(OK);
    await coordinator.drain(Date.now() + 1_000);
  });

  it('a webhook no longer live gets no attempt, its lane is freed with a paused cursor, and its work goes out when it is live again', async () => {
    const { coordinator, sender, store, route, lane, webhook, held, refresh } = await setup({ concurrency: 1 });
    sender.answer = () => 'hold';
    route('a', 1);
    route('b', 2);
    await settle();
    await refresh([]);
    await until(() => store.cursors.get(webhook.id)?.paused_lsn === '0/200' && held() === 0);
    sender.finish(OK);
    // Committed while the webhook is not live: never sent to it.
    route('c', 3);
    await eventually(() => lane() === undefined);
    await vi.advanceTimersByTimeAsync(STORE_POLL_MS * 8);
    expect(sender.sentIds()).toEqual(['a-1']);
    expect(held()).toBe(0);
    // Live again: a new lane starts behind, reading from the cursor.
    sender.answer = () => OK;
    await refresh([webhook]);
    expect(lane()!.mode).toBe('store');
    await tickUntil(() => lane()!.mode === 'memory');
    // a-1 may be sent again: see the known gap in lane.test.ts (an attempt in flight at disable).
    expect(sender.sentIds().filter((id) => id !== 'a-1')).toEqual(['b-2']);
    await coordinator.drain(Date.now() + 1_000);
  });

  it('a webhook removed and added back before its lane is freed resumes sending on the same lane', async () => {
    const { coordinator, sender, store, route, webhook, refresh } = await setup({ concurrency: 1 });
    sender.answer = () => 'hold';
    route('a', 1);
    route('b', 2);
    await settle();
    await refresh([]);
    await until(() => store.cursors.get(webhook.id)?.paused_lsn !== undefined);
    await refresh([webhook]);
    sender.answer = () => OK;
    sender.finish(OK);
    await until(() => sender.sentIds().includes('b-2'));
    expect(sender.sentIds().filter((id) => id !== 'a-1')).toEqual(['b-2']);
    await coordinator.drain(Date.now() + 1_000);
  });

  it('starts a webhook with pending deliveries behind: they go first, and a later event of their record waits behind them', async () => {
    const id = subscriber().id;
    const { coordinator, sender, route, lane, store } = await setup(
      { concurrency: 1 },
      {
        seed: (s) => s.seed({ webhook_id: id, event_id: event('a', 1).id, body: event('a', 1).body, record_key: 'a', commit_lsn: '0/100' }),
        slot: { lsn: 0x200n, index: 0 },
      },
    );
    expect(lane()!.mode).toBe('store');
    route('a', 2);
    await tickUntil(() => lane()!.mode === 'memory');
    expect(sender.sentIds()).toEqual(['a-1', 'a-2']);
    expect(store.rows).toEqual([]);
    await coordinator.drain(Date.now() + 1_000);
  });

  it('starts a webhook with a log cursor behind, reading the log from it', async () => {
    const id = subscriber().id;
    const { coordinator, sender, route, lane, store } = await setup(
      { concurrency: 1 },
      {
        seed: async (s) => {
          await appendSegment(
            s,
            SETTINGS.schema,
            [event('a', 1), event('b', 2)].map((e) => toLoggedEvent(e, null)),
          );
          s.cursors.set(id, { lsn: '0/200', change_index: 0, paused_lsn: null });
        },
        slot: { lsn: 0x300n, index: 0 },
      },
    );
    expect(lane()!.mode).toBe('store');
    route('c', 3);
    await tickUntil(() => lane()!.mode === 'memory');
    expect(sender.sentIds()).toEqual(['b-2', 'c-3']);
    await until(() => !store.cursors.has(id));
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

  it('drain() stops the timers and puts what memory holds in the log', async () => {
    const { coordinator, sender, store, held, route, webhook } = await setup({ concurrency: 1 });
    sender.answer = () => 'hold';
    route('a', 1);
    route('b', 2);
    await settle();
    const drained = coordinator.drain(Date.now() + 1_000);
    await until(() => store.loggedLabels().length === 2);
    sender.finish(OK);
    await drained;
    expect(held()).toBe(0);
    expect(store.cursors.get(webhook.id)).toMatchObject({ lsn: '0/200', change_index: 0, paused_lsn: null });
    expect(vi.getTimerCount()).toBe(0);
  });
});
