import { setImmediate as realImmediate, setTimeout as realSleep } from 'node:timers/promises';
import pino from 'pino';
import type {
  AttemptOutcome,
  DeliveryObserver,
  DeliveryOutcomeLabel,
  HttpSender,
  LaneSettings,
  MemoryDelivery,
  TransactionHold,
} from '../../../src/deliver/types.js';
import type { Subscriber, WebhookEvent } from '../../../src/route/types.js';
import { eventIdFor } from '../../../src/route/router.js';
import type { FilterReason } from '../../../src/route/webhookOptions.js';
import type { Queryable } from '../../../src/store/types.js';
import type { LogWriter, LoggedEventHold } from '../../../src/store/logWriter.js';
import { toLoggedEvent } from '../../../src/route/loggedEvent.js';
import { parseLsn } from '../../../src/replication/lsn.js';

/**
 * Fakes for the deliver stage's unit tests: no database, no HTTP. FakeStore answers the store's
 * statements (recognised by their text) from rows held in memory, following the same rules as the
 * SQL (head of record, due, not leased, targetUrl, webhook not disabled), and records every call. It
 * also holds the event log's segments and cursors, as src/store/eventLog.ts reads and writes them.
 */

export const silentLog = pino({ level: 'silent' });

export interface FakeRow {
  id: number;
  webhook_id: string;
  event_id: string;
  event_name: string;
  record_key: string;
  commit_lsn: string;
  change_index: number;
  body: string;
  attempts: number;
  status: 'pending' | 'dead';
  run_at: Date;
  last_error: string | null;
  last_status_code: number | null;
  locked_until: Date | null;
  target_url: string | null;
  created_at: Date;
}

/** A segment of `<schema>.event_log` as appendSegment writes it. */
export interface FakeSegment {
  id: number;
  first_lsn: string;
  first_index: number;
  last_lsn: string;
  last_index: number;
  first_commit_at: Date;
  last_commit_at: Date;
  event_count: number;
  events: string;
}

/** A row of `<schema>.log_cursors`. */
export interface FakeCursor {
  lsn: string;
  change_index: number;
  paused_lsn: string | null;
}

type Statement =
  | 'insert'
  | 'claim'
  | 'setAside'
  | 'complete'
  | 'fail'
  | 'release'
  | 'hasPending'
  | 'withPending'
  | 'pendingRecords'
  | 'recordFailure'
  | 'disable'
  | 'recordSuccesses'
  | 'logAppend'
  | 'logRead'
  | 'logLast'
  | 'cursorSave'
  | 'cursorDelete'
  | 'cursorLoad';

function classifyLog(sql: string): Statement {
  const start = sql.trimStart();
  if (start.startsWith('insert into')) return 'logAppend';
  if (start.startsWith('select events from') && sql.includes('(last_lsn, last_index) >=')) return 'logRead';
  if (start.startsWith('select last_lsn::text')) return 'logLast';
  throw new Error(`FakeStore does not know this event log statement: ${sql.slice(0, 80)}`);
}

function classifyCursor(sql: string): Statement {
  const start = sql.trimStart();
  if (start.startsWith('insert into')) return 'cursorSave';
  if (start.startsWith('delete from')) return 'cursorDelete';
  if (start.startsWith('select webhook_id')) return 'cursorLoad';
  throw new Error(`FakeStore does not know this cursor statement: ${sql.slice(0, 80)}`);
}

function classify(sql: string): Statement {
  if (sql.includes('.event_log')) return classifyLog(sql);
  if (sql.includes('.log_cursors')) return classifyCursor(sql);
  if (sql.includes('webhook_state') && sql.includes('returning extract')) return 'recordFailure';
  if (sql.includes('webhook_state') && sql.includes('disabled_reason')) return 'disable';
  if (sql.includes('webhook_state') && sql.includes('last_success_at')) return 'recordSuccesses';
  if (sql.trimStart().startsWith('insert into')) return 'insert';
  if (sql.includes('with heads as')) return 'claim';
  if (sql.includes("set status = 'dead', last_error = $3")) return 'setAside';
  if (sql.trimStart().startsWith('delete from')) return 'complete';
  if (sql.includes('set attempts = $3')) return 'fail';
  if (sql.includes('set locked_by = null, locked_until = null')) return 'release';
  if (sql.includes('select exists')) return 'hasPending';
  if (sql.includes('select distinct webhook_id')) return 'withPending';
  if (sql.includes('select distinct record_key')) return 'pendingRecords';
  throw new Error(`FakeStore does not know this statement: ${sql.slice(0, 80)}`);
}

