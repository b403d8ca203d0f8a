import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { toLoggedEvent, type LoggedEvent } from '../../src/route/loggedEvent.js';
import { appendSegment } from '../../src/store/eventLog.js';
import { LogWriter } from '../../src/store/logWriter.js';
import { LogCapture } from '../helpers/bridge.js';
import { event, FakeHold, FakeStore, SETTINGS, settle, silentLog, until } from './fakes/deliveryFakes.js';

/** Event `n` of record `r` (its transaction commits at n * 0x100), as the pipeline hands it to the writer. */
function logged(record: string, n: number, body?: string): LoggedEvent {
  const e = toLoggedEvent(event(record, n), null);
  return body === undefined ? e : { ...e, body };
}

/** A transaction still streaming (not committed yet), as append() sees it. */
function openTransaction(): FakeHold {
  const transaction = new FakeHold();
  transaction.committed = false;
  return transaction;
}

function setup(keepEverything = false, log = silentLog) {
  const store = new FakeStore();
  // Retries are withDatabaseRetry's business (tested with it); here every error is final.
  const writer = new LogWriter(store, { schema: SETTINGS.schema, keepEverything, retry: (_what, run) => run() }, log);
  let written = 0;
  writer.onWritten(() => written++);
  return { store, writer, written: () => written };
}

