import type { Command } from 'commander';
import type { ConfigFrom, WithClient } from './types.js';
import type pg from 'pg';
import type { BridgeConfig } from '../config.js';
import { webhooksTable } from '../config.js';
import { readSlot } from '../replication/slot.js';
import { parseSubscriberRow } from '../route/subscribers.js';
import { countDeliveriesByStatus } from '../store/deliveryStore.js';
import { listWebhookRows } from '../store/webhookState.js';

export interface BridgeStatus {
  slot: { name: string; exists: boolean; streaming: boolean; lagBytes: number | null; walStatus: string | null; confirmedFlushLsn: string | null };
  replicas: { leader: number; standby: number };
  backlog: Record<string, number>;
  webhooks: Record<string, number>;
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
  };
}

export function formatStatus(status: BridgeStatus): string {
  const { slot } = status;
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
    .description('leader or standby, slot lag, stored backlog, webhooks by state')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const config = configFrom(cmd);
      await withClient(config, async (client) => {
        const status = await readStatus(client, config);
        console.log(opts.json ? JSON.stringify(status, null, 2) : formatStatus(status));
      });
    });
}
