import { DecodeError } from '../errors.js';
import type { Logger } from '../log.js';
import { postgresTimeToDate } from './pgoutput.js';
import { isPlainKey, newRow } from './rowObject.js';
import type { Lsn } from '../replication/lsn.js';
import { OversizedValue, UNCHANGED_TOAST, type DecodedItem, type PgoutputMessage, type Relation, type Row, type RowChange, type TupleValue } from './types.js';
import { convertValue, type TypeLookup } from './values.js';
import { HEARTBEAT_PREFIX } from '../replication/heartbeat.js';

/** Catalog look-ups the decoder needs when a Relation message announces a table (rare, off the hot path). */
export interface DecoderCatalog {
  ensureTypes(oids: number[]): Promise<void>;
  lookupType: TypeLookup;
  /** Primary key columns of a table, or [] when it has none. */
  primaryKey(relationId: number): Promise<string[]>;
}

interface KnownRelation {
  relation: Relation;
  columnNames: string[];
  keyColumns: string[];
  /** No column is named like an Object.prototype member: rows may be plain objects (see newRow). */
  plainRows: boolean;
}

/**
 * Stateful step from protocol messages to row changes: keeps the relation cache (Relation messages
 * precede the first change of a table and follow every ALTER), tracks the open transaction, converts
 * values and fills unchanged TOAST values from the old image.
 */
export class Decoder {
  private readonly relations = new Map<number, KnownRelation>();
  private transaction: { commitLsn: Lsn; commitTime: Date; nextIndex: number } | null = null;
  private readonly warnedNotFull = new Set<number>();

  constructor(
    private readonly catalog: DecoderCatalog,
    private readonly log: Logger,
    /** Tables whose old row images nothing uses (the webhooks table): no REPLICA IDENTITY warning for them. */
    private readonly oldImagesUnused: (schema: string, table: string) => boolean = () => false,
  ) {}

  /** A new connection starts outside any transaction; relations are re-sent by the server. */
  reset(): void {
    this.transaction = null;
  }

  /** Returns null for messages that produce nothing downstream (relation, type, origin, truncate). */
  async decode(message: PgoutputMessage, lsn: string): Promise<DecodedItem | null> {
    switch (message.tag) {
      case 'begin': {
        const commitTime = postgresTimeToDate(message.commitTimeMicros);
        this.transaction = { commitLsn: message.finalLsn, commitTime, nextIndex: 0 };
        return { type: 'begin', commitLsn: message.finalLsn, commitTime, xid: message.xid };
      }
      case 'commit': {
        this.transaction = null;
        return { type: 'commit', commitLsn: message.commitLsn, endLsn: message.endLsn };
      }
      case 'relation':
        await this.learnRelation(message.relation);
        return null;
      case 'insert':
      case 'update':
      case 'delete':
        return { type: 'change', change: this.toRowChange(message, lsn) };
      case 'truncate':
        this.log.warn(
          { tables: message.relationIds.map((id) => this.describe(id)) },
          'TRUNCATE seen on a watched table: it emits no events (receivers are not told the rows went away)',
        );
        return null;
      case 'message':
        if (message.prefix === HEARTBEAT_PREFIX && !message.transactional) return { type: 'heartbeat', lsn: message.lsn };
        return null;
      case 'type':
      case 'origin':
        return null;
    }
  }

  private async learnRelation(relation: Relation): Promise<void> {
    await this.catalog.ensureTypes(relation.columns.map((c) => c.typeOid));
    let keyColumns = await this.catalog.primaryKey(relation.id);
    if (keyColumns.length === 0) {
      // No primary key: the replica identity index (unique by definition), else an "id" column. Under
      // FULL every column is flagged as key, and a key that changes with every update would break
      // per-record ordering: [] makes the whole table one record, delivered in commit order.
      if (relation.replicaIdentity === 'index') keyColumns = relation.columns.filter((c) => c.isKey).map((c) => c.name);
      else if (relation.columns.some((c) => c.name === 'id')) keyColumns = ['id'];
    }
    const columnNames = relation.columns.map((c) => c.name);
    this.relations.set(relation.id, { relation, columnNames, keyColumns, plainRows: columnNames.every(isPlainKey) });
    if (relation.replicaIdentity !== 'full' && !this.warnedNotFull.has(relation.id) && !this.oldImagesUnused(relation.schema, relation.table)) {
      this.warnedNotFull.add(relation.id);
      this.log.warn(
        { table: `${relation.schema}.${relation.table}`, replicaIdentity: relation.replicaIdentity },
        `table is not REPLICA IDENTITY FULL: updates carry no old values, so updatedFields and soft-delete transitions cannot be computed and unchanged large values and the non-key columns of deleted rows are reported in "unavailableFields"; fix: ALTER TABLE ${relation.schema}.${relation.table} REPLICA IDENTITY FULL (or run "pg-webhook-bridge migrate")`,
      );
    }
  }

