import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { withDatabaseRetry } from '../../src/deliver/databaseRetry.js';
import { Lane, TARGET_CHANGED_REASON } from '../../src/deliver/lane.js';
import type { FailedAttempt, LaneHooks, LaneSettings } from '../../src/deliver/types.js';
import { toLoggedEvent } from '../../src/route/loggedEvent.js';
import { appendSegment } from '../../src/store/eventLog.js';
import { LogWriter } from '../../src/store/logWriter.js';
import {
  event,
  FakeHold,
  routeAsPipeline,
  FakeObserver,
  FakeSender,
  FakeStore,
  GONE,
  HTTP_500,
  labelOf,
  memoryDelivery,
  OK,
  REFUSED,
  SETTINGS,
  settle,
  silentLog,
  subscriber,
  until,
} from './fakes/deliveryFakes.js';

function setup(settings: Partial<LaneSettings> = {}, store = new FakeStore()) {
  const sender = new FakeSender();
  const observer = new FakeObserver();
  const failures: FailedAttempt[] = [];
  const releasedHeld: string[] = [];
  const hooks: LaneHooks = {
    failure: async (_id, outcome) => {
      failures.push(outcome);
    },
    success: () => undefined,
    capacityFreed: () => undefined,
    releaseHeld: (id) => releasedHeld.push(id),
  };
  const logWriter = new LogWriter(
    store,
    { schema: SETTINGS.schema, keepEverything: false, retry: (what, run) => withDatabaseRetry(silentLog, what, run) },
    silentLog,
  );
  const webhook = subscriber();
  // random() = 0.5: retry delays are exactly the schedule (5 s, then 300 s).
  const lane = new Lane(webhook, store, sender, logWriter, { ...SETTINGS, ...settings }, observer, hooks, silentLog, () => 0.5);
  const transactions: FakeHold[] = [];
  /** As the pipeline does: the event goes to the log writer, then to the lane, then its transaction commits. */
  const route = (record: string, n: number): FakeHold => {
    const e = event(record, n);
    const transaction = routeAsPipeline(logWriter, e, (hold) => lane.enqueue(memoryDelivery(e, hold, lane.webhook.targetUrl)));
    transactions.push(transaction);
    return transaction;
  };
  /** Holds on every routed transaction: 0 once each is delivered or in the log. */
  const held = () => transactions.reduce((sum, t) => sum + t.outstanding, 0);
  const cursor = () => store.cursors.get(webhook.id);
  const rowOf = (label: string) => store.rows.find((r) => labelOf(r.body) === label);
  return { store, sender, observer, failures, releasedHeld, logWriter, lane, route, held, cursor, rowOf, webhook };
}