describe('LogWriter', () => {
  it('writes nothing while no webhook is behind and retention is off, and holds no transaction', async () => {
    const { store, writer } = setup();
    const transaction = openTransaction();
    transaction.hold(); // a delivery in memory
    writer.append(logged('a', 1), transaction, transaction);
    writer.append(logged('b', 2), transaction, transaction);
    await settle();
    expect(writer.logging).toBe(false);
    expect(store.calls).toEqual([]);
    expect(transaction.outstanding).toBe(1);
    expect(writer.lastPosition).toEqual({ lsn: 0x200n, index: 0 });
  });

  it('fellBehind() + writeBuffered() writes every buffered event not yet settled, once; settled transactions are dropped', async () => {
    const { store, writer } = setup();
    const delivered = openTransaction();
    const inMemory = openTransaction();
    const streaming = openTransaction();
    inMemory.hold();
    writer.append(logged('a', 1), delivered, delivered);
    writer.append(logged('b', 1), delivered, delivered);
    writer.append(logged('a', 2), inMemory, inMemory);
    writer.append(logged('c', 3), streaming, streaming);
    // Every webhook had the first transaction: committed and nothing holds it.
    delivered.committed = true;
    inMemory.committed = true;
    writer.fellBehind();
    expect(writer.logging).toBe(true);
    await writer.writeBuffered();
    expect(store.loggedLabels()).toEqual(['a-2', 'c-3']);
    // The writer did not hold these: the deliveries in memory still do, until they let go.
    expect(inMemory.outstanding).toBe(1);
    expect(streaming.outstanding).toBe(0);
    await writer.writeBuffered();
    expect(store.count('logAppend')).toBe(1);
  });

  it('while logging, append() holds the transaction until its segment is written; each event is written once', async () => {
    const { store, writer, written } = setup();
    writer.fellBehind();
    const transaction = openTransaction();
    writer.append(logged('a', 1), transaction, transaction);
    writer.append({ ...logged('b', 1), changeIndex: 1 }, transaction, transaction);
    expect(transaction.outstanding).toBe(1);
    expect(store.segments).toEqual([]);
    await until(() => written() === 1);
    expect(transaction.outstanding).toBe(0);
    expect(store.loggedLabels()).toEqual(['a-1', 'b-1']);
    expect(store.segments[0]).toMatchObject({ first_lsn: '0/100', first_index: 0, last_lsn: '0/100', last_index: 1, event_count: 2 });
    const next = openTransaction();
    writer.append(logged('a', 2), next, next);
    await writer.writeBuffered();
    expect(next.outstanding).toBe(0);
    expect(store.loggedLabels()).toEqual(['a-1', 'b-1', 'a-2']);
  });

  it('with retention on, every event is written though no webhook is behind', async () => {
    const { store, writer } = setup(true);
    expect(writer.logging).toBe(true);
    const transaction = openTransaction();
    writer.append(logged('a', 1), transaction, transaction);
    expect(transaction.outstanding).toBe(1);
    await writer.writeBuffered();
    expect(transaction.outstanding).toBe(0);
    expect(store.loggedLabels()).toEqual(['a-1']);
  });

  it('abandon() drops the unwritten events of a transaction the stream sends again, and releases its hold', async () => {
    const { store, writer } = setup();
    writer.fellBehind();
    const kept = openTransaction();
    const replayed = openTransaction();
    writer.append(logged('a', 1), kept, kept);
    writer.append(logged('b', 2), replayed, replayed);
    expect(replayed.outstanding).toBe(1);
    writer.abandon(replayed);
    expect(replayed.outstanding).toBe(0);
    await writer.writeBuffered();
    expect(store.loggedLabels()).toEqual(['a-1']);
    expect(kept.outstanding).toBe(0);
    // Buffered while nobody was behind: abandoned, it is not written when a webhook falls behind later.
    const quiet = setup();
    const dropped = openTransaction();
    quiet.writer.append(logged('c', 3), dropped, dropped);
    quiet.writer.abandon(dropped);
    quiet.writer.fellBehind();
    await quiet.writer.writeBuffered();
    expect(quiet.store.segments).toEqual([]);
    expect(dropped.outstanding).toBe(0);
  });

  it("abandon() while the transaction's segment is being written: the write releases its hold once when it ends, and writing goes on", async () => {
    const { store, writer, written } = setup();
    writer.fellBehind();
    const replayed = openTransaction();
    writer.append(logged('a', 1), replayed, replayed);
    // The segment is on its way to the database when the stream reconnects.
    const resume = store.pauseQueries();
    await until(() => store.count('logAppend') === 1);
    writer.abandon(replayed);
    // The events under way are no longer the writer's to drop: their write ends and releases them.
    expect(replayed.outstanding).toBe(1);
    resume();
    await until(() => written() === 1);
    await writer.writeBuffered();
    expect(replayed.outstanding).toBe(0);
    const next = openTransaction();
    writer.append(logged('b', 2), next, next);
    await writer.writeBuffered();
    expect(next.outstanding).toBe(0);
    expect(store.loggedLabels()).toEqual(['a-1', 'b-2']);
  });

  it('is full past 10 000 events or 16 MiB waiting for their write, only while logging', async () => {
    const { writer } = setup();
    const transaction = openTransaction();
    for (let n = 1; n <= 10_000; n++) writer.append({ ...logged('a', 1), changeIndex: n }, transaction, transaction);
    expect(writer.isFull).toBe(false);
    writer.fellBehind();
    expect(writer.isFull).toBe(true);
    await writer.writeBuffered();
    expect(writer.isFull).toBe(false);

    const bytes = setup();
    bytes.writer.fellBehind();
    bytes.writer.append(logged('a', 1, 'x'.repeat(8 * 1024 * 1024)), openTransaction(), {});
    expect(bytes.writer.isFull).toBe(false);
    bytes.writer.append(logged('a', 2, 'y'.repeat(8 * 1024 * 1024)), openTransaction(), {});
    expect(bytes.writer.isFull).toBe(true);
    await bytes.writer.writeBuffered();
    expect(bytes.writer.isFull).toBe(false);
  });

  it('a write refused for good keeps the holds, writes nothing after it, and writeBuffered() rejects', async () => {
    const logs = new LogCapture();
    const { store, writer } = setup(false, pino({ level: 'warn' }, logs));
    writer.fellBehind();
    store.failures.push(Object.assign(new Error('permission denied for table event_log'), { code: '42501' }));
    const refused = openTransaction();
    writer.append(logged('a', 1), refused, refused);
    await expect(writer.writeBuffered()).rejects.toThrow(/permission denied/);
    expect(refused.outstanding).toBe(1);
    const later = openTransaction();
    writer.append(logged('b', 2), later, later);
    await expect(writer.writeBuffered()).rejects.toThrow(/permission denied/);
    expect(later.outstanding).toBe(1);
    expect(store.segments).toEqual([]);
    expect(logs.lines.filter((l) => l.level === 50).map((l) => l.err.message)).toEqual(['permission denied for table event_log']);
  });

  it('lastPosition starts just before where the stream resumes, whatever the log holds past it; a replayed earlier event does not move it back', async () => {
    const { store, writer } = setup();
    await appendSegment(store, SETTINGS.schema, [logged('a', 3), logged('b', 5)]);
    writer.resumeFrom({ lsn: 0x400n, index: 0 });
    expect(writer.lastPosition).toEqual({ lsn: 0x400n, index: -1 });
    writer.append(logged('a', 5), openTransaction(), {});
    expect(writer.lastPosition).toEqual({ lsn: 0x500n, index: 0 });
    writer.append(logged('a', 4), openTransaction(), {});
    expect(writer.lastPosition).toEqual({ lsn: 0x500n, index: 0 });
  });

  it('refuses more caughtUp() than fellBehind()', () => {
    const { writer } = setup();
    writer.fellBehind();
    writer.caughtUp();
    expect(writer.logging).toBe(false);
    expect(() => writer.caughtUp()).toThrow(/more webhooks caught up than fell behind/);
  });
});
