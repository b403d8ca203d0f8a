/**
 * Load for the benchmark: CRM-sized changes (payloads of roughly 0.5-1 KB) on the four tables of
 * examples/crm-schema.sql, mixed 50% insert, 35% update, 15% delete, written as whole transactions
 * in ONE round trip each (a multi-statement simple query), so the writer is never what limits a phase.
 *
 * The writer keeps the ids of the rows it can still update or delete (in memory, per table), picks
 * them at random, and never touches a row twice in one transaction the same way: each change it
 * counts emits exactly one event.
 */
import { randomUUID } from 'node:crypto';
import type pg from 'pg';

export const TABLES = ['person', 'company', 'note', 'task'] as const;
export type Table = (typeof TABLES)[number];

/** A small deterministic PRNG (mulberry32), so every run writes the same shape of load. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

const WORDS = (
  'account acme agenda alpha amber anchor apex arc atlas aurora beacon birch blue bolt bridge brook cedar ' +
  'cloud coral crest delta drift echo ember falcon fern field flint forge fox garnet glade granite harbor ' +
  'hazel horizon iris ivory jade juniper kestrel lagoon lark linden lotus maple marble meadow mesa nimbus ' +
  'north oak onyx orbit pearl pine pixel quartz quill raven reef ridge river sable sage sierra slate solar ' +
  'spruce stone summit tango terra tide timber topaz tundra umber valley vapor vertex willow zenith'
).split(' ');
const FIRST_NAMES = [
  'Alice',
  'Bruno',
  'Chloe',
  'Dmitri',
  'Elena',
  'Farid',
  'Grace',
  'Hiro',
  'Ines',
  'Jonas',
  'Kemi',
  'Lucia',
  'Mateo',
  'Nadia',
  'Omar',
  'Priya',
];
const LAST_NAMES = [
  'Anders',
  'Bauer',
  'Costa',
  'Dubois',
  'Evans',
  'Fischer',
  'Garcia',
  'Haddad',
  'Ito',
  'Jensen',
  'Kowalski',
  'Larsen',
  'Moreau',
  'Novak',
  'Okafor',
  'Petrov',
];
const STATUSES = ['TODO', 'IN_PROGRESS', 'DONE'];

function q(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}

export class CrmWriter {
  readonly live: Record<Table, string[]> = { person: [], company: [], note: [], task: [] };
  /** Changes generated so far (each one event). */
  changes = 0;

  constructor(private readonly random: () => number) {}

  private pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.random() * items.length)];
  }

  private int(min: number, max: number): number {
    return min + Math.floor(this.random() * (max - min + 1));
  }

  /** Words up to a length drawn from [min, max]. */
  private words(min: number, max: number): string {
    const target = this.int(min, max);
    let out = this.pick(WORDS);
    while (out.length < target) out += ` ${this.pick(WORDS)}`;
    return out;
  }

  private insertValues(table: Table, id: string): string {
    switch (table) {
      case 'person': {
        const first = this.pick(FIRST_NAMES);
        const last = this.pick(LAST_NAMES);
        const company = this.live.company.length > 0 && this.random() < 0.7 ? q(this.pick(this.live.company)) : 'null';
        return `(${q(id)}, ${q(first)}, ${q(last)}, ${q(`${first}.${last}.${this.int(1, 99_999)}@example.com`.toLowerCase())}, ${q(`+1 555 ${this.int(100, 999)} ${this.int(1000, 9999)}`)}, ${q(this.words(150, 550))}, ${q(this.pick(WORDS))}, ${company})`;
      }
      case 'company': {
        const address = JSON.stringify({
          street: `${this.int(1, 999)} ${this.words(8, 24)}`,
          city: this.pick(WORDS),
          postcode: String(this.int(10_000, 99_999)),
          country: 'FR',
          notes: this.words(100, 420),
        });
        return `(${q(id)}, ${q(`${this.words(5, 20)} inc`)}, ${q(`${this.pick(WORDS)}${this.int(1, 9_999)}.example.com`)}, ${this.int(1, 50_000)}, ${q(`${this.int(1_000, 99_999_999)}.${this.int(10, 99)}`)}, ${q(address)}, ${this.random() < 0.3})`;
      }
      case 'note':
        return `(${q(id)}, ${q(this.words(20, 60))}, ${q(this.words(250, 650))}, ${(this.random() * 1_000).toFixed(3)})`;
      case 'task':
        return `(${q(id)}, ${q(this.words(150, 500))}, ${q(this.pick(STATUSES))}, ${q(new Date(Date.UTC(2026, this.int(0, 11), this.int(1, 28), this.int(0, 23))).toISOString())}, ${this.random() < 0.8 ? q(randomUUID()) : 'null'})`;
    }
  }

  private static readonly INSERT_COLUMNS: Record<Table, string> = {
    person: 'id, "firstName", "lastName", email, phone, "jobTitle", city, "companyId"',
    company: 'id, name, "domainName", employees, "annualRecurringRevenue", address, "idealCustomerProfile"',
    note: 'id, title, "bodyV2", position',
    task: 'id, title, status, "dueAt", "assigneeId"',
  };

  /** One column changed per update (plus updatedAt): the value text and the SET clause. */
  private updateValue(table: Table): string {
    switch (table) {
      case 'person':
        return q(this.pick(WORDS) + this.int(1, 999));
      case 'company':
        return q(String(this.int(1, 50_000)));
      case 'note':
        return q(this.words(20, 60));
      case 'task':
        return q(this.pick(STATUSES) + this.int(1, 99));
    }
  }

  private static readonly UPDATE_SET: Record<Table, string> = {
    person: 'city = v.x',
    company: 'employees = v.x::int',
    note: 'title = v.x',
    task: 'status = v.x',
  };

  /** A row of `table` not yet touched by an update in this transaction, or null. */
  private pickForUpdate(table: Table, touched: Set<string>): string | null {
    const rows = this.live[table];
    for (let tries = 0; tries < 4; tries++) {
      const id = rows[Math.floor(this.random() * rows.length)];
      if (!touched.has(id)) return id;
    }
    return null;
  }

  /** Removes and returns a random live row of `table` (swap-remove). */
  private takeForDelete(table: Table): string {
    const rows = this.live[table];
    const index = Math.floor(this.random() * rows.length);
    const id = rows[index];
    rows[index] = rows[rows.length - 1];
    rows.pop();
    return id;
  }

  /**
   * SQL text of one transaction of exactly `size` changes. Statements run inserts, then updates, then
   * deletes per table; a row is updated at most once and deleted at most once per transaction.
   */
  transaction(size: number, insertOnly = false): string {
    const inserts: Record<Table, string[]> = { person: [], company: [], note: [], task: [] };
    const updates: Record<Table, string[]> = { person: [], company: [], note: [], task: [] };
    const deletes: Record<Table, string[]> = { person: [], company: [], note: [], task: [] };
    const touched = new Set<string>();
    for (let i = 0; i < size; i++) {
      const table = this.pick(TABLES);
      const roll = insertOnly ? 0 : this.random();
      if (this.live[table].length >= 20 && roll >= 0.85) {
        deletes[table].push(q(this.takeForDelete(table)));
        continue;
      }
      if (this.live[table].length >= 20 && roll >= 0.5) {
        const id = this.pickForUpdate(table, touched);
        if (id !== null) {
          touched.add(id);
          updates[table].push(`(${q(id)}, ${this.updateValue(table)})`);
          continue;
        }
      }
      const id = randomUUID();
      inserts[table].push(this.insertValues(table, id));
      this.live[table].push(id);
    }
    const statements: string[] = ['begin'];
    for (const table of TABLES) {
      if (inserts[table].length) statements.push(`insert into public.${table} (${CrmWriter.INSERT_COLUMNS[table]}) values ${inserts[table].join(', ')}`);
      if (updates[table].length) {
        statements.push(
          `update public.${table} t set ${CrmWriter.UPDATE_SET[table]}, "updatedAt" = now() from (values ${updates[table].join(', ')}) v(id, x) where t.id = v.id::uuid`,
        );
      }
      if (deletes[table].length) statements.push(`delete from public.${table} where id in (${deletes[table].join(', ')})`);
    }
    statements.push('commit');
    this.changes += size;
    return statements.join(';\n');
  }
}