/** Polls the lane (as the coordinator's tick does) until `condition` holds. */
async function pollUntil(lane: Lane, condition: () => boolean, rounds = 20): Promise<void> {
  for (let i = 0; i < rounds && !condition(); i++) {
    await vi.advanceTimersByTimeAsync(50);
    lane.poll();
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

describe('Lane on the fast path (memory)', () => {
  it('delivers every event, one record in commit order, without touching the database', async () => {
    const { lane, sender, store, held, route, logWriter } = setup({ concurrency: 1 });
    for (let n = 1; n <= 3; n++) route('a', n);
    await until(() => sender.sent.length === 3 && lane.idle);
    expect(sender.sentIds()).toEqual(['a-1', 'a-2', 'a-3']);
    expect(store.calls).toEqual([]);
    expect(held()).toBe(0);
    expect(lane.mode).toBe('memory');
    expect(logWriter.logging).toBe(false);
  });

  it('keeps at most one delivery of a record in flight while other records use the free slots', async () => {
    const { lane, sender, route } = setup({ concurrency: 4 });
    sender.answer = () => 'hold';
    route('a', 1);
    route('a', 2);
    route('b', 3);
    await settle();
    expect(sender.sentIds()).toEqual(['a-1', 'b-3']);
    expect(lane.inFlightCount).toBe(2);
    sender.finish(OK, (r) => labelOf(r.body) === 'a-1');
    await until(() => sender.sent.length === 3);
    expect(sender.sentIds()[2]).toBe('a-2');
    sender.answer = () => OK;
    sender.finish(OK);
    await until(() => lane.idle);
  });
});

describe('Lane memory -> behind (the event log) -> memory', () => {
  it('a failed attempt: cursor saved, log written, holds released; only the failing record waits, its later events as pending rows; caught up, it is back in memory', async () => {
    const { lane, sender, store, held, observer, failures, route, cursor, rowOf, releasedHeld, logWriter, webhook } = setup({ concurrency: 1 });
    let a1Attempts = 0;
    sender.answer = (r) => (labelOf(r.body) === 'a-1' && ++a1Attempts === 1 ? HTTP_500 : OK);
    route('a', 1);
    route('a', 2);
    route('b', 3);
    await until(() => lane.mode === 'store' && held() === 0);
    expect(releasedHeld).toEqual([webhook.id]);
    expect(logWriter.logging).toBe(true);
    // The cursor is at the oldest event not handled yet, and the log holds what memory still needed
    // (b-3 may have gone out from the queue first: a transaction every webhook had is not written).
    expect(cursor()).toEqual({ lsn: '0/100', change_index: 0, paused_lsn: null });
    expect(store.loggedLabels().slice(0, 2)).toEqual(['a-1', 'a-2']);
    // b-3 goes out; a-2 waits behind its record's failing head, as a pending row.
    await until(() => sender.sentIds().includes('b-3') && store.pending().length === 2);
    expect(rowOf('a-1')).toMatchObject({ attempts: 1, status: 'pending', last_status_code: 500 });
    expect(rowOf('a-1')!.run_at.getTime()).toBe(Date.now() + 5_000);
    expect(rowOf('a-2')).toMatchObject({ attempts: 0, status: 'pending' });
    expect(rowOf('b-3')).toBeUndefined();
    expect(failures.map((f) => f.reason)).toEqual(['http_status']);
    // A later event of the failing record, routed while behind, is read from the log and written behind it;
    // one of another record goes out.
    const a4 = route('a', 4);
    route('c', 5);
    await until(() => sender.sentIds().includes('c-5') && store.pending().length === 3);
    expect(a4.outstanding).toBe(0);
    expect(store.pendingLabels()).toEqual(['a-1', 'a-2', 'a-4']);
    await vi.advanceTimersByTimeAsync(50);
    lane.poll();
    await settle();
    expect(sender.sentIds()).toEqual(['a-1', 'b-3', 'c-5']);
    expect(lane.mode).toBe('store');
    // The retry comes due: a-1, a-2, a-4 in order; then nothing is pending and the lane is back in memory.
    await vi.advanceTimersByTimeAsync(5_000);
    await pollUntil(lane, () => lane.mode === 'memory');
    expect(sender.sentIds()).toEqual(['a-1', 'b-3', 'c-5', 'a-1', 'a-2', 'a-4']);
    expect(store.rows).toEqual([]);
    await until(() => cursor() === undefined);
    expect(logWriter.logging).toBe(false);
    expect(observer.attempts.map((a) => a.label)).toEqual(['retry', 'success', 'success', 'success', 'success', 'success']);
    // Back on the fast path: a new event goes out without a write.
    const calls = store.calls.length;
    route('d', 6);
    await until(() => sender.sent.length === 7 && held() === 0);
    expect(store.calls.length).toBe(calls);
  });

  it('two attempts failing together: the lane falls behind once and each failure becomes a pending row; the record behind one waits', async () => {
    const { lane, sender, store, held, failures, route, rowOf } = setup({ concurrency: 2 });
    sender.answer = () => 'hold';
    route('a', 1);
    route('b', 2);
    route('a', 3);
    await settle();
    expect(sender.sentIds()).toEqual(['a-1', 'b-2']);
    sender.finish(HTTP_500);
    await until(() => failures.length === 2 && store.pending().length === 3);
    expect(lane.mode).toBe('store');
    expect(held()).toBe(0);
    expect(store.loggedLabels()).toEqual(['a-1', 'b-2', 'a-3']);
    expect(rowOf('a-1')).toMatchObject({ attempts: 1, status: 'pending', last_status_code: 500, locked_until: null });
    expect(rowOf('b-2')).toMatchObject({ attempts: 1, status: 'pending', last_status_code: 500, locked_until: null });
    expect(rowOf('a-3')).toMatchObject({ attempts: 0, status: 'pending' });
    expect(sender.sent.length).toBe(2);
  });

  it('moveToStore() (a slow receiver): the log takes what memory holds and the transactions are acknowledged; the lane sends on and returns to memory, with no row in deliveries', async () => {
    const { lane, sender, store, held, route, cursor, logWriter } = setup({ concurrency: 1 });
    sender.answer = () => 'hold';
    route('a', 1);
    route('b', 2);
    await settle();
    await vi.advanceTimersByTimeAsync(3_000);
    expect(lane.oldestAgeMs(Date.now())).toBe(3_000);
    await lane.moveToStore();
    expect(lane.mode).toBe('store');
    expect(held()).toBe(0);
    expect(store.loggedLabels()).toEqual(['a-1', 'b-2']);
    expect(cursor()).toMatchObject({ lsn: '0/100', change_index: 0 });
    // The slow answer arrives; b-2 goes out from the lane's queue, and the lane catches up.
    sender.answer = () => OK;
    sender.finish(OK);
    await pollUntil(lane, () => lane.mode === 'memory');
    expect(sender.sentIds()).toEqual(['a-1', 'b-2']);
    expect(store.count('insert')).toBe(0);
    await until(() => cursor() === undefined);
    expect(logWriter.logging).toBe(false);
  });

  it('startFromLog() without a cursor: pending deliveries go first, in commit order; later events of their record are read from the log and wait behind them', async () => {
    const { lane, sender, store, webhook, route, rowOf, cursor } = setup({ concurrency: 2 });
    store.seed({ webhook_id: webhook.id, event_id: event('a', 1).id, body: event('a', 1).body, record_key: 'a', commit_lsn: '0/100' });
    sender.answer = () => 'hold';
    lane.startFromLog(null, { lsn: 0x200n, index: 0 });
    expect(lane.mode).toBe('store');
    const a2 = route('a', 2);
    route('b', 3);
    await until(() => sender.sent.length === 2 && rowOf('a-2') !== undefined);
    // Routed while behind: written to the log (and acknowledged), not held by the lane.
    expect(a2.outstanding).toBe(0);
    expect(store.loggedLabels()).toEqual(['a-2', 'b-3']);
    expect(sender.sentIds().sort()).toEqual(['a-1', 'b-3']);
    sender.answer = () => OK;
    sender.finish(OK);
    await pollUntil(lane, () => lane.mode === 'memory');
    expect(sender.sentIds().filter((id) => id.startsWith('a-'))).toEqual(['a-1', 'a-2']);
    expect(store.rows).toEqual([]);
    expect(store.count('setAside')).toBe(1);
    await until(() => cursor() === undefined);
  });

  it('startFromLog() from a cursor (a restart): events before it are not sent again; the rest are, then the cursor goes', async () => {
    const store = new FakeStore();
    await appendSegment(
      store,
      SETTINGS.schema,
      [event('a', 1), event('b', 2), event('a', 3)].map((e) => toLoggedEvent(e, null)),
    );
    const { lane, sender, logWriter, cursor, webhook } = setup({ concurrency: 1 }, store);
    store.cursors.set(webhook.id, { lsn: '0/200', change_index: 0, paused_lsn: null });
    logWriter.resumeFrom({ lsn: 0x300n, index: 1 });
    lane.startFromLog({ webhookId: webhook.id, position: { lsn: 0x200n, index: 0 }, pausedAt: null }, { lsn: 0x100n, index: 0 });
    await pollUntil(lane, () => lane.mode === 'memory');
    expect(sender.sentIds()).toEqual(['b-2', 'a-3']);
    await until(() => cursor() === undefined);
  });

  it('rejects the transitions that cannot happen', async () => {
    const { lane, route, sender } = setup();
    sender.answer = () => 'hold';
    expect(() => lane.enable()).toThrow(/only a lane whose sending was stopped/);
    route('a', 1);
    expect(() => lane.startFromLog(null, { lsn: 0n, index: 0 })).toThrow(/before it holds anything/);
    await lane.moveToStore();
    await expect(lane.moveToStore()).rejects.toThrow(/only a lane on the fast path/);
  });
});

describe('Lane sending on and off', () => {
  /** a-1 in flight and b-2 queued when the webhook is disabled; c-3 committed while it is off. */
  async function disabledWithWork() {
    const lane = setup({ concurrency: 1 });
    const { sender, route } = lane;
    sender.answer = () => 'hold';
    route('a', 1);
    route('b', 2);
    await settle();
    expect(sender.sent.length).toBe(1);
    await lane.lane.disable('webhook deleted');
    // The attempt under way ends; nothing new starts, events routed now are not taken.
    sender.answer = () => OK;
    sender.finish(OK);
    route('c', 3);
    return lane;
  }

  it('disable() starts no attempt, puts memory work in the log under a paused cursor; enable() skips what was committed meanwhile and sends the rest', async () => {
    const { lane, sender, held, route, cursor } = await disabledWithWork();
    expect(lane.isSending).toBe(false);
    expect(lane.mode).toBe('store');
    expect(cursor()).toEqual({ lsn: '0/100', change_index: 0, paused_lsn: '0/200' });
    await vi.advanceTimersByTimeAsync(100);
    lane.poll();
    await settle();
    expect(sender.sentIds()).toEqual(['a-1']);
    expect(held()).toBe(0);
    lane.enable();
    route('d', 4);
    await pollUntil(lane, () => lane.mode === 'memory');
    const sent = sender.sentIds();
    expect(sent.filter((id) => id !== 'a-1')).toEqual(['b-2', 'd-4']);
  });

  // Known gap: disable() rewinds the reader to the oldest unfinished event, which was in flight; its
  // attempt succeeds after the disable, and enable() reads and sends it again without any crash.
  it.fails('an attempt in flight when the webhook is disabled is not sent again after enable()', async () => {
    const { lane, sender, route } = await disabledWithWork();
    await settle();
    lane.enable();
    route('d', 4);
    await pollUntil(lane, () => lane.mode === 'memory');
    expect(sender.sentIds()).toEqual(['a-1', 'b-2', 'd-4']);
  });

  it('a 410 Gone stops sending at that very moment', async () => {
    const { lane, sender, failures, route, held } = setup({ concurrency: 1 });
    sender.answer = () => GONE;
    route('a', 1);
    route('a', 2);
    route('b', 3);
    await until(() => failures.length === 1 && lane.mode === 'store' && held() === 0);
    await settle();
    expect(lane.isSending).toBe(false);
    expect(sender.sentIds()).toEqual(['a-1']);
  });

  it('claimed rows are given back when sending stops while they wait for a slot', async () => {
    const { lane, sender, store, webhook } = setup({ concurrency: 1 });
    for (let n = 1; n <= 3; n++) store.seed({ webhook_id: webhook.id, event_id: `r${n}-${n}`, record_key: `r${n}`, commit_lsn: `0/${n}00` });
    sender.answer = () => 'hold';
    lane.startFromLog(null, { lsn: 0x400n, index: 0 });
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
    lane.startFromLog(null, { lsn: 0x700n, index: 0 });
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
    await pollUntil(lane, () => store.rows.length === 0);
    expect(new Set(sender.sentIds()).size).toBe(6);
  });
});

describe('Lane drain and targetUrl', () => {
  it('drain() puts memory work in the log and saves the cursor, sends nothing new, and closes once', async () => {
    const { lane, sender, store, held, route, cursor, logWriter } = setup({ concurrency: 1 });
    sender.answer = () => 'hold';
    route('a', 1);
    route('b', 2);
    await settle();
    const drained = lane.drain(Date.now() + 1_000);
    await until(() => store.loggedLabels().length === 2 && held() === 0);
    // Routed during the drain: the log writer holds it until it is written.
    route('c', 3);
    await until(() => store.loggedLabels().length === 3 && held() === 0);
    sender.finish(OK);
    await drained;
    expect(cursor()).toMatchObject({ paused_lsn: null });
    expect(sender.sentIds()).toEqual(['a-1']);
    expect(logWriter.logging).toBe(false);
    // Routed after the drain (a transaction the stream was still handing on): never acknowledged unsent.
    const late = route('d', 4);
    await logWriter.writeBuffered();
    expect(late.outstanding > 0 || store.loggedLabels().includes('d-4')).toBe(true);
    expect(sender.sentIds()).toEqual(['a-1']);
    await expect(lane.drain(Date.now())).rejects.toThrow(/drains once/);
  });

  it('a new targetUrl sets aside what was routed for the old one and never sends it there; later events go to the new one', async () => {
    const { lane, sender, store, webhook, route, rowOf } = setup({ concurrency: 1 });
    sender.answer = () => 'hold';
    route('a', 1);
    route('b', 2);
    await settle();
    lane.updateWebhook({ ...webhook, targetUrl: 'http://new.test/hook' });
    // a-1 was in flight to the old URL, for which it was routed; b-2 comes up once it ends, and is set aside.
    sender.answer = () => OK;
    sender.finish(OK);
    await until(() => rowOf('b-2')?.status === 'dead');
    expect(rowOf('b-2')!.last_error).toBe(TARGET_CHANGED_REASON);
    expect(rowOf('b-2')!.target_url).toBe('http://receiver.test/hook');
    route('c', 3);
    await pollUntil(lane, () => sender.sent.length === 2);
    await settle();
    expect(sender.sent.map((r) => [labelOf(r.body), r.url])).toEqual([
      ['a-1', 'http://receiver.test/hook'],
      ['c-3', 'http://new.test/hook'],
    ]);
    expect(store.pending()).toEqual([]);
  });
});