  private describe(relationId: number): string {
    const known = this.relations.get(relationId);
    return known ? `${known.relation.schema}.${known.relation.table}` : `relation ${relationId}`;
  }

  private toRowChange(message: Extract<PgoutputMessage, { tag: 'insert' | 'update' | 'delete' }>, lsn: string): RowChange {
    const known = this.relations.get(message.relationId);
    if (!known) throw new DecodeError(`change for relation ${message.relationId} arrived before its Relation message`, lsn);
    if (!this.transaction) throw new DecodeError('row change outside a transaction', lsn);
    const { relation } = known;
    const lookup = this.catalog.lookupType;
    const unavailable: string[] = [];
    let newRow: Row | null = null;
    let oldRow: Row | null = null;
    let changedColumns: string[] | null = null;

    if (message.tag === 'insert') {
      newRow = toRow(known, message.newTuple, null, false, lookup, unavailable);
    } else if (message.tag === 'update') {
      // A key-only old image ('K': the key changed on a table that is not FULL) says nothing about the
      // other columns, so it can neither fill TOAST values nor tell what changed.
      const oldTuple = message.oldTuple && !message.keyOnly ? message.oldTuple : null;
      if (oldTuple) {
        oldRow = toRow(known, oldTuple, null, false, lookup, []);
        changedColumns = [];
        for (let i = 0; i < relation.columns.length; i++) {
          const after = message.newTuple[i];
          // An unchanged TOAST value is by definition unchanged.
          if (after !== UNCHANGED_TOAST && after !== oldTuple[i]) changedColumns.push(relation.columns[i]!.name);
        }
      }
      newRow = toRow(known, message.newTuple, oldTuple, false, lookup, unavailable);
    } else {
      oldRow = toRow(known, message.oldTuple, null, message.keyOnly, lookup, unavailable);
    }

    return {
      kind: message.tag,
      schema: relation.schema,
      table: relation.table,
      newRow,
      oldRow,
      columnNames: known.columnNames,
      keyColumns: known.keyColumns,
      changedColumns,
      unavailableColumns: unavailable,
      commitLsn: this.transaction.commitLsn,
      indexInTransaction: this.transaction.nextIndex++,
      commitTime: this.transaction.commitTime,
    };
  }
}

/**
 * Converts a tuple. An unchanged TOAST value is taken from `fallback` (the old image) when it has it;
 * with `keyOnly`, only replica identity key columns were sent (the others arrive as 'n', which must not
 * be read as SQL NULL). Whatever is missing is left out of the row and listed in `unavailable`.
 */
function toRow(known: KnownRelation, tuple: TupleValue[], fallback: TupleValue[] | null, keyOnly: boolean, lookup: TypeLookup, unavailable: string[]): Row {
  const row = newRow(known.plainRows);
  const columns = known.relation.columns;
  for (let i = 0; i < columns.length; i++) {
    let value = tuple[i];
    if (keyOnly && !columns[i]!.isKey) {
      unavailable.push(columns[i]!.name);
      continue;
    }
    if (value === UNCHANGED_TOAST) {
      const old = fallback?.[i];
      if (old === undefined || old === UNCHANGED_TOAST) {
        unavailable.push(columns[i]!.name);
        continue;
      }
      value = old;
    }
    // An oversized value stays a marker: its event goes out truncated, so its text is never needed.
    row[columns[i]!.name] =
      value === null || value === undefined ? null : value instanceof OversizedValue ? value : convertValue(value, columns[i]!.typeOid, lookup);
  }
  return row;
}