const lsnValue = parseLsn;

function comparePosition(lsnA: string, indexA: number, lsnB: string, indexB: number): number {
  const diff = lsnValue(lsnA) - lsnValue(lsnB);
  return diff !== 0n ? (diff < 0n ? -1 : 1) : indexA - indexB;
}

export class FakeStore implements Queryable {
  readonly calls: Array<{ statement: Statement; values: unknown[] }> = [];
  rows: FakeRow[] = [];
  readonly disabledWebhooks = new Set<string>();
  /** Errors thrown by the next statements, one each. */
  readonly failures: Error[] = [];
  failingSinceMs = new Map<string, number>();
  segments: FakeSegment[] = [];
  readonly cursors = new Map<string, FakeCursor>();
  private nextId = 1;
  private paused: Promise<void> | null = null;

  /** Statements issued from now on wait (recorded, not answered) until the returned function is called. */
  pauseQueries(): () => void {
    let resume!: () => void;
    this.paused = new Promise((resolve) => (resume = resolve));
    return () => {
      this.paused = null;
      resume();
    };
  }

  count(statement: Statement): number {
    return this.calls.filter((call) => call.statement === statement).length;
  }

  /** The `<record>-<n>` of every event written to the log (see labelOf), in the order written. */
  loggedLabels(): string[] {
    return this.segments.flatMap((segment) => (JSON.parse(segment.events) as unknown[][]).map((encoded) => labelOf(encoded[7] as string)));
  }

  pending(webhookId?: string): FakeRow[] {
    return this.rows.filter((row) => row.status === 'pending' && (webhookId === undefined || row.webhook_id === webhookId));
  }

  /** The `<record>-<n>` of pending rows (see labelOf), in commit order. */
  pendingLabels(webhookId?: string): string[] {
    return this.pending(webhookId)
      .sort((a, b) => comparePosition(a.commit_lsn, a.change_index, b.commit_lsn, b.change_index))
      .map((row) => labelOf(row.body));
  }

  /** A row as the store would hold it after an earlier run of the bridge. */
  seed(row: Partial<FakeRow> & Pick<FakeRow, 'webhook_id' | 'event_id' | 'record_key' | 'commit_lsn'>): void {
    this.rows.push({
      id: this.nextId++,
      event_name: 'thing.created',
      change_index: 0,
      body: JSON.stringify({ id: row.event_id }),
      attempts: 0,
      status: 'pending',
      run_at: new Date(0),
      last_error: null,
      last_status_code: null,
      locked_until: null,
      target_url: null,
      created_at: new Date(),
      ...row,
    });
  }

