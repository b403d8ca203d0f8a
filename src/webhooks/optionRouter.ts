import type { Logger } from '../log.js';
import type { Subscriber, WebhookEvent } from '../route/types.js';
import { applyOptions, celBindings, optionsShapeEvents, type CelBindings, type FilterReason } from '../route/webhookOptions.js';

/** A failing filter is logged at most this often per webhook: it may fail on every row. */
const FILTER_ERROR_LOG_INTERVAL_MS = 60_000;

/** Where routed events go (the delivery coordinator); `hold` is passed through untouched. */
export interface EventSink<H> {
  route(event: WebhookEvent, subscribers: readonly Subscriber[], hold: H): void;
}

export interface FilteredObserver {
  eventFiltered(webhookId: string, reason: FilterReason): void;
}

/**
 * Applies per-webhook options between routing and delivery. Webhooks without options that shape
 * events get the event itself, its body serialised once and shared; each of the others gets its own
 * body, or nothing (counted, and a failing filter logged).
 */
export class OptionRouter {
  private readonly errorLoggedAt = new Map<string, number>();

  constructor(
    private readonly observer: FilteredObserver,
    private readonly log: Logger,
  ) {}

  /** Hands the event to `sink` for every webhook that gets it; returns how many do. */
  route<H>(event: WebhookEvent, subscribers: readonly Subscriber[], sink: EventSink<H>, hold: H): number {
    let shaped = 0;
    for (const subscriber of subscribers) if (optionsShapeEvents(subscriber.options)) shaped++;
    if (shaped === 0) {
      sink.route(event, subscribers, hold);
      return subscribers.length;
    }
    const shared: Subscriber[] = [];
    let bindings: CelBindings | null = null;
    const lazyBindings = (): CelBindings => (bindings ??= celBindings(event));
    let sent = 0;
    for (const subscriber of subscribers) {
      if (!optionsShapeEvents(subscriber.options)) {
        shared.push(subscriber);
        continue;
      }
      const outcome = applyOptions(event, subscriber, subscriber.options, lazyBindings);
      if ('filtered' in outcome) {
        this.observer.eventFiltered(subscriber.id, outcome.filtered);
        // A filter that does not compile was logged when it was loaded.
        if (outcome.filtered === 'filter_error' && subscriber.options.filterProblem === null)
          this.logFilterError(subscriber.id, event, outcome.problem ?? 'unknown error');
        continue;
      }
      sink.route({ ...event, body: outcome.body, bodyFor: null }, [subscriber], hold);
      sent++;
    }
    if (shared.length > 0) sink.route(event, shared, hold);
    return sent + shared.length;
  }

  private logFilterError(webhookId: string, event: WebhookEvent, problem: string): void {
    const now = Date.now();
    const last = this.errorLoggedAt.get(webhookId);
    if (last !== undefined && now - last < FILTER_ERROR_LOG_INTERVAL_MS) return;
    this.errorLoggedAt.set(webhookId, now);
    this.log.warn(
      { webhookId, eventId: event.id, event: event.name, problem },
      `webhook ${webhookId}: its filter failed on event ${event.id} (${problem}); such events are not sent (logged at most once a minute per webhook, counted in pgwb_events_filtered_total{reason="filter_error"})`,
    );
  }
}
