/**
 * The package's public entry, for receivers: `import { verifySignature } from 'pg-webhook-bridge'`.
 * It loads nothing but node:crypto (no pg, no undici), so a receiver can depend on it cheaply.
 *
 *   app.post('/hook', express.raw({ type: 'application/json' }), (req, res) => {
 *     const result = verifySignature(req.body, req.headers, process.env.WEBHOOK_SECRET!);
 *     if (!result.valid) return res.status(401).send(result.reason);
 *     // Delivery is at least once: de-duplicate on result.id, the id the signature covers (a replayed
 *     // request can carry another webhook-id header).
 *     if (alreadySeen(result.id)) return res.sendStatus(204);
 *     const event = JSON.parse(req.body.toString('utf8')) as WebhookPayload;
 *     res.sendStatus(204);
 *   });
 */
export { verifySignature } from './verify.js';
export type { HeaderBag, VerifyOptions, VerifyResult } from './verify.js';
export {
  HEADER_NONCE,
  HEADER_SIGNATURE,
  HEADER_TIMESTAMP,
  HEADER_WEBHOOK_ID,
  HEADER_WEBHOOK_SIGNATURE,
  HEADER_WEBHOOK_TIMESTAMP,
  STANDARD_SECRET_PREFIX,
} from './deliver/sign.js';

/** The JSON body of every delivery in the event format (`payload.format = "event"`). */
export interface WebhookPayload<Row extends Record<string, unknown> = Record<string, unknown>> {
  /** `<object>.<action>`: created, updated, deleted, restored or destroyed. */
  event: string;
  /** Every column of the row after the change (for a delete: before), keyed by column name. */
  data: Row;
  /** Commit time of the transaction, UTC ISO-8601 with milliseconds. */
  timestamp: string;
  /** Stable event id (commit position + index): the same change always has the same id. */
  id: string;
  /** Updates only: the columns whose value changed. */
  updatedFields?: string[];
  /** Columns whose unchanged large (TOASTed) value Postgres did not send (table not REPLICA IDENTITY FULL). */
  unavailableFields?: string[];
  /** Present when the event was larger than delivery.maxPayloadBytes: `data` holds the primary key only. */
  truncated?: true;
}

/**
 * The JSON body in Twenty's format (`payload.format = "twenty"`), as Twenty's own webhooks send it.
 * Keys come in this order; `updatedFields` on updated, deleted and restored events.
 */
export interface TwentyWebhookPayload<TwentyRecord extends Record<string, unknown> = Record<string, unknown>> {
  targetUrl: string;
  /** `<nameSingular>.<action>`: created, updated, deleted (soft), restored or destroyed (hard). */
  eventName: string;
  objectMetadata: { id: string; nameSingular: string };
  workspaceId: string;
  webhookId: string;
  /** Commit time of the transaction, UTC ISO-8601 with milliseconds: the same on every retry. */
  eventDate: string;
  /** The record as Twenty presents it (composite fields nested, relations as their `<field>Id`). */
  record: TwentyRecord;
  /** Field names whose value changed; never `updatedAt`. */
  updatedFields?: string[];
  /** Present when the record was larger than delivery.maxPayloadBytes: `record` holds its id only. */
  truncated?: true;
}
