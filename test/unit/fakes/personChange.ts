import type { RowChange } from '../../../src/decode/types.js';
import { RawJson } from '../../../src/decode/values.js';

/** A person row of the tables mode, with a json column printed as `profileJson`. */
export function personRow(profileJson = '{"tier": "gold"}') {
  return { id: 'p1', first_name: 'vipAlice', email: 'a@example.com', phone: '+1 555', profile: new RawJson(profileJson) };
}

/** An update of `before` that changed its email, as the decoder hands it to the router. */
export function personUpdate(overrides: Partial<RowChange> = {}, before: Record<string, unknown> = personRow()): RowChange {
  return {
    kind: 'update',
    schema: 'public',
    table: 'person',
    oldRow: before,
    newRow: { ...before, email: 'alice@example.com' },
    columnNames: Object.keys(before),
    keyColumns: ['id'],
    changedColumns: ['email'],
    unavailableColumns: [],
    commitLsn: 0x16b3a28n,
    indexInTransaction: 0,
    commitTime: new Date('2026-02-10T15:30:50.123Z'),
    ...overrides,
  };
}
