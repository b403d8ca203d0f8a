import { DecodeError } from '../errors.js';
import { OversizedValue, UNCHANGED_TOAST, type PgoutputMessage, type ReplicaIdentity, type RelationColumn, type TupleValue } from './types.js';

export interface PgoutputOptions {
  /**
   * Text bytes a tuple may hold as strings. A value longer than this, or one (over SMALL_VALUE_BYTES)
   * that would take the tuple's text past it, is read as an OversizedValue: its length only. No string
   * is built from it, so neither the heap nor V8's string length limit bounds the size of a row.
   */
  maxValueBytes?: number;
}

/** Values up to this size always stay text (keys, names, dates), whatever the rest of the tuple holds. */
const SMALL_VALUE_BYTES = 1_024;

/**
 * Parser of pgoutput protocol version 1 messages (the payload of an XLogData frame). Pure: bytes in,
 * message out. Field layouts follow "Logical Replication Message Formats" in the Postgres docs.
 * Values stay in their text form here; values.ts converts them once the column type is known.
 */
export function parsePgoutputMessage(buf: Buffer, options: PgoutputOptions = {}): PgoutputMessage {
  if (buf.length === 0) throw new DecodeError('pgoutput: empty message (expected at least a message type byte)');
  const reader = new Reader(buf, MESSAGE_NAMES[buf[0]!] ?? `message 0x${buf[0]!.toString(16).padStart(2, '0')}`, options.maxValueBytes ?? Infinity);
  const message = parseBody(reader, reader.byte());
  // Protocol 1 messages have no optional tail: leftover bytes mean we read the fields wrongly.
  reader.end();
  return message;
}

/** For error messages: which message a problem was found in. */
const MESSAGE_NAMES: Record<number, string> = {
  0x42: "Begin ('B')",
  0x43: "Commit ('C')",
  0x4f: "Origin ('O')",
  0x52: "Relation ('R')",
  0x59: "Type ('Y')",
  0x49: "Insert ('I')",
  0x55: "Update ('U')",
  0x44: "Delete ('D')",
  0x54: "Truncate ('T')",
  0x4d: "Message ('M')",
};

