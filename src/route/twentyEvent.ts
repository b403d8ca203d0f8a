import type { RowChange } from '../decode/types.js';
import type { TwentyObject } from '../twenty/types.js';
import { actionFor, eventIdFor, hasOversizedValue } from './router.js';
import { compilePresentation, presentRecord, updatedFieldsOf, type Presentation } from './twentyRecord.js';
import type { Subscriber, WebhookEvent } from './types.js';

export interface TwentyEventOptions {
  /** "twenty": Twenty's own body; "event": the bridge's documented body with the presented record as `data`. */
  format: 'twenty' | 'event';
  maxPayloadBytes: number;
}

/** Twenty marks soft deletes with this column on every object. */
const SOFT_DELETE_COLUMN = 'deletedAt';

/**
 * Presentations are compiled once per object and table shape: the decoder hands out the same
 * `columnNames` array until the table changes, and a metadata reload makes new objects.
 */
const presentations = new WeakMap<TwentyObject, { columnNames: readonly string[]; presentation: Presentation }>();

function presentationFor(object: TwentyObject, columnNames: readonly string[]): Presentation {
  const known = presentations.get(object);
  if (known && known.columnNames === columnNames) return known.presentation;
  const presentation = compilePresentation(object, columnNames);
  presentations.set(object, { columnNames, presentation });
  return presentation;
}

/**
 * Pure: a change of a Twenty workspace table -> its event, or null when Twenty would send nothing (an
 * update that changed no reported field, such as one that only touched `updatedAt`).
 *
 * In Twenty's format the body names its webhook (`targetUrl`, `webhookId`), so it is made per webhook:
 * every part but those two is serialised once. Its bytes are what `JSON.stringify(JSON.parse(body))`
 * gives, so receivers that verify a re-serialised body (as Twenty's docs tell them to) succeed.
 */
export function buildTwentyEvent(change: RowChange, object: TwentyObject, options: TwentyEventOptions): WebhookEvent | null {
  const action = actionFor(change, SOFT_DELETE_COLUMN);
  if (action === null) return null;
  const presentation = presentationFor(object, change.columnNames);
  const row = (change.kind === 'delete' ? change.oldRow : change.newRow) ?? {};
  let record: Record<string, unknown> = presentRecord(presentation, row);
  let updatedFields: string[] | null = null;
  if (change.kind === 'update' && change.oldRow) {
    updatedFields = updatedFieldsOf(presentation, presentRecord(presentation, change.oldRow), record);
    if (updatedFields.length === 0) return null;
  }
  const id = eventIdFor(change);
  const name = `${object.nameSingular}.${action}`;
  const eventDate = change.commitTime.toISOString();
  const recordId = row.id;
  // A value the reader kept as its size only makes the record too large by construction: it is not
  // serialised at all (hundreds of megabytes would exhaust the heap or V8's string limit).
  const oversized = hasOversizedValue(row);
  let recordJson = oversized ? '' : JSON.stringify(record);
  const updatedJson = updatedFields === null ? '' : `,"updatedFields":${JSON.stringify(updatedFields)}`;
  let truncated = '';
  // Room for the envelope: names, ids, a date and the longest URL a webhook row may hold.
  if (oversized || recordJson.length + updatedJson.length + 2_600 > options.maxPayloadBytes) {
    record = { id: recordId, truncated: true };
    recordJson = JSON.stringify(record);
    truncated = ',"truncated":true';
  }
  const base = {
    id,
    name,
    object: object.nameSingular,
    action,
    recordKey: `${object.nameSingular}:${String(recordId)}`,
    commitLsn: change.commitLsn,
    changeIndex: change.indexInTransaction,
    commitTime: change.commitTime,
  };
  const extra: Record<string, unknown> = {};
  if (updatedFields !== null) extra.updatedFields = updatedFields;
  if (truncated !== '') extra.truncated = true;
  if (options.format === 'event') {
    const body = `{"event":${JSON.stringify(name)},"data":${recordJson},"timestamp":"${eventDate}","id":"${id}"${updatedJson}${truncated}}`;
    const fields = { event: name, data: record, timestamp: eventDate, id, ...extra };
    return { ...base, body, bodyFor: null, payload: { fields, recordKey: 'data', rawJson: false, namesWebhook: false } };
  }
  const objectMetadata = { id: object.id, nameSingular: object.nameSingular };
  const fields = { targetUrl: '', eventName: name, objectMetadata, workspaceId: object.workspaceId, webhookId: '', eventDate, record, ...extra };
  const head = `,"eventName":${JSON.stringify(name)},"objectMetadata":${JSON.stringify(objectMetadata)},"workspaceId":${JSON.stringify(object.workspaceId)},"webhookId":`;
  const tail = `,"eventDate":"${eventDate}","record":${recordJson}${updatedJson}${truncated}}`;
  return {
    ...base,
    body: '',
    bodyParts: [head, tail],
    bodyFor: (subscriber: Subscriber) => `{"targetUrl":${JSON.stringify(subscriber.targetUrl)}${head}${JSON.stringify(subscriber.id)}${tail}`,
    payload: { fields, recordKey: 'record', rawJson: false, namesWebhook: true },
  };
}
