import { isBuiltinType, type PgType, type PgTypeKind, type TypeLookup } from './values.js';

export type CatalogQuery = (sql: string, params: unknown[]) => Promise<{ rows: any[] }>;

// oid and typelem/typbasetype arrive as text or number depending on the client's parsers: Number() both.
const LOAD_TYPES_SQL = `select t.oid, t.typname, t.typtype, t.typcategory, t.typelem, t.typbasetype, t.typdelim
  from pg_catalog.pg_type t
 where t.oid = any($1::oid[])`;

/**
 * The non-built-in types that columns use (enums, domains, arrays of them, extension types), read
 * from pg_type so values.ts can convert them synchronously. Call `ensure` with a relation's column
 * types when its Relation message arrives; `lookup` then answers without I/O.
 *
 * OIDs that pg_type does not know (a type dropped since the change was written) are not remembered:
 * their values go out as text, and a later `ensure` asks again.
 */
export class TypeCatalog {
  private readonly types = new Map<number, PgType>();

  constructor(private readonly query: CatalogQuery) {}

  readonly lookup: TypeLookup = (oid) => this.types.get(oid);

  /** Loads unknown OIDs, then the element and base types they name: one query per round. */
  async ensure(oids: number[]): Promise<void> {
    let pending = this.unknown(oids);
    // Each OID is asked for once per call, so a type missing from pg_type cannot make this loop forever.
    const asked = new Set<number>();
    while (pending.length > 0) {
      for (const oid of pending) asked.add(oid);
      const { rows } = await this.query(LOAD_TYPES_SQL, [pending]);
      const referenced: number[] = [];
      for (const row of rows) {
        const type = toPgType(row);
        this.types.set(type.oid, type);
        if (type.elementOid !== 0) referenced.push(type.elementOid);
        if (type.baseOid !== 0) referenced.push(type.baseOid);
      }
      pending = this.unknown(referenced).filter((oid) => !asked.has(oid));
    }
  }

  private unknown(oids: number[]): number[] {
    const out = new Set<number>();
    for (const oid of oids) {
      if (oid > 0 && !isBuiltinType(oid) && !this.types.has(oid)) out.add(oid);
    }
    return [...out];
  }
}

function toPgType(row: any): PgType {
  const kind = kindOf(String(row.typtype), String(row.typcategory));
  return {
    oid: Number(row.oid),
    name: String(row.typname),
    kind,
    elementOid: kind === 'array' ? Number(row.typelem) : 0,
    baseOid: kind === 'domain' ? Number(row.typbasetype) : 0,
    delimiter: row.typdelim ? String(row.typdelim) : ',',
  };
}

function kindOf(typtype: string, typcategory: string): PgTypeKind {
  switch (typtype) {
    case 'b':
      // Category, not typelem: name and point have a typelem but are not arrays.
      return typcategory === 'A' ? 'array' : 'base';
    case 'e':
      return 'enum';
    case 'd':
      return 'domain';
    case 'c':
      return 'composite';
    case 'r':
      return 'range';
    default:
      // 'p' pseudo, 'm' multirange (PG 14+): their text is the value.
      return 'other';
  }
}
