import type { Lsn } from '../replication/lsn.js';

/** A delivery as kept in the durable store (`<schema>.deliveries`). */
export interface StoredDelivery {
  id: string;
  webhookId: string;
  eventId: string;
  eventName: string;
  recordKey: string;
  body: string;
  attempts: number;
  status: 'pending' | 'dead';
  runAt: Date;
  lastError: string | null;
  lastStatusCode: number | null;
  createdAt: Date;
  /** The webhook's targetUrl when the delivery was routed; null: whatever it is now. */
  targetUrl: string | null;
}

/** What is written when a delivery enters the store. */
export interface NewStoredDelivery {
  webhookId: string;
  eventId: string;
  eventName: string;
  recordKey: string;
  commitLsn: string;
  changeIndex: number;
  body: string;
  attempts: number;
  /** 'dead' only when the very first attempt already spent the retry budget. */
  status: 'pending' | 'dead';
  runAt: Date;
  lastError: string | null;
  lastStatusCode: number | null;
  /** Set when the delivery is in flight right now: the lease keeps the store poller off it. */
  lockedUntil: Date | null;
  /** The webhook's targetUrl when the delivery was routed. */
  targetUrl: string;
}

/** The key of a delivery everywhere: one event, one webhook. */
export interface DeliveryKey {
  eventId: string;
  webhookId: string;
}

export type { Queryable } from '../database.js';

/** A place in the event log: the commit LSN of an event's transaction and its index in it. */
export interface LogPosition {
  lsn: Lsn;
  index: number;
}
