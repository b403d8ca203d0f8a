/**
 * Column values: Postgres text output (as pgoutput sends it) -> the JSON value the payload promises
 * (int8 and numeric as strings, json parsed, timestamptz as ISO-8601 UTC, bytea as base64, ...).
 *
 * Pure and private: we never touch pg's global type parsers, so the bridge's own queries and any
 * host application keep their settings, and the rules here are the only ones that apply.
 *
 * Data never throws here. A value we cannot read (an unexpected DateStyle, a type dropped since,
 * a malformed array) goes out as its Postgres text, which is always a faithful representation.
 *
 * The text forms assumed are those of the server defaults, which the replication session should pin:
 * DateStyle ISO, bytea_output hex (escape is read too), extra_float_digits >= 1 (shortest exact floats).
 */

import { timestamptzToIso } from './timestamptz.js';

export type PgTypeKind = 'base' | 'enum' | 'domain' | 'array' | 'composite' | 'range' | 'other';

export interface PgType {
  oid: number;
  name: string;
  kind: PgTypeKind;
  /** arrays: element type oid, else 0 */
  elementOid: number;
  /** domains: base type oid, else 0 */
  baseOid: number;
  /**
   * This type's typdelim: what separates elements of arrays *of this type* (Postgres keeps the
   * delimiter on the element type). ',' for nearly all; ';' for box and domains over it.
   */
  delimiter: string;
}

export type TypeLookup = (oid: number) => PgType | undefined;

/**
 * A json or jsonb value, kept as the (already valid) JSON text Postgres printed. The router splices
 * the text into the payload unchanged: parsing it to JS values and serialising again would round
 * numbers to doubles (12345678901234567890 -> 12345678901234567000, 1e400 -> null). toJSON() gives
 * the parsed value to anyone who serialises a row with JSON.stringify.
 */
export class RawJson {
  /** Set by stringifyPayload while it runs: toJSON() then hands out placeholders for the raw text. */
  static collector: string[] | null = null;

  constructor(readonly text: string) {}

  toJSON(): unknown {
    const collector = RawJson.collector;
    if (collector === null) return JSON.parse(this.text);
    collector.push(this.text);
    // NUL cannot occur in Postgres text, names or jsonb strings, so this placeholder cannot collide.
    return `\u0000${collector.length - 1}\u0000`;
  }

  toString(): string {
    return this.text;
  }
}

/** How a built-in type's text becomes JSON. 0 means "not built in: ask the lookup". */
const enum Conversion {
  Lookup = 0,
  /** Postgres text unchanged: int8 and numeric (no precision lost), dates, uuid, text, ... */
  Text,
  Bool,
  /** int2, int4, oid, float4, float8; NaN and ±Infinity stay strings, JSON has no such numbers. */
  Number,
  Json,
  Bytea,
  Timestamptz,
  Array,
}

/**
 * The built-in types, checked against pg_type on PostgreSQL 15 (these OIDs are fixed in pg_type.dat
 * and have not changed across releases). Row: name, oid, array type oid, conversion, array delimiter.
 * Only box uses ';' (its text contains commas). A type missing here still converts correctly: the
 * catalog loads it, this table only saves that query for common types.
 */
const BUILTIN_TYPES: ReadonlyArray<readonly [name: string, oid: number, arrayOid: number, conversion: Conversion, delimiter?: string]> = [
  ['bool', 16, 1000, Conversion.Bool],
  ['bytea', 17, 1001, Conversion.Bytea],
  ['char', 18, 1002, Conversion.Text],
  ['name', 19, 1003, Conversion.Text],
  ['int8', 20, 1016, Conversion.Text],
  ['int2', 21, 1005, Conversion.Number],
  ['int4', 23, 1007, Conversion.Number],
  ['text', 25, 1009, Conversion.Text],
  ['oid', 26, 1028, Conversion.Number],
  ['json', 114, 199, Conversion.Json],
  ['xml', 142, 143, Conversion.Text],
  ['box', 603, 1020, Conversion.Text, ';'],
  ['cidr', 650, 651, Conversion.Text],
  ['float4', 700, 1021, Conversion.Number],
  ['float8', 701, 1022, Conversion.Number],
  ['macaddr8', 774, 775, Conversion.Text],
  ['money', 790, 791, Conversion.Text],
  ['macaddr', 829, 1040, Conversion.Text],
  ['inet', 869, 1041, Conversion.Text],
  ['bpchar', 1042, 1014, Conversion.Text],
  ['varchar', 1043, 1015, Conversion.Text],
  ['date', 1082, 1182, Conversion.Text],
  ['time', 1083, 1183, Conversion.Text],
  ['timestamp', 1114, 1115, Conversion.Text],
  ['timestamptz', 1184, 1185, Conversion.Timestamptz],
  ['interval', 1186, 1187, Conversion.Text],
  ['timetz', 1266, 1270, Conversion.Text],
  ['bit', 1560, 1561, Conversion.Text],
  ['varbit', 1562, 1563, Conversion.Text],
  ['numeric', 1700, 1231, Conversion.Text],
  ['uuid', 2950, 2951, Conversion.Text],
  ['tsvector', 3614, 3643, Conversion.Text],
  ['jsonb', 3802, 3807, Conversion.Json],
  ['int4range', 3904, 3905, Conversion.Text],
  ['numrange', 3906, 3907, Conversion.Text],
  ['tsrange', 3908, 3909, Conversion.Text],
  ['tstzrange', 3910, 3911, Conversion.Text],
  ['daterange', 3912, 3913, Conversion.Text],
  ['int8range', 3926, 3927, Conversion.Text],
  ['jsonpath', 4072, 4073, Conversion.Text],
];

