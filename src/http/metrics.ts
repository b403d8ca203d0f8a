import { Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { FastCounter, FastHistogram } from './fastMetrics.js';
import type { AttemptOutcome } from '../deliver/httpSender.js';
import type { DeliveryObserver, DeliveryOutcomeLabel } from '../deliver/types.js';
import type { TwentySourceObserver } from '../twenty/source.js';
import type { TwentyCatalog } from '../twenty/types.js';

/** Every metric the bridge exports, on a private registry (tests run several daemons in one process). */
export class BridgeMetrics implements DeliveryObserver, TwentySourceObserver {
  readonly registry = new Registry();
  // Updated once or more per event: plain field additions (see fastMetrics.ts).
  readonly changesDecoded = new FastCounter('pgwb_changes_decoded_total', 'Row changes decoded from the replication stream', ['table', 'kind'], this.registry);
  readonly eventsRouted = new FastCounter('pgwb_events_routed_total', 'Events routed to at least one webhook, by object and action', ['object', 'action'], this.registry);
  readonly deliveryAttempts = new FastCounter('pgwb_delivery_attempts_total', 'Delivery attempts by outcome (success, retry, dead, refused)', ['outcome'], this.registry);
  readonly attemptDuration = new FastHistogram('pgwb_delivery_attempt_duration_seconds', 'Duration of one delivery attempt', ['outcome'], [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], this.registry);
  readonly commitToDelivery = new FastHistogram(
    'pgwb_commit_to_delivery_seconds',
    'Time from the transaction commit to a successful delivery',
    [],
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200],
    this.registry,
  );
  private readonly commitToDeliverySeries = this.commitToDelivery.series();
  readonly slotLagBytes = new Gauge({ name: 'pgwb_slot_lag_bytes', help: "pg_current_wal_lsn() - the slot's confirmed_flush_lsn", registers: [this.registry] });
  readonly slotWalStatus = new Gauge({ name: 'pgwb_slot_wal_status', help: 'wal_status of the slot (1 for the current value)', labelNames: ['status'], registers: [this.registry] });
  readonly storeBacklog = new Gauge({ name: 'pgwb_store_backlog', help: 'Deliveries in the durable store by status', labelNames: ['status'], registers: [this.registry] });
  readonly webhooks = new Gauge({ name: 'pgwb_webhooks', help: 'Webhooks by state (active, disabled, invalid)', labelNames: ['state'], registers: [this.registry] });
  readonly leader = new Gauge({ name: 'pgwb_leader', help: '1 when this replica streams the slot', registers: [this.registry] });
  readonly sourceTables = new Gauge({
    name: 'pgwb_source_tables',
    help: 'Twenty mode: workspace tables found in the metadata (watched), and those of them the bridge could not add to the publication or make REPLICA IDENTITY FULL (unmanaged)',
    labelNames: ['state'],
    registers: [this.registry],
  });
  readonly sourceWorkspaces = new Gauge({ name: 'pgwb_source_workspaces', help: 'Twenty mode: workspaces found in the core metadata', registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }

  attempt(_webhookId: string, outcome: AttemptOutcome, label: DeliveryOutcomeLabel, event: { name: string; commitTime: Date }): void {
    this.deliveryAttempts.series(label).inc();
    if (label === 'dead') return; // 'dead' follows the failed attempt already counted as 'retry'
    this.attemptDuration.series(label).observe(outcome.durationMs / 1_000);
    if (outcome.ok) this.commitToDeliverySeries.observe(Math.max(0, Date.now() - event.commitTime.getTime()) / 1_000);
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
