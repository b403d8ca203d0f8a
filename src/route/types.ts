import type { Lsn } from '../replication/lsn.js';
import type { WebhookOptions } from './webhookOptions.js';

/** One webhook that can receive events: a valid, active row of the webhooks table. */
export interface Subscriber {
  id: string;
  targetUrl: string;
  /** The row's `object.action` entries (others are ignored); matching uses the compiled set below. */
  operations: readonly string[];
  secret: string;
  /** `object.action`, `*.action`, `object.*`, `*.*` entries, for O(1) matching. */
  operationSet: ReadonlySet<string>;
  /**
   * The Twenty workspace the webhook belongs to (`core.webhook."workspaceId"`), null where the
   * webhooks table has no such column. In Twenty mode a webhook receives changes of its own workspace
   * only, and one with no workspace receives nothing.
   */
  workspaceId: string | null;
  /**
   * The webhook's options (`webhooks set`), compiled; absent or null: every event it subscribes to,
   * whole, on the shared fast path.
   */
  options?: WebhookOptions | null;
}

export type EventAction = 'created' | 'updated' | 'deleted' | 'restored' | 'destroyed';

/**
 * An event, serialised once: the same `body` bytes go to every webhook it is routed to and are the
 * bytes that get signed.
 */
export interface WebhookEvent {
  id: string;
  name: string;
  object: string;
  action: EventAction;
  /** object + primary key: the unit of ordering per webhook. */
  recordKey: string;
  body: string;
  /**
   * Bodies that name their webhook (Twenty's format carries `targetUrl` and `webhookId`) are made per
   * webhook from parts serialised once; null where every webhook gets `body`.
   */
  bodyFor: ((subscriber: Subscriber) => string) | null;
  /**
   * Where `bodyFor` is built from two serialised parts (Twenty's body: `{"targetUrl":<url><head><webhook id><tail>`),
   * those parts: the event log keeps them instead of a body per webhook.
   */
  bodyParts?: readonly [head: string, tail: string] | null;
  /** The body as values, for webhooks whose options filter it or narrow it (see webhookOptions.ts). */
  payload: EventPayload;
  commitLsn: Lsn;
  changeIndex: number;
  commitTime: Date;
}

/**
 * The parts an event's body is made of, kept as values so per-webhook options can test them and
 * serialise a narrower body without parsing the shared one.
 */
export interface EventPayload {
  /**
   * The body's top-level keys in body order. In Twenty's body `targetUrl` and `webhookId` are set per
   * webhook (here they hold '').
   */
  fields: Readonly<Record<string, unknown>>;
  /** Where the row is: `data` (the bridge's body) or `record` (Twenty's). */
  recordKey: 'data' | 'record';
  /** Json values written as Postgres printed them (stringifyPayload), as the shared body has them. */
  rawJson: boolean;
  /** Twenty's body names its webhook (`targetUrl`, `webhookId`). */
  namesWebhook: boolean;
}