// Dense tables indexed by OID: the hot path is two typed-array reads and a switch, no hashing.
const BUILTIN_OID_LIMIT = 4096;
const CONVERSION = new Uint8Array(BUILTIN_OID_LIMIT);
const ELEMENT_OID = new Uint16Array(BUILTIN_OID_LIMIT);
const DELIMITER = new Uint8Array(BUILTIN_OID_LIMIT);
for (const [name, oid, arrayOid, conversion, delimiter = ','] of BUILTIN_TYPES) {
  if (oid >= BUILTIN_OID_LIMIT || arrayOid >= BUILTIN_OID_LIMIT) throw new Error(`BUILTIN_TYPES: ${name} OID beyond the table`);
  CONVERSION[oid] = conversion;
  CONVERSION[arrayOid] = Conversion.Array;
  ELEMENT_OID[arrayOid] = oid;
  DELIMITER[arrayOid] = delimiter.charCodeAt(0);
}

const BOX_OID = 603;
const COMMA = 0x2c;
const SEMICOLON = 0x3b;

/** Domains over domains are legal; a cycle is not, but a bad lookup must not hang the daemon. */
const MAX_TYPE_DEPTH = 32;

/** Converts one column's text form to its JSON value. */
export function convertValue(text: string, typeOid: number, lookup: TypeLookup): unknown {
  return convert(text, typeOid, lookup, 0);
}

/** OIDs whose conversion needs no catalog lookup (built-in types and their arrays). */
export function isBuiltinType(oid: number): boolean {
  return oid >= 0 && oid < BUILTIN_OID_LIMIT && CONVERSION[oid] !== Conversion.Lookup;
}

function convert(text: string, oid: number, lookup: TypeLookup, depth: number): unknown {
  switch (oid < BUILTIN_OID_LIMIT ? CONVERSION[oid] : Conversion.Lookup) {
    case Conversion.Text:
      return text;
    case Conversion.Bool:
      return text === 't' ? true : text === 'f' ? false : text;
    case Conversion.Number: {
      const n = Number(text);
      return Number.isFinite(n) ? n : text;
    }
    case Conversion.Json:
      return parseJson(text);
    case Conversion.Bytea:
      return byteaToBase64(text);
    case Conversion.Timestamptz:
      return timestamptzToIso(text);
    case Conversion.Array:
      return parseArray(text, ELEMENT_OID[oid]!, DELIMITER[oid]!, lookup, depth);
    default:
      return convertCustom(text, oid, lookup, depth);
  }
}

/** The delimiter array_out used between elements of type `elementOid`. */
function elementDelimiter(elementOid: number, lookup: TypeLookup): number {
  if (elementOid < BUILTIN_OID_LIMIT && CONVERSION[elementOid] !== Conversion.Lookup) return elementOid === BOX_OID ? SEMICOLON : COMMA;
  return (lookup(elementOid)?.delimiter ?? ',').charCodeAt(0);
}

function convertCustom(text: string, oid: number, lookup: TypeLookup, depth: number): unknown {
  if (depth >= MAX_TYPE_DEPTH) return text;
  const type = lookup(oid);
  if (type === undefined) return text;
  switch (type.kind) {
    case 'domain':
      return convert(text, type.baseOid, lookup, depth + 1);
    case 'array':
      return parseArray(text, type.elementOid, elementDelimiter(type.elementOid, lookup), lookup, depth);
    default:
      // enum, composite, range, extension base types (citext, hstore, geometry ...): their text.
      return text;
  }
}

/** Validated once here, so the router may splice the text into a payload without checking again. */
function parseJson(text: string): RawJson | string {
  try {
    JSON.parse(text);
    return new RawJson(text);
  } catch {
    // Not JSON after all (cannot happen for json/jsonb output): its text is still a faithful value.
    return text;
  }
}

