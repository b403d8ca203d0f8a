import { quoteIdent, type Queryable } from '../database.js';

/** A table the bridge streams, and where it stands with the publication. */
export interface TableState {
  schema: string;
  table: string;
  published: boolean;
  /** REPLICA IDENTITY FULL: updates carry the old row, so updatedFields and soft deletes can be told. */
  full: boolean;
  /** The bridge's role can change it (owns it, or is a member of its owner). */
  manageable: boolean;
}

/** Where each table stands: in the publication or not, FULL or not, and whether this role may fix it. */
export async function tableStates(db: Queryable, publication: string, tables: ReadonlyArray<{ schema: string; table: string }>): Promise<TableState[]> {
  if (tables.length === 0) return [];
  const { rows } = await db.query(
    `select t.schema, t.table,
            exists (select 1 from pg_publication_tables p where p.pubname = $3 and p.schemaname = t.schema and p.tablename = t.table) as published,
            c.relreplident = 'f' as full,
            pg_has_role(current_user, c.relowner, 'USAGE') as manageable
       from unnest($1::text[], $2::text[]) as t(schema, "table")
       join pg_namespace n on n.nspname = t.schema
       join pg_class c on c.relnamespace = n.oid and c.relname = t.table`,
    [tables.map((t) => t.schema), tables.map((t) => t.table), publication],
  );
  return rows as TableState[];
}

export interface PublicationSyncResult {
  added: string[];
  madeFull: string[];
  /** One line per table the bridge could not fix, with the reason Postgres gave. */
  problems: string[];
}

/**
 * Adds the tables missing from the publication, each made REPLICA IDENTITY FULL first. One table at a
 * time: a table this role may not change is reported and the others still join. Tables are never
 * removed here: a dropped table leaves the publication by itself.
 */
export async function addMissingTables(
  db: Queryable,
  publication: string,
  tables: ReadonlyArray<{ schema: string; table: string }>,
): Promise<PublicationSyncResult> {
  const result: PublicationSyncResult = { added: [], madeFull: [], problems: [] };
  for (const state of await tableStates(db, publication, tables)) {
    const name = `${quoteIdent(state.schema)}.${quoteIdent(state.table)}`;
    const label = `${state.schema}.${state.table}`;
    try {
      if (!state.full) {
        await db.query(`alter table ${name} replica identity full`);
        result.madeFull.push(label);
      }
      if (!state.published) {
        await db.query(`alter publication ${quoteIdent(publication)} add table ${name}`);
        result.added.push(label);
      }
    } catch (error) {
      result.problems.push(`${label}: ${(error as Error).message}`);
    }
  }
  return result;
}
