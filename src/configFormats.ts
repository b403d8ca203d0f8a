import convict from 'convict';

/**
 * The convict formats the configuration schema uses. Registered when this module loads: config.ts
 * imports it before it builds the schema.
 */

convict.addFormat({
  name: 'postgres-url',
  validate(value: unknown) {
    if (typeof value !== 'string' || !/^postgres(ql)?:\/\//.test(value)) {
      throw new Error('must be a postgres:// or postgresql:// URL, e.g. postgres://user:pass@host:5432/db');
    }
  },
});

convict.addFormat({
  name: 'positive-int-array',
  validate(value: unknown) {
    if (!Array.isArray(value) || value.length === 0 || !value.every((n) => Number.isFinite(n) && n >= 0)) {
      throw new Error('must be a non-empty JSON array of non-negative numbers (seconds), e.g. [5,300,1800]');
    }
  },
  coerce: (value: string) => safeJson(value),
});

convict.addFormat({
  name: 'table-map',
  // Kept inside convict as [{table, object}] pairs: convict splits object keys on dots, and table
  // names contain one. Users write (and the bridge reads) a plain {"schema.table": "object"} map.
  validate(value: unknown) {
    if (!Array.isArray(value) || value.length === 0) {
      throw new Error('must be a non-empty object mapping "schema.table" to an object name, e.g. {"public.person":"person"}');
    }
    for (const { table, object } of value as TablePair[]) {
      if (typeof table !== 'string' || !/^[^.\s]+\.[^.\s]+$/.test(table)) throw new Error(`table "${table}" must be written "schema.table"`);
      if (typeof object !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(object)) {
        throw new Error(`object name for "${table}" must be an identifier such as "person"`);
      }
    }
  },
  coerce: (value: string) => toTablePairs(safeJson(value)),
});

export interface TablePair {
  table: string;
  object: string;
}

export function toTablePairs(value: unknown): unknown {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return value;
  return Object.entries(value).map(([table, object]) => ({ table, object }));
}

convict.addFormat({
  name: 'string-array',
  validate(value: unknown) {
    if (!Array.isArray(value) || !value.every((s) => typeof s === 'string')) {
      throw new Error('must be a JSON array of strings, e.g. ["10.0.0.0/8"]');
    }
  },
  coerce: (value: string) =>
    value.trim().startsWith('[')
      ? safeJson(value)
      : value
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean),
});

/** `true`/`1` and `false`/`0`, any case; anything else is left as it is, for validation to refuse. */
export function parseBooleanText(value: string): boolean | string {
  const lower = value.toLowerCase();
  if (lower === 'true' || lower === '1') return true;
  if (lower === 'false' || lower === '0') return false;
  return value;
}

convict.addFormat({
  // convict's own Boolean reads every text but "false" as true: "0", "no", "off" and "" would switch
  // a guard such as delivery.allowPrivateTargets on.
  name: 'strict-boolean',
  validate(value: unknown) {
    if (typeof value !== 'boolean') throw new Error('must be true, false, 1 or 0 (any case; a JSON boolean in a config file)');
  },
  coerce: (value: string) => parseBooleanText(value),
});

convict.addFormat({
  name: 'identifier',
  validate(value: unknown) {
    // Slot and publication names go unquoted into replication commands: keep them plain lower-case.
    if (typeof value !== 'string' || !/^[a-z_][a-z0-9_]{0,62}$/.test(value)) {
      throw new Error('must be a lower-case identifier (a-z, 0-9, _), at most 63 characters');
    }
  },
});

export function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text; // left for validation to reject with the key's expected form
  }
}
