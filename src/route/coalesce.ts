import { stringifyPayload } from './payloadJson.js';
import type { EventPayload, Subscriber, WebhookEvent } from './types.js';

/**
 * Whether a held event of a record may absorb `next`, a later event of the same record: updates fold
 * into a held `created` or `updated`. Anything else (a delete, soft delete, restore, destroy, or a new
 * `created` after one) ends the burst: what is held is sent first, then `next` on its own.
 */
export function canAbsorb(held: WebhookEvent, next: WebhookEvent): boolean {
  return held.recordKey === next.recordKey && (held.action === 'created' || held.action === 'updated') && next.action === 'updated';
}

/**
 * Pure: one event standing for `held` followed by `next` (see canAbsorb): the final row, the union of
 * the changed fields in the order they first changed, the id, position and date of the last change.
 * A `created` followed by updates stays a `created` (with the final row and no `updatedFields`), as if
 * the record had been created as it now is.
 */
export function absorb(held: WebhookEvent, next: WebhookEvent): WebhookEvent {
  const action = held.action;
  const name = `${next.object}.${action}`;
  const fields: Record<string, unknown> = { ...next.payload.fields };
  fields[next.payload.namesWebhook ? 'eventName' : 'event'] = name;
  if (action === 'created') {
    delete fields.updatedFields;
  } else {
    const before = held.payload.fields.updatedFields;
    const after = next.payload.fields.updatedFields;
    // Without the old row (REPLICA IDENTITY not FULL) an update does not say what changed: nor does the merge.
    if (Array.isArray(before) && Array.isArray(after)) fields.updatedFields = [...new Set([...(before as string[]), ...(after as string[])])];
    else delete fields.updatedFields;
  }
  const payload: EventPayload = { ...next.payload, fields };
  const serialise = payload.rawJson ? stringifyPayload : (value: unknown) => JSON.stringify(value);
  return {
    ...next,
    name,
    action,
    payload,
    body: payload.namesWebhook ? '' : serialise(fields),
    // Twenty's body names its webhook: `targetUrl` and `webhookId` keep their place in the key order.
    bodyFor: payload.namesWebhook ? (subscriber: Subscriber) => serialise({ ...fields, targetUrl: subscriber.targetUrl, webhookId: subscriber.id }) : null,
  };
}
