import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { BridgeConfig } from './config.js';
import { webhooksRelation, webhooksTable } from './config.js';
import { clientConfig, waitForVisibleTransaction } from './database.js';
import { settleBy } from './deadline.js';
import { Decoder, type DecoderCatalog } from './decode/decoder.js';
import { primaryKeyColumns } from './decode/primaryKey.js';
import { emitHeartbeat } from './replication/heartbeat.js';
import { parsePgoutputMessage } from './decode/pgoutput.js';
import { TypeCatalog } from './decode/typeCatalog.js';
import type { PgoutputMessage, RowChange } from './decode/types.js';
import type { Lsn } from './replication/lsn.js';
import { DeliveryCoordinator } from './deliver/coordinator.js';
import type { HttpSender } from './deliver/httpSender.js';
import type { BridgeMetrics } from './http/metrics.js';
import type { Logger } from './log.js';
import { AckTracker, EventHold, type TransactionEntry } from './replication/ackTracker.js';
import { ConfirmedPositionRecord } from './replication/confirmedRecord.js';
import { parseLsn } from './replication/lsn.js';
import { ensureSlot } from './replication/slot.js';
import { ReplicationStream } from './replication/stream.js';
import type { StreamState } from './replication/types.js';
import { compileObjectMapping } from './route/objectMapping.js';
import { buildEvent, type EventOptions } from './route/router.js';
import { buildTwentyEvent, type TwentyEventOptions } from './route/twentyEvent.js';
import type { Subscriber, WebhookEvent } from './route/types.js';
import { TwentySource } from './twenty/source.js';
import { VERSION } from './version.js';
import { Coalescer } from './webhooks/coalescer.js';
import { OptionRouter } from './webhooks/optionRouter.js';
import { WebhookRegistry } from './webhooks/registry.js';
import { webhookOptionsVersion } from './store/webhookState.js';
import { LogWriter } from './store/logWriter.js';
import { loadCursors, purgeSegments } from './store/eventLog.js';
import { toLoggedEvent } from './route/loggedEvent.js';
import { withDatabaseRetry } from './deliver/databaseRetry.js';

const REGISTRY_REFRESH_MS = 2_000;
/**
 * `webhooks set` writes the bridge's own table, which the stream does not carry: polled this often
 * (one aggregate over a table of one row per webhook), so a change applies within 2 s with room to spare.
 */
const OPTIONS_POLL_MS = 500;
/** How often held bursts are checked for having waited their window: the error on a window's end. */
const COALESCE_TICK_MS = 100;
/** How often the event log's segments that nobody needs are deleted. */
const LOG_PURGE_INTERVAL_MS = 60_000;
/** A segment is kept at least this long after it was written: a webhook falling behind saves its cursor first. */
const LOG_PURGE_GRACE_MS = 60_000;
const LOG_PURGE_BATCH = 500;
/** A log write waits this long for more events: segments of hundreds of events, not a few. */
const LOG_SEGMENT_FILL_MS = 20;

/**
 * What the leader runs: replication -> decode -> route -> deliver (-> store), with the position coming
 * back as the safe LSN the stream acknowledges. One instance per leadership term.
 */
export class Pipeline {
  private coordinator!: DeliveryCoordinator;
  private logWriter!: LogWriter;
  /** Webhooks with a coalescing window: their bursts of updates, held before options and delivery. */
  private coalescer: Coalescer<EventHold> | null = null;
  private registry!: WebhookRegistry;
  private stream!: ReplicationStream<PgoutputMessage>;
  private positionRecord!: ConfirmedPositionRecord;
  private decoder!: Decoder;
  private readonly ack = new AckTracker();
  private timers: NodeJS.Timeout[] = [];
  private streamDone: Promise<void> | null = null;
  private starting: Promise<void> | null = null;
  private stopping = false;
  /** Ends start()'s wait: the stream is streaming, failed or stopped, or a stop() came. */
  private resolveStarted: (() => void) | null = null;
  private transaction: { entry: TransactionEntry; xid: number; webhooksChanged: boolean } | null = null;
  /** Transactions at or below this commit LSN were fully routed already (a reconnect replays them). */
  private lastRoutedCommitLsn: Lsn = 0n;
  private skipping = false;
  private readonly eventOptions: EventOptions;
  private readonly twentyEventOptions: TwentyEventOptions;
  /** Twenty mode: the workspaces, objects and fields to stream, followed while running. */
  private twenty: TwentySource | null = null;
  private readonly optionRouter: OptionRouter;
  /** What webhookOptionsVersion last said; a new value reloads the registry. */
  private optionsVersion: string | null = null;
  private readonly webhooksRelation: { schema: string; table: string };
  readonly workerId = `${process.pid}-${randomUUID().slice(0, 8)}`;
  fatalError: Error | null = null;

