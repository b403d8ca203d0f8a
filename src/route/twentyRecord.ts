import type { Row } from '../decode/types.js';
import type { TwentyField, TwentyObject } from '../twenty/types.js';

/**
 * Rows of Twenty's workspace tables -> records as Twenty presents them (its webhooks and API):
 * composite fields folded from their flattened columns (`nameFirstName` -> `name.firstName`), a
 * many-to-one relation as its flat join column (`companyId`), columns with no active field left out,
 * and Twenty's null-equivalents applied (a null TEXT is "", a null list is []).
 */

/** Composite field types and their properties, in Twenty's definition order. */
const COMPOSITE_PROPERTIES: Readonly<Record<string, readonly string[]>> = {
  FULL_NAME: ['firstName', 'lastName'],
  EMAILS: ['primaryEmail', 'additionalEmails'],
  PHONES: ['primaryPhoneNumber', 'primaryPhoneCountryCode', 'primaryPhoneCallingCode', 'additionalPhones'],
  LINKS: ['primaryLinkLabel', 'primaryLinkUrl', 'secondaryLinks'],
  CURRENCY: ['amountMicros', 'currencyCode'],
  ADDRESS: [
    'addressStreet1',
    'addressStreet2',
    'addressStreet3',
    'addressCity',
    'addressPostcode',
    'addressState',
    'addressCountry',
    'addressLat',
    'addressLng',
  ],
  ACTOR: ['source', 'workspaceMemberId', 'name', 'context'],
  RICH_TEXT_V2: ['blocknote', 'markdown'],
  // Since Twenty 1.20 the composite rich text is called RICH_TEXT; before, RICH_TEXT was one text column.
  RICH_TEXT: ['blocknote', 'markdown'],
};

/** What Twenty shows for a null property of a composite field (properties not listed stay null). */
const COMPOSITE_NULL_EQUIVALENTS: Readonly<Record<string, Readonly<Record<string, unknown>>>> = {
  FULL_NAME: { firstName: '', lastName: '' },
  EMAILS: { primaryEmail: '', additionalEmails: [] },
  PHONES: { primaryPhoneNumber: '', primaryPhoneCountryCode: '', primaryPhoneCallingCode: '', additionalPhones: [] },
  LINKS: { primaryLinkUrl: '', primaryLinkLabel: '', secondaryLinks: [] },
  ADDRESS: { addressStreet1: '', addressStreet2: '', addressCity: '', addressState: '', addressCountry: '', addressPostcode: '' },
  ACTOR: { name: '' },
  RICH_TEXT_V2: { markdown: '' },
  RICH_TEXT: { markdown: '' },
};

/** An ACTOR whose source is unknown, as Twenty shows it: written by hand. */
const EMPTY_ACTOR = { source: 'MANUAL', workspaceMemberId: null, name: '', context: {} };

/** Fields whose change is never reported in `updatedFields` and never makes an update worth sending. */
const UNREPORTED_FIELD_NAMES: ReadonlySet<string> = new Set(['updatedAt']);
const UNREPORTED_FIELD_TYPES: ReadonlySet<string> = new Set(['TS_VECTOR', 'POSITION']);

type Slot =
  | { kind: 'scalar'; key: string; column: string; field: TwentyField }
  | { kind: 'join'; key: string; column: string; field: TwentyField }
  | { kind: 'composite'; key: string; field: TwentyField; properties: ReadonlyArray<{ name: string; column: string }> };

/** How to present one relation's rows: one slot per key of the record, in column order. */
export interface Presentation {
  readonly slots: readonly Slot[];
}

/** `primaryEmail` -> `PrimaryEmail`: Twenty names a composite's columns field + PascalCase property. */
function pascal(name: string): string {
  return name.charAt(0).toUpperCase() + name.slice(1);
}

function isComposite(field: TwentyField, columns: ReadonlySet<string>): boolean {
  const properties = COMPOSITE_PROPERTIES[field.type];
  if (!properties) return false;
  // A RICH_TEXT field of an older workspace is a single text column.
  return field.type !== 'RICH_TEXT' || columns.has(`${field.name}${pascal(properties[0]!)}`);
}

/**
 * Pure: the presentation of an object's rows given the columns the table has now. Records keep the
 * table's column order, a composite field standing where its first column is.
 */
