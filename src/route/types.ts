import type { Lsn } from '../decode/types.js';

/** One webhook that can receive events: a valid, active row of the webhooks table. */
export interface Subscriber {
  id: string;
  targetUrl: string;
  /** As written in the row; matching uses the compiled set below. */
  operations: readonly string[];
  secret: string;
  /** `object.action`, `*.action`, `object.*`, `*.*` entries, for O(1) matching. */
  operationSet: ReadonlySet<string>;
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
  commitLsn: Lsn;
  changeIndex: number;
  commitTime: Date;
}