  constructor(
    private readonly config: BridgeConfig,
    private readonly pool: pg.Pool,
    private readonly sender: HttpSender,
    private readonly metrics: BridgeMetrics,
    private readonly log: Logger,
  ) {
    this.eventOptions = {
      resolveObject: compileObjectMapping(config.source.tables),
      softDeleteColumn: config.source.softDeleteColumn,
      camelCase: config.payload.camelCase,
      maxPayloadBytes: config.delivery.maxPayloadBytes,
    };
    this.twentyEventOptions = { format: config.payload.format === 'event' ? 'event' : 'twenty', maxPayloadBytes: config.delivery.maxPayloadBytes };
    this.webhooksRelation = webhooksRelation(config);
    this.optionRouter = new OptionRouter(metrics, log.child({ module: 'webhooks' }));
  }

  get streamState(): StreamState {
    return this.stream?.state ?? 'connecting';
  }

  /** Resolves once the stream is streaming (or failed); `done` resolves when it ends. */
  start(): Promise<void> {
    this.starting ??= this.startSteps();
    return this.starting;
  }

  /** Each step after an await first checks for a stop() that arrived meanwhile: nothing more is started. */
  private async startSteps(): Promise<void> {
    const { config, log, pool } = this;
    const slot = await ensureSlot(pool, config.replication.slot, config.schema);
    if (this.stopping) return;
    if (config.source.mode === 'twenty') {
      const twenty = new TwentySource(pool, config.replication.publication, this.metrics, log.child({ module: 'twenty' }));
      // Before the stream starts: every change must find its object.
      await twenty.refresh();
      this.twenty = twenty;
      if (this.stopping) return;
    }
    this.positionRecord = new ConfirmedPositionRecord(
      pool,
      config.schema,
      config.replication.slot,
      parseLsn(slot.recordedConfirmedLsn),
      log.child({ module: 'replication' }),
    );
    this.registry = new WebhookRegistry(pool, config.schema, webhooksTable(config), log.child({ module: 'webhooks' }));
    this.optionsVersion = await webhookOptionsVersion(pool, config.schema);
    await this.registry.reload();
    if (this.stopping) return;
    const logLog = log.child({ module: 'log' });
    this.logWriter = new LogWriter(
      pool,
      {
        schema: config.schema,
        keepEverything: config.delivery.retentionHours > 0,
        segmentFillMs: LOG_SEGMENT_FILL_MS,
        retry: (what, run) => withDatabaseRetry(logLog, what, run, () => this.onServerShuttingDown()),
      },
      logLog,
    );
    this.coordinator = new DeliveryCoordinator(
      pool,
      this.sender,
      this.logWriter,
      {
        schema: config.schema,
        webhooksTable: webhooksTable(config),
        workerId: this.workerId,
        userAgent: `pg-webhook-bridge/${VERSION}`,
        concurrency: config.delivery.concurrency,
        timeoutMs: config.delivery.timeoutMs,
        retryScheduleS: config.delivery.retrySchedule,
        memoryQueueLimit: config.delivery.memoryQueueLimit,
        memoryQueueBytes: config.delivery.memoryQueueBytes,
        storeAfterMs: config.delivery.storeAfterMs,
        disableAfterMs: config.delivery.disableAfterHours * 3_600_000,
        storePollMs: config.delivery.storePollMs,
        onServerShuttingDown: () => this.onServerShuttingDown(),
      },
      this.metrics,
      log.child({ module: 'deliver' }),
      (id, recorded) => this.registry.markDisabled(id, recorded),
      (id) => this.coalescer?.sendAllOf(id),
    );
    const coordinator = this.coordinator;
    this.coalescer = new Coalescer<EventHold>((event, subscribers, hold) => this.optionRouter.route(event, subscribers, coordinator, hold), this.metrics);
    // The stream resumes from the slot's confirmed position: events after it come again.
    const resumeFrom = { lsn: parseLsn(slot.confirmedFlushLsn ?? slot.restartLsn ?? '0/0'), index: 0 };
    this.logWriter.resumeFrom(resumeFrom);
    await this.coordinator.start(resumeFrom);
    if (this.stopping) return; // stop() drains the coordinator (and clears its timers) once this returns
    this.coordinator.updateSubscribers(this.registry.active);
    const types = new TypeCatalog((sql, params) => pool.query(sql, params));
    const catalog: DecoderCatalog = {
      ensureTypes: (oids) => types.ensure(oids),
      lookupType: types.lookup,
      primaryKey: (relationId) => primaryKeyColumns(pool, relationId),
    };
    const webhooks = this.webhooksRelation;
    this.decoder = new Decoder(catalog, log.child({ module: 'decode' }), (schema, table) => schema === webhooks.schema && table === webhooks.table);
    this.stream = new ReplicationStream({
      clientConfig: clientConfig(config),
      slot: config.replication.slot,
      publication: config.replication.publication,
      // A row whose text is past the payload limit goes out truncated anyway: its values are not read.
      // Values larger than a payload may be are read as their size only: no string is built from them.
      parse: (frame) => parsePgoutputMessage(frame, { maxValueBytes: config.delivery.maxPayloadBytes }),
      ackIntervalMs: config.replication.ackIntervalMs,
      log: log.child({ module: 'replication' }),
      safeLsn: this.ack,
      confirmable: (wanted) => this.positionRecord.cap(wanted),
      onMessage: (message, lsn) => this.onMessage(message, lsn),
      onReconnect: () => this.onReconnect(),
      onStateChange: (state) => {
        if (state === 'streaming' || state === 'failed' || state === 'stopped') this.resolveStarted?.();
      },
    });
    this.positionRecord.onRecorded = () => this.stream.sendStatus(false);
    const started = new Promise<void>((resolve) => (this.resolveStarted = resolve));
    this.streamDone = this.stream.run().catch((error) => {
      this.fatalError = error as Error;
      log.fatal({ err: error }, 'replication stopped on a fatal error');
    });
    this.timers.push(
      setInterval(() => void this.emitHeartbeat(), config.replication.heartbeatIntervalMs),
      setInterval(() => void this.refreshRegistry(), REGISTRY_REFRESH_MS),
      setInterval(() => void this.pollOptions(), OPTIONS_POLL_MS),
      setInterval(() => this.coalescer?.sendDue(), COALESCE_TICK_MS),
      setInterval(() => void this.purgeLog(), LOG_PURGE_INTERVAL_MS),
    );
    if (this.twenty) this.timers.push(setInterval(() => void this.refreshTwenty(), config.source.discoveryIntervalMs));
    await started;
  }

