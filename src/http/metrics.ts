import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { AttemptOutcome } from '../deliver/httpSender.js';
import type { DeliveryObserver, DeliveryOutcomeLabel } from '../deliver/types.js';

/** Every metric the bridge exports, on a private registry (tests run several daemons in one process). */
export class BridgeMetrics implements DeliveryObserver {
  readonly registry = new Registry();
  readonly changesDecoded = new Counter({ name: 'pgwb_changes_decoded_total', help: 'Row changes decoded from the replication stream', labelNames: ['table', 'kind'], registers: [this.registry] });
  readonly eventsRouted = new Counter({ name: 'pgwb_events_routed_total', help: 'Events routed to at least one webhook, by object and action', labelNames: ['object', 'action'], registers: [this.registry] });
  readonly deliveryAttempts = new Counter({ name: 'pgwb_delivery_attempts_total', help: 'Delivery attempts by outcome (success, retry, dead, refused)', labelNames: ['outcome'], registers: [this.registry] });
  readonly attemptDuration = new Histogram({
    name: 'pgwb_delivery_attempt_duration_seconds',
    help: 'Duration of one delivery attempt',
    labelNames: ['outcome'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly commitToDelivery = new Histogram({
    name: 'pgwb_commit_to_delivery_seconds',
    help: 'Time from the transaction commit to a successful delivery',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200],
    registers: [this.registry],
  });
  readonly slotLagBytes = new Gauge({ name: 'pgwb_slot_lag_bytes', help: "pg_current_wal_lsn() - the slot's confirmed_flush_lsn", registers: [this.registry] });
  readonly slotWalStatus = new Gauge({ name: 'pgwb_slot_wal_status', help: 'wal_status of the slot (1 for the current value)', labelNames: ['status'], registers: [this.registry] });
  readonly storeBacklog = new Gauge({ name: 'pgwb_store_backlog', help: 'Deliveries in the durable store by status', labelNames: ['status'], registers: [this.registry] });
  readonly webhooks = new Gauge({ name: 'pgwb_webhooks', help: 'Webhooks by state (active, disabled, invalid)', labelNames: ['state'], registers: [this.registry] });
  readonly leader = new Gauge({ name: 'pgwb_leader', help: '1 when this replica streams the slot', registers: [this.registry] });

  // Labelled children looked up once: prom-client hashes the label object on every inc() otherwise,
  // and these run once or twice per event.
  private readonly attemptsBy = new Map<string, Counter.Internal>();
  private readonly durationBy = new Map<string, Histogram.Internal<string>>();
  private readonly decodedBy = new Map<string, Counter.Internal>();
  private readonly routedBy = new Map<string, Counter.Internal>();

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }

  attempt(_webhookId: string, outcome: AttemptOutcome, label: DeliveryOutcomeLabel, event: { name: string; commitTime: Date }): void {
    child(this.attemptsBy, label, () => this.deliveryAttempts.labels(label)).inc();
    if (label === 'dead') return; // 'dead' follows the failed attempt already counted as 'retry'
    child(this.durationBy, label, () => this.attemptDuration.labels(label)).observe(outcome.durationMs / 1_000);
    if (outcome.ok) this.commitToDelivery.observe(Math.max(0, Date.now() - event.commitTime.getTime()) / 1_000);
  }

  changeDecoded(table: string, kind: string): void {
    child(this.decodedBy, `${table}\u0000${kind}`, () => this.changesDecoded.labels(table, kind)).inc();
  }

  eventRouted(object: string, action: string): void {
    child(this.routedBy, `${object}\u0000${action}`, () => this.eventsRouted.labels(object, action)).inc();
  }
}

function child<T>(cache: Map<string, T>, key: string, make: () => T): T {
  let found = cache.get(key);
  if (found === undefined) {
    found = make();
    cache.set(key, found);
  }
  return found;
}
