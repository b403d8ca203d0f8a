import type { Lsn } from '../replication/lsn.js';
import { eventIdFor, routesTo } from './router.js';
import type { CelBindings, FilterReason } from './webhookOptions.js';
import { applyOptions, celBindings, optionsShapeEvents } from './webhookOptions.js';
import type { EventAction, Subscriber, WebhookEvent } from './types.js';

/**
 * An event as the event log keeps it: once, for every webhook. What differs per webhook (which
 * webhooks get it, Twenty's `targetUrl` and `webhookId`, options that filter or narrow it) is worked
 * out when a webhook reads it (see eventForWebhook), from the webhook as it is then.
 */
export interface LoggedEvent {
  commitLsn: Lsn;
  changeIndex: number;
  commitTime: Date;
  object: string;
  action: EventAction;
  recordKey: string;
  /** The Twenty workspace the change belongs to; null in tables mode. */
  workspaceId: string | null;
  /** The shared body, or '' where the body is made per webhook from `bodyParts`. */
  body: string;
  bodyParts: readonly [head: string, tail: string] | null;
  /** Where the row is in the body: `data` (the bridge's body) or `record` (Twenty's). */
  payloadKey: 'data' | 'record';
}

/** A routed event as the log keeps it; `workspaceId` is the workspace whose webhooks may get it. */
export function toLoggedEvent(event: WebhookEvent, workspaceId: string | null): LoggedEvent {
  return {
    commitLsn: event.commitLsn,
    changeIndex: event.changeIndex,
    commitTime: event.commitTime,
    object: event.object,
    action: event.action,
    recordKey: event.recordKey,
    workspaceId,
    body: event.body,
    bodyParts: event.bodyParts ?? null,
    payloadKey: event.payload.recordKey,
  };
}

export type WebhookOutcome = { event: WebhookEvent } | { filtered: FilterReason; problem?: string } | null;

/**
 * Pure: the event `subscriber` gets from a logged event: null when its operations (or workspace) do
 * not take it, `filtered` when its options drop it, else the event with the webhook's own body.
 * Options that narrow or filter read the body parsed back: json values are then serialised by
 * JSON.stringify (a number past 2^53 inside a json column loses precision in a narrowed body).
 */
export function eventForWebhook(logged: LoggedEvent, subscriber: Subscriber): WebhookOutcome {
  if (!routesTo(subscriber, logged.object, logged.action, logged.workspaceId)) return null;
  const parts = logged.bodyParts;
  const bodyFor = parts === null ? null : (s: Subscriber) => `{"targetUrl":${JSON.stringify(s.targetUrl)}${parts[0]}${JSON.stringify(s.id)}${parts[1]}`;
  const name = `${logged.object}.${logged.action}`;
  const base: WebhookEvent = {
    id: eventIdFor({ commitLsn: logged.commitLsn, indexInTransaction: logged.changeIndex }),
    name,
    object: logged.object,
    action: logged.action,
    recordKey: logged.recordKey,
    body: bodyFor === null ? logged.body : bodyFor(subscriber),
    bodyFor: null,
    payload: { fields: {}, recordKey: logged.payloadKey, rawJson: false, namesWebhook: parts !== null },
    commitLsn: logged.commitLsn,
    changeIndex: logged.changeIndex,
    commitTime: logged.commitTime,
  };
  if (!optionsShapeEvents(subscriber.options)) return { event: base };
  // The body parsed back, with '' where Twenty's names its webhook, as the live event's fields have it.
  const shared = bodyFor === null ? logged.body : bodyFor({ ...subscriber, targetUrl: '', id: '' });
  const event: WebhookEvent = { ...base, bodyFor, payload: { ...base.payload, fields: JSON.parse(shared) as Record<string, unknown> } };
  let bindings: CelBindings | null = null;
  const outcome = applyOptions(event, subscriber, subscriber.options, () => (bindings ??= celBindings(event)));
  if ('filtered' in outcome) return outcome;
  return { event: { ...event, body: outcome.body, bodyFor: null } };
}