  async query(text: string, values: unknown[] = []): Promise<{ rows: any[]; rowCount: number | null }> {
    const statement = classify(text);
    this.calls.push({ statement, values });
    await Promise.resolve();
    if (this.paused) await this.paused;
    const failure = this.failures.shift();
    if (failure) throw failure;
    const now = Date.now();
    switch (statement) {
      case 'insert': {
        const incoming = JSON.parse(values[0] as string) as Array<Record<string, any>>;
        let inserted = 0;
        for (const r of incoming) {
          if (this.rows.some((row) => row.event_id === r.e && row.webhook_id === r.w)) continue;
          inserted++;
          this.rows.push({
            id: this.nextId++,
            webhook_id: r.w,
            event_id: r.e,
            event_name: r.n,
            record_key: r.r,
            commit_lsn: r.l,
            change_index: r.i,
            body: r.b,
            attempts: r.a,
            status: r.st,
            run_at: new Date(r.t),
            last_error: r.le,
            last_status_code: r.ls,
            locked_until: r.lu === null ? null : new Date(r.lu),
            target_url: r.u,
            created_at: new Date(now),
          });
        }
        return { rows: [], rowCount: inserted };
      }
      case 'claim': {
        const [webhookId, , limit, leaseMs, targetUrl] = values as [string, string, number, number, string];
        if (this.disabledWebhooks.has(webhookId)) return { rows: [], rowCount: 0 };
        const order = (a: FakeRow, b: FakeRow) => {
          const diff = lsnValue(a.commit_lsn) - lsnValue(b.commit_lsn);
          return diff !== 0n ? (diff < 0n ? -1 : 1) : a.change_index - b.change_index;
        };
        const pending = this.pending(webhookId).sort(order);
        const heads = pending.filter(
          (row) =>
            row.run_at.getTime() <= now &&
            (row.locked_until === null || row.locked_until.getTime() < now) &&
            (row.target_url === null || row.target_url === targetUrl) &&
            pending.find((p) => p.record_key === row.record_key) === row,
        );
        const claimed = heads.slice(0, limit);
        for (const row of claimed) row.locked_until = new Date(now + leaseMs);
        return { rows: claimed.map((row) => ({ ...row })), rowCount: claimed.length };
      }
      case 'setAside': {
        const [webhookId, targetUrl, reason] = values as [string, string, string];
        let count = 0;
        for (const row of this.pending(webhookId)) {
          if (row.target_url === null || row.target_url === targetUrl) continue;
          row.status = 'dead';
          row.last_error = reason;
          row.locked_until = null;
          count++;
        }
        return { rows: [], rowCount: count };
      }
      case 'complete': {
        const [eventIds, webhookIds] = values as [string[], string[]];
        const before = this.rows.length;
        this.rows = this.rows.filter((row) => !eventIds.some((e, i) => e === row.event_id && webhookIds[i] === row.webhook_id));
        return { rows: [], rowCount: before - this.rows.length };
      }
      case 'fail': {
        const [eventId, webhookId, attempts, runAt, error, statusCode] = values as [string, string, number, Date | null, string, number | null];
        const row = this.rows.find((r) => r.event_id === eventId && r.webhook_id === webhookId && r.status === 'pending');
        if (row)
          Object.assign(row, {
            attempts,
            status: runAt === null ? 'dead' : 'pending',
            run_at: runAt ?? row.run_at,
            last_error: error,
            last_status_code: statusCode,
            locked_until: null,
          });
        return { rows: [], rowCount: row ? 1 : 0 };
      }
      case 'release': {
        const [eventIds, webhookIds] = values as [string[], string[]];
        for (const row of this.rows) if (eventIds.some((e, i) => e === row.event_id && webhookIds[i] === row.webhook_id)) row.locked_until = null;
        return { rows: [], rowCount: eventIds.length };
      }
      case 'hasPending':
        return { rows: [{ p: this.pending(values[0] as string).length > 0 }], rowCount: 1 };
      case 'withPending':
        return { rows: [...new Set(this.pending().map((row) => row.webhook_id))].map((webhook_id) => ({ webhook_id })), rowCount: null };
      case 'recordFailure': {
        const webhookId = values[0] as string;
        if (!this.failingSinceMs.has(webhookId)) this.failingSinceMs.set(webhookId, now);
        return { rows: [{ failing_ms: now - this.failingSinceMs.get(webhookId)! }], rowCount: 1 };
      }
      case 'disable':
        this.disabledWebhooks.add(values[0] as string);
        return { rows: [], rowCount: 1 };
      case 'recordSuccesses':
        return { rows: [], rowCount: 1 };
      case 'pendingRecords': {
        const [webhookId, limit] = values as [string, number];
        const keys = [...new Set(this.pending(webhookId).map((row) => row.record_key))].slice(0, limit);
        return { rows: keys.map((record_key) => ({ record_key })), rowCount: keys.length };
      }
      case 'logAppend': {
        const [firstLsn, firstIndex, lastLsn, lastIndex, firstAt, lastAt, count, events] = values as [
          string,
          number,
          string,
          number,
          Date,
          Date,
          number,
          string,
        ];
        this.segments.push({
          id: this.nextId++,
          first_lsn: firstLsn,
          first_index: firstIndex,
          last_lsn: lastLsn,
          last_index: lastIndex,
          first_commit_at: firstAt,
          last_commit_at: lastAt,
          event_count: count,
          events,
        });
        return { rows: [], rowCount: 1 };
      }
      case 'logRead': {
        const [lsn, index, limit] = values as [string, number, number];
        const rows = this.segments
          .filter((s) => comparePosition(s.last_lsn, s.last_index, lsn, index) >= 0)
          .sort((a, b) => comparePosition(a.last_lsn, a.last_index, b.last_lsn, b.last_index))
          .slice(0, limit)
          .map((s) => ({ events: s.events }));
        return { rows, rowCount: rows.length };
      }
      case 'logLast': {
        const last = [...this.segments].sort((a, b) => comparePosition(b.last_lsn, b.last_index, a.last_lsn, a.last_index))[0];
        return last === undefined ? { rows: [], rowCount: 0 } : { rows: [{ lsn: last.last_lsn, last_index: last.last_index }], rowCount: 1 };
      }
      case 'cursorSave': {
        const [webhookId, lsn, index, paused] = values as [string, string, number, string | null];
        this.cursors.set(webhookId, { lsn, change_index: index, paused_lsn: paused });
        return { rows: [], rowCount: 1 };
      }
      case 'cursorDelete': {
        const deleted = this.cursors.delete(values[0] as string);
        return { rows: [], rowCount: deleted ? 1 : 0 };
      }
      case 'cursorLoad': {
        const rows = [...this.cursors].map(([webhook_id, c]) => ({ webhook_id, lsn: c.lsn, change_index: c.change_index, paused: c.paused_lsn }));
        return { rows, rowCount: rows.length };
      }
    }
  }
}