  /** Resolves when the stream ends (stop() or a fatal error). */
  get done(): Promise<void> {
    return this.streamDone ?? Promise.resolve();
  }

  private async onMessage(message: PgoutputMessage, lsn: string): Promise<void> {
    if (this.stopping) return; // not routed, so not acknowledged: the next start replays it
    const item = await this.decoder.decode(message, lsn);
    if (item === null) return;
    switch (item.type) {
      case 'begin':
        this.skipping = item.commitLsn <= this.lastRoutedCommitLsn;
        if (!this.skipping) this.transaction = { entry: this.ack.begin(item.commitLsn), xid: item.xid, webhooksChanged: false };
        return;
      case 'change': {
        if (this.skipping || !this.transaction) return;
        const { change } = item;
        // The bare table name: a schema label would make one series per Twenty workspace.
        this.metrics.changeDecoded(this.tableLabel(change), change.kind);
        if (change.schema === this.webhooksRelation.schema && change.table === this.webhooksRelation.table) {
          this.transaction.webhooksChanged = true;
          return;
        }
        const routed = this.routeChange(change);
        if (routed === null) return;
        const { entry } = this.transaction;
        const hold = new EventHold(entry);
        const taken = routed.subscribers.length === 0 ? 0 : this.coalescer!.route(routed.event, routed.subscribers, hold);
        // In the same tick as routing: a webhook that is behind took nothing and reads it from the log.
        if (routed.subscribers.length > 0 || this.config.delivery.retentionHours > 0) {
          this.logWriter.append(toLoggedEvent(routed.event, routed.workspaceId), hold, entry);
        }
        if (taken === 0) {
          const full = this.logWriter.isFull ? this.coordinator.waitForCapacity() : null;
          if (full) await full;
          return;
        }
        this.metrics.eventRouted(routed.objectLabel, routed.event.action);
        const full = this.coordinator.waitForCapacity();
        if (full) await full;
        return;
      }
      case 'commit': {
        if (this.skipping || !this.transaction) {
          this.skipping = false;
          return;
        }
        const { entry, xid, webhooksChanged } = this.transaction;
        this.transaction = null;
        this.lastRoutedCommitLsn = item.commitLsn;
        entry.close(item.endLsn);
        // Webhook changes apply to transactions committed after them, so reload before the next one,
        // once the change can be read.
        if (webhooksChanged && (await this.waitUntilVisible(xid))) await this.refreshRegistry();
        return;
      }
      case 'heartbeat':
        if (!this.transaction) this.ack.heartbeat(item.lsn);
        return;
    }
  }