// ---------------------------------------------------------------------------------------------------
// bytea

/**
 * Hex format `\x0001ff` (the default since 9.0), or the legacy escape format: printable ASCII as is,
 * `\\` for a backslash, `\ooo` (octal) for every other byte, e.g. `\000\001abc\\\377`.
 */
function byteaToBase64(text: string): string {
  if (text.charCodeAt(0) === 0x5c && text.charCodeAt(1) === 0x78) {
    // "\x" cannot start an escape-format value: a leading backslash byte would print as "\\".
    return Buffer.from(text.substring(2), 'hex').toString('base64');
  }
  const bytes = Buffer.allocUnsafe(text.length);
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c !== 0x5c) {
      bytes[n++] = c;
    } else if (text.charCodeAt(i + 1) === 0x5c) {
      bytes[n++] = 0x5c;
      i++;
    } else {
      bytes[n++] = ((text.charCodeAt(i + 1) - 48) << 6) | ((text.charCodeAt(i + 2) - 48) << 3) | (text.charCodeAt(i + 3) - 48);
      i += 3;
    }
  }
  return bytes.toString('base64', 0, n);
}

// ---------------------------------------------------------------------------------------------------
// arrays

/** Returned (not thrown: bad data is not exceptional enough to unwind for) by the array reader. */
const MALFORMED = Symbol('malformed array');

/**
 * array_out format: `{e1,e2}`, nested braces per dimension (`{{1,2},{3,4}}`), a `[lo:hi]...=` prefix
 * when a lower bound is not 1 (dropped: JSON arrays start at 0 anyway). An element is double-quoted
 * when it is empty, is NULL in any case, or holds braces, quotes, backslashes, whitespace or the
 * delimiter; inside quotes `\` escapes the next character. Only an unquoted NULL is SQL NULL.
 */
function parseArray(text: string, elementOid: number, delimiter: number, lookup: TypeLookup, depth: number): unknown {
  let start = 0;
  if (text.charCodeAt(0) === 0x5b) {
    // '[' dimensions
    start = text.indexOf('=') + 1;
    if (start === 0) return text;
  }
  // Vectors such as int2vector ("1 2 3") share the array category but not this format.
  if (text.charCodeAt(start) !== 0x7b) return text;
  const reader = new ArrayReader(text, start, elementOid, delimiter, lookup, depth + 1);
  const result = reader.level();
  return result === MALFORMED || reader.pos !== text.length ? text : result;
}

class ArrayReader {
  constructor(
    private readonly text: string,
    public pos: number,
    private readonly elementOid: number,
    private readonly delimiter: number,
    private readonly lookup: TypeLookup,
    private readonly depth: number,
  ) {}

  /** One `{...}` level, starting at its '{'. */
  level(): unknown[] | typeof MALFORMED {
    const { text, delimiter } = this;
    const out: unknown[] = [];
    if (text.charCodeAt(++this.pos) === 0x7d) {
      this.pos++;
      return out;
    }
    for (;;) {
      const c = text.charCodeAt(this.pos);
      if (c === 0x7b) {
        const inner = this.level();
        if (inner === MALFORMED) return MALFORMED;
        out.push(inner);
      } else if (c === 0x22) {
        const element = this.quoted();
        if (element === MALFORMED) return MALFORMED;
        out.push(convert(element, this.elementOid, this.lookup, this.depth));
      } else {
        const begin = this.pos;
        let e = c;
        while (e !== delimiter && e !== 0x7d && this.pos < text.length) e = text.charCodeAt(++this.pos);
        if (this.pos === begin) return MALFORMED;
        const element = text.slice(begin, this.pos);
        out.push(element === 'NULL' ? null : convert(element, this.elementOid, this.lookup, this.depth));
      }
      const next = text.charCodeAt(this.pos++);
      if (next === 0x7d) return out;
      if (next !== delimiter) return MALFORMED;
    }
  }

  /** A double-quoted element, starting at its opening quote; one slice when nothing is escaped. */
  private quoted(): string | typeof MALFORMED {
    const { text } = this;
    let value = '';
    let chunk = ++this.pos;
    for (;;) {
      const c = text.charCodeAt(this.pos);
      if (c === 0x22) {
        value += text.slice(chunk, this.pos++);
        return value;
      }
      if (c === 0x5c) {
        value += text.slice(chunk, this.pos);
        chunk = this.pos + 1; // the escaped character starts the next chunk
        this.pos += 2;
      } else if (this.pos >= text.length) {
        return MALFORMED; // the text ended inside quotes
      } else {
        this.pos++;
      }
    }
  }
}