export interface SentRequest {
  url: string;
  body: string;
  headers: Record<string, string>;
  eventId: string;
}

export const OK: AttemptOutcome = { ok: true, statusCode: 200, durationMs: 1 };
export const REFUSED: AttemptOutcome = { ok: false, reason: 'connection_refused', message: 'ECONNREFUSED', durationMs: 1 };
export const HTTP_500: AttemptOutcome = { ok: false, reason: 'http_status', statusCode: 500, message: 'HTTP 500', durationMs: 1 };
export const GONE: AttemptOutcome = { ok: false, reason: 'gone', statusCode: 410, message: 'HTTP 410', durationMs: 1 };

/**
 * An HttpSender whose answers the test scripts: `answer` decides each request's outcome at once, or
 * 'hold' keeps it in flight until `finish()` settles it.
 */
export class FakeSender implements HttpSender {
  readonly sent: SentRequest[] = [];
  readonly held: Array<{ request: SentRequest; resolve: (outcome: AttemptOutcome) => void }> = [];
  answer: (request: SentRequest) => AttemptOutcome | 'hold' = () => OK;

  send(url: string, body: string, headers: Record<string, string>): Promise<AttemptOutcome> {
    const request = { url, body, headers, eventId: headers['webhook-id'] };
    this.sent.push(request);
    const outcome = this.answer(request);
    if (outcome !== 'hold') return Promise.resolve(outcome);
    return new Promise((resolve) => this.held.push({ request, resolve }));
  }

  /** Settles every held request (or those `which` picks) with `outcome`. */
  finish(outcome: AttemptOutcome, which: (request: SentRequest) => boolean = () => true): number {
    const chosen = this.held.filter((h) => which(h.request));
    for (const h of chosen) {
      this.held.splice(this.held.indexOf(h), 1);
      h.resolve(outcome);
    }
    return chosen.length;
  }

