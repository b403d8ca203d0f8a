/**
 * Ceiling B: how fast a bare pg-logical-replication consumer receives the backlog's row changes from a
 * pgoutput slot, doing nothing with them but count. The plugin reads only the message tag (no value
 * parsing), so this is the transport: walsender decoding + the library's framing.
 *
 *   node --import tsx test/bench/replicationCeiling.ts '<json ReplicationCeilingOptions>'   -> one JSON line
 */
import { LogicalReplicationService } from 'pg-logical-replication';
import type pg from 'pg';

export interface ReplicationCeilingOptions {
  url: string;
  slot: string;
  publication: string;
  /** Row changes (I/U/D) to wait for. */
  expectedRows: number;
  timeoutMs: number;
}

export interface ReplicationCeilingResult {
  rows: number;
  transactions: number;
  /** From START_REPLICATION being accepted to the last expected row. */
  seconds: number;
  rowsPerSecond: number;
  /** From START_REPLICATION to the first row: the walsender decoding the first transaction. */
  firstRowSeconds: number;
  timedOut: boolean;
}

/** pgoutput, but `parse` keeps only the tag byte. */
class CountingPlugin {
  constructor(readonly options: { publication: string }) {}

  get name(): string {
    return 'pgoutput';
  }

  start(client: pg.Client, slotName: string): Promise<unknown> {
    return client.query(`START_REPLICATION SLOT ${slotName} LOGICAL 0/0 (proto_version '1', publication_names '${this.options.publication}')`);
  }

  parse(buffer: Buffer): number {
    return buffer[0];
  }
}

const TAG_INSERT = 0x49; // 'I'
const TAG_UPDATE = 0x55; // 'U'
const TAG_DELETE = 0x44; // 'D'
const TAG_COMMIT = 0x43; // 'C'

async function main(): Promise<void> {
  const options = JSON.parse(process.argv[2]) as ReplicationCeilingOptions;
  const service = new LogicalReplicationService(
    { connectionString: options.url },
    { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: false } },
  );
  let rows = 0;
  let transactions = 0;
  let startedAt = 0;
  let firstRowAt = 0;
  let lastRowAt = 0;
  let lastLsn = '0/0';
  let resolveDone!: () => void;
  const done = new Promise<void>((resolve) => (resolveDone = resolve));

  service.on('start', () => {
    startedAt = performance.now();
  });
  service.on('data', (lsn: string, tag: number) => {
    lastLsn = lsn;
    if (tag === TAG_INSERT || tag === TAG_UPDATE || tag === TAG_DELETE) {
      if (rows === 0) firstRowAt = performance.now();
      rows++;
      if (rows >= options.expectedRows) {
        lastRowAt = performance.now();
        resolveDone();
      }
    } else if (tag === TAG_COMMIT) transactions++;
  });
  service.on('heartbeat', (_lsn: string, _timestamp: number, shouldRespond: boolean) => {
    if (shouldRespond) void service.acknowledge(lastLsn).catch(() => undefined);
  });
  service.on('error', () => resolveDone());
  void service.subscribe(new CountingPlugin({ publication: options.publication }), options.slot).catch(() => resolveDone());
  const timer = setTimeout(() => resolveDone(), options.timeoutMs);
  await done;
  clearTimeout(timer);
  const timedOut = rows < options.expectedRows;
  const end = timedOut ? performance.now() : lastRowAt;
  await service.destroy().catch(() => undefined);
  const seconds = (end - startedAt) / 1000;
  const result: ReplicationCeilingResult = {
    rows,
    transactions,
    seconds,
    rowsPerSecond: rows / seconds,
    firstRowSeconds: firstRowAt ? (firstRowAt - startedAt) / 1000 : 0,
    timedOut,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
}

main().catch((error) => {
  process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
