/**
 * `source.tables` maps "schema.table" to an object name. The schema part may be a glob (`workspace_*`)
 * so that one entry covers Twenty's per-workspace schemas. Exact entries win over patterns.
 */
export type ObjectResolver = (schema: string, table: string) => string | undefined;

export function compileObjectMapping(tables: Record<string, string>): ObjectResolver {
  const exact = new Map<string, string>();
  const patterns: Array<{ schema: RegExp; table: string; object: string }> = [];
  for (const [qualified, object] of Object.entries(tables)) {
    const dot = qualified.indexOf('.');
    const schema = qualified.slice(0, dot);
    const table = qualified.slice(dot + 1);
    if (schema.includes('*')) patterns.push({ schema: globToRegExp(schema), table, object });
    else exact.set(qualified, object);
  }
  const cache = new Map<string, string | undefined>();
  return (schema, table) => {
    const qualified = `${schema}.${table}`;
    if (cache.has(qualified)) return cache.get(qualified);
    let object = exact.get(qualified);
    if (object === undefined) object = patterns.find((p) => p.table === table && p.schema.test(schema))?.object;
    cache.set(qualified, object);
    return object;
  };
}

function globToRegExp(glob: string): RegExp {
  const escaped = glob.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*');
  return new RegExp(`^${escaped}$`);
}