  /** The `<record>-<n>` of every request, in the order sent. */
  sentIds(): string[] {
    return this.sent.map((request) => labelOf(request.body));
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/**
 * A transaction's acknowledgement as the replication stage keeps it: held by deliveries in memory and
 * by the log writer, settled once committed and nothing holds it.
 */
export class FakeHold implements TransactionHold, LoggedEventHold {
  outstanding = 0;
  /** The transaction's commit was seen (the stream calls close() on its entry). */
  committed = true;
  hold(): void {
    this.outstanding++;
  }
  release(): void {
    this.outstanding--;
    if (this.outstanding < 0) throw new Error('FakeHold released more often than held');
  }
  get settled(): boolean {
    return this.committed && this.outstanding === 0;
  }
}

export class FakeObserver implements DeliveryObserver {
  readonly attempts: Array<{ webhookId: string; label: DeliveryOutcomeLabel; outcome: AttemptOutcome }> = [];
  readonly autoDisabled: string[] = [];
  readonly filtered: Array<{ webhookId: string; reason: FilterReason }> = [];
  eventFiltered(webhookId: string, reason: FilterReason): void {
    this.filtered.push({ webhookId, reason });
  }
  attempt(webhookId: string, outcome: AttemptOutcome, label: DeliveryOutcomeLabel): void {
    this.attempts.push({ webhookId, outcome, label });
  }
  webhookAutoDisabled(webhookId: string): void {
    this.autoDisabled.push(webhookId);
  }
}

export function subscriber(id = '00000000-0000-0000-0000-000000000001', targetUrl = 'http://receiver.test/hook'): Subscriber {
  return { id, targetUrl, operations: ['*.*'], secret: 'test-secret', operationSet: new Set(['*.*']), workspaceId: null };
}

/**
 * Event number `n` of `record`: commit order follows `n` (its transaction commits at n * 0x100). Its
 * id is the one the router (and the event log's reader) derives from that position; its body names it
 * `<record>-<n>` (see labelOf).
 */
export function event(record: string, n: number): WebhookEvent {
  const id = `${record}-${n}`;
  const commitLsn = BigInt(n) * 0x100n;
  return {
    id: eventIdFor({ commitLsn, indexInTransaction: 0 }),
    name: 'thing.updated',
    object: 'thing',
    action: 'updated',
    recordKey: record,
    body: JSON.stringify({ id, record, n }),
    bodyFor: null,
    payload: { fields: { id, record, n }, recordKey: 'data', rawJson: false, namesWebhook: false },
    commitLsn,
    changeIndex: 0,
    commitTime: new Date(),
  };
}

/** `<record>-<n>` of a body made by event(): what a test names a delivery by, whether sent from memory, the log or the store. */
export function labelOf(body: string): string {
  return (JSON.parse(body) as { id: string }).id;
}

export function memoryDelivery(e: WebhookEvent, hold: TransactionHold, targetUrl: string): MemoryDelivery {
  return { event: e, hold, targetUrl, enqueuedAt: Date.now(), finished: false };
}

export const SETTINGS: LaneSettings = {
  schema: 'bridge',
  webhooksTable: '"public"."webhooks"',
  workerId: 'test-worker',
  userAgent: 'pg-webhook-bridge/test',
  concurrency: 4,
  timeoutMs: 1_000,
  retryScheduleS: [5, 300],
  memoryQueueLimit: 100,
  memoryQueueBytes: 1_000_000,
  storeAfterMs: 2_000,
  disableAfterMs: 3_600_000,
};

/**
 * Lets queued promise callbacks and the store writer's one-tick batching run, without moving the fake
 * clock: real immediates, which fake timers leave alone.
 */
export async function settle(rounds = 10): Promise<void> {
  for (let i = 0; i < rounds; i++) await realImmediate();
}

/** Settles until `condition` holds; fails after `rounds` turns of the event loop. */
export async function until(condition: () => boolean, rounds = 200): Promise<void> {
  for (let i = 0; i < rounds; i++) {
    if (condition()) return;
    await realImmediate();
  }
  throw new Error(`condition not met after ${rounds} turns: ${condition.toString()}`);
}

/**
 * Waits for `condition` in real time (for code that sleeps with node:timers/promises, which fake
 * timers leave alone); fails after `timeoutMs`.
 */
export async function eventually(condition: () => boolean, timeoutMs = 1_000): Promise<void> {
  // Counted in real sleeps: fake timers freeze Date and performance.
  for (let waited = 0; !condition(); waited += 5) {
    if (waited >= timeoutMs) throw new Error(`condition not met within ${timeoutMs} ms: ${condition.toString()}`);
    await realSleep(5);
  }
}

/** Routes one event as the pipeline does: to the log writer and to `deliver`, then its transaction commits. */
export function routeAsPipeline(logWriter: LogWriter, routed: WebhookEvent, deliver: (transaction: FakeHold) => void): FakeHold {
  const transaction = new FakeHold();
  transaction.committed = false;
  logWriter.append(toLoggedEvent(routed, null), transaction, transaction);
  deliver(transaction);
  transaction.committed = true;
  return transaction;
}
