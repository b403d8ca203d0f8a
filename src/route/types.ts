import type { Lsn } from '../replication/lsn.js';

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
  commitLsn: Lsn;
  changeIndex: number;
  commitTime: Date;
}
