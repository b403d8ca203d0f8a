import type { Queryable } from '../database.js';
import type { TwentyCatalog, TwentyField, TwentyObject } from './types.js';

/**
 * Twenty never sends events for these standard objects: timeline activities are Twenty's own record
 * of events (an event about an event would echo every write).
 */
const SILENT_STANDARD_OBJECTS: ReadonlySet<string> = new Set(['timelineActivity']);

/** Relation kinds whose field is stored as a join column on this object's table. */
const RELATION_TYPES: ReadonlySet<string> = new Set(['RELATION', 'MORPH_RELATION']);

export interface ObjectRow {
  id: string;
  workspaceId: string;
  nameSingular: string;
  isCustom: boolean;
  schema: string;
}

export interface FieldRow {
  objectId: string;
  name: string;
  type: string;
  settings: Record<string, unknown> | null;
}

/** Twenty's table naming: a custom object's table starts with an underscore (`_pet`). */
export function tableNameOf(nameSingular: string, isCustom: boolean): string {
  return isCustom ? `_${nameSingular}` : nameSingular;
}

/** The column a many-to-one relation field keeps its target id in, or null. */
function joinColumnOf(field: FieldRow): string | null {
  if (!RELATION_TYPES.has(field.type) || field.settings === null) return null;
  const { relationType, joinColumnName } = field.settings;
  if (relationType !== 'MANY_TO_ONE' || typeof joinColumnName !== 'string' || joinColumnName === '') return null;
  return joinColumnName;
}

/** Pure: metadata rows -> the catalog the pipeline routes with. */
export function buildCatalog(objectRows: readonly ObjectRow[], fieldRows: readonly FieldRow[], workspaceCount: number): TwentyCatalog {
  const fieldsByObject = new Map<string, TwentyField[]>();
  for (const row of fieldRows) {
    let list = fieldsByObject.get(row.objectId);
    if (!list) fieldsByObject.set(row.objectId, (list = []));
    list.push({ name: row.name, type: row.type, joinColumn: joinColumnOf(row) });
  }
  const byTable = new Map<string, TwentyObject>();
  const objects: TwentyObject[] = [];
  for (const row of objectRows) {
    if (!row.isCustom && SILENT_STANDARD_OBJECTS.has(row.nameSingular)) continue;
    const object: TwentyObject = {
      id: row.id,
      workspaceId: row.workspaceId,
      nameSingular: row.nameSingular,
      isCustom: row.isCustom,
      schema: row.schema,
      table: tableNameOf(row.nameSingular, row.isCustom),
      fields: fieldsByObject.get(row.id) ?? [],
    };
    byTable.set(`${object.schema}\u0000${object.table}`, object);
    objects.push(object);
  }
  objects.sort((a, b) => (a.schema === b.schema ? (a.table < b.table ? -1 : 1) : a.schema < b.schema ? -1 : 1));
  return {
    objectFor: (schema, table) => byTable.get(`${schema}\u0000${table}`),
    objects,
    workspaceCount,
  };
}

export const EMPTY_CATALOG: TwentyCatalog = buildCatalog([], [], 0);

/** Which of the metadata's optional places exist: Twenty's core schema has changed over its releases. */
interface CoreShape {
  databaseSchemaColumn: boolean;
  dataSourceTable: boolean;
}

async function coreShape(db: Queryable): Promise<CoreShape> {
  const { rows } = await db.query(
    `select exists (select 1 from pg_attribute where attrelid = to_regclass('core.workspace') and attname = 'databaseSchema' and not attisdropped) as "databaseSchemaColumn",
            to_regclass('core."dataSource"') is not null as "dataSourceTable"`,
  );
  return rows[0] as CoreShape;
}

/** Whether this database holds Twenty's core metadata at all. */
export async function hasTwentyMetadata(db: Queryable): Promise<boolean> {
  const { rows } = await db.query(
    `select to_regclass('core.workspace') is not null and to_regclass('core."objectMetadata"') is not null
            and to_regclass('core."fieldMetadata"') is not null as ok`,
  );
  return rows[0].ok === true;
}

/**
 * The schema of each workspace: `core.workspace."databaseSchema"` where set, else the newest
 * `core."dataSource".schema` of the workspace (older releases kept it only there).
 */
function workspaceSchemasSql(shape: CoreShape): string {
  const fromWorkspace = shape.databaseSchemaColumn ? `nullif(w."databaseSchema", '')` : 'null';
  const fromDataSource = shape.dataSourceTable
    ? `(select d.schema from core."dataSource" d where d."workspaceId" = w.id and coalesce(d.schema, '') <> '' order by d."createdAt" desc limit 1)`
    : 'null';
  return `select w.id as "workspaceId", coalesce(${fromWorkspace}, ${fromDataSource}) as schema from core.workspace w`;
}

/**
 * Reads the active objects and fields of every workspace whose schema exists. Objects whose table does
 * not exist (yet) are left out: they are picked up by the next load.
 */
export async function loadTwentyCatalog(db: Queryable): Promise<TwentyCatalog> {
  const shape = await coreShape(db);
  // pg_class, not to_regclass(): a role without USAGE on a workspace schema may still read the catalogs.
  const { rows: objectRows } = await db.query(
    `with ws as (${workspaceSchemasSql(shape)})
     select o.id::text as id, o."workspaceId"::text as "workspaceId", o."nameSingular", o."isCustom", ws.schema
       from core."objectMetadata" o join ws on ws."workspaceId" = o."workspaceId"
       join pg_namespace n on n.nspname = ws.schema
       join pg_class c on c.relnamespace = n.oid and c.relname = case when o."isCustom" then '_' else '' end || o."nameSingular"
      where o."isActive"`,
  );
  const { rows: counted } = await db.query(
    `with ws as (${workspaceSchemasSql(shape)}) select count(*)::int as n from ws join pg_namespace n on n.nspname = ws.schema`,
  );
  const { rows: fieldRows } = await db.query(
    `select f."objectMetadataId"::text as "objectId", f.name, f.type::text as type, f.settings
       from core."fieldMetadata" f where f."isActive" and f."objectMetadataId" = any($1::uuid[])
      order by f."objectMetadataId", f."createdAt", f.name`,
    [objectRows.map((r) => r.id as string)],
  );
  return buildCatalog(objectRows as ObjectRow[], fieldRows as FieldRow[], counted[0].n as number);
}

/**
 * A cheap summary of the metadata: it changes whenever a workspace, object or field is added, removed
 * or updated (Twenty stamps "updatedAt" on every metadata write), so a full load runs only then.
 */
export async function metadataFingerprint(db: Queryable): Promise<string> {
  const shape = await coreShape(db);
  const part = (table: string) => `(select count(*)::text || '/' || coalesce(max("updatedAt")::text, '') from ${table})`;
  const parts = [part('core.workspace'), part('core."objectMetadata"'), part('core."fieldMetadata"')];
  if (shape.dataSourceTable) parts.push(part('core."dataSource"'));
  const { rows } = await db.query(`select ${parts.join(` || '|' || `)} as fingerprint`);
  return rows[0].fingerprint as string;
}
