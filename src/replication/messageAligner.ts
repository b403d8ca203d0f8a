import { EventEmitter } from 'node:events';
import pg from 'pg';

/** Byte1 message type + Int32 length (which counts itself but not the type byte). */
const HEADER_BYTES = 5;

/**
 * Re-cuts the bytes read from a Postgres connection into chunks that end on message boundaries; a
 * message split across reads is assembled once, in a buffer of its exact size.
 *
 * Why: the pg driver's protocol reader keeps a partial message by appending each read to a buffer that
 * grows by doubling, copying as it grows, so a 600 MB replication message (one huge row) held up to
 * about twice its size. Fed whole messages, the reader takes each chunk as it is and copies nothing:
 * a message then costs its own size plus one read.
 */
export class MessageAligner {
  /** A message being assembled: exactly its size; `filled` bytes so far. */
  private partial: Buffer | null = null;
  private filled = 0;
  /** The first bytes of a message whose header itself was split across reads. */
  private readonly header = Buffer.alloc(HEADER_BYTES);
  private headerFilled = 0;

  constructor(private readonly emit: (chunk: Buffer) => void) {}

  push(chunk: Buffer): void {
    let offset = 0;
    while (offset < chunk.length) {
      if (this.partial) {
        const n = Math.min(this.partial.length - this.filled, chunk.length - offset);
        chunk.copy(this.partial, this.filled, offset, offset + n);
        this.filled += n;
        offset += n;
        if (this.filled === this.partial.length) {
          const message = this.partial;
          this.partial = null;
          this.emit(message);
        }
        continue;
      }
      if (this.headerFilled > 0) {
        const n = Math.min(HEADER_BYTES - this.headerFilled, chunk.length - offset);
        chunk.copy(this.header, this.headerFilled, offset, offset + n);
        this.headerFilled += n;
        offset += n;
        if (this.headerFilled === HEADER_BYTES) {
          this.headerFilled = 0;
          this.startMessage(this.header, 0, HEADER_BYTES);
        }
        continue;
      }
      // At a message start: hand on every message that is complete in this read as one slice.
      let end = offset;
      while (end + HEADER_BYTES <= chunk.length) {
        const size = 1 + chunk.readUInt32BE(end + 1);
        if (end + size > chunk.length) break;
        end += size;
      }
      if (end > offset) {
        this.emit(chunk.subarray(offset, end));
        offset = end;
      }
      if (offset === chunk.length) break;
      if (chunk.length - offset < HEADER_BYTES) {
        chunk.copy(this.header, 0, offset);
        this.headerFilled = chunk.length - offset;
      } else {
        this.startMessage(chunk, offset, chunk.length);
      }
      offset = chunk.length;
    }
  }

  /** Allocates the message announced by the header at `source[start..]` and copies what is there. */
  private startMessage(source: Buffer, start: number, end: number): void {
    const size = 1 + source.readUInt32BE(start + 1);
    if (size < HEADER_BYTES) {
      // Not a valid length: hand the bytes on as they are and let the protocol reader report it.
      this.emit(Buffer.from(source.subarray(start, end)));
      return;
    }
    this.partial = Buffer.allocUnsafe(size);
    source.copy(this.partial, 0, start, end);
    this.filled = end - start;
  }
}

/**
 * A pg Connection whose protocol reader is fed whole messages (MessageAligner). Built from the Client
 * the config would make, so TLS and every other connection setting stay pg's own.
 */
export function alignedConnection(config: pg.ClientConfig): unknown {
  const connection = (new pg.Client(config) as unknown as { connection: { attachListeners(stream: EventEmitter): void } }).connection;
  const attach = connection.attachListeners.bind(connection);
  connection.attachListeners = (stream: EventEmitter) => {
    // The reader listens for 'data' and 'end' only.
    const aligned = new EventEmitter();
    const aligner = new MessageAligner((chunk) => aligned.emit('data', chunk));
    stream.on('data', (chunk: Buffer) => aligner.push(chunk));
    stream.on('end', () => aligned.emit('end'));
    attach(aligned);
  };
  return connection;
}