export function compilePresentation(object: Pick<TwentyObject, 'fields'>, columnNames: readonly string[]): Presentation {
  const columns = new Set(columnNames);
  const byColumn = new Map<string, { field: TwentyField; composite: boolean; join: boolean }>();
  for (const field of object.fields) {
    if (isComposite(field, columns)) {
      for (const property of COMPOSITE_PROPERTIES[field.type]!) byColumn.set(`${field.name}${pascal(property)}`, { field, composite: true, join: false });
    } else if (field.joinColumn !== null) {
      byColumn.set(field.joinColumn, { field, composite: false, join: true });
    } else if (field.type !== 'RELATION' && field.type !== 'MORPH_RELATION') {
      byColumn.set(field.name, { field, composite: false, join: false });
    }
  }
  const slots: Slot[] = [];
  const placed = new Set<TwentyField>();
  for (const column of columnNames) {
    const mapped = byColumn.get(column);
    if (!mapped || placed.has(mapped.field)) continue;
    placed.add(mapped.field);
    const { field } = mapped;
    if (mapped.composite) {
      const properties = COMPOSITE_PROPERTIES[field.type]!.map((name) => ({ name, column: `${field.name}${pascal(name)}` })).filter((p) =>
        columns.has(p.column),
      );
      slots.push({ kind: 'composite', key: field.name, field, properties });
    } else if (mapped.join) {
      slots.push({ kind: 'join', key: column, column, field });
    } else {
      slots.push({ kind: 'scalar', key: field.name, column, field });
    }
  }
  return { slots };
}

function presentScalar(type: string, value: unknown): unknown {
  if (value !== null) return value;
  if (type === 'TEXT') return '';
  if (type === 'MULTI_SELECT' || type === 'ARRAY') return [];
  return null;
}

function presentComposite(slot: Extract<Slot, { kind: 'composite' }>, row: Row): Record<string, unknown> | null {
  const type = slot.field.type;
  const nullEquivalents = COMPOSITE_NULL_EQUIVALENTS[type];
  const out: Record<string, unknown> = {};
  for (const property of slot.properties) {
    // A column Postgres did not send (an unchanged large value with no old image) is left out, not faked.
    if (!(property.column in row)) continue;
    let value = row[property.column];
    if (value === null && nullEquivalents && property.name in nullEquivalents) value = nullEquivalents[property.name];
    // Twenty reads amountMicros (numeric) as an integer: a number in JSON.
    else if (type === 'CURRENCY' && property.name === 'amountMicros' && typeof value === 'string' && value !== '') value = Number.parseInt(value, 10);
    out[property.name] = value;
  }
  if (type === 'ACTOR' && out.source == null) return { ...EMPTY_ACTOR };
  return out;
}

/** Pure: one row -> the record Twenty presents. Keys follow the presentation's slots. */
export function presentRecord(presentation: Presentation, row: Row): Record<string, unknown> {
  const record: Record<string, unknown> = {};
  for (const slot of presentation.slots) {
    if (slot.kind === 'composite') record[slot.key] = presentComposite(slot, row);
    else if (slot.column in row) record[slot.key] = slot.kind === 'join' ? row[slot.column] : presentScalar(slot.field.type, row[slot.column]);
  }
  return record;
}

/**
 * Pure: the field names whose presented value differs between two records, as Twenty reports them:
 * never `updatedAt`, the search vector or a position; a many-to-one relation as its field name and its
 * join column (`company`, `companyId`).
 */
export function updatedFieldsOf(presentation: Presentation, before: Record<string, unknown>, after: Record<string, unknown>): string[] {
  const changed: string[] = [];
  for (const slot of presentation.slots) {
    const { field } = slot;
    if (UNREPORTED_FIELD_NAMES.has(field.name) || UNREPORTED_FIELD_TYPES.has(field.type)) continue;
    if (!(slot.key in after) || !(slot.key in before)) continue;
    if (sameValue(before[slot.key], after[slot.key])) continue;
    if (slot.kind === 'join') changed.push(field.name, slot.key);
    else changed.push(slot.key);
  }
  return changed;
}

function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  // Presented values are JSON data built the same way on both sides: their serialisations compare.
  return JSON.stringify(a) === JSON.stringify(b);
}