/** Transaction sizes log-uniform in [1, max]: mostly small ones, some large (mean about max / ln(max)). */
export function transactionSize(random: () => number, max: number): number {
  return Math.min(max, Math.max(1, Math.floor(Math.exp(random() * Math.log(max + 1)))));
}

/** Inserts `perTable` rows into each table (before any slot exists: not part of any backlog). */
export async function seed(client: pg.ClientBase, writer: CrmWriter, rows: number): Promise<void> {
  for (let done = 0; done < rows; done += 1_000) await client.query(writer.transaction(Math.min(1_000, rows - done), true));
  writer.changes = 0;
}

/** Writes `total` changes in transactions of 1 to `maxTransaction` changes, back to back, on one connection. */
export async function writeBacklog(
  client: pg.ClientBase,
  writer: CrmWriter,
  random: () => number,
  total: number,
  maxTransaction: number,
  onProgress?: (written: number) => void,
): Promise<{ changes: number; transactions: number; seconds: number }> {
  const started = performance.now();
  let written = 0;
  let transactions = 0;
  while (written < total) {
    const size = Math.min(total - written, transactionSize(random, maxTransaction));
    await client.query(writer.transaction(size));
    written += size;
    transactions++;
    onProgress?.(written);
  }
  return { changes: written, transactions, seconds: (performance.now() - started) / 1000 };
}

/**
 * A steady `rate` of changes per second for `durationMs`, in transactions of 1 to `maxTransaction`
 * changes, over several connections (each with its own writer and rows, so they never wait on each
 * other's row locks). Returns what was actually committed.
 */
export async function writePaced(
  pool: pg.Pool,
  rate: number,
  durationMs: number,
  options: { connections: number; maxTransaction: number; seed: number },
): Promise<{ changes: number; transactions: number; seconds: number; achievedRate: number }> {
  const started = performance.now();
  const end = started + durationMs;
  let issued = 0;
  let transactions = 0;
  const due = (): number => Math.min(Math.floor((rate * (performance.now() - started)) / 1000), Math.floor((rate * durationMs) / 1000));
  const loop = async (index: number): Promise<void> => {
    const random = seededRandom(options.seed + index);
    const writer = new CrmWriter(random);
    const client = await pool.connect();
    try {
      while (performance.now() < end || issued < due()) {
        const owed = due() - issued;
        if (owed <= 0) {
          if (performance.now() >= end) break;
          // Sleep until the next change is due (setTimeout has ~1 ms resolution).
          const nextAt = started + ((issued + 1) * 1000) / rate;
          await new Promise((resolve) => setTimeout(resolve, Math.max(0, nextAt - performance.now())));
          continue;
        }
        const size = Math.min(owed, 1 + Math.floor(random() * options.maxTransaction));
        issued += size;
        transactions++;
        await client.query(writer.transaction(size));
      }
    } finally {
      client.release();
    }
  };
  await Promise.all(Array.from({ length: options.connections }, (_, i) => loop(i)));
  const seconds = (performance.now() - started) / 1000;
  return { changes: issued, transactions, seconds, achievedRate: issued / seconds };
}