  /**
   * The event of a change and the webhooks it goes to (maybe none), or null when it makes no event. In
   * Twenty mode a change belongs to the workspace whose schema holds its table, and only that
   * workspace's webhooks can receive it.
   */
  private routeChange(change: RowChange): { event: WebhookEvent; subscribers: Subscriber[]; objectLabel: string; workspaceId: string | null } | null {
    if (this.twenty) {
      const object = this.twenty.catalog.objectFor(change.schema, change.table);
      if (object === undefined) return null;
      const event = buildTwentyEvent(change, object, this.twentyEventOptions);
      if (event === null) return null;
      const subscribers = this.registry.index.forEvent(event.object, event.action, object.workspaceId);
      // Custom objects are named by each workspace: one label for all keeps the series bounded.
      return { event, subscribers, objectLabel: object.isCustom ? 'custom' : object.nameSingular, workspaceId: object.workspaceId };
    }
    const event = buildEvent(change, this.eventOptions);
    if (event === null) return null;
    return { event, subscribers: this.registry.index.forEvent(event.object, event.action), objectLabel: event.object, workspaceId: null };
  }

  /**
   * The `table` label of decoded changes: the bare table name, and in Twenty mode "custom" for every
   * custom object's table, whose names each workspace chooses (series must not grow with tenants).
   */
  private tableLabel(change: RowChange): string {
    if (this.twenty && change.table.startsWith('_') && this.twenty.catalog.objectFor(change.schema, change.table)?.isCustom) return 'custom';
    return change.table;
  }

  private async refreshTwenty(): Promise<void> {
    try {
      await this.twenty?.refresh();
    } catch (error) {
      this.log.warn({ err: error }, "could not read Twenty's metadata; keeping the previous catalog");
    }
  }

  /** A new connection replays from the slot position: a half-received transaction starts over. */
  private onReconnect(): void {
    if (this.transaction) {
      this.logWriter.abandon(this.transaction.entry);
      this.ack.abandon(this.transaction.entry);
    }
    this.transaction = null;
    this.skipping = false;
    this.decoder.reset();
  }

  /** Waits until a streamed webhooks change is visible (see waitForVisibleTransaction); false when a stop interrupted it. */
  private waitUntilVisible(xid: number): Promise<boolean> {
    return waitForVisibleTransaction(this.pool, xid, () => this.stopping, this.log);
  }

