/**
 * A position in the write-ahead log. bigint everywhere inside the bridge: the library hands out two
 * different text forms ("0/177DB38", "00000000/0177DC60"), which compare wrongly as text.
 */
export type Lsn = bigint;

/** Parses either text form Postgres and the library use ("0/177DB38", "00000000/0177DC60"). */
export function parseLsn(text: string): Lsn {
  const slash = text.indexOf('/');
  if (slash < 0) throw new Error(`not an LSN: ${text}`);
  return (BigInt(`0x${text.slice(0, slash)}`) << 32n) | BigInt(`0x${text.slice(slash + 1)}`);
}

/** Formats an LSN the way Postgres prints it ("16/B374D848"). */
export function formatLsn(lsn: Lsn): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

/** Fixed-width hex, sortable as text: used inside event ids. */
export function lsnToSortableHex(lsn: Lsn): string {
  return lsn.toString(16).toUpperCase().padStart(16, '0');
}

/** Orders two LSNs in either text form: negative, zero or positive, as Array.prototype.sort wants. */
export function compareLsnText(a: string, b: string): number {
  const [x, y] = [parseLsn(a), parseLsn(b)];
  return x < y ? -1 : x > y ? 1 : 0;
}
