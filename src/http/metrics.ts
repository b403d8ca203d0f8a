import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { FastCounter, FastHistogram } from './fastMetrics.js';
import type { AttemptOutcome } from '../deliver/httpSender.js';
import type { AutoDisableReason, DeliveryObserver, DeliveryOutcomeLabel } from '../deliver/types.js';
import type { FilterReason } from '../route/webhookOptions.js';
import type { CoalescedObserver } from '../webhooks/coalescer.js';
import type { FilteredObserver } from '../webhooks/optionRouter.js';
import type { TwentySourceObserver } from '../twenty/source.js';
import type { TwentyCatalog } from '../twenty/types.js';

/** Every metric the bridge exports, on a private registry (tests run several daemons in one process). */
export class BridgeMetrics implements DeliveryObserver, TwentySourceObserver, FilteredObserver, CoalescedObserver {
  readonly registry = new Registry();
  // Updated once or more per event: plain field additions (see fastMetrics.ts).
  readonly changesDecoded = new FastCounter('pgwb_changes_decoded_total', 'Row changes decoded from the replication stream', ['table', 'kind'], this.registry);
  readonly eventsRouted = new FastCounter(
    'pgwb_events_routed_total',
    'Events routed to at least one webhook, by object and action',
    ['object', 'action'],
    this.registry,
  );
  readonly deliveryAttempts = new FastCounter(
    'pgwb_delivery_attempts_total',
    'Delivery attempts by outcome (success, retry, dead, refused)',
    ['outcome'],
    this.registry,
  );
  readonly attemptDuration = new FastHistogram(
    'pgwb_delivery_attempt_duration_seconds',
    'Duration of one delivery attempt',
    ['outcome'],
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    this.registry,
  );
  readonly commitToDelivery = new FastHistogram(
    'pgwb_commit_to_delivery_seconds',
    'Time from the transaction commit to a successful delivery',
    [],
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200],
    this.registry,
  );
  private readonly commitToDeliverySeries = this.commitToDelivery.series();
  readonly slotLagBytes = new Gauge({ name: 'pgwb_slot_lag_bytes', help: "pg_current_wal_lsn() - the slot's confirmed_flush_lsn", registers: [this.registry] });
  readonly slotWalStatus = new Gauge({
    name: 'pgwb_slot_wal_status',
    help: 'wal_status of the slot (1 for the current value)',
    labelNames: ['status'],
    registers: [this.registry],
  });
  readonly storeBacklog = new Gauge({
    name: 'pgwb_store_backlog',
    help: 'Deliveries in the durable store by status',
    labelNames: ['status'],
    registers: [this.registry],
  });
  private readonly webhooks = new Gauge({
    name: 'pgwb_webhooks',
    help: 'Webhooks by state (active, disabled, invalid) as the streaming replica (the leader) routes them; a standby exports no series',
    labelNames: ['state'],
    registers: [this.registry],
  });
  readonly leader = new Gauge({ name: 'pgwb_leader', help: '1 when this replica streams the slot', registers: [this.registry] });
  readonly sourceTables = new Gauge({
    name: 'pgwb_source_tables',
    help: 'Twenty mode: workspace tables found in the metadata (watched), and those of them the bridge could not add to the publication or make REPLICA IDENTITY FULL (unmanaged)',
    labelNames: ['state'],
    registers: [this.registry],
  });
  readonly sourceWorkspaces = new Gauge({
    name: 'pgwb_source_workspaces',
    help: 'Twenty mode: workspaces found in the core metadata',
    registers: [this.registry],
  });
  readonly webhooksAutoDisabled = new Counter({
    name: 'pgwb_webhooks_auto_disabled_total',
    help: 'Times the bridge disabled a webhook: reason "gone" (it answered 410) or "failing" (no success for delivery.disableAfterHours)',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  readonly eventsFiltered = new Counter({
    name: 'pgwb_events_filtered_total',
    help: 'Events a webhook subscribes to that its options kept from it, by reason: on_fields (none of its fields changed), filter (false), filter_error (the filter failed on the row or does not compile), columns (every changed field was removed)',
    labelNames: ['webhook_id', 'reason'],
    registers: [this.registry],
  });
  /** Series of pgwb_events_filtered_total by webhook: removed with their webhook, so they stay bounded. */
  private readonly filteredSeries = new Map<string, Set<FilterReason>>();
  readonly coalescedEvents = new Counter({
    name: 'pgwb_events_coalesced_total',
    help: 'Events of a webhook with a coalescing window that were folded into a later event of the same record',
    labelNames: ['webhook_id'],
    registers: [this.registry],
  });
  private readonly coalescedSeries = new Set<string>();

  // The gauges below are computed at scrape time from what the daemon last read, so an age keeps
  // growing between two reads (and while reads fail) instead of freezing at its last value.
  /** Whether /readyz answers 200; set by the daemon. */
  isReady: () => boolean = () => false;
  private slotPosition: string | null = null;
  private slotAdvancedAt = Date.now();
  private oldestPendingStoredAt: number | null = null;

  readonly ready: Gauge = new Gauge({
    name: 'pgwb_ready',
    help: '1 when /readyz answers 200 (streaming the slot, or standing by), else 0',
    registers: [this.registry],
    collect: (): void => this.ready.set(this.isReady() ? 1 : 0),
  });
  readonly slotLastAdvance: Gauge = new Gauge({
    name: 'pgwb_slot_last_advance_seconds',
    help: "Seconds since this replica saw the slot's confirmed_flush_lsn move (read every 5 s; counted from the replica's start until the first move); heartbeats move a healthy slot every replication.heartbeatIntervalMs",
    registers: [this.registry],
    collect: (): void => this.slotLastAdvance.set((Date.now() - this.slotAdvancedAt) / 1_000),
  });
  readonly storeOldestPending: Gauge = new Gauge({
    name: 'pgwb_store_oldest_pending_seconds',
    help: 'Seconds since the oldest pending delivery of the durable store was stored (0 when none is pending)',
    registers: [this.registry],
    collect: (): void => this.storeOldestPending.set(this.oldestPendingStoredAt === null ? 0 : Math.max(0, Date.now() - this.oldestPendingStoredAt) / 1_000),
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    // Both series from the start: increase() over a series that first appears at 1 sees no increase.
    for (const reason of ['gone', 'failing'] satisfies AutoDisableReason[]) this.webhooksAutoDisabled.inc({ reason }, 0);
  }

  /**
   * pgwb_webhooks as the leader's pipeline last loaded the webhooks; null when this replica stops routing
   * (it lost the lead, or stops), which removes the series. A standby could read the same counts from
   * the table, but every replica would then report each disabled webhook: `sum(pgwb_webhooks{state="disabled"})`
   * over the replicas would count it once per replica, and an alert on the series would fire once per
   * replica. With only the leader reporting, sum, max and a per-series alert all see each webhook once,
   * as it is routed; while no replica leads there is no series, and the alerts on pgwb_leader say why.
   */
  webhooksRouted(counts: { active: number; disabled: number; invalid: number } | null): void {
    if (counts === null) this.webhooks.reset();
    else for (const [state, count] of Object.entries(counts)) this.webhooks.set({ state }, count);
  }

  /** The slot's confirmed_flush_lsn as just read: a new value restarts pgwb_slot_last_advance_seconds. */
  slotPositionRead(confirmedFlushLsn: string | null, now = Date.now()): void {
    if (confirmedFlushLsn !== null && confirmedFlushLsn !== this.slotPosition) {
      if (this.slotPosition !== null) this.slotAdvancedAt = now;
      this.slotPosition = confirmedFlushLsn;
    }
  }

  /** When the oldest pending delivery was stored, as just read (null: none pending). */
  oldestPendingRead(storedAt: Date | null): void {
    this.oldestPendingStoredAt = storedAt?.getTime() ?? null;
  }

  webhookAutoDisabled(_webhookId: string, reason: AutoDisableReason): void {
    this.webhooksAutoDisabled.inc({ reason });
  }

  attempt(_webhookId: string, outcome: AttemptOutcome, label: DeliveryOutcomeLabel, event: { name: string; commitTime: Date }): void {
    this.deliveryAttempts.series(label).inc();
    if (label === 'dead') return; // 'dead' follows the failed attempt already counted as 'retry'
    this.attemptDuration.series(label).observe(outcome.durationMs / 1_000);
    if (outcome.ok) this.commitToDeliverySeries.observe(Math.max(0, Date.now() - event.commitTime.getTime()) / 1_000);
  }

  eventFiltered(webhookId: string, reason: FilterReason): void {
    this.eventsFiltered.inc({ webhook_id: webhookId, reason });
    let reasons = this.filteredSeries.get(webhookId);
    if (reasons === undefined) this.filteredSeries.set(webhookId, (reasons = new Set()));
    reasons.add(reason);
  }

  eventsCoalesced(webhookId: string, count: number): void {
    this.coalescedEvents.inc({ webhook_id: webhookId }, count);
    this.coalescedSeries.add(webhookId);
  }

  /** The live webhooks after a reload: the filtered and coalesced series of the others are dropped. */
  perWebhookSeriesLive(live: ReadonlyArray<{ id: string }>): void {
    if (this.filteredSeries.size === 0 && this.coalescedSeries.size === 0) return;
    const ids = new Set(live.map((w) => w.id));
    for (const webhookId of this.coalescedSeries) {
      if (ids.has(webhookId)) continue;
      this.coalescedEvents.remove({ webhook_id: webhookId });
      this.coalescedSeries.delete(webhookId);
    }
    for (const [webhookId, reasons] of this.filteredSeries) {
      if (ids.has(webhookId)) continue;
      for (const reason of reasons) this.eventsFiltered.remove({ webhook_id: webhookId, reason });
      this.filteredSeries.delete(webhookId);
    }
  }

  changeDecoded(table: string, kind: string): void {
    this.changesDecoded.series(table, kind).inc();
  }

  eventRouted(object: string, action: string): void {
    this.eventsRouted.series(object, action).inc();
  }

  catalogLoaded(catalog: TwentyCatalog): void {
    this.sourceWorkspaces.set(catalog.workspaceCount);
    this.sourceTables.set({ state: 'watched' }, catalog.objects.length);
  }

  unmanagedTables(count: number): void {
    this.sourceTables.set({ state: 'unmanaged' }, count);
  }
}