function parseBody(reader: Reader, tag: number): PgoutputMessage {
  switch (tag) {
    case 0x42: // 'B' Begin: Int64 final (commit) LSN, Int64 commit time (µs since 2000-01-01), Int32 xid
      return { tag: 'begin', finalLsn: reader.uint64(), commitTimeMicros: reader.int64(), xid: reader.uint32() };
    case 0x43: // 'C' Commit: Int8 flags (unused, 0), Int64 commit LSN, Int64 end LSN, Int64 commit time
      return {
        tag: 'commit',
        flags: reader.byte(),
        commitLsn: reader.uint64(),
        endLsn: reader.uint64(),
        commitTimeMicros: reader.int64(),
      };
    case 0x4f: // 'O' Origin: Int64 origin commit LSN, String name
      return { tag: 'origin', originLsn: reader.uint64(), name: reader.cstring() };
    case 0x52: {
      // 'R' Relation: Int32 id, String namespace ('' = pg_catalog), String name, Int8 replica identity,
      // Int16 column count, then per column: Int8 flags (1 = key), String name, Int32 type OID, Int32 typmod
      const id = reader.uint32();
      const schema = reader.cstring() || 'pg_catalog';
      const table = reader.cstring();
      const replicaIdentity = replicaIdentityOf(reader.byte());
      const count = reader.count();
      const columns: RelationColumn[] = [];
      for (let i = 0; i < count; i++) {
        const flags = reader.byte();
        columns.push({ isKey: (flags & 1) === 1, name: reader.cstring(), typeOid: reader.uint32(), typeModifier: reader.int32() });
      }
      return { tag: 'relation', relation: { id, schema, table, replicaIdentity, columns } };
    }
    case 0x59: // 'Y' Type: Int32 OID, String namespace, String name
      return { tag: 'type', oid: reader.uint32(), schema: reader.cstring(), name: reader.cstring() };
    case 0x49: {
      // 'I' Insert: Int32 relation id, Byte1 'N', TupleData
      const relationId = reader.uint32();
      reader.expect(0x4e, "'N' (new tuple)");
      return { tag: 'insert', relationId, newTuple: reader.tuple().values };
    }
    case 0x55: {
      // 'U' Update: Int32 relation id, optional ('K' key | 'O' old) TupleData, then 'N' TupleData
      const relationId = reader.uint32();
      let kind = reader.byte();
      let old: TupleData | null = null;
      let keyOnly = false;
      if (kind === 0x4b || kind === 0x4f) {
        keyOnly = kind === 0x4b;
        old = reader.tuple();
        kind = reader.byte();
      }
      if (kind !== 0x4e) reader.fail(`expected 'K', 'O' or 'N' (new tuple), got 0x${kind.toString(16)}`);
      const next = reader.tuple();
      if (old && !keyOnly) reader.unifyOversized(old, next);
      return { tag: 'update', relationId, oldTuple: old?.values ?? null, keyOnly, newTuple: next.values };
    }
    case 0x44: {
      // 'D' Delete: Int32 relation id, 'K' key | 'O' old, TupleData
      const relationId = reader.uint32();
      const kind = reader.byte();
      if (kind !== 0x4b && kind !== 0x4f) reader.fail(`expected 'K' (key) or 'O' (old tuple), got 0x${kind.toString(16)}`);
      return { tag: 'delete', relationId, keyOnly: kind === 0x4b, oldTuple: reader.tuple().values };
    }
    case 0x54: {
      // 'T' Truncate: Int32 relation count, Int8 options (1 cascade, 2 restart identity), Int32 ids
      const count = reader.uint32();
      const options = reader.byte();
      // Each id takes 4 bytes: checked before the loop so a corrupt count cannot allocate gigabytes.
      reader.need(count * 4);
      const relationIds: number[] = [];
      for (let i = 0; i < count; i++) relationIds.push(reader.uint32());
      return { tag: 'truncate', relationIds, cascade: (options & 1) === 1, restartIdentity: (options & 2) === 2 };
    }
    case 0x4d: {
      // 'M' Message: Int8 flags (1 = transactional), Int64 LSN, String prefix, Int32 length, bytes
      const transactional = (reader.byte() & 1) === 1;
      const lsn = reader.uint64();
      const prefix = reader.cstring();
      const length = reader.uint32();
      const bytes = reader.bytes(length);
      // Copied: the buffer belongs to the connection and is reused for the next frame. The bridge reads
      // only the prefix (its heartbeats are empty), so another application's huge message is not copied.
      const content = length <= reader.maxValueBytes ? Buffer.from(bytes) : null;
      return { tag: 'message', transactional, lsn, prefix, content, contentLength: length };
    }
    default:
      // Stream ('S' 'E' 'c' 'A') and two-phase messages need protocol >= 2, which we never request.
      return reader.fail(`unknown pgoutput message type 0x${tag.toString(16)}: the bridge speaks protocol version 1 only`);
  }
}

function replicaIdentityOf(byte: number): ReplicaIdentity {
  switch (byte) {
    case 0x64: // 'd'
      return 'default';
    case 0x6e: // 'n'
      return 'nothing';
    case 0x66: // 'f'
      return 'full';
    case 0x69: // 'i'
      return 'index';
    default:
      throw new DecodeError(`pgoutput Relation ('R'): unknown replica identity 0x${byte.toString(16)}`);
  }
}

/** A tuple's values, and where each text value lies in the message (start, length; -1 when not text). */
interface TupleData {
  values: TupleValue[];
  spans: number[];
}

/** Bounds-checked big-endian reads over one message; every failure names the message and offset. */
class Reader {
  private offset = 0;

  constructor(
    private readonly buf: Buffer,
    private readonly what: string,
    readonly maxValueBytes: number,
  ) {}

  fail(problem: string): never {
    throw new DecodeError(`pgoutput ${this.what}: ${problem} (offset ${this.offset} of ${this.buf.length} bytes)`);
  }

  need(n: number): void {
    if (this.offset + n > this.buf.length) this.fail(`message truncated: ${n} more bytes needed`);
  }

  end(): void {
    if (this.offset !== this.buf.length) this.fail(`${this.buf.length - this.offset} unexpected trailing bytes`);
  }

  byte(): number {
    this.need(1);
    return this.buf[this.offset++]!;
  }

  expect(byte: number, name: string): void {
    const got = this.byte();
    if (got !== byte) this.fail(`expected ${name}, got 0x${got.toString(16)}`);
  }

