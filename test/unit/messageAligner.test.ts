import { describe, expect, it } from 'vitest';
import { MessageAligner } from '../../src/replication/messageAligner.js';

/** A protocol message: Byte1 type, Int32 length (itself included), body. */
function message(type: string, body: Buffer | string): Buffer {
  const bytes = typeof body === 'string' ? Buffer.from(body) : body;
  const header = Buffer.alloc(5);
  header.write(type, 0);
  header.writeUInt32BE(4 + bytes.length, 1);
  return Buffer.concat([header, bytes]);
}

/** Feeds `stream` cut at `cuts` and returns what the aligner emitted. */
function align(stream: Buffer, cuts: number[]): Buffer[] {
  const out: Buffer[] = [];
  const aligner = new MessageAligner((chunk) => out.push(chunk));
  let from = 0;
  for (const cut of [...cuts, stream.length]) {
    aligner.push(stream.subarray(from, cut));
    from = cut;
  }
  return out;
}

/** Splits emitted chunks back into messages, failing if a chunk does not end on a boundary. */
function messagesIn(chunks: Buffer[]): string[] {
  const out: string[] = [];
  for (const chunk of chunks) {
    let offset = 0;
    while (offset < chunk.length) {
      const size = 1 + chunk.readUInt32BE(offset + 1);
      expect(offset + size, 'a chunk ends inside a message').toBeLessThanOrEqual(chunk.length);
      out.push(`${String.fromCharCode(chunk[offset])}:${chunk.toString('latin1', offset + 5, offset + size)}`);
      offset += size;
    }
  }
  return out;
}

describe('MessageAligner', () => {
  const stream = Buffer.concat([message('d', 'first'), message('d', 'x'.repeat(1_000)), message('k', ''), message('d', 'last one')]);
  const expected = ['d:first', `d:${'x'.repeat(1_000)}`, 'k:', 'd:last one'];

  it('hands on complete messages of one read as one slice, without copying', () => {
    const out = align(stream, []);
    expect(out).toHaveLength(1);
    expect(out[0].buffer).toBe(stream.buffer);
    expect(messagesIn(out)).toEqual(expected);
  });

  it('every cut, one byte at a time included, gives chunks that end on message boundaries', () => {
    for (let cut = 1; cut < stream.length; cut++) expect(messagesIn(align(stream, [cut])), `cut at ${cut}`).toEqual(expected);
    const everyByte = Array.from({ length: stream.length - 1 }, (_, i) => i + 1);
    expect(messagesIn(align(stream, everyByte))).toEqual(expected);
  });

  it('assembles a message split across reads once, in a buffer of exactly its size', () => {
    const big = message('d', Buffer.alloc(100_000, 'y'));
    const out = align(Buffer.concat([big, message('d', 'after')]), [3, 70_000, 99_999]);
    expect(out[0].length).toBe(big.length);
    expect(out[0].buffer.byteLength).toBe(big.length);
    expect(out[0].equals(big)).toBe(true);
    expect(messagesIn(out).slice(1)).toEqual(['d:after']);
  });
});
