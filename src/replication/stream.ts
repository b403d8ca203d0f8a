import { LogicalReplicationService } from 'pg-logical-replication';
import type pg from 'pg';
import type { Lsn } from './lsn.js';
import { DecodeError } from '../errors.js';
import type { Logger } from '../log.js';
import { formatLsn, parseLsn } from './lsn.js';
import { alignedConnection } from './messageAligner.js';
import { ShutdownWaitDetector } from './shutdownWait.js';
import type { FrameParser, MessageHandler, SafeLsnSource, StreamState } from './types.js';

/** A frame the parser refused, handed on as a value (see BridgePgoutputPlugin.parse). */
class UnparsableFrame {
  constructor(readonly error: Error) {}
}

/** Reconnect delays after a lost stream: quick first, capped so a down database is not hammered. */
const RECONNECT_DELAYS_MS = [250, 500, 1_000, 2_000, 5_000];

/**
 * Our pgoutput plugin for pg-logical-replication: the bridge's own parser (bytes -> messages,
 * unit-tested on fixtures) instead of the library's, which runs values through pg's global type
 * parsers. `messages 'true'` makes the heartbeats written with pg_logical_emit_message reach us.
 */
class BridgePgoutputPlugin<Message> {
  /** Frames parsed (= received), so the stream can tell when every received frame was handled. */
  frames = 0;

  constructor(readonly options: { publication: string; parse: FrameParser<Message> }) {}

  get name(): string {
    return 'pgoutput';
  }

  start(client: pg.Client, slotName: string): Promise<unknown> {
    // 0/0: the server resumes at the slot's confirmed_flush_lsn, the only position we trust.
    return client.query(`START_REPLICATION SLOT ${slotName} LOGICAL 0/0 (proto_version '1', publication_names '${this.options.publication}', messages 'true')`);
  }

  parse(buffer: Buffer): Message | UnparsableFrame {
    // Parsed synchronously: the buffer belongs to the connection and is reused after this returns.
    // A throw here would escape the library's socket listener and kill the process without the
    // orderly stop, so it is handed on as a value instead.
    this.frames++;
    try {
      return this.options.parse(buffer);
    } catch (error) {
      return new UnparsableFrame(error as Error);
    }
  }
}

export interface ReplicationStreamOptions<Message> {
  clientConfig: pg.ClientConfig;
  slot: string;
  publication: string;
  parse: FrameParser<Message>;
  ackIntervalMs: number;
  log: Logger;
  safeLsn: SafeLsnSource;
  /** What may be confirmed of a wanted position: only what is recorded first (ConfirmedPositionRecord). */
  confirmable?: (wanted: Lsn) => Lsn;
  onMessage: MessageHandler<Message>;
  /** Called before each new connection: state tied to the previous connection must be dropped. */
  onReconnect?: () => void;
  onStateChange?: (state: StreamState) => void;
}

/**
 * Owns the replication connection: connects, streams, reconnects with backoff, and reports the safe
 * LSN. pg-logical-replication is used with auto-acknowledge and its timer OFF, and a fresh service per
 * connection (a reused one resumes from the last *received* LSN). Nothing else acknowledges.
 */
export class ReplicationStream<Message> {
  private service: LogicalReplicationService | null = null;
  private stopped = false;
  private ackTimer: NodeJS.Timeout | null = null;
  private lastSentLsn: Lsn = 0n;
  /**
   * The server's sent position from a keepalive that arrived while every received frame was handled
   * and settled: everything before it is done, so it may be confirmed. Without it an idle bridge would
   * confirm less than the server sent, and a fast shutdown waits for that confirmation for ever.
   */
  private idleLsn: Lsn = 0n;
  private inHandler = false;
  /** Back-to-back keepalives asking for a reply at one position we cannot confirm yet. */
  private shutdownWait = new ShutdownWaitDetector();
  private accepting = true;
  private fatal: Error | null = null;
  state: StreamState = 'connecting';

  constructor(private readonly options: ReplicationStreamOptions<Message>) {}

  /** Streams until stop() or a fatal error; resolves when the stream is closed. */
  async run(): Promise<void> {
    const { log } = this.options;
    let failures = 0;
    this.ackTimer = setInterval(() => this.sendStatus(false), this.options.ackIntervalMs);
    try {
      while (!this.stopped) {
        this.setState(failures === 0 ? 'connecting' : 'reconnecting');
        const connectedAt = Date.now();
        try {
          await this.streamOnce();
        } catch (error) {
          if (this.stopped) break;
          log.warn({ err: error }, 'replication stream lost; reconnecting');
        }
        if (this.fatal) throw this.fatal;
        if (this.stopped) break;
        if (Date.now() - connectedAt > 30_000) failures = 0;
        const delay = RECONNECT_DELAYS_MS[Math.min(failures, RECONNECT_DELAYS_MS.length - 1)];
        failures++;
        await new Promise((resolve) => setTimeout(resolve, delay));
        this.options.onReconnect?.();
      }
    } finally {
      if (this.ackTimer) clearInterval(this.ackTimer);
      this.ackTimer = null;
      this.setState(this.fatal ? 'failed' : 'stopped');
    }
  }

