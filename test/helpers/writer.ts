/**
 * A CRM writer for fault tests: mixed inserts, updates and deletes on the four tables, in transactions
 * of 1 to `maxBatch` changes. Every change writes a unique marker into the row, so the set of events a
 * receiver must get is known exactly: `<event>|<marker>` (a delete's marker is the row's last one).
 */
import type pg from 'pg';
import type { ReceivedRequest } from './receiver.js';

const MARKER_COLUMN: Record<string, string> = { person: 'city', company: '"domainName"', note: 'title', task: 'title' };
const MARKER_FIELD: Record<string, string> = { person: 'city', company: 'domainName', note: 'title', task: 'title' };
const TABLES = ['person', 'company', 'note', 'task'] as const;

export class ChangeWriter {
  readonly expected = new Set<string>();
  private readonly live: Record<string, Array<{ id: string; marker: string }>> = { person: [], company: [], note: [], task: [] };
  private counter = 0;
  changes = 0;

  constructor(
    private readonly pool: pg.Pool,
    private readonly random: () => number = Math.random,
    private readonly maxBatch = 20,
    /** Writers whose events may meet at one receiver need prefixes of their own: markers must not repeat. */
    private readonly markerPrefix = 'm',
  ) {}

  /** Writes until `total` changes are committed; `onProgress` may throw to stop early. Retries failed commits. */
  async write(total: number, onProgress?: (done: number) => Promise<void> | void): Promise<void> {
    while (this.changes < total) {
      const size = Math.min(total - this.changes, 1 + Math.floor(this.random() * this.maxBatch));
      await this.transaction(size);
      await onProgress?.(this.changes);
    }
  }

  private async transaction(size: number): Promise<void> {
    for (;;) {
      const client = await this.pool.connect().catch(() => null);
      if (!client) {
        await new Promise((resolve) => setTimeout(resolve, 200));
        continue;
      }
      const pendingExpected: string[] = [];
      const liveBefore = JSON.stringify(this.live);
      const counterBefore = this.counter;
      try {
        await client.query('begin');
        for (let i = 0; i < size; i++) pendingExpected.push(await this.change(client));
        await client.query('commit');
        for (const key of pendingExpected) this.expected.add(key);
        this.changes += size;
        client.release();
        return;
      } catch {
        // The server went away mid-transaction (restart test): undo our bookkeeping and try again.
        client.release(true);
        Object.assign(this.live, JSON.parse(liveBefore));
        this.counter = counterBefore;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
  }

  private async change(client: pg.PoolClient): Promise<string> {
    const table = TABLES[Math.floor(this.random() * TABLES.length)];
    const rows = this.live[table];
    const marker = `${this.markerPrefix}${++this.counter}`;
    const roll = this.random();
    const column = MARKER_COLUMN[table];
    if (rows.length < 5 || roll < 0.5) {
      const extra = table === 'company' ? ', name' : '';
      const extraValue = table === 'company' ? `, 'Company ${marker}'` : '';
      const { rows: inserted } = await client.query(`insert into ${table} (${column}${extra}) values ($1${extraValue}) returning id`, [marker]);
      rows.push({ id: inserted[0].id, marker });
      return `${table}.created|${marker}`;
    }
    const index = Math.floor(this.random() * rows.length);
    const row = rows[index];
    if (roll < 0.85) {
      await client.query(`update ${table} set ${column} = $1 where id = $2`, [marker, row.id]);
      row.marker = marker;
      return `${table}.updated|${marker}`;
    }
    await client.query(`delete from ${table} where id = $1`, [row.id]);
    rows.splice(index, 1);
    return `${table}.destroyed|${row.marker}`;
  }
}

/** The key ChangeWriter expects for a received request. */
export function receivedKey(request: ReceivedRequest): string {
  const object = String(request.json.event).split('.')[0];
  return `${request.json.event}|${request.json.data[MARKER_FIELD[object]]}`;
}
