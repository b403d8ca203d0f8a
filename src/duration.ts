/** Units a duration may be written in, e.g. `30d`, `12h`, `45m`, `90s`. */
const UNIT_MS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };
const DURATION = /^(\d{1,9})\s*([smhdw])$/;

/** `30d` -> 2,592,000,000 ms; null when the text is not one whole number and one unit. */
export function parseDuration(text: string): number | null {
  const match = DURATION.exec(text.trim().toLowerCase());
  if (match === null) return null;
  return Number(match[1]) * UNIT_MS[match[2]!]!;
}