  /** Int16 column counts: never negative in practice (at most 1664 columns), so read unsigned. */
  count(): number {
    this.need(2);
    const v = this.buf.readUInt16BE(this.offset);
    this.offset += 2;
    return v;
  }

  int32(): number {
    this.need(4);
    const v = this.buf.readInt32BE(this.offset);
    this.offset += 4;
    return v;
  }

  uint32(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.offset);
    this.offset += 4;
    return v;
  }

  uint64(): bigint {
    this.need(8);
    const v = this.buf.readBigUInt64BE(this.offset);
    this.offset += 8;
    return v;
  }

  int64(): bigint {
    this.need(8);
    const v = this.buf.readBigInt64BE(this.offset);
    this.offset += 8;
    return v;
  }

  cstring(): string {
    const end = this.buf.indexOf(0, this.offset);
    if (end < 0) this.fail('message truncated: string without its terminating zero byte');
    const s = this.buf.toString('utf8', this.offset, end);
    this.offset = end + 1;
    return s;
  }

  bytes(n: number): Buffer {
    this.need(n);
    const b = this.buf.subarray(this.offset, this.offset + n);
    this.offset += n;
    return b;
  }

  /**
   * TupleData: Int16 column count, then per column 'n' null | 'u' unchanged TOAST | 't' Int32 len + text.
   * Text values past the tuple's budget (maxValueBytes) are kept as their length only.
   */
  tuple(): TupleData {
    const count = this.count();
    // At least one byte per column: a corrupt count fails here instead of allocating a huge array.
    this.need(count);
    const values: TupleValue[] = new Array(count);
    const spans: number[] = new Array(count * 2).fill(-1);
    let textBytes = 0;
    for (let i = 0; i < count; i++) {
      const kind = this.byte();
      switch (kind) {
        case 0x6e: // 'n' null
          values[i] = null;
          break;
        case 0x75: // 'u' unchanged TOASTed value, not sent
          values[i] = UNCHANGED_TOAST;
          break;
        case 0x74: {
          // 't' text: Int32 length, then the value's text output
          const len = this.uint32();
          this.need(len);
          spans[2 * i] = this.offset;
          spans[2 * i + 1] = len;
          if (len > this.maxValueBytes || (len > SMALL_VALUE_BYTES && textBytes + len > this.maxValueBytes)) {
            values[i] = new OversizedValue(len);
          } else {
            values[i] = this.buf.toString('utf8', this.offset, this.offset + len);
            textBytes += len;
          }
          this.offset += len;
          break;
        }
        default:
          // 'b' (binary) is only sent when the binary option is requested, which we never do.
          this.fail(`column ${i + 1}: unsupported tuple value kind 0x${kind.toString(16)} (expected 'n', 'u' or 't')`);
      }
    }
    return { values, spans };
  }

  /**
   * An UPDATE's old and new images of a column where either is oversized: compared byte for byte in
   * the message (no string built), and when equal both get the same OversizedValue, so the column
   * reads as unchanged. Text on one side and oversized on the other can happen (the budgets differ).
   */
  unifyOversized(old: TupleData, next: TupleData): void {
    const n = Math.min(old.values.length, next.values.length);
    for (let i = 0; i < n; i++) {
      const a = old.values[i];
      const b = next.values[i];
      if (!(a instanceof OversizedValue) && !(b instanceof OversizedValue)) continue;
      const [aStart, aLen, bStart, bLen] = [old.spans[2 * i]!, old.spans[2 * i + 1]!, next.spans[2 * i]!, next.spans[2 * i + 1]!];
      if (aStart < 0 || bStart < 0 || aLen !== bLen) continue;
      if (this.buf.compare(this.buf, bStart, bStart + bLen, aStart, aStart + aLen) !== 0) continue;
      const same = a instanceof OversizedValue ? a : (b as OversizedValue);
      old.values[i] = same;
      next.values[i] = same;
    }
  }
}

const POSTGRES_EPOCH_MS = 946_684_800_000n; // 2000-01-01T00:00:00Z

/** Commit times arrive as µs since 2000-01-01; the payload wants ms precision. */
export function postgresTimeToDate(micros: bigint): Date {
  return new Date(Number(micros / 1000n + POSTGRES_EPOCH_MS));
}