  private async streamOnce(): Promise<void> {
    const { log } = this.options;
    // The library spreads this config into a new Client once per subscribe: the getter gives that
    // client a connection whose reader gets whole messages, so a huge row is held once, not twice.
    const clientConfig = { ...this.options.clientConfig };
    Object.defineProperty(clientConfig, 'connection', { enumerable: true, get: () => alignedConnection(this.options.clientConfig) });
    const service = new LogicalReplicationService(clientConfig, {
      acknowledge: { auto: false, timeoutSeconds: 0 },
      flowControl: { enabled: true },
    });
    this.service = service;
    this.lastSentLsn = 0n;
    this.idleLsn = 0n;
    this.shutdownWait = new ShutdownWaitDetector();
    const plugin = new BridgePgoutputPlugin({ publication: this.options.publication, parse: this.options.parse });
    let handled = 0;
    service.on('data', async (lsn: string, message: Message | UnparsableFrame) => {
      // Not counted as handled: a frame dropped here must keep the idle position from passing it.
      if (this.fatal || this.stopped || !this.accepting) return;
      handled++;
      this.inHandler = true;
      try {
        if (message instanceof UnparsableFrame)
          throw new DecodeError(`cannot parse a pgoutput message: ${message.error.message}`, lsn, { cause: message.error });
        await this.options.onMessage(message, lsn);
      } catch (error) {
        // A message we cannot handle must not be skipped: stop without acknowledging past it.
        this.fatal = error as Error;
        log.error({ err: error, lsn }, 'fatal error while handling a replication message; stopping the stream without acknowledging it');
        void service.stop();
      } finally {
        this.inHandler = false;
      }
    });
    service.on('heartbeat', (lsn: string, _timestamp: number, shouldRespond: boolean) => {
      // Handlers run one at a time in arrival order: when the last received frame was handled (its
      // handler returned) and nothing is outstanding, the keepalive's position is fully processed.
      if (plugin.frames === handled && !this.inHandler && this.options.safeLsn.isIdle()) {
        const sent = parseLsn(lsn);
        if (sent > this.idleLsn) this.idleLsn = sent;
      }
      // With the library's timer off, unanswered keepalives would make wal_sender_timeout drop us.
      if (!shouldRespond) return;
      this.sendStatus(true);
      if (this.shutdownWait.observe(parseLsn(lsn), this.lastSentLsn, Date.now())) {
        // A fast shutdown of Postgres waits until we confirm everything it sent, and each reply starts
        // that wait again; work still in flight (a hung receiver, a store write the stopping server
        // refuses) would hold the server for as long. Letting go is safe: the stream reconnects and
        // resumes from the confirmed position, and transactions already routed are not routed twice.
        log.warn(
          { confirmed: formatLsn(this.lastSentLsn), sent: lsn },
          'Postgres is waiting for this stream to confirm before it shuts down; dropping the stream (it reconnects and resumes from the confirmed position)',
        );
        void service.stop().catch(() => undefined);
      }
    });
    service.on('start', () => {
      this.setState('streaming');
      log.info({ slot: this.options.slot }, 'replication streaming');
      this.sendStatus(true);
    });
    const ended = new Promise<void>((resolve, reject) => {
      service.on('error', (error: Error) => reject(error));
      service.subscribe(plugin, this.options.slot).then(() => resolve(), reject);
    });
    try {
      await ended;
    } finally {
      this.service = null;
      await service.destroy().catch(() => undefined);
    }
  }

  /**
   * Reports the safe LSN. The library adds 1 to what it is given, and Postgres skips a transaction
   * whose commit record starts before the reported position; reporting exactly the end of the last
   * settled transaction (so passing end - 1) keeps a back-to-back next transaction.
   */
  sendStatus(force: boolean): void {
    const service = this.service;
    if (!service || this.fatal) return;
    const safe = this.options.confirmable ? this.options.confirmable(this.wantedLsn()) : this.wantedLsn();
    if (safe === 0n) return;
    if (!force && safe === this.lastSentLsn) return;
    this.lastSentLsn = safe;
    void service.acknowledge(formatLsn(safe - 1n)).catch(() => undefined);
  }

  /** The position everything before which is settled: what we would confirm now. */
  wantedLsn(): Lsn {
    const settled = this.options.safeLsn.safeLsn();
    return this.idleLsn > settled ? this.idleLsn : settled;
  }

  /** Drops the current connection; run() reconnects with backoff and the server replays from the slot. */
  reconnect(): void {
    void this.service?.stop().catch(() => undefined);
  }

  /** Shutdown, first step: frames that arrive from now on are neither handled nor confirmed. */
  stopAccepting(): void {
    this.accepting = false;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.sendStatus(true);
    await this.service?.stop().catch(() => undefined);
  }

  private setState(state: StreamState): void {
    this.state = state;
    this.options.onStateChange?.(state);
  }
}
