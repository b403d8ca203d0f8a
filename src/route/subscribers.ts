import type { Subscriber } from './types.js';

/** Longest URL we accept; longer ones are almost certainly abuse or a paste error. */
const MAX_URL_LENGTH = 2_048;
const OPERATION_PATTERN = /^(\*|[A-Za-z_][A-Za-z0-9_]*)\.(\*|[A-Za-z_][A-Za-z0-9_]*)$/;

export type ParsedSubscriber = { ok: true; subscriber: Subscriber } | { ok: false; id: string; problem: string };

/**
 * Validates one row of the webhooks table. A bad row is reported, never thrown: other webhooks must
 * keep working whatever one row holds.
 */
export function parseSubscriberRow(row: Record<string, unknown>): ParsedSubscriber {
  const id = typeof row.id === 'string' ? row.id : String(row.id);
  const url = row.targetUrl;
  if (typeof url !== 'string' || url.length === 0) return { ok: false, id, problem: 'targetUrl is empty' };
  if (url.length > MAX_URL_LENGTH) return { ok: false, id, problem: `targetUrl is longer than ${MAX_URL_LENGTH} characters` };
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return { ok: false, id, problem: `targetUrl ${JSON.stringify(url.slice(0, 200))} is not a valid URL` };
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    return { ok: false, id, problem: `targetUrl scheme "${parsed.protocol.slice(0, 20)}" is not http or https` };
  }
  if (parsed.username || parsed.password) return { ok: false, id, problem: 'targetUrl must not carry credentials' };
  const operations = row.operations;
  if (!Array.isArray(operations) || operations.length === 0) {
    return { ok: false, id, problem: 'operations is empty; use {*.*} for every event' };
  }
  const bad = operations.find((op) => typeof op !== 'string' || !OPERATION_PATTERN.test(op));
  if (bad !== undefined) {
    return { ok: false, id, problem: `operation ${JSON.stringify(bad)} is not "object.action" (e.g. person.created, *.deleted)` };
  }
  if (typeof row.secret !== 'string' || row.secret.length === 0) return { ok: false, id, problem: 'secret is empty' };
  return {
    ok: true,
    subscriber: {
      id,
      targetUrl: url,
      operations,
      secret: row.secret,
      operationSet: new Set(operations as string[]),
      workspaceId: row.workspaceId == null ? null : String(row.workspaceId),
    },
  };
}

/** A webhook receives `o.a` when its operations hold any of `o.a`, `*.a`, `o.*`, `*.*`. */
export function subscriberMatches(subscriber: Subscriber, object: string, action: string): boolean {
  const ops = subscriber.operationSet;
  return ops.has('*.*') || ops.has(`${object}.${action}`) || ops.has(`*.${action}`) || ops.has(`${object}.*`);
}
