import type http from 'node:http';
import type pg from 'pg';
import { preflight } from './check.js';
import type { BridgeConfig } from './config.js';
import { clientConfig, createPool } from './database.js';
import { compileAddressPolicy } from './deliver/addressPolicy.js';
import { createHttpSender, type HttpSender } from './deliver/httpSender.js';
import { isRetryableDatabaseError } from './deliver/databaseRetry.js';
import { PreflightError } from './errors.js';
import { BridgeMetrics } from './http/metrics.js';
import { startHttpServer, type Readiness } from './http/server.js';
import type { Logger } from './log.js';
import { Pipeline } from './pipeline.js';
import { LeaderLock } from './replication/leaderLock.js';
import { readSlot } from './replication/slot.js';
import { purgeDeliveries, summarizeDeliveries } from './store/deliveryStore.js';

/** How often a standby tries to take the leader lock: takeover within ~this after the leader dies. */
const STANDBY_RETRY_MS = 2_000;
const DATABASE_RETRY_MAX_MS = 10_000;
/** Slot health (lag, wal_status, lost slot) and backlog gauges. */
const SLOT_CHECK_INTERVAL_MS = 60_000;
const GAUGE_INTERVAL_MS = 5_000;
/** Dead deliveries past delivery.purgeDeadAfterDays: checked when leadership starts, then hourly. */
const PURGE_INTERVAL_MS = 3_600_000;
/** Small statements: a purge never holds many row locks or writes a burst of WAL. */
const PURGE_BATCH_ROWS = 500;
const DAY_MS = 86_400_000;

export type Role = 'starting' | 'leader' | 'standby' | 'stopped';

/**
 * /readyz answers anyone who can reach http.port, so its reasons are short classes; the host, port and
 * error text of a failure go to the log only.
 */
const READINESS = {
  databaseUnreachable: 'database unreachable',
  failed: 'stopped after a fatal error (see the log)',
} as const;

/**
 * The process: health endpoints first (so /readyz can say why it is not ready), then the database
 * (retried until reachable), preflight, leader election, and the pipeline while leader. stop() is the
 * graceful shutdown: stop reading, store or finish in-flight work, acknowledge, exit.
 */
export class Daemon {
  readonly metrics = new BridgeMetrics();
  private pool: pg.Pool | null = null;
  private sender: HttpSender | null = null;
  private server: http.Server | null = null;
  private lock: LeaderLock | null = null;
  private pipeline: Pipeline | null = null;
  private nextBacklogCountAt = 0;
  /** A pipeline still stopping after leadership was lost. */
  private retiring: Promise<void> | null = null;
  private timers: NodeJS.Timeout[] = [];
  private stopping = false;
  private purging = false;
  private notReadyReason = 'starting';
  private resolveDone!: () => void;
  /** Timers of sleeps that stop() cuts short, so a signal never waits out a retry delay. */
  private readonly sleeps = new Set<() => void>();
  private readonly donePromise = new Promise<void>((resolve) => (this.resolveDone = resolve));
  role: Role = 'starting';
  fatalError: Error | null = null;

  constructor(
    private readonly config: BridgeConfig,
    private readonly log: Logger,
  ) {
    this.metrics.isReady = () => this.readiness().ready;
  }

  /** Resolves once this replica streams the slot or stands by; throws on preflight problems. */
  async start(): Promise<void> {
    const { config, log } = this;
    if (config.http.port !== 0) {
      this.server = await startHttpServer({
        port: config.http.port,
        host: config.http.host,
        metrics: this.metrics,
        readiness: () => this.readiness(),
        log: log.child({ module: 'http' }),
      });
    }
    compileAddressPolicy({ allowPrivateTargets: config.delivery.allowPrivateTargets, allowedCidrs: [...config.delivery.allowedCidrs] });
    if (config.delivery.allowPrivateTargets) {
      log.warn('delivery.allowPrivateTargets is on: webhooks may target loopback, private, link-local and cloud metadata addresses (development only)');
    }
    this.pool = createPool(config);
    await this.waitForDatabase();
    if (this.stopping) return;
    this.sender = createHttpSender({
      timeoutMs: config.delivery.timeoutMs,
      maxResponseBytes: config.delivery.maxResponseBytes,
      connectionsPerOrigin: config.delivery.concurrency,
      policy: { allowPrivateTargets: config.delivery.allowPrivateTargets, allowedCidrs: [...config.delivery.allowedCidrs] },
    });
    this.lock = new LeaderLock(clientConfig(config), config.replication.slot, log.child({ module: 'leader' }));
    this.timers.push(
      setInterval(() => void this.updateGauges(), GAUGE_INTERVAL_MS),
      setInterval(() => void this.checkSlot(), SLOT_CHECK_INTERVAL_MS),
      setInterval(() => void this.purgeDeadDeliveries(), PURGE_INTERVAL_MS),
    );
    if (!(await this.electOnce())) void this.electLoop();
  }

