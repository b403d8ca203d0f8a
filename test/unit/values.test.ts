import { describe, it, expect } from 'vitest';
import { convertValue, isBuiltinType, RawJson, type PgType, type TypeLookup } from '../../src/decode/values.js';
import { stringifyPayload } from '../../src/route/payloadJson.js';
import { TypeCatalog } from '../../src/decode/typeCatalog.js';

// Every input below is the text form a PostgreSQL 15 server printed (`select <value>::text`, or the
// plain output for bpchar, whose ::text cast trims), with the session settings noted.

/** Built-in types must never reach the catalog. */
const noLookup: TypeLookup = (oid) => {
  throw new Error(`lookup(${oid}) called for a built-in type`);
};

type Case = [name: string, text: string, oid: number, expected: unknown];

function runCases(cases: Case[], lookup: TypeLookup = noLookup): void {
  it.each(cases)('%s', (_name, text, oid, expected) => {
    expect(convertValue(text, oid, lookup)).toStrictEqual(expected);
  });
}

describe('convertValue: scalars', () => {
  runCases([
    ['bool true', 't', 16, true],
    ['bool false', 'f', 16, false],
    ['int2', '-32768', 21, -32768],
    ['int4', '2147483647', 23, 2147483647],
    ['oid', '4294967295', 26, 4294967295],
    ['float8', '0.1', 701, 0.1],
    ['float8 exponent', '1e+300', 701, 1e300],
    ['float8 small', '1.5e-07', 701, 1.5e-7],
    ['float8 max', '1.7976931348623157e+308', 701, 1.7976931348623157e308],
    ['float8 denormal', '5e-324', 701, 5e-324],
    ['float4 shortest text, not the binary float', '3.14', 700, 3.14],
    ['float4 max', '3.4028235e+38', 700, 3.4028235e38],
    ['float8 NaN', 'NaN', 701, 'NaN'],
    ['float8 Infinity', 'Infinity', 701, 'Infinity'],
    ['float4 -Infinity', '-Infinity', 700, '-Infinity'],
    ['int8 max stays a string', '9223372036854775807', 20, '9223372036854775807'],
    ['numeric stays a string', '12345678901234567890.123456789', 1700, '12345678901234567890.123456789'],
    ['numeric NaN', 'NaN', 1700, 'NaN'],
    ['text', 'Alice', 25, 'Alice'],
    ['varchar', 'alice@example.com', 1043, 'alice@example.com'],
    ['bpchar keeps its padding', 'ab  ', 1042, 'ab  '],
    ['char', 'x', 18, 'x'],
    ['name', 'postgres', 19, 'postgres'],
    ['date', '2026-02-10', 1082, '2026-02-10'],
    ['time', '12:34:56.789', 1083, '12:34:56.789'],
    ['timetz', '12:34:56+05:30', 1266, '12:34:56+05:30'],
    ['timestamp', '2026-02-10 15:30:50.123456', 1114, '2026-02-10 15:30:50.123456'],
    ['interval', '1 year 2 mons 3 days 04:05:06.7', 1186, '1 year 2 mons 3 days 04:05:06.7'],
    ['uuid', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 2950, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'],
    ['inet', '192.168.0.1/24', 869, '192.168.0.1/24'],
    ['cidr', '10.0.0.0/8', 650, '10.0.0.0/8'],
    ['macaddr', '08:00:2b:01:02:03', 829, '08:00:2b:01:02:03'],
    ['money', '$12.34', 790, '$12.34'],
    ['xml', '<a>1</a>', 142, '<a>1</a>'],
    ['tsvector', "'a' 'cat' 'fat'", 3614, "'a' 'cat' 'fat'"],
    ['int4range', '[1,5)', 3904, '[1,5)'],
  ]);

  it('float -0 serialises as 0', () => {
    expect(JSON.stringify(convertValue('-0', 701, noLookup))).toBe('0');
  });
});

describe('convertValue: json and jsonb', () => {
  // Kept as their text (validated), so the payload carries them exactly: see stringifyPayload.
  const raw = (text: string): RawJson => new RawJson(text);
  runCases([
    ['nested jsonb', '{"a": {"b": [1, 2.5, null, true]}, "c": "x"}', 3802, raw('{"a": {"b": [1, 2.5, null, true]}, "c": "x"}')],
    [
      'jsonb with escapes, unicode and a number beyond double precision',
      '{"n": 12345678901234567890, "s": "x\\"y", "u": "é", "arr": [{"k": []}]}',
      3802,
      raw('{"n": 12345678901234567890, "s": "x\\"y", "u": "é", "arr": [{"k": []}]}'),
    ],
    ['json keeps its text', '  {"b":1,  "a":[1,2]}', 114, raw('  {"b":1,  "a":[1,2]}')],
    ['jsonb string', '"str"', 3802, raw('"str"')],
    ['jsonb null is JSON null, not SQL NULL', 'null', 3802, raw('null')],
    ['unparseable json stays text', '{oops', 114, '{oops'],
  ]);

  it('serialises exactly as Postgres printed it; JSON.stringify still gets the parsed value', () => {
    const value = convertValue('{"n": 12345678901234567890, "f": 0.1000000000000000055511151231257827, "e": 1e400}', 3802, noLookup);
    expect(stringifyPayload({ data: { doc: value } })).toBe(
      '{"data":{"doc":{"n": 12345678901234567890, "f": 0.1000000000000000055511151231257827, "e": 1e400}}}',
    );
    expect(JSON.stringify({ doc: convertValue('{"a": [1, {"b": null}]}', 3802, noLookup) })).toBe('{"doc":{"a":[1,{"b":null}]}}');
  });
});

describe('convertValue: bytea', () => {
  runCases([
    ['hex with zero bytes', String.raw`\x0001ff`, 17, 'AAH/'],
    ['hex empty', String.raw`\x`, 17, ''],
    ['legacy escape format', String.raw`\000\001abc\\\177\200\377`, 17, 'AAFhYmNcf4D/'],
    ['legacy escape format, printable only', 'abc', 17, 'YWJj'],
    ['legacy escape format, empty', '', 17, ''],
  ]);

  it('hex and escape forms of the same bytes agree', () => {
    expect(convertValue(String.raw`\x00016162635c7f80ff`, 17, noLookup)).toBe(convertValue(String.raw`\000\001abc\\\177\200\377`, 17, noLookup));
  });
});

describe('convertValue: timestamptz', () => {
  runCases([
    ['UTC session, no fraction', '2026-02-10 15:30:50+00', 1184, '2026-02-10T15:30:50.000Z'],
    ['Asia/Kathmandu +05:45', '2026-02-10 21:15:50.123456+05:45', 1184, '2026-02-10T15:30:50.123Z'],
    ['America/St_Johns -03:30, truncated not rounded', '2026-02-10 12:00:50.123999-03:30', 1184, '2026-02-10T15:30:50.123Z'],
    ['Pacific/Kiritimati +14, one fraction digit', '2026-02-11 05:30:50.1+14', 1184, '2026-02-10T15:30:50.100Z'],
    ['Europe/Amsterdam LMT offset with seconds', '1800-01-01 00:19:32+00:19:32', 1184, '1800-01-01T00:00:00.000Z'],
    ['America/New_York LMT offset, negative', '1883-11-18 07:03:58-04:56:02', 1184, '1883-11-18T12:00:00.000Z'],
    ['back across a year', '2026-01-01 00:15:00.999999+05:45', 1184, '2025-12-31T18:30:00.999Z'],
    ['back across a month', '2026-03-01 05:00:00+05:45', 1184, '2026-02-28T23:15:00.000Z'],
    ['back onto a leap day', '2024-03-01 05:00:00+05:45', 1184, '2024-02-29T23:15:00.000Z'],
    ['back onto a leap day of a 400-year', '2000-03-01 05:00:00+05:45', 1184, '2000-02-29T23:15:00.000Z'],
    ['1900 is not a leap year', '1900-03-01 04:56:16+05:41:16', 1184, '1900-02-28T23:15:00.000Z'],
    ['forward onto a leap day', '2024-02-28 21:30:00-03:30', 1184, '2024-02-29T01:00:00.000Z'],
    ['forward across a month', '2026-02-28 23:00:00-03:30', 1184, '2026-03-01T02:30:00.000Z'],
    ['infinity', 'infinity', 1184, 'infinity'],
    ['-infinity', '-infinity', 1184, '-infinity'],
    ['44 BC is astronomical year -43', '0044-03-15 12:00:00+00 BC', 1184, '-000043-03-15T12:00:00.000Z'],
    ['1 BC is year 0', '0001-01-01 00:00:00+00 BC', 1184, '0000-01-01T00:00:00.000Z'],
    ['earliest timestamptz', '4713-01-01 00:00:00+00 BC', 1184, '-004712-01-01T00:00:00.000Z'],
    ['BC into AD across the offset', '0001-12-31 22:03:58-04:56:02 BC', 1184, '0001-01-01T03:00:00.000Z'],
    ['five-digit year', '10000-01-01 00:00:00+00', 1184, '+010000-01-01T00:00:00.000Z'],
    ['latest timestamptz, beyond JS Date', '294276-12-31 23:59:59.999999+00', 1184, '+294276-12-31T23:59:59.999Z'],
    ['DateStyle SQL stays text', '11/26/2026 17:17:02.419788 UTC', 1184, '11/26/2026 17:17:02.419788 UTC'],
    ['DateStyle Postgres stays text', 'Thu 26 Nov 17:17:02.420067 2026 UTC', 1184, 'Thu 26 Nov 17:17:02.420067 2026 UTC'],
    ['DateStyle German stays text', '26.11.2026 17:17:02.420154 UTC', 1184, '26.11.2026 17:17:02.420154 UTC'],
    ['garbage stays text', '2026-02-10 15:30:50+0x', 1184, '2026-02-10 15:30:50+0x'],
  ]);

  it('every result within JS range parses back to itself', () => {
    for (const text of ['2026-02-10 21:15:50.123456+05:45', '0044-03-15 12:00:00+00 BC', '4713-01-01 00:00:00+00 BC', '10000-01-01 00:00:00+00']) {
      const iso = convertValue(text, 1184, noLookup) as string;
      expect(new Date(iso).toISOString()).toBe(iso);
    }
  });
});

describe('convertValue: built-in arrays', () => {
  runCases([
    ['text[] with quotes, commas, NULL and "NULL"', String.raw`{"a,b","c\"d",NULL,"NULL"}`, 1009, ['a,b', 'c"d', null, 'NULL']],
    [
      'text[] with empty, blank, backslash, brace, lowercase null, newline, non-ASCII',
      String.raw`{""," ","back\\slash","with}brace","NULL","null","new` + '\nline",é}',
      1009,
      ['', ' ', 'back\\slash', 'with}brace', 'NULL', 'null', 'new\nline', 'é'],
    ],
    ['text[] quoted braces and tab', '{"{x}","tab\there"}', 1009, ['{x}', 'tab\there']],
    ['text[] of empty strings', '{"",""}', 1009, ['', '']],
    ['empty array', '{}', 1007, []],
    [
      'int4[] 2-D',
      '{{1,2},{3,4}}',
      1007,
      [
        [1, 2],
        [3, 4],
      ],
    ],
    [
      'int4[] 3-D',
      '{{{1},{2}},{{3},{4}}}',
      1007,
      [
        [[1], [2]],
        [[3], [4]],
      ],
    ],
    ['int4[] with lower bound', '[0:1]={1,2}', 1007, [1, 2]],
    [
      'int4[] 2-D with bounds',
      '[2:3][1:2]={{1,2},{3,4}}',
      1007,
      [
        [1, 2],
        [3, 4],
      ],
    ],
    ['text[] with negative bounds', '[-2:-1]={"a b",c}', 1009, ['a b', 'c']],
    [
      'text[] 2-D with NULL',
      String.raw`{{"a\"b","c\\d"},{"",NULL}}`,
      1009,
      [
        ['a"b', 'c\\d'],
        ['', null],
      ],
    ],
    ['bool[]', '{t,f,NULL}', 1000, [true, false, null]],
    ['int2[]', '{32767,-32768}', 1005, [32767, -32768]],
    ['oid[]', '{1,4294967295}', 1028, [1, 4294967295]],
    ['float8[] with NaN and Infinity', '{1.5,NaN,Infinity}', 1022, [1.5, 'NaN', 'Infinity']],
    ['int8[] as strings', '{9223372036854775807,-9223372036854775808}', 1016, ['9223372036854775807', '-9223372036854775808']],
    ['numeric[] as strings', '{12345678901234567890.123456789,NaN}', 1231, ['12345678901234567890.123456789', 'NaN']],
    ['numeric[] keeps trailing zeros', '{1.10}', 1231, ['1.10']],
    ['bytea[]', String.raw`{"\\x00ff",NULL}`, 1001, ['AP8=', null]],
    ['bytea[] empty and non-empty', String.raw`{"\\x","\\xdeadbeef"}`, 1001, ['', '3q2+7w==']],
    ['jsonb[]', String.raw`{"{\"a\": 1}","[1, \"x\"]"}`, 3807, [new RawJson('{"a": 1}'), new RawJson('[1, "x"]')]],
    ['json[]', String.raw`{"{\"a\": [1, {\"b\": null}]}"}`, 199, [new RawJson('{"a": [1, {"b": null}]}')]],
    ['timestamptz[] (Asia/Kathmandu)', '{"2026-02-10 21:15:50.123456+05:45",NULL}', 1185, ['2026-02-10T15:30:50.123Z', null]],
    ['varchar[]', '{a,b}', 1015, ['a', 'b']],
    ['name[]', '{"x y"}', 1003, ['x y']],
    ['bpchar[]', '{"ab "}', 1014, ['ab ']],
    ['date[]', '{2026-02-10}', 1182, ['2026-02-10']],
    ['interval[]', '{"1 year"}', 1187, ['1 year']],
    ['uuid[]', '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', 2951, ['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11']],
    ['box[] uses ";"', '{(1,2),(0,0);(3,4),(1,1)}', 1020, ['(1,2),(0,0)', '(3,4),(1,1)']],
    ['tsvector[]', `{"'a' 'cat' 'fat'"}`, 3643, ["'a' 'cat' 'fat'"]],
    ['malformed: unterminated quote stays text', '{"abc', 1009, '{"abc'],
    ['malformed: missing brace stays text', '{1,2', 1007, '{1,2'],
    ['malformed: trailing junk stays text', '{1,2}x', 1007, '{1,2}x'],
    ['malformed: empty element stays text', '{1,,2}', 1007, '{1,,2}'],
    ['malformed: bounds without "=" stays text', '[0:1]', 1007, '[0:1]'],
  ]);
});

// A catalog as TypeCatalog would load it: OIDs above FirstNormalObjectId, like user types.
const T = {
  mood: 50001,
  moodArray: 50002,
  positiveInt: 50003,
  smallPositive: 50004,
  intList: 50005,
  positiveIntArray: 50006,
  address: 50007,
  addressArray: 50008,
  floatrange: 50009,
  doc: 50010,
  eventTime: 50011,
  citext: 50012,
  citextArray: 50013,
  intListArray: 50014,
  loop: 50015,
  unknownElementArray: 50016,
  docArray: 50017,
  semicolonArray: 50018,
  semicolonElement: 50019,
  unknown: 59999,
} as const;

function type(oid: number, name: string, kind: PgType['kind'], extra: Partial<PgType> = {}): PgType {
  return { oid, name, kind, elementOid: 0, baseOid: 0, delimiter: ',', ...extra };
}

const fakeTypes = new Map<number, PgType>(
  [
    type(T.mood, 'mood', 'enum'),
    type(T.moodArray, '_mood', 'array', { elementOid: T.mood }),
    type(T.positiveInt, 'positive_int', 'domain', { baseOid: 23 }),
    type(T.smallPositive, 'small_positive', 'domain', { baseOid: T.positiveInt }),
    type(T.intList, 'int_list', 'domain', { baseOid: 1007 }),
    type(T.positiveIntArray, '_positive_int', 'array', { elementOid: T.positiveInt }),
    type(T.address, 'address', 'composite'),
    type(T.addressArray, '_address', 'array', { elementOid: T.address }),
    type(T.floatrange, 'floatrange', 'range'),
    type(T.doc, 'doc', 'domain', { baseOid: 3802 }),
    type(T.eventTime, 'event_time', 'domain', { baseOid: 1184 }),
    type(T.citext, 'citext', 'base'),
    type(T.citextArray, '_citext', 'array', { elementOid: T.citext }),
    type(T.intListArray, '_int_list', 'array', { elementOid: T.intList }),
    type(T.loop, 'loop', 'domain', { baseOid: T.loop }),
    type(T.unknownElementArray, '_gone', 'array', { elementOid: T.unknown }),
    type(T.docArray, '_doc', 'array', { elementOid: T.doc }),
    // Postgres keeps the array delimiter on the element type (typdelim of box is ';', of _box ',').
    type(T.semicolonElement, 'mybox', 'base', { delimiter: ';' }),
    type(T.semicolonArray, '_mybox', 'array', { elementOid: T.semicolonElement }),
  ].map((t) => [t.oid, t]),
);
const fakeLookup: TypeLookup = (oid) => fakeTypes.get(oid);

describe('convertValue: enums, domains and custom types through the lookup', () => {
  runCases(
    [
      ['enum is its label', 'happy', T.mood, 'happy'],
      ['enum[]', '{happy,sad,NULL}', T.moodArray, ['happy', 'sad', null]],
      ['domain over int4', '42', T.positiveInt, 42],
      ['domain over a domain over int4', '7', T.smallPositive, 7],
      ['domain over int4[]', '{1,2,3}', T.intList, [1, 2, 3]],
      ['domain over jsonb', '{"a": [1, 2]}', T.doc, new RawJson('{"a": [1, 2]}')],
      ['domain over timestamptz', '2026-02-10 21:15:50.123456+05:45', T.eventTime, '2026-02-10T15:30:50.123Z'],
      ['array of a domain over int4', '{1,NULL,3}', T.positiveIntArray, [1, null, 3]],
      ['array of a domain over jsonb', String.raw`{"{\"a\": 1}",NULL}`, T.docArray, [new RawJson('{"a": 1}'), null]],
      ['array of a domain over an array', '{"{1,2}","{3}"}', T.intListArray, [[1, 2], [3]]],
      ['composite is its text', '(1,"a b")', T.address, '(1,"a b")'],
      ['array of composite: element texts', String.raw`{"(1,\"a b\")","(2,x)"}`, T.addressArray, ['(1,"a b")', '(2,x)']],
      ['range is its text', '[1.5,2.5)', T.floatrange, '[1.5,2.5)'],
      ['extension base type is its text', 'MixedCase', T.citext, 'MixedCase'],
      ['array of an extension type', '{a,B}', T.citextArray, ['a', 'B']],
      ['custom array delimiter', '{a,b;c}', T.semicolonArray, ['a,b', 'c']],
      ['unknown OID stays text', '{1,2}', T.unknown, '{1,2}'],
      ['array of an unknown element type: element texts', '{1,2}', T.unknownElementArray, ['1', '2']],
      ['a domain cycle does not hang', '1', T.loop, '1'],
      ['a vector type (int2vector) is not array syntax', '1 2', T.moodArray, '1 2'],
    ],
    fakeLookup,
  );

  it('never throws on an unknown OID with a lookup that knows nothing', () => {
    expect(convertValue('whatever', 123456, () => undefined)).toBe('whatever');
  });
});

describe('isBuiltinType', () => {
  const builtins = [
    16, 17, 18, 19, 20, 21, 23, 25, 26, 114, 142, 700, 701, 790, 1042, 1043, 1082, 1083, 1114, 1184, 1186, 1266, 1700, 2950, 3802, 869, 650, 829, 1000, 1001,
    1002, 1003, 1016, 1005, 1007, 1009, 1028, 199, 143, 1021, 1022, 1014, 1015, 1182, 1183, 1115, 1185, 1187, 1270, 1231, 2951, 3807, 1041, 651,
  ];

  it.each(builtins)('%i is built in', (oid) => {
    expect(isBuiltinType(oid)).toBe(true);
  });

  it.each([0, -1, 22, 600, 1006, 4096, T.mood, 2 ** 32 - 1])('%i is not', (oid) => {
    expect(isBuiltinType(oid)).toBe(false);
  });
});

describe('TypeCatalog', () => {
  /** pg_type rows as node-pg returns them for the catalog query (oid columns as numbers or strings). */
  const pgType: Record<number, Record<string, unknown>> = {
    [T.mood]: { oid: T.mood, typname: 'mood', typtype: 'e', typcategory: 'E', typelem: 0, typbasetype: 0, typdelim: ',' },
    [T.moodArray]: { oid: String(T.moodArray), typname: '_mood', typtype: 'b', typcategory: 'A', typelem: String(T.mood), typbasetype: '0', typdelim: ',' },
    [T.positiveInt]: { oid: T.positiveInt, typname: 'positive_int', typtype: 'd', typcategory: 'N', typelem: 0, typbasetype: 23, typdelim: ',' },
    // domain over citext: the base type is found only after the first round
    [T.eventTime]: { oid: T.eventTime, typname: 'ci_email', typtype: 'd', typcategory: 'S', typelem: 0, typbasetype: T.citext, typdelim: ',' },
    [T.citext]: { oid: T.citext, typname: 'citext', typtype: 'b', typcategory: 'S', typelem: 0, typbasetype: 0, typdelim: ',' },
    [T.address]: { oid: T.address, typname: 'address', typtype: 'c', typcategory: 'C', typelem: 0, typbasetype: 0, typdelim: ',' },
    [T.floatrange]: { oid: T.floatrange, typname: 'floatrange', typtype: 'r', typcategory: 'R', typelem: 0, typbasetype: 0, typdelim: ',' },
    [T.semicolonArray]: { oid: T.semicolonArray, typname: '_mybox', typtype: 'b', typcategory: 'A', typelem: 603, typbasetype: 0, typdelim: ';' },
    // name-like: has a typelem but is not an array
    [T.loop]: { oid: T.loop, typname: 'fixedname', typtype: 'b', typcategory: 'S', typelem: 18, typbasetype: 0, typdelim: ',' },
    [T.intList]: { oid: T.intList, typname: 'int4multirange', typtype: 'm', typcategory: 'R', typelem: 0, typbasetype: 0, typdelim: ',' },
  };

  function recordingQuery() {
    const calls: Array<{ sql: string; oids: number[] }> = [];
    const query = async (sql: string, params: unknown[]) => {
      const oids = params[0] as number[];
      calls.push({ sql, oids: [...oids] });
      return { rows: oids.filter((oid) => pgType[oid]).map((oid) => pgType[oid]) };
    };
    return { calls, query };
  }

  it('queries pg_type only for unknown, non-built-in OIDs, one query per round', async () => {
    const { calls, query } = recordingQuery();
    const catalog = new TypeCatalog(query);

    await catalog.ensure([23, 25, 1009, 1184, 3807]);
    expect(calls).toEqual([]);

    await catalog.ensure([23, T.moodArray, T.eventTime, T.moodArray]);
    expect(calls.map((c) => c.oids)).toEqual([
      [T.moodArray, T.eventTime],
      [T.mood, T.citext],
    ]);
    expect(calls[0].sql).toMatch(/pg_type/);

    await catalog.ensure([T.mood, T.moodArray, T.eventTime, T.citext, 16]);
    expect(calls).toHaveLength(2);

    await catalog.ensure([T.positiveInt, T.mood]);
    expect(calls.map((c) => c.oids)).toEqual([[T.moodArray, T.eventTime], [T.mood, T.citext], [T.positiveInt]]);
  });

  it('maps typtype and typcategory to kinds, with element, base and delimiter', async () => {
    const { query } = recordingQuery();
    const catalog = new TypeCatalog(query);
    await catalog.ensure([T.moodArray, T.positiveInt, T.address, T.floatrange, T.semicolonArray, T.loop, T.intList]);
    const { lookup } = catalog;

    expect(lookup(T.moodArray)).toEqual({ oid: T.moodArray, name: '_mood', kind: 'array', elementOid: T.mood, baseOid: 0, delimiter: ',' });
    expect(lookup(T.mood)).toEqual({ oid: T.mood, name: 'mood', kind: 'enum', elementOid: 0, baseOid: 0, delimiter: ',' });
    expect(lookup(T.positiveInt)).toEqual({ oid: T.positiveInt, name: 'positive_int', kind: 'domain', elementOid: 0, baseOid: 23, delimiter: ',' });
    expect(lookup(T.address)?.kind).toBe('composite');
    expect(lookup(T.floatrange)?.kind).toBe('range');
    expect(lookup(T.semicolonArray)).toMatchObject({ kind: 'array', elementOid: 603, delimiter: ';' });
    expect(lookup(T.loop)).toMatchObject({ kind: 'base', elementOid: 0 });
    expect(lookup(T.intList)?.kind).toBe('other');

    expect(convertValue('{happy,NULL}', T.moodArray, lookup)).toEqual(['happy', null]);
    expect(convertValue('7', T.positiveInt, lookup)).toBe(7);
  });

  it('asks once for an OID pg_type does not have, and does not cache the miss', async () => {
    const { calls, query } = recordingQuery();
    const catalog = new TypeCatalog(query);
    await catalog.ensure([T.unknown]);
    expect(calls.map((c) => c.oids)).toEqual([[T.unknown]]);
    expect(catalog.lookup(T.unknown)).toBeUndefined();
    expect(convertValue('x', T.unknown, catalog.lookup)).toBe('x');
    await catalog.ensure([T.unknown]);
    expect(calls).toHaveLength(2);
  });

  it('lookup is bound: it can be passed around', async () => {
    const { query } = recordingQuery();
    const catalog = new TypeCatalog(query);
    await catalog.ensure([T.mood]);
    const { lookup } = catalog;
    expect(lookup(T.mood)?.name).toBe('mood');
  });
});
