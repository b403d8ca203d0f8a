import { STANDARD_SECRET_PREFIX, decodeStandardSecret } from '../standardSecret.js';
import type { Subscriber } from './types.js';

/** Longest URL we accept; longer ones are almost certainly abuse or a paste error. */
const MAX_URL_LENGTH = 2_048;
/** Longest secret we accept: generated ones are 64 characters; much longer text is a paste error. */
export const MAX_SECRET_LENGTH = 512;
const OPERATION_PATTERN = /^(\*|[A-Za-z_][A-Za-z0-9_]*)\.(\*|[A-Za-z_][A-Za-z0-9_]*)$/;

export type ParsedSubscriber = { ok: true; subscriber: Subscriber; ignoredOperations: unknown[] } | { ok: false; id: string; problem: string };

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
  // Twenty's rows may hold entries this bridge never emits (e.g. "metadata.*.*"): they match nothing
  // here, and the row's other entries still count.
  const usable = operations.filter((op): op is string => typeof op === 'string' && OPERATION_PATTERN.test(op));
  const ignoredOperations = operations.filter((op) => typeof op !== 'string' || !OPERATION_PATTERN.test(op));
  const secret = row.secret;
  const secretProblem = describeSecretProblem(secret);
  if (secretProblem !== null) return { ok: false, id, problem: secretProblem };
  return {
    ok: true,
    subscriber: {
      id,
      targetUrl: url,
      operations: usable,
      secret: secret as string,
      operationSet: new Set(usable),
      workspaceId: row.workspaceId == null ? null : String(row.workspaceId),
    },
    ignoredOperations,
  };
}

/**
 * Why a secret cannot sign, or null. An empty secret is valid: its webhook gets unsigned requests, as
 * Twenty sends them (every webhook Twenty's Zapier app creates has secret '').
 */
export function describeSecretProblem(secret: unknown): string | null {
  if (typeof secret !== 'string') return "secret is NULL; use '' for unsigned requests";
  if (secret.length > MAX_SECRET_LENGTH) return `secret is longer than ${MAX_SECRET_LENGTH} characters`;
  if (secret.startsWith(STANDARD_SECRET_PREFIX)) {
    const decoded = decodeStandardSecret(secret);
    if (!decoded.ok) return decoded.problem;
  }
  return null;
}

/** A webhook receives `o.a` when its operations hold any of `o.a`, `*.a`, `o.*`, `*.*`. */
export function subscriberMatches(subscriber: Subscriber, object: string, action: string): boolean {
  const ops = subscriber.operationSet;
  return ops.has('*.*') || ops.has(`${object}.${action}`) || ops.has(`*.${action}`) || ops.has(`${object}.*`);
}