  /** Resolves when the daemon has stopped for good (stop() or a fatal error). */
  get done(): Promise<void> {
    return this.donePromise;
  }

  /** Preflight until the database answers; connection failures are retried, real problems thrown. */
  private async waitForDatabase(): Promise<void> {
    for (let attempt = 0; !this.stopping; attempt++) {
      try {
        const report = await preflight(this.pool!, this.config);
        for (const warning of report.warnings) this.log.warn(warning);
        if (report.problems.length > 0) throw new PreflightError(report.problems);
        return;
      } catch (error) {
        if (this.stopping) return; // stop() ended the pool under this preflight: not a failure
        if (!isRetryableDatabaseError(error)) throw error;
        const delay = Math.min(500 * 2 ** attempt, DATABASE_RETRY_MAX_MS);
        this.notReadyReason = READINESS.databaseUnreachable;
        this.log.warn({ err: error, retryInMs: delay }, 'database unreachable; retrying (check database.url / DATABASE_URL)');
        await this.sleep(delay);
      }
    }
  }

  /** One election round: leads when the lock is free, otherwise stands by. */
  private async electOnce(): Promise<boolean> {
    try {
      if (await this.lock!.tryAcquire(() => void this.onLeadershipLost())) {
        await this.lead();
        return true;
      }
      if (this.role !== 'standby') this.log.info('another replica streams the slot; standing by');
      this.role = 'standby';
    } catch (error) {
      if (this.stopping) return false;
      if (!isRetryableDatabaseError(error)) throw error;
      this.role = 'starting';
      this.notReadyReason = READINESS.databaseUnreachable;
      this.log.warn({ err: error }, 'could not reach the database for leader election; retrying');
    }
    this.metrics.leader.set(0);
    return false;
  }

  /** Standby: retries the lock every few seconds, so a dead leader is replaced within seconds. */
  private async electLoop(): Promise<void> {
    while (!this.stopping) {
      await this.sleep(STANDBY_RETRY_MS);
      if (this.stopping) return;
      try {
        if (await this.electOnce()) return;
      } catch (error) {
        this.fail(error as Error);
        return;
      }
    }
  }

  private async lead(): Promise<void> {
    if (this.stopping) return; // stop() arrived while the lock was being taken: start nothing more
    this.role = 'leader';
    this.metrics.leader.set(1);
    this.log.info({ slot: this.config.replication.slot }, 'leader: streaming the slot');
    const pipeline = new Pipeline(this.config, this.pool!, this.sender!, this.metrics, this.log);
    this.pipeline = pipeline;
    try {
      await pipeline.start();
    } catch (error) {
      if (this.stopping) return; // a stop that arrived during start: not a failure
      this.fail(error as Error);
      throw error;
    }
    void pipeline.done.then(() => {
      if (pipeline.fatalError) this.fail(pipeline.fatalError);
    });
    void this.updateGauges();
    void this.purgeDeadDeliveries();
  }

  /** The lock's session died: another replica may already lead, so stop streaming at once and re-elect. */
  private async onLeadershipLost(): Promise<void> {
    const pipeline = this.pipeline;
    this.pipeline = null;
    this.role = 'starting';
    this.notReadyReason = 'lost leadership; re-electing';
    this.metrics.leader.set(0);
    const stopped = pipeline?.stop(Date.now() + 5_000).catch((error) => this.log.warn({ err: error }, 'stopping the pipeline after losing leadership failed'));
    // stop() waits for this one too: its lanes still use the pool.
    this.retiring = stopped ?? null;
    await stopped;
    if (this.retiring === stopped) this.retiring = null;
    if (!this.stopping) void this.electLoop();
  }

  private fail(error: Error): void {
    if (this.fatalError) return;
    this.fatalError = error;
    this.log.fatal({ err: error }, 'stopping: the bridge cannot go on safely');
    void this.stop().finally(() => this.resolveDone());
  }

