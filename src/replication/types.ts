import type { PgoutputMessage } from '../decode/types.js';
import type { Lsn } from './lsn.js';

/** Called for every pgoutput message in stream order; the stream waits for it (back-pressure). */
export type MessageHandler = (message: PgoutputMessage, lsn: string) => Promise<void> | void;

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
