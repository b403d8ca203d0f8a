import type { Lsn } from './lsn.js';

/**
 * Turns one frame's payload into a message, synchronously: the buffer belongs to the connection and
 * is reused once it returns. Throws on bytes it cannot read. The decode stage provides it (the pgoutput
 * parser), so the stream knows nothing of the message format.
 */
export type FrameParser<Message> = (frame: Buffer) => Message;

/** Called for every parsed message in stream order; the stream waits for it (back-pressure). */
export type MessageHandler<Message> = (message: Message, lsn: string) => Promise<void> | void;

/**
 * The acknowledgement contract: whoever tracks delivery tells the stream the safe LSN, the end of the
 * last transaction whose every delivery is done or durably stored. The stream reports only that.
 */
export interface SafeLsnSource {
  safeLsn(): Lsn;
  /** Nothing received is still unsettled: no open transaction, no delivery outstanding. */
  isIdle(): boolean;
}

export type StreamState = 'connecting' | 'streaming' | 'reconnecting' | 'stopped' | 'failed';