  private async pollOptions(): Promise<void> {
    try {
      const version = await webhookOptionsVersion(this.pool, this.config.schema);
      if (version === this.optionsVersion) return;
      this.optionsVersion = version;
      await this.refreshRegistry();
    } catch (error) {
      this.log.warn({ err: error }, 'could not check webhook options for changes');
    }
  }

  private async refreshRegistry(): Promise<void> {
    try {
      // Read before the webhooks: a webhook added with a start in the past (`webhooks add --from`) is
      // committed with its cursor, so a cursor seen here has its webhook in the list read next.
      const cursors = await loadCursors(this.pool, this.config.schema);
      await this.registry.reload();
      // Bursts held for a webhook that is gone or stopped coalescing go out while its lane still takes them.
      this.coalescer?.updateSubscribers(this.registry.active);
      this.coordinator.updateSubscribers(this.registry.active, cursors);
      this.metrics.perWebhookSeriesLive(this.registry.active);
      // A reload that ends after stop() began must not bring back the series stop() removed.
      if (!this.stopping) {
        this.metrics.webhooksRouted({ active: this.registry.active.length, disabled: this.registry.disabled.size, invalid: this.registry.invalid.length });
      }
    } catch (error) {
      this.log.warn({ err: error }, 'could not reload webhooks; keeping the previous list');
    }
  }

  /**
   * Deletes segments of the event log that no active cursor needs, once their last event is older
   * than delivery.retentionHours.
   */
  private async purgeLog(): Promise<void> {
    try {
      const before = new Date(Date.now() - this.config.delivery.retentionHours * 3_600_000);
      let deleted = 0;
      for (let batch = LOG_PURGE_BATCH; batch === LOG_PURGE_BATCH && !this.stopping; deleted += batch) {
        batch = await purgeSegments(this.pool, this.config.schema, before, LOG_PURGE_GRACE_MS, LOG_PURGE_BATCH);
      }
      if (deleted > 0) this.log.debug({ deleted }, 'event log segments deleted');
    } catch (error) {
      this.log.warn({ err: error }, 'could not delete old event log segments');
    }
  }

  /** Writes a heartbeat into WAL so the slot position advances while watched tables are idle. */
  private async emitHeartbeat(): Promise<void> {
    try {
      await emitHeartbeat(this.pool);
    } catch (error) {
      this.log.warn({ err: error }, 'could not write a heartbeat');
    }
  }

  laneStates() {
    return this.coordinator?.laneStates() ?? [];
  }

  /**
   * Stop taking changes, store what is in memory, finish in-flight attempts until the deadline,
   * acknowledge what is now safe, close the stream.
   */
  async stop(deadline: number): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.stream?.stopAccepting();
    this.metrics.webhooksRouted(null);
    this.resolveStarted?.();
    // A stop during start() (a SIGTERM right after launch) waits until start has bailed out: start uses
    // the pool, which the daemon ends once this returns.
    // (start creates no stream once it has seen `stopping`, so the call above covered any stream.)
    await this.starting?.catch(() => undefined);
    for (const timer of this.timers) clearInterval(timer);
    // Held bursts go to their lanes, which deliver or store them in the drain.
    this.coalescer?.sendEverything();
    if (this.coordinator) await this.coordinator.drain(deadline);
    // What is buffered for the log is written, so the last confirmation can pass it.
    if (this.logWriter)
      await settleBy(
        this.logWriter.writeBuffered().catch(() => undefined),
        deadline,
      );
    if (this.stream) {
      // The last confirmation must not wait for a record write that would come after the stream closed.
      await settleBy(this.positionRecord.recordNow(this.stream.wantedLsn()), deadline);
      this.stream.sendStatus(true);
      await this.stream.stop();
      await this.streamDone;
    }
  }

  /**
   * A store write found Postgres shutting down: drop the stream so the shutdown can finish (it reconnects
   * and replays). Also during stop(): a drain whose writes the stopping server refuses must let go too.
   */
  private onServerShuttingDown(): void {
    if (!this.stream) return;
    this.log.warn('Postgres is shutting down: dropping the replication stream so the shutdown can finish; it reconnects and replays');
    this.stream.reconnect();
  }
}
