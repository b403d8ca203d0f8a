import { BridgeError } from '../errors.js';

/**
 * A date (midnight UTC) or a date and time with its offset. A time without an offset is refused: the
 * machine running the CLI and the database may not share a time zone, and a window one hour off replays
 * the wrong events.
 */
const ISO_8601 = /^(\d{4}-\d{2}-\d{2})(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2}))?$/i;

/** The time a CLI flag gives, as ISO 8601; an ERR_USAGE naming the flag otherwise. */
export function parseTimeOption(flag: string, value: string): Date {
  const text = value.trim();
  const match = ISO_8601.exec(text);
  const time = new Date(text);
  // Date rolls 2026-02-30 over into March; the date part must name a real day.
  const realDay = match !== null && new Date(`${match[1]}T00:00:00Z`).toISOString().slice(0, 10) === match[1];
  if (match === null || !realDay || Number.isNaN(time.getTime())) {
    throw new BridgeError(
      'ERR_USAGE',
      `${flag} ${JSON.stringify(value)} is not an ISO 8601 time: give a date (2026-03-01, midnight UTC) or a date and time with its offset (2026-03-01T14:30:00Z, 2026-03-01T15:30:00+01:00)`,
    );
  }
  return time;
}
