import type { Command } from 'commander';
import type { ConfigFrom, WithClient } from './types.js';
import type pg from 'pg';
import type { BridgeConfig } from '../config.js';
import { webhooksTable } from '../config.js';
import { readSlot } from '../replication/slot.js';
import { parseSubscriberRow } from '../route/subscribers.js';
import { formatLsn } from '../replication/lsn.js';
import { countDeliveriesByStatus } from '../store/deliveryStore.js';
import { listCursors, logSummary } from '../store/eventLog.js';
import { listWebhookRows } from '../store/webhookState.js';

export interface BridgeStatus {
  slot: { name: string; exists: boolean; streaming: boolean; lagBytes: number | null; walStatus: string | null; confirmedFlushLsn: string | null };
  replicas: { leader: number; standby: number };
  backlog: Record<string, number>;
  webhooks: Record<string, number>;
  eventLog: EventLogStatus;
}

/** Webhooks listed by name in the text output; the rest are counted. */
const LISTED_CURSORS = 5;

interface CursorStatus {
  webhookId: string;
  /** Where it reads: the commit LSN and index of the next event it handles. */
  position: string;
  /** The first commit time of the log segment it reads: about how far behind it is. */
  readingFrom: Date | null;
}

export interface EventLogStatus {
  retentionHours: number;
  segments: number;
  events: number;
  /** Stored size of the segments' events, compressed. */
  bytes: number;
  oldestCommitAt: Date | null;
  /** Webhooks reading the log because they fell behind (or started in the past). */
  behind: CursorStatus[];
  /** Webhooks disabled or removed while behind: their cursor waits, and keeps no segment past retention. */
  paused: CursorStatus[];
}

async function readEventLogStatus(client: pg.ClientBase, config: BridgeConfig): Promise<EventLogStatus> {
  const summary = await logSummary(client, config.schema);
  const behind: CursorStatus[] = [];
  const paused: CursorStatus[] = [];
  for (const cursor of await listCursors(client, config.schema)) {
    const shown = { webhookId: cursor.webhookId, position: `${formatLsn(cursor.position.lsn)}#${cursor.position.index}`, readingFrom: cursor.readingFrom };
    (cursor.pausedAt === null ? behind : paused).push(shown);
  }
  return { retentionHours: config.delivery.retentionHours, ...summary, behind, paused };
}

/** What an operator asks first: who streams, how far behind, how much is stored, which webhooks work. */
export async function readStatus(client: pg.ClientBase, config: BridgeConfig): Promise<BridgeStatus> {
  const slot = await readSlot(client, config.replication.slot);
  // Every replica holds one session with this application_name; the leader also holds the lock.
  const { rows: sessions } = await client.query(
    `select a.pid, exists (select 1 from pg_locks l where l.pid = a.pid and l.locktype = 'advisory' and l.granted) as leader
       from pg_stat_activity a where a.application_name = 'pg-webhook-bridge leader lock' and a.datname = current_database()`,
  );
  const leader = sessions.filter((s) => s.leader).length;
  const webhooks: Record<string, number> = { active: 0, disabled: 0, invalid: 0, deleted: 0 };
  for (const row of await listWebhookRows(client, config.schema, webhooksTable(config))) {
    const state = row.deletedAt ? 'deleted' : !parseSubscriberRow(row).ok ? 'invalid' : row.disabled_at ? 'disabled' : 'active';
    webhooks[state]!++;
  }
  return {
    slot: {
      name: config.replication.slot,
      exists: slot !== null,
      streaming: slot?.active ?? false,
      lagBytes: slot?.lagBytes != null ? Number(slot.lagBytes) : null,
      walStatus: slot?.walStatus ?? null,
      confirmedFlushLsn: slot?.confirmedFlushLsn ?? null,
    },
    replicas: { leader, standby: sessions.length - leader },
    backlog: await countDeliveriesByStatus(client, config.schema),
    webhooks,
    eventLog: await readEventLogStatus(client, config),
  };
}

function describeCursors(cursors: CursorStatus[], state: string): string {
  if (cursors.length === 0) return `0 ${state}`;
  const shown = cursors
    .slice(0, LISTED_CURSORS)
    .map((c) => `${c.webhookId} (at ${c.position}${c.readingFrom === null ? '' : `, commits of ${c.readingFrom.toISOString()}`})`);
  const more = cursors.length > LISTED_CURSORS ? `, ${cursors.length - LISTED_CURSORS} more` : '';
  return `${cursors.length} ${state}: ${shown.join(', ')}${more}`;
}

export function formatStatus(status: BridgeStatus): string {
  const { slot, eventLog: log } = status;
  const rows: Array<[string, string]> = [
    ['slot', `${slot.name}: ${!slot.exists ? 'MISSING (see "pg-webhook-bridge check")' : slot.streaming ? 'streaming' : 'not streaming'}`],
    [
      'slot lag',
      slot.lagBytes === null ? '-' : `${formatBytes(slot.lagBytes)} (wal_status ${slot.walStatus ?? '-'}, confirmed ${slot.confirmedFlushLsn ?? '-'})`,
    ],
    ['replicas', `${status.replicas.leader} leader, ${status.replicas.standby} standby`],
    [
      'backlog',
      Object.entries(status.backlog)
        .map(([k, v]) => `${k} ${v}`)
        .join(', '),
    ],
    [
      'webhooks',
      Object.entries(status.webhooks)
        .map(([k, v]) => `${k} ${v}`)
        .join(', '),
    ],
    [
      'event log',
      `${log.segments} segments, ${log.events} events, ${formatBytes(log.bytes)} compressed; oldest commit ${log.oldestCommitAt?.toISOString() ?? '-'}; retention ${log.retentionHours === 0 ? '0 (only what a webhook behind needs)' : `${log.retentionHours} h`}`,
    ],
    ['log readers', `${describeCursors(log.behind, 'behind')}; ${describeCursors(log.paused, 'paused')}`],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n');
}

function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 ** 2) return `${(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 1024 ** 3) return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
  return `${(bytes / 1024 ** 3).toFixed(2)} GiB`;
}

export function registerStatusCommand(program: Command, configFrom: ConfigFrom, withClient: WithClient): void {
  program
    .command('status')
    .description('leader or standby, slot lag, stored backlog, webhooks by state, the event log and who reads it')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const config = configFrom(cmd);
      await withClient(config, async (client) => {
        const status = await readStatus(client, config);
        console.log(opts.json ? JSON.stringify(status, null, 2) : formatStatus(status));
      });
    });
}
