import type { Queryable } from '../database.js';

/** Primary key columns of a table in key order, or [] when it has none. */
export async function primaryKeyColumns(db: Queryable, relationId: number): Promise<string[]> {
  const { rows } = await db.query(
    `select a.attname from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
      where i.indrelid = $1 and i.indisprimary order by array_position(i.indkey, a.attnum)`,
    [relationId],
  );
  return rows.map((r) => r.attname as string);
}
