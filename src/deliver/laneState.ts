import assert from 'node:assert/strict';
import type { Subscriber } from '../route/types.js';
import type { LogWriter } from '../store/logWriter.js';

/** Where new events come from: `memory` (the fast path) or `store` (the event log, read from a cursor). */
export type LaneMode = 'memory' | 'store';
type Lifecycle = 'running' | 'draining' | 'closed';

/** What a lane's pieces read of its state; only the lane changes it, through LaneState's transitions. */
export type LaneView = Pick<LaneState, 'webhook' | 'mode' | 'sending' | 'lifecycle' | 'mayStart'>;

/**
 * The state of one webhook's lane. It changes only through the `setMode*`, `setSending*` and
 * `setLifecycle*` methods below, each of which checks where it comes from; only the Lane calls them,
 * and the other methods named here are the Lane's.
 *
 * Mode:
 * - `memory` (fast path): routed events wait in per-record FIFO queues, each holding its transaction's
 *   acknowledgement; the head of each record's queue may be in flight, up to `concurrency` at once.
 *   Nothing is written to the database.
 * - `store` (behind): the webhook reads the event log from its cursor. Routed events are not taken:
 *   the log writer holds their transactions until they are written, and the reader reads them.
 * - memory -> store: an attempt fails, the oldest delivery waited longer than `storeAfterMs`, sending
 *   stops or the targetUrl changes while memory holds work, drain() at shutdown, or `startFromLog()`
 *   (a cursor or pending deliveries at start). The log writer writes what memory still needs, the
 *   cursor is saved, and the deliveries in memory stop holding their transactions (they stay queued).
 * - store -> memory: the reader has read everything routed, nothing is queued, in flight, claimed or
 *   being written, and the store holds no pending delivery of the webhook. The cursor is deleted.
 *
 * Sending (independent of the mode):
 * - on -> off: `disable()` (webhook deleted, soft-deleted, disabled or invalid) or a 410 Gone answer:
 *   no attempt starts from that moment, memory work goes to the log, the cursor is saved as paused.
 * - off -> on: `enable()`: events committed meanwhile are skipped; reading goes on from the cursor.
 *
 * Lifecycle: running -> draining (`drain()`: memory work goes to the log, no new attempt starts) ->
 * closed (the pool is gone: late outcomes are left to the store's lease expiry and the cursor). A lane
 * dropped while behind (`dispose()`) closes at once.
 *
 * While the mode is `store` the log writer counts the webhook as behind and tells the lane of each
 * write; closing ends both.
 */
export class LaneState {
  private currentMode: LaneMode = 'memory';
  private sendingOn = true;
  private stage: Lifecycle = 'running';
  private stopListening: (() => void) | null = null;

  constructor(
    private current: Subscriber,
    private readonly logWriter: Pick<LogWriter, 'fellBehind' | 'caughtUp' | 'onWritten'>,
    /** Called on each log write while behind: the lane reads on. */
    private readonly written: () => void,
  ) {}

  /** The webhook as last loaded. */
  get webhook(): Subscriber {
    return this.current;
  }

  get mode(): LaneMode {
    return this.currentMode;
  }

  get sending(): boolean {
    return this.sendingOn;
  }

  get lifecycle(): Lifecycle {
    return this.stage;
  }

  /** Sending is on and the lane is running: attempts may start. */
  get mayStart(): boolean {
    return this.sendingOn && this.stage === 'running';
  }

  /** A reload of the webhook; any state. */
  setWebhook(next: Subscriber): void {
    this.current = next;
  }

  setModeStore(): void {
    assert.equal(this.currentMode, 'memory', 'only a lane on the fast path falls behind');
    this.currentMode = 'store';
    this.logWriter.fellBehind();
    this.stopListening = this.logWriter.onWritten(() => this.written());
  }

  /** `quiet`: nothing is queued, in flight, claimed or being written. */
  setModeMemory(quiet: boolean): void {
    assert.equal(this.currentMode, 'store', 'only a lane reading the log returns to the fast path');
    assert.ok(quiet, 'the fast path resumes only once nothing is queued, in flight, claimed or being written');
    this.currentMode = 'memory';
    this.logWriter.caughtUp();
    this.stopListening?.();
    this.stopListening = null;
  }

  /** From either side: a 410 Gone stops sending at once, and the disable that follows finds it stopped. */
  setSendingOff(): void {
    this.sendingOn = false;
  }

  setSendingOn(): void {
    assert.equal(this.sendingOn, false, 'only a lane whose sending was stopped resumes it');
    this.sendingOn = true;
  }

  setLifecycleDraining(): void {
    assert.equal(this.stage, 'running', 'a lane drains once');
    this.stage = 'draining';
  }

  setLifecycleClosed(): void {
    assert.equal(this.stage, 'draining', 'a lane closes at the end of its drain');
    this.stage = 'closed';
    if (this.currentMode === 'store') {
      this.logWriter.caughtUp();
      this.stopListening?.();
    }
  }

  /** Dropped (its webhook is no longer live): a lane behind closes and the log writer stops counting it. */
  setLifecycleDisposed(): void {
    if (this.currentMode !== 'store' || this.stage === 'closed') return;
    this.logWriter.caughtUp();
    this.stopListening?.();
    this.stopListening = null;
    this.stage = 'closed';
  }
}
