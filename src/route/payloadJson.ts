import { RawJson } from '../decode/values.js';

/** A placeholder as JSON.stringify prints it: "\u0000<n>\u0000", quotes included. */
const PLACEHOLDER = /"\\u0000(\d+)\\u0000"/g;

/**
 * JSON.stringify for payloads, except that json/jsonb column values (RawJson) are written as the text
 * Postgres printed: a receiver gets 12345678901234567890 in a jsonb document exactly, not rounded to a
 * double. The native JSON.stringify does the work (this is the hot path); RawJson values stand in as
 * placeholders that are replaced by their text afterwards.
 */
export function stringifyPayload(value: unknown): string {
  const texts: string[] = [];
  RawJson.collector = texts;
  let json: string;
  try {
    json = JSON.stringify(value);
  } finally {
    RawJson.collector = null;
  }
  if (texts.length === 0) return json;
  return json.replace(PLACEHOLDER, (_, index: string) => texts[Number(index)]!);
}
