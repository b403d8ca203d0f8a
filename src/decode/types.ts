import type { Lsn } from '../replication/lsn.js';

/** Contract of the decode stage: pgoutput bytes -> protocol messages -> typed row changes. */

/** A column as announced by a Relation ('R') message. */
export interface RelationColumn {
  name: string;
  typeOid: number;
  typeModifier: number;
  /** Part of the replica identity key. */
  isKey: boolean;
}

export type ReplicaIdentity = 'default' | 'nothing' | 'full' | 'index';

export interface Relation {
  id: number;
  schema: string;
  table: string;
  replicaIdentity: ReplicaIdentity;
  columns: RelationColumn[];
}

/** An unchanged TOASTed value ('u'): the server did not send it. */
export const UNCHANGED_TOAST: unique symbol = Symbol('unchanged-toast');

/**
 * A value too large to hold as text (longer than the reader's limit): only its size is kept, no string
 * is ever built from it. The event that carries it goes out in its truncated form. Two values are the
 * same value exactly when they are the same object (the reader compares an old and a new image byte
 * for byte and hands out one object when they match).
 */
export class OversizedValue {
  constructor(readonly byteLength: number) {}

  /** In a payload (only ever a key column of a truncated event): what it was, not its content. */
  toJSON(): { truncated: true; byteLength: number } {
    return { truncated: true, byteLength: this.byteLength };
  }

  toString(): string {
    return `[oversized value of ${this.byteLength} bytes]`;
  }
}

/** One column of a tuple as sent: null, unchanged TOAST, the value's text form, or just its size. */
export type TupleValue = null | typeof UNCHANGED_TOAST | string | OversizedValue;

export type PgoutputMessage =
  | { tag: 'begin'; finalLsn: Lsn; commitTimeMicros: bigint; xid: number }
  | { tag: 'commit'; flags: number; commitLsn: Lsn; endLsn: Lsn; commitTimeMicros: bigint }
  | { tag: 'origin'; originLsn: Lsn; name: string }
  | { tag: 'relation'; relation: Relation }
  | { tag: 'type'; oid: number; schema: string; name: string }
  | { tag: 'insert'; relationId: number; newTuple: TupleValue[] }
  | { tag: 'update'; relationId: number; oldTuple: TupleValue[] | null; keyOnly: boolean; newTuple: TupleValue[] }
  | { tag: 'delete'; relationId: number; oldTuple: TupleValue[]; keyOnly: boolean }
  | { tag: 'truncate'; relationIds: number[]; cascade: boolean; restartIdentity: boolean }
  /** `content` is null when longer than the reader's limit (never read by the bridge). */
  | { tag: 'message'; transactional: boolean; lsn: Lsn; prefix: string; content: Buffer | null; contentLength: number };

export type Row = Record<string, unknown>;

export type ChangeKind = 'insert' | 'update' | 'delete';

/**
 * One committed row change, values already converted to their JSON form.
 * `position` identifies it for ever: the commit LSN of its transaction and its index in it.
 */
export interface RowChange {
  kind: ChangeKind;
  schema: string;
  table: string;
  /** Row after the change (insert, update). */
  newRow: Row | null;
  /** Row before the change (update with REPLICA IDENTITY FULL, delete). */
  oldRow: Row | null;
  /** Columns of the relation at the time of the change, in table order. */
  columnNames: string[];
  /** Primary key columns (replica identity key when there is no primary key). */
  keyColumns: string[];
  /** Columns whose value differs between the old and new image; null when there is no old image. */
  changedColumns: string[] | null;
  /**
   * Columns whose value Postgres did not send, so they are absent from the row (never faked as null):
   * an unchanged TOASTed value with no old image to take it from, or, for a DELETE on a table that is
   * not REPLICA IDENTITY FULL, every column outside the replica identity key.
   */
  unavailableColumns: string[];
  commitLsn: Lsn;
  indexInTransaction: number;
  commitTime: Date;
}

/** What the decoder hands the next stage, in stream order. */
export type DecodedItem =
  | { type: 'begin'; commitLsn: Lsn; commitTime: Date; xid: number }
  | { type: 'change'; change: RowChange }
  | { type: 'commit'; commitLsn: Lsn; endLsn: Lsn }
  | { type: 'heartbeat'; lsn: Lsn };
