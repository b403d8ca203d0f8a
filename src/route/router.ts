import { OversizedValue, type RowChange, type Row } from '../decode/types.js';
import { isPlainKey, newRow } from '../decode/rowObject.js';
import { lsnToSortableHex } from '../replication/lsn.js';
import type { ObjectResolver } from './objectMapping.js';
import { stringifyPayload } from './payloadJson.js';
import { subscriberMatches } from './subscribers.js';
import type { EventAction, Subscriber, WebhookEvent } from './types.js';

export interface EventOptions {
  resolveObject: ObjectResolver;
  /** Column whose setting/clearing means soft delete/restore; '' disables. */
  softDeleteColumn: string;
  camelCase: boolean;
  maxPayloadBytes: number;
}

/** The same change always gets the same id: commit LSN of its transaction + its index in it. */
export function eventIdFor(change: Pick<RowChange, 'commitLsn' | 'indexInTransaction'>): string {
  return `${lsnToSortableHex(change.commitLsn)}-${change.indexInTransaction.toString().padStart(8, '0')}`;
}

/**
 * Turns a row change into its event (event name, payload, truncated form), or null when it emits nothing:
 * a table that is not watched, or an UPDATE that changed no value.
 */
export function buildEvent(change: RowChange, options: EventOptions): WebhookEvent | null {
  const object = options.resolveObject(change.schema, change.table);
  if (object === undefined) return null;
  const action = actionFor(change, options.softDeleteColumn);
  if (action === null) return null;
  const row = (change.kind === 'delete' ? change.oldRow : change.newRow) ?? {};
  const id = eventIdFor(change);
  const name = `${object}.${action}`;
  const key = recordKeyOf(row, change.keyColumns);
  const timestamp = change.commitTime.toISOString();
  const data = options.camelCase ? camelCaseKeys(row) : row;
  const payload: Record<string, unknown> = { event: name, data, timestamp, id };
  if (change.kind === 'update' && change.changedColumns) {
    payload.updatedFields = options.camelCase ? change.changedColumns.map(toCamelCase) : change.changedColumns;
  }
  if (change.unavailableColumns.length > 0) {
    // Not a silent drop: the receiver is told which values Postgres did not send (table not FULL).
    payload.unavailableFields = options.camelCase ? change.unavailableColumns.map(toCamelCase) : change.unavailableColumns;
  }
  // A row holding a value the reader kept as its size only is too large by construction: no attempt
  // to serialise it (hundreds of megabytes would exhaust the heap or V8's string limit).
  let fields = payload;
  let body = hasOversizedValue(row) ? null : stringifyPayload(payload);
  if (body === null || Buffer.byteLength(body) > options.maxPayloadBytes) {
    fields = truncatedPayload(name, id, timestamp, row, change.keyColumns, options.camelCase);
    body = stringifyPayload(fields);
  }
  return {
    id,
    name,
    object,
    action,
    recordKey: `${object}:${key}`,
    body,
    bodyFor: null,
    payload: { fields, recordKey: 'data', rawJson: true, namesWebhook: false },
    commitLsn: change.commitLsn,
    changeIndex: change.indexInTransaction,
    commitTime: change.commitTime,
  };
}

/** A row holding a value the pgoutput reader kept as its size only (see OversizedValue). */
export function hasOversizedValue(row: Row): boolean {
  for (const key in row) if (row[key] instanceof OversizedValue) return true;
  return false;
}

/**
 * The documented truncated form of an event too large to send: the record's key only, so the receiver
 * can fetch the row itself.
 */
function truncatedPayload(event: string, id: string, timestamp: string, row: Row, keyColumns: string[], camelCase: boolean): Record<string, unknown> {
  const data: Row = Object.create(null) as Row;
  for (const column of keyColumns) data[camelCase ? toCamelCase(column) : column] = row[column];
  data.truncated = true;
  return { event, data, timestamp, id, truncated: true };
}

export function actionFor(change: RowChange, softDeleteColumn: string): EventAction | null {
  const hasSoftDelete = softDeleteColumn !== '' && change.columnNames.includes(softDeleteColumn);
  switch (change.kind) {
    case 'insert':
      return 'created';
    case 'delete':
      return hasSoftDelete ? 'destroyed' : 'deleted';
    case 'update': {
      if (change.changedColumns !== null && change.changedColumns.length === 0) return null;
      if (hasSoftDelete && change.oldRow) {
        const before = change.oldRow[softDeleteColumn];
        const after = change.newRow?.[softDeleteColumn];
        if (before == null && after != null) return 'deleted';
        if (before != null && after == null) return 'restored';
      }
      return 'updated';
    }
  }
}

function recordKeyOf(row: Row, keyColumns: string[]): string {
  if (keyColumns.length === 1) return String(row[keyColumns[0]!]);
  return JSON.stringify(keyColumns.map((c) => row[c]));
}

const camelCache = new Map<string, string>();

export function toCamelCase(name: string): string {
  let out = camelCache.get(name);
  if (out === undefined) {
    out = name.replace(/_+([a-zA-Z0-9])/g, (_, c: string) => c.toUpperCase());
    camelCache.set(name, out);
  }
  return out;
}

function camelCaseKeys(row: Row): Row {
  const keys = Object.keys(row);
  const names = keys.map(toCamelCase);
  const out = newRow(names.every(isPlainKey));
  for (let i = 0; i < keys.length; i++) out[names[i]!] = row[keys[i]!];
  return out;
}

/**
 * Twenty sends these events only to webhooks that name them exactly, never through a wildcard: a
 * workflow run is updated at every step it takes.
 */
const EXACT_MATCH_ONLY_EVENTS: ReadonlySet<string> = new Set(['workflowRun.updated']);

/**
 * Whether `subscriber` gets `object.action` of `workspaceId` (null: tables mode, no tenant). Twenty
 * sends some events only to webhooks that name them exactly (see EXACT_MATCH_ONLY_EVENTS).
 */
export function routesTo(
  subscriber: Subscriber,
  object: string,
  action: string,
  workspaceId: string | null,
  exactOnly = workspaceId !== null && EXACT_MATCH_ONLY_EVENTS.has(`${object}.${action}`),
): boolean {
  if (workspaceId !== null && subscriber.workspaceId !== workspaceId) return false;
  return exactOnly ? subscriber.operationSet.has(`${object}.${action}`) : subscriberMatches(subscriber, object, action);
}

/**
 * Which subscribers get which event name. Memoised per event name (and workspace); rebuilt whenever
 * the subscriber list changes, so routing an event is one map lookup.
 */
export class SubscriberIndex {
  private readonly byEvent = new Map<string, Subscriber[]>();

  constructor(readonly subscribers: readonly Subscriber[]) {}

  /**
   * `workspaceId` is the workspace the change belongs to (Twenty mode): only that workspace's webhooks
   * match, whatever their operations say. Null (tables mode) means the change belongs to no tenant.
   */
  forEvent(object: string, action: string, workspaceId: string | null = null): Subscriber[] {
    const name = workspaceId === null ? `${object}.${action}` : `${workspaceId}/${object}.${action}`;
    let list = this.byEvent.get(name);
    if (list === undefined) {
      const exactOnly = workspaceId !== null && EXACT_MATCH_ONLY_EVENTS.has(`${object}.${action}`);
      list = this.subscribers.filter((s) => routesTo(s, object, action, workspaceId, exactOnly));
      this.byEvent.set(name, list);
    }
    return list;
  }
}
