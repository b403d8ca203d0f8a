import type { WebhookEvent } from '../route/types.js';
import type { FilteredObserver } from '../webhooks/optionRouter.js';

/**
 * The deliver stage's contract. It consumes routed events and a way to hold their transaction's
 * acknowledgement back; it produces attempts (through an HttpSender) and reports them to an observer.
 */

export type AttemptFailureReason =
  'http_status' | 'redirect' | 'gone' | 'timeout' | 'connection_refused' | 'connection_error' | 'blocked_address' | 'invalid_url' | 'payload_too_large';

export type AttemptOutcome =
  | { ok: true; statusCode: number; durationMs: number }
  | {
      ok: false;
      reason: AttemptFailureReason;
      statusCode?: number;
      retryAfterMs?: number;
      message: string;
      durationMs: number;
    };

export type FailedAttempt = Extract<AttemptOutcome, { ok: false }>;

/** Sends one signed request; never rejects: every failure is an outcome. */
export interface HttpSender {
  send(url: string, body: string, headers: Record<string, string>): Promise<AttemptOutcome>;
  close(deadline?: number): Promise<void>;
}

/**
 * What a delivery keeps of its transaction: the acknowledgement waits while any delivery holds it.
 * The replication stage's transaction entry is passed in; deliver only needs these two calls.
 */
export interface TransactionHold {
  hold(): void;
  release(): void;
}

/**
 * One event to one webhook, queued in its lane. On the fast path its transaction's acknowledgement
 * waits (`hold`) until it is delivered or the event log holds it; read from the log, it holds nothing.
 */
export interface MemoryDelivery {
  event: WebhookEvent;
  hold: TransactionHold;
  /** The webhook's targetUrl when the event was routed: a later URL never gets it. */
  targetUrl: string;
  enqueuedAt: number;
  /** Handled (delivered, or written to the store): its age no longer counts, and the log cursor may pass it. */
  finished: boolean;
  /** Read from the event log (it holds no transaction back). */
  fromLog?: boolean;
}

export type DeliveryOutcomeLabel = 'success' | 'retry' | 'dead' | 'refused';

/** Why the bridge disabled a webhook: it answered 410 Gone, or it failed for too long. */
export type AutoDisableReason = 'gone' | 'failing';

/** What the deliver stage reports; the http stage turns it into Prometheus metrics. */
export interface DeliveryObserver extends FilteredObserver {
  attempt(webhookId: string, outcome: AttemptOutcome, label: DeliveryOutcomeLabel, event: { name: string; commitTime: Date }): void;
  webhookAutoDisabled(webhookId: string, reason: AutoDisableReason): void;
}

/** What a lane asks of its coordinator. */
export interface LaneHooks {
  /** A failed attempt: records it and applies the disable rules (410, failing too long). */
  failure(webhookId: string, outcome: FailedAttempt): Promise<void>;
  success(webhookId: string): void;
  /** Memory was freed: a stream waiting for capacity may go on. */
  capacityFreed(): void;
  /** Events held for this webhook before delivery (coalescing) are handed on now, before it leaves memory. */
  releaseHeld(webhookId: string): void;
}

export interface LaneSettings {
  schema: string;
  /** The quoted, schema-qualified webhooks table: claims check the webhook is still live there. */
  webhooksTable: string;
  workerId: string;
  userAgent: string;
  concurrency: number;
  timeoutMs: number;
  retryScheduleS: readonly number[];
  memoryQueueLimit: number;
  memoryQueueBytes: number;
  storeAfterMs: number;
  disableAfterMs: number;
  /** Told when a store write finds the server shutting down (see withDatabaseRetry). */
  onServerShuttingDown?: () => void;
}