  /** Slot health each minute: a lost or vanished slot is loud, never silently replaced. */
  private async checkSlot(): Promise<void> {
    if (this.role !== 'leader' || !this.pool) return;
    try {
      const slot = await readSlot(this.pool, this.config.replication.slot);
      if (!slot) {
        this.log.error(
          { slot: this.config.replication.slot },
          'the replication slot disappeared while streaming: changes may be lost; see "pg-webhook-bridge check"',
        );
        return;
      }
      if (slot.walStatus === 'lost' || slot.walStatus === 'unreserved') {
        this.log.error(
          { slot: slot.slotName, walStatus: slot.walStatus },
          `replication slot wal_status=${slot.walStatus}: Postgres ${slot.walStatus === 'lost' ? 'has removed' : 'may remove'} WAL the slot needs; see "pg-webhook-bridge check"`,
        );
      }
    } catch (error) {
      this.log.warn({ err: error }, 'slot check failed');
    }
  }

  /**
   * Deletes dead deliveries that died more than delivery.purgeDeadAfterDays ago (they hold whole CRM
   * rows), in small batches; the leader alone does it. Never overlaps itself.
   */
  private async purgeDeadDeliveries(): Promise<void> {
    const days = this.config.delivery.purgeDeadAfterDays;
    if (days === 0 || this.role !== 'leader' || !this.pool || this.purging) return;
    this.purging = true;
    const diedBefore = new Date(Date.now() - days * DAY_MS);
    let deleted = 0;
    try {
      while (!this.stopping && this.role === 'leader') {
        const batch = await purgeDeliveries(this.pool, this.config.schema, { status: 'dead', updatedBefore: diedBefore }, PURGE_BATCH_ROWS);
        deleted += batch;
        if (batch < PURGE_BATCH_ROWS) break;
      }
    } catch (error) {
      if (!this.stopping) this.log.warn({ err: error, deleted }, 'purging dead deliveries failed; the next hourly run retries');
    } finally {
      this.purging = false;
    }
    if (deleted > 0) this.log.info({ deleted, purgeDeadAfterDays: days }, `deleted ${deleted} dead deliveries older than ${days} days`);
  }

  private async updateGauges(): Promise<void> {
    if (!this.pool || this.stopping) return;
    try {
      const slot = await readSlot(this.pool, this.config.replication.slot);
      if (slot?.lagBytes != null) this.metrics.slotLagBytes.set(Number(slot.lagBytes));
      this.metrics.slotPositionRead(slot?.confirmedFlushLsn ?? null);
      this.metrics.slotWalStatus.reset();
      if (slot?.walStatus) this.metrics.slotWalStatus.set({ status: slot.walStatus }, 1);
      // A count over a large store takes a while (about 0.5 s at a million rows): spaced out so that it
      // costs Postgres at most ~2% of a core, never overlapping itself.
      if (Date.now() < this.nextBacklogCountAt) return;
      this.nextBacklogCountAt = Infinity;
      const started = Date.now();
      try {
        const { counts, oldestPendingStoredAt } = await summarizeDeliveries(this.pool, this.config.schema);
        for (const [status, count] of Object.entries(counts)) this.metrics.storeBacklog.set({ status }, count);
        this.metrics.oldestPendingRead(oldestPendingStoredAt);
      } finally {
        this.nextBacklogCountAt = Date.now() + Math.max(GAUGE_INTERVAL_MS, (Date.now() - started) * 50);
      }
    } catch {
      // Gauges are best effort; readiness reports connectivity.
    }
  }

  readiness(): Readiness {
    if (this.fatalError) return { ready: false, reason: READINESS.failed };
    if (this.stopping) return { ready: false, reason: 'shutting down' };
    if (this.role === 'standby') return { ready: true, reason: 'standing by: another replica streams the slot', role: 'standby' };
    if (this.role === 'leader' && this.pipeline) {
      const state = this.pipeline.streamState;
      if (state === 'streaming') return { ready: true, reason: 'streaming', role: 'leader' };
      return { ready: false, reason: `replication ${state}`, role: 'leader' };
    }
    return { ready: false, reason: this.notReadyReason };
  }

  laneStates() {
    return this.pipeline?.laneStates() ?? [];
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.sleeps.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.sleeps.add(wake);
    });
  }

  async stop(graceMs = 8_000): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    for (const wake of [...this.sleeps]) wake();
    const deadline = Date.now() + graceMs;
    for (const timer of this.timers) clearInterval(timer);
    await Promise.all([this.pipeline?.stop(deadline), this.retiring]);
    this.role = 'stopped';
    await this.lock?.release();
    // Attempts still in flight were stored under a lease by the drain: cut them at the deadline.
    await this.sender?.close(deadline);
    await this.pool?.end().catch(() => undefined);
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    this.server?.closeAllConnections?.();
    this.resolveDone();
  }
}
