import { absorb, canAbsorb } from '../route/coalesce.js';
import type { Subscriber, WebhookEvent } from '../route/types.js';

/** A burst is sent at the latest this many windows after its first event, however busy the record. */
export const MAX_WINDOWS_PER_BURST = 10;
/** Records one webhook may hold at once; past it the oldest burst goes out early, so memory stays bounded. */
export const MAX_HELD_RECORDS_PER_WEBHOOK = 10_000;

/** A transaction's acknowledgement, held while one of its events waits here (see AckTracker). */
export interface CoalescingHold {
  hold(): void;
  release(): void;
}

/** Where events go once they are no longer held: per-webhook options, then delivery. Returns how many webhooks get it. */
export type EventForwarder<H> = (event: WebhookEvent, subscribers: readonly Subscriber[], hold: H) => number;

export interface CoalescedObserver {
  /** `count` events of a webhook were folded into a later one. */
  eventsCoalesced(webhookId: string, count: number): void;
}

interface Burst<H> {
  /** The events so far, folded into one. */
  event: WebhookEvent;
  /** One per folded event: its transaction stays unacknowledged until the burst is handed on. */
  holds: H[];
  firstAt: number;
  dueAt: number;
}

function windowMs(subscriber: Subscriber): number {
  return (subscriber.options?.coalesceSeconds ?? 0) * 1_000;
}

/**
 * Holds the `created` and `updated` events of each record, per webhook with a coalescing window S,
 * until S passes with no newer one (at most MAX_WINDOWS_PER_BURST x S after the first), then hands on
 * one event for the burst (see absorb). Any other event of a record sends what is held for it first,
 * then itself, so each record's events keep their order.
 *
 * Held events are not written anywhere: their transactions stay unacknowledged, so after a crash the
 * slot replays them and the burst forms again (with the same last event id). The cost is that the
 * slot's confirmed position waits for the oldest held burst, at most MAX_WINDOWS_PER_BURST x S.
 */
export class Coalescer<H extends CoalescingHold> {
  /** webhook id -> record key -> burst, in the order bursts began. */
  private readonly held = new Map<string, Map<string, Burst<H>>>();
  /** The webhooks as last seen: a burst goes out to its webhook as it is then (secret, URL, options). */
  private readonly subscribers = new Map<string, Subscriber>();

  constructor(
    private readonly forward: EventForwarder<H>,
    private readonly observer: CoalescedObserver,
    private readonly now: () => number = Date.now,
  ) {}

  /** Routes one event; returns how many webhooks get it now or hold it. */
  route(event: WebhookEvent, subscribers: readonly Subscriber[], hold: H): number {
    let coalescing = 0;
    for (const subscriber of subscribers) if (windowMs(subscriber) > 0) coalescing++;
    if (coalescing === 0) return this.forward(event, subscribers, hold);
    const direct: Subscriber[] = [];
    let count = 0;
    for (const subscriber of subscribers) {
      const window = windowMs(subscriber);
      if (window === 0) direct.push(subscriber);
      else count += this.offer(subscriber, window, event, hold);
    }
    if (direct.length > 0) count += this.forward(event, direct, hold);
    return count;
  }

  /** Bursts held, over all webhooks. */
  get heldCount(): number {
    let count = 0;
    for (const bursts of this.held.values()) count += bursts.size;
    return count;
  }

  private offer(subscriber: Subscriber, window: number, event: WebhookEvent, hold: H): number {
    this.subscribers.set(subscriber.id, subscriber);
    let bursts = this.held.get(subscriber.id);
    const burst = bursts?.get(event.recordKey);
    const now = this.now();
    if (burst !== undefined && canAbsorb(burst.event, event)) {
      hold.hold();
      burst.holds.push(hold);
      burst.event = absorb(burst.event, event);
      burst.dueAt = Math.min(now + window, burst.firstAt + MAX_WINDOWS_PER_BURST * window);
      this.observer.eventsCoalesced(subscriber.id, 1);
      return 1;
    }
    if (burst !== undefined) this.send(subscriber.id, burst);
    if (event.action !== 'created' && event.action !== 'updated') return this.forward(event, [subscriber], hold);
    if (bursts === undefined) this.held.set(subscriber.id, (bursts = new Map()));
    if (bursts.size >= MAX_HELD_RECORDS_PER_WEBHOOK) {
      const [oldest] = bursts.values();
      if (oldest !== undefined) this.send(subscriber.id, oldest);
    }
    hold.hold();
    bursts.set(event.recordKey, { event, holds: [hold], firstAt: now, dueAt: now + window });
    return 1;
  }

  /** Hands on the burst as one event. Its first transaction stays held by the delivery, the others are released. */
  private send(webhookId: string, burst: Burst<H>): void {
    const bursts = this.held.get(webhookId);
    bursts?.delete(burst.event.recordKey);
    if (bursts?.size === 0) this.held.delete(webhookId);
    const subscriber = this.subscribers.get(webhookId)!;
    try {
      this.forward(burst.event, [subscriber], burst.holds[0]!);
    } finally {
      for (const hold of burst.holds) hold.release();
    }
  }

  /** Sends every burst whose time has come. */
  sendDue(): void {
    const now = this.now();
    for (const [webhookId, bursts] of this.held) {
      for (const burst of [...bursts.values()]) if (burst.dueAt <= now) this.send(webhookId, burst);
    }
  }

  /**
   * The registry changed. A webhook that is gone or no longer coalesces gets what is held for it now
   * (call this before the lanes learn of the change, so they still take it); the others go out to
   * the webhook as it is now.
   */
  updateSubscribers(active: readonly Subscriber[]): void {
    const byId = new Map(active.map((subscriber) => [subscriber.id, subscriber]));
    for (const webhookId of [...this.held.keys()]) {
      const next = byId.get(webhookId);
      if (next !== undefined) this.subscribers.set(webhookId, next);
      if (next === undefined || windowMs(next) === 0) this.sendAll(webhookId);
    }
    for (const webhookId of this.subscribers.keys()) if (!this.held.has(webhookId)) this.subscribers.delete(webhookId);
  }

  /** Shutdown: everything held goes on now, to be delivered or stored. */
  sendEverything(): void {
    for (const webhookId of [...this.held.keys()]) this.sendAll(webhookId);
  }

  /** Everything held for one webhook goes on now (its lane is about to read the log instead). */
  sendAllOf(webhookId: string): void {
    this.sendAll(webhookId);
  }

  private sendAll(webhookId: string): void {
    for (const burst of [...(this.held.get(webhookId)?.values() ?? [])]) this.send(webhookId, burst);
  }
}
